//! `bottleneck tutorial --quick` end to end through the real binary on synthetic images and a tiny
//! synthetic VGG: the report's numbers are the stages' own, a second run reuses every stage, a
//! longer fine-tuning continues from the checkpoint, and other data in the same run is refused.

use std::path::Path;
use std::process::{Command, Output};

use testkit::synth::{self, VggSpec};

fn tutorial(data: &Path, model: &Path, run: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bottleneck"))
        .args(["--json", "tutorial", "--quick", "--data"])
        .arg(data)
        .arg("--model")
        .arg(model)
        .args([
            "--preprocess",
            "caffe",
            "--size",
            "64",
            "--scratch-size",
            "64",
            "--split-at",
            "block4_pool",
            "--threads",
            "1",
            "--run",
        ])
        .arg(run)
        .args(extra)
        .output()
        .expect("the binary runs")
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "tutorial failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON summary on stdout")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("file exists")).expect("JSON")
}

/// The cells of the report.md table row of stage `number`.
fn report_row(md: &str, number: &str) -> Vec<String> {
    let prefix = format!("| {number} |");
    let line = md
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("report.md has no row for stage {number}:\n{md}"));
    line.trim_matches('|')
        .split(" | ")
        .map(|c| c.trim().to_string())
        .collect()
}

fn action_of(summary: &serde_json::Value, stage: &str) -> String {
    summary["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|r| r["stage"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage} in {summary}"))["action"]
        .as_str()
        .expect("action")
        .to_string()
}

