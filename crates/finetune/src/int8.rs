//! `--precision int8`: the frozen part (the model cut at the trainable block's input) quantized to an
//! int8 QDQ model by `features::quantize` — calibrated on photos drawn from the training split and
//! cached in `RUN/models/` like `extract --precision int8` — and the rules that keep FP32 and int8
//! runs apart (cache keys and folders, `--resume`).

use std::path::{Path, PathBuf};

use features::extract::Backbone;
use features::manifest::ResolvedModel;
use features::onnx::CutModel;
use features::preprocess::{Preprocess, Resize};
use features::quantize::{int8_model_shared, CalibSpec, Int8Info};

use crate::checkpoint;
use crate::config::{FinetuneConfig, FinetunePaths, FrozenPrecision};
use crate::error::{Error, Result};

/// The quantized frozen part and how it was made.
#[derive(Clone, Debug)]
pub struct Int8Frozen {
    /// The int8 cut model (same input and output tensors as the FP32 cut).
    pub cut: CutModel,
    pub info: Int8Info,
    /// Seconds spent quantizing, or loading the cached model.
    pub seconds: f64,
}

/// The int8 frozen part of a run (`--precision int8`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Int8Report {
    /// The quantized model's cache key (also in the settings and the cache keys).
    pub key: String,
    /// Its file in `RUN/models/`.
    pub path: Option<PathBuf>,
    /// True when the cached file was reused.
    pub from_cache: bool,
    /// The shared cache file it was copied from (quantized by another run).
    pub from_shared: Option<PathBuf>,
    /// Seconds spent quantizing (or loading the cached file).
    pub seconds: f64,
    pub calib_split: String,
    pub calib_images: usize,
    pub calib_seed: u64,
    pub quantized_convs: usize,
    pub fp32_ops: Vec<String>,
    /// Largest relative difference between the int8 and the FP32 frozen outputs on the checked
    /// validation images (what quantization changes in the block's input).
    pub frozen_max_rel_diff: f64,
}

impl Int8Frozen {
    /// The report of this frozen part; `frozen_max_rel_diff` as measured on the checked images.
    pub fn report(&self, frozen_max_rel_diff: f64) -> Int8Report {
        Int8Report {
            key: self.info.key.clone(),
            path: self.info.cache_path.clone(),
            from_cache: self.info.from_cache,
            from_shared: self.info.from_shared.clone(),
            seconds: self.seconds,
            calib_split: self.info.calib_split.clone(),
            calib_images: self.info.calib_files.len(),
            calib_seed: self.info.calib_seed,
            quantized_convs: self.info.quantized_convs.len(),
            fp32_ops: self.info.fp32_ops.clone(),
            frozen_max_rel_diff,
        }
    }
}

/// Folder of the cached int8 models of a run (shared with `extract --precision int8`).
pub fn models_dir(run: &Path) -> PathBuf {
    run.join("models")
}

/// Where the frozen-output caches of a run at `precision` live: `RUN/finetune-cache/` for FP32,
/// `RUN/finetune-cache/int8/` for int8, so that neither overwrites the other's files.
pub fn cache_dir(paths: &FinetunePaths, precision: FrozenPrecision) -> PathBuf {
    match precision {
        FrozenPrecision::Fp32 => paths.cache.clone(),
        FrozenPrecision::Int8 => paths.cache.join("int8"),
    }
}

/// The part of a cache key that names the frozen part's precision: nothing for FP32 (so caches from
/// before `--precision` stay valid), `int8:<int8 model key>` for int8.
pub fn cache_tag(int8_key: Option<&str>) -> Option<String> {
    int8_key.map(|k| format!("int8:{k}"))
}

/// Quantizes `cut` (or reuses the cached int8 model): calibration images from split `split` of
/// `cfg.data` (64 images, seed 0, as `extract --precision int8`), preprocessed as the head's features.
pub fn quantize_frozen(
    model: &ResolvedModel,
    cut: &CutModel,
    preprocess: Preprocess,
    resize: Resize,
    size: u32,
    split: &str,
    cfg: &FinetuneConfig,
) -> Result<Int8Frozen> {
    let backbone = Backbone {
        model: model.clone(),
        cut: cut.clone(),
        preprocess,
    };
    let spec = CalibSpec {
        split: Some(split.to_string()),
        threads: cfg.threads,
        size,
        resize,
        ..CalibSpec::new(&cfg.data)
    };
    let t = std::time::Instant::now();
    let (bytes, info) = int8_model_shared(
        &backbone,
        &spec,
        &models_dir(&cfg.run),
        cfg.hub.int8_cache.as_deref(),
    )?;
    if info.output != cut.output {
        return Err(Error::Invalid(format!(
            "the int8 model in {} ends at '{}', not at the split tensor '{}'; delete it to re-quantize",
            models_dir(&cfg.run).display(),
            info.output,
            cut.output
        )));
    }
    Ok(Int8Frozen {
        cut: CutModel {
            bytes,
            ..cut.clone()
        },
        info,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// With `--resume`, refuses a precision other than the checkpoint's before any work is done.
pub fn check_resume(cfg: &FinetuneConfig, paths: &FinetunePaths) -> Result<()> {
    if !cfg.resume {
        return Ok(());
    }
    let (stored, _) = checkpoint::read_settings(&paths.stage.checkpoint)?;
    if stored.options.precision != cfg.options.precision {
        return Err(Error::Mismatch(format!(
            "{} was trained with --precision {} but this run asks for --precision {}: pass --precision {} \
             to resume it, or --force to start over at {} (the caches of both precisions are kept apart)",
            paths.stage.checkpoint.display(),
            stored.options.precision.name(),
            cfg.options.precision.name(),
            stored.options.precision.name(),
            cfg.options.precision.name()
        )));
    }
    Ok(())
}
