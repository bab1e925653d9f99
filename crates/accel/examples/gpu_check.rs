//! The GPU check of issue 18, run on a lent GPU machine from a payload folder built by
//! `scripts/device/prepare.sh` (this binary, stripped; the VGG16 conv base as f16 safetensors;
//! a few hundred real photos; reference features computed on the CPU with the same weights).
//! Nothing is built there. Prints, section by section (a failing section says so and the rest
//! still runs):
//! CUDA found; features vs the CPU reference (max rel. diff, cosine) in f32 and bf16; VGG16
//! extraction img/s at 224 px (f32, TF32, bf16; resident batch and end to end); one fine-tune
//! epoch (2,000 photos: frozen blocks 1–4 forward + block5/head training on synthetic block4
//! maps); one stage-1 (`scratch`) epoch; GPU-vs-CPU gradients of one step of each network.
//!
//! `--cpu` runs the same sections on the CPU with small counts (a dry run of the script).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use accel::device::{self, Choice};
use accel::optim::DeviceOptim;
use accel::train::{BlockLayer, Dropout, FineTuneNet, HeadWeights, ScratchArch, ScratchNet};
use accel::vgg::Vgg;
use accel::{DType, Device, Tensor};
use clap::Parser;
use features::onnx::Layout;
use features::preprocess::{Preprocess, Resize};
use testkit::compare::{cosine, max_rel};
use train::optim::OptimizerConfig;

