//! `head.safetensors`: the trained weights plus a `__metadata__` block describing the classes,
//! the features the head expects (shape, backbone, preprocessing) and how it was trained.
//!
//! Metadata values are strings (a safetensors rule): text fields are stored as is, every other
//! field as JSON (`"classes": "[\"cats\",\"dogs\"]"`, `"image_size": "150"`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use features::provenance::Provenance;

use crate::error::{Error, Result};
use crate::mlp::TrainConfig;
use crate::model::{HeadConfig, HeadModel, TENSOR_NAMES};
use crate::probe::{ProbeConfig, ProbeSummary};
use crate::recipe::Recipe;
use runfs::write_atomic;
use train::metrics::Keep;
use train::optim::OptimizerConfig;

/// Version of the head file layout written by this crate.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT: &str = "bottleneck-head";

/// Everything a later stage needs to know about a saved head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadMeta {
    pub format_version: u32,
    /// Class names; index = output index.
    pub classes: Vec<String>,
    /// Shape of one feature sample, e.g. `[512, 4, 4]`.
    pub feature_shape: Vec<usize>,
    pub hidden: usize,
    pub dropout: f32,
    /// Provenance of the features (copied from the feature files).
    #[serde(flatten)]
    pub features: Provenance,
    /// Training hyper-parameters.
    pub optimizer: OptimizerConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub keep: Keep,
    /// Epochs actually completed (fewer than `epochs` after divergence).
    pub epochs_run: usize,
    /// The epoch whose weights these are, and its validation numbers.
    pub kept_epoch: usize,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// Where the validation samples came from.
    pub validation: String,
    /// Which head this is (files without the field are tutorial heads).
    #[serde(default = "tutorial_head")]
    pub recipe: Recipe,
    /// The probe's settings, and what it chose (for [`Recipe::Probe`]).
    #[serde(default)]
    pub probe_config: ProbeConfig,
    #[serde(default)]
    pub probe: Option<ProbeSummary>,
    /// The photos held out of the training split for validation (one-split layout or
    /// `--val-split`); `finetune` holds out the same ones.
    #[serde(default)]
    pub hold_out: Option<features::holdout::HoldOut>,
    /// SHA-256 of the `model.onnx` written with this head (fine-tuning), which readers verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_sha256: Option<String>,
}

/// Fields stored verbatim (all others are JSON).
const TEXT_FIELDS: [&str; 9] = [
    "model",
    "model_sha256",
    "output_tensor",
    "preprocess",
    "resize",
    "precision",
    "keep",
    "validation",
    "recipe",
];

/// The recipe of head files from before the probe: the tutorial's.
fn tutorial_head() -> Recipe {
    Recipe::Keras2016
}

impl HeadMeta {
    /// The settings this head was trained with.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            hidden: self.hidden,
            dropout: self.dropout,
            optimizer: self.optimizer.clone(),
            seed: self.seed,
            keep: self.keep,
            recipe: self.recipe,
            probe: self.probe_config.clone(),
        }
    }

    /// The model shape this metadata describes.
    pub fn head_config(&self) -> HeadConfig {
        HeadConfig {
            input_shape: self.feature_shape.clone(),
            hidden: self.hidden,
            num_classes: self.classes.len(),
            dropout: self.dropout,
        }
    }

    fn to_strings(&self) -> Result<HashMap<String, String>> {
        let value = serde_json::to_value(self)
            .map_err(|e| Error::Invalid(format!("cannot encode head metadata: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::Invalid("head metadata is not an object".into()));
        };
        let mut out: HashMap<String, String> = map
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) if TEXT_FIELDS.contains(&k.as_str()) => s,
                    other => other.to_string(),
                };
                (k, s)
            })
            .collect();
        out.insert("format".into(), FORMAT.into());
        Ok(out)
    }

    fn from_strings(map: &HashMap<String, String>, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::HeadFile {
            path: path.to_path_buf(),
            reason,
        };
        if map.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(
                "not a head file written by `bottleneck train-head` (no format marker)".into(),
            ));
        }
        let mut obj = Map::new();
        for (k, s) in map {
            if k == "format" {
                continue;
            }
            let v = if TEXT_FIELDS.contains(&k.as_str()) {
                Value::String(s.clone())
            } else {
                serde_json::from_str(s)
                    .map_err(|e| bad(format!("metadata field {k:?} is not valid JSON: {e}")))?
            };
            obj.insert(k.clone(), v);
        }
        let meta: HeadMeta = serde_json::from_value(Value::Object(obj))
            .map_err(|e| bad(format!("incomplete metadata: {e}")))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "head format version {} is not supported (expected {FORMAT_VERSION}); retrain with this version",
                meta.format_version
            )));
        }
        Ok(meta)
    }
}

/// Writes the weights and metadata to `path` (temporary file + rename).
pub fn save(path: &Path, model: &HeadModel, meta: &HeadMeta) -> Result<()> {
    let tensors = model.named_tensors();
    let bytes =
        features::tensorfile::serialize(tensors.iter().map(|(n, t)| (*n, t)), meta.to_strings()?)
            .map_err(|e| Error::HeadFile {
            path: path.to_path_buf(),
            reason: format!("cannot encode: {e}"),
        })?;
    Ok(write_atomic(path, &bytes)?)
}

/// Reads only the metadata of a head file.
pub fn read_meta(path: &Path) -> Result<HeadMeta> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    meta_from_bytes(&bytes, path)
}

fn meta_from_bytes(bytes: &[u8], path: &Path) -> Result<HeadMeta> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| Error::HeadFile {
        path: path.to_path_buf(),
        reason: format!("not a safetensors file: {e}"),
    })?;
    let map = metadata.metadata().clone().unwrap_or_default();
    HeadMeta::from_strings(&map, path)
}

/// Loads a head saved by [`save`] onto the CPU.
pub fn load(path: &Path) -> Result<(HeadModel, HeadMeta)> {
    load_on(path, &Device::Cpu)
}

/// Loads a head saved by [`save`] onto `device`.
pub fn load_on(path: &Path, device: &Device) -> Result<(HeadModel, HeadMeta)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let meta = meta_from_bytes(&bytes, path)?;
    let mut tensors =
        candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| Error::HeadFile {
            path: path.to_path_buf(),
            reason: format!("cannot read tensors: {e}"),
        })?;
    let mut take = |name: &str| {
        tensors.remove(name).ok_or_else(|| Error::HeadFile {
            path: path.to_path_buf(),
            reason: format!("tensor {name:?} is missing"),
        })
    };
    let parts = [
        take(TENSOR_NAMES[0])?,
        take(TENSOR_NAMES[1])?,
        take(TENSOR_NAMES[2])?,
        take(TENSOR_NAMES[3])?,
    ];
    for (name, t) in TENSOR_NAMES.iter().zip(&parts) {
        let values = t
            .flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| Error::HeadFile {
                path: path.to_path_buf(),
                reason: format!("cannot read tensor {name:?}: {e}"),
            })?;
        if let Some(bad) = train::finite::first_non_finite(&values) {
            return Err(Error::HeadFile {
                path: path.to_path_buf(),
                reason: format!(
                    "damaged weights: tensor {name:?} holds {bad}; re-run `bottleneck train-head --force` \
                     (or the stage that wrote it)"
                ),
            });
        }
    }
    let model =
        HeadModel::from_tensors(meta.head_config(), parts).map_err(|e| Error::HeadFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok((model, meta))
}
