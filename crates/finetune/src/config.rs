//! What a fine-tuning run is asked to do ([`FinetuneConfig`]), the part of it that decides the
//! result and must stay fixed across `--resume` ([`Settings`]), and where its files go.

use std::path::{Path, PathBuf};

use features::augment::AugmentParams;
pub use features::extract::Precision as FrozenPrecision;
use features::manifest::HubOptions;
use features::runtime::{Device, Engine};
use serde::{Deserialize, Serialize};
use train::kernels::TrainPrecision;
use train::metrics::Keep;

use crate::error::{Error, Result};
use crate::rows::Precision;
use train::optim::SgdConfig;

/// Default learning rate (the tutorial: SGD lr 1e-4, momentum 0.9).
pub const DEFAULT_LEARNING_RATE: f64 = 1e-4;
/// Default momentum.
pub const DEFAULT_MOMENTUM: f64 = 0.9;
/// Default number of cached augmented draws per training image.
pub const DEFAULT_AUG_CACHE: usize = 10;

/// Everything `bottleneck finetune` needs.
#[derive(Clone, Debug)]
pub struct FinetuneConfig {
    /// Run folder: reads `RUN/head/head.safetensors`, writes `RUN/finetune/`.
    pub run: PathBuf,
    /// Data folder `DIR/<split>/<class>/*`.
    pub data: PathBuf,
    /// Model name or path; default: the model the head was trained on.
    pub model: Option<String>,
    /// Input tensor of the trainable block; default: the manifest's `trainable_from`.
    pub split_at: Option<String>,
    /// Image side; must equal the head's.
    pub size: Option<u32>,
    pub train_split: String,
    pub val_split: String,
    pub epochs: usize,
    /// Stop after this many epochs in this session (continue later with `resume`).
    pub stop_after: Option<usize>,
    pub batch_size: usize,
    pub sgd: SgdConfig,
    pub augment: AugmentParams,
    /// Seed of augmentation, shuffling and dropout.
    pub seed: u64,
    /// Augmented draws cached per training image; 0 = augment afresh every epoch (Keras).
    pub aug_cache: usize,
    pub cache_precision: Precision,
    /// Precision of the frozen part: `fp32`, or `int8` (quantized once with calibration photos from
    /// the training split, cached in `RUN/models/`); the block and the head always train in FP32.
    pub precision: FrozenPrecision,
    /// Precision of the block's products in training and validation: `auto` (bf16 products with
    /// FP32 sums on CPUs with AVX512-BF16, else FP32), `fp32` or `bf16`.
    pub train_precision: TrainPrecision,
    /// Folds of the cross-fit that calibrates the final model's temperature (0: none; see
    /// [`crate::calibrate`]). Costs about one more fine-tuning run.
    pub calibrate: usize,
    pub keep: Keep,
    /// Where the stage runs (`accel::engine::select`: Candle on CUDA for `cuda`).
    pub device: Device,
    /// The engine knob (`auto`: the default for `device`; see `accel::engine`).
    pub engine: Engine,
    /// ONNX Runtime intra-op threads (default: all cores).
    pub threads: Option<usize>,
    pub force: bool,
    pub resume: bool,
    pub hub: HubOptions,
    /// Validation images used for the parity checks.
    pub check_images: usize,
}

