//! Side-by-side throughput: a bare ONNX Runtime session on pre-made input tensors versus the whole extraction
//! pipeline (decode, resize, preprocess, inference, write) on the same images, model, batch and threads,
//! interleaved in rounds so that a machine whose speed drifts (a shared VM) shows in every round alike.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::dataset;
use crate::extract::{self, ExtractConfig};
use crate::onnx::Layout;
use crate::runtime::{self, SessionOptions};
use crate::{Error, Result};

/// The result of one side-by-side run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub images: usize,
    pub batch: usize,
    pub threads: Option<usize>,
    pub size: u32,
    pub device: String,
    /// Bare `session.run` on tensors prepared beforehand (not timed): the median of the raw runs.
    pub raw_images_per_second: f64,
    /// `extract` from image files to a feature file: the median of the rounds.
    pub pipeline_images_per_second: f64,
    /// The median of the rounds' ratios.
    pub ratio: f64,
    /// Each round: raw, pipeline, raw again.
    pub rounds: Vec<Round>,
    /// Decoding + resizing + preprocessing alone, one thread.
    pub prepare_ms_per_image: f64,
}

/// One round of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub raw_before: f64,
    pub pipeline: f64,
    pub raw_after: f64,
    /// pipeline / mean of the raw runs either side.
    pub ratio: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `n` of `all` at an even stride over the whole list (so every split and class of a sorted list
/// is sampled, whatever `n`).
fn spread<T>(all: &[T], n: usize) -> Vec<&T> {
    let n = n.min(all.len());
    (0..n).map(|k| &all[k * all.len() / n]).collect()
}

/// Measures raw ORT and the pipeline on `n` images of `cfg.data`, taken at an even stride over all splits
/// and classes, in `rounds` rounds (raw, pipeline, raw; a round's closing raw run opens the next).
pub fn compare(cfg: &ExtractConfig, n: usize, rounds: usize) -> Result<BenchReport> {
    if rounds == 0 {
        return Err(Error::Invalid("--rounds must be at least 1".into()));
    }
    let data = dataset::scan(&cfg.data)?;
    let all: Vec<&dataset::Item> = data.splits.iter().flat_map(|s| s.items.iter()).collect();
    let items: Vec<dataset::Item> = spread(&all, n).into_iter().map(|&i| i.clone()).collect();
    if items.len() < cfg.batch {
        return Err(Error::Invalid(format!(
            "need at least one full batch ({}) of images",
            cfg.batch
        )));
    }
    let backbone = extract::load_backbone(&cfg.model, cfg.preprocess, &cfg.hub)?;
    let per = 3 * cfg.size as usize * cfg.size as usize;
    let mut inputs = vec![0f32; items.len() * per];
    let t = Instant::now();
    for (k, it) in items.iter().enumerate() {
        extract::prepare(
            &it.path,
            cfg.size,
            cfg.resize,
            backbone.preprocess,
            backbone.cut.input_layout,
            &mut inputs[k * per..(k + 1) * per],
        )?;
    }
    let prepare_ms = t.elapsed().as_secs_f64() * 1e3 / items.len() as f64;

    let mut runner = runtime::session(
        &backbone.cut.bytes,
        &SessionOptions {
            device: cfg.device,
            threads: cfg.threads,
        },
    )?;
    let s = cfg.size as usize;
    let mut run_batch = |chunk: &[f32]| -> Result<()> {
        let n = chunk.len() / per;
        let shape = match backbone.cut.input_layout {
            Layout::Nchw => [n, 3, s, s],
            Layout::Nhwc => [n, s, s, 3],
        };
        let input = ort::value::TensorRef::from_array_view((shape, chunk))?;
        let out = runner.session.run(ort::inputs![input])?;
        let _ = out[0].try_extract_tensor::<f32>()?;
        Ok(())
    };
    run_batch(&inputs[..cfg.batch * per])?; // warm-up
    let mut timed_raw = || -> Result<f64> {
        let t = Instant::now();
        for chunk in inputs.chunks(cfg.batch * per) {
            run_batch(chunk)?;
        }
        Ok(items.len() as f64 / t.elapsed().as_secs_f64())
    };
    let mut raws = vec![timed_raw()?];

    // The pipeline on the same files: a temporary data folder of links, a fresh run folder per round.
    let tmp = std::env::temp_dir().join(format!("bottleneck-bench-{}", std::process::id()));
    let mut pipelines = Vec::with_capacity(rounds);
    let result = (|| -> Result<()> {
        link_items(&items, &tmp.join("data"))?;
        for k in 0..rounds {
            let mut c = cfg.clone();
            c.data = tmp.join("data");
            c.run = tmp.join(format!("run{k}"));
            let s = extract::extract(&c, &mut |_| {})?;
            let (rows, secs) = s
                .splits
                .iter()
                .fold((0usize, 0f64), |(r, t), x| (r + x.rows, t + x.seconds));
            pipelines.push(rows as f64 / secs.max(1e-9));
            // Raw again after each pipeline run: the ratio of a round uses the raw runs either side.
            raws.push(timed_raw()?);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    let rounds: Vec<Round> = pipelines
        .iter()
        .enumerate()
        .map(|(k, &pipeline)| Round {
            raw_before: raws[k],
            pipeline,
            raw_after: raws[k + 1],
            ratio: pipeline / ((raws[k] + raws[k + 1]) / 2.0),
        })
        .collect();
    Ok(BenchReport {
        images: items.len(),
        batch: cfg.batch,
        threads: cfg.threads,
        size: cfg.size,
        device: runner.device.to_string(),
        raw_images_per_second: median(raws),
        pipeline_images_per_second: median(pipelines),
        ratio: median(rounds.iter().map(|r| r.ratio).collect()),
        rounds,
        prepare_ms_per_image: prepare_ms,
    })
}

/// A data folder of links to `items` under `root`, same relative paths.
fn link_items(items: &[dataset::Item], root: &std::path::Path) -> Result<()> {
    for it in items {
        let dst = root.join(&it.rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        link(&it.path, &dst)?;
    }
    Ok(())
}

fn link(src: &std::path::Path, dst: &std::path::Path) -> Result<()> {
    let src: PathBuf = src.canonicalize().map_err(|e| Error::io(src, e))?;
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&src, dst).map_err(|e| Error::io(dst, e))
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(&src, dst)
            .map(|_| ())
            .map_err(|e| Error::io(dst, e))
    }
}

#[cfg(test)]
mod tests {
    use super::{median, spread};

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn the_sample_reaches_the_end_of_the_list_whatever_its_size() {
        // 2,800 photos sorted by split and class, 480 asked: the old `step_by(len / n)` stopped at
        // 2,400 and missed the last class of validation.
        let all: Vec<usize> = (0..2800).collect();
        let s = spread(&all, 480);
        assert_eq!(s.len(), 480);
        assert!(*s[479] > 2800 - 2 * 2800 / 480, "{}", s[479]);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(spread(&all[..10], 96).len(), 10);
    }
}
