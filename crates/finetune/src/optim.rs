//! SGD with (Nesterov) momentum and decoupled weight decay, Keras 3 semantics, over plain `f32`
//! buffers with its state exposed for checkpoints. The arithmetic is element for element the one of
//! `head::optim` (`m = μ·m − lr·g; w += m`), so both give identical updates (tested).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    pub learning_rate: f64,
    pub momentum: f64,
    pub nesterov: bool,
    /// Decoupled weight decay: `w -= w·wd·lr` before each update.
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::Invalid(format!(
                "--lr {} must be > 0",
                self.learning_rate
            )));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::Invalid(format!(
                "--momentum {} must be in [0, 1)",
                self.momentum
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::Invalid(format!(
                "--weight-decay {} must be >= 0",
                self.weight_decay
            )));
        }
        Ok(())
    }

    /// The same settings as a `head` optimizer configuration (for metadata).
    pub fn to_head(&self) -> head::optim::OptimizerConfig {
        head::optim::OptimizerConfig {
            weight_decay: self.weight_decay,
            ..head::optim::OptimizerConfig::sgd(self.learning_rate, self.momentum, self.nesterov)
        }
    }
}

/// The optimizer and its state (one velocity buffer per parameter).
#[derive(Clone, Debug, PartialEq)]
pub struct Sgd {
    pub config: SgdConfig,
    /// Velocity of each parameter (empty vectors when momentum is 0).
    pub velocity: Vec<Vec<f32>>,
    /// Steps taken.
    pub iterations: u64,
}

impl Sgd {
    /// Zero state for parameters of the given lengths.
    pub fn new(config: SgdConfig, sizes: &[usize]) -> Result<Self> {
        config.validate()?;
        let velocity = sizes
            .iter()
            .map(|&n| {
                if config.momentum > 0.0 {
                    vec![0f32; n]
                } else {
                    Vec::new()
                }
            })
            .collect();
        Ok(Sgd {
            config,
            velocity,
            iterations: 0,
        })
    }

    /// One update of every parameter with its gradient.
    pub fn step(&mut self, params: &mut [&mut Vec<f32>], grads: &[Vec<f32>]) -> Result<()> {
        if params.len() != grads.len() || params.len() != self.velocity.len() {
            return Err(Error::Invalid(format!(
                "optimizer: {} parameters, {} gradients, {} state buffers",
                params.len(),
                grads.len(),
                self.velocity.len()
            )));
        }
        let lr = self.config.learning_rate as f32;
        let decay = self.config.weight_decay as f32 * lr;
        let mu = self.config.momentum as f32;
        let nesterov = self.config.nesterov;
        for ((w, g), m) in params.iter_mut().zip(grads).zip(self.velocity.iter_mut()) {
            if w.len() != g.len() || (mu > 0.0 && m.len() != w.len()) {
                return Err(Error::Invalid(format!(
                    "optimizer: parameter of {} values, gradient of {}",
                    w.len(),
                    g.len()
                )));
            }
            if mu == 0.0 {
                for (wi, &gi) in w.iter_mut().zip(g) {
                    let d = *wi - *wi * decay;
                    *wi = d - gi * lr;
                }
                continue;
            }
            for ((wi, &gi), mi) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                let d = *wi - *wi * decay;
                let step = -gi * lr;
                let v = step + *mi * mu;
                *mi = v;
                *wi = if nesterov { d + (step + v * mu) } else { d + v };
            }
        }
        self.iterations += 1;
        Ok(())
    }
}
