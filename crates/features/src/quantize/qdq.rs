//! The QDQ rewrite: which tensors get QuantizeLinear/DequantizeLinear pairs (every Conv's activation input
//! and output, with a following Relu folded into the output's range, and MaxPool outputs sharing their
//! input's parameters), per-channel int8 weights and int32 biases behind DequantizeLinear, so that ONNX
//! Runtime fuses each group into QLinearConv and runs MaxPool on 8-bit data. Everything else stays FP32.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message;

use super::arith::{
    activation_params, quantize_bias, quantize_weights, ActType, QParams, WeightRange,
};
use crate::onnx::build::{byte_tensor, f32_tensor, i32_tensor, int_attr, node, FLOAT, INT8};
use crate::onnx::node::{is_quantization, op};
use crate::onnx::proto::{ModelProto, NodeProto, OperatorSetIdProto, TensorProto};
use crate::{Error, Result};

/// Lowest default-domain opset with per-channel `DequantizeLinear` (the `axis` attribute).
const MIN_OPSET: i64 = 13;

/// Ops whose meaning does not change between opsets 11 and 13, so a model using only these can be
/// moved to opset 13 for per-channel quantization.
const OPSET_SAFE: &[&str] = &[
    "Conv",
    "Relu",
    "LeakyRelu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Transpose",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "BatchNormalization",
    "Sigmoid",
    "Tanh",
    "Dropout",
    "Flatten",
    "Gemm",
    "MatMul",
    "Concat",
    "Reshape",
];

/// What the rewrite will do to one Conv.
#[derive(Debug, Clone)]
pub(crate) struct ConvPlan {
    pub node: usize,
    pub weight: String,
    pub bias: Option<String>,
    /// Activation input.
    pub input: String,
    /// Tensor quantized after the Conv: the Relu's output when a Relu is folded in, else the Conv's output.
    pub output: String,
    /// The folded Relu node.
    pub relu: Option<usize>,
}

/// Where a quantized tensor's parameters come from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    /// Its own calibrated range; `relu` when a folded Relu guarantees it is ≥ 0.
    Calibrated { relu: bool },
    /// The parameters of another quantized tensor (MaxPool output = its input's).
    SameAs(String),
}

/// The quantization plan of a model, made before calibration.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub convs: Vec<ConvPlan>,
    /// Quantized activation tensors in graph order, with where their parameters come from.
    pub tensors: Vec<(String, Source)>,
    /// Ops that stay FP32, as `OpType 'node name'`.
    pub fp32_ops: Vec<String>,
    /// Convs that stay FP32, with the reason.
    pub fp32_convs: Vec<String>,
}

impl Plan {
    /// Tensors whose min/max calibration must measure.
    pub fn calib_tensors(&self) -> Vec<String> {
        self.tensors
            .iter()
            .filter(|(_, s)| matches!(s, Source::Calibrated { .. }))
            .map(|(t, _)| t.clone())
            .collect()
    }
}

fn label(n: &NodeProto) -> String {
    let name = n
        .name
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(n.output.first().map(String::as_str))
        .unwrap_or("?");
    format!("{} '{name}'", op(n))
}

/// Decodes a model for quantization: it must have a graph and no quantization of its own.
pub(crate) fn decode(bytes: &[u8]) -> Result<ModelProto> {
    let m = ModelProto::decode(bytes).map_err(|e| {
        Error::Graph(format!(
            "not a valid ONNX protobuf ({e}); re-export the model"
        ))
    })?;
    let g = m
        .graph
        .as_ref()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    if let Some(n) = g.node.iter().find(|n| is_quantization(n)) {
        return Err(Error::Graph(format!(
            "the model is already quantized ({} found); pass the FP32 model",
            label(n)
        )));
    }
    Ok(m)
}

