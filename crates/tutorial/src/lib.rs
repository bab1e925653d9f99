//! The whole tutorial in one resumable run: stage 1 (small convnet from scratch), stage 2a
//! (bottleneck features), stage 2b (dense head), stage 3 (fine-tuning), then `RUN/report.md` and
//! `RUN/report.html` comparing each stage with the tutorial's published accuracies.
//!
//! Entry point: [`run`] with a [`TutorialConfig`] ([`TutorialConfig::new`] has the tutorial's
//! settings, [`TutorialConfig::quick`] a smoke-test preset). Each stage is reused when its finished
//! outputs match the inputs (checked against the stages' own metadata), continued when it was
//! interrupted, and refused when `RUN` holds outputs of other inputs (unless `force`). Stage times
//! accumulate in `RUN/tutorial.json` across sittings.

pub(crate) mod audit_step;
pub(crate) mod check;
pub mod config;
pub(crate) mod error;
pub mod inputs;
pub(crate) mod machine;
pub mod record;
pub mod report;
pub(crate) mod select;
pub(crate) mod settings;
mod stage1;
mod stages;

pub use config::{Reference, Stage, TutorialConfig};
pub use error::{Error, Result};
pub use inputs::Inputs;
pub use report::Row;
pub use stages::{run, Action, Event, Summary};
