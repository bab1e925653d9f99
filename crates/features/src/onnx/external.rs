//! Models whose weights live in external data files (`w.bin` beside the `.onnx`, the layout of
//! models over 2 GB). They are refused when the file is resolved: a model is handed to ONNX Runtime
//! as bytes, so the files would be looked for from the current folder, not the model's, and neither
//! the model's sha256 nor an exported classifier would cover them.

use std::path::Path;

use super::graph::decode;
use super::proto::{tensor_proto::DataLocation, AttributeProto, GraphProto, TensorProto};
use crate::{Error, Result};

/// Fails naming the first external data file `model` (read from `path`) refers to, with the fix.
pub fn refuse_external_data(model: &[u8], path: &Path) -> Result<()> {
    // A file that is no model is named where its graph is read, with the reason.
    let Ok(m) = decode(model) else {
        return Ok(());
    };
    let Some(g) = m.graph.as_ref() else {
        return Ok(());
    };
    match external_in_graph(g) {
        None => Ok(()),
        Some((tensor, file)) => Err(Error::Model {
            path: path.to_path_buf(),
            reason: format!(
                "its weights are stored outside the .onnx file (tensor '{tensor}' in '{file}'), which \
                 bottleneck does not load: save the model as one file (python: onnx.save(onnx.load(path), \
                 out, save_as_external_data=False)); models over 2 GB cannot be one file and are not supported"
            ),
        }),
    }
}

/// `(tensor, file)` of the first tensor of `g` (initializers, constants, sub-graphs) stored externally.
fn external_in_graph(g: &GraphProto) -> Option<(String, String)> {
    let sparse = g
        .sparse_initializer
        .iter()
        .flat_map(|s| s.values.iter().chain(s.indices.iter()));
    g.initializer
        .iter()
        .chain(sparse)
        .find_map(external)
        .or_else(|| {
            g.node
                .iter()
                .flat_map(|n| n.attribute.iter())
                .find_map(external_in_attribute)
        })
}

fn external_in_attribute(a: &AttributeProto) -> Option<(String, String)> {
    a.t.iter()
        .chain(a.tensors.iter())
        .find_map(external)
        .or_else(|| {
            a.g.iter()
                .chain(a.graphs.iter())
                .find_map(external_in_graph)
        })
}

fn external(t: &TensorProto) -> Option<(String, String)> {
    let is_external =
        t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty();
    is_external.then(|| {
        let file = t
            .external_data
            .iter()
            .find(|e| e.key.as_deref() == Some("location"))
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| "?".into());
        (t.name.clone().unwrap_or_default(), file)
    })
}
