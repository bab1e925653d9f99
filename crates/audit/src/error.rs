//! The one error type of the `audit` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop an audit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The run lacks what the audit reads (features, out-of-fold predictions), or they disagree.
    #[error("{0}")]
    Run(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The feature cache could not be read, or a photo not drawn.
    #[error(transparent)]
    Features(#[from] features::Error),
    /// The head's out-of-fold file could not be read.
    #[error(transparent)]
    Head(#[from] head::Error),
    /// A file of the run folder could not be written, or the run is locked.
    #[error(transparent)]
    RunFolder(#[from] runfs::Error),
    /// A setting is out of range.
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
