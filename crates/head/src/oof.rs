//! The probe's out-of-fold predictions on train, `RUN/head/oof.safetensors`: for every training
//! photo a model never fitted on it gave calibrated class probabilities (what `bottleneck audit`
//! reads to find likely mislabeled photos). Tensors `probabilities` (f32 `[n, classes]`) and
//! `labels` (i64 `[n]`, the given classes), metadata tying row `i` to its photo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the layout below.
pub const FORMAT_VERSION: u32 = 1;

/// The file's name under `RUN/head/`.
pub const FILE_NAME: &str = "oof.safetensors";

/// `RUN/head/oof.safetensors`.
pub fn path(run: &Path) -> PathBuf {
    run.join("head").join(FILE_NAME)
}

/// Out-of-fold probabilities of some training rows, as the probe computed them.
#[derive(Clone, Debug, PartialEq)]
pub struct Oof {
    /// Training rows (indices into the training samples) that have out-of-fold predictions: all
    /// of them for the exact solver, the held-out fold for the streamed one.
    pub rows: Vec<usize>,
    /// `[rows.len(), classes]` row-major, temperature applied.
    pub probabilities: Vec<f32>,
    pub classes: usize,
}

impl Oof {
    /// Softmax of `logits / temperature` (`[rows.len(), classes]` row-major).
    pub fn from_logits(rows: Vec<usize>, logits: &[f64], classes: usize, temperature: f64) -> Oof {
        let mut probabilities = Vec::with_capacity(logits.len());
        for z in logits.chunks(classes) {
            let m = z
                .iter()
                .fold(f64::NEG_INFINITY, |a, &b| a.max(b / temperature));
            let e: Vec<f64> = z.iter().map(|&v| (v / temperature - m).exp()).collect();
            let s: f64 = e.iter().sum();
            probabilities.extend(e.iter().map(|&v| (v / s) as f32));
        }
        Oof {
            rows,
            probabilities,
            classes,
        }
    }
}

/// What the file says about its rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OofMeta {
    pub format_version: u32,
    pub classes: Vec<String>,
    /// The feature split the rows come from (`train`, or `all` with a hold-out).
    pub split: String,
    /// Photo of every row, relative to the data folder (as the feature file records it).
    pub files: Vec<String>,
    /// Cache key of the feature file the rows were read from: other features make the file stale.
    pub features_key: String,
    /// Folds of the cross-validation; `all_rows` is false when only one held-out fold was scored.
    pub folds: usize,
    pub all_rows: bool,
}

/// An out-of-fold file read back.
#[derive(Clone, Debug)]
pub struct OofFile {
    pub meta: OofMeta,
    /// `[files.len(), classes]` row-major.
    pub probabilities: Vec<f32>,
    pub labels: Vec<u32>,
}

/// Writes `oof` (rows of training samples whose photos are `files`, given classes `labels`) to
/// `path` atomically.
pub fn save(path: &Path, oof: &Oof, labels: &[u32], meta: &OofMeta) -> Result<()> {
    let n = oof.rows.len();
    if meta.files.len() != n || labels.len() != n || oof.probabilities.len() != n * oof.classes {
        return Err(Error::Invalid(format!(
            "out-of-fold rows: {n} rows, {} files, {} labels, {} probabilities",
            meta.files.len(),
            labels.len(),
            oof.probabilities.len()
        )));
    }
    let p: Vec<u8> = oof
        .probabilities
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let y: Vec<u8> = labels
        .iter()
        .flat_map(|&v| (v as i64).to_le_bytes())
        .collect();
    let bad = |e: String| Error::HeadFile {
        path: path.to_path_buf(),
        reason: format!("cannot encode: {e}"),
    };
    let tensors = [
        (
            "probabilities",
            TensorView::new(Dtype::F32, vec![n, oof.classes], &p)
                .map_err(|e| bad(e.to_string()))?,
        ),
        (
            "labels",
            TensorView::new(Dtype::I64, vec![n], &y).map_err(|e| bad(e.to_string()))?,
        ),
    ];
    let mut m = HashMap::new();
    m.insert(
        "oof".to_string(),
        serde_json::to_string(meta).map_err(|e| bad(e.to_string()))?,
    );
    let bytes = features::tensorfile::serialize(tensors, m).map_err(|e| bad(e.to_string()))?;
    Ok(runfs::write_atomic(path, &bytes)?)
}

/// Reads a file [`save`] wrote, checking that its tensors fit its metadata and are finite.
pub fn load(path: &Path) -> Result<OofFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::HeadFile {
        path: path.to_path_buf(),
        reason: format!("{reason}; re-run `bottleneck train-head --force` to rewrite it"),
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("oof").cloned())
        .ok_or_else(|| bad("no `oof` metadata".into()))?;
    let meta: OofMeta =
        serde_json::from_str(&text).map_err(|e| bad(format!("metadata `oof`: {e}")))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} (expected {FORMAT_VERSION})",
            meta.format_version
        )));
    }
    let (n, k) = (meta.files.len(), meta.classes.len());
    let p = st
        .tensor("probabilities")
        .map_err(|e| bad(format!("tensor `probabilities`: {e}")))?;
    let y = st
        .tensor("labels")
        .map_err(|e| bad(format!("tensor `labels`: {e}")))?;
    if p.dtype() != Dtype::F32 || p.shape() != [n, k] || y.dtype() != Dtype::I64 || y.shape() != [n]
    {
        return Err(bad(format!(
            "tensors {:?} {:?} and {:?} {:?} do not fit {n} rows of {k} classes",
            p.dtype(),
            p.shape(),
            y.dtype(),
            y.shape()
        )));
    }
    let probabilities: Vec<f32> = p
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = probabilities
        .iter()
        .position(|v| !(v.is_finite() && (0.0..=1.0).contains(v)))
    {
        return Err(bad(format!(
            "probability {} of row {} is not in [0, 1]",
            probabilities[i],
            i / k.max(1)
        )));
    }
    let mut labels = Vec::with_capacity(n);
    for c in y.data().chunks_exact(8) {
        let v = i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if v < 0 || v as usize >= k {
            return Err(bad(format!("label {v} is not one of {k} classes")));
        }
        labels.push(v as u32);
    }
    Ok(OofFile {
        meta,
        probabilities,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_scaled_logits() {
        let o = Oof::from_logits(vec![3], &[0.0, 2.0_f64.ln() * 2.0], 2, 2.0);
        assert!((o.probabilities[0] - 1.0 / 3.0).abs() < 1e-6);
        assert!((o.probabilities[1] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let oof = Oof {
            rows: vec![0, 2],
            probabilities: vec![0.9, 0.1, 0.2, 0.8],
            classes: 2,
        };
        let meta = OofMeta {
            format_version: FORMAT_VERSION,
            classes: vec!["cats".into(), "dogs".into()],
            split: "train".into(),
            files: vec!["train/cats/a.jpg".into(), "train/dogs/b.jpg".into()],
            features_key: "k".into(),
            folds: 5,
            all_rows: true,
        };
        save(&p, &oof, &[0, 1], &meta).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back.meta, meta);
        assert_eq!(back.labels, vec![0, 1]);
        assert_eq!(back.probabilities, oof.probabilities);
        assert!(save(&p, &oof, &[0], &meta).is_err());
        std::fs::write(&p, b"junk").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("oof.safetensors") && e.contains("train-head"),
            "{e}"
        );
    }
}