#[test]
fn quick_tutorial_reports_resumes_and_refuses_other_data() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 8), ("validation", 4)], 5).unwrap();
    let model = t.path().join("tiny.onnx");
    std::fs::write(&model, synth::vgg_like(&VggSpec::default())).unwrap();
    let run = t.path().join("run");

    // First sitting: every stage runs and the report carries each stage's own numbers.
    let first = ok(&tutorial(&data, &model, &run, &[]));
    let md = std::fs::read_to_string(run.join("report.md")).expect("report.md");
    assert!(run.join("report.html").is_file());
    let record = json(&run.join("tutorial.json"));
    for (stage, number, dir) in [
        ("scratch", "1", "scratch"),
        ("train-head", "2b", "head"),
        ("finetune", "3", "finetune"),
    ] {
        let metrics = json(&run.join(dir).join("metrics.json"));
        let row = report_row(&md, number);
        let acc = metrics["final_val_accuracy"].as_f64().unwrap();
        assert_eq!(row[3], format!("{acc:.4}"), "stage {stage} row {row:?}");
        let epochs = metrics["epochs"].as_array().unwrap().len();
        assert_eq!(row[8], epochs.to_string(), "stage {stage} row {row:?}");
        assert!(
            md.contains(&format!("report/{stage}-curves.png")),
            "curves of {stage} are linked"
        );
        assert!(run.join(format!("report/{stage}-curves.png")).is_file());
        assert_eq!(action_of(&first, stage), "run");
        assert_eq!(record["stages"][stage]["status"], "done");
        let secs = record["stages"][stage]["seconds"].as_f64().unwrap();
        assert!(secs > 0.0, "{stage} took {secs} s");
    }
    assert_eq!(
        json(&run.join("head/metrics.json"))["epochs"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        json(&run.join("finetune/metrics.json"))["epochs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        json(&run.join("scratch/metrics.json"))["epochs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(report_row(&md, "2a")[2], "done");
    assert_eq!(action_of(&first, "extract"), "run");
    assert!(md.contains(&record["inputs"]["model_sha256"].as_str().unwrap()[..16]));
    assert!(md.contains("| true \\ predicted | bright | dark | recall |"));
    // The settings each stage ran with, read from its files: the recipe's by default (training
    // products in bf16 where the CPU has AVX512-BF16, as `--train-precision auto` resolves).
    let products = if train::kernels::bf16::available() {
        "bf16"
    } else {
        "fp32"
    };
    for line in [
        format!("- Stage 1 (`scratch`): 64 px (nearest resize), {products} products, rmsprop lr 0.001 (cosine), batch 16, 2 epochs, augmentation: width shift ±0.1, height shift ±0.1, shear ±11.5°, zoom 0.8–1.2, horizontal flip"),
        "- Stage 2a (`extract`): 64 px (nearest resize), caffe preprocessing, fp32".into(),
        "- Stage 2b (`train-head`): dense 256".into(),
        format!("- Stage 3 (`finetune`): block4_pool → block5_pool trained ({products} products), 64 px, int8 frozen part, SGD lr 0.00001 momentum 0.9"),
    ] {
        assert!(md.contains(&line), "report.md lacks {line:?}:\n{md}");
    }

    // Second sitting: nothing to do, nothing rewritten, the recorded times are kept.
    let head_before = std::fs::metadata(run.join("head/head.safetensors"))
        .and_then(|m| m.modified())
        .unwrap();
    let second = ok(&tutorial(&data, &model, &run, &[]));
    for stage in ["scratch", "extract", "train-head", "finetune"] {
        assert_eq!(action_of(&second, stage), "reuse", "{second}");
    }
    let head_after = std::fs::metadata(run.join("head/head.safetensors"))
        .and_then(|m| m.modified())
        .unwrap();
    assert_eq!(head_before, head_after, "the head was not trained again");
    assert_eq!(json(&run.join("tutorial.json"))["stages"], record["stages"]);

    // Other settings for a finished stage are refused, naming the stage and the setting.
    let out = tutorial(&data, &model, &run, &["--head-epochs", "4"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("head epochs: 5 vs 4 (there vs asked)") && err.contains("--force"),
        "{err}"
    );

    // Longer training continues from the checkpoints: earlier epochs are kept, times add up.
    let longer = ["--finetune-epochs", "3", "--scratch-epochs", "3"];
    let before = |dir: &str| json(&run.join(dir).join("metrics.json"))["epochs"].clone();
    let (ft_before, sc_before) = (before("finetune"), before("scratch"));
    let third = ok(&tutorial(&data, &model, &run, &longer));
    assert_eq!(action_of(&third, "train-head"), "reuse");
    let rec = json(&run.join("tutorial.json"));
    for (stage, dir, earlier) in [
        ("finetune", "finetune", ft_before),
        ("scratch", "scratch", sc_before),
    ] {
        assert_eq!(action_of(&third, stage), "continue");
        let after = json(&run.join(dir).join("metrics.json"))["epochs"].clone();
        assert_eq!(after.as_array().unwrap().len(), 3, "{stage}");
        assert_eq!(after[0], earlier[0], "{stage}");
        assert_eq!(after[1], earlier[1], "{stage}");
        assert_eq!(rec["stages"][stage]["sittings"], 2, "{stage}");
        assert!(
            rec["stages"][stage]["seconds"].as_f64().unwrap()
                > record["stages"][stage]["seconds"].as_f64().unwrap(),
            "{stage}"
        );
    }

    // Other data in the same run folder is refused, naming the way out.
    let other = t.path().join("other");
    testkit::write_synthetic(&other, &[("train", 8), ("validation", 4)], 6).unwrap();
    let out = tutorial(&other, &model, &run, &longer);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other inputs") && err.contains("--force") && err.contains("data"),
        "{err}"
    );

    // With --force every stage is made again from the new data.
    let mut forced: Vec<&str> = longer.to_vec();
    forced.push("--force");
    let fourth = ok(&tutorial(&other, &model, &run, &forced));
    for stage in ["scratch", "extract", "train-head", "finetune"] {
        assert_eq!(action_of(&fourth, stage), "rerun", "{fourth}");
    }
    let rec = json(&run.join("tutorial.json"));
    assert_eq!(
        rec["inputs"]["data"],
        other.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(rec["stages"]["finetune"]["sittings"], 1);
}

#[test]
fn quick_tutorial_on_one_folder_validates_every_stage_on_the_same_held_out_fifth() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    testkit::write_synthetic(&data, &[("", 10)], 8).unwrap();
    let model = dir.path().join("tiny.onnx");
    std::fs::write(&model, synth::vgg_like(&VggSpec::default())).unwrap();
    let run = dir.path().join("run");
    ok(&tutorial(&data, &model, &run, &[]));
    for stage in ["scratch", "head", "finetune"] {
        let m = json(&run.join(stage).join("metrics.json"));
        assert_eq!(
            (m["train_samples"].as_u64(), m["val_samples"].as_u64()),
            (Some(16), Some(4)),
            "{stage}: {m}"
        );
    }
}
