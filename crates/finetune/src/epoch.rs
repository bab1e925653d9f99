//! One fine-tuning epoch for the shared epoch driver: per-epoch shuffling and draw choice, batches
//! of frozen outputs produced on a second thread (read from the augmentation cache or computed
//! afresh) while the main thread runs the block + head step with dropout and SGD on the run's
//! [`Compute`] (the CPU kernels or a device), and validation.

use features::augment::Augmenter;
use rand::seq::SliceRandom;
use rand::Rng;
use train::driver::{Pass, PassOutcome, Validation};
use train::loss::{bce_with_logits, softmax_cross_entropy};

use crate::compute::Compute;
use crate::data::{self, Augmentation};
use crate::error::{Error, Result};
use crate::frozen::Frozen;
use crate::images::{ImageSet, InputSpec};
use crate::net::Net;
use crate::rows::RowReader;
use train::optim::Optimizer;

/// Where an epoch's training inputs come from.
pub enum Source<'a> {
    /// One of the K cached draws per image, chosen per epoch.
    Cached(&'a [RowReader]),
    /// Augmented afresh through the frozen part (Keras behaviour).
    Online {
        frozen: &'a mut Frozen,
        set: &'a ImageSet,
        augmenter: &'a Augmenter,
        spec: InputSpec,
    },
}

/// The network and its optimizer: what a checkpoint holds besides the history.
#[derive(Clone)]
pub struct State {
    pub net: Net,
    pub optim: Optimizer,
}

/// Loss, accuracy and predicted class of every validation sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    /// Expected calibration error (15 bins) of the top-class probabilities.
    pub ece: f64,
    pub predictions: Vec<u32>,
}

/// Fixed facts of the training data.
pub struct EpochData<'a> {
    /// Label of every training photo (row `i` of every cached draw is photo `i`).
    pub labels: &'a [u32],
    /// The photos an epoch trains on (all of them, or the folds of a cross-fit).
    pub rows: &'a [usize],
    /// `[C, h, w]` of one frozen output.
    pub row_shape: [usize; 3],
    pub batch_size: usize,
    pub seed: u64,
    /// The validation feature maps, read a batch at a time.
    pub val: &'a RowReader,
    pub val_labels: &'a [u32],
}

/// Mean loss, accuracy and predictions over the NCHW rows of `rows` (no dropout), read 32 at a
/// time, computed by `compute`.
pub fn evaluate(
    compute: &mut dyn Compute,
    net: &Net,
    rows: &RowReader,
    labels: &[u32],
    row_shape: [usize; 3],
) -> Result<Evaluation> {
    let row_len: usize = row_shape.iter().product();
    let k = net.head.outputs();
    let mut probs = vec![0f32; k];
    let (mut loss, mut correct) = (0f64, 0usize);
    let mut predictions = Vec::with_capacity(labels.len());
    let (mut confidence, mut right) = (Vec::new(), Vec::new());
    let mut chunk = Vec::new();
    for (b, ys) in labels.chunks(32).enumerate() {
        chunk.resize(ys.len() * row_len, 0f32);
        for (i, row) in chunk.chunks_exact_mut(row_len).enumerate() {
            rows.read_row(b * 32 + i, row)?;
        }
        let z = compute.logits(net, &chunk, row_shape)?;
        for (zi, &y) in z.chunks_exact(k).zip(ys) {
            let (l, pred, top) = if k == 1 {
                let p = 1.0 / (1.0 + (-zi[0] as f64).exp());
                let l = bce_with_logits(zi[0], y as f32);
                (l, u32::from(zi[0] > 0.0), p.max(1.0 - p))
            } else {
                let l = softmax_cross_entropy(zi, y as usize, &mut probs);
                let mut best = 0;
                for (j, &v) in zi.iter().enumerate() {
                    if v > zi[best] {
                        best = j;
                    }
                }
                (l, best as u32, probs[best] as f64)
            };
            confidence.push(top);
            right.push(pred == y);
            loss += l as f64;
            correct += usize::from(pred == y);
            predictions.push(pred);
        }
    }
    let n = labels.len().max(1) as f64;
    Ok(Evaluation {
        loss: loss / n,
        accuracy: correct as f64 / n,
        ece: train::metrics::calibration_error(&confidence, &right),
        predictions,
    })
}

/// Fine-tuning as the epoch driver sees it: the training pass reads one batch of frozen outputs
/// ahead on a second thread; `end_epoch` writes the checkpoint and partial metrics.
pub struct Learner<'a, 'e> {
    pub state: State,
    /// Where block + head compute.
    pub compute: &'e mut dyn Compute,
    pub source: Source<'a>,
    pub data: EpochData<'a>,
    /// Called after every epoch with the state, history and kept epoch (checkpoint, metrics).
    pub on_end: &'e mut dyn FnMut(&State, &train::driver::EpochEnd<'_, Net>) -> Result<()>,
}

