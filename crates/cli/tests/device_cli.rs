//! `--device` through the real binary. In a build without the `cuda` feature (CI), `--device cuda`
//! of every command that trains or extracts is refused before anything is written, naming the
//! rebuild (`--features cuda`), `predict` and `evaluate` too. `--device auto` runs on the CPU and
//! says so, and `fit --device auto` records `cpu` for every stage. The hidden `--engine candle`
//! runs the GPU code path (Candle) on the CPU: it records it in the features' provenance, and
//! `predict` through it gives ONNX Runtime's probabilities (int8 classifiers refused).

use std::path::Path;
use std::process::{Command, Output};

use testkit::synth::{self, VggSpec};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bottleneck"));
    c.env_remove("BOTTLENECK_ENGINE");
    c
}

fn setup(dir: &Path) -> (String, String) {
    let data = dir.join("data");
    testkit::write_synthetic(&data, &[("train", 4), ("validation", 2)], 7).unwrap();
    let model = dir.join("tiny.onnx");
    std::fs::write(&model, synth::vgg_like(&VggSpec::default())).unwrap();
    (
        data.to_string_lossy().into_owned(),
        model.to_string_lossy().into_owned(),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("a JSON summary on stdout")
}

/// The arguments of each command, with `RUN` standing for its run folder.
fn commands<'a>(data: &'a str, model: &'a str) -> Vec<(&'static str, Vec<&'a str>)> {
    let common = |cmd: &'static str| -> Vec<&'a str> {
        vec![
            cmd,
            "--data",
            data,
            "--model",
            model,
            "--preprocess",
            "caffe",
        ]
    };
    let mut extract = common("extract");
    extract.extend(["--size", "64", "--run", "RUN"]);
    let mut fit = common("fit");
    fit.extend(["--size", "64", "--split-at", "block4_pool", "--run", "RUN"]);
    let mut tutorial = common("tutorial");
    tutorial.extend(["--size", "64", "--quick", "--run", "RUN"]);
    vec![
        ("extract", extract),
        ("fit", fit),
        ("tutorial", tutorial),
        ("finetune", vec!["finetune", "--data", data, "--run", "RUN"]),
        (
            "scratch",
            vec!["scratch", "--data", data, "--size", "32", "--run", "RUN"],
        ),
    ]
}

#[test]
#[cfg(not(feature = "cuda"))]
fn cuda_without_the_feature_is_refused_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (data, model) = setup(t.path());
    for (name, args) in commands(&data, &model) {
        let run = t.path().join(format!("run-{name}"));
        let run_str = run.to_string_lossy().into_owned();
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "RUN" { run_str.as_str() } else { a })
            .collect();
        let out = bin()
            .args(&args)
            .args(["--device", "cuda"])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains("--features cuda") && err.contains("--device cpu"),
            "{name}: {err}"
        );
        assert!(!run.exists(), "{name} wrote {}", run.display());
    }
    // predict and evaluate run the classifier through Candle on a GPU too: the same refusal, and
    // evaluate writes no report.
    let run = t.path().join("run-predict");
    head_run(&data, &model, &run);
    let validation = Path::new(&data).join("validation");
    for cmd in ["predict", "evaluate"] {
        let mut c = bin();
        c.args([cmd, "--device", "cuda", "--run"]).arg(&run);
        if cmd == "evaluate" {
            c.args(["--data", &data]);
        } else {
            c.arg(&validation);
        }
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.contains("--features cuda") && err.contains("--device cpu"),
            "{cmd}: {err}"
        );
    }
    assert!(!run.join("evaluate").exists());
}

