//! The real `bottleneck` binary: extract's JSON summary, the cache message and exit codes (kills
//! and concurrent runs: `kill_cli.rs`).

use std::path::Path;
use std::process::Command;

use testkit::synth::{self, VggSpec};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bottleneck"))
}

fn tiny(dir: &Path) -> String {
    let p = dir.join("tiny.onnx");
    std::fs::write(&p, synth::vgg_like(&VggSpec::default())).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn extract_json_then_up_to_date() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 3), ("validation", 2)], 11).unwrap();
    let model = tiny(t.path());
    let run = t.path().join("run");
    let args = |cmd: &mut Command| {
        cmd.args(["--json", "extract", "--data"])
            .arg(&data)
            .args([
                "--model",
                &model,
                "--preprocess",
                "torch",
                "--size",
                "64",
                "--run",
            ])
            .arg(&run);
    };
    let mut c = bin();
    args(&mut c);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["classes"], serde_json::json!(["bright", "dark"]));
    assert_eq!(v["splits"][0]["split"], "train");
    assert_eq!(v["splits"][0]["shape"], serde_json::json!([6, 16, 2, 2]));
    assert_eq!(v["splits"][1]["class_counts"], serde_json::json!([2, 2]));
    assert_eq!(v["preprocess"], "torch");

    let mut c = bin();
    args(&mut c);
    let out = c.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["splits"][0]["up_to_date"], true);
    assert_eq!(v["splits"][1]["up_to_date"], true);
}

#[test]
fn errors_exit_1_usage_exits_2() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 1)], 1).unwrap();
    let model = tiny(t.path());
    let out = bin()
        .args(["extract", "--data"])
        .arg(&data)
        .args(["--model", &model, "--run"])
        .arg(t.path().join("r"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--preprocess") && err.contains("caffe"),
        "{err}"
    );

    let out = bin()
        .args(["extract", "--data", "x", "--run", "y", "--size", "big"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = bin()
        .args(["extract", "--data"])
        .arg(&data)
        .args(["--model", "no-such-model", "--run"])
        .arg(t.path().join("r"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown model") && err.contains("vgg16"),
        "{err}"
    );
}

#[test]
fn hub_model_offline_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 1)], 1).unwrap();
    let out = bin()
        .args(["extract", "--offline", "--model", "vgg16", "--data"])
        .arg(&data)
        .arg("--run")
        .arg(t.path().join("r"))
        .env("HF_HOME", t.path().join("hf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("offline") && err.contains("--model /path/to/file.onnx"),
        "{err}"
    );
}

#[test]
fn bench_reports_each_round_and_refuses_zero_rounds() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 6), ("validation", 4)], 5).unwrap();
    let model = tiny(t.path());
    let bench = |rounds: &str| {
        bin()
            .args(["--json", "bench", "--data"])
            .arg(&data)
            .args(["--model", &model, "--preprocess", "torch", "--size", "64"])
            .args(["--batch", "4", "--images", "8", "--rounds", rounds, "--run"])
            .arg(t.path().join("unused"))
            .output()
            .unwrap()
    };
    let out = bench("2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["images"], 8);
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    // A round's closing raw run opens the next one.
    assert_eq!(rounds[0]["raw_after"], rounds[1]["raw_before"]);
    for x in rounds {
        let ratio = x["pipeline"].as_f64().unwrap()
            / ((x["raw_before"].as_f64().unwrap() + x["raw_after"].as_f64().unwrap()) / 2.0);
        assert!((x["ratio"].as_f64().unwrap() - ratio).abs() < 1e-9);
    }
    let out = bench("0");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rounds must be at least 1"));
    assert!(out.stdout.is_empty());
}