impl FinetuneConfig {
    /// The tutorial's settings for `run` and `data`.
    pub fn new(run: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Self {
        FinetuneConfig {
            run: run.into(),
            data: data.into(),
            model: None,
            split_at: None,
            size: None,
            train_split: "train".into(),
            val_split: "validation".into(),
            epochs: 50,
            stop_after: None,
            batch_size: 16,
            sgd: SgdConfig {
                learning_rate: DEFAULT_LEARNING_RATE,
                momentum: DEFAULT_MOMENTUM,
                nesterov: false,
                weight_decay: 0.0,
            },
            augment: AugmentParams::tutorial(),
            seed: runfs::DEFAULT_SEED,
            aug_cache: DEFAULT_AUG_CACHE,
            cache_precision: Precision::F16,
            precision: FrozenPrecision::Fp32,
            train_precision: TrainPrecision::Auto,
            calibrate: 0,
            keep: Keep::Last,
            device: Device::Cpu,
            engine: Engine::Auto,
            threads: None,
            force: false,
            resume: false,
            hub: HubOptions::from_env(),
            check_images: 4,
        }
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Invalid("--epochs must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        if self.stop_after == Some(0) {
            return Err(Error::Invalid("--stop-after must be at least 1".into()));
        }
        if self.force && self.resume {
            return Err(Error::Invalid(
                "--force starts over and --resume continues: pass only one of them".into(),
            ));
        }
        if self.aug_cache > 1000 {
            return Err(Error::Invalid(format!(
                "--aug-cache {} is too large (at most 1000)",
                self.aug_cache
            )));
        }
        self.sgd.validate()?;
        self.augment.validate()?;
        if self.calibrate == 1 || self.calibrate > 10 {
            return Err(Error::Invalid(format!(
                "--calibrate {} must be 0 (off) or 2 to 10 folds",
                self.calibrate
            )));
        }
        Ok(())
    }
}

/// Everything the result depends on; a checkpoint only resumes under the same settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub model: String,
    pub model_sha256: String,
    pub split_at: String,
    pub output_tensor: String,
    pub image_size: u32,
    pub preprocess: String,
    pub resize: String,
    pub classes: Vec<String>,
    /// Digests of the training and validation images (names, labels, contents).
    pub train_digest: String,
    pub val_digest: String,
    /// Images left out because they could not be decoded (not part of the digests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// sha256 of the head file training started from.
    pub head_sha256: String,
    pub batch_size: usize,
    pub sgd: SgdConfig,
    pub augment: AugmentParams,
    pub seed: u64,
    pub aug_cache: usize,
    pub cache_precision: Precision,
    pub keep: Keep,
    /// Precision of the frozen part (checkpoints from before `--precision` are `fp32`).
    #[serde(default = "fp32")]
    pub precision: FrozenPrecision,
    /// Cache key of the int8 frozen model ([`features::quantize::Int8Info::key`]) with `int8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_key: Option<String>,
    /// Precision the block's products ran in (resolved: `fp32` or `bf16`; checkpoints from before
    /// `--train-precision` are `fp32`).
    #[serde(default = "fp32_products")]
    pub train_precision: TrainPrecision,
    /// Folds of the calibration cross-fit (0: none; absent before `--calibrate`).
    #[serde(default)]
    pub calibrate: usize,
}

fn fp32() -> FrozenPrecision {
    FrozenPrecision::Fp32
}

fn fp32_products() -> TrainPrecision {
    TrainPrecision::Fp32
}

impl Settings {
    /// Fields that differ from `other`, as `name: this vs other`.
    pub fn differences(&self, other: &Settings) -> Vec<String> {
        features::provenance::differences(self, other)
    }
}

/// The files of a fine-tuning run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FinetunePaths {
    pub dir: PathBuf,
    pub checkpoint: PathBuf,
    pub block: PathBuf,
    pub head: PathBuf,
    pub metrics: PathBuf,
    pub confusion: PathBuf,
    pub curves_png: PathBuf,
    pub curves_svg: PathBuf,
    pub model: PathBuf,
    /// Frozen-output caches (kept by `--force`; each file is keyed by what it depends on).
    pub cache: PathBuf,
    /// The stage-2 head training starts from.
    pub input_head: PathBuf,
}

impl FinetunePaths {
    /// The files under `RUN/finetune` (and `RUN/finetune-cache`).
    pub fn new(run: &Path) -> Self {
        let dir = run.join("finetune");
        FinetunePaths {
            checkpoint: dir.join("checkpoint.safetensors"),
            block: dir.join("block.safetensors"),
            head: dir.join("head.safetensors"),
            metrics: dir.join("metrics.json"),
            confusion: dir.join("confusion.json"),
            curves_png: dir.join("curves.png"),
            curves_svg: dir.join("curves.svg"),
            model: dir.join("model.onnx"),
            cache: run.join("finetune-cache"),
            input_head: run.join("head").join("head.safetensors"),
            dir,
        }
    }
}
