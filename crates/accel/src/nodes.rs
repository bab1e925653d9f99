//! A network rebuilt from an ONNX graph's own nodes and initializers, between two named tensors:
//! `Conv` (any kernel, stride, padding or dilation; depthwise and 1×1 included), `Relu`, `Clip`,
//! residual `Add`, `GlobalAveragePool`, `Flatten`. One Candle definition ([`NodeNet::graph`]) runs
//! on the CPU and on CUDA, and Candle's autograd gives its gradients: the trainable top of
//! backbones such as MobileNetV2 and EfficientNet-Lite. BatchNorm folded into the convolutions
//! stays folded (nothing here has running statistics).
//!
//! At the boundary: the input is NCHW rows, the output is flattened in NHWC order (a `[N, C]`
//! output as it is), which is how the dense heads of `head`/`finetune` read a feature tensor.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor, Var};
use features::onnx::build::decode;
use features::onnx::node::{float, int, ints, label, op, string};
use features::onnx::proto::{GraphProto, NodeProto};

use crate::error::{Error, Result};

/// The operators a [`NodeNet`] can rebuild.
pub const SUPPORTED: &str = "Conv, Relu, Clip, Add, GlobalAveragePool, Flatten";

/// One trainable initializer: its ONNX name, shape and values (ONNX layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// How a convolution pads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pad {
    /// `[top, left, bottom, right]`.
    Explicit([usize; 4]),
    /// `SAME_UPPER` (extra row/column at the end) or `SAME_LOWER` (at the start).
    Same { upper: bool },
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Conv {
        weight: usize,
        bias: Option<usize>,
        kernel: [usize; 2],
        stride: usize,
        dilation: usize,
        group: usize,
        pad: Pad,
    },
    Relu,
    Clip {
        min: f32,
        max: f32,
    },
    Add,
    GlobalAveragePool,
    Flatten,
}

/// One node: what it does, the tensors it reads (indices into the value table) and the one it writes.
#[derive(Debug, Clone, PartialEq)]
struct Node {
    name: String,
    kind: Kind,
    inputs: Vec<usize>,
    output: usize,
}

/// The nodes between `input` and `output`, in order, with their trainable weights.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeNet {
    /// Tensor the network reads (the frozen part's output).
    pub input: String,
    /// Tensor it computes (the head's input).
    pub output: String,
    nodes: Vec<Node>,
    /// Value table size (slot 0 is the input).
    slots: usize,
    /// Conv weights and biases, in node order.
    pub params: Vec<Param>,
}

fn graph_err(msg: String) -> Error {
    Error::Graph(msg)
}

/// Nodes needed to compute `output` from `input`, in graph order; anything else the subgraph
/// reads must be an initializer or a `Constant`.
fn subgraph<'g>(g: &'g GraphProto, input: &str, output: &str) -> Result<Vec<&'g NodeProto>> {
    let producers = features::onnx::producers(g);
    let constants: HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .chain(
            g.node
                .iter()
                .filter(|n| op(n) == "Constant")
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .collect();
    let graph_input = g.input.iter().any(|v| v.name.as_deref() == Some(input));
    if !producers.contains_key(input) && !graph_input {
        return Err(graph_err(format!(
            "the model has no tensor '{input}' (the input of the trainable part)"
        )));
    }
    // Tensors computed from `input`, then the nodes `output` needs, each read checked.
    let mut reach: HashSet<&str> = HashSet::from([input]);
    for n in &g.node {
        if n.input.iter().any(|t| reach.contains(t.as_str())) {
            reach.extend(n.output.iter().map(String::as_str));
        }
    }
    let mut needed = HashSet::new();
    let mut stack: Vec<(&str, Option<&NodeProto>)> = vec![(output, None)];
    while let Some((t, reader)) = stack.pop() {
        if t == input || t.is_empty() || constants.contains(t) {
            continue;
        }
        let found = producers.get(t).filter(|_| reach.contains(t));
        let Some(&i) = found else {
            return Err(graph_err(match reader {
                Some(r) => format!(
                    "'{}' ({}) reads '{t}', which is not computed from '{input}': set the start of the \
                     trainable part below '{t}'",
                    label(r),
                    op(r)
                ),
                None => format!("'{output}' is not computed from '{input}'"),
            }));
        };
        if needed.insert(i) {
            let n = &g.node[i];
            stack.extend(n.input.iter().map(|t| (t.as_str(), Some(n))));
        }
    }
    if needed.is_empty() {
        return Err(graph_err(format!(
            "'{output}' is not computed from '{input}': name a tensor below it"
        )));
    }
    let mut order: Vec<usize> = needed.into_iter().collect();
    order.sort_unstable();
    Ok(order.into_iter().map(|i| &g.node[i]).collect())
}

