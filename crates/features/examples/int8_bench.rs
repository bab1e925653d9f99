//! FP32 versus int8 backbone, side by side in one process: images/s of a bare ONNX Runtime session on the
//! same preprocessed images, batch and threads, and the cosine of every image's int8 features to its FP32
//! features. Timing rounds alternate FP32 and int8 so that load from other processes hits both alike.
//!
//! Run: `cargo run --release -p bottleneck-features --example int8_bench -- [--threads 2] [--batch 16]
//! [--size 150] [--images 160] [--rounds 3] [--count 64] [--seed 0] [--activations uint8[,int8]]
//! [--model M] [--data DIR] [--dump DIR]`
//!
//! Defaults: the shared Keras VGG16 and dogs-vs-cats photos beside the workspace; calibration on `--count`
//! training photos, evaluation on the first `--images` validation photos (half per class). `--dump DIR`
//! writes `inputs.safetensors` (`calib`, `eval` tensors exactly as fed here), `fp32-cut.onnx` and
//! `ours-int8.onnx` (the first activation type) for `scripts/compare_int8.py`. Several activation types
//! (`--activations uint8,int8`) are quantized and timed in the same alternating rounds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use features::extract::{load_backbone, prepare, Backbone};
use features::manifest::HubOptions;
use features::onnx::Layout;
use features::preprocess::{Preprocess, Resize};
use features::quantize::{quantize_backbone, ActType, CalibSpec};
use features::runtime::{session, Device, Runner, SessionOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Opts {
    model: PathBuf,
    data: PathBuf,
    threads: usize,
    batch: usize,
    size: u32,
    images: usize,
    rounds: usize,
    count: usize,
    seed: u64,
    activations: Vec<ActType>,
    dump: Option<PathBuf>,
}

fn parse() -> Res<Opts> {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let mut o = Opts {
        model: shared.join("models/vgg16_keras_notop.onnx"),
        data: shared.join("data/dogs_vs_cats"),
        threads: 2,
        batch: 16,
        size: 150,
        images: 160,
        rounds: 3,
        count: 64,
        seed: 0,
        activations: vec![ActType::Uint8],
        dump: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--model" => o.model = val()?.into(),
            "--data" => o.data = val()?.into(),
            "--threads" => o.threads = val()?.parse()?,
            "--batch" => o.batch = val()?.parse()?,
            "--size" => o.size = val()?.parse()?,
            "--images" => o.images = val()?.parse()?,
            "--rounds" => o.rounds = val()?.parse()?,
            "--count" => o.count = val()?.parse()?,
            "--seed" => o.seed = val()?.parse()?,
            "--activations" => {
                o.activations = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--dump" => o.dump = Some(val()?.into()),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(o)
}

/// The first `n/2` validation photos of each class, sorted by name.
fn eval_files(data: &Path, n: usize) -> Res<Vec<PathBuf>> {
    let ds = features::dataset::scan(data)?;
    let split = ds
        .split("validation")
        .or_else(|| ds.splits.last())
        .ok_or("no split")?;
    let classes = ds.classes.len();
    let mut out = Vec::new();
    for c in 0..classes {
        let per = n / classes + usize::from(c < n % classes);
        out.extend(
            split
                .items
                .iter()
                .filter(|i| i.label == c)
                .take(per)
                .map(|i| i.path.clone()),
        );
    }
    Ok(out)
}

fn inputs(files: &[PathBuf], size: u32, pre: Preprocess, layout: Layout) -> Res<Vec<f32>> {
    let per = 3 * (size as usize).pow(2);
    let mut x = vec![0.0f32; files.len() * per];
    for (f, slot) in files.iter().zip(x.chunks_mut(per)) {
        prepare(f, size, Resize::Nearest, pre, layout, slot)?;
    }
    Ok(x)
}

/// Runs all images in batches; returns (seconds, features).
fn run_all(
    r: &mut Runner,
    b: &Backbone,
    x: &[f32],
    n: usize,
    size: u32,
    batch: usize,
) -> Res<(f64, Vec<f32>)> {
    let s = size as usize;
    let per = 3 * s * s;
    let mut feats = Vec::new();
    let start = Instant::now();
    for chunk in x.chunks(batch * per) {
        let k = chunk.len() / per;
        let shape = match b.cut.input_layout {
            Layout::Nchw => [k, 3, s, s],
            Layout::Nhwc => [k, s, s, 3],
        };
        let t = ort::value::TensorRef::from_array_view((shape, chunk))?;
        let out = r.session.run(ort::inputs![b.cut.input.as_str() => t])?;
        let (_, v) = out[b.cut.output.as_str()].try_extract_tensor::<f32>()?;
        feats.extend_from_slice(v);
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(feats.len() % n, 0);
    Ok((secs, feats))
}

fn cosines(a: &[f32], b: &[f32], n: usize) -> Vec<f64> {
    let d = a.len() / n;
    a.chunks(d)
        .zip(b.chunks(d))
        .map(|(x, y)| {
            let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
            for (&p, &q) in x.iter().zip(y) {
                xy += f64::from(p) * f64::from(q);
                xx += f64::from(p) * f64::from(p);
                yy += f64::from(q) * f64::from(q);
            }
            xy / (xx.sqrt() * yy.sqrt()).max(1e-30)
        })
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn med(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn main() -> Res<()> {
    let o = parse()?;
    println!("load average before: {}", loadavg());
    let hub = HubOptions::from_env();
    let name = o.model.to_string_lossy();
    let backbone = load_backbone(&name, None, &hub)
        .or_else(|_| load_backbone(&name, Some(Preprocess::Caffe), &hub))?;
    let mut spec = CalibSpec::new(&o.data);
    spec.count = o.count;
    spec.seed = o.seed;
    spec.size = o.size;
    spec.threads = Some(o.threads);

    // (label, model bytes); FP32 first.
    let mut models: Vec<(String, Vec<u8>)> = vec![("fp32".into(), backbone.cut.bytes.clone())];
    let mut calib_files = Vec::new();
    for &act in &o.activations {
        spec.activations = act;
        let t = Instant::now();
        let (int8, info) = quantize_backbone(&backbone, &spec)?;
        println!(
            "int8/{}: quantized {} convs in {:.1} s (calibration on {} '{}' images, {} skipped; FP32 left: {}), {:.1} MB (FP32 {:.1} MB)",
            act.name(),
            info.quantized_convs.len(),
            t.elapsed().as_secs_f64(),
            info.calib_files.len(),
            info.calib_split,
            info.calib_skipped.len(),
            if info.fp32_ops.is_empty() { "none".into() } else { info.fp32_ops.join(", ") },
            int8.len() as f64 / 1e6,
            backbone.cut.bytes.len() as f64 / 1e6,
        );
        calib_files = info.calib_files;
        models.push((format!("int8/{}", act.name()), int8));
    }

    let files = eval_files(&o.data, o.images)?;
    let n = files.len();
    let x = inputs(
        &files,
        o.size,
        backbone.preprocess,
        backbone.cut.input_layout,
    )?;
    let opts = SessionOptions {
        device: Device::Cpu,
        threads: Some(o.threads),
    };
    let mut runners = Vec::new();
    let warm = 3 * (o.size as usize).pow(2) * o.batch.min(n);
    for (_, bytes) in &models {
        let mut r = session(bytes, &opts)?;
        run_all(
            &mut r,
            &backbone,
            &x[..warm],
            o.batch.min(n),
            o.size,
            o.batch,
        )?;
        runners.push(r);
    }
    // Alternating rounds: every model once per round.
    let mut speed = vec![Vec::new(); models.len()];
    let mut feats = vec![Vec::new(); models.len()];
    for _ in 0..o.rounds.max(1) {
        for (k, r) in runners.iter_mut().enumerate() {
            let (secs, f) = run_all(r, &backbone, &x, n, o.size, o.batch)?;
            speed[k].push(n as f64 / secs);
            feats[k] = f;
        }
    }
    println!(
        "\n{n} validation images, {}x{}, batch {}, {} threads, {} alternating rounds",
        o.size, o.size, o.batch, o.threads, o.rounds
    );
    println!(
        "{:<12} {:>12} {:>10} {:>9} {:>12} {:>11}  per round",
        "model", "img/s median", "img/s best", "vs fp32", "cosine mean", "cosine min"
    );
    let base = med(&speed[0]);
    for (k, (label, _)) in models.iter().enumerate() {
        let cos = cosines(&feats[0], &feats[k], n);
        let mean = cos.iter().sum::<f64>() / n as f64;
        let min = cos.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "{label:<12} {:>12.1} {:>10.1} {:>8.2}x {mean:>12.5} {min:>11.5}  {:.1?}",
            med(&speed[k]),
            speed[k].iter().cloned().fold(0.0, f64::max),
            med(&speed[k]) / base,
            speed[k]
        );
    }
    println!("load average after: {}", loadavg());

    if let Some(dir) = &o.dump {
        std::fs::create_dir_all(dir)?;
        let calib_paths: Vec<PathBuf> = calib_files.iter().map(|r| spec.dir.join(r)).collect();
        let c = inputs(
            &calib_paths,
            o.size,
            backbone.preprocess,
            backbone.cut.input_layout,
        )?;
        let s = o.size as usize;
        let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
        let (cb, eb) = (bytes(&c), bytes(&x));
        let view = |shape: Vec<usize>, b| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, b)
        };
        let tensors = vec![
            ("calib", view(vec![calib_paths.len(), 3, s, s], &cb)?),
            ("eval", view(vec![n, 3, s, s], &eb)?),
        ];
        let mut meta = HashMap::new();
        meta.insert(
            "model".to_string(),
            o.model.canonicalize()?.to_string_lossy().into_owned(),
        );
        meta.insert("input".to_string(), backbone.cut.input.clone());
        meta.insert("output".to_string(), backbone.cut.output.clone());
        safetensors::serialize_to_file(tensors, Some(meta), &dir.join("inputs.safetensors"))?;
        std::fs::write(dir.join("ours-int8.onnx"), &models[1].1)?;
        std::fs::write(dir.join("fp32-cut.onnx"), &backbone.cut.bytes)?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}
