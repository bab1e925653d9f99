//! Dataset preparation: the tutorial's Dogs vs Cats layout (`train/`, `validation/`, `test/` with `cats/`
//! and `dogs/`) built from Kaggle's `train.zip` or Microsoft's `kagglecatsanddogs_*.zip`, zipped or extracted.

pub mod dogs_vs_cats;
pub mod download;
pub(crate) mod error;
pub(crate) mod locate;
pub(crate) mod source;

pub use dogs_vs_cats::{build, Config, Counts, Event, Summary};
pub use error::{Error, Result};
pub use source::{Class, Scheme, SourceKind};
