//! The fine-tuning SGD (whose state goes into checkpoints) makes exactly the updates of
//! `head::optim` with Keras semantics: momentum, Nesterov and decoupled weight decay.

use candle_core::{Device, Tensor, Var};
use finetune::optim::{Sgd, SgdConfig};
use head::optim::Optim;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn compare(config: SgdConfig) {
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
    let mut theirs = Optim::new(vars.clone(), config.to_head()).unwrap();
    let mut sgd = Sgd::new(config.clone(), &sizes).unwrap();
    for _ in 0..5 {
        let grads: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| (0..n).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let mut refs: Vec<&mut Vec<f32>> = ours.iter_mut().collect();
        sgd.step(&mut refs, &grads).unwrap();
        let gt: Vec<Tensor> = grads
            .iter()
            .map(|g| Tensor::from_slice(g, g.len(), &Device::Cpu).unwrap())
            .collect();
        theirs.step_all(&gt).unwrap();
    }
    for (w, v) in ours.iter().zip(&vars) {
        let t: Vec<f32> = v.as_tensor().to_vec1().unwrap();
        assert!(w == &t, "{config:?}: updates differ from head::optim");
    }
    assert_eq!(sgd.iterations, 5);
}

#[test]
fn sgd_momentum_matches_head_optim_bit_for_bit() {
    compare(SgdConfig {
        learning_rate: 1e-2,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    });
}

#[test]
fn nesterov_and_weight_decay_match_head_optim_bit_for_bit() {
    compare(SgdConfig {
        learning_rate: 3e-3,
        momentum: 0.8,
        nesterov: true,
        weight_decay: 0.01,
    });
    compare(SgdConfig {
        learning_rate: 3e-3,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.1,
    });
}

#[test]
fn out_of_range_settings_are_refused() {
    let bad = |c: SgdConfig| Sgd::new(c, &[3]).unwrap_err().to_string();
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
