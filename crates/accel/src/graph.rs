//! Reading a VGG-style conv chain out of an ONNX model, the one reader for every crate
//! ([`follow`]: between two tensors — `finetune`'s trainable block uses it too): 3×3 stride-1
//! "same" Conv (+ Relu), 2×2 stride-2 MaxPool, the NHWC↔NCHW Transposes of tf2onnx/Keras exports;
//! [`chain`] cuts a model with `features::onnx` (the conv base, or a named tensor) and follows it
//! from the image input.

use std::collections::HashMap;

use features::onnx::node::{int, ints, is_plain_2x2_pool, label, op, string};
use features::onnx::proto::{GraphProto, NodeProto};
use features::onnx::Layout;

use crate::error::{Error, Result};

/// Where to cut the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut<'a> {
    /// The output of the last MaxPool before the classifier (what `extract` computes).
    ConvBase,
    /// A named tensor, e.g. `block4_pool` (the frozen part of fine-tuning).
    At(&'a str),
}

/// One layer of the chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// 3×3 stride-1 convolution with padding 1, then ReLU when `relu`.
    Conv {
        node: String,
        weight: String,
        bias: String,
        relu: bool,
    },
    /// 2×2 stride-2 max pooling without padding.
    MaxPool { node: String },
    /// ReLU not directly after a Conv.
    Relu { node: String },
}

/// The chain and what is known of its ends.
#[derive(Debug, Clone)]
pub struct Chain {
    pub steps: Vec<Step>,
    /// The cut tensor (always computed as NCHW here).
    pub output: String,
    /// The cut model (pruned to what the output needs), holding the initializers.
    pub cut_bytes: Vec<u8>,
}

/// The weights of one Conv step: `w` as ONNX stores it, `[out, in, 3, 3]`, and its bias `[out]`.
#[derive(Debug, Clone)]
pub struct ConvWeights {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub out_channels: usize,
    pub in_channels: usize,
}

/// The weights of every Conv of `steps`, in order, read from the initializers of `model` and
/// checked to be a 3×3 conv weight and its bias.
pub fn conv_weights(model: &[u8], steps: &[Step]) -> Result<Vec<ConvWeights>> {
    let names: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Conv { weight, bias, .. } => Some([weight.as_str(), bias.as_str()]),
            _ => None,
        })
        .flatten()
        .collect();
    let mut values = features::onnx::initializers_f32(model, &names)?.into_iter();
    names
        .chunks_exact(2)
        .map(|n| {
            let (Some((wd, w)), Some((bd, b))) = (values.next(), values.next()) else {
                return Err(Error::Graph(format!(
                    "weights '{}' or '{}' missing",
                    n[0], n[1]
                )));
            };
            if wd.len() != 4 || wd[2..] != [3, 3] || bd[..] != [wd[0]] {
                return Err(Error::Graph(format!(
                    "'{}' {wd:?} and '{}' {bd:?} are not a 3×3 conv weight and its bias",
                    n[0], n[1]
                )));
            }
            Ok(ConvWeights {
                w,
                b,
                out_channels: wd[0],
                in_channels: wd[1],
            })
        })
        .collect()
}

/// Checks a Conv node is what a VGG chain holds: 3×3, stride 1, padding 1 ("same"), dilation 1,
/// one group, with a bias.
fn check_conv(n: &NodeProto) -> Result<()> {
    let bad = |what: String| {
        Err(Error::Graph(format!(
            "Conv '{}' has {what}; a VGG-style chain holds 3×3 stride-1 convolutions with padding 1 and a bias",
            label(n)
        )))
    };
    if let Some(k) = ints(n, "kernel_shape") {
        if k != [3, 3] {
            return bad(format!("kernel {k:?}"));
        }
    }
    if ints(n, "strides").is_some_and(|s| s.iter().any(|&v| v != 1)) {
        return bad(format!(
            "strides {:?}",
            ints(n, "strides").unwrap_or_default()
        ));
    }
    if ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
        return bad(format!(
            "dilations {:?}",
            ints(n, "dilations").unwrap_or_default()
        ));
    }
    if int(n, "group").unwrap_or(1) != 1 {
        return bad("groups".into());
    }
    match string(n, "auto_pad").unwrap_or_default().as_str() {
        "" | "NOTSET" => {
            let pads = ints(n, "pads").unwrap_or_default();
            if pads != [1, 1, 1, 1] {
                return bad(format!("pads {pads:?}"));
            }
        }
        "SAME_UPPER" | "SAME_LOWER" => {}
        other => return bad(format!("auto_pad {other}")),
    }
    if n.input.len() < 3 || n.input[2].is_empty() {
        return bad("no bias".into());
    }
    Ok(())
}

fn check_pool(n: &NodeProto) -> Result<()> {
    if is_plain_2x2_pool(n) {
        Ok(())
    } else {
        Err(Error::Graph(format!(
            "MaxPool '{}' is not a plain 2×2 stride-2 pool without padding",
            label(n)
        )))
    }
}

/// Cuts `model` and reads the chain from its image input to the cut tensor.
pub fn chain(model: &[u8], cut: Cut<'_>) -> Result<Chain> {
    let cm = match cut {
        Cut::ConvBase => features::onnx::cut_conv_base(model)?,
        Cut::At(t) => features::onnx::cut_at(model, t)?,
    };
    let m = features::onnx::build::decode(&cm.bytes)?;
    let g = m
        .graph
        .as_ref()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    let steps = follow(g, &cm.input, &cm.output, cm.input_layout).map_err(|e| {
        Error::Graph(format!(
            "{e}; the Candle network rebuilds chains of 3×3 Conv + Relu and 2×2 MaxPool (VGG): run this \
             model with ONNX Runtime instead (--device cpu)"
        ))
    })?;
    Ok(Chain {
        steps,
        output: cm.output,
        cut_bytes: cm.bytes,
    })
}

