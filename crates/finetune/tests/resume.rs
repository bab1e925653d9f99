//! A run stopped after an epoch and continued with `resume` ends with exactly the weights and
//! history of an uninterrupted run with the same seed (cached and fresh augmentation).

mod common;

use common::{copy_run, synthetic, synthetic_config, tensors};
use finetune::finetune;

fn history(report: &finetune::Report) -> Vec<(usize, f64, f64, f64, f64)> {
    report
        .metrics
        .as_ref()
        .expect("metrics")
        .epochs
        .iter()
        .map(|e| (e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy))
        .collect()
}

fn resume_equals_uninterrupted(aug_cache: usize) {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());

    let mut full = synthetic_config(&p, &p.run);
    full.options.aug_cache = aug_cache;
    let a = finetune(&full, &mut |_| {}).expect("uninterrupted run");
    assert!(a.finished && a.epochs_done == 3);

    let run_b = dir.path().join("run_b");
    copy_run(&p.run, &run_b);
    let mut first = synthetic_config(&p, &run_b);
    first.options.aug_cache = aug_cache;
    first.stop_after = Some(1);
    let b1 = finetune(&first, &mut |_| {}).expect("first session");
    assert!(!b1.finished && b1.epochs_done == 1);
    assert!(
        !run_b.join("finetune/block.safetensors").exists(),
        "a paused run writes no final outputs"
    );
    let mut second = synthetic_config(&p, &run_b);
    second.options.aug_cache = aug_cache;
    second.stop_after = Some(1);
    second.resume = true;
    let b2 = finetune(&second, &mut |_| {}).expect("second session");
    assert_eq!(
        (b2.resumed_at, b2.epochs_done, b2.finished),
        (Some(1), 2, false)
    );
    second.stop_after = None;
    let b3 = finetune(&second, &mut |_| {}).expect("third session");
    assert!(b3.finished && b3.epochs_done == 3);

    assert_eq!(history(&a), history(&b3));
    for file in [
        "block.safetensors",
        "head.safetensors",
        "checkpoint.safetensors",
    ] {
        let (ta, tb) = (
            tensors(&p.run.join("finetune").join(file)),
            tensors(&run_b.join("finetune").join(file)),
        );
        assert!(!ta.is_empty());
        assert_eq!(ta.len(), tb.len(), "{file}");
        for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
            assert_eq!(na, nb);
            assert!(
                va == vb,
                "{file}: tensor {na} differs between the resumed and the uninterrupted run"
            );
        }
    }
    // The weights did change during training.
    let a_block = tensors(&p.run.join("finetune/block.safetensors"));
    let w = features::onnx::initializer_f32(&std::fs::read(&p.model).unwrap(), "block5_conv1_W")
        .unwrap()
        .1;
    let trained: Vec<f32> = a_block
        .iter()
        .find(|(n, _)| n == "block5_conv1_W")
        .unwrap()
        .1
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(w.len(), trained.len());
    assert!(w != trained, "fine-tuning left block5_conv1 unchanged");
}

#[test]
fn resume_with_cached_draws_equals_an_uninterrupted_run() {
    resume_equals_uninterrupted(2);
}

#[test]
fn resume_with_fresh_augmentation_equals_an_uninterrupted_run() {
    resume_equals_uninterrupted(0);
}
