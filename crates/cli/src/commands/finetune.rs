//! `bottleneck finetune`: parses the options (on `--resume`, flags left out come from the
//! checkpoint), calls `finetune::finetune`, shows progress and prints the summary.

use std::path::PathBuf;

use finetune::{finetune, FinetuneConfig, Report};
use train::metrics::Keep;

use crate::args::{Given, Global, HubFlags, RuntimeFlags};
use crate::commands::augment_preview::AugmentFlags;
use crate::progress;

/// Fine-tune the top conv block (VGG16 block5) together with the trained head on augmented images.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bottleneck finetune --run runs/dvc --data ../shared/data/dogs_vs_cats\n  \
bottleneck finetune --run runs/dvc --data ../shared/data/dogs_vs_cats --epochs 50 --stop-after 5\n  \
bottleneck finetune --run runs/dvc --data ../shared/data/dogs_vs_cats --resume"
)]
pub struct FinetuneArgs {
    /// Run folder: reads RUN/head/head.safetensors, writes RUN/finetune/ (caches in RUN/finetune-cache/).
    #[arg(long)]
    pub run: PathBuf,
    /// Data folder DIR/<split>/<class>/*.jpg (the data the head was trained on).
    #[arg(long)]
    pub data: PathBuf,
    /// Model name or .onnx path [default: the model the head was trained on].
    #[arg(long)]
    pub model: Option<String>,
    /// Input tensor of the block to train [default: the model manifest's trainable_from, block4_pool for VGG16].
    #[arg(long, value_name = "TENSOR")]
    pub split_at: Option<String>,
    /// Image side in pixels; must match the head [default: the head's].
    #[arg(long)]
    pub size: Option<u32>,
    /// Split to train on.
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// Split to validate on (not augmented).
    #[arg(long, default_value = "validation")]
    pub val_split: String,
    /// Total epochs of the run [default: 50].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after N epochs of this session (a checkpoint is written after every epoch); continue with --resume.
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// The settings a checkpoint records (batch, SGD, caches, precisions, calibration, keep).
    #[command(flatten)]
    pub options: finetune::Options,
    /// Where ONNX Runtime runs the frozen part (Candle follows RAYON_NUM_THREADS).
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    /// Start over, deleting RUN/finetune (the caches are kept).
    #[arg(long)]
    pub force: bool,
    /// Continue from RUN/finetune/checkpoint.safetensors; flags left out take the checkpoint's values.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub hub: HubFlags,
    #[command(flatten)]
    pub augment: AugmentFlags,
}

/// True when any augmentation flag other than `--seed` was given.
fn augment_flags_given(a: &AugmentFlags) -> bool {
    a.augment.is_some()
        || a.rotation.is_some()
        || a.width_shift.is_some()
        || a.height_shift.is_some()
        || a.shear.is_some()
        || a.zoom.is_some()
        || a.horizontal_flip.is_some()
        || a.vertical_flip.is_some()
        || a.fill.is_some()
        || a.cval.is_some()
        || a.brightness.is_some()
        || a.channel_shift.is_some()
}

impl FinetuneArgs {
    /// The library configuration; with `--resume`, the settings `given` says were left out come
    /// from the checkpoint ([`finetune::request::resolve`]).
    pub fn config(&self, given: &Given) -> anyhow::Result<FinetuneConfig> {
        let defaults = FinetuneConfig::new(&self.run, &self.data);
        let cfg = FinetuneConfig {
            model: self.model.clone(),
            split_at: self.split_at.clone(),
            size: self.size,
            train_split: self.train_split.clone(),
            val_split: self.val_split.clone(),
            epochs: self.epochs.unwrap_or(defaults.epochs),
            stop_after: self.stop_after,
            options: self.options.clone(),
            augment: self.augment.to_params()?,
            seed: self.augment.seed.unwrap_or(defaults.seed),
            device: self.runtime.device,
            engine: self.runtime.engine.get(),
            threads: self.runtime.threads,
            force: self.force,
            resume: self.resume,
            hub: self.hub.options(),
            ..defaults
        };
        let given = |name: &str| match name {
            "augment" => augment_flags_given(&self.augment),
            name => given.flag(name),
        };
        Ok(finetune::request::resolve(cfg, &given)?)
    }
}

