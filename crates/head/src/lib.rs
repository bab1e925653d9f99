//! The dense classifier trained on cached bottleneck features (stage 2b): model, Keras-style
//! optimizers, training loop, metrics, confusion matrix, learning-curve plots and the
//! `head.safetensors` file format.

pub mod data;
pub mod error;
mod fsutil;
pub mod headfile;
pub(crate) mod kernels;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod plot;
pub mod schedule;
pub mod source;
pub mod stage;
pub mod train;

pub use error::{Error, Result};
pub use fsutil::write_atomic;
pub use headfile::{load, load_on, read_meta, save, HeadMeta};
pub use model::{HeadConfig, HeadModel};

/// Default learning rate of `train-head` (RMSprop).
pub const DEFAULT_LEARNING_RATE: f64 = 1e-4;
