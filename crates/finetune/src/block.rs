//! The trainable block between the frozen part and the head, with its forward pass, which keeps
//! what the backward pass needs, and its backward pass. Two kinds: a VGG-style chain (e.g. VGG16
//! block5: three 3×3 convs + ReLU, then a 2×2 max pool) with hand-written passes, weights held as
//! im2col matrices `[9·in, out]` and products on `train::kernels::convolve` in the block's
//! precision; or any other top rebuilt from the ONNX graph's own nodes ([`GraphLayer`]: depthwise
//! and 1×1 convolutions, Clip, residual Add, pooling, as in MobileNetV2 and EfficientNet-Lite),
//! computed by Candle with autograd on the run's device.

use crate::error::{Error, Result};
use train::kernels::conv::{self, Nhwc};
use train::kernels::convolve::{self, Run};
use train::kernels::{Threads, TrainPrecision};

/// One 3×3, stride 1, padding 1 convolution (optionally followed by ReLU).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvLayer {
    /// ONNX node name, e.g. `block5_conv1`.
    pub node: String,
    /// ONNX initializer names of the weight `[out, in, 3, 3]` and the bias `[out]`.
    pub weight_name: String,
    pub bias_name: String,
    pub cin: usize,
    pub cout: usize,
    pub relu: bool,
    /// Weights as the im2col matrix `[9·cin, cout]`.
    pub wm: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ConvLayer {
    /// A layer from ONNX weights `[cout, cin, 3, 3]` and bias `[cout]`; `names` are the node and
    /// the weight and bias initializer names.
    pub fn from_onnx(
        names: [&str; 3],
        w: &[f32],
        bias: Vec<f32>,
        (cout, cin): (usize, usize),
        relu: bool,
    ) -> Result<Self> {
        let [node, weight_name, bias_name] = names;
        if w.len() != cout * cin * 9 || bias.len() != cout {
            return Err(Error::Block(format!(
                "{node}: weight of {} values and bias of {} for {cout}×{cin}×3×3",
                w.len(),
                bias.len()
            )));
        }
        Ok(ConvLayer {
            node: node.to_string(),
            weight_name: weight_name.to_string(),
            bias_name: bias_name.to_string(),
            cin,
            cout,
            relu,
            wm: conv::onnx_to_matrix(w, cout, cin),
            bias,
        })
    }

    /// The weights in ONNX layout `[cout, cin, 3, 3]`.
    pub fn onnx_weight(&self) -> Vec<f32> {
        conv::matrix_to_onnx(&self.wm, self.cout, self.cin)
    }
}

/// A top rebuilt from the ONNX graph's own nodes (`accel::nodes`), on a Candle device (the CPU,
/// or the GPU of `--device cuda`); its weights are the graph's initializers, in ONNX layout.
#[derive(Clone, Debug)]
pub struct GraphLayer {
    pub net: accel::nodes::NodeNet,
    /// Where Candle computes it (not part of the weights).
    pub device: accel::Device,
}

impl PartialEq for GraphLayer {
    fn eq(&self, other: &Self) -> bool {
        self.net == other.net
    }
}

/// One layer of the block.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    Conv(ConvLayer),
    /// 2×2 stride-2 max pooling without padding.
    MaxPool {
        node: String,
    },
    /// Everything between the block's input and output tensors, from the graph's nodes.
    Graph(GraphLayer),
}

/// The block between the frozen part's output and the head's input.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// Tensor the block reads (the frozen part's output), e.g. `block4_pool`.
    pub input_tensor: String,
    /// Tensor the block produces (the head's input), e.g. `block5_pool`.
    pub output_tensor: String,
    pub layers: Vec<Layer>,
    /// Precision of the convolutions' products (forward and backward); FP32 unless training
    /// asks for bf16 (`--train-precision`). Not part of the weights.
    pub precision: TrainPrecision,
}

