//! A backbone that is only data (issue 29): a tiny MobileNet-shaped ONNX file (stride-2 stem, ReLU6 as
//! `Clip`, a depthwise convolution with SAME_UPPER padding, a residual `Add`, `GlobalAveragePool`)
//! described by a manifest the user writes goes through `extract`, `fit` (stage 3 included: the top
//! from the depthwise convolution on, rebuilt from the graph's own nodes), `predict` and `export`
//! with its preprocessing, size and crop rule; a wrong manifest is refused naming the field.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{bin, fails, ok};

const MANIFEST: &str = "name = \"tiny-mobile\"\npreprocess = \"lite\"\nfeatures = \"pooled\"\nsize = 48\nresize = \"bilinear-crop\"\ntrainable_from = \"stem_act\"\n";

/// The model, its manifest and a data folder, in `dir`.
fn inputs(dir: &Path, manifest: &str) -> (PathBuf, PathBuf, PathBuf) {
    let model = dir.join("tiny-mobile.onnx");
    fs::write(&model, testkit::mobile::mobile_like(1000, 7)).unwrap();
    let m = dir.join("tiny-mobile.toml");
    fs::write(&m, manifest).unwrap();
    let data = dir.join("data");
    if !data.exists() {
        testkit::write_synthetic(&data, &[("train", 8), ("validation", 4)], 3).unwrap();
    }
    (model, m, data)
}

/// What a command printed, stdout then stderr.
fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn with_model(c: &mut Command, model: &Path, manifest: &Path) {
    c.arg("--model").arg(model).arg("--manifest").arg(manifest);
}

#[test]
fn a_manifest_only_backbone_goes_through_extract_fit_predict_and_export() {
    let t = tempfile::tempdir().unwrap();
    let (model, manifest, data) = inputs(t.path(), MANIFEST);

    let run = t.path().join("extracted");
    let mut c = bin();
    c.args(["-q", "--json", "extract", "--threads", "1", "--data"])
        .arg(&data)
        .arg("--run")
        .arg(&run);
    with_model(&mut c, &model, &manifest);
    let out = ok(c.output().unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shape = v["splits"][0]["shape"].clone();
    assert_eq!(shape, serde_json::json!([16, 16]), "{v}");
    let feats =
        features::store::FeatureFile::read(&run.join("features/train.safetensors")).unwrap();
    let p = &feats.meta.provenance;
    assert_eq!(
        (
            p.preprocess.as_str(),
            p.image_size,
            p.resize.as_str(),
            p.output_tensor.as_str()
        ),
        ("lite", 48, "bilinear-crop", "pooled")
    );

    let fitted = t.path().join("fitted");
    let mut c = bin();
    c.args(["fit", "--threads", "1", "--finetune-epochs", "2", "--data"])
        .arg(&data)
        .arg("--run")
        .arg(&fitted);
    with_model(&mut c, &model, &manifest);
    let out = ok(c.output().unwrap());
    let said = said(&out);
    assert!(said.contains("stem_act"), "{said}");
    assert!(fitted.join("head/head.safetensors").is_file());
    assert!(fitted.join("finetune/model.onnx").is_file(), "{said}");
    // The trained tensors under their ONNX names: the depthwise and 1×1 convolutions' weights.
    let block = fs::read(fitted.join("finetune/block.safetensors")).unwrap();
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&block)
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect();
    for n in ["dw_W", "dw_B", "pw_W", "pw_B"] {
        assert!(names.iter().any(|m| m == n), "{n} not in {names:?}");
    }

    let photo = data.join("validation/dark/dark.0.png");
    let out = ok(bin()
        .args(["--json", "predict", "--run"])
        .arg(&fitted)
        .arg(&photo)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.to_string().contains("probabilit"), "{v}");
    assert!(
        v.to_string().contains("finetune"),
        "predict uses the fine-tuned model: {v}"
    );

    let exported = t.path().join("classifier.onnx");
    ok(bin()
        .args(["-q", "export", "--run"])
        .arg(&fitted)
        .arg("--out")
        .arg(&exported)
        .output()
        .unwrap());
    let m = features::onnx::build::decode(&fs::read(&exported).unwrap()).unwrap();
    let meta: std::collections::HashMap<String, String> = m
        .metadata_props
        .iter()
        .map(|p| {
            (
                p.key.clone().unwrap_or_default(),
                p.value.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(meta["resize"], "bilinear-crop");
    assert_eq!(meta["preprocess"], "lite");
    assert_eq!(meta["image_size"], "48");
}

#[test]
fn a_wrong_manifest_is_refused_naming_the_field() {
    let t = tempfile::tempdir().unwrap();
    for (manifest, named) in [
        (MANIFEST.replace("features", "feature"), "feature"),
        (MANIFEST.replace("\"lite\"", "\"tf\""), "preprocess"),
        (MANIFEST.replace("\"pooled\"", "\"nope\""), "nope"),
    ] {
        let (model, m, data) = inputs(t.path(), &manifest);
        let run = t.path().join("run");
        let mut c = bin();
        c.args(["-q", "extract", "--data"])
            .arg(&data)
            .arg("--run")
            .arg(&run);
        with_model(&mut c, &model, &m);
        let err = fails(c.output().unwrap());
        assert!(err.contains(named), "{named}: {err}");
        assert!(!run.join("features").exists());
    }
}

#[test]
fn fit_stops_at_the_head_where_the_manifest_says_fine_tuning_does_not_pay() {
    let t = tempfile::tempdir().unwrap();
    let manifest = format!("{MANIFEST}fit_finetunes = false\n");
    let (model, m, data) = inputs(t.path(), &manifest);
    let run = t.path().join("fitted");
    let mut c = bin();
    c.args(["fit", "--threads", "1", "--no-audit", "--data"])
        .arg(&data)
        .arg("--run")
        .arg(&run);
    with_model(&mut c, &model, &m);
    let out = ok(c.output().unwrap());
    let said = said(&out);
    assert!(run.join("head/head.safetensors").is_file());
    assert!(!run.join("finetune").exists(), "{said}");
    assert!(
        said.contains("gained too little") && said.contains("bottleneck finetune"),
        "the plan says why and how to fine-tune anyway: {said}"
    );
}
