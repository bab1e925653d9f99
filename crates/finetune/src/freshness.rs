//! Whether `RUN/finetune` is current for a fine-tuning request: the settings its checkpoint was
//! made with against the settings `cfg` would run with now (the same head, model, split tensor and
//! images, by content), and how many of the epochs asked for are done. Nothing is decoded.

use std::collections::BTreeSet;

use features::provenance::files_digest;
use runfs::Status;

use crate::checkpoint;
use crate::config::{FinetuneConfig, FinetunePaths, Settings};
use crate::error::Result;
use crate::setup::model_and_head;
use crate::splits;

/// The state of `RUN/finetune` for `cfg`.
pub fn status(cfg: &FinetuneConfig) -> Result<Status> {
    let paths = FinetunePaths::new(&cfg.run);
    if !runfs::occupied(&paths.dir)? {
        return Ok(Status::Absent);
    }
    if !paths.checkpoint.is_file() {
        return Ok(Status::Partial(format!(
            "{} has no checkpoint (interrupted in the first epoch)",
            paths.dir.display()
        )));
    }
    let there = match checkpoint::read_settings(&paths.checkpoint) {
        Ok((s, _)) => s,
        Err(e) => return Ok(Status::Other(vec![format!("unreadable checkpoint: {e}")])),
    };
    let asked = match asked_settings(cfg, &paths, &there) {
        Ok(s) => s,
        Err(e) => return Ok(Status::Other(vec![format!("finetune: {e}")])),
    };
    let mut d: Vec<String> = there
        .differences(&asked)
        .into_iter()
        .map(|x| format!("finetune {x} (there vs asked)"))
        .collect();
    let metrics = paths
        .metrics
        .is_file()
        .then(|| train::metrics::read_json(&paths.metrics))
        .transpose()?;
    let done = metrics.as_ref().map_or(0, |m| m.epochs.len());
    if done > cfg.epochs {
        d.push(format!(
            "finetune epochs: {done} done there vs {} asked",
            cfg.epochs
        ));
    }
    if !d.is_empty() {
        return Ok(Status::Other(d));
    }
    let stopped = metrics.as_ref().is_some_and(|m| m.stopped_early.is_some());
    Ok(
        if paths.model.is_file() && (done == cfg.epochs || stopped) {
            Status::Done
        } else {
            Status::Partial(format!(
                "{done} of {} epochs done: resuming from the checkpoint",
                cfg.epochs
            ))
        },
    )
}

/// The settings `cfg` would run with, computed from the files without decoding any image; the
/// images `there` could not decode are left out of the digests, as the run left them out.
fn asked_settings(
    cfg: &FinetuneConfig,
    paths: &FinetunePaths,
    there: &Settings,
) -> Result<Settings> {
    let (_, head_meta, model, split_at) = model_and_head(cfg, paths)?;
    let data = crate::setup::scan_data(cfg, &mut |_| {})?;
    let skipped: BTreeSet<String> = there.skipped.iter().cloned().collect();
    let chosen = splits::choose(&data, cfg, &head_meta)?;
    let digest = |split: &features::dataset::Split| -> Result<String> {
        Ok(files_digest(&split.items, &skipped)?)
    };
    Ok(Settings {
        // The name the model was given is not compared, its sha256 is.
        model: there.model.clone(),
        model_sha256: model.sha256.clone(),
        split_at,
        output_tensor: head_meta.features.output_tensor.clone(),
        image_size: head_meta.features.image_size,
        preprocess: head_meta.features.preprocess.clone(),
        resize: head_meta.features.resize.clone(),
        classes: data.classes.clone(),
        train_digest: digest(&chosen.train)?,
        val_digest: digest(&chosen.val)?,
        skipped: there.skipped.clone(),
        head_sha256: runfs::sha256_file(&paths.input_head)?,
        batch_size: cfg.batch_size,
        sgd: cfg.sgd.clone(),
        augment: cfg.augment.clone(),
        seed: cfg.seed,
        aug_cache: cfg.aug_cache,
        cache_precision: cfg.cache_precision,
        keep: cfg.keep,
        precision: cfg.precision,
        train_precision: accel::engine::select(cfg.device, cfg.engine, cfg.threads)?
            .train_precision(cfg.train_precision)?,
        calibrate: cfg.calibrate,
        // The int8 key depends on the calibration images; a changed image changes the digests.
        int8_key: there.int8_key.clone(),
    })
}
