//! `RUN/report.md` and `RUN/report.html`: one table with each stage's validation accuracy next to
//! the tutorial's published numbers and our targets, each stage's time and machine, the model, the
//! learning curves and the confusion matrices. Images are copied into `RUN/report/` and linked
//! relatively, so `report.md`, `report.html` and `report/` can be copied anywhere (e.g. `docs/`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use features::store;
use serde::Serialize;
use train::metrics::{ConfusionMatrix, Metrics};

use crate::check::Found;
use crate::config::Stage;
use crate::error::{Error, Result};
use crate::inputs::Inputs;
use crate::machine::Machine;
use crate::record::Record;
use crate::select::Selection;
use crate::stages::Action;

/// Folder of the report's images inside the run.
pub const ASSETS: &str = "report";

/// One stage's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub stage: Stage,
    /// `1`, `2a`, `2b`, `3`.
    pub number: &'static str,
    pub title: &'static str,
    /// What the last sitting did with the stage.
    pub action: Action,
    /// `done`, `unfinished` or `not run`.
    pub state: &'static str,
    /// Validation accuracy after the last epoch (`final_val_accuracy` of its `metrics.json`).
    pub val_accuracy: Option<f64>,
    /// Validation accuracy of the saved weights, and their epoch.
    pub kept_val_accuracy: Option<f64>,
    pub kept_epoch: Option<usize>,
    /// Validation log loss and calibration error (ECE, 15 bins) of the saved weights.
    pub kept_val_loss: Option<f64>,
    pub kept_val_ece: Option<f64>,
    pub epochs: Option<usize>,
    pub tutorial: Option<f64>,
    pub target: Option<f64>,
    /// Wall-clock seconds over every sitting, when known.
    pub seconds: Option<f64>,
    /// Where `seconds` comes from: `tutorial.json`, or `metrics.json` for outputs made outside
    /// the tutorial.
    pub seconds_source: Option<&'static str>,
    pub device: Option<String>,
    pub machine: Option<Machine>,
    /// Learning curves, relative to the run folder.
    pub curves: Option<String>,
    pub confusion: Option<ConfusionMatrix>,
    /// What the stage ran with, read from its files.
    pub settings: Option<String>,
}

impl Row {
    /// True when the final validation accuracy reaches the target.
    pub fn meets_target(&self) -> Option<bool> {
        Some(self.val_accuracy? >= self.target?)
    }
}

/// What [`write`] produced.
pub struct Written {
    pub md: PathBuf,
    pub html: PathBuf,
    pub rows: Vec<Row>,
}

fn read_confusion(path: &Path) -> Option<ConfusionMatrix> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Builds the row of `stage` from its files in `run` and the record.
fn row(run: &Path, record: &Record, stage: Stage, action: Action, found: &Found) -> Result<Row> {
    let dir = run.join(stage.dir());
    let metrics: Option<Metrics> = match stage {
        Stage::Extract => None,
        _ => {
            let p = dir.join("metrics.json");
            p.is_file()
                .then(|| train::metrics::read_json(&p))
                .transpose()?
        }
    };
    let rec = record.stages.get(&stage);
    let done = *found == Found::Done && (stage == Stage::Extract || metrics.is_some());
    let state = if done {
        "done"
    } else if metrics.is_some()
        || rec.is_some()
        || (stage == Stage::Extract && store::list_splits(run).is_ok_and(|s| !s.is_empty()))
    {
        "unfinished"
    } else {
        "not run"
    };
    let (seconds, seconds_source) = match (rec, &metrics) {
        (Some(r), _) => (Some(r.seconds), Some("tutorial.json")),
        (_, Some(m)) => (Some(m.total_seconds), Some("metrics.json")),
        _ => (None, None),
    };
    let assets = run.join(ASSETS);
    let curves = match dir.join("curves.png") {
        p if p.is_file() && stage != Stage::Extract => {
            std::fs::create_dir_all(&assets).map_err(|e| Error::io(&assets, e))?;
            let name = format!("{}-curves.png", stage.name());
            runfs::copy_atomic(&p, &assets.join(&name))?;
            let svg = dir.join("curves.svg");
            if svg.is_file() {
                let to = assets.join(format!("{}-curves.svg", stage.name()));
                runfs::copy_atomic(&svg, &to)?;
            }
            Some(format!("{ASSETS}/{name}"))
        }
        _ => None,
    };
    let reference = stage.reference();
    Ok(Row {
        stage,
        number: stage.number(),
        title: stage.title(),
        action,
        state,
        val_accuracy: metrics.as_ref().map(|m| m.final_val_accuracy),
        kept_val_accuracy: metrics.as_ref().map(|m| m.kept_val_accuracy),
        kept_epoch: metrics.as_ref().map(|m| m.kept_epoch),
        kept_val_loss: metrics.as_ref().map(|m| m.kept_val_loss),
        kept_val_ece: metrics.as_ref().and_then(|m| m.kept_val_ece),
        epochs: metrics.as_ref().map(|m| m.epochs.len()),
        tutorial: reference.map(|r| r.tutorial),
        target: reference.map(|r| r.target),
        seconds,
        seconds_source,
        device: rec.and_then(|r| r.device.clone()),
        machine: rec.map(|r| r.machine.clone()),
        curves,
        confusion: read_confusion(&dir.join("confusion.json")),
        settings: crate::settings::line(run, stage),
    })
}

