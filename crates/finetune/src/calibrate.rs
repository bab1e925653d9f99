//! `--calibrate K`: the temperature of the fine-tuned model, fitted by cross-fitting on the
//! training photos (as scikit-learn's `CalibratedClassifierCV` does): the training photos are
//! split into `K` stratified folds; for each fold, the stage-2 probe is refitted on the other folds
//! and block + head are fine-tuned on them with the run's own recipe (same epochs, learning rate,
//! augmented draws and seed); the held-out fold is then scored without augmentation. The
//! temperature that minimises the class-balanced log loss of all these out-of-fold logits (never
//! below 1: it only softens) divides the final model's logits. No validation photo is used, so the
//! validation numbers stay honest.

use std::time::Instant;

use head::probe::cv::{fit_temperature, score, stratified_folds};
use head::probe::{self, ProbeConfig};
use serde::{Deserialize, Serialize};
use train::driver::PassOutcome;
use train::kernels::Nhwc;
use train::optim::Optimizer;

use crate::block::{nchw_to_nhwc, nhwc_to_nchw};
use crate::classifier::Classifier;
use crate::compute::Compute;
use crate::epoch::{self, EpochData, Source, State};
use crate::error::{Error, Result};
use crate::net::Net;
use crate::pipeline::Event;
use crate::rows::RowReader;

/// What the cross-fit found (recorded in `metrics.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub folds: usize,
    /// Divides the fine-tuned model's logits (at least 1).
    pub temperature: f64,
    /// Out-of-fold log loss (class-balanced) before and after the temperature, and accuracy.
    pub oof_log_loss: f64,
    pub oof_log_loss_calibrated: f64,
    pub oof_accuracy: f64,
    pub seconds: f64,
    /// The saved weights on validation before the temperature (reported, never used to choose).
    #[serde(default)]
    pub val_log_loss_uncalibrated: Option<f64>,
    #[serde(default)]
    pub val_ece_uncalibrated: Option<f64>,
}

/// The fixed inputs of the cross-fit.
pub struct CrossFit<'a> {
    /// Block and head before fine-tuning (the block from the model, the head's weights unused).
    pub initial: &'a Net,
    /// The training photos' frozen outputs without augmentation.
    pub plain: &'a RowReader,
    pub labels: &'a [u32],
    pub classes: usize,
    pub row_shape: [usize; 3],
    pub folds: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub sgd: train::optim::SgdConfig,
    /// Precision of the block's products (the run's).
    pub precision: train::kernels::TrainPrecision,
}

/// Runs the cross-fit; `source` supplies the augmented training batches (cached draws or afresh).
pub fn cross_fit(
    cf: &CrossFit<'_>,
    compute: &mut dyn Compute,
    source: &mut Source<'_>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Calibration> {
    let started = Instant::now();
    let n = cf.labels.len();
    let folds = cf.folds.min(smallest_class(cf.labels, cf.classes));
    if folds < 2 {
        return Err(Error::Invalid(format!(
            "--calibrate {} needs at least 2 training photos of every class; use --calibrate 0",
            cf.folds
        )));
    }
    let fold_of = stratified_folds(cf.labels, cf.classes, folds, cf.seed);
    let features = block_features(cf)?;
    let k = cf.initial.head.outputs();
    let mut logits = vec![0f64; n * k];
    for f in 0..folds {
        let (fit_rows, held): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| fold_of[i] != f);
        on_event(Event::Info(format!(
            "calibration fold {}/{folds}: fine-tuning on {} photos, scoring {}",
            f + 1,
            fit_rows.len(),
            held.len()
        )));
        let net = fold_model(cf, &features, &fit_rows, compute, source, f, on_event)?;
        for (chunk_rows, chunk_logits) in score_rows(compute, &net, cf, &held)? {
            for (i, z) in chunk_rows.iter().zip(chunk_logits.chunks_exact(k)) {
                for (j, v) in z.iter().enumerate() {
                    logits[i * k + j] = *v as f64;
                }
            }
        }
    }
    let (wide, classes) = softmax_form(&logits, k);
    let weights = balanced_weights(cf.labels, classes);
    let (oof_log_loss, oof_accuracy) = score(&wide, cf.labels, &weights, classes, 1.0);
    let temperature = fit_temperature(&wide, cf.labels, &weights, classes).max(1.0);
    let (oof_log_loss_calibrated, _) = score(&wide, cf.labels, &weights, classes, temperature);
    Ok(Calibration {
        folds,
        temperature,
        oof_log_loss,
        oof_log_loss_calibrated,
        oof_accuracy,
        seconds: started.elapsed().as_secs_f64(),
        val_log_loss_uncalibrated: None,
        val_ece_uncalibrated: None,
    })
}

/// Divides the net's logits by `t` (the output layer's weights and bias).
pub fn apply(net: &mut Net, t: f64) {
    let s = (1.0 / t) as f32;
    net.head.w2.iter_mut().for_each(|v| *v *= s);
    net.head.b2.iter_mut().for_each(|v| *v *= s);
}

