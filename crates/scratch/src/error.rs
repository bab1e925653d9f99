//! The one error type of the `scratch` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while training the small convnet from scratch.
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
    /// Scanning, decoding or augmenting images failed.
    #[error(transparent)]
    Features(#[from] features::Error),
    /// Training or writing its outputs failed.
    #[error(transparent)]
    Train(#[from] train::Error),
    /// The engine choice or the network on a device (Candle through `accel`).
    #[error(transparent)]
    Accel(#[from] accel::Error),
    /// A tensor operation failed inside Candle.
    #[error("tensor operation: {0}")]
    Candle(#[from] accel::candle_core::Error),
    /// A file of the run folder could not be written.
    #[error(transparent)]
    RunFolder(#[from] runfs::Error),
    /// The data folder cannot be trained on (missing split, one class, no readable image, …).
    #[error("{0}")]
    Data(String),
    /// A model or checkpoint file is missing, corrupt or does not match the configuration.
    #[error("{}: {reason}", path.display())]
    ModelFile { path: PathBuf, reason: String },
    /// The loss became NaN or infinite.
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
}
