//! `finetune` end to end, one step per function: choose the engine (`accel::engine::select`:
//! ONNX Runtime + the CPU kernels, or Candle on CUDA), check the inputs, build the frozen part and
//! the block, check the block against ONNX Runtime, resume or start, compute or reuse the
//! frozen-output caches, train through the shared epoch driver with a checkpoint after each
//! epoch, then write the outputs and `model.onnx`.

use accel::engine::Selected;
use features::augment::Augmenter;
use features::runtime::{Device, SessionOptions};
use serde::Serialize;
use train::metrics::{ConfusionMatrix, Metrics};

use crate::caches;
use crate::calibrate::{self, Calibration, CrossFit};
use crate::checkpoint;
use crate::checks::{self, CheckResult, Probe};
use crate::compute::{self, Compute};
use crate::config::{FinetuneConfig, FinetunePaths, FrozenPrecision, Settings};
use crate::epoch::{self, EpochData, Source, State};
use crate::error::{Error, Result};
use crate::export::{self, ExportInfo};
use crate::frozen::Frozen;
use crate::int8::Int8Report;
use crate::net::Net;
use crate::outputs;
use crate::rows::RowReader;
use crate::setup;
use crate::setup::Setup;
use train::driver::{self, Fitted, Plan, Progress};
use train::kernels::Nhwc;

/// Progress reports (shared with the other training stages).
pub use train::stage::StageEvent as Event;

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub paths: FinetunePaths,
    pub settings: Settings,
    /// Precision of the frozen part (`fp32` or `int8`); the block and the head train in FP32.
    pub precision: FrozenPrecision,
    pub int8: Option<Int8Report>,
    /// What `model.onnx` holds (the fine-tuned block and head after the run's frozen part).
    pub export_note: String,
    /// Seconds each augmented draw built in this session took (empty when all were cached).
    pub draw_seconds: Vec<f64>,
    /// Where the frozen part ran (`cpu`, `cuda` for ONNX Runtime; `cuda:0 (Candle)`, …).
    pub device: String,
    /// Where block + head trained (`cpu`: the CPU kernels; `cuda:0 (Candle)`, …).
    pub train_device: String,
    pub train_images: usize,
    pub val_images: usize,
    pub skipped: Vec<features::store::Skipped>,
    pub epochs_requested: usize,
    pub epochs_done: usize,
    /// Epochs already done when this session started (`--resume`).
    pub resumed_at: Option<usize>,
    /// False when this session stopped early (`stop_after`); continue with `--resume`.
    pub finished: bool,
    /// The stage-2 head on top of the original block, on the validation images.
    pub initial_val_loss: f64,
    pub initial_val_accuracy: f64,
    pub metrics: Option<Metrics>,
    pub confusion: Option<ConfusionMatrix>,
    pub block_check: CheckResult,
    pub export_check: Option<CheckResult>,
    /// Mean ONNX Runtime seconds per image of the frozen part in this session (0 when all cached).
    pub frozen_seconds_per_image: f64,
    pub parameters: usize,
    /// The temperature cross-fit (`--calibrate`), applied to the saved model.
    pub calibration: Option<Calibration>,
}

