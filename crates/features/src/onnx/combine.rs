//! Two or more backbones side by side as one ONNX model: every part cut at its feature tensor, all fed
//! from one image input (a part whose native side differs is resized to it inside the graph), their
//! flattened features concatenated into one output. What a manifest's `parts` builds.

use std::collections::HashSet;

use super::build::{i64_tensor, int_attr, node, string_attr, tensor_value, DimSpec};
use super::graph::{decode, encode, graph, vi_name, FLOAT};
use super::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use super::{cut_at, Layout};
use crate::{Error, Result};

/// Name of the combined model's image input.
pub const INPUT: &str = "input";

/// One backbone of a combination.
pub struct Part<'a> {
    /// Its name (tensor names of the part are prefixed with it inside the combined graph).
    pub name: &'a str,
    /// The ONNX file's bytes.
    pub bytes: &'a [u8],
    /// Tensor its features are cut at.
    pub features: &'a str,
    /// Side of the square input its weights were trained at.
    pub size: u32,
}

/// Builds the combination of `parts` with an input of side `size`: one model whose output `output` is
/// `[N, C₁ + C₂ + …]`, the parts' features flattened and concatenated in order. The parts must read
/// NCHW images and share the default-domain opset.
pub fn side_by_side(parts: &[Part<'_>], size: u32, output: &str) -> Result<Vec<u8>> {
    if parts.len() < 2 {
        return Err(Error::Graph(
            "a combination needs at least two parts".into(),
        ));
    }
    let mut combined: Option<ModelProto> = None;
    let mut g = GraphProto {
        name: Some("bottleneck combination".into()),
        ..Default::default()
    };
    let mut flat = Vec::new();
    let mut channels = Some(0usize);
    for (i, part) in parts.iter().enumerate() {
        let prefix = format!("{i}.{}/", part.name);
        let own = format!("combine/{i}/");
        let cut = cut_at(part.bytes, part.features)
            .map_err(|e| Error::Graph(format!("part {}: {e}", part.name)))?;
        if cut.input_layout != Layout::Nchw {
            return Err(Error::Graph(format!(
                "part {}: its image input is NHWC; combinations take NCHW models only",
                part.name
            )));
        }
        let m = decode(&cut.bytes)?;
        let image = if part.size == size {
            INPUT.to_string()
        } else {
            let resized = format!("{own}{INPUT}");
            push_resize(&mut g, &own, part.size, &resized);
            resized
        };
        append_part(&mut g, &m, &prefix, &cut.input, &image, part.name)?;
        let flat_name = format!("{own}flat");
        g.node.push(node(
            "Flatten",
            &format!("{own}flatten"),
            &[&format!("{prefix}{}", cut.output)],
            &flat_name,
            vec![int_attr("axis", 1)],
        ));
        flat.push(flat_name);
        channels = channels.zip(cut.output_channels).map(|(a, b)| a + b);
        combined = Some(match combined {
            None => m,
            Some(c) => merge_header(c, &m, part.name)?,
        });
    }
    g.initializer.push(i64_tensor("combine/starts", &[1], &[0]));
    g.initializer.push(i64_tensor("combine/ends", &[1], &[2]));
    let reads: Vec<&str> = flat.iter().map(String::as_str).collect();
    g.node.push(node(
        "Concat",
        "combine/concat",
        &reads,
        output,
        vec![int_attr("axis", 1)],
    ));
    let image_dims = [
        DimSpec::Param("N"),
        DimSpec::Value(3),
        DimSpec::Param("H"),
        DimSpec::Param("W"),
    ];
    g.input = vec![tensor_value(INPUT, FLOAT, Some(&image_dims))];
    let out_dims = channels.map(|c| [DimSpec::Param("N"), DimSpec::Value(c as i64)]);
    g.output = vec![tensor_value(
        output,
        FLOAT,
        out_dims.as_ref().map(|d| &d[..]),
    )];
    let mut m = combined.ok_or_else(|| Error::Graph("a combination without parts".into()))?;
    m.graph = Some(g);
    m.producer_name = Some("bottleneck".into());
    m.metadata_props.clear();
    Ok(encode(&m))
}

/// `Shape → Slice [0:2] → Concat with [side, side] → Resize (linear, half-pixel)`: the shared image
/// resized to `[N, C, side, side]`, written to `resized` (names under `prefix`).
fn push_resize(g: &mut GraphProto, prefix: &str, side: u32, resized: &str) {
    let shape = format!("{prefix}input_shape");
    let nc = format!("{prefix}input_nc");
    let hw = format!("{prefix}side");
    let sizes = format!("{prefix}sizes");
    g.initializer
        .push(i64_tensor(&hw, &[2], &[i64::from(side), i64::from(side)]));
    g.node.extend([
        node("Shape", &shape, &[INPUT], &shape, vec![]),
        node(
            "Slice",
            &nc,
            &[&shape, "combine/starts", "combine/ends"],
            &nc,
            vec![],
        ),
        node(
            "Concat",
            &sizes,
            &[&nc, &hw],
            &sizes,
            vec![int_attr("axis", 0)],
        ),
        node(
            "Resize",
            &format!("{prefix}resize"),
            &[INPUT, "", "", &sizes],
            resized,
            vec![
                string_attr("mode", "linear"),
                string_attr("coordinate_transformation_mode", "half_pixel"),
            ],
        ),
    ]);
}

/// Copies the part's nodes and initializers into `g` under `prefix`, its image input read from `image`.
fn append_part(
    g: &mut GraphProto,
    m: &ModelProto,
    prefix: &str,
    input: &str,
    image: &str,
    name: &str,
) -> Result<()> {
    let pg = graph(m)?;
    let initializers: HashSet<&str> = pg
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    if let Some(other) = pg
        .input
        .iter()
        .map(vi_name)
        .find(|n| *n != input && !initializers.contains(n))
    {
        return Err(Error::Graph(format!(
            "part {name}: input '{other}' is neither the image nor an initializer; a combination feeds only the image"
        )));
    }
    if !pg.sparse_initializer.is_empty() {
        return Err(Error::Graph(format!(
            "part {name}: sparse initializers are not supported in a combination"
        )));
    }
    let rename = |t: &str| -> String {
        if t.is_empty() {
            String::new()
        } else if t == input {
            image.to_string()
        } else {
            format!("{prefix}{t}")
        }
    };
    for n in &pg.node {
        if n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
        {
            return Err(Error::Graph(format!(
                "part {name}: node '{}' has a subgraph; combinations take plain graphs",
                super::node::label(n)
            )));
        }
        let mut n = n.clone();
        n.input = n.input.iter().map(|t| rename(t)).collect();
        n.output = n.output.iter().map(|t| rename(t)).collect();
        n.name = n.name.as_deref().map(|s| format!("{prefix}{s}"));
        g.node.push(n);
    }
    for t in &pg.initializer {
        let mut t = t.clone();
        t.name = t.name.as_deref().map(rename);
        g.initializer.push(t);
    }
    Ok(())
}

/// The combined header: the higher IR version; the opsets must agree (one opset interprets every node).
fn merge_header(mut c: ModelProto, m: &ModelProto, name: &str) -> Result<ModelProto> {
    let key = |o: &OperatorSetIdProto| {
        (
            o.domain.clone().unwrap_or_default().replace("ai.onnx", ""),
            o.version.unwrap_or(0),
        )
    };
    let mut a: Vec<_> = c.opset_import.iter().map(key).collect();
    let mut b: Vec<_> = m.opset_import.iter().map(key).collect();
    a.sort();
    b.sort();
    if a != b {
        return Err(Error::Graph(format!(
            "part {name} imports opsets {b:?}, the first part {a:?}: the parts of a combination must share \
             their opsets (re-export one of them)"
        )));
    }
    c.ir_version = c.ir_version.max(m.ir_version);
    Ok(c)
}
