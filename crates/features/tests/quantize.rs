//! Int8 quantization: the arithmetic on known values (and against ONNX Runtime's QuantizeLinear), the QDQ
//! rewrite of tiny VGG-shaped models run through ONNX Runtime (fused to integer kernels, close to FP32),
//! FP32 fall-back for other ops, the cache key and cache file, bad calibration folders, and the real model.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use features::extract::{load_backbone, prepare, Backbone};
use features::manifest::HubOptions;
use features::onnx::proto::{ModelProto, NodeProto, TensorProto};
use features::onnx::Layout;
use features::preprocess::{Preprocess, Resize};
use features::quantize::{
    activation_params, cache_path, dequantize, int8_model, quantize, quantize_backbone,
    quantize_bias, quantize_weights, read_info, ActType, CalibMethod, CalibSpec, KeyInputs,
    QParams, WeightRange,
};
use features::runtime::{session, Device, SessionOptions};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use testkit::compare::cosine;
use testkit::synth::{self, VggSpec};

const OPTS: SessionOptions = SessionOptions {
    device: Device::Cpu,
    threads: Some(2),
};

fn qp(scale: f32, zero_point: i32) -> QParams {
    QParams { scale, zero_point }
}

// ---------------------------------------------------------------- arithmetic

#[test]
fn activation_params_on_known_ranges() {
    let p = activation_params(-1.0, 3.0, ActType::Uint8);
    assert_eq!(p.scale, (4.0f64 / 255.0) as f32);
    assert_eq!(p.zero_point, 64, "round(0 + 1 / (4/255)) = round(63.75)");
    let p = activation_params(-1.0, 3.0, ActType::Int8);
    assert_eq!(p.scale, (4.0f64 / 255.0) as f32);
    assert_eq!(p.zero_point, -64, "round(-128 + 63.75) = round(-64.25)");
    // A range above zero is widened down to 0: zero point at qmin.
    assert_eq!(
        activation_params(0.5, 2.0, ActType::Uint8),
        qp((2.0f64 / 255.0) as f32, 0)
    );
    assert_eq!(
        activation_params(0.5, 2.0, ActType::Int8),
        qp((2.0f64 / 255.0) as f32, -128)
    );
    // A range below zero is widened up to 0: zero point at qmax.
    assert_eq!(
        activation_params(-2.0, -0.5, ActType::Uint8),
        qp((2.0f64 / 255.0) as f32, 255)
    );
    // A degenerate range cannot divide by zero.
    assert_eq!(activation_params(0.0, 0.0, ActType::Uint8), qp(1.0, 0));
}

#[test]
fn quantize_rounds_half_to_even_and_saturates() {
    let p = qp(0.5, 10);
    assert_eq!(quantize(1.25, p, ActType::Uint8), 12, "2.5 rounds to 2");
    assert_eq!(quantize(1.75, p, ActType::Uint8), 14, "3.5 rounds to 4");
    assert_eq!(quantize(-0.25, p, ActType::Uint8), 10, "-0.5 rounds to 0");
    assert_eq!(quantize(1000.0, p, ActType::Uint8), 255);
    assert_eq!(quantize(-1000.0, p, ActType::Uint8), 0);
    assert_eq!(quantize(100.0, qp(0.5, 0), ActType::Int8), 127);
    assert_eq!(quantize(-100.0, qp(0.5, 0), ActType::Int8), -128);
    assert_eq!(dequantize(12, p), 1.0);
    assert_eq!(dequantize(0, p), -5.0);
    // Round trip error is at most half a step inside the range.
    let p = activation_params(-3.0, 5.0, ActType::Uint8);
    for i in 0..=800 {
        let x = -3.0 + i as f32 * 0.01;
        let back = dequantize(quantize(x, p, ActType::Uint8), p);
        assert!((back - x).abs() <= p.scale * 0.5 + 1e-6, "{x} → {back}");
    }
}

