//! `bottleneck scratch` end to end: scan and decode the data once, train epoch by epoch
//! (augmented, shuffled batches; RMSprop by default), validate after every epoch, checkpoint,
//! and write the model, metrics, confusion matrix and learning curves.

use std::time::Instant;

use accel::engine::Selected;
use features::augment::{AugmentParams, Augmenter};
use features::dataset::{self, Dataset};
use features::preprocess::Resize;
use serde::{Deserialize, Serialize};
use train::driver::{self, Plan};
use train::kernels::TrainPrecision;
use train::metrics::{ConfusionMatrix, EpochMetrics, Keep, Metrics};
use train::optim::{Optimizer, OptimizerConfig};
use train::schedule::LrSchedule;

use crate::checkpoint::{meta, read_checkpoint, restore_optimizer, DataDigest, Training};
use crate::compute::{self, Compute};
use crate::config::{ScratchConfig, ScratchPaths};
use crate::data::{self, ImageSet};
use crate::ema::{self, WeightAverage};
use crate::error::{Error, Result};
use crate::learner::{Run, ScratchLearner, Snapshot};
use crate::model::{self, ModelMeta};
use crate::net::{self, Arch, Params};

/// Progress reports (shared with the other training stages).
pub use train::stage::StageEvent as Event;

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
    /// Precision the convolutions' products ran in (resolved: `fp32` or `bf16`; absent in
    /// checkpoints of earlier versions: fp32).
    #[serde(default = "fp32")]
    pub train_precision: TrainPrecision,
}

impl Settings {
    /// The settings `cfg` trains with on `engine` (`auto` precision resolved where it trains).
    pub fn of(cfg: &ScratchConfig, engine: &Selected) -> Result<Self> {
        Ok(Settings {
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
            train_precision: engine.train_precision(cfg.train_precision)?,
        })
    }
}

fn nearest() -> Resize {
    Resize::Nearest
}

fn fp32() -> TrainPrecision {
    TrainPrecision::Fp32
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
    /// Where the network trained (`cpu`: the CPU kernels; `cuda:0 (Candle)`, …).
    pub device: String,
    pub settings: Settings,
}

/// Validation numbers of a set of weights.
#[derive(Clone, Debug)]
pub struct Eval {
    pub loss: f64,
    pub accuracy: f64,
    pub predictions: Vec<u32>,
}

/// Runs `set` (not augmented) through the network in batches of `batch` images, on the CPU kernels.
pub fn evaluate(
    arch: &Arch,
    params: &Params,
    set: &ImageSet,
    batch: usize,
    precision: TrainPrecision,
) -> Result<Eval> {
    evaluate_on(&mut compute::Cpu, arch, params, set, batch, precision)
}

