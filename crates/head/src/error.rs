//! The one error type of the `head` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between cached features and a trained head.
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
    /// The feature cache could not be read (missing, corrupt, …).
    #[error(transparent)]
    Features(#[from] features::Error),
    /// The cached features are unusable for training (mixed provenance, one class, NaN, …).
    #[error("{0}")]
    Data(String),
    /// A head file is missing, corrupt or from an incompatible version.
    #[error("{}: {reason}", path.display())]
    HeadFile { path: PathBuf, reason: String },
    /// The output folder already holds a trained head.
    #[error("{} already exists; pass --force to overwrite it", path.display())]
    Exists { path: PathBuf },
    /// The loss became NaN/inf before a single epoch completed.
    #[error("{0}")]
    Diverged(String),
    /// A user-supplied option is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Drawing the learning curves failed.
    #[error("plot {}: {reason}", path.display())]
    Plot { path: PathBuf, reason: String },
    /// Training or writing its outputs failed.
    #[error(transparent)]
    Train(#[from] train::Error),
    /// A file of the run folder could not be written.
    #[error(transparent)]
    RunFolder(#[from] runfs::Error),
    /// A tensor operation failed inside Candle.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
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
