//! `fit`'s choice among its default candidates on real photos, and the combination of two backbones
//! (`efficientnet-lite0+lite2`, a manifest with `parts`) through every later stage: the candidates are
//! measured in order, the winner has the lowest cross-validated log loss of those extracted, a
//! combination probed only on its parts' features did not beat them; the combination's features are
//! both networks' side by side, and `predict`, `export` work on it while `finetune` says why it cannot.

use std::fs;
use std::path::Path;

mod common;
use common::{bin, fails, ok};

const COMBINATION: &str = "efficientnet-lite0+lite2";

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// The `shape` of the `features` tensor of a feature file.
fn feature_shape(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let info = meta.info("features").unwrap();
    info.shape.iter().map(|&d| d as u64).collect()
}

fn fit(data: &Path, run: &Path, model: Option<&str>) {
    let mut c = bin();
    c.args(["-q", "fit", "--threads", "2", "--no-audit", "--data"])
        .arg(data)
        .arg("--run")
        .arg(run);
    if let Some(m) = model {
        c.args(["--model", m]);
    }
    ok(c.output().unwrap());
}

/// A temporary folder with `per_class` shared Dogs vs Cats photos per class and split, and a run of
/// `fit` on them with `model` (the defaults when `None`); `None` without `../shared`.
fn fitted(
    per_class: usize,
    model: Option<&str>,
) -> Option<(tempfile::TempDir, std::path::PathBuf, std::path::PathBuf)> {
    let shared = testkit::data::shared_root()?;
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::link_shared_subset(&shared, &data, &["train", "validation"], per_class).unwrap();
    let run = t.path().join("run");
    fit(&data, &run, model);
    Some((t, data, run))
}

#[test]
fn fit_measures_every_default_candidate_and_keeps_the_lowest_cross_validated_loss() {
    let Some((_dir, _data, run)) = fitted(24, None) else {
        return;
    };

    let sel = json(&run.join("candidates/selection.json"));
    let cands = sel["candidates"].as_array().unwrap();
    let names: Vec<&str> = cands.iter().map(|c| c["model"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["efficientnet-lite0", "efficientnet-lite2", COMBINATION]
    );
    let cv = |c: &serde_json::Value| c["cv_log_loss"].as_f64().unwrap();
    let from_parts = |c: &serde_json::Value| c["from_parts"].as_bool().unwrap_or(false);
    let best_single = cv(&cands[0]).min(cv(&cands[1]));
    if from_parts(&cands[2]) {
        assert!(cv(&cands[2]) >= best_single, "{sel}");
    }
    let chosen = &cands[sel["chosen"].as_u64().unwrap() as usize];
    assert!(!from_parts(chosen), "{sel}");
    for c in cands.iter().filter(|c| !from_parts(c)) {
        assert!(cv(chosen) <= cv(c), "{sel}");
    }
    // The run's features are the winner's.
    let width = if chosen["model"] == COMBINATION {
        2560
    } else {
        1280
    };
    assert_eq!(
        feature_shape(&run.join("features/train.safetensors")),
        [48, width]
    );
    let report = fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("Backbone choice"), "{report}");
}

#[test]
fn the_combination_goes_through_predict_and_export_and_finetune_says_why_not() {
    let Some((t, data, run)) = fitted(12, Some(COMBINATION)) else {
        return;
    };
    assert_eq!(
        feature_shape(&run.join("features/validation.safetensors")),
        [24, 2560]
    );

    let photo = data.join("validation/dogs");
    let out = ok(bin()
        .args(["--json", "predict", "--run"])
        .arg(&run)
        .arg(&photo)
        .output()
        .unwrap());
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["classifier"]["backbone"], COMBINATION);
    let rows = p["predictions"].as_array().unwrap();
    assert_eq!(rows.len(), 12, "{p}");
    assert!(rows
        .iter()
        .all(|r| r["probability"].as_f64().unwrap() > 0.0));

    let onnx = t.path().join("classifier.onnx");
    ok(bin()
        .args(["export", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&onnx)
        .output()
        .unwrap());
    assert!(fs::metadata(&onnx).unwrap().len() > 1_000_000);

    let err = fails(
        bin()
            .args(["finetune", "--run"])
            .arg(&run)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("combination") && err.contains("efficientnet-lite2"),
        "{err}"
    );
    assert!(!run.join("finetune").exists());
}
