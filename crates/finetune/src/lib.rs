//! Stage 3, fine-tuning: the top block of the backbone (VGG16 block5; the last inverted-residual
//! block and 1×1 convolution of MobileNetV2/EfficientNet-Lite, rebuilt from the graph) trained
//! together with the stage-2 head on augmented images, the frozen part below it running in ONNX
//! Runtime (or, on a GPU, everything in Candle through `accel`: see [`compute`] and
//! `accel::engine`).

pub mod block;
pub(crate) mod caches;
pub(crate) mod calibrate;
pub mod checkpoint;
pub mod checks;
pub mod classifier;
pub mod compute;
pub mod config;
pub(crate) mod data;
pub mod epoch;
pub(crate) mod error;
pub mod export;
pub mod freshness;
pub mod frozen;
pub mod graph;
pub(crate) mod images;
pub(crate) mod int8;
pub mod net;
pub(crate) mod options;
pub(crate) mod outputs;
pub(crate) mod pipeline;
pub mod request;
pub mod rows;
pub(crate) mod setup;
pub(crate) mod splice;
pub(crate) mod splits;
pub(crate) mod tensors;

pub use config::{FinetuneConfig, FinetunePaths, Settings};
pub use error::{Error, Result};
pub use options::Options;
pub use pipeline::{finetune, Event, Report};
pub use setup::load_head;
