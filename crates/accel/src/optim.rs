//! The optimizers of `train::optim` (Keras 3 semantics: RMSprop, SGD with momentum or Nesterov,
//! Adam, AdamW; decoupled weight decay) updating Candle variables on their own device, with the
//! state kept there too and exchanged with the CPU optimizer's checkpoint layout.
//!
//! Update rules (`g` gradient, `lr` learning rate, `t` the 1-based step), as in `train::optim`:
//! weight decay `w -= w·(wd·lr)` first; RMSprop `v = ρ·v + (1-ρ)·g²; w -= lr·g / sqrt(v + ε)`;
//! SGD `m = μ·m - lr·g; w += m` (Nesterov `w += μ·m - lr·g`), plain `w -= lr·g` when μ = 0;
//! Adam `m += (g-m)(1-β₁); v += (g²-v)(1-β₂); w -= α·m / (sqrt(v)+ε)`, `α = lr·sqrt(1-β₂ᵗ)/(1-β₁ᵗ)`.
//! The CPU optimizer also flushes gradients below 1e-18 and subnormal state to zero (a speed
//! measure on x86); on a device they are kept, which changes no weight by more than ~1e-18.

use candle_core::{Tensor, Var};
use train::optim::{OptimizerConfig, OptimizerKind};

use crate::error::{Error, Result};

/// An optimizer over Candle variables, updated where they live.
pub struct DeviceOptim {
    vars: Vec<Var>,
    /// Up to two state tensors per variable (same shape, f32, on the variable's device).
    state: Vec<[Option<Tensor>; 2]>,
    config: OptimizerConfig,
    iterations: u64,
}

fn slots(c: &OptimizerConfig) -> usize {
    match c.kind {
        OptimizerKind::RmsProp => 1,
        OptimizerKind::Sgd if c.momentum > 0.0 => 1,
        OptimizerKind::Sgd => 0,
        OptimizerKind::Adam | OptimizerKind::AdamW => 2,
    }
}

impl DeviceOptim {
    /// Zeroed state for `vars` (f32 variables).
    pub fn new(vars: Vec<Var>, config: OptimizerConfig) -> Result<Self> {
        config.validate()?;
        let n = slots(&config);
        let state = vars
            .iter()
            .map(|v| {
                let z = || v.as_tensor().zeros_like();
                Ok([(n >= 1).then(z).transpose()?, (n >= 2).then(z).transpose()?])
            })
            .collect::<Result<_>>()?;
        Ok(DeviceOptim {
            vars,
            state,
            config,
            iterations: 0,
        })
    }

    /// The optimizer for `vars` that continues the host optimizer `host` (its settings, state and
    /// step count): how a training pass on a device picks up where the host's state stands.
    pub fn continuing(vars: Vec<Var>, host: &train::optim::Optimizer) -> Result<Self> {
        let mut o = DeviceOptim::new(vars, host.config().clone())?;
        let (slots, iterations) = host.state();
        o.set_state(slots.to_vec(), iterations)?;
        Ok(o)
    }

    /// Writes the state and step count back into the host optimizer this one continues.
    pub fn write_back(&self, host: &mut train::optim::Optimizer) -> Result<()> {
        let (slots, iterations) = self.state()?;
        host.set_state(slots, iterations)?;
        Ok(())
    }

