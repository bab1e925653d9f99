//! Speed benchmark of `head::mlp::train` on synthetic features shaped like VGG16 `block5_pool`
//! at 150×150: 2000 training and 800 validation samples of [512, 4, 4], 50 epochs, batch 16,
//! RMSprop. Usage: `cargo run --release -p bottleneck-head --example bench_train [EPOCHS] [OPTIMIZER]`.

use std::time::Instant;

use head::data::Samples;
use head::mlp::{train, TrainConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train::optim::{OptimizerConfig, OptimizerKind};
use train::stage::StageEvent;

/// Sparse non-negative features (like post-ReLU max-pooled activations); for class 1 the first
/// 64 channels are slightly more active, so the problem is learnable but not trivial.
fn synthetic(n: usize, seed: u64) -> Samples {
    let shape = vec![512, 4, 4];
    let d: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 2) as u32;
        for j in 0..d {
            let base: f32 = if rng.random::<f32>() < 0.7 {
                0.0
            } else {
                rng.random::<f32>() * 3.0
            };
            let shift = if label == 1 && j < 64 * 16 { 0.15 } else { 0.0 };
            x.push(base + shift * rng.random::<f32>());
        }
        y.push(label);
    }
    Samples::new(shape, x, y).expect("consistent synthetic data")
}

fn main() -> head::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let epochs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let kind: OptimizerKind = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(OptimizerKind::RmsProp);
    let train_set = synthetic(2000, 1);
    let val_set = synthetic(800, 2);
    let cfg = TrainConfig {
        epochs,
        optimizer: OptimizerConfig {
            learning_rate: 1e-4,
            momentum: if kind == OptimizerKind::Sgd { 0.9 } else { 0.0 },
            ..OptimizerConfig::new(kind)
        },
        recipe: head::recipe::Recipe::Keras2016,
        ..TrainConfig::default()
    };
    println!(
        "threads: {} (RAYON_NUM_THREADS={:?})",
        rayon::current_num_threads(),
        std::env::var("RAYON_NUM_THREADS").ok()
    );
    let started = Instant::now();
    let trained = train(&train_set, &val_set, 2, &cfg, &mut |p| {
        if let StageEvent::Epoch { metrics: m, .. } = p {
            if m.epoch <= 2 || m.epoch % 5 == 0 {
                println!(
                    "epoch {:>3}  loss {:.4}  acc {:.4}  val_loss {:.4}  val_acc {:.4}  {:.2}s",
                    m.epoch, m.loss, m.accuracy, m.val_loss, m.val_accuracy, m.seconds
                );
            }
        }
    })?;
    let total = started.elapsed().as_secs_f64();
    println!(
        "{} epochs of 2000x[512,4,4], batch 16, {}: {:.2} s total ({:.3} s/epoch), kept epoch {}",
        trained.history.len(),
        kind,
        total,
        total / trained.history.len() as f64,
        trained.kept_epoch
    );
    Ok(())
}