/// A one-node QuantizeLinear model `y = QuantizeLinear(x, scale, zero_point)`.
fn quantize_linear_model(p: QParams, ty: ActType) -> Vec<u8> {
    let mut m = synth::vgg_like_proto(&VggSpec {
        blocks: vec![],
        ..VggSpec::default()
    });
    let g = m.graph.as_mut().unwrap();
    g.node = vec![NodeProto {
        input: vec!["input".into(), "s".into(), "z".into()],
        output: vec!["y".into()],
        op_type: Some("QuantizeLinear".into()),
        name: Some("q".into()),
        ..Default::default()
    }];
    g.initializer = vec![
        TensorProto {
            dims: vec![],
            data_type: Some(1),
            name: Some("s".into()),
            raw_data: Some(p.scale.to_le_bytes().to_vec()),
            ..Default::default()
        },
        TensorProto {
            dims: vec![],
            data_type: Some(ty.onnx_type()),
            name: Some("z".into()),
            raw_data: Some(vec![p.zero_point as u8]),
            ..Default::default()
        },
    ];
    let mut out = g.output[0].clone();
    out.name = Some("y".into());
    if let Some(features::onnx::proto::type_proto::Value::TensorType(t)) =
        out.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(ty.onnx_type());
    }
    g.output = vec![out];
    m.encode_to_vec()
}

#[test]
fn quantize_matches_onnx_runtime_quantize_linear() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (ty, p) in [
        (ActType::Uint8, qp(0.05, 100)),
        (ActType::Int8, qp(0.05, -20)),
    ] {
        let mut x: Vec<f32> = (0..3 * 16 * 16)
            .map(|_| rng.random_range(-12.0..12.0))
            .collect();
        // Exact ties (k + 0.5 steps) and values past both ends.
        for (i, k) in (-300..300).step_by(7).enumerate() {
            x[i] = (k as f32 + 0.5) * 0.25;
        }
        let tie = qp(0.25, p.zero_point);
        for p in [p, tie] {
            let model = quantize_linear_model(p, ty);
            let mut r = session(&model, &OPTS).unwrap();
            let t = ort::value::TensorRef::from_array_view(([1usize, 3, 16, 16], &x[..])).unwrap();
            let out = r.session.run(ort::inputs!["input" => t]).unwrap();
            let theirs: Vec<i32> = match ty {
                ActType::Uint8 => out["y"]
                    .try_extract_tensor::<u8>()
                    .unwrap()
                    .1
                    .iter()
                    .map(|&v| v as i32)
                    .collect(),
                ActType::Int8 => out["y"]
                    .try_extract_tensor::<i8>()
                    .unwrap()
                    .1
                    .iter()
                    .map(|&v| v as i32)
                    .collect(),
            };
            let ours: Vec<i32> = x.iter().map(|&v| quantize(v, p, ty)).collect();
            assert_eq!(ours, theirs, "{ty:?} {p:?}");
        }
    }
}

#[test]
fn weights_are_symmetric_int8_per_output_channel() {
    #[rustfmt::skip]
    let w = [
        2.54, -1.0, 0.3, 0.0,   // channel 0: max |w| = 2.54 → scale 0.02
        0.0, 0.0, 0.0, 0.0,     // channel 1: all zero → scale 1
        -0.5, 0.2, 0.1, 0.5,    // channel 2: scale 0.5 / 127
    ];
    let q = quantize_weights(&w, 3, WeightRange::Full).unwrap();
    assert_eq!(q.scales, vec![0.02, 1.0, (0.5f64 / 127.0) as f32]);
    assert_eq!(
        q.values,
        vec![127, -50, 15, 0, 0, 0, 0, 0, -127, 51, 25, 127]
    );
    assert!(
        quantize_weights(&w, 5, WeightRange::Full).is_err(),
        "12 weights do not split into 5 channels"
    );
}

#[test]
fn bias_is_int32_at_input_times_weight_scale() {
    let (q, s) = quantize_bias(&[0.5, -0.25], 0.1, &[0.02, 0.05]).unwrap();
    assert_eq!(s, vec![0.1f32 * 0.02, 0.1f32 * 0.05]);
    assert_eq!(q, vec![250, -50]);
    let (q, _) = quantize_bias(&[1e12, -1e12], 1e-3, &[1e-3, 1e-3]).unwrap();
    assert_eq!(q, vec![i32::MAX, i32::MIN], "saturates to int32");
    assert!(quantize_bias(&[1.0], 0.1, &[0.1, 0.2]).is_err());
}

