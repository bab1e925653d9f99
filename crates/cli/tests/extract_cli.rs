//! The real `bottleneck` binary: extract's JSON summary, the cache message, exit codes, and a `kill -9`
//! in the middle of a run that leaves no half-written feature file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
fn kill_9_leaves_no_half_written_file_and_rerun_completes() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::link_shared_subset(&shared, &data, &["train"], 24).unwrap();
    let model = shared.join("models/vgg16_keras_notop.onnx");
    let run = t.path().join("run");
    let mut cmd = bin();
    cmd.args(["-q", "extract", "--batch", "4", "--threads", "1", "--data"])
        .arg(&data)
        .arg("--model")
        .arg(&model)
        .arg("--run")
        .arg(&run);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let features = run.join("features");
    let writing = || {
        std::fs::read_dir(&features).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| runfs::atomic::is_temp_name(&e.file_name().to_string_lossy()))
        })
    };
    let start = Instant::now();
    while !writing() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "extraction never started writing rows"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let final_path = run.join("features/train.safetensors");
    assert!(
        !final_path.exists(),
        "a killed run must not leave a feature file"
    );

    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let f = features::store::FeatureFile::read(&final_path).unwrap();
    assert_eq!(f.shape, vec![48, 512, 4, 4]);
    let names: Vec<_> = std::fs::read_dir(run.join("features"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary files are gone: {names:?}");
}
