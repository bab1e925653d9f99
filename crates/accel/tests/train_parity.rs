//! One training step in Candle (autograd, on the CPU device) gives the gradients of the
//! hand-written CPU kernels: fine-tuning's block + head (`finetune::net::Net::step`) and stage 1's
//! convnet (`scratch::net::backward`), with the same dropout mask, for a sigmoid and a softmax
//! output. Both sides are FP32 with different summation orders (im2col products vs Candle's
//! convolutions, batch sums): relative differences of a few 1e-7 per sum, up to ~1e-6 after the
//! 3 to 5 layers back-propagated; 1e-4 (max|a − b| / max|a| per tensor) leaves a wide margin
//! while any wrong index, layout or missing term gives differences of order 1.

mod common;

use accel::ops::nchw_from_nhwc;
use accel::ops::to_host;
use accel::train::{Dropout, FineTuneNet, ScratchArch, ScratchNet};
use accel::{DType, Device, Tensor};
use finetune::block::{Block, ConvLayer, Layer};
use finetune::classifier::Classifier;
use finetune::compute::handover;
use finetune::net::Net;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use testkit::compare::max_rel;
use train::kernels::{conv, Nhwc, TrainPrecision};

const TOL: f32 = 1e-4;

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn mask(rng: &mut ChaCha8Rng, n: usize, rate: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            if rng.random::<f32>() < 1.0 - rate {
                1.0 / (1.0 - rate)
            } else {
                0.0
            }
        })
        .collect()
}

/// A block of two convs (+ ReLU) and a pool with seeded He weights, and a head for `classes`.
fn synthetic_net(rng: &mut ChaCha8Rng, cin: usize, side: usize, classes: usize) -> Net {
    let mut layers = Vec::new();
    let mut c = cin;
    for (j, cout) in [12usize, 16].into_iter().enumerate() {
        let bound = (6.0 / (9 * c) as f32).sqrt();
        let w = uniform(rng, cout * c * 9, -bound, bound);
        let b = uniform(rng, cout, -0.05, 0.1);
        let names = [format!("c{j}"), format!("c{j}_W"), format!("c{j}_B")];
        layers.push(Layer::Conv(
            ConvLayer::from_onnx([&names[0], &names[1], &names[2]], &w, b, (cout, c), true)
                .unwrap(),
        ));
        c = cout;
    }
    layers.push(Layer::MaxPool {
        node: "pool".into(),
    });
    let block = Block {
        input_tensor: "in".into(),
        output_tensor: "out".into(),
        layers,
        precision: TrainPrecision::Fp32,
    };
    let shape = [c, side / 2, side / 2];
    let (d, hidden) = (shape.iter().product::<usize>(), 24);
    let outputs = if classes == 2 { 1 } else { classes };
    let head = Classifier {
        pooled: false,
        feature_shape: shape,
        hidden,
        num_classes: classes,
        dropout: 0.5,
        w1: uniform(rng, d * hidden, -0.1, 0.1),
        b1: uniform(rng, hidden, 0.0, 0.1),
        w2: uniform(rng, hidden * outputs, -0.3, 0.3),
        b2: uniform(rng, outputs, -0.1, 0.1),
    };
    Net::new(
        block,
        head,
        Nhwc {
            n: 1,
            h: side,
            w: side,
            c: cin,
        },
    )
    .unwrap()
}

fn compare(what: &str, names: &[String], cpu: &[Vec<f32>], ours: &[Vec<f32>]) -> f32 {
    assert_eq!(cpu.len(), ours.len(), "{what}: gradient count");
    let mut worst = 0f32;
    for ((name, a), b) in names.iter().zip(cpu).zip(ours) {
        assert_eq!(a.len(), b.len(), "{what} {name}: length");
        let d = max_rel(a, b);
        assert!(d <= TOL, "{what} {name}: max rel. diff {d:.2e}");
        assert!(a.iter().any(|v| *v != 0.0), "{what} {name}: zero gradient");
        worst = worst.max(d);
    }
    println!(
        "{what}: {} gradients, worst max rel. diff {worst:.2e}",
        cpu.len()
    );
    worst
}

