//! `accel::nodes::NodeNet`, the network rebuilt from an ONNX graph's own nodes: it computes what
//! ONNX Runtime computes between the same two tensors (the tiny MobileNet-shaped model from its
//! image input, and the real MobileNetV2 / EfficientNet-Lite0 tops on real photos), and its
//! gradients equal finite differences on a real photo.

mod common;

use accel::nodes::NodeNet;
use accel::Device;
use common::run_ort;
use features::onnx::{cut_at, Layout};
use features::preprocess::{Preprocess, Resize};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use testkit::compare::max_rel;

/// The tensor `name` of `model` for NCHW `input`, by ONNX Runtime.
fn tensor(model: &[u8], name: &str, input: &[f32], n: usize, size: usize) -> Vec<f32> {
    let cut = cut_at(model, name).unwrap();
    run_ort(&cut.bytes, Layout::Nchw, size, input, n).1
}

fn shape_of(values: usize, n: usize, c: usize) -> [usize; 3] {
    let side = ((values / n / c) as f64).sqrt() as usize;
    assert_eq!(side * side * c * n, values, "a square map");
    [c, side, side]
}

fn image(rng: &mut ChaCha8Rng, n: usize, size: usize) -> Vec<f32> {
    (0..n * 3 * size * size)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect()
}

#[test]
fn the_tiny_mobile_graph_matches_onnx_runtime_from_its_image_input() {
    let model = testkit::mobile::mobile_like(3, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (n, size) = (2, 19);
    let x = image(&mut rng, n, size);
    let want = tensor(&model, "pooled", &x, n, size);
    let net = NodeNet::from_onnx(&model, "input", "pooled").unwrap();
    assert_eq!(net.output_dims([3, size, size]).unwrap(), [16, 1, 1]);
    let got = net.forward(&x, [3, size, size], &Device::Cpu).unwrap();
    assert!(max_rel(&want, &got) < 1e-4, "{}", max_rel(&want, &got));
    // From the stem's output: a depthwise SAME_UPPER conv, Clip, a residual Add of the input, …
    let stem = tensor(&model, "stem_act", &x, n, size);
    let top = NodeNet::from_onnx(&model, "stem_act", "pooled").unwrap();
    let got = top
        .forward(&stem, shape_of(stem.len(), n, 8), &Device::Cpu)
        .unwrap();
    assert!(max_rel(&want, &got) < 1e-4);
    assert_eq!(top.params.len(), 4, "dw and pw weights and biases");
}

#[test]
fn what_cannot_be_rebuilt_is_named() {
    let model = testkit::mobile::mobile_like(3, 5);
    let e = NodeNet::from_onnx(&model, "stem_act", "logits")
        .unwrap_err()
        .to_string();
    assert!(e.contains("Gemm") && e.contains("trainable_from"), "{e}");
    let e = NodeNet::from_onnx(&model, "no_such", "pooled")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_such"), "{e}");
    let e = NodeNet::from_onnx(&model, "dw_act", "pooled")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("residual") && e.contains("stem_act"),
        "the residual reads a tensor from below: {e}"
    );
}

/// Real photos preprocessed for a backbone (torchvision-style bilinear resize + centre crop).
fn real_photos(shared: &std::path::Path, per_class: usize, p: Preprocess) -> (Vec<f32>, usize) {
    let files = testkit::shared_photos(shared, "validation", per_class).unwrap();
    let per = 3 * 224 * 224;
    let mut input = vec![0f32; files.len() * per];
    for (slot, f) in input.chunks_exact_mut(per).zip(&files) {
        features::extract::prepare(f, 224, Resize::BilinearCrop, p, Layout::Nchw, slot).unwrap();
    }
    (input, files.len())
}

