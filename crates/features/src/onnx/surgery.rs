//! Cutting a model down to one output: the conv base (last MaxPool before the classifier) or a named
//! tensor; prunes nodes, initializers and inputs, frees batch/spatial dims and normalises the output to NCHW.

use std::collections::{HashMap, HashSet};

use super::graph::{
    ancestors, attr_ints, closest, decode, dims, elem_type, encode, find_image_input,
    fmt_op_counts, graph, initializer_names, node_reads, op, producers, tensor_value, topo_order,
    vi_name, Dim, DimSpec, ImageInput, FLOAT,
};
use super::proto::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto,
};
use super::{CutModel, Layout};
use crate::{Error, Result};

/// Ops that start the classifier of a VGG-style network.
const CLASSIFIER_OPS: &[&str] = &["Flatten", "Reshape", "Gemm", "MatMul"];

/// Ops whose output has the same channel count (and layout) as their first input.
const CHANNEL_PRESERVING: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Sigmoid",
    "Tanh",
    "Clip",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Identity",
    "Dropout",
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "BatchNormalization",
    "InstanceNormalization",
    "LRN",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pad",
    "Cast",
    "Transpose",
];

/// Ops after which a tensor is no longer a 4-D image-like map.
const LAYOUT_BREAKING: &[&str] = &[
    "Flatten",
    "Reshape",
    "Gemm",
    "MatMul",
    "Squeeze",
    "Unsqueeze",
    "Shape",
];

/// Cuts the conv base: everything up to the output of the last MaxPool that comes before the first
/// Flatten/Reshape/Gemm/MatMul (the classifier). An already-cut conv base comes back unchanged apart
/// from freed batch/spatial dims.
pub fn cut_conv_base(model: &[u8]) -> Result<CutModel> {
    let m = decode(model)?;
    let g = graph(&m)?;
    let order = topo_order(g)?;
    let target = conv_base_output(g, &order)?;
    cut_decoded(m, &target)
}

/// The frozen part for fine-tuning: everything needed to compute `tensor`, which becomes the only output.
pub fn cut_at(model: &[u8], tensor: &str) -> Result<CutModel> {
    let m = decode(model)?;
    cut_decoded(m, tensor)
}

/// Output tensor of the last MaxPool before the classifier.
fn conv_base_output(g: &GraphProto, order: &[usize]) -> Result<String> {
    let prod = producers(g);
    let classifier = order
        .iter()
        .copied()
        .find(|&i| CLASSIFIER_OPS.contains(&op(&g.node[i])));
    let allowed: Option<HashSet<usize>> = classifier.map(|c| {
        let reads: Vec<&str> = node_reads(&g.node[c]);
        ancestors(g, &prod, &reads)
    });
    let pool = order
        .iter()
        .rev()
        .copied()
        .filter(|i| allowed.as_ref().is_none_or(|a| a.contains(i)))
        .find(|&i| {
            op(&g.node[i]) == "MaxPool" && g.node[i].output.first().is_some_and(|o| !o.is_empty())
        });
    match pool {
        Some(i) => Ok(g.node[i].output[0].clone()),
        None => {
            let first = classifier
                .map(|c| {
                    format!(
                        " (the classifier starts at {} '{}')",
                        op(&g.node[c]),
                        node_label(&g.node[c])
                    )
                })
                .unwrap_or_default();
            Err(Error::Graph(format!(
                "no MaxPool before the classifier{first}; ops found: {}. The conv-base cut expects a VGG-style \
                 network whose convolutional part ends in MaxPool: use a VGG16 model, or name the tensor to cut \
                 at in a manifest for this model (`features = \"TENSOR\"`, see models/README.md)",
                fmt_op_counts(g)
            )))
        }
    }
}

fn node_label(n: &NodeProto) -> &str {
    n.name
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(n.output.first().map(String::as_str))
        .unwrap_or("?")
}

/// Error for a tensor name that the graph does not have, with suggestions.
fn not_found(g: &GraphProto, tensor: &str) -> Error {
    let names: Vec<&str> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let near = closest(tensor, names.iter().copied(), 5);
    let pools: Vec<&str> = g
        .node
        .iter()
        .filter(|n| op(n).contains("Pool"))
        .filter_map(|n| n.output.first().map(String::as_str))
        .collect();
    let pools_text = if pools.is_empty() {
        String::new()
    } else {
        let shown: Vec<&str> = pools.iter().rev().take(8).rev().copied().collect();
        format!("; pool outputs: {}", shown.join(", "))
    };
    Error::Graph(format!(
        "tensor '{tensor}' is not produced by any node; closest names: {}{pools_text}. \
         Pass one of these (`describe` lists the graph)",
        near.join(", ")
    ))
}

