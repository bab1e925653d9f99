//! The CPU kernels of the hand-written networks (stage 1's convnet, fine-tuning's block and head,
//! the stage-2 head's fused step): one FP32 matrix-product backend ([`matmul`], the `gemm`
//! crate), the three products of a 3×3 convolution layer in the precision [`TrainPrecision`]
//! chooses ([`convolve`]: FP32 im2col + matmul, or the direct bf16 convolutions of [`bf16`] on
//! AVX512-BF16 CPUs), the im2col, pooling and activation kernels ([`conv`]), and the
//! register-tiled skinny product that the stage-2 head fuses into its optimizer pass ([`tile`]; a
//! general matmul cannot be fused there).

pub mod bf16;
pub mod conv;
pub mod convolve;
pub mod matmul;
pub mod precision;
pub mod tile;

pub use conv::Nhwc;
pub use matmul::{matmul, matmul_on, product, MatRef, Threads};
pub use precision::TrainPrecision;