fn finetune_case(net: &Net, x: &[f32], d: Nhwc, labels: &[u32], mask: Option<&[f32]>, what: &str) {
    let cpu = net.step(x, d, labels, mask).unwrap();
    let (block, head) = handover(net).unwrap();
    let gpu_like = FineTuneNet::new(&block, &head, &Device::Cpu, DType::F32).unwrap();
    let xt = nchw_from_nhwc(x, (d.n, d.h, d.w, d.c), &Device::Cpu, DType::F32).unwrap();
    let dropout = mask.map_or(Dropout::Off, Dropout::Mask);
    let step = gpu_like.step(&xt, labels, dropout).unwrap();
    let ours = step.grads_f32(gpu_like.vars()).unwrap();
    assert!(
        (step.loss_sum - cpu.loss_sum).abs() <= 1e-5 * cpu.loss_sum.abs().max(1.0),
        "{what}: loss {} vs {}",
        step.loss_sum,
        cpu.loss_sum
    );
    assert_eq!(step.correct, cpu.correct, "{what}: correct");
    compare(what, &net.param_names(), &cpu.grads, &ours);
    // The weights read back are the ones handed over, in the same order and layouts.
    let params = gpu_like.params().unwrap();
    for (a, b) in params.iter().zip(net.params()) {
        assert_eq!(a.as_slice(), b);
    }
}

#[test]
fn finetune_step_gradients_equal_the_cpu_kernels() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (n, side, cin) = (6, 8, 10);
    let d = Nhwc {
        n,
        h: side,
        w: side,
        c: cin,
    };
    // Frozen outputs are post-ReLU maps: non-negative, with zeros.
    let x: Vec<f32> = uniform(&mut rng, d.len(), -0.5, 1.5)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    for classes in [2usize, 3] {
        let net = synthetic_net(&mut rng, cin, side, classes);
        let labels: Vec<u32> = (0..n as u32).map(|i| i % classes as u32).collect();
        let m = mask(&mut rng, n * net.head.hidden, 0.5);
        finetune_case(
            &net,
            &x,
            d,
            &labels,
            None,
            &format!("finetune {classes} classes"),
        );
        finetune_case(
            &net,
            &x,
            d,
            &labels,
            Some(&m),
            &format!("finetune {classes} classes, dropout"),
        );
    }
}

/// The real block5 (three 512-channel convs from the Keras VGG16) on block4-sized maps at 150 px
/// (9×9): realistic magnitudes and sums of 4,608 terms per output.
#[test]
fn finetune_step_on_real_block5_weights_equals_the_cpu_kernels() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let model = std::fs::read(shared.join("models/vgg16_keras_notop.onnx")).unwrap();
    let block = finetune::graph::block_from_onnx(&model, "block4_pool", "block5_pool").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (n, hidden) = (3, 32);
    let d = Nhwc {
        n,
        h: 9,
        w: 9,
        c: 512,
    };
    let x: Vec<f32> = uniform(&mut rng, d.len(), -20.0, 40.0)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let dim = 512 * 4 * 4;
    let head = Classifier {
        pooled: false,
        feature_shape: [512, 4, 4],
        hidden,
        num_classes: 2,
        dropout: 0.5,
        w1: uniform(&mut rng, dim * hidden, -0.01, 0.01),
        b1: vec![0.0; hidden],
        w2: uniform(&mut rng, hidden, -0.3, 0.3),
        b2: vec![0.0],
    };
    let net = Net::new(block, head, Nhwc { n: 1, ..d }).unwrap();
    let m = mask(&mut rng, n * hidden, 0.5);
    finetune_case(&net, &x, d, &[0, 1, 1], Some(&m), "real block5");
}

