//! The backward pass of the convnet (conv, pooling, ReLU, dropout, dense, both losses) against
//! central finite differences of the forward pass.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scratch::net::{self, Arch, Params};
use train::kernels::TrainPrecision;

fn mean_loss(arch: &Arch, p: &Params, x: &[f32], labels: &[u32]) -> f64 {
    let mut drop = ChaCha8Rng::seed_from_u64(99);
    let t = net::forward(arch, p, x, Some(&mut drop), TrainPrecision::Fp32);
    net::loss(&t.logits, labels, arch.outputs).loss_sum / labels.len() as f64
}

fn check(outputs: usize, labels: &[u32]) {
    let arch = Arch {
        size: 24,
        filters: vec![3, 4, 5],
        hidden: 7,
        dropout: 0.5,
        outputs,
    };
    arch.validate().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut p = Params::init(&arch, &mut rng);
    // Non-zero biases so that every bias gradient is exercised away from symmetric points.
    for t in p.tensors.iter_mut().skip(1).step_by(2) {
        for v in t.iter_mut() {
            *v = rng.random_range(0.0..0.1);
        }
    }
    let n = labels.len();
    let x: Vec<f32> = (0..n * arch.input_len())
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let mut drop = ChaCha8Rng::seed_from_u64(99);
    let trace = net::forward(&arch, &p, &x, Some(&mut drop), TrainPrecision::Fp32);
    let out = net::loss(&trace.logits, labels, outputs);
    let grads = net::backward(&arch, &p, &x, &trace, &out.dlogits, TrainPrecision::Fp32);
    let names = arch.param_shapes();
    // Small enough that a perturbation rarely crosses a ReLU kink or switches a pooling maximum.
    let eps = 5e-4f32;
    let (mut checked, mut failed) = (0, Vec::new());
    for (ti, (name, _)) in names.iter().enumerate() {
        let len = p.tensors[ti].len();
        let picks: Vec<usize> = if len <= 12 {
            (0..len).collect()
        } else {
            (0..12).map(|_| rng.random_range(0..len)).collect()
        };
        for i in picks {
            let orig = p.tensors[ti][i];
            p.tensors[ti][i] = orig + eps;
            let up = mean_loss(&arch, &p, &x, labels);
            p.tensors[ti][i] = orig - eps;
            let down = mean_loss(&arch, &p, &x, labels);
            p.tensors[ti][i] = orig;
            let fd = (up - down) / (2.0 * eps as f64);
            let an = grads.tensors[ti][i] as f64;
            checked += 1;
            if (fd - an).abs() > 1e-3 + 3e-2 * fd.abs().max(an.abs()) {
                failed.push(format!("{name}[{i}]: analytic {an:.6}, numeric {fd:.6}"));
            }
        }
    }
    // A perturbation can cross a ReLU kink or switch a pooling maximum; allow a rare outlier.
    assert!(
        failed.len() * 50 <= checked,
        "{} of {checked} gradient entries disagree:\n{}",
        failed.len(),
        failed.join("\n")
    );
    // Every tensor received a non-trivial gradient.
    for (g, (name, _)) in grads.tensors.iter().zip(&names) {
        assert!(
            g.iter().any(|v| v.abs() > 1e-6),
            "{name}: gradient is all zero"
        );
    }
}

#[test]
fn sigmoid_network_gradients_match_finite_differences() {
    check(1, &[0, 1, 1]);
}

#[test]
fn softmax_network_gradients_match_finite_differences() {
    check(3, &[2, 0, 1]);
}

#[test]
fn gradients_do_not_depend_on_the_thread_count() {
    let arch = Arch::tutorial(40, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let p = Params::init(&arch, &mut rng);
    let x: Vec<f32> = (0..4 * arch.input_len())
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut drop = ChaCha8Rng::seed_from_u64(5);
            let t = net::forward(&arch, &p, &x, Some(&mut drop), TrainPrecision::Fp32);
            let out = net::loss(&t.logits, &[0, 1, 1, 0], 1);
            net::backward(&arch, &p, &x, &t, &out.dlogits, TrainPrecision::Fp32)
        })
    };
    assert_eq!(run(1), run(3));
}
