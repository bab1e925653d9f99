//! Int8 static quantization of the backbone: calibration on a few training images, a QDQ rewrite
//! (per-channel int8 weights, int32 biases, uint8/int8 activations) that ONNX Runtime runs with its
//! integer kernels, and a cache of the quantized model keyed by everything it depends on.
//!
//! Entry points: [`int8_model`] (cached, for `extract --precision int8`), [`quantize_backbone`]
//! (uncached), and [`job::run`] (`bottleneck quantize`: to a file).

mod arith;
mod cache;
mod calibrate;
pub mod job;
mod qdq;

use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

pub use arith::{
    activation_params, dequantize, quantize, quantize_bias, quantize_weights, ActType,
    ChannelWeights, QParams, WeightRange,
};
pub use cache::{cache_path, read_props, write_atomic, KeyInputs, PROP_PREFIX, QUANTIZER_VERSION};
pub use calibrate::{
    draw, with_range_outputs, CalibImage, CalibMethod, CalibSet, CalibSpec, MIN_CALIB_IMAGES,
};

use crate::extract::Backbone;
use crate::manifest::sha256_hex;
use crate::preprocess::{Preprocess, Resize};
use crate::store::Skipped;
use crate::{Error, Result};

/// What an int8 model is and how it was made; also stored in its `bottleneck.int8.*` metadata_props.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Int8Info {
    /// Cache key ([`KeyInputs::key`]).
    pub key: String,
    pub quantizer_version: u32,
    /// sha256 of the FP32 model file.
    pub fp32_sha256: String,
    /// Output tensor (same name and float32 type as the FP32 cut model's).
    pub output: String,
    pub preprocess: Preprocess,
    pub image_size: u32,
    pub resize: Resize,
    pub method: CalibMethod,
    pub activations: ActType,
    /// Weight scheme, e.g. `int8 symmetric per-channel (axis 0)`.
    pub weights: String,
    /// Split the calibration images came from.
    pub calib_split: String,
    /// Digest of the drawn calibration files (paths, labels, contents).
    pub calib_digest: String,
    pub calib_count: usize,
    pub calib_seed: u64,
    /// Calibration images used, relative to the calibration folder.
    pub calib_files: Vec<String>,
    /// Drawn images that could not be used.
    pub calib_skipped: Vec<Skipped>,
    /// Conv nodes that run in int8.
    pub quantized_convs: Vec<String>,
    /// Nodes left in FP32 (`OpType 'name'`, with a reason for Convs).
    pub fp32_ops: Vec<String>,
    /// The cache file, for models from [`int8_model`].
    #[serde(skip)]
    pub cache_path: Option<PathBuf>,
    /// True when [`int8_model`] reused the cached file.
    #[serde(skip)]
    pub from_cache: bool,
    /// The shared cache file [`int8_model_shared`] copied the model from (instead of quantizing).
    #[serde(skip)]
    pub from_shared: Option<PathBuf>,
}

/// The cache key inputs of `backbone` calibrated per `spec` on the drawn set with `calib_digest`.
pub fn key_inputs(backbone: &Backbone, spec: &CalibSpec, calib_digest: &str) -> KeyInputs {
    KeyInputs {
        fp32_sha256: backbone.model.sha256.clone(),
        output: backbone.cut.output.clone(),
        calib_digest: calib_digest.to_string(),
        method: spec.method,
        activations: spec.activations,
        weights: spec.weights,
        image_size: spec.size,
        resize: spec.resize,
        preprocess: backbone.preprocess,
    }
}

/// Quantizes the backbone's cut model: draws and reads the calibration images, measures activation
/// ranges with the FP32 model, rewrites the graph to QDQ and records [`Int8Info`] in its metadata.
/// Returns the serialized int8 model. No cache: see [`int8_model`].
pub fn quantize_backbone(backbone: &Backbone, spec: &CalibSpec) -> Result<(Vec<u8>, Int8Info)> {
    let set = draw(spec)?;
    quantize_with(backbone, spec, &set)
}

