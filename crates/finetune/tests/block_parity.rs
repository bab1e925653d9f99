//! The Candle block5 built from the real Keras VGG16's initializers reproduces ONNX Runtime's
//! `block5_pool` on real photos, starting from ONNX Runtime's `block4_pool`.

use features::onnx::{cut_at, Layout};
use features::preprocess::{self, Preprocess, Resize};
use features::runtime::{session, SessionOptions};
use finetune::block::{nchw_to_nhwc, nhwc_to_nchw, Layer};
use finetune::checks::max_rel_diff;
use finetune::frozen::run_images;
use finetune::graph::block_from_onnx;
use train::kernels::Nhwc;

#[test]
fn candle_block5_matches_onnx_runtime_on_real_photos() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let model = std::fs::read(shared.join("models/vgg16_keras_notop.onnx")).unwrap();
    let block = block_from_onnx(&model, "block4_pool", "block5_pool").unwrap();
    let convs: Vec<_> = block
        .convs()
        .map(|c| (c.node.as_str(), c.cin, c.cout, c.relu))
        .collect();
    assert_eq!(
        convs,
        vec![
            ("block5_conv1", 512, 512, true),
            ("block5_conv2", 512, 512, true),
            ("block5_conv3", 512, 512, true)
        ]
    );
    assert!(matches!(block.layers.last(), Some(Layer::MaxPool { .. })));

    let files = testkit::shared_photos(&shared, "validation", 2).unwrap();
    let (n, s) = (files.len(), 150u32);
    let per = 3 * (s * s) as usize;
    let mut input = vec![0f32; n * per];
    for (slot, f) in input.chunks_exact_mut(per).zip(&files) {
        let img = preprocess::resize(
            &features::image_io::load_rgb8(f).unwrap().image,
            s,
            s,
            Resize::Nearest,
        )
        .unwrap();
        preprocess::write_input(&img, Preprocess::Caffe, Layout::Nchw, slot).unwrap();
    }
    let opts = SessionOptions::default();
    let run = |tensor: &str| {
        let cut = cut_at(&model, tensor).unwrap();
        let mut r = session(&cut.bytes, &opts).unwrap();
        run_images(&mut r, Layout::Nchw, s, &input, n).unwrap()
    };
    let (d4, x) = run("block4_pool");
    let (d5, reference) = run("block5_pool");
    assert_eq!((d4, d5.clone()), (vec![n, 512, 9, 9], vec![n, 512, 4, 4]));
    let d = Nhwc {
        n,
        h: 9,
        w: 9,
        c: 512,
    };
    let (out, od) = block.infer(&nchw_to_nhwc(&x, d), d).unwrap();
    let ours = nhwc_to_nchw(&out, od);
    let diff = max_rel_diff(&ours, &reference);
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("block5 on {n} photos: max relative difference {diff:.2e} (reference max {scale})");
    assert!(scale > 1.0, "block5_pool is (nearly) all zeros");
    assert!(diff <= 1e-4, "Candle block5 vs ONNX Runtime: {diff:.2e}");
}
