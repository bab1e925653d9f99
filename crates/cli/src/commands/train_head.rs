//! `bottleneck train-head`: parses the options, calls `head::pipeline::train_head`, shows
//! progress and prints the summary (human or `--json`).

use std::path::PathBuf;

use head::mlp::TrainConfig;
use head::pipeline::{train_head, TrainHeadOptions, TrainReport};
use train::metrics::Keep;
use train::optim::{OptimizerConfig, OptimizerKind};

use crate::args::Global;
use crate::progress;

/// Train the dense classifier on the features cached by `bottleneck extract`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  bottleneck train-head --run runs/dvc --epochs 50 --batch 16 --optimizer rmsprop --lr 1e-4"
)]
pub struct TrainHeadArgs {
    /// Run folder: reads RUN/features/*.safetensors, writes RUN/head/.
    #[arg(long)]
    pub run: PathBuf,
    /// Passes over the training samples.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Samples per gradient step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Update rule (Keras semantics).
    #[arg(long, default_value = "rmsprop", value_parser = ["rmsprop", "sgd", "adam", "adamw"])]
    pub optimizer: String,
    /// Learning rate.
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
    /// Dropout rate after the hidden layer.
    #[arg(long, default_value_t = 0.5)]
    pub dropout: f32,
    /// Units of the hidden dense layer.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Seed of the initial weights, shuffling, dropout and --val-split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which epoch's weights to save: lowest validation loss, or the last one.
    #[arg(long, default_value = "best", value_parser = ["best", "last"])]
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
    println!(
        "final val accuracy {:.4} (epoch {}), best {:.4} (epoch {})",
        m.final_val_accuracy,
        m.epochs.len(),
        m.best_val_accuracy,
        m.best_val_accuracy_epoch
    );
    println!(
        "kept epoch {} ({}): val loss {:.4}, val accuracy {:.4}",
        m.kept_epoch,
        if m.keep == Keep::Best {
            "lowest val loss"
        } else {
            "last"
        },
        m.kept_val_loss,
        m.kept_val_accuracy
    );
    println!("confusion matrix on validation (rows: true class):");
    print!("{}", r.confusion.render());
    println!("wrote {}", r.paths.dir.display());
}
