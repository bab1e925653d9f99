//! Stage 1 as the shared epoch driver sees it: one epoch of augmented, shuffled batches (the
//! learning rate of the epoch from the schedule, dropout, the optimizer step on the run's
//! [`Compute`] and the weight average), validation of the weights that are saved, and after every
//! epoch the checkpoint, the best weights so far and partial metrics.

use features::augment::Augmenter;
use rand::seq::SliceRandom;
use train::driver::{EpochEnd, Learner, Pass, PassOutcome, Validation};
use train::metrics::{write_json, EpochMetrics, Metrics};
use train::optim::Optimizer;

use crate::checkpoint::{meta, optimizer_tensors, DataDigest, Training};
use crate::compute::Compute;
use crate::config::{ScratchConfig, ScratchPaths};
use crate::data::{self, ImageSet};
use crate::ema::WeightAverage;
use crate::error::{Error, Result};
use crate::model;
use crate::net::{Arch, Params};
use crate::pipeline::{evaluate_on, Settings};

/// The fixed parts of a run.
#[derive(Clone)]
pub struct Run<'a> {
    pub cfg: &'a ScratchConfig,
    pub paths: &'a ScratchPaths,
    pub arch: &'a Arch,
    pub classes: &'a [String],
    pub settings: &'a Settings,
    pub train: &'a ImageSet,
    pub val: &'a ImageSet,
    pub data: &'a DataDigest,
}

impl Run<'_> {
    /// The `training` metadata after the epochs of `history`.
    pub fn training(
        &self,
        history: &[EpochMetrics],
        kept_epoch: usize,
        optimizer_steps: Option<u64>,
    ) -> Training {
        Training {
            settings: self.settings.clone(),
            epochs: self.cfg.epochs,
            history: history.to_vec(),
            kept_epoch,
            train_images: self.train.len(),
            val_images: self.val.len(),
            optimizer_steps,
            data: Some(self.data.clone()),
        }
    }
}

/// The weights and their running average.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub params: Params,
    pub average: Option<WeightAverage>,
}

impl Snapshot {
    /// What is validated, kept and saved: the weight average when there is one.
    pub fn validated(&self) -> &Params {
        self.average.as_ref().map_or(&self.params, |a| a.params())
    }
}

/// The network being trained.
pub struct ScratchLearner<'a> {
    pub run: Run<'a>,
    pub augmenter: Augmenter,
    pub optim: Optimizer,
    pub snapshot: Snapshot,
    /// One batch of input images.
    pub batch: Vec<f32>,
    /// Where the network computes (the CPU kernels or a device).
    pub compute: Box<dyn Compute>,
}

impl Learner for ScratchLearner<'_> {
    type State = Snapshot;
    type Error = Error;

    fn train_epoch(
        &mut self,
        epoch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<PassOutcome> {
        let (cfg, arch, set) = (self.run.cfg, self.run.arch, self.run.train);
        self.optim.set_learning_rate(cfg.schedule.rate(
            cfg.optimizer.learning_rate,
            epoch,
            cfg.epochs,
        ));
        let n = set.len();
        let per = set.image_len();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut runfs::seed::mixed(
            cfg.seed,
            data::PURPOSE_SHUFFLE,
            epoch as u64,
            0,
        ));
        let (mut loss_sum, mut correct, mut done) = (0.0f64, 0usize, 0usize);
        for (b, batch) in order.chunks(cfg.batch_size).enumerate() {
            let xb = &mut self.batch[..batch.len() * per];
            data::write_batch(
                set,
                batch,
                Some((&self.augmenter, cfg.seed, epoch as u64)),
                xb,
            )?;
            let mut drop_rng =
                runfs::seed::mixed(cfg.seed, data::PURPOSE_DROPOUT, epoch as u64, b as u64);
            let params = &mut self.snapshot.params;
            let precision = self.run.settings.train_precision;
            let labels: Vec<u32> = batch.iter().map(|&i| set.labels[i]).collect();
            let out = self.compute.step(
                arch,
                params,
                &mut self.optim,
                xb,
                &labels,
                &mut drop_rng,
                precision,
            )?;
            if !out.loss_sum.is_finite() {
                self.compute.sync(params, &mut self.optim)?;
                return Ok(PassOutcome::Diverged(format!(
                    "the training loss became {} in epoch {epoch}",
                    out.loss_sum
                )));
            }
            loss_sum += out.loss_sum;
            correct += out.correct;
            if let Some(avg) = &mut self.snapshot.average {
                self.compute.sync_params(&mut self.snapshot.params)?;
                avg.update(&self.snapshot.params);
            }
            done += batch.len();
            progress(done);
        }
        self.compute
            .sync(&mut self.snapshot.params, &mut self.optim)?;
        Ok(PassOutcome::Done(Pass {
            loss_sum,
            correct,
            samples: n,
        }))
    }

    fn validate(&mut self) -> Result<Validation> {
        let ev = evaluate_on(
            self.compute.as_mut(),
            self.run.arch,
            self.snapshot.validated(),
            self.run.val,
            self.run.cfg.eval_batch_size,
            self.run.settings.train_precision,
        )?;
        Ok(Validation {
            loss: ev.loss,
            accuracy: ev.accuracy,
        })
    }

    fn state(&self) -> Result<Snapshot> {
        Ok(self.snapshot.clone())
    }

    fn restore(&mut self, state: &Snapshot) -> Result<()> {
        self.snapshot = state.clone();
        Ok(())
    }

    /// The best weights so far (keep = best) in `model.safetensors`, the checkpoint and the
    /// metrics so far.
    fn end_epoch(&mut self, end: &EpochEnd<'_, Snapshot>) -> Result<()> {
        let run = &self.run;
        let epoch = end.history.len();
        let training = run.training(end.history, epoch, Some(self.optim.iterations()));
        let meta = meta(run.arch, run.classes, &training)?;
        if end.improved {
            model::save(&run.paths.model, self.snapshot.validated(), &meta)?;
        }
        let mut state = optimizer_tensors(&self.optim);
        if let Some(avg) = &self.snapshot.average {
            state.extend(avg.to_extra());
        }
        model::save_with(
            &run.paths.stage.checkpoint,
            &self.snapshot.params,
            &meta,
            &state,
        )?;
        let partial = Metrics::summarize(
            end.history.to_vec(),
            run.cfg.keep,
            None,
            run.train.len(),
            run.val.len(),
            crate::splits::describe(&run.val.name),
        )?;
        write_json(&run.paths.stage.metrics, &partial)?;
        Ok(())
    }

    fn train_samples(&self) -> usize {
        self.run.train.len()
    }

    fn learning_rate(&self) -> f64 {
        self.run.cfg.optimizer.learning_rate
    }
}