/// Runs fine-tuning as configured.
pub fn finetune(cfg: &FinetuneConfig, on_event: &mut dyn FnMut(Event<'_>)) -> Result<Report> {
    cfg.validate()?;
    let (selected, engine) = engine(cfg, on_event)?;
    let paths = FinetunePaths::new(&cfg.run);
    let _lock = paths.stage.lock()?;
    paths.stage.check_start(cfg.force, cfg.resume)?;
    let (s, mut block, classifier) = setup::prepare(cfg, &paths, &engine, on_event)?;
    let (opts, mut frozen) = open_frozen(cfg, &selected, &s)?;
    let mut compute = compute::for_block(
        selected.train.as_ref(),
        &mut block,
        accel::engine::compute_dtype(engine.train_precision),
    );
    let compute = compute.as_mut();
    let described = block.describe(s.settings.options.train_precision);
    announce(&s, &frozen, compute, &described, on_event);
    let val_reader = caches::validation_maps(&mut frozen, &s, cfg, &paths, on_event)?;
    let checked = check_network(
        &s,
        cfg,
        &opts,
        compute,
        val_reader,
        (block, classifier),
        on_event,
    )?;
    let (state, progress, resumed_at) =
        start_or_resume(cfg, &paths, &s, checked.net.clone(), on_event)?;
    let augmenter = Augmenter::new(cfg.augment.clone(), cfg.seed)?;
    let (readers, draw_seconds) =
        if progress.history.len() < cfg.epochs || cfg.options.calibrate > 0 {
            let [c, h, w] = checked.row_shape;
            let row_len = c * h * w;
            caches::augmented_draws(&mut frozen, &augmenter, row_len, &s, cfg, &paths, on_event)?
        } else {
            (Vec::new(), Vec::new())
        };
    let source = training_source(cfg, &readers, &mut frozen, &s, &augmenter);
    let (state, fitted) = train_epochs(
        cfg, &paths, &s, &checked, compute, state, progress, source, on_event,
    )?;
    let mut report = report(
        cfg,
        &paths,
        &s,
        &checked,
        &state,
        &fitted,
        resumed_at,
        draw_seconds,
    );
    report.device = frozen.device();
    report.train_device = compute.name();
    report.frozen_seconds_per_image = frozen.seconds_per_image();
    if fitted.history.is_empty() || !report.finished {
        return Ok(report);
    }
    // The kept epoch's weights: the best one (keep = best), else the last.
    let mut kept = fitted.best.map_or(state.net, |(_, n)| n);
    let out = Outputs {
        cfg,
        paths: &paths,
        s: &s,
        checked: &checked,
        opts: &opts,
    };
    if cfg.options.calibrate > 0 {
        let plain = caches::train_maps(&mut frozen, &s, cfg, &paths, on_event)?;
        let mut source = training_source(cfg, &readers, &mut frozen, &s, &augmenter);
        let cal = calibrate_kept(&out, &plain, compute, &mut source, &mut kept, on_event)?;
        report.calibration = Some(cal);
    }
    let metrics = report.metrics.clone();
    write_outputs(&out, compute, &kept, metrics, &mut report, on_event)?;
    Ok(report)
}

/// `--calibrate K`: the temperature of a K-fold cross-fit on the training photos (`plain`: their
/// frozen outputs without augmentation), applied to `kept`; the validation numbers before it are
/// recorded beside it.
fn calibrate_kept(
    out: &Outputs<'_>,
    plain: &RowReader,
    compute: &mut dyn Compute,
    source: &mut Source<'_>,
    kept: &mut Net,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Calibration> {
    let Outputs {
        cfg, s, checked, ..
    } = *out;
    let cross = CrossFit {
        initial: &checked.net,
        plain,
        labels: &s.train.labels,
        classes: s.data.classes.len(),
        row_shape: checked.row_shape,
        folds: cfg.options.calibrate,
        epochs: cfg.epochs,
        batch_size: cfg.options.batch_size,
        seed: cfg.seed,
        sgd: cfg.options.sgd.clone(),
        precision: s.settings.options.train_precision,
    };
    let mut cal = calibrate::cross_fit(&cross, compute, source, on_event)?;
    let before = checked.score(compute, kept, s)?;
    (cal.val_log_loss_uncalibrated, cal.val_ece_uncalibrated) =
        (Some(before.loss), Some(before.ece));
    on_event(Event::Info(format!(
        "calibration: temperature {:.3} from {} folds (out-of-fold log loss {:.4} → {:.4}, accuracy {:.4}), {:.0} s",
        cal.temperature, cal.folds, cal.oof_log_loss, cal.oof_log_loss_calibrated, cal.oof_accuracy, cal.seconds
    )));
    calibrate::apply(kept, cal.temperature);
    Ok(cal)
}

/// Where the run computes (the selection and what the setup needs of it), told to `on_event`.
fn engine(
    cfg: &FinetuneConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(Selected, setup::Engine)> {
    let selected = select(cfg)?;
    let engine = setup::Engine {
        train_precision: selected.train_precision(cfg.options.train_precision)?,
        frozen: selected.backend.engine(),
    };
    if let Some(note) = &selected.note {
        on_event(Event::Info(note.clone()));
    }
    Ok((selected, engine))
}

/// The frozen part (int8 when the run is), and where the parity checks run ONNX Runtime: on the
/// CPU unless ONNX Runtime is the engine.
fn open_frozen(
    cfg: &FinetuneConfig,
    selected: &Selected,
    s: &Setup,
) -> Result<(SessionOptions, Frozen)> {
    let opts = SessionOptions {
        device: if selected.train.is_none() {
            cfg.device
        } else {
            Device::Cpu
        },
        threads: cfg.threads,
    };
    let frozen = Frozen::open(
        selected.backend.as_ref(),
        &s.model.bytes,
        s.int8.as_ref().map_or(&s.cut, |q| &q.cut),
        s.int8.is_some(),
        cfg.threads,
        s.size,
    )?;
    Ok((opts, frozen))
}

/// The engine of this run (`accel::engine::select`); an int8 frozen part only runs in ONNX Runtime.
fn select(cfg: &FinetuneConfig) -> Result<Selected> {
    let selected = accel::engine::select(cfg.device, cfg.engine, cfg.threads)?;
    if selected.train.is_some() && cfg.options.precision == FrozenPrecision::Int8 {
        return Err(Error::Invalid(format!(
            "--precision int8: the int8 frozen part runs in ONNX Runtime on the CPU only, and this run \
             uses {}: pass --precision fp32 (or --device cpu)",
            selected.ran_on
        )));
    }
    Ok(selected)
}

/// Where the training batches come from: the cached draws, or afresh through the frozen part
/// (`--aug-cache 0`).
fn training_source<'a>(
    cfg: &FinetuneConfig,
    readers: &'a [RowReader],
    frozen: &'a mut Frozen,
    s: &'a Setup,
    augmenter: &'a Augmenter,
) -> Source<'a> {
    if cfg.options.aug_cache > 0 {
        Source::Cached(readers)
    } else {
        Source::Online {
            frozen,
            set: &s.train,
            augmenter,
            spec: s.spec,
        }
    }
}

/// Tells what runs where.
fn announce(
    s: &Setup,
    frozen: &Frozen,
    compute: &dyn Compute,
    block: &str,
    on_event: &mut dyn FnMut(Event<'_>),
) {
    if let Some(q) = &s.int8 {
        on_event(Event::Info(format!(
            "int8 frozen part: {} convs in int8, calibrated on {} images of split '{}' (seed {}){} in {:.1} s",
            q.info.quantized_convs.len(),
            q.info.calib_files.len(),
            q.info.calib_split,
            q.info.calib_seed,
            match (&q.info.cache_path, q.info.from_cache, &q.info.from_shared) {
                (Some(p), true, _) => format!(", reused {}", p.display()),
                (Some(p), false, Some(shared)) =>
                    format!(", copied from the shared cache {} to {}", shared.display(), p.display()),
                (Some(p), false, None) => format!(", written to {}", p.display()),
                (None, ..) => String::new(),
            },
            q.seconds
        )));
    }
    on_event(Event::Info(format!(
        "model {} → frozen up to {} ({}) on {}, training {} ({block}) + head on {}, {} preprocessing, {} px",
        s.model.name,
        s.settings.split_at,
        s.settings.options.precision.name(),
        frozen.device(),
        s.settings.output_tensor,
        compute.name(),
        s.spec.preprocess.name(),
        s.size
    )));
}

/// The network checked against ONNX Runtime, with the validation maps it is scored on.
struct Checked {
    net: Net,
    /// The validation feature maps (read a batch at a time when scoring).
    val: RowReader,
    /// The first `--check-images` of them, for the checks against ONNX Runtime.
    check_rows: Vec<f32>,
    row_shape: [usize; 3],
    block_check: CheckResult,
    int8: Option<Int8Report>,
    initial: epoch::Evaluation,
}

impl Checked {
    /// `net` scored on the validation photos.
    fn score(&self, compute: &mut dyn Compute, net: &Net, s: &Setup) -> Result<epoch::Evaluation> {
        epoch::evaluate(compute, net, &self.val, &s.val.labels, self.row_shape)
    }
}

/// Builds the network, checks the Candle block against ONNX Runtime on a few validation images
/// (on FP32 frozen outputs, also with an int8 frozen part) and scores the stage-2 head.
fn check_network(
    s: &Setup,
    cfg: &FinetuneConfig,
    opts: &SessionOptions,
    compute: &mut dyn Compute,
    val_reader: RowReader,
    (block, classifier): (crate::block::Block, crate::classifier::Classifier),
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Checked> {
    let check_rows = val_reader.read_first(cfg.check_images.max(1))?;
    let row_shape: [usize; 3] = val_reader.row_shape.as_slice().try_into().map_err(|_| {
        Error::file(
            &val_reader.path,
            "rows are not [C, h, w] feature maps; delete the file",
        )
    })?;
    let [c, h, w] = row_shape;
    let net = Net::new(block, classifier, Nhwc { n: 1, h, w, c })?;
    let probe = Probe {
        set: &s.val,
        rows: &check_rows,
        row_shape,
        spec: s.spec,
        size: s.size,
        opts,
        images: cfg.check_images,
    };
    let mut int8 = None;
    let fp32_rows;
    let block_probe = match &s.int8 {
        None => probe,
        Some(q) => {
            fp32_rows = checks::frozen_rows(&s.cut, &probe)?;
            let m = fp32_rows.len();
            let diff = checks::max_rel_diff(&check_rows[..m], &fp32_rows);
            on_event(Event::Info(format!(
                "int8 frozen outputs differ from FP32 by {diff:.2e} (max relative, {} validation images)",
                m / (c * h * w)
            )));
            int8 = Some(q.report(diff));
            Probe {
                rows: &fp32_rows,
                ..probe
            }
        }
    };
    let block_check = checks::block_parity(&s.model.bytes, &net, &block_probe)?;
    on_event(Event::Info(format!(
        "Candle block matches ONNX Runtime's {} on {} validation images (max relative difference {:.1e})",
        net.block.output_tensor, block_check.images, block_check.max_diff
    )));
    let initial = epoch::evaluate(compute, &net, &val_reader, &s.val.labels, row_shape)?;
    on_event(Event::Info(format!(
        "stage-2 head before fine-tuning: val loss {:.4}, val accuracy {:.4}",
        initial.loss, initial.accuracy
    )));
    Ok(Checked {
        net,
        val: val_reader,
        check_rows,
        row_shape,
        block_check,
        int8,
        initial,
    })
}

/// A fresh training state, or the checkpoint's with `--resume` (and the epochs already done).
fn start_or_resume(
    cfg: &FinetuneConfig,
    paths: &FinetunePaths,
    s: &Setup,
    net: Net,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(State, Progress<Net>, Option<usize>)> {
    let mut net = net;
    // Checked against ONNX Runtime in FP32; trained (and validated) in the run's precision.
    net.block.precision = s.settings.options.train_precision;
    let names = net.param_names();
    let sizes: Vec<usize> = net.params().iter().map(|p| p.len()).collect();
    let mut state = State {
        optim: train::optim::Optimizer::new(cfg.options.sgd.to_config(), &sizes)?,
        net,
    };
    let (progress, resumed_at) = if cfg.resume {
        let ck = checkpoint::load(&paths.stage.checkpoint, &names)?;
        if ck.settings != s.settings {
            return Err(Error::Mismatch(format!(
                "{} changed while reading it",
                paths.stage.checkpoint.display()
            )));
        }
        let progress = checkpoint::restore(&mut state, ck, &paths.stage.checkpoint)?;
        let done = progress.history.len();
        if done > cfg.epochs {
            return Err(Error::Invalid(format!(
                "the checkpoint already has {done} epochs; pass --epochs {done} or more"
            )));
        }
        on_event(Event::Info(format!(
            "resuming after epoch {done} of {}",
            cfg.epochs
        )));
        (progress, Some(done))
    } else {
        (Progress::default(), None)
    };
    paths.stage.create(cfg.force, cfg.resume)?;
    Ok((state, progress, resumed_at))
}

/// The title of the learning curves.
fn title(cfg: &FinetuneConfig, s: &Setup) -> String {
    format!(
        "fine-tuning {} + head ({}, SGD lr {} momentum {}, {} frozen part)",
        s.settings.output_tensor,
        s.data.classes.join("/"),
        cfg.options.sgd.learning_rate,
        cfg.options.sgd.momentum,
        s.settings.options.precision.name()
    )
}

fn summarize(
    cfg: &FinetuneConfig,
    s: &Setup,
    history: &[train::metrics::EpochMetrics],
    stopped: Option<String>,
) -> Result<Metrics> {
    Ok(Metrics::summarize(
        history.to_vec(),
        cfg.options.keep,
        stopped,
        s.train.len(),
        s.val.len(),
        s.validation.clone(),
    )?)
}

/// The epochs through the shared driver, checkpointing and writing the metrics after each.
#[allow(clippy::too_many_arguments)] // the run's parts, each needed by the epochs
fn train_epochs(
    cfg: &FinetuneConfig,
    paths: &FinetunePaths,
    s: &Setup,
    checked: &Checked,
    compute: &mut dyn Compute,
    state: State,
    progress: Progress<Net>,
    source: Source<'_>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(State, Fitted<Net>)> {
    let names = state.net.param_names();
    let title = title(cfg, s);
    let mut on_end = |state: &State, end: &driver::EpochEnd<'_, Net>| -> Result<()> {
        let ck = checkpoint::of_state(state, end.history, end.best, &s.settings, cfg.epochs);
        checkpoint::save(&paths.stage.checkpoint, &names, &ck)?;
        outputs::write_progress(
            paths,
            &summarize(cfg, s, end.history, None)?,
            &s.settings,
            &title,
        )
    };
    let all: Vec<usize> = (0..s.train.len()).collect();
    let mut learner = epoch::Learner {
        state,
        compute,
        source,
        data: EpochData {
            labels: &s.train.labels,
            rows: &all,
            row_shape: checked.row_shape,
            batch_size: cfg.options.batch_size,
            seed: cfg.seed,
            val: &checked.val,
            val_labels: &s.val.labels,
        },
        on_end: &mut on_end,
    };
    let plan = Plan {
        epochs: cfg.epochs,
        stop_after: cfg.stop_after,
        keep: cfg.options.keep,
    };
    let fitted = driver::fit(&mut learner, &plan, progress, on_event)?;
    if let Some(why) = &fitted.stopped_early {
        if fitted.history.is_empty() {
            return Err(Error::Diverged(why.clone()));
        }
        on_event(Event::Info(why.clone()));
    }
    Ok((learner.state, fitted))
}

/// What the run did (outputs not yet written).
#[allow(clippy::too_many_arguments)] // one field group from each step of the run
fn report(
    cfg: &FinetuneConfig,
    paths: &FinetunePaths,
    s: &Setup,
    checked: &Checked,
    state: &State,
    fitted: &Fitted<Net>,
    resumed_at: Option<usize>,
    draw_seconds: Vec<f64>,
) -> Report {
    let plan = Plan {
        epochs: cfg.epochs,
        stop_after: cfg.stop_after,
        keep: cfg.options.keep,
    };
    Report {
        paths: paths.clone(),
        settings: s.settings.clone(),
        precision: s.settings.options.precision,
        int8: checked.int8.clone(),
        export_note: match s.settings.options.precision {
            FrozenPrecision::Fp32 => {
                "model.onnx: the FP32 model with the fine-tuned block and head".into()
            }
            FrozenPrecision::Int8 => {
                "model.onnx: the int8 frozen part (as trained and validated) with the \
                 fine-tuned FP32 block and head"
                    .into()
            }
        },
        draw_seconds,
        device: String::new(),
        train_device: String::new(),
        train_images: s.train.len(),
        val_images: s.val.len(),
        skipped: s
            .train
            .skipped
            .iter()
            .chain(&s.val.skipped)
            .cloned()
            .collect(),
        epochs_requested: cfg.epochs,
        epochs_done: fitted.history.len(),
        resumed_at,
        finished: fitted.finished(&plan),
        initial_val_loss: checked.initial.loss,
        initial_val_accuracy: checked.initial.accuracy,
        metrics: (!fitted.history.is_empty())
            .then(|| summarize(cfg, s, &fitted.history, fitted.stopped_early.clone()).ok())
            .flatten(),
        confusion: None,
        block_check: checked.block_check.clone(),
        export_check: None,
        frozen_seconds_per_image: 0.0,
        parameters: state.net.parameter_count(),
        calibration: None,
    }
}

/// What the final outputs are made from.
struct Outputs<'a> {
    cfg: &'a FinetuneConfig,
    paths: &'a FinetunePaths,
    s: &'a Setup,
    checked: &'a Checked,
    opts: &'a SessionOptions,
}

/// `model.onnx` of `kept`, and its parity with the Candle forward on a few validation images.
fn export_checked(out: &Outputs<'_>, kept: &Net) -> Result<(Vec<u8>, CheckResult)> {
    let Outputs {
        cfg,
        s,
        checked,
        opts,
        ..
    } = *out;
    let info = ExportInfo {
        classes: s.data.classes.clone(),
        preprocess: s.spec.preprocess.name().into(),
        image_size: s.size,
    };
    let frozen_part = s.int8.as_ref().map(|q| q.cut.bytes.as_slice());
    let onnx = export::export_onnx(&s.model.bytes, frozen_part, kept, &info)?;
    let mut probe = Probe {
        set: &s.val,
        rows: &checked.check_rows,
        row_shape: checked.row_shape,
        spec: s.spec,
        size: s.size,
        opts,
        images: cfg.check_images,
    };
    // (int8: model.onnx runs the int8 frozen part, so the Candle forward gets its outputs.)
    let int8_rows = s
        .int8
        .as_ref()
        .map(|q| checks::frozen_rows(&q.cut, &probe))
        .transpose()?;
    if let Some(rows) = &int8_rows {
        probe.rows = rows;
    }
    let export_check = checks::export_parity(&onnx, kept, &probe)?;
    Ok((onnx, export_check))
}

/// The kept epoch's weights, metrics, confusion matrix and `model.onnx` (checked against the
/// Candle forward on the frozen part it was trained with).
fn write_outputs(
    out: &Outputs<'_>,
    compute: &mut dyn Compute,
    kept: &Net,
    metrics: Option<Metrics>,
    report: &mut Report,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<()> {
    let Outputs {
        cfg,
        paths,
        s,
        checked,
        ..
    } = *out;
    let Some(mut metrics) = metrics else {
        return Err(Error::Invalid("no metrics to write".into()));
    };
    if let Some(bad) = kept
        .params()
        .iter()
        .find_map(|p| train::finite::first_non_finite(p))
    {
        return Err(Error::Invalid(format!(
            "the kept weights are not finite ({bad}): nothing was written; start over with \
             --force (and a lower --lr)"
        )));
    }
    let eval = checked.score(compute, kept, s)?;
    metrics.kept_val_ece = Some(eval.ece);
    if report.calibration.is_some() {
        // The saved model's numbers: the temperature changes the loss, not the predictions.
        metrics.kept_val_loss = eval.loss;
    }
    let confusion = ConfusionMatrix::new(&s.data.classes, &s.val.labels, &eval.predictions)?;
    let (onnx, export_check) = export_checked(out, kept)?;
    // The head records model.onnx's digest, which readers verify (a replaced model is refused).
    let model_sha256 = runfs::digest::sha256_hex(&onnx);
    outputs::write_block(paths, kept, &s.settings, metrics.kept_epoch)?;
    outputs::write_head(
        paths,
        kept,
        &s.head_meta,
        &s.settings,
        &metrics,
        &model_sha256,
    )?;
    outputs::write_results(
        paths,
        &metrics,
        &s.settings,
        report.calibration.as_ref(),
        &confusion,
        &title(cfg, s),
    )?;
    runfs::write_atomic(&paths.model, &onnx)?;
    on_event(Event::Info(format!(
        "model.onnx matches the Candle forward on {} validation images (max probability difference {:.1e})",
        export_check.images, export_check.max_diff
    )));
    report.metrics = Some(metrics);
    report.confusion = Some(confusion);
    report.export_check = Some(export_check);
    Ok(())
}
