//! ONNX graph surgery checked end to end through ONNX Runtime: conv-base cuts, named cuts, NHWC
//! inputs, initializer reading, error messages, and the real Keras VGG16 conv base.

use std::collections::HashMap;
use std::path::PathBuf;

use features::onnx::proto::tensor_shape_proto::{dimension::Value::DimValue, Dimension};
use features::onnx::proto::type_proto::Value;
use features::onnx::proto::{tensor_proto::DataType, ModelProto, TensorProto};
use features::onnx::{self, Layout};
use features::runtime::{session, Device, SessionOptions};
use ort::value::TensorRef;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use testkit::synth::{expose_outputs, vgg_like, vgg_like_proto, VggSpec};

type Outputs = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Runs `model` on one input and returns every output as (shape, values).
fn try_run(model: &[u8], input: &str, shape: &[usize], data: &[f32]) -> features::Result<Outputs> {
    let opts = SessionOptions {
        device: Device::Cpu,
        threads: Some(2),
    };
    let mut runner = session(model, &opts)?;
    let tensor = TensorRef::from_array_view((shape.to_vec(), data))?;
    let outputs = runner.session.run(ort::inputs![input => tensor])?;
    let mut out = HashMap::new();
    for (name, value) in outputs.iter() {
        let (s, v) = value.try_extract_tensor::<f32>()?;
        out.insert(
            name.to_string(),
            (s.iter().map(|&d| d as usize).collect(), v.to_vec()),
        );
    }
    Ok(out)
}

fn run(model: &[u8], input: &str, shape: &[usize], data: &[f32]) -> Outputs {
    try_run(model, input, shape, data).expect("ONNX Runtime run")
}

fn random_input(shape: &[usize], seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect()
}

/// NCHW → NHWC copy of a 4-D tensor.
fn to_nhwc(shape: &[usize], x: &[f32]) -> Vec<f32> {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    out[((b * h + y) * w + xx) * c + ch] = x[((b * c + ch) * h + y) * w + xx];
                }
            }
        }
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let d = max_abs_diff(a, b);
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: reference is all zeros");
    assert!(
        d <= 1e-5 * scale.max(1.0),
        "{what}: max |diff| {d} (scale {scale})"
    );
}

fn decode(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).expect("valid protobuf")
}

fn ops(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.clone().unwrap_or_default())
        .collect()
}

fn small_blocks() -> Vec<(usize, usize)> {
    vec![(2, 4), (2, 8), (3, 8)]
}

#[test]
fn zoo_style_full_model_cut_matches_last_pool_and_runs_at_other_sizes() {
    let spec = VggSpec {
        blocks: small_blocks(),
        classifier: Some(vec![16, 16, 10]),
        fixed_size: Some(32),
        input_name: "data".into(),
        seed: 7,
        ..VggSpec::default()
    };
    let full = vgg_like(&spec);
    let cut = onnx::cut_conv_base(&full).unwrap();
    assert_eq!(cut.input, "data");
    assert_eq!(cut.output, "block3_pool");
    assert_eq!(cut.input_layout, Layout::Nchw);
    assert_eq!(cut.input_channels, 3);
    assert_eq!(cut.output_channels, Some(8));

    // Same values as the original's last pool at the pinned size.
    let x = random_input(&[1, 3, 32, 32], 1);
    let reference = run(
        &expose_outputs(&full, &["block3_pool"]).unwrap(),
        "data",
        &[1, 3, 32, 32],
        &x,
    );
    let (ref_shape, ref_vals) = &reference["block3_pool"];
    assert_eq!(
        reference["predictions"].0,
        vec![1, 10],
        "the full model still classifies"
    );
    let got = run(&cut.bytes, &cut.input, &[1, 3, 32, 32], &x);
    assert_eq!(got.len(), 1, "exactly one output");
    let (shape, vals) = &got[&cut.output];
    assert_eq!(shape, ref_shape);
    assert_eq!(shape, &vec![1, 8, 4, 4]);
    assert_close(vals, ref_vals, "cut vs original block3_pool");

    // The original is pinned to 1×3×32×32; the cut runs at any size and batch.
    let x2 = random_input(&[2, 3, 64, 48], 2);
    assert!(
        try_run(&full, "data", &[2, 3, 64, 48], &x2).is_err(),
        "the original should reject 64×48"
    );
    let got = run(&cut.bytes, &cut.input, &[2, 3, 64, 48], &x2);
    assert_eq!(got[&cut.output].0, vec![2, 8, 8, 6]);

    // Classifier nodes and weights are gone, stale fixed-size shapes dropped, dims symbolic.
    let m = decode(&cut.bytes);
    let ops = ops(&m);
    for op in ["Flatten", "Gemm", "Relu", "Dropout", "Softmax"] {
        let n = ops.iter().filter(|o| *o == op).count();
        let expected = if op == "Relu" { 7 } else { 0 };
        assert_eq!(n, expected, "{op} count after the cut: {ops:?}");
    }
    let g = m.graph.as_ref().unwrap();
    let inits: Vec<&str> = g
        .initializer
        .iter()
        .map(|t| t.name.as_deref().unwrap())
        .collect();
    assert_eq!(inits.len(), 14, "7 convs × (W, B): {inits:?}");
    assert!(inits.iter().all(|n| n.starts_with("block")), "{inits:?}");
    assert!(g.value_info.is_empty());
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.output.len(), 1);
    assert_eq!(m.opset_import, decode(&full).opset_import);
    let text = onnx::describe(&cut.bytes).unwrap();
    assert!(text.contains("inputs: data [N,3,H,W] float"), "{text}");
    assert!(
        text.contains("outputs: block3_pool [N,8,h,w] float"),
        "{text}"
    );
}