/// The one reader of a VGG-style chain (the Candle conv base here, `finetune`'s trainable block):
/// follows `g` from tensor `from` (laid out as `layout`) to `to`, each tensor read by exactly one
/// node — 3×3 stride-1 "same" Conv (+ the Relu right after it), 2×2 stride-2 MaxPool, a Relu of its
/// own, the NHWC↔NCHW Transposes of tf2onnx/Keras exports, Identity and Dropout (no-ops at
/// inference) — and returns its layers. `to` must be NCHW and at least one Conv on the way.
pub fn follow(g: &GraphProto, from: &str, to: &str, layout: Layout) -> Result<Vec<Step>> {
    let consumers = Consumers::of(g, from, to);
    let mut steps = Vec::new();
    let mut cur = from.to_string();
    let mut layout = layout;
    let mut guard = 0;
    while cur != to {
        guard += 1;
        if guard > g.node.len() + 1 {
            return Err(Error::Graph(format!(
                "could not follow the graph from '{from}' to '{to}'"
            )));
        }
        let n = consumers.only(&cur)?;
        if n.input.first() != Some(&cur) {
            return Err(Error::Graph(format!(
                "node '{}' ({}) reads '{cur}' as a secondary input; only plain chains are supported",
                label(n),
                op(n)
            )));
        }
        let out = n.output.first().cloned().unwrap_or_default();
        match op(n) {
            "Transpose" => {
                layout = transposed(n, layout)?;
                cur = out;
            }
            "Conv" => {
                need_nchw(n, layout)?;
                let (step, next) = conv_step(n, &consumers, to)?;
                steps.push(step);
                cur = next;
            }
            "Relu" => {
                steps.push(Step::Relu { node: label(n) });
                cur = out;
            }
            "MaxPool" => {
                need_nchw(n, layout)?;
                check_pool(n)?;
                steps.push(Step::MaxPool { node: label(n) });
                cur = out;
            }
            "Identity" | "Dropout" => cur = out,
            other => {
                return Err(Error::Graph(format!(
                "node '{}' ({other}) between '{from}' and '{to}' is not part of a VGG-style chain",
                label(n),
            )))
            }
        }
    }
    if layout != Layout::Nchw {
        return Err(Error::Graph(format!(
            "the tensor '{to}' is NHWC; expected NCHW"
        )));
    }
    if !steps.iter().any(|s| matches!(s, Step::Conv { .. })) {
        return Err(Error::Graph(format!(
            "there is no Conv between '{from}' and '{to}'"
        )));
    }
    Ok(steps)
}

/// Conv `n` (checked) as a step, with the Relu right after it folded in, and the tensor after both.
fn conv_step(n: &NodeProto, consumers: &Consumers<'_>, to: &str) -> Result<(Step, String)> {
    check_conv(n)?;
    let out = n.output.first().cloned().unwrap_or_default();
    let mut relu = false;
    let mut next = out.clone();
    if out != to {
        let c = consumers.only(&out)?;
        if op(c) == "Relu" {
            relu = true;
            next = c.output.first().cloned().unwrap_or_default();
        }
    }
    let step = Step::Conv {
        node: label(n),
        weight: n.input[1].clone(),
        bias: n.input[2].clone(),
        relu,
    };
    Ok((step, next))
}

/// Conv and MaxPool compute on NCHW tensors here.
fn need_nchw(n: &NodeProto, layout: Layout) -> Result<()> {
    if layout == Layout::Nchw {
        Ok(())
    } else {
        Err(Error::Graph(format!(
            "{} '{}' reads an NHWC tensor; expected a Transpose to NCHW before it",
            op(n),
            label(n)
        )))
    }
}

/// The nodes that read each tensor of a graph, for following one chain from `from` to `to`.
struct Consumers<'g> {
    of: HashMap<&'g str, Vec<&'g NodeProto>>,
    from: String,
    to: String,
}

impl<'g> Consumers<'g> {
    fn of(g: &'g GraphProto, from: &str, to: &str) -> Self {
        let mut of: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
        for n in &g.node {
            for t in n.input.iter().filter(|t| !t.is_empty()) {
                of.entry(t.as_str()).or_default().push(n);
            }
        }
        Consumers {
            of,
            from: from.to_string(),
            to: to.to_string(),
        }
    }

    /// The one node that reads `t`; none or several is an error naming them.
    fn only(&self, t: &str) -> Result<&'g NodeProto> {
        let (from, to) = (&self.from, &self.to);
        match self.of.get(t).map(Vec::as_slice) {
            Some([n]) => Ok(*n),
            Some(many) => Err(Error::Graph(format!(
                "tensor '{t}' feeds {} nodes ({}); a single chain of layers from '{from}' to '{to}' is needed",
                many.len(),
                many.iter().map(|n| label(n)).collect::<Vec<_>>().join(", "),
            ))),
            None => Err(Error::Graph(format!(
                "tensor '{t}' is read by no node, so '{to}' cannot be reached from '{from}'"
            ))),
        }
    }
}

/// The layout after Transpose `n` of a `layout` tensor: only the NHWC↔NCHW changes.
fn transposed(n: &NodeProto, layout: Layout) -> Result<Layout> {
    match (layout, ints(n, "perm").as_deref()) {
        (Layout::Nhwc, Some([0, 3, 1, 2])) => Ok(Layout::Nchw),
        (Layout::Nchw, Some([0, 2, 3, 1])) => Ok(Layout::Nhwc),
        (_, perm) => Err(Error::Graph(format!(
            "Transpose '{}' with perm {perm:?} on a {layout:?} tensor is not an NHWC↔NCHW layout change",
            label(n)
        ))),
    }
}
