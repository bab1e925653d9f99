//! Optimizer steps against hand-computed values (w = 1, gradients 0.5 then -0.2, lr 0.1).
//!
//! Expected values were worked out by hand from the Keras update rules, e.g. RMSprop step 1:
//! v = 0.1·0.5² = 0.025, w = 1 - 0.1·0.5/√(0.025 + 1e-7) = 0.683772866.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer as _;
use train::optim::{Grad, Optim, OptimizerConfig, OptimizerKind};

/// 19 elements: a vectorised block of 16 plus a scalar tail of 3.
const N: usize = 19;

fn var() -> Var {
    Var::ones(N, DType::F32, &Device::Cpu).unwrap()
}

fn grad(g: f32) -> Tensor {
    Tensor::full(g, N, &Device::Cpu).unwrap()
}

fn assert_all(v: &Var, want: f64, what: &str) {
    for (i, x) in v.as_tensor().to_vec1::<f32>().unwrap().iter().enumerate() {
        let err = (*x as f64 - want).abs() / want.abs();
        assert!(err < 2e-6, "{what}: element {i} is {x}, expected {want}");
    }
}

/// Two steps (g = 0.5, then -0.2) through the tensor path, checked after each.
fn check(cfg: OptimizerConfig, want: [f64; 2], what: &str) {
    let v = var();
    let mut opt = Optim::new(vec![v.clone()], cfg).unwrap();
    opt.step_all(&[grad(0.5)]).unwrap();
    assert_all(&v, want[0], &format!("{what} step 1"));
    opt.step_all(&[grad(-0.2)]).unwrap();
    assert_all(&v, want[1], &format!("{what} step 2"));
    assert_eq!(opt.iterations(), 2);
}

#[test]
fn rmsprop_matches_hand_computed_steps() {
    check(
        OptimizerConfig::rmsprop(0.1),
        [0.683772866, 0.806631658],
        "rmsprop",
    );
}

#[test]
fn rmsprop_with_weight_decay() {
    let cfg = OptimizerConfig {
        weight_decay: 0.01,
        ..OptimizerConfig::rmsprop(0.1)
    };
    check(cfg, [0.682772866, 0.804948885], "rmsprop wd");
}

#[test]
fn plain_sgd() {
    check(OptimizerConfig::sgd(0.1, 0.0, false), [0.95, 0.97], "sgd");
}

#[test]
fn sgd_with_momentum() {
    check(
        OptimizerConfig::sgd(0.1, 0.9, false),
        [0.95, 0.925],
        "sgd momentum",
    );
}

#[test]
fn sgd_with_nesterov_momentum() {
    check(
        OptimizerConfig::sgd(0.1, 0.9, true),
        [0.905, 0.9025],
        "sgd nesterov",
    );
}

#[test]
fn adam_with_bias_correction() {
    check(
        OptimizerConfig::adam(0.1),
        [0.900000632, 0.865440251],
        "adam",
    );
}

#[test]
fn adamw_decays_before_the_adam_step() {
    check(
        OptimizerConfig::adamw(0.1, 0.004),
        [0.899600632, 0.864680410],
        "adamw",
    );
}

#[test]
fn keras_defaults() {
    let c = OptimizerConfig::new(OptimizerKind::RmsProp);
    assert_eq!(
        (c.learning_rate, c.rho, c.epsilon, c.weight_decay),
        (1e-3, 0.9, 1e-7, 0.0)
    );
    let c = OptimizerConfig::new(OptimizerKind::Sgd);
    assert_eq!((c.learning_rate, c.momentum), (1e-2, 0.0));
    let c = OptimizerConfig::new(OptimizerKind::AdamW);
    assert_eq!((c.beta1, c.beta2, c.weight_decay), (0.9, 0.999, 0.004));
    assert_eq!(
        "adamw".parse::<OptimizerKind>().unwrap(),
        OptimizerKind::AdamW
    );
    assert!("lbfgs".parse::<OptimizerKind>().is_err());
}

