//! Reading one ONNX node: its op type, a name for messages, and its attributes by name — the
//! accessors every crate that walks a graph (`accel::graph`, `finetune::graph`) shares.

use super::proto::{AttributeProto, NodeProto};

/// The op type of a node (`""` when missing).
pub fn op(n: &NodeProto) -> &str {
    n.op_type.as_deref().unwrap_or("")
}

/// A name for messages: the node's name, else its first output, else `?`.
pub fn label(n: &NodeProto) -> String {
    n.name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| n.output.first().cloned())
        .unwrap_or_else(|| "?".into())
}

/// An attribute of a node by name.
pub fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

/// An `INTS` attribute by name.
pub fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

/// An `INT` attribute by name.
pub fn int(n: &NodeProto, name: &str) -> Option<i64> {
    attr(n, name).and_then(|a| a.i)
}

/// A `FLOAT` attribute by name.
pub fn float(n: &NodeProto, name: &str) -> Option<f32> {
    attr(n, name).and_then(|a| a.f)
}

/// A `STRING` attribute by name (lossy UTF-8).
pub fn string(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

/// True for the ops of a quantized (int8) graph: QDQ pairs and the integer convolutions.
pub fn is_quantization(n: &NodeProto) -> bool {
    matches!(
        op(n),
        "QuantizeLinear" | "DequantizeLinear" | "QLinearConv" | "ConvInteger"
    )
}
