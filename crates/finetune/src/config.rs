//! What a fine-tuning run is asked to do ([`FinetuneConfig`]), the part of it that decides the
//! result and must stay fixed across `--resume` ([`Settings`]), and where its files go.

use std::path::{Path, PathBuf};

use features::augment::AugmentParams;
use features::manifest::HubOptions;
use features::runtime::{Device, Engine};
use serde::{Deserialize, Serialize};
use train::stage_dir::StageDir;

use crate::error::{Error, Result};
pub use crate::options::{FrozenPrecision, Options};

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
    /// The settings a user chooses (flags, defaults, checkpoint record: [`Options`]).
    pub options: Options,
    pub augment: AugmentParams,
    /// Seed of augmentation, shuffling and dropout.
    pub seed: u64,
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
            options: Options::default(),
            augment: AugmentParams::tutorial(),
            seed: runfs::DEFAULT_SEED,
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
        if self.stop_after == Some(0) {
            return Err(Error::Invalid("--stop-after must be at least 1".into()));
        }
        if self.force && self.resume {
            return Err(Error::Invalid(
                "--force starts over and --resume continues: pass only one of them".into(),
            ));
        }
        self.options.validate()?;
        self.augment.validate()?;
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
    pub augment: AugmentParams,
    pub seed: u64,
    /// Cache key of the int8 frozen model ([`features::quantize::Int8Info::key`]) with `int8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_key: Option<String>,
    /// The chosen settings, `train_precision` resolved to what the products ran in.
    #[serde(flatten)]
    pub options: Options,
}

impl Settings {
    /// Fields that differ from `other`, as `name: this vs other`.
    pub fn differences(&self, other: &Settings) -> Vec<String> {
        features::provenance::differences(self, other)
    }
}

/// The files of a fine-tuning run: the training stage's ([`StageDir`]) and its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FinetunePaths {
    #[serde(flatten)]
    pub stage: StageDir,
    pub block: PathBuf,
    pub head: PathBuf,
    pub model: PathBuf,
    /// Frozen-output caches (kept by `--force`; each file is keyed by what it depends on).
    pub cache: PathBuf,
    /// The stage-2 head training starts from.
    pub input_head: PathBuf,
}

impl FinetunePaths {
    /// The files under `RUN/finetune` (and `RUN/finetune-cache`).
    pub fn new(run: &Path) -> Self {
        let stage = StageDir::new(run, "finetune");
        FinetunePaths {
            block: stage.dir.join("block.safetensors"),
            head: stage.dir.join("head.safetensors"),
            model: stage.dir.join("model.onnx"),
            cache: run.join("finetune-cache"),
            input_head: run.join("head").join("head.safetensors"),
            stage,
        }
    }
}
