//! The one error type of the `data` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a Dogs vs Cats archive and the tutorial's folder layout.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The zip file cannot be read.
    #[error("{}: {reason}", path.display())]
    Zip { path: PathBuf, reason: String },
    /// The archive or folder does not hold Dogs vs Cats photos under a known naming scheme.
    #[error("{}: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },
    /// The archive has fewer usable photos of a class than the splits need.
    #[error("{}: only {found} usable {class} photos from ID {first_id} on, but the splits need {needed} ({skipped} skipped as corrupt): use the full archive or ask for smaller splits", path.display())]
    TooFew {
        path: PathBuf,
        class: String,
        needed: usize,
        found: usize,
        skipped: usize,
        first_id: u64,
    },
    /// An output split already exists and overwriting was not allowed.
    #[error("{} already has {}: pass --force to replace them, or choose another --out", out.display(), names.join(", "))]
    Exists { out: PathBuf, names: Vec<String> },
    /// No archive was given or found, and it cannot be downloaded (offline or download refused).
    #[error("{0}")]
    NotFound(String),
    /// Downloading the archive failed.
    #[error("{0}")]
    Download(String),
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
