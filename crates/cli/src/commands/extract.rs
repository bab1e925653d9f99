//! `bottleneck extract`: run the frozen backbone over a data folder and cache the features.

use std::path::PathBuf;

use anyhow::Context;
use features::extract::{Event, ExtractConfig, ExtractSummary, Precision};
use features::preprocess::{Preprocess, Resize};
use indicatif::ProgressBar;

use crate::args::{Global, HubFlags, RuntimeFlags};
use crate::progress;
use features::shard::{self, Picked, Shard};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bottleneck extract --data data/ --model vgg16 --run runs/demo\n  \
bottleneck extract --data ../shared/data/dogs_vs_cats --model ../shared/models/vgg16_keras_notop.onnx --preprocess caffe --run runs/dvc"
)]
pub struct ExtractArgs {
    /// Data folder: DIR/<split>/<class>/*.jpg or DIR/<class>/*.jpg.
    #[arg(long)]
    pub data: PathBuf,
    /// A model name from models/ (e.g. vgg16) or a local .onnx file.
    #[arg(long, default_value = "vgg16")]
    pub model: String,
    /// Run folder; features go to RUN/features/<split>.safetensors.
    #[arg(long)]
    pub run: PathBuf,
    /// Preprocessing: caffe, torch or unit (default: the model's manifest).
    #[arg(long)]
    pub preprocess: Option<Preprocess>,
    /// Side of the square network input in pixels [default: the model manifest's, else 150].
    #[arg(long)]
    pub size: Option<u32>,
    /// Images per inference batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    /// How photos are resized: nearest (Keras load_img), bilinear, bicubic, lanczos (squashed to the
    /// square), or bilinear-crop, bicubic-crop (shorter side, then the centre) [default: the model
    /// manifest's, else nearest].
    #[arg(long)]
    pub resize: Option<Resize>,
    /// Fail on the first unreadable image instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub hub: HubFlags,
    /// Backbone precision: fp32, or int8 (quantized in Rust on first use with 64 training photos, cached in
    /// RUN/models; ~4× faster on CPUs with VNNI).
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// Extract only shard I of N (0-based) into RUN/features/<split>.shard-I-of-N.safetensors, one task of
    /// a job array; `bottleneck merge --run RUN` joins the shards. Without I/N: from SLURM_ARRAY_TASK_ID
    /// (Slurm job array) or JOB_COMPLETION_INDEX with --shards N (Kubernetes Indexed Job).
    #[arg(long, value_name = "I/N", num_args = 0..=1, default_missing_value = "env")]
    pub shard: Option<String>,
    /// Number of shards when the environment gives only the index (Kubernetes), or to override it.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// A file of photo paths to leave out (one per line, relative to DATA, or audit.csv with its
    /// `path` column): retrain without the photos `bottleneck audit` flagged. Recorded in the
    /// feature files.
    #[arg(long, value_name = "FILE")]
    pub exclude: Option<PathBuf>,
}

/// The library configuration these flags describe.
/// The shard this task extracts, and where that came from.
fn shard(args: &ExtractArgs) -> anyhow::Result<Option<Picked>> {
    Ok(match args.shard.as_deref() {
        None => None,
        Some("env") => Some(shard::from_env(&|k| std::env::var(k).ok(), args.shards)?),
        Some(s) => Some(Picked {
            shard: Shard::parse(s)?,
            source: format!("--shard {s}"),
        }),
    })
}

pub fn config(args: &ExtractArgs) -> ExtractConfig {
    let defaults =
        ExtractConfig::new(&args.data, &args.model, &args.run).with_hub(args.hub.options());
    ExtractConfig {
        preprocess: args.preprocess,
        size: args.size.unwrap_or(defaults.size),
        batch: args.batch,
        device: args.runtime.device,
        engine: args.runtime.engine.get(),
        threads: args.runtime.threads,
        resize: args.resize.unwrap_or(defaults.resize),
        strict: args.strict,
        precision: args.precision,
        shard: None,
        exclude: args.exclude.clone(),
        ..defaults
    }
}

