//! Who runs the frozen networks (the backbone of `extract`, fine-tuning's frozen part): a
//! [`Backend`] opens a [`FeatureNet`] that turns preprocessed image batches into `[N, C, h, w]`
//! feature maps. ONNX Runtime's backend ([`Ort`]) lives here; the `accel` crate implements the
//! same traits with Candle (CPU or CUDA), and the stages get a backend from
//! `accel::engine::select` — the one place that decides which engine runs where. This crate never
//! depends on `accel`.

use crate::onnx::Layout;
use crate::runtime::{self, Runner, SessionOptions};
use crate::{Error, Result};

/// A frozen network ready to run.
pub trait FeatureNet: Send {
    /// Where it runs, for messages and reports (`cpu`, `cuda`, `cuda:0 (Candle)`, …).
    fn device(&self) -> String;
    /// The layout it takes images in.
    fn layout(&self) -> Layout;
    /// Runs `n` preprocessed images of side `size` (in [`FeatureNet::layout`]); returns the dims
    /// of the output (`dims[0] == n`) and its values.
    fn run(&mut self, input: &[f32], n: usize, size: usize) -> Result<(Vec<usize>, Vec<f32>)>;
}

/// What a stage asks a backend to run.
#[derive(Debug, Clone, Copy)]
pub struct NetRequest<'a> {
    /// The original model file (Candle rebuilds the conv chain from its initializers).
    pub model: &'a [u8],
    /// The tensor the network ends at (e.g. `block5_pool`, `block4_pool`).
    pub output: &'a str,
    /// The cut graph ONNX Runtime runs (the int8 model for an int8 frozen part).
    pub onnx: &'a [u8],
    /// Layout of the cut graph's image input.
    pub onnx_layout: Layout,
    /// True when `onnx` is an int8 (QDQ) model, which only ONNX Runtime runs.
    pub int8: bool,
    /// CPU threads (ONNX Runtime intra-op threads).
    pub threads: Option<usize>,
}

/// Opens frozen networks.
pub trait Backend: Send + Sync {
    /// The network `req` describes, ready to run.
    fn open(&self, req: &NetRequest<'_>) -> Result<Box<dyn FeatureNet>>;
    /// `None` for ONNX Runtime (the reference engine, CPU or its CUDA execution provider); else
    /// the engine and device that computes the features, e.g. `candle cuda fp32`. Recorded in
    /// the features' provenance and joined to cache keys, so features of another engine are
    /// never taken for ONNX Runtime's.
    fn engine(&self) -> Option<String>;
}

/// ONNX Runtime (CPU, or its CUDA execution provider with `onnxruntime-gpu`).
#[derive(Debug, Clone)]
pub struct Ort {
    pub opts: SessionOptions,
}

impl Ort {
    /// ONNX Runtime on the CPU with `threads` intra-op threads.
    pub fn cpu(threads: Option<usize>) -> Self {
        Ort {
            opts: SessionOptions {
                device: runtime::Device::Cpu,
                threads,
            },
        }
    }
}

impl Backend for Ort {
    fn open(&self, req: &NetRequest<'_>) -> Result<Box<dyn FeatureNet>> {
        let opts = SessionOptions {
            threads: req.threads.or(self.opts.threads),
            ..self.opts.clone()
        };
        Ok(Box::new(OrtNet {
            runner: runtime::session(req.onnx, &opts)?,
            layout: req.onnx_layout,
        }))
    }

    fn engine(&self) -> Option<String> {
        None
    }
}

/// An ONNX Runtime session with one image input, its first output used.
pub struct OrtNet {
    pub runner: Runner,
    pub layout: Layout,
}

impl FeatureNet for OrtNet {
    fn device(&self) -> String {
        self.runner.device.to_string()
    }

    fn layout(&self) -> Layout {
        self.layout
    }

    fn run(&mut self, input: &[f32], n: usize, size: usize) -> Result<(Vec<usize>, Vec<f32>)> {
        let s = size;
        if input.len() != n * 3 * s * s {
            return Err(Error::Invalid(format!(
                "input batch holds {} values, {n} images of {s}×{s}×3 need {}",
                input.len(),
                n * 3 * s * s
            )));
        }
        let shape = match self.layout {
            Layout::Nchw => [n, 3, s, s],
            Layout::Nhwc => [n, s, s, 3],
        };
        let tensor = ort::value::TensorRef::from_array_view((shape, input))?;
        let outputs = self.runner.session.run(ort::inputs![tensor])?;
        let (oshape, values) = outputs[0].try_extract_tensor::<f32>()?;
        let dims: Vec<usize> = oshape.iter().map(|&d| d.max(0) as usize).collect();
        if dims.first() != Some(&n) {
            return Err(Error::Runtime(format!(
                "output shape {dims:?} does not start with the batch size {n}"
            )));
        }
        Ok((dims, values.to_vec()))
    }
}
