//! Side-by-side throughput: a bare ONNX Runtime session on pre-made input tensors versus the whole extraction
//! pipeline (decode, resize, preprocess, inference, write) on the same images, model, batch and threads.

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
    /// Bare `session.run` on tensors prepared beforehand (not timed): mean of a run before and after the pipeline.
    pub raw_images_per_second: f64,
    pub raw_before: f64,
    pub raw_after: f64,
    /// `extract` from image files to a feature file.
    pub pipeline_images_per_second: f64,
    /// pipeline / raw.
    pub ratio: f64,
    /// Decoding + resizing + preprocessing alone, one thread.
    pub prepare_ms_per_image: f64,
}

/// `n` of `all` at an even stride over the whole list (so every split and class of a sorted list
/// is sampled, whatever `n`).
fn spread<T>(all: &[T], n: usize) -> Vec<&T> {
    let n = n.min(all.len());
    (0..n).map(|k| &all[k * all.len() / n]).collect()
}

/// Measures raw ORT and the pipeline on `n` images of `cfg.data`, taken at an even stride over all splits
/// and classes.
pub fn compare(cfg: &ExtractConfig, n: usize) -> Result<BenchReport> {
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
    let raw_before = timed_raw()?;

    // The pipeline on the same files: a temporary data folder of links, a temporary run folder.
    let tmp = std::env::temp_dir().join(format!("bottleneck-bench-{}", std::process::id()));
    let result = (|| -> Result<f64> {
        for it in &items {
            let dst = tmp.join("data").join(&it.rel);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            link(&it.path, &dst)?;
        }
        let mut c = cfg.clone();
        c.data = tmp.join("data");
        c.run = tmp.join("run");
        // Warm the page cache and the session like the raw run was warmed.
        let s = extract::extract(&c, &mut |_| {})?;
        let (rows, secs) = s
            .splits
            .iter()
            .fold((0usize, 0f64), |(r, t), x| (r + x.rows, t + x.seconds));
        Ok(rows as f64 / secs.max(1e-9))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    let pipeline = result?;
    // Raw again after the pipeline, so a machine whose load changed during the run shows up as two
    // different raw numbers; the ratio uses their mean.
    let raw_after = timed_raw()?;
    let device = runner.device.to_string();
    let raw = (raw_before + raw_after) / 2.0;
    Ok(BenchReport {
        images: items.len(),
        batch: cfg.batch,
        threads: cfg.threads,
        size: cfg.size,
        device,
        raw_images_per_second: raw,
        raw_before,
        raw_after,
        pipeline_images_per_second: pipeline,
        ratio: pipeline / raw,
        prepare_ms_per_image: prepare_ms,
    })
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
    use super::spread;

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
