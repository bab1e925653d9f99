//! The one error type of the `accel` crate.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building or running a network on a Candle device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested device cannot be used (CUDA asked for but not compiled in, no driver, no GPU).
    #[error("{0}")]
    Device(String),
    /// The ONNX graph is not a chain this crate can rebuild in Candle.
    #[error("ONNX graph: {0}")]
    Graph(String),
    /// An argument does not fit the network (shapes, lengths, settings).
    #[error("{0}")]
    Invalid(String),
    /// Images, models, ONNX parsing (from the `features` crate).
    #[error(transparent)]
    Features(#[from] features::Error),
    /// Optimizer settings (from the `train` crate).
    #[error(transparent)]
    Train(#[from] train::Error),
    /// A tensor operation failed inside Candle.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
}
