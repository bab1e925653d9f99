//! `export`: the run's classifier (the same graph `predict` runs) written as one self-contained
//! ONNX file whose metadata documents the preprocessing exactly; never over an existing file
//! without `force`, always through a temporary sibling and a rename.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::classifier::{self, ClassifierInfo, LoadOptions};
use crate::error::{Error, Result};

/// What `export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub bytes: usize,
    pub sha256: String,
    pub classifier: ClassifierInfo,
    /// The model's metadata_props.
    pub metadata: Vec<(String, String)>,
}

/// Writes the classifier of `run` to `out`.
pub fn export(run: &Path, out: &Path, force: bool, load: &LoadOptions) -> Result<ExportSummary> {
    if out.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is a folder: pass the file to write, e.g. --out {}",
            out.display(),
            out.join("model.onnx").display()
        )));
    }
    if out.exists() && !force {
        return Err(Error::Exists {
            path: out.to_path_buf(),
        });
    }
    let c = classifier::load(run, load)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    runfs::write_atomic(out, &c.onnx)?;
    Ok(ExportSummary {
        out: out.to_path_buf(),
        bytes: c.onnx.len(),
        sha256: features::manifest::sha256_hex(&c.onnx),
        metadata: head::onnx::metadata(&c.onnx)?,
        classifier: c.info(),
    })
}
