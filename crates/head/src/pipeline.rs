//! `train-head` end to end: refuse to clobber an existing `RUN/head`, load the features, train,
//! and write `head.safetensors`, `metrics.json`, `confusion.json`, `curves.png` and `curves.svg`.

use std::path::{Path, PathBuf};

use features::provenance::differences;
use runfs::Status;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::headfile::{self, HeadMeta, FORMAT_VERSION};
use crate::mlp::{evaluate, TrainConfig};
use crate::oof::{self, Oof, OofMeta};
use crate::probe::ProbeSummary;
use crate::recipe::{fit_head, Recipe};
use crate::source::load_run;
use crate::source::Dataset;
use train::metrics::{write_json, ConfusionMatrix, Keep, Metrics};
use train::plot::write_curves;
use train::stage::StageEvent;

/// What `bottleneck train-head` asks for.
#[derive(Clone, Debug)]
pub struct TrainHeadOptions {
    /// The run folder (`RUN/features` in, `RUN/head` out).
    pub run: PathBuf,
    pub config: TrainConfig,
    /// Hold out this stratified fraction of train instead of using a validation split.
    pub val_split: Option<f64>,
    /// Overwrite an existing `RUN/head`.
    pub force: bool,
}

/// The files of a trained head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeadPaths {
    pub dir: PathBuf,
    pub weights: PathBuf,
    pub metrics: PathBuf,
    pub confusion: PathBuf,
    pub curves_png: PathBuf,
    pub curves_svg: PathBuf,
    /// The probe's out-of-fold probabilities on train ([`crate::oof`]).
    pub oof: PathBuf,
}

impl HeadPaths {
    /// The files under `RUN/head`.
    pub fn new(run: &Path) -> Self {
        let dir = run.join("head");
        HeadPaths {
            weights: dir.join("head.safetensors"),
            metrics: dir.join("metrics.json"),
            confusion: dir.join("confusion.json"),
            curves_png: dir.join("curves.png"),
            curves_svg: dir.join("curves.svg"),
            oof: dir.join(oof::FILE_NAME),
            dir,
        }
    }
}

/// The outcome of [`train_head`].
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub paths: HeadPaths,
    pub metrics: Metrics,
    /// On the validation samples, with the kept weights.
    pub confusion: ConfusionMatrix,
    pub meta: HeadMeta,
}

/// Writes the probe's out-of-fold probabilities to `out` (`RUN/head/oof.safetensors`), or removes an older
/// file when this head has none (the 2016 recipe), so that no stale predictions stay beside it.
fn write_oof(
    out: &Path,
    data: &Dataset,
    oof: Option<&Oof>,
    probe: Option<&ProbeSummary>,
) -> Result<()> {
    let (Some(oof), Some(probe)) = (oof, probe) else {
        return match std::fs::remove_file(out) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(out, e)),
            _ => Ok(()),
        };
    };
    let labels: Vec<u32> = oof.rows.iter().map(|&i| data.train.labels()[i]).collect();
    let meta = OofMeta {
        format_version: oof::FORMAT_VERSION,
        classes: data.classes.clone(),
        split: data.train_split.clone(),
        files: oof
            .rows
            .iter()
            .map(|&i| data.train_files[i].clone())
            .collect(),
        features_key: data.train_key.clone(),
        folds: probe.folds,
        all_rows: oof.rows.len() == data.train.len(),
    };
    oof::save(out, oof, &labels, &meta)
}

