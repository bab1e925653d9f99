//! ONNX graph surgery: cutting a VGG-style model at its conv base or at a named tensor, reading
//! initializers, describing a model, building graphs (`build`) and combining backbones side by side
//! (`combine`): the one place that reads and writes ONNX protobufs.

pub mod build;
mod combine;
mod describe;
mod external;
mod graph;
pub mod node;
mod surgery;
mod tensor;

pub use combine::{side_by_side, Part};
pub use describe::describe;
pub use external::refuse_external_data;
pub use graph::{image_input, producers, ImageInput};
pub use surgery::{cut_at, cut_conv_base};
pub use tensor::{initializer_f32, initializers_f32};

/// True when `model` holds quantized (int8) ops, which only ONNX Runtime runs.
pub fn is_quantized(model: &[u8]) -> crate::Result<bool> {
    let m = build::decode(model)?;
    Ok(m.graph
        .as_ref()
        .is_some_and(|g| g.node.iter().any(node::is_quantization)))
}

/// Types generated from the vendored `proto/onnx.proto` (package `onnx`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Memory layout of a 4-D image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[N, C, H, W]`: PyTorch / ONNX-native exports.
    Nchw,
    /// `[N, H, W, C]`: TensorFlow / Keras exports (tf2onnx), usually followed by a Transpose to NCHW.
    Nhwc,
}

/// A model cut down to a single feature-map output, ready for [`crate::runtime::session`].
#[derive(Debug, Clone)]
pub struct CutModel {
    /// Serialized `ModelProto`.
    pub bytes: Vec<u8>,
    /// Name of the image input.
    pub input: String,
    /// Name of the single output, always laid out `[N, C, h, w]`.
    pub output: String,
    /// Layout of the image input.
    pub input_layout: Layout,
    /// Channels of the image input (1 or 3).
    pub input_channels: usize,
    /// Channels of the output feature map when known (from the last Conv weight before the output).
    pub output_channels: Option<usize>,
}