// ---------------------------------------------------------------- synthetic models

fn write_model(dir: &Path, spec: &VggSpec) -> PathBuf {
    let p = dir.join("tiny.onnx");
    fs::write(&p, synth::vgg_like(spec)).unwrap();
    p
}

fn backbone(model: &Path) -> Backbone {
    load_backbone(
        &model.to_string_lossy(),
        Some(Preprocess::Caffe),
        &HubOptions::default(),
    )
    .unwrap()
}

fn calib(data: &Path) -> CalibSpec {
    let mut s = CalibSpec::new(data);
    s.count = 16;
    s.size = 48;
    s.batch = 8;
    s.threads = Some(2);
    s
}

/// Runs `model` over `files` at `size`; returns one feature vector per image.
fn features_of(model: &[u8], b: &Backbone, files: &[PathBuf], size: u32) -> Vec<Vec<f32>> {
    let s = size as usize;
    let per = 3 * s * s;
    let mut x = vec![0.0f32; files.len() * per];
    for (f, slot) in files.iter().zip(x.chunks_mut(per)) {
        prepare(
            f,
            size,
            Resize::Nearest,
            b.preprocess,
            b.cut.input_layout,
            slot,
        )
        .unwrap();
    }
    let shape = match b.cut.input_layout {
        Layout::Nchw => [files.len(), 3, s, s],
        Layout::Nhwc => [files.len(), s, s, 3],
    };
    let mut r = session(model, &OPTS).unwrap();
    let t = ort::value::TensorRef::from_array_view((shape, &x[..])).unwrap();
    let out = r
        .session
        .run(ort::inputs![b.cut.input.as_str() => t])
        .unwrap();
    let (_, v) = out[b.cut.output.as_str()]
        .try_extract_tensor::<f32>()
        .unwrap();
    v.chunks(v.len() / files.len())
        .map(<[f32]>::to_vec)
        .collect()
}

