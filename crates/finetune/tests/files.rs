//! Row files (augmentation cache, validation maps) and checkpoints: round trips, atomic writes,
//! and corrupt or truncated files refused with the fix.

use finetune::checkpoint::{self, Checkpoint};
use finetune::config::Settings;
use finetune::rows::{Precision, RowReader, RowWriter};
use train::metrics::{EpochMetrics, Keep};

fn rows(n: usize, len: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            (0..len)
                .map(|j| (i * 1000 + j) as f32 * 0.37 - 50.0)
                .collect()
        })
        .collect()
}

#[test]
fn row_files_round_trip_in_f32_and_f16() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(5, 2 * 3 * 3);
    for precision in [Precision::F32, Precision::F16] {
        let path = dir.path().join(format!("{}.safetensors", precision.name()));
        let meta = [("key".to_string(), "abc".to_string())]
            .into_iter()
            .collect();
        let mut w = RowWriter::create(&path, 5, &[2, 3, 3], precision, &meta).unwrap();
        for r in &data {
            w.push(r).unwrap();
        }
        assert!(!path.exists(), "the file appears only when complete");
        w.finish().unwrap();
        let r = RowReader::open(&path).unwrap();
        assert_eq!(
            (r.rows, r.row_shape.clone(), r.precision),
            (5, vec![2, 3, 3], precision)
        );
        assert_eq!(r.metadata.get("key").map(String::as_str), Some("abc"));
        let mut row = vec![0f32; 18];
        r.read_row(3, &mut row).unwrap();
        for (a, b) in row.iter().zip(&data[3]) {
            let tol = if precision == Precision::F32 {
                0.0
            } else {
                b.abs() * 1e-3
            };
            assert!((a - b).abs() <= tol, "{precision:?}: {a} vs {b}");
        }
        // The file is a valid safetensors file for other tools too.
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("features").unwrap().shape(), &[5, 2, 3, 3]);
    }
}

#[test]
fn unfinished_and_truncated_row_files_are_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("draw.safetensors");
    {
        let mut w = RowWriter::create(&path, 3, &[4], Precision::F16, &Default::default()).unwrap();
        w.push(&[1.0; 4]).unwrap();
        // Dropped without finish, as if the process were killed: nothing is left behind.
    }
    assert!(!path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the temporary file was not removed"
    );

    let mut w = RowWriter::create(&path, 2, &[4], Precision::F32, &Default::default()).unwrap();
    w.push(&[1.0; 4]).unwrap();
    assert!(
        w.push(&[1.0; 3]).is_err(),
        "a row of the wrong length is refused"
    );
    w.push(&[2.0; 4]).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    let e = RowReader::open(&path)
        .err()
        .expect("truncated file accepted")
        .to_string();
    assert!(
        e.contains("truncated") && e.contains("delete the file"),
        "{e}"
    );
}

fn settings() -> Settings {
    Settings {
        model: "m.onnx".into(),
        model_sha256: "00".into(),
        split_at: "block4_pool".into(),
        output_tensor: "block5_pool".into(),
        image_size: 150,
        preprocess: "caffe".into(),
        resize: "nearest".into(),
        classes: vec!["cats".into(), "dogs".into()],
        train_digest: "t".into(),
        val_digest: "v".into(),
        skipped: vec![],
        head_sha256: "h".into(),
        augment: features::augment::AugmentParams::tutorial(),
        seed: 1337,
        int8_key: Some("abc".into()),
        options: finetune::Options {
            keep: Keep::Best,
            precision: finetune::config::FrozenPrecision::Int8,
            train_precision: train::kernels::TrainPrecision::Bf16,
            calibrate: 2,
            ..finetune::Options::default()
        },
    }
}

#[test]
fn settings_from_before_precision_read_as_fp32() {
    let mut v = serde_json::to_value(settings()).unwrap();
    let o = v.as_object_mut().unwrap();
    assert_eq!(o.get("precision").and_then(|p| p.as_str()), Some("int8"));
    assert_eq!(o.get("int8_key").and_then(|p| p.as_str()), Some("abc"));
    o.remove("precision");
    o.remove("int8_key");
    let old: Settings = serde_json::from_value(v).unwrap();
    assert_eq!(
        old.options.precision,
        finetune::config::FrozenPrecision::Fp32
    );
    assert_eq!(old.int8_key, None);
    let diff = old.differences(&settings());
    assert!(diff.iter().any(|d| d.starts_with("precision:")), "{diff:?}");
}

#[test]
fn checkpoints_round_trip_and_refuse_another_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    let names = vec!["a.weight".to_string(), "a.bias".to_string()];
    let ck = Checkpoint {
        settings: settings(),
        epochs: 50,
        history: vec![EpochMetrics {
            epoch: 1,
            loss: 0.5,
            accuracy: 0.75,
            val_loss: 0.25,
            val_accuracy: 0.875,
            seconds: 3.0,
        }],
        params: vec![vec![1.0, -2.0, 3.5], vec![0.25]],
        velocity: vec![vec![0.1, 0.2, 0.3], vec![-0.5]],
        iterations: 125,
        best: Some((1, vec![vec![9.0, 8.0, 7.0], vec![6.0]])),
    };
    checkpoint::save(&path, &names, &ck).unwrap();
    assert_eq!(checkpoint::load(&path, &names).unwrap(), ck);
    assert_eq!(checkpoint::read_settings(&path).unwrap(), (settings(), 50));
    let e = checkpoint::load(&path, &["other".to_string(), "a.bias".to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--force"), "{e}");
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let e = checkpoint::load(&path, &names).unwrap_err().to_string();
    assert!(e.contains("not a safetensors file"), "{e}");
}

#[test]
fn settings_differences_name_the_changed_fields() {
    let a = settings();
    let mut b = settings();
    b.seed = 7;
    b.options.sgd.learning_rate = 1e-3;
    let d = a.differences(&b);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.iter().any(|s| s.starts_with("seed: 1337 vs 7")), "{d:?}");
    assert!(d.iter().any(|s| s.starts_with("sgd:")), "{d:?}");
    assert!(a.differences(&a).is_empty());
}
