//! `finetune` end to end: check the inputs, build the frozen part (ONNX Runtime) and the block
//! (Candle), check the block against ONNX Runtime, compute or reuse the frozen-output caches,
//! train epoch by epoch with a checkpoint after each, then write the outputs and `model.onnx`.

use features::augment::Augmenter;
use features::runtime::SessionOptions;
use head::metrics::{ConfusionMatrix, Keep, Metrics};
use serde::Serialize;

use crate::caches;
use crate::checkpoint;
use crate::checks::{self, CheckResult, Probe};
use crate::config::{FinetuneConfig, FinetunePaths, FrozenPrecision, Settings};
use crate::conv::Nhwc;
use crate::error::{Error, Result};
use crate::export::{self, ExportInfo};
use crate::frozen::Frozen;
use crate::int8::Int8Report;
use crate::net::Net;
use crate::optim::Sgd;
use crate::outputs;
use crate::setup;
use crate::train::{self, EpochData, Outcome, Source, State};

/// Progress reports (shared with the other training stages).
pub use head::stage::StageEvent as Event;

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
    /// Where ONNX Runtime ran the frozen part.
    pub device: String,
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
}

/// Runs fine-tuning as configured.
pub fn finetune(cfg: &FinetuneConfig, on_event: &mut dyn FnMut(Event<'_>)) -> Result<Report> {
    cfg.validate()?;
    let paths = FinetunePaths::new(&cfg.run);
    setup::check_output(&paths, cfg)?;
    let (s, block, classifier) = setup::prepare(cfg, &paths, on_event)?;
    let augmenter = Augmenter::new(cfg.augment.clone(), cfg.seed)?;
    let opts = SessionOptions {
        device: cfg.device,
        threads: cfg.threads,
    };
    let mut frozen = Frozen::new(s.int8.as_ref().map_or(&s.cut, |q| &q.cut), &opts, s.size)?;
    if let Some(q) = &s.int8 {
        on_event(Event::Info(format!(
            "int8 frozen part: {} convs in int8, calibrated on {} images of split '{}' (seed {}){} in {:.1} s",
            q.info.quantized_convs.len(),
            q.info.calib_files.len(),
            q.info.calib_split,
            q.info.calib_seed,
            match (&q.info.cache_path, q.info.from_cache) {
                (Some(p), true) => format!(", reused {}", p.display()),
                (Some(p), false) => format!(", written to {}", p.display()),
                (None, _) => String::new(),
            },
            q.seconds
        )));
    }
    on_event(Event::Info(format!(
        "model {} → frozen up to {} ({}) on {}, training {} ({} convs, fp32) + head, {} preprocessing, {} px",
        s.model.name,
        s.settings.split_at,
        s.settings.precision.name(),
        frozen.device(),
        s.settings.output_tensor,
        block.convs().count(),
        s.spec.preprocess.name(),
        s.size
    )));

    // Validation maps, the network, and its check against ONNX Runtime.
    let val_reader = caches::validation_maps(&mut frozen, &s, cfg, &paths, on_event)?;
    let val_rows = val_reader.read_all()?;
    let row_shape: [usize; 3] = val_reader.row_shape.as_slice().try_into().map_err(|_| {
        Error::file(
            &val_reader.path,
            "rows are not [C, h, w] feature maps; delete the file",
        )
    })?;
    let [c, h, w] = row_shape;
    let net = Net::new(block, classifier, Nhwc { n: 1, h, w, c })?;
    let fp32_probe_rows;
    let mut probe = Probe {
        set: &s.val,
        rows: &val_rows,
        row_shape,
        spec: s.spec,
        size: s.size,
        opts: &opts,
        images: cfg.check_images,
    };
    // The block check tests the FP32 graph, so with an int8 frozen part its input is the FP32
    // frozen output of the checked images.
    let mut int8_report = None;
    if let Some(q) = &s.int8 {
        fp32_probe_rows = checks::frozen_rows(&s.cut, &probe)?;
        let m = fp32_probe_rows.len();
        let diff = checks::max_rel_diff(&val_rows[..m], &fp32_probe_rows);
        on_event(Event::Info(format!(
            "int8 frozen outputs differ from FP32 by {diff:.2e} (max relative, {} validation images)",
            m / (c * h * w)
        )));
        int8_report = Some(q.report(diff));
        probe.rows = &fp32_probe_rows;
    }
    let block_check = checks::block_parity(&s.model.bytes, &net, &probe)?;
    on_event(Event::Info(format!(
        "Candle block matches ONNX Runtime's {} on {} validation images (max relative difference {:.1e})",
        net.block.output_tensor, block_check.images, block_check.max_diff
    )));
    let initial = train::evaluate(&net, &val_rows, &s.val.labels, row_shape)?;
    on_event(Event::Info(format!(
        "stage-2 head before fine-tuning: val loss {:.4}, val accuracy {:.4}",
        initial.loss, initial.accuracy
    )));

    // Training state: fresh, or the checkpoint's.
    let names = net.param_names();
    let sizes: Vec<usize> = net.params().iter().map(|p| p.len()).collect();
    let mut state = State {
        sgd: Sgd::new(cfg.sgd.clone(), &sizes)?,
        net,
        history: Vec::new(),
        keep_best: cfg.keep == Keep::Best,
        best: None,
    };
    let resumed_at = if cfg.resume {
        let ck = checkpoint::load(&paths.checkpoint, &names)?;
        if ck.settings != s.settings {
            return Err(Error::Mismatch(format!(
                "{} changed while reading it",
                paths.checkpoint.display()
            )));
        }
        checkpoint::restore(&mut state, ck, &paths.checkpoint)?;
        let done = state.history.len();
        if done > cfg.epochs {
            return Err(Error::Invalid(format!(
                "the checkpoint already has {done} epochs; pass --epochs {done} or more"
            )));
        }
        on_event(Event::Info(format!(
            "resuming after epoch {done} of {}",
            cfg.epochs
        )));
        Some(done)
    } else {
        if cfg.force && paths.dir.exists() {
            std::fs::remove_dir_all(&paths.dir).map_err(|e| Error::io(&paths.dir, e))?;
        }
        None
    };
    std::fs::create_dir_all(&paths.dir).map_err(|e| Error::io(&paths.dir, e))?;
    caches::remove_stale_temporaries(&caches::dir(&s, &paths));
    caches::remove_stale_temporaries(&paths.dir);
    let (readers, draw_seconds) = if state.history.len() < cfg.epochs {
        caches::augmented_draws(
            &mut frozen,
            &augmenter,
            c * h * w,
            &s,
            cfg,
            &paths,
            on_event,
        )?
    } else {
        (Vec::new(), Vec::new())
    };

    // Epochs.
    let title = format!(
        "fine-tuning {} + head ({}, SGD lr {} momentum {}, {} frozen part)",
        s.settings.output_tensor,
        s.data.classes.join("/"),
        cfg.sgd.learning_rate,
        cfg.sgd.momentum,
        s.settings.precision.name()
    );
    let validation = format!("split {}", cfg.val_split);
    let summarize = |state: &State, stopped: Option<String>| {
        Metrics::summarize(
            state.history.clone(),
            cfg.keep,
            stopped,
            s.train.len(),
            s.val.len(),
            validation.clone(),
        )
    };
    let mut stopped_early = None;
    let mut session_epochs = 0;
    while state.history.len() < cfg.epochs && cfg.stop_after.is_none_or(|n| session_epochs < n) {
        let epoch = state.history.len();
        let mut source = if cfg.aug_cache > 0 {
            Source::Cached(&readers)
        } else {
            Source::Online {
                frozen: &mut frozen,
                set: &s.train,
                augmenter: &augmenter,
                spec: s.spec,
            }
        };
        let epoch_data = EpochData {
            labels: &s.train.labels,
            row_shape,
            batch_size: cfg.batch_size,
            seed: cfg.seed,
            val_rows: &val_rows,
            val_labels: &s.val.labels,
        };
        on_event(Event::PhaseStart {
            name: format!("epoch {}/{}", epoch + 1, cfg.epochs),
            total: s.train.len(),
        });
        let outcome = train::run_epoch(
            &mut state,
            epoch,
            &mut source,
            &epoch_data,
            &mut |done, _| on_event(Event::Progress { done }),
        )?;
        on_event(Event::PhaseEnd);
        match outcome {
            Outcome::Done {
                metrics,
                images_per_second,
            } => {
                on_event(Event::Epoch {
                    metrics: &metrics,
                    epochs: cfg.epochs,
                    images_per_second,
                });
                checkpoint::save(
                    &paths.checkpoint,
                    &names,
                    &checkpoint::of_state(&state, &s.settings, cfg.epochs),
                )?;
                outputs::write_metrics(&paths, &summarize(&state, None)?, &s.settings, &title)?;
                session_epochs += 1;
            }
            Outcome::Diverged(msg) => {
                if state.history.is_empty() {
                    return Err(Error::Diverged(msg));
                }
                on_event(Event::Info(msg.clone()));
                stopped_early = Some(msg);
                break;
            }
        }
    }

    let finished = state.history.len() >= cfg.epochs || stopped_early.is_some();
    let mut report = Report {
        paths: paths.clone(),
        settings: s.settings.clone(),
        precision: s.settings.precision,
        int8: int8_report,
        export_note: match s.settings.precision {
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
        device: frozen.device().to_string(),
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
        epochs_done: state.history.len(),
        resumed_at,
        finished,
        initial_val_loss: initial.loss,
        initial_val_accuracy: initial.accuracy,
        metrics: None,
        confusion: None,
        block_check,
        export_check: None,
        frozen_seconds_per_image: frozen.seconds_per_image(),
        parameters: state.net.parameter_count(),
    };
    if state.history.is_empty() {
        return Ok(report);
    }
    let metrics = summarize(&state, stopped_early)?;
    if !finished {
        report.metrics = Some(metrics);
        return Ok(report);
    }

    // Outputs from the kept epoch.
    let kept = match &state.best {
        Some((e, n)) if state.keep_best && *e == metrics.kept_epoch => n,
        _ => &state.net,
    };
    let eval = train::evaluate(kept, &val_rows, &s.val.labels, row_shape)?;
    let confusion = ConfusionMatrix::new(&s.data.classes, &s.val.labels, &eval.predictions)?;
    outputs::write_block(&paths, kept, &s.settings, metrics.kept_epoch)?;
    outputs::write_head(&paths, kept, &s.head_meta, &s.settings, &metrics)?;
    outputs::write_metrics(&paths, &metrics, &s.settings, &title)?;
    outputs::write_confusion(&paths, &confusion)?;
    let info = ExportInfo {
        classes: s.data.classes.clone(),
        preprocess: s.spec.preprocess.name().into(),
        image_size: s.size,
    };
    let frozen_part = s.int8.as_ref().map(|q| q.cut.bytes.as_slice());
    let onnx = export::export_onnx(&s.model.bytes, frozen_part, kept, &info)?;
    // (int8: model.onnx runs the int8 frozen part, so the Candle forward gets its outputs.)
    let int8_probe_rows = s
        .int8
        .as_ref()
        .map(|q| checks::frozen_rows(&q.cut, &probe))
        .transpose()?;
    if let Some(rows) = &int8_probe_rows {
        probe.rows = rows;
    }
    let export_check = checks::export_parity(&onnx, kept, &probe)?;
    head::write_atomic(&paths.model, &onnx)?;
    on_event(Event::Info(format!(
        "model.onnx matches the Candle forward on {} validation images (max probability difference {:.1e})",
        export_check.images, export_check.max_diff
    )));
    report.metrics = Some(metrics);
    report.confusion = Some(confusion);
    report.export_check = Some(export_check);
    report.frozen_seconds_per_image = frozen.seconds_per_image();
    Ok(report)
}