fn scratch_case(arch: &scratch::net::Arch, seed: u64, n: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = scratch::net::Params::init(arch, &mut rng);
    let x = uniform(&mut rng, n * arch.input_len(), 0.0, 1.0);
    let labels: Vec<u32> = (0..n as u32)
        .map(|i| i % arch.outputs.max(2) as u32)
        .collect();
    // The CPU forward draws its dropout mask from this stream; draw the same one for Candle.
    let drop_rng = ChaCha8Rng::seed_from_u64(seed + 100);
    let m = mask(&mut drop_rng.clone(), n * arch.hidden, arch.dropout);
    let trace = scratch::net::forward(
        arch,
        &p,
        &x,
        Some(&mut drop_rng.clone()),
        TrainPrecision::Fp32,
    );
    let lo = scratch::net::loss(&trace.logits, &labels, arch.outputs);
    let cpu = scratch::net::backward(arch, &p, &x, &trace, &lo.dlogits, TrainPrecision::Fp32);

    let ours_arch = ScratchArch {
        size: arch.size,
        filters: arch.filters.clone(),
        hidden: arch.hidden,
        dropout: arch.dropout,
        outputs: arch.outputs,
    };
    let shapes: Vec<_> = arch.param_shapes();
    assert_eq!(
        ours_arch.param_shapes().unwrap(),
        shapes,
        "accel and scratch agree on the parameter shapes"
    );
    let params: Vec<&[f32]> = p.tensors.iter().map(Vec::as_slice).collect();
    let net = ScratchNet::new(&ours_arch, &params, &Device::Cpu, DType::F32).unwrap();
    let xt = nchw_from_nhwc(&x, (n, arch.size, arch.size, 3), &Device::Cpu, DType::F32).unwrap();
    let logits = to_host(&net.logits(&xt).unwrap()).unwrap();
    let plain =
        scratch::net::forward::<ChaCha8Rng>(arch, &p, &x, None, TrainPrecision::Fp32).logits;
    assert!(max_rel(&plain, &logits) <= TOL, "logits");
    let step = net.step(&xt, &labels, Dropout::Mask(&m)).unwrap();
    assert!(
        (step.loss_sum - lo.loss_sum).abs() <= 1e-5 * lo.loss_sum.abs().max(1.0),
        "loss {} vs {}",
        step.loss_sum,
        lo.loss_sum
    );
    assert_eq!(step.correct, lo.correct);
    let ours = step.grads_f32(net.vars()).unwrap();
    let names: Vec<String> = shapes.into_iter().map(|(s, _)| s).collect();
    compare(
        &format!("scratch {} outputs", arch.outputs),
        &names,
        &cpu.tensors,
        &ours,
    );
}

#[test]
fn scratch_step_gradients_equal_the_cpu_kernels() {
    // The tutorial's network at 46 px (maps 44 → 22 → 20 → 10 → 8 → 4), sigmoid and softmax.
    scratch_case(&scratch::net::Arch::tutorial(46, 2), 1, 5);
    scratch_case(&scratch::net::Arch::tutorial(46, 3), 2, 5);
}

#[test]
fn wrong_inputs_are_errors() {
    let arch = ScratchArch {
        size: 46,
        filters: vec![4],
        hidden: 3,
        dropout: 0.0,
        outputs: 1,
    };
    let shapes = arch.param_shapes().unwrap();
    let zeros: Vec<Vec<f32>> = shapes
        .iter()
        .map(|(_, s)| vec![0.0; s.iter().product()])
        .collect();
    let refs: Vec<&[f32]> = zeros.iter().map(Vec::as_slice).collect();
    let net = ScratchNet::new(&arch, &refs, &Device::Cpu, DType::F32).unwrap();
    let x = Tensor::zeros((2, 3, 40, 40), DType::F32, &Device::Cpu).unwrap();
    assert!(net.step(&x, &[0, 1], Dropout::Off).is_err());
    let x = Tensor::zeros((2, 3, 46, 46), DType::F32, &Device::Cpu).unwrap();
    assert!(net.step(&x, &[0], Dropout::Off).is_err());
    assert!(net.step(&x, &[0, 1], Dropout::Mask(&[1.0])).is_err());
    assert!(net.step(&x, &[0, 7], Dropout::Off).is_err());
    net.step(&x, &[0, 1], Dropout::Random).unwrap();
    assert!(net.set_params(&refs[..1]).is_err());
    let _ = conv::Nhwc::image(1, 1, 1);
}
