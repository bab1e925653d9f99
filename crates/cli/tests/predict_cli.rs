//! The real `bottleneck` binary: `predict` (table, CSV, JSON, skipped files, bad input),
//! `evaluate` (numbers, files, --force) and `export` (--force) on a run built by `extract` and
//! `train-head` from synthetic images and the tiny synthetic VGG.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::synth::{self, VggSpec};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bottleneck"))
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Data (3 train + 2 validation per class), tiny model, and a run with features and a head.
fn prepared(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    testkit::write_synthetic(&data, &[("train", 3), ("validation", 2)], 7).unwrap();
    let model = dir.join("tiny.onnx");
    std::fs::write(&model, synth::vgg_like(&VggSpec::default())).unwrap();
    let run = dir.join("run");
    ok(bin()
        .args([
            "-q",
            "extract",
            "--preprocess",
            "caffe",
            "--size",
            "64",
            "--threads",
            "1",
            "--data",
        ])
        .arg(&data)
        .arg("--model")
        .arg(&model)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap());
    ok(bin()
        .args(["-q", "train-head", "--epochs", "2", "--run"])
        .arg(&run)
        .output()
        .unwrap());
    (data, run)
}

fn predict(run: &Path) -> Command {
    let mut c = bin();
    c.arg("predict")
        .arg("--run")
        .arg(run)
        .args(["--threads", "1"]);
    c
}

#[test]
fn predict_table_csv_and_json_agree_file_by_file() {
    let t = tempfile::tempdir().unwrap();
    let (data, run) = prepared(t.path());
    let val = data.join("validation");
    let mut files: Vec<String> = Vec::new();
    for class in ["bright", "dark"] {
        let mut names: Vec<_> = std::fs::read_dir(val.join(class))
            .unwrap()
            .map(|e| e.unwrap().path().to_string_lossy().into_owned())
            .collect();
        names.sort();
        files.extend(names);
    }

    let json = ok(predict(&run)
        .arg("--json")
        .arg(&val)
        .arg("--top-k")
        .arg("2")
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["classifier"]["stage"], "head");
    assert_eq!(v["predicted"], 4);
    let preds = v["predictions"].as_array().unwrap();
    let got: Vec<&str> = preds.iter().map(|p| p["file"].as_str().unwrap()).collect();
    assert_eq!(got, files);
    for p in preds {
        let probs: Vec<f64> = p["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let best = usize::from(probs[1] > probs[0]);
        assert_eq!(p["class"], ["bright", "dark"][best]);
        assert_eq!(p["top"].as_array().unwrap().len(), 2);
    }

    let csv = ok(predict(&run).arg("--csv").arg(&val).output().unwrap());
    let text = String::from_utf8(csv.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "file,class,probability,p_bright,p_dark");
    assert_eq!(lines.len(), 5);
    for (line, p) in lines[1..].iter().zip(preds) {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols[0], p["file"].as_str().unwrap());
        assert_eq!(cols[1], p["class"].as_str().unwrap());
        for (k, c) in cols[3..].iter().enumerate() {
            let want = p["probabilities"][k].as_f64().unwrap();
            assert!((c.parse::<f64>().unwrap() - want).abs() < 1e-6, "{line}");
        }
    }

    // The table: a header and one row per file, a single file given directly.
    let one = &files[3];
    let table = ok(predict(&run).arg(one).output().unwrap());
    let text = String::from_utf8(table.stdout).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].starts_with("file") && rows[0].contains("probability"));
    assert!(
        rows[1].starts_with(one.as_str()) && rows[1].contains(preds[3]["class"].as_str().unwrap())
    );
    let err = String::from_utf8_lossy(&table.stderr);
    assert!(err.contains("using stage head"), "{err}");
}

