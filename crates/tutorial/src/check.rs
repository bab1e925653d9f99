//! What each stage's outputs already in the run folder say: absent, finished and made from the
//! same inputs and settings, begun and not finished, or made from other inputs (with the
//! differences, read from the stages' own metadata).

use std::collections::BTreeSet;
use std::path::Path;

use features::extract::{self, ExtractConfig, Precision};
use features::preprocess::Resize;
use features::store;
use finetune::{FinetuneConfig, FinetunePaths};
use head::pipeline::HeadPaths;
use sha2::{Digest, Sha256};
use train::metrics::Metrics;

use crate::config::{Stage, TutorialConfig};
use crate::error::{Error, Result};
use crate::inputs::Prepared;

/// The state of one stage's outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Nothing there.
    Absent,
    /// Finished outputs of the same inputs and settings.
    Done,
    /// Begun and not finished (the reason): continue it.
    Partial(String),
    /// Outputs of other inputs or settings: `field: there vs asked`.
    Other(Vec<String>),
}

/// The extraction settings of the tutorial.
pub fn extract_config(cfg: &TutorialConfig, prep: &Prepared) -> ExtractConfig {
    ExtractConfig {
        data: prep.data_dir.clone(),
        model: prep.model.clone(),
        run: cfg.run.clone(),
        preprocess: Some(prep.preprocess),
        size: cfg.size,
        batch: 16,
        device: cfg.device,
        threads: cfg.threads,
        resize: Resize::Nearest,
        strict: false,
        hub: cfg.hub.clone(),
        precision: cfg.precision,
    }
}

fn occupied(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn cmp<T: PartialEq + std::fmt::Debug>(out: &mut Vec<String>, what: &str, there: T, asked: T) {
    if there != asked {
        out.push(format!("{what}: {there:?} there vs {asked:?} asked"));
    }
}

/// Reads a `metrics.json` (head, scratch and fine-tuning write the same format).
pub fn read_metrics(path: &Path) -> Result<Metrics> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::record(
            path,
            format!("not a metrics.json ({e}); delete the stage's folder to train it again"),
        )
    })
}

/// Files skipped (undecodable) when the features of `split` were extracted.
pub fn skipped_files(run: &Path, split: &str) -> BTreeSet<String> {
    store::read_meta(&store::feature_path(run, split))
        .map(|m| m.skipped.into_iter().map(|s| s.file).collect())
        .unwrap_or_default()
}

/// Stage 2a: every split's feature file against the data, model, preprocessing, size and precision.
pub fn extract(cfg: &TutorialConfig, prep: &Prepared) -> Result<Found> {
    let ecfg = extract_config(cfg, prep);
    let mut backbone = None;
    let (mut missing, mut present, mut diffs) = (Vec::new(), 0, Vec::new());
    for split in &prep.dataset.splits {
        let path = store::feature_path(&cfg.run, &split.name);
        if !path.is_file() {
            missing.push(split.name.clone());
            continue;
        }
        present += 1;
        let meta = match store::read_meta(&path) {
            Ok(m) => m,
            Err(e) => {
                diffs.push(format!("{}: unreadable ({e})", path.display()));
                continue;
            }
        };
        let before = diffs.len();
        let i = &prep.inputs;
        let d = &mut diffs;
        let tag = format!("features/{}", split.name);
        cmp(
            d,
            &format!("{tag} model sha256"),
            &meta.model_sha256,
            &i.model_sha256,
        );
        cmp(
            d,
            &format!("{tag} preprocessing"),
            &meta.preprocess,
            &i.preprocess,
        );
        cmp(
            d,
            &format!("{tag} image size"),
            meta.image_size,
            i.image_size,
        );
        cmp(
            d,
            &format!("{tag} precision"),
            &meta.precision,
            &i.precision,
        );
        cmp(d, &format!("{tag} resize"), meta.resize.as_str(), "nearest");
        cmp(d, &format!("{tag} classes"), &meta.classes, &i.classes);
        let there: BTreeSet<&str> = meta
            .files
            .iter()
            .chain(meta.skipped.iter().map(|s| &s.file))
            .map(String::as_str)
            .collect();
        let asked: BTreeSet<&str> = split.items.iter().map(|i| i.rel.as_str()).collect();
        if there != asked {
            d.push(format!(
                "{tag} images: {} there vs {} in {} ({} in common)",
                there.len(),
                asked.len(),
                prep.data_dir.display(),
                there.intersection(&asked).count()
            ));
        }
        if diffs.len() == before && cfg.precision == Precision::Fp32 {
            if backbone.is_none() {
                backbone = Some(extract::load_backbone(
                    &ecfg.model,
                    ecfg.preprocess,
                    &ecfg.hub,
                )?);
            }
            if let Some(b) = &backbone {
                let key = extract::cache_key(b, &ecfg, &prep.dataset.classes, split, "fp32")?;
                if key != meta.cache_key {
                    diffs.push(format!(
                        "{tag}: the image contents differ from those the features were extracted from"
                    ));
                }
            }
        }
    }
    Ok(if !diffs.is_empty() {
        Found::Other(diffs)
    } else if present == 0 {
        Found::Absent
    } else if !missing.is_empty() {
        Found::Partial(format!("no features yet for {}", missing.join(", ")))
    } else {
        Found::Done
    })
}

