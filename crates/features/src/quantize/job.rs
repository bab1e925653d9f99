//! `bottleneck quantize` as one call: refuse to replace the output without `force`, load the
//! backbone, calibrate and quantize it, write the int8 model atomically, and say what was done.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::{model_sha256, quantize_backbone, write_atomic, CalibSpec, Int8Info};
use crate::extract::load_backbone;
use crate::manifest::HubOptions;
use crate::preprocess::Preprocess;
use crate::{Error, Result};

/// What to quantize and where to write it.
#[derive(Debug, Clone)]
pub struct QuantizeJob {
    /// A model name from `models/` or a local `.onnx` file.
    pub model: String,
    /// Preprocessing; default: the model's manifest.
    pub preprocess: Option<Preprocess>,
    pub hub: HubOptions,
    pub calib: CalibSpec,
    /// The int8 model file to write.
    pub out: PathBuf,
    /// Replace `out` when it exists.
    pub force: bool,
}

/// What [`run`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeSummary {
    pub out: PathBuf,
    pub model: String,
    pub fp32_bytes: usize,
    pub int8_bytes: usize,
    pub int8_sha256: String,
    pub seconds: f64,
    pub info: Int8Info,
}

/// Runs the job; `on_note` hears what is being calibrated before the (slow) calibration starts.
pub fn run(job: &QuantizeJob, on_note: &mut dyn FnMut(String)) -> Result<QuantizeSummary> {
    if job.out.is_dir() {
        return Err(Error::Invalid(format!(
            "--out {} is a folder: pass a file name such as model-int8.onnx",
            job.out.display()
        )));
    }
    if job.out.exists() && !job.force {
        return Err(Error::Invalid(format!(
            "{} already exists: pass --force to overwrite it, or choose another --out",
            job.out.display()
        )));
    }
    let backbone = load_backbone(&job.model, job.preprocess, &job.hub)?;
    on_note(format!(
        "calibrating {} (cut at {}, {} preprocessing) on {} images from {}",
        backbone.model.name,
        backbone.cut.output,
        backbone.preprocess.name(),
        job.calib.count,
        job.calib.dir.display()
    ));
    let start = Instant::now();
    let (bytes, info) = quantize_backbone(&backbone, &job.calib)?;
    write_atomic(&job.out, &bytes)?;
    Ok(QuantizeSummary {
        out: job.out.clone(),
        model: backbone.model.name.clone(),
        fp32_bytes: backbone.cut.bytes.len(),
        int8_bytes: bytes.len(),
        int8_sha256: model_sha256(&bytes),
        seconds: start.elapsed().as_secs_f64(),
        info,
    })
}
