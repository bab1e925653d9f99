//! Times training steps of the tutorial network at 150×150, batch 16 (forward, backward, and
//! the split between the two), plus one validation forward pass of 32 images:
//! `cargo run --release -p bottleneck-scratch --example step_bench [steps]`.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scratch::net::{self, Arch, Params};

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
    let (mut fwd, mut bwd) = (0.0, 0.0);
    for _ in 0..steps {
        let t0 = Instant::now();
        let trace = net::forward(&arch, &p, &x, Some(&mut rng));
        let out = net::loss(&trace.logits, &labels, 1);
        let t1 = Instant::now();
        let g = net::backward(&arch, &p, &x, &trace, &out.dlogits);
        std::hint::black_box(&g);
        fwd += (t1 - t0).as_secs_f64();
        bwd += t1.elapsed().as_secs_f64();
    }
    let s = steps as f64;
    println!(
        "threads {}: forward {:.1} ms, backward {:.1} ms per step of {batch}: {:.1} img/s; 2000 images ≈ {:.1} s",
        rayon::current_num_threads(),
        fwd / s * 1e3,
        bwd / s * 1e3,
        batch as f64 * s / (fwd + bwd),
        2000.0 / (batch as f64 * s / (fwd + bwd))
    );
}
