//! Shared helpers over decoded ONNX protos: decoding, shapes, attributes, producers, ancestry,
//! topological order and finding the image input.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::proto::tensor_shape_proto::{dimension, Dimension};
use super::proto::{
    type_proto, GraphProto, ModelProto, NodeProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use super::Layout;
use crate::{Error, Result};

/// ONNX `TensorProto.DataType.FLOAT`.
pub(crate) const FLOAT: i32 = 1;

/// The image input of a model, as found by [`image_input`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// Graph input name.
    pub name: String,
    /// Whether the input is `[N, C, H, W]` or `[N, H, W, C]`.
    pub layout: Layout,
    /// 1 or 3.
    pub channels: usize,
}

/// One dimension of a tensor shape as declared in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dim {
    Fixed(i64),
    Sym(String),
    Unknown,
}

/// Decodes a serialized `ModelProto` and checks that it has a non-empty graph.
pub fn decode(model: &[u8]) -> Result<ModelProto> {
    if model.is_empty() {
        return Err(Error::Graph(
            "the model file is empty; re-download or re-export the .onnx file".into(),
        ));
    }
    let m = ModelProto::decode(model).map_err(|e| {
        Error::Graph(format!(
            "not a valid ONNX protobuf ({e}); the file is probably not an .onnx model or is truncated: \
             re-download or re-export it"
        ))
    })?;
    match &m.graph {
        Some(g) if !g.node.is_empty() => Ok(m),
        _ => Err(Error::Graph(
            "the bytes decode as protobuf but hold no ONNX graph nodes; this is not an ONNX model \
             (or an empty one): pass the exported .onnx file"
                .into(),
        )),
    }
}

/// The graph of a model returned by [`decode`] (which guarantees it exists).
pub(crate) fn graph(m: &ModelProto) -> Result<&GraphProto> {
    m.graph
        .as_ref()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))
}

/// Serializes a model.
pub fn encode(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

pub(crate) use super::node::{attr, op};

/// The name of a value (`""` when missing).
pub(crate) fn vi_name(vi: &ValueInfoProto) -> &str {
    vi.name.as_deref().unwrap_or("")
}

/// An `INTS` attribute of a node by name.
pub(crate) fn attr_ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    attr(node, name).map(|a| a.ints.as_slice())
}

/// Every tensor name a node reads, including outer-scope names used inside its subgraphs
/// (If/Loop/Scan bodies), so pruning never drops something a subgraph captures.
pub(crate) fn node_reads(node: &NodeProto) -> Vec<&str> {
    let mut out: Vec<&str> = node
        .input
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    for a in &node.attribute {
        for g in a.g.iter().chain(a.graphs.iter()) {
            for n in &g.node {
                out.extend(node_reads(n));
            }
        }
    }
    out
}

/// Map from tensor name to the index of the node producing it.
pub fn producers(g: &GraphProto) -> HashMap<&str, usize> {
    let mut map = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            map.insert(o.as_str(), i);
        }
    }
    map
}

/// Indices of the nodes needed to compute `targets`, in no particular order.
pub(crate) fn ancestors(
    g: &GraphProto,
    prod: &HashMap<&str, usize>,
    targets: &[&str],
) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut stack: Vec<usize> = targets
        .iter()
        .filter_map(|t| prod.get(t).copied())
        .collect();
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        for t in node_reads(&g.node[i]) {
            if let Some(&p) = prod.get(t) {
                if !seen.contains(&p) {
                    stack.push(p);
                }
            }
        }
    }
    seen
}

/// Node indices in a topological order (the file order when it already is one, which ONNX requires).
pub(crate) fn topo_order(g: &GraphProto) -> Result<Vec<usize>> {
    let prod = producers(g);
    let n = g.node.len();
    let mut indegree = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.node.iter().enumerate() {
        let deps: HashSet<usize> = node_reads(node)
            .iter()
            .filter_map(|t| prod.get(t).copied())
            .collect();
        for d in deps {
            if d != i {
                indegree[i] += 1;
                users[d].push(i);
            }
        }
    }
    // Kahn's algorithm, always taking the lowest ready index so a sorted graph keeps its order.
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() != n {
        return Err(Error::Graph(format!(
            "the graph has a cycle ({} of {n} nodes could not be ordered); the model is corrupt: re-export it",
            n - order.len()
        )));
    }
    Ok(order)
}

/// Declared dims of a tensor value, `None` when it has no tensor shape.
pub(crate) fn dims(vi: &ValueInfoProto) -> Option<Vec<Dim>> {
    let tt = tensor_type(vi)?;
    let shape = tt.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(v)) => Dim::Fixed(*v),
                Some(dimension::Value::DimParam(p)) => Dim::Sym(p.clone()),
                None => Dim::Unknown,
            })
            .collect(),
    )
}

/// The tensor part of a value's type.
pub(crate) fn tensor_type(vi: &ValueInfoProto) -> Option<&type_proto::Tensor> {
    match vi.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(t),
        _ => None,
    }
}

/// Element type of a tensor value.
pub(crate) fn elem_type(vi: &ValueInfoProto) -> Option<i32> {
    tensor_type(vi)?.elem_type
}

/// Short name of an ONNX element type.
pub(crate) fn elem_type_name(t: i32) -> String {
    match t {
        1 => "float".into(),
        2 => "uint8".into(),
        3 => "int8".into(),
        6 => "int32".into(),
        7 => "int64".into(),
        9 => "bool".into(),
        10 => "float16".into(),
        11 => "double".into(),
        16 => "bfloat16".into(),
        other => format!("type{other}"),
    }
}