/// `12.3 s`, `4 min 05 s`, `1 h 02 min`.
pub fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// The cells of a row of the main table (plain text).
fn cells(r: &Row) -> Vec<String> {
    let acc = |v: Option<f64>| v.map_or("—".to_string(), |a| format!("{a:.4}"));
    let kept = match (r.kept_val_accuracy, r.kept_epoch) {
        (Some(a), Some(e)) => {
            let mut k = format!("{a:.4} (epoch {e}");
            if let Some(l) = r.kept_val_loss {
                k += &format!("; log loss {l:.3}");
            }
            if let Some(c) = r.kept_val_ece {
                k += &format!(", ECE {c:.3}");
            }
            k + ")"
        }
        _ => "—".into(),
    };
    let time = match (r.seconds, r.seconds_source) {
        (Some(s), Some("metrics.json")) => format!("{} (from metrics.json)", duration(s)),
        (Some(s), _) if r.state == "unfinished" => format!("{} so far", duration(s)),
        (Some(s), _) => duration(s),
        _ => "not recorded".into(),
    };
    let met = match r.meets_target() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "—",
    };
    vec![
        r.number.to_string(),
        format!("{} (`{}`)", r.title, r.stage.name()),
        r.state.to_string(),
        acc(r.val_accuracy),
        kept,
        r.tutorial.map_or("—".into(), |t| format!("{t:.2}")),
        r.target.map_or("—".into(), |t| format!("{t:.3}")),
        met.into(),
        r.epochs.map_or("—".into(), |e| e.to_string()),
        time,
        r.device.clone().unwrap_or_else(|| "—".into()),
    ]
}

/// What the table's columns mean.
const NOTE: &str = "Tutorial: the accuracies published with the Keras blog post \"Building powerful image \
classification models using very little data\" (2016). Val accuracy (last epoch) is `final_val_accuracy` of the \
stage's `metrics.json`; the saved weights are the epoch each stage keeps (its last, a fixed schedule: the \
validation split is never used to choose); log loss and ECE (15 bins) are the saved weights' on validation.";

const HEADERS: [&str; 11] = [
    "Stage",
    "What",
    "State",
    "Val accuracy (last epoch)",
    "Saved weights: val accuracy",
    "Tutorial",
    "Our target",
    "Target met",
    "Epochs",
    "Time",
    "ONNX Runtime on",
];

/// Machines the stages ran on, each with its stages.
fn machines(rows: &[Row]) -> Vec<(Machine, Vec<Stage>)> {
    let mut out: Vec<(Machine, Vec<Stage>)> = Vec::new();
    for r in rows {
        if let Some(m) = &r.machine {
            match out.iter_mut().find(|(x, _)| x == m) {
                Some((_, stages)) => stages.push(r.stage),
                None => out.push((m.clone(), vec![r.stage])),
            }
        }
    }
    out
}

fn total_seconds(rows: &[Row]) -> Option<f64> {
    let known: Vec<f64> = rows.iter().filter_map(|r| r.seconds).collect();
    (!known.is_empty()).then(|| known.iter().sum())
}