/// Layout of every tensor reachable from the image input, following Transposes.
fn tensor_layouts<'a>(
    g: &'a GraphProto,
    order: &[usize],
    img: &'a ImageInput,
) -> HashMap<&'a str, Layout> {
    let mut known: HashMap<&str, Layout> = HashMap::new();
    known.insert(img.name.as_str(), img.layout);
    for &i in order {
        let n = &g.node[i];
        let inl = n.input.iter().find_map(|t| known.get(t.as_str()).copied());
        let Some(inl) = inl else { continue };
        let out = match op(n) {
            "Transpose" => {
                let first = n.input.first().and_then(|t| known.get(t.as_str()).copied());
                match (first, attr_ints(n, "perm")) {
                    (Some(Layout::Nhwc), Some([0, 3, 1, 2])) => Some(Layout::Nchw),
                    (Some(Layout::Nchw), Some([0, 2, 3, 1])) => Some(Layout::Nhwc),
                    _ => None,
                }
            }
            o if LAYOUT_BREAKING.contains(&o) => None,
            _ => Some(inl),
        };
        if let Some(l) = out {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                known.insert(o.as_str(), l);
            }
        }
    }
    known
}

/// Channels of `tensor` from the weight of the last Conv before it (through channel-preserving ops).
fn output_channels(g: &GraphProto, prod: &HashMap<&str, usize>, tensor: &str) -> Option<usize> {
    let inits: HashMap<&str, &TensorProto> = g
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.as_deref()?, t)))
        .collect();
    let mut t = tensor;
    for _ in 0..g.node.len() {
        let n = &g.node[*prod.get(t)?];
        match op(n) {
            "Conv" => {
                let w = inits.get(n.input.get(1)?.as_str())?;
                return w
                    .dims
                    .first()
                    .and_then(|&c| usize::try_from(c).ok())
                    .filter(|&c| c > 0);
            }
            o if CHANNEL_PRESERVING.contains(&o) => t = n.input.first()?,
            _ => return None,
        }
    }
    None
}

/// A name not used by any tensor of the graph, derived from `base`.
fn fresh_name(g: &GraphProto, base: &str) -> String {
    let used: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().chain(n.input.iter()))
        .map(String::as_str)
        .chain(g.input.iter().map(vi_name))
        .chain(initializer_names(g))
        .collect();
    let mut name = base.to_string();
    let mut k = 1;
    while used.contains(name.as_str()) {
        k += 1;
        name = format!("{base}_{k}");
    }
    name
}