/// Extracts features of `data` with `model` into `run` and trains its stage-2 head.
fn head_run(data: &str, model: &str, run: &Path) {
    let out = bin()
        .args(["--json", "extract", "--data", data, "--model", model])
        .args(["--preprocess", "caffe", "--size", "64", "--run"])
        .arg(run)
        .output()
        .unwrap();
    ok(&out);
    let out = bin()
        .args(["train-head", "--run"])
        .arg(run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `predict --json` of the validation photos with `extra` arguments: where it ran and every
/// probability, in file order.
fn predict(run: &Path, data: &str, extra: &[&str]) -> Result<(String, Vec<f64>), String> {
    let out = bin()
        .args(["--json", "predict", "--run"])
        .arg(run)
        .arg(Path::new(data).join("validation"))
        .args(extra)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(stderr(&out));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probs = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["probabilities"].as_array().unwrap().clone())
        .map(|x| x.as_f64().unwrap())
        .collect();
    Ok((v["device"].as_str().unwrap().to_string(), probs))
}

#[test]
fn engine_candle_predicts_what_onnx_runtime_predicts() {
    let t = tempfile::tempdir().unwrap();
    let (data, model) = setup(t.path());
    let run = t.path().join("run");
    head_run(&data, &model, &run);
    let (d0, p0) = predict(&run, &data, &[]).unwrap();
    let (d1, p1) = predict(&run, &data, &["--engine", "candle"]).unwrap();
    assert_eq!((d0.as_str(), d1.as_str()), ("cpu", "cpu (Candle)"));
    assert_eq!(p0.len(), p1.len());
    assert!(!p0.is_empty());
    let worst = p0
        .iter()
        .zip(&p1)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-5, "max |Δp| {worst:.2e}");

    // A fine-tuned model with an int8 frozen part runs in ONNX Runtime only: asked-for Candle is
    // refused naming the fix; --stage head still runs through Candle.
    let out = bin()
        .args(["--json", "finetune", "--data", &data, "--run"])
        .arg(&run)
        .args([
            "--epochs",
            "1",
            "--split-at",
            "block4_pool",
            "--precision",
            "int8",
        ])
        .args(["--aug-cache", "1", "--threads", "1"])
        .output()
        .unwrap();
    ok(&out);
    assert!(predict(&run, &data, &[]).is_ok());
    let err = predict(&run, &data, &["--engine", "candle"]).unwrap_err();
    assert!(
        err.contains("int8") && err.contains("--device cpu") && err.contains("model.onnx"),
        "{err}"
    );
    let (d2, _) = predict(&run, &data, &["--engine", "candle", "--stage", "head"]).unwrap();
    assert_eq!(d2, "cpu (Candle)");
}

#[test]
fn auto_runs_on_the_cpu_and_says_so() {
    let t = tempfile::tempdir().unwrap();
    let (data, model) = setup(t.path());
    let run = t.path().join("run");
    let out = bin()
        .args(["--json", "fit", "--data", &data, "--model", &model])
        .args(["--preprocess", "caffe", "--size", "64"])
        .args(["--split-at", "block4_pool", "--finetune-epochs", "1"])
        .args(["--aug-cache", "1", "--threads", "1", "--device", "auto"])
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    let v = ok(&out);
    let err = stderr(&out);
    if cfg!(not(feature = "cuda")) {
        assert!(
            err.contains("--device auto: running on the CPU"),
            "no note on stderr: {err}"
        );
        let stages = v["stages"].as_array().expect("stages");
        let ran: Vec<&serde_json::Value> = stages.iter().filter(|s| s["state"] == "done").collect();
        assert_eq!(ran.len(), 3, "{v}");
        for s in ran {
            assert_eq!(s["device"], "cpu", "{s}");
        }
    }
    let scratch_run = t.path().join("scratch");
    let out = bin()
        .args(["--json", "scratch", "--data", &data, "--size", "32"])
        .args(["--epochs", "1", "--device", "auto", "--run"])
        .arg(&scratch_run)
        .output()
        .unwrap();
    let v = ok(&out);
    if cfg!(not(feature = "cuda")) {
        assert_eq!(v["device"], "cpu");
        assert!(stderr(&out).contains("--device auto: running on the CPU"));
    }
}

#[test]
fn engine_candle_runs_the_gpu_path_on_the_cpu_and_records_it() {
    let t = tempfile::tempdir().unwrap();
    let (data, model) = setup(t.path());
    let extract = |run: &Path, engine: Option<&str>| {
        let mut c = bin();
        c.args(["--json", "extract", "--data", &data, "--model", &model])
            .args(["--preprocess", "caffe", "--size", "64", "--run"])
            .arg(run);
        if let Some(e) = engine {
            c.env("BOTTLENECK_ENGINE", e);
        }
        ok(&c.output().unwrap())
    };
    let (ra, rb) = (t.path().join("ort"), t.path().join("candle"));
    assert_eq!(extract(&ra, None)["device"], "cpu");
    assert_eq!(extract(&rb, Some("candle"))["device"], "cpu (Candle)");
    let meta = |run: &Path| {
        features::store::read_meta(&features::store::feature_path(run, "train")).unwrap()
    };
    assert_eq!(meta(&ra).provenance.engine, None);
    assert_eq!(
        meta(&rb).provenance.engine.as_deref(),
        Some("candle cpu fp32")
    );
    assert_ne!(meta(&ra).cache_key, meta(&rb).cache_key);
    let bad = bin()
        .args(["extract", "--data", &data, "--model", &model, "--run"])
        .arg(t.path().join("bad"))
        .env("BOTTLENECK_ENGINE", "tpu")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("BOTTLENECK_ENGINE=tpu"),
        "{}",
        stderr(&bad)
    );
}
