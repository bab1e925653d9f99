//! End-to-end training on a small synthetic image folder: the network learns, files are written
//! and reload to the same numbers, a seed reproduces a run exactly, `--resume` continues, and bad
//! inputs give clear errors.

use std::path::Path;

use scratch::model;
use scratch::{train, Error, Event, ScratchConfig};

/// Small, fast settings on a synthetic bright-vs-dark folder.
fn config(data: &Path, run: &Path) -> ScratchConfig {
    let mut cfg = ScratchConfig::new(data, run);
    cfg.size = 32;
    cfg.epochs = 4;
    cfg.batch_size = 8;
    cfg
}

fn synthetic(dir: &Path) {
    testkit::write_synthetic(dir, &[("train", 24), ("validation", 10)], 11).unwrap();
}

/// The validation split of `data` at 32 px, as training loads it.
fn validation_set(data: &Path) -> scratch::data::ImageSet {
    let ds = features::dataset::scan(data).unwrap();
    scratch::data::load_split(
        ds.split("validation").unwrap(),
        32,
        features::preprocess::Resize::Nearest,
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn learns_synthetic_data_and_writes_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    synthetic(&data);
    let cfg = config(&data, &run);
    let mut epochs_seen = 0;
    let report = train(&cfg, &mut |ev| {
        if let Event::Epoch { .. } = ev {
            epochs_seen += 1
        }
    })
    .unwrap();
    assert_eq!(epochs_seen, 4);
    assert_eq!((report.train_images, report.val_images), (48, 20));
    let m = &report.metrics;
    assert_eq!(m.epochs.len(), 4);
    assert!(
        m.best_val_accuracy >= 0.8,
        "validation accuracy stayed at {:.3} on an easy synthetic task: {:?}",
        m.best_val_accuracy,
        m.epochs
    );
    for p in [
        &report.paths.model,
        &report.paths.stage.metrics,
        &report.paths.stage.confusion,
        &report.paths.stage.curves_png,
        &report.paths.stage.curves_svg,
        &report.paths.stage.checkpoint,
    ] {
        assert!(p.is_file(), "{} was not written", p.display());
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report.paths.stage.metrics).unwrap())
            .unwrap();
    assert_eq!(metrics["epochs"].as_array().unwrap().len(), 4);
    assert_eq!(metrics["final_val_accuracy"], m.final_val_accuracy);
    // The saved model reproduces the kept epoch's validation accuracy.
    let (params, meta) = model::load(&report.paths.model).unwrap();
    assert_eq!(meta.classes, vec!["bright", "dark"]);
    assert_eq!((meta.image_size, meta.preprocess.as_str()), (32, "unit"));
    let val = validation_set(&data);
    let ev = scratch::evaluate(
        &meta.arch,
        &params,
        &val,
        7,
        report.settings.train_precision,
    )
    .unwrap();
    assert!((ev.accuracy - m.kept_val_accuracy).abs() < 1e-12);
    assert!((ev.loss - m.kept_val_loss).abs() < 1e-6);
    // Probabilities agree with the predictions and sum to one.
    let mut x = vec![0f32; 3 * val.image_len()];
    scratch::data::write_batch(&val, &[0, 1, 2], None, &mut x).unwrap();
    let proba = scratch::net::predict_proba(&meta.arch, &params, &x);
    for (row, &pred) in proba.chunks_exact(2).zip(&ev.predictions) {
        assert!((row[0] + row[1] - 1.0).abs() < 1e-6);
        assert_eq!(u32::from(row[1] > 0.5), pred);
    }
    let total: u64 = report.confusion.per_class.iter().map(|c| c.support).sum();
    assert_eq!(total, 20);

    // An existing RUN/scratch is refused without --force, replaced with it.
    let err = train(&cfg, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, Error::Train(train::Error::Exists { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("--force"), "{err}");
    let mut forced = cfg.clone();
    forced.force = true;
    forced.epochs = 1;
    let again = train(&forced, &mut |_| {}).unwrap();
    assert_eq!(again.metrics.epochs.len(), 1);
}

#[test]
fn a_seed_reproduces_a_run_and_resume_continues_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic(&data);
    let run_once = |name: &str, seed: u64| {
        let mut cfg = config(&data, &tmp.path().join(name));
        cfg.epochs = 2;
        cfg.seed = seed;
        let r = train(&cfg, &mut |_| {}).unwrap();
        let (params, _) = model::load(&r.paths.model).unwrap();
        (r.metrics, params)
    };
    let (m1, p1) = run_once("a", 5);
    let (m2, p2) = run_once("b", 5);
    let (m3, p3) = run_once("c", 6);
    assert_eq!(p1, p2, "same seed, different weights");
    let losses = |m: &train::metrics::Metrics| -> Vec<(f64, f64)> {
        m.epochs.iter().map(|e| (e.loss, e.val_loss)).collect()
    };
    assert_eq!(losses(&m1), losses(&m2));
    assert_ne!(p1, p3, "a different seed gave the same weights");
    assert_ne!(losses(&m1), losses(&m3));

    // Stop after one epoch, then resume to the second.
    let mut cfg = config(&data, &tmp.path().join("d"));
    cfg.epochs = 2;
    cfg.seed = 5;
    cfg.stop_after = Some(1);
    let first = train(&cfg, &mut |_| {}).unwrap();
    assert!(!first.finished);
    assert_eq!(first.epochs_done, 1);
    // The first epoch is identical to the uninterrupted run.
    assert_eq!(losses(&first.metrics)[0], losses(&m1)[0]);
    cfg.stop_after = None;
    cfg.resume = true;
    let mut resumed_note = false;
    let second = train(&cfg, &mut |ev| {
        if let Event::Info(s) = ev {
            resumed_note |= s.contains("resuming after epoch 1");
        }
    })
    .unwrap();
    assert!(resumed_note);
    assert!(second.finished);
    assert_eq!(second.metrics.epochs.len(), 2);
    assert_eq!(second.metrics.epochs[0], first.metrics.epochs[0]);
    // The optimizer state travels in the checkpoint: the resumed run equals the uninterrupted one.
    assert_eq!(losses(&second.metrics), losses(&m1));
    let (p4, _) = model::load(&second.paths.model).unwrap();
    assert_eq!(
        p4, p1,
        "resumed weights differ from the uninterrupted run's"
    );
}

#[test]
fn bad_inputs_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // Empty data folder.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = train(&config(&empty, &run), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&empty.display().to_string()), "{msg}");
    // No validation split.
    let data = tmp.path().join("data");
    testkit::write_synthetic(&data, &[("train", 2)], 1).unwrap();
    let err = train(&config(&data, &run), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("'validation'") && msg.contains("--val-split"),
        "{msg}"
    );
    // Missing data folder.
    let err = train(&config(&tmp.path().join("nope"), &run), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    // Nothing was written for failed runs.
    assert!(!run.join("scratch").exists());
    // Bad options name the flag.
    let mut cfg = config(&data, &run);
    cfg.epochs = 0;
    assert!(train(&cfg, &mut |_| {})
        .unwrap_err()
        .to_string()
        .contains("--epochs"));
    let mut cfg = config(&data, &run);
    cfg.size = 9;
    testkit::write_synthetic(&data, &[("validation", 2)], 2).unwrap();
    let err = train(&cfg, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("--size 9"), "{err}");
    // --resume without a checkpoint.
    let mut cfg = config(&data, &run);
    cfg.resume = true;
    assert!(train(&cfg, &mut |_| {})
        .unwrap_err()
        .to_string()
        .contains("checkpoint"));
}

#[test]
fn a_cosine_schedule_changes_later_epochs_and_is_kept_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic(&data);
    let mut constant = config(&data, &tmp.path().join("constant"));
    constant.epochs = 3;
    let a = train(&constant, &mut |_| {}).unwrap();
    let mut cosine = config(&data, &tmp.path().join("cosine"));
    cosine.epochs = 3;
    cosine.schedule = train::schedule::LrSchedule::Cosine;
    let b = train(&cosine, &mut |_| {}).unwrap();
    let nums = |e: &train::metrics::EpochMetrics| (e.loss, e.accuracy, e.val_loss, e.val_accuracy);
    // Epoch 1 runs at the base rate either way; later epochs run at lower rates.
    assert_eq!(nums(&a.metrics.epochs[0]), nums(&b.metrics.epochs[0]));
    assert_ne!(a.metrics.epochs[1].loss, b.metrics.epochs[1].loss);

    // Interrupted after epoch 1 and resumed without naming the schedule: the checkpoint's
    // cosine schedule (and optimizer state) continue, so the result equals the uninterrupted run.
    let mut part = cosine.clone();
    part.run = tmp.path().join("resumed");
    part.stop_after = Some(1);
    train(&part, &mut |_| {}).unwrap();
    let (settings, _, _) = scratch::checkpoint::checkpoint_settings(
        &tmp.path().join("resumed/scratch/checkpoint.safetensors"),
    )
    .unwrap();
    assert_eq!(settings.schedule, train::schedule::LrSchedule::Cosine);
    let mut rest = config(&data, &part.run);
    rest.epochs = 3;
    rest.resume = true;
    let c = train(&rest, &mut |_| {}).unwrap();
    let all = |m: &train::metrics::Metrics| m.epochs.iter().map(nums).collect::<Vec<_>>();
    assert_eq!(all(&c.metrics), all(&b.metrics));
}