/// A scalar bound of `Clip`: from an attribute (opset < 11) or an input that is a constant.
fn clip_bound(
    n: &NodeProto,
    index: usize,
    attr: &str,
    consts: &HashMap<String, f32>,
) -> Result<Option<f32>> {
    if let Some(v) = float(n, attr) {
        return Ok(Some(v));
    }
    match n.input.get(index).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(name) => consts.get(name).copied().map(Some).ok_or_else(|| {
            graph_err(format!(
                "Clip '{}' reads its {attr} from '{name}', which is not a constant",
                label(n)
            ))
        }),
    }
}

fn one_value(n: &NodeProto, name: &str, values: Option<Vec<i64>>) -> Result<usize> {
    match values.as_deref() {
        None => Ok(1),
        Some([a, b]) if a == b && *a > 0 => Ok(*a as usize),
        Some(v) => Err(graph_err(format!(
            "Conv '{}' has {name} {v:?}; only equal, positive values on both axes can be rebuilt",
            label(n)
        ))),
    }
}

fn conv_pad(n: &NodeProto) -> Result<Pad> {
    match string(n, "auto_pad").as_deref().unwrap_or("NOTSET") {
        "SAME_UPPER" => Ok(Pad::Same { upper: true }),
        "SAME_LOWER" => Ok(Pad::Same { upper: false }),
        "" | "NOTSET" | "VALID" => {
            let p = ints(n, "pads").unwrap_or_else(|| vec![0; 4]);
            match p.as_slice() {
                [t, l, b, r] if p.iter().all(|&v| v >= 0) => Ok(Pad::Explicit([
                    *t as usize,
                    *l as usize,
                    *b as usize,
                    *r as usize,
                ])),
                _ => Err(graph_err(format!("Conv '{}' has pads {p:?}", label(n)))),
            }
        }
        other => Err(graph_err(format!(
            "Conv '{}' has auto_pad {other}",
            label(n)
        ))),
    }
}

/// What `from_onnx` collects while reading nodes.
struct Reader<'a> {
    slots: HashMap<&'a str, usize>,
    params: Vec<(String, usize)>,
}

impl<'a> Reader<'a> {
    fn slot(&self, n: &NodeProto, t: &str) -> Result<usize> {
        self.slots.get(t).copied().ok_or_else(|| {
            graph_err(format!(
                "'{}' ({}) reads '{t}', which is neither computed inside the trainable part nor a plain input of it",
                label(n),
                op(n)
            ))
        })
    }

    fn param(&mut self, name: &str) -> usize {
        self.params.push((name.to_string(), 0));
        self.params.len() - 1
    }
}

