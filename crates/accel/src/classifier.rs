//! A run's exported classifier (the conv chain, then the dense head `head::onnx::append_head`
//! writes: Flatten → Gemm → Relu → Gemm → Softmax, or for two classes Sigmoid → `[1 − p, p]`) as
//! a Candle network, so `predict` and `evaluate` run on a GPU without ONNX Runtime's CUDA build.
//! The body is the conv chain [`Vgg`] when the graph is one, else the nodes [`crate::nodes`]
//! rebuilds (MobileNetV2, EfficientNet-Lite); this module reads the head back out of the graph and
//! computes it.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use features::onnx::node::{float, int, label, op};
use features::onnx::proto::{GraphProto, NodeProto};

use crate::error::{Error, Result};
use crate::ops;
use crate::vgg::{Cut, Vgg};

/// How the head turns logits into probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Softmax over the classes.
    Softmax,
    /// One logit: `[1 − σ(z), σ(z)]`.
    Sigmoid,
}

/// The dense head of an exported classifier on a device, weights as the graph holds them.
#[derive(Debug, Clone)]
pub struct DenseHead {
    /// The tensor the head reads (the conv chain's output, NCHW, flattened in CHW order).
    pub input: String,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    pub activation: Activation,
}

/// What produced each tensor of a graph (`features::onnx::producers`, as nodes).
struct Producers<'a> {
    nodes: &'a [NodeProto],
    index: HashMap<&'a str, usize>,
}

impl<'a> Producers<'a> {
    fn new(g: &'a GraphProto) -> Self {
        Producers {
            nodes: &g.node,
            index: features::onnx::producers(g),
        }
    }

    /// The node producing `tensor`, whatever its op.
    fn of(&self, tensor: &str) -> Option<&'a NodeProto> {
        self.index.get(tensor).map(|&i| &self.nodes[i])
    }

    /// The node producing `tensor` when its op is `want`.
    fn get(&self, tensor: &str, want: &str) -> Option<&'a NodeProto> {
        self.of(tensor).filter(|n| op(n) == want)
    }

    /// Like [`Producers::get`], an error naming the expected layer when it is something else.
    fn expect(&self, tensor: &str, want: &str) -> Result<&'a NodeProto> {
        self.get(tensor, want).ok_or_else(|| {
            let found = self
                .of(tensor)
                .map(|n| format!("{} ({})", label(n), op(n)))
                .unwrap_or_else(|| "no node".into());
            Error::Graph(format!(
                "'{tensor}' comes from {found}, expected a {want} of the dense head \
                 (Flatten → Gemm → Relu → Gemm → Softmax/Sigmoid)"
            ))
        })
    }
}

/// The input of `n` at `i`, or an error naming the node.
fn input(n: &NodeProto, i: usize) -> Result<&str> {
    n.input
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::Graph(format!("{} has no input {i}", label(n))))
}

/// A Gemm of the head: `Y = X·W + B` (no transposes, alpha = beta = 1); returns (W, B) names.
fn gemm(n: &NodeProto) -> Result<(String, String)> {
    let plain = int(n, "transA").unwrap_or(0) == 0
        && int(n, "transB").unwrap_or(0) == 0
        && float(n, "alpha").unwrap_or(1.0) == 1.0
        && float(n, "beta").unwrap_or(1.0) == 1.0;
    if !plain {
        return Err(Error::Graph(format!(
            "Gemm {} transposes or scales its operands; the head's Gemms are X·W + B",
            label(n)
        )));
    }
    Ok((input(n, 1)?.to_string(), input(n, 2)?.to_string()))
}

/// Follows the head back from `output`; `None` when `output` is not a dense head's output.
/// Returns the head's input tensor, the (W1, B1, W2, B2) initializer names and the activation.
fn trace(g: &GraphProto, output: &str) -> Result<Option<(String, [String; 4], Activation)>> {
    let p = Producers::new(g);
    let (logits, activation) = if let Some(s) = p.get(output, "Softmax") {
        if !matches!(int(s, "axis"), None | Some(1) | Some(-1)) {
            return Err(Error::Graph(format!(
                "{} is not over the class axis",
                label(s)
            )));
        }
        (input(s, 0)?, Activation::Softmax)
    } else if let Some(c) = p.get(output, "Concat") {
        // [1 − p, p] with p = Sigmoid(logits).
        let (q, pos) = (input(c, 0)?, input(c, 1)?);
        let sig = p.expect(pos, "Sigmoid")?;
        let sub = p.expect(q, "Sub")?;
        if c.input.len() != 2 || input(sub, 1)? != pos || int(c, "axis") != Some(1) {
            return Err(Error::Graph(format!(
                "{} is not the two-class output [1 − p, p]",
                label(c)
            )));
        }
        (input(sig, 0)?, Activation::Sigmoid)
    } else {
        return Ok(None);
    };
    let g2 = p.expect(logits, "Gemm")?;
    let relu = p.expect(input(g2, 0)?, "Relu")?;
    let g1 = p.expect(input(relu, 0)?, "Gemm")?;
    let flat = p.expect(input(g1, 0)?, "Flatten")?;
    if int(flat, "axis").unwrap_or(1) != 1 {
        return Err(Error::Graph(format!(
            "{} does not keep the batch axis",
            label(flat)
        )));
    }
    let ((w1, b1), (w2, b2)) = (gemm(g1)?, gemm(g2)?);
    Ok(Some((
        input(flat, 0)?.to_string(),
        [w1, b1, w2, b2],
        activation,
    )))
}

