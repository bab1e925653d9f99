//! The CPU kernels of the hand-written networks (stage 1's convnet, fine-tuning's block and head,
//! the stage-2 head's fused step): one matrix-product backend ([`matmul`], FP32 through the `gemm`
//! crate, and [`bf16`], bf16 products with FP32 sums on AVX512-BF16 CPUs, chosen per product by
//! [`TrainPrecision`]), the convolution, pooling and activation kernels ([`conv`]), and the
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
pub use precision::{matmul_in, product_in, TrainPrecision};
