//! The one epoch driver every training stage uses (the role `burn-train` plays): it runs the
//! epochs a run still has to do (continuing a resumed history), validates after each, keeps the
//! epoch the keep-rule chooses, rolls back an epoch whose loss diverged to the state before it,
//! lets the stage checkpoint after every epoch, and reports progress as [`StageEvent`]s. What an
//! epoch computes and how state is stored belong to the stage, behind [`Learner`].

use std::time::Instant;

use crate::metrics::{EpochMetrics, Keep};
use crate::stage::StageEvent;

/// Sums of one training pass over the epoch's samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pass {
    /// Sum of the per-sample training losses (with dropout, like Keras).
    pub loss_sum: f64,
    pub correct: usize,
    pub samples: usize,
}

/// How a training pass ended.
#[derive(Clone, Debug, PartialEq)]
pub enum PassOutcome {
    Done(Pass),
    /// The loss or a gradient became NaN/inf: why, and where.
    Diverged(String),
}

/// Loss and accuracy on the validation samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    pub loss: f64,
    pub accuracy: f64,
}

/// What the driver tells the stage after an epoch, for its checkpoint.
pub struct EpochEnd<'a, S> {
    /// Every completed epoch, this one last.
    pub history: &'a [EpochMetrics],
    /// The kept epoch so far and its state (keep = best), this epoch's when it just became it.
    pub best: Option<&'a (usize, S)>,
    /// This epoch became the kept one.
    pub improved: bool,
}

/// A model being trained, as the driver sees it.
pub trait Learner {
    /// Everything a rollback or the kept epoch must restore (weights, and optimizer state where
    /// a resumed run needs it).
    type State: Clone;
    /// The stage's error type.
    type Error;

    /// Runs the training pass of 1-based `epoch`; `progress(samples done)` after each batch.
    fn train_epoch(
        &mut self,
        epoch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<PassOutcome, Self::Error>;
    /// Validates the weights that would be saved (NaN loss when they are not finite).
    fn validate(&mut self) -> Result<Validation, Self::Error>;
    /// A copy of the current state.
    fn state(&self) -> Result<Self::State, Self::Error>;
    /// Puts a state back.
    fn restore(&mut self, state: &Self::State) -> Result<(), Self::Error>;
    /// Called after every completed epoch (checkpoints, partial metrics); a no-op by default.
    fn end_epoch(&mut self, _end: &EpochEnd<'_, Self::State>) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Samples per epoch (for progress and throughput).
    fn train_samples(&self) -> usize;
    /// The learning rate, for the advice when training diverges.
    fn learning_rate(&self) -> f64;
}

/// How far to train and what to keep.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Total epochs of the run.
    pub epochs: usize,
    /// Stop after this many epochs of this call (continue later).
    pub stop_after: Option<usize>,
    pub keep: Keep,
}

/// Where a run stands: its history and kept epoch, from the start or from a checkpoint.
pub struct Progress<S> {
    pub history: Vec<EpochMetrics>,
    /// The kept epoch and its state (keep = best).
    pub best: Option<(usize, S)>,
}

impl<S> Default for Progress<S> {
    fn default() -> Self {
        Progress {
            history: Vec::new(),
            best: None,
        }
    }
}

/// What [`fit`] leaves.
pub struct Fitted<S> {
    pub history: Vec<EpochMetrics>,
    pub best: Option<(usize, S)>,
    /// Why training stopped before the last epoch (divergence), if it did.
    pub stopped_early: Option<String>,
    /// Epochs completed in this call.
    pub session_epochs: usize,
}

impl<S> Fitted<S> {
    /// True when every epoch of `plan` is done or training stopped early.
    pub fn finished(&self, plan: &Plan) -> bool {
        self.history.len() >= plan.epochs || self.stopped_early.is_some()
    }

