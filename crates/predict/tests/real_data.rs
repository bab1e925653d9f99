//! On the real Keras VGG16 and 8 + 8 real validation photos (skipped with a note when
//! `../shared` is absent, a failure in CI): the head-stage classifier built as one ONNX graph gives
//! the probabilities of the stage-2 head on the features `extract` cached for the same photos.

use features::extract::{extract, ExtractConfig};
use features::store::{feature_path, FeatureFile};
use head::mlp::TrainConfig;
use head::pipeline::{train_head, TrainHeadOptions};
use predict::{inputs, LoadOptions, Predictor, Stage};
use testkit::{link_shared_subset, shared_root};

#[test]
fn real_vgg16_head_stage_equals_the_head_on_extracted_features() {
    let Some(shared) = shared_root() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    link_shared_subset(&shared, &data, &["train", "validation"], 8).unwrap();
    let run = dir.path().join("run");
    let model = shared.join("models/vgg16_keras_notop.onnx");
    let mut cfg = ExtractConfig::new(&data, model.to_string_lossy(), &run);
    cfg.threads = Some(2);
    extract(&cfg, &mut |_| {}).unwrap();
    let opts = TrainHeadOptions {
        run: run.clone(),
        config: TrainConfig {
            epochs: 3,
            seed: 1,
            recipe: head::recipe::Recipe::Keras2016,
            ..TrainConfig::default()
        },
        val_split: None,
        force: false,
    };
    train_head(&opts, &mut |_| {}).unwrap();

    let c = predict::load(&run, &LoadOptions::default()).unwrap();
    assert_eq!(c.stage, Stage::Head);
    assert_eq!(c.meta.features.output_tensor, "block5_pool");
    let items = inputs::collect(&[data.join("validation")]).unwrap();
    let session = features::runtime::SessionOptions {
        threads: Some(2),
        ..Default::default()
    };
    let mut p = Predictor::new(c, &session, features::runtime::Engine::Auto).unwrap();
    let mut ours = Vec::new();
    p.run(&items, 8, 1, &mut |b, s| {
        assert!(s.is_empty(), "{s:?}");
        ours.extend_from_slice(b);
        Ok(())
    })
    .unwrap();

    let feats = FeatureFile::read(&feature_path(&run, "validation")).unwrap();
    let (head, _) = head::load(&run.join("head/head.safetensors")).unwrap();
    let reference = head.predict(&feats.features).unwrap();
    assert_eq!(ours.len(), reference.len());
    let mut diff = 0f32;
    for (p, (r, file)) in ours.iter().zip(reference.iter().zip(&feats.meta.files)) {
        assert!(p.file.ends_with(file.as_str()), "{} vs {file}", p.file);
        for (a, b) in p.probabilities.iter().zip(r) {
            diff = diff.max((a - b).abs());
        }
    }
    assert!(
        diff <= 1e-4,
        "one-graph classifier vs head on extracted features: {diff}"
    );
    println!(
        "real VGG16, {} photos: max probability difference {diff:.2e}",
        ours.len()
    );
}
