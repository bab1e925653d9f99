//! The frozen part of the backbone (everything below the trainable block) on the engine the run
//! chose (ONNX Runtime, or Candle through `accel`): preprocessed image batches in, NCHW feature
//! maps out, with timing.

use std::time::Instant;

use features::engine::{Backend, FeatureNet, NetRequest, OrtNet};
use features::onnx::{CutModel, Layout};
use features::runtime::{self, Runner, SessionOptions};

use crate::error::{Error, Result};

/// Runs a single-input, single-output image model on a batch of `n` preprocessed images of side
/// `size` and returns `(dims, values)` of the output (`dims[0] == n`).
pub fn run_images(
    runner: &mut Runner,
    layout: Layout,
    size: u32,
    input: &[f32],
    n: usize,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let s = size as usize;
    if input.len() != n * 3 * s * s {
        return Err(Error::Invalid(format!(
            "input batch holds {} values, {n} images of {s}×{s}×3 need {}",
            input.len(),
            n * 3 * s * s
        )));
    }
    let shape = match layout {
        Layout::Nchw => [n, 3, s, s],
        Layout::Nhwc => [n, s, s, 3],
    };
    let tensor = ort::value::TensorRef::from_array_view((shape, input))?;
    let outputs = runner.session.run(ort::inputs![tensor])?;
    let (oshape, values) = outputs[0].try_extract_tensor::<f32>()?;
    let dims: Vec<usize> = oshape.iter().map(|&d| d.max(0) as usize).collect();
    if dims.first() != Some(&n) {
        return Err(Error::Invalid(format!(
            "model output has shape {dims:?} for a batch of {n}"
        )));
    }
    Ok((dims, values.to_vec()))
}

/// The frozen part of the backbone as a network of the run's engine.
pub struct Frozen {
    net: Box<dyn FeatureNet>,
    /// Layout of the image input (the one the network takes).
    pub layout: Layout,
    /// Side of the square input.
    pub size: u32,
    /// Name of the output tensor (the trainable block's input).
    pub output: String,
    /// `[C, h, w]` of one output, known after the first run.
    pub output_shape: Option<[usize; 3]>,
    /// Images run and seconds spent in ONNX Runtime so far.
    pub images: usize,
    pub seconds: f64,
}

impl Frozen {
    /// Builds an ONNX Runtime session for a cut model.
    pub fn new(cut: &CutModel, opts: &SessionOptions, size: u32) -> Result<Self> {
        let runner = runtime::session(&cut.bytes, opts)?;
        let net = OrtNet {
            runner,
            layout: cut.input_layout,
        };
        Ok(Self::of(Box::new(net), cut, size))
    }

    /// The frozen part `cut` of `model` opened by `backend` (`int8`: `cut` is the int8 model).
    pub fn open(
        backend: &dyn Backend,
        model: &[u8],
        cut: &CutModel,
        int8: bool,
        threads: Option<usize>,
        size: u32,
    ) -> Result<Self> {
        let req = NetRequest {
            model,
            output: &cut.output,
            onnx: &cut.bytes,
            onnx_layout: cut.input_layout,
            int8,
            threads,
        };
        Ok(Self::of(backend.open(&req)?, cut, size))
    }

    fn of(net: Box<dyn FeatureNet>, cut: &CutModel, size: u32) -> Self {
        Frozen {
            layout: net.layout(),
            net,
            size,
            output: cut.output.clone(),
            output_shape: None,
            images: 0,
            seconds: 0.0,
        }
    }

    /// Where it runs (`cpu`, `cuda` for ONNX Runtime; `cuda:0 (Candle)`, …).
    pub fn device(&self) -> String {
        self.net.device()
    }

    /// Values of one preprocessed input image.
    pub fn input_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// Runs `n` preprocessed images; returns their outputs, NCHW, `n · C·h·w` values.
    pub fn run(&mut self, input: &[f32], n: usize) -> Result<Vec<f32>> {
        let t = Instant::now();
        let (dims, values) = self.net.run(input, n, self.size as usize)?;
        if dims.first() != Some(&n) {
            return Err(Error::Invalid(format!(
                "the frozen part's output has shape {dims:?} for a batch of {n}"
            )));
        }
        self.seconds += t.elapsed().as_secs_f64();
        self.images += n;
        let shape: [usize; 3] = match dims.as_slice() {
            [_, c, h, w] => [*c, *h, *w],
            other => {
                return Err(Error::Invalid(format!(
                    "the frozen part's output '{}' has shape {other:?}, expected [N, C, h, w]",
                    self.output
                )))
            }
        };
        match self.output_shape {
            None => self.output_shape = Some(shape),
            Some(s) if s != shape => {
                return Err(Error::Invalid(format!(
                    "frozen output shape changed from {s:?} to {shape:?}"
                )))
            }
            Some(_) => {}
        }
        Ok(values)
    }

    /// Mean seconds per image so far.
    pub fn seconds_per_image(&self) -> f64 {
        self.seconds / self.images.max(1) as f64
    }
}