pub fn run(args: &FinetuneArgs, given: &Given, global: &Global) -> anyhow::Result<()> {
    let cfg = args.config(given)?;
    let mut out = progress::Phases::new(global);
    let report = finetune(&cfg, &mut |ev| out.stage_event(ev, ""));
    out.end();
    let report = report?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !global.quiet {
        print_summary(&report, &cfg);
    }
    if let Some(why) = report
        .metrics
        .as_ref()
        .and_then(|m| m.stopped_early.as_ref())
    {
        eprintln!("warning: training stopped early: {why}");
    }
    Ok(())
}

fn print_summary(r: &Report, cfg: &FinetuneConfig) {
    println!(
        "fine-tuned {} → {} + head on {} training images ({} validation), {} products on {}, frozen part ({}) on {}",
        r.settings.split_at,
        r.settings.output_tensor,
        r.train_images,
        r.val_images,
        r.settings.options.train_precision.name(),
        r.train_device,
        r.precision.name(),
        r.device
    );
    if let Some(q) = &r.int8 {
        println!(
            "int8 frozen part: {} convs in int8, {} calibration images from '{}'{}; outputs within {:.2e} \
             (relative) of FP32 on the checked images",
            q.quantized_convs,
            q.calib_images,
            q.calib_split,
            q.path
                .as_ref()
                .map(|p| format!(
                    ", {} {}",
                    match (q.from_cache, &q.from_shared) {
                        (true, _) => "reused".to_string(),
                        (false, Some(s)) => format!("copied from the shared cache {} to", s.display()),
                        (false, None) => "wrote".to_string(),
                    },
                    p.display()
                ))
                .unwrap_or_default(),
            q.frozen_max_rel_diff
        );
    }
    if !r.draw_seconds.is_empty() {
        let mean = r.draw_seconds.iter().sum::<f64>() / r.draw_seconds.len() as f64;
        println!(
            "augmentation cache: built {} draws, {:.1} s per draw",
            r.draw_seconds.len(),
            mean
        );
    }
    println!(
        "before fine-tuning: val loss {:.4}, val accuracy {:.4}",
        r.initial_val_loss, r.initial_val_accuracy
    );
    if r.frozen_seconds_per_image > 0.0 {
        println!(
            "frozen part ({}): {:.1} ms/image",
            r.device,
            r.frozen_seconds_per_image * 1e3
        );
    }
    if !r.finished {
        println!(
            "paused after epoch {} of {}: continue with\n  bottleneck finetune --run {} --data {} --resume",
            r.epochs_done,
            r.epochs_requested,
            cfg.run.display(),
            cfg.data.display()
        );
        return;
    }
    if let Some(c) = &r.calibration {
        println!(
            "calibrated: logits divided by {:.3} (fitted on out-of-fold predictions of {} cross-fitted runs on the \
             training photos: log loss {:.4} → {:.4})",
            c.temperature, c.folds, c.oof_log_loss, c.oof_log_loss_calibrated
        );
    }
    if let Some(m) = &r.metrics {
        println!(
            "kept epoch {} ({}): val loss {:.4}, val accuracy {:.4}; best val accuracy {:.4} (epoch {})",
            m.kept_epoch,
            if m.keep == Keep::Best { "lowest val loss" } else { "last" },
            m.kept_val_loss,
            m.kept_val_accuracy,
            m.best_val_accuracy,
            m.best_val_accuracy_epoch
        );
    }
    if let Some(c) = &r.confusion {
        println!("confusion matrix on validation (rows: true class):");
        print!("{}", c.render());
    }
    println!(
        "wrote {} (model.onnx: image batch → class probabilities)",
        r.paths.stage.dir.display()
    );
    println!("{}", r.export_note);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};
    use finetune::checkpoint::{save, Checkpoint};
    use finetune::config::FrozenPrecision;
    use finetune::rows::Precision;
    use finetune::{FinetunePaths, Options, Settings};
    use train::kernels::TrainPrecision;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        args: FinetuneArgs,
    }

    /// The configuration of a command line, the way `main` parses it.
    fn config(args: &[&str]) -> anyhow::Result<FinetuneConfig> {
        let m = Harness::command()
            .try_get_matches_from(std::iter::once("x").chain(args.iter().copied()))?;
        Harness::from_arg_matches(&m)?
            .args
            .config(&Given::of(Some(&m)))
    }

    #[test]
    fn defaults_are_the_tutorials() {
        let cfg = config(&["--run", "r", "--data", "d"]).unwrap();
        assert_eq!(cfg.options, Options::default());
        let o = &cfg.options;
        assert_eq!((cfg.epochs, o.batch_size, o.aug_cache), (50, 16, 10));
        assert_eq!((o.sgd.learning_rate, o.sgd.momentum), (1e-4, 0.9));
        assert_eq!(cfg.augment, features::augment::AugmentParams::tutorial());
        assert_eq!(
            (cfg.seed, o.keep, o.cache_precision),
            (1337, Keep::Last, Precision::F16)
        );
        assert_eq!(o.precision, FrozenPrecision::Fp32);
        let int8 = config(&["--run", "r", "--data", "d", "--precision", "int8"]).unwrap();
        assert_eq!(int8.options.precision, FrozenPrecision::Int8);
        assert!(config(&["--run", "r", "--data", "d", "--precision", "fp16"]).is_err());
        let nesterov = config(&["--run", "r", "--data", "d", "--nesterov"]).unwrap();
        assert!(nesterov.options.sgd.nesterov);
    }

    #[test]
    fn every_setting_the_resume_asks_about_is_an_argument() {
        let cmd = Harness::command();
        for name in Options::names()
            .iter()
            .map(String::as_str)
            .chain(["model", "split_at", "epochs", "seed"])
        {
            assert!(
                cmd.get_arguments().any(|a| a.get_id() == name),
                "{name} is no argument id of finetune"
            );
        }
    }

    #[test]
    fn resume_takes_left_out_flags_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let run_s = run.to_str().unwrap();
        let first = config(&[
            "--run",
            run_s,
            "--data",
            "d",
            "--lr",
            "3e-4",
            "--aug-cache",
            "4",
            "--epochs",
            "20",
            "--seed",
            "9",
            "--rotation",
            "10",
            "--keep",
            "best",
            "--batch",
            "8",
        ])
        .unwrap();
        let settings = Settings {
            model: "m.onnx".into(),
            model_sha256: "0".into(),
            split_at: "block4_pool".into(),
            output_tensor: "block5_pool".into(),
            image_size: 150,
            preprocess: "caffe".into(),
            resize: "nearest".into(),
            classes: vec![],
            train_digest: String::new(),
            val_digest: String::new(),
            skipped: vec![],
            head_sha256: String::new(),
            augment: first.augment.clone(),
            seed: first.seed,
            int8_key: Some("k".into()),
            options: Options {
                precision: FrozenPrecision::Int8,
                train_precision: TrainPrecision::Bf16,
                ..first.options.clone()
            },
        };
        let ck = Checkpoint {
            settings,
            epochs: 20,
            history: vec![],
            params: vec![],
            velocity: vec![],
            iterations: 0,
            best: None,
        };
        save(&FinetunePaths::new(&run).stage.checkpoint, &[], &ck).unwrap();
        let resumed = config(&["--run", run_s, "--data", "d", "--resume"]).unwrap();
        assert_eq!(resumed.options.sgd, first.options.sgd);
        assert_eq!(resumed.augment, first.augment);
        assert_eq!(
            (resumed.epochs, resumed.options.aug_cache, resumed.seed),
            (20, 4, 9)
        );
        assert_eq!(
            (resumed.options.keep, resumed.options.batch_size),
            (Keep::Best, 8)
        );
        assert_eq!(resumed.split_at.as_deref(), Some("block4_pool"));
        assert_eq!(resumed.options.precision, FrozenPrecision::Int8);
        assert_eq!(resumed.options.train_precision, TrainPrecision::Bf16);
        let longer = config(&[
            "--run", run_s, "--data", "d", "--resume", "--epochs", "50", "--batch", "16",
        ])
        .unwrap();
        assert_eq!(
            (longer.epochs, longer.options.sgd.learning_rate),
            (50, 3e-4)
        );
        // A flag typed with its default value still counts as given.
        assert_eq!(longer.options.batch_size, 16);
    }
}