fn files_of(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for class in fs::read_dir(dir).unwrap() {
        for f in fs::read_dir(class.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn decode(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).unwrap()
}

fn op_counts(m: &ModelProto) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for n in &m.graph.as_ref().unwrap().node {
        *c.entry(n.op_type.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    c
}

/// The graph ONNX Runtime actually runs (after its QDQ fusions), decoded.
fn optimized(model: &[u8], dir: &Path) -> ModelProto {
    let env = features::runtime::environment().unwrap();
    let path = dir.join("optimized.onnx");
    let _s = ort::session::Session::builder(env)
        .unwrap()
        .with_optimized_model_path(&path)
        .unwrap()
        .commit_from_memory(model)
        .unwrap();
    decode(&fs::read(&path).unwrap())
}

#[test]
fn tiny_vgg_quantized_runs_int8_in_onnx_runtime_and_stays_close_to_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    testkit::write_synthetic(&data, &[("train", 12), ("validation", 6)], 3).unwrap();
    let b = backbone(&write_model(tmp.path(), &VggSpec::default()));
    let spec = calib(&data);
    let (int8, info) = quantize_backbone(&b, &spec).unwrap();

    // What was quantized and from which images.
    assert_eq!(info.quantized_convs.len(), 13);
    assert!(info.fp32_ops.is_empty(), "{:?}", info.fp32_ops);
    assert_eq!(info.calib_split, "train");
    assert_eq!(info.calib_files.len(), 16);
    let bright = info
        .calib_files
        .iter()
        .filter(|f| f.starts_with("train/bright/"))
        .count();
    assert_eq!(bright, 8, "balanced over classes: {:?}", info.calib_files);
    assert_eq!(
        read_info(&int8).unwrap().as_ref(),
        Some(&info),
        "metadata_props hold the info"
    );

    // The QDQ graph: int8 weights, no float weights, no Relu (folded), same float output.
    let m = decode(&int8);
    let g = m.graph.as_ref().unwrap();
    let counts = op_counts(&m);
    assert_eq!(counts.get("Conv"), Some(&13));
    assert_eq!(
        counts.get("Relu"),
        None,
        "Relus are folded into the Conv outputs' ranges: {counts:?}"
    );
    assert_eq!(
        counts.get("QuantizeLinear"),
        Some(&(1 + 13 + 5)),
        "input, conv outputs, pools: {counts:?}"
    );
    assert_eq!(g.output[0].name.as_deref(), Some(b.cut.output.as_str()));
    for n in g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
    {
        let dq = g.node.iter().find(|d| d.output[0] == n.input[1]).unwrap();
        assert_eq!(dq.op_type.as_deref(), Some("DequantizeLinear"));
        let w = g
            .initializer
            .iter()
            .find(|t| t.name.as_ref() == Some(&dq.input[0]))
            .unwrap();
        assert_eq!(w.data_type, Some(3), "weights of {:?} are int8", n.name);
        let scales = g
            .initializer
            .iter()
            .find(|t| t.name.as_ref() == Some(&dq.input[1]))
            .unwrap();
        assert_eq!(scales.dims, vec![w.dims[0]], "one scale per output channel");
    }
    assert!(g
        .initializer
        .iter()
        .all(|t| !(t.name.as_deref().unwrap().ends_with("_W") && t.data_type == Some(1))));

    // ONNX Runtime fuses every Conv into its integer kernel and runs MaxPool on 8-bit data.
    let opt = optimized(&int8, tmp.path());
    let counts = op_counts(&opt);
    assert_eq!(counts.get("Conv"), None, "no float Conv left: {counts:?}");
    assert_eq!(counts.get("QLinearConv"), Some(&13), "{counts:?}");
    assert_eq!(
        counts.get("DequantizeLinear"),
        Some(&1),
        "only the output is dequantized: {counts:?}"
    );

    // Close to FP32 on held-out images.
    let val = files_of(&data.join("validation"));
    let a = features_of(&b.cut.bytes, &b, &val, spec.size);
    let q = features_of(&int8, &b, &val, spec.size);
    assert_eq!(a[0].len(), q[0].len());
    for (i, (x, y)) in a.iter().zip(&q).enumerate() {
        let c = cosine(x, y);
        assert!(c >= 0.99, "image {i}: cosine {c}");
    }
}

#[test]
fn int8_activations_also_fuse_and_stay_close() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    testkit::write_synthetic(&data, &[("train", 10), ("validation", 4)], 5).unwrap();
    let b = backbone(&write_model(
        tmp.path(),
        &VggSpec {
            seed: 4,
            ..VggSpec::default()
        },
    ));
    let mut spec = calib(&data);
    spec.activations = ActType::Int8;
    let (int8, info) = quantize_backbone(&b, &spec).unwrap();
    assert_eq!(info.activations, ActType::Int8);
    let g = decode(&int8).graph.unwrap();
    let zp = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("block1_conv1_zero_point"))
        .unwrap();
    assert_eq!(zp.data_type, Some(3));
    assert_eq!(
        zp.raw_data.as_deref(),
        Some(&[0x80u8][..]),
        "ReLU output: zero point −128"
    );
    assert_eq!(
        op_counts(&optimized(&int8, tmp.path())).get("QLinearConv"),
        Some(&13)
    );
    let val = files_of(&data.join("validation"));
    let (a, q) = (
        features_of(&b.cut.bytes, &b, &val, spec.size),
        features_of(&int8, &b, &val, spec.size),
    );
    for (x, y) in a.iter().zip(&q) {
        assert!(cosine(x, y) >= 0.99);
    }
}

