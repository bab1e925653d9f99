//! A short fine-tuning of the real Keras VGG16 block5 and a head trained through the `head` crate,
//! on a few dozen shared photos: it completes, passes its own checks and does not lower the
//! validation accuracy below the head's.

mod common;

use common::extract_and_train_head;
use finetune::{finetune, FinetuneConfig};

#[test]
fn short_real_run_keeps_the_heads_validation_accuracy() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    testkit::link_shared_subset(&shared, &data, &["train", "validation"], 12).unwrap();
    let model = shared.join("models/vgg16_keras_notop.onnx");
    let run = dir.path().join("run");
    extract_and_train_head(&data, model.to_str().unwrap(), &run, 150, 20);

    let mut cfg = FinetuneConfig::new(&run, &data);
    cfg.epochs = 2;
    cfg.options.aug_cache = 2;
    let mut lines = Vec::new();
    let report = finetune(&cfg, &mut |e| match e {
        finetune::Event::Info(s) => lines.push(s),
        finetune::Event::Epoch { metrics, .. } => lines.push(format!("{metrics:?}")),
        _ => {}
    })
    .expect("fine-tuning");
    println!("{}", lines.join("\n"));
    assert_eq!(
        report.settings.split_at, "block4_pool",
        "the manifest's trainable_from is the default"
    );
    assert!(report.finished && report.epochs_done == 2);
    assert_eq!((report.train_images, report.val_images), (24, 24));
    assert!(report.block_check.max_diff <= 1e-4);
    assert!(report.export_check.as_ref().unwrap().max_diff <= 1e-4);
    let m = report.metrics.as_ref().unwrap();
    assert!(
        m.kept_val_accuracy >= report.initial_val_accuracy,
        "fine-tuning lowered the validation accuracy: {} → {}",
        report.initial_val_accuracy,
        m.kept_val_accuracy
    );
    for f in [
        "model.onnx",
        "block.safetensors",
        "head.safetensors",
        "metrics.json",
        "confusion.json",
        "curves.png",
    ] {
        assert!(run.join("finetune").join(f).is_file(), "{f} missing");
    }
}
