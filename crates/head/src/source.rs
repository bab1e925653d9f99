//! Loading a run's cached features for training: picks the training and validation splits,
//! checks that they come from the same backbone, preprocessing and class list, and holds out a
//! stratified fraction of `train` when there is no validation split.

use std::path::Path;

use features::dataset::VALIDATION_NAMES;
use features::provenance::Provenance;
use features::store::{self, FeatureFile};

use crate::data::Samples;
use crate::error::{Error, Result};

/// One split's features with its metadata.
#[derive(Clone, Debug)]
pub struct SplitData {
    pub name: String,
    pub samples: Samples,
    pub classes: Vec<String>,
    pub provenance: Provenance,
}

impl SplitData {
    /// Converts a feature file read by the store.
    pub fn from_file(file: FeatureFile) -> Result<Self> {
        let samples = Samples::from_store(
            &file.shape,
            file.features,
            &file.labels,
            file.meta.classes.len(),
        )?;
        Ok(SplitData {
            name: file.meta.split.clone(),
            provenance: file.meta.provenance.clone(),
            classes: file.meta.classes,
            samples,
        })
    }
}

/// Training and validation samples ready for [`crate::mlp::train`].
#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Samples,
    pub val: Samples,
    pub classes: Vec<String>,
    pub provenance: Provenance,
    /// `split <name>` or `<fraction> of train (stratified, seed <seed>)`.
    pub validation: String,
}

fn missing_features(run: &Path) -> Error {
    Error::Data(format!(
        "no cached features in {}; run `bottleneck extract --data DIR --run {}` first",
        store::features_dir(run).display(),
        run.display()
    ))
}

/// The fraction held out for validation when the data folder has no splits (`DIR/<class>/`).
pub const ONE_SPLIT_HOLD_OUT: f64 = 0.2;

/// Reads `RUN/features/*` and assembles the training data. With `val_split` a stratified
/// fraction of `train` is held out (seeded); otherwise the first of `validation`, `val`, `valid`,
/// `dev`, `test` (else any other split) is used. A run whose only split is `all` (the one-split
/// layout) holds out [`ONE_SPLIT_HOLD_OUT`] of it unless `val_split` says otherwise.
pub fn load_run(run: &Path, val_split: Option<f64>, seed: u64) -> Result<Dataset> {
    if !store::features_dir(run).is_dir() {
        return Err(missing_features(run));
    }
    let splits = store::list_splits(run)?;
    if splits == ["all"] {
        // The one-split layout `DIR/<class>/`: hold out a stratified, seeded part of it.
        let all = SplitData::from_file(FeatureFile::read(&store::feature_path(run, "all"))?)?;
        return combine(
            all,
            None,
            Some(val_split.unwrap_or(ONE_SPLIT_HOLD_OUT)),
            seed,
        );
    }
    if !splits.iter().any(|s| s == "train") {
        if splits.is_empty() {
            return Err(missing_features(run));
        }
        return Err(Error::Data(format!(
            "{} has no train.safetensors (found: {}); extract a `train` folder with \
             `bottleneck extract --data DIR --run {}`",
            store::features_dir(run).display(),
            splits.join(", "),
            run.display()
        )));
    }
    let read = |name: &str| -> Result<SplitData> {
        SplitData::from_file(FeatureFile::read(&store::feature_path(run, name))?)
    };
    let val_name = VALIDATION_NAMES
        .into_iter()
        .find(|v| splits.iter().any(|s| s == v))
        .or_else(|| splits.iter().map(String::as_str).find(|s| *s != "train"));
    let train = read("train")?;
    let val = match (val_split, val_name) {
        (Some(_), _) => None,
        (None, Some(name)) => Some(read(name)?),
        (None, None) => {
            return Err(Error::Data(format!(
                "{} holds only train.safetensors and no validation split; extract a `validation` \
                 folder too, or pass --val-split 0.2 to hold out 20% of train",
                store::features_dir(run).display()
            )))
        }
    };
    combine(train, val, val_split, seed)
}

/// Checks that the splits fit together and builds the [`Dataset`]; `val = None` requires
/// `val_split` and holds out that fraction of `train`.
pub fn combine(
    train: SplitData,
    val: Option<SplitData>,
    val_split: Option<f64>,
    seed: u64,
) -> Result<Dataset> {
    let classes = train.classes.clone();
    if classes.len() < 2 {
        return Err(Error::Data(format!(
            "split {:?} has {} class ({}); a classifier needs at least two class folders",
            train.name,
            classes.len(),
            classes.join(", ")
        )));
    }
    train.samples.check_finite(&train.name)?;
    let present = train.samples.class_counts(classes.len());
    if let Some(i) = present.iter().position(|&c| c == 0) {
        return Err(Error::Data(format!(
            "split {:?} has no samples of class {:?}; every class needs training images",
            train.name, classes[i]
        )));
    }
    let (train_samples, val_samples, validation) = match val {
        Some(val) => {
            if val.classes != classes {
                return Err(Error::Data(format!(
                    "splits {:?} and {:?} have different class lists ({} vs {}); \
                     use the same class folders in both and re-run `bottleneck extract`",
                    train.name,
                    val.name,
                    classes.join(", "),
                    val.classes.join(", ")
                )));
            }
            let diff = train.provenance.diff(&val.provenance);
            if !diff.is_empty() {
                return Err(Error::Data(format!(
                    "splits {:?} and {:?} were extracted differently ({}); \
                     re-run `bottleneck extract --data DIR --run RUN` with the same options for all splits",
                    train.name,
                    val.name,
                    diff.join("; ")
                )));
            }
            if val.samples.sample_shape() != train.samples.sample_shape() {
                return Err(Error::Data(format!(
                    "splits {:?} and {:?} have feature shapes {:?} and {:?}; re-run `bottleneck extract --data DIR --run RUN` with the same options for all splits",
                    train.name,
                    val.name,
                    train.samples.sample_shape(),
                    val.samples.sample_shape()
                )));
            }
            val.samples.check_finite(&val.name)?;
            if val.samples.is_empty() {
                return Err(Error::Data(format!("split {:?} has no samples", val.name)));
            }
            let v = format!("split {}", val.name);
            (train.samples, val.samples, v)
        }
        None => {
            let Some(fraction) = val_split else {
                return Err(Error::Data(
                    "no validation split; pass --val-split 0.2 to hold out 20% of train".into(),
                ));
            };
            let (t, v) = train
                .samples
                .stratified_split(fraction, classes.len(), seed)?;
            (
                t,
                v,
                format!("{fraction} of {} (stratified, seed {seed})", train.name),
            )
        }
    };
    Ok(Dataset {
        train: train_samples,
        val: val_samples,
        classes,
        provenance: train.provenance,
        validation,
    })
}
