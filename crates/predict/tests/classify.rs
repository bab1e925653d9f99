//! `predict` on a synthetic run: files and folders give one prediction per readable image in
//! order, with the probabilities of an independent reference (backbone in ONNX Runtime + head in
//! Candle, or the fine-tuned model.onnx run directly); the best stage is chosen and can be forced;
//! unreadable images are skipped; a run without a head or a missing path is a clear error.

mod common;

use std::path::PathBuf;

use common::{files_under, head_reference, max_diff, synthetic};
use features::runtime::{Engine, SessionOptions};
use predict::run::Prediction;
use predict::{inputs, LoadOptions, Predictor, Stage};

fn one_thread() -> SessionOptions {
    SessionOptions {
        threads: Some(1),
        ..Default::default()
    }
}

fn predict_all(
    c: predict::Classifier,
    paths: &[PathBuf],
    batch: usize,
    k: usize,
) -> (Vec<Prediction>, Vec<String>) {
    let items = inputs::collect(paths).unwrap();
    let mut p = Predictor::new(c, &one_thread(), Engine::Auto).unwrap();
    let mut preds = Vec::new();
    let mut skipped = Vec::new();
    let stats = p
        .run(&items, batch, k, &mut |b, s| {
            preds.extend_from_slice(b);
            skipped.extend(s.iter().map(|s| s.file.clone()));
            Ok(())
        })
        .unwrap();
    assert_eq!(stats.predicted, preds.len());
    assert_eq!(stats.images, preds.len() + skipped.len());
    (preds, skipped)
}

fn probs(preds: &[Prediction]) -> Vec<Vec<f32>> {
    preds.iter().map(|p| p.probabilities.clone()).collect()
}

