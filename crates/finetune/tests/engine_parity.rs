//! The GPU code path of `finetune` run on Candle's CPU device (engine `candle`, `--device cpu`):
//! the frozen part as `accel::vgg::Vgg`, block + head as `accel::train::FineTuneNet` with
//! `accel::optim::DeviceOptim`, through the real stage (same epoch loop, seeds, dropout masks,
//! caches, checkpoints) — two epochs equal the CPU path's (ONNX Runtime + the CPU kernels).
//!
//! Both are FP32 with different summation orders: the frozen maps differ by ~1e-7 relative, each
//! gradient by a few 1e-7 (accel's `train_parity`), and 12 SGD steps with momentum carry that
//! into the weight updates without amplifying it much. The test compares the *updates* of the
//! block's kernels (trained minus initial, so a wrong step cannot hide behind the weights'
//! size): max|Δa − Δb| / max|Δa| ≤ 1e-4 (measured: ~1e-6), and the head's weights, the losses and accuracies to
//! 1e-4 — a wrong layout, index, dropout mask or optimizer state gives differences of order 1.

mod common;

use common::{copy_run, synthetic, synthetic_config, tensors};
use features::runtime::Engine;
use finetune::finetune;
use finetune::rows::Precision;
use testkit::compare::max_rel;
use train::kernels::TrainPrecision;

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn two_epochs_on_the_candle_cpu_device_equal_the_cpu_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let config = |run: &std::path::Path, engine: Engine| {
        let mut cfg = synthetic_config(&p, run);
        cfg.epochs = 2;
        cfg.options.cache_precision = Precision::F32;
        cfg.options.train_precision = TrainPrecision::Fp32;
        cfg.engine = engine;
        cfg
    };
    let cpu = finetune(&config(&p.run, Engine::Ort), &mut |_| {}).expect("CPU run");
    let run_b = dir.path().join("run_b");
    copy_run(&p.run, &run_b);
    let mut notes = Vec::new();
    let candle = finetune(&config(&run_b, Engine::Candle), &mut |e| {
        if let finetune::Event::Info(s) = e {
            notes.push(s)
        }
    })
    .expect("Candle run");
    assert_eq!(
        (cpu.device.as_str(), cpu.train_device.as_str()),
        ("cpu", "cpu")
    );
    assert_eq!(candle.device, "cpu (Candle)");
    assert_eq!(candle.train_device, "cpu (Candle)");
    assert!(
        notes.iter().any(|n| n.contains("engine candle")),
        "{notes:?}"
    );

    let (ma, mb) = (cpu.metrics.unwrap(), candle.metrics.unwrap());
    assert_eq!(ma.epochs.len(), 2);
    for (a, b) in ma.epochs.iter().zip(&mb.epochs) {
        for (what, x, y) in [
            ("loss", a.loss, b.loss),
            ("val_loss", a.val_loss, b.val_loss),
            ("accuracy", a.accuracy, b.accuracy),
            ("val_accuracy", a.val_accuracy, b.val_accuracy),
        ] {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "epoch {} {what}: {x} vs {y}",
                a.epoch
            );
        }
    }

    let model = std::fs::read(&p.model).unwrap();
    let (ba, bb) = (
        tensors(&p.run.join("finetune/block.safetensors")),
        tensors(&run_b.join("finetune/block.safetensors")),
    );
    let mut worst = 0f32;
    for ((name, a), (nb, b)) in ba.iter().zip(&bb) {
        assert_eq!(name, nb);
        let (a, b) = (floats(a), floats(b));
        let d = if name.ends_with("_W") {
            let w0 = features::onnx::initializer_f32(&model, name).unwrap().1;
            let da: Vec<f32> = a.iter().zip(&w0).map(|(x, w)| x - w).collect();
            let db: Vec<f32> = b.iter().zip(&w0).map(|(x, w)| x - w).collect();
            assert!(da.iter().any(|v| *v != 0.0), "{name} did not train");
            max_rel(&da, &db)
        } else {
            max_rel(&a, &b)
        };
        assert!(
            d <= 1e-4,
            "block {name}: max rel. diff of the update {d:.2e}"
        );
        worst = worst.max(d);
    }
    let (ha, hb) = (
        tensors(&p.run.join("finetune/head.safetensors")),
        tensors(&run_b.join("finetune/head.safetensors")),
    );
    assert_eq!(ha.len(), hb.len());
    for ((name, a), (_, b)) in ha.iter().zip(&hb) {
        let d = max_rel(&floats(a), &floats(b));
        assert!(d <= 1e-4, "head {name}: max rel. diff {d:.2e}");
    }
    println!("Candle CPU device vs CPU kernels, 2 epochs: worst block update diff {worst:.2e}");
}