    /// The epoch whose weights are saved: the best one (keep = best), else the last.
    pub fn kept_epoch(&self) -> usize {
        self.best.as_ref().map_or(self.history.len(), |(e, _)| *e)
    }
}

/// Trains `learner` through the epochs of `plan` not yet in `progress.history`.
// Over 80 lines: the epoch loop, kept whole so that rollback, keep-rule and checkpoint order are
// read in one place.
pub fn fit<L: Learner>(
    learner: &mut L,
    plan: &Plan,
    progress: Progress<L::State>,
    on_event: &mut dyn FnMut(StageEvent<'_>),
) -> Result<Fitted<L::State>, L::Error> {
    let Progress {
        mut history,
        mut best,
    } = progress;
    let mut stopped_early = None;
    let mut session_epochs = 0;
    let n = learner.train_samples();
    while history.len() < plan.epochs && plan.stop_after.is_none_or(|k| session_epochs < k) {
        let epoch = history.len() + 1;
        let started = Instant::now();
        let before = learner.state()?;
        on_event(StageEvent::PhaseStart {
            name: format!("epoch {epoch}/{}", plan.epochs),
            total: n,
        });
        let outcome =
            learner.train_epoch(epoch, &mut |done| on_event(StageEvent::Progress { done }))?;
        on_event(StageEvent::PhaseEnd);
        let pass = match outcome {
            PassOutcome::Done(p) => p,
            PassOutcome::Diverged(why) => {
                learner.restore(&before)?;
                stopped_early = Some(format!(
                    "{why}; stopped and kept the last good epoch (try a lower --lr, now {})",
                    learner.learning_rate()
                ));
                break;
            }
        };
        let train_seconds = started.elapsed().as_secs_f64();
        let val = learner.validate()?;
        if !val.loss.is_finite() {
            learner.restore(&before)?;
            stopped_early = Some(format!(
                "the validation loss became {} in epoch {epoch}; stopped and kept the last good \
                 epoch (try a lower --lr, now {})",
                val.loss,
                learner.learning_rate()
            ));
            break;
        }
        let samples = pass.samples.max(1) as f64;
        let m = EpochMetrics {
            epoch,
            loss: pass.loss_sum / samples,
            accuracy: pass.correct as f64 / samples,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            seconds: started.elapsed().as_secs_f64(),
        };
        let improved = plan.keep == Keep::Best
            && best
                .as_ref()
                .and_then(|(e, _)| history.get(e - 1))
                .is_none_or(|b: &EpochMetrics| m.val_loss < b.val_loss);
        if improved {
            best = Some((epoch, learner.state()?));
        }
        history.push(m);
        session_epochs += 1;
        learner.end_epoch(&EpochEnd {
            history: &history,
            best: best.as_ref(),
            improved,
        })?;
        let last = history.last().cloned();
        if let Some(metrics) = last.as_ref() {
            on_event(StageEvent::Epoch {
                metrics,
                epochs: plan.epochs,
                images_per_second: pass.samples as f64 / train_seconds.max(1e-9),
            });
        }
    }
    Ok(Fitted {
        history,
        best,
        stopped_early,
        session_epochs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-number model whose "loss" follows a script, to test the driver's rules.
    struct Scripted {
        w: f64,
        losses: Vec<f64>,
        diverge_at: Option<usize>,
        ends: Vec<(usize, bool)>,
    }

    type Result<T> = std::result::Result<T, crate::Error>;

    impl Learner for Scripted {
        type State = f64;
        type Error = crate::Error;
        fn train_epoch(
            &mut self,
            epoch: usize,
            progress: &mut dyn FnMut(usize),
        ) -> Result<PassOutcome> {
            self.w += 1.0;
            progress(4);
            if self.diverge_at == Some(epoch) {
                self.w = f64::NAN;
                return Ok(PassOutcome::Diverged("the loss became NaN".into()));
            }
            Ok(PassOutcome::Done(Pass {
                loss_sum: 4.0,
                correct: 2,
                samples: 4,
            }))
        }
        fn validate(&mut self) -> Result<Validation> {
            let i = self.w as usize - 1;
            Ok(Validation {
                loss: self.losses[i],
                accuracy: 0.5,
            })
        }
        fn state(&self) -> Result<f64> {
            Ok(self.w)
        }
        fn restore(&mut self, s: &f64) -> Result<()> {
            self.w = *s;
            Ok(())
        }
        fn end_epoch(&mut self, end: &EpochEnd<'_, f64>) -> Result<()> {
            self.ends.push((end.history.len(), end.improved));
            Ok(())
        }
        fn train_samples(&self) -> usize {
            4
        }
        fn learning_rate(&self) -> f64 {
            0.1
        }
    }

    fn plan(epochs: usize, keep: Keep) -> Plan {
        Plan {
            epochs,
            stop_after: None,
            keep,
        }
    }

    #[test]
    fn keeps_the_lowest_validation_loss_earliest_on_ties() {
        let mut l = Scripted {
            w: 0.0,
            losses: vec![0.5, 0.3, 0.3, 0.4],
            diverge_at: None,
            ends: Vec::new(),
        };
        let f = fit(
            &mut l,
            &plan(4, Keep::Best),
            Progress::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(f.kept_epoch(), 2);
        assert_eq!(f.best.as_ref().map(|b| b.1), Some(2.0));
        assert_eq!(l.ends, vec![(1, true), (2, true), (3, false), (4, false)]);
        assert!(f.finished(&plan(4, Keep::Best)));
    }

    #[test]
    fn a_diverged_epoch_is_rolled_back_and_stops_the_run() {
        let mut l = Scripted {
            w: 0.0,
            losses: vec![0.5, 0.4, 0.3],
            diverge_at: Some(3),
            ends: Vec::new(),
        };
        let f = fit(
            &mut l,
            &plan(5, Keep::Last),
            Progress::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!((f.history.len(), l.w), (2, 2.0));
        assert!(f
            .stopped_early
            .as_deref()
            .unwrap()
            .contains("--lr, now 0.1"));
        assert_eq!(f.kept_epoch(), 2);
    }

    #[test]
    fn a_session_stops_after_its_epochs_and_a_resumed_one_continues() {
        let mut l = Scripted {
            w: 0.0,
            losses: vec![0.5, 0.4, 0.3, 0.2],
            diverge_at: None,
            ends: Vec::new(),
        };
        let p = Plan {
            stop_after: Some(2),
            ..plan(4, Keep::Best)
        };
        let f = fit(&mut l, &p, Progress::default(), &mut |_| {}).unwrap();
        assert_eq!((f.history.len(), f.session_epochs), (2, 2));
        assert!(!f.finished(&p));
        let resumed = Progress {
            history: f.history,
            best: f.best,
        };
        let g = fit(&mut l, &plan(4, Keep::Best), resumed, &mut |_| {}).unwrap();
        assert_eq!((g.history.len(), g.kept_epoch()), (4, 4));
        assert_eq!(g.history[3].epoch, 4);
    }
}