/// Plans the rewrite of `m` (see the module docs).
// Over 80 lines: one pass over the graph's nodes in order; every arm reads and extends the same
// maps of tensors seen.
pub(crate) fn plan(m: &ModelProto) -> Result<Plan> {
    let g = m
        .graph
        .as_ref()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    let float_inits: HashMap<&str, &TensorProto> = g
        .initializer
        .iter()
        .filter(|t| t.data_type == Some(FLOAT))
        .filter_map(|t| Some((t.name.as_deref()?, t)))
        .collect();
    let graph_outputs: HashSet<&str> = g.output.iter().filter_map(|o| o.name.as_deref()).collect();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for t in n.input.iter().filter(|t| !t.is_empty()) {
            consumers.entry(t.as_str()).or_default().push(i);
        }
    }

    let mut convs = Vec::new();
    let mut fp32_convs = Vec::new();
    let mut folded: HashSet<usize> = HashSet::new();
    let mut handled: HashSet<usize> = HashSet::new();
    let mut tensors: Vec<(String, Source)> = Vec::new();
    let mut known: HashMap<String, String> = HashMap::new(); // tensor → tensor owning its parameters
    fn add(
        tensors: &mut Vec<(String, Source)>,
        known: &mut HashMap<String, String>,
        t: &str,
        s: Source,
    ) {
        if !known.contains_key(t) {
            let root = match &s {
                Source::SameAs(r) => r.clone(),
                Source::Calibrated { .. } => t.to_string(),
            };
            known.insert(t.to_string(), root);
            tensors.push((t.to_string(), s));
        }
    }
    for (i, n) in g.node.iter().enumerate() {
        match op(n) {
            "Conv" => {
                let reason = conv_unsupported(n, &float_inits);
                if let Some(reason) = reason {
                    fp32_convs.push(format!("{}: {reason}", label(n)));
                    continue;
                }
                let y = n.output[0].as_str();
                let relu = match consumers.get(y).map(Vec::as_slice) {
                    Some(&[c])
                        if op(&g.node[c]) == "Relu"
                            && !graph_outputs.contains(y)
                            && g.node[c].output.first().is_some_and(|o| !o.is_empty()) =>
                    {
                        Some(c)
                    }
                    _ => None,
                };
                let output = relu.map_or(y.to_string(), |r| g.node[r].output[0].clone());
                let input = n.input[0].clone();
                add(
                    &mut tensors,
                    &mut known,
                    &input,
                    Source::Calibrated { relu: false },
                );
                add(
                    &mut tensors,
                    &mut known,
                    &output,
                    Source::Calibrated {
                        relu: relu.is_some(),
                    },
                );
                if let Some(r) = relu {
                    folded.insert(r);
                }
                handled.insert(i);
                convs.push(ConvPlan {
                    node: i,
                    weight: n.input[1].clone(),
                    bias: n.input.get(2).filter(|b| !b.is_empty()).cloned(),
                    input,
                    output,
                    relu,
                });
            }
            "MaxPool" => {
                let single_output = n.output.iter().filter(|o| !o.is_empty()).count() == 1;
                let input = n.input.first().map(String::as_str).unwrap_or("");
                if let (true, Some(root)) = (single_output, known.get(input).cloned()) {
                    add(&mut tensors, &mut known, &n.output[0], Source::SameAs(root));
                    handled.insert(i);
                }
            }
            _ => {}
        }
    }
    let fp32_ops = g
        .node
        .iter()
        .enumerate()
        .filter(|(i, _)| !handled.contains(i) && !folded.contains(i))
        .map(|(_, n)| label(n))
        .collect();
    Ok(Plan {
        convs,
        tensors,
        fp32_ops,
        fp32_convs,
    })
}

/// Why a Conv cannot be quantized, or `None` when it can.
fn conv_unsupported(n: &NodeProto, float_inits: &HashMap<&str, &TensorProto>) -> Option<String> {
    let x = n.input.first().filter(|s| !s.is_empty());
    let w = n.input.get(1).filter(|s| !s.is_empty());
    let (Some(_), Some(w)) = (x, w) else {
        return Some("missing input or weight".into());
    };
    let Some(wt) = float_inits.get(w.as_str()) else {
        return Some(format!("weight '{w}' is not a float32 initializer"));
    };
    if wt.dims.len() < 3 {
        return Some(format!("weight '{w}' has {} dimensions", wt.dims.len()));
    }
    if n.output.first().is_none_or(|o| o.is_empty()) {
        return Some("no output".into());
    }
    match n.input.get(2).filter(|s| !s.is_empty()) {
        None => None,
        Some(b) => match float_inits.get(b.as_str()) {
            Some(bt) if bt.dims.len() == 1 && bt.dims[0] == wt.dims[0] => None,
            _ => Some(format!(
                "bias '{b}' is not a float32 initializer of {} values",
                wt.dims[0]
            )),
        },
    }
}

/// Result of [`rewrite`].
#[derive(Debug, Clone)]
pub(crate) struct Rewritten {
    pub model: ModelProto,
    /// Names of the quantized Conv nodes.
    pub convs: Vec<String>,
}

