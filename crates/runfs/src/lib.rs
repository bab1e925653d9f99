//! The run folder and what every stage writes into it, the same way: one writer per run folder at a
//! time ([`lock`]), no write through a symbolic link ([`links`]), files that appear whole or not at all under unique temporary names that are
//! removed on every error path ([`atomic`]), length-prefixed SHA-256 digests of what outputs depend
//! on ([`digest`]), and reproducible random streams derived from one seed ([`seed`]).
//!
//! It knows nothing about images, features or models: every other crate may use it, it uses none of them.

pub mod atomic;
pub mod digest;
pub(crate) mod error;
pub mod links;
pub mod lock;
pub mod seed;
pub(crate) mod status;

pub use atomic::{copy_atomic, link_or_copy, occupied, write_atomic, TempFile};
pub use digest::{sha256_file, Digest};
pub use error::{Error, Result};
pub use lock::RunLock;
pub use seed::DEFAULT_SEED;
pub use status::Status;