/// Stage 2b: `RUN/head` complete, and its metadata against the inputs and the epochs asked for.
pub fn train_head(cfg: &TutorialConfig, prep: &Prepared) -> Result<Found> {
    let paths = HeadPaths::new(&cfg.run);
    if !occupied(&paths.dir)? {
        return Ok(Found::Absent);
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
        return Ok(Found::Partial(format!(
            "{} is incomplete (interrupted)",
            paths.dir.display()
        )));
    }
    let meta = match head::read_meta(&paths.weights) {
        Ok(m) => m,
        Err(e) => return Ok(Found::Other(vec![format!("unreadable head: {e}")])),
    };
    let i = &prep.inputs;
    let mut d = Vec::new();
    cmp(
        &mut d,
        "head model sha256",
        &meta.model_sha256,
        &i.model_sha256,
    );
    cmp(
        &mut d,
        "head preprocessing",
        &meta.preprocess,
        &i.preprocess,
    );
    cmp(&mut d, "head image size", meta.image_size, i.image_size);
    cmp(&mut d, "head precision", &meta.precision, &i.precision);
    cmp(&mut d, "head classes", &meta.classes, &i.classes);
    cmp(&mut d, "head epochs", meta.epochs, cfg.head_epochs);
    Ok(if d.is_empty() {
        Found::Done
    } else {
        Found::Other(d)
    })
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Stage 3: the checkpoint's settings against the inputs, the head and the settings asked for;
/// finished when `model.onnx` is written and the epochs asked for are done.
pub fn finetune(cfg: &TutorialConfig, prep: &Prepared) -> Result<Found> {
    let paths = FinetunePaths::new(&cfg.run);
    if !occupied(&paths.dir)? {
        return Ok(Found::Absent);
    }
    if !paths.checkpoint.is_file() {
        return Ok(Found::Partial(format!(
            "{} has no checkpoint (interrupted in the first epoch)",
            paths.dir.display()
        )));
    }
    let (s, _) = match finetune::checkpoint::read_settings(&paths.checkpoint) {
        Ok(x) => x,
        Err(e) => return Ok(Found::Other(vec![format!("unreadable checkpoint: {e}")])),
    };
    let i = &prep.inputs;
    let mut d = Vec::new();
    cmp(
        &mut d,
        "finetune model sha256",
        &s.model_sha256,
        &i.model_sha256,
    );
    cmp(
        &mut d,
        "finetune preprocessing",
        &s.preprocess,
        &i.preprocess,
    );
    cmp(&mut d, "finetune image size", s.image_size, i.image_size);
    cmp(&mut d, "finetune classes", &s.classes, &i.classes);
    cmp(
        &mut d,
        "finetune precision",
        s.precision.name(),
        cfg.finetune_precision.name(),
    );
    cmp(
        &mut d,
        "finetune learning rate",
        s.sgd.learning_rate,
        cfg.finetune_lr,
    );
    cmp(&mut d, "finetune aug-cache", s.aug_cache, cfg.aug_cache);
    let tut = FinetuneConfig::new(&cfg.run, &prep.data_dir);
    cmp(
        &mut d,
        "finetune momentum",
        s.sgd.momentum,
        tut.sgd.momentum,
    );
    cmp(
        &mut d,
        "finetune nesterov",
        s.sgd.nesterov,
        tut.sgd.nesterov,
    );
    cmp(
        &mut d,
        "finetune weight decay",
        s.sgd.weight_decay,
        tut.sgd.weight_decay,
    );
    cmp(&mut d, "finetune batch", s.batch_size, tut.batch_size);
    cmp(&mut d, "finetune augmentation", &s.augment, &tut.augment);
    cmp(&mut d, "finetune seed", s.seed, tut.seed);
    cmp(&mut d, "finetune keep", s.keep, tut.keep);
    cmp(
        &mut d,
        "finetune cache precision",
        s.cache_precision,
        tut.cache_precision,
    );
    if let Some(split_at) = &cfg.split_at {
        cmp(&mut d, "finetune split-at", &s.split_at, split_at);
    }
    for (split, there) in [("train", &s.train_digest), ("validation", &s.val_digest)] {
        let skipped = skipped_files(&cfg.run, split);
        if prep.split_digest(split, &skipped).as_ref() != Some(there) {
            d.push(format!(
                "finetune {split} images: other images than those in {}",
                prep.data_dir.display()
            ));
        }
    }
    let head = HeadPaths::new(&cfg.run).weights;
    if head.is_file() && sha256_file(&head)? != s.head_sha256 {
        d.push(format!(
            "finetune started from another head than {}",
            head.display()
        ));
    }
    let metrics = paths
        .metrics
        .is_file()
        .then(|| read_metrics(&paths.metrics))
        .transpose()?;
    let done = metrics.as_ref().map_or(0, |m| m.epochs.len());
    if done > cfg.finetune_epochs {
        d.push(format!(
            "finetune epochs: {done} done there vs {} asked",
            cfg.finetune_epochs
        ));
    }
    if !d.is_empty() {
        return Ok(Found::Other(d));
    }
    let stopped = metrics.as_ref().is_some_and(|m| m.stopped_early.is_some());
    Ok(
        if paths.model.is_file() && (done == cfg.finetune_epochs || stopped) {
            Found::Done
        } else {
            Found::Partial(format!(
                "{done} of {} epochs done: resuming from the checkpoint",
                cfg.finetune_epochs
            ))
        },
    )
}

/// The outputs of `stage`, checked.
pub fn stage(stage: Stage, cfg: &TutorialConfig, prep: &Prepared) -> Result<Found> {
    match stage {
        Stage::Scratch => crate::stage1::check(cfg, prep),
        Stage::Extract => extract(cfg, prep),
        Stage::TrainHead => train_head(cfg, prep),
        Stage::Finetune => finetune(cfg, prep),
    }
}