#[test]
fn head_stage_predicts_files_and_folders_in_order_and_skips_unreadable_images() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let c = predict::load(&p.run, &LoadOptions::default()).unwrap();
    assert_eq!(c.stage, Stage::Head);
    assert_eq!(c.note, None);
    assert_eq!(c.classes, vec!["bright".to_string(), "dark".into()]);

    // A folder (recursive, non-images ignored) and a single file.
    let val = p.data.join("validation");
    let single = val.join("dark/dark.1.jpg");
    let (preds, skipped) = predict_all(c.clone(), &[val.clone(), single.clone()], 3, 2);
    let mut expected = files_under(&val);
    expected.push(single);
    assert!(skipped.is_empty(), "{skipped:?}");
    let got: Vec<PathBuf> = preds.iter().map(|p| PathBuf::from(&p.file)).collect();
    assert_eq!(got, expected, "one prediction per file, in order");
    let diff = max_diff(&probs(&preds), &head_reference(&p, &expected));
    assert!(
        diff <= 1e-5,
        "predict vs backbone in ORT + head in Candle: {diff}"
    );
    for pr in &preds {
        let best = if pr.probabilities[1] > pr.probabilities[0] {
            1
        } else {
            0
        };
        assert_eq!(pr.index, best);
        assert_eq!(pr.class, c.classes[best]);
        assert_eq!(pr.probability, pr.probabilities[best]);
        assert_eq!(pr.top.len(), 2);
        assert_eq!(pr.top[0].class, pr.class);
        assert!(pr.top[0].probability >= pr.top[1].probability);
        assert!((pr.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    // Unreadable files are named and skipped; the others are still classified.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(mixed.join("sub")).unwrap();
    let good = [val.join("bright/bright.0.png"), val.join("dark/dark.0.png")];
    std::fs::copy(&good[0], mixed.join("a.png")).unwrap();
    std::fs::write(mixed.join("b.jpg"), b"not a jpeg at all").unwrap();
    std::fs::write(mixed.join("notes.txt"), b"ignored: not an image name").unwrap();
    std::fs::copy(&good[1], mixed.join("sub/c.png")).unwrap();
    let (preds, skipped) = predict_all(c, std::slice::from_ref(&mixed), 2, 1);
    assert_eq!(
        skipped,
        vec![mixed.join("b.jpg").to_string_lossy().into_owned()]
    );
    let got: Vec<PathBuf> = preds.iter().map(|p| PathBuf::from(&p.file)).collect();
    assert_eq!(got, vec![mixed.join("a.png"), mixed.join("sub/c.png")]);
    let diff = max_diff(&probs(&preds), &head_reference(&p, &good));
    assert!(diff <= 1e-5, "{diff}");
    assert_eq!(preds[0].top.len(), 1);
}

#[test]
fn finetuned_model_is_preferred_and_the_head_can_be_forced() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    // A fine-tuning folder without model.onnx (unfinished run): the head is used, with a note.
    std::fs::create_dir_all(p.run.join("finetune")).unwrap();
    let c = predict::load(&p.run, &LoadOptions::default()).unwrap();
    assert_eq!(c.stage, Stage::Head);
    assert!(
        c.note
            .as_deref()
            .unwrap_or("")
            .contains("model.onnx not found"),
        "{:?}",
        c.note
    );
    let err = predict::load(
        &p.run,
        &LoadOptions {
            stage: Some(Stage::Finetune),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bottleneck finetune --run"), "{err}");

    common::run_finetune(&p);
    let files = files_under(&p.data.join("validation"));
    let c = predict::load(&p.run, &LoadOptions::default()).unwrap();
    assert_eq!(c.stage, Stage::Finetune);
    assert_eq!(c.source, p.run.join("finetune/model.onnx"));
    let (ft, _) = predict_all(c, &[p.data.join("validation")], 4, 1);
    let ft_ref = common::finetune_reference(&p, &files);
    assert!(max_diff(&probs(&ft), &ft_ref) <= 1e-5);

    let forced = predict::load(
        &p.run,
        &LoadOptions {
            stage: Some(Stage::Head),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(forced.stage, Stage::Head);
    assert!(forced.note.is_some());
    let (hd, _) = predict_all(forced, &[p.data.join("validation")], 4, 1);
    let head_ref = head_reference(&p, &files);
    assert!(max_diff(&probs(&hd), &head_ref) <= 1e-5);
    assert!(
        max_diff(&ft_ref, &head_ref) > 1e-4,
        "fine-tuning changed nothing, so the stage choice is not tested"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let err = predict::load(&run, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not exist") && err.contains("bottleneck train-head"),
        "{err}"
    );
    std::fs::create_dir_all(run.join("features")).unwrap();
    let err = predict::load(&run, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("head.safetensors is missing")
            && err.contains(&format!("bottleneck train-head --run {}", run.display())),
        "{err}"
    );

    let missing = dir.path().join("no/such.jpg");
    let err = inputs::collect(std::slice::from_ref(&missing))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("does not exist"),
        "{err}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("deeper")).unwrap();
    std::fs::write(empty.join("deeper/readme.txt"), b"x").unwrap();
    let err = inputs::collect(&[empty]).unwrap_err().to_string();
    assert!(err.contains("no image files"), "{err}");
}

#[test]
fn moved_backbone_is_found_with_model_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let moved = dir.path().join("moved.onnx");
    std::fs::rename(&p.model, &moved).unwrap();
    let err = predict::load(&p.run, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--model"), "{err}");
    let c = predict::load(
        &p.run,
        &LoadOptions {
            model: Some(moved.to_string_lossy().into_owned()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(c.stage, Stage::Head);
    // Another model (different weights) is refused by its sha256.
    let other = dir.path().join("other.onnx");
    let spec = testkit::synth::VggSpec {
        seed: 99,
        ..Default::default()
    };
    std::fs::write(&other, testkit::synth::vgg_like(&spec)).unwrap();
    let err = predict::load(
        &p.run,
        &LoadOptions {
            model: Some(other.to_string_lossy().into_owned()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sha256"), "{err}");
}
