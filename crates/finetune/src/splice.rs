//! Swapping the frozen part of a graph: every node that computes a tensor (e.g. `block4_pool`) is
//! replaced by the nodes of another model of that part — how `model.onnx` of an int8 run gets the
//! same int8 frozen part that training and validation ran.

use std::collections::{HashMap, HashSet};

use features::onnx::proto::ModelProto;

use crate::error::{Error, Result};
use crate::graph::decode;

fn nonempty(names: &[String]) -> impl Iterator<Item = &String> {
    names.iter().filter(|s| !s.is_empty())
}

/// Replaces the nodes of `m` that `tensor` depends on by the graph of `part`, a model with the
/// same image input whose only output is `tensor`. Initializers and value infos only the removed
/// nodes used go too; `part`'s initializers, opsets (highest version wins) and metadata come in.
// Over 80 lines: one graph edit: the removed nodes, their now-unused initializers and value infos,
// and what comes in must agree.
pub fn splice_frozen(m: &mut ModelProto, part: &[u8], tensor: &str) -> Result<()> {
    let p = decode(part)?;
    let pg = p
        .graph
        .ok_or_else(|| Error::Block("the frozen part has no graph".into()))?;
    let outs: Vec<&str> = pg.output.iter().filter_map(|o| o.name.as_deref()).collect();
    if outs != [tensor] {
        return Err(Error::Block(format!(
            "the frozen part's outputs are {outs:?}, expected ['{tensor}']"
        )));
    }
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| Error::Block("the model has no graph".into()))?;
    let inputs: HashSet<&str> = g.input.iter().filter_map(|i| i.name.as_deref()).collect();
    if let Some(i) = pg
        .input
        .iter()
        .filter_map(|i| i.name.as_deref())
        .find(|i| !inputs.contains(i))
    {
        return Err(Error::Block(format!(
            "the frozen part's input '{i}' is not an input of the model"
        )));
    }

    // The nodes `tensor` depends on.
    let producer: HashMap<&str, usize> = g
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| nonempty(&n.output).map(move |o| (o.as_str(), i)))
        .collect();
    let Some(&last) = producer.get(tensor) else {
        return Err(Error::Block(format!(
            "no node of the model computes '{tensor}'"
        )));
    };
    let mut removed = HashSet::from([last]);
    let mut stack = vec![last];
    while let Some(i) = stack.pop() {
        for input in nonempty(&g.node[i].input) {
            if let Some(&j) = producer.get(input.as_str()) {
                if removed.insert(j) {
                    stack.push(j);
                }
            }
        }
    }
    let kept: Vec<_> = std::mem::take(&mut g.node)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(_, n)| n)
        .collect();
    let used: HashSet<&str> = kept
        .iter()
        .flat_map(|n| nonempty(&n.input))
        .map(String::as_str)
        .chain(g.output.iter().filter_map(|o| o.name.as_deref()))
        .collect();
    g.initializer
        .retain(|t| t.name.as_deref().is_some_and(|n| used.contains(n)));
    let produced: HashSet<&str> = kept
        .iter()
        .flat_map(|n| nonempty(&n.output))
        .map(String::as_str)
        .collect();
    g.value_info
        .retain(|v| v.name.as_deref().is_some_and(|n| produced.contains(n)));

    // Names must stay unique once the part is in.
    let taken: HashSet<&str> = produced
        .iter()
        .copied()
        .chain(g.initializer.iter().filter_map(|t| t.name.as_deref()))
        .collect();
    let incoming = pg
        .node
        .iter()
        .flat_map(|n| nonempty(&n.output))
        .map(String::as_str)
        .chain(pg.initializer.iter().filter_map(|t| t.name.as_deref()));
    if let Some(clash) = incoming.into_iter().find(|n| taken.contains(n)) {
        return Err(Error::Block(format!(
            "the frozen part and the rest of the model both define '{clash}'"
        )));
    }
    let mut nodes = pg.node;
    nodes.extend(kept);
    g.node = nodes;
    g.initializer.extend(pg.initializer);
    g.value_info.extend(pg.value_info);

    for op in p.opset_import {
        match m.opset_import.iter_mut().find(|o| o.domain == op.domain) {
            Some(o) => o.version = o.version.max(op.version),
            None => m.opset_import.push(op),
        }
    }
    m.metadata_props.extend(p.metadata_props);
    Ok(())
}