/// A name from the user's folders (a class) as Markdown text: HTML and Markdown characters
/// escaped, line breaks and other control characters as spaces, so it cannot break a table.
fn md(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' => {
                out.push('\\');
                out.push(ch);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Class names as Markdown, joined by `sep`.
fn md_join(names: &[String], sep: &str) -> String {
    names.iter().map(|n| md(n)).collect::<Vec<_>>().join(sep)
}

fn confusion_md(c: &ConfusionMatrix) -> String {
    let mut s = format!(
        "| true \\ predicted | {} | recall |\n",
        md_join(&c.classes, " | ")
    );
    s += &format!("|---|{}---|\n", "---:|".repeat(c.classes.len()));
    for (i, class) in c.classes.iter().enumerate() {
        let counts: Vec<String> = c.matrix[i].iter().map(|n| n.to_string()).collect();
        let recall = c.per_class.get(i).map_or(0.0, |p| p.recall);
        let _ = writeln!(
            s,
            "| **{}** | {} | {recall:.3} |",
            md(class),
            counts.join(" | ")
        );
    }
    let precision: Vec<String> = c
        .per_class
        .iter()
        .map(|p| format!("{:.3}", p.precision))
        .collect();
    let _ = writeln!(
        s,
        "| precision | {} | accuracy {:.4} |",
        precision.join(" | "),
        c.accuracy
    );
    s
}

/// The Markdown report.
pub fn markdown(inputs: &Inputs, rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Tutorial reproduction: {}\n",
        md_join(&inputs.classes, " vs ")
    );
    for line in intro(inputs, rows, &md_join(&inputs.classes, ", ")) {
        let _ = writeln!(s, "- {line}");
    }
    s += "\n## Results (validation accuracy)\n\n";
    let _ = writeln!(s, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(HEADERS.len()));
    for r in rows {
        let _ = writeln!(s, "| {} |", cells(r).join(" | "));
    }
    if let Some(t) = total_seconds(rows) {
        let _ = writeln!(s, "\nTotal recorded time of the stages: {}.", duration(t));
    }
    let _ = writeln!(s, "\n{NOTE}");
    s += "\n## Settings (as recorded in each stage's files)\n\n";
    for r in rows {
        if let Some(line) = &r.settings {
            let _ = writeln!(s, "- Stage {} (`{}`): {line}", r.number, r.stage.name());
        }
    }
    s += "\n## Learning curves\n";
    for r in rows.iter().filter(|r| r.curves.is_some()) {
        if let Some(c) = &r.curves {
            let _ = writeln!(
                s,
                "\n### Stage {} — {}\n\n![learning curves of {}]({c})",
                r.number,
                r.title,
                r.stage.name()
            );
        }
    }
    s += "\n## Confusion matrices (validation, saved weights; rows: true class)\n";
    for r in rows {
        if let Some(c) = &r.confusion {
            let _ = writeln!(s, "\n### Stage {} — {}\n", r.number, r.title);
            s += &confusion_md(c);
        }
    }
    s
}

/// The lines describing the data, model and machines; `classes` is the class list as the format
/// shows it.
fn intro(inputs: &Inputs, rows: &[Row], classes: &str) -> Vec<String> {
    let images: Vec<String> = inputs
        .images
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let mut lines = vec![
        format!(
            "Data: `{}`{} — {} images ({})",
            inputs.data,
            inputs.limit.map_or(String::new(), |n| format!(
                " (first {n} per class and split)"
            )),
            images.join(", "),
            classes
        ),
        format!(
            "Model: `{}`, sha256 `{}`, {} preprocessing, {}×{} pixels (stage 1: {}×{}); extraction {}, \
             fine-tuning's frozen part {}",
            inputs.model,
            inputs.model_sha256,
            inputs.preprocess,
            inputs.image_size,
            inputs.image_size,
            inputs.scratch_size,
            inputs.scratch_size,
            inputs.precision,
            inputs.finetune_precision
        ),
    ];
    let ran = machines(rows);
    if ran.is_empty() {
        lines.push(format!(
            "Machine (where this report was written; no stage was timed by the tutorial): {}",
            Machine::detect().describe()
        ));
    }
    for (m, stages) in ran {
        let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
        lines.push(format!("Machine ({}): {}", names.join(", "), m.describe()));
    }
    lines
}

