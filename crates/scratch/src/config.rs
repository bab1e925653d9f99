//! What `bottleneck scratch` is asked to do ([`ScratchConfig`], tutorial defaults) and where its
//! files go ([`ScratchPaths`]).

use std::path::{Path, PathBuf};

use features::augment::AugmentParams;
use features::preprocess::Resize;
use features::runtime::{Device, Engine};
use serde::Serialize;
use train::kernels::TrainPrecision;
use train::metrics::Keep;
use train::optim::OptimizerConfig;
use train::schedule::LrSchedule;
use train::stage_dir::StageDir;

use crate::error::{Error, Result};

/// Default seed of initialisation, shuffling, augmentation and dropout.
pub use runfs::DEFAULT_SEED;

/// Epochs of [`ScratchConfig::recipe`].
pub const RECIPE_EPOCHS: usize = 100;

/// Settings of one training run.
#[derive(Clone, Debug, Serialize)]
pub struct ScratchConfig {
    /// Data folder `DIR/<split>/<class>/*`.
    pub data: PathBuf,
    /// Run folder; results go to `RUN/scratch/`.
    pub run: PathBuf,
    pub train_split: String,
    /// Validation split (never augmented).
    pub val_split: String,
    /// Input side in pixels (the tutorial: 150).
    pub size: u32,
    /// Resize filter of the photos (the tutorial: nearest, Keras `load_img`).
    pub resize: Resize,
    /// Total epochs (the tutorial: 50).
    pub epochs: usize,
    /// Stop after this many epochs of this call (the checkpoint allows `resume`).
    pub stop_after: Option<usize>,
    /// Images per step (the tutorial: 16).
    pub batch_size: usize,
    /// Images per validation forward pass (does not change results).
    pub eval_batch_size: usize,
    /// The tutorial: RMSprop, Keras defaults (lr 1e-3, ρ 0.9, ε 1e-7).
    pub optimizer: OptimizerConfig,
    /// Learning rate by epoch (the tutorial: constant).
    pub schedule: LrSchedule,
    /// Training augmentation (the tutorial: shear 0.2, zoom 0.2, horizontal flip).
    pub augment: AugmentParams,
    pub seed: u64,
    /// Filters of the conv blocks (the tutorial: 32, 32, 64).
    pub filters: Vec<usize>,
    /// Hidden dense units (the tutorial: 64).
    pub hidden: usize,
    /// Dropout rate (the tutorial: 0.5).
    pub dropout: f32,
    /// Weights to save: `last` (the tutorial) or `best` (lowest validation loss).
    pub keep: Keep,
    /// Validate and save an exponential moving average of the weights with this momentum per
    /// step (Keras `use_ema=True, ema_momentum=m`); `None` (the tutorial): the raw weights.
    pub ema: Option<f64>,
    /// Precision of the convolutions' products: `auto` (bf16 products with FP32 sums on CPUs with
    /// AVX512-BF16, else FP32), `fp32` or `bf16`.
    pub train_precision: TrainPrecision,
    /// Where the network trains (`accel::engine::select`: Candle on CUDA for `cuda`).
    pub device: Device,
    /// The engine knob (`auto`: the default for `device`; see `accel::engine`).
    pub engine: Engine,
    /// Delete an existing `RUN/scratch` and start over.
    pub force: bool,
    /// Continue from `RUN/scratch/checkpoint.safetensors`.
    pub resume: bool,
}

impl ScratchConfig {
    /// The tutorial's settings for `data` and `run`.
    pub fn new(data: impl Into<PathBuf>, run: impl Into<PathBuf>) -> Self {
        ScratchConfig {
            data: data.into(),
            run: run.into(),
            train_split: "train".into(),
            val_split: "validation".into(),
            size: 150,
            resize: Resize::Nearest,
            epochs: 50,
            stop_after: None,
            batch_size: 16,
            eval_batch_size: 32,
            optimizer: OptimizerConfig::rmsprop(1e-3),
            schedule: LrSchedule::Constant,
            augment: AugmentParams::tutorial(),
            seed: DEFAULT_SEED,
            filters: vec![32, 32, 64],
            hidden: 64,
            dropout: 0.5,
            keep: Keep::Last,
            ema: None,
            train_precision: TrainPrecision::Auto,
            device: Device::Cpu,
            engine: Engine::Auto,
            force: false,
            resume: false,
        }
    }

    /// bottleneck's stage-1 recipe (what `bottleneck tutorial` runs): the tutorial's network,
    /// optimizer and batch; the tutorial's augmentation with the 2016 tutorial's real shear
    /// (0.2 rad = 11.5°; Keras 2 reads `shear_range` in degrees) plus width and height shifts of
    /// 0.1; 100 epochs, the learning rate falling along a half cosine so the last epochs settle
    /// instead of jumping around (BENCHMARKS.md: 0.8237 vs 0.7825 with the tutorial's settings).
    pub fn recipe(data: impl Into<PathBuf>, run: impl Into<PathBuf>) -> Self {
        let mut cfg = Self::new(data, run);
        cfg.epochs = RECIPE_EPOCHS;
        cfg.schedule = LrSchedule::Cosine;
        cfg.augment = AugmentParams {
            shear_range: 11.5,
            width_shift_range: 0.1,
            height_shift_range: 0.1,
            ..AugmentParams::tutorial()
        };
        cfg
    }

    /// Checks every option, naming the flag to fix.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Invalid("--epochs must be at least 1".into()));
        }
        if self.stop_after == Some(0) {
            return Err(Error::Invalid("--stop-after must be at least 1".into()));
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        if self.size < 8 || self.size > 1024 {
            return Err(Error::Invalid(format!(
                "--size {} is out of range; use 8 to 1024 (the tutorial: 150)",
                self.size
            )));
        }
        if self.force && self.resume {
            return Err(Error::Invalid(
                "--force starts over and --resume continues: pass only one".into(),
            ));
        }
        if let Some(m) = self.ema {
            if !(m > 0.0 && m < 1.0) {
                return Err(Error::Invalid(format!(
                    "--ema {m} is out of range; use a momentum between 0 and 1 (e.g. 0.999)"
                )));
            }
        }
        self.optimizer.validate()?;
        self.augment.validate()?;
        Ok(())
    }
}

/// The files under `RUN/scratch`: the training stage's ([`StageDir`]) and the saved model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScratchPaths {
    #[serde(flatten)]
    pub stage: StageDir,
    pub model: PathBuf,
}

impl ScratchPaths {
    /// The files of `run`.
    pub fn new(run: &Path) -> Self {
        let stage = StageDir::new(run, "scratch");
        ScratchPaths {
            model: stage.dir.join("model.safetensors"),
            stage,
        }
    }
}
