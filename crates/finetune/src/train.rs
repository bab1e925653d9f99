//! The training loop of one epoch: per-epoch shuffling and draw choice, batches of frozen outputs
//! produced on a second thread (read from the augmentation cache or computed afresh) while the
//! main thread runs the block + head step with dropout and SGD, then validation.

use std::time::Instant;

use features::augment::Augmenter;
use head::loss::{bce_with_logits, softmax_cross_entropy};
use head::metrics::EpochMetrics;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::block::nchw_to_nhwc;
use crate::conv::Nhwc;
use crate::data::{self, Augmentation};
use crate::error::{Error, Result};
use crate::frozen::Frozen;
use crate::images::{ImageSet, InputSpec};
use crate::net::Net;
use crate::optim::Sgd;
use crate::rows::RowReader;

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

/// Mutable training state.
#[derive(Clone)]
pub struct State {
    pub net: Net,
    pub sgd: Sgd,
    pub history: Vec<EpochMetrics>,
    /// Track the best epoch (else the last epoch is kept).
    pub keep_best: bool,
    /// Best epoch so far (lowest validation loss, earliest on ties) and its weights.
    pub best: Option<(usize, Net)>,
}

/// Loss, accuracy and predicted class of every validation sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub predictions: Vec<u32>,
}

/// Fixed facts of the training data.
pub struct EpochData<'a> {
    pub labels: &'a [u32],
    /// `[C, h, w]` of one frozen output.
    pub row_shape: [usize; 3],
    pub batch_size: usize,
    pub seed: u64,
    pub val_rows: &'a [f32],
    pub val_labels: &'a [u32],
}

/// How an epoch ended.
pub enum Outcome {
    Done {
        metrics: EpochMetrics,
        images_per_second: f64,
    },
    /// The loss became NaN/inf; the state is unchanged from the start of the epoch.
    Diverged(String),
}

/// Progress: `(images done, images total)` of the epoch.
pub type OnBatch<'a> = &'a mut dyn FnMut(usize, usize);

fn dims(n: usize, [c, h, w]: [usize; 3]) -> Nhwc {
    Nhwc { n, h, w, c }
}

/// Mean loss, accuracy and predictions over NCHW rows (no dropout).
pub fn evaluate(
    net: &Net,
    rows: &[f32],
    labels: &[u32],
    row_shape: [usize; 3],
) -> Result<Evaluation> {
    let row_len: usize = row_shape.iter().product();
    let k = net.head.outputs();
    let mut probs = vec![0f32; k];
    let (mut loss, mut correct) = (0f64, 0usize);
    let mut predictions = Vec::with_capacity(labels.len());
    for (chunk, ys) in rows.chunks(32 * row_len).zip(labels.chunks(32)) {
        let d = dims(ys.len(), row_shape);
        let z = net.logits(&nchw_to_nhwc(chunk, d), d)?;
        for (zi, &y) in z.chunks_exact(k).zip(ys) {
            let (l, pred) = if k == 1 {
                (bce_with_logits(zi[0], y as f32), u32::from(zi[0] > 0.0))
            } else {
                let l = softmax_cross_entropy(zi, y as usize, &mut probs);
                let mut best = 0;
                for (j, &v) in zi.iter().enumerate() {
                    if v > zi[best] {
                        best = j;
                    }
                }
                (l, best as u32)
            };
            loss += l as f64;
            correct += usize::from(pred == y);
            predictions.push(pred);
        }
    }
    let n = labels.len().max(1) as f64;
    Ok(Evaluation {
        loss: loss / n,
        accuracy: correct as f64 / n,
        predictions,
    })
}

/// Runs epoch `epoch` (0-based) and records it in `state`. On divergence `state` is left as it
/// was before the epoch.
pub fn run_epoch(
    state: &mut State,
    epoch: usize,
    source: &mut Source<'_>,
    data: &EpochData<'_>,
    on_batch: OnBatch<'_>,
) -> Result<Outcome> {
    let start = Instant::now();
    let n = data.labels.len();
    let row_len: usize = data.row_shape.iter().product();
    let mut rng = data::derived_rng(data.seed, "epoch", epoch as u64, 0);
    let draws: Vec<usize> = match source {
        Source::Cached(readers) => (0..n).map(|_| rng.random_range(0..readers.len())).collect(),
        Source::Online { .. } => Vec::new(),
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let batches: Vec<&[usize]> = order.chunks(data.batch_size).collect();
    let before = state.clone();
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
            let d = dims(idx.len(), data.row_shape);
            let x = nchw_to_nhwc(&rows, d);
            let labels: Vec<u32> = idx.iter().map(|&i| data.labels[i]).collect();
            let mask: Option<Vec<f32>> = (p > 0.0).then(|| {
                (0..idx.len() * hidden)
                    .map(|_| if rng.random::<f32>() >= p { scale } else { 0.0 })
                    .collect()
            });
            let r = state.net.step(&x, d, &labels, mask.as_deref())?;
            if !r.loss_sum.is_finite() || r.grads.iter().any(|g| g.iter().any(|v| !v.is_finite())) {
                diverged = Some(format!(
                    "the loss became {} in epoch {} after {seen} images; stopped and kept the last good epoch \
                     (try a lower --lr)",
                    r.loss_sum,
                    epoch + 1
                ));
                return Ok(());
            }
            let mut params = state.net.params_mut();
            state.sgd.step(&mut params, &r.grads)?;
            loss_sum += r.loss_sum;
            correct += r.correct;
            seen += idx.len();
            on_batch(seen, n);
        }
        Ok(())
    })?;

    let train_elapsed = start.elapsed().as_secs_f64();
    if let Some(msg) = diverged {
        *state = before;
        return Ok(Outcome::Diverged(msg));
    }
    let val = evaluate(&state.net, data.val_rows, data.val_labels, data.row_shape)?;
    if !val.loss.is_finite() {
        *state = before;
        return Ok(Outcome::Diverged(format!(
            "the validation loss became {} in epoch {}; stopped and kept the last good epoch (try a lower --lr)",
            val.loss,
            epoch + 1
        )));
    }
    let metrics = EpochMetrics {
        epoch: epoch + 1,
        loss: loss_sum / n.max(1) as f64,
        accuracy: correct as f64 / n.max(1) as f64,
        val_loss: val.loss,
        val_accuracy: val.accuracy,
        seconds: start.elapsed().as_secs_f64(),
    };
    state.history.push(metrics.clone());
    if state.keep_best {
        let best_loss = state
            .best
            .as_ref()
            .and_then(|(e, _)| state.history.get(e - 1))
            .map_or(f64::INFINITY, |m| m.val_loss);
        if metrics.val_loss < best_loss {
            state.best = Some((metrics.epoch, state.net.clone()));
        }
    }
    Ok(Outcome::Done {
        metrics,
        images_per_second: n as f64 / train_elapsed.max(1e-9),
    })
}
