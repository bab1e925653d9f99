//! A tiny MobileNet-shaped ONNX classifier with seeded weights, for tests of backbones that are data
//! (a manifest), not code: a stride-2 stem convolution with `Clip(0, 6)` (ReLU6), a depthwise 3×3
//! convolution (`group` = channels) with `auto_pad = SAME_UPPER`, a residual `Add`, a 1×1
//! convolution, `GlobalAveragePool` → `Flatten` named `pooled` `[N, C]`, and a `Gemm` to `logits`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use features::onnx::build::{
    encode, f32_tensor, int_attr, node, string_attr, tensor_value, DimSpec, FLOAT,
};
use features::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto};

use crate::synth::{he_layer, ints_attr};

/// Channels of the stem and the depthwise block; the pooled vector has `2 × CHANNELS`.
pub const CHANNELS: usize = 8;

/// The serialized model (opset 17, IR 8): input `input` `[N, 3, H, W]`, `pooled` `[N, 16]` named
/// in `value_info`, output `logits` `[N, classes]`.
pub fn mobile_like(classes: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c = CHANNELS;
    let mut g = GraphProto {
        name: Some("mobile_like".into()),
        ..Default::default()
    };
    g.input.push(tensor_value(
        "input",
        FLOAT,
        Some(&[
            DimSpec::Param("N"),
            DimSpec::Value(3),
            DimSpec::Param("H"),
            DimSpec::Param("W"),
        ]),
    ));
    g.initializer
        .extend(he_layer(&mut rng, "stem", &[c, 3, 3, 3], 27));
    g.initializer
        .extend(he_layer(&mut rng, "dw", &[c, 1, 3, 3], 9));
    g.initializer
        .extend(he_layer(&mut rng, "pw", &[2 * c, c, 1, 1], c));
    g.initializer
        .extend(he_layer(&mut rng, "fc", &[classes, 2 * c], 2 * c));
    g.initializer.push(f32_tensor("clip_min", &[], &[0.0]));
    g.initializer.push(f32_tensor("clip_max", &[], &[6.0]));
    let conv = |name: &str, input: &str, k: i64, group: i64, strides: i64, same: bool| {
        let mut attrs = vec![
            int_attr("group", group),
            ints_attr("kernel_shape", &[k, k]),
            ints_attr("strides", &[strides, strides]),
        ];
        if same {
            attrs.push(string_attr("auto_pad", "SAME_UPPER"));
        } else {
            let p = k / 2;
            attrs.push(ints_attr("pads", &[p, p, p, p]));
        }
        let (w, b) = (format!("{name}_W"), format!("{name}_B"));
        node(
            "Conv",
            name,
            &[input, &w, &b],
            &format!("{name}_out"),
            attrs,
        )
    };
    g.node.push(conv("stem", "input", 3, 1, 2, false));
    g.node.push(node(
        "Clip",
        "stem_relu6",
        &["stem_out", "clip_min", "clip_max"],
        "stem_act",
        vec![],
    ));
    g.node.push(conv("dw", "stem_act", 3, c as i64, 1, true));
    g.node.push(node(
        "Clip",
        "dw_relu6",
        &["dw_out", "clip_min", "clip_max"],
        "dw_act",
        vec![],
    ));
    g.node.push(node(
        "Add",
        "residual",
        &["dw_act", "stem_act"],
        "res",
        vec![],
    ));
    g.node.push(conv("pw", "res", 1, 1, 1, false));
    g.node.push(node(
        "Clip",
        "pw_relu6",
        &["pw_out", "clip_min", "clip_max"],
        "features",
        vec![],
    ));
    g.node.push(node(
        "GlobalAveragePool",
        "gap",
        &["features"],
        "pooled_4d",
        vec![],
    ));
    g.node.push(node(
        "Flatten",
        "flatten",
        &["pooled_4d"],
        "pooled",
        vec![int_attr("axis", 1)],
    ));
    g.value_info.push(tensor_value(
        "pooled",
        FLOAT,
        Some(&[DimSpec::Param("N"), DimSpec::Value(2 * c as i64)]),
    ));
    g.node.push(node(
        "Gemm",
        "fc",
        &["pooled", "fc_W", "fc_B"],
        "logits",
        vec![int_attr("transB", 1)],
    ));
    g.output.push(tensor_value(
        "logits",
        FLOAT,
        Some(&[DimSpec::Param("N"), DimSpec::Value(classes as i64)]),
    ));
    encode(&ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        producer_name: Some("bottleneck-synth".into()),
        graph: Some(g),
        ..Default::default()
    })
}
