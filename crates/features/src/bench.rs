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
    let items = sample(cfg, n)?;
    let backbone = extract::load_backbone(&cfg.model, cfg.preprocess, &cfg.hub)?;
    let t = Instant::now();
    let inputs = prepared(cfg, &backbone, &items)?;
    let prepare_ms = t.elapsed().as_secs_f64() * 1e3 / items.len() as f64;
    let mut raw = Raw::new(cfg, &backbone, inputs)?;
    let mut raws = vec![raw.time()?];

    // The pipeline on the same files: a temporary data folder of links, a fresh run folder per round
    // (the folder goes away when `tmp` is dropped, on an error too).
    let tmp = tempfile::Builder::new()
        .prefix("bottleneck-bench-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let data = tmp.path().join("data");
    link_items(&items, &data)?;
    let mut pipelines = Vec::with_capacity(rounds);
    for k in 0..rounds {
        pipelines.push(pipeline(cfg, &data, &tmp.path().join(format!("run{k}")))?);
        // Raw again after each pipeline run: the ratio of a round uses the raw runs either side.
        raws.push(raw.time()?);
    }
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
        device: raw.runner.device.to_string(),
        raw_images_per_second: median(raws),
        pipeline_images_per_second: median(pipelines),
        ratio: median(rounds.iter().map(|r| r.ratio).collect()),
        rounds,
        prepare_ms_per_image: prepare_ms,
    })
}

/// `n` images of `cfg.data` at an even stride over all splits and classes; at least one batch.
fn sample(cfg: &ExtractConfig, n: usize) -> Result<Vec<dataset::Item>> {
    let data = dataset::scan(&cfg.data)?;
    let all: Vec<&dataset::Item> = data.splits.iter().flat_map(|s| s.items.iter()).collect();
    let items: Vec<dataset::Item> = spread(&all, n).into_iter().map(|&i| i.clone()).collect();
    if items.len() < cfg.batch {
        return Err(Error::Invalid(format!(
            "need at least one full batch ({}) of images",
            cfg.batch
        )));
    }
    Ok(items)
}

/// The network input of every item, decoded and preprocessed on this thread.
fn prepared(
    cfg: &ExtractConfig,
    backbone: &extract::Backbone,
    items: &[dataset::Item],
) -> Result<Vec<f32>> {
    let per = 3 * cfg.size as usize * cfg.size as usize;
    let mut inputs = vec![0f32; items.len() * per];
    for (it, slot) in items.iter().zip(inputs.chunks_exact_mut(per)) {
        extract::prepare(
            &it.path,
            cfg.size,
            cfg.resize,
            backbone.preprocess,
            backbone.cut.input_layout,
            slot,
        )?;
    }
    Ok(inputs)
}

/// A bare ONNX Runtime session and the tensors it runs on, warmed up by one batch.
struct Raw {
    runner: runtime::Runner,
    inputs: Vec<f32>,
    /// Values per image.
    per: usize,
    size: usize,
    layout: Layout,
    batch: usize,
}

impl Raw {
    fn new(cfg: &ExtractConfig, backbone: &extract::Backbone, inputs: Vec<f32>) -> Result<Raw> {
        let runner = runtime::session(
            &backbone.cut.bytes,
            &SessionOptions {
                device: cfg.device,
                threads: cfg.threads,
            },
        )?;
        let size = cfg.size as usize;
        let mut raw = Raw {
            runner,
            inputs,
            per: 3 * size * size,
            size,
            layout: backbone.cut.input_layout,
            batch: cfg.batch,
        };
        raw.run(0..raw.batch)?; // warm-up
        Ok(raw)
    }

    /// Runs images `range` as one batch.
    fn run(&mut self, range: std::ops::Range<usize>) -> Result<()> {
        let (n, s) = (range.len(), self.size);
        let shape = match self.layout {
            Layout::Nchw => [n, 3, s, s],
            Layout::Nhwc => [n, s, s, 3],
        };
        let chunk = &self.inputs[range.start * self.per..range.end * self.per];
        let input = ort::value::TensorRef::from_array_view((shape, chunk))?;
        let out = self.runner.session.run(ort::inputs![input])?;
        let _ = out[0].try_extract_tensor::<f32>()?;
        Ok(())
    }

    /// Images per second over all the tensors, batch by batch.
    fn time(&mut self) -> Result<f64> {
        let images = self.inputs.len() / self.per;
        let t = Instant::now();
        for start in (0..images).step_by(self.batch) {
            self.run(start..(start + self.batch).min(images))?;
        }
        Ok(images as f64 / t.elapsed().as_secs_f64())
    }
}

/// Images per second of one `extract` of `data` into a fresh `run` (the splits' own clocks).
fn pipeline(cfg: &ExtractConfig, data: &std::path::Path, run: &std::path::Path) -> Result<f64> {
    let mut c = cfg.clone();
    c.data = data.to_path_buf();
    c.run = run.to_path_buf();
    let s = extract::extract(&c, &mut |_| {})?;
    let (rows, secs) = s
        .splits
        .iter()
        .fold((0usize, 0f64), |(r, t), x| (r + x.rows, t + x.seconds));
    Ok(rows as f64 / secs.max(1e-9))
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
