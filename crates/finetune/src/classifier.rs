//! The dense head on top of the block (Flatten → Dense + ReLU → Dropout → Dense → sigmoid/softmax),
//! converted from a `head` crate model so that it reads the block output in NHWC order, with its
//! training forward pass (inverted dropout), loss and hand-written backward pass.

use candle_core::{Device, Tensor};
use head::{HeadConfig, HeadModel};
use train::loss::{bce_with_logits, sigmoid, softmax_cross_entropy};

use crate::error::{Error, Result};
use train::kernels::conv;
use train::kernels::{product, MatRef, Threads};

/// The head's weights. `w1` rows follow the NHWC flattening of the block output; the Keras head
/// file stores them in CHW (Flatten of NCHW) order: see [`Classifier::from_head`].
#[derive(Clone, Debug, PartialEq)]
pub struct Classifier {
    /// Shape of one input sample `[C, h, w]` (as in the head file; `[C, 1, 1]` for a vector).
    pub feature_shape: [usize; 3],
    /// The head file's input is a vector `[C]` (features cut at a pooled tensor).
    pub pooled: bool,
    pub hidden: usize,
    pub num_classes: usize,
    pub dropout: f32,
    /// `[D, hidden]`, rows in NHWC order.
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    /// `[hidden, outputs]`.
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

/// One training step of the head: summed loss, correct predictions, gradients and the input gradient.
pub struct HeadStep {
    /// Sum of the per-sample losses (divide by the batch size for the mean).
    pub loss_sum: f64,
    pub correct: usize,
    /// Gradients of the mean loss: `[w1, b1, w2, b2]` in the layouts of [`Classifier`].
    pub grads: [Vec<f32>; 4],
    /// Gradient of the mean loss with respect to the input, NHWC rows.
    pub dx: Vec<f32>,
}

/// Index of NHWC element `g` in the CHW flattening of a `[c, h, w]` sample.
fn chw_index(g: usize, [c, h, w]: [usize; 3]) -> usize {
    let ch = g % c;
    let p = g / c;
    ch * h * w + p
}

impl Classifier {
    /// Width of the output layer (1 for two classes).
    pub fn outputs(&self) -> usize {
        if self.num_classes == 2 {
            1
        } else {
            self.num_classes
        }
    }

    /// Length of a flattened input sample.
    pub fn input_dim(&self) -> usize {
        self.feature_shape.iter().product()
    }

    /// Converts a trained `head` model (Keras layout, CHW rows) into NHWC row order.
    pub fn from_head(model: &HeadModel) -> Result<Self> {
        let cfg = model.config();
        let pooled = cfg.input_shape.len() == 1;
        let shape: [usize; 3] = match cfg.input_shape.as_slice() {
            [c] => [*c, 1, 1],
            s => s.try_into().map_err(|_| {
                Error::Mismatch(format!(
                    "the head expects features of shape {:?}; fine-tuning needs a feature map [C, h, w] or a vector [C]",
                    cfg.input_shape
                ))
            })?,
        };
        let vars = model.vars();
        let values: Vec<Vec<f32>> = vars
            .iter()
            .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<candle_core::Result<_>>()?;
        let [w1, b1, w2, b2]: [Vec<f32>; 4] = values
            .try_into()
            .map_err(|_| Error::Invalid("a head model has four tensors".into()))?;
        let h = cfg.hidden;
        let mut w1n = vec![0f32; w1.len()];
        for (g, row) in w1n.chunks_exact_mut(h).enumerate() {
            let f = chw_index(g, shape);
            row.copy_from_slice(&w1[f * h..(f + 1) * h]);
        }
        Ok(Classifier {
            feature_shape: shape,
            pooled,
            hidden: h,
            num_classes: cfg.num_classes,
            dropout: cfg.dropout,
            w1: w1n,
            b1,
            w2,
            b2,
        })
    }

    /// `w1` with rows back in CHW (Keras Flatten) order.
    pub fn w1_chw(&self) -> Vec<f32> {
        let h = self.hidden;
        let mut out = vec![0f32; self.w1.len()];
        for (g, row) in self.w1.chunks_exact(h).enumerate() {
            let f = chw_index(g, self.feature_shape);
            out[f * h..(f + 1) * h].copy_from_slice(row);
        }
        out
    }

    /// The `head` crate model with these weights (Keras layout), e.g. for `head::save`.
    pub fn to_head(&self) -> Result<HeadModel> {
        let cfg = HeadConfig {
            input_shape: if self.pooled {
                vec![self.feature_shape[0]]
            } else {
                self.feature_shape.to_vec()
            },
            hidden: self.hidden,
            num_classes: self.num_classes,
            dropout: self.dropout,
        };
        let (d, h, k) = (self.input_dim(), self.hidden, self.outputs());
        let dev = Device::Cpu;
        let parts = [
            Tensor::from_vec(self.w1_chw(), (d, h), &dev)?,
            Tensor::from_slice(&self.b1, h, &dev)?,
            Tensor::from_slice(&self.w2, (h, k), &dev)?,
            Tensor::from_slice(&self.b2, k, &dev)?,
        ];
        Ok(HeadModel::from_tensors(cfg, parts)?)
    }

