//! What a training stage reports while it runs, so every caller shows progress the same way.

use crate::metrics::EpochMetrics;

/// Progress reports of a training stage.
#[derive(Debug)]
pub enum StageEvent<'a> {
    /// A line of information (model, device, checks, caches).
    Info(String),
    /// An image could not be read and is left out.
    Skipped {
        split: &'a str,
        file: &'a str,
        reason: &'a str,
    },
    /// A phase over `total` images begins (decoding a split, building a cache, an epoch).
    PhaseStart { name: String, total: usize },
    /// `done` images of the current phase are processed.
    Progress { done: usize },
    /// The current phase ended.
    PhaseEnd,
    /// An epoch ended.
    Epoch {
        metrics: &'a EpochMetrics,
        epochs: usize,
        /// Training throughput of the epoch.
        images_per_second: f64,
    },
}
