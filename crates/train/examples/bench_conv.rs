//! Times the three products of a 3×3 convolution layer (forward, weight gradient, input
//! gradient) in FP32 and bf16 on the shapes of fine-tuning's block5 (a batch of 16 at 224 px)
//! and of stage 1's second convolution (one 150-px image on one thread):
//! `cargo run --release -p bottleneck-train --example bench_conv`.

use std::time::Instant;

use train::kernels::convolve::{self, Run};
use train::kernels::{Nhwc, Threads, TrainPrecision};

fn main() {
    let layers = [
        (
            "block5 conv, batch 16",
            Nhwc {
                n: 16,
                h: 14,
                w: 14,
                c: 512,
            },
            512,
            1,
            Threads::All,
        ),
        (
            "stage-1 conv2, 1 image",
            Nhwc {
                n: 1,
                h: 74,
                w: 74,
                c: 32,
            },
            32,
            0,
            Threads::One,
        ),
        (
            "stage-1 conv1, 1 image",
            Nhwc {
                n: 1,
                h: 150,
                w: 150,
                c: 3,
            },
            32,
            0,
            Threads::One,
        ),
    ];
    for (name, d, cout, pad, threads) in layers {
        let od = d.conv3x3(cout, pad);
        let x: Vec<f32> = (0..d.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..9 * d.c * cout)
            .map(|i| (i as f32 * 0.71).cos() * 0.05)
            .collect();
        let dz: Vec<f32> = (0..od.len()).map(|i| (i as f32 * 0.13).sin()).collect();
        let (mut y, mut dw, mut dx) = (
            vec![0f32; od.len()],
            vec![0f32; w.len()],
            vec![0f32; d.len()],
        );
        let flop = 2.0 * (od.pixels() * 9 * d.c * cout) as f64;
        let reps = ((2e10 / flop) as usize).clamp(3, 500);
        println!(
            "{name}: {od:?} from {d:?}, {:.2} GFLOP per product",
            flop / 1e9
        );
        for p in [TrainPrecision::Fp32, TrainPrecision::Bf16] {
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                flop / (t.elapsed().as_secs_f64() / reps as f64) / 1e9
            };
            let fwd =
                time(&mut || convolve::forward(Run::new(p, threads), &x, d, pad, &w, cout, &mut y));
            let wg = time(&mut || {
                convolve::weight_grad(Run::new(p, threads), &x, d, pad, &dz, cout, &mut dw)
            });
            let ig = time(&mut || {
                convolve::input_grad(Run::new(p, threads), &dz, d, pad, &w, cout, &mut dx)
            });
            println!("  {p}: forward {fwd:6.1}, weight grad {wg:6.1}, input grad {ig:6.1} GFLOP/s");
        }
    }
}
