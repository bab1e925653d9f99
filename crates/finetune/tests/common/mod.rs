//! Shared test setup: a run folder with extracted features and a trained stage-2 head, on a tiny
//! synthetic VGG (`testkit::synth`) and synthetic images, or on a subset of the shared
//! dogs-vs-cats photos with the real Keras VGG16.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use features::extract::{extract, ExtractConfig};
use features::preprocess::Preprocess;
use finetune::FinetuneConfig;
use head::mlp::TrainConfig;
use head::pipeline::{train_head, TrainHeadOptions};
use testkit::synth::{vgg_like, VggSpec};

/// A prepared run: data folder, model file and run folder (with `features/` and `head/`).
pub struct Prepared {
    pub data: PathBuf,
    pub model: PathBuf,
    pub run: PathBuf,
}

/// Extracts features of `data` with `model` into `run` and trains a head on them.
pub fn extract_and_train_head(data: &Path, model: &str, run: &Path, size: u32, head_epochs: usize) {
    let mut cfg = ExtractConfig::new(data, model, run);
    cfg.preprocess = Some(Preprocess::Caffe);
    cfg.size = size;
    extract(&cfg, &mut |_| {}).expect("extract");
    let opts = TrainHeadOptions {
        run: run.to_path_buf(),
        config: TrainConfig {
            epochs: head_epochs,
            seed: 3,
            recipe: head::recipe::Recipe::Keras2016,
            ..TrainConfig::default()
        },
        val_split: None,
        force: false,
    };
    train_head(&opts, &mut |_| {}).expect("train-head");
}

/// Synthetic images (12 train, 6 validation per class) and the default tiny VGG, 64 px.
pub fn synthetic(dir: &Path) -> Prepared {
    let data = dir.join("data");
    testkit::write_synthetic(&data, &[("train", 12), ("validation", 6)], 5)
        .expect("synthetic images");
    let model = dir.join("tiny_vgg.onnx");
    std::fs::write(&model, vgg_like(&VggSpec::default())).expect("write model");
    let run = dir.join("run");
    extract_and_train_head(&data, model.to_str().expect("utf-8 path"), &run, 64, 5);
    Prepared { data, model, run }
}

/// Copies `RUN/features` and `RUN/head` of `from` into a new run folder `to`.
pub fn copy_run(from: &Path, to: &Path) {
    for sub in ["features", "head"] {
        let (src, dst) = (from.join(sub), to.join(sub));
        std::fs::create_dir_all(&dst).expect("mkdir");
        for e in std::fs::read_dir(&src).expect("read run") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy");
        }
    }
}

/// Fine-tuning settings for the synthetic setup: small batches, few epochs, a visible learning rate.
pub fn synthetic_config(p: &Prepared, run: &Path) -> FinetuneConfig {
    let mut cfg = FinetuneConfig::new(run, &p.data);
    cfg.split_at = Some("block4_pool".into());
    cfg.epochs = 3;
    cfg.options.batch_size = 4;
    cfg.options.sgd.learning_rate = 1e-3;
    cfg.options.aug_cache = 2;
    cfg.threads = Some(1);
    cfg
}

/// Names and values of every tensor in a safetensors file, sorted by name.
pub fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("read safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