impl NodeNet {
    /// The nodes of `model` that compute `output` from `input`, with their weights.
    // Over 80 lines: one match over the supported operators, each arm checking its attributes and
    // shapes.
    pub fn from_onnx(model: &[u8], input: &str, output: &str) -> Result<Self> {
        let m = decode(model)?;
        let g = m
            .graph
            .as_ref()
            .ok_or_else(|| graph_err("the model has no graph".into()))?;
        let nodes = subgraph(g, input, output)?;
        let consts = scalar_constants(model, g, &nodes)?;
        let mut r = Reader {
            slots: HashMap::from([(input, 0)]),
            params: Vec::new(),
        };
        let mut built = Vec::with_capacity(nodes.len());
        for n in nodes.iter().filter(|n| op(n) != "Constant") {
            let kind =
                match op(n) {
                    "Conv" => {
                        let w = n.input.get(1).cloned().unwrap_or_default();
                        let weight = r.param(&w);
                        let bias = n.input.get(2).filter(|b| !b.is_empty()).map(|b| r.param(b));
                        let kernel = match ints(n, "kernel_shape").as_deref() {
                            Some([a, b]) if *a > 0 && *b > 0 => [*a as usize, *b as usize],
                            _ => [0, 0],
                        };
                        Kind::Conv {
                            weight,
                            bias,
                            kernel,
                            stride: one_value(n, "strides", ints(n, "strides"))?,
                            dilation: one_value(n, "dilations", ints(n, "dilations"))?,
                            group: int(n, "group").unwrap_or(1).max(1) as usize,
                            pad: conv_pad(n)?,
                        }
                    }
                    "Relu" => Kind::Relu,
                    "Clip" => Kind::Clip {
                        min: clip_bound(n, 1, "min", &consts)?.unwrap_or(f32::NEG_INFINITY),
                        max: clip_bound(n, 2, "max", &consts)?.unwrap_or(f32::INFINITY),
                    },
                    "Add" => Kind::Add,
                    "GlobalAveragePool" => Kind::GlobalAveragePool,
                    "Flatten" if int(n, "axis").unwrap_or(1) == 1 => Kind::Flatten,
                    other => {
                        return Err(graph_err(format!(
                        "'{}' is a {other} node{}; the trainable part can hold only {SUPPORTED}: \
                         set `trainable_from` to a tensor above it",
                        label(n),
                        if other == "Flatten" { " (axis ≠ 1)" } else { "" }
                    )))
                    }
                };
            let arity = match kind {
                Kind::Conv { .. } => 1,
                Kind::Add => 2,
                _ => 1,
            };
            let inputs = n
                .input
                .iter()
                .take(arity)
                .map(|t| r.slot(n, t))
                .collect::<Result<Vec<_>>>()?;
            let out = n.output.first().map(String::as_str).unwrap_or_default();
            let slot = r.slots.len();
            r.slots.insert(out, slot);
            built.push(Node {
                name: label(n),
                kind,
                inputs,
                output: slot,
            });
        }
        let names: Vec<&str> = r.params.iter().map(|(n, _)| n.as_str()).collect();
        let values = features::onnx::initializers_f32(model, &names)?;
        let params: Vec<Param> = names
            .iter()
            .zip(values)
            .map(|(name, (shape, values))| Param {
                name: name.to_string(),
                shape,
                values,
            })
            .collect();
        let net = NodeNet {
            input: input.to_string(),
            output: output.to_string(),
            slots: r.slots.len(),
            nodes: built,
            params,
        };
        net.check_params()?;
        Ok(net)
    }

    /// Conv weights are `[out, in/group, kh, kw]` and biases `[out]`.
    fn check_params(&self) -> Result<()> {
        for n in &self.nodes {
            if let Kind::Conv {
                weight,
                bias,
                kernel,
                group,
                ..
            } = &n.kind
            {
                let w = &self.params[*weight];
                let ok = w.shape.len() == 4
                    && (kernel[0] == 0 || [w.shape[2], w.shape[3]] == *kernel)
                    && w.shape[0].is_multiple_of(*group);
                let b_ok = bias.is_none_or(|b| self.params[b].shape == [w.shape[0]]);
                if !ok || !b_ok {
                    return Err(graph_err(format!(
                        "Conv '{}': weight '{}' {:?} does not fit its kernel {kernel:?} and {group} group(s)",
                        n.name, w.name, w.shape
                    )));
                }
            }
        }
        Ok(())
    }

