//! The trainable network: the conv block followed by the dense head, its parameters as one
//! ordered list (what the optimizer and checkpoints see), one training step and inference.

use crate::block::Block;
use crate::classifier::Classifier;
use crate::error::{Error, Result};
use train::kernels::Nhwc;

/// Tensor names of the head's parameters (as in `head.safetensors`).
pub const HEAD_NAMES: [&str; 4] = [
    "dense_1.kernel",
    "dense_1.bias",
    "dense_2.kernel",
    "dense_2.bias",
];

/// Block + head.
#[derive(Clone, Debug, PartialEq)]
pub struct Net {
    pub block: Block,
    pub head: Classifier,
}

/// What one training step computed.
pub struct StepResult {
    /// Sum of per-sample losses.
    pub loss_sum: f64,
    pub correct: usize,
    /// Gradients of the batch-mean loss in [`Net::params`] order.
    pub grads: Vec<Vec<f32>>,
}

impl Net {
    /// Builds the network, checking that the block output matches the head input.
    pub fn new(block: Block, head: Classifier, input: Nhwc) -> Result<Self> {
        let out = block.output_dims(input)?;
        let [c, h, w] = head.feature_shape;
        if (out.c, out.h, out.w) != (c, h, w) {
            return Err(Error::Mismatch(format!(
                "the block turns a [{}, {}, {}] input into [{}, {}, {}] but the head expects [{c}, {h}, {w}]: \
                 the head was trained on features of another model, tensor or image size; retrain it with \
                 `bottleneck train-head` on features extracted at this size",
                input.c, input.h, input.w, out.c, out.h, out.w
            )));
        }
        Ok(Net { block, head })
    }

    /// Parameter names in [`Net::params`] order: the block's ([`Block::param_names`]), then
    /// the head's `dense_1.kernel`, `dense_1.bias`, `dense_2.kernel`, `dense_2.bias`.
    pub fn param_names(&self) -> Vec<String> {
        let mut names = self.block.param_names();
        names.extend(HEAD_NAMES.iter().map(|s| s.to_string()));
        names
    }

    /// Every trainable tensor, in a fixed order (the block's, then the head's).
    pub fn params(&self) -> Vec<&[f32]> {
        let mut p = self.block.params();
        let h = &self.head;
        p.extend([h.w1.as_slice(), &h.b1, &h.w2, &h.b2]);
        p
    }

    /// Every trainable tensor, mutably, in [`Net::params`] order.
    pub fn params_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut p = self.block.params_mut();
        let h = &mut self.head;
        p.extend([&mut h.w1, &mut h.b1, &mut h.w2, &mut h.b2]);
        p
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.block.parameter_count() + self.head.parameter_count()
    }

    /// Forward, loss and backward on a batch of frozen outputs (NHWC), with an optional dropout mask.
    pub fn step(
        &self,
        x: &[f32],
        d: Nhwc,
        labels: &[u32],
        mask: Option<&[f32]>,
    ) -> Result<StepResult> {
        let trace = self.block.forward(x, d)?;
        let hs = self.head.train_step(trace.output(), d.n, labels, mask)?;
        let (mut grads, _) = self.block.backward(trace, hs.dx, false)?;
        grads.extend(hs.grads);
        Ok(StepResult {
            loss_sum: hs.loss_sum,
            correct: hs.correct,
            grads,
        })
    }

    /// Output-layer logits `[n, outputs]` for a batch of frozen outputs (NHWC).
    pub fn logits(&self, x: &[f32], d: Nhwc) -> Result<Vec<f32>> {
        let (feat, _) = self.block.infer(x, d)?;
        self.head.logits(&feat, d.n)
    }
}
