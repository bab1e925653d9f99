//! The GPU code path of `scratch` run on Candle's CPU device (engine `candle`, `--device cpu`):
//! the convnet as `accel::train::ScratchNet` with `accel::optim::DeviceOptim`, through the real
//! stage (same shuffling, augmentation, dropout streams, schedule, weight average, checkpoints)
//! — two epochs equal the CPU kernels' run.
//!
//! Both are FP32 with different summation orders (per-step gradients agree to a few 1e-7:
//! accel's `train_parity`); RMSprop divides by the running root mean square, which keeps
//! relative differences of that order in every update. Every tensor of the checkpoint (weights,
//! the optimizer's moving averages, the weight average) is compared: max|a − b| / max|a| ≤ 1e-4,
//! and the losses and accuracies to 1e-4; a wrong layout, mask or optimizer state is off by order 1.

use std::path::Path;

use features::runtime::Engine;
use scratch::{train, ScratchConfig};
use testkit::compare::max_rel;
use train::kernels::TrainPrecision;

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(n, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n.to_string(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn run(data: &Path, run: &Path, engine: Engine, ema: Option<f64>) -> scratch::ScratchReport {
    let mut cfg = ScratchConfig::new(data, run);
    cfg.size = 32;
    cfg.epochs = 2;
    cfg.batch_size = 8;
    cfg.train_precision = TrainPrecision::Fp32;
    cfg.ema = ema;
    cfg.engine = engine;
    train(&cfg, &mut |_| {}).expect("training")
}

fn case(ema: Option<f64>) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    testkit::write_synthetic(&data, &[("train", 24), ("validation", 10)], 11).unwrap();
    let (ra, rb) = (tmp.path().join("cpu"), tmp.path().join("candle"));
    let a = run(&data, &ra, Engine::Ort, ema);
    let b = run(&data, &rb, Engine::Candle, ema);
    assert_eq!(
        (a.device.as_str(), b.device.as_str()),
        ("cpu", "cpu (Candle)")
    );
    for (x, y) in a.metrics.epochs.iter().zip(&b.metrics.epochs) {
        for (what, p, q) in [
            ("loss", x.loss, y.loss),
            ("val_loss", x.val_loss, y.val_loss),
            ("accuracy", x.accuracy, y.accuracy),
            ("val_accuracy", x.val_accuracy, y.val_accuracy),
        ] {
            assert!(
                (p - q).abs() <= 1e-4 * p.abs().max(1.0),
                "ema {ema:?} epoch {} {what}: {p} vs {q}",
                x.epoch
            );
        }
    }
    let (ta, tb) = (
        tensors(&a.paths.stage.checkpoint),
        tensors(&b.paths.stage.checkpoint),
    );
    assert_eq!(
        ta.iter().map(|t| &t.0).collect::<Vec<_>>(),
        tb.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    let mut worst = 0f32;
    for ((name, x), (_, y)) in ta.iter().zip(&tb) {
        let d = max_rel(x, y);
        assert!(d <= 1e-4, "ema {ema:?}: {name}: max rel. diff {d:.2e}");
        worst = worst.max(d);
    }
    println!(
        "scratch on Candle's CPU device vs CPU kernels (ema {ema:?}): {} checkpoint tensors, worst {worst:.2e}",
        ta.len()
    );
}

#[test]
fn two_epochs_on_the_candle_cpu_device_equal_the_cpu_kernels() {
    case(None);
}

#[test]
fn with_a_weight_average_too() {
    case(Some(0.9));
}