impl DenseHead {
    /// The dense head of `model` that computes `output`, on `device` (f32); `None` when `output`
    /// is not a dense head's output (e.g. a feature tensor).
    pub fn from_onnx(model: &[u8], output: &str, device: &Device) -> Result<Option<Self>> {
        let m = features::onnx::build::decode(model)?;
        let g = m
            .graph
            .as_ref()
            .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
        let Some((input, names, activation)) = trace(g, output)? else {
            return Ok(None);
        };
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut v = features::onnx::initializers_f32(model, &refs)?.into_iter();
        let mut next = || {
            v.next()
                .ok_or_else(|| Error::Graph("head weights missing".into()))
        };
        let ((d1, w1), (e1, b1), (d2, w2), (e2, b2)) = (next()?, next()?, next()?, next()?);
        let fits = d1.len() == 2
            && d2.len() == 2
            && e1 == [d1[1]]
            && d2[0] == d1[1]
            && e2 == [d2[1]]
            && (activation == Activation::Softmax || d2[1] == 1);
        if !fits {
            return Err(Error::Graph(format!(
                "the head's weights {names:?} have shapes {d1:?}, {e1:?}, {d2:?}, {e2:?}: not two \
                 stacked dense layers"
            )));
        }
        Ok(Some(DenseHead {
            input,
            w1: Tensor::from_vec(w1, (d1[0], d1[1]), device)?,
            b1: Tensor::from_vec(b1, d1[1], device)?,
            w2: Tensor::from_vec(w2, (d2[0], d2[1]), device)?,
            b2: Tensor::from_vec(b2, d2[1], device)?,
            activation,
        }))
    }

    /// Inputs the head takes per image (`C·h·w` of the features).
    pub fn input_dim(&self) -> usize {
        self.w1.dims()[0]
    }

    /// Probabilities `[N, classes]` of NCHW features `[N, C, h, w]` (f32).
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let n = features.dim(0)?;
        let x = features.to_dtype(DType::F32)?.reshape((n, ()))?;
        if x.dim(1)? != self.input_dim() {
            return Err(Error::Invalid(format!(
                "the head takes {} features per image, the network gives {}",
                self.input_dim(),
                x.dim(1)?
            )));
        }
        let h = ops::dense(&x, &self.w1, &self.b1)?.relu()?;
        let z = ops::dense(&h, &self.w2, &self.b2)?;
        Ok(match self.activation {
            Activation::Softmax => {
                let e = z.broadcast_sub(&z.max_keepdim(D::Minus1)?)?.exp()?;
                e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?
            }
            Activation::Sigmoid => {
                let p = (z.neg()?.exp()? + 1.0)?.recip()?;
                Tensor::cat(&[&(1.0 - &p)?, &p], 1)?
            }
        })
    }
}

/// What computes the image → feature part.
#[derive(Debug, Clone)]
pub enum Body {
    /// A VGG-style conv chain.
    Vgg(Vgg),
    /// Any other graph of the operators [`crate::nodes`] rebuilds, its weights on the device.
    Nodes(crate::nodes::OnDevice),
}

/// A network from the image to a named tensor: the body, and the dense head when the tensor is a
/// classifier's output.
#[derive(Debug, Clone)]
pub struct Network {
    pub body: Body,
    pub head: Option<DenseHead>,
}

impl Network {
    /// Rebuilds the part of `model` that computes `output` on `device` (f32).
    pub fn from_onnx(model: &[u8], output: &str, device: &Device) -> Result<Self> {
        let head = DenseHead::from_onnx(model, output, device)?;
        let cut = head.as_ref().map_or(output, |h| h.input.as_str());
        let body = match Vgg::from_onnx(model, Cut::At(cut), device, DType::F32) {
            Ok(vgg) => Body::Vgg(vgg),
            Err(chain) => {
                let input = features::onnx::image_input(model)?.name;
                let net = crate::nodes::NodeNet::from_onnx(model, &input, cut).map_err(|e| {
                    Error::Graph(format!(
                        "neither a VGG conv chain ({chain}) nor a graph Candle rebuilds ({e})"
                    ))
                })?;
                Body::Nodes(net.on(device)?)
            }
        };
        Ok(Network { body, head })
    }

    /// The device it computes on.
    pub fn device(&self) -> &Device {
        match &self.body {
            Body::Vgg(v) => v.device(),
            Body::Nodes(n) => n.device(),
        }
    }

    /// `[N, 3, H, W]` preprocessed images → the output tensor (feature maps or probabilities).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.body {
            Body::Vgg(v) => v.forward(x)?,
            Body::Nodes(n) => n.forward(x)?,
        };
        match &self.head {
            Some(h) => h.forward(&y),
            None => Ok(y),
        }
    }
}