    /// The ONNX node names, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.params.iter().map(|p| p.values.len()).sum()
    }

    /// The output's shape `[c, h, w]` (in NHWC order when flattened; `[c, 1, 1]` for a `[N, C]`
    /// output) for an input row of shape `[c, h, w]`, checking every node's channels.
    pub fn output_dims(&self, [c, h, w]: [usize; 3]) -> Result<[usize; 3]> {
        let mut shapes: Vec<Option<Vec<usize>>> = vec![None; self.slots];
        shapes[0] = Some(vec![c, h, w]);
        for n in &self.nodes {
            let ins: Vec<&Vec<usize>> = n
                .inputs
                .iter()
                .map(|&i| shapes[i].as_ref())
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    graph_err(format!("'{}' reads a tensor not computed yet", n.name))
                })?;
            shapes[n.output] = Some(self.node_shape(n, &ins)?);
        }
        match shapes[self.nodes.last().map_or(0, |n| n.output)].as_deref() {
            Some([c, h, w]) => Ok([*c, *h, *w]),
            Some([c]) => Ok([*c, 1, 1]),
            other => Err(graph_err(format!(
                "'{}' has shape {other:?} per image",
                self.output
            ))),
        }
    }

    fn node_shape(&self, n: &Node, ins: &[&Vec<usize>]) -> Result<Vec<usize>> {
        let bad = |what: String| graph_err(format!("'{}': {what}", n.name));
        let x = ins[0];
        Ok(match &n.kind {
            Kind::Conv {
                weight,
                stride,
                dilation,
                group,
                pad,
                ..
            } => {
                let w = &self.params[*weight].shape;
                let [c, h, wd] = x.as_slice() else {
                    return Err(bad(format!("a convolution of a {x:?} tensor")));
                };
                if *c != w[1] * group {
                    return Err(bad(format!(
                        "{c} input channels for a weight {w:?} in {group} group(s)"
                    )));
                }
                let pads = pads_for(*pad, [*h, *wd], [w[2], w[3]], *stride, *dilation);
                let out = |size: usize, k: usize, p0: usize, p1: usize| {
                    let span = dilation * (k - 1) + 1;
                    (size + p0 + p1).checked_sub(span).map(|v| v / stride + 1)
                };
                match (
                    out(*h, w[2], pads[0], pads[2]),
                    out(*wd, w[3], pads[1], pads[3]),
                ) {
                    (Some(oh), Some(ow)) => vec![w[0], oh, ow],
                    _ => return Err(bad(format!("a {h}×{wd} map is smaller than the kernel"))),
                }
            }
            Kind::Relu | Kind::Clip { .. } => x.clone(),
            Kind::Add => {
                if ins[0] != ins[1] {
                    return Err(bad(format!("adds {:?} to {:?}", ins[0], ins[1])));
                }
                x.clone()
            }
            Kind::GlobalAveragePool => match x.as_slice() {
                [c, _, _] => vec![*c, 1, 1],
                _ => return Err(bad(format!("pools a {x:?} tensor"))),
            },
            Kind::Flatten => vec![x.iter().product()],
        })
    }

    /// The network with its weights on `device`, for inference (a frozen network).
    pub fn on(self, device: &Device) -> Result<OnDevice> {
        let weights = self.weights(device)?;
        Ok(OnDevice { net: self, weights })
    }

    /// The network as a Candle graph on `x` (NCHW) with `weights` in [`NodeNet::params`] order,
    /// the output flattened in NHWC order (how a dense head reads it).
    pub fn graph(&self, x: &Tensor, weights: &[Tensor]) -> Result<Tensor> {
        Ok(self.graph_nhwc(x, weights)?.flatten_from(1)?)
    }

    /// The network as a Candle graph on `x` (NCHW) with `weights` in [`NodeNet::params`] order:
    /// the one definition every device runs. The output as the ONNX graph has it.
    pub fn graph_raw(&self, x: &Tensor, weights: &[Tensor]) -> Result<Tensor> {
        let y = self.graph_nhwc(x, weights)?;
        Ok(match y.rank() {
            4 => y.permute((0, 3, 1, 2))?.contiguous()?,
            _ => y,
        })
    }

    /// The nodes on NHWC maps (1×1 convolutions are then one matrix product over every pixel,
    /// depthwise taps scale the contiguous channel axis): output `[N, H, W, C]` or `[N, C]`.
    fn graph_nhwc(&self, x: &Tensor, weights: &[Tensor]) -> Result<Tensor> {
        let mut values: Vec<Option<Tensor>> = vec![None; self.slots];
        values[0] = Some(x.permute((0, 2, 3, 1))?.contiguous()?);
        for n in &self.nodes {
            let ins: Vec<&Tensor> = n
                .inputs
                .iter()
                .map(|&i| values[i].as_ref())
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    graph_err(format!("'{}' reads a tensor not computed yet", n.name))
                })?;
            let y = match &n.kind {
                Kind::Conv {
                    weight,
                    bias,
                    stride,
                    dilation,
                    group,
                    pad,
                    ..
                } => {
                    let b = bias.map(|b| &weights[b]);
                    conv(
                        ins[0],
                        &weights[*weight],
                        b,
                        *stride,
                        *dilation,
                        *group,
                        *pad,
                    )?
                }
                Kind::Relu => ins[0].relu()?,
                Kind::Clip { min, max } => clip(ins[0], *min, *max)?,
                Kind::Add => ins[0].broadcast_add(ins[1])?,
                Kind::GlobalAveragePool => {
                    global_average(ins[0]).map_err(|e| graph_err(format!("'{}': {e}", n.name)))?
                }
                Kind::Flatten => match ins[0].dims() {
                    [_, 1, 1, _] => ins[0].flatten_from(1)?,
                    // ONNX flattens in CHW order.
                    [_, _, _, _] => ins[0].permute((0, 3, 1, 2))?.flatten_from(1)?,
                    _ => ins[0].flatten_from(1)?,
                },
            };
            values[n.output] = Some(y);
        }
        values[self.nodes.last().map_or(0, |n| n.output)]
            .take()
            .ok_or_else(|| graph_err("the network computes nothing".into()))
    }

    fn input_tensor(&self, x: &[f32], chw: [usize; 3], device: &Device) -> Result<Tensor> {
        let row: usize = chw.iter().product();
        if row == 0 || !x.len().is_multiple_of(row) {
            return Err(Error::Invalid(format!(
                "{} values are not whole rows of {chw:?}",
                x.len()
            )));
        }
        Ok(Tensor::from_slice(
            x,
            (x.len() / row, chw[0], chw[1], chw[2]),
            device,
        )?)
    }

    fn weights(&self, device: &Device) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|p| Ok(Tensor::from_slice(&p.values, p.shape.as_slice(), device)?))
            .collect()
    }

    /// The output rows (NHWC order) of NCHW input rows of shape `chw`, on `device`.
    pub fn forward(&self, x: &[f32], chw: [usize; 3], device: &Device) -> Result<Vec<f32>> {
        let x = self.input_tensor(x, chw, device)?;
        let y = self.graph(&x, &self.weights(device)?)?;
        Ok(crate::ops::to_host(&y)?)
    }

    /// The gradients, in [`NodeNet::params`] order, of `Σ output · grad_out` (the chain rule's
    /// step from the head's input gradient `grad_out`, NHWC order) for NCHW input rows `x`.
    pub fn gradients(
        &self,
        x: &[f32],
        chw: [usize; 3],
        grad_out: &[f32],
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let x = self.input_tensor(x, chw, device)?;
        let vars: Vec<Var> = self
            .params
            .iter()
            .map(|p| Var::from_slice(&p.values, p.shape.as_slice(), device))
            .collect::<candle_core::Result<_>>()?;
        let weights: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = self.graph(&x, &weights)?;
        if y.elem_count() != grad_out.len() {
            return Err(Error::Invalid(format!(
                "output gradient holds {} values, the output {}",
                grad_out.len(),
                y.elem_count()
            )));
        }
        let g = Tensor::from_slice(grad_out, y.shape(), device)?;
        let grads = (y * g)?.sum_all()?.backward()?;
        vars.iter()
            .zip(&self.params)
            .map(|(v, p)| match grads.get(v) {
                Some(t) => Ok(crate::ops::to_host(&t.flatten_all()?)?),
                None => Ok(vec![0.0; p.values.len()]),
            })
            .collect()
    }
}