/// What one layer's forward pass leaves for the backward pass.
enum Saved {
    Conv {
        out: Vec<f32>,
        input: Nhwc,
    },
    Pool {
        arg: Vec<u8>,
        out: Vec<f32>,
        input: Nhwc,
    },
    Graph {
        out: Vec<f32>,
        /// The layer's input, NCHW (autograd recomputes the forward pass from it).
        nchw: Vec<f32>,
        input: Nhwc,
    },
}

impl Saved {
    fn out(&self) -> &[f32] {
        match self {
            Saved::Conv { out, .. } | Saved::Pool { out, .. } | Saved::Graph { out, .. } => out,
        }
    }
}

/// A forward pass through the block, ready for [`Block::backward`].
pub struct Trace {
    /// The block input (the first conv's weight gradient reads it).
    input: Vec<f32>,
    saved: Vec<Saved>,
    /// Output shape.
    pub dims: Nhwc,
}

impl Trace {
    /// The block output, NHWC.
    pub fn output(&self) -> &[f32] {
        self.saved.last().map(Saved::out).unwrap_or(&[])
    }
}

/// One gradient per trainable tensor, in [`Block::params`] order.
pub type Grads = Vec<Vec<f32>>;

impl Block {
    /// The conv layers of a chain in order.
    pub fn convs(&self) -> impl Iterator<Item = &ConvLayer> {
        self.layers.iter().filter_map(|l| match l {
            Layer::Conv(c) => Some(c),
            Layer::MaxPool { .. } | Layer::Graph(_) => None,
        })
    }

    /// The part rebuilt from graph nodes, if the block is one.
    pub fn graph(&self) -> Option<&GraphLayer> {
        self.layers.iter().find_map(|l| match l {
            Layer::Graph(g) => Some(g),
            _ => None,
        })
    }

    /// Where a graph block computes (the chain's kernels always run on the CPU).
    pub fn set_device(&mut self, device: &accel::Device) {
        for l in &mut self.layers {
            if let Layer::Graph(g) = l {
                g.device = device.clone();
            }
        }
    }

