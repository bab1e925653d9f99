//! The server's settings and their defaults, defined once: the CLI's flags default to these.

use std::time::Duration;

use crate::error::{Error, Result};

/// Most images in one multipart request.
pub const MAX_IMAGES_PER_REQUEST: usize = 64;

/// Defaults, shown by the CLI's `--help`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BATCH: usize = 8;
pub const DEFAULT_MAX_WAIT_MS: u64 = 2;
pub const DEFAULT_MAX_BODY_MIB: usize = 32;
pub const DEFAULT_MAX_INFLIGHT: usize = 32;
pub const DEFAULT_MAX_IMAGES: usize = 256;
pub const DEFAULT_TIMEOUT_S: u64 = 30;
pub const DEFAULT_TOP_K: usize = 3;

/// How the server listens, batches and bounds its work.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on (`127.0.0.1:0` takes any free port).
    pub addr: String,
    /// Most images run through the network at once.
    pub max_batch: usize,
    /// How long the first image of a batch waits for others to join it.
    pub max_wait: Duration,
    /// Largest request body, in bytes (413 above it).
    pub max_body: usize,
    /// Most requests at once (503 with `Retry-After` above it).
    pub max_inflight: usize,
    /// Most images of the requests in flight, decoded or waiting for the network (503 with
    /// `Retry-After` above it): with `max_inflight` × `max_body`, what bounds the memory.
    pub max_images: usize,
    /// Longest a request may take, body upload included (408 after it).
    pub timeout: Duration,
    /// Answer `unknown` (`abstained: true`) when the top probability is below this.
    pub min_confidence: Option<f32>,
    /// Classes listed in each answer's `top` unless the request asks (`?top_k=`).
    pub top_k: usize,
    /// Uploads decoded at once (threads beside the network's).
    pub decode_threads: usize,
}

/// Uploads decoded at once by default: the cores, at most 4 (as `predict`'s decode workers).
pub fn default_decode_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: DEFAULT_ADDR.into(),
            max_batch: DEFAULT_MAX_BATCH,
            max_wait: Duration::from_millis(DEFAULT_MAX_WAIT_MS),
            max_body: DEFAULT_MAX_BODY_MIB << 20,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_images: DEFAULT_MAX_IMAGES,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_S),
            min_confidence: None,
            top_k: DEFAULT_TOP_K,
            decode_threads: default_decode_threads(),
        }
    }
}

impl Options {
    /// Refuses settings that cannot work, naming the flag.
    pub fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.into()));
        if let Some(p) = self.min_confidence {
            if !(0.0..=1.0).contains(&p) {
                return bad("--min-confidence is a probability: give a value from 0 to 1");
            }
        }
        if self.max_batch == 0 || self.max_inflight == 0 || self.max_images == 0 {
            return bad("--max-batch, --max-inflight and --max-images must be at least 1");
        }
        if self.max_body == 0 || self.top_k == 0 || self.decode_threads == 0 {
            return bad("--max-body-mib, --top-k and --decode-threads must be at least 1");
        }
        if self.timeout.is_zero() {
            return bad("--timeout-s must be more than 0");
        }
        Ok(())
    }
}
