//! Stage 1 (the small convnet from scratch): checking `RUN/scratch` against the inputs and running
//! `scratch::train` with the tutorial's settings (resuming from its checkpoint when interrupted).

use std::path::Path;

use scratch::ScratchPaths;

use crate::check::{self, Found};
use crate::config::TutorialConfig;
use crate::error::{Error, Result};
use crate::inputs::{self, Prepared};

/// The `training` facts of a scratch model or checkpoint file that the tutorial compares.
#[derive(Debug, serde::Deserialize)]
struct Training {
    settings: scratch::pipeline::Settings,
    epochs: usize,
    train_images: usize,
    val_images: usize,
}

fn occupied(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some())
}

/// `RUN/scratch`: finished when the curves are drawn and the epochs asked for are done; its
/// checkpoint's classes, image size and image counts must match the data.
pub fn check(cfg: &TutorialConfig, prep: &Prepared) -> Result<Found> {
    let paths = ScratchPaths::new(&cfg.run);
    if !occupied(&paths.dir) {
        return Ok(Found::Absent);
    }
    if !paths.checkpoint.is_file() {
        return Ok(Found::Partial(format!(
            "{} has no checkpoint (interrupted in the first epoch)",
            paths.dir.display()
        )));
    }
    let (_, meta) = match scratch::model::load(&paths.checkpoint) {
        Ok(x) => x,
        Err(e) => return Ok(Found::Other(vec![format!("unreadable checkpoint: {e}")])),
    };
    let training: Option<Training> = serde_json::from_value(meta.training.clone()).ok();
    let i = &prep.inputs;
    let mut d = Vec::new();
    if meta.classes != i.classes {
        d.push(format!(
            "scratch classes: {:?} there vs {:?} asked",
            meta.classes, i.classes
        ));
    }
    if meta.image_size != cfg.scratch_size as usize {
        d.push(format!(
            "scratch image size: {} there vs {} asked",
            meta.image_size, cfg.scratch_size
        ));
    }
    let count = |split: &str| i.images.get(split).copied().unwrap_or(0);
    let skipped = |split: &str| check::skipped_files(&cfg.run, split).len();
    match &training {
        Some(t) => {
            for (split, n) in [("train", t.train_images), ("validation", t.val_images)] {
                if n > count(split) || n + skipped(split) < count(split) {
                    d.push(format!(
                        "scratch {split} images: {n} there vs {} in {}",
                        count(split),
                        prep.data_dir.display()
                    ));
                }
            }
        }
        None => d.push("scratch checkpoint without training facts".into()),
    }
    if let Some(t) = &training {
        let asked = scratch::pipeline::Settings::of(&cfg.scratch_config(&prep.data_dir));
        d.extend(
            inputs::differences(&t.settings, &asked)
                .into_iter()
                .map(|x| format!("scratch {x} (there vs asked)")),
        );
    }
    let metrics = paths
        .metrics
        .is_file()
        .then(|| check::read_metrics(&paths.metrics))
        .transpose()?;
    let done = metrics.as_ref().map_or(0, |m| m.epochs.len());
    if done > cfg.scratch_epochs {
        d.push(format!(
            "scratch epochs: {done} done there vs {} asked",
            cfg.scratch_epochs
        ));
    }
    if !d.is_empty() {
        return Ok(Found::Other(d));
    }
    let stopped = metrics.as_ref().is_some_and(|m| m.stopped_early.is_some());
    let asked = training.as_ref().map_or(0, |t| t.epochs);
    let finished = paths.curves_png.is_file()
        && paths.confusion.is_file()
        && (done == cfg.scratch_epochs || stopped)
        && (asked == cfg.scratch_epochs || stopped);
    Ok(if finished {
        Found::Done
    } else {
        Found::Partial(format!(
            "{done} of {} epochs done: resuming from the checkpoint",
            cfg.scratch_epochs
        ))
    })
}

/// Trains stage 1 (resuming when `resume`, starting over when `force`).
pub fn run(
    cfg: &TutorialConfig,
    prep: &Prepared,
    resume: bool,
    force: bool,
    on_event: &mut dyn FnMut(scratch::Event),
) -> Result<scratch::ScratchReport> {
    let mut scfg = cfg.scratch_config(&prep.data_dir);
    scfg.resume = resume;
    scfg.force = force && !resume;
    let report = scratch::train(&scfg, on_event).map_err(|e| Error::Scratch(e.to_string()))?;
    if !report.finished {
        return Err(Error::Scratch(format!(
            "stopped after epoch {} of {}; run the tutorial again to continue",
            report.epochs_done, report.epochs
        )));
    }
    Ok(report)
}
