//! The precision of training products (`--train-precision`): FP32, or bf16 products with FP32
//! accumulation where the CPU has AVX512-BF16; `auto` resolves to bf16 there and FP32 elsewhere.
//! Weights, gradients, optimizer state and every sum stay FP32 either way.

use super::bf16;

base::choices! {
    /// Precision of the matrix products of training (forward and backward).
    pub enum TrainPrecision("training precision") {
        /// bf16 products with FP32 accumulation when the CPU has AVX512-BF16, else FP32.
        Auto = "auto",
        /// FP32 products (the reference).
        Fp32 = "fp32",
        /// bf16 products, FP32 accumulation (mixed precision; needs AVX512-BF16).
        Bf16 = "bf16",
    }
}

impl TrainPrecision {
    /// The precision products actually run in on this CPU: `auto` becomes `bf16` or `fp32`;
    /// `bf16` on a CPU without AVX512-BF16 is an error naming the fix.
    pub fn resolve(self) -> Result<TrainPrecision, String> {
        match self {
            TrainPrecision::Auto if bf16::available() => Ok(TrainPrecision::Bf16),
            TrainPrecision::Auto => Ok(TrainPrecision::Fp32),
            TrainPrecision::Bf16 if !bf16::available() => Err(
                "--train-precision bf16 needs a CPU with AVX512-BF16 (this one has none, or \
                 BOTTLENECK_NO_BF16 is set): use --train-precision fp32 or auto"
                    .into(),
            ),
            p => Ok(p),
        }
    }
}
