//! Stage 1: the 2016 tutorial's small convnet (three conv blocks, a 64-unit dense layer, dropout)
//! trained from scratch on augmented images, with its own im2col + matrix-product kernels
//! (valid 3×3 convolutions, NHWC) and the Keras-exact optimizers of the `head` crate.
//!
//! Entry point: [`train`] with a [`ScratchConfig`] (tutorial defaults from [`ScratchConfig::new`],
//! bottleneck's recipe from [`ScratchConfig::recipe`]); it writes `RUN/scratch/{model.safetensors, metrics.json, confusion.json, curves.png,
//! curves.svg}` and a per-epoch `checkpoint.safetensors` used by `--resume`. Every random draw
//! (initialisation, shuffling, augmentation, dropout) comes from a stream keyed by the seed and
//! the epoch/batch/image, so a seed reproduces a run exactly; the checkpoint also holds the
//! optimizer's moving averages and step count (and the weight average of `ema`), so a resumed run
//! equals an uninterrupted one.

pub mod checkpoint;
pub(crate) mod compute;
pub(crate) mod config;
pub mod data;
pub(crate) mod ema;
pub(crate) mod error;
pub mod freshness;
pub(crate) mod learner;
pub mod model;
pub mod net;
pub(crate) mod pipeline;
pub(crate) mod splits;

pub use config::{ScratchConfig, ScratchPaths, DEFAULT_SEED, RECIPE_EPOCHS};
pub use error::{Error, Result};
pub use net::{Arch, Params};
pub use pipeline::{evaluate, train, Eval, Event, ScratchReport};
