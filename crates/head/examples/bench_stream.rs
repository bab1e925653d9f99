//! Streaming benchmark of issue 17: training on feature rows read in place from a memory-mapped
//! file vs the same rows held in memory.
//!
//! `bench_stream write RUN ROWS` writes `RUN/features/{train,validation}.safetensors`: ROWS (and
//! ROWS/20) synthetic rows of [512, 4, 4], four classes, sparse non-negative values.
//! `bench_stream shards RUN ROWS N` writes the same train rows as the N shard files of a job array.
//! `bench_stream pass RUN mapped|memory` times one pass of the probe's streamed solver.
//! `bench_stream fit RUN mapped|memory probe|keras2016 [EPOCHS]` trains on them and prints one
//! JSON line: seconds per epoch (per pass for the probe), total seconds, peak RSS.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use features::mapped::MappedFeatures;
use features::provenance::Provenance;
use features::shard::ShardRecord;
use features::store::{feature_path, FeatureFile, FeatureMeta, FeatureWriter};
use head::data::Samples;
use head::mlp::TrainConfig;
use head::probe::primal::Primal;
use head::recipe::{fit_head, Recipe};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train::stage::StageEvent;

const CLASSES: [&str; 4] = ["a", "b", "c", "d"];
const SHAPE: [usize; 3] = [512, 4, 4];

fn meta(split: &str) -> FeatureMeta {
    FeatureMeta {
        format_version: 1,
        split: split.into(),
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        provenance: Provenance {
            model: "synthetic".into(),
            model_sha256: "00".repeat(32),
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
        cache_key: "synthetic".into(),
        shard: None,
    }
}

/// Row `i`'s values: 70% zeros, the rest uniform in [0, 3); class `i % 4` adds a little to its
/// own quarter of the channels.
fn synthetic_row(rng: &mut ChaCha8Rng, i: usize, row: &mut [f32]) -> usize {
    let d = row.len();
    let label = i % CLASSES.len();
    for (j, v) in row.iter_mut().enumerate() {
        let base: f32 = if rng.random::<f32>() < 0.7 {
            0.0
        } else {
            rng.random::<f32>() * 3.0
        };
        let shift = if j * CLASSES.len() / d == label {
            0.1
        } else {
            0.0
        };
        *v = base + shift * rng.random::<f32>();
    }
    label
}

fn file_name(i: usize, label: usize) -> String {
    format!("{}/{i:07}.jpg", CLASSES[label])
}

/// One split of `n` synthetic rows.
fn write_split(run: &Path, split: &str, n: usize, seed: u64) -> head::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = FeatureWriter::create(&feature_path(run, split), &SHAPE)?;
    let mut row = vec![0f32; SHAPE.iter().product()];
    for i in 0..n {
        let label = synthetic_row(&mut rng, i, &mut row);
        w.push(&row, label as i64, &file_name(i, label))?;
    }
    w.finish(meta(split))?;
    Ok(())
}

/// The train split of `n` synthetic rows as the `shards` shard files of a job array (row `i` in
/// shard `i % shards`), for timing `bottleneck merge`.
fn write_shards(run: &Path, n: usize, shards: usize) -> head::Result<()> {
    for s in 0..shards {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let path = feature_path(run, &format!("train.shard-{s}-of-{shards}"));
        let mut w = FeatureWriter::create(&path, &SHAPE)?;
        let mut row = vec![0f32; SHAPE.iter().product()];
        let mut items = Vec::new();
        for i in 0..n {
            let label = synthetic_row(&mut rng, i, &mut row);
            if i % shards == s {
                w.push(&row, label as i64, &file_name(i, label))?;
                items.push((i, file_name(i, label), label, format!("{i:064x}")));
            }
        }
        let mut m = meta("train");
        m.shard = Some(ShardRecord {
            index: s,
            count: shards,
            total: n,
            listing: "synthetic".into(),
            precision_tag: "fp32".into(),
            items,
        });
        w.finish(m)?;
    }
    Ok(())
}

fn load(run: &Path, split: &str, mapped: bool) -> head::Result<Samples> {
    let path = feature_path(run, split);
    if mapped {
        Samples::mapped(Arc::new(MappedFeatures::open(&path)?), CLASSES.len())
    } else {
        let f = FeatureFile::read(&path)?;
        Samples::from_store(&f.shape, f.features, &f.labels, CLASSES.len())
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn fit(run: &Path, mapped: bool, recipe: Recipe, epochs: usize) -> head::Result<()> {
    let started = Instant::now();
    let train = load(run, "train", mapped)?;
    let val = load(run, "validation", mapped)?;
    let loaded = started.elapsed().as_secs_f64();
    let cfg = TrainConfig {
        recipe,
        epochs,
        ..TrainConfig::default()
    };
    let mut epoch_seconds = Vec::new();
    let t = Instant::now();
    let fitted = fit_head(&train, &val, CLASSES.len(), &cfg, &mut |e| {
        if let StageEvent::Epoch { metrics, .. } = e {
            epoch_seconds.push(metrics.seconds);
        }
    })?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let last = fitted.history.last().map_or(f64::NAN, |m| m.val_accuracy);
    println!(
        "{}",
        serde_json::json!({
            "values": if mapped { "mapped" } else { "memory" },
            "recipe": recipe.to_string(),
            "rows": train.len(),
            "load_seconds": loaded,
            "fit_seconds": fit_seconds,
            "epoch_seconds": epoch_seconds,
            "probe_passes": fitted.probe.as_ref().and_then(|p| p.passes),
            "probe_c": fitted.probe.as_ref().map(|p| p.c),
            "val_accuracy": last,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// Seconds of one pass of the probe's streamed solver (objective and gradient), median of 5.
fn pass(run: &Path, mapped: bool) -> head::Result<()> {
    let train = load(run, "train", mapped)?;
    let weights = vec![1.0; train.len()];
    let p = Primal {
        x: &train,
        scale: 0.01,
        weights: &weights,
        classes: CLASSES.len(),
        used: None,
    };
    let params = vec![0.001; p.params()];
    let mut grad = vec![0.0; p.params()];
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        p.eval(1.0, &params, &mut grad);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "values": if mapped { "mapped" } else { "memory" },
            "rows": train.len(),
            "pass_seconds": times[2],
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

fn main() -> head::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_stream write RUN ROWS | shards RUN ROWS N | fit RUN mapped|memory probe|keras2016 [EPOCHS]";
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "write" => {
            let rows: usize = arg(3).parse().expect(usage);
            write_split(Path::new(arg(2)), "train", rows, 1)?;
            write_split(Path::new(arg(2)), "validation", rows / 20, 2)
        }
        "shards" => {
            let rows: usize = arg(3).parse().expect(usage);
            write_shards(Path::new(arg(2)), rows, arg(4).parse().expect(usage))
        }
        "pass" => pass(Path::new(arg(2)), arg(3) == "mapped"),
        "fit" => {
            let recipe: Recipe = arg(4).parse().expect(usage);
            let epochs = arg(5).parse().unwrap_or(2);
            fit(Path::new(arg(2)), arg(3) == "mapped", recipe, epochs)
        }
        _ => panic!("{usage}"),
    }
}