pub fn run(args: &ExtractArgs, global: &Global) -> anyhow::Result<()> {
    let mut cfg = config(args);
    if let Some(p) = shard(args)? {
        progress::note(
            global,
            format!(
                "shard {} of {} (0-based, from {}): writing RUN/features/<split>.shard-{}-of-{}.safetensors",
                p.shard.index, p.shard.count, p.source, p.shard.index, p.shard.count
            ),
        );
        cfg.shard = Some(p.shard);
    }
    let mut bar = None;
    let summary = accel::engine::extract(&cfg, &mut |ev| render(global, &mut bar, ev))
        .with_context(|| format!("extracting features from {}", args.data.display()))?;
    warn(global, &summary);
    progress::summary(global, &summary, || {
        print_summary(&summary);
        Ok(())
    })
}

/// Shows one extraction event: notes, a progress bar per split, skipped photos above the bar.
fn render(global: &Global, bar: &mut Option<ProgressBar>, ev: Event<'_>) {
    match ev {
        Event::Note(note) => progress::note(global, note),
        Event::Ready {
            device,
            model,
            preprocess,
            output,
        } => progress::note(
            global,
            format!(
                "model {model} → {output}, preprocessing {}, running on {device}",
                preprocess.name()
            ),
        ),
        Event::SplitStart { split, total } => {
            *bar = Some(progress::bar(global, total as u64, split, "img"))
        }
        Event::Progress { done, .. } => {
            if let Some(b) = bar.as_ref() {
                b.set_position(done as u64);
            }
        }
        Event::UpToDate { split, rows } => progress::note(
            global,
            format!("{split}: features up to date ({rows} rows), nothing to do"),
        ),
        Event::Skipped {
            split,
            file,
            reason,
        } => {
            let msg = format!("{split}: skipped {file}: {reason}");
            match bar.as_ref() {
                // Not `println`: a hidden bar (stderr not a terminal) would drop the line.
                Some(b) if !global.quiet && !global.json => b.suspend(|| eprintln!("{msg}")),
                _ => progress::note(global, msg),
            }
        }
        Event::SplitDone { .. } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        }
    }
}

/// Warnings about the data folder: stale splits set aside, photos outside train that repeat
/// training photos.
fn warn(global: &Global, summary: &ExtractSummary) {
    for p in &summary.stale {
        progress::note(
            global,
            format!(
                "warning: the data folder has no such split any more; its old features were moved to {}",
                p.display()
            ),
        );
    }
    if let Some(first) = summary.duplicates.first() {
        progress::note(
            global,
            format!(
                "warning: {} photo(s) outside train are byte-identical to training photos (first: {} = {}); \
                 validation numbers over-state accuracy on new photos until the copies are removed \
                 (`--json` lists them all)",
                summary.duplicates.len(),
                first.file,
                first.same_as
            ),
        );
    }
}

/// The human summary: the model and cut, then one line per split with its skipped photos.
fn print_summary(summary: &ExtractSummary) {
    println!(
        "model {} (sha256 {}…), cut at {}, {} preprocessing, {}×{} {}, device {}",
        summary.model,
        &summary.model_sha256[..12],
        summary.output_tensor,
        summary.preprocess.name(),
        summary.image_size,
        summary.image_size,
        summary.resize.name(),
        summary.device
    );
    for s in &summary.splits {
        let counts: Vec<String> = summary
            .classes
            .iter()
            .zip(&s.class_counts)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let how = if s.up_to_date {
            "up to date".to_string()
        } else {
            format!("{:.1} s, {:.1} img/s", s.seconds, s.images_per_second)
        };
        println!(
            "{:>12}: {:?} ({}) → {} [{how}]",
            s.split,
            s.shape,
            counts.join(", "),
            s.path.display()
        );
        if !s.excluded.is_empty() {
            println!("{:>12}  {} left out (--exclude)", "", s.excluded.len());
        }
        if !s.skipped.is_empty() {
            println!("{:>12}  {} skipped:", "", s.skipped.len());
            for k in &s.skipped {
                println!("{:>12}    {}: {}", "", k.file, k.reason);
            }
        }
    }
}
