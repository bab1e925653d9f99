//! The Candle VGG16 conv base built from the real Keras VGG16's ONNX initializers computes the
//! features ONNX Runtime computes, on real Dogs vs Cats photos preprocessed exactly as `extract`
//! does (Keras nearest resize to 150 px, caffe): FP32 on the CPU, max relative difference ≤ 1e-4
//! (max|a − b| / max|a|). Also reports how close bf16 arithmetic stays (the GPU's fast path).

mod common;

use accel::ops::to_host;
use accel::vgg::{Cut, Vgg};
use accel::{DType, Device, Tensor};
use common::{photos, run_ort};
use features::onnx::cut_conv_base;
use testkit::compare::{cosine, max_rel};

const SIZE: usize = 150;

#[test]
fn candle_vgg16_conv_base_matches_onnx_runtime_on_real_photos() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let model = std::fs::read(shared.join("models/vgg16_keras_notop.onnx")).unwrap();
    let (input, n) = photos(&shared, 4, SIZE);
    assert_eq!(n, 8);

    let cut = cut_conv_base(&model).unwrap();
    let (dims, reference) = run_ort(&cut.bytes, cut.input_layout, SIZE, &input, n);
    assert_eq!(dims, vec![n, 512, 4, 4]);

    let vgg = Vgg::from_onnx(&model, Cut::ConvBase, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(vgg.output_tensor(), "block5_pool");
    assert_eq!(vgg.output_dims(SIZE, SIZE).unwrap(), [512, 4, 4]);
    let x = Tensor::from_slice(&input, (n, 3, SIZE, SIZE), &Device::Cpu).unwrap();
    let t = std::time::Instant::now();
    let ours = vgg.forward(&x).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(ours.dims(), [n, 512, 4, 4]);
    let ours = to_host(&ours).unwrap();

    let diff = max_rel(&reference, &ours);
    let cos = cosine(&reference, &ours);
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    println!(
        "Candle f32 vs ONNX Runtime, {n} photos at {SIZE} px: max rel. diff {diff:.2e}, cosine {cos:.9} \
         (reference max {scale:.1}; Candle CPU forward {secs:.2} s)"
    );
    assert!(scale > 1.0, "block5_pool is (nearly) all zeros");
    assert!(
        diff <= 1e-4,
        "Candle vs ONNX Runtime: max rel. diff {diff:.2e}"
    );
    assert!(cos >= 0.999_999, "cosine {cos}");

    // bf16 weights and activations (f32 accumulation): how much the GPU's fast path moves the features.
    let half = vgg.to_dtype(DType::BF16).unwrap();
    let two = x.narrow(0, 0, 2).unwrap();
    let b = to_host(&half.forward(&two).unwrap()).unwrap();
    let r2 = &reference[..b.len()];
    let (bd, bc) = (max_rel(r2, &b), cosine(r2, &b));
    println!("Candle bf16 vs ONNX Runtime f32, 2 photos: max rel. diff {bd:.2e}, cosine {bc:.6}");
    assert!(bc >= 0.999, "bf16 cosine {bc}");
}