#[test]
fn other_ops_stay_fp32_and_are_listed() {
    // NHWC input: a Transpose before the first Conv and after the last pool.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    testkit::write_synthetic(&data, &[("train", 10), ("validation", 3)], 9).unwrap();
    let spec_model = VggSpec {
        nhwc: true,
        blocks: vec![(2, 4), (2, 8)],
        seed: 2,
        ..VggSpec::default()
    };
    let b = backbone(&write_model(tmp.path(), &spec_model));
    assert_eq!(b.cut.input_layout, Layout::Nhwc);
    let spec = calib(&data);
    let (int8, info) = quantize_backbone(&b, &spec).unwrap();
    assert_eq!(info.quantized_convs.len(), 4);
    assert!(
        info.fp32_ops.iter().any(|o| o.starts_with("Transpose")),
        "the Transpose is listed as FP32: {:?}",
        info.fp32_ops
    );
    let val = files_of(&data.join("validation"));
    let (a, q) = (
        features_of(&b.cut.bytes, &b, &val, spec.size),
        features_of(&int8, &b, &val, spec.size),
    );
    for (x, y) in a.iter().zip(&q) {
        assert!(cosine(x, y) >= 0.99);
    }

    // A Conv whose weight is computed (not an initializer) stays FP32 and says why.
    let mut m = synth::vgg_like_proto(&VggSpec {
        blocks: vec![(2, 4)],
        ..VggSpec::default()
    });
    let g = m.graph.as_mut().unwrap();
    g.node.insert(
        0,
        NodeProto {
            input: vec!["block1_conv2_W".into()],
            output: vec!["block1_conv2_W_copy".into()],
            op_type: Some("Identity".into()),
            name: Some("weight_copy".into()),
            ..Default::default()
        },
    );
    let conv = g
        .node
        .iter_mut()
        .find(|n| n.name.as_deref() == Some("block1_conv2"))
        .unwrap();
    conv.input[1] = "block1_conv2_W_copy".into();
    let path = tmp.path().join("computed.onnx");
    fs::write(&path, m.encode_to_vec()).unwrap();
    let b = backbone(&path);
    let (int8, info) = quantize_backbone(&b, &spec).unwrap();
    assert_eq!(info.quantized_convs, vec!["block1_conv1".to_string()]);
    assert!(info
        .fp32_ops
        .iter()
        .any(|o| o.contains("block1_conv2") && o.contains("not a float32 initializer")));
    assert!(info.fp32_ops.iter().any(|o| o.starts_with("Identity")));
    let val = files_of(&data.join("validation"));
    let (a, q) = (
        features_of(&b.cut.bytes, &b, &val, spec.size),
        features_of(&int8, &b, &val, spec.size),
    );
    for (x, y) in a.iter().zip(&q) {
        assert!(cosine(x, y) >= 0.99);
    }
}

// ---------------------------------------------------------------- cache

#[test]
fn cache_key_changes_when_any_input_changes() {
    let base = KeyInputs {
        fp32_sha256: "a".repeat(64),
        output: "block5_pool".into(),
        calib_digest: "b".repeat(64),
        method: CalibMethod::MinMax,
        activations: ActType::Uint8,
        weights: WeightRange::Full,
        image_size: 150,
        resize: Resize::Nearest,
        preprocess: Preprocess::Caffe,
    };
    let variants = [
        KeyInputs {
            weights: WeightRange::Reduced,
            ..base.clone()
        },
        KeyInputs {
            fp32_sha256: "c".repeat(64),
            ..base.clone()
        },
        KeyInputs {
            output: "block4_pool".into(),
            ..base.clone()
        },
        KeyInputs {
            calib_digest: "d".repeat(64),
            ..base.clone()
        },
        KeyInputs {
            activations: ActType::Int8,
            ..base.clone()
        },
        KeyInputs {
            image_size: 224,
            ..base.clone()
        },
        KeyInputs {
            resize: Resize::Bilinear,
            ..base.clone()
        },
        KeyInputs {
            preprocess: Preprocess::Torch,
            ..base.clone()
        },
    ];
    let mut keys = vec![base.key()];
    keys.extend(variants.iter().map(KeyInputs::key));
    assert_eq!(base.key(), base.clone().key(), "deterministic");
    let distinct: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "{keys:?}");
}

