//! The real Keras VGG16 on real photos from `../shared`: shapes and labels, the manifest recognised by
//! checksum, and features equal to Python onnxruntime's on the same input tensors (and close to Keras').

use std::path::{Path, PathBuf};
use std::process::Command;

use features::extract::{self, ExtractConfig};
use features::onnx::Layout;
use features::preprocess::{Preprocess, Resize};
use features::store::{self, FeatureFile};

fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if py.is_file() {
        return Some(py);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing: run scripts/setup.sh", py.display());
    }
    eprintln!("note: no .venv (scripts/setup.sh); skipping the Python cross-check");
    None
}

#[test]
fn real_vgg16_features_match_python_onnxruntime() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::link_shared_subset(&shared, &data, &["validation"], 12).unwrap();
    let model = shared.join("models/vgg16_keras_notop.onnx");
    let mut cfg = ExtractConfig::new(&data, model.to_string_lossy(), t.path().join("run"));
    cfg.preprocess = None; // recognised by sha256 → vgg16-keras manifest → caffe
    let s = extract::extract(&cfg, &mut |_| {}).unwrap();
    assert_eq!(s.preprocess, Preprocess::Caffe);
    assert_eq!(s.output_tensor, "block5_pool");
    let path = store::feature_path(&cfg.run, "validation");
    let f = FeatureFile::read(&path).unwrap();
    assert_eq!(f.shape, vec![24, 512, 4, 4]);
    assert_eq!(f.labels.iter().filter(|&&y| y == 0).count(), 12);
    assert!(
        f.meta.files[0].starts_with("validation/cats/")
            && f.meta.files[23].starts_with("validation/dogs/")
    );

    let Some(py) = python() else { return };
    // The exact tensors our pipeline feeds the session, for 8 rows of both classes.
    let picks: Vec<usize> = vec![0, 1, 2, 3, 20, 21, 22, 23];
    let per = 3 * 150 * 150;
    let mut inputs = vec![0f32; picks.len() * per];
    let mut files = Vec::new();
    for (k, &row) in picks.iter().enumerate() {
        let rel = &f.meta.files[row];
        extract::prepare(
            &data.join(rel),
            150,
            Resize::Nearest,
            Preprocess::Caffe,
            Layout::Nchw,
            &mut inputs[k * per..(k + 1) * per],
        )
        .unwrap();
        files.push(rel.clone());
    }
    let bytes: Vec<u8> = inputs.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![picks.len(), 3, 150, 150],
        &bytes,
    )
    .unwrap();
    let meta = std::collections::HashMap::from([(
        "files".to_string(),
        serde_json::to_string(&files).unwrap(),
    )]);
    let inputs_path = t.path().join("inputs.safetensors");
    safetensors::serialize_to_file([("inputs", view)], Some(meta), &inputs_path).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check_features.py");
    let check = |extra: &[&str]| -> serde_json::Value {
        let out = Command::new(&py)
            .arg(&script)
            .arg(&path)
            .arg(&model)
            .arg(&data)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "check_features.py failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let exact = check(&["--inputs", inputs_path.to_str().unwrap()]);
    assert!(exact["max_rel_diff"].as_f64().unwrap() <= 1e-4, "{exact}");
    assert_eq!(exact["label_errors"], 0);
    let keras = check(&[]);
    assert!(keras["mean_cosine"].as_f64().unwrap() >= 0.999, "{keras}");
    eprintln!("python check: exact {exact}\nkeras/PIL {keras}");
}
