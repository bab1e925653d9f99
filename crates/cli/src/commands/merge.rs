//! `bottleneck merge`: join the shard files of a job array into ordinary feature files.

use std::path::PathBuf;

use anyhow::Context;

use crate::args::Global;
use crate::progress;

/// Join `extract --shard I/N` outputs into RUN/features/<split>.safetensors.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  bottleneck merge --run runs/big\n\n\
Checks that every shard of every split is there, that they come from the same model, preprocessing, size, \
precision and data listing, and that every photo is in exactly one shard; the merged file is byte for byte \
what a single `bottleneck extract` writes. The shard files are kept.")]
pub struct MergeArgs {
    /// Run folder whose features/ holds <split>.shard-I-of-N.safetensors files.
    #[arg(long)]
    pub run: PathBuf,
}

pub fn run(args: &MergeArgs, global: &Global) -> anyhow::Result<()> {
    let merged = features::merge::merge(&args.run)
        .with_context(|| format!("merging the shards in {}", args.run.display()))?;
    progress::summary(global, &merged, || {
        for m in &merged {
            let what = if m.up_to_date {
                "up to date"
            } else {
                "written"
            };
            println!(
                "{}: {} rows from {} shards → {} ({what}, {:.1} s)",
                m.split,
                m.rows,
                m.shards,
                m.path.display(),
                m.seconds
            );
        }
        Ok(())
    })
}