fn quantize_with(
    backbone: &Backbone,
    spec: &CalibSpec,
    set: &CalibSet,
) -> Result<(Vec<u8>, Int8Info)> {
    let fail = |e: Error| match e {
        Error::Graph(reason) => Error::Model {
            path: backbone.model.path.clone(),
            reason,
        },
        other => other,
    };
    if backbone.cut.input_channels != 3 {
        return Err(Error::Model {
            path: backbone.model.path.clone(),
            reason: format!(
                "the image input has {} channels; int8 calibration feeds RGB (3)",
                backbone.cut.input_channels
            ),
        });
    }
    let m = qdq::decode(&backbone.cut.bytes).map_err(fail)?;
    let plan = qdq::plan(&m).map_err(fail)?;
    drop(m);
    let cal = calibrate::calibrate(
        &backbone.cut,
        &plan.calib_tensors(),
        set,
        spec,
        backbone.preprocess,
    )?;
    let rewritten = qdq::rewrite(
        &backbone.cut.bytes,
        &plan,
        &cal.ranges,
        spec.activations,
        spec.weights,
    )
    .map_err(fail)?;
    let mut fp32_ops = plan.fp32_convs.clone();
    fp32_ops.extend(plan.fp32_ops.iter().cloned());
    let info = Int8Info {
        key: key_inputs(backbone, spec, &set.digest).key(),
        quantizer_version: QUANTIZER_VERSION,
        fp32_sha256: backbone.model.sha256.clone(),
        output: backbone.cut.output.clone(),
        preprocess: backbone.preprocess,
        image_size: spec.size,
        resize: spec.resize,
        method: spec.method,
        activations: spec.activations,
        weights: spec.weights.describe().into(),
        calib_split: set.split.clone(),
        calib_digest: set.digest.clone(),
        calib_count: spec.count,
        calib_seed: spec.seed,
        calib_files: cal.used,
        calib_skipped: cal.skipped,
        quantized_convs: rewritten.convs,
        fp32_ops,
        cache_path: None,
        from_cache: false,
        from_shared: None,
    };
    let mut model = rewritten.model;
    cache::set_props(&mut model, &info);
    Ok((model.encode_to_vec(), info))
}

/// The int8 model of `backbone` for `calib`, from `cache_dir` when the cached file's key matches, else
/// quantized now and written there atomically (see [`cache_path`]).
///
/// The key covers the FP32 model's sha256 and cut tensor, the calibration files' contents (drawn with
/// `calib.seed`/`calib.count`), the method, activation type, image size, resize filter and preprocessing,
/// and [`QUANTIZER_VERSION`]. Feed the returned bytes to [`crate::runtime::session`]; the output tensor has
/// the FP32 model's name, shape and type.
pub fn int8_model(
    backbone: &Backbone,
    calib: &CalibSpec,
    cache_dir: &Path,
) -> Result<(Vec<u8>, Int8Info)> {
    int8_model_shared(backbone, calib, cache_dir, None)
}

/// [`int8_model`] that also looks in, and adds to, a cache shared by every run folder
/// (`shared`, e.g. `~/.cache/bottleneck/int8`): a model quantized once for the same inputs (same
/// key) is copied into `cache_dir` instead of being quantized again. The shared copy is named by
/// its key; one that cannot be written is skipped (the run's own copy is what the run uses).
pub fn int8_model_shared(
    backbone: &Backbone,
    calib: &CalibSpec,
    cache_dir: &Path,
    shared: Option<&Path>,
) -> Result<(Vec<u8>, Int8Info)> {
    let set = draw(calib)?;
    let key = key_inputs(backbone, calib, &set.digest).key();
    let path = cache_path(cache_dir, &backbone.model.sha256, &backbone.cut.output);
    if let Some((bytes, mut info)) = cached(&path, &key) {
        info.cache_path = Some(path);
        info.from_cache = true;
        return Ok((bytes, info));
    }
    let shared_path = shared.map(|d| d.join(format!("{key}.int8.onnx")));
    if let Some((bytes, mut info)) = shared_path.as_deref().and_then(|p| cached(p, &key)) {
        write_atomic(&path, &bytes)?;
        info.cache_path = Some(path);
        info.from_shared = shared_path;
        return Ok((bytes, info));
    }
    let (bytes, mut info) = quantize_with(backbone, calib, &set)?;
    write_atomic(&path, &bytes)?;
    if let Some(p) = &shared_path {
        // Best effort: the shared cache only saves time.
        let _ = write_atomic(p, &bytes);
    }
    info.cache_path = Some(path);
    Ok((bytes, info))
}

/// The int8 model at `path` when it exists, decodes and was made for `key` by this quantizer.
fn cached(path: &Path, key: &str) -> Option<(Vec<u8>, Int8Info)> {
    let bytes = std::fs::read(path).ok()?;
    // A file that does not decode or carries another key is simply redone.
    let info = read_props(&bytes)
        .and_then(|p| cache::from_props(&p))
        .ok()??;
    (info.key == key && info.quantizer_version == QUANTIZER_VERSION).then_some((bytes, info))
}

/// The [`Int8Info`] recorded in a model's metadata, `None` for a model this crate did not quantize.
pub fn read_info(model: &[u8]) -> Result<Option<Int8Info>> {
    cache::from_props(&read_props(model)?)
}

/// Hex sha256 of an int8 model (for logs and reports).
pub fn model_sha256(model: &[u8]) -> String {
    sha256_hex(model)
}
