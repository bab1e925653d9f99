//! Shared test setup: a run folder built from synthetic images and the tiny synthetic VGG
//! (`testkit::synth`): extracted features and a trained stage-2 head, optionally a
//! fine-tuning run, and reference probabilities computed without the `predict` crate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use features::extract::{extract, ExtractConfig};
use features::onnx::Layout;
use features::preprocess::{self, Preprocess, Resize};
use features::runtime::{session, SessionOptions};
use head::mlp::TrainConfig;
use head::pipeline::{train_head, TrainHeadOptions};
use testkit::synth::{vgg_like, VggSpec};

/// Side of the synthetic network input.
pub const SIZE: u32 = 64;

/// Data folder, model file and run folder (`features/` and `head/`).
pub struct Prepared {
    pub data: PathBuf,
    pub model: PathBuf,
    pub run: PathBuf,
}

/// Synthetic images (8 train, 4 validation per class), the tiny VGG, features and a head.
pub fn synthetic(dir: &Path) -> Prepared {
    let data = dir.join("data");
    testkit::write_synthetic(&data, &[("train", 8), ("validation", 4)], 5)
        .expect("synthetic images");
    let model = dir.join("tiny_vgg.onnx");
    std::fs::write(&model, vgg_like(&VggSpec::default())).expect("write model");
    let run = dir.join("run");
    let mut cfg = ExtractConfig::new(&data, model.to_str().expect("utf-8 path"), &run);
    cfg.preprocess = Some(Preprocess::Caffe);
    cfg.size = SIZE;
    cfg.threads = Some(1);
    extract(&cfg, &mut |_| {}).expect("extract");
    let opts = TrainHeadOptions {
        run: run.clone(),
        config: TrainConfig {
            epochs: 4,
            seed: 3,
            recipe: head::recipe::Recipe::Keras2016,
            ..TrainConfig::default()
        },
        val_split: None,
        force: false,
    };
    train_head(&opts, &mut |_| {}).expect("train-head");
    Prepared { data, model, run }
}

/// Runs `bottleneck finetune` (library) on the prepared run for 2 epochs.
pub fn run_finetune(p: &Prepared) {
    let mut cfg = finetune::FinetuneConfig::new(&p.run, &p.data);
    cfg.split_at = Some("block4_pool".into());
    cfg.epochs = 2;
    cfg.options.batch_size = 4;
    cfg.options.sgd.learning_rate = 1e-3;
    cfg.options.aug_cache = 1;
    cfg.threads = Some(1);
    finetune::finetune(&cfg, &mut |_| {}).expect("finetune");
}

/// Network inputs of `files` (decode, nearest resize, caffe), NCHW.
pub fn inputs(files: &[PathBuf]) -> Vec<f32> {
    let per = 3 * (SIZE * SIZE) as usize;
    let mut input = vec![0f32; files.len() * per];
    for (slot, f) in input.chunks_exact_mut(per).zip(files) {
        let img = features::image_io::load_rgb8(f).expect("decode").image;
        let img = preprocess::resize(&img, SIZE, SIZE, Resize::Nearest).expect("resize");
        preprocess::write_input(&img, Preprocess::Caffe, Layout::Nchw, slot).expect("input");
    }
    input
}

fn run_model(model: &[u8], input: &[f32], n: usize) -> (Vec<usize>, Vec<f32>) {
    let opts = SessionOptions {
        threads: Some(1),
        ..Default::default()
    };
    let mut r = session(model, &opts).expect("session");
    finetune::frozen::run_images(&mut r, Layout::Nchw, SIZE, input, n).expect("run")
}

/// Probabilities of the stage-2 head for `files`: the backbone cut at the head's tensor in ONNX
/// Runtime, then the head in Candle.
pub fn head_reference(p: &Prepared, files: &[PathBuf]) -> Vec<Vec<f32>> {
    let (head, meta) = head::load(&p.run.join("head/head.safetensors")).expect("head");
    let model = std::fs::read(&p.model).expect("model");
    let cut = features::onnx::cut_at(&model, &meta.features.output_tensor).expect("cut");
    let (_, rows) = run_model(&cut.bytes, &inputs(files), files.len());
    head.predict(&rows).expect("head forward")
}

/// Probabilities of `RUN/finetune/model.onnx` for `files`, run directly.
pub fn finetune_reference(p: &Prepared, files: &[PathBuf]) -> Vec<Vec<f32>> {
    let model = std::fs::read(p.run.join("finetune/model.onnx")).expect("model.onnx");
    let (dims, probs) = run_model(&model, &inputs(files), files.len());
    probs.chunks_exact(dims[1]).map(<[f32]>::to_vec).collect()
}

/// Largest absolute difference between two probability tables.
pub fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row counts differ");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(u, v)| (u - v).abs())
        })
        .fold(0.0, f32::max)
}

/// Every image file of `dir` (recursively), sorted like `predict::inputs::collect`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            out.extend(files_under(&e));
        } else {
            out.push(e);
        }
    }
    out
}