#[test]
fn real_mobilenet_and_efficientnet_tops_match_onnx_runtime() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    for (file, from, channels, p) in [
        (
            "mobilenet_v2_torchvision.onnx",
            "features.16",
            160,
            Preprocess::Torch,
        ),
        (
            "efficientnet_lite0.onnx",
            "blocks.14",
            192,
            Preprocess::Lite,
        ),
    ] {
        let model = std::fs::read(shared.join("models").join(file)).unwrap();
        let (x, n) = real_photos(&shared, 2, p);
        let below = tensor(&model, from, &x, n, 224);
        let want = tensor(&model, "pooled", &x, n, 224);
        let net = NodeNet::from_onnx(&model, from, "pooled").unwrap();
        let got = net
            .forward(&below, shape_of(below.len(), n, channels), &Device::Cpu)
            .unwrap();
        let d = max_rel(&want, &got);
        assert!(d < 1e-4, "{file}: max relative difference {d}");
    }
}

/// `Σ out · g` in f64.
fn objective(net: &NodeNet, x: &[f32], chw: [usize; 3], g: &[f32]) -> f64 {
    let y = net.forward(x, chw, &Device::Cpu).unwrap();
    y.iter().zip(g).map(|(a, b)| *a as f64 * *b as f64).sum()
}

#[test]
fn gradients_of_a_real_mobilenet_top_equal_finite_differences() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let model = std::fs::read(shared.join("models/mobilenet_v2_torchvision.onnx")).unwrap();
    let (x, n) = real_photos(&shared, 1, Preprocess::Torch);
    let below = tensor(&model, "features.16", &x, n, 224);
    let chw = shape_of(below.len(), n, 160);
    let mut net = NodeNet::from_onnx(&model, "features.16", "pooled").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let g: Vec<f32> = (0..n * 1280).map(|_| rng.random_range(-1.0..1.0)).collect();
    let grads = net.gradients(&below, chw, &g, &Device::Cpu).unwrap();
    assert_eq!(grads.len(), net.params.len());
    assert!(grads.iter().flatten().all(|v| v.is_finite()));
    // Every parameter tensor (depthwise 3×3, 1×1 expand/project, the last conv, biases): its
    // largest-gradient entries against central differences. The objective is piecewise linear in
    // one weight (convolutions, ReLU6), so a small step is exact but for rounding.
    let mut checked = 0;
    for (p, grad) in grads.iter().enumerate() {
        let mut order: Vec<usize> = (0..grad.len()).collect();
        order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
        for &i in order.iter().take(2) {
            let h = 1e-2_f32 * net.params[p].values[i].abs().max(0.1);
            let keep = net.params[p].values[i];
            net.params[p].values[i] = keep + h;
            let up = objective(&net, &below, chw, &g);
            net.params[p].values[i] = keep - h;
            let down = objective(&net, &below, chw, &g);
            net.params[p].values[i] = keep;
            let fd = (up - down) / (2.0 * h as f64);
            let err = (fd - grad[i] as f64).abs() / grad[i].abs().max(1e-3) as f64;
            assert!(
                err < 2e-2,
                "{} [{i}]: autograd {} vs finite differences {fd}",
                net.params[p].name,
                grad[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * net.params.len());
}

/// What `--device cuda` runs for these backbones (Candle's frozen network, and `predict`'s
/// classifier body): the whole EfficientNet-Lite0 and MobileNetV2 from the image to `pooled`
/// (stride-2 convolutions with asymmetric or symmetric padding, 5×5 depthwise), here on the CPU.
#[test]
fn whole_real_backbones_rebuild_from_the_image_input() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    for (file, p) in [
        ("efficientnet_lite0.onnx", Preprocess::Lite),
        ("mobilenet_v2_torchvision.onnx", Preprocess::Torch),
    ] {
        let model = std::fs::read(shared.join("models").join(file)).unwrap();
        let (x, n) = real_photos(&shared, 1, p);
        let want = tensor(&model, "pooled", &x, n, 224);
        let net = accel::classifier::Network::from_onnx(&model, "pooled", &Device::Cpu).unwrap();
        let input = accel::Tensor::from_slice(&x, (n, 3, 224, 224), &Device::Cpu).unwrap();
        let got = accel::ops::to_host(&net.forward(&input).unwrap()).unwrap();
        let d = max_rel(&want, &got);
        assert!(d < 1e-3, "{file}: max relative difference {d}");
    }
}
