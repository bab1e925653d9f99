//! The foundation every crate may use and that uses none of them: named choices ([`choices!`]) and
//! the bundled plot font ([`font`]). No ONNX Runtime, no image decoding, no network.

pub mod font;
pub mod names;

pub use names::UnknownName;
