//! Stage 2a through `accel::engine::extract` with the Candle engine on the CPU (the GPU code path:
//! `accel::vgg::Vgg` from the ONNX initializers behind `features::engine`) writes the features
//! ONNX Runtime's extraction writes — same files, rows, labels and layout; values within a max
//! relative difference of 1e-4 (FP32 with other summation orders: ~1e-7) — and records the
//! engine in the provenance and the cache key. On synthetic photos with the tiny synthetic VGG,
//! and on real Dogs vs Cats photos with the Keras VGG16 when `../shared` is there.

mod common;

use std::path::Path;

use features::extract::ExtractConfig;
use features::preprocess::Preprocess;
use features::runtime::Engine;
use features::store;
use testkit::compare::max_rel;

fn extract_both(data: &Path, model: &str, dir: &Path, size: u32) -> f32 {
    let config = |run: &Path, engine: Engine| {
        let mut cfg = ExtractConfig::new(data, model, run);
        cfg.preprocess = Some(Preprocess::Caffe);
        cfg.size = size;
        cfg.batch = 4;
        cfg.engine = engine;
        cfg
    };
    let (ra, rb) = (dir.join("ort"), dir.join("candle"));
    let a = accel::engine::extract(&config(&ra, Engine::Ort), &mut |_| {}).unwrap();
    let b = accel::engine::extract(&config(&rb, Engine::Candle), &mut |_| {}).unwrap();
    assert_eq!(
        (a.device.as_str(), b.device.as_str()),
        ("cpu", "cpu (Candle)")
    );
    let mut worst = 0f32;
    for (sa, sb) in a.splits.iter().zip(&b.splits) {
        assert_eq!(
            (&sa.split, sa.rows, &sa.shape),
            (&sb.split, sb.rows, &sb.shape)
        );
        let (fa, fb) = (
            store::FeatureFile::read(&sa.path).unwrap(),
            store::FeatureFile::read(&sb.path).unwrap(),
        );
        assert_eq!(fa.meta.files, fb.meta.files);
        assert_eq!(fa.labels, fb.labels);
        assert_eq!(fa.meta.provenance.engine, None);
        assert_eq!(
            fb.meta.provenance.engine.as_deref(),
            Some("candle cpu fp32")
        );
        assert_eq!(
            fa.meta.provenance.diff(&fb.meta.provenance),
            vec!["engine: null vs \"candle cpu fp32\"".to_string()]
        );
        assert_ne!(fa.meta.cache_key, fb.meta.cache_key);
        let d = max_rel(&fa.features, &fb.features);
        assert!(d <= 1e-4, "{}: max rel. diff {d:.2e}", sa.split);
        worst = worst.max(d);
    }
    worst
}

#[test]
fn candle_extraction_equals_onnx_runtime_on_synthetic_photos() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 3), ("validation", 2)], 4).unwrap();
    let model = t.path().join("tiny.onnx");
    std::fs::write(
        &model,
        testkit::synth::vgg_like(&testkit::synth::VggSpec::default()),
    )
    .unwrap();
    let d = extract_both(&data, model.to_str().unwrap(), t.path(), 64);
    println!("synthetic photos, tiny VGG: max rel. diff {d:.2e}");
}

#[test]
fn candle_extraction_equals_onnx_runtime_on_real_photos() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::link_shared_subset(&shared, &data, &["validation"], 2).unwrap();
    let model = shared.join("models/vgg16_keras_notop.onnx");
    let d = extract_both(&data, model.to_str().unwrap(), t.path(), 150);
    println!("4 Dogs vs Cats photos, Keras VGG16 at 150 px: max rel. diff {d:.2e}");
}