/// Text as HTML: `&`, `<`, `>` and `"` escaped.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Markdown inline code (`x`) as HTML (the text escaped).
pub(crate) fn code_html(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out += part;
        }
    }
    out
}

fn confusion_html(c: &ConfusionMatrix) -> String {
    let mut s = String::from("<table class=\"cm\"><tr><th>true \\ predicted</th>");
    for class in &c.classes {
        let _ = write!(s, "<th>{}</th>", esc(class));
    }
    s += "<th>recall</th></tr>\n";
    for (i, class) in c.classes.iter().enumerate() {
        let _ = write!(s, "<tr><th>{}</th>", esc(class));
        for n in &c.matrix[i] {
            let _ = write!(s, "<td>{n}</td>");
        }
        let recall = c.per_class.get(i).map_or(0.0, |p| p.recall);
        let _ = writeln!(s, "<td>{recall:.3}</td></tr>");
    }
    s += "<tr><th>precision</th>";
    for p in &c.per_class {
        let _ = write!(s, "<td>{:.3}</td>", p.precision);
    }
    let _ = writeln!(s, "<td>accuracy {:.4}</td></tr></table>", c.accuracy);
    s
}

/// The HTML report (one self-contained page; images linked relatively).
pub fn html(inputs: &Inputs, rows: &[Row]) -> String {
    let title = format!("Tutorial reproduction: {}", inputs.classes.join(" vs "));
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em}}\
         table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}\
         th{{background:#f4f4f4}}td:nth-child(2),td:nth-child(3){{text-align:left}}\
         .cm td,.cm th{{min-width:4em}}img{{max-width:100%}}code{{font-size:.9em}}\
         </style></head><body>\n<h1>{}</h1>\n<ul>\n",
        esc(&title),
        esc(&title)
    );
    for line in intro(inputs, rows, &inputs.classes.join(", ")) {
        let _ = writeln!(s, "<li>{}</li>", code_html(&line));
    }
    s += "</ul>\n<h2>Results (validation accuracy)</h2>\n<table><tr>";
    for h in HEADERS {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s += "</tr>\n";
    for r in rows {
        s += "<tr>";
        for c in cells(r) {
            let _ = write!(s, "<td>{}</td>", code_html(&c));
        }
        s += "</tr>\n";
    }
    s += "</table>\n";
    if let Some(t) = total_seconds(rows) {
        let _ = writeln!(
            s,
            "<p>Total recorded time of the stages: {}.</p>",
            duration(t)
        );
    }
    let _ = writeln!(s, "<p>{}</p>", code_html(NOTE));
    s += "<h2>Settings (as recorded in each stage's files)</h2>\n<ul>\n";
    for r in rows {
        if let Some(line) = &r.settings {
            let _ = writeln!(
                s,
                "<li>Stage {} (<code>{}</code>): {}</li>",
                r.number,
                r.stage.name(),
                esc(line)
            );
        }
    }
    s += "</ul>\n<h2>Learning curves</h2>\n";
    for r in rows {
        if let Some(c) = &r.curves {
            let _ = writeln!(
                s,
                "<h3>Stage {} — {}</h3>\n<img src=\"{}\" alt=\"learning curves of {}\">",
                r.number,
                esc(r.title),
                esc(c),
                r.stage.name()
            );
        }
    }
    s += "<h2>Confusion matrices (validation, saved weights; rows: true class)</h2>\n";
    for r in rows {
        if let Some(c) = &r.confusion {
            let _ = writeln!(s, "<h3>Stage {} — {}</h3>", r.number, esc(r.title));
            s += &confusion_html(c);
        }
    }
    s += "</body></html>\n";
    s
}

/// The cells of one candidate row: model, CV log loss and accuracy, validation accuracy, log
/// loss and ECE, extraction speed, input.
fn selection_cells(sel: &Selection) -> Vec<(bool, [String; 8])> {
    sel.candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                i == sel.chosen,
                [
                    c.model.clone(),
                    format!("{:.4}", c.cv_log_loss),
                    format!("{:.4}", c.cv_accuracy),
                    format!("{:.4}", c.val_accuracy),
                    format!("{:.4}", c.val_log_loss),
                    c.val_ece.map_or("—".into(), |e| format!("{e:.4}")),
                    if c.from_parts {
                        "not run (probed on its parts' features)".into()
                    } else {
                        format!("{:.1}", c.images_per_second)
                    },
                    format!("{} px {}", c.image_size, c.resize),
                ],
            )
        })
        .collect()
}