fn smallest_class(labels: &[u32], classes: usize) -> usize {
    let mut counts = vec![0usize; classes];
    for &y in labels {
        counts[y as usize] += 1;
    }
    counts.into_iter().min().unwrap_or(0)
}

/// Weights `n / (classes · count_c)`: every class counts as much in the loss.
fn balanced_weights(labels: &[u32], classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &y in labels {
        counts[y as usize] += 1;
    }
    let n = labels.len() as f64;
    labels
        .iter()
        .map(|&y| n / (classes as f64 * counts[y as usize].max(1) as f64))
        .collect()
}

/// Logits as one column per class: a sigmoid unit `z` is the softmax of `[0, z]`.
fn softmax_form(logits: &[f64], k: usize) -> (Vec<f64>, usize) {
    if k != 1 {
        return (logits.to_vec(), k);
    }
    (logits.iter().flat_map(|&z| [0.0, z]).collect(), 2)
}

/// The block's output on every training photo (no augmentation), flattened like the head reads
/// features (`[C, h, w]` per photo): what the fold probes are fitted on.
fn block_features(cf: &CrossFit<'_>) -> Result<head::data::Samples> {
    let all: Vec<usize> = (0..cf.labels.len()).collect();
    let mut block = cf.initial.block.clone();
    block.precision = cf.precision;
    let (mut out, mut shape) = (Vec::new(), None);
    for chunk in all.chunks(32) {
        let (x, d) = read_rows(cf.plain, chunk, cf.row_shape)?;
        let (y, od) = block.infer(&x, d)?;
        out.extend(nhwc_to_nchw(&y, od));
        shape = Some(vec![od.c, od.h, od.w]);
    }
    let shape = shape.ok_or_else(|| Error::Invalid("no training photos to calibrate on".into()))?;
    Ok(head::data::Samples::new(shape, out, cf.labels.to_vec())?)
}

/// Rows `idx` of a row file as one NCHW batch.
fn read_nchw(file: &RowReader, idx: &[usize], [c, h, w]: [usize; 3]) -> Result<Vec<f32>> {
    let row_len = c * h * w;
    let mut x = vec![0f32; idx.len() * row_len];
    for (slot, &i) in x.chunks_exact_mut(row_len).zip(idx) {
        file.read_row(i, slot)?;
    }
    Ok(x)
}

/// Rows `idx` of a row file as one NHWC batch.
fn read_rows(file: &RowReader, idx: &[usize], [c, h, w]: [usize; 3]) -> Result<(Vec<f32>, Nhwc)> {
    let x = read_nchw(file, idx, [c, h, w])?;
    let d = Nhwc {
        n: idx.len(),
        h,
        w,
        c,
    };
    Ok((nchw_to_nhwc(&x, d), d))
}

/// The run's recipe on the photos `rows`: a probe refitted on them, then block + head
/// fine-tuned on their augmented draws for the run's epochs.
fn fold_model(
    cf: &CrossFit<'_>,
    features: &head::data::Samples,
    rows: &[usize],
    compute: &mut dyn Compute,
    source: &mut Source<'_>,
    fold: usize,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Net> {
    let probe = probe::fit(
        &features.select(rows),
        cf.classes,
        &ProbeConfig::default(),
        &mut |_| {},
    )?;
    let mut net = cf.initial.clone();
    net.head = Classifier::from_head(&probe.model)?;
    net.block.precision = cf.precision;
    let sizes: Vec<usize> = net.params().iter().map(|p| p.len()).collect();
    let mut state = State {
        optim: Optimizer::new(cf.sgd.to_config(), &sizes)?,
        net,
    };
    let data = EpochData {
        labels: cf.labels,
        rows,
        row_shape: cf.row_shape,
        batch_size: cf.batch_size,
        seed: cf.seed,
        val: cf.plain,
        val_labels: &[],
    };
    for epoch in 0..cf.epochs {
        let outcome = epoch::train_pass(&mut state, compute, epoch, source, &data, &mut |_| {})?;
        if let PassOutcome::Diverged(why) = outcome {
            return Err(Error::Diverged(format!(
                "calibration fold {}: {why}",
                fold + 1
            )));
        }
        on_event(Event::Info(format!(
            "calibration fold {}: epoch {}/{} done",
            fold + 1,
            epoch + 1,
            cf.epochs
        )));
    }
    Ok(state.net)
}

/// Logits of `net` on the plain maps of photos `rows`, 32 at a time: `(rows, logits)` pairs.
fn score_rows(
    compute: &mut dyn Compute,
    net: &Net,
    cf: &CrossFit<'_>,
    rows: &[usize],
) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    let mut out = Vec::new();
    for chunk in rows.chunks(32) {
        let x = read_nchw(cf.plain, chunk, cf.row_shape)?;
        out.push((chunk.to_vec(), compute.logits(net, &x, cf.row_shape)?));
    }
    Ok(out)
}