#[test]
fn initializers_listed_as_graph_inputs_are_pruned() {
    // Older exporters list every weight as a graph input too; from IR 4 on the cut drops them.
    let spec = VggSpec {
        blocks: small_blocks(),
        classifier: Some(vec![10]),
        ..VggSpec::default()
    };
    let mut m = vgg_like_proto(&spec);
    let g = m.graph.as_mut().unwrap();
    let extra: Vec<_> = g
        .initializer
        .iter()
        .map(|t| {
            let mut vi = g.input[0].clone();
            vi.name = t.name.clone();
            if let Some(Value::TensorType(tt)) = vi.r#type.as_mut().and_then(|ty| ty.value.as_mut())
            {
                let shape = tt.shape.as_mut().unwrap();
                shape.dim = t
                    .dims
                    .iter()
                    .map(|&d| Dimension {
                        denotation: None,
                        value: Some(DimValue(d)),
                    })
                    .collect();
            }
            vi
        })
        .collect();
    g.input.extend(extra);
    let cut = onnx::cut_conv_base(&m.encode_to_vec()).unwrap();
    let g = decode(&cut.bytes).graph.unwrap();
    let inputs: Vec<_> = g.input.iter().map(|i| i.name.clone().unwrap()).collect();
    assert_eq!(inputs, vec!["input".to_string()]);
    assert_eq!(g.initializer.len(), 14);

    // IR 3 requires initializers to stay listed as inputs: only the used ones remain.
    m.ir_version = Some(3);
    let cut = onnx::cut_conv_base(&m.encode_to_vec()).unwrap();
    let g = decode(&cut.bytes).graph.unwrap();
    assert_eq!(g.input.len(), 1 + 14);
    assert!(g
        .input
        .iter()
        .all(|i| !i.name.as_deref().unwrap().starts_with("predictions")));
    let x = random_input(&[1, 3, 32, 32], 12);
    assert_eq!(
        run(&cut.bytes, "input", &[1, 3, 32, 32], &x)["block3_pool"].0,
        vec![1, 8, 4, 4]
    );
}

#[test]
fn nhwc_model_gives_the_same_features_as_nchw() {
    let base = VggSpec {
        blocks: small_blocks(),
        classifier: Some(vec![10]),
        seed: 11,
        ..VggSpec::default()
    };
    let nchw = vgg_like(&base);
    let nhwc = vgg_like(&VggSpec {
        nhwc: true,
        ..base.clone()
    });
    let cut_c = onnx::cut_conv_base(&nchw).unwrap();
    let cut_h = onnx::cut_conv_base(&nhwc).unwrap();
    assert_eq!(cut_c.input_layout, Layout::Nchw);
    assert_eq!(cut_h.input_layout, Layout::Nhwc);
    assert_eq!(cut_h.input_channels, 3);
    assert_eq!(cut_h.output, "block3_pool");
    assert_eq!(cut_h.output_channels, Some(8));
    assert!(!ops(&decode(&cut_h.bytes))
        .iter()
        .any(|o| o == "Flatten" || o == "Gemm"));

    let shape = [2, 3, 40, 56];
    let x = random_input(&shape, 3);
    let xh = to_nhwc(&shape, &x);
    let a = run(&cut_c.bytes, &cut_c.input, &shape, &x);
    let b = run(&cut_h.bytes, &cut_h.input, &[2, 40, 56, 3], &xh);
    assert_eq!(a[&cut_c.output].0, vec![2, 8, 5, 7]);
    assert_eq!(b[&cut_h.output].0, vec![2, 8, 5, 7]);
    assert_close(
        &b[&cut_h.output].1,
        &a[&cut_c.output].1,
        "NHWC vs NCHW features",
    );

    // Cutting at an NHWC tensor appends a Transpose so callers still get [N, C, h, w].
    let at = onnx::cut_at(&nhwc, "block3_pool_nhwc").unwrap();
    assert_ne!(at.output, "block3_pool_nhwc");
    assert_eq!(
        ops(&decode(&at.bytes)).last().map(String::as_str),
        Some("Transpose")
    );
    let c = run(&at.bytes, &at.input, &[2, 40, 56, 3], &xh);
    assert_eq!(c[&at.output].0, vec![2, 8, 5, 7]);
    assert_close(
        &c[&at.output].1,
        &a[&cut_c.output].1,
        "NHWC tensor transposed back",
    );
}

