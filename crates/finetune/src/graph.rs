//! Reading the trainable block out of an ONNX model: the chain of nodes from the split tensor
//! (e.g. `block4_pool`) to the head's input tensor (e.g. `block5_pool`), which must be 3×3
//! stride-1 "same" convolutions (each optionally followed by ReLU) and 2×2 stride-2 max pools;
//! their weights come from the model's initializers. Any other top (depthwise and 1×1
//! convolutions, Clip, residual Add, pooling) becomes one [`GraphLayer`] that `accel::nodes`
//! rebuilds from the same nodes and initializers.

use std::collections::HashMap;

use features::onnx::node::{int, ints, is_plain_2x2_pool, label, op, string};
use features::onnx::proto::{GraphProto, ModelProto, NodeProto};
use prost::Message;

use crate::block::{Block, ConvLayer, GraphLayer, Layer};
use crate::error::{Error, Result};

/// Decodes a serialized ONNX model.
pub fn decode(model: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(model).map_err(|e| {
        Error::Block(format!(
            "not a valid ONNX model ({e}); re-export the .onnx file"
        ))
    })
}

fn graph(m: &ModelProto) -> Result<&GraphProto> {
    m.graph
        .as_ref()
        .ok_or_else(|| Error::Block("the model has no graph".into()))
}

/// Checks a Conv node is 3×3, stride 1, padding 1, dilation 1, one group.
fn check_conv(n: &NodeProto) -> Result<()> {
    let bad = |what: String| {
        Err(Error::Block(format!(
            "Conv '{}' has {what}; only 3×3 stride-1 convolutions with padding 1 can be fine-tuned",
            label(n)
        )))
    };
    if let Some(k) = ints(n, "kernel_shape") {
        if k != [3, 3] {
            return bad(format!("kernel {k:?}"));
        }
    }
    if let Some(s) = ints(n, "strides") {
        if s.iter().any(|&v| v != 1) {
            return bad(format!("strides {s:?}"));
        }
    }
    if let Some(d) = ints(n, "dilations") {
        if d.iter().any(|&v| v != 1) {
            return bad(format!("dilations {d:?}"));
        }
    }
    if int(n, "group").unwrap_or(1) != 1 {
        return bad("groups".into());
    }
    let auto = string(n, "auto_pad").unwrap_or_default();
    match auto.as_str() {
        "" | "NOTSET" => {
            let pads = ints(n, "pads").unwrap_or_default();
            if pads != [1, 1, 1, 1] {
                return bad(format!("pads {pads:?}"));
            }
        }
        "SAME_UPPER" | "SAME_LOWER" => {}
        other => return bad(format!("auto_pad {other}")),
    }
    Ok(())
}

/// Checks a MaxPool node is 2×2, stride 2, without padding.
fn check_pool(n: &NodeProto) -> Result<()> {
    if is_plain_2x2_pool(n) {
        Ok(())
    } else {
        Err(Error::Block(format!(
            "MaxPool '{}' is not a plain 2×2 stride-2 pool without padding",
            label(n)
        )))
    }
}

/// The trainable block between `from` and `to` with the model's weights: a VGG-style chain
/// ([`chain_from_onnx`], trained on the CPU kernels) when it is one, else the nodes rebuilt by
/// `accel::nodes` (on the CPU until [`Block::set_device`]).
pub fn block_from_onnx(model: &[u8], from: &str, to: &str) -> Result<Block> {
    let nothing = || {
        Error::Block(format!("'{from}' is '{to}' itself or holds no weights below it: nothing to train (split lower)"))
    };
    if from == to {
        return Err(nothing());
    }
    match chain_from_onnx(model, from, to) {
        Ok(block) => Ok(block),
        Err(_) => {
            let net = accel::nodes::NodeNet::from_onnx(model, from, to)
                .map_err(|e| Error::Block(format!("the block from '{from}' to '{to}': {e}")))?;
            if net.parameter_count() == 0 {
                return Err(nothing());
            }
            Ok(Block {
                input_tensor: from.to_string(),
                output_tensor: to.to_string(),
                layers: vec![Layer::Graph(GraphLayer {
                    net,
                    device: accel::Device::Cpu,
                })],
                precision: train::kernels::TrainPrecision::Fp32,
            })
        }
    }
}

