//! The optimizer over plain buffers (fine-tuning and stage 1, whose state goes into checkpoints)
//! makes exactly the updates of the one over Candle variables: SGD with momentum, Nesterov and
//! decoupled weight decay, RMSprop and Adam.

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train::optim::{Optim, Optimizer, OptimizerConfig, SgdConfig};

fn compare(config: OptimizerConfig) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let sizes = [7usize, 50_000];
    let mut ours: Vec<Vec<f32>> = sizes
        .iter()
        .map(|&n| (0..n).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let vars: Vec<Var> = ours
        .iter()
        .map(|w| Var::from_slice(w, w.len(), &Device::Cpu).unwrap())
        .collect();
    let mut theirs = Optim::new(vars.clone(), config.clone()).unwrap();
    let mut sgd = Optimizer::new(config.clone(), &sizes).unwrap();
    for _ in 0..5 {
        let grads: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| (0..n).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let mut refs: Vec<&mut [f32]> = ours.iter_mut().map(|w| w.as_mut_slice()).collect();
        let grad_refs: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
        sgd.step(&mut refs, &grad_refs).unwrap();
        let gt: Vec<Tensor> = grads
            .iter()
            .map(|g| Tensor::from_slice(g, g.len(), &Device::Cpu).unwrap())
            .collect();
        theirs.step_all(&gt).unwrap();
    }
    for (w, v) in ours.iter().zip(&vars) {
        let t: Vec<f32> = v.as_tensor().to_vec1().unwrap();
        assert!(
            w == &t,
            "{config:?}: buffer updates differ from variable updates"
        );
    }
    assert_eq!(sgd.iterations(), 5);
}

#[test]
fn sgd_momentum_rmsprop_and_adam_match_bit_for_bit() {
    compare(OptimizerConfig::sgd(1e-2, 0.9, false));
    compare(OptimizerConfig::rmsprop(1e-3));
    compare(OptimizerConfig::adamw(1e-3, 0.01));
}

#[test]
fn nesterov_and_weight_decay_match_bit_for_bit() {
    let sgd = |lr, momentum, nesterov, weight_decay| {
        SgdConfig {
            learning_rate: lr,
            momentum,
            nesterov,
            weight_decay,
        }
        .to_config()
    };
    compare(sgd(3e-3, 0.8, true, 0.01));
    compare(sgd(3e-3, 0.0, false, 0.1));
}

#[test]
fn out_of_range_settings_are_refused() {
    let bad = |c: SgdConfig| c.validate().unwrap_err().to_string();
    let ok = SgdConfig {
        learning_rate: 1e-4,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    };
    assert!(bad(SgdConfig {
        learning_rate: 0.0,
        ..ok.clone()
    })
    .contains("--lr"));
    assert!(bad(SgdConfig {
        momentum: 1.0,
        ..ok.clone()
    })
    .contains("--momentum"));
    assert!(bad(SgdConfig {
        weight_decay: -1.0,
        ..ok
    })
    .contains("--weight-decay"));
}
