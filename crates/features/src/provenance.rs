//! Where features come from, as one typed record every stage writes and compares: the backbone
//! (display name and sha256), the tensor the features are cut at, the preprocessing, input size,
//! resize filter, precision and (when not ONNX Runtime) the engine. Two records are compared with one [`Provenance::diff`]; any two
//! serialisable settings with [`differences`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::dataset::Item;
use crate::Result;

/// How a set of features was computed; every split used together must agree on all of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The model as the user named it (manifest name or path).
    pub model: String,
    /// sha256 of the original ONNX file.
    pub model_sha256: String,
    /// Tensor the features were cut at, e.g. `block5_pool`.
    pub output_tensor: String,
    /// Preprocessing: `caffe`, `torch` or `unit`.
    pub preprocess: String,
    /// Side of the square input, e.g. 150.
    pub image_size: u32,
    /// Resize filter, e.g. `nearest` (Keras `load_img`).
    pub resize: String,
    /// Numeric precision of the backbone, e.g. `fp32`.
    pub precision: String,
    /// The engine that computed the features when it is not ONNX Runtime, e.g. `candle cuda
    /// fp32` (absent: ONNX Runtime, on the CPU or its CUDA execution provider). Features of two
    /// engines agree to about 1e-6 in FP32 but not bit for bit, so they are not mixed silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

impl Provenance {
    /// Human-readable differences from `other` (`field: this vs other`), empty when they agree.
    /// The model's display name is not compared (one file may be named differently); its sha256 is.
    pub fn diff(&self, other: &Provenance) -> Vec<String> {
        let named = |p: &Provenance| Provenance {
            model: String::new(),
            ..p.clone()
        };
        differences(&named(self), &named(other))
    }
}

/// The digest of a split's images: every file's name, label and content, in order, leaving out
/// the files in `skip` (those that could not be decoded). Stages record it to tell whether their
/// outputs were made from the images a folder holds now.
pub fn files_digest(items: &[Item], skip: &BTreeSet<String>) -> Result<String> {
    let mut d = runfs::Digest::new();
    for item in items.iter().filter(|i| !skip.contains(&i.rel)) {
        let sha = crate::image_io::photo_sha256(&item.path)?;
        d.part(item.rel.as_bytes())
            .raw(&(item.label as u64).to_le_bytes())
            .raw(&sha);
    }
    Ok(d.hex())
}

/// Fields of two serialisable values that differ, as `name: a vs b` (long values shortened).
pub fn differences<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    let a = serde_json::to_value(a).unwrap_or_default();
    let b = serde_json::to_value(b).unwrap_or_default();
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["values cannot be compared".into()];
    };
    let short = |v: &serde_json::Value| {
        let s = v.to_string();
        match s.char_indices().nth(60) {
            Some((i, _)) => format!("{}…", &s[..i]),
            None => s,
        }
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (va, vb) = (
                a.get(k).cloned().unwrap_or_default(),
                b.get(k).cloned().unwrap_or_default(),
            );
            (va != vb).then(|| format!("{k}: {} vs {}", short(&va), short(&vb)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Provenance {
        Provenance {
            model: "vgg16".into(),
            model_sha256: "ab".into(),
            output_tensor: "block5_pool".into(),
            preprocess: "caffe".into(),
            image_size: 150,
            resize: "nearest".into(),
            precision: "fp32".into(),
            engine: None,
        }
    }

    #[test]
    fn the_display_name_is_not_compared_and_every_other_field_is() {
        let renamed = Provenance {
            model: "/abs/vgg16.onnx".into(),
            ..p()
        };
        assert!(p().diff(&renamed).is_empty());
        let other = Provenance {
            image_size: 224,
            precision: "int8".into(),
            ..p()
        };
        assert_eq!(
            p().diff(&other),
            vec!["image_size: 150 vs 224", "precision: \"fp32\" vs \"int8\""]
        );
    }
}