/// A [`NodeNet`] with its weights uploaded to a device once.
#[derive(Debug, Clone)]
pub struct OnDevice {
    pub net: NodeNet,
    weights: Vec<Tensor>,
}

impl OnDevice {
    /// The device its weights are on.
    pub fn device(&self) -> &Device {
        self.weights.first().map_or(&Device::Cpu, Tensor::device)
    }

    /// NCHW images (or maps) → the output tensor as the ONNX graph has it.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.net.graph_raw(x, &self.weights)
    }
}

/// Scalar constants the subgraph's `Clip` nodes read (initializers or `Constant` nodes).
fn scalar_constants(
    model: &[u8],
    g: &GraphProto,
    nodes: &[&NodeProto],
) -> Result<HashMap<String, f32>> {
    let produced: HashSet<&str> = features::onnx::producers(g)
        .into_keys()
        .filter(|t| {
            !nodes
                .iter()
                .any(|n| op(n) == "Constant" && n.output.iter().any(|o| o == t))
        })
        .collect();
    let wanted: Vec<&str> = nodes
        .iter()
        .filter(|n| op(n) == "Clip")
        .flat_map(|n| n.input.iter().skip(1))
        .map(String::as_str)
        .filter(|t| !t.is_empty() && !produced.contains(t))
        .collect();
    let values = features::onnx::initializers_f32(model, &wanted)?;
    let mut out = HashMap::new();
    for (name, (_, v)) in wanted.iter().zip(values) {
        if let [x] = v.as_slice() {
            out.insert(name.to_string(), *x);
        }
    }
    Ok(out)
}

