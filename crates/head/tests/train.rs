//! Training: learns a learnable problem, is bitwise reproducible with a seed, computes the same
//! gradients as Candle's autograd, and stops cleanly when the loss diverges.

mod common;

use candle_core::{Device, Tensor};
use head::data::Samples;
use head::mlp::{evaluate, train, TrainConfig};
use head::model::{HeadConfig, HeadModel};
use head::probe::ProbeConfig;
use head::recipe::Recipe;
use train::loss::{bce_with_logits_mean, softmax_cross_entropy_mean};
use train::metrics::Keep;
use train::optim::OptimizerConfig;
use train::stage::StageEvent;

fn config(epochs: usize, optimizer: OptimizerConfig) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        hidden: 32,
        dropout: 0.5,
        optimizer,
        seed: 3,
        keep: Keep::Best,
        recipe: Recipe::Keras2016,
        probe: ProbeConfig::default(),
    }
}

#[test]
fn learns_a_learnable_binary_problem() {
    let shape = [16, 2, 2];
    let (tr, va) = (
        common::synthetic(400, &shape, 2, 1),
        common::synthetic(200, &shape, 2, 2),
    );
    let mut events = (0, 0, 0);
    let out = train(
        &tr,
        &va,
        2,
        &config(8, OptimizerConfig::rmsprop(1e-3)),
        &mut |p| match p {
            StageEvent::PhaseStart { total, .. } => {
                assert_eq!(total, 400);
                events.0 += 1
            }
            StageEvent::Progress { .. } => events.1 += 1,
            StageEvent::Epoch { .. } => events.2 += 1,
            _ => {}
        },
    )
    .unwrap();
    assert_eq!(events, (8, 8 * 25, 8));
    let last = out.history.last().unwrap();
    assert!(last.val_accuracy >= 0.99, "{:?}", out.history);
    assert!(out.history[0].loss > last.loss);
    let eval = evaluate(&out.model, &va).unwrap();
    assert!(eval.accuracy >= 0.99);
    assert!(out.diverged.is_none());
}

