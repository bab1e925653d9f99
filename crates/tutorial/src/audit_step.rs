//! The audit after the head (on by default, seconds of work): `audit::run` on the finished run,
//! and its section of the report — counts, the top findings with their paths, the contact sheets
//! and what to do next. A failed audit is reported, never a reason to lose the classifier.

use std::fmt::Write as _;
use std::path::Path;

use audit::{Audit, AuditConfig};
use train::stage::StageEvent;

use crate::config::TutorialConfig;
use crate::report::{code_html, esc};

/// What the audit step did.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done(Box<Audit>),
    /// Not run: why (`--no-audit`).
    Skipped(String),
    /// Run, but it failed: the error.
    Failed(String),
}

/// Runs the audit of `cfg.run` (on the probe's out-of-fold predictions: the head's, or for the
/// 2016 head one fitted for the audit).
pub fn run(cfg: &TutorialConfig, on_event: &mut dyn FnMut(StageEvent<'_>)) -> Outcome {
    if !cfg.audit {
        return Outcome::Skipped("--no-audit".into());
    }
    if !head::pipeline::HeadPaths::new(&cfg.run).weights.is_file() {
        return Outcome::Skipped("the run has no head (stage 2b) yet".into());
    }
    let acfg = AuditConfig {
        data: Some(cfg.data.clone()),
        fit_probe: true,
        ..AuditConfig::new(&cfg.run)
    };
    match audit::run(&acfg, on_event) {
        Ok(a) => Outcome::Done(Box::new(a)),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Rows per table of the report.
const ROWS: usize = 10;

/// The section as HTML (`md` false) or Markdown; table cells are escaped either way.
// Over 80 lines: one template of the report's audit section, HTML and Markdown side by side in page
// order.
fn section(o: &Outcome, run: &Path, md: bool) -> String {
    let cell = |s: &str| {
        if md {
            esc(s).replace('|', "\\|").replace('\n', " ")
        } else {
            esc(s)
        }
    };
    let mut s = String::new();
    let para = |s: &mut String, text: &str| {
        if md {
            let _ = writeln!(s, "\n{text}");
        } else {
            let _ = writeln!(s, "<p>{}</p>", code_html(text));
        }
    };
    let heading = |s: &mut String, level: usize, text: &str| {
        if md {
            let _ = writeln!(s, "\n{} {text}", "#".repeat(level));
        } else {
            let _ = writeln!(s, "<h{level}>{text}</h{level}>");
        }
    };
    let table = |s: &mut String, head: &[&str], rows: Vec<Vec<String>>| {
        if md {
            let _ = writeln!(
                s,
                "\n| {} |\n|{}",
                head.join(" | "),
                "---|".repeat(head.len())
            );
            for r in rows {
                let _ = writeln!(s, "| {} |", r.join(" | "));
            }
        } else {
            let _ = writeln!(s, "<table><tr><th>{}</th></tr>", head.join("</th><th>"));
            for r in rows {
                let _ = writeln!(s, "<tr><td>{}</td></tr>", r.join("</td><td>"));
            }
            s.push_str("</table>\n");
        }
    };
    heading(
        &mut s,
        2,
        "Photos that may hurt (audit of the training photos)",
    );
    let a = match o {
        Outcome::Done(a) => a,
        Outcome::Skipped(why) => {
            para(
                &mut s,
                &format!("Not run: {}.", if md { cell(why) } else { why.clone() }),
            );
            return s;
        }
        Outcome::Failed(e) => {
            para(
                &mut s,
                &format!(
                    "The audit failed: {}.",
                    if md { cell(e) } else { e.clone() }
                ),
            );
            return s;
        }
    };
    para(
        &mut s,
        &format!(
            "{} likely mislabeled of {} scored training photos; {} near-duplicate pairs ({} across \
             splits: leaks inflate validation numbers); {} photos far from every class. From the \
             cached features and out-of-fold probabilities on train, in {:.1} s; nothing was moved. \
             Full lists: `audit/audit.csv`, `audit/audit.json`. To retrain without the photos you \
             agree with: copy `audit/audit.csv`, delete the other lines, and run `bottleneck fit \
             --exclude` with it into a new run folder.",
            a.mislabeled.len(),
            a.scored_rows,
            a.duplicates.len(),
            a.leaks(),
            a.outliers.len(),
            a.seconds
        ),
    );
    let picture = |s: &mut String, name: &str| {
        let rel = format!("audit/{name}");
        if a.sheets.contains(&rel) && run.join(&rel).is_file() {
            if md {
                let _ = writeln!(s, "\n![{name}]({rel})");
            } else {
                let _ = writeln!(s, "<img src=\"{rel}\" alt=\"{name}\">");
            }
        }
    };
    if !a.mislabeled.is_empty() {
        heading(&mut s, 3, "Likely mislabeled");
        let rows = a.mislabeled.iter().take(ROWS).map(|m| {
            vec![
                cell(&m.path),
                cell(&m.given),
                format!("{:.3}", m.given_probability),
                cell(&m.suggested),
                format!("{:.3}", m.suggested_probability),
            ]
        });
        table(
            &mut s,
            &["photo", "labelled", "p(label)", "looks like", "p"],
            rows.collect(),
        );
        picture(&mut s, "mislabeled.png");
    }
    if !a.duplicates.is_empty() {
        heading(&mut s, 3, "Near-duplicates and leaks");
        let rows = a.duplicates.iter().take(ROWS).map(|d| {
            vec![
                cell(&d.path),
                cell(&d.split),
                cell(&d.partner),
                cell(&d.partner_split),
                cell(&d.evidence()),
            ]
        });
        table(
            &mut s,
            &["photo", "in", "nearly equals", "in", "why"],
            rows.collect(),
        );
        picture(&mut s, "duplicates.png");
    }
    if !a.outliers.is_empty() {
        heading(&mut s, 3, "Out of place");
        let rows = a.outliers.iter().take(ROWS).map(|o| {
            vec![
                cell(&o.path),
                cell(&o.given),
                cell(&o.nearest),
                format!("{:.1}", o.score),
            ]
        });
        table(
            &mut s,
            &["photo", "labelled", "looks most like", "score (robust sd)"],
            rows.collect(),
        );
        picture(&mut s, "outliers.png");
    }
    if !a.confused.is_empty() {
        heading(&mut s, 3, "Classes confused most (out-of-fold, train)");
        let rows = a.confused.iter().take(ROWS).map(|c| {
            vec![
                cell(&c.a),
                cell(&c.b),
                c.a_as_b.to_string(),
                c.b_as_a.to_string(),
                format!("{:.1}%", 100.0 * c.rate),
            ]
        });
        table(
            &mut s,
            &["a", "b", "a as b", "b as a", "rate"],
            rows.collect(),
        );
    }
    s
}

/// The section for `report.md`.
pub fn markdown(o: &Outcome, run: &Path) -> String {
    section(o, run, true)
}

/// The section for `report.html`.
pub fn html(o: &Outcome, run: &Path) -> String {
    section(o, run, false)
}
