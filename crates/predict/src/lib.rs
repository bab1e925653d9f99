//! Using a trained run: classify image files and folders with the best stage it has (the
//! fine-tuned `model.onnx`, else the backbone with the stage-2 head, as one ONNX graph), evaluate
//! it on labelled data (metrics, confusion matrix, the most confidently wrong images and a contact
//! sheet of them), and export that one self-contained ONNX classifier with its preprocessing
//! documented in the metadata.

pub(crate) mod classifier;
pub(crate) mod error;
pub mod evaluate;
pub mod export;
pub mod format;
pub mod inputs;
pub mod metadata;
pub mod run;
pub(crate) mod sheet;

pub use classifier::{load, Classifier, LoadOptions, Stage};
pub use error::{Error, Result};
pub use evaluate::{evaluate, EvaluateOptions, Evaluation};
pub use export::{export, ExportSummary};
pub use run::{Prediction, Predictor};
