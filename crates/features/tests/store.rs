//! The feature file: round trip, header-only reads, atomic writes, and corrupt-file errors.

use features::store::{self, FeatureFile, FeatureMeta, FeatureWriter, Skipped};

fn meta() -> FeatureMeta {
    FeatureMeta {
        format_version: store::FORMAT_VERSION,
        split: "train".into(),
        classes: vec!["cats".into(), "dogs".into()],
        provenance: features::provenance::Provenance {
            model: "m.onnx".into(),
            model_sha256: "ab".repeat(32),
            output_tensor: "block5_pool".into(),
            preprocess: "caffe".into(),
            image_size: 150,
            resize: "nearest".into(),
            precision: "fp32".into(),
            engine: None,
        },
        files: vec![],
        skipped: vec![Skipped {
            file: "train/cats/bad.jpg".into(),
            reason: "empty file".into(),
        }],
        excluded: vec![],
        cache_key: "k".into(),
        shard: None,
    }
}

#[test]
fn round_trip_keeps_rows_labels_files_and_metadata() {
    let t = tempfile::tempdir().unwrap();
    let path = store::feature_path(t.path(), "train");
    let mut w = FeatureWriter::create(&path, &[2, 1, 2]).unwrap();
    w.push(&[1.0, 2.0, 3.0, 4.0], 0, "train/cats/a.jpg")
        .unwrap();
    assert!(!path.exists(), "nothing at the final path before finish");
    w.push(&[5.0, 6.0, 7.0, 8.5], 1, "train/dogs/b.jpg")
        .unwrap();
    assert!(
        w.push(&[1.0], 1, "x").is_err(),
        "wrong row length is rejected"
    );
    w.finish(meta()).unwrap();

    let f = FeatureFile::read(&path).unwrap();
    assert_eq!(f.shape, vec![2, 2, 1, 2]);
    assert_eq!(f.features, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.5]);
    assert_eq!(f.labels, vec![0, 1]);
    assert_eq!(f.meta.files, vec!["train/cats/a.jpg", "train/dogs/b.jpg"]);
    assert_eq!(f.meta.skipped, meta().skipped);
    assert_eq!(f.meta.classes, vec!["cats", "dogs"]);
    let (m, shape) = store::read_header(&path).unwrap();
    assert_eq!(shape, vec![2, 2, 1, 2]);
    assert_eq!(m.files.len(), 2);
    assert_eq!(store::list_splits(t.path()).unwrap(), vec!["train"]);
    let leftovers: Vec<_> = std::fs::read_dir(store::features_dir(t.path()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers,
        vec!["train.safetensors"],
        "temporary files are removed"
    );
}

#[test]
fn plain_safetensors_readers_accept_the_file() {
    let t = tempfile::tempdir().unwrap();
    let path = store::feature_path(t.path(), "validation");
    let mut w = FeatureWriter::create(&path, &[3, 1, 1]).unwrap();
    w.push(&[0.5, -1.0, 2.0], 1, "validation/dogs/x.jpg")
        .unwrap();
    w.finish(meta()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("features").unwrap().shape(), &[1, 3, 1, 1]);
    assert_eq!(
        st.tensor("labels").unwrap().dtype(),
        safetensors::Dtype::I64
    );
}

#[test]
fn corrupt_and_foreign_files_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("x.safetensors");
    std::fs::write(&p, b"garbage").unwrap();
    let e = FeatureFile::read(&p).unwrap_err().to_string();
    assert!(
        e.contains("x.safetensors") && e.contains("bottleneck extract"),
        "{e}"
    );
    // A valid safetensors file without our metadata.
    let data = [0u8; 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &data).unwrap();
    safetensors::serialize_to_file([("features", view)], None, &p).unwrap();
    let e = FeatureFile::read(&p).unwrap_err().to_string();
    assert!(e.contains("metadata key"), "{e}");
}
