//! The hand-written backward pass of the block and head against finite differences on a small
//! network (three 3×3 convs of 8 channels on 6×6, a max pool and a dense head).

use finetune::block::{Block, ConvLayer, Layer};
use finetune::classifier::Classifier;
use finetune::net::Net;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train::kernels::Nhwc;

fn randn(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

fn tiny_net(rng: &mut ChaCha8Rng, classes: usize) -> (Net, Nhwc) {
    let c = 8;
    let mut layers = Vec::new();
    let mut cin = 4;
    for j in 1..=3 {
        let w = randn(rng, c * cin * 9, (2.0 / (cin as f32 * 9.0)).sqrt() * 1.7);
        let b = randn(rng, c, 0.1);
        let name = format!("block5_conv{j}");
        let wn = format!("{name}_W");
        let bn = format!("{name}_B");
        layers.push(Layer::Conv(
            ConvLayer::from_onnx([&name, &wn, &bn], &w, b, (c, cin), true).unwrap(),
        ));
        cin = c;
    }
    layers.push(Layer::MaxPool {
        node: "block5_pool".into(),
    });
    let block = Block {
        input_tensor: "block4_pool".into(),
        output_tensor: "block5_pool".into(),
        layers,
        precision: train::kernels::TrainPrecision::Fp32,
    };
    let hidden = 6;
    let k = if classes == 2 { 1 } else { classes };
    let d = c * 3 * 3;
    let head = Classifier {
        pooled: false,
        feature_shape: [c, 3, 3],
        hidden,
        num_classes: classes,
        dropout: 0.5,
        w1: randn(rng, d * hidden, 0.5),
        b1: randn(rng, hidden, 0.1),
        w2: randn(rng, hidden * k, 0.8),
        b2: randn(rng, k, 0.1),
    };
    let dims = Nhwc {
        n: 3,
        h: 6,
        w: 6,
        c: 4,
    };
    (Net::new(block, head, dims).unwrap(), dims)
}

fn loss(net: &Net, x: &[f32], d: Nhwc, y: &[u32], mask: &[f32]) -> f64 {
    net.step(x, d, y, Some(mask)).unwrap().loss_sum / d.n as f64
}

fn check_gradients(classes: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(7 + classes as u64);
    let (net, d) = tiny_net(&mut rng, classes);
    let x: Vec<f32> = (0..d.len())
        .map(|_| rng.random_range(0.0f32..2.0))
        .collect();
    let y: Vec<u32> = (0..d.n).map(|i| (i % classes) as u32).collect();
    // A fixed dropout mask (0 or 2) exercises the masked path of the backward pass.
    let mask: Vec<f32> = (0..d.n * net.head.hidden)
        .map(|i| if i % 3 == 1 { 0.0 } else { 2.0 })
        .collect();
    let analytic = net.step(&x, d, &y, Some(&mask)).unwrap().grads;
    let names = net.param_names();
    assert_eq!(analytic.len(), names.len());
    for (p, name) in names.iter().enumerate() {
        let g = &analytic[p];
        assert!(g.iter().any(|v| *v != 0.0), "{name}: gradient is all zeros");
        // Directional derivative along a random unit direction.
        let mut v = randn(&mut rng, g.len(), 1.0);
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= norm);
        let eps = 1e-2f32;
        let shifted = |sign: f32| {
            let mut n2 = net.clone();
            for (w, dv) in n2.params_mut()[p].iter_mut().zip(&v) {
                *w += sign * eps * dv;
            }
            loss(&n2, &x, d, &y, &mask)
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps as f64);
        let exact: f64 = g
            .iter()
            .zip(&v)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let err = (numeric - exact).abs() / exact.abs().max(1e-3);
        assert!(err < 2e-2, "{name}: directional derivative {numeric:.6e} (finite differences) vs {exact:.6e} (backward), rel err {err:.2e}");
        // A few single elements, the largest gradients (least affected by rounding).
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in idx.iter().take(3) {
            // Small steps: a ReLU or max-pool switch inside the step would spoil the quotient.
            let eps = 1e-3f32;
            let one = |sign: f32| {
                let mut n2 = net.clone();
                n2.params_mut()[p][i] += sign * eps;
                loss(&n2, &x, d, &y, &mask)
            };
            let numeric = (one(1.0) - one(-1.0)) / (2.0 * eps as f64);
            let err = (numeric - g[i] as f64).abs() / (g[i] as f64).abs().max(1e-3);
            assert!(
                err < 3e-2,
                "{name}[{i}]: {numeric:.6e} (finite differences) vs {:.6e} (backward)",
                g[i]
            );
        }
    }
}

#[test]
fn block_and_sigmoid_head_gradients_match_finite_differences() {
    check_gradients(2);
}

#[test]
fn block_and_softmax_head_gradients_match_finite_differences() {
    check_gradients(3);
}

