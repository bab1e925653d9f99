//! A short human-readable summary of a model (inputs, outputs, op counts, parameters, pool outputs)
//! for error messages and `--verbose`.

use std::fmt::Write;

use super::graph::{decode, fmt_op_counts, fmt_value, graph, initializer_names, op, vi_name};
use crate::Result;

/// Summary: IR/opset/producer, inputs with shapes, outputs, op counts, parameter count and pool outputs.
pub fn describe(model: &[u8]) -> Result<String> {
    let m = decode(model)?;
    let g = graph(&m)?;
    let inits = initializer_names(g);
    let opsets: Vec<String> = m
        .opset_import
        .iter()
        .map(|o| {
            let d = o
                .domain
                .as_deref()
                .filter(|d| !d.is_empty())
                .unwrap_or("ai.onnx");
            format!("{d} {}", o.version.unwrap_or(0))
        })
        .collect();
    let mut s = String::new();
    let producer = m
        .producer_name
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("unknown producer");
    let _ = writeln!(
        s,
        "ONNX model: IR {}, opset {}, {producer}",
        m.ir_version.unwrap_or(0),
        opsets.join(", ")
    );
    let fmt_list = |list: Vec<String>| {
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join("; ")
        }
    };
    let inputs: Vec<String> = g
        .input
        .iter()
        .filter(|vi| !inits.contains(vi_name(vi)))
        .map(|vi| format!("{} {}", vi_name(vi), fmt_value(vi)))
        .collect();
    let _ = writeln!(s, "inputs: {}", fmt_list(inputs));
    let outputs: Vec<String> = g
        .output
        .iter()
        .map(|vi| format!("{} {}", vi_name(vi), fmt_value(vi)))
        .collect();
    let _ = writeln!(s, "outputs: {}", fmt_list(outputs));
    let _ = writeln!(s, "nodes: {} ({})", g.node.len(), fmt_op_counts(g));
    let params: i64 = g
        .initializer
        .iter()
        .map(|t| t.dims.iter().product::<i64>())
        .sum();
    let _ = writeln!(s, "initializers: {} ({params} values)", g.initializer.len());
    let pools: Vec<&str> = g
        .node
        .iter()
        .filter(|n| op(n).contains("Pool"))
        .filter_map(|n| n.output.first().map(String::as_str))
        .collect();
    let _ = write!(
        s,
        "pool outputs: {}",
        if pools.is_empty() {
            "none".to_string()
        } else {
            pools.join(", ")
        }
    );
    Ok(s)
}
