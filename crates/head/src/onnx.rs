//! The head as ONNX: Flatten → Gemm → Relu → Gemm → Sigmoid (as `[1-p, p]`) or Softmax appended
//! after a backbone's feature tensor, giving `probabilities` `[N, classes]`, and the metadata that
//! such a model carries. `predict` and `export` build the stage-2 classifier with it; `finetune`
//! appends its fine-tuned head the same way.

use features::onnx::build::{decode, f32_tensor, int_attr, node, tensor_value, DimSpec, FLOAT};
use features::onnx::proto::{ModelProto, StringStringEntryProto};
use prost::Message;

use crate::error::{Error, Result};
use crate::model::HeadModel;

/// Name of the exported model's output.
pub const OUTPUT: &str = "probabilities";

/// Facts written into the model's metadata.
#[derive(Clone, Debug)]
pub struct ExportInfo {
    pub classes: Vec<String>,
    pub preprocess: String,
    pub image_size: u32,
}

/// The dense head's weights in the layout of the appended Gemm nodes: `w1` `[D, hidden]` with rows
/// in CHW order (Flatten of the NCHW feature map, the Keras order), `w2` `[hidden, outputs]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadWeights {
    pub input_dim: usize,
    pub hidden: usize,
    pub num_classes: usize,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

impl HeadWeights {
    /// Width of the last Gemm: 1 (sigmoid) for two classes, else the number of classes.
    pub fn outputs(&self) -> usize {
        if self.num_classes == 2 {
            1
        } else {
            self.num_classes
        }
    }

    /// The weights of a stage-2 head (`head::load`), already in Keras (CHW) order.
    pub fn from_model(model: &HeadModel) -> Result<Self> {
        let cfg = model.config();
        let values: Vec<Vec<f32>> = model
            .vars()
            .iter()
            .map(|v| Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?))
            .collect::<Result<_>>()?;
        let [w1, b1, w2, b2]: [Vec<f32>; 4] = values
            .try_into()
            .map_err(|_| Error::Invalid("a head model has four tensors".into()))?;
        Ok(HeadWeights {
            input_dim: cfg.input_dim(),
            hidden: cfg.hidden,
            num_classes: cfg.num_classes,
            w1,
            b1,
            w2,
            b2,
        })
    }

    fn check(&self) -> Result<()> {
        let (d, h, k) = (self.input_dim, self.hidden, self.outputs());
        if self.w1.len() != d * h
            || self.b1.len() != h
            || self.w2.len() != h * k
            || self.b2.len() != k
        {
            return Err(Error::Invalid(format!(
                "head weights do not fit {d} inputs, {h} hidden units and {k} outputs"
            )));
        }
        Ok(())
    }
}

/// Appends the dense head after `features` (an NCHW feature map, or already flat) and makes
/// `probabilities` the only output. New names start with `prefix`.
pub fn append_head(
    m: &mut ModelProto,
    features: &str,
    h: &HeadWeights,
    prefix: &str,
) -> Result<()> {
    h.check()?;
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| Error::Invalid("the model has no graph".into()))?;
    let (d, hidden, k) = (h.input_dim, h.hidden, h.outputs());
    let names = |s: &str| format!("{prefix}_{s}");
    g.initializer.extend([
        f32_tensor(&names("dense_1_W"), &[d, hidden], &h.w1),
        f32_tensor(&names("dense_1_B"), &[hidden], &h.b1),
        f32_tensor(&names("dense_2_W"), &[hidden, k], &h.w2),
        f32_tensor(&names("dense_2_B"), &[k], &h.b2),
    ]);
    let (flat, d1, r1, logits) = (
        names("flatten"),
        names("dense_1"),
        names("dense_1_relu"),
        names("logits"),
    );
    g.node.push(node(
        "Flatten",
        &flat,
        &[features],
        &flat,
        vec![int_attr("axis", 1)],
    ));
    g.node.push(node(
        "Gemm",
        &d1,
        &[&flat, &names("dense_1_W"), &names("dense_1_B")],
        &d1,
        vec![],
    ));
    g.node.push(node("Relu", &r1, &[&d1], &r1, vec![]));
    g.node.push(node(
        "Gemm",
        &logits,
        &[&r1, &names("dense_2_W"), &names("dense_2_B")],
        &logits,
        vec![],
    ));
    if k == 1 {
        let (p, q, one) = (names("p"), names("q"), names("one"));
        g.initializer.push(f32_tensor(&one, &[1], &[1.0]));
        g.node.push(node("Sigmoid", &p, &[&logits], &p, vec![]));
        g.node.push(node("Sub", &q, &[&one, &p], &q, vec![]));
        g.node.push(node(
            "Concat",
            &names("probabilities"),
            &[&q, &p],
            OUTPUT,
            vec![int_attr("axis", 1)],
        ));
    } else {
        g.node.push(node(
            "Softmax",
            &names("softmax"),
            &[&logits],
            OUTPUT,
            vec![int_attr("axis", 1)],
        ));
    }
    let dims = [DimSpec::Param("N"), DimSpec::Value(h.num_classes as i64)];
    g.output = vec![tensor_value(OUTPUT, FLOAT, Some(&dims))];
    Ok(())
}

/// Sets metadata entries, replacing any earlier entry with the same key.
pub fn put_metadata(m: &mut ModelProto, entries: &[(String, String)]) {
    m.metadata_props
        .retain(|e| !entries.iter().any(|(k, _)| e.key.as_deref() == Some(k)));
    m.metadata_props
        .extend(entries.iter().map(|(k, v)| StringStringEntryProto {
            key: Some(k.clone()),
            value: Some(v.clone()),
        }));
}

/// The metadata entries every exported classifier carries.
pub fn info_entries(info: &ExportInfo) -> Result<Vec<(String, String)>> {
    let classes =
        serde_json::to_string(&info.classes).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(vec![
        ("classes".into(), classes),
        ("preprocess".into(), info.preprocess.clone()),
        ("image_size".into(), info.image_size.to_string()),
    ])
}

/// Builds one classifier from the original model and a stage-2 head (no fine-tuned block): the
/// model cut at `features` (the tensor the head was trained on, e.g. `block5_pool`) with the head
/// appended. Same output and metadata keys as `finetune`'s `model.onnx`.
pub fn export_head_onnx(
    original: &[u8],
    head: &HeadModel,
    features: &str,
    info: &ExportInfo,
) -> Result<Vec<u8>> {
    let cut = features::onnx::cut_at(original, features)?;
    let weights = HeadWeights::from_model(head)?;
    let mut m = decode(&cut.bytes)?;
    append_head(&mut m, &cut.output, &weights, "head")?;
    put_metadata(&mut m, &info_entries(info)?);
    m.producer_name = Some("bottleneck".into());
    Ok(m.encode_to_vec())
}

/// Adds (or replaces) metadata entries of a serialized model.
pub fn with_metadata(model: &[u8], entries: &[(String, String)]) -> Result<Vec<u8>> {
    let mut m = decode(model)?;
    put_metadata(&mut m, entries);
    Ok(m.encode_to_vec())
}

/// The metadata entries of a serialized model, in file order.
pub fn metadata(model: &[u8]) -> Result<Vec<(String, String)>> {
    let m = decode(model)?;
    Ok(m.metadata_props
        .into_iter()
        .map(|e| (e.key.unwrap_or_default(), e.value.unwrap_or_default()))
        .collect())
}