    /// The variables, in update order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Sets the learning rate of the following steps.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.config.learning_rate = lr;
    }

    /// Number of steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// The state in `train::optim::Optimizer::state`'s layout (two slots per variable, an unused
    /// slot empty; values flattened in the variable's layout) and the step count.
    pub fn state(&self) -> Result<(Vec<[Vec<f32>; 2]>, u64)> {
        let read = |t: &Option<Tensor>| -> Result<Vec<f32>> {
            Ok(match t {
                Some(t) => crate::ops::to_host(t)?,
                None => Vec::new(),
            })
        };
        let slots = self
            .state
            .iter()
            .map(|[a, b]| Ok([read(a)?, read(b)?]))
            .collect::<Result<_>>()?;
        Ok((slots, self.iterations))
    }

    /// Restores what [`DeviceOptim::state`] (or the CPU optimizer) returned.
    pub fn set_state(&mut self, slots: Vec<[Vec<f32>; 2]>, iterations: u64) -> Result<()> {
        if slots.len() != self.vars.len() {
            return Err(Error::Invalid(format!(
                "optimizer state for {} variables, this optimizer has {}",
                slots.len(),
                self.vars.len()
            )));
        }
        let mut state = Vec::with_capacity(slots.len());
        for ((v, old), new) in self.vars.iter().zip(&self.state).zip(slots) {
            let mut pair: [Option<Tensor>; 2] = [None, None];
            for (k, values) in new.into_iter().enumerate() {
                match (&old[k], values.is_empty()) {
                    (None, true) => {}
                    (Some(_), false) if values.len() == v.elem_count() => {
                        pair[k] = Some(Tensor::from_vec(values, v.shape(), v.device())?);
                    }
                    _ => return Err(Error::Invalid(
                        "optimizer state does not fit the variables (another optimizer or network)"
                            .into(),
                    )),
                }
            }
            state.push(pair);
        }
        self.state = state;
        self.iterations = iterations;
        Ok(())
    }

    /// One update of every variable with its gradient (same order; `None` = no gradient, the
    /// variable and its state are left as they are, like Keras for a missing gradient).
    pub fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(Error::Invalid(format!(
                "{} gradients for {} variables",
                grads.len(),
                self.vars.len()
            )));
        }
        self.iterations += 1;
        // The coefficients in f32 arithmetic, as the CPU optimizer computes them (then exact as f64).
        let c = &self.config;
        let f = |v: f64| v as f32;
        let lr = f(c.learning_rate);
        let decay = (f(c.weight_decay) * lr) as f64;
        let (rho, one_minus_rho) = (f(c.rho) as f64, (1.0 - f(c.rho)) as f64);
        let (b1, b2) = (f(c.beta1), f(c.beta2));
        let (one_minus_b1, one_minus_b2) = ((1.0 - b1) as f64, (1.0 - b2) as f64);
        let t = self.iterations as i32;
        let alpha = (lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t))) as f64;
        let (momentum, eps) = (f(c.momentum) as f64, f(c.epsilon) as f64);
        let lr = lr as f64;
        for ((v, g), state) in self.vars.iter().zip(grads).zip(self.state.iter_mut()) {
            let Some(g) = g else { continue };
            if g.dims() != v.dims() {
                return Err(Error::Invalid(format!(
                    "gradient of shape {:?} for a variable of shape {:?}",
                    g.dims(),
                    v.dims()
                )));
            }
            let g = g.to_dtype(v.dtype())?;
            let mut w = v.as_tensor().clone();
            if c.weight_decay > 0.0 {
                w = (&w - (&w * decay)?)?;
            }
            let w = match c.kind {
                OptimizerKind::RmsProp => {
                    let s = state[0].take().ok_or_else(missing)?;
                    let s = ((s * rho)? + (g.sqr()? * one_minus_rho)?)?;
                    let w = (&w - ((&g * lr)? / (&s + eps)?.sqrt()?)?)?;
                    state[0] = Some(s);
                    w
                }
                OptimizerKind::Sgd if c.momentum == 0.0 => (&w - (&g * lr)?)?,
                OptimizerKind::Sgd => {
                    let m = state[0].take().ok_or_else(missing)?;
                    let step = (&g * (-lr))?;
                    let m = ((m * momentum)? + &step)?;
                    let w = if c.nesterov {
                        (&w + (step + (&m * momentum)?)?)?
                    } else {
                        (&w + &m)?
                    };
                    state[0] = Some(m);
                    w
                }
                OptimizerKind::Adam | OptimizerKind::AdamW => {
                    let m = state[0].take().ok_or_else(missing)?;
                    let s = state[1].take().ok_or_else(missing)?;
                    let m = (&m + ((&g - &m)? * one_minus_b1)?)?;
                    let s = (&s + ((g.sqr()? - &s)? * one_minus_b2)?)?;
                    let w = (&w - ((&m * alpha)? / (s.sqrt()? + eps)?)?)?;
                    state[0] = Some(m);
                    state[1] = Some(s);
                    w
                }
            };
            v.set(&w)?;
        }
        Ok(())
    }
}

fn missing() -> Error {
    Error::Invalid("optimizer state missing for a variable".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use train::optim::Optimizer;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.37 + seed as f32).sin() * 0.5)
            .collect()
    }

    /// Three steps of every kind give the CPU optimizer's weights and state (the CPU's vectorised
    /// RMSprop/Adam use a refined hardware reciprocal square root: ~1e-7 relative).
    #[test]
    fn updates_equal_the_cpu_optimizer() {
        let configs = [
            OptimizerConfig::rmsprop(1e-3),
            OptimizerConfig::sgd(1e-2, 0.9, false),
            OptimizerConfig::sgd(1e-2, 0.9, true),
            OptimizerConfig::sgd(1e-2, 0.0, false),
            OptimizerConfig::adam(1e-3),
            OptimizerConfig::adamw(1e-3, 0.004),
        ];
        for config in configs {
            let n = 37;
            let w0 = values(n, 1);
            let var = Var::from_vec(w0.clone(), n, &Device::Cpu).unwrap();
            let mut dev = DeviceOptim::new(vec![var.clone()], config.clone()).unwrap();
            let mut cpu = Optimizer::new(config.clone(), &[n]).unwrap();
            let mut w = w0;
            for s in 0..3 {
                let g = values(n, 10 + s);
                cpu.step(&mut [&mut w], &[&g]).unwrap();
                dev.step(&[Some(Tensor::from_vec(g, n, &Device::Cpu).unwrap())])
                    .unwrap();
            }
            let got = var.as_tensor().to_vec1::<f32>().unwrap();
            for (a, b) in got.iter().zip(&w) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-2),
                    "{:?}: {a} vs {b}",
                    config.kind
                );
            }
            let (ds, di) = dev.state().unwrap();
            let (cs, ci) = cpu.state();
            assert_eq!(di, ci);
            for (d, c) in ds.iter().zip(cs) {
                for k in 0..2 {
                    assert_eq!(d[k].len(), c[k].len(), "{:?}", config.kind);
                    let scale = c[k].iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (a, b) in d[k].iter().zip(&c[k]) {
                        assert!(
                            (a - b).abs() <= 1e-6 * scale,
                            "{:?} slot {k}: {a} vs {b}",
                            config.kind
                        );
                    }
                }
            }
            dev.set_state(cs.to_vec(), ci).unwrap();
            assert!(dev.set_state(vec![], 0).is_err());
        }
    }
}
