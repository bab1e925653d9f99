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

/// True for a `MaxPool` that is a plain 2×2 stride-2 pool without padding (VGG's): the only pool the
/// chains of `accel::graph` and `finetune::graph` rebuild.
pub fn is_plain_2x2_pool(n: &NodeProto) -> bool {
    ints(n, "kernel_shape").as_deref() == Some(&[2, 2][..])
        && ints(n, "strides").is_some_and(|s| s == [2, 2])
        && ints(n, "pads").is_none_or(|p| p.iter().all(|&v| v == 0))
        && ints(n, "dilations").is_none_or(|d| d.iter().all(|&v| v == 1))
        && int(n, "ceil_mode").unwrap_or(0) == 0
        && matches!(
            string(n, "auto_pad").as_deref(),
            None | Some("") | Some("NOTSET") | Some("VALID")
        )
        && n.output.iter().skip(1).all(|o| o.is_empty())
}

/// True for the ops of a quantized (int8) graph: QDQ pairs and the integer convolutions.
pub fn is_quantization(n: &NodeProto) -> bool {
    matches!(
        op(n),
        "QuantizeLinear" | "DequantizeLinear" | "QLinearConv" | "ConvInteger"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{int_attr, node};
    use crate::onnx::proto::attribute_proto::AttributeType;

    fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    fn pool(extra: Vec<AttributeProto>) -> NodeProto {
        let mut a = vec![
            ints_attr("kernel_shape", &[2, 2]),
            ints_attr("strides", &[2, 2]),
        ];
        a.extend(extra);
        node("MaxPool", "p", &["x"], "y", a)
    }

    #[test]
    fn only_vggs_pool_is_plain() {
        assert!(is_plain_2x2_pool(&pool(vec![])));
        assert!(is_plain_2x2_pool(&pool(vec![ints_attr(
            "pads",
            &[0, 0, 0, 0]
        )])));
        assert!(!is_plain_2x2_pool(&pool(vec![ints_attr(
            "pads",
            &[1, 1, 1, 1]
        )])));
        assert!(!is_plain_2x2_pool(&pool(vec![int_attr("ceil_mode", 1)])));
        let mut wide = pool(vec![]);
        wide.attribute[0].ints = vec![3, 3];
        assert!(!is_plain_2x2_pool(&wide));
        let mut indices = pool(vec![]);
        indices.output.push("argmax".into());
        assert!(!is_plain_2x2_pool(&indices));
    }
}
