//! Reading the conv chain out of ONNX models: synthetic VGG-shaped models (NCHW, and NHWC with
//! the Transposes tf2onnx writes, with and without a classifier) cut at the conv base or at a
//! named tensor give ONNX Runtime's outputs; other ops are refused naming the node; the network
//! survives a round trip through its safetensors file.

mod common;

use accel::ops::to_host;
use accel::vgg::{Cut, Layer, Vgg};
use accel::{DType, Device, Tensor};
use common::{nhwc_to_nchw, run_ort};
use features::onnx::{cut_at, cut_conv_base, Layout};
use testkit::compare::max_rel;
use testkit::synth::{vgg_like, vgg_like_proto, VggSpec};

fn noise(n: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn check(model: &[u8], cut: Cut<'_>, nhwc: bool, want: &[usize]) {
    let (n, s) = (3, 32);
    let raw = noise(n * 3 * s * s, 7);
    let cm = match cut {
        Cut::ConvBase => cut_conv_base(model).unwrap(),
        Cut::At(t) => cut_at(model, t).unwrap(),
    };
    let layout = if nhwc { Layout::Nhwc } else { Layout::Nchw };
    assert_eq!(cm.input_layout, layout);
    let (dims, reference) = run_ort(&cm.bytes, layout, s, &raw, n);
    assert_eq!(dims, want);
    let nchw = if nhwc {
        nhwc_to_nchw(&raw, n, s, s, 3)
    } else {
        raw
    };
    let vgg = Vgg::from_onnx(model, cut, &Device::Cpu, DType::F32).unwrap();
    let x = Tensor::from_vec(nchw, (n, 3, s, s), &Device::Cpu).unwrap();
    let ours = vgg.forward(&x).unwrap();
    assert_eq!(ours.dims(), want);
    let d = max_rel(&reference, &to_host(&ours).unwrap());
    assert!(d <= 1e-5, "{cut:?} nhwc={nhwc}: {d:e}");
}

#[test]
fn nchw_conv_base_and_named_cut_match_onnx_runtime() {
    let model = vgg_like(&VggSpec::default());
    check(&model, Cut::ConvBase, false, &[3, 16, 1, 1]);
    check(&model, Cut::At("block3_pool"), false, &[3, 8, 4, 4]);
    check(&model, Cut::At("block4_conv2"), false, &[3, 16, 4, 4]);
    let vgg = Vgg::from_onnx(&model, Cut::At("block2_pool"), &Device::Cpu, DType::F32).unwrap();
    let kinds: Vec<&str> = vgg
        .layers()
        .iter()
        .map(|l| match l {
            Layer::Conv { relu: true, .. } => "conv+relu",
            Layer::Conv { .. } => "conv",
            Layer::MaxPool { .. } => "pool",
            Layer::Relu { .. } => "relu",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "conv+relu",
            "conv+relu",
            "pool",
            "conv+relu",
            "conv+relu",
            "pool"
        ]
    );
}

#[test]
fn nhwc_exports_with_a_classifier_match_onnx_runtime() {
    let spec = VggSpec {
        nhwc: true,
        classifier: Some(vec![10, 5]),
        ..VggSpec::default()
    };
    let model = vgg_like(&spec);
    check(&model, Cut::ConvBase, true, &[3, 16, 1, 1]);
    check(&model, Cut::At("block4_pool"), true, &[3, 16, 2, 2]);
    // The NHWC copy of the conv base that the export makes for its classifier.
    check(&model, Cut::At("block5_pool_nhwc"), true, &[3, 16, 1, 1]);
}

#[test]
fn unsupported_layers_are_refused_by_name() {
    let mut m = vgg_like_proto(&VggSpec::default());
    let g = m.graph.as_mut().unwrap();
    let pool = g
        .node
        .iter_mut()
        .find(|n| n.name.as_deref() == Some("block2_pool"))
        .unwrap();
    pool.op_type = Some("AveragePool".into());
    let bytes = features::onnx::build::encode(&m);
    let e = Vgg::from_onnx(&bytes, Cut::ConvBase, &Device::Cpu, DType::F32).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("block2_pool") && msg.contains("AveragePool"),
        "{msg}"
    );
    assert!(msg.contains("ONNX Runtime"), "{msg}");

    let e = Vgg::from_onnx(
        &vgg_like(&VggSpec::default()),
        Cut::At("nope"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn safetensors_round_trip_keeps_layers_and_weights() {
    let model = vgg_like(&VggSpec::default());
    let vgg = Vgg::from_onnx(&model, Cut::ConvBase, &Device::Cpu, DType::F32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg.safetensors");
    vgg.to_dtype(DType::BF16).unwrap().save(&path).unwrap();
    let back = Vgg::load_safetensors(&path, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(back.output_tensor(), "block5_pool");
    assert_eq!(back.layers().len(), vgg.layers().len());
    let x = Tensor::from_vec(noise(2 * 3 * 32 * 32, 3), (2, 3, 32, 32), &Device::Cpu).unwrap();
    let a = to_host(&vgg.forward(&x).unwrap()).unwrap();
    let b = to_host(&back.forward(&x).unwrap()).unwrap();
    // bf16 weights: about 3 significant digits.
    let d = max_rel(&a, &b);
    assert!(d > 0.0 && d < 0.05, "{d}");
    assert!(Vgg::load_safetensors(&dir.path().join("missing"), &Device::Cpu, DType::F32).is_err());
}

/// Splitting the conv base after `block4_pool` gives the frozen part (ONNX Runtime's
/// `block4_pool`) and block 5 as trainable layers whose forward gives the rest.
#[test]
fn split_after_gives_the_frozen_part_and_the_block() {
    use accel::train::{BlockLayer, FineTuneNet, HeadWeights};
    let model = vgg_like(&VggSpec::default());
    let vgg = Vgg::from_onnx(&model, Cut::ConvBase, &Device::Cpu, DType::F32).unwrap();
    let (frozen, block) = vgg.split_after("block4_pool").unwrap();
    assert_eq!(frozen.output_tensor(), "block4_pool");
    assert_eq!(frozen.output_dims(32, 32).unwrap(), [16, 2, 2]);
    assert_eq!(block.len(), 4);
    assert!(matches!(block[3], BlockLayer::MaxPool));
    let cut = cut_at(&model, "block4_pool").unwrap();
    let (n, s) = (2, 32);
    let x = noise(n * 3 * s * s, 11);
    let (_, reference) = run_ort(&cut.bytes, Layout::Nchw, s, &x, n);
    let xt = Tensor::from_vec(x, (n, 3, s, s), &Device::Cpu).unwrap();
    let maps = frozen.forward(&xt).unwrap();
    let d = max_rel(&reference, &to_host(&maps).unwrap());
    assert!(d <= 1e-5, "{d}");
    // Block 5 then an identity-like head: logits = sum of the block output.
    let head = HeadWeights {
        feature_shape: [16, 1, 1],
        hidden: 16,
        outputs: 1,
        dropout: 0.0,
        w1: (0..256)
            .map(|i| if i % 17 == 0 { 1.0 } else { 0.0 })
            .collect(),
        b1: vec![0.0; 16],
        w2: vec![1.0; 16],
        b2: vec![0.0],
    };
    let net = FineTuneNet::new(&block, &head, &Device::Cpu, DType::F32).unwrap();
    let z = to_host(&net.logits(&maps).unwrap()).unwrap();
    let full = to_host(&vgg.forward(&xt).unwrap()).unwrap();
    let sums: Vec<f32> = full.chunks(16).map(|c| c.iter().sum()).collect();
    assert!(max_rel(&sums, &z) <= 1e-5, "{sums:?} vs {z:?}");
    assert!(vgg.split_after("nope").is_err());
}
