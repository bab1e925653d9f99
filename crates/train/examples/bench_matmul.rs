//! Times the FP32 and bf16 products on the shapes of fine-tuning's block5 (batch 16 at 224 px)
//! and stage 1's convolutions: `cargo run --release -p bottleneck-train --example bench_matmul`.

use std::time::Instant;

use train::kernels::{bf16, matmul_in, MatRef, Threads, TrainPrecision};

fn main() {
    let shapes: [(&str, usize, usize, usize, bool, bool, Threads); 6] = [
        ("block5 forward  cols·W", 3136, 4608, 512, false, false, Threads::All),
        ("block5 dW       colsᵀ·dz", 4608, 3136, 512, true, false, Threads::All),
        ("block5 dcols    dz·Wᵀ", 3136, 512, 4608, false, true, Threads::All),
        ("scratch conv2   cols·W", 5184, 288, 32, false, false, Threads::One),
        ("scratch conv2 dW colsᵀ·dz", 288, 5184, 32, true, false, Threads::One),
        ("scratch conv2 dcols dz·Wᵀ", 5184, 32, 288, false, true, Threads::One),
    ];
    println!("bf16 kernels available: {}", bf16::available());
    for (name, m, k, n, ta, tb, threads) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.71).cos()).collect();
        let av = if ta { MatRef::t(&a, k, m) } else { MatRef::new(&a, m, k) };
        let bv = if tb { MatRef::t(&b, n, k) } else { MatRef::new(&b, k, n) };
        let mut c = vec![0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let mut line = format!("{name:28} {m:5}×{k:5}×{n:5}");
        for p in [TrainPrecision::Fp32, TrainPrecision::Bf16] {
            let reps = ((4e10 / flop) as usize).clamp(3, 2000);
            matmul_in(p, av, bv, &mut c, false, threads);
            let t = Instant::now();
            for _ in 0..reps {
                matmul_in(p, av, bv, &mut c, false, threads);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            line += &format!("  {p}: {:6.1} GFLOP/s", flop / s / 1e9);
        }
        println!("{line}");
    }
}
