use candle_core::{DType, Device, Var};
use head::optim::{Grad, Optim, OptimizerConfig, OptimizerKind};
use std::time::Instant;
fn main() {
    let w = Var::ones((8192, 256), DType::F32, &Device::Cpu).unwrap();
    for kind in [
        OptimizerKind::RmsProp,
        OptimizerKind::Sgd,
        OptimizerKind::Adam,
    ] {
        let mut o = Optim::new(vec![w.clone()], OptimizerConfig::new(kind)).unwrap();
        let fill = |_r: usize, out: &mut [f32]| out.fill(0.01);
        let n = 300;
        for _ in 0..10 {
            o.step_sources(&[Grad::Rows {
                row_len: 256,
                fill: &fill,
            }])
            .unwrap();
        }
        let t = Instant::now();
        for _ in 0..n {
            o.step_sources(&[Grad::Rows {
                row_len: 256,
                fill: &fill,
            }])
            .unwrap();
        }
        println!(
            "{kind}: {:.3} ms/step",
            t.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    }
}