#[test]
fn already_cut_base_is_unchanged_and_cut_at_matches_intermediate() {
    let spec = VggSpec {
        seed: 5,
        ..VggSpec::default()
    };
    let base = vgg_like(&spec);
    let cut = onnx::cut_conv_base(&base).unwrap();
    assert_eq!(cut.output, "block5_pool");
    assert_eq!(cut.output_channels, Some(16));
    assert_eq!(ops(&decode(&cut.bytes)), ops(&decode(&base)));

    let shape = [1, 3, 64, 80];
    let x = random_input(&shape, 4);
    let orig = run(
        &expose_outputs(&base, &["block2_pool"]).unwrap(),
        "input",
        &shape,
        &x,
    );
    let got = run(&cut.bytes, &cut.input, &shape, &x);
    assert_eq!(got[&cut.output].0, vec![1, 16, 2, 2]);
    assert_eq!(
        got[&cut.output].1, orig["block5_pool"].1,
        "bit-identical features"
    );

    let at = onnx::cut_at(&base, "block2_pool").unwrap();
    assert_eq!(at.output, "block2_pool");
    assert_eq!(at.output_channels, Some(8));
    let m = decode(&at.bytes);
    assert_eq!(
        ops(&m).iter().filter(|o| *o == "Conv").count(),
        4,
        "blocks 1-2 only"
    );
    assert_eq!(m.graph.as_ref().unwrap().initializer.len(), 8);
    let got = run(&at.bytes, &at.input, &shape, &x);
    assert_eq!(got[&at.output].0, vec![1, 8, 16, 20]);
    assert_close(
        &got[&at.output].1,
        &orig["block2_pool"].1,
        "cut_at block2_pool",
    );

    // Cutting at a Relu output gives the conv's channels too.
    let at = onnx::cut_at(&base, "block3_conv2").unwrap();
    assert_eq!(at.output_channels, Some(8));
}

#[test]
fn initializers_read_back_in_every_storage() {
    let spec = VggSpec {
        blocks: vec![(1, 4)],
        seed: 9,
        ..VggSpec::default()
    };
    let mut m = vgg_like_proto(&spec);
    let (dims, vals) = onnx::initializer_f32(&vgg_like(&spec), "block1_conv1_W").unwrap();
    assert_eq!(dims, vec![4, 3, 3, 3]);
    assert_eq!(vals.len(), 108);
    let bound = (6.0f32 / 27.0).sqrt();
    assert!(vals.iter().all(|v| v.abs() <= bound) && vals.iter().any(|v| *v != 0.0));

    let g = m.graph.as_mut().unwrap();
    let t = |name: &str, ty: DataType| TensorProto {
        name: Some(name.into()),
        dims: vec![2, 2],
        data_type: Some(ty as i32),
        ..Default::default()
    };
    let want = [1.5f32, -2.0, 0.25, 3.0];
    g.initializer.push(TensorProto {
        float_data: want.to_vec(),
        ..t("f32_typed", DataType::Float)
    });
    g.initializer.push(TensorProto {
        raw_data: Some(
            want.iter()
                .flat_map(|v| (*v as f64).to_le_bytes())
                .collect(),
        ),
        ..t("f64_raw", DataType::Double)
    });
    g.initializer.push(TensorProto {
        raw_data: Some(
            want.iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        ..t("f16_raw", DataType::Float16)
    });
    g.initializer.push(TensorProto {
        int32_data: want
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_bits() as i32)
            .collect(),
        ..t("bf16_typed", DataType::Bfloat16)
    });
    g.initializer.push(TensorProto {
        int64_data: vec![1, 2, 3, 4],
        ..t("i64", DataType::Int64)
    });
    g.initializer.push(TensorProto {
        float_data: vec![1.0; 3],
        ..t("short", DataType::Float)
    });
    let bytes = m.encode_to_vec();
    let names = ["f32_typed", "f64_raw", "f16_raw", "bf16_typed"];
    for (name, (dims, vals)) in names
        .iter()
        .zip(onnx::initializers_f32(&bytes, &names).unwrap())
    {
        assert_eq!(dims, vec![2, 2], "{name}");
        assert_eq!(vals, want.to_vec(), "{name}");
    }
    let err = onnx::initializer_f32(&bytes, "i64")
        .unwrap_err()
        .to_string();
    assert!(err.contains("int64"), "{err}");
    let err = onnx::initializer_f32(&bytes, "short")
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds 3 values"), "{err}");
    let err = onnx::initializer_f32(&bytes, "block1_conv1_w")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not found") && err.contains("block1_conv1_W"),
        "{err}"
    );
}

