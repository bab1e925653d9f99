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
    /// Rounds of raw run, pipeline run, raw run; the medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

pub fn run(args: &BenchArgs, global: &Global) -> anyhow::Result<()> {
    let cfg = extract::config(&args.extract);
    let r = bench::compare(&cfg, args.images, args.rounds)?;
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
    for (k, x) in r.rounds.iter().enumerate() {
        println!(
            "  round {}: raw {:.2}, extract {:.2}, raw {:.2} img/s  ({:.3}×)",
            k + 1,
            x.raw_before,
            x.pipeline,
            x.raw_after,
            x.ratio
        );
    }
    println!(
        "  raw ONNX Runtime session : {:>7.2} img/s  (median)",
        r.raw_images_per_second
    );
    println!(
        "  bottleneck extract       : {:>7.2} img/s  (median; median ratio {:.3}× raw)",
        r.pipeline_images_per_second, r.ratio
    );
    println!(
        "  decode+resize+preprocess : {:>7.2} ms/img (one thread, overlapped with inference)",
        r.prepare_ms_per_image
    );
    Ok(())
}
