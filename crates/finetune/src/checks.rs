//! Checks against ONNX Runtime on real images: the Candle block reproduces the model's own output
//! tensor (before training), and the exported `model.onnx` reproduces the Candle forward (after).

use features::runtime::{self, SessionOptions};

use crate::block::{nchw_to_nhwc, nhwc_to_nchw};
use crate::error::{Error, Result};
use crate::frozen::run_images;
use crate::images::{self, ImageSet, InputSpec};
use crate::net::Net;
use train::kernels::Nhwc;

/// Largest relative difference accepted between the Candle block and ONNX Runtime.
pub const BLOCK_TOLERANCE: f64 = 1e-4;
/// Largest absolute probability difference accepted between `model.onnx` and the Candle forward.
pub const EXPORT_TOLERANCE: f64 = 1e-4;

/// Plain network input for the first `n` images of `set`.
fn inputs(set: &ImageSet, n: usize, spec: InputSpec, size: u32) -> Result<Vec<f32>> {
    let per = 3 * size as usize * size as usize;
    let mut input = vec![0f32; n * per];
    for (slot, img) in input.chunks_exact_mut(per).zip(&set.images) {
        images::write_plain(img, spec, slot)?;
    }
    Ok(input)
}

/// Maximum of `|a - b|` over the maximum of `|b|` (the reference).
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
        / scale
}

/// Images to check on and how to turn them into input.
pub struct Probe<'a> {
    pub set: &'a ImageSet,
    /// Frozen outputs of `set` (NCHW rows, at least `images` of them).
    pub rows: &'a [f32],
    pub row_shape: [usize; 3],
    pub spec: InputSpec,
    pub size: u32,
    pub opts: &'a SessionOptions,
    /// How many images (from the start of `set`) to check.
    pub images: usize,
}

/// The frozen outputs (NCHW rows) of the images `probe` checks, computed with `cut` (with an int8
/// frozen part: the FP32 cut for the block check, the int8 cut for the export check).
pub fn frozen_rows(cut: &features::onnx::CutModel, probe: &Probe<'_>) -> Result<Vec<f32>> {
    let n = probe.images.min(probe.set.len()).max(1);
    let mut frozen = crate::frozen::Frozen::new(cut, probe.opts, probe.size)?;
    frozen.run(&inputs(probe.set, n, probe.spec, probe.size)?, n)
}

/// What a check compared.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckResult {
    pub images: usize,
    /// Largest absolute value of the reference (so a check on all-zero outputs is visible).
    pub reference_max: f64,
    pub max_diff: f64,
    pub tolerance: f64,
}

/// Runs the model cut at the block's output on the first `n` images and compares it with the
/// Candle block applied to their frozen outputs `rows` (NCHW). Fails above [`BLOCK_TOLERANCE`].
pub fn block_parity(model: &[u8], net: &Net, probe: &Probe<'_>) -> Result<CheckResult> {
    let Probe {
        set,
        rows,
        row_shape,
        spec,
        size,
        opts,
        images: n,
    } = *probe;
    let n = n.min(set.len()).max(1);
    let cut = features::onnx::cut_at(model, &net.block.output_tensor)?;
    let mut runner = runtime::session(&cut.bytes, opts)?;
    let (_, reference) = run_images(
        &mut runner,
        cut.input_layout,
        size,
        &inputs(set, n, spec, size)?,
        n,
    )?;
    let [c, h, w] = row_shape;
    let d = Nhwc { n, h, w, c };
    let (out, od) = net
        .block
        .infer(&nchw_to_nhwc(&rows[..n * c * h * w], d), d)?;
    let ours = nhwc_to_nchw(&out, od);
    if ours.len() != reference.len() {
        return Err(Error::Parity(format!(
            "the Candle block gives {} values per batch, ONNX Runtime's '{}' {}",
            ours.len(),
            net.block.output_tensor,
            reference.len()
        )));
    }
    let diff = max_rel_diff(&ours, &reference);
    if diff.is_nan() || diff > BLOCK_TOLERANCE {
        return Err(Error::Parity(format!(
            "the Candle block differs from ONNX Runtime's '{}' by {diff:.2e} (relative, max over {n} images; \
             tolerance {BLOCK_TOLERANCE:.0e}); refusing to train a block that does not reproduce the model",
            net.block.output_tensor
        )));
    }
    let reference_max = reference.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    Ok(CheckResult {
        images: n,
        reference_max,
        max_diff: diff,
        tolerance: BLOCK_TOLERANCE,
    })
}

/// Runs the exported model on the first `n` images and compares its probabilities with the
/// Candle forward on their frozen outputs `rows` (in FP32, as the exported graph computes,
/// whatever precision training used). Fails above [`EXPORT_TOLERANCE`].
pub fn export_parity(exported: &[u8], net: &Net, probe: &Probe<'_>) -> Result<CheckResult> {
    let mut net = net.clone();
    net.block.precision = train::kernels::TrainPrecision::Fp32;
    let Probe {
        set,
        rows,
        row_shape,
        spec,
        size,
        opts,
        images: n,
    } = *probe;
    let n = n.min(set.len()).max(1);
    let mut runner = runtime::session(exported, opts)?;
    let (dims, onnx) = run_images(
        &mut runner,
        spec.layout,
        size,
        &inputs(set, n, spec, size)?,
        n,
    )?;
    let [c, h, w] = row_shape;
    let d = Nhwc { n, h, w, c };
    let z = net.logits(&nchw_to_nhwc(&rows[..n * c * h * w], d), d)?;
    let ours: Vec<f32> = net.head.probabilities(&z).into_iter().flatten().collect();
    if dims != [n, net.head.num_classes] {
        return Err(Error::Parity(format!(
            "the exported model returns shape {dims:?}, expected [{n}, {}]",
            net.head.num_classes
        )));
    }
    if let Some(bad) = train::finite::first_non_finite_in([
        ("model.onnx", &onnx[..]),
        ("the Candle forward", &ours[..]),
    ]) {
        return Err(Error::Parity(format!(
            "non-finite probabilities: {bad} (the weights are damaged)"
        )));
    }
    let diff = onnx
        .iter()
        .zip(&ours)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
    if diff.is_nan() || diff > EXPORT_TOLERANCE {
        return Err(Error::Parity(format!(
            "the exported model.onnx differs from the Candle forward by {diff:.2e} in probability (tolerance \
             {EXPORT_TOLERANCE:.0e})"
        )));
    }
    let reference_max = ours.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    Ok(CheckResult {
        images: n,
        reference_max,
        max_diff: diff,
        tolerance: EXPORT_TOLERANCE,
    })
}
