//! The fine-tuning choices that decide the result, each defined once here: its flag and help
//! (clap, under the `clap` feature; the command flattens [`Options`]), its default (the library's
//! and the command line's), its record in the checkpoint (serde: [`crate::Settings`] flattens it,
//! so "is this output up to date?" compares it field by field), and how `--resume` takes the ones
//! not given from the checkpoint ([`Options::resumed`]). Adding a setting is adding a field here.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use train::kernels::TrainPrecision;
use train::metrics::Keep;
use train::optim::SgdConfig;

pub use features::extract::Precision as FrozenPrecision;

use crate::error::{Error, Result};
use crate::rows::Precision;

/// The settings of a fine-tuning run that a user chooses and a checkpoint records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Options {
    /// Images per step.
    #[cfg_attr(feature = "clap", arg(long = "batch", value_name = "BATCH", default_value_t = Options::default().batch_size))]
    pub batch_size: usize,
    #[cfg_attr(feature = "clap", command(flatten))]
    pub sgd: SgdConfig,
    /// Augmented draws per training image computed once through the frozen part and cached; 0
    /// augments afresh every epoch like Keras (slow: the frozen part runs on every image every
    /// epoch).
    #[cfg_attr(feature = "clap", arg(long, value_name = "K", default_value_t = Options::default().aug_cache))]
    pub aug_cache: usize,
    /// Precision of the cached draws.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Precision::F16))]
    pub cache_precision: Precision,
    /// Weights to save: last (a fixed schedule) or best (lowest validation loss: picked on the
    /// split it is then scored on).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Keep::Last))]
    pub keep: Keep,
    /// Precision of the frozen part below the trained block: fp32, or int8 (quantized in Rust on
    /// first use with 64 training photos, cached in RUN/models/; the block and the head still
    /// train in FP32, and model.onnx carries that int8 frozen part).
    // Checkpoints from before this setting are fp32.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = FrozenPrecision::Fp32))]
    #[serde(default = "fp32")]
    pub precision: FrozenPrecision,
    /// Precision of the trained block's products: auto (bf16 products with FP32 sums on CPUs with
    /// AVX512-BF16, else fp32), fp32 or bf16; weights, gradients and sums stay FP32.
    // A checkpoint records the resolved one (fp32 before this setting).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = TrainPrecision::Auto))]
    #[serde(default = "fp32_products")]
    pub train_precision: TrainPrecision,
    /// Calibrate the saved model's probabilities: a temperature fitted on out-of-fold predictions
    /// of K cross-fitted runs of this recipe on the training photos (about one more fine-tuning
    /// run; validation photos are never used); 0 = off.
    #[cfg_attr(feature = "clap", arg(long, value_name = "K", default_value_t = 0))]
    #[serde(default)]
    pub calibrate: usize,
}

fn fp32() -> FrozenPrecision {
    FrozenPrecision::Fp32
}

fn fp32_products() -> TrainPrecision {
    TrainPrecision::Fp32
}

impl Default for Options {
    /// The tutorial's fine-tuning (SGD lr 1e-4, momentum 0.9, batches of 16, the last epoch
    /// kept) with 10 cached augmented draws per photo.
    fn default() -> Self {
        Options {
            batch_size: 16,
            sgd: SgdConfig::default(),
            aug_cache: 10,
            cache_precision: Precision::F16,
            keep: Keep::Last,
            precision: FrozenPrecision::Fp32,
            train_precision: TrainPrecision::Auto,
            calibrate: 0,
        }
    }
}

impl Options {
    /// Checks the numbers, naming the flags.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        if self.aug_cache > 1000 {
            return Err(Error::Invalid(format!(
                "--aug-cache {} is too large (at most 1000)",
                self.aug_cache
            )));
        }
        self.sgd.validate()?;
        if self.calibrate == 1 || self.calibrate > 10 {
            return Err(Error::Invalid(format!(
                "--calibrate {} must be 0 (off) or 2 to 10 folds",
                self.calibrate
            )));
        }
        Ok(())
    }

    /// These options where `given(name)` says the setting `name` (a field name, as the command
    /// line's argument ids are) was asked for, the checkpoint's `stored` ones elsewhere.
    pub fn resumed(&self, stored: &Options, given: &dyn Fn(&str) -> bool) -> Result<Options> {
        let merged = merge(to_value(self)?, to_value(stored)?, given);
        serde_json::from_value(merged)
            .map_err(|e| Error::Invalid(format!("cannot combine the settings: {e}")))
    }

    /// The names of the settings (nested groups such as `sgd` by their fields' names), as
    /// [`Options::resumed`] asks `given` about them.
    pub fn names() -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(Value::Object(m)) = serde_json::to_value(Options::default()) {
            for (k, v) in m {
                match v {
                    Value::Object(group) => out.extend(group.keys().cloned()),
                    _ => out.push(k),
                }
            }
        }
        out
    }
}

fn to_value(o: &Options) -> Result<Value> {
    serde_json::to_value(o).map_err(|e| Error::Invalid(format!("cannot encode the settings: {e}")))
}

/// `asked`'s values that were given, `stored`'s for the rest (groups field by field).
fn merge(asked: Value, stored: Value, given: &dyn Fn(&str) -> bool) -> Value {
    match (asked, stored) {
        (Value::Object(asked), Value::Object(mut stored)) => Value::Object(
            asked
                .into_iter()
                .map(|(k, a)| {
                    let v = match (a, stored.remove(&k)) {
                        (a @ Value::Object(_), Some(s @ Value::Object(_))) => merge(a, s, given),
                        (_, Some(s)) if !given(&k) => s,
                        (a, _) => a,
                    };
                    (k, v)
                })
                .collect(),
        ),
        (asked, _) => asked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumed_takes_what_was_given_and_the_checkpoint_for_the_rest() {
        let stored = Options {
            batch_size: 32,
            aug_cache: 3,
            sgd: SgdConfig {
                learning_rate: 1e-3,
                momentum: 0.5,
                nesterov: true,
                weight_decay: 0.0,
            },
            ..Options::default()
        };
        let asked = Options {
            aug_cache: 7,
            sgd: SgdConfig {
                momentum: 0.8,
                ..Options::default().sgd
            },
            ..Options::default()
        };
        let given = |n: &str| n == "aug_cache" || n == "momentum";
        let r = asked.resumed(&stored, &given).unwrap();
        assert_eq!((r.batch_size, r.aug_cache), (32, 7));
        assert_eq!(
            (r.sgd.learning_rate, r.sgd.momentum, r.sgd.nesterov),
            (1e-3, 0.8, true)
        );
        assert_eq!(asked.resumed(&stored, &|_| true).unwrap(), asked);
        assert_eq!(asked.resumed(&stored, &|_| false).unwrap(), stored);
    }

    #[test]
    fn names_are_the_leaves() {
        let n = Options::names();
        for name in [
            "batch_size",
            "learning_rate",
            "nesterov",
            "aug_cache",
            "calibrate",
        ] {
            assert!(n.iter().any(|x| x == name), "{name} in {n:?}");
        }
        assert!(!n.iter().any(|x| x == "sgd"));
    }
}
