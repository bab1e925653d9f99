//! Times `accel::nodes::NodeNet` on a real backbone's top (forward, and forward + gradients) on
//! the CPU device: `cargo run --release -p bottleneck-accel --example bench_nodes -- MODEL FROM TO C H W [BATCH]`.

use std::time::Instant;

use accel::nodes::NodeNet;
use accel::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 6 {
        return Err("usage: bench_nodes MODEL FROM TO C H W [BATCH]".into());
    }
    let model = std::fs::read(&a[0])?;
    let net = NodeNet::from_onnx(&model, &a[1], &a[2])?;
    let chw = [a[3].parse()?, a[4].parse()?, a[5].parse()?];
    let n: usize = a.get(6).map_or(Ok(32), |s| s.parse())?;
    let x: Vec<f32> = (0..n * chw.iter().product::<usize>())
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let out = net.output_dims(chw)?;
    let g = vec![1e-3f32; n * out.iter().product::<usize>()];
    let dev = Device::Cpu;
    for round in 0..3 {
        let t = Instant::now();
        net.forward(&x, chw, &dev)?;
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        net.gradients(&x, chw, &g, &dev)?;
        let b = t.elapsed().as_secs_f64();
        println!(
            "round {round}: forward {f:.3} s ({:.0} img/s), forward + gradients {b:.3} s ({:.0} img/s), {} parameters",
            n as f64 / f,
            n as f64 / b,
            net.parameter_count()
        );
    }
    Ok(())
}
