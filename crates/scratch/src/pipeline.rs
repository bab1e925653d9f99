//! `bottleneck scratch` end to end: scan and decode the data once, train epoch by epoch
//! (augmented, shuffled batches; RMSprop by default), validate after every epoch, checkpoint,
//! and write the model, metrics, confusion matrix and learning curves.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use features::augment::{AugmentParams, Augmenter};
use features::dataset::{self, Dataset};
use features::preprocess::Resize;
use head::metrics::{write_json, ConfusionMatrix, EpochMetrics, Keep, Metrics};
use head::optim::{Optim, OptimizerConfig};
use head::plot::write_curves;
use head::schedule::LrSchedule;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::{ScratchConfig, ScratchPaths};
use crate::data::{self, ImageSet};
use crate::ema::{self, WeightAverage};
use crate::error::{Error, Result};
use crate::model::{self, ModelMeta};
use crate::net::{self, Arch, Params};

/// Progress reports (shared with the other training stages).
pub use head::stage::StageEvent as Event;

/// The settings a checkpoint continues with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub train_split: String,
    pub val_split: String,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// Absent in checkpoints written before schedules existed: constant.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Resize filter (absent in checkpoints of earlier versions: nearest).
    #[serde(default = "nearest")]
    pub resize: Resize,
    pub augment: AugmentParams,
    pub seed: u64,
    pub keep: Keep,
    /// Momentum of the weight average that is validated and saved (absent in checkpoints of
    /// earlier versions: none).
    #[serde(default)]
    pub ema: Option<f64>,
}

impl Settings {
    /// The settings `cfg` trains with.
    pub fn of(cfg: &ScratchConfig) -> Self {
        Settings {
            train_split: cfg.train_split.clone(),
            val_split: cfg.val_split.clone(),
            batch_size: cfg.batch_size,
            optimizer: cfg.optimizer.clone(),
            schedule: cfg.schedule,
            resize: cfg.resize,
            augment: cfg.augment.clone(),
            seed: cfg.seed,
            keep: cfg.keep,
            ema: cfg.ema,
        }
    }
}

fn nearest() -> Resize {
    Resize::Nearest
}

/// What the `training` metadata of the model and checkpoint files holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Training {
    settings: Settings,
    epochs: usize,
    history: Vec<EpochMetrics>,
    kept_epoch: usize,
    train_images: usize,
    val_images: usize,
    /// Optimizer steps taken; its moving averages are the checkpoint's `optimizer.*` tensors
    /// (absent from checkpoints of earlier versions, whose resume restarts them from zero).
    #[serde(default)]
    optimizer_steps: Option<u64>,
}

/// Prefix of the optimizer-state tensors in a checkpoint: `optimizer.<var>.<slot>`.
const OPTIMIZER_PREFIX: &str = "optimizer.";