/// `[top, left, bottom, right]` for a convolution of an `hw` map.
fn pads_for(pad: Pad, hw: [usize; 2], k: [usize; 2], stride: usize, dilation: usize) -> [usize; 4] {
    match pad {
        Pad::Explicit(p) => p,
        Pad::Same { upper } => {
            let total = |size: usize, k: usize| {
                let out = size.div_ceil(stride);
                ((out - 1) * stride + dilation * (k - 1) + 1).saturating_sub(size)
            };
            let (th, tw) = (total(hw[0], k[0]), total(hw[1], k[1]));
            let split = |t: usize| {
                if upper {
                    (t / 2, t - t / 2)
                } else {
                    (t - t / 2, t / 2)
                }
            };
            let ((t, b), (l, r)) = (split(th), split(tw));
            [t, l, b, r]
        }
    }
}

/// The mean over every pixel of an NHWC map, `[N, 1, 1, C]`, as a product with a row of
/// `1/(H·W)` (whose gradient is a product too; a mean's is a strided sum).
fn global_average(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let row = Tensor::full(1.0 / (h * w) as f32, (1, 1, h * w), x.device())?.to_dtype(x.dtype())?;
    row.broadcast_matmul(&x.reshape((n, h * w, c))?)?
        .reshape((n, 1, 1, c))
}

/// `min ≤ x ≤ max`: on the CPU one pass forward and one backward ([`ClipOp`]); elsewhere
/// `min + relu(x − min) − relu(x − max)` (ReLU's gradient is one mask; a maximum/minimum pair's is
/// several full-size passes), each side only where it bounds anything.
fn clip(x: &Tensor, min: f32, max: f32) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        return x.contiguous()?.apply_op1(ClipOp { min, max });
    }
    match (min.is_finite(), max.is_finite()) {
        (true, true) => ((x - min as f64)?.relu()? - (x - max as f64)?.relu()?)? + min as f64,
        (true, false) => (x - min as f64)?.relu()? + min as f64,
        (false, true) => x - (x - max as f64)?.relu()?,
        (false, false) => Ok(x.clone()),
    }
}

/// `Clip` on the CPU: the clamp, and as gradient the incoming one where `min < x < max`.
#[derive(Debug, Clone, Copy)]
struct ClipOp {
    min: f32,
    max: f32,
}

impl candle_core::CustomOp1 for ClipOp {
    fn name(&self) -> &'static str {
        "clip"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let y = crate::depthwise::slice(s, l)?
            .iter()
            .map(|v| v.clamp(self.min, self.max))
            .collect();
        Ok((candle_core::CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(arg, self)?))
    }
}

