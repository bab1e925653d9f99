//! Where the networks run, as every stage and the command line name it: the device
//! (`--device`) and the engine knob (`--engine`, `BOTTLENECK_ENGINE`). What each choice does is
//! `features::runtime` (sessions) and `accel::engine` (the selection).

crate::choices! {
    /// Where inference runs.
    pub enum Device("device") {
        /// CPU execution provider only.
        Cpu = "cpu",
        /// CUDA execution provider; failing to register it is an error (no silent CPU fallback).
        Cuda = "cuda" | "gpu",
        /// CUDA when it registers, otherwise CPU; the session reports which one ran.
        Auto = "auto",
    }
}

crate::choices! {
    /// Which engine runs the networks: the default, or a knob for diagnostics and tests
    /// (`--engine`, a hidden flag, or the environment variable `BOTTLENECK_ENGINE`).
    pub enum Engine("engine") {
        /// On `--device cpu`: ONNX Runtime for the frozen networks and the CPU kernels for
        /// training; on `--device cuda`: Candle for everything (`auto`: CUDA when it starts).
        Auto = "auto",
        /// ONNX Runtime for the frozen networks on the `--device` asked for (its CUDA execution
        /// provider needs `onnxruntime-gpu`: `scripts/setup.sh --cuda`), the CPU kernels for training.
        Ort = "ort" | "onnxruntime",
        /// Candle for every network, also on the CPU with `--device cpu` (slower; the GPU code
        /// path run on the CPU, for tests and diagnostics).
        Candle = "candle",
    }
}

/// The environment variable that sets [`Engine`] when no `--engine` is given.
pub const ENGINE_VAR: &str = "BOTTLENECK_ENGINE";
