//! The exponential moving average of the weights that `--ema` validates and saves (Keras 3's
//! optimizer option `use_ema` / `ema_momentum`), and its place in a checkpoint.
//!
//! After every optimizer step `average = m·average + (1 − m)·weights`; the first step copies the
//! weights (Keras sets the momentum to 0 while `iterations == 0`). The average is what a user
//! gets: validation after every epoch, `keep = best` and `model.safetensors` use it, while the
//! optimizer keeps updating the raw weights.

use crate::error::{Error, Result};
use crate::model::Extra;
use crate::net::Params;

/// Prefix of the averaged tensors in a checkpoint: `ema.<var>`.
pub const PREFIX: &str = "ema.";

/// The running average of the weights.
#[derive(Clone, Debug)]
pub struct WeightAverage {
    momentum: f32,
    average: Params,
    /// False until the first step (which copies the weights).
    started: bool,
}

impl WeightAverage {
    /// An average with `momentum` (per step) that has seen no step yet.
    pub fn new(momentum: f64, weights: &Params) -> Self {
        WeightAverage {
            momentum: momentum as f32,
            average: weights.clone(),
            started: false,
        }
    }

    /// Folds the weights after one optimizer step into the average.
    pub fn update(&mut self, weights: &Params) {
        if !self.started {
            self.average = weights.clone();
            self.started = true;
            return;
        }
        let (m, k) = (self.momentum, 1.0 - self.momentum);
        for (avg, w) in self.average.tensors.iter_mut().zip(&weights.tensors) {
            for (a, &x) in avg.iter_mut().zip(w) {
                *a = m * *a + k * x;
            }
        }
    }

    /// The averaged weights.
    pub fn params(&self) -> &Params {
        &self.average
    }

    /// The checkpoint tensors holding the average.
    pub fn to_extra(&self) -> Extra {
        self.average
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{PREFIX}{i:03}"), t.clone()))
            .collect()
    }

    /// The average stored in a checkpoint (`extra`: its tensors named [`PREFIX`]`NNN`, sorted),
    /// shaped like `like`; it continues as if never interrupted.
    pub fn from_extra(momentum: f64, extra: Extra, like: &Params) -> Result<Self> {
        if extra.len() != like.tensors.len() {
            return Err(Error::Invalid(format!(
                "the checkpoint holds {} averaged tensors for {} weights",
                extra.len(),
                like.tensors.len()
            )));
        }
        let mut tensors = Vec::with_capacity(extra.len());
        for (i, ((name, t), w)) in extra.into_iter().zip(&like.tensors).enumerate() {
            if name != format!("{PREFIX}{i:03}") || t.len() != w.len() {
                return Err(Error::Invalid(format!(
                    "averaged tensor {name} does not match weight {i} ({} values)",
                    w.len()
                )));
            }
            tensors.push(t);
        }
        Ok(WeightAverage {
            momentum: momentum as f32,
            average: Params { tensors },
            started: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[f32]) -> Params {
        Params {
            tensors: vec![v.to_vec()],
        }
    }

    #[test]
    fn the_first_step_copies_then_it_averages() {
        let mut a = WeightAverage::new(0.75, &p(&[100.0, 100.0]));
        a.update(&p(&[4.0, 8.0]));
        assert_eq!(a.params(), &p(&[4.0, 8.0]));
        a.update(&p(&[8.0, 0.0]));
        assert_eq!(a.params(), &p(&[5.0, 6.0]));
    }

    #[test]
    fn a_checkpoint_round_trip_continues_exactly() {
        let mut a = WeightAverage::new(0.5, &p(&[0.0]));
        a.update(&p(&[2.0]));
        let mut b = WeightAverage::from_extra(0.5, a.to_extra(), &p(&[0.0])).unwrap();
        a.update(&p(&[4.0]));
        b.update(&p(&[4.0]));
        assert_eq!(a.params(), b.params());
        assert_eq!(b.params(), &p(&[3.0]));
        let wrong = vec![("ema.000".to_string(), vec![1.0, 2.0])];
        assert!(WeightAverage::from_extra(0.5, wrong, &p(&[0.0])).is_err());
    }
}
