//! The files of a finished (or paused) run: `block.safetensors` (fine-tuned block, ONNX names and
//! layout), `head.safetensors` (readable by `head::load`), `metrics.json`, `confusion.json`,
//! `curves.png`/`.svg` and `model.onnx`.

use std::collections::HashMap;

use features::provenance::Provenance;
use head::HeadMeta;
use train::metrics::{ConfusionMatrix, Metrics};

use crate::calibrate::Calibration;
use crate::config::{FinetunePaths, Settings};
use crate::error::Result;
use crate::net::Net;
use crate::tensors::{self, F32Tensor};

/// Format marker of `block.safetensors`.
pub const BLOCK_FORMAT: &str = "bottleneck-finetune-block";

/// Writes `block.safetensors`: each trained tensor under its ONNX initializer name, in ONNX layout
/// (a conv's weight `[out, in/groups, kh, kw]`, its bias), with the settings and the kept epoch as
/// metadata.
pub fn write_block(
    paths: &FinetunePaths,
    net: &Net,
    settings: &Settings,
    kept_epoch: usize,
) -> Result<()> {
    let weights = net.block.initializers();
    let t = weights
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                F32Tensor {
                    shape: s.clone(),
                    data: v,
                },
            )
        })
        .collect();
    let mut m = HashMap::new();
    m.insert("format".to_string(), BLOCK_FORMAT.to_string());
    m.insert("input_tensor".into(), net.block.input_tensor.clone());
    m.insert("output_tensor".into(), net.block.output_tensor.clone());
    m.insert("nodes".into(), json(&net.block.node_names()));
    m.insert("kept_epoch".into(), kept_epoch.to_string());
    m.insert("precision".into(), settings.options.precision.name().into());
    if let Some(k) = &settings.int8_key {
        m.insert("int8_key".into(), k.clone());
    }
    m.insert("settings".into(), json(settings));
    tensors::write(&paths.block, t, m)
}

/// Writes `head.safetensors` for the fine-tuned head. The metadata is the stage-2 head's with the
/// fine-tuning hyper-parameters and results and the digest of `model.onnx`; its features are the
/// fine-tuned block's output.
pub fn write_head(
    paths: &FinetunePaths,
    net: &Net,
    base: &HeadMeta,
    settings: &Settings,
    metrics: &Metrics,
    model_sha256: &str,
) -> Result<()> {
    let model = net.head.to_head()?;
    let meta = HeadMeta {
        features: Provenance {
            model: format!(
                "{} (fine-tuned {}; see block.safetensors)",
                base.features.model, net.block.output_tensor
            ),
            precision: settings.options.precision.name().into(),
            ..base.features.clone()
        },
        optimizer: settings.options.sgd.to_config(),
        epochs: metrics.epochs.len(),
        batch_size: settings.options.batch_size,
        seed: settings.seed,
        keep: settings.options.keep,
        epochs_run: metrics.epochs.len(),
        kept_epoch: metrics.kept_epoch,
        val_loss: metrics.kept_val_loss,
        val_accuracy: metrics.kept_val_accuracy,
        validation: metrics.validation.clone(),
        classifier_sha256: Some(model_sha256.to_string()),
        ..base.clone()
    };
    Ok(head::save(&paths.head, &model, &meta)?)
}

/// `metrics.json`: the head crate's [`Metrics`] plus the frozen part's precision.
#[derive(serde::Serialize)]
struct MetricsFile<'a> {
    #[serde(flatten)]
    metrics: &'a Metrics,
    /// `fp32` or `int8` (the frozen part).
    precision: &'static str,
    /// `fp32` or `bf16`: the products of the trained block (weights and sums are FP32).
    train_precision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    int8_key: Option<&'a str>,
    /// The temperature cross-fit (`--calibrate`), when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    calibration: Option<&'a Calibration>,
}

impl<'a> MetricsFile<'a> {
    fn new(
        metrics: &'a Metrics,
        settings: &'a Settings,
        calibration: Option<&'a Calibration>,
    ) -> Self {
        MetricsFile {
            metrics,
            precision: settings.options.precision.name(),
            train_precision: settings.options.train_precision.name(),
            int8_key: settings.int8_key.as_deref(),
            calibration,
        }
    }
}

/// Writes `metrics.json` and the learning curves of the epochs so far.
pub fn write_progress(
    paths: &FinetunePaths,
    metrics: &Metrics,
    settings: &Settings,
    title: &str,
) -> Result<()> {
    let file = MetricsFile::new(metrics, settings, None);
    Ok(paths.stage.write_progress(&file, &metrics.epochs, title)?)
}

/// Writes the final `metrics.json`, `confusion.json` and learning curves.
pub fn write_results(
    paths: &FinetunePaths,
    metrics: &Metrics,
    settings: &Settings,
    calibration: Option<&Calibration>,
    confusion: &ConfusionMatrix,
    title: &str,
) -> Result<()> {
    let file = MetricsFile::new(metrics, settings, calibration);
    Ok(paths
        .stage
        .write_results(&file, &metrics.epochs, confusion, title)?)
}

/// JSON text of a serialisable value (`null` if it cannot be encoded).
fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}
