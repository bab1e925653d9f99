//! The model card of `GET /v1/model` and the page: what is served (classes, stage, backbone and its
//! preprocessing), how good it was on validation when trained, and the sha256s that identify it.
//! Paths are relative to the run; the backbone is named by its file name.

use std::path::Path;

use predict::Predictor;
use serde::Serialize;

/// Validation numbers recorded when the served stage was trained.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub accuracy: f64,
    pub log_loss: f64,
    /// Expected calibration error (15 bins), when the stage recorded it.
    pub ece: Option<f64>,
}

/// What the server serves.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub classes: Vec<String>,
    /// `head` (frozen backbone + head) or `finetune`.
    pub stage: String,
    /// The file the weights come from, relative to the run.
    pub source: String,
    /// Why a better stage was not used, if it was not.
    pub note: Option<String>,
    pub backbone: String,
    pub backbone_sha256: String,
    /// SHA-256 of the one ONNX graph served (image batch → probabilities), as `export` writes it.
    pub classifier_sha256: String,
    /// The backbone tensor the head reads.
    pub features: String,
    pub precision: String,
    pub preprocess: String,
    pub resize: String,
    pub image_size: u32,
    pub validation: Validation,
    /// Where the network runs (`cpu`, `cuda`, …).
    pub device: String,
    /// Answers below this top probability are `unknown`.
    pub min_confidence: Option<f32>,
    pub max_batch: usize,
}

/// Expected calibration error from the stage's `metrics.json`, if it has one.
fn recorded_ece(run: &Path, stage: &str) -> Option<f64> {
    let text = std::fs::read_to_string(run.join(stage).join("metrics.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("kept_val_ece")?.as_f64()
}

/// The file name of a path or model name.
fn file_name(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string())
}

impl ModelCard {
    pub(crate) fn new(
        run: &Path,
        predictor: &Predictor,
        min_confidence: Option<f32>,
        max_batch: usize,
    ) -> Self {
        let c = &predictor.classifier;
        let stage = c.stage.name().to_string();
        let source = c
            .source
            .strip_prefix(run)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| file_name(&c.source.display().to_string()));
        ModelCard {
            classes: c.classes.clone(),
            source,
            note: c.note.clone(),
            backbone: file_name(&c.meta.features.model),
            backbone_sha256: c.meta.features.model_sha256.clone(),
            classifier_sha256: runfs::digest::sha256_hex(&c.onnx),
            features: c.meta.features.output_tensor.clone(),
            precision: c.meta.features.precision.clone(),
            preprocess: c.spec.preprocess.name().to_string(),
            resize: c.spec.resize.name().to_string(),
            image_size: c.spec.size,
            validation: Validation {
                accuracy: c.meta.val_accuracy,
                log_loss: c.meta.val_loss,
                ece: recorded_ece(run, &stage),
            },
            stage,
            device: predictor.device(),
            min_confidence,
            max_batch,
        }
    }
}