#[test]
fn learns_a_three_class_problem_with_every_optimizer() {
    let shape = [24];
    let (tr, va) = (
        common::synthetic(300, &shape, 3, 5),
        common::synthetic(150, &shape, 3, 6),
    );
    for opt in [
        OptimizerConfig::rmsprop(1e-3),
        OptimizerConfig::sgd(0.05, 0.9, true),
        OptimizerConfig::adam(1e-3),
        OptimizerConfig::adamw(1e-3, 0.004),
    ] {
        let out = train(&tr, &va, 3, &config(15, opt.clone()), &mut |_| {}).unwrap();
        let acc = out.history.last().unwrap().val_accuracy;
        assert!(acc >= 0.99, "{:?}: {acc}", opt.kind);
        let p = out.model.predict(&va.features()).unwrap();
        assert_eq!(p[0].len(), 3);
        assert!((p[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn same_seed_same_weights_and_metrics() {
    let shape = [64, 2, 2];
    let (tr, va) = (
        common::synthetic(100, &shape, 2, 1),
        common::synthetic(40, &shape, 2, 2),
    );
    let cfg = TrainConfig {
        batch_size: 7,
        ..config(3, OptimizerConfig::rmsprop(1e-3))
    };
    let a = train(&tr, &va, 2, &cfg, &mut |_| {}).unwrap();
    let b = train(&tr, &va, 2, &cfg, &mut |_| {}).unwrap();
    assert_eq!(a.model.snapshot().unwrap(), b.model.snapshot().unwrap());
    let strip = |h: &[train::metrics::EpochMetrics]| {
        h.iter()
            .map(|e| (e.loss, e.accuracy, e.val_loss, e.val_accuracy))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a.history), strip(&b.history));
    let c = train(&tr, &va, 2, &TrainConfig { seed: 4, ..cfg }, &mut |_| {}).unwrap();
    assert_ne!(a.model.snapshot().unwrap(), c.model.snapshot().unwrap());
}

/// One full-batch SGD step without dropout must equal `w - lr·∇L` with ∇L from autograd.
fn check_gradients(num_classes: usize) {
    let shape = [5, 3, 2];
    let n = 23;
    let tr = common::synthetic(n, &shape, num_classes, 9);
    let lr = 0.1;
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: n,
        hidden: 20,
        dropout: 0.0,
        optimizer: OptimizerConfig::sgd(lr, 0.0, false),
        seed: 11,
        keep: Keep::Last,
        recipe: Recipe::Keras2016,
        probe: ProbeConfig::default(),
    };
    let head_cfg = HeadConfig {
        input_shape: shape.to_vec(),
        hidden: 20,
        num_classes,
        dropout: 0.0,
    };
    let reference = HeadModel::new(head_cfg, cfg.seed, &Device::Cpu).unwrap();
    let x = Tensor::from_slice(&tr.features(), (n, 30), &Device::Cpu).unwrap();
    let z = reference.logits(&x).unwrap();
    let loss = if num_classes == 2 {
        let y: Vec<f32> = tr.labels().iter().map(|&l| l as f32).collect();
        bce_with_logits_mean(&z, &Tensor::from_vec(y, n, &Device::Cpu).unwrap()).unwrap()
    } else {
        let y = Tensor::from_slice(tr.labels(), n, &Device::Cpu).unwrap();
        softmax_cross_entropy_mean(&z, &y).unwrap()
    };
    let grads = loss.backward().unwrap();
    let trained = train(&tr, &tr, num_classes, &cfg, &mut |_| {}).unwrap();
    for (before, after) in reference.vars().iter().zip(trained.model.vars()) {
        let g = grads.get(before.as_tensor()).unwrap();
        let want = (before.as_tensor() - (g * lr).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = after
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() < 1e-5,
                "{num_classes} classes, {:?}[{i}]: {a} vs {b}",
                after.shape()
            );
        }
    }
}

#[test]
fn hand_derived_backward_matches_autograd_binary() {
    check_gradients(2);
}

#[test]
fn hand_derived_backward_matches_autograd_softmax() {
    check_gradients(4);
}

fn blow_up_data(n: usize) -> Samples {
    let shape = vec![8];
    let x: Vec<f32> = (0..n * 8).map(|i| ((i % 13) as f32 - 6.0) * 50.0).collect();
    let y = (0..n).map(|i| (i % 2) as u32).collect();
    Samples::new(shape, x, y).unwrap()
}

#[test]
fn divergence_in_the_first_epoch_is_an_error() {
    let data = blow_up_data(32);
    let cfg = TrainConfig {
        batch_size: 4,
        ..config(3, OptimizerConfig::sgd(1e6, 0.9, false))
    };
    let err = train(&data, &data, 2, &cfg, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, head::Error::Diverged(_)), "{msg}");
    assert!(msg.contains("--lr"), "{msg}");
}

#[test]
fn divergence_later_keeps_the_last_good_epoch() {
    // Plain SGD at a learning rate that is stable for a while and then explodes.
    let data = blow_up_data(32);
    let mut found = false;
    for lr in [1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0] {
        let cfg = TrainConfig {
            batch_size: 32,
            dropout: 0.0,
            keep: Keep::Last,
            ..config(40, OptimizerConfig::sgd(lr, 0.99, false))
        };
        let Ok(out) = train(&data, &data, 2, &cfg, &mut |_| {}) else {
            continue;
        };
        let Some(why) = out.diverged else { continue };
        assert!(why.contains("epoch"), "{why}");
        assert!(!out.history.is_empty());
        assert_eq!(out.kept_epoch, out.history.len());
        let w = out.model.snapshot().unwrap();
        let eval = evaluate(&out.model, &data).unwrap();
        assert!(
            eval.loss.is_finite(),
            "lr {lr}: kept weights are not the last good ones"
        );
        assert!((eval.loss - out.history.last().unwrap().val_loss).abs() < 1e-9);
        drop(w);
        found = true;
        break;
    }
    assert!(found, "no learning rate diverged after the first epoch");
}

#[test]
fn keep_best_restores_the_lowest_validation_loss_epoch() {
    let shape = [16];
    let (tr, va) = (
        common::synthetic(60, &shape, 2, 1),
        common::synthetic(60, &shape, 2, 2),
    );
    let cfg = config(12, OptimizerConfig::rmsprop(3e-3));
    let out = train(&tr, &va, 2, &cfg, &mut |_| {}).unwrap();
    let best = out
        .history
        .iter()
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
        .unwrap();
    assert_eq!(out.kept_epoch, best.epoch);
    let eval = evaluate(&out.model, &va).unwrap();
    assert!((eval.loss - best.val_loss).abs() < 1e-9);
}

#[test]
fn rejects_bad_inputs() {
    let shape = [4];
    let tr = common::synthetic(10, &shape, 2, 1);
    let other = common::synthetic(10, &[5], 2, 1);
    let ok = config(1, OptimizerConfig::rmsprop(1e-3));
    assert!(train(&tr, &other, 2, &ok, &mut |_| {}).is_err());
    assert!(train(&tr, &tr, 1, &ok, &mut |_| {}).is_err());
    let three = common::synthetic(9, &shape, 3, 1);
    assert!(train(&three, &three, 2, &ok, &mut |_| {}).is_err());
    for bad in [
        TrainConfig {
            epochs: 0,
            ..ok.clone()
        },
        TrainConfig {
            batch_size: 0,
            ..ok.clone()
        },
        TrainConfig {
            dropout: 1.0,
            ..ok.clone()
        },
        TrainConfig {
            hidden: 0,
            ..ok.clone()
        },
    ] {
        assert!(train(&tr, &tr, 2, &bad, &mut |_| {}).is_err(), "{bad:?}");
    }
}
