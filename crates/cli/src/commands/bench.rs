//! `bottleneck bench`: raw ONNX Runtime vs the extraction pipeline, side by side in one run.

use features::bench;

use crate::args::Global;
use crate::commands::extract::{self, ExtractArgs};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  bottleneck bench --data ../shared/data/dogs_vs_cats --model ../shared/models/vgg16_keras_notop.onnx --run /tmp/unused --threads 2 --images 256"
)]
pub struct BenchArgs {
    #[command(flatten)]
    pub extract: ExtractArgs,
    /// How many images (spread evenly over the data folder).
    #[arg(long, default_value_t = 256)]
    pub images: usize,
}

pub fn run(args: &BenchArgs, global: &Global) -> anyhow::Result<()> {
    let cfg = extract::config(&args.extract);
    let r = bench::compare(&cfg, args.images)?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} images, {}×{}, batch {}, threads {}, device {}",
        r.images,
        r.size,
        r.size,
        r.batch,
        r.threads
            .map(|t| t.to_string())
            .unwrap_or_else(|| "default".into()),
        r.device
    );
    println!(
        "  raw ONNX Runtime session : {:>7.2} img/s  (before {:.2}, after {:.2})",
        r.raw_images_per_second, r.raw_before, r.raw_after
    );
    println!(
        "  bottleneck extract       : {:>7.2} img/s  ({:.3}× raw)",
        r.pipeline_images_per_second, r.ratio
    );
    println!(
        "  decode+resize+preprocess : {:>7.2} ms/img (one thread, overlapped with inference)",
        r.prepare_ms_per_image
    );
    Ok(())
}
