//! The one error type of the `runfs` crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the files of a run folder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process writes to the run folder.
    #[error("{} is in use by {holder}; wait for it to finish or use another --run", run.display())]
    Locked { run: PathBuf, holder: String },
    /// A folder of the run is a symbolic link.
    #[error(
        "{} is a symbolic link (to {target}); bottleneck writes only inside the run folder and never \
         through links: replace the link with a real folder (mv it aside, or use another --run)",
        link.display()
    )]
    Linked {
        link: PathBuf,
        target: String,
        run: PathBuf,
    },
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