/// Applies `plan` to the model in `bytes` with calibrated `ranges` (tensor → (min, max)): the
/// activation parameters, Q → DQ after the quantized graph inputs, each node with its Conv
/// weights and biases quantized and its quantized outputs wrapped in Q → DQ, then the clean-up.
pub(crate) fn rewrite(
    bytes: &[u8],
    plan: &Plan,
    ranges: &BTreeMap<String, (f32, f32)>,
    act: ActType,
    weights: WeightRange,
) -> Result<Rewritten> {
    let mut m = decode(bytes)?;
    ensure_opset(&mut m)?;
    let weight_names: Vec<&str> = plan
        .convs
        .iter()
        .flat_map(|c| std::iter::once(c.weight.as_str()).chain(c.bias.as_deref()))
        .collect();
    let values: HashMap<&str, (Vec<usize>, Vec<f32>)> = weight_names
        .iter()
        .copied()
        .zip(crate::onnx::initializers_f32(bytes, &weight_names)?)
        .collect();
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    let mut names = Names::new(g);
    let acts = activation_parameters(g, &mut names, plan, ranges, act)?;

    let graph_inputs: HashSet<String> = g.input.iter().filter_map(|v| v.name.clone()).collect();
    let old_nodes = std::mem::take(&mut g.node);
    let conv_at: HashMap<usize, &ConvPlan> = plan.convs.iter().map(|c| (c.node, c)).collect();
    let folded: HashSet<usize> = plan.convs.iter().filter_map(|c| c.relu).collect();
    let mut out = NewNodes {
        nodes: Vec::with_capacity(old_nodes.len() * 3),
        replaced_inputs: HashMap::new(),
        removed_floats: HashSet::new(),
    };
    let mut conv_names = Vec::new();
    quantize_graph_inputs(&mut out, &mut names, plan, &graph_inputs, &acts);
    for (i, mut n) in old_nodes.into_iter().enumerate() {
        if folded.contains(&i) {
            continue;
        }
        for inp in n.input.iter_mut() {
            if let Some(r) = out.replaced_inputs.get(inp.as_str()) {
                *inp = r.clone();
            }
        }
        if let Some(c) = conv_at.get(&i) {
            conv_names.push(n.name.clone().unwrap_or_else(|| c.output.clone()));
            let weights_in = ConvWeights {
                values: &values,
                acts: &acts,
                range: weights,
            };
            quantize_conv(g, &mut out, &mut names, &mut n, c, &weights_in)?;
        }
        let after = wrap_quantized_outputs(&mut n, &mut names, &acts);
        out.nodes.push(n);
        out.nodes.extend(after);
    }
    g.node = out.nodes;
    drop_dead(g, out.removed_floats);
    Ok(Rewritten {
        model: m,
        convs: conv_names,
    })
}

/// The quantization parameters of every planned activation tensor and the names of their
/// scale / zero-point initializers (added to `g`), in graph order (a `SameAs` source always
/// comes after its root).
struct Activations {
    params: BTreeMap<String, QParams>,
    names: HashMap<String, (String, String)>,
}

fn activation_parameters(
    g: &mut crate::onnx::proto::GraphProto,
    names: &mut Names,
    plan: &Plan,
    ranges: &BTreeMap<String, (f32, f32)>,
    act: ActType,
) -> Result<Activations> {
    let (qmin, _) = act.range();
    let mut a = Activations {
        params: BTreeMap::new(),
        names: HashMap::new(),
    };
    for (t, src) in &plan.tensors {
        match src {
            Source::Calibrated { relu } => {
                let &(lo, hi) = ranges.get(t).ok_or_else(|| {
                    Error::Graph(format!("calibration measured no range for tensor '{t}'"))
                })?;
                let mut p = activation_params(lo, hi, act);
                if *relu {
                    // The folded Relu clamps at 0, which the quantized output does only with zero point = qmin.
                    p.zero_point = qmin;
                }
                let scale = names.fresh(&format!("{t}_scale"));
                let zp = names.fresh(&format!("{t}_zero_point"));
                g.initializer.push(f32_tensor(&scale, &[], &[p.scale]));
                g.initializer
                    .push(byte_tensor(&zp, act.onnx_type(), &[], &[p.zero_point]));
                a.params.insert(t.clone(), p);
                a.names.insert(t.clone(), (scale, zp));
            }
            Source::SameAs(root) => {
                let missing = || Error::Graph(format!("no parameters for '{root}'"));
                let p = *a.params.get(root).ok_or_else(missing)?;
                let n = a.names.get(root).cloned().ok_or_else(missing)?;
                a.params.insert(t.clone(), p);
                a.names.insert(t.clone(), n);
            }
        }
    }
    Ok(a)
}

