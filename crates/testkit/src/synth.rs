//! Tiny VGG-shaped ONNX models with seeded He-initialised weights and Keras-style names, for tests
//! across the workspace (no real weights needed).
//!
//! Names follow the real Keras VGG16 export: Conv node `blockK_convJ` → `blockK_convJ_conv`, Relu node
//! `blockK_convJ_relu` → `blockK_convJ`, MaxPool node and output `blockK_pool`, initializers
//! `blockK_convJ_W` `[out, in, 3, 3]` and `blockK_convJ_B` `[out]`. The optional classifier is
//! `flatten` → `fc1`, `fc2`, … (Gemm + Relu + Dropout) → `predictions` (Gemm + Softmax).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use features::onnx::build::{
    decode, encode, f32_tensor, int_attr, node, tensor_value, DimSpec, FLOAT,
};
use features::onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, OperatorSetIdProto,
    TensorProto, ValueInfoProto,
};
use features::{Error, Result};

/// Shape of a synthetic VGG-like model.
#[derive(Debug, Clone, PartialEq)]
pub struct VggSpec {
    /// `(convs, channels)` per block; block K (1-based) ends with MaxPool `blockK_pool`.
    pub blocks: Vec<(usize, usize)>,
    /// Classifier sizes: every size but the last is Gemm + Relu + Dropout (`fc1`, `fc2`, …), the last is
    /// Gemm + Softmax (`predictions`). The flatten size is computed for `fixed_size` (32 when unset).
    pub classifier: Option<Vec<usize>>,
    /// Input `[N, H, W, 3]` followed by `Transpose(perm=[0,3,1,2])` like tf2onnx exports; the conv-base
    /// output is transposed back to NHWC as `<last pool>_nhwc` (the graph output when there is no classifier).
    pub nhwc: bool,
    /// Pin the input to `[1, 3, s, s]` (or `[1, s, s, 3]`) and declare fixed-size value_info, like the ONNX zoo model.
    pub fixed_size: Option<usize>,
    /// Seed of the weights.
    pub seed: u64,
    /// Name of the image input.
    pub input_name: String,
    /// Channels of the image input (3: RGB).
    pub channels: usize,
}

impl Default for VggSpec {
    /// VGG16's 5 blocks (2, 2, 3, 3, 3 convs) with few channels, no classifier, NCHW input `input`.
    fn default() -> Self {
        VggSpec {
            blocks: vec![(2, 4), (2, 8), (3, 8), (3, 16), (3, 16)],
            classifier: None,
            nhwc: false,
            fixed_size: None,
            seed: 0,
            input_name: "input".into(),
            channels: 3,
        }
    }
}

pub(crate) fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// He-uniform weights (variance 2 / fan_in) and small positive biases, so ReLU activations stay O(1).
pub(crate) fn he_layer(
    rng: &mut ChaCha8Rng,
    name: &str,
    dims: &[usize],
    fan_in: usize,
) -> [TensorProto; 2] {
    let bound = (6.0 / fan_in.max(1) as f32).sqrt();
    let w: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    let b: Vec<f32> = (0..dims[0]).map(|_| rng.random_range(0.0..0.1)).collect();
    [
        f32_tensor(&format!("{name}_W"), dims, &w),
        f32_tensor(&format!("{name}_B"), &dims[..1], &b),
    ]
}

/// Builds the model described by `spec` (opset 13, IR 8) and serializes it.
pub fn vgg_like(spec: &VggSpec) -> Vec<u8> {
    encode(&vgg_like_proto(spec))
}

