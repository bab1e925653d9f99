//! A fine-tuning request as the command line gives it (every setting optional) and how it
//! becomes a [`FinetuneConfig`]: with `--resume`, what was left out comes from the checkpoint;
//! otherwise, and for what the checkpoint does not say, the defaults of [`FinetuneConfig::new`].

use std::path::PathBuf;

use features::augment::AugmentParams;
use features::manifest::HubOptions;
use features::runtime::{Device, Engine};
use train::kernels::TrainPrecision;
use train::metrics::Keep;
use train::optim::SgdConfig;

use crate::checkpoint;
use crate::config::{FinetuneConfig, FinetunePaths, FrozenPrecision, Settings};
use crate::error::Result;
use crate::rows::Precision;

/// The settings asked for; `None` = not given.
#[derive(Debug, Clone)]
pub struct Request {
    pub run: PathBuf,
    pub data: PathBuf,
    pub model: Option<String>,
    pub split_at: Option<String>,
    pub size: Option<u32>,
    pub train_split: String,
    pub val_split: String,
    pub epochs: Option<usize>,
    pub stop_after: Option<usize>,
    pub batch_size: Option<usize>,
    pub learning_rate: Option<f64>,
    pub momentum: Option<f64>,
    pub nesterov: Option<bool>,
    pub weight_decay: Option<f64>,
    /// The augmentation when any augmentation setting was given.
    pub augment: Option<AugmentParams>,
    pub seed: Option<u64>,
    pub aug_cache: Option<usize>,
    pub cache_precision: Option<Precision>,
    pub precision: Option<FrozenPrecision>,
    pub train_precision: Option<TrainPrecision>,
    pub calibrate: Option<usize>,
    pub keep: Option<Keep>,
    pub device: Device,
    pub engine: Engine,
    pub threads: Option<usize>,
    pub force: bool,
    pub resume: bool,
    pub hub: HubOptions,
}

impl Request {
    /// The configuration to run: given settings, else (with `resume`) the checkpoint's, else the
    /// defaults. A missing checkpoint is left for [`crate::finetune`] to report.
    pub fn resolve(&self) -> Result<FinetuneConfig> {
        let stored: Option<(Settings, usize)> = if self.resume {
            let paths = FinetunePaths::new(&self.run);
            if paths.checkpoint.is_file() {
                Some(checkpoint::read_settings(&paths.checkpoint)?)
            } else {
                None
            }
        } else {
            None
        };
        let s = stored.as_ref().map(|(s, _)| s);
        let mut cfg = FinetuneConfig::new(&self.run, &self.data);
        let d = cfg.clone();
        cfg.model = self.model.clone().or_else(|| s.map(|s| s.model.clone()));
        cfg.split_at = self
            .split_at
            .clone()
            .or_else(|| s.map(|s| s.split_at.clone()));
        cfg.size = self.size;
        cfg.train_split = self.train_split.clone();
        cfg.val_split = self.val_split.clone();
        cfg.epochs = self
            .epochs
            .or(stored.as_ref().map(|(_, e)| *e))
            .unwrap_or(d.epochs);
        cfg.stop_after = self.stop_after;
        cfg.batch_size = self
            .batch_size
            .or(s.map(|s| s.batch_size))
            .unwrap_or(d.batch_size);
        let base: SgdConfig = s.map_or(d.sgd.clone(), |s| s.sgd.clone());
        cfg.sgd = SgdConfig {
            learning_rate: self.learning_rate.unwrap_or(base.learning_rate),
            momentum: self.momentum.unwrap_or(base.momentum),
            nesterov: self.nesterov.unwrap_or(base.nesterov),
            weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
        };
        cfg.augment = match (&self.augment, s) {
            (Some(a), _) => a.clone(),
            (None, Some(s)) => s.augment.clone(),
            (None, None) => d.augment.clone(),
        };
        cfg.seed = self.seed.or(s.map(|s| s.seed)).unwrap_or(d.seed);
        cfg.aug_cache = self
            .aug_cache
            .or(s.map(|s| s.aug_cache))
            .unwrap_or(d.aug_cache);
        cfg.cache_precision = self
            .cache_precision
            .or(s.map(|s| s.cache_precision))
            .unwrap_or(d.cache_precision);
        cfg.precision = self
            .precision
            .or(s.map(|s| s.precision))
            .unwrap_or(d.precision);
        cfg.train_precision = self
            .train_precision
            .or(s.map(|s| s.train_precision))
            .unwrap_or(d.train_precision);
        cfg.calibrate = self
            .calibrate
            .or(s.map(|s| s.calibrate))
            .unwrap_or(d.calibrate);
        cfg.keep = self.keep.or(s.map(|s| s.keep)).unwrap_or(d.keep);
        cfg.device = self.device;
        cfg.engine = self.engine;
        cfg.threads = self.threads;
        cfg.force = self.force;
        cfg.resume = self.resume;
        cfg.hub = self.hub.clone();
        Ok(cfg)
    }
}
