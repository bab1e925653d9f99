//! Test material for the workspace's tests, examples and benchmarks (a dev-dependency only, never
//! part of the binary): the real data beside the checkout (`../shared`) with a loud failure in CI when
//! it is missing, small synthetic image folders, closeness measures for parity checks, and tiny
//! VGG-shaped ONNX models with seeded weights.

pub mod compare;
pub mod data;
pub mod mobile;
pub mod synth;

pub use data::{files_under, link_shared_subset, shared_photos, shared_root, write_synthetic};
