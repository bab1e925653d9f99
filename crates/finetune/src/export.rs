//! `model.onnx`: one ONNX graph that maps a preprocessed image batch to class probabilities. It is
//! the original model cut at the head's input tensor, with the trainable block's initializers
//! replaced by the fine-tuned weights and Flatten → Gemm → Relu → Gemm → Sigmoid (as `[1-p, p]`)
//! or Softmax appended with the head's weights. Output: `probabilities` `[N, classes]`.

use features::onnx::build::{f32_tensor, int_attr, node};
use features::onnx::proto::{
    tensor_shape_proto::dimension, tensor_shape_proto::Dimension, type_proto,
    StringStringEntryProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;

use crate::error::{Error, Result};
use crate::graph::decode;
use crate::net::Net;

/// Name of the exported model's output.
pub const OUTPUT: &str = "probabilities";
const FLOAT: i32 = 1;

/// Facts written into the model's metadata.
#[derive(Clone, Debug)]
pub struct ExportInfo {
    pub classes: Vec<String>,
    pub preprocess: String,
    pub image_size: u32,
}

fn output_value(name: &str, classes: usize) -> ValueInfoProto {
    let dim = |v: dimension::Value| Dimension {
        denotation: None,
        value: Some(v),
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: Some(TensorShapeProto {
                    dim: vec![
                        dim(dimension::Value::DimParam("N".into())),
                        dim(dimension::Value::DimValue(classes as i64)),
                    ],
                }),
            })),
        }),
        ..Default::default()
    }
}

/// Builds the fine-tuned model from the original model bytes and the trained network.
pub fn export_onnx(original: &[u8], net: &Net, info: &ExportInfo) -> Result<Vec<u8>> {
    let cut = features::onnx::cut_at(original, &net.block.output_tensor)?;
    let mut m = decode(&cut.bytes)?;
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| Error::Block("the model has no graph".into()))?;
    for c in net.block.convs() {
        let w = c.onnx_weight();
        for (name, dims, values) in [
            (&c.weight_name, vec![c.cout, c.cin, 3, 3], &w[..]),
            (&c.bias_name, vec![c.cout], &c.bias[..]),
        ] {
            let t = g
                .initializer
                .iter_mut()
                .find(|t| t.name.as_ref() == Some(name))
                .ok_or_else(|| {
                    Error::Block(format!(
                        "initializer '{name}' of {} is not in the model",
                        c.node
                    ))
                })?;
            *t = f32_tensor(name, &dims, values);
        }
    }
    let h = &net.head;
    let (d, hidden, k) = (h.input_dim(), h.hidden, h.outputs());
    let names = |s: &str| format!("finetune_{s}");
    g.initializer.extend([
        f32_tensor(&names("dense_1_W"), &[d, hidden], &h.w1_chw()),
        f32_tensor(&names("dense_1_B"), &[hidden], &h.b1),
        f32_tensor(&names("dense_2_W"), &[hidden, k], &h.w2),
        f32_tensor(&names("dense_2_B"), &[k], &h.b2),
    ]);
    let (flat, d1, r1, logits) = (
        names("flatten"),
        names("dense_1"),
        names("dense_1_relu"),
        names("logits"),
    );
    g.node.push(node(
        "Flatten",
        &flat,
        &[&cut.output],
        &flat,
        vec![int_attr("axis", 1)],
    ));
    g.node.push(node(
        "Gemm",
        &d1,
        &[&flat, &names("dense_1_W"), &names("dense_1_B")],
        &d1,
        vec![],
    ));
    g.node.push(node("Relu", &r1, &[&d1], &r1, vec![]));
    g.node.push(node(
        "Gemm",
        &logits,
        &[&r1, &names("dense_2_W"), &names("dense_2_B")],
        &logits,
        vec![],
    ));
    if k == 1 {
        let (p, q, one) = (names("p"), names("q"), names("one"));
        g.initializer.push(f32_tensor(&one, &[1], &[1.0]));
        g.node.push(node("Sigmoid", &p, &[&logits], &p, vec![]));
        g.node.push(node("Sub", &q, &[&one, &p], &q, vec![]));
        g.node.push(node(
            "Concat",
            &names("probabilities"),
            &[&q, &p],
            OUTPUT,
            vec![int_attr("axis", 1)],
        ));
    } else {
        g.node.push(node(
            "Softmax",
            &names("softmax"),
            &[&logits],
            OUTPUT,
            vec![int_attr("axis", 1)],
        ));
    }
    g.output = vec![output_value(OUTPUT, h.num_classes)];
    let classes =
        serde_json::to_string(&info.classes).map_err(|e| Error::Invalid(e.to_string()))?;
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    m.metadata_props.retain(|e| {
        !matches!(
            e.key.as_deref(),
            Some("classes" | "preprocess" | "image_size")
        )
    });
    m.metadata_props.extend([
        entry("classes", classes),
        entry("preprocess", info.preprocess.clone()),
        entry("image_size", info.image_size.to_string()),
        entry(
            "fine_tuned",
            format!("{} → {}", net.block.input_tensor, net.block.output_tensor),
        ),
    ]);
    m.producer_name = Some("bottleneck finetune".into());
    Ok(m.encode_to_vec())
}
