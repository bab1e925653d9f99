//! The one error type of the `train` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while training or writing a training's outputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name (of a device, filter, optimizer, …) that is none of the choices.
    #[error(transparent)]
    Name(#[from] base::UnknownName),
    /// A setting or an argument is out of range.
    #[error("{0}")]
    Invalid(String),
    /// Drawing the learning curves failed.
    #[error("plot {}: {reason}", path.display())]
    Plot { path: PathBuf, reason: String },
    /// A stage's folder already holds results.
    #[error("{} already exists: pass {}--force to start over", path.display(), if *resumable { "--resume to continue it or " } else { "" })]
    Exists { path: PathBuf, resumable: bool },
    /// `--resume` without a checkpoint.
    #[error("{}: nothing to resume (there is no checkpoint); run without --resume to start", path.display())]
    NoCheckpoint { path: PathBuf },
    /// Writing an output file failed.
    #[error(transparent)]
    File(#[from] runfs::Error),
    /// A tensor operation failed inside Candle.
    #[error("tensor operation")]
    Candle(#[from] candle_core::Error),
}