    fn check_input(&self, x: &[f32], n: usize) -> Result<()> {
        if x.len() != n * self.input_dim() {
            return Err(Error::Invalid(format!(
                "head input holds {} values, {n} samples of {:?} need {}",
                x.len(),
                self.feature_shape,
                n * self.input_dim()
            )));
        }
        Ok(())
    }

    /// Output-layer pre-activations `[n, outputs]` (no dropout) for NHWC-flattened samples.
    pub fn logits(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check_input(x, n)?;
        let (d, h, k) = (self.input_dim(), self.hidden, self.outputs());
        let all = Threads::All;
        let mut a = product(MatRef::new(x, n, d), MatRef::new(&self.w1, d, h), all);
        conv::bias_relu(&mut a, &self.b1, true);
        let mut z = product(MatRef::new(&a, n, h), MatRef::new(&self.w2, h, k), all);
        conv::bias_relu(&mut z, &self.b2, false);
        Ok(z)
    }

    /// Forward with the dropout `mask` (`[n, hidden]`, each 0 or 1/(1-p); `None` = no dropout),
    /// mean loss over the batch and backward.
    // Over 80 lines: the forward and backward of the head share the activations of the batch.
    pub fn train_step(
        &self,
        x: &[f32],
        n: usize,
        labels: &[u32],
        mask: Option<&[f32]>,
    ) -> Result<HeadStep> {
        self.check_input(x, n)?;
        if labels.len() != n {
            return Err(Error::Invalid(format!(
                "{} labels for {n} samples",
                labels.len()
            )));
        }
        let (d, h, k) = (self.input_dim(), self.hidden, self.outputs());
        if let Some(m) = mask {
            if m.len() != n * h {
                return Err(Error::Invalid(format!(
                    "dropout mask of {} values, need {}",
                    m.len(),
                    n * h
                )));
            }
        }
        let all = Threads::All;
        let mut act = product(MatRef::new(x, n, d), MatRef::new(&self.w1, d, h), all);
        conv::bias_relu(&mut act, &self.b1, true);
        let mut dropped = act.clone();
        if let Some(m) = mask {
            for (v, s) in dropped.iter_mut().zip(m) {
                *v *= s;
            }
        }
        let mut z = product(
            MatRef::new(&dropped, n, h),
            MatRef::new(&self.w2, h, k),
            all,
        );
        conv::bias_relu(&mut z, &self.b2, false);

        // Loss and dL/dz of the batch mean.
        let inv_n = 1.0 / n as f32;
        let mut dz = vec![0f32; n * k];
        let mut probs = vec![0f32; k];
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for i in 0..n {
            let zi = &z[i * k..(i + 1) * k];
            let y = labels[i];
            if k == 1 {
                loss_sum += bce_with_logits(zi[0], y as f32) as f64;
                correct += usize::from(u32::from(zi[0] > 0.0) == y);
                dz[i] = (sigmoid(zi[0]) - y as f32) * inv_n;
            } else {
                loss_sum += softmax_cross_entropy(zi, y as usize, &mut probs) as f64;
                let mut best = 0;
                for (j, &v) in zi.iter().enumerate() {
                    if v > zi[best] {
                        best = j;
                    }
                }
                correct += usize::from(best as u32 == y);
                for j in 0..k {
                    let t = if j as u32 == y { 1.0 } else { 0.0 };
                    dz[i * k + j] = (probs[j] - t) * inv_n;
                }
            }
        }
        let gb2 = conv::column_sums(&dz, k);
        let gw2 = product(MatRef::t(&dropped, n, h), MatRef::new(&dz, n, k), all);
        let mut da = product(MatRef::new(&dz, n, k), MatRef::t(&self.w2, h, k), all);
        for (i, g) in da.iter_mut().enumerate() {
            let m = mask.map_or(1.0, |m| m[i]);
            *g = if act[i] > 0.0 { *g * m } else { 0.0 };
        }
        let gb1 = conv::column_sums(&da, h);
        let gw1 = product(MatRef::t(x, n, d), MatRef::new(&da, n, h), all);
        let dx = product(MatRef::new(&da, n, h), MatRef::t(&self.w1, d, h), all);
        Ok(HeadStep {
            loss_sum,
            correct,
            grads: [gw1, gb1, gw2, gb2],
            dx,
        })
    }

    /// Class probabilities from logits: `[1-p, p]` for two classes, softmax otherwise.
    pub fn probabilities(&self, z: &[f32]) -> Vec<Vec<f32>> {
        let k = self.outputs();
        z.chunks_exact(k)
            .map(|zi| {
                if k == 1 {
                    let p = sigmoid(zi[0]);
                    vec![1.0 - p, p]
                } else {
                    let max = zi.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = zi.iter().map(|v| (v - max).exp()).collect();
                    let s: f32 = e.iter().sum();
                    e.into_iter().map(|v| v / s).collect()
                }
            })
            .collect()
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.w1.len() + self.b1.len() + self.w2.len() + self.b2.len()
    }
}
