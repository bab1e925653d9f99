//! `bottleneck train-head`: parses the options, calls `head::pipeline::train_head`, shows
//! progress and prints the summary (human or `--json`).

use std::path::PathBuf;

use head::mlp::TrainConfig;
use head::pipeline::{train_head, TrainHeadOptions, TrainReport};
use head::probe::ProbeConfig;
use head::recipe::Recipe;
use train::metrics::Keep;
use train::optim::{OptimizerConfig, OptimizerKind};

use crate::args::Global;
use crate::progress;

/// Train the classifier on the features cached by `bottleneck extract`.
///
/// By default a calibrated linear probe: L2 logistic regression on the flattened features, its
/// strength chosen by 5-fold cross-validation on train only, temperature-scaled, balanced class
/// weights. The validation split is only scored. `--keras2016` trains the 2016 tutorial's dense
/// network instead (the options below marked "keras2016").
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bottleneck train-head --run runs/mine\n  bottleneck train-head --run runs/dvc --keras2016 --epochs 50 --batch 16 --optimizer rmsprop --lr 1e-4"
)]
pub struct TrainHeadArgs {
    /// Run folder: reads RUN/features/*.safetensors, writes RUN/head/.
    #[arg(long)]
    pub run: PathBuf,
    /// Train the 2016 tutorial's head (Dense 256, dropout 0.5, RMSprop) instead of the probe.
    #[arg(long)]
    pub keras2016: bool,
    /// Cross-validation folds of the probe.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// keras2016: passes over the training samples.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// keras2016: samples per gradient step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// keras2016: update rule (Keras semantics).
    #[arg(long, default_value = "rmsprop", value_parser = ["rmsprop", "sgd", "adam", "adamw"])]
    pub optimizer: String,
    /// keras2016: learning rate.
    #[arg(long, default_value_t = head::DEFAULT_LEARNING_RATE)]
    pub lr: f64,
    /// Momentum (SGD only).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum (SGD only).
    #[arg(long)]
    pub nesterov: bool,
    /// Decoupled weight decay [default: 0, or 0.004 for adamw].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// keras2016: dropout rate after the hidden layer.
    #[arg(long, default_value_t = 0.5)]
    pub dropout: f32,
    /// keras2016: units of the hidden dense layer.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Seed of the folds, initial weights, shuffling, dropout and --val-split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// keras2016: which epoch's weights to save: the last one (a fixed schedule), or the lowest
    /// validation loss (picks on the split it then reports: optimistic).
    #[arg(long, default_value = "last", value_parser = ["best", "last"])]
    pub keep: String,
    /// Hold out this stratified fraction of train for validation (when there is no validation split).
    #[arg(long)]
    pub val_split: Option<f64>,
    /// Overwrite an existing RUN/head.
    #[arg(long)]
    pub force: bool,
}

impl TrainHeadArgs {
    fn options(&self) -> anyhow::Result<TrainHeadOptions> {
        let kind: OptimizerKind = self.optimizer.parse()?;
        let mut optimizer = OptimizerConfig {
            learning_rate: self.lr,
            ..OptimizerConfig::new(kind)
        };
        if kind == OptimizerKind::Sgd {
            optimizer.momentum = self.momentum;
            optimizer.nesterov = self.nesterov;
        }
        if let Some(wd) = self.weight_decay {
            optimizer.weight_decay = wd;
        }
        let keep: Keep = self.keep.parse()?;
        Ok(TrainHeadOptions {
            run: self.run.clone(),
            config: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch,
                hidden: self.hidden,
                dropout: self.dropout,
                optimizer,
                seed: self.seed,
                keep,
                recipe: if self.keras2016 {
                    Recipe::Keras2016
                } else {
                    Recipe::Probe
                },
                probe: ProbeConfig {
                    folds: self.folds,
                    seed: self.seed,
                    ..ProbeConfig::default()
                },
            },
            val_split: self.val_split,
            force: self.force,
        })
    }
}

pub fn run(args: &TrainHeadArgs, global: &Global) -> anyhow::Result<()> {
    let opts = args.options()?;
    let mut out = progress::Phases::new(global);
    let report = train_head(&opts, &mut |e| out.stage_event(e, ""));
    out.end();
    let report = report?;
    progress::summary(global, &report, || {
        print_summary(&report);
        Ok(())
    })?;
    if let Some(why) = &report.metrics.stopped_early {
        eprintln!(
            "warning: training stopped early: {why}; kept epoch {} (the last good weights)",
            report.metrics.kept_epoch
        );
    }
    Ok(())
}

fn print_summary(r: &TrainReport) {
    let m = &r.metrics;
    println!(
        "trained a {}-class head on {} samples, validated on {} ({}) in {:.1} s",
        r.meta.classes.len(),
        m.train_samples,
        m.val_samples,
        m.validation,
        m.total_seconds
    );
    if let Some(p) = &r.meta.probe {
        println!(
            "linear probe: C {:.3e} and temperature {:.3} chosen by {}-fold cross-validation on train",
            p.c, p.temperature, p.folds
        );
    } else {
        println!(
            "final val accuracy {:.4} (epoch {}), best {:.4} (epoch {})",
            m.final_val_accuracy,
            m.epochs.len(),
            m.best_val_accuracy,
            m.best_val_accuracy_epoch
        );
        println!(
            "kept epoch {} ({})",
            m.kept_epoch,
            if m.keep == Keep::Best {
                "lowest val loss"
            } else {
                "last"
            },
        );
    }
    println!(
        "validation: accuracy {:.4}, log loss {:.4}, calibration error (ECE) {}",
        m.kept_val_accuracy,
        m.kept_val_loss,
        m.kept_val_ece
            .map(|e| format!("{e:.4}"))
            .unwrap_or_else(|| "-".into())
    );
    println!("recall per class: {}", r.confusion.recall_line());
    println!("confusion matrix on validation (rows: true class):");
    print!("{}", r.confusion.render());
    println!("wrote {}", r.paths.dir.display());
}
