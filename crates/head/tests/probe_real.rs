//! Real data: the saved default head must be at least as good as an independent linear probe
//! (scikit-learn's `LogisticRegressionCV`, `scripts/linear_probe.py`) on the same features of a
//! small subset of `intel_scenes_dev`. Skips with a note when the shared data or the `.venv` are
//! absent, fails loudly when CI is set.

use std::path::{Path, PathBuf};
use std::process::Command;

use features::extract::{extract, ExtractConfig};
use features::preprocess::Preprocess;
use head::mlp::TrainConfig;
use head::pipeline::{train_head, TrainHeadOptions};
use head::recipe::Recipe;

const CLASSES: [&str; 6] = [
    "buildings",
    "forest",
    "glacier",
    "mountain",
    "sea",
    "street",
];
const PER_CLASS: usize = 30;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn inputs() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let shared = repo().join("../shared");
    let model = shared.join("models/vgg16_keras_notop.onnx");
    let data = shared.join("data/intel_scenes_dev");
    let python = repo().join(".venv/bin/python");
    if model.is_file() && data.join("train").is_dir() && python.is_file() {
        return Some((model, data, python));
    }
    let msg = format!(
        "need {}, {} and {} (scripts/setup.sh)",
        model.display(),
        data.display(),
        python.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("real data missing: {msg} (required in CI)");
    }
    eprintln!("skipping: {msg}");
    None
}

/// Links photos `skip..skip+n` (sorted by name) of `src/<split>/<class>` into `dst/<split>/<class>`.
fn link(src: &Path, dst: &Path, split: &str, class: &str, skip: usize, n: usize) {
    let from = src.join(split).join(class);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&from)
        .unwrap_or_else(|e| panic!("{}: {e}", from.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= skip + n, "{} is too small", from.display());
    let to = dst.join(split).join(class);
    std::fs::create_dir_all(&to).unwrap();
    for f in &files[skip..skip + n] {
        std::os::unix::fs::symlink(f, to.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn saved_head_is_no_worse_than_a_linear_probe_on_real_scenes() {
    let Some((model, src, python)) = inputs() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for class in CLASSES {
        link(&src, &data, "train", class, 0, PER_CLASS);
        link(&src, &data, "validation", class, 0, PER_CLASS);
    }
    let run = tmp.path().join("run");
    let mut cfg = ExtractConfig::new(&data, model.to_string_lossy(), &run);
    cfg.preprocess = Some(Preprocess::Caffe);
    extract(&cfg, &mut |_| {}).expect("feature extraction");
    let opts = TrainHeadOptions {
        run: run.clone(),
        config: TrainConfig {
            recipe: Recipe::Probe,
            ..TrainConfig::default()
        },
        val_split: None,
        force: false,
    };
    let ours = train_head(&opts, &mut |_| {}).expect("train-head").metrics;
    let out = Command::new(&python)
        .arg(repo().join("scripts/linear_probe.py"))
        .arg(&run)
        .output()
        .expect("run scripts/linear_probe.py");
    assert!(
        out.status.success(),
        "linear_probe.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("linear_probe.py prints JSON");
    let ref_acc = reference["accuracy"].as_f64().unwrap();
    let ref_loss = reference["log_loss"].as_f64().unwrap();
    eprintln!(
        "ours: accuracy {:.4}, log loss {:.4}, ECE {:?}; linear probe: {reference}",
        ours.kept_val_accuracy, ours.kept_val_loss, ours.kept_val_ece
    );
    // One photo of 180 is the noise floor of the comparison.
    assert!(
        ours.kept_val_accuracy + 1.0 / 180.0 + 1e-9 >= ref_acc,
        "saved head accuracy {} < linear probe {ref_acc}",
        ours.kept_val_accuracy
    );
    assert!(
        ours.kept_val_loss <= 1.2 * ref_loss,
        "saved head log loss {} > 1.2 × linear probe {ref_loss}",
        ours.kept_val_loss
    );
}
