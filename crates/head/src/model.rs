//! The dense head: Flatten → Dense(hidden, ReLU) → Dropout → Dense(1, sigmoid) for two classes or
//! Dense(N) + softmax for N > 2, its seeded Keras-style initialisation and its inference forward.

use candle_core::{DType, Device, Tensor, Var, D};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Shape of the head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Shape of one feature sample, e.g. `[512, 4, 4]`.
    pub input_shape: Vec<usize>,
    /// Units of the hidden dense layer.
    pub hidden: usize,
    /// Number of classes (≥ 2).
    pub num_classes: usize,
    /// Dropout rate after the hidden layer (training only).
    pub dropout: f32,
}

impl HeadConfig {
    /// Length of a flattened sample.
    pub fn input_dim(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Width of the output layer: 1 (sigmoid) for two classes, else the number of classes.
    pub fn outputs(&self) -> usize {
        if self.num_classes == 2 {
            1
        } else {
            self.num_classes
        }
    }

    /// Checks the sizes and the dropout rate.
    pub fn validate(&self) -> Result<()> {
        if self.input_dim() == 0 {
            return Err(Error::Invalid(format!(
                "feature shape {:?} is empty",
                self.input_shape
            )));
        }
        if self.hidden == 0 {
            return Err(Error::Invalid("--hidden must be at least 1".into()));
        }
        if self.num_classes < 2 {
            return Err(Error::Data(format!(
                "{} class found; a classifier needs at least two classes (one sub-folder per class)",
                self.num_classes
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Invalid(format!(
                "--dropout {} is out of range; it must be in [0, 1)",
                self.dropout
            )));
        }
        Ok(())
    }
}

/// The trainable head. Kernels are stored Keras-style as `[in, out]`.
#[derive(Debug)]
pub struct HeadModel {
    config: HeadConfig,
    pub(crate) w1: Var,
    pub(crate) b1: Var,
    pub(crate) w2: Var,
    pub(crate) b2: Var,
}

/// A copy of all weights (used to keep the best epoch and to roll back after divergence).
#[derive(Clone, Debug, PartialEq)]
pub struct Weights(pub(crate) Vec<Vec<f32>>);

/// Tensor names in `head.safetensors`, in [`HeadModel::vars`] order.
pub const TENSOR_NAMES: [&str; 4] = [
    "dense_1.kernel",
    "dense_1.bias",
    "dense_2.kernel",
    "dense_2.bias",
];

fn glorot_uniform(rng: &mut ChaCha8Rng, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    (0..fan_in * fan_out)
        .map(|_| rng.random_range(-limit..limit))
        .collect()
}

impl HeadModel {
    /// A freshly initialised head: Glorot-uniform kernels and zero biases, drawn from `seed`.
    pub fn new(config: HeadConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut rng = runfs::seed::plain(seed, 0);
        let (d, h, k) = (config.input_dim(), config.hidden, config.outputs());
        let w1 = glorot_uniform(&mut rng, d, h);
        let w2 = glorot_uniform(&mut rng, h, k);
        Ok(HeadModel {
            w1: Var::from_vec(w1, (d, h), device)?,
            b1: Var::zeros(h, DType::F32, device)?,
            w2: Var::from_vec(w2, (h, k), device)?,
            b2: Var::zeros(k, DType::F32, device)?,
            config,
        })
    }

    /// Builds a head from existing tensors (in [`TENSOR_NAMES`] order), checking their shapes.
    pub fn from_tensors(config: HeadConfig, tensors: [Tensor; 4]) -> Result<Self> {
        config.validate()?;
        let (d, h, k) = (config.input_dim(), config.hidden, config.outputs());
        let expected: [&[usize]; 4] = [&[d, h], &[h], &[h, k], &[k]];
        for ((t, want), name) in tensors.iter().zip(expected).zip(TENSOR_NAMES) {
            if t.dims() != want {
                return Err(Error::Invalid(format!(
                    "tensor {name} has shape {:?}, expected {want:?}",
                    t.dims()
                )));
            }
        }
        let [w1, b1, w2, b2] = tensors.map(|t| t.to_dtype(DType::F32));
        Ok(HeadModel {
            w1: Var::from_tensor(&w1?)?,
            b1: Var::from_tensor(&b1?)?,
            w2: Var::from_tensor(&w2?)?,
            b2: Var::from_tensor(&b2?)?,
            config,
        })
    }

    /// The head's shape.
    pub fn config(&self) -> &HeadConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.w1.device()
    }

    /// The trainable variables: `[kernel1, bias1, kernel2, bias2]`.
    pub fn vars(&self) -> Vec<Var> {
        vec![
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.b2.clone(),
        ]
    }

    /// The weights with their names, for saving.
    pub fn named_tensors(&self) -> Vec<(&'static str, Tensor)> {
        TENSOR_NAMES
            .iter()
            .zip(self.vars())
            .map(|(n, v)| (*n, v.as_detached_tensor()))
            .collect()
    }

    /// Output-layer pre-activations `[B, outputs]` for a batch `[B, ...]` (no dropout).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let d = self.config.input_dim();
        if x.elem_count() != b * d {
            return Err(Error::Invalid(format!(
                "feature batch of shape {:?} does not match the head's input shape {:?}",
                x.dims(),
                self.config.input_shape
            )));
        }
        let x = x.reshape((b, d))?.to_dtype(DType::F32)?;
        let h = x.matmul(&self.w1)?.broadcast_add(&self.b1)?.relu()?;
        Ok(h.matmul(&self.w2)?.broadcast_add(&self.b2)?)
    }

    /// Training forward: like [`HeadModel::logits`] but the hidden activations are multiplied by
    /// `mask` (`[B, hidden]`, entries 0 or `1/(1-p)`, see [`HeadModel::dropout_mask`]).
    /// Differentiable with Candle's autograd, for stages that train through the head.
    pub fn logits_with_mask(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let x = x
            .reshape((b, self.config.input_dim()))?
            .to_dtype(DType::F32)?;
        let h = x.matmul(&self.w1)?.broadcast_add(&self.b1)?.relu()?;
        let h = (h * mask.to_dtype(DType::F32)?)?;
        Ok(h.matmul(&self.w2)?.broadcast_add(&self.b2)?)
    }

    /// A seeded inverted-dropout mask `[b, hidden]` for [`HeadModel::logits_with_mask`]: each
    /// unit is dropped with probability `dropout`, kept ones are scaled by `1/(1-dropout)`.
    pub fn dropout_mask(&self, b: usize, rng: &mut impl Rng) -> Result<Tensor> {
        let p = self.config.dropout;
        let scale = 1.0 / (1.0 - p);
        let m: Vec<f32> = (0..b * self.config.hidden)
            .map(|_| {
                if p == 0.0 || rng.random::<f32>() >= p {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Tensor::from_vec(m, (b, self.config.hidden), self.device())?)
    }

    /// Class probabilities `[B, num_classes]` (for two classes: `[1-p, p]` with `p` the sigmoid).
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        let z = self.logits(x)?;
        if self.config.num_classes == 2 {
            let p = candle_nn::ops::sigmoid(&z)?;
            Ok(Tensor::cat(&[&p.affine(-1.0, 1.0)?, &p], 1)?)
        } else {
            Ok(candle_nn::ops::softmax(&z, D::Minus1)?)
        }
    }

    /// Probabilities for `n` flattened samples stored row after row in `x`, computed in chunks.
    pub fn predict(&self, x: &[f32]) -> Result<Vec<Vec<f32>>> {
        let d = self.config.input_dim();
        if !x.len().is_multiple_of(d) {
            return Err(Error::Invalid(format!(
                "{} values is not a whole number of samples of {d}",
                x.len()
            )));
        }
        let mut out = Vec::with_capacity(x.len() / d);
        for chunk in x.chunks(256 * d) {
            let t = Tensor::from_slice(chunk, (chunk.len() / d, d), self.device())?;
            out.extend(self.probabilities(&t)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// Copies all weights out.
    pub fn snapshot(&self) -> Result<Weights> {
        let mut out = Vec::with_capacity(4);
        for v in self.vars() {
            out.push(v.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Weights(out))
    }

    /// Restores weights taken by [`HeadModel::snapshot`].
    pub fn restore(&self, w: &Weights) -> Result<()> {
        for (v, data) in self.vars().iter().zip(&w.0) {
            v.set(&Tensor::from_slice(data, v.shape(), v.device())?)?;
        }
        Ok(())
    }
}
