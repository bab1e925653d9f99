//! `--precision int8` on the tiny synthetic VGG: the frozen part runs as our int8 QDQ model while the
//! block and the head train in FP32; the precision is recorded everywhere; FP32 and int8 caches are
//! keyed and stored apart (neither reuses nor overwrites the other's); and a checkpoint only resumes
//! at its own precision.

mod common;

use std::path::Path;

use common::{copy_run, synthetic, synthetic_config, Prepared};
use finetune::config::FrozenPrecision;
use finetune::rows::RowReader;
use finetune::{finetune, Error, FinetuneConfig};

fn int8_config(p: &Prepared, run: &Path) -> FinetuneConfig {
    let mut cfg = synthetic_config(p, run);
    cfg.options.precision = FrozenPrecision::Int8;
    cfg.epochs = 1;
    cfg.options.aug_cache = 1;
    cfg
}

fn key_of(path: &Path) -> String {
    RowReader::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .metadata
        .get("key")
        .cloned()
        .expect("cache key")
}

fn block_metadata(path: &Path) -> std::collections::HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().clone().expect("metadata")
}

#[test]
fn int8_finetune_trains_one_epoch_and_records_the_precision() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let cfg = int8_config(&p, &p.run);
    let r = finetune(&cfg, &mut |_| {}).expect("int8 fine-tuning");
    assert!(r.finished && r.epochs_done == 1);
    assert_eq!(r.precision, FrozenPrecision::Int8);
    assert_eq!(r.settings.options.precision, FrozenPrecision::Int8);
    let q = r.int8.as_ref().expect("int8 report");
    assert_eq!(r.settings.int8_key.as_deref(), Some(q.key.as_str()));
    assert!(q.quantized_convs > 0, "no conv runs in int8");
    assert!(!q.from_cache, "a fresh run folder has no cached int8 model");
    let model_file = q.path.as_ref().expect("int8 model file");
    assert!(model_file.starts_with(p.run.join("models")) && model_file.is_file());
    // The frozen part really is the quantized one: its outputs differ from FP32, but not by much.
    assert!(
        q.frozen_max_rel_diff > 0.0 && q.frozen_max_rel_diff < 0.2,
        "int8 vs FP32 frozen outputs: {}",
        q.frozen_max_rel_diff
    );
    // The block check compares FP32 graphs on FP32 frozen outputs, the export check model.onnx
    // (int8 frozen part) with the Candle forward on int8 frozen outputs: both at full tolerance.
    assert!(r.block_check.max_diff <= finetune::checks::BLOCK_TOLERANCE);
    let export = r.export_check.as_ref().expect("export check");
    assert!(export.max_diff <= finetune::checks::EXPORT_TOLERANCE);
    assert!(
        r.export_note.contains("int8 frozen part"),
        "{}",
        r.export_note
    );
    // model.onnx carries the int8 frozen part it was validated with (QDQ nodes, int8 metadata).
    let onnx = std::fs::read(p.run.join("finetune/model.onnx")).unwrap();
    let meta = finetune::export::metadata(&onnx).unwrap();
    assert!(
        meta.iter()
            .any(|(k, v)| k == "bottleneck.int8.key" && *v == q.key),
        "model.onnx lacks the int8 key: {meta:?}"
    );

    let fdir = p.run.join("finetune");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fdir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["precision"], "int8");
    assert_eq!(metrics["int8_key"], q.key.as_str());
    assert_eq!(metrics["epochs"].as_array().map(Vec::len), Some(1));
    let block = block_metadata(&fdir.join("block.safetensors"));
    assert_eq!(block.get("precision").map(String::as_str), Some("int8"));
    assert_eq!(block.get("int8_key"), Some(&q.key));
    let (_, head_meta) = head::load(&fdir.join("head.safetensors")).unwrap();
    assert_eq!(head_meta.features.precision, "int8");
    assert!(fdir.join("model.onnx").is_file());
    // The caches live in their own folder.
    let cache = p.run.join("finetune-cache");
    assert!(cache.join("int8/validation.safetensors").is_file());
    assert!(cache.join("int8/train-aug-0000.safetensors").is_file());
    assert!(!cache.join("validation.safetensors").exists());
}

