//! Many classes with few photos each through the real `bottleneck` binary (issue 34, defect 6:
//! 1,000 classes × 2 photos stalled for 15 minutes without a word after "linear probe: …").
//!
//! What it guards: a probe whose cost grows with classes × rows² (the exact dual solver's) takes
//! the streamed solver with a bounded number of passes, says why and how much work it plans, and
//! reports every value of C as it goes; the fit finishes. Before the fix the dual solver ran
//! silently (no line per value of C) for minutes; this test then failed on the missing progress
//! lines (or on its time limit). The 1,000-class timing with the real VGG16 is in BENCHMARKS.md.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::synth::{self, VggSpec};

/// 300 classes × 2 training photos: 300 × 600² = 1.1e8, over the dual solver's limit.
const CLASSES: usize = 300;

/// Longer than this is a stall (the fixed probe needs seconds here).
const LIMIT: Duration = Duration::from_secs(240);

/// Writes `DIR/train/cNNN/{0,1}.png` and `DIR/validation/cNNN/0.png`: a colour and a stripe
/// pattern per class, a little noise per photo.
fn photos(dir: &Path) {
    for c in 0..CLASSES {
        let h = |v: usize| (v.wrapping_mul(2_654_435_761) >> 7) as u32;
        let base = [h(c * 3) % 256, h(c * 3 + 1) % 256, h(c * 3 + 2) % 256];
        let (fx, fy) = (1 + h(c + 7) % 7, 1 + h(c + 11) % 7);
        for (split, count) in [("train", 2), ("validation", 1)] {
            let folder = dir.join(split).join(format!("c{c:03}"));
            fs::create_dir_all(&folder).unwrap();
            for i in 0..count {
                let seed = c * 10 + i + if split == "train" { 0 } else { 5 };
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let stripe = ((x * fx + y * fy) / 4) % 2;
                    let noise = h(seed * 4096 + (y * 32 + x) as usize) % 24;
                    image::Rgb(std::array::from_fn(|ch| {
                        let v = base[ch] * (2 + stripe) / 3 + noise;
                        v.min(255) as u8
                    }))
                });
                img.save(folder.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn many_classes_with_two_photos_each_fit_with_progress_in_bounded_time() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    photos(&data);
    let model = t.path().join("tiny.onnx");
    // 128 channels in the last block: 128 × 2 × 2 = 512 features at 64 px.
    let spec = VggSpec {
        blocks: vec![(2, 4), (2, 8), (3, 8), (3, 16), (3, 128)],
        ..VggSpec::default()
    };
    fs::write(&model, synth::vgg_like(&spec)).unwrap();
    let run = t.path().join("run");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bottleneck"))
        .args(["--json", "fit", "--no-finetune", "--data"])
        .arg(&data)
        .arg("--model")
        .arg(&model)
        .args(["--preprocess", "caffe", "--size", "64", "--run"])
        .arg(&run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).map(|_| s)
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out.join().unwrap().unwrap();
    let stderr = err.join().unwrap().unwrap();
    let Some(status) = status else {
        panic!("fit stalled: killed after {LIMIT:?}\nstderr:\n{stderr}");
    };
    assert!(status.success(), "fit failed: {status}\nstderr:\n{stderr}");

    // The probe says which solver, why, and the work it plans before it starts.
    let plan = stderr
        .lines()
        .find(|l| l.contains("linear probe:") && l.contains("streamed passes"))
        .unwrap_or_else(|| panic!("no streamed-solver line\nstderr:\n{stderr}"));
    assert!(
        plan.contains(&format!("{CLASSES} classes")) && plan.contains("limit"),
        "{plan}"
    );
    assert!(
        stderr.contains("L-BFGS steps per value of C"),
        "no planned work\nstderr:\n{stderr}"
    );
    // A line per value of C with its held-out score, then the final refit.
    let per_c = stderr
        .lines()
        .filter(|l| l.contains("held-out log loss") && l.contains(" of 11)"))
        .count();
    assert!(per_c >= 1, "no progress per value of C\nstderr:\n{stderr}");
    assert!(
        stderr.contains("refitting C"),
        "no refit line\nstderr:\n{stderr}"
    );

    let _: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON summary");
    let (model, meta) = head::load(&run.join("head/head.safetensors")).expect("a head");
    assert_eq!(model.config().num_classes, CLASSES);
    let probe = meta.probe.expect("the probe's summary");
    assert!(probe.streamed && probe.passes.is_some(), "{probe:?}");
    assert!(
        !probe.path.is_empty() && probe.temperature >= 1.0,
        "{probe:?}"
    );
}