/// The chain of nodes between `from` and `to` as a [`Block`] with the model's weights.
pub fn chain_from_onnx(model: &[u8], from: &str, to: &str) -> Result<Block> {
    let m = decode(model)?;
    let g = graph(&m)?;
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for t in n.input.iter().filter(|t| !t.is_empty()) {
            consumers.entry(t.as_str()).or_default().push(i);
        }
    }
    let produced = |t: &str| g.node.iter().any(|n| n.output.iter().any(|o| o == t));
    if !produced(to) {
        return Err(Error::Block(format!(
            "tensor '{to}' (the head's input) is not produced by any node of the model"
        )));
    }
    let only_consumer = |t: &str| -> Result<&NodeProto> {
        match consumers.get(t).map(Vec::as_slice) {
            Some([i]) => Ok(&g.node[*i]),
            Some(many) => Err(Error::Block(format!(
                "tensor '{t}' feeds {} nodes ({}); the block must be a single chain from the split tensor to '{to}'",
                many.len(),
                many.iter().map(|&i| label(&g.node[i])).collect::<Vec<_>>().join(", ")
            ))),
            None => Err(Error::Block(format!(
                "tensor '{t}' is not read by any node, so '{to}' cannot be reached from the split tensor '{from}': \
                 pick a --split-at tensor below '{to}'"
            ))),
        }
    };
    let mut layers = Vec::new();
    let mut convs: Vec<(usize, String, String, bool)> = Vec::new();
    let mut cur = from.to_string();
    for _ in 0..=g.node.len() {
        if cur == to {
            break;
        }
        let n = only_consumer(&cur)?;
        let out = n.output.first().cloned().unwrap_or_default();
        match op(n) {
            "Conv" => {
                check_conv(n)?;
                if n.input.first() != Some(&cur) || n.input.len() < 3 || n.input[2].is_empty() {
                    return Err(Error::Block(format!(
                        "Conv '{}' must read '{cur}' as its data input and have a bias",
                        label(n)
                    )));
                }
                let mut relu = false;
                let mut next = out.clone();
                if out != to {
                    let c = only_consumer(&out)?;
                    if op(c) == "Relu" {
                        relu = true;
                        next = c.output.first().cloned().unwrap_or_default();
                    }
                }
                convs.push((layers.len(), n.input[1].clone(), n.input[2].clone(), relu));
                layers.push(Layer::MaxPool { node: label(n) }); // placeholder, filled below
                cur = next;
            }
            "MaxPool" => {
                check_pool(n)?;
                layers.push(Layer::MaxPool { node: label(n) });
                cur = out;
            }
            other => {
                return Err(Error::Block(format!(
                    "node '{}' ({other}) between '{from}' and '{to}' is not supported; the trainable block may \
                     only hold 3×3 Conv (+ Relu) and 2×2 MaxPool nodes",
                    label(n)
                )))
            }
        }
    }
    if cur != to {
        return Err(Error::Block(format!(
            "could not follow the graph from '{from}' to '{to}'"
        )));
    }
    if convs.is_empty() {
        return Err(Error::Block(format!(
            "there is no Conv between '{from}' and '{to}': nothing to train"
        )));
    }
    let names: Vec<&str> = convs
        .iter()
        .flat_map(|(_, w, b, _)| [w.as_str(), b.as_str()])
        .collect();
    let values = features::onnx::initializers_f32(model, &names)?;
    for ((at, wn, bn, relu), pair) in convs.iter().zip(values.chunks_exact(2)) {
        let (wd, w) = &pair[0];
        let (bd, b) = &pair[1];
        if wd.len() != 4 || wd[2..] != [3, 3] || bd.len() != 1 || bd[0] != wd[0] {
            return Err(Error::Block(format!(
                "weights '{wn}' {wd:?} and '{bn}' {bd:?} are not a 3×3 conv weight and its bias"
            )));
        }
        let node = match &layers[*at] {
            Layer::MaxPool { node } => node.clone(),
            Layer::Conv(c) => c.node.clone(),
            Layer::Graph(_) => String::new(),
        };
        layers[*at] = Layer::Conv(ConvLayer::from_onnx(
            [&node, wn, bn],
            w,
            b.clone(),
            (wd[0], wd[1]),
            *relu,
        )?);
    }
    Ok(Block {
        input_tensor: from.to_string(),
        output_tensor: to.to_string(),
        layers,
        precision: train::kernels::TrainPrecision::Fp32,
    })
}
