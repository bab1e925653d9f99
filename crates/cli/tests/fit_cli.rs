//! `bottleneck fit` end to end through the real binary on synthetic photos in a `val` split (not
//! `validation`) and a tiny synthetic VGG: extract → the calibrated probe → fine-tuning, a
//! report, and a second run that reuses every stage.

use std::path::Path;
use std::process::{Command, Output};

use testkit::synth::{self, VggSpec};

mod common;

fn fit(data: &Path, model: &Path, run: &Path) -> Output {
    common::fit_tiny(data, model)
        .arg("--run")
        .arg(run)
        .output()
        .expect("the binary runs")
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "fit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON summary on stdout")
}

#[test]
fn fit_runs_extract_probe_and_finetune_on_a_val_split_then_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    testkit::write_synthetic(&data, &[("train", 12), ("val", 6)], 3).unwrap();
    let model = dir.path().join("tiny.onnx");
    std::fs::write(&model, synth::vgg_like(&VggSpec::default())).unwrap();
    let run = dir.path().join("run");

    let first = ok(&fit(&data, &model, &run));
    let stages: Vec<(String, String)> = first["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for stage in ["extract", "train-head", "finetune"] {
        assert!(
            stages.iter().any(|(n, st)| n == stage && st == "done"),
            "{stage} not done: {stages:?}"
        );
    }
    assert!(
        !stages.iter().any(|(n, st)| n == "scratch" && st == "done"),
        "fit has no stage-1 baseline: {stages:?}"
    );
    assert!(run.join("features/val.safetensors").is_file());
    assert!(run.join("report.html").is_file());
    let meta = std::fs::read(run.join("head/head.safetensors")).unwrap();
    let (_, st) = safetensors::SafeTensors::read_metadata(&meta).unwrap();
    let md = st.metadata().clone().unwrap();
    assert_eq!(md.get("recipe").map(String::as_str), Some("probe"));
    let head_metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("head/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(head_metrics["validation"], "split val");
    assert!(head_metrics["kept_val_ece"].as_f64().is_some());

    let again = ok(&fit(&data, &model, &run));
    for stage in ["extract", "train-head", "finetune"] {
        let action = again["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["stage"] == stage)
            .unwrap_or_else(|| panic!("no {stage} in {again}"))["action"]
            .clone();
        assert_eq!(action, "reuse", "{stage} should be reused on a second run");
    }
}

#[test]
fn fit_on_one_folder_holds_out_the_same_photos_in_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    // DIR/<class>/*: no split folders at all.
    testkit::write_synthetic(&data, &[("", 15)], 5).unwrap();
    let model = dir.path().join("tiny.onnx");
    std::fs::write(&model, synth::vgg_like(&VggSpec::default())).unwrap();
    let run = dir.path().join("run");
    ok(&fit(&data, &model, &run));

    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(p)).unwrap()).unwrap()
    };
    let (head, ft) = (read("head/metrics.json"), read("finetune/metrics.json"));
    let described = head["validation"].as_str().unwrap().to_string();
    assert!(
        described.contains("0.2 of all held out (6 photos"),
        "{described}"
    );
    assert_eq!(ft["validation"], head["validation"]);
    for m in [&head, &ft] {
        assert_eq!(
            (m["train_samples"].as_u64(), m["val_samples"].as_u64()),
            (Some(24), Some(6))
        );
    }

    // Photos removed after the head was trained: fine-tuning would validate on other photos than
    // the head did, so it refuses and names the fix.
    for i in 0..5 {
        let png = data.join("bright").join(format!("bright.{i}.png"));
        let jpg = data.join("bright").join(format!("bright.{i}.jpg"));
        let _ = std::fs::remove_file(png);
        let _ = std::fs::remove_file(jpg);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bottleneck"))
        .args(["finetune", "--data"])
        .arg(&data)
        .arg("--model")
        .arg(&model)
        .args([
            "--split-at",
            "block4_pool",
            "--epochs",
            "1",
            "--aug-cache",
            "1",
            "--threads",
            "1",
        ])
        .args(["--force", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "finetune should refuse: {err}");
    assert!(
        err.contains("changed since the head was trained") && err.contains("train-head"),
        "{err}"
    );
}
