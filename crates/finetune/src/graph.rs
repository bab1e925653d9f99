//! Reading the trainable block out of an ONNX model: the chain of nodes from the split tensor
//! (e.g. `block4_pool`) to the head's input tensor (e.g. `block5_pool`), which must be 3×3
//! stride-1 "same" convolutions (each optionally followed by ReLU) and 2×2 stride-2 max pools
//! (read by `accel::graph::follow`, the one VGG-chain reader); their weights come from the model's
//! initializers. Any other top (depthwise and 1×1
//! convolutions, Clip, residual Add, pooling) becomes one [`GraphLayer`] that `accel::nodes`
//! rebuilds from the same nodes and initializers.

use accel::graph::Step;
use features::onnx::proto::{GraphProto, ModelProto};
use features::onnx::Layout;
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

/// The chain of nodes between `from` and `to` as a [`Block`] with the model's weights: the chain
/// `accel::graph::follow` reads (the one VGG-chain reader), of 3×3 Conv (+ Relu) and 2×2 MaxPool
/// layers only.
pub fn chain_from_onnx(model: &[u8], from: &str, to: &str) -> Result<Block> {
    let m = decode(model)?;
    let g = graph(&m)?;
    if !g.node.iter().any(|n| n.output.iter().any(|o| o == to)) {
        return Err(Error::Block(format!(
            "tensor '{to}' (the head's input) is not produced by any node of the model"
        )));
    }
    let steps = accel::graph::follow(g, from, to, Layout::Nchw)
        .map_err(|e| Error::Block(format!("the block from '{from}' to '{to}': {e}")))?;
    let mut weights = accel::graph::conv_weights(model, &steps)
        .map_err(|e| Error::Block(format!("the block from '{from}' to '{to}': {e}")))?
        .into_iter();
    let mut layers = Vec::with_capacity(steps.len());
    for s in steps {
        layers.push(match s {
            Step::Conv {
                node,
                weight,
                bias,
                relu,
            } => {
                let Some(cw) = weights.next() else {
                    return Err(Error::Block(format!("weights of '{node}' missing")));
                };
                Layer::Conv(ConvLayer::from_onnx(
                    [&node, &weight, &bias],
                    &cw.w,
                    cw.b,
                    (cw.out_channels, cw.in_channels),
                    relu,
                )?)
            }
            Step::MaxPool { node } => Layer::MaxPool { node },
            Step::Relu { node } => {
                return Err(Error::Block(format!(
                    "Relu '{node}' does not follow a Conv; the trainable block may only hold 3×3 Conv (+ Relu) \
                     and 2×2 MaxPool nodes"
                )))
            }
        });
    }
    Ok(Block {
        input_tensor: from.to_string(),
        output_tensor: to.to_string(),
        layers,
        precision: train::kernels::TrainPrecision::Fp32,
    })
}