#[test]
fn predict_skips_unreadable_images_and_reports_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let (data, run) = prepared(t.path());
    let mixed = t.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(data.join("validation/dark/dark.0.png"), mixed.join("a.png")).unwrap();
    std::fs::write(mixed.join("broken.jpg"), b"").unwrap();
    let out = ok(predict(&run).arg("--json").arg(&mixed).output().unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["predictions"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["skipped"][0]["file"],
        mixed.join("broken.jpg").to_string_lossy().as_ref()
    );
    assert!(v["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("empty file"));
    // Without --json too, every skipped file is named, broken symbolic links included.
    std::os::unix::fs::symlink(mixed.join("gone.jpg"), mixed.join("dangling.jpg")).unwrap();
    let out = ok(predict(&run).arg(&mixed).output().unwrap());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("broken.jpg")
            && text.contains("dangling.jpg")
            && text.contains("symbolic link"),
        "{text}"
    );

    let unreadable = t.path().join("unreadable");
    std::fs::create_dir_all(&unreadable).unwrap();
    std::fs::write(unreadable.join("empty.jpg"), b"").unwrap();
    std::fs::write(unreadable.join("text.png"), b"not a picture").unwrap();
    for json in [false, true] {
        let mut c = predict(&run);
        if json {
            c.arg("--json");
        }
        let err = fails(c.arg(&unreadable).output().unwrap());
        assert!(
            err.contains("none of the 2 images could be read") && err.contains("empty.jpg"),
            "{err}"
        );
    }

    let err = fails(
        predict(&t.path().join("nothing"))
            .arg(&mixed)
            .output()
            .unwrap(),
    );
    assert!(err.contains("bottleneck train-head"), "{err}");
    let missing = t.path().join("missing.jpg");
    let err = fails(predict(&run).arg(&missing).output().unwrap());
    assert!(
        err.contains(&*missing.to_string_lossy()) && err.contains("does not exist"),
        "{err}"
    );
    let err = fails(
        predict(&run)
            .args(["--csv", "--json"])
            .arg(&mixed)
            .output()
            .unwrap(),
    );
    assert!(err.contains("only one"), "{err}");
    let err = fails(
        predict(&run)
            .args(["--stage", "finetune"])
            .arg(&mixed)
            .output()
            .unwrap(),
    );
    assert!(err.contains("bottleneck finetune"), "{err}");
}

#[test]
fn evaluate_and_export_write_once_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let (data, run) = prepared(t.path());
    let eval = |force: bool| {
        let mut c = bin();
        c.args([
            "--json",
            "evaluate",
            "--threads",
            "1",
            "--worst",
            "2",
            "--run",
        ])
        .arg(&run)
        .arg("--data")
        .arg(&data);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let out = ok(eval(false));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["split"], "validation");
    assert_eq!(v["images"], 4);
    let m = &v["confusion"]["matrix"];
    let correct = m[0][0].as_u64().unwrap() + m[1][1].as_u64().unwrap();
    assert_eq!(v["correct"].as_u64().unwrap(), correct);
    assert!((v["accuracy"].as_f64().unwrap() - correct as f64 / 4.0).abs() < 1e-12);
    assert_eq!(
        v["worst"].as_array().unwrap().len(),
        (4 - correct as usize).min(2)
    );
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.join("evaluate/validation/evaluation.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["accuracy"], v["accuracy"]);
    assert!(run.join("evaluate/validation/worst.png").is_file());
    let err = fails(eval(false));
    assert!(err.contains("--force"), "{err}");
    ok(eval(true));

    let out_file = t.path().join("model.onnx");
    let export = |force: bool| {
        let mut c = bin();
        c.args(["export", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&out_file);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let out = ok(export(false));
    assert!(String::from_utf8_lossy(&out.stdout).contains("channel_order: BGR"));
    let err = fails(export(false));
    assert!(err.contains("--force"), "{err}");
    ok(export(true));
    // The exported file classifies like predict: run it as a finetune-stage model of another run.
    let run2 = t.path().join("run2");
    std::fs::create_dir_all(run2.join("finetune")).unwrap();
    std::fs::copy(&out_file, run2.join("finetune/model.onnx")).unwrap();
    std::fs::copy(
        run.join("head/head.safetensors"),
        run2.join("finetune/head.safetensors"),
    )
    .unwrap();
    let a = ok(predict(&run)
        .arg("--csv")
        .arg(data.join("validation"))
        .output()
        .unwrap());
    let b = ok(predict(&run2)
        .arg("--csv")
        .arg(data.join("validation"))
        .output()
        .unwrap());
    assert_eq!(a.stdout, b.stdout);
    assert!(String::from_utf8_lossy(&b.stderr).contains("using stage finetune"));
}
