//! Times training steps of the tutorial network at 150×150, batch 16 (forward, backward, and
//! the split between the two) with FP32 and with bf16 products:
//! `[PRECISION=fp32|bf16] cargo run --release -p bottleneck-scratch --example step_bench [steps]`.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scratch::net::{self, Arch, Params};
use train::kernels::TrainPrecision;

/// Multiply-adds ×2 of one 150-px image's training pass, as counted in issue 19.
const GFLOP_PER_IMAGE: f64 = 0.5;

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let arch = Arch::tutorial(150, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let p = Params::init(&arch, &mut rng);
    let batch = 16;
    let x: Vec<f32> = (0..batch * arch.input_len())
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 2).collect();
    let precisions: Vec<TrainPrecision> = match std::env::var("PRECISION") {
        Ok(p) => vec![p.parse().expect("PRECISION is fp32 or bf16")],
        Err(_) => vec![TrainPrecision::Fp32, TrainPrecision::Bf16],
    };
    for precision in precisions {
        let (mut fwd, mut bwd) = (0.0, 0.0);
        for _ in 0..steps {
            let t0 = Instant::now();
            let trace = net::forward(&arch, &p, &x, Some(&mut rng), precision);
            let out = net::loss(&trace.logits, &labels, 1);
            let t1 = Instant::now();
            let g = net::backward(&arch, &p, &x, &trace, &out.dlogits, precision);
            std::hint::black_box(&g);
            fwd += (t1 - t0).as_secs_f64();
            bwd += t1.elapsed().as_secs_f64();
        }
        let s = steps as f64;
        let rate = batch as f64 * s / (fwd + bwd);
        println!(
            "{precision} threads {}: forward {:.1} ms, backward {:.1} ms per step of {batch}: {rate:.1} img/s ({:.0} GFLOP/s); 2000 images ≈ {:.1} s",
            rayon::current_num_threads(),
            fwd / s * 1e3,
            bwd / s * 1e3,
            rate * GFLOP_PER_IMAGE,
            2000.0 / rate
        );
    }
}