const SELECTION_HEADERS: [&str; 8] = [
    "backbone",
    "CV log loss (train)",
    "CV accuracy (train)",
    "val accuracy",
    "val log loss",
    "val ECE",
    "extraction img/s",
    "input",
];

/// The backbone choice as a Markdown section.
fn selection_md(sel: &Selection) -> String {
    let mut s = String::from("\n## Backbone choice (cross-validated on the training photos)\n\n");
    let _ = writeln!(s, "{}.\n", md(&sel.why));
    let _ = writeln!(s, "| {} |", SELECTION_HEADERS.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(SELECTION_HEADERS.len()));
    for (won, cells) in selection_cells(sel) {
        let mut cells = cells.map(|c| md(&c));
        if won {
            cells[0] = format!("**{}**", cells[0]);
        }
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}

/// The backbone choice as an HTML section.
fn selection_html(sel: &Selection) -> String {
    let mut s = String::from("<h2>Backbone choice (cross-validated on the training photos)</h2>\n");
    let _ = writeln!(s, "<p>{}.</p>\n<table><tr>", esc(&sel.why));
    for h in SELECTION_HEADERS {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s += "</tr>\n";
    for (won, cells) in selection_cells(sel) {
        s += "<tr>";
        for (i, c) in cells.iter().enumerate() {
            if i == 0 && won {
                let _ = write!(s, "<td><b>{}</b></td>", esc(c));
            } else {
                let _ = write!(s, "<td>{}</td>", esc(c));
            }
        }
        s += "</tr>\n";
    }
    s += "</table>\n";
    s
}

/// Builds the rows from `RUN` and writes `report.md`, `report.html` and the images.
pub fn write(
    run: &Path,
    record: &Record,
    inputs: &Inputs,
    stages: &[(Stage, Action, Found)],
    audited: &crate::audit_step::Outcome,
) -> Result<Written> {
    let mut rows = stages
        .iter()
        .map(|(stage, action, found)| row(run, record, *stage, *action, found))
        .collect::<Result<Vec<_>>>()?;
    if inputs.classes != ["cats", "dogs"] {
        // The tutorial's published numbers and our targets are for Dogs vs Cats only.
        for r in &mut rows {
            r.tutorial = None;
            r.target = None;
        }
    }
    let md = run.join("report.md");
    let html_path = run.join("report.html");
    let selection = crate::select::load(run).filter(|sel| sel.winner().model == inputs.model);
    let mut md_text = markdown(inputs, &rows);
    let mut html_text = html(inputs, &rows);
    if let Some(sel) = &selection {
        md_text += &selection_md(sel);
        if let Some(at) = html_text.rfind("</body>") {
            html_text.insert_str(at, &selection_html(sel));
        }
    }
    md_text += &crate::audit_step::markdown(audited, run);
    if let Some(at) = html_text.rfind("</body>") {
        html_text.insert_str(at, &crate::audit_step::html(audited, run));
    }
    runfs::write_atomic(&md, md_text.as_bytes())?;
    runfs::write_atomic(&html_path, html_text.as_bytes())?;
    Ok(Written {
        md,
        html: html_path,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_name_cannot_break_a_markdown_table_or_inject_html() {
        let c = ConfusionMatrix::new(
            &["<b>x</b>".to_string(), "a|b\nc".to_string()],
            &[0, 1],
            &[0, 1],
        )
        .unwrap();
        let table = confusion_md(&c);
        assert!(!table.contains("<b>"), "{table}");
        assert!(table.contains("&lt;b&gt;x&lt;/b&gt;"), "{table}");
        assert!(table.contains("a\\|b c"), "{table}");
        // Every row has as many cells as the header: nothing broke the table.
        let cells = |l: &str| l.matches(" | ").count();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines
                .iter()
                .filter(|l| !l.starts_with("|---"))
                .all(|l| cells(l) == cells(lines[0])),
            "{table}"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(245.0), "4 min 05 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
    }

    #[test]
    fn inline_code_becomes_html_and_is_escaped() {
        assert_eq!(code_html("a `<b>` c"), "a <code>&lt;b&gt;</code> c");
    }
}
