//! What stops the server from starting or running (a request's own errors are HTTP answers, see
//! `api::Problem`).

use std::path::PathBuf;

/// The serve crate's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Predict(#[from] predict::Error),
    #[error(transparent)]
    Run(#[from] runfs::Error),
    #[error(
        "{run} is being written by {holder}: serve reads a finished run; wait until it ends, then start serve again"
    )]
    Busy { run: PathBuf, holder: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot listen on {addr}: {source} (pick another --addr, e.g. 127.0.0.1:0 for any free port)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server stopped on an error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