/// The rewritten node list and what the rewrite replaced.
struct NewNodes {
    nodes: Vec<NodeProto>,
    /// Graph inputs whose consumers read a DequantizeLinear output instead.
    replaced_inputs: HashMap<String, String>,
    /// Float weights and biases that quantized copies replaced.
    removed_floats: HashSet<String>,
}

/// Q → DQ up front for the quantized graph inputs (the image); consumers read the DQ output.
fn quantize_graph_inputs(
    out: &mut NewNodes,
    names: &mut Names,
    plan: &Plan,
    graph_inputs: &HashSet<String>,
    acts: &Activations,
) {
    for (t, _) in plan
        .tensors
        .iter()
        .filter(|(t, _)| graph_inputs.contains(t))
    {
        let (scale, zp) = &acts.names[t];
        let q = names.fresh(&format!("{t}_QuantizeLinear_Output"));
        let dq = names.fresh(&format!("{t}_DequantizeLinear_Output"));
        out.nodes.push(node(
            "QuantizeLinear",
            &format!("{t}_QuantizeLinear"),
            &[t, scale, zp],
            &q,
            vec![],
        ));
        out.nodes.push(node(
            "DequantizeLinear",
            &format!("{t}_DequantizeLinear"),
            &[&q, scale, zp],
            &dq,
            vec![],
        ));
        out.replaced_inputs.insert(t.clone(), dq);
    }
}

/// What a Conv's weights are quantized from.
struct ConvWeights<'a> {
    values: &'a HashMap<&'a str, (Vec<usize>, Vec<f32>)>,
    acts: &'a Activations,
    range: WeightRange,
}

/// Replaces the Conv `n`'s float weight (per output channel, int8) and bias (int32, scale =
/// input scale × weight scale) by DequantizeLinear of quantized initializers added to `g`.
fn quantize_conv(
    g: &mut crate::onnx::proto::GraphProto,
    out: &mut NewNodes,
    names: &mut Names,
    n: &mut NodeProto,
    c: &ConvPlan,
    w_in: &ConvWeights<'_>,
) -> Result<()> {
    let in_scale = w_in
        .acts
        .params
        .get(&c.input)
        .ok_or_else(|| Error::Graph(format!("no parameters for '{}'", c.input)))?
        .scale;
    let (wdims, w) = &w_in.values[c.weight.as_str()];
    let cw = quantize_weights(w, wdims[0], w_in.range)?;
    let wq = names.fresh(&format!("{}_quantized", c.weight));
    let ws = names.fresh(&format!("{}_scale", c.weight));
    let wz = names.fresh(&format!("{}_zero_point", c.weight));
    let wdq = names.fresh(&format!("{}_DequantizeLinear_Output", c.weight));
    let wvals: Vec<i32> = cw.values.iter().map(|&v| i32::from(v)).collect();
    g.initializer.push(byte_tensor(&wq, INT8, wdims, &wvals));
    g.initializer.push(f32_tensor(&ws, &[wdims[0]], &cw.scales));
    g.initializer
        .push(byte_tensor(&wz, INT8, &[wdims[0]], &vec![0; wdims[0]]));
    out.nodes.push(node(
        "DequantizeLinear",
        &format!("{wq}_DequantizeLinear"),
        &[&wq, &ws, &wz],
        &wdq,
        vec![int_attr("axis", 0)],
    ));
    n.input[1] = wdq;
    out.removed_floats.insert(c.weight.clone());
    if let Some(b) = &c.bias {
        let (_, bv) = &w_in.values[b.as_str()];
        let (bq_vals, bscales) = quantize_bias(bv, in_scale, &cw.scales)?;
        let bq = names.fresh(&format!("{b}_quantized"));
        let bs = names.fresh(&format!("{b}_quantized_scale"));
        let bz = names.fresh(&format!("{b}_quantized_zero_point"));
        let bdq = names.fresh(&format!("{b}_DequantizeLinear_Output"));
        g.initializer.push(i32_tensor(&bq, &[bv.len()], &bq_vals));
        g.initializer.push(f32_tensor(&bs, &[bv.len()], &bscales));
        g.initializer
            .push(i32_tensor(&bz, &[bv.len()], &vec![0; bv.len()]));
        out.nodes.push(node(
            "DequantizeLinear",
            &format!("{bq}_DequantizeLinear"),
            &[&bq, &bs, &bz],
            &bdq,
            vec![int_attr("axis", 0)],
        ));
        n.input[2] = bdq;
        out.removed_floats.insert(b.clone());
    }
    n.output[0] = c.output.clone();
    Ok(())
}