impl train::driver::Learner for Learner<'_, '_> {
    type State = Net;
    type Error = Error;

    fn train_epoch(
        &mut self,
        epoch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<PassOutcome> {
        train_pass(
            &mut self.state,
            &mut *self.compute,
            epoch - 1,
            &mut self.source,
            &self.data,
            progress,
        )
    }

    fn validate(&mut self) -> Result<Validation> {
        let v = evaluate(
            &mut *self.compute,
            &self.state.net,
            self.data.val,
            self.data.val_labels,
            self.data.row_shape,
        )?;
        Ok(Validation {
            loss: v.loss,
            accuracy: v.accuracy,
        })
    }

    fn state(&self) -> Result<Net> {
        Ok(self.state.net.clone())
    }

    fn restore(&mut self, net: &Net) -> Result<()> {
        self.state.net = net.clone();
        Ok(())
    }

    fn end_epoch(&mut self, end: &train::driver::EpochEnd<'_, Net>) -> Result<()> {
        (self.on_end)(&self.state, end)
    }

    fn train_samples(&self) -> usize {
        self.data.rows.len()
    }

    fn learning_rate(&self) -> f64 {
        self.state.optim.config().learning_rate
    }
}

/// The training pass of epoch `epoch` (0-based) over `data.rows`: batches of frozen outputs
/// produced on a second thread (read from the cache or computed afresh) while this thread runs
/// the block + head step with dropout and SGD on `compute` (whose weights are written back into
/// `state` at the end of the pass).
// Over 80 lines: the producer thread and the training loop live in one `std::thread::scope`, which
// borrows both.
pub fn train_pass(
    state: &mut State,
    compute: &mut dyn Compute,
    epoch: usize,
    source: &mut Source<'_>,
    data: &EpochData<'_>,
    on_batch: &mut dyn FnMut(usize),
) -> Result<PassOutcome> {
    let n = data.labels.len();
    let row_len: usize = data.row_shape.iter().product();
    let mut rng = runfs::seed::keyed(data.seed, "epoch", epoch as u64, 0);
    let draws: Vec<usize> = match source {
        Source::Cached(readers) => (0..n).map(|_| rng.random_range(0..readers.len())).collect(),
        Source::Online { .. } => Vec::new(),
    };
    let mut order: Vec<usize> = data.rows.to_vec();
    order.shuffle(&mut rng);
    let batches: Vec<&[usize]> = order.chunks(data.batch_size).collect();
    let hidden = state.net.head.hidden;
    let p = state.net.head.dropout;
    let scale = 1.0 / (1.0 - p);
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    let mut diverged = None;

    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded::<Result<Vec<f32>>>(2);
        let (batches, draws) = (&batches, &draws);
        s.spawn(move || {
            for idx in batches.iter() {
                let rows = match source {
                    Source::Cached(readers) => (|| {
                        let mut out = vec![0f32; idx.len() * row_len];
                        for (slot, &i) in out.chunks_exact_mut(row_len).zip(idx.iter()) {
                            readers[draws[i]].read_row(i, slot)?;
                        }
                        Ok(out)
                    })(),
                    Source::Online {
                        frozen,
                        set,
                        augmenter,
                        spec,
                    } => {
                        let aug = Augmentation {
                            augmenter,
                            seed: data.seed,
                            purpose: "epoch",
                            index: epoch as u64,
                        };
                        data::frozen_rows(frozen, set, idx, *spec, Some(&aug))
                    }
                };
                let failed = rows.is_err();
                if tx.send(rows).is_err() || failed {
                    break;
                }
            }
        });
        for idx in batches.iter() {
            let rows = rx
                .recv()
                .map_err(|_| Error::Invalid("the batch producer stopped".into()))??;
            let labels: Vec<u32> = idx.iter().map(|&i| data.labels[i]).collect();
            let mask: Option<Vec<f32>> = (p > 0.0).then(|| {
                (0..idx.len() * hidden)
                    .map(|_| if rng.random::<f32>() >= p { scale } else { 0.0 })
                    .collect()
            });
            let r = compute.step(state, &rows, data.row_shape, &labels, mask.as_deref())?;
            if !r.finite {
                diverged = Some(format!(
                    "the loss became {} in epoch {} after {seen} images",
                    r.loss_sum,
                    epoch + 1
                ));
                return Ok(());
            }
            loss_sum += r.loss_sum;
            correct += r.correct;
            seen += idx.len();
            on_batch(seen);
        }
        Ok(())
    })?;
    compute.sync(state)?;
    Ok(match diverged {
        Some(why) => PassOutcome::Diverged(why),
        None => PassOutcome::Done(Pass {
            loss_sum,
            correct,
            samples: order.len(),
        }),
    })
}
