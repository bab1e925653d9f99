//! `train-head` end to end on feature files in the store's layout: outputs, overwrite policy,
//! load round trip, and every bad-input message.

mod common;

use head::probe::ProbeConfig;
use head::recipe::Recipe;
use std::path::Path;

use head::mlp::TrainConfig;
use head::pipeline::{train_head, HeadPaths, TrainHeadOptions};
use head::Error;
use train::metrics::Keep;
use train::optim::OptimizerConfig;

fn options(run: &Path) -> TrainHeadOptions {
    TrainHeadOptions {
        run: run.to_path_buf(),
        config: TrainConfig {
            epochs: 6,
            batch_size: 16,
            hidden: 16,
            dropout: 0.5,
            optimizer: OptimizerConfig::rmsprop(1e-3),
            seed: 0,
            keep: Keep::Best,
            recipe: Recipe::Keras2016,
            probe: ProbeConfig::default(),
        },
        val_split: None,
        force: false,
    }
}

fn err_text(run: &Path, opts: &TrainHeadOptions) -> String {
    let _ = run;
    train_head(opts, &mut |_| {}).unwrap_err().to_string()
}

#[test]
fn trains_writes_everything_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    common::run_with_splits(run);
    let report = train_head(&options(run), &mut |_| {}).unwrap();
    let paths = HeadPaths::new(run);
    for p in [
        &paths.weights,
        &paths.metrics,
        &paths.confusion,
        &paths.curves_png,
        &paths.curves_svg,
    ] {
        assert!(p.is_file(), "{} missing", p.display());
    }
    let mut names: Vec<String> = std::fs::read_dir(&paths.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "confusion.json",
            "curves.png",
            "curves.svg",
            "head.safetensors",
            "metrics.json"
        ]
    );
    assert!(
        report.metrics.final_val_accuracy >= 0.95,
        "{:?}",
        report.metrics
    );
    assert_eq!(report.metrics.validation, "split validation");
    assert_eq!(report.confusion.matrix.iter().flatten().sum::<u64>(), 40);

    let (model, meta) = head::load(&paths.weights).unwrap();
    assert_eq!(meta.classes, ["cats", "dogs"]);
    assert_eq!(meta.feature_shape, [8, 2, 2]);
    assert_eq!(meta.features.model_sha256, "ab12".repeat(16));
    assert_eq!(meta.features.preprocess, "caffe");
    assert_eq!(meta.features.image_size, 150);
    assert_eq!(meta.features.output_tensor, "block5_pool");
    assert_eq!(meta.kept_epoch, report.metrics.kept_epoch);
    assert_eq!(meta.optimizer, OptimizerConfig::rmsprop(1e-3));
    assert_eq!(meta, head::read_meta(&paths.weights).unwrap());

    // The loaded head reproduces the saved accuracy on the validation features.
    let val = features::store::FeatureFile::read(&features::store::feature_path(run, "validation"))
        .unwrap();
    let probs = model.predict(&val.features).unwrap();
    let correct = probs
        .iter()
        .zip(&val.labels)
        .filter(|(p, &y)| (p[1] > 0.5) == (y == 1))
        .count();
    let acc = correct as f64 / val.labels.len() as f64;
    assert!(
        (acc - meta.val_accuracy).abs() < 1e-9,
        "{acc} vs {}",
        meta.val_accuracy
    );
    assert!((acc - report.confusion.accuracy).abs() < 1e-9);
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    common::run_with_splits(run);
    let mut opts = options(run);
    opts.config.epochs = 1;
    train_head(&opts, &mut |_| {}).unwrap();
    let weights = HeadPaths::new(run).weights;
    let before = std::fs::read(&weights).unwrap();
    let err = train_head(&opts, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::Exists { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(&weights).unwrap(),
        before,
        "file changed without --force"
    );
    opts.force = true;
    opts.config.seed = 1;
    train_head(&opts, &mut |_| {}).unwrap();
    assert_ne!(std::fs::read(&weights).unwrap(), before);
}

#[test]
fn missing_features_point_to_extract() {
    let dir = tempfile::tempdir().unwrap();
    let msg = err_text(dir.path(), &options(dir.path()));
    assert!(msg.contains("bottleneck extract --data DIR --run"), "{msg}");
}

