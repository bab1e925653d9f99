//! `bottleneck export`: write the run's classifier (the graph `predict` runs) as one ONNX file
//! whose metadata documents the preprocessing.

use std::path::PathBuf;

use anyhow::Context;

use crate::args::Global;
use crate::commands::predict::ClassifierFlags;
use crate::progress;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  bottleneck export --run runs/dvc --out cats_dogs.onnx")]
pub struct ExportArgs {
    #[command(flatten)]
    pub classifier: ClassifierFlags,
    /// The .onnx file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &ExportArgs, global: &Global) -> anyhow::Result<()> {
    let run = &args.classifier.run;
    let s = predict::export(run, &args.out, args.force, &args.classifier.load_options())
        .with_context(|| format!("exporting the classifier of {}", run.display()))?;
    progress::summary(global, &s, || {
        println!(
            "wrote {} ({:.1} MB, sha256 {}…): stage {}, {} classes {:?}",
            s.out.display(),
            s.bytes as f64 / 1e6,
            &s.sha256[..12],
            s.classifier.stage.name(),
            s.classifier.classes.len(),
            s.classifier.classes
        );
        println!("metadata:");
        for (k, v) in &s.metadata {
            println!("  {k}: {v}");
        }
        Ok(())
    })
}
