//! Numerically stable losses computed from logits: binary cross-entropy (sigmoid output) and
//! softmax cross-entropy, on plain numbers and on Candle tensors (differentiable).

use candle_core::{Tensor, D};

use crate::error::Result;

/// Binary cross-entropy of one logit `z` against a 0/1 target `y`:
/// `max(z, 0) - z·y + ln(1 + exp(-|z|))`, finite for any finite `z`.
pub fn bce_with_logits(z: f32, y: f32) -> f32 {
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

/// The logistic sigmoid, computed without overflow for large |z|.
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Softmax cross-entropy of one row of logits against class `label`: `logsumexp(z) - z[label]`.
/// Also writes the softmax probabilities into `probs` (same length as `z`).
pub fn softmax_cross_entropy(z: &[f32], label: usize, probs: &mut [f32]) -> f32 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (p, &zi) in probs.iter_mut().zip(z) {
        *p = (zi - max).exp();
        sum += *p;
    }
    for p in probs.iter_mut() {
        *p /= sum;
    }
    max + sum.ln() - z[label]
}

/// Mean binary cross-entropy of logits `[B]` or `[B, 1]` against 0/1 targets of the same
/// element count, in the stable form above; differentiable with Candle's autograd.
pub fn bce_with_logits_mean(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let z = logits.flatten_all()?;
    let y = targets.flatten_all()?.to_dtype(z.dtype())?;
    let loss = (z.relu()? - (&z * &y)?)? + z.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok(loss?.mean_all()?)
}

/// Mean softmax cross-entropy of logits `[B, N]` against `u32` class indices `[B]`;
/// differentiable with Candle's autograd.
pub fn softmax_cross_entropy_mean(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_p.gather(&labels.unsqueeze(1)?, 1)?;
    Ok(picked.neg()?.mean_all()?)
}
