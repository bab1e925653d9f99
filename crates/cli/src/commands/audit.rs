//! `bottleneck audit`: parses the options, runs `audit::run` on a finished run and prints what it
//! found (the top findings of each kind and where the full lists are).

use std::path::PathBuf;

use audit::{Audit, AuditConfig};

use crate::args::Global;
use crate::progress;

/// Find the photos that hurt: likely mislabeled, near-duplicates and train ↔ validation leaks,
/// photos that belong to no class, and the classes most confused.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bottleneck audit --run runs/mine --data photos/\n  \
bottleneck fit --data photos/ --run runs/mine-clean --exclude runs/mine/audit/edited.csv\n\n\
Reads the run's cached features and the out-of-fold probabilities the calibrated probe wrote on \
train (`fit` and `train-head` without --keras2016 write them; --fit-probe fits them for another head), never a validation photo for a choice, and \
never moves or changes a photo. Writes RUN/audit/audit.json, audit.csv (split,path,issue,score,given,\
suggested,partner) and, with --data, contact sheets. Copy audit.csv, delete the lines you disagree \
with, and pass it to `fit --exclude` to retrain without the rest."
)]
pub struct AuditArgs {
    /// Run folder with features/ and head/ (from `bottleneck fit`).
    #[arg(long)]
    pub run: PathBuf,
    /// The data folder the run was made from: contact sheets of the findings are drawn from it.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Embedding cosine from which two photos are near-duplicates (with --data, pairs from 0.80
    /// are near-duplicates too when their pixels match).
    #[arg(long, default_value_t = audit::DUPLICATE_COSINE)]
    pub duplicate_cosine: f32,
    /// Distance to the nearest training photos (in robust standard deviations above the typical
    /// training photo's) from which a photo is listed as out of place.
    #[arg(long, default_value_t = audit::OUTLIER_SCORE, allow_negative_numbers = true)]
    pub outlier_score: f32,
    /// Replace an audit.csv that was edited since the last audit wrote it.
    #[arg(long)]
    pub force: bool,
    /// When the head has no out-of-fold predictions (the 2016 head of `tutorial`), fit the
    /// calibrated probe for them first (seconds; written to RUN/audit/oof.safetensors, the head is
    /// not changed).
    #[arg(long)]
    pub fit_probe: bool,
}

pub fn run(args: &AuditArgs, global: &Global) -> anyhow::Result<()> {
    let cfg = AuditConfig {
        data: args.data.clone(),
        duplicate_cosine: args.duplicate_cosine,
        outlier_score: args.outlier_score,
        force: args.force,
        fit_probe: args.fit_probe,
        ..AuditConfig::new(&args.run)
    };
    let mut out = progress::Phases::new(global);
    let found = audit::run(&cfg, &mut |e| out.stage_event(e, ""));
    out.end();
    let found = found?;
    progress::summary(global, &found, || {
        print_summary(&found, &args.run);
        Ok(())
    })
}

/// Lines shown per kind of finding.
const SHOWN: usize = 10;

fn print_summary(a: &Audit, run: &std::path::Path) {
    println!(
        "likely mislabeled: {} of {} scored training photos",
        a.mislabeled.len(),
        a.scored_rows
    );
    for m in a.mislabeled.iter().take(SHOWN) {
        println!(
            "  {}  labelled {} ({:.3}), looks like {} ({:.3})",
            m.path, m.given, m.given_probability, m.suggested, m.suggested_probability
        );
    }
    println!(
        "near-duplicates: {} pairs, {} of them across splits (leaks){}",
        a.duplicates.len(),
        a.leaks(),
        if a.duplicates_truncated {
            " (more were found; the most similar are kept)"
        } else {
            ""
        }
    );
    for d in a.duplicates.iter().take(SHOWN) {
        println!(
            "  {} ({}) ~ {} ({}), {}",
            d.path,
            d.split,
            d.partner,
            d.partner_split,
            d.evidence()
        );
    }
    println!("out of place: {} photos", a.outliers.len());
    for o in a.outliers.iter().take(SHOWN) {
        println!(
            "  {} ({}, labelled {}): score {:.1}, looks most like {}",
            o.path, o.split, o.given, o.score, o.nearest
        );
    }
    if let Some(c) = a.confused.first() {
        println!(
            "most confused classes: {} ↔ {} ({} + {} photos, {:.1}%)",
            c.a,
            c.b,
            c.a_as_b,
            c.b_as_a,
            100.0 * c.rate
        );
    }
    println!("wrote {} ({:.1} s)", run.join("audit").display(), a.seconds);
}
