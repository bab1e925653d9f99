//! What the binary tests of issue 29 and 34 share: the `bottleneck` binary, exit-code assertions,
//! and extraction with the tiny synthetic VGG on generated photos.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::synth::{self, VggSpec};

/// The `bottleneck` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bottleneck"))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit code 0; returns the output.
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status.code(),
        stderr(&out)
    );
    out
}

/// Exit code 1 (a failed request, not a usage error); returns stderr.
pub fn fails(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    stderr(&out)
}

/// The tiny synthetic VGG in `dir`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.onnx");
    fs::write(&p, synth::vgg_like(&VggSpec::default())).unwrap();
    p
}

/// `extract` of `data` with `model` into `run` at 64 px, caffe preprocessing, one thread.
pub fn extract(data: &Path, model: &Path, run: &Path) -> Command {
    let mut c = bin();
    c.args([
        "extract",
        "--preprocess",
        "caffe",
        "--size",
        "64",
        "--threads",
        "1",
        "--data",
    ])
    .arg(data)
    .arg("--model")
    .arg(model)
    .arg("--run")
    .arg(run);
    c
}

/// `fit --json` of `data` with the tiny synthetic VGG `model`: 64 px, caffe, fine-tuning from
/// `block4_pool` for one epoch over one cached draw, one thread; add `--run RUN` and any other flag.
pub fn fit_tiny(data: &Path, model: &Path) -> Command {
    let mut c = bin();
    c.args(["--json", "fit", "--data"])
        .arg(data)
        .arg("--model")
        .arg(model)
        .args([
            "--preprocess",
            "caffe",
            "--size",
            "64",
            "--split-at",
            "block4_pool",
        ])
        .args([
            "--finetune-epochs",
            "1",
            "--aug-cache",
            "1",
            "--threads",
            "1",
        ]);
    c
}
