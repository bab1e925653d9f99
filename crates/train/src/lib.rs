//! The training toolkit (the role `candle-nn` plays for `candle-core`): Keras-exact optimizers,
//! losses, metrics and the confusion matrix, learning-rate schedules, learning-curve plots, the
//! progress events every stage reports, and the CPU kernels the convolutional stages share.
//!
//! It owns how a model is trained and measured, never what the model is: it knows nothing of
//! images, backbones, heads or run-folder layouts (the stage crates bring those).

pub mod driver;
pub(crate) mod error;
pub mod finite;
pub mod kernels;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod stage;
pub mod stage_dir;

pub use error::{Error, Result};
