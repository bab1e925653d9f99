//! Which head `train-head` fits, and the one entry point that fits either: the calibrated linear
//! probe (the default for your own photos) or the 2016 tutorial's dense network (`--keras2016`).

use std::time::Instant;

use crate::data::Samples;
use crate::error::Result;
use crate::mlp::{evaluate, train, TrainConfig};
use crate::model::HeadModel;
use crate::oof::Oof;
use crate::probe::{self, ProbeSummary};
use train::metrics::EpochMetrics;
use train::stage::StageEvent;

features::choices! {
    /// The kind of head.
    #[derive(Default)]
    pub enum Recipe("head recipe") {
        /// L2 logistic regression on the flattened features, C by 5-fold cross-validation on
        /// train, temperature-calibrated, balanced class weights (the default, as on the command
        /// line).
        #[default]
        Probe = "probe",
        /// The 2016 tutorial: Dense(256, ReLU), dropout 0.5, RMSprop 1e-4, 50 epochs.
        Keras2016 = "keras2016",
    }
}

/// A fitted head and how it got there.
#[derive(Debug)]
pub struct FittedHead {
    pub model: HeadModel,
    /// One entry per epoch (a single entry for the probe, which has no epochs).
    pub history: Vec<EpochMetrics>,
    pub kept_epoch: usize,
    /// Set when the loss became NaN/inf and training stopped early.
    pub diverged: Option<String>,
    /// What the probe chose (for [`Recipe::Probe`]).
    pub probe: Option<ProbeSummary>,
    /// The probe's out-of-fold probabilities on train (for [`Recipe::Probe`]).
    pub oof: Option<Oof>,
}

/// Fits the head `cfg.recipe` names on `train`; `val` is only scored, never used for a choice
/// by the probe.
pub fn fit_head(
    train_set: &Samples,
    val: &Samples,
    classes: usize,
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(StageEvent<'_>),
) -> Result<FittedHead> {
    match cfg.recipe {
        Recipe::Keras2016 => {
            let t = train(train_set, val, classes, cfg, on_event)?;
            Ok(FittedHead {
                model: t.model,
                history: t.history,
                kept_epoch: t.kept_epoch,
                diverged: t.diverged,
                probe: None,
                oof: None,
            })
        }
        Recipe::Probe => {
            let started = Instant::now();
            let fitted = probe::fit(train_set, classes, &cfg.probe, on_event)?;
            let on_train = evaluate(&fitted.model, train_set)?;
            let on_val = evaluate(&fitted.model, val)?;
            let metrics = EpochMetrics {
                epoch: 1,
                loss: on_train.loss,
                accuracy: on_train.accuracy,
                val_loss: on_val.loss,
                val_accuracy: on_val.accuracy,
                seconds: started.elapsed().as_secs_f64(),
            };
            on_event(StageEvent::Epoch {
                metrics: &metrics,
                epochs: 1,
                images_per_second: train_set.len() as f64 / metrics.seconds.max(1e-9),
            });
            Ok(FittedHead {
                model: fitted.model,
                history: vec![metrics],
                kept_epoch: 1,
                diverged: None,
                probe: Some(fitted.summary),
                oof: Some(fitted.oof),
            })
        }
    }
}
