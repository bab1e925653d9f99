//! Times the frozen part of the real Keras VGG16 (input → block4_pool) in ONNX Runtime at 150 px,
//! batches of 16 shared photos, against the whole conv base (input → block5_pool).
//!
//! `cargo run --release -p bottleneck-finetune --example bench_frozen [-- THREADS BATCHES]`

use std::time::Instant;

use features::onnx::{cut_at, Layout};
use features::preprocess::{self, Preprocess, Resize};
use features::runtime::{session, SessionOptions};
use finetune::frozen::run_images;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let batches: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(4);
    let shared = testkit::shared_root().ok_or("the shared data is missing")?;
    let model = std::fs::read(shared.join("models/vgg16_keras_notop.onnx"))?;
    let dir = shared.join("data/dogs_vs_cats/train/cats");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let (n, s) = (16usize, 150u32);
    let per = 3 * (s * s) as usize;
    let mut input = vec![0f32; n * per];
    for (slot, f) in input.chunks_exact_mut(per).zip(&files) {
        let img = features::image_io::load_rgb8(f)?.image;
        let img = preprocess::resize(&img, s, s, Resize::Nearest)?;
        preprocess::write_input(&img, Preprocess::Caffe, Layout::Nchw, slot)?;
    }
    let opts = SessionOptions {
        threads: Some(threads),
        ..Default::default()
    };
    for tensor in ["block4_pool", "block5_pool"] {
        let cut = cut_at(&model, tensor)?;
        let mut runner = session(&cut.bytes, &opts)?;
        run_images(&mut runner, Layout::Nchw, s, &input, n)?; // warm-up
        let t = Instant::now();
        for _ in 0..batches {
            run_images(&mut runner, Layout::Nchw, s, &input, n)?;
        }
        let per_image = t.elapsed().as_secs_f64() / (batches * n) as f64;
        println!(
            "input → {tensor}: {:.1} ms/image ({:.1} img/s), {threads} threads, batch {n}",
            per_image * 1e3,
            1.0 / per_image
        );
    }
    Ok(())
}
