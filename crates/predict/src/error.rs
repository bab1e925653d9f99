//! The one error type of the `predict` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a run folder and a prediction, an evaluation or an export.
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
    /// The engine or device that would run the classifier (the `accel` crate).
    #[error(transparent)]
    Accel(#[from] accel::Error),
    /// Training or writing its outputs failed.
    #[error(transparent)]
    Train(#[from] train::Error),
    /// A file of the run folder could not be written.
    #[error(transparent)]
    RunFolder(#[from] runfs::Error),
    /// The stage-2 head file, or the ONNX classifier built from it (the `head` crate).
    #[error(transparent)]
    Head(#[from] head::Error),
    /// The run has no trained classifier (or not the stage asked for).
    #[error("{0}")]
    NoClassifier(String),
    /// The run's files do not belong together (head vs model, classes vs data, …).
    #[error("{0}")]
    Mismatch(String),
    /// A path given on the command line is missing or holds no images.
    #[error("{0}")]
    Input(String),
    /// An output already exists and `--force` was not given.
    #[error("{} already exists: pass --force to overwrite it", path.display())]
    Exists { path: PathBuf },
    /// Drawing the contact sheet failed.
    #[error("contact sheet {}: {reason}", path.display())]
    Sheet { path: PathBuf, reason: String },
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
