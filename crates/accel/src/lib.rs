//! The networks of `bottleneck` as Candle graphs that run on any Candle device: the CPU (tests, CI)
//! or an NVIDIA GPU (built with `--features cuda`). Built from the same weights as the CPU path:
//! the frozen VGG16 conv base from the ONNX initializers ([`vgg`]), a run's exported classifier
//! (conv chain + dense head, [`classifier`]), block5 + head and the stage-1 convnet with autograd
//! training steps ([`train`]), the one reader of VGG-style chains out of a graph ([`graph`]); [`device`] turns `--device` into a Candle device, and [`engine`]
//! decides, for every stage, which engine runs its networks on which device.
//!
//! Layouts at the boundary are those of the CPU crates, so stages hand weights over and read them
//! back as plain `Vec<f32>`: conv kernels `[3, 3, in, out]` (= `finetune`'s and `scratch`'s im2col
//! matrices `[9·in, out]`), the ONNX conv weights `[out, in, 3, 3]` for the frozen part, dense
//! kernels `[in, out]` with the head's `w1` rows in NHWC order.

pub mod classifier;
pub(crate) mod depthwise;
pub mod device;
pub mod engine;
pub(crate) mod error;
pub mod graph;
pub mod nodes;
pub mod ops;
pub mod optim;
pub mod train;
pub mod vgg;

pub use candle_core;
pub use candle_core::{DType, Device, Tensor};
pub use error::{Error, Result};
