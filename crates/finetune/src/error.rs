//! The one error type of the `finetune` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while fine-tuning the top conv block.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name (of a device, filter, optimizer, …) that is none of the choices.
    #[error(transparent)]
    Name(#[from] features::names::UnknownName),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Images, models, ONNX graphs or ONNX Runtime (from the `features` crate).
    #[error(transparent)]
    Features(#[from] features::Error),
    /// Training or writing its outputs failed.
    #[error(transparent)]
    Train(#[from] train::Error),
    /// A file of the run folder could not be written.
    #[error(transparent)]
    RunFolder(#[from] runfs::Error),
    /// The trained head (from the `head` crate).
    #[error(transparent)]
    Head(#[from] head::Error),
    /// A tensor operation failed inside Candle.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
    /// The engine choice or a network on a device (Candle through `accel`).
    #[error(transparent)]
    Accel(#[from] accel::Error),
    /// The graph between the split tensor and the head's input is not a block this crate can train.
    #[error("trainable block: {0}")]
    Block(String),
    /// `RUN/head/head.safetensors` is missing.
    #[error("no trained head at {}: run `bottleneck train-head --run {}` first", path.display(), run.display())]
    NoHead { path: PathBuf, run: PathBuf },
    /// The head, the model, the image size or a checkpoint do not belong together.
    #[error("{0}")]
    Mismatch(String),
    /// The Candle block does not reproduce the ONNX model.
    #[error("{0}")]
    Parity(String),
    /// A checkpoint or cache file is missing, corrupt or from another run.
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// The loss became NaN or infinite before a single epoch completed.
    #[error("{0}")]
    Diverged(String),
    /// A user-supplied option is invalid.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A problem with a file, with the fix in `reason`.
    pub fn file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        Error::Features(features::Error::Ort(e))
    }
}
