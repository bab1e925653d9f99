//! Training from a memory-mapped feature file gives exactly what the same rows in memory give
//! (the probe, its streamed primal solver, the 2016 head, hold-out views), and the primal solver
//! finds the dual solver's model.

mod common;

use std::sync::Arc;

use features::mapped::MappedFeatures;
use features::store::{feature_path, FeatureFile};
use head::data::Samples;
use head::mlp::{evaluate, TrainConfig};
use head::probe::primal::Primal;
use head::probe::{self, ProbeConfig};
use head::recipe::{fit_head, Recipe};

fn mapped_and_owned(run: &std::path::Path, split: &str, classes: usize) -> (Samples, Samples) {
    let path = feature_path(run, split);
    let mapped = Samples::mapped(Arc::new(MappedFeatures::open(&path).unwrap()), classes).unwrap();
    let f = FeatureFile::read(&path).unwrap();
    let owned = Samples::from_store(&f.shape, f.features, &f.labels, classes).unwrap();
    assert!(mapped.is_mapped() && !owned.is_mapped());
    (mapped, owned)
}

fn weights(s: &head::HeadModel) -> Vec<Vec<f32>> {
    s.vars()
        .iter()
        .map(|v| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_mapped_split_trains_the_same_heads_as_the_split_in_memory() {
    let t = tempfile::tempdir().unwrap();
    let run = t.path();
    common::write_split(
        run,
        &common::synthetic(90, &[6, 2, 2], 3, 4),
        common::meta("train", &["a", "b", "c"]),
    );
    let (mapped, owned) = mapped_and_owned(run, "train", 3);
    assert_eq!(mapped, owned);
    let pick = [5, 1, 88, 40, 41];
    assert_eq!(mapped.select(&pick), owned.select(&pick));
    let (mv, ov) = (mapped.select(&pick[..3]), owned.select(&pick[..3]));
    assert_eq!(mv.select(&[2, 0]).row(0), owned.row(88));
    assert_eq!(mv.features().as_ref(), ov.features().as_ref());
    for recipe in [Recipe::Probe, Recipe::Keras2016] {
        let cfg = TrainConfig {
            recipe,
            epochs: 3,
            ..TrainConfig::default()
        };
        let a = fit_head(&mapped, &mapped, 3, &cfg, &mut |_| {}).unwrap();
        let b = fit_head(&owned, &owned, 3, &cfg, &mut |_| {}).unwrap();
        assert_eq!(weights(&a.model), weights(&b.model), "{recipe:?}");
        let (ea, eb) = (
            evaluate(&a.model, &mapped).unwrap(),
            evaluate(&b.model, &owned).unwrap(),
        );
        assert_eq!(ea, eb);
    }
}

#[test]
fn the_streamed_primal_solver_finds_the_dual_solvers_model() {
    // 300 rows of 24 values, 3 classes: small enough for the dual (exact) solver.
    let t = tempfile::tempdir().unwrap();
    common::write_split(
        t.path(),
        &common::synthetic(300, &[24, 1, 1], 3, 9),
        common::meta("train", &["a", "b", "c"]),
    );
    let (mapped, owned) = mapped_and_owned(t.path(), "train", 3);
    let cfg = ProbeConfig {
        grid: vec![1.0],
        ..ProbeConfig::default()
    };
    let dual = probe::fit(&owned, 3, &cfg, &mut |_| {}).unwrap();
    assert!(!dual.summary.streamed);
    let weights = vec![1.0; owned.len()]; // balanced classes: every weight is 1
    let scale = dual_scale(&owned);
    for x in [&mapped, &owned] {
        let p = Primal {
            x,
            scale,
            weights: &weights,
            classes: 3,
            used: None,
        };
        let mut params = vec![0.0; p.params()];
        let (out, _) = p.minimize(1.0, &mut params, head::probe::lbfgs::Stop::default());
        assert!(out.converged, "{out:?}");
        let (_, logits) = p.held_logits(&params);
        // The dual model divides by its temperature; undo it to compare the raw fits.
        let t = dual.summary.temperature;
        let z = dual
            .model
            .logits(
                &candle_core::Tensor::from_slice(
                    &owned.features(),
                    (300, 24),
                    &candle_core::Device::Cpu,
                )
                .unwrap(),
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let worst = logits
            .iter()
            .zip(&z)
            .map(|(a, b)| (a - *b as f64 * t).abs())
            .fold(0f64, f64::max);
        assert!(worst < 2e-3, "primal and dual logits differ by {worst}");
    }
}

/// `1 / sqrt(mean squared row norm)`, as the probe scales its features.
fn dual_scale(s: &Samples) -> f64 {
    let x = s.features();
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    1.0 / (sum / s.len() as f64).sqrt()
}

#[test]
fn many_rows_take_the_streamed_primal_path_with_the_same_result_mapped_or_in_memory() {
    let n = probe::DUAL_MAX_ROWS + 904;
    let t = tempfile::tempdir().unwrap();
    common::write_split(
        t.path(),
        &common::synthetic(n, &[4, 2, 2], 2, 3),
        common::meta("train", &["a", "b"]),
    );
    let (mapped, owned) = mapped_and_owned(t.path(), "train", 2);
    let cfg = ProbeConfig {
        grid: vec![0.1, 1.0, 10.0],
        ..ProbeConfig::default()
    };
    let mut said = Vec::new();
    let a = probe::fit(&mapped, 2, &cfg, &mut |e| {
        if let train::stage::StageEvent::Info(m) = e {
            said.push(m)
        }
    })
    .unwrap();
    let b = probe::fit(&owned, 2, &cfg, &mut |_| {}).unwrap();
    assert!(said[0].contains("streamed passes"), "{said:?}");
    assert!(a.summary.streamed);
    assert_eq!(a.summary, b.summary);
    assert_eq!(weights(&a.model), weights(&b.model));
    assert!(!a.summary.path.is_empty() && a.summary.path.len() <= 3);
    assert!(a.summary.passes.is_some_and(|p| p > a.summary.path.len()));
    assert!(a.summary.temperature >= 1.0);
    let e = evaluate(&a.model, &owned).unwrap();
    assert!(e.accuracy > 0.95, "{e:?}");
}

#[test]
fn many_classes_with_two_rows_each_take_the_streamed_solver_and_report_every_value_of_c() {
    // 300 classes × 2 rows: 300 × 600² multiply-adds per dual evaluation is over the exact
    // solver's limit although the rows are few (issue 34: 1,000 classes stalled the dual solver).
    let (classes, n) = (300, 600);
    assert!(!probe::uses_dual(n, classes) && probe::uses_dual(2000, 6));
    let owned = common::synthetic(n, &[classes, 1, 1], classes, 5);
    let mut said = Vec::new();
    let mut progress = 0;
    let cfg = ProbeConfig::default();
    let fitted = probe::fit(&owned, classes, &cfg, &mut |e| match e {
        train::stage::StageEvent::Info(m) => said.push(m),
        train::stage::StageEvent::Progress { done } => progress = progress.max(done),
        _ => {}
    })
    .unwrap();
    let s = &fitted.summary;
    assert!(s.streamed && s.passes.is_some(), "{s:?}");
    // Two rows per class: 2 folds, each holding one row of every class.
    assert_eq!(s.folds, 2);
    assert!(said[0].contains("streamed passes") && said[0].contains("300 classes"));
    assert!(said[0].contains("limit"), "{said:?}");
    assert!(said
        .iter()
        .any(|m| m.contains("L-BFGS steps per value of C")));
    let per_c: Vec<_> = said
        .iter()
        .filter(|m| m.starts_with("C ") && m.contains("held-out log loss"))
        .collect();
    assert_eq!(per_c.len(), s.path.len(), "{said:?}");
    assert_eq!(progress, s.path.len());
    assert!(said.iter().any(|m| m.starts_with("refitting C")));
    assert!(s.temperature >= 1.0);
    assert_eq!(fitted.model.config().num_classes, classes);
}

#[test]
fn the_work_budget_cuts_steps_only_for_expensive_passes() {
    use head::probe::primal::{Steps, FINAL_STEPS, MIN_STEPS, PATH_STEPS};
    // A few classes of 7×7×512 or 512×4×4 features, whatever the rows: the defaults.
    for (d, k) in [(25_088, 2), (25_088, 6), (8_192, 4)] {
        let few = Steps::for_shape(d, k, 11);
        assert_eq!((few.path, few.last), (PATH_STEPS, FINAL_STEPS), "{d} × {k}");
        assert!(!few.cut());
    }
    // 1,000 classes × 2,048 features: fewer steps, never below the floor.
    let many = Steps::for_shape(2_048, 1_000, 11);
    assert!(many.cut() && many.path >= MIN_STEPS && many.path < PATH_STEPS);
    assert_eq!(many.last, 2 * many.path);
    let huge = Steps::for_shape(25_088, 100_000, 11);
    assert_eq!((huge.path, huge.last), (MIN_STEPS, 2 * MIN_STEPS));
}
