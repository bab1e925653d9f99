//! Small helpers for safetensors files of `f32` tensors: a borrowed view to serialize from, atomic
//! writing with string metadata, and reading tensors back with clear errors.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::View;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A named `f32` tensor borrowed for serialization.
pub struct F32Tensor<'a> {
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

impl View for F32Tensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Writes tensors and metadata to `path` through a temporary file and a rename.
pub fn write(
    path: &Path,
    tensors: Vec<(String, F32Tensor<'_>)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    for (name, t) in &tensors {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return Err(Error::Invalid(format!(
                "tensor {name}: shape {:?} for {} values",
                t.shape,
                t.data.len()
            )));
        }
    }
    let bytes = features::tensorfile::serialize(tensors, metadata)
        .map_err(|e| Error::file(path, format!("cannot encode: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(runfs::write_atomic(path, &bytes)?)
}

/// A read safetensors file: its bytes and metadata.
pub struct Loaded {
    bytes: Vec<u8>,
    pub metadata: HashMap<String, String>,
    path: std::path::PathBuf,
    /// What to do when the file is bad.
    fix: String,
}

impl Loaded {
    /// Reads `path`; `what` names the file kind in errors, `fix` says what to do when it is bad.
    pub fn read(path: &Path, fix: &str) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::file(path, format!("not a safetensors file ({e}); {fix}")))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Loaded {
            bytes,
            metadata,
            path: path.to_path_buf(),
            fix: fix.to_string(),
        })
    }

    /// A metadata string.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::file(&self.path, format!("metadata '{key}' is missing")))
    }

    /// A metadata field parsed from JSON.
    pub fn meta_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        serde_json::from_str(self.meta(key)?)
            .map_err(|e| Error::file(&self.path, format!("metadata '{key}' is not valid: {e}")))
    }

    /// An `f32` tensor as `(shape, values)`; a NaN or infinite value is an error naming the tensor
    /// (weights are never resumed or served from a damaged file).
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let st = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::file(&self.path, e.to_string()))?;
        let t = st
            .tensor(name)
            .map_err(|_| Error::file(&self.path, format!("tensor '{name}' is missing")))?;
        if t.dtype() != Dtype::F32 {
            return Err(Error::file(
                &self.path,
                format!("tensor '{name}' is {:?}, expected F32", t.dtype()),
            ));
        }
        let values = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<f32>>();
        if let Some(bad) = train::finite::first_non_finite(&values) {
            return Err(Error::file(
                &self.path,
                format!("damaged weights: tensor '{name}' holds {bad}; {}", self.fix),
            ));
        }
        Ok((t.shape().to_vec(), values))
    }
}
