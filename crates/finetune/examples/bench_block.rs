//! Times one training pass (forward + backward) of a VGG16 block5-sized block on a batch of 16
//! S×S×512 maps (14 at 224 px, 9 at 150 px): this crate's im2col kernels with FP32 and with bf16
//! products (and, with `--candle`, Candle's stock `conv2d` with autograd).
//!
//! `[PRECISION=fp32|bf16] cargo run --release -p bottleneck-finetune --example bench_block [-- ITERS [S] [--candle]]`

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use finetune::block::{Block, ConvLayer, Layer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train::kernels::{Nhwc, TrainPrecision};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let s: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(14);
    let (n, c) = (16usize, 512usize);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut rand = |k: usize, scale: f32| -> Vec<f32> {
        (0..k).map(|_| rng.random_range(-scale..scale)).collect()
    };
    let ws: Vec<Vec<f32>> = (0..3).map(|_| rand(c * c * 9, 0.02)).collect();
    let bs: Vec<Vec<f32>> = (0..3).map(|_| rand(c, 0.1)).collect();
    let x = rand(n * c * s * s, 1.0);
    println!(
        "threads: candle {}, batch {n}×{c}×{s}×{s}, 3 convs 3×3 {c}→{c} + ReLU + 2×2 pool",
        candle_core::utils::get_num_threads()
    );

    // Stock Candle: NCHW conv2d on Vars, backward through autograd.
    let dev = Device::Cpu;
    let wv: Vec<Var> = ws
        .iter()
        .map(|w| Var::from_slice(w, (c, c, 3, 3), &dev))
        .collect::<Result<_, _>>()?;
    let bv: Vec<Var> = bs
        .iter()
        .map(|b| Var::from_slice(b, (1, c, 1, 1), &dev))
        .collect::<Result<_, _>>()?;
    let xt = Tensor::from_slice(&x, (n, c, s, s), &dev)?;
    let mut stock = std::env::args().any(|a| a == "--candle").then(Vec::new);
    for i in 0..=stock.as_ref().map_or(0, |_| iters) {
        let Some(stock) = stock.as_mut() else { break };
        let t = Instant::now();
        let mut h = xt.clone();
        for (w, b) in wv.iter().zip(&bv) {
            h = h
                .conv2d(w.as_tensor(), 1, 1, 1, 1)?
                .broadcast_add(b.as_tensor())?
                .relu()?;
        }
        let loss = h.max_pool2d(2)?.sum_all()?;
        let grads = loss.backward()?;
        for w in &wv {
            grads.get(w.as_tensor()).ok_or("missing gradient")?;
        }
        if i > 0 {
            stock.push(t.elapsed().as_secs_f64());
        }
    }

    // This crate: NHWC im2col + matmul, hand-written backward, in FP32 and bf16 products.
    let layers: Vec<Layer> = (0..3)
        .map(|j| {
            let name = format!("block5_conv{}", j + 1);
            ConvLayer::from_onnx([&name, "w", "b"], &ws[j], bs[j].clone(), (c, c), true)
                .map(Layer::Conv)
        })
        .chain(std::iter::once(Ok(Layer::MaxPool {
            node: "block5_pool".into(),
        })))
        .collect::<Result<_, _>>()?;
    let d = Nhwc { n, h: s, w: s, c };
    let xn = finetune::block::nchw_to_nhwc(&x, d);
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    if let Some(stock) = stock.as_mut() {
        println!(
            "stock candle conv2d fwd+bwd: {:.3} s/batch (median of {iters})",
            med(stock)
        );
    }
    // Forward, weight gradients, and input gradients of the two upper convs (what a step runs).
    let flop = 2.0 * (n * s * s * 9 * c * c) as f64 * 8.0;
    let precisions: Vec<TrainPrecision> = match std::env::var("PRECISION") {
        Ok(p) => vec![p.parse()?],
        Err(_) => vec![TrainPrecision::Fp32, TrainPrecision::Bf16],
    };
    for precision in precisions {
        let block = Block {
            input_tensor: "block4_pool".into(),
            output_tensor: "block5_pool".into(),
            layers: layers.clone(),
            precision,
        };
        let (mut all, mut fwd) = (Vec::new(), Vec::new());
        for i in 0..=iters {
            let t = Instant::now();
            let trace = block.forward(&xn, d)?;
            let f = t.elapsed().as_secs_f64();
            let g = vec![1f32; trace.dims.len()];
            let (grads, _) = block.backward(trace, g, false)?;
            assert_eq!(grads.len(), 6, "three convs: weight and bias each");
            if i > 0 {
                all.push(t.elapsed().as_secs_f64());
                fwd.push(f);
            }
        }
        let step = med(&mut all);
        println!(
            "im2col + matmul {precision}: fwd+bwd {step:.3} s/batch (forward {:.3} s): {:.1} img/s, {:.0} GFLOP/s",
            med(&mut fwd),
            n as f64 / step,
            flop / step / 1e9
        );
    }
    Ok(())
}