/// [`evaluate`] on `compute`.
pub fn evaluate_on(
    compute: &mut dyn Compute,
    arch: &Arch,
    params: &Params,
    set: &ImageSet,
    batch: usize,
    precision: TrainPrecision,
) -> Result<Eval> {
    let mut loss_sum = 0.0;
    let mut correct = 0;
    let mut predictions = Vec::with_capacity(set.len());
    let idx: Vec<usize> = (0..set.len()).collect();
    let mut x = Vec::new();
    for chunk in idx.chunks(batch.max(1)) {
        x.resize(chunk.len() * set.image_len(), 0.0);
        data::write_batch(set, chunk, None, &mut x)?;
        let logits = compute.logits(arch, params, &x, precision)?;
        let labels: Vec<u32> = chunk.iter().map(|&i| set.labels[i]).collect();
        let out = net::loss(&logits, &labels, arch.outputs);
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
    let (train_split, val_split) = crate::splits::choose(&ds, cfg)?;
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

/// Trains the network described by `cfg` and writes every output file under `RUN/scratch/`.
pub fn train(cfg: &ScratchConfig, on_event: &mut dyn FnMut(Event)) -> Result<ScratchReport> {
    cfg.validate()?;
    let engine = engine(cfg, on_event)?;
    let paths = ScratchPaths::new(&cfg.run);
    let _lock = paths.stage.lock()?;
    // Check the output folder before the (slow) decoding, but only create it afterwards.
    paths.stage.check_start(cfg.force, cfg.resume)?;
    let resumed = if cfg.resume {
        Some(read_checkpoint(&paths.stage.checkpoint)?)
    } else {
        None
    };
    let (cfg, settings) = effective_config(
        cfg,
        &engine,
        resumed.as_ref().map(|(_, m, t)| (m, t)),
        on_event,
    )?;
    let cfg = &cfg;

    let t_load = Instant::now();
    let (ds, train, val) = load_data(cfg, on_event)?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    let classes = ds.classes.clone();
    let arch = arch_of(cfg, classes.len())?;
    let data = data_digest(&ds, cfg, &train, &val)?;
    paths.stage.create(cfg.force, cfg.resume)?;
    let run = Run {
        data: &data,
        cfg,
        paths: &paths,
        arch: &arch,
        classes: &classes,
        settings: &settings,
        train: &train,
        val: &val,
    };
    let compute = compute_on(&engine, settings.train_precision);
    let (mut learner, progress) = start_or_resume(&run, resumed, compute, on_event)?;
    let parameters: usize = learner.snapshot.params.tensors.iter().map(Vec::len).sum();
    let plan = Plan {
        epochs: cfg.epochs,
        stop_after: cfg.stop_after,
        keep: cfg.keep,
    };
    let fitted = driver::fit(&mut learner, &plan, progress, on_event)?;
    if fitted.history.is_empty() {
        return Err(Error::Diverged(
            fitted
                .stopped_early
                .unwrap_or_else(|| "no epoch completed".into()),
        ));
    }
    let finished = fitted.finished(&plan);
    let mean_epoch_seconds = mean_session_seconds(&fitted);
    let (metrics, confusion) = write_outputs(&run, &mut learner, &fitted)?;
    let device = learner.compute.name();
    drop(learner);
    Ok(ScratchReport {
        paths: paths.clone(),
        classes: classes.clone(),
        architecture: arch.describe(),
        arch,
        parameters,
        train_images: train.len(),
        val_images: val.len(),
        skipped: train.skipped.len() + val.skipped.len(),
        epochs_done: fitted.history.len(),
        epochs: cfg.epochs,
        finished,
        metrics,
        confusion,
        mean_epoch_seconds,
        load_seconds,
        device,
        settings,
    })
}

/// Where the run computes (`accel::engine::select`), told to `on_event`.
fn engine(cfg: &ScratchConfig, on_event: &mut dyn FnMut(Event)) -> Result<Selected> {
    let engine = accel::engine::select(cfg.device, cfg.engine, None)?;
    engine.train_precision(cfg.train_precision)?;
    if let Some(note) = &engine.note {
        on_event(Event::Info(note.clone()));
    }
    Ok(engine)
}

/// The network `cfg` describes for `classes` classes.
fn arch_of(cfg: &ScratchConfig, classes: usize) -> Result<Arch> {
    let arch = Arch {
        size: cfg.size as usize,
        filters: cfg.filters.clone(),
        hidden: cfg.hidden,
        dropout: cfg.dropout,
        outputs: Arch::outputs_for(classes),
    };
    arch.validate()?;
    Ok(arch)
}

/// The training step on the CPU kernels, or in Candle on the engine's device.
fn compute_on(engine: &Selected, precision: TrainPrecision) -> Box<dyn Compute> {
    match &engine.train {
        None => Box::new(compute::Cpu),
        Some(d) => Box::new(compute::OnDevice::new(
            d.clone(),
            accel::engine::compute_dtype(precision),
        )),
    }
}

/// Mean seconds of the epochs run in this call (0 when none).
fn mean_session_seconds<S>(fitted: &driver::Fitted<S>) -> f64 {
    let session = &fitted.history[fitted.history.len() - fitted.session_epochs..];
    if session.is_empty() {
        0.0
    } else {
        session.iter().map(|e| e.seconds).sum::<f64>() / session.len() as f64
    }
}

/// The digests of the images the run trains and validates on.
fn data_digest(
    ds: &Dataset,
    cfg: &ScratchConfig,
    train: &ImageSet,
    val: &ImageSet,
) -> Result<DataDigest> {
    let skipped: Vec<String> = train
        .skipped
        .iter()
        .chain(&val.skipped)
        .map(|(f, _)| f.clone())
        .collect();
    let skip = skipped.iter().cloned().collect();
    let (t, v) = crate::splits::choose(ds, cfg)?;
    let digest = |split: &features::dataset::Split| -> Result<String> {
        Ok(features::provenance::files_digest(&split.items, &skip)?)
    };
    Ok(DataDigest {
        train: digest(&t)?,
        validation: digest(&v)?,
        skipped,
    })
}

/// The configuration a run continues with: `cfg`, or with `--resume` the checkpoint's settings
/// and network shape (flags that change them are reported and ignored).
fn effective_config(
    cfg: &ScratchConfig,
    engine: &Selected,
    resumed: Option<(&ModelMeta, &Training)>,
    on_event: &mut dyn FnMut(Event),
) -> Result<(ScratchConfig, Settings)> {
    let mut settings = Settings::of(cfg, engine)?;
    let mut cfg = cfg.clone();
    let Some((m, t)) = resumed else {
        return Ok((cfg, settings));
    };
    if t.settings != settings {
        on_event(Event::Info(
            "--resume: continuing with the checkpoint's settings (split names, batch, optimizer, schedule, augmentation, seed, keep)".into(),
        ));
        settings = t.settings.clone();
    }
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
    // A checkpoint trained with bf16 products resumes only where they run (same numbers).
    cfg.train_precision = engine
        .train_precision(settings.train_precision)
        .map_err(|e| Error::Invalid(format!("the checkpoint was trained with {e}")))?;
    cfg.size = m.image_size as u32;
    cfg.filters = m.arch.filters.clone();
    cfg.hidden = m.arch.hidden;
    cfg.dropout = m.arch.dropout;
    Ok((cfg, settings))
}

/// Fresh weights, or the checkpoint's weights, optimizer state, weight average, history and best
/// epoch with `--resume`.
fn start_or_resume<'a>(
    run: &Run<'a>,
    resumed: Option<(Params, ModelMeta, Training)>,
    compute: Box<dyn Compute>,
    on_event: &mut dyn FnMut(Event),
) -> Result<(ScratchLearner<'a>, driver::Progress<Snapshot>)> {
    let (cfg, paths, arch) = (run.cfg, run.paths, run.arch);
    let mut resumed_steps = None;
    let (params, history) = match resumed {
        Some((p, m, t)) => {
            if m.classes != run.classes || m.arch != *arch {
                return Err(Error::ModelFile {
                    path: paths.stage.checkpoint.clone(),
                    reason: format!(
                        "the checkpoint was trained on classes {:?} with {}; the data has {:?}: start over with --force",
                        m.classes, m.architecture, run.classes
                    ),
                });
            }
            resumed_steps = t.optimizer_steps;
            (p, t.history)
        }
        None => {
            let mut rng = runfs::seed::mixed(cfg.seed, data::PURPOSE_INIT, 0, 0);
            (Params::init(arch, &mut rng), Vec::new())
        }
    };
    on_event(Event::Info(format!(
        "{} training and {} validation images of {} classes ({}), {} parameters: {}",
        run.train.len(),
        run.val.len(),
        run.classes.len(),
        run.classes.join(", "),
        params.tensors.iter().map(Vec::len).sum::<usize>(),
        arch.describe()
    )));
    let sizes: Vec<usize> = params.tensors.iter().map(Vec::len).collect();
    let mut optim = Optimizer::new(cfg.optimizer.clone(), &sizes)?;
    if !history.is_empty() {
        let restored = restore_optimizer(&mut optim, &paths.stage.checkpoint, resumed_steps)?;
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
    let average = match cfg.ema {
        None => None,
        Some(m) if history.is_empty() => Some(WeightAverage::new(m, &params)),
        Some(m) => {
            let extra = model::load_extra(&paths.stage.checkpoint, ema::PREFIX)?;
            Some(
                WeightAverage::from_extra(m, extra, &params).map_err(|e| Error::ModelFile {
                    path: paths.stage.checkpoint.clone(),
                    reason: format!("{e}; start over with --force"),
                })?,
            )
        }
    };
    let best = resumed_best(run, &history)?;
    let learner = ScratchLearner {
        run: run.clone(),
        augmenter: Augmenter::new(cfg.augment.clone(), cfg.seed)?,
        optim,
        snapshot: Snapshot { params, average },
        batch: vec![0f32; cfg.batch_size * run.train.image_len()],
        compute,
    };
    Ok((learner, driver::Progress { history, best }))
}

/// With keep = best, the best epoch so far of a resumed run: the weights of `model.safetensors`.
fn resumed_best(run: &Run<'_>, history: &[EpochMetrics]) -> Result<Option<(usize, Snapshot)>> {
    let paths = run.paths;
    if run.cfg.keep != Keep::Best || history.is_empty() || !paths.model.is_file() {
        return Ok(None);
    }
    let (p, m) = model::load(&paths.model)?;
    let t: Training = serde_json::from_value(m.training).map_err(|e| Error::ModelFile {
        path: paths.model.clone(),
        reason: format!("training metadata unreadable: {e}"),
    })?;
    Ok(Some((
        t.kept_epoch,
        Snapshot {
            params: p,
            average: None,
        },
    )))
}

/// `model.safetensors` of the kept weights, `metrics.json`, `confusion.json` and the curves.
fn write_outputs(
    run: &Run<'_>,
    learner: &mut ScratchLearner<'_>,
    fitted: &driver::Fitted<Snapshot>,
) -> Result<(Metrics, ConfusionMatrix)> {
    let ScratchLearner {
        snapshot, compute, ..
    } = learner;
    let (cfg, paths) = (run.cfg, run.paths);
    let metrics = Metrics::summarize(
        fitted.history.clone(),
        cfg.keep,
        fitted.stopped_early.clone(),
        run.train.len(),
        run.val.len(),
        crate::splits::describe(&run.val.name),
    )?;
    let kept = match &fitted.best {
        Some((_, s)) => s.validated(),
        None => snapshot.validated(),
    };
    let training = run.training(&fitted.history, metrics.kept_epoch, None);
    model::save(&paths.model, kept, &meta(run.arch, run.classes, &training)?)?;
    let ev = evaluate_on(
        compute.as_mut(),
        run.arch,
        kept,
        run.val,
        cfg.eval_batch_size,
        run.settings.train_precision,
    )?;
    let confusion = ConfusionMatrix::new(run.classes, &run.val.labels, &ev.predictions)?;
    let title = format!(
        "small convnet from scratch, {} ({}, lr {}{}, batch {})",
        run.classes.join("/"),
        cfg.optimizer.kind,
        cfg.optimizer.learning_rate,
        match cfg.schedule {
            LrSchedule::Constant => "",
            LrSchedule::Cosine => " cosine",
        },
        cfg.batch_size
    );
    paths
        .stage
        .write_results(&metrics, &metrics.epochs, &confusion, &title)?;
    Ok((metrics, confusion))
}
