//! The int8 model cache: the key (FP32 model, cut, calibration digest, method, types, size, preprocessing),
//! the `bottleneck.int8.*` metadata_props recording it in the ONNX file, and atomic writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use super::{ActType, CalibMethod, Int8Info, WeightRange};
use crate::onnx::proto::{ModelProto, StringStringEntryProto};
use crate::preprocess::{Preprocess, Resize};
use crate::store::Skipped;
use crate::{Error, Result};

/// Version of the quantizer's output; bumped whenever the rewrite changes so cached models are redone.
pub const QUANTIZER_VERSION: u32 = 1;

/// Prefix of the metadata_props keys written into int8 models.
pub const PROP_PREFIX: &str = "bottleneck.int8.";

/// Everything an int8 model depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInputs {
    pub fp32_sha256: String,
    /// Tensor the FP32 model was cut at.
    pub output: String,
    pub calib_digest: String,
    pub method: CalibMethod,
    pub activations: ActType,
    pub weights: WeightRange,
    pub image_size: u32,
    pub resize: Resize,
    pub preprocess: Preprocess,
}

impl KeyInputs {
    /// Hex sha256 over every field (length-prefixed) and [`QUANTIZER_VERSION`].
    pub fn key(&self) -> String {
        let mut h = runfs::Digest::new();
        let mut field = |k: &str, v: &[u8]| {
            h.field(k, v);
        };
        field("version", &QUANTIZER_VERSION.to_le_bytes());
        field("fp32_sha256", self.fp32_sha256.as_bytes());
        field("output", self.output.as_bytes());
        field("calib_digest", self.calib_digest.as_bytes());
        field("method", self.method.name().as_bytes());
        field("activations", self.activations.name().as_bytes());
        field("weights", self.weights.describe().as_bytes());
        field("image_size", &self.image_size.to_le_bytes());
        field("resize", self.resize.name().as_bytes());
        field("preprocess", self.preprocess.name().as_bytes());
        h.hex()
    }
}

/// Where [`super::int8_model`] keeps the int8 model of the FP32 model with this sha256 cut at `output`:
/// `<cache_dir>/<sha256[..16]>-<output>.int8.onnx` (characters other than `[A-Za-z0-9_-]` in the tensor name
/// become `_`). One file per model and cut; its metadata key decides whether it is still valid.
pub fn cache_path(cache_dir: &Path, fp32_sha256: &str, output: &str) -> PathBuf {
    let short = &fp32_sha256[..fp32_sha256.len().min(16)];
    let tensor: String = output
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache_dir.join(format!("{short}-{tensor}.int8.onnx"))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `Int8Info` as metadata_props entries.
pub(crate) fn to_props(info: &Int8Info) -> Vec<(String, String)> {
    let mut p: Vec<(&str, String)> = vec![
        ("precision", "int8".into()),
        ("key", info.key.clone()),
        ("quantizer_version", info.quantizer_version.to_string()),
        ("fp32_sha256", info.fp32_sha256.clone()),
        ("output", info.output.clone()),
        ("preprocess", info.preprocess.name().into()),
        ("image_size", info.image_size.to_string()),
        ("resize", info.resize.name().into()),
        ("method", info.method.name().into()),
        ("activations", info.activations.name().into()),
        ("weights", info.weights.clone()),
        ("calib_split", info.calib_split.clone()),
        ("calib_digest", info.calib_digest.clone()),
        ("calib_count", info.calib_count.to_string()),
        ("calib_seed", info.calib_seed.to_string()),
        ("calib_files", json(&info.calib_files)),
        ("calib_skipped", json(&info.calib_skipped)),
        ("quantized_convs", json(&info.quantized_convs)),
        ("fp32_ops", json(&info.fp32_ops)),
    ];
    p.drain(..)
        .map(|(k, v)| (format!("{PROP_PREFIX}{k}"), v))
        .collect()
}

/// Reads an `Int8Info` back from metadata_props; `None` when the model carries none (not ours).
pub(crate) fn from_props(props: &BTreeMap<String, String>) -> Result<Option<Int8Info>> {
    if !props.contains_key(&format!("{PROP_PREFIX}key")) {
        return Ok(None);
    }
    let get = |k: &str| -> Result<&str> {
        props
            .get(&format!("{PROP_PREFIX}{k}"))
            .map(String::as_str)
            .ok_or_else(|| Error::Graph(format!("int8 model metadata lacks {PROP_PREFIX}{k}")))
    };
    let bad = |k: &str, e: &dyn std::fmt::Display| {
        Error::Graph(format!("int8 model metadata {PROP_PREFIX}{k}: {e}"))
    };
    let num = |k: &str| -> Result<u64> { get(k)?.parse::<u64>().map_err(|e| bad(k, &e)) };
    let list =
        |k: &str| -> Result<Vec<String>> { serde_json::from_str(get(k)?).map_err(|e| bad(k, &e)) };
    let skipped: Vec<Skipped> =
        serde_json::from_str(get("calib_skipped")?).map_err(|e| bad("calib_skipped", &e))?;
    Ok(Some(Int8Info {
        key: get("key")?.to_string(),
        quantizer_version: num("quantizer_version")? as u32,
        fp32_sha256: get("fp32_sha256")?.to_string(),
        output: get("output")?.to_string(),
        preprocess: get("preprocess")?.parse()?,
        image_size: num("image_size")? as u32,
        resize: get("resize")?.parse()?,
        method: get("method")?.parse()?,
        activations: get("activations")?.parse()?,
        weights: get("weights")?.to_string(),
        calib_split: get("calib_split")?.to_string(),
        calib_digest: get("calib_digest")?.to_string(),
        calib_count: num("calib_count")? as usize,
        calib_seed: num("calib_seed")?,
        calib_files: list("calib_files")?,
        calib_skipped: skipped,
        quantized_convs: list("quantized_convs")?,
        fp32_ops: list("fp32_ops")?,
        cache_path: None,
        from_cache: false,
        from_shared: None,
    }))
}

/// Replaces the `bottleneck.int8.*` metadata_props of `m` with `info`.
pub(crate) fn set_props(m: &mut ModelProto, info: &Int8Info) {
    m.metadata_props
        .retain(|e| !e.key.as_deref().is_some_and(|k| k.starts_with(PROP_PREFIX)));
    for (k, v) in to_props(info) {
        m.metadata_props.push(StringStringEntryProto {
            key: Some(k),
            value: Some(v),
        });
    }
}

/// The metadata_props of a serialized model.
pub fn read_props(model: &[u8]) -> Result<BTreeMap<String, String>> {
    let m = ModelProto::decode(model)
        .map_err(|e| Error::Graph(format!("not a valid ONNX protobuf ({e})")))?;
    Ok(m.metadata_props
        .into_iter()
        .filter_map(|e| Some((e.key?, e.value.unwrap_or_default())))
        .collect())
}

/// Writes `bytes` to `path` (creating its folder) so that readers never see a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(runfs::write_atomic(path, bytes)?)
}
