//! The default head (the calibrated linear probe) on synthetic feature files: the layouts a user
//! brings (a `val` split, the one-split `DIR/<class>/` layout), class imbalance, and that the head
//! file computes the probe's linear map exactly.

mod common;

use std::path::Path;

use head::mlp::TrainConfig;
use head::pipeline::{train_head, TrainHeadOptions};
use head::recipe::Recipe;
use train::metrics::Keep;

fn probe_options(run: &Path) -> TrainHeadOptions {
    TrainHeadOptions {
        run: run.to_path_buf(),
        config: TrainConfig {
            recipe: Recipe::Probe,
            ..TrainConfig::default()
        },
        val_split: None,
        force: false,
    }
}

#[test]
fn probe_learns_a_val_split_and_records_what_it_chose() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let shape = [8, 2, 2];
    let classes = ["a", "b", "c"];
    common::write_split(
        run,
        &common::synthetic(90, &shape, 3, 1),
        common::meta("train", &classes),
    );
    common::write_split(
        run,
        &common::synthetic(45, &shape, 3, 2),
        common::meta("val", &classes),
    );
    let report = train_head(&probe_options(run), &mut |_| {}).unwrap();
    let m = &report.metrics;
    assert_eq!(m.validation, "split val");
    assert!(m.kept_val_accuracy >= 0.9, "{m:?}");
    assert_eq!(m.keep, Keep::Last);
    let ece = m.kept_val_ece.expect("ECE reported");
    assert!((0.0..=1.0).contains(&ece));
    let (model, meta) = head::load(&report.paths.weights).unwrap();
    assert_eq!(meta.recipe, Recipe::Probe);
    let probe = meta.probe.as_ref().expect("probe summary stored");
    assert!(probe.temperature >= 1.0 && probe.c > 0.0 && probe.converged);
    assert_eq!(probe.path.len(), meta.probe_config.grid.len());
    assert_eq!(model.config().hidden, 6, "[V, -V] for 3 outputs");
    assert_eq!(model.config().dropout, 0.0);
}

#[test]
fn one_split_layout_holds_out_a_stratified_fifth() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    common::write_split(
        run,
        &common::synthetic(100, &[8, 2, 2], 2, 5),
        common::meta("all", &["cats", "dogs"]),
    );
    let report = train_head(&probe_options(run), &mut |_| {}).unwrap();
    let m = &report.metrics;
    assert_eq!((m.train_samples, m.val_samples), (80, 20));
    assert!(m.validation.contains("0.2 of all"), "{}", m.validation);
    assert!(m.kept_val_accuracy >= 0.9, "{m:?}");
}

#[test]
fn imbalanced_classes_keep_the_small_class_recall() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let shape = [8, 2, 2];
    // 150 vs 20 training samples: keep every "a" row of a balanced set and one in ten of "b".
    let all = common::synthetic(300, &shape, 2, 9);
    let keep: Vec<usize> = (0..all.len())
        .filter(|&i| all.labels()[i] == 0 || i % 20 == 1)
        .collect();
    let train = all.select(&keep);
    assert_eq!(train.class_counts(2), vec![150, 15]);
    common::write_split(run, &train, common::meta("train", &["a", "b"]));
    common::write_split(
        run,
        &common::synthetic(60, &shape, 2, 10),
        common::meta("validation", &["a", "b"]),
    );
    let report = train_head(&probe_options(run), &mut |_| {}).unwrap();
    let recall_b = report.confusion.per_class[1].recall;
    assert!(recall_b >= 0.8, "minority recall {recall_b}");
}
