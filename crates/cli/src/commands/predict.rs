//! `bottleneck predict`: classify image files and folders with the best stage of a run, streaming
//! a table (default), CSV (`--csv`) or one JSON document (`--json`) to stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use features::runtime::SessionOptions;
use predict::format::{csv_header, csv_row, PredictReport, Table};
use predict::{inputs, LoadOptions, Predictor, Stage};

use crate::args::{Global, HubFlags, RuntimeFlags};
use crate::progress;

/// Which classifier of a run to use (shared by predict, evaluate and export).
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifierFlags {
    /// Run folder: uses RUN/finetune/model.onnx when it exists, else the backbone + RUN/head/head.safetensors.
    #[arg(long)]
    pub run: PathBuf,
    /// Force a stage: finetune or head [default: the best the run has].
    #[arg(long)]
    pub stage: Option<Stage>,
    /// Backbone .onnx file or model name, if the one recorded in the head file has moved (head stage).
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub hub: HubFlags,
}

impl ClassifierFlags {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            stage: self.stage,
            model: self.model.clone(),
            hub: self.hub.options(),
        }
    }
}

/// How inference runs (shared by predict and evaluate).
#[derive(Debug, Clone, clap::Args)]
pub struct SessionFlags {
    /// Images per inference batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
}

impl SessionFlags {
    pub fn options(&self) -> SessionOptions {
        self.runtime.options()
    }
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bottleneck predict --run runs/dvc photo.jpg more_photos/\n  \
bottleneck predict --run runs/dvc --csv photos/ > predictions.csv\n  \
bottleneck --json predict --run runs/dvc --top-k 2 photos/"
)]
pub struct PredictArgs {
    #[command(flatten)]
    pub classifier: ClassifierFlags,
    /// Image files or folders (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Also list the K most probable classes with their probabilities.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub top_k: usize,
    /// CSV on stdout: file,class,probability,p_<class>…
    #[arg(long)]
    pub csv: bool,
    #[command(flatten)]
    pub session: SessionFlags,
}

pub fn run(args: &PredictArgs, global: &Global) -> anyhow::Result<()> {
    if args.csv && global.json {
        anyhow::bail!("--csv and --json both choose the output format: pass only one");
    }
    if args.top_k == 0 {
        anyhow::bail!("--top-k must be at least 1");
    }
    let run = &args.classifier.run;
    let items = inputs::collect(&args.paths)?;
    if let Some(skipped) = inputs::none_readable(&items) {
        // Not one photo can be read: say why for each, without loading the classifier.
        for s in &skipped {
            progress::note(global, format!("skipped {}: {}", s.file, s.reason));
        }
        return nothing_classified(&predict::run::RunStats {
            images: items.len(),
            skipped,
            ..Default::default()
        });
    }
    let classifier = predict::load(run, &args.classifier.load_options())
        .with_context(|| format!("loading the classifier of {}", run.display()))?;
    progress::note(global, classifier.describe());
    let mut predictor = Predictor::new(
        classifier,
        &args.session.options(),
        args.session.runtime.engine.get(),
    )?;
    if let Some(n) = &predictor.note {
        progress::note(global, n);
    }
    let device = predictor.device();
    let classes = predictor.classifier.classes.clone();
    let top_k = args.top_k.min(classes.len());
    let table = Table::new(items.iter().map(|i| i.rel.as_str()), &classes, top_k);
    let bar = progress::bar(global, items.len() as u64, "predict", "img");
    let stdout = std::io::stdout();
    // A closed stdout (e.g. `| head`) ends the command quietly instead of panicking.
    let print = |line: String| -> predict::Result<()> {
        bar.suspend(|| writeln!(stdout.lock(), "{line}"))
            .map_err(|e| predict::Error::io("<stdout>", e))
    };
    let header = if args.csv {
        Some(csv_header(&classes))
    } else {
        (!global.json).then(|| table.header())
    };
    if let Some(h) = header {
        if let Err(e) = print(h) {
            return closed_stdout(e);
        }
    }
    let mut all = Vec::new();
    let stats = predictor.run(&items, args.session.batch, top_k, &mut |preds, skipped| {
        for s in skipped {
            let msg = format!("skipped {}: {}", s.file, s.reason);
            if global.quiet || global.json {
                progress::note(global, msg);
            } else {
                // Not `bar.println`: a hidden bar (stderr not a terminal) would drop the line.
                bar.suspend(|| eprintln!("{msg}"));
            }
        }
        if global.json {
            all.extend_from_slice(preds);
        } else {
            for p in preds {
                print(if args.csv { csv_row(p) } else { table.row(p) })?;
            }
        }
        bar.inc((preds.len() + skipped.len()) as u64);
        Ok(())
    });
    let stats = match stats {
        Ok(s) => s,
        Err(e) => return closed_stdout(e),
    };
    bar.finish_and_clear();
    if global.json {
        let report = PredictReport {
            classifier: predictor.classifier.info(),
            device: device.clone(),
            predictions: all,
            stats,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return nothing_classified(&report.stats);
    }
    progress::note(
        global,
        format!(
            "{} images classified ({} skipped) in {:.1} s, {:.1} img/s on {device} with stage {}",
            stats.predicted,
            stats.skipped.len(),
            stats.seconds,
            stats.images_per_second,
            predictor.classifier.stage.name()
        ),
    );
    nothing_classified(&stats)
}

/// An error when images were given but none could be classified (the result asked for is missing).
fn nothing_classified(stats: &predict::run::RunStats) -> anyhow::Result<()> {
    if stats.predicted == 0 && stats.images > 0 {
        anyhow::bail!(
            "none of the {} images could be read, so nothing was classified (each is listed above with the reason)",
            stats.images
        );
    }
    Ok(())
}

/// Success when `e` is a write to a closed stdout (the reader has all it wanted), else the error.
fn closed_stdout(e: predict::Error) -> anyhow::Result<()> {
    match &e {
        predict::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        _ => Err(e.into()),
    }
}
