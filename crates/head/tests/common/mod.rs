//! Shared fixtures: synthetic learnable features and feature files in the store's layout.
#![allow(dead_code)]

use std::path::Path;

use features::store::{feature_path, FeatureMeta, FeatureWriter};
use head::data::Samples;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` samples of shape `shape` over `classes` classes: class `c` has extra activation on the
/// `c`-th slice of the features, plus sparse non-negative noise.
pub fn synthetic(n: usize, shape: &[usize], classes: usize, seed: u64) -> Samples {
    let d: usize = shape.iter().product();
    let slice = d / classes;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % classes;
        for j in 0..d {
            let noise = if rng.random::<f32>() < 0.6 {
                0.0
            } else {
                rng.random::<f32>()
            };
            let signal = if j / slice == label { 1.0 } else { 0.0 };
            x.push(noise + signal * rng.random::<f32>());
        }
        y.push(label as u32);
    }
    Samples::new(shape.to_vec(), x, y).expect("consistent synthetic samples")
}

/// Metadata as `bottleneck extract` would write it.
pub fn meta(split: &str, classes: &[&str]) -> FeatureMeta {
    FeatureMeta {
        format_version: 1,
        split: split.into(),
        classes: classes.iter().map(|c| c.to_string()).collect(),
        provenance: features::provenance::Provenance {
            model: "vgg16".into(),
            model_sha256: "ab12".repeat(16),
            output_tensor: "block5_pool".into(),
            preprocess: "caffe".into(),
            image_size: 150,
            resize: "nearest".into(),
            precision: "fp32".into(),
            engine: None,
        },
        files: vec![],
        skipped: vec![],
        excluded: vec![],
        cache_key: "key".into(),
        shard: None,
    }
}

/// Writes `samples` as `RUN/features/<split>.safetensors` with `meta`.
pub fn write_split(run: &Path, samples: &Samples, meta: FeatureMeta) {
    let path = feature_path(run, &meta.split);
    let mut w = FeatureWriter::create(&path, samples.sample_shape()).expect("create feature file");
    for i in 0..samples.len() {
        w.push(
            samples.row(i),
            samples.labels()[i] as i64,
            &format!("img{i}.jpg"),
        )
        .expect("push row");
    }
    w.finish(meta).expect("finish feature file");
}

/// A run folder with learnable `train` and `validation` splits of shape [8, 2, 2], 2 classes.
pub fn run_with_splits(run: &Path) {
    let shape = [8, 2, 2];
    write_split(
        run,
        &synthetic(120, &shape, 2, 1),
        meta("train", &["cats", "dogs"]),
    );
    write_split(
        run,
        &synthetic(40, &shape, 2, 2),
        meta("validation", &["cats", "dogs"]),
    );
}
