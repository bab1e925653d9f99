//! Stage 2b, the classifier trained on cached bottleneck features: the head model and the
//! `head.safetensors` file format, the calibrated linear probe (the default, [`probe`]), the 2016
//! tutorial's dense network ([`mlp`]), [`recipe::fit_head`] choosing between them, and loading a
//! run's feature splits, and the head as ONNX nodes appended after any feature tensor ([`onnx`]).
//! Optimizers, losses, metrics and plots come from the `train` toolkit. It must not know about
//! images or which backbone made the features: it trains on feature rows and labels only.

pub mod data;
pub(crate) mod error;
pub mod headfile;
pub mod mlp;
pub mod model;
pub mod onnx;
pub mod oof;
pub mod pipeline;
pub mod probe;
pub mod recipe;
pub(crate) mod source;

pub use error::{Error, Result};
pub use headfile::{load, load_on, read_meta, save, HeadMeta};
pub use model::{HeadConfig, HeadModel};

/// Default learning rate of `train-head` (RMSprop).
pub const DEFAULT_LEARNING_RATE: f64 = 1e-4;
