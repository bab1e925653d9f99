//! `model.safetensors`: the trained convnet's weights (Keras layouts: conv kernels
//! `[3, 3, in, out]`, dense kernels `[in, out]`) plus a `__metadata__` block with the classes,
//! image size, preprocessing (`unit`: RGB/255), resize filter and architecture, so the file is
//! usable on its own for prediction.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::{Arch, Params};

/// Value of the `format` metadata key.
pub const FORMAT: &str = "bottleneck-scratch-v1";

/// What a model file says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Class names; output `i` (softmax) or probability of class 1 (sigmoid).
    pub classes: Vec<String>,
    /// Input side in pixels.
    pub image_size: usize,
    /// Input scaling: always `unit` (RGB / 255).
    pub preprocess: String,
    /// Resize filter used when loading images (`nearest`, like Keras `load_img`).
    pub resize: String,
    /// Human-readable layer list.
    pub architecture: String,
    pub arch: Arch,
    /// Free-form training facts (epochs, optimizer, augmentation, seed, kept epoch, …) as JSON.
    pub training: serde_json::Value,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::ModelFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Extra named f32 vectors stored beside the weights (a checkpoint's optimizer state).
pub type Extra = Vec<(String, Vec<f32>)>;

/// Encodes weights and metadata as safetensors bytes.
pub fn to_bytes(params: &Params, meta: &ModelMeta, path: &Path) -> Result<Vec<u8>> {
    to_bytes_with(params, meta, &[], path)
}

/// [`to_bytes`] with extra 1-D tensors (names must not collide with the weights').
pub fn to_bytes_with(
    params: &Params,
    meta: &ModelMeta,
    extra: &[(String, Vec<f32>)],
    path: &Path,
) -> Result<Vec<u8>> {
    params.check(&meta.arch)?;
    let shapes = meta.arch.param_shapes();
    let bytes: Vec<Vec<u8>> = params
        .tensors
        .iter()
        .map(|t| t.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let extra_bytes: Vec<Vec<u8>> = extra
        .iter()
        .map(|(_, t)| t.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(shapes.len() + extra.len());
    let named = shapes
        .iter()
        .map(|(n, s)| (n.clone(), s.clone()))
        .zip(&bytes)
        .chain(
            extra
                .iter()
                .map(|(n, t)| (n.clone(), vec![t.len()]))
                .zip(&extra_bytes),
        );
    for ((name, shape), b) in named {
        let v = TensorView::new(Dtype::F32, shape, b)
            .map_err(|e| bad(path, format!("cannot encode {name}: {e}")))?;
        views.push((name, v));
    }
    let json = |v: serde_json::Result<String>| {
        v.map_err(|e| bad(path, format!("cannot encode metadata: {e}")))
    };
    let mut md = HashMap::new();
    md.insert("format".to_string(), FORMAT.to_string());
    md.insert(
        "classes".to_string(),
        json(serde_json::to_string(&meta.classes))?,
    );
    md.insert("image_size".to_string(), meta.image_size.to_string());
    md.insert("preprocess".to_string(), meta.preprocess.clone());
    md.insert("resize".to_string(), meta.resize.clone());
    md.insert("architecture".to_string(), meta.architecture.clone());
    md.insert("arch".to_string(), json(serde_json::to_string(&meta.arch))?);
    md.insert(
        "training".to_string(),
        json(serde_json::to_string(&meta.training))?,
    );
    features::tensorfile::serialize(views, md).map_err(|e| bad(path, format!("cannot encode: {e}")))
}

/// Writes the model file atomically (temporary file + rename).
pub fn save(path: &Path, params: &Params, meta: &ModelMeta) -> Result<()> {
    save_with(path, params, meta, &[])
}

/// [`save`] with extra 1-D tensors (see [`to_bytes_with`]).
pub fn save_with(
    path: &Path,
    params: &Params,
    meta: &ModelMeta,
    extra: &[(String, Vec<f32>)],
) -> Result<()> {
    let bytes = to_bytes_with(params, meta, extra, path)?;
    runfs::write_atomic(path, &bytes)?;
    Ok(())
}

/// The extra tensors of a file written by [`save_with`] whose names start with `prefix`.
pub fn load_extra(path: &Path, prefix: &str) -> Result<Extra> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    let mut out = Vec::new();
    for (name, t) in st.tensors() {
        if !name.starts_with(prefix) {
            continue;
        }
        if t.dtype() != Dtype::F32 || t.shape().len() != 1 {
            return Err(bad(path, format!("tensor {name} is not a 1-D f32 tensor")));
        }
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((name, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Reads a model file written by [`save`].
pub fn load(path: &Path) -> Result<(Params, ModelMeta)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, path)
}

/// Decodes model bytes (`path` is only used in error messages).
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<(Params, ModelMeta)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    let md = header.metadata().clone().unwrap_or_default();
    if md.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(
            path,
            "not a model written by `bottleneck scratch` (no format marker)",
        ));
    }
    let get = |k: &str| {
        md.get(k)
            .cloned()
            .ok_or_else(|| bad(path, format!("metadata field {k:?} is missing")))
    };
    let parse = |k: &str| -> Result<serde_json::Value> {
        serde_json::from_str(&get(k)?)
            .map_err(|e| bad(path, format!("metadata field {k:?} is not valid JSON: {e}")))
    };
    let meta = ModelMeta {
        classes: serde_json::from_value(parse("classes")?)
            .map_err(|e| bad(path, format!("classes: {e}")))?,
        image_size: get("image_size")?
            .parse()
            .map_err(|e| bad(path, format!("image_size: {e}")))?,
        preprocess: get("preprocess")?,
        resize: get("resize")?,
        architecture: get("architecture")?,
        arch: serde_json::from_value(parse("arch")?)
            .map_err(|e| bad(path, format!("arch: {e}")))?,
        training: parse("training")?,
    };
    meta.arch
        .validate()
        .map_err(|e| bad(path, format!("architecture: {e}")))?;
    let mut tensors = Vec::new();
    for (name, shape) in meta.arch.param_shapes() {
        let t = st
            .tensor(&name)
            .map_err(|e| bad(path, format!("tensor {name}: {e}")))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
            return Err(bad(
                path,
                format!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(v) = train::finite::first_non_finite(&values) {
            return Err(bad(
                path,
                format!(
                    "damaged weights: tensor {name} holds {v}; re-run `bottleneck scratch` with --force"
                ),
            ));
        }
        tensors.push(values);
    }
    Ok((Params { tensors }, meta))
}