/// `[N,3,H,W] float`, `[?] ?` for unknown parts.
pub(crate) fn fmt_value(vi: &ValueInfoProto) -> String {
    let shape = match dims(vi) {
        Some(d) => format!(
            "[{}]",
            d.iter()
                .map(|d| match d {
                    Dim::Fixed(v) => v.to_string(),
                    Dim::Sym(s) => s.clone(),
                    Dim::Unknown => "?".into(),
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => "[?]".into(),
    };
    let ty = elem_type(vi)
        .map(elem_type_name)
        .unwrap_or_else(|| "?".into());
    format!("{shape} {ty}")
}

/// A dimension for building shapes.
pub enum DimSpec<'a> {
    Value(i64),
    Param(&'a str),
}

/// A tensor `ValueInfoProto`; `dims: None` leaves the shape unspecified.
pub fn tensor_value(name: &str, elem: i32, dims: Option<&[DimSpec]>) -> ValueInfoProto {
    let shape = dims.map(|ds| TensorShapeProto {
        dim: ds
            .iter()
            .map(|d| Dimension {
                denotation: None,
                value: Some(match d {
                    DimSpec::Value(v) => dimension::Value::DimValue(*v),
                    DimSpec::Param(p) => dimension::Value::DimParam((*p).to_string()),
                }),
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape,
            })),
        }),
        ..Default::default()
    }
}

/// Op counts in first-seen order, e.g. `Conv×13, Relu×13, MaxPool×5`.
pub(crate) fn fmt_op_counts(g: &GraphProto) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for n in &g.node {
        match counts.iter_mut().find(|(o, _)| *o == op(n)) {
            Some((_, c)) => *c += 1,
            None => counts.push((op(n), 1)),
        }
    }
    counts
        .iter()
        .map(|(o, c)| format!("{o}×{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names of the graph's initializers.
pub(crate) fn initializer_names(g: &GraphProto) -> HashSet<&str> {
    g.initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .chain(
            g.sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref()?.name.as_deref()),
        )
        .collect()
}

/// Finds the image input: a real (non-initializer) 4-D input with 1 or 3 channels in dim 1 (NCHW) or
/// dim 3 (NHWC). When both fit, a `Transpose(perm=[0,3,1,2])` consumer decides for NHWC.
pub(crate) fn find_image_input(g: &GraphProto) -> Result<ImageInput> {
    let inits = initializer_names(g);
    let is_channels = |d: &Dim| matches!(d, Dim::Fixed(1) | Dim::Fixed(3));
    for vi in g.input.iter().filter(|vi| !inits.contains(vi_name(vi))) {
        let Some(d) = dims(vi) else { continue };
        if d.len() != 4 {
            continue;
        }
        let name = vi_name(vi).to_string();
        let nchw = is_channels(&d[1]);
        let nhwc = is_channels(&d[3]);
        let layout = match (nchw, nhwc) {
            (true, true) => {
                let transposed = g.node.iter().any(|n| {
                    op(n) == "Transpose"
                        && n.input.first() == Some(&name)
                        && attr_ints(n, "perm") == Some(&[0, 3, 1, 2][..])
                });
                if transposed {
                    Layout::Nhwc
                } else {
                    Layout::Nchw
                }
            }
            (true, false) => Layout::Nchw,
            (false, true) => Layout::Nhwc,
            (false, false) => continue,
        };
        let c = match layout {
            Layout::Nchw => &d[1],
            Layout::Nhwc => &d[3],
        };
        let channels = if let Dim::Fixed(c) = c {
            *c as usize
        } else {
            continue;
        };
        return Ok(ImageInput {
            name,
            layout,
            channels,
        });
    }
    let listed: Vec<String> = g
        .input
        .iter()
        .filter(|vi| !inits.contains(vi_name(vi)))
        .map(|vi| format!("{} {}", vi_name(vi), fmt_value(vi)))
        .collect();
    Err(Error::Graph(format!(
        "no graph input looks like an image (4-D with 1 or 3 channels in dim 1 for NCHW or dim 3 for NHWC); \
         inputs found: {}. Export the model with a [N,3,H,W] or [N,H,W,3] float input",
        if listed.is_empty() { "none".to_string() } else { listed.join("; ") }
    )))
}

/// The image input of a serialized model (name, layout, channels).
pub fn image_input(model: &[u8]) -> Result<ImageInput> {
    let m = decode(model)?;
    find_image_input(graph(&m)?)
}

/// Edit distance between two strings (case-insensitive), for "did you mean" suggestions.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Up to `k` names closest to `wanted`.
pub(crate) fn closest<'a>(
    wanted: &str,
    names: impl IntoIterator<Item = &'a str>,
    k: usize,
) -> Vec<&'a str> {
    let lower = wanted.to_lowercase();
    let score = |n: &str| {
        // Names containing the wanted text (or contained in it) come first.
        let name = n.to_lowercase();
        let related = name.contains(&lower) || lower.contains(&name);
        (usize::from(!related), edit_distance(wanted, n))
    };
    let mut scored: Vec<((usize, usize), &str)> =
        names.into_iter().map(|n| (score(n), n)).collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(k).map(|(_, n)| n).collect()
}
