//! `bottleneck quantize`: int8 static quantization of the backbone with calibration images, written as a
//! QDQ ONNX model that ONNX Runtime runs with its integer kernels.

use std::path::PathBuf;

use anyhow::Context;
use features::preprocess::{Preprocess, Resize};
use features::quantize::job::{self, QuantizeJob};
use features::quantize::{self, ActType, CalibMethod, CalibSpec};

use crate::args::{Global, HubFlags};
use crate::progress;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  bottleneck quantize --model ../shared/models/vgg16_keras_notop.onnx \
--calib ../shared/data/dogs_vs_cats --out vgg16-int8.onnx"
)]
pub struct QuantizeArgs {
    /// A model name from models/ (e.g. vgg16) or a local .onnx file.
    #[arg(long, default_value = "vgg16")]
    pub model: String,
    /// Calibration images: DIR/<split>/<class>/*.jpg (drawn from the train split), DIR/<class>/*.jpg, or a
    /// plain folder of images.
    #[arg(long)]
    pub calib: PathBuf,
    /// Split of --calib to draw from (default: train, or the only split).
    #[arg(long)]
    pub split: Option<String>,
    /// Calibration images to draw, balanced over classes (at least 8).
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// Seed of the draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Side of the square network input the model will run at.
    #[arg(long, default_value_t = 150)]
    pub size: u32,
    /// Preprocessing: caffe, torch or unit (default: the model's manifest).
    #[arg(long)]
    pub preprocess: Option<Preprocess>,
    /// Resize filter: nearest (Keras load_img), bilinear, bicubic, lanczos.
    #[arg(long, default_value = "nearest")]
    pub resize: Resize,
    /// Activation type: uint8 (fastest with ONNX Runtime on x86) or int8.
    #[arg(long, default_value = "uint8")]
    pub activations: ActType,
    /// Range estimation: minmax.
    #[arg(long, default_value = "minmax")]
    pub method: CalibMethod,
    /// ONNX Runtime intra-op threads for calibration (default: all physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to write the int8 model (.onnx).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite --out when it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub hub: HubFlags,
}

pub fn run(args: &QuantizeArgs, global: &Global) -> anyhow::Result<()> {
    let job = QuantizeJob {
        model: args.model.clone(),
        preprocess: args.preprocess,
        hub: args.hub.options(),
        calib: CalibSpec {
            dir: args.calib.clone(),
            split: args.split.clone(),
            count: args.count,
            seed: args.seed,
            size: args.size,
            resize: args.resize,
            method: args.method,
            activations: args.activations,
            weights: quantize::WeightRange::for_this_cpu(),
            batch: 16,
            threads: args.threads,
        },
        out: args.out.clone(),
        force: args.force,
    };
    let summary = job::run(&job, &mut |note| progress::note(global, note)).with_context(|| {
        format!(
            "quantizing {} with calibration images from {}",
            args.model,
            args.calib.display()
        )
    })?;
    let (info, seconds) = (&summary.info, summary.seconds);
    for s in &info.calib_skipped {
        progress::note(
            global,
            format!("skipped calibration image {}: {}", s.file, s.reason),
        );
    }
    progress::summary(global, &summary, || {
        println!(
            "{} → {} ({:.1} MB → {:.1} MB, {:.1} s)",
            summary.model,
            args.out.display(),
            summary.fp32_bytes as f64 / 1e6,
            summary.int8_bytes as f64 / 1e6,
            seconds
        );
        println!(
            "  {} Conv layers int8 ({} weights, {} activations), output {} stays float32",
            info.quantized_convs.len(),
            info.weights,
            info.activations.name(),
            info.output
        );
        println!(
            "  calibration: {} {} images from split '{}' of {} (seed {}, {}×{} {}, {}){}",
            info.calib_files.len(),
            info.method.name(),
            info.calib_split,
            args.calib.display(),
            info.calib_seed,
            info.image_size,
            info.image_size,
            info.resize.name(),
            info.preprocess.name(),
            if info.calib_skipped.is_empty() {
                String::new()
            } else {
                format!(", {} skipped", info.calib_skipped.len())
            }
        );
        if info.fp32_ops.is_empty() {
            println!("  every op runs quantized");
        } else {
            println!("  left in FP32 ({}):", info.fp32_ops.len());
            for o in &info.fp32_ops {
                println!("    {o}");
            }
        }
        Ok(())
    })
}
