//! Real data: a few dozen shared dogs-vs-cats photos per class through the real VGG16 conv base
//! (`features::extract`), then `train-head` with the tutorial settings; asserts an accuracy floor.
//! Skips with a note when /work/shared is absent, fails loudly when CI is set.

use std::path::{Path, PathBuf};

use features::extract::{extract, ExtractConfig};
use features::preprocess::Preprocess;
use head::mlp::TrainConfig;
use head::pipeline::{train_head, TrainHeadOptions};

const TRAIN_PER_CLASS: usize = 40;
const VAL_PER_CLASS: usize = 25;

fn shared() -> Option<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let model = root.join("models/vgg16_keras_notop.onnx");
    let data = root.join("data/dogs_vs_cats");
    if model.is_file() && data.join("train/cats").is_dir() {
        return Some((model, data));
    }
    let msg = format!(
        "real data missing: need {} and {}",
        model.display(),
        data.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (required in CI)");
    }
    eprintln!("skipping: {msg}");
    None
}

/// Links the first `n` photos (sorted by name) of `src/<split>/<class>` into `dst`.
fn link_subset(src: &Path, dst: &Path, split: &str, class: &str, n: usize) {
    let from = src.join(split).join(class);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&from)
        .unwrap_or_else(|e| panic!("{}: {e}", from.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg")))
        .collect();
    files.sort();
    assert!(
        files.len() >= n,
        "{} has fewer than {n} photos",
        from.display()
    );
    let to = dst.join(split).join(class);
    std::fs::create_dir_all(&to).unwrap();
    for f in &files[..n] {
        std::os::unix::fs::symlink(f, to.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn real_photos_reach_an_accuracy_floor() {
    let Some((model, src)) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for class in ["cats", "dogs"] {
        link_subset(&src, &data, "train", class, TRAIN_PER_CLASS);
        link_subset(&src, &data, "validation", class, VAL_PER_CLASS);
    }
    let run = tmp.path().join("run");
    let mut cfg = ExtractConfig::new(&data, model.to_string_lossy(), &run);
    cfg.preprocess = Some(Preprocess::Caffe);
    extract(&cfg, &mut |_| {}).expect("feature extraction");

    let opts = TrainHeadOptions {
        run: run.clone(),
        config: TrainConfig {
            epochs: 30,
            recipe: head::recipe::Recipe::Keras2016,
            ..TrainConfig::default()
        },
        val_split: None,
        force: false,
    };
    let report = train_head(&opts, &mut |_| {}).expect("train-head");
    let m = &report.metrics;
    eprintln!(
        "real data: final val accuracy {:.3}, best {:.3}, kept epoch {}\n{}",
        m.final_val_accuracy,
        m.best_val_accuracy,
        m.kept_epoch,
        report.confusion.render()
    );
    assert_eq!(m.train_samples, 2 * TRAIN_PER_CLASS);
    assert_eq!(m.val_samples, 2 * VAL_PER_CLASS);
    assert_eq!(report.meta.feature_shape, [512, 4, 4]);
    assert_eq!(report.meta.features.output_tensor, "block5_pool");
    assert!(
        m.final_val_accuracy >= 0.84,
        "validation accuracy {} is below the floor of 0.84",
        m.final_val_accuracy
    );
    let (loaded, meta) = head::load(&report.paths.weights).unwrap();
    assert_eq!(meta.classes, ["cats", "dogs"]);
    assert_eq!(loaded.config().input_dim(), 8192);
}
