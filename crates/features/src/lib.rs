//! Images → VGG16 bottleneck features: dataset scanning, decoding and preprocessing, ONNX graph
//! surgery, batched ONNX Runtime inference, the safetensors feature cache, and augmentation.

pub mod augment;
pub mod bench;
pub mod dataset;
pub mod engine;
pub(crate) mod error;
pub mod exclude;
pub mod extract;
pub mod freshness;
pub mod holdout;
pub mod image_io;
pub mod infer;
pub mod manifest;
pub mod mapped;
pub mod merge;
pub mod onnx;
pub mod photos;
pub mod preprocess;
pub mod provenance;
pub mod quantize;
pub mod runtime;
pub mod shard;
pub mod sheet;
pub mod side_by_side;
pub mod store;
pub mod tensorfile;

pub use error::{Error, Result};
// Named choices live in the leaf crate `base`; `features::choices!` and `features::names` stay valid.
pub use base::{choices, names};