#[test]
fn rows_source_equals_tensor_source_on_large_variable() {
    // 64 × 1000 elements: several parallel chunks, row groups and pieces.
    let (rows, cols) = (64usize, 1000usize);
    let g: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let gt = Tensor::from_slice(&g, (rows, cols), &Device::Cpu).unwrap();
    for cfg in [
        OptimizerConfig::rmsprop(0.01),
        OptimizerConfig::sgd(0.01, 0.9, true),
        OptimizerConfig::adamw(0.01, 0.01),
    ] {
        let a = Var::ones((rows, cols), DType::F32, &Device::Cpu).unwrap();
        let b = Var::ones((rows, cols), DType::F32, &Device::Cpu).unwrap();
        let mut oa = Optim::new(vec![a.clone()], cfg.clone()).unwrap();
        let mut ob = Optim::new(vec![b.clone()], cfg.clone()).unwrap();
        let seen = std::sync::Mutex::new(vec![false; rows]);
        let fill = |first: usize, out: &mut [f32]| {
            out.copy_from_slice(&g[first * cols..first * cols + out.len()]);
        };
        let then = |_group: usize, first: usize, updated: &[f32]| {
            let mut s = seen.lock().unwrap();
            for r in first..first + updated.len() / cols {
                assert!(!s[r], "row {r} reported twice");
                s[r] = true;
            }
        };
        for _ in 0..3 {
            oa.step_all(std::slice::from_ref(&gt)).unwrap();
            ob.step_sources(&[Grad::Rows {
                row_len: cols,
                fill: &fill,
                then: Some(&then),
            }])
            .unwrap();
            assert!(seen.lock().unwrap().iter().all(|&x| x), "{cfg:?}");
            seen.lock().unwrap().fill(false);
        }
        let (va, vb) = (
            a.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            b.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert_eq!(va, vb, "{:?}", cfg.kind);
        assert!(va.iter().any(|&x| x != 1.0));
    }
}

#[test]
fn candle_optimizer_trait_with_autograd() {
    let w = var();
    let c = Tensor::full(0.5f32, N, &Device::Cpu).unwrap();
    let mut opt = Optim::new(vec![w.clone()], OptimizerConfig::rmsprop(0.1)).unwrap();
    // d(sum(w·c))/dw = c = 0.5: the same first step as the hand-computed one.
    let loss = (w.as_tensor() * &c).unwrap().sum_all().unwrap();
    opt.backward_step(&loss).unwrap();
    assert_all(&w, 0.683772866, "backward_step");
    assert_eq!(opt.learning_rate(), 0.1);
    opt.set_learning_rate(0.2);
    assert_eq!(opt.config().learning_rate, 0.2);
}

#[test]
fn missing_gradient_leaves_variable_alone() {
    let (a, b) = (var(), var());
    let mut opt = Optim::new(vec![a.clone(), b.clone()], OptimizerConfig::adam(0.1)).unwrap();
    let g = grad(0.5);
    opt.step_with(&[Some(&g), None]).unwrap();
    assert_all(&a, 0.900000632, "updated");
    assert_all(&b, 1.0, "untouched");
}

#[test]
fn rejects_bad_hyper_parameters_and_shapes() {
    let bad = [
        OptimizerConfig::rmsprop(0.0),
        OptimizerConfig::rmsprop(f64::NAN),
        OptimizerConfig::sgd(0.1, 1.0, false),
        OptimizerConfig {
            weight_decay: -1.0,
            ..OptimizerConfig::adam(0.1)
        },
    ];
    for cfg in bad {
        assert!(Optim::new(vec![var()], cfg.clone()).is_err(), "{cfg:?}");
    }
    let mut opt = Optim::new(vec![var()], OptimizerConfig::rmsprop(0.1)).unwrap();
    let wrong = Tensor::ones(N + 1, DType::F32, &Device::Cpu).unwrap();
    assert!(opt.step_all(&[wrong]).is_err());
    assert!(opt.step_all(&[]).is_err());
    let f16 = Var::ones(3, DType::F16, &Device::Cpu).unwrap();
    assert!(Optim::new(vec![f16], OptimizerConfig::rmsprop(0.1)).is_err());
}