#[test]
fn int8_model_is_cached_and_redone_when_its_key_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    testkit::write_synthetic(&data, &[("train", 8)], 11).unwrap();
    let b = backbone(&write_model(
        tmp.path(),
        &VggSpec {
            blocks: vec![(1, 4), (1, 8)],
            ..VggSpec::default()
        },
    ));
    let cache = tmp.path().join("cache");
    let spec = calib(&data);

    let (first, info) = int8_model(&b, &spec, &cache).unwrap();
    assert!(!info.from_cache);
    let path = info.cache_path.clone().unwrap();
    assert_eq!(path, cache_path(&cache, &b.model.sha256, &b.cut.output));
    assert!(
        path.file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("-block2_pool.int8.onnx"),
        "{}",
        path.display()
    );
    assert_eq!(fs::read(&path).unwrap(), first);
    let (again, hit) = int8_model(&b, &spec, &cache).unwrap();
    assert!(hit.from_cache, "same inputs: reused");
    assert_eq!(again, first);
    assert_eq!(hit.key, info.key);

    // Another image size: redone, and the file now carries the new key.
    let mut bigger = spec.clone();
    bigger.size = 64;
    let (_, redo) = int8_model(&b, &bigger, &cache).unwrap();
    assert!(!redo.from_cache);
    assert_ne!(redo.key, info.key);
    assert_eq!(
        read_info(&fs::read(&path).unwrap())
            .unwrap()
            .unwrap()
            .image_size,
        64
    );

    // Back to the first spec: redone again (one file per FP32 model, its key decides).
    let (_, back) = int8_model(&b, &spec, &cache).unwrap();
    assert!(!back.from_cache);
    assert_eq!(back.key, info.key);

    // A calibration photo edited in place: same names, new contents → redone.
    let victim = data.join(&info.calib_files[0]);
    image::RgbImage::from_pixel(40, 40, image::Rgb([1, 2, 3]))
        .save(&victim)
        .unwrap();
    let (_, edited) = int8_model(&b, &spec, &cache).unwrap();
    assert!(!edited.from_cache);
    assert_ne!(edited.calib_digest, info.calib_digest);
    assert_ne!(edited.key, info.key);

    // Another seed draws other photos; another activation type is another model.
    let mut seeded = spec.clone();
    seeded.count = 8;
    let (_, s0) = int8_model(&b, &seeded, &cache).unwrap();
    seeded.seed = 1;
    let (_, s1) = int8_model(&b, &seeded, &cache).unwrap();
    assert!(!s1.from_cache);
    assert_ne!(s0.calib_files, s1.calib_files);
    let mut s8 = spec.clone();
    s8.activations = ActType::Int8;
    assert!(!int8_model(&b, &s8, &cache).unwrap().1.from_cache);

    // A corrupt cache file is redone, not an error.
    fs::write(&path, b"garbage").unwrap();
    let (bytes, fixed) = int8_model(&b, &spec, &cache).unwrap();
    assert!(!fixed.from_cache);
    assert_eq!(read_info(&bytes).unwrap().unwrap().key, fixed.key);
}

// ---------------------------------------------------------------- bad calibration folders

#[test]
fn empty_calibration_folder_is_refused_with_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let b = backbone(&write_model(
        tmp.path(),
        &VggSpec {
            blocks: vec![(1, 4)],
            ..VggSpec::default()
        },
    ));
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = quantize_backbone(&b, &calib(&empty))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds no images") && err.contains("empty"),
        "{err}"
    );
    let mut few = calib(&empty);
    few.count = 4;
    let err = quantize_backbone(&b, &few).unwrap_err().to_string();
    assert!(
        err.contains("--count 4") && err.contains("at least 8"),
        "{err}"
    );
}

