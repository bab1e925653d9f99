//! Small constructors for ONNX protos (nodes, attributes, initializers, value infos), shared by the graph
//! edits of the quantizer, the synthetic test models and the fine-tuned model export.

use crate::onnx::proto::{
    attribute_proto::AttributeType, type_proto, AttributeProto, NodeProto, TensorProto, TypeProto,
    ValueInfoProto,
};

pub use super::graph::{decode, encode, tensor_value, DimSpec};

/// ONNX element types used here.
pub const FLOAT: i32 = 1;
pub const INT8: i32 = 3;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;

/// A node with one output.
pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: Some(name.to_string()),
        op_type: Some(op.to_string()),
        attribute,
        ..Default::default()
    }
}

/// An `INT` attribute.
pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// A `STRING` attribute.
pub fn string_attr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// A float tensor value with unknown shape.
pub fn float_value(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: None,
            })),
        }),
        ..Default::default()
    }
}

/// A raw-data initializer.
pub fn tensor(name: &str, data_type: i32, dims: &[usize], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type),
        name: Some(name.to_string()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Float initializer (`dims` empty for a scalar).
pub fn f32_tensor(name: &str, dims: &[usize], v: &[f32]) -> TensorProto {
    tensor(
        name,
        FLOAT,
        dims,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// int32 initializer.
pub fn i32_tensor(name: &str, dims: &[usize], v: &[i32]) -> TensorProto {
    tensor(
        name,
        INT32,
        dims,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// int64 initializer.
pub fn i64_tensor(name: &str, dims: &[usize], v: &[i64]) -> TensorProto {
    tensor(
        name,
        INT64,
        dims,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// int8 (`INT8`) or uint8 (`UINT8`) initializer from values already in range.
pub fn byte_tensor(name: &str, data_type: i32, dims: &[usize], v: &[i32]) -> TensorProto {
    tensor(name, data_type, dims, v.iter().map(|&x| x as u8).collect())
}