/// Out-of-fold probabilities for a run whose head has none (the 2016 recipe): the calibrated
/// probe (default settings) cross-validated on the head's training photos — the same validation
/// photos held out — written to `out`. Nothing of `RUN/head` changes.
pub fn out_of_fold(run: &Path, out: &Path, on_event: &mut dyn FnMut(StageEvent<'_>)) -> Result<()> {
    let head = headfile::read_meta(&HeadPaths::new(run).weights)?;
    let val_split = head.hold_out.as_ref().map(|h| h.fraction);
    let seed = head
        .hold_out
        .as_ref()
        .map_or(features::holdout::DEFAULT_SEED, |h| h.seed);
    let data = load_run(run, val_split, seed)?;
    let probe = crate::probe::fit(
        &data.train,
        data.classes.len(),
        &crate::probe::ProbeConfig::default(),
        on_event,
    )?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_oof(out, &data, Some(&probe.oof), Some(&probe.summary))
}

/// Fails when `RUN/head` already holds files and `force` is off.
pub fn check_output(paths: &HeadPaths, force: bool) -> Result<()> {
    let occupied = runfs::occupied(&paths.dir)?;
    if occupied && !force {
        return Err(Error::Exists {
            path: paths.dir.clone(),
        });
    }
    Ok(())
}

/// The state of `RUN/head` for training with `config` on the run's current features: finished
/// outputs of these features and settings, interrupted ones, or other ones (with the differences).
pub fn status(run: &Path, config: &TrainConfig) -> Result<Status> {
    let paths = HeadPaths::new(run);
    if !runfs::occupied(&paths.dir)? {
        return Ok(Status::Absent);
    }
    let complete = [
        &paths.weights,
        &paths.metrics,
        &paths.confusion,
        &paths.curves_png,
    ]
    .iter()
    .all(|p| p.is_file());
    if !complete {
        return Ok(Status::Partial(format!(
            "{} is incomplete (interrupted)",
            paths.dir.display()
        )));
    }
    let meta = match headfile::read_meta(&paths.weights) {
        Ok(m) => m,
        Err(e) => return Ok(Status::Other(vec![format!("unreadable head: {e}")])),
    };
    let mut d = Vec::new();
    match features::store::read_meta(&crate::source::training_split_path(run)) {
        Ok(f) => {
            d.extend(
                meta.features
                    .diff(&f.provenance)
                    .into_iter()
                    .map(|x| format!("head {x} (there vs the features)")),
            );
            if f.classes != meta.classes {
                d.push(format!(
                    "head classes: {:?} there vs {:?} in the features",
                    meta.classes, f.classes
                ));
            }
        }
        Err(e) => d.push(format!("no features to compare the head with: {e}")),
    }
    let there = meta.train_config();
    d.extend(
        differences(&there.relevant(), &config.relevant())
            .into_iter()
            .map(|x| format!("head {x} (there vs asked)")),
    );
    Ok(if d.is_empty() {
        Status::Done
    } else {
        Status::Other(d)
    })
}

/// Trains the head of `opts.run` and writes every output file.
// Over 80 lines: the stage's steps share the lock, the opened features and the chosen recipe.
pub fn train_head(
    opts: &TrainHeadOptions,
    on_event: &mut dyn FnMut(StageEvent<'_>),
) -> Result<TrainReport> {
    let paths = HeadPaths::new(&opts.run);
    let _lock = runfs::RunLock::acquire(&opts.run, "train-head")?;
    check_output(&paths, opts.force)?;
    opts.config.validate()?;
    let data = load_run(&opts.run, opts.val_split, features::holdout::DEFAULT_SEED)?;
    let cfg = &opts.config;
    let trained = fit_head(&data.train, &data.val, data.classes.len(), cfg, on_event)?;
    let keep = match cfg.recipe {
        Recipe::Probe => Keep::Last,
        Recipe::Keras2016 => cfg.keep,
    };
    let mut metrics = Metrics::summarize(
        trained.history,
        keep,
        trained.diverged,
        data.train.len(),
        data.val.len(),
        data.validation.clone(),
    )?;
    let eval = evaluate(&trained.model, &data.val)?;
    metrics.kept_val_ece = Some(eval.ece);
    let confusion = ConfusionMatrix::new(&data.classes, data.val.labels(), &eval.predictions)?;
    let p = &data.provenance;
    let meta = HeadMeta {
        format_version: FORMAT_VERSION,
        classes: data.classes.clone(),
        feature_shape: data.train.sample_shape().to_vec(),
        hidden: trained.model.config().hidden,
        dropout: trained.model.config().dropout,
        features: p.clone(),
        optimizer: cfg.optimizer.clone(),
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        keep: cfg.keep,
        epochs_run: metrics.epochs.len(),
        kept_epoch: trained.kept_epoch,
        val_loss: eval.loss,
        val_accuracy: eval.accuracy,
        validation: data.validation.clone(),
        hold_out: data.hold_out.clone(),
        classifier_sha256: None,
        recipe: cfg.recipe,
        probe_config: cfg.probe.clone(),
        probe: trained.probe,
    };
    std::fs::create_dir_all(&paths.dir).map_err(|e| Error::io(&paths.dir, e))?;
    headfile::save(&paths.weights, &trained.model, &meta)?;
    write_oof(&paths.oof, &data, trained.oof.as_ref(), meta.probe.as_ref())?;
    write_json(&paths.metrics, &metrics)?;
    write_json(&paths.confusion, &confusion)?;
    let title = match cfg.recipe {
        Recipe::Keras2016 => format!(
            "{} head on {} features ({}, lr {})",
            data.classes.join("/"),
            p.output_tensor,
            cfg.optimizer.kind,
            cfg.optimizer.learning_rate
        ),
        Recipe::Probe => format!(
            "{} linear probe on {} features",
            data.classes.join("/"),
            p.output_tensor
        ),
    };
    write_curves(
        &metrics.epochs,
        &title,
        &paths.curves_png,
        &paths.curves_svg,
    )?;
    Ok(TrainReport {
        paths,
        metrics,
        confusion,
        meta,
    })
}