fn transpose_node(name: &str, input: &str, output: &str, perm: &[i64]) -> NodeProto {
    NodeProto {
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        name: Some(name.to_string()),
        op_type: Some("Transpose".into()),
        attribute: vec![AttributeProto {
            name: Some("perm".into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: perm.to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Keeps what `tensor` needs, makes it the only output (NCHW) and frees the batch and spatial dims.
fn cut_decoded(mut m: ModelProto, tensor: &str) -> Result<CutModel> {
    let g = graph(&m)?;
    let img = find_image_input(g)?;
    let order = topo_order(g)?;
    let prod = producers(g);
    let (kept_order, reads) = kept_nodes(g, &order, &prod, tensor, &img)?;
    let out = output_facts(g, &prod, &kept_order, &img, tensor);
    let init_names: HashSet<String> = initializer_names(g)
        .into_iter()
        .map(str::to_string)
        .collect();
    let (transpose, output) = if out.layout == Some(Layout::Nhwc) {
        let name = fresh_name(g, &format!("{tensor}_nchw"));
        let node = transpose_node(
            &fresh_name(g, &format!("{tensor}_to_nchw")),
            tensor,
            &name,
            &[0, 3, 1, 2],
        );
        (Some(node), name)
    } else {
        (None, tensor.to_string())
    };
    let ir_version = m.ir_version.unwrap_or(0);
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    let mut slots: Vec<Option<NodeProto>> =
        std::mem::take(&mut g.node).into_iter().map(Some).collect();
    g.node = kept_order.iter().filter_map(|&i| slots[i].take()).collect();
    g.node.extend(transpose);
    keep_only_read(g, &reads, &init_names, ir_version, &img.name);
    free_dims(g, &img, &out, &output);
    g.quantization_annotation.retain(|a| {
        a.tensor_name
            .as_ref()
            .is_some_and(|n| reads.contains(n) || *n == output)
    });
    m.training_info.clear();

    Ok(CutModel {
        bytes: encode(&m),
        input: img.name,
        output,
        input_layout: img.layout,
        input_channels: img.channels,
        output_channels: out.channels,
    })
}

/// The nodes `tensor` depends on (in graph order) and every tensor they read, after checking
/// that `tensor` is computed and depends on the image input.
fn kept_nodes(
    g: &GraphProto,
    order: &[usize],
    prod: &HashMap<&str, usize>,
    tensor: &str,
    img: &ImageInput,
) -> Result<(Vec<usize>, HashSet<String>)> {
    if !prod.contains_key(tensor) {
        if g.input.iter().any(|vi| vi_name(vi) == tensor) || initializer_names(g).contains(tensor) {
            return Err(Error::Graph(format!(
                "'{tensor}' is a graph input or initializer, not a computed tensor: cut at a node output such as a \
                 pool output"
            )));
        }
        return Err(not_found(g, tensor));
    }
    let keep = ancestors(g, prod, &[tensor]);
    let kept_order: Vec<usize> = order.iter().copied().filter(|i| keep.contains(i)).collect();
    let reads: HashSet<&str> = kept_order
        .iter()
        .flat_map(|&i| node_reads(&g.node[i]))
        .chain(std::iter::once(tensor))
        .collect();
    if !reads.contains(img.name.as_str()) {
        return Err(Error::Graph(format!(
            "'{tensor}' does not depend on the image input '{}': cut at a tensor computed from the image",
            img.name
        )));
    }
    let reads = reads.into_iter().map(str::to_string).collect();
    Ok((kept_order, reads))
}

/// What is known of the cut tensor: its layout, channels, element type, declared rank, and the
/// image input's element type.
struct OutputFacts {
    layout: Option<Layout>,
    channels: Option<usize>,
    elem: i32,
    declared_rank: Option<usize>,
    input_elem: i32,
}

fn output_facts(
    g: &GraphProto,
    prod: &HashMap<&str, usize>,
    kept_order: &[usize],
    img: &ImageInput,
    tensor: &str,
) -> OutputFacts {
    let layouts = tensor_layouts(g, kept_order, img);
    let layout = layouts.get(tensor).copied();
    let channels = output_channels(g, prod, tensor);
    let declared: Option<_> = g
        .value_info
        .iter()
        .chain(g.output.iter())
        .find(|vi| vi_name(vi) == tensor);
    let declared_elem = declared.and_then(elem_type);
    let declared_rank = declared.and_then(dims).map(|d| d.len());
    let declared_channels = declared
        .and_then(dims)
        .and_then(|d| match (layout, d.as_slice()) {
            (Some(Layout::Nchw), [_, Dim::Fixed(c), _, _])
            | (Some(Layout::Nhwc), [_, _, _, Dim::Fixed(c)]) => usize::try_from(*c).ok(),
            _ => None,
        });
    let input_elem = g
        .input
        .iter()
        .find(|vi| vi_name(vi) == img.name)
        .and_then(elem_type)
        .unwrap_or(FLOAT);
    OutputFacts {
        layout,
        channels: channels.or(declared_channels),
        elem: declared_elem.unwrap_or(input_elem),
        declared_rank,
        input_elem,
    }
}

/// Drops the initializers and inputs nothing kept reads. IR < 4 requires initializers to be
/// listed as inputs; from IR 4 on they are dropped so they fold as constants.
fn keep_only_read(
    g: &mut GraphProto,
    reads: &HashSet<String>,
    init_names: &HashSet<String>,
    ir_version: i64,
    image: &str,
) {
    g.initializer
        .retain(|t| t.name.as_ref().is_some_and(|n| reads.contains(n)));
    g.sparse_initializer.retain(|s| {
        s.values
            .as_ref()
            .and_then(|v| v.name.as_ref())
            .is_some_and(|n| reads.contains(n))
    });
    g.input.retain(|vi| {
        let n = vi_name(vi);
        reads.contains(n) && (ir_version < 4 || !init_names.contains(n) || n == image)
    });
}

/// Frees the batch and spatial dimensions of the image input and of the one output `output`
/// (NCHW, channels when known); drops the old value_info.
fn free_dims(g: &mut GraphProto, img: &ImageInput, out: &OutputFacts, output: &str) {
    for vi in g.input.iter_mut().filter(|vi| vi_name(vi) == img.name) {
        let c = DimSpec::Value(img.channels as i64);
        let d = match img.layout {
            Layout::Nchw => [
                DimSpec::Param("N"),
                c,
                DimSpec::Param("H"),
                DimSpec::Param("W"),
            ],
            Layout::Nhwc => [
                DimSpec::Param("N"),
                DimSpec::Param("H"),
                DimSpec::Param("W"),
                c,
            ],
        };
        *vi = tensor_value(&img.name, out.input_elem, Some(&d));
    }
    let out_dims: Option<Vec<DimSpec>> = if out.layout.is_some() || out.declared_rank == Some(4) {
        let c = out
            .channels
            .map_or(DimSpec::Param("C"), |c| DimSpec::Value(c as i64));
        Some(vec![
            DimSpec::Param("N"),
            c,
            DimSpec::Param("h"),
            DimSpec::Param("w"),
        ])
    } else {
        None
    };
    g.output = vec![tensor_value(output, out.elem, out_dims.as_deref())];
    g.value_info.clear();
}
