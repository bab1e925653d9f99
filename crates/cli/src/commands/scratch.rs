//! `bottleneck scratch`: parses the options, calls `scratch::train` (stage 1, the tutorial's small
//! convnet from scratch), shows a progress bar per epoch and prints the summary.

use std::path::PathBuf;
use train::kernels::TrainPrecision;

use features::preprocess::Resize;
use scratch::{ScratchConfig, ScratchReport};
use train::metrics::Keep;
use train::optim::{OptimizerConfig, OptimizerKind};
use train::schedule::LrSchedule;

use crate::args::{EngineFlag, Global};
use crate::commands::augment_preview::AugmentFlags;
use crate::progress;

/// Train the tutorial's small convnet (3 conv blocks, dense 64, dropout 0.5) from scratch on augmented images.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Writes RUN/scratch/{model.safetensors, metrics.json, confusion.json, curves.png, curves.svg} \
and a per-epoch checkpoint.safetensors.\n\nExamples:\n  \
bottleneck scratch --data ../shared/data/dogs_vs_cats --run runs/dvc\n  \
bottleneck scratch --data ../shared/data/dogs_vs_cats --run runs/dvc --epochs 50 --stop-after 10\n  \
bottleneck scratch --data ../shared/data/dogs_vs_cats --run runs/dvc --resume"
)]
pub struct ScratchArgs {
    /// Data folder DIR/<split>/<class>/*.jpg.
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder; results go to RUN/scratch/.
    #[arg(long)]
    pub run: PathBuf,
    /// Total epochs.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Stop after N epochs of this call (a checkpoint is written after every epoch); continue with --resume.
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Learning rate [default: 1e-3 (Keras RMSprop default); sgd: 1e-2].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimizer: rmsprop (the tutorial), adam, adamw or sgd.
    #[arg(long, default_value = "rmsprop")]
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    /// Decoupled weight decay (Keras 3 `weight_decay`: every step `w -= w·wd·lr`) [default: 0, or
    /// 0.004 for adamw].
    #[arg(long, value_name = "WD")]
    pub weight_decay: Option<f64>,
    /// Learning rate by epoch: constant (the tutorial) or cosine (from --lr down to ~0 at the last epoch).
    #[arg(long, value_name = "SCHEDULE", default_value = "constant")]
    pub lr_schedule: LrSchedule,
    /// Image side in pixels.
    #[arg(long, default_value_t = 150)]
    pub size: u32,
    /// Resize filter: nearest (Keras load_img, the tutorial), bilinear, bicubic, lanczos.
    #[arg(long, default_value = "nearest")]
    pub resize: Resize,
    /// Weights to save: last (the tutorial) or best (lowest validation loss).
    #[arg(long, default_value = "last")]
    pub keep: Keep,
    /// Validate and save an exponential moving average of the weights with this momentum per step
    /// (Keras `use_ema`/`ema_momentum`; e.g. 0.999) [default: off, the raw weights].
    #[arg(long, value_name = "MOMENTUM")]
    pub ema: Option<f64>,
    /// Precision of the convolutions' products: auto (bf16 products with FP32 sums on CPUs with
    /// AVX512-BF16, else fp32), fp32 or bf16; weights, gradients and sums stay FP32.
    #[arg(long, default_value = "auto")]
    pub train_precision: TrainPrecision,
    /// Split to train on.
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// Split to validate on (not augmented).
    #[arg(long, default_value = "validation")]
    pub val_split: String,
    /// Delete an existing RUN/scratch and start over.
    #[arg(long)]
    pub force: bool,
    /// cpu, cuda (train on the GPU through Candle; an error if CUDA cannot start or the binary was
    /// built without `--features cuda`) or auto (CUDA if it starts, else the CPU).
    #[arg(long, default_value = "cpu")]
    pub device: features::runtime::Device,
    #[command(flatten)]
    pub engine: EngineFlag,
    /// Continue from RUN/scratch/checkpoint.safetensors with its settings and optimizer state
    /// (the result equals an uninterrupted run).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub augment: AugmentFlags,
}

impl ScratchArgs {
    /// The library configuration.
    pub fn config(&self) -> anyhow::Result<ScratchConfig> {
        let mut cfg = ScratchConfig::new(&self.data, &self.run);
        cfg.epochs = self.epochs;
        cfg.stop_after = self.stop_after;
        cfg.batch_size = self.batch;
        let mut opt = OptimizerConfig::new(self.optimizer);
        if let Some(lr) = self.lr {
            opt.learning_rate = lr;
        }
        opt.momentum = self.momentum;
        if let Some(wd) = self.weight_decay {
            opt.weight_decay = wd;
        }
        cfg.optimizer = opt;
        cfg.schedule = self.lr_schedule;
        cfg.size = self.size;
        cfg.resize = self.resize;
        cfg.keep = self.keep;
        cfg.ema = self.ema;
        cfg.train_precision = self.train_precision;
        cfg.train_split = self.train_split.clone();
        cfg.val_split = self.val_split.clone();
        cfg.force = self.force;
        cfg.device = self.device;
        cfg.engine = self.engine.get();
        cfg.resume = self.resume;
        cfg.augment = self.augment.to_params()?;
        cfg.seed = self.augment.seed.unwrap_or(scratch::DEFAULT_SEED);
        Ok(cfg)
    }
}

pub fn run(args: &ScratchArgs, global: &Global) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let mut out = progress::Phases::new(global);
    let report = scratch::train(&cfg, &mut |ev| out.stage_event(ev, ""));
    out.end();
    let report = report?;
    progress::summary(global, &report, || {
        print_summary(&report, &cfg);
        Ok(())
    })?;
    if let Some(why) = &report.metrics.stopped_early {
        eprintln!("warning: training stopped early: {why}");
    }
    Ok(())
}

fn print_summary(r: &ScratchReport, cfg: &ScratchConfig) {
    let m = &r.metrics;
    println!(
        "{}: {} parameters, {} training / {} validation images ({})",
        r.architecture,
        r.parameters,
        r.train_images,
        r.val_images,
        r.classes.join(", ")
    );
    println!(
        "{} epochs, {:.1} s per epoch on average on {} (decoding took {:.1} s)",
        r.epochs_done, r.mean_epoch_seconds, r.device, r.load_seconds
    );
    println!(
        "final val accuracy {:.4}; best {:.4} (epoch {}); kept epoch {} ({}): val loss {:.4}, val accuracy {:.4}",
        m.final_val_accuracy,
        m.best_val_accuracy,
        m.best_val_accuracy_epoch,
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
    if !r.finished {
        println!(
            "paused after epoch {} of {}: continue with\n  bottleneck scratch --data {} --run {} --resume",
            r.epochs_done,
            r.epochs,
            cfg.data.display(),
            cfg.run.display()
        );
    }
    println!("wrote {}", r.paths.stage.dir.display());
}