/// Like [`vgg_like`] but returns the proto for further editing.
///
/// (Long on purpose: a test-only builder that writes the graph top to bottom in graph order —
/// input, blocks, classifier — so that a reader checks it against a VGG16 export line by line.)
pub fn vgg_like_proto(spec: &VggSpec) -> ModelProto {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut g = GraphProto {
        name: Some("vgg_like".into()),
        ..Default::default()
    };
    let fixed = spec.fixed_size.map(|s| s as i64);
    let side = |p: &'static str| fixed.map_or(DimSpec::Param(p), DimSpec::Value);
    let input_dims = if spec.nhwc {
        [
            batch_dim(fixed),
            side("H"),
            side("W"),
            DimSpec::Value(spec.channels as i64),
        ]
    } else {
        [
            batch_dim(fixed),
            DimSpec::Value(spec.channels as i64),
            side("H"),
            side("W"),
        ]
    };
    g.input
        .push(tensor_value(&spec.input_name, FLOAT, Some(&input_dims)));

    let mut x = spec.input_name.clone();
    if spec.nhwc {
        let out = format!("{}_nchw", spec.input_name);
        g.node.push(node(
            "Transpose",
            &format!("{}_to_nchw", spec.input_name),
            &[&x],
            &out,
            vec![ints_attr("perm", &[0, 3, 1, 2])],
        ));
        x = out;
    }
    let mut cin = spec.channels;
    let mut size = spec.fixed_size.unwrap_or(32);
    for (k, &(convs, cout)) in spec.blocks.iter().enumerate() {
        let k = k + 1;
        for j in 1..=convs {
            let name = format!("block{k}_conv{j}");
            g.initializer
                .extend(he_layer(&mut rng, &name, &[cout, cin, 3, 3], cin * 9));
            let attrs = vec![
                ints_attr("dilations", &[1, 1]),
                int_attr("group", 1),
                ints_attr("kernel_shape", &[3, 3]),
                ints_attr("pads", &[1, 1, 1, 1]),
                ints_attr("strides", &[1, 1]),
            ];
            let conv_out = format!("{name}_conv");
            let (w, b) = (format!("{name}_W"), format!("{name}_B"));
            g.node
                .push(node("Conv", &name, &[&x, &w, &b], &conv_out, attrs));
            g.node.push(node(
                "Relu",
                &format!("{name}_relu"),
                &[&conv_out],
                &name,
                vec![],
            ));
            x = name;
            cin = cout;
        }
        let pool = format!("block{k}_pool");
        let attrs = vec![
            ints_attr("kernel_shape", &[2, 2]),
            ints_attr("strides", &[2, 2]),
        ];
        g.node.push(node("MaxPool", &pool, &[&x], &pool, attrs));
        size /= 2;
        if fixed.is_some() {
            let s = size as i64;
            let d = [
                DimSpec::Value(1),
                DimSpec::Value(cin as i64),
                DimSpec::Value(s),
                DimSpec::Value(s),
            ];
            g.value_info.push(tensor_value(&pool, FLOAT, Some(&d)));
        }
        x = pool;
    }
    let c = cin as i64;
    let spatial = |p: &'static str| {
        if fixed.is_some() {
            DimSpec::Value(size as i64)
        } else {
            DimSpec::Param(p)
        }
    };
    let mut out_dims = vec![
        batch_dim(fixed),
        DimSpec::Value(c),
        spatial("h"),
        spatial("w"),
    ];
    if spec.nhwc {
        let out = format!("{x}_nhwc");
        g.node.push(node(
            "Transpose",
            &format!("{x}_to_nhwc"),
            &[&x],
            &out,
            vec![ints_attr("perm", &[0, 2, 3, 1])],
        ));
        x = out;
        out_dims = vec![
            batch_dim(fixed),
            spatial("h"),
            spatial("w"),
            DimSpec::Value(c),
        ];
    }
    let output: ValueInfoProto = match &spec.classifier {
        None => tensor_value(&x, FLOAT, Some(&out_dims)),
        Some(sizes) => {
            g.node.push(node(
                "Flatten",
                "flatten",
                &[&x],
                "flatten",
                vec![int_attr("axis", 1)],
            ));
            x = "flatten".into();
            let mut fin = cin * size * size;
            for (i, &fout) in sizes.iter().enumerate() {
                let last = i + 1 == sizes.len();
                let name = if last {
                    "predictions".to_string()
                } else {
                    format!("fc{}", i + 1)
                };
                g.initializer
                    .extend(he_layer(&mut rng, &name, &[fout, fin], fin));
                let gemm_out = format!("{name}_gemm");
                let (w, b) = (format!("{name}_W"), format!("{name}_B"));
                g.node.push(node(
                    "Gemm",
                    &name,
                    &[&x, &w, &b],
                    &gemm_out,
                    vec![int_attr("transB", 1)],
                ));
                if last {
                    g.node.push(node(
                        "Softmax",
                        "predictions_softmax",
                        &[&gemm_out],
                        &name,
                        vec![int_attr("axis", 1)],
                    ));
                    x = name;
                } else {
                    g.node.push(node(
                        "Relu",
                        &format!("{name}_relu"),
                        &[&gemm_out],
                        &name,
                        vec![],
                    ));
                    let drop = format!("{name}_dropout");
                    g.node.push(node("Dropout", &drop, &[&name], &drop, vec![]));
                    x = drop;
                }
                fin = fout;
            }
            tensor_value(
                &x,
                FLOAT,
                Some(&[batch_dim(fixed), DimSpec::Value(fin as i64)]),
            )
        }
    };
    g.output.push(output);
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        producer_name: Some("bottleneck-synth".into()),
        graph: Some(g),
        ..Default::default()
    }
}

fn batch_dim(fixed: Option<i64>) -> DimSpec<'static> {
    if fixed.is_some() {
        DimSpec::Value(1)
    } else {
        DimSpec::Param("N")
    }
}

/// Adds `names` as extra float outputs (shape left to the runtime), e.g. to compare an intermediate
/// tensor of the original model with a cut model's output.
pub fn expose_outputs(model: &[u8], names: &[&str]) -> Result<Vec<u8>> {
    let mut m = decode(model)?;
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    for n in names {
        if !g.node.iter().any(|node| node.output.iter().any(|o| o == n)) {
            return Err(Error::Graph(format!("no node produces '{n}'")));
        }
        if !g.output.iter().any(|o| o.name.as_deref() == Some(n)) {
            g.output.push(tensor_value(n, FLOAT, None));
        }
    }
    Ok(encode(&m))
}

/// CRC-32 (the PNG chunk checksum).
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A decode bomb: a PNG of a few dozen bytes whose valid header says `w`×`h` RGB8, followed by
/// an empty image-data chunk.
pub fn claimed_png(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}
