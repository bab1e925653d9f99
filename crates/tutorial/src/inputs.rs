//! The inputs every stage depends on (data folder and its content, model and its sha256,
//! preprocessing, image size, precision), the `--limit` subset of the data, and the digests that
//! the stages' own metadata can be checked against.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use features::dataset::{self, Dataset};
use features::extract::Precision;
use features::manifest;
use features::preprocess::{Preprocess, Resize, PREPROCESS_CHOICES};
use head::recipe::Recipe;
use serde::{Deserialize, Serialize};

use crate::config::TutorialConfig;
use crate::error::{Error, Result};

/// Folder of the `--limit` subset inside the run (symbolic links to the data).
pub const SUBSET_DIR: &str = "tutorial-data";

/// What the outputs of a tutorial run were made from (recorded in `RUN/tutorial.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// The data folder as given on the command line (for the report; not compared: the photos are,
    /// through `data_digest`).
    pub data: String,
    /// Images per class and split when only a subset was used.
    pub limit: Option<usize>,
    /// Digest of every image name, label and content of every split.
    pub data_digest: String,
    pub classes: Vec<String>,
    /// Images per split.
    pub images: BTreeMap<String, usize>,
    /// The model as given on the command line (for the report; not compared: its sha256 is).
    pub model: String,
    pub model_sha256: String,
    pub preprocess: String,
    pub image_size: u32,
    pub precision: String,
    /// Stage 1's input side (absent from records of earlier versions).
    #[serde(default)]
    pub scratch_size: u32,
    /// Precision of fine-tuning's frozen part (absent from records of earlier versions).
    #[serde(default)]
    pub finetune_precision: String,
}

impl Inputs {
    /// Fields that differ from `other`, as `name: this vs other`.
    pub fn differences(&self, other: &Inputs) -> Vec<String> {
        // Where the folder and the model are (as typed, from wherever they were typed) is no
        // input; the photos and the model's bytes are.
        let located_alike = Inputs {
            data: other.data.clone(),
            model: other.model.clone(),
            ..self.clone()
        };
        features::provenance::differences(&located_alike, other)
    }
}

/// The checked inputs of a run.
pub struct Prepared {
    pub inputs: Inputs,
    /// The data folder the stages read (the subset folder with `--limit`).
    pub data_dir: PathBuf,
    pub dataset: Dataset,
    pub preprocess: Preprocess,
    /// The model as the stages should be told (a name, or an absolute path).
    pub model: String,
    /// Input side and resize rule of stages 2 and 3 ([`TutorialConfig::input`]).
    pub size: u32,
    pub resize: Resize,
    /// Why stage 3 does not run on this backbone, when it does not: its manifest names no block
    /// to fine-tune (`trainable_from`) and no `--split-at` was given, or `fit` leaves it out
    /// (`fit_finetunes = false`: fine-tuning gained too little for its cost).
    pub no_finetune: Option<String>,
    /// Precision of fine-tuning's frozen part ([`TutorialConfig::finetune_precision_for`]).
    pub finetune_precision: Precision,
}

/// Resolves the model, links the `--limit` subset, scans and hashes the data.
// Over 80 lines: the inputs are resolved in dependency order (model, subset, scan, digests) and
// each step needs the last.
pub fn prepare(cfg: &TutorialConfig) -> Result<Prepared> {
    let data_abs = std::fs::canonicalize(&cfg.data).map_err(|e| {
        Error::Invalid(format!(
            "data folder {} cannot be read ({e}); pass --data DIR with DIR/train/<class>/*.jpg and DIR/validation/<class>/*.jpg",
            cfg.data.display()
        ))
    })?;
    let data_dir = match cfg.limit {
        Some(n) => link_subset(&data_abs, &cfg.run.join(SUBSET_DIR), n)?,
        None => data_abs.clone(),
    };
    let dataset = dataset::scan(&data_dir)?;
    let one_split = dataset.splits.len() == 1 && dataset.splits[0].name == "all";
    for split in ["train", "validation"] {
        if !one_split && dataset.split(split).is_none() {
            return Err(Error::Invalid(format!(
                "{} has no '{split}' split: use DIR/train/<class>/* with DIR/validation/<class>/* (or val, \
                 valid, dev, test), or DIR/<class>/* alone (a fifth of it is then held out for validation)",
                cfg.data.display()
            )));
        }
    }
    let model = manifest::resolve(&cfg.model, &cfg.hub)?;
    let preprocess = match (cfg.preprocess, model.manifest.as_ref()) {
        (Some(p), _) => p,
        (None, Some(m)) => m.preprocess,
        (None, None) => {
            return Err(Error::Invalid(format!(
                "{} has no manifest, so its preprocessing is unknown: pass --preprocess with one of {PREPROCESS_CHOICES}",
                model.path.display()
            )))
        }
    };
    let (size, resize) = cfg.input(model.manifest.as_ref());
    let no_finetune = match model.manifest.as_ref() {
        Some(m) if m.trainable_from.is_none() && cfg.split_at.is_none() => Some(format!(
            "fine-tuning is not available for {} (its manifest names no block to train): its \
             calibrated head is the result",
            m.name
        )),
        Some(m) if !m.fit_finetunes && cfg.split_at.is_none() && cfg.head_recipe == Recipe::Probe => Some(format!(
            "fine-tuning {}'s top gained too little over its calibrated head for its cost on the shared \
             sets (BENCHMARKS.md), so the head is the result; `bottleneck finetune --run {} --data {} \
             --lr 1e-3 --calibrate 2` trains the top on request",
            m.name,
            cfg.run.display(),
            cfg.data.display()
        )),
        _ => None,
    };
    let finetune_precision = cfg.finetune_precision_for(model.manifest.as_ref());
    let mut all = runfs::Digest::new();
    for split in &dataset.splits {
        for item in &split.items {
            let sha = features::image_io::photo_sha256(&item.path)?;
            all.part(split.name.as_bytes())
                .part(item.rel.as_bytes())
                .raw(&(item.label as u64).to_le_bytes())
                .raw(&sha);
        }
    }
    let inputs = Inputs {
        data: cfg.data.to_string_lossy().into_owned(),
        limit: cfg.limit,
        data_digest: all.hex(),
        classes: dataset.classes.clone(),
        images: dataset
            .splits
            .iter()
            .map(|s| (s.name.clone(), s.items.len()))
            .collect(),
        model: cfg.model.clone(),
        model_sha256: model.sha256.clone(),
        preprocess: preprocess.name().into(),
        image_size: size,
        precision: cfg.precision.name().into(),
        scratch_size: cfg.scratch_size,
        finetune_precision: finetune_precision.name().into(),
    };
    Ok(Prepared {
        inputs,
        data_dir,
        dataset,
        preprocess,
        model: model.name,
        size,
        resize,
        no_finetune,
        finetune_precision,
    })
}

/// Rebuilds `dir` as `DIR/<split>/<class>/` links to the first `per_class` images of each class.
fn link_subset(data: &Path, dir: &Path, per_class: usize) -> Result<PathBuf> {
    let full = dataset::scan(data)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    for split in &full.splits {
        let mut taken = vec![0usize; full.classes.len()];
        for item in &split.items {
            if taken[item.label] >= per_class {
                continue;
            }
            taken[item.label] += 1;
            let target = dir.join(&item.rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            runfs::atomic::link_or_copy(&item.path, &target)?;
        }
    }
    Ok(dir.to_path_buf())
}