#[test]
fn fp32_and_int8_caches_are_keyed_and_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let cache = p.run.join("finetune-cache");

    let int8 = int8_config(&p, &p.run);
    let a = finetune(&int8, &mut |_| {}).expect("int8 run");
    assert_eq!(a.draw_seconds.len(), 1, "the int8 draw is built");

    let mut fp32 = int8.clone();
    fp32.options.precision = FrozenPrecision::Fp32;
    fp32.force = true;
    let b = finetune(&fp32, &mut |_| {}).expect("fp32 run");
    assert_eq!(b.precision, FrozenPrecision::Fp32);
    assert!(b.int8.is_none() && b.settings.int8_key.is_none());
    assert_eq!(
        b.draw_seconds.len(),
        1,
        "the fp32 run must not reuse the int8 draw"
    );
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.run.join("finetune/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["precision"], "fp32");

    for file in ["validation.safetensors", "train-aug-0000.safetensors"] {
        let (k32, k8) = (
            key_of(&cache.join(file)),
            key_of(&cache.join("int8").join(file)),
        );
        assert_ne!(k32, k8, "{file}: fp32 and int8 caches share a key");
    }
    // The int8 caches survived the fp32 run and are reused by the next int8 run, as is the model.
    let mut again = int8.clone();
    again.force = true;
    let c = finetune(&again, &mut |_| {}).expect("second int8 run");
    assert!(c.draw_seconds.is_empty(), "the int8 draw was rebuilt");
    let q = c.int8.as_ref().expect("int8 report");
    assert!(q.from_cache, "the int8 model was re-quantized");
    assert_eq!(Some(&q.key), a.settings.int8_key.as_ref());
    // Same inputs, same frozen outputs: the two int8 runs agree exactly.
    let (ma, mc) = (a.metrics.unwrap(), c.metrics.unwrap());
    assert_eq!(ma.epochs[0].val_loss, mc.epochs[0].val_loss);
}

#[test]
fn resume_refuses_another_precision() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let run8 = dir.path().join("run8");
    copy_run(&p.run, &run8);

    // An fp32 checkpoint does not resume as int8 ...
    let mut fp32 = synthetic_config(&p, &p.run);
    fp32.epochs = 2;
    fp32.options.aug_cache = 1;
    fp32.stop_after = Some(1);
    let a = finetune(&fp32, &mut |_| {}).expect("fp32 first session");
    assert!(!a.finished && a.epochs_done == 1);
    let mut wrong = fp32.clone();
    wrong.resume = true;
    wrong.options.precision = FrozenPrecision::Int8;
    let e = finetune(&wrong, &mut |_| {}).expect_err("resumed at int8");
    assert!(matches!(e, Error::Mismatch(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("--precision fp32") && msg.contains("--force"),
        "{msg}"
    );
    assert!(!p.run.join("models").exists(), "quantized before refusing");

    // ... and an int8 checkpoint neither resumes as fp32 nor fails to resume as int8.
    let mut int8 = int8_config(&p, &run8);
    int8.epochs = 2;
    int8.stop_after = Some(1);
    finetune(&int8, &mut |_| {}).expect("int8 first session");
    let mut wrong = int8.clone();
    wrong.resume = true;
    wrong.options.precision = FrozenPrecision::Fp32;
    let msg = finetune(&wrong, &mut |_| {})
        .expect_err("resumed at fp32")
        .to_string();
    assert!(
        msg.contains("--precision int8") && msg.contains("--force"),
        "{msg}"
    );
    let mut right = int8.clone();
    right.resume = true;
    right.stop_after = None;
    let r = finetune(&right, &mut |_| {}).expect("int8 resume");
    assert_eq!(
        (r.resumed_at, r.epochs_done, r.finished),
        (Some(1), 2, true)
    );
    assert_eq!(r.precision, FrozenPrecision::Int8);
}