#[test]
fn errors_are_clear() {
    for garbage in [
        &b""[..],
        b"this is not an ONNX model at all",
        &[0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46],
    ] {
        let err = onnx::cut_conv_base(garbage).unwrap_err().to_string();
        assert!(err.contains("ONNX"), "{err}");
        assert!(onnx::describe(garbage).is_err());
    }

    // No MaxPool: swap the pools for average pools.
    let mut m = vgg_like_proto(&VggSpec {
        blocks: small_blocks(),
        classifier: Some(vec![10]),
        ..VggSpec::default()
    });
    for n in &mut m.graph.as_mut().unwrap().node {
        if n.op_type.as_deref() == Some("MaxPool") {
            n.op_type = Some("AveragePool".into());
        }
    }
    let err = onnx::cut_conv_base(&m.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no MaxPool"), "{err}");
    assert!(
        err.contains("Conv×7") && err.contains("AveragePool×3") && err.contains("Gemm×1"),
        "{err}"
    );

    // No pool before the Flatten: the message names where the classifier starts.
    let mut m = vgg_like_proto(&VggSpec {
        blocks: vec![(1, 4)],
        classifier: Some(vec![10]),
        ..VggSpec::default()
    });
    let g = m.graph.as_mut().unwrap();
    g.node.retain(|n| n.op_type.as_deref() != Some("MaxPool"));
    g.node[2].input[0] = "block1_conv1".into();
    let err = onnx::cut_conv_base(&m.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no MaxPool") && err.contains("Flatten 'flatten'"),
        "{err}"
    );

    let base = vgg_like(&VggSpec::default());
    let err = onnx::cut_at(&base, "block4_pol").unwrap_err().to_string();
    assert!(
        err.contains("'block4_pol'") && err.contains("block4_pool"),
        "{err}"
    );
    let err = onnx::cut_at(&base, "block4").unwrap_err().to_string();
    assert!(err.contains("closest names: block4_pool"), "{err}");
    let err = onnx::cut_at(&base, "block1_conv1_W")
        .unwrap_err()
        .to_string();
    assert!(err.contains("initializer"), "{err}");

    // No image-like input.
    let mut m = vgg_like_proto(&VggSpec::default());
    let input = &mut m.graph.as_mut().unwrap().input[0];
    if let Some(Value::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.shape.as_mut().unwrap().dim.truncate(2);
    }
    let err = onnx::cut_conv_base(&m.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no graph input looks like an image") && err.contains("input [N,3]"),
        "{err}"
    );
}

/// The shared real model, or `None` (skip) when absent outside CI.
fn real_model() -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/models/vgg16_keras_notop.onnx");
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!(
                "{} is required in CI ({e}); provide /work/shared/models",
                path.display()
            )
        }
        Err(e) => {
            eprintln!("skipping: {} not readable ({e})", path.display());
            None
        }
    }
}

#[test]
fn real_keras_vgg16_conv_base() {
    let Some(model) = real_model() else { return };
    let base = onnx::cut_conv_base(&model).unwrap();
    assert_eq!(base.input, "input");
    assert_eq!(base.output, "block5_pool");
    assert_eq!(base.output_channels, Some(512));
    assert_eq!(base.input_layout, Layout::Nchw);

    let at = onnx::cut_at(&model, "block4_pool").unwrap();
    assert_eq!(at.output_channels, Some(512));
    assert_eq!(
        ops(&decode(&at.bytes))
            .iter()
            .filter(|o| *o == "Conv")
            .count(),
        10
    );
    let x: Vec<f32> = random_input(&[1, 3, 150, 150], 8)
        .iter()
        .map(|v| v * 120.0)
        .collect();
    let got = run(&at.bytes, &at.input, &[1, 3, 150, 150], &x);
    let (shape, vals) = &got[&at.output];
    assert_eq!(shape, &vec![1, 512, 9, 9]);
    assert!(vals.iter().any(|v| *v > 0.0));

    let (dims, w) = onnx::initializer_f32(&model, "block5_conv1_W").unwrap();
    assert_eq!(dims, vec![512, 512, 3, 3]);
    assert_eq!(w.len(), 512 * 512 * 9);
    let text = onnx::describe(&model).unwrap();
    assert!(
        text.contains("Conv×13") && text.contains("MaxPool×5"),
        "{text}"
    );
}
