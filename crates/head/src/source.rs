//! Loading a run's cached features for training: picks the training and validation splits,
//! checks that they come from the same backbone, preprocessing and class list, and holds out a
//! stratified fraction of `train` when there is no validation split.

use std::path::Path;
use std::sync::Arc;

use features::dataset::VALIDATION_NAMES;
use features::holdout::{self, HoldOut};
use features::mapped::MappedFeatures;
use features::provenance::Provenance;
use features::store;

use crate::data::Samples;
use crate::error::{Error, Result};

/// One split's features with its metadata.
#[derive(Clone, Debug)]
pub struct SplitData {
    pub name: String,
    pub samples: Samples,
    pub classes: Vec<String>,
    pub provenance: Provenance,
    /// Source file of every sample (relative to the data folder).
    pub files: Vec<String>,
    /// The feature file's cache key (what its rows were computed from).
    pub cache_key: String,
    /// Files of the split that could not be decoded (they count in the hold-out, see
    /// [`holdout::held_out`], as `finetune` lists them too).
    pub skipped: Vec<String>,
}

impl SplitData {
    /// Maps the feature file at `path`: its rows are read in place while training, so a split
    /// larger than memory costs a bounded resident set.
    pub fn open(path: &Path) -> Result<Self> {
        let file = Arc::new(MappedFeatures::open(path)?);
        let meta = file.meta.clone();
        let samples = Samples::mapped(file, meta.classes.len())?;
        if meta.files.len() != samples.len() {
            return Err(Error::Data(format!(
                "split {:?}: {} rows but {} file names in its metadata; delete the feature file and re-run \
                 `bottleneck extract`",
                meta.split,
                samples.len(),
                meta.files.len()
            )));
        }
        Ok(SplitData {
            name: meta.split,
            cache_key: meta.cache_key,
            files: meta.files,
            skipped: meta.skipped.into_iter().map(|s| s.file).collect(),
            provenance: meta.provenance,
            classes: meta.classes,
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
    /// `split <name>`, or [`HoldOut::describe`].
    pub validation: String,
    /// What was held out when the validation samples are part of the training split.
    pub hold_out: Option<HoldOut>,
    /// Photo of every training sample (relative to the data folder).
    pub train_files: Vec<String>,
    /// The feature split the training samples come from, and its cache key.
    pub train_split: String,
    pub train_key: String,
}

fn missing_features(run: &Path) -> Error {
    let shards = std::fs::read_dir(store::features_dir(run)).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".shard-"))
    });
    if shards {
        return Error::Data(format!(
            "{} holds the shard files of a job array but no merged features; run `bottleneck merge --run {}` first",
            store::features_dir(run).display(),
            run.display()
        ));
    }
    Error::Data(format!(
        "no cached features in {}; run `bottleneck extract --data DIR --run {}` first",
        store::features_dir(run).display(),
        run.display()
    ))
}

/// The fraction held out for validation when the data folder has no splits (`DIR/<class>/`).
pub const ONE_SPLIT_HOLD_OUT: f64 = holdout::DEFAULT_FRACTION;

/// The feature file the head trains on: `train`, or `all` for the one-split layout `DIR/<class>/`
/// (whose held-out part is the validation).
pub fn training_split_path(run: &Path) -> std::path::PathBuf {
    let all = store::feature_path(run, "all");
    let train = store::feature_path(run, "train");
    if !train.is_file() && all.is_file() {
        all
    } else {
        train
    }
}

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
        let all = SplitData::open(&store::feature_path(run, "all"))?;
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
    let read =
        |name: &str| -> Result<SplitData> { SplitData::open(&store::feature_path(run, name)) };
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
// Over 80 lines: one check per way two splits can disagree, each with its own message.
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
    let (train_samples, val_samples, validation, hold_out, train_rows) = match val {
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
            let rows = (0..train.samples.len()).collect();
            (train.samples, val.samples, v, None, rows)
        }
        None => {
            let Some(fraction) = val_split else {
                return Err(Error::Data(
                    "no validation split; pass --val-split 0.2 to hold out 20% of train".into(),
                ));
            };
            let (t, v, rec, rows) = hold_out(&train, fraction, seed)?;
            (t, v, rec.describe(), Some(rec), rows)
        }
    };
    Ok(Dataset {
        train: train_samples,
        val: val_samples,
        classes,
        provenance: train.provenance,
        validation,
        hold_out,
        train_files: train_rows.iter().map(|&i| train.files[i].clone()).collect(),
        train_split: train.name,
        train_key: train.cache_key,
    })
}

/// Holds out `fraction` of `split` by the rule every stage shares ([`holdout::held_out`]):
/// `(train, validation, record, the split's rows kept for training)`.
fn hold_out(
    split: &SplitData,
    fraction: f64,
    seed: u64,
) -> Result<(Samples, Samples, HoldOut, Vec<usize>)> {
    let classes = &split.classes;
    let keys: Vec<(&str, usize)> =
        split
            .files
            .iter()
            .zip(split.samples.labels())
            .map(|(f, &l)| (f.as_str(), l as usize))
            .chain(split.skipped.iter().filter_map(|f| {
                holdout::label_of(f, &split.name, classes).map(|l| (f.as_str(), l))
            }))
            .collect();
    let flags = holdout::held_out(&keys, fraction, seed)?;
    let rows = split.samples.len();
    let (val_rows, train_rows): (Vec<usize>, Vec<usize>) = (0..rows).partition(|&i| flags[i]);
    if val_rows.is_empty() {
        return Err(Error::Data(format!(
            "holding out {fraction} of the {rows} samples of split {:?} leaves no validation samples; \
             use a larger fraction, or add a validation folder",
            split.name
        )));
    }
    let held = keys
        .iter()
        .zip(&flags)
        .filter(|(_, &f)| f)
        .map(|((rel, _), _)| *rel);
    let rec = holdout::record(&split.name, fraction, seed, held);
    Ok((
        split.samples.select(&train_rows),
        split.samples.select(&val_rows),
        rec,
        train_rows,
    ))
}
