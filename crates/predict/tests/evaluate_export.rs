//! `evaluate` numbers (a hand-computed case, and a synthetic run checked against its own
//! predictions), its output files and overwrite refusal; `export` refuses to overwrite and its file,
//! run by Python onnxruntime with preprocessing taken only from its metadata, gives the in-process
//! predictions.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{files_under, synthetic, SIZE};
use features::dataset::Item;
use features::preprocess::{self, Preprocess, Resize};
use features::runtime::{Engine, SessionOptions};
use predict::evaluate::{score, EvaluateOptions};
use predict::run::Prediction;
use predict::{inputs, Error, LoadOptions, Predictor};

fn pred(label: usize, probs: &[f32], file: &str) -> Prediction {
    let classes = ["a".to_string(), "b".into(), "c".into()];
    let item = Item {
        path: PathBuf::from(file),
        rel: file.into(),
        label,
    };
    Prediction::new(&item, probs, &classes, 3)
}

#[test]
fn scores_of_a_hand_computed_case() {
    let classes = ["a".to_string(), "b".into(), "c".into()];
    let preds = [
        pred(0, &[0.7, 0.2, 0.1], "1"),
        pred(0, &[0.1, 0.8, 0.1], "2"),
        pred(1, &[0.2, 0.6, 0.2], "3"),
        pred(2, &[0.05, 0.9, 0.05], "4"),
        pred(2, &[0.1, 0.1, 0.8], "5"),
    ];
    let s = score(&classes, &preds, 16).unwrap();
    assert_eq!((s.images, s.correct), (5, 3));
    assert!((s.accuracy - 0.6).abs() < 1e-12);
    assert_eq!(
        s.confusion.matrix,
        vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 1, 1]]
    );
    let want = [
        (1.0, 0.5, 2.0 / 3.0, 2),
        (1.0 / 3.0, 1.0, 0.5, 1),
        (1.0, 0.5, 2.0 / 3.0, 2),
    ];
    for (c, (p, r, f, n)) in s.per_class.iter().zip(want) {
        assert!((c.precision - p).abs() < 1e-12, "{c:?}");
        assert!((c.recall - r).abs() < 1e-12, "{c:?}");
        assert!((c.f1 - f).abs() < 1e-12, "{c:?}");
        assert_eq!(c.support, n);
    }
    assert!((s.macro_f1 - (2.0 / 3.0 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    let ll = -[0.7f64, 0.1, 0.6, 0.05, 0.8]
        .iter()
        .map(|p| (*p as f32 as f64).ln())
        .sum::<f64>()
        / 5.0;
    assert!((s.log_loss - ll).abs() < 1e-9, "{} vs {ll}", s.log_loss);
    let worst: Vec<(&str, &str, &str, f32, f32)> = s
        .worst
        .iter()
        .map(|m| {
            (
                m.file.as_str(),
                m.truth.as_str(),
                m.predicted.as_str(),
                m.probability,
                m.true_probability,
            )
        })
        .collect();
    assert_eq!(
        worst,
        vec![("4", "c", "b", 0.9, 0.05), ("2", "a", "b", 0.8, 0.1)]
    );
    assert_eq!(score(&classes, &preds, 1).unwrap().worst.len(), 1);
}

#[test]
fn evaluate_matches_the_predictions_writes_its_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let mut opts = EvaluateOptions::new(&p.run, &p.data);
    opts.session.threads = Some(1);
    opts.worst = 3;
    let e = predict::evaluate(&opts, &mut |_| {}).unwrap();
    assert_eq!(e.split, "validation");

    // The same numbers from plain predictions of the validation files.
    let c = predict::load(&p.run, &LoadOptions::default()).unwrap();
    let classes = c.classes.clone();
    let files = files_under(&p.data.join("validation"));
    let items = inputs::collect(&files).unwrap();
    let mut pr = Predictor::new(c, &opts.session, opts.engine).unwrap();
    let mut preds = Vec::new();
    pr.run(&items, 5, 1, &mut |b, _| {
        preds.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    let truth: Vec<usize> = files
        .iter()
        .map(|f| {
            classes
                .iter()
                .position(|c| f.parent().unwrap().ends_with(c))
                .unwrap()
        })
        .collect();
    let correct = preds
        .iter()
        .zip(&truth)
        .filter(|(p, t)| p.index == **t)
        .count();
    assert_eq!(e.scores.images, files.len());
    assert_eq!(e.scores.correct, correct);
    assert!((e.scores.accuracy - correct as f64 / files.len() as f64).abs() < 1e-12);
    let total: u64 = e.scores.confusion.matrix.iter().flatten().sum();
    assert_eq!(total as usize, files.len());
    let wrong = files.len() - correct;
    assert_eq!(e.scores.worst.len(), wrong.min(3));
    for w in e.scores.worst.windows(2) {
        assert!(w[0].probability >= w[1].probability);
    }
    let ll: f64 = preds
        .iter()
        .zip(&truth)
        .map(|(p, &t)| -(p.probabilities[t] as f64).max(1e-7).ln())
        .sum::<f64>()
        / files.len() as f64;
    assert!((e.scores.log_loss - ll).abs() < 1e-5);

    // Files: the JSON holds the numbers, the sheet is a PNG with one cell per mistake.
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.run.join("evaluate/validation/evaluation.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["accuracy"], serde_json::json!(e.scores.accuracy));
    assert_eq!(
        json["confusion"]["matrix"],
        serde_json::json!(e.scores.confusion.matrix)
    );
    assert_eq!(json["classifier"]["stage"], "head");
    let sheet = image::open(p.run.join("evaluate/validation/worst.png")).unwrap();
    assert!(sheet.width() >= 160 && sheet.height() > 34);
    let leftovers: Vec<_> = std::fs::read_dir(p.run.join("evaluate"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("validation")]);

    match predict::evaluate(&opts, &mut |_| {}) {
        Err(Error::Exists { path }) => assert_eq!(path, p.run.join("evaluate/validation")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    opts.force = true;
    opts.split = Some("train".into());
    let t = predict::evaluate(&opts, &mut |_| {}).unwrap();
    assert_eq!(t.scores.images, files_under(&p.data.join("train")).len());
    opts.split = Some("validation".into());
    predict::evaluate(&opts, &mut |_| {}).unwrap();

    // Data with other classes is refused.
    let other = dir.path().join("other");
    for class in ["cats", "dogs"] {
        std::fs::create_dir_all(other.join(class)).unwrap();
        std::fs::copy(&files[0], other.join(class).join("x.png")).unwrap();
    }
    let mut o = EvaluateOptions::new(&p.run, &other);
    o.force = true;
    let err = predict::evaluate(&o, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("\"cats\"") && err.contains("\"bright\""),
        "{err}"
    );
}

/// The venv Python (created by scripts/setup.sh), or `None` (skip) outside CI.
fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = py.is_file()
        && Command::new(&py)
            .args(["-c", "import onnxruntime, numpy"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} with onnxruntime and numpy is needed (run scripts/setup.sh)",
            py.display()
        );
    }
    eprintln!(
        "note: {} with onnxruntime not found; skipping the Python check",
        py.display()
    );
    None
}

#[test]
fn exported_model_in_python_onnxruntime_equals_in_process_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let out = dir.path().join("out/classifier.onnx");
    let s = predict::export(&p.run, &out, false, &LoadOptions::default()).unwrap();
    assert_eq!(s.classifier.stage, predict::Stage::Head);
    let meta = |k: &str| {
        s.metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(meta("stage").as_deref(), Some("head"));
    assert_eq!(meta("channel_order").as_deref(), Some("BGR"));
    assert_eq!(meta("layout").as_deref(), Some("NCHW"));
    assert_eq!(meta("resize").as_deref(), Some("nearest"));
    assert_eq!(
        meta("source_model_sha256"),
        Some(features::manifest::sha256_hex(
            &std::fs::read(&p.model).unwrap()
        ))
    );
    // Never over an existing file without force.
    let before = std::fs::read(&out).unwrap();
    assert!(matches!(
        predict::export(&p.run, &out, false, &LoadOptions::default()),
        Err(Error::Exists { .. })
    ));
    predict::export(&p.run, &out, true, &LoadOptions::default()).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "the export is deterministic"
    );
    assert_eq!(
        std::fs::read_dir(out.parent().unwrap()).unwrap().count(),
        1,
        "no temporary files left"
    );

    let Some(py) = python() else { return };
    let files: Vec<PathBuf> = files_under(&p.data.join("validation"))
        .into_iter()
        .take(5)
        .collect();
    let mut rgb = Vec::new();
    for f in &files {
        let img = features::image_io::load_rgb8(f).unwrap().image;
        rgb.extend_from_slice(
            preprocess::resize(&img, SIZE, SIZE, Resize::Nearest)
                .unwrap()
                .as_raw(),
        );
    }
    let (rgb_file, probs_file) = (dir.path().join("rgb.u8"), dir.path().join("probs.f32"));
    std::fs::write(&rgb_file, &rgb).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_export.py");
    let o = Command::new(&py)
        .arg(&script)
        .arg(&out)
        .arg(&rgb_file)
        .arg(files.len().to_string())
        .arg(&probs_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: Vec<f32> = std::fs::read(&probs_file)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();

    let c = predict::load(&p.run, &LoadOptions::default()).unwrap();
    let mut pr = Predictor::new(c, &SessionOptions::default(), Engine::Auto).unwrap();
    let mut ours = Vec::new();
    pr.run(&inputs::collect(&files).unwrap(), 2, 1, &mut |b, _| {
        ours.extend(b.iter().flat_map(|p| p.probabilities.clone()));
        Ok(())
    })
    .unwrap();
    assert_eq!(theirs.len(), ours.len());
    let diff = theirs
        .iter()
        .zip(&ours)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-4, "Python onnxruntime vs in-process: {diff}");
    println!("exported model in Python onnxruntime vs predict: max difference {diff:.2e}");
}

#[test]
fn metadata_normalization_is_the_preprocessing() {
    for p in [Preprocess::Caffe, Preprocess::Torch, Preprocess::Unit] {
        let n = predict::metadata::normalization(p);
        for rgb in [[0.0f32, 0.0, 0.0], [255.0, 128.0, 3.0], [17.0, 250.0, 99.0]] {
            let ordered = if n.channel_order == "BGR" {
                [rgb[2], rgb[1], rgb[0]]
            } else {
                rgb
            };
            let want = p.pixel(rgb);
            for c in 0..3 {
                let got = ((ordered[c] as f64 * n.scale - n.mean[c]) / n.std[c]) as f32;
                assert!(
                    (got - want[c]).abs() <= 1e-6 * want[c].abs().max(1.0),
                    "{p:?} {rgb:?} channel {c}: {got} vs {}",
                    want[c]
                );
            }
        }
    }
}
