//! Whether `RUN/finetune` is current for a fine-tuning request: the settings its checkpoint was
//! made with against the settings `cfg` would run with now (the same head, model, split tensor and
//! images, by content), and how many of the epochs asked for are done. Nothing is decoded.

use std::collections::BTreeSet;

use features::provenance::files_digest;
use runfs::Status;
use train::stage_dir::Compared;

use crate::checkpoint;
use crate::config::{FinetuneConfig, FinetunePaths, Options, Settings};
use crate::error::Result;
use crate::setup::model_and_head;
use crate::splits;

/// The state of `RUN/finetune` for `cfg`.
pub fn status(cfg: &FinetuneConfig) -> Result<Status> {
    let paths = FinetunePaths::new(&cfg.run);
    paths.stage.status(cfg.epochs, || Ok(compare(cfg, &paths)))
}

/// The checkpoint's settings against those `cfg` would run with now.
fn compare(cfg: &FinetuneConfig, paths: &FinetunePaths) -> Compared {
    let there = match checkpoint::read_settings(&paths.stage.checkpoint) {
        Ok((s, _)) => s,
        Err(e) => return Compared::differing(format!("unreadable checkpoint: {e}")),
    };
    let asked = match asked_settings(cfg, paths, &there) {
        Ok(s) => s,
        Err(e) => return Compared::differing(format!("finetune: {e}")),
    };
    Compared {
        differences: there
            .differences(&asked)
            .into_iter()
            .map(|x| format!("finetune {x} (there vs asked)"))
            .collect(),
        // Written only when the run finishes.
        outputs_written: paths.model.is_file(),
        epochs_asked_then: None,
    }
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
        augment: cfg.augment.clone(),
        seed: cfg.seed,
        options: Options {
            train_precision: accel::engine::select(cfg.device, cfg.engine, cfg.threads)?
                .train_precision(cfg.options.train_precision)?,
            ..cfg.options.clone()
        },
        // The int8 key depends on the calibration images; a changed image changes the digests.
        int8_key: there.int8_key.clone(),
    })
}