#[test]
fn the_resize_filter_is_used_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic(&data);
    let run = |name: &str, resize| {
        let mut cfg = config(&data, &tmp.path().join(name));
        cfg.epochs = 1;
        cfg.resize = resize;
        let r = train(&cfg, &mut |_| {}).unwrap();
        let (_, meta) = model::load(&r.paths.model).unwrap();
        (r.metrics.epochs[0].loss, meta.resize)
    };
    let (a, ra) = run("nearest", features::preprocess::Resize::Nearest);
    let (b, rb) = run("bilinear", features::preprocess::Resize::Bilinear);
    assert_eq!((ra.as_str(), rb.as_str()), ("nearest", "bilinear"));
    assert_ne!(a, b, "the filter did not change the input");
}

#[test]
fn a_weight_average_is_validated_saved_and_resumed_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic(&data);
    let run = |name: &str, ema: Option<f64>, stop_after: Option<usize>, resume: bool| {
        let mut cfg = config(&data, &tmp.path().join(name));
        cfg.epochs = 3;
        cfg.ema = ema;
        cfg.stop_after = stop_after;
        cfg.resume = resume;
        train(&cfg, &mut |_| {}).unwrap()
    };
    let raw = run("raw", None, None, false);
    let avg = run("avg", Some(0.9), None, false);
    // Training itself is the same (the optimizer updates the raw weights either way) …
    let train_nums = |r: &scratch::ScratchReport| -> Vec<(f64, f64)> {
        r.metrics
            .epochs
            .iter()
            .map(|e| (e.loss, e.accuracy))
            .collect()
    };
    assert_eq!(train_nums(&raw), train_nums(&avg));
    // … but validation sees the average, and the saved model is the average.
    assert_ne!(
        raw.metrics.epochs[2].val_loss,
        avg.metrics.epochs[2].val_loss
    );
    let (raw_params, _) = model::load(&raw.paths.model).unwrap();
    let (avg_params, meta) = model::load(&avg.paths.model).unwrap();
    assert_ne!(raw_params, avg_params);
    let val = validation_set(&data);
    let ev = scratch::evaluate(
        &meta.arch,
        &avg_params,
        &val,
        5,
        avg.settings.train_precision,
    )
    .unwrap();
    assert!((ev.loss - avg.metrics.epochs[2].val_loss).abs() < 1e-6);
    // The checkpoint carries the average: a resumed run equals the uninterrupted one, and the
    // resumed run keeps the checkpoint's momentum without being told.
    let first = run("resumed", Some(0.9), Some(1), false);
    assert!(!first.finished);
    let rest = run("resumed", None, None, true);
    assert_eq!(rest.settings.ema, Some(0.9));
    let nums = |r: &scratch::ScratchReport| -> Vec<(f64, f64, f64, f64)> {
        r.metrics
            .epochs
            .iter()
            .map(|e| (e.loss, e.accuracy, e.val_loss, e.val_accuracy))
            .collect()
    };
    assert_eq!(nums(&rest), nums(&avg));
    let (resumed_params, _) = model::load(&rest.paths.model).unwrap();
    assert_eq!(resumed_params, avg_params);
    // A momentum outside (0, 1) names the flag.
    let mut bad = config(&data, &tmp.path().join("bad"));
    bad.ema = Some(1.0);
    assert!(train(&bad, &mut |_| {})
        .unwrap_err()
        .to_string()
        .contains("--ema"));
}

#[test]
fn a_one_split_folder_holds_out_the_shared_fifth() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    testkit::write_synthetic(&data, &[("", 20)], 4).unwrap();
    let mut cfg = config(&data, &run);
    cfg.epochs = 1;
    let report = train(&cfg, &mut |_| {}).unwrap();
    assert_eq!((report.train_images, report.val_images), (32, 8));
    assert!(
        report.metrics.validation.contains("0.2 of all held out"),
        "{}",
        report.metrics.validation
    );
    // The same photos the head and fine-tuning hold out.
    let ds = features::dataset::scan(&data).unwrap();
    let (_, val, _) = ds.splits[0]
        .hold_out(
            features::holdout::DEFAULT_FRACTION,
            features::holdout::DEFAULT_SEED,
        )
        .unwrap();
    assert_eq!(val.items.len(), 8);
}