/// For each quantized output of `n`: the producer writes `<t>_QuantizeLinear_Input` and the
/// returned Q → DQ nodes restore `<t>`.
fn wrap_quantized_outputs(
    n: &mut NodeProto,
    names: &mut Names,
    acts: &Activations,
) -> Vec<NodeProto> {
    let mut after = Vec::new();
    for out in n.output.iter_mut() {
        let Some((scale, zp)) = acts.names.get(out.as_str()) else {
            continue;
        };
        let t = out.clone();
        let pre = names.fresh(&format!("{t}_QuantizeLinear_Input"));
        let q = names.fresh(&format!("{t}_QuantizeLinear_Output"));
        *out = pre.clone();
        after.push(node(
            "QuantizeLinear",
            &format!("{t}_QuantizeLinear"),
            &[&pre, scale, zp],
            &q,
            vec![],
        ));
        after.push(node(
            "DequantizeLinear",
            &format!("{t}_DequantizeLinear"),
            &[&q, scale, zp],
            &t,
            vec![],
        ));
    }
    after
}

/// Drops the float weights nothing reads any more, and value_info of tensors that no longer exist.
fn drop_dead(g: &mut crate::onnx::proto::GraphProto, removed_floats: HashSet<String>) {
    let read: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let dead: HashSet<String> = removed_floats
        .into_iter()
        .filter(|w| !read.contains(w.as_str()))
        .collect();
    g.initializer
        .retain(|t| t.name.as_ref().is_none_or(|n| !dead.contains(n)));
    g.input
        .retain(|v| v.name.as_ref().is_none_or(|n| !dead.contains(n)));
    let produced: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    g.value_info
        .retain(|v| v.name.as_ref().is_some_and(|n| produced.contains(n)));
}

/// Raises the default-domain opset to 13 (per-channel DequantizeLinear) when every op keeps its meaning.
fn ensure_opset(m: &mut ModelProto) -> Result<()> {
    let is_default =
        |o: &OperatorSetIdProto| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx"));
    let current = m
        .opset_import
        .iter()
        .find(|o| is_default(o))
        .and_then(|o| o.version)
        .unwrap_or(1);
    if current < MIN_OPSET {
        let g = m
            .graph
            .as_ref()
            .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
        let unsafe_ops: Vec<String> = g
            .node
            .iter()
            .filter(|n| {
                n.domain.as_deref().is_none_or(str::is_empty) && !OPSET_SAFE.contains(&op(n))
            })
            .map(label)
            .collect();
        if current < 11 || !unsafe_ops.is_empty() {
            return Err(Error::Graph(format!(
                "the model uses opset {current}; int8 quantization needs opset {MIN_OPSET} and {} — re-export the \
                 model with opset 13 or newer",
                if unsafe_ops.is_empty() {
                    "opsets before 11 changed Conv/Pad semantics".to_string()
                } else {
                    format!("these ops change meaning across opsets: {}", unsafe_ops.join(", "))
                }
            )));
        }
        match m.opset_import.iter_mut().find(|o| is_default(o)) {
            Some(o) => o.version = Some(MIN_OPSET),
            None => m.opset_import.push(OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(MIN_OPSET),
            }),
        }
    }
    if m.ir_version.unwrap_or(0) < 7 {
        m.ir_version = Some(7);
    }
    Ok(())
}

/// Unique tensor names: every name already used by the graph, plus the ones handed out.
struct Names {
    used: HashSet<String>,
}

impl Names {
    fn new(g: &crate::onnx::proto::GraphProto) -> Self {
        let mut used: HashSet<String> = HashSet::new();
        for n in &g.node {
            used.extend(n.input.iter().chain(&n.output).cloned());
        }
        used.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
        used.extend(
            g.input
                .iter()
                .chain(&g.output)
                .chain(&g.value_info)
                .filter_map(|v| v.name.clone()),
        );
        Names { used }
    }

    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }
}
