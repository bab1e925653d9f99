//! Stage 1's files: the `training` metadata of `model.safetensors` and `checkpoint.safetensors`
//! (settings, history, kept epoch, optimizer steps), the optimizer's moving averages as
//! checkpoint tensors, and reading a checkpoint back for `--resume`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use train::metrics::EpochMetrics;
use train::optim::Optimizer;

use crate::error::{Error, Result};
use crate::model::{self, ModelMeta};
use crate::net::{Arch, Params};
use crate::pipeline::Settings;

/// What the `training` metadata of the model and checkpoint files holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Training {
    pub settings: Settings,
    pub epochs: usize,
    pub history: Vec<EpochMetrics>,
    pub kept_epoch: usize,
    pub train_images: usize,
    pub val_images: usize,
    /// Optimizer steps taken; its moving averages are the checkpoint's `optimizer.*` tensors
    /// (absent from checkpoints of earlier versions, whose resume restarts them from zero).
    #[serde(default)]
    pub optimizer_steps: Option<u64>,
    /// Digests of the training and validation images (names, labels, contents; absent from
    /// files of earlier versions), and the images left out because they could not be decoded.
    #[serde(default)]
    pub data: Option<DataDigest>,
}

/// What images a run was trained and validated on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataDigest {
    pub train: String,
    pub validation: String,
    pub skipped: Vec<String>,
}

/// Prefix of the optimizer-state tensors in a checkpoint: `optimizer.<var>.<slot>`.
const OPTIMIZER_PREFIX: &str = "optimizer.";

pub fn optimizer_tensors(optim: &Optimizer) -> model::Extra {
    let (slots, _) = optim.state();
    slots
        .iter()
        .enumerate()
        .flat_map(|(i, pair)| {
            pair.iter()
                .enumerate()
                .filter(|(_, v)| !v.is_empty())
                .map(move |(j, v)| (format!("{OPTIMIZER_PREFIX}{i:03}.{j}"), v.clone()))
        })
        .collect()
}

/// Puts a checkpoint's optimizer state back; false when the checkpoint has none.
pub fn restore_optimizer(optim: &mut Optimizer, path: &Path, steps: Option<u64>) -> Result<bool> {
    let Some(steps) = steps else {
        return Ok(false);
    };
    let mut slots: Vec<[Vec<f32>; 2]> = vec![[Vec::new(), Vec::new()]; optim.state().0.len()];
    for (name, v) in model::load_extra(path, OPTIMIZER_PREFIX)? {
        let slot = name[OPTIMIZER_PREFIX.len()..]
            .split_once('.')
            .and_then(|(i, j)| Some((i.parse::<usize>().ok()?, j.parse::<usize>().ok()?)))
            .filter(|&(i, j)| i < slots.len() && j < 2);
        let Some((i, j)) = slot else {
            return Err(Error::ModelFile {
                path: path.to_path_buf(),
                reason: format!("unexpected optimizer tensor {name}; start over with --force"),
            });
        };
        slots[i][j] = v;
    }
    optim
        .set_state(slots, steps)
        .map_err(|e| Error::ModelFile {
            path: path.to_path_buf(),
            reason: format!("{e}; start over with --force"),
        })?;
    Ok(true)
}

pub fn meta(arch: &Arch, classes: &[String], training: &Training) -> Result<ModelMeta> {
    Ok(ModelMeta {
        classes: classes.to_vec(),
        image_size: arch.size,
        preprocess: "unit".into(),
        resize: training.settings.resize.name().into(),
        architecture: arch.describe(),
        arch: arch.clone(),
        training: serde_json::to_value(training)
            .map_err(|e| Error::Invalid(format!("cannot encode training metadata: {e}")))?,
    })
}

/// Reads a checkpoint: weights, architecture, classes and training state.
pub fn read_checkpoint(path: &Path) -> Result<(Params, ModelMeta, Training)> {
    let (params, meta) = model::load(path)?;
    let training: Training =
        serde_json::from_value(meta.training.clone()).map_err(|e| Error::ModelFile {
            path: path.to_path_buf(),
            reason: format!(
                "not a checkpoint (training state unreadable: {e}); start over with --force"
            ),
        })?;
    Ok((params, meta, training))
}

/// The settings stored in a checkpoint, its epoch count (for `--resume` defaults) and the file's
/// metadata (classes, image size, resize filter), from one read.
pub fn checkpoint_settings(path: &Path) -> Result<(Settings, usize, ModelMeta)> {
    let (_, meta, t) = read_checkpoint(path)?;
    Ok((t.settings, t.epochs, meta))
}
