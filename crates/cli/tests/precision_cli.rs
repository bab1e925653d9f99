//! `--train-precision` through the real binary: `auto` resolves to bf16 products where the CPU has
//! AVX512-BF16 and to FP32 where it has not (simulated with `BOTTLENECK_NO_BF16=1`), each stage
//! records what it ran in, and asking for bf16 where it cannot run is refused before anything is
//! written.

use std::path::Path;
use std::process::{Command, Output};

fn scratch(data: &Path, run: &Path, precision: &str, no_bf16: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bottleneck"));
    cmd.args(["--json", "scratch", "--data"])
        .arg(data)
        .arg("--run")
        .arg(run)
        .args([
            "--size",
            "32",
            "--epochs",
            "1",
            "--train-precision",
            precision,
        ]);
    if no_bf16 {
        cmd.env("BOTTLENECK_NO_BF16", "1");
    } else {
        cmd.env_remove("BOTTLENECK_NO_BF16");
    }
    cmd.output().expect("the binary runs")
}

fn recorded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "scratch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    v["settings"]["train_precision"]
        .as_str()
        .expect("settings.train_precision")
        .to_string()
}

#[test]
fn auto_resolves_per_cpu_and_bf16_without_it_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::data::write_synthetic(&data, &[("train", 6), ("validation", 4)], 3).unwrap();

    let without = t.path().join("no-bf16");
    assert_eq!(recorded(&scratch(&data, &without, "auto", true)), "fp32");

    let refused = t.path().join("refused");
    let out = scratch(&data, &refused, "bf16", true);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AVX512-BF16") && err.contains("--train-precision fp32"),
        "{err}"
    );
    assert!(!refused.join("scratch").exists(), "nothing is written");

    if train::kernels::bf16::available() {
        let with = t.path().join("bf16");
        assert_eq!(recorded(&scratch(&data, &with, "auto", false)), "bf16");
    } else {
        // CI machines differ: some are AVX2 only, where `auto` is FP32 (checked above).
        eprintln!(
            "note: this CPU has no AVX512-BF16; the bf16 arm of `auto` is not exercised here"
        );
    }
}
