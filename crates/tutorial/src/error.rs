//! The one error type of the `tutorial` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a tutorial run.
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
    /// Scanning the data, resolving the model or extracting features failed.
    #[error(transparent)]
    Features(#[from] features::Error),
    /// Training or writing its outputs failed.
    #[error(transparent)]
    Train(#[from] train::Error),
    /// A file of the run folder could not be written.
    #[error(transparent)]
    RunFolder(#[from] runfs::Error),
    /// Training the head (stage 2b) failed.
    #[error(transparent)]
    Head(#[from] head::Error),
    /// Fine-tuning (stage 3) failed.
    #[error(transparent)]
    Finetune(#[from] finetune::Error),
    /// Training the small convnet (stage 1) failed.
    #[error(transparent)]
    Scratch(#[from] scratch::Error),
    /// The engine choice (`--device cuda` that cannot start, …).
    #[error(transparent)]
    Accel(#[from] accel::Error),
    /// The run folder holds outputs made from other inputs or settings.
    #[error("{0}")]
    Mismatch(String),
    /// `RUN/tutorial.json` or a stage's output file is unreadable.
    #[error("{}: {reason}", path.display())]
    Record { path: PathBuf, reason: String },
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

    /// An unreadable record or output file, with what to do about it.
    pub fn record(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Record {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