fn optimizer_tensors(optim: &Optim) -> model::Extra {
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
fn restore_optimizer(optim: &mut Optim, path: &Path, steps: Option<u64>) -> Result<bool> {
    let Some(steps) = steps else {
        return Ok(false);
    };
    let mut slots: Vec<[Vec<f32>; 2]> = vec![[Vec::new(), Vec::new()]; optim.vars().len()];
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

/// The outcome of [`train`].
#[derive(Clone, Debug, Serialize)]
pub struct ScratchReport {
    pub paths: ScratchPaths,
    pub classes: Vec<String>,
    pub architecture: String,
    pub arch: Arch,
    pub parameters: usize,
    pub train_images: usize,
    pub val_images: usize,
    pub skipped: usize,
    /// Epochs completed in total (including resumed ones).
    pub epochs_done: usize,
    pub epochs: usize,
    /// False when `stop_after` paused the run (continue with `resume`).
    pub finished: bool,
    pub metrics: Metrics,
    /// On the validation split, with the kept weights.
    pub confusion: ConfusionMatrix,
    /// Mean wall time of the epochs of this call (training + validation).
    pub mean_epoch_seconds: f64,
    /// Seconds spent decoding and resizing the images.
    pub load_seconds: f64,
    pub settings: Settings,
}

/// Validation numbers of a set of weights.
#[derive(Clone, Debug)]
pub struct Eval {
    pub loss: f64,
    pub accuracy: f64,
    pub predictions: Vec<u32>,
}

/// Runs `set` (not augmented) through the network in batches of `batch` images.
pub fn evaluate(arch: &Arch, params: &Params, set: &ImageSet, batch: usize) -> Result<Eval> {
    let mut loss_sum = 0.0;
    let mut correct = 0;
    let mut predictions = Vec::with_capacity(set.len());
    let idx: Vec<usize> = (0..set.len()).collect();
    let mut x = Vec::new();
    for chunk in idx.chunks(batch.max(1)) {
        x.resize(chunk.len() * set.image_len(), 0.0);
        data::write_batch(set, chunk, None, &mut x)?;
        let trace = net::forward::<rand_chacha::ChaCha8Rng>(arch, params, &x, None);
        let labels: Vec<u32> = chunk.iter().map(|&i| set.labels[i]).collect();
        let out = net::loss(&trace.logits, &labels, arch.outputs);
        loss_sum += out.loss_sum;
        correct += out.correct;
        predictions.extend(out.predictions);
    }
    let n = set.len().max(1) as f64;
    Ok(Eval {
        loss: loss_sum / n,
        accuracy: correct as f64 / n,
        predictions,
    })
}

fn load_data(
    cfg: &ScratchConfig,
    on_event: &mut dyn FnMut(Event),
) -> Result<(Dataset, ImageSet, ImageSet)> {
    let ds = dataset::scan(&cfg.data)?;
    let names: Vec<&str> = ds.splits.iter().map(|s| s.name.as_str()).collect();
    let find = |name: &str, flag: &str| {
        ds.split(name).ok_or_else(|| {
            Error::Data(format!(
                "{}: no '{name}' split (found: {}); the data must be laid out as {}/<split>/<class>/*.jpg with a '{name}' folder, or pass {flag}",
                cfg.data.display(),
                names.join(", "),
                cfg.data.display()
            ))
        })
    };
    let train_split = find(&cfg.train_split, "--train-split")?.clone();
    let val_split = find(&cfg.val_split, "--val-split")?.clone();
    if ds.classes.len() < 2 {
        return Err(Error::Data(format!(
            "{}: found {} class folder(s) ({}); training needs at least two",
            cfg.data.display(),
            ds.classes.len(),
            ds.classes.join(", ")
        )));
    }
    let mut sets = Vec::new();
    for split in [&train_split, &val_split] {
        if split.items.is_empty() {
            return Err(Error::Data(format!(
                "{}: split '{}' holds no images",
                cfg.data.display(),
                split.name
            )));
        }
        on_event(Event::PhaseStart {
            name: format!("decode {}", split.name),
            total: split.items.len(),
        });
        let set = data::load_split(split, cfg.size, cfg.resize, &mut |done| {
            on_event(Event::Progress { done })
        })?;
        on_event(Event::PhaseEnd);
        for (file, reason) in &set.skipped {
            on_event(Event::Skipped {
                split: &split.name,
                file,
                reason,
            });
        }
        sets.push(set);
    }
    let val = sets
        .pop()
        .ok_or_else(|| Error::Data("no validation images".into()))?;
    let train = sets
        .pop()
        .ok_or_else(|| Error::Data("no training images".into()))?;
    let mut seen = vec![false; ds.classes.len()];
    for &l in &train.labels {
        seen[l as usize] = true;
    }
    if let Some(c) = seen.iter().position(|s| !s) {
        return Err(Error::Data(format!(
            "{}: split '{}' has no readable image of class '{}'; every class needs training images",
            cfg.data.display(),
            train.name,
            ds.classes[c]
        )));
    }
    Ok((ds, train, val))
}

fn meta(arch: &Arch, classes: &[String], training: &Training) -> Result<ModelMeta> {
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
fn read_checkpoint(path: &Path) -> Result<(Params, ModelMeta, Training)> {
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

/// Trains the network described by `cfg` and writes every output file under `RUN/scratch/`.
pub fn train(cfg: &ScratchConfig, on_event: &mut dyn FnMut(Event)) -> Result<ScratchReport> {
    cfg.validate()?;
    let paths = ScratchPaths::new(&cfg.run);
    // Check the output folder before the (slow) decoding, but only create it afterwards.
    let resumed = if cfg.resume {
        if !paths.checkpoint.is_file() {
            return Err(Error::Invalid(format!(
                "--resume: no checkpoint at {}; start a new run without --resume",
                paths.checkpoint.display()
            )));
        }
        Some(read_checkpoint(&paths.checkpoint)?)
    } else {
        None
    };
    if !cfg.resume && !cfg.force && paths.dir.is_dir() {
        paths.prepare(false, false)?;
    }
    let mut settings = Settings::of(cfg);
    if let Some((_, _, t)) = &resumed {
        if t.settings != settings {
            on_event(Event::Info(
                "--resume: continuing with the checkpoint's settings (split names, batch, optimizer, schedule, augmentation, seed, keep)".into(),
            ));
            settings = t.settings.clone();
        }
    }
    let mut cfg = cfg.clone();
    cfg.train_split = settings.train_split.clone();
    cfg.val_split = settings.val_split.clone();
    cfg.batch_size = settings.batch_size;
    cfg.optimizer = settings.optimizer.clone();
    cfg.schedule = settings.schedule;
    cfg.resize = settings.resize;
    cfg.augment = settings.augment.clone();
    cfg.seed = settings.seed;
    cfg.keep = settings.keep;
    cfg.ema = settings.ema;
    if let Some((_, m, _)) = &resumed {
        cfg.size = m.image_size as u32;
        cfg.filters = m.arch.filters.clone();
        cfg.hidden = m.arch.hidden;
        cfg.dropout = m.arch.dropout;
    }
    let cfg = &cfg;

    let t_load = Instant::now();
    let (ds, train, val) = load_data(cfg, on_event)?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    let classes = ds.classes.clone();
    let arch = Arch {
        size: cfg.size as usize,
        filters: cfg.filters.clone(),
        hidden: cfg.hidden,
        dropout: cfg.dropout,
        outputs: Arch::outputs_for(classes.len()),
    };
    arch.validate()?;
    paths.prepare(cfg.force, cfg.resume)?;

    let mut resumed_steps = None;
    let (mut params, mut history) = match resumed {
        Some((p, m, t)) => {
            if m.classes != classes || m.arch != arch {
                return Err(Error::ModelFile {
                    path: paths.checkpoint.clone(),
                    reason: format!(
                        "the checkpoint was trained on classes {:?} with {}; the data has {:?}: start over with --force",
                        m.classes, m.architecture, classes
                    ),
                });
            }
            resumed_steps = t.optimizer_steps;
            (p, t.history)
        }
        None => {
            let mut rng = data::image_rng(cfg.seed, data::PURPOSE_INIT, 0, 0);
            (Params::init(&arch, &mut rng), Vec::new())
        }
    };
    let parameters: usize = params.tensors.iter().map(Vec::len).sum();
    on_event(Event::Info(format!(
        "{} training and {} validation images of {} classes ({}), {} parameters: {}",
        train.len(),
        val.len(),
        classes.len(),
        classes.join(", "),
        parameters,
        arch.describe()
    )));

    let shapes = arch.param_shapes();
    let vars: Vec<Var> = params
        .tensors
        .iter()
        .zip(&shapes)
        .map(|(t, (_, s))| Var::from_vec(t.clone(), s.as_slice(), &Device::Cpu))
        .collect::<candle_core::Result<_>>()?;
    let mut optim = Optim::new(vars, cfg.optimizer.clone())?;
    if !history.is_empty() {
        let restored = restore_optimizer(&mut optim, &paths.checkpoint, resumed_steps)?;
        on_event(Event::Info(format!(
            "resuming after epoch {} of {} ({})",
            history.len(),
            cfg.epochs,
            if restored {
                "optimizer state restored"
            } else {
                "a checkpoint without optimizer state: its moving averages restart from zero"
            }
        )));
    }
    let mut average = match cfg.ema {
        None => None,
        Some(m) if history.is_empty() => Some(WeightAverage::new(m, &params)),
        Some(m) => {
            let extra = model::load_extra(&paths.checkpoint, ema::PREFIX)?;
            Some(
                WeightAverage::from_extra(m, extra, &params).map_err(|e| Error::ModelFile {
                    path: paths.checkpoint.clone(),
                    reason: format!("{e}; start over with --force"),
                })?,
            )
        }
    };
    let augmenter = Augmenter::new(cfg.augment.clone(), cfg.seed)?;

    // Best weights so far (for keep = best).
    let mut best: Option<(f64, usize, Params)> = None;
    if cfg.keep == Keep::Best && !history.is_empty() && paths.model.is_file() {
        let (p, m) = model::load(&paths.model)?;
        let t: Training = serde_json::from_value(m.training).map_err(|e| Error::ModelFile {
            path: paths.model.clone(),
            reason: format!("training metadata unreadable: {e}"),
        })?;
        let loss = history
            .iter()
            .find(|e| e.epoch == t.kept_epoch)
            .map_or(f64::INFINITY, |e| e.val_loss);
        best = Some((loss, t.kept_epoch, p));
    }

    let first = history.len() + 1;
    let last = match cfg.stop_after {
        Some(k) => (first + k - 1).min(cfg.epochs),
        None => cfg.epochs,
    };
    let n = train.len();
    let per = train.image_len();
    let mut x = vec![0f32; cfg.batch_size * per];
    let mut stopped_early = None;
    let mut epoch_seconds = Vec::new();
    for epoch in first..=last {
        let t0 = Instant::now();
        optim.set_learning_rate(
            cfg.schedule
                .rate(cfg.optimizer.learning_rate, epoch, cfg.epochs),
        );
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut data::image_rng(
            cfg.seed,
            data::PURPOSE_SHUFFLE,
            epoch as u64,
            0,
        ));
        on_event(Event::PhaseStart {
            name: format!("epoch {epoch}/{}", cfg.epochs),
            total: n,
        });
        let (mut loss_sum, mut correct, mut done) = (0.0f64, 0usize, 0usize);
        for (b, batch) in order.chunks(cfg.batch_size).enumerate() {
            let xb = &mut x[..batch.len() * per];
            data::write_batch(
                &train,
                batch,
                Some((&augmenter, cfg.seed, epoch as u64)),
                xb,
            )?;
            let mut drop_rng =
                data::image_rng(cfg.seed, data::PURPOSE_DROPOUT, epoch as u64, b as u64);
            let trace = net::forward(&arch, &params, xb, Some(&mut drop_rng));
            let labels: Vec<u32> = batch.iter().map(|&i| train.labels[i]).collect();
            let out = net::loss(&trace.logits, &labels, arch.outputs);
            if !out.loss_sum.is_finite() {
                stopped_early = Some(format!(
                    "the training loss became {} in epoch {epoch}; lower --lr",
                    out.loss_sum
                ));
                break;
            }
            loss_sum += out.loss_sum;
            correct += out.correct;
            let grads = net::backward(&arch, &params, xb, &trace, &out.dlogits);
            let tensors: Vec<Tensor> = grads
                .tensors
                .into_iter()
                .zip(&shapes)
                .map(|(g, (_, s))| Tensor::from_vec(g, s.as_slice(), &Device::Cpu))
                .collect::<candle_core::Result<_>>()?;
            optim.step_all(&tensors)?;
            for (p, v) in params.tensors.iter_mut().zip(optim.vars()) {
                *p = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            }
            if let Some(avg) = &mut average {
                avg.update(&params);
            }
            done += batch.len();
            on_event(Event::Progress { done });
        }
        on_event(Event::PhaseEnd);
        if stopped_early.is_some() {
            break;
        }
        let train_seconds = t0.elapsed().as_secs_f64();
        on_event(Event::PhaseStart {
            name: "validate".into(),
            total: val.len(),
        });
        // What is validated, kept and saved: the weight average when there is one.
        let weights = average.as_ref().map_or(&params, |a| a.params());
        let ev = evaluate(&arch, weights, &val, cfg.eval_batch_size)?;
        on_event(Event::PhaseEnd);
        if !ev.loss.is_finite() {
            stopped_early = Some(format!(
                "the validation loss became {} in epoch {epoch}; lower --lr",
                ev.loss
            ));
            break;
        }
        let m = EpochMetrics {
            epoch,
            loss: loss_sum / n as f64,
            accuracy: correct as f64 / n as f64,
            val_loss: ev.loss,
            val_accuracy: ev.accuracy,
            seconds: t0.elapsed().as_secs_f64(),
        };
        epoch_seconds.push(m.seconds);
        history.push(m.clone());
        on_event(Event::Epoch {
            metrics: &m,
            epochs: cfg.epochs,
            images_per_second: n as f64 / train_seconds.max(1e-9),
        });
        let training = |kept_epoch| Training {
            settings: settings.clone(),
            epochs: cfg.epochs,
            history: history.clone(),
            kept_epoch,
            train_images: n,
            val_images: val.len(),
            optimizer_steps: Some(optim.iterations()),
        };
        if cfg.keep == Keep::Best && best.as_ref().is_none_or(|(l, _, _)| m.val_loss < *l) {
            best = Some((m.val_loss, epoch, weights.clone()));
            model::save(
                &paths.model,
                weights,
                &meta(&arch, &classes, &training(epoch))?,
            )?;
        }
        let mut state = optimizer_tensors(&optim);
        if let Some(avg) = &average {
            state.extend(avg.to_extra());
        }
        model::save_with(
            &paths.checkpoint,
            &params,
            &meta(&arch, &classes, &training(epoch))?,
            &state,
        )?;
        let partial = Metrics::summarize(
            history.clone(),
            cfg.keep,
            None,
            n,
            val.len(),
            cfg.val_split.clone(),
        )?;
        write_json(&paths.metrics, &partial)?;
    }

    if history.is_empty() {
        return Err(Error::Diverged(
            stopped_early.unwrap_or_else(|| "no epoch completed".into()),
        ));
    }
    let metrics = Metrics::summarize(
        history.clone(),
        cfg.keep,
        stopped_early,
        n,
        val.len(),
        cfg.val_split.clone(),
    )?;
    let kept = match (&best, cfg.keep, &average) {
        (Some((_, _, p)), Keep::Best, _) => p.clone(),
        (_, _, Some(avg)) => avg.params().clone(),
        _ => params.clone(),
    };
    let training = Training {
        settings: settings.clone(),
        epochs: cfg.epochs,
        history: history.clone(),
        kept_epoch: metrics.kept_epoch,
        train_images: n,
        val_images: val.len(),
        optimizer_steps: None,
    };
    model::save(&paths.model, &kept, &meta(&arch, &classes, &training)?)?;
    let ev = evaluate(&arch, &kept, &val, cfg.eval_batch_size)?;
    let confusion = ConfusionMatrix::new(&classes, &val.labels, &ev.predictions)?;
    write_json(&paths.metrics, &metrics)?;
    write_json(&paths.confusion, &confusion)?;
    let title = format!(
        "small convnet from scratch, {} ({}, lr {}{}, batch {})",
        classes.join("/"),
        cfg.optimizer.kind,
        cfg.optimizer.learning_rate,
        match cfg.schedule {
            LrSchedule::Constant => "",
            LrSchedule::Cosine => " cosine",
        },
        cfg.batch_size
    );
    write_curves(
        &metrics.epochs,
        &title,
        &paths.curves_png,
        &paths.curves_svg,
    )?;
    let mean_epoch_seconds = if epoch_seconds.is_empty() {
        0.0
    } else {
        epoch_seconds.iter().sum::<f64>() / epoch_seconds.len() as f64
    };
    Ok(ScratchReport {
        paths,
        classes,
        architecture: arch.describe(),
        arch,
        parameters,
        train_images: n,
        val_images: val.len(),
        skipped: train.skipped.len() + val.skipped.len(),
        epochs_done: history.len(),
        epochs: cfg.epochs,
        finished: history.len() >= cfg.epochs || metrics.stopped_early.is_some(),
        metrics,
        confusion,
        mean_epoch_seconds,
        load_seconds,
        settings,
    })
}
