//! The one error type of the `features` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a folder of images and a feature file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An image could not be decoded or is not usable.
    #[error("{}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    /// The data folder does not have the expected layout.
    #[error("{0}")]
    Dataset(String),
    /// The ONNX model is unusable (bad protobuf, no image input, no cut point, …).
    #[error("model {}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    /// ONNX graph editing failed (used where no file path is known).
    #[error("ONNX graph: {0}")]
    Graph(String),
    /// Model manifest problems or model download problems.
    #[error("{0}")]
    Manifest(String),
    /// ONNX Runtime could not be loaded or failed while running.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// A feature file is missing, corrupt or inconsistent.
    #[error("{}: {reason}", path.display())]
    Store { path: PathBuf, reason: String },
    /// An augmentation parameter is out of range.
    #[error("augmentation: {0}")]
    Augment(String),
    /// A user-supplied option is invalid.
    #[error("{0}")]
    Invalid(String),
    /// An ONNX Runtime call failed (its own error kept as the source).
    #[error("ONNX Runtime")]
    Ort(#[from] ort::Error),
    /// An ONNX Runtime call failed; what it meant for the user and what to do.
    #[error("{what}")]
    OrtContext {
        what: String,
        #[source]
        source: ort::Error,
    },
    /// A name (of a device, preprocessing, filter, …) that is none of the choices.
    #[error(transparent)]
    Name(#[from] crate::names::UnknownName),
    /// Another engine's frozen network (e.g. Candle's, from the `accel` crate) failed.
    #[error(transparent)]
    Engine(Box<dyn std::error::Error + Send + Sync>),
    /// A file of the run folder could not be written, or the folder is in use.
    #[error(transparent)]
    RunFolder(#[from] runfs::Error),
}

impl Error {
    /// What a list of skipped photos says: an unusable image's own reason (the path is listed
    /// beside it), else the whole message.
    pub fn skip_reason(self) -> String {
        match self {
            Error::Image { reason, .. } => reason,
            other => other.to_string(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