#[derive(Parser, Debug)]
#[command(about = "GPU check: Candle VGG16 features, speed and training epochs on CUDA")]
struct Args {
    /// The payload folder (vgg16.f16.safetensors, reference.safetensors, photos/).
    #[arg(long)]
    payload: PathBuf,
    /// Run on the CPU with small counts (a dry run).
    #[arg(long)]
    cpu: bool,
    /// Input side for extraction and fine-tuning.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Extraction batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed forward passes per dtype.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Photos per epoch of fine-tuning and of stage 1.
    #[arg(long, default_value_t = 2000)]
    epoch_images: usize,
    /// Training batch (the tutorial's 16).
    #[arg(long, default_value_t = 16)]
    train_batch: usize,
    /// Use at most this many photos of the payload.
    #[arg(long)]
    photos: Option<usize>,
    /// Build the payload's weights and reference instead of checking: the ONNX model to read
    /// (the photos must already be in PAYLOAD/photos).
    #[arg(long)]
    prepare: Option<PathBuf>,
    /// Photos whose features are stored as the reference (with --prepare).
    #[arg(long, default_value_t = 32)]
    reference_rows: usize,
    /// Where to write the preprocessed reference input for the PyTorch script and a JSON summary.
    #[arg(long)]
    work: Option<PathBuf>,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Numbers for the summary, by key.
#[derive(Default)]
struct Summary(BTreeMap<String, String>);

impl Summary {
    fn put(&mut self, k: &str, v: impl std::fmt::Display) {
        self.0.insert(k.to_string(), v.to_string());
    }
}

fn sync(d: &Device) -> Res<()> {
    d.synchronize()?;
    Ok(())
}

/// Every photo under `dir/*/`, sorted.
fn photo_files(dir: &Path) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    for class in std::fs::read_dir(dir)? {
        let class = class?.path();
        if class.is_dir() {
            for f in std::fs::read_dir(&class)? {
                out.push(f?.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Decodes and preprocesses `files` like `extract` (Keras nearest resize, caffe), NCHW, on all cores.
fn decode(files: &[PathBuf], size: usize) -> Res<Vec<f32>> {
    let per = 3 * size * size;
    let mut out = vec![0f32; files.len() * per];
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = files.len().div_ceil(threads).max(1);
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(chunk * per)
            .zip(files.chunks(chunk))
            .map(|(slots, fs)| {
                s.spawn(move || {
                    let mut errs = Vec::new();
                    for (slot, f) in slots.chunks_exact_mut(per).zip(fs) {
                        if let Err(e) = features::extract::prepare(
                            f,
                            size as u32,
                            Resize::Nearest,
                            Preprocess::Caffe,
                            Layout::Nchw,
                            slot,
                        ) {
                            errs.push(format!("{}: {e}", f.display()));
                        }
                    }
                    errs
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["decoder thread panicked".into()])
            })
            .collect()
    });
    if let Some(e) = errors.first() {
        return Err(format!("{} photos unreadable, first: {e}", errors.len()).into());
    }
    Ok(out)
}

/// Runs `f`, printing its error (the check goes on with the next section).
fn section(name: &str, f: impl FnOnce() -> Res<()>) {
    println!("\n== {name}");
    let t = Instant::now();
    match f() {
        Ok(()) => println!("   ({name}: {:.1} s)", t.elapsed().as_secs_f64()),
        Err(e) => println!("   FAILED: {e}"),
    }
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "?",
    }
}

/// Features of `x` (NCHW, host) in batches of `batch`.
fn features_of(vgg: &Vgg, x: &[f32], n: usize, size: usize, batch: usize) -> Res<Vec<f32>> {
    let per = 3 * size * size;
    let mut out = Vec::new();
    for start in (0..n).step_by(batch) {
        let k = batch.min(n - start);
        let t = Tensor::from_slice(
            &x[start * per..(start + k) * per],
            (k, 3, size, size),
            vgg.device(),
        )?;
        out.extend(accel::ops::to_host(&vgg.forward(&t)?)?);
    }
    Ok(out)
}

/// `--prepare`: the f16 weights and the CPU reference features of the first photos.
fn prepare(args: &Args, model: &Path) -> Res<()> {
    let t = Instant::now();
    let full = Vgg::load(model, accel::vgg::Cut::ConvBase, &Device::Cpu, DType::F32)?;
    let path = args.payload.join("vgg16.f16.safetensors");
    full.to_dtype(DType::F16)?.save(&path)?;
    let half = Vgg::load_safetensors(&path, &Device::Cpu, DType::F32)?;
    let mut files = photo_files(&args.payload.join("photos"))?;
    files.truncate(args.reference_rows);
    let size = args.size;
    let x = decode(&files, size)?;
    let n = files.len();
    let reference = features_of(&half, &x, n, size, 8)?;
    let exact = features_of(&full, &x, n, size, 8)?;
    println!(
        "f16 weights vs the ONNX f32 weights, {n} photos at {size} px: max rel. diff {:.2e}, cosine {:.6}",
        max_rel(&exact, &reference),
        cosine(&exact, &reference)
    );
    let [c, h, w] = half.output_dims(size, size)?;
    let r = Tensor::from_vec(reference, (n, c, h, w), &Device::Cpu)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("features".to_string(), r)]),
        args.payload.join("reference.safetensors"),
    )?;
    println!(
        "wrote {} and reference.safetensors ({n} photos) in {:.0} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(model) = &args.prepare {
        return match prepare(&args, model) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("prepare: {e}");
                std::process::ExitCode::from(1)
            }
        };
    }
    let mut sum = Summary::default();
    let device = if args.cpu {
        println!("device: CPU (--cpu dry run)");
        Device::Cpu
    } else {
        match device::select(Choice::Cuda) {
            Ok(s) => {
                println!(
                    "CUDA found: {} (Candle CUDA backend{})",
                    device::name(&s.device),
                    if cfg!(feature = "cudnn") {
                        " + cuDNN"
                    } else {
                        ", no cuDNN"
                    }
                );
                s.device
            }
            Err(e) => {
                println!("CUDA NOT usable: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    };
    sum.put("device", device::name(&device));
    let size = args.size;
    let vgg_path = args.payload.join("vgg16.f16.safetensors");
    let vgg = match Vgg::load_safetensors(&vgg_path, &device, DType::F32) {
        Ok(v) => v,
        Err(e) => {
            println!("cannot load {}: {e}", vgg_path.display());
            return std::process::ExitCode::from(1);
        }
    };
    println!(
        "VGG16 conv base: {} layers up to {} (f16 weights → f32 and bf16)",
        vgg.layers().len(),
        vgg.output_tensor()
    );

    // Photos.
    let mut files = photo_files(&args.payload.join("photos")).unwrap_or_default();
    if let Some(k) = args.photos {
        files.truncate(k);
    }
    let mut images: Vec<f32> = Vec::new();
    section("decode photos", || {
        let t = Instant::now();
        images = decode(&files, size)?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "   {} photos decoded + resized to {size} px + caffe on {} threads: {:.2} s ({:.0} img/s)",
            files.len(),
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            s,
            files.len() as f64 / s
        );
        sum.put("decode_img_s", format!("{:.0}", files.len() as f64 / s));
        Ok(())
    });
    let n_photos = images.len() / (3 * size * size);

    section("features vs the CPU reference", || {
        let path = args.payload.join("reference.safetensors");
        let refs = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let r = refs
            .get("features")
            .ok_or("reference.safetensors has no 'features'")?;
        let (rows, c, h, w) = r.dims4()?;
        let rn = rows.min(n_photos);
        if rn == 0 {
            return Err("no photos decoded".into());
        }
        let r = r.narrow(0, 0, rn)?;
        let reference = accel::ops::to_host(&r)?;
        println!("   reference: {rn} photos, [{c}, {h}, {w}], computed on the CPU (f32 arithmetic, these f16 weights)");
        if let Some(work) = &args.work {
            std::fs::create_dir_all(work)?;
            let k = rn.min(8);
            let x = Tensor::from_slice(
                &images[..k * 3 * size * size],
                (k, 3, size, size),
                &Device::Cpu,
            )?;
            let y = r.narrow(0, 0, k)?;
            candle_core::safetensors::save(
                &std::collections::HashMap::from([
                    ("input".to_string(), x),
                    ("features".to_string(), y),
                ]),
                work.join("torch_input.safetensors"),
            )?;
        }
        for dtype in [DType::F32, DType::BF16] {
            let v = vgg.to_dtype(dtype)?;
            let ours = features_of(&v, &images, rn, size, args.batch.min(32))?;
            let (d, cs) = (max_rel(&reference, &ours), cosine(&reference, &ours));
            println!(
                "   Candle {}: max rel. diff {d:.2e}, cosine {cs:.6}",
                dtype_name(dtype)
            );
            sum.put(&format!("cosine_{}", dtype_name(dtype)), format!("{cs:.6}"));
            sum.put(
                &format!("max_rel_{}", dtype_name(dtype)),
                format!("{d:.2e}"),
            );
        }
        Ok(())
    });

    section("extraction speed (VGG16 conv base)", || {
        let b = args.batch;
        if n_photos == 0 {
            return Err("no photos decoded".into());
        }
        // A resident batch of real photos (repeated to fill it).
        let per = 3 * size * size;
        let mut host = Vec::with_capacity(b * per);
        for i in 0..b {
            let k = i % n_photos;
            host.extend_from_slice(&images[k * per..(k + 1) * per]);
        }
        let x = Tensor::from_vec(host, (b, 3, size, size), &device)?;
        let runs: [(&str, DType, bool); 3] = [
            ("f32", DType::F32, false),
            ("f32+tf32", DType::F32, true),
            ("bf16", DType::BF16, false),
        ];
        for (label, dtype, tf32) in runs {
            if tf32 && device.is_cpu() {
                continue;
            }
            device::allow_tf32(tf32);
            let v = vgg.to_dtype(dtype)?;
            let xd = x.to_dtype(dtype)?;
            for _ in 0..2 {
                v.forward_raw(&xd)?;
            }
            sync(&device)?;
            let t = Instant::now();
            for _ in 0..args.iters {
                v.forward_raw(&xd)?;
            }
            sync(&device)?;
            let s = t.elapsed().as_secs_f64();
            let rate = (args.iters * b) as f64 / s;
            println!(
                "   {label}: batch {b} at {size} px: {rate:.0} img/s ({:.2} ms/batch)",
                1e3 * s / args.iters as f64
            );
            sum.put(&format!("extract_img_s_{label}"), format!("{rate:.0}"));
        }
        device::allow_tf32(false);
        // End to end from host memory: upload every decoded photo in batches, forward (bf16), download.
        let v = vgg.to_dtype(DType::BF16)?;
        sync(&device)?;
        let t = Instant::now();
        let feats = features_of(&v, &images, n_photos, size, b)?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "   bf16 from host memory ({n_photos} photos, upload + forward + download): {:.0} img/s ({} values out)",
            n_photos as f64 / s,
            feats.len()
        );
        sum.put(
            "extract_img_s_bf16_host",
            format!("{:.0}", n_photos as f64 / s),
        );
        Ok(())
    });

    section(
        "fine-tune epoch (frozen blocks 1-4 + block5/head training)",
        || {
            let (frozen, block) = vgg.split_after("block4_pool")?;
            let [c4, h4, w4] = frozen.output_dims(size, size)?;
            let c5 = block
                .iter()
                .rev()
                .find_map(|l| match l {
                    BlockLayer::Conv { cout, .. } => Some(*cout),
                    BlockLayer::MaxPool => None,
                })
                .ok_or("no conv in block 5")?;
            let shape = [c5, h4 / 2, w4 / 2];
            let d: usize = shape.iter().product();
            let hidden = 256;
            let mut rng = 0x2545F4914F6CDD1Du64;
            let mut uni = |n: usize, a: f32| -> Vec<f32> {
                (0..n)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        ((rng >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
                    })
                    .collect()
            };
            let head = HeadWeights {
                feature_shape: shape,
                hidden,
                outputs: 1,
                dropout: 0.5,
                w1: uni(d * hidden, (6.0 / (d + hidden) as f32).sqrt()),
                b1: vec![0.0; hidden],
                w2: uni(hidden, (6.0 / (hidden + 1) as f32).sqrt()),
                b2: vec![0.0],
            };
            let n = args.epoch_images;
            let tb = args.train_batch;
            let steps = n.div_ceil(tb);
            println!("   {n} photos at {size} px, batch {tb} ({steps} steps); block4 maps [{c4}, {h4}, {w4}] synthetic for the training part");
            for dtype in [DType::F32, DType::BF16] {
                if dtype != DType::F32 && device.is_cpu() {
                    continue;
                }
                // The frozen part over 2,000 photos (what an augmented epoch recomputes), batch 64.
                let fz = frozen.to_dtype(dtype)?;
                let fb = args.batch;
                let xb =
                    Tensor::rand(-100f32, 100f32, (fb, 3, size, size), &device)?.to_dtype(dtype)?;
                fz.forward_raw(&xb)?;
                sync(&device)?;
                let t = Instant::now();
                for _ in 0..n.div_ceil(fb) {
                    fz.forward_raw(&xb)?;
                }
                sync(&device)?;
                let frozen_s = t.elapsed().as_secs_f64();

                let net = FineTuneNet::new(&block, &head, &device, dtype)?;
                let mut opt =
                    DeviceOptim::new(net.vars().to_vec(), OptimizerConfig::sgd(1e-4, 0.9, false))?;
                let labels: Vec<u32> = (0..tb as u32).map(|i| i % 2).collect();
                let maps = || -> Res<Tensor> {
                    Ok(Tensor::rand(-1f32, 3f32, (tb, c4, h4, w4), &device)?.relu()?)
                };
                // Warm-up step (kernel loading), not timed.
                let st = net.step(&maps()?, &labels, Dropout::Random)?;
                opt.step(&st.grads)?;
                sync(&device)?;
                let t = Instant::now();
                let mut loss = 0f64;
                for _ in 0..steps {
                    let st = net.step(&maps()?, &labels, Dropout::Random)?;
                    loss += st.loss_sum;
                    opt.step(&st.grads)?;
                }
                sync(&device)?;
                let train_s = t.elapsed().as_secs_f64();
                let name = dtype_name(dtype);
                println!(
                "   {name}: frozen blocks 1-4 {frozen_s:.2} s + block5/head training {train_s:.2} s = {:.2} s per epoch (mean loss {:.3})",
                frozen_s + train_s,
                loss / (steps * tb) as f64
            );
                sum.put(
                    &format!("finetune_epoch_s_{name}"),
                    format!("{:.2}", frozen_s + train_s),
                );
                sum.put(&format!("finetune_train_s_{name}"), format!("{train_s:.2}"));
                sum.put(
                    &format!("finetune_frozen_s_{name}"),
                    format!("{frozen_s:.2}"),
                );
            }
            Ok(())
        },
    );

    section("stage-1 (scratch) epoch", || {
        let s1 = if device.is_cpu() { 46.min(size) } else { 150 };
        let arch = ScratchArch {
            size: s1,
            filters: vec![32, 32, 64],
            hidden: 64,
            dropout: 0.5,
            outputs: 1,
        };
        let shapes = arch.param_shapes()?;
        let params: Vec<Vec<f32>> = shapes
            .iter()
            .map(|(_, s)| {
                let n: usize = s.iter().product();
                if s.len() == 1 {
                    return vec![0.0; n];
                }
                let fan_in: usize = s[..s.len() - 1].iter().product();
                let fan_out: usize = s[..s.len() - 2].iter().product::<usize>() * s[s.len() - 1];
                let lim = (6.0 / (fan_in + fan_out) as f32).sqrt();
                (0..n)
                    .map(|i| ((i as f32 * 0.7548777).fract() * 2.0 - 1.0) * lim)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        let n = args.epoch_images;
        let tb = args.train_batch;
        let steps = n.div_ceil(tb);
        for dtype in [DType::F32, DType::BF16] {
            if dtype != DType::F32 && device.is_cpu() {
                continue;
            }
            let net = ScratchNet::new(&arch, &refs, &device, dtype)?;
            let mut opt = DeviceOptim::new(net.vars().to_vec(), OptimizerConfig::rmsprop(1e-3))?;
            let labels: Vec<u32> = (0..tb as u32).map(|i| i % 2).collect();
            let imgs =
                || -> Res<Tensor> { Ok(Tensor::rand(0f32, 1f32, (tb, 3, s1, s1), &device)?) };
            let st = net.step(&imgs()?, &labels, Dropout::Random)?;
            opt.step(&st.grads)?;
            sync(&device)?;
            let t = Instant::now();
            for _ in 0..steps {
                let st = net.step(&imgs()?, &labels, Dropout::Random)?;
                opt.step(&st.grads)?;
            }
            sync(&device)?;
            let secs = t.elapsed().as_secs_f64();
            let name = dtype_name(dtype);
            println!("   {name}: {n} images at {s1} px, batch {tb}: {secs:.2} s per epoch (training only; augmentation runs on the CPU)");
            sum.put(&format!("scratch_epoch_s_{name}"), format!("{secs:.2}"));
        }
        Ok(())
    });

    section("GPU vs CPU gradients of one step", || {
        // Block 5 on 9×9 maps (150 px) with a small head, and the tutorial's convnet at 46 px.
        let (_, block) = vgg.split_after("block4_pool")?;
        let shape = [512, 4, 4];
        let d: usize = shape.iter().product();
        let head = HeadWeights {
            feature_shape: shape,
            hidden: 8,
            outputs: 1,
            dropout: 0.0,
            w1: (0..d * 8)
                .map(|i| ((i as f32 * 0.618034).fract() - 0.5) * 0.02)
                .collect(),
            b1: vec![0.0; 8],
            w2: (0..8).map(|i| i as f32 * 0.1 - 0.35).collect(),
            b2: vec![0.0],
        };
        let x: Vec<f32> = (0..2 * 512 * 81)
            .map(|i| ((i as f32 * 0.414_213_57).fract() * 40.0 - 10.0).max(0.0))
            .collect();
        let mut worst = 0f32;
        let mut grads = Vec::new();
        for dev in [Device::Cpu, device.clone()] {
            let net = FineTuneNet::new(&block, &head, &dev, DType::F32)?;
            let xt = Tensor::from_slice(&x, (2, 512, 9, 9), &dev)?;
            let st = net.step(&xt, &[0, 1], Dropout::Off)?;
            grads.push(st.grads_f32(net.vars())?);
        }
        for (a, b) in grads[0].iter().zip(&grads[1]) {
            worst = worst.max(max_rel(a, b));
        }
        println!(
            "   fine-tune block5+head: worst max rel. diff over {} gradients {worst:.2e}",
            grads[0].len()
        );
        sum.put("grad_max_rel_finetune", format!("{worst:.2e}"));
        let arch = ScratchArch {
            size: 46,
            filters: vec![32, 32, 64],
            hidden: 64,
            dropout: 0.0,
            outputs: 1,
        };
        let params: Vec<Vec<f32>> = arch
            .param_shapes()?
            .iter()
            .map(|(_, s)| {
                let n: usize = s.iter().product();
                (0..n)
                    .map(|i| ((i as f32 * 0.7548777).fract() - 0.5) * 0.2)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        let x: Vec<f32> = (0..4 * 3 * 46 * 46)
            .map(|i| (i as f32 * 0.5698403).fract())
            .collect();
        let mut grads = Vec::new();
        for dev in [Device::Cpu, device.clone()] {
            let net = ScratchNet::new(&arch, &refs, &dev, DType::F32)?;
            let xt = Tensor::from_slice(&x, (4, 3, 46, 46), &dev)?;
            let st = net.step(&xt, &[0, 1, 1, 0], Dropout::Off)?;
            grads.push(st.grads_f32(net.vars())?);
        }
        let mut worst = 0f32;
        for (a, b) in grads[0].iter().zip(&grads[1]) {
            worst = worst.max(max_rel(a, b));
        }
        println!(
            "   scratch convnet: worst max rel. diff over {} gradients {worst:.2e}",
            grads[0].len()
        );
        sum.put("grad_max_rel_scratch", format!("{worst:.2e}"));
        Ok(())
    });

    if let Some(work) = &args.work {
        let json = sum
            .0
            .iter()
            .map(|(k, v)| format!("  \"{k}\": \"{v}\""))
            .collect::<Vec<_>>()
            .join(",\n");
        let _ = std::fs::create_dir_all(work);
        let _ = std::fs::write(work.join("rust_summary.json"), format!("{{\n{json}\n}}\n"));
    }
    println!(
        "\nsummary: {}",
        sum.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::process::ExitCode::SUCCESS
}
