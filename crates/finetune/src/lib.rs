//! Stage 3, fine-tuning: the top conv block of the backbone (VGG16 block5) trained together with
//! the stage-2 head on augmented images, the frozen part below it running in ONNX Runtime.

pub mod block;
pub mod classifier;
pub mod conv;
pub mod error;
pub mod graph;
pub mod net;
pub mod optim;

pub use error::{Error, Result};