impl candle_core::CustomOp2 for ClipOp {
    fn name(&self) -> &'static str {
        "clip-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (g, x) = (
            crate::depthwise::slice(s1, l1)?,
            crate::depthwise::slice(s2, l2)?,
        );
        let d = g
            .iter()
            .zip(x)
            .map(|(g, x)| {
                if *x > self.min && *x < self.max {
                    *g
                } else {
                    0.0
                }
            })
            .collect();
        Ok((candle_core::CpuStorage::F32(d), l1.shape().clone()))
    }
}

/// A convolution as ONNX defines it, padding included, on an NHWC map; weights `[out, in/group,
/// kh, kw]` as ONNX holds them.
fn conv(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    dilation: usize,
    group: usize,
    pad: Pad,
) -> Result<Tensor> {
    let (n, h, wd, c) = x.dims4()?;
    let (cout, cin_g, kh, kw) = w.dims4()?;
    let p = pads_for(pad, [h, wd], [kh, kw], stride, dilation);
    let x = if p.iter().any(|&v| v > 0) {
        x.pad_with_zeros(1, p[0], p[2])?
            .pad_with_zeros(2, p[1], p[3])?
    } else {
        x.clone()
    };
    let y = if group == c && cout == c && cin_g == 1 {
        crate::depthwise::depthwise(&x, w, stride, dilation)?
    } else if group == 1 && kh == 1 && kw == 1 && stride == 1 {
        let (_, h, wd, _) = x.dims4()?;
        let rows = n * h * wd;
        let y = x.reshape((rows, c))?.matmul(&w.reshape((cout, c))?.t()?)?;
        // The bias as a product with a column of ones: its gradient is then a matrix product too
        // (a broadcast's is a strided sum over every pixel).
        let y = match b {
            Some(b) => {
                let ones = Tensor::ones((rows, 1), y.dtype(), y.device())?;
                (y + ones.matmul(&b.reshape((1, cout))?)?)?
            }
            None => y,
        };
        return Ok(y.reshape((n, h, wd, cout))?);
    } else {
        let nchw = x.permute((0, 3, 1, 2))?.contiguous()?;
        nchw.conv2d(&w.contiguous()?, 0, stride, dilation, group)?
            .permute((0, 2, 3, 1))?
            .contiguous()?
    };
    Ok(match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The CPU `Clip` op and the ReLU form other devices run agree, values and gradients (ties
    /// at the bounds aside: the inputs avoid them).
    #[test]
    fn the_cpu_clip_equals_the_portable_form() {
        let dev = Device::Cpu;
        let v: Vec<f32> = (0..200)
            .map(|i| (i as f32 - 100.0) * 0.0731 + 0.01)
            .collect();
        let x = Var::from_vec(v, (4, 50), &dev).unwrap();
        let g = Tensor::from_vec(
            (0..200).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>(),
            (4, 50),
            &dev,
        )
        .unwrap();
        for (min, max) in [(0.0, 6.0), (f32::NEG_INFINITY, 1.5), (-2.0, f32::INFINITY)] {
            let fast = clip(x.as_tensor(), min, max).unwrap();
            let t = x.as_tensor();
            let slow = match (min.is_finite(), max.is_finite()) {
                (true, true) => ((((t - min as f64).unwrap().relu().unwrap()
                    - (t - max as f64).unwrap().relu().unwrap())
                .unwrap())
                    + min as f64)
                    .unwrap(),
                (true, false) => ((t - min as f64).unwrap().relu().unwrap() + min as f64).unwrap(),
                _ => (t - (t - max as f64).unwrap().relu().unwrap()).unwrap(),
            };
            let host = |a: &Tensor| a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gap = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max)
            };
            assert!(gap(&host(&fast), &host(&slow)) < 1e-5);
            let gf = (fast * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gs = (slow * &g).unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(
                host(gf.get(&x).unwrap()),
                host(gs.get(&x).unwrap()),
                "[{min}, {max}]"
            );
        }
    }
}
