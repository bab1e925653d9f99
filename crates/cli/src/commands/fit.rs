//! `bottleneck fit`: your own folder of photos through extract → train-head (the calibrated probe)
//! → finetune, resumable, ending with a summary and `RUN/report.html`. Parses the options and
//! hands them to `tutorial::run` through the same renderer as `bottleneck tutorial`.

use std::path::PathBuf;

use features::preprocess::{Preprocess, Resize};
use tutorial::{Stage, TutorialConfig};

use crate::args::{Global, HubFlags, RuntimeFlags};
use crate::commands::tutorial::run_config;

/// Build the best classifier your photos allow: features, a calibrated head, then fine-tuning.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bottleneck fit --data photos/ --run runs/mine --model ../shared/models/vgg16_keras_notop.onnx\n  \
bottleneck fit --data photos/ --run runs/mine --no-finetune\n\n\
DIR is DIR/train/<class>/*.jpg with DIR/validation (or val, valid, dev, test)/<class>/*.jpg, or DIR/<class>/*.jpg \
alone: then a stratified fifth of every class (chosen from the file names, seed 0, recorded in the head) is held \
out for validation by every stage. Run it again to continue an interrupted run; finished stages are reused."
)]
pub struct FitArgs {
    /// Data folder: DIR/train/<class>/*.jpg and DIR/validation/<class>/*.jpg (or val, valid, dev, test), or DIR/<class>/*.jpg.
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder: features/, head/, finetune/, report.md and report.html.
    #[arg(long)]
    pub run: PathBuf,
    /// The backbone: a model name from models/ (e.g. efficientnet-lite2, vgg16-keras) or a local
    /// .onnx file [default: the one of efficientnet-lite0, efficientnet-lite2 and the two side by
    /// side (efficientnet-lite0+lite2) with the lowest cross-validated log loss on your training photos].
    #[arg(long)]
    pub model: Option<String>,
    /// Preprocessing: caffe, torch or unit (default: the model's manifest).
    #[arg(long)]
    pub preprocess: Option<Preprocess>,
    /// Side of the square network input in pixels [default: the model manifest's, else 224].
    #[arg(long)]
    pub size: Option<u32>,
    /// How photos are resized: nearest (Keras load_img), bilinear, bicubic, lanczos (squashed to the
    /// square), or bilinear-crop, bicubic-crop (shorter side, then the centre) [default: the model
    /// manifest's, else nearest].
    #[arg(long)]
    pub resize: Option<Resize>,
    /// Stop after the head (stage 3 costs minutes per hundred photos on a CPU).
    #[arg(long)]
    pub no_finetune: bool,
    /// Epochs of fine-tuning [default: 10].
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// SGD learning rate of fine-tuning [default: 3e-6].
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// Folds of the cross-fit that calibrates fine-tuning's probabilities (a temperature fitted on
    /// out-of-fold predictions of the training photos; costs about one more fine-tuning run); 0 = off.
    #[arg(long, value_name = "K", default_value_t = tutorial::config::OWN_PHOTOS_CALIBRATION_FOLDS)]
    pub calibrate: usize,
    /// Augmented draws per training photo cached for fine-tuning; 0 augments afresh every epoch [default: 5].
    #[arg(long, value_name = "K")]
    pub aug_cache: Option<usize>,
    /// Input tensor of the block to fine-tune [default: the model manifest's, block4_pool for VGG16].
    #[arg(long, value_name = "TENSOR")]
    pub split_at: Option<String>,
    /// Precision of training products (stage 1 and fine-tuning's block): auto (bf16 products with FP32
    /// sums on CPUs with AVX512-BF16, else fp32), fp32 or bf16.
    #[arg(long, default_value = "auto")]
    pub train_precision: train::kernels::TrainPrecision,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    /// Replace outputs in RUN made from other inputs or settings.
    #[arg(long)]
    pub force: bool,
    /// Skip the audit of the training photos after the head (likely mislabeled photos,
    /// near-duplicates and leaks, photos out of place: `bottleneck audit`, seconds of work).
    #[arg(long)]
    pub no_audit: bool,
    /// A file of photo paths to leave out (one per line, relative to DATA, or audit.csv with its
    /// `path` column): retrain without the photos `bottleneck audit` flagged. Recorded in the
    /// feature files.
    #[arg(long, value_name = "FILE")]
    pub exclude: Option<PathBuf>,
    #[command(flatten)]
    pub hub: HubFlags,
}

impl FitArgs {
    /// The library configuration: [`TutorialConfig::own_photos`], then the flags given.
    pub fn config(&self) -> TutorialConfig {
        let candidates = tutorial::config::DEFAULT_CANDIDATES;
        let model = self.model.as_deref().unwrap_or(candidates[0]);
        let mut cfg = TutorialConfig::new(&self.data, model, &self.run).own_photos();
        if self.model.is_none() {
            cfg.candidates = candidates.iter().map(|c| c.to_string()).collect();
        }
        if self.no_finetune {
            cfg.stages.retain(|s| *s != Stage::Finetune);
        }
        cfg.preprocess = self.preprocess;
        cfg.size = self.size;
        cfg.resize = self.resize;
        cfg.finetune_epochs = self.finetune_epochs.unwrap_or(cfg.finetune_epochs);
        cfg.finetune.sgd.learning_rate = self.finetune_lr.unwrap_or(cfg.finetune.sgd.learning_rate);
        cfg.finetune.aug_cache = self.aug_cache.unwrap_or(cfg.finetune.aug_cache);
        cfg.finetune.calibrate = self.calibrate;
        cfg.split_at = self.split_at.clone();
        cfg.set_device(self.runtime.device, None);
        cfg.engine = self.runtime.engine.get();
        cfg.train_precision = self.train_precision;
        cfg.threads = self.runtime.threads;
        cfg.force = self.force;
        cfg.audit = !self.no_audit;
        cfg.exclude = self.exclude.clone();
        cfg.hub = self.hub.options();
        cfg
    }
}

pub fn run(args: &FitArgs, global: &Global) -> anyhow::Result<()> {
    run_config(&args.config(), global)
}
