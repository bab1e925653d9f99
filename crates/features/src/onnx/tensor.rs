//! Reading float initializers (float32, float64, float16, bfloat16; raw or typed storage) out of a model.

use super::graph::{closest, decode, graph, op};
use super::proto::{tensor_proto::DataLocation, GraphProto, TensorProto};
use crate::{Error, Result};

/// A float initializer by name as `(dims, values)`, converted to f32. Also finds `Constant` node values.
pub fn initializer_f32(model: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let mut all = initializers_f32(model, &[name])?;
    all.pop()
        .ok_or_else(|| Error::Graph(format!("initializer '{name}' not found")))
}

/// Several float initializers at once (decodes the model only once), in the order of `names`.
pub fn initializers_f32(model: &[u8], names: &[&str]) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    let m = decode(model)?;
    let g = graph(&m)?;
    names
        .iter()
        .map(|n| find(g, n).and_then(|t| tensor_f32(t, n)))
        .collect()
}

fn find<'a>(g: &'a GraphProto, name: &str) -> Result<&'a TensorProto> {
    if let Some(t) = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
    {
        return Ok(t);
    }
    let constant = g
        .node
        .iter()
        .filter(|n| op(n) == "Constant" && n.output.first().map(String::as_str) == Some(name))
        .find_map(|n| {
            n.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("value"))
                .and_then(|a| a.t.as_ref())
        });
    constant.ok_or_else(|| {
        let near = closest(
            name,
            g.initializer.iter().filter_map(|t| t.name.as_deref()),
            5,
        );
        Error::Graph(format!(
            "initializer '{name}' not found ({} initializers); closest names: {}",
            g.initializer.len(),
            if near.is_empty() {
                "none".to_string()
            } else {
                near.join(", ")
            }
        ))
    })
}

/// Converts one tensor to `(dims, f32 values)`.
pub(crate) fn tensor_f32(t: &TensorProto, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(Error::Graph(format!(
            "initializer '{name}' is stored in an external data file; save the model as a single file \
             (python: onnx.save(onnx.load(path), out, save_as_external_data=False))"
        )));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::Graph(format!(
                "initializer '{name}' has a negative dimension: {:?}",
                t.dims
            ))
        })?;
    let count: usize = dims.iter().product();
    let raw = t.raw_data.as_deref().filter(|r| !r.is_empty());
    let data_type = t.data_type.unwrap_or(0);
    let values: Vec<f32> = match (data_type, raw) {
        (1, Some(r)) => r
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (1, None) => t.float_data.clone(),
        (11, Some(r)) => r
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        (11, None) => t.double_data.iter().map(|&v| v as f32).collect(),
        (10, Some(r)) => r
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        (10, None) => t
            .int32_data
            .iter()
            .map(|&v| half::f16::from_bits(v as u16).to_f32())
            .collect(),
        (16, Some(r)) => r
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        (16, None) => t
            .int32_data
            .iter()
            .map(|&v| half::bf16::from_bits(v as u16).to_f32())
            .collect(),
        (other, _) => {
            return Err(Error::Graph(format!(
                "initializer '{name}' has element type {} ({other}), not a float type",
                super::graph::elem_type_name(other)
            )))
        }
    };
    if values.len() != count {
        return Err(Error::Graph(format!(
            "initializer '{name}' holds {} values but its dims {dims:?} need {count}; the model is corrupt",
            values.len()
        )));
    }
    Ok((dims, values))
}