#[test]
fn block_input_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (net, d) = tiny_net(&mut rng, 2);
    let x: Vec<f32> = (0..d.len())
        .map(|_| rng.random_range(0.0f32..2.0))
        .collect();
    // L = <block(x), r> for a fixed random r.
    let out_len = net.block.output_dims(d).unwrap().len();
    let r = randn(&mut rng, out_len, 1.0);
    let l = |x: &[f32]| -> f64 {
        let (o, _) = net.block.infer(x, d).unwrap();
        o.iter()
            .zip(&r)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    };
    let trace = net.block.forward(&x, d).unwrap();
    let (_, dx) = net.block.backward(trace, r.clone(), true).unwrap();
    let dx = dx.unwrap();
    let mut v = randn(&mut rng, x.len(), 1.0);
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= norm);
    let eps = 1e-3f32;
    let plus: Vec<f32> = x.iter().zip(&v).map(|(a, b)| a + eps * b).collect();
    let minus: Vec<f32> = x.iter().zip(&v).map(|(a, b)| a - eps * b).collect();
    let numeric = (l(&plus) - l(&minus)) / (2.0 * eps as f64);
    let exact: f64 = dx
        .iter()
        .zip(&v)
        .map(|(a, b)| (*a as f64) * (*b as f64))
        .sum();
    assert!(
        (numeric - exact).abs() / exact.abs() < 1e-2,
        "{numeric} vs {exact}"
    );
}

#[test]
fn conv_matches_a_direct_convolution() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (cin, cout) = (3, 4);
    let d = Nhwc {
        n: 2,
        h: 5,
        w: 6,
        c: cin,
    };
    let w = randn(&mut rng, cout * cin * 9, 1.0);
    let b = randn(&mut rng, cout, 1.0);
    let x = randn(&mut rng, d.len(), 1.0);
    let layer =
        ConvLayer::from_onnx(["c", "c_W", "c_B"], &w, b.clone(), (cout, cin), false).unwrap();
    assert_eq!(layer.onnx_weight(), w, "weight layout round trip");
    let block = Block {
        input_tensor: "in".into(),
        output_tensor: "out".into(),
        layers: vec![Layer::Conv(layer)],
        precision: train::kernels::TrainPrecision::Fp32,
    };
    let (y, od) = block.infer(&x, d).unwrap();
    assert_eq!(od, d.with_channels(cout));
    for bi in 0..d.n {
        for yy in 0..d.h {
            for xx in 0..d.w {
                for o in 0..cout {
                    let mut s = b[o] as f64;
                    for c in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (sy, sx) =
                                    (yy as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                if sy < 0 || sx < 0 || sy >= d.h as isize || sx >= d.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((bi * d.h + sy as usize) * d.w + sx as usize) * cin + c];
                                s += (w[((o * cin + c) * 3 + ky) * 3 + kx] * xv) as f64;
                            }
                        }
                    }
                    let got = y[((bi * d.h + yy) * d.w + xx) * cout + o] as f64;
                    assert!((got - s).abs() < 1e-4, "({bi},{yy},{xx},{o}): {got} vs {s}");
                }
            }
        }
    }
}

#[test]
fn bf16_step_follows_the_fp32_step() {
    if !train::kernels::bf16::available() {
        // CI machines differ: some are AVX2 only (no bf16 kernels to compare).
        eprintln!("skipping: this CPU has no AVX512-BF16");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let (net, d) = tiny_net(&mut rng, 3);
    let x: Vec<f32> = (0..d.len())
        .map(|_| rng.random_range(0.0f32..2.0))
        .collect();
    let y = [0, 2, 1];
    let mask = vec![2.0f32; d.n * net.head.hidden];
    let fp32 = net.step(&x, d, &y, Some(&mask)).unwrap();
    let mut half = net.clone();
    half.block.precision = train::kernels::TrainPrecision::Bf16;
    let bf16 = half.step(&x, d, &y, Some(&mask)).unwrap();
    // Every product is exact on bf16-rounded factors (the kernel tests check that); through the
    // network the rounding (2⁻⁹ per factor) also moves pre-activations near zero across the ReLU,
    // switching those units' gradients on or off. The loss stays within 1%, and every gradient
    // keeps its direction: cosine ≥ 0.97 for the block's tensors on this 8-channel net (errors grow
    // down the backward chain), ≥ 0.9999 for the head's.
    assert!((fp32.loss_sum - bf16.loss_sum).abs() <= 0.01 * fp32.loss_sum.abs());
    let convs = 2 * net.block.convs().count();
    for (i, (a, b)) in fp32.grads.iter().zip(&bf16.grads).enumerate() {
        let dot: f64 = a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (norm(a) * norm(b));
        let floor = if i < convs { 0.97 } else { 0.9999 };
        assert!(cos >= floor, "gradient tensor {i}: cosine {cos} < {floor}");
    }
}
