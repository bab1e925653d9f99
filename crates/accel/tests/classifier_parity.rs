//! A run's exported classifier (conv chain + the dense head `head::onnx::append_head` writes)
//! rebuilt in Candle (`accel::classifier::Network`, what `predict --device cuda` runs) computes
//! the probabilities ONNX Runtime computes from the same graph: two classes (sigmoid, `[1 − p, p]`)
//! and three (softmax); on the tiny synthetic VGG (NCHW and NHWC inputs), and on real Dogs vs Cats
//! photos with the Keras VGG16 when `../shared` is there.

mod common;

use accel::classifier::{Activation, Network};
use accel::ops::to_host;
use accel::{Device, Tensor};
use common::{nchw_to_nhwc, nhwc_to_nchw, photos, run_ort};
use features::onnx::{cut_conv_base, image_input, Layout};
use head::onnx::{append_head, HeadWeights, OUTPUT};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use testkit::synth::{vgg_like, VggSpec};

fn uniform(rng: &mut ChaCha8Rng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-a..a)).collect()
}

/// `model` cut at its conv base with a random head for `classes` classes appended, for features
/// of `d` values with root mean square `rms`: weights scaled so the logits stay within a few
/// units (probabilities away from 0 and 1, where a wrong head would show).
fn classifier(model: &[u8], classes: usize, seed: u64, (d, rms): (usize, f32)) -> Vec<u8> {
    let cut = cut_conv_base(model).unwrap();
    let mut m = features::onnx::build::decode(&cut.bytes).unwrap();
    let hidden = 16;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let outputs = if classes == 2 { 1 } else { classes };
    let h = HeadWeights {
        input_dim: d,
        hidden,
        num_classes: classes,
        w1: uniform(&mut rng, d * hidden, 1.0 / ((d as f32).sqrt() * rms)),
        b1: uniform(&mut rng, hidden, 0.1),
        w2: uniform(&mut rng, hidden * outputs, 1.0),
        b2: uniform(&mut rng, outputs, 0.1),
    };
    append_head(&mut m, &cut.output, &h, "head").unwrap();
    features::onnx::build::encode(&m)
}

/// Values per image and root mean square of the conv base's output on NCHW `input`.
fn feature_stats(model: &[u8], input: &[f32], n: usize, size: usize) -> (usize, f32) {
    let vgg = accel::vgg::Vgg::from_onnx(
        model,
        accel::vgg::Cut::ConvBase,
        &Device::Cpu,
        accel::DType::F32,
    )
    .unwrap();
    let x = Tensor::from_slice(input, (n, 3, size, size), &Device::Cpu).unwrap();
    let f = to_host(&vgg.forward(&x).unwrap()).unwrap();
    let ms = f.iter().map(|v| (v * v) as f64).sum::<f64>() / f.len() as f64;
    (f.len() / n, (ms.sqrt() as f32).max(1e-6))
}

/// Probabilities of `model` on NCHW `input` by ONNX Runtime and by Candle; max |difference|.
fn compare(model: &[u8], input: &[f32], n: usize, size: usize, classes: usize) -> f32 {
    let layout = image_input(model).unwrap().layout;
    let ort_input = match layout {
        Layout::Nchw => input.to_vec(),
        Layout::Nhwc => nchw_to_nhwc(input, n, size),
    };
    let (dims, reference) = run_ort(model, layout, size, &ort_input, n);
    assert_eq!(dims, vec![n, classes]);
    let net = Network::from_onnx(model, OUTPUT, &Device::Cpu).unwrap();
    let head = net.head.as_ref().expect("the classifier's dense head");
    let want = if classes == 2 {
        Activation::Sigmoid
    } else {
        Activation::Softmax
    };
    assert_eq!(head.activation, want);
    let x = Tensor::from_slice(input, (n, 3, size, size), &Device::Cpu).unwrap();
    let y = net.forward(&x).unwrap();
    assert_eq!(y.dims(), [n, classes]);
    let ours = to_host(&y).unwrap();
    for row in ours.chunks_exact(classes) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
    }
    let spread = reference
        .chunks_exact(classes)
        .map(|r| r.iter().fold(0f32, |m, v| m.max(*v)))
        .fold(0f32, f32::max);
    assert!(
        spread < 0.999,
        "probabilities saturate: the check would be weak"
    );
    reference
        .iter()
        .zip(&ours)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
}

#[test]
fn candle_classifier_equals_onnx_runtime_on_the_synthetic_vgg() {
    let size = 32;
    let n = 5;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let input = uniform(&mut rng, n * 3 * size * size, 100.0);
    for nhwc in [false, true] {
        let model = vgg_like(&VggSpec {
            nhwc,
            ..VggSpec::default()
        });
        let stats = feature_stats(&model, &input, n, size);
        for classes in [2, 3] {
            let c = classifier(&model, classes, 11, stats);
            let d = compare(&c, &input, n, size, classes);
            println!("nhwc {nhwc}, {classes} classes: max |Δp| {d:.2e}");
            assert!(
                d <= 1e-5,
                "nhwc {nhwc}, {classes} classes: max |Δp| {d:.2e}"
            );
        }
    }
    // The NHWC↔NCHW helper the test relies on round-trips.
    let back = nhwc_to_nchw(&nchw_to_nhwc(&input, n, size), n, size, size, 3);
    assert_eq!(back, input);
}

#[test]
fn a_feature_tensor_has_no_head_and_a_broken_head_is_named() {
    let model = vgg_like(&VggSpec::default());
    let cut = cut_conv_base(&model).unwrap();
    let net = Network::from_onnx(&model, &cut.output, &Device::Cpu).unwrap();
    assert!(net.head.is_none());
    // A head whose hidden layer lost its ReLU is not the exported head: refused, naming it.
    let input = vec![0f32; 3 * 32 * 32];
    let c = classifier(&model, 3, 1, feature_stats(&model, &input, 1, 32));
    let mut m = features::onnx::build::decode(&c).unwrap();
    let g = m.graph.as_mut().unwrap();
    let relu = g
        .node
        .iter_mut()
        .find(|n| {
            n.op_type.as_deref() == Some("Relu") && n.name.as_deref() == Some("head_dense_1_relu")
        })
        .unwrap();
    relu.op_type = Some("Sigmoid".into());
    let e = Network::from_onnx(&features::onnx::build::encode(&m), OUTPUT, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("head_dense_1_relu") && e.contains("expected a Relu"),
        "{e}"
    );
}

#[test]
fn candle_classifier_equals_onnx_runtime_on_real_photos() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let size = 150;
    let model = std::fs::read(shared.join("models/vgg16_keras_notop.onnx")).unwrap();
    let (input, n) = photos(&shared, 2, size);
    let stats = feature_stats(&model, &input, n, size);
    for classes in [2, 3] {
        let c = classifier(&model, classes, 5, stats);
        let d = compare(&c, &input, n, size, classes);
        println!("{n} Dogs vs Cats photos, Keras VGG16 at {size} px, {classes} classes: max |Δp| {d:.2e}");
        assert!(d <= 1e-5, "{classes} classes: max |Δp| {d:.2e}");
    }
}
