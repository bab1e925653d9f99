//! Speed of the augmentation engine on one thread: milliseconds per augmented image for each
//! preset at 150×150 (the tutorial's input size) and 224×224.
//!
//! Run: `cargo run --release -p bottleneck-features --example augment_bench [IMAGE] [ITERATIONS]`
//! (IMAGE defaults to the dogs-vs-cats cat.1.jpg next to the workspace, else a synthetic pattern).

use std::path::PathBuf;
use std::time::Instant;

use features::augment::{worker_rng, AugmentParams, Augmenter, FillMode, ImageF32};
use image::imageops::FilterType;
use image::RgbImage;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let default_photo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/dogs_vs_cats/train/cats/cat.1.jpg");
    let photo = args.next().map(PathBuf::from).unwrap_or(default_photo);
    let iterations: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3000);
    let source: RgbImage = if photo.exists() {
        println!("image: {}", photo.display());
        features::image_io::load_rgb8(&photo)?.image
    } else {
        println!("image: synthetic pattern ({} not found)", photo.display());
        RgbImage::from_fn(300, 280, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
        })
    };
    println!("iterations per case: {iterations}, 1 thread\n");
    println!(
        "{:<10} {:>9} {:>12} {:>14}",
        "preset", "size", "ms/image", "images/s"
    );
    let presets = [
        ("tutorial", AugmentParams::tutorial()),
        ("preview", AugmentParams::preview()),
        (
            "reflect",
            AugmentParams {
                fill_mode: FillMode::Reflect,
                ..AugmentParams::preview()
            },
        ),
        (
            "all",
            AugmentParams {
                vertical_flip: true,
                brightness_range: Some((0.8, 1.2)),
                channel_shift_range: 20.0,
                ..AugmentParams::preview()
            },
        ),
    ];
    for size in [150u32, 224] {
        let img = ImageF32::from(&image::imageops::resize(
            &source,
            size,
            size,
            FilterType::Triangle,
        ));
        for (name, params) in &presets {
            let aug = Augmenter::new(params.clone(), 1)?;
            let mut rng = worker_rng(1, 0);
            let mut out = ImageF32::new(size, size);
            let mut checksum = 0.0f64;
            for _ in 0..iterations / 10 {
                aug.augment_into(&img, &mut rng, &mut out);
            }
            let start = Instant::now();
            for _ in 0..iterations {
                aug.augment_into(&img, &mut rng, &mut out);
                checksum += out.data[out.data.len() / 2] as f64;
            }
            let secs = start.elapsed().as_secs_f64();
            let ms = secs * 1e3 / iterations as f64;
            println!(
                "{name:<10} {:>9} {ms:>12.4} {:>14.0}   (checksum {checksum:.0})",
                format!("{size}x{size}"),
                iterations as f64 / secs
            );
        }
    }
    Ok(())
}