#[test]
fn no_validation_split_suggests_val_split_and_val_split_works() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let shape = [8, 2, 2];
    common::write_split(
        run,
        &common::synthetic(100, &shape, 2, 1),
        common::meta("train", &["cats", "dogs"]),
    );
    let msg = err_text(run, &options(run));
    assert!(msg.contains("--val-split 0.2"), "{msg}");
    let mut opts = options(run);
    opts.val_split = Some(0.2);
    let report = train_head(&opts, &mut |_| {}).unwrap();
    assert_eq!(report.metrics.val_samples, 20);
    assert_eq!(report.metrics.train_samples, 80);
    assert_eq!(report.confusion.per_class[0].support, 10);
    assert!(
        report.metrics.validation.contains("0.2"),
        "{}",
        report.metrics.validation
    );
}

#[test]
fn test_split_is_used_when_there_is_no_validation_split() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let shape = [8, 2, 2];
    common::write_split(
        run,
        &common::synthetic(60, &shape, 2, 1),
        common::meta("train", &["a", "b"]),
    );
    common::write_split(
        run,
        &common::synthetic(30, &shape, 2, 2),
        common::meta("test", &["a", "b"]),
    );
    let mut opts = options(run);
    opts.config.epochs = 1;
    let report = train_head(&opts, &mut |_| {}).unwrap();
    assert_eq!(report.metrics.validation, "split test");
    assert_eq!(report.metrics.val_samples, 30);
}

fn two_splits(run: &Path, val_meta: features::store::FeatureMeta, val_shape: &[usize]) {
    common::write_split(
        run,
        &common::synthetic(40, &[8, 2, 2], 2, 1),
        common::meta("train", &["cats", "dogs"]),
    );
    let classes = val_meta.classes.len().max(1);
    common::write_split(run, &common::synthetic(20, val_shape, classes, 2), val_meta);
}

#[test]
fn mixed_models_preprocessing_or_sizes_are_refused() {
    type Change = Box<dyn Fn(&mut features::store::FeatureMeta)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "model_sha256",
            Box::new(|m| m.provenance.model_sha256 = "ff".repeat(32)),
        ),
        (
            "preprocess",
            Box::new(|m| m.provenance.preprocess = "torch".into()),
        ),
        ("image_size", Box::new(|m| m.provenance.image_size = 224)),
        (
            "output_tensor",
            Box::new(|m| m.provenance.output_tensor = "block4_pool".into()),
        ),
    ];
    for (what, change) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut m = common::meta("validation", &["cats", "dogs"]);
        change(&mut m);
        two_splits(dir.path(), m, &[8, 2, 2]);
        let msg = err_text(dir.path(), &options(dir.path()));
        assert!(msg.contains(what), "{what}: {msg}");
        assert!(msg.contains("extract"), "{msg}");
    }
    let dir = tempfile::tempdir().unwrap();
    two_splits(
        dir.path(),
        common::meta("validation", &["cats", "dogs"]),
        &[8, 1, 1],
    );
    let msg = err_text(dir.path(), &options(dir.path()));
    assert!(msg.contains("feature shapes"), "{msg}");
}

#[test]
fn different_class_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    two_splits(
        dir.path(),
        common::meta("validation", &["cats", "wolves"]),
        &[8, 2, 2],
    );
    let msg = err_text(dir.path(), &options(dir.path()));
    assert!(msg.contains("different class lists"), "{msg}");
}

#[test]
fn a_single_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let one = common::synthetic(20, &[4, 1, 1], 1, 1);
    common::write_split(run, &one, common::meta("train", &["cats"]));
    common::write_split(run, &one, common::meta("validation", &["cats"]));
    let msg = err_text(run, &options(run));
    assert!(msg.contains("at least two"), "{msg}");
}

#[test]
fn non_finite_features_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let good = common::synthetic(20, &[4, 1, 1], 2, 1);
    let mut x = good.features().to_vec();
    x[4 * 3 + 1] = f32::NAN;
    x[4 * 7] = f32::INFINITY;
    let bad = head::data::Samples::new(vec![4, 1, 1], x, good.labels().to_vec()).unwrap();
    common::write_split(run, &bad, common::meta("train", &["a", "b"]));
    common::write_split(run, &good, common::meta("validation", &["a", "b"]));
    let msg = err_text(run, &options(run));
    assert!(
        msg.contains("NaN or infinite") && msg.contains("sample 3"),
        "{msg}"
    );
}
