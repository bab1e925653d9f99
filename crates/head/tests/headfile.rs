//! head.safetensors: save/load round trip, metadata fidelity, probabilities, corrupt files.

use candle_core::{Device, Tensor};
use head::headfile::{load, read_meta, save, HeadMeta, FORMAT_VERSION};
use head::model::{HeadConfig, HeadModel};
use train::metrics::Keep;
use train::optim::OptimizerConfig;

fn meta(classes: &[&str], shape: &[usize]) -> HeadMeta {
    HeadMeta {
        format_version: FORMAT_VERSION,
        classes: classes.iter().map(|s| s.to_string()).collect(),
        feature_shape: shape.to_vec(),
        hidden: 8,
        dropout: 0.5,
        features: features::provenance::Provenance {
            model: "123".into(), // text that looks like JSON must survive as text
            model_sha256: "00ff".repeat(16),
            output_tensor: "block5_pool".into(),
            preprocess: "caffe".into(),
            image_size: 150,
            resize: "nearest".into(),
            precision: "fp32".into(),
            engine: None,
        },
        optimizer: OptimizerConfig::rmsprop(1e-4),
        epochs: 50,
        batch_size: 16,
        seed: 7,
        keep: Keep::Best,
        epochs_run: 50,
        kept_epoch: 31,
        val_loss: 0.08,
        val_accuracy: 0.975,
        validation: "split validation".into(),
        recipe: head::recipe::Recipe::Keras2016,
        probe_config: head::probe::ProbeConfig::default(),
        probe: None,
        hold_out: None,
        classifier_sha256: None,
    }
}

fn model(classes: usize, shape: &[usize]) -> HeadModel {
    let cfg = HeadConfig {
        input_shape: shape.to_vec(),
        hidden: 8,
        num_classes: classes,
        dropout: 0.5,
    };
    HeadModel::new(cfg, 1, &Device::Cpu).unwrap()
}

#[test]
fn round_trip_keeps_weights_metadata_and_outputs() {
    let dir = tempfile::tempdir().unwrap();
    for (classes, names) in [(2, vec!["cats", "dogs"]), (3, vec!["a", "b", "c"])] {
        let shape = [3, 2, 2];
        let m = model(classes, &shape);
        let md = meta(&names, &shape);
        let path = dir.path().join(format!("head{classes}.safetensors"));
        save(&path, &m, &md).unwrap();
        let (back, md2) = load(&path).unwrap();
        assert_eq!(md2, md);
        assert_eq!(read_meta(&path).unwrap(), md);
        assert_eq!(back.snapshot().unwrap(), m.snapshot().unwrap());
        let x = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 2, 2))
            .unwrap();
        let p = back.probabilities(&x).unwrap();
        assert_eq!(p.dims(), [2, classes]);
        let want = m.probabilities(&x).unwrap().to_vec2::<f32>().unwrap();
        let got = p.to_vec2::<f32>().unwrap();
        assert_eq!(got, want);
        for row in &got {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(row.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
    }
}

#[test]
fn metadata_is_readable_strings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.safetensors");
    save(&path, &model(2, &[4]), &meta(&["cats", "dogs"], &[4])).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = st.metadata().clone().unwrap();
    assert_eq!(md["format"], "bottleneck-head");
    assert_eq!(md["classes"], r#"["cats","dogs"]"#);
    assert_eq!(md["preprocess"], "caffe");
    assert_eq!(md["model"], "123");
    assert_eq!(md["image_size"], "150");
    assert_eq!(md["kept_epoch"], "31");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("dense_1.kernel").unwrap().shape(), [4, 8]);
    assert_eq!(st.tensor("dense_2.kernel").unwrap().shape(), [8, 1]);
}

#[test]
fn corrupt_or_foreign_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let err = load(&junk).unwrap_err().to_string();
    assert!(err.contains("junk.safetensors"), "{err}");

    let foreign = dir.path().join("foreign.safetensors");
    let t = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("x", t)].into_iter().collect(), &foreign).unwrap();
    let err = load(&foreign).unwrap_err().to_string();
    assert!(err.contains("train-head"), "{err}");

    let missing = dir.path().join("missing.safetensors");
    assert!(load(&missing).is_err());

    // Wrong input size for the forward.
    let m = model(2, &[4]);
    let x = Tensor::zeros((2, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(m.probabilities(&x).is_err());
}

#[test]
fn training_forward_with_mask() {
    use rand::SeedableRng;
    let m = model(2, &[6]);
    let x = Tensor::arange(0f32, 18.0, &Device::Cpu)
        .unwrap()
        .reshape((3, 6))
        .unwrap();
    let ones = Tensor::ones((3, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let a = m
        .logits_with_mask(&x, &ones)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(a, m.logits(&x).unwrap().to_vec2::<f32>().unwrap());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mask = m
        .dropout_mask(200, &mut rng)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let kept = mask.iter().filter(|&&v| v == 2.0).count();
    assert_eq!(
        kept + mask.iter().filter(|&&v| v == 0.0).count(),
        mask.len()
    );
    assert!((700..900).contains(&kept), "{kept} of 1600 kept at p = 0.5");
}
