//! The foundation every crate may use and that uses none of them: named choices ([`choices!`]),
//! the device and engine every stage is asked to run on ([`runtime`]) and the bundled plot font
//! ([`font`]). No ONNX Runtime, no image decoding, no network.

pub mod font;
pub mod names;
pub mod runtime;

pub use names::UnknownName;