#[test]
fn unreadable_calibration_images_are_named_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    testkit::write_synthetic(&data, &[("train", 8)], 13).unwrap();
    fs::write(data.join("train/bright/bright.0.png"), b"not a png").unwrap();
    fs::write(data.join("train/dark/dark.1.jpg"), b"").unwrap();
    let b = backbone(&write_model(
        tmp.path(),
        &VggSpec {
            blocks: vec![(1, 4)],
            ..VggSpec::default()
        },
    ));
    let (_, info) = quantize_backbone(&b, &calib(&data)).unwrap();
    let skipped: Vec<&str> = info.calib_skipped.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(skipped.len(), 2, "{:?}", info.calib_skipped);
    assert!(
        skipped.contains(&"train/bright/bright.0.png")
            && skipped.contains(&"train/dark/dark.1.jpg")
    );
    assert!(info.calib_skipped.iter().all(|s| !s.reason.is_empty()));
    assert_eq!(info.calib_files.len(), 14);
    assert!(!info
        .calib_files
        .iter()
        .any(|f| skipped.contains(&f.as_str())));
}

#[test]
fn fewer_than_eight_usable_images_is_an_error_that_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    testkit::write_synthetic(&data, &[("train", 5)], 17).unwrap();
    for f in [
        "train/bright/bright.0.png",
        "train/dark/dark.0.png",
        "train/dark/dark.1.jpg",
    ] {
        fs::write(data.join(f), b"broken").unwrap();
    }
    let b = backbone(&write_model(
        tmp.path(),
        &VggSpec {
            blocks: vec![(1, 4)],
            ..VggSpec::default()
        },
    ));
    let err = quantize_backbone(&b, &calib(&data))
        .unwrap_err()
        .to_string();
    assert!(err.contains("only 7 usable calibration images"), "{err}");
    assert!(err.contains("at least 8"), "{err}");
    assert!(
        err.contains("train/dark/dark.1.jpg"),
        "names the unreadable files: {err}"
    );
}

#[test]
fn a_plain_folder_of_images_calibrates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    testkit::write_synthetic(&data, &[("train", 6)], 19).unwrap();
    let flat = tmp.path().join("flat");
    fs::create_dir_all(&flat).unwrap();
    for f in files_of(&data.join("train")) {
        fs::copy(&f, flat.join(f.file_name().unwrap())).unwrap();
    }
    let b = backbone(&write_model(
        tmp.path(),
        &VggSpec {
            blocks: vec![(1, 4)],
            ..VggSpec::default()
        },
    ));
    let (_, info) = quantize_backbone(&b, &calib(&flat)).unwrap();
    assert_eq!(info.calib_split, "all");
    assert_eq!(info.calib_files.len(), 12);
}

// ---------------------------------------------------------------- real model

#[test]
fn real_vgg16_quantizes_on_16_shared_photos_and_matches_fp32() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    testkit::link_shared_subset(&shared, &data, &["train", "validation"], 8).unwrap();
    let model = shared.join("models/vgg16_keras_notop.onnx");
    let b = load_backbone(&model.to_string_lossy(), None, &HubOptions::default()).unwrap();
    assert_eq!(
        b.preprocess,
        Preprocess::Caffe,
        "recognised by its manifest"
    );
    let mut spec = CalibSpec::new(&data);
    spec.count = 16;
    spec.threads = Some(2);
    let (int8, info) = int8_model(&b, &spec, &tmp.path().join("cache")).unwrap();
    assert_eq!(info.quantized_convs.len(), 13);
    assert!(info.fp32_ops.is_empty(), "{:?}", info.fp32_ops);
    assert_eq!(info.calib_files.len(), 16);
    assert!(info.calib_files.iter().all(|f| f.starts_with("train/")));
    assert!(
        int8.len() * 3 < b.cut.bytes.len(),
        "int8 weights: {} vs {} bytes",
        int8.len(),
        b.cut.bytes.len()
    );

    let val: Vec<PathBuf> = files_of(&data.join("validation"))
        .into_iter()
        .step_by(4)
        .collect();
    let a = features_of(&b.cut.bytes, &b, &val, 150);
    let q = features_of(&int8, &b, &val, 150);
    assert_eq!(q[0].len(), 512 * 4 * 4);
    for (f, (x, y)) in val.iter().zip(a.iter().zip(&q)) {
        let c = cosine(x, y);
        assert!(c >= 0.99, "{}: cosine {c}", f.display());
    }
}
