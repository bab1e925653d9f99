//! `model.onnx`: one ONNX graph that maps a preprocessed image batch to class probabilities. It is
//! the original model cut at the head's input tensor with the trainable block's initializers
//! replaced by the fine-tuned weights and the head appended by [`head::onnx`]; for a run whose
//! frozen part was int8, that int8 frozen part replaces the FP32 one (the model exported is the
//! model validated). Output: `probabilities` `[N, classes]`.

use features::onnx::build::f32_tensor;
use head::onnx::{append_head, info_entries, put_metadata, HeadWeights};
pub use head::onnx::{export_head_onnx, metadata, with_metadata, ExportInfo, OUTPUT};
use prost::Message;

use crate::classifier::Classifier;
use crate::error::{Error, Result};
use crate::graph::decode;
use crate::net::Net;

/// The fine-tuning classifier's weights in the layout of the appended Gemm nodes (its `w1` rows
/// go back to CHW order).
pub fn head_weights(h: &Classifier) -> HeadWeights {
    HeadWeights {
        input_dim: h.input_dim(),
        hidden: h.hidden,
        num_classes: h.num_classes,
        w1: h.w1_chw(),
        b1: h.b1.clone(),
        w2: h.w2.clone(),
        b2: h.b2.clone(),
    }
}

/// Builds the fine-tuned model from the original model bytes and the trained network; with
/// `frozen` (a model of the frozen part, e.g. int8, whose output is the block's input tensor) that
/// part replaces the original's.
pub fn export_onnx(
    original: &[u8],
    frozen: Option<&[u8]>,
    net: &Net,
    info: &ExportInfo,
) -> Result<Vec<u8>> {
    let cut = features::onnx::cut_at(original, &net.block.output_tensor)?;
    let mut m = decode(&cut.bytes)?;
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| Error::Block("the model has no graph".into()))?;
    for (name, dims, values) in net.block.initializers() {
        let t = g
            .initializer
            .iter_mut()
            .find(|t| t.name.as_ref() == Some(&name))
            .ok_or_else(|| {
                Error::Block(format!(
                    "initializer '{name}' of the trained block is not in the model"
                ))
            })?;
        *t = f32_tensor(&name, &dims, &values);
    }
    if let Some(part) = frozen {
        crate::splice::splice_frozen(&mut m, part, &net.block.input_tensor)?;
    }
    append_head(&mut m, &cut.output, &head_weights(&net.head), "finetune")?;
    let mut entries = info_entries(info)?;
    entries.push((
        "fine_tuned".into(),
        format!("{} → {}", net.block.input_tensor, net.block.output_tensor),
    ));
    put_metadata(&mut m, &entries);
    m.producer_name = Some("bottleneck finetune".into());
    Ok(m.encode_to_vec())
}