    /// Names of the trainable tensors in [`Block::params`] order: `<conv node>.weight`,
    /// `<conv node>.bias` for a chain, the ONNX initializer names for a graph block.
    pub fn param_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Conv(c) => {
                    names.extend([format!("{}.weight", c.node), format!("{}.bias", c.node)])
                }
                Layer::Graph(g) => names.extend(g.net.params.iter().map(|p| p.name.clone())),
                Layer::MaxPool { .. } => {}
            }
        }
        names
    }

    /// Every trainable tensor in a fixed order (a chain's weight matrices and biases; a graph
    /// block's initializers).
    pub fn params(&self) -> Vec<&[f32]> {
        let mut p: Vec<&[f32]> = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Conv(c) => p.extend([c.wm.as_slice(), c.bias.as_slice()]),
                Layer::Graph(g) => p.extend(g.net.params.iter().map(|p| p.values.as_slice())),
                Layer::MaxPool { .. } => {}
            }
        }
        p
    }

    /// Every trainable tensor, mutably, in [`Block::params`] order.
    pub fn params_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut p: Vec<&mut Vec<f32>> = Vec::new();
        for l in &mut self.layers {
            match l {
                Layer::Conv(c) => p.extend([&mut c.wm, &mut c.bias]),
                Layer::Graph(g) => p.extend(g.net.params.iter_mut().map(|p| &mut p.values)),
                Layer::MaxPool { .. } => {}
            }
        }
        p
    }

    /// The trainable tensors as the ONNX model holds them: initializer name, shape, values.
    pub fn initializers(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Conv(c) => {
                    out.push((
                        c.weight_name.clone(),
                        vec![c.cout, c.cin, 3, 3],
                        c.onnx_weight(),
                    ));
                    out.push((c.bias_name.clone(), vec![c.cout], c.bias.clone()));
                }
                Layer::Graph(g) => out.extend(
                    g.net
                        .params
                        .iter()
                        .map(|p| (p.name.clone(), p.shape.clone(), p.values.clone())),
                ),
                Layer::MaxPool { .. } => {}
            }
        }
        out
    }

    /// The block in words, for the plan: `3 convs, bf16 products` (a chain trained with `products`),
    /// or `9 ONNX nodes, 1013696 parameters, fp32 in Candle on cpu`.
    pub fn describe(&self, products: TrainPrecision) -> String {
        match self.graph() {
            Some(g) => format!(
                "{} ONNX nodes, {} parameters, fp32 in Candle on {}",
                g.net.node_names().len(),
                g.net.parameter_count(),
                accel::device::name(&g.device)
            ),
            None => format!(
                "{} convs, {} products",
                self.convs().count(),
                products.name()
            ),
        }
    }

    /// The ONNX nodes the block trains (a chain's convs; every node of a graph block).
    pub fn node_names(&self) -> Vec<String> {
        match self.graph() {
            Some(g) => g.net.node_names(),
            None => self.convs().map(|c| c.node.clone()).collect(),
        }
    }

    /// Channels the block expects at its input.
    pub fn in_channels(&self) -> Option<usize> {
        self.convs().next().map(|c| c.cin)
    }

    /// Output shape for an input of shape `d` (checks the channel chain).
    pub fn output_dims(&self, d: Nhwc) -> Result<Nhwc> {
        let mut d = d;
        for l in &self.layers {
            d = match l {
                Layer::Conv(c) => {
                    if c.cin != d.c {
                        return Err(Error::Block(format!(
                            "{} expects {} input channels, gets {}",
                            c.node, c.cin, d.c
                        )));
                    }
                    d.with_channels(c.cout)
                }
                Layer::MaxPool { node } => {
                    if d.h < 2 || d.w < 2 {
                        return Err(Error::Block(format!(
                            "{node} pools a {}×{} map: the input image is too small",
                            d.h, d.w
                        )));
                    }
                    d.pooled()
                }
                Layer::Graph(g) => {
                    let [c, h, w] = g.net.output_dims([d.c, d.h, d.w])?;
                    Nhwc { n: d.n, h, w, c }
                }
            };
        }
        Ok(d)
    }

    /// Forward pass over an NHWC batch, keeping what [`Block::backward`] needs.
    pub fn forward(&self, x: &[f32], d: Nhwc) -> Result<Trace> {
        if x.len() != d.len() {
            return Err(Error::Invalid(format!(
                "block input holds {} values, shape {d:?} needs {}",
                x.len(),
                d.len()
            )));
        }
        self.output_dims(d)?;
        let mut saved: Vec<Saved> = Vec::with_capacity(self.layers.len());
        let mut dims = d;
        for l in &self.layers {
            let input: &[f32] = saved.last().map(Saved::out).unwrap_or(x);
            let s = match l {
                Layer::Conv(c) => {
                    let mut out = vec![0f32; dims.pixels() * c.cout];
                    let p = self.precision;
                    convolve::forward(
                        Run::new(p, Threads::All),
                        input,
                        dims,
                        1,
                        &c.wm,
                        c.cout,
                        &mut out,
                    );
                    conv::bias_relu(&mut out, &c.bias, c.relu);
                    let s = Saved::Conv { out, input: dims };
                    dims = dims.with_channels(c.cout);
                    s
                }
                Layer::MaxPool { .. } => {
                    let pooled = dims.pooled().len();
                    let (mut out, mut arg) = (vec![0f32; pooled], vec![0u8; pooled]);
                    conv::maxpool2x2(input, dims, &mut out, &mut arg);
                    let s = Saved::Pool {
                        arg,
                        out,
                        input: dims,
                    };
                    dims = dims.pooled();
                    s
                }
                Layer::Graph(g) => {
                    let nchw = nhwc_to_nchw(input, dims);
                    let out = g.net.forward(&nchw, [dims.c, dims.h, dims.w], &g.device)?;
                    let s = Saved::Graph {
                        out,
                        nchw,
                        input: dims,
                    };
                    dims = self.output_dims(dims)?;
                    s
                }
            };
            saved.push(s);
        }
        Ok(Trace {
            input: x.to_vec(),
            saved,
            dims,
        })
    }

    /// Forward pass returning only the output (NHWC) and its shape.
    pub fn infer(&self, x: &[f32], d: Nhwc) -> Result<(Vec<f32>, Nhwc)> {
        let mut t = self.forward(x, d)?;
        let dims = t.dims;
        let out = match t.saved.pop() {
            Some(Saved::Conv { out, .. } | Saved::Pool { out, .. } | Saved::Graph { out, .. }) => {
                out
            }
            None => x.to_vec(),
        };
        Ok((out, dims))
    }

    /// Backward pass: gradients of every trainable tensor (in [`Block::params`] order) given the
    /// gradient of the block output. The input gradient is computed only when `want_input_grad`
    /// is set (the frozen part below never needs it, which saves a third of the first layer's
    /// backward work).
    // Over 80 lines: the reverse layer loop of the block keeps its gradient buffers in scope across
    // layers.
    pub fn backward(
        &self,
        trace: Trace,
        grad_out: Vec<f32>,
        want_input_grad: bool,
    ) -> Result<(Grads, Option<Vec<f32>>)> {
        if grad_out.len() != trace.dims.len() {
            return Err(Error::Invalid(format!(
                "output gradient holds {} values, the block output {}",
                grad_out.len(),
                trace.dims.len()
            )));
        }
        // Per layer, last layer first.
        let mut grads: Vec<Vec<Vec<f32>>> = Vec::new();
        let mut g = grad_out;
        let Trace {
            input: block_input,
            mut saved,
            ..
        } = trace;
        let mut layer_index = self.layers.len();
        let p = self.precision;
        while let Some(s) = saved.pop() {
            layer_index -= 1;
            let first = saved.is_empty();
            let x: &[f32] = saved.last().map(Saved::out).unwrap_or(&block_input);
            match (s, &self.layers[layer_index]) {
                (Saved::Pool { arg, input, out }, Layer::MaxPool { .. }) => {
                    let mut dx = vec![0f32; input.len()];
                    conv::maxpool2x2_backward(&g, &out, &arg, input, false, &mut dx);
                    g = dx;
                }
                (Saved::Conv { out, input }, Layer::Conv(c)) => {
                    if c.relu {
                        conv::relu_backward(&mut g, &out);
                    }
                    drop(out);
                    let bias = conv::column_sums(&g, c.cout);
                    let mut wm = vec![0f32; c.wm.len()];
                    convolve::weight_grad(
                        Run::new(p, Threads::All),
                        x,
                        input,
                        1,
                        &g,
                        c.cout,
                        &mut wm,
                    );
                    grads.push(vec![wm, bias]);
                    if first && !want_input_grad {
                        g = Vec::new();
                    } else {
                        let mut dx = vec![0f32; input.len()];
                        convolve::input_grad(
                            Run::new(p, Threads::All),
                            &g,
                            input,
                            1,
                            &c.wm,
                            c.cout,
                            &mut dx,
                        );
                        g = dx;
                    }
                }
                (Saved::Graph { nchw, input, .. }, Layer::Graph(layer)) => {
                    if want_input_grad {
                        return Err(Error::Invalid(
                            "the input gradient of a graph block is not computed".into(),
                        ));
                    }
                    let chw = [input.c, input.h, input.w];
                    grads.push(layer.net.gradients(&nchw, chw, &g, &layer.device)?);
                    g = Vec::new();
                }
                _ => {
                    return Err(Error::Invalid(
                        "trace does not match the block's layers".into(),
                    ))
                }
            }
        }
        grads.reverse();
        Ok((
            grads.into_iter().flatten().collect(),
            want_input_grad.then_some(g),
        ))
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }
}

pub use train::kernels::conv::{nchw_to_nhwc, nhwc_to_nchw};
