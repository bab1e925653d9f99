//! The training loop: seeded shuffling and dropout, a hand-derived backward pass for the two dense
//! layers (the big products run as Candle matmuls), per-epoch validation, keeping the best or last
//! epoch, and rolling back to the last good weights when the loss diverges.

use std::sync::Mutex;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Samples, CHUNK_ROWS};
use crate::error::{Error, Result};
use crate::model::{HeadConfig, HeadModel, Weights};
use crate::probe::ProbeConfig;
use crate::recipe::Recipe;
use train::driver::{fit, Learner, Pass, PassOutcome, Plan, Progress, Validation};
use train::kernels::tile::{tile_product, Rows, Scalars};
use train::loss::{bce_with_logits, sigmoid, softmax_cross_entropy};
use train::metrics::{calibration_error, EpochMetrics, Keep};
use train::optim::{rows_per_group, with_cpu_f32, AfterRows, Grad, Optim, OptimizerConfig};
use train::stage::StageEvent;

/// Back-propagated deltas below this are dropped: their products with the features would be
/// subnormal (slow) and their effect on any weight is nil.
const NEGLIGIBLE_DELTA: f32 = 1e-30;

/// Hyper-parameters of one training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub hidden: usize,
    pub dropout: f32,
    pub optimizer: OptimizerConfig,
    pub seed: u64,
    pub keep: Keep,
    /// Which head to fit; the fields above apply to [`Recipe::Keras2016`].
    #[serde(default)]
    pub recipe: Recipe,
    /// Settings of [`Recipe::Probe`].
    #[serde(default)]
    pub probe: ProbeConfig,
}

impl Default for TrainConfig {
    /// The command line's: the calibrated probe; for `--keras2016`, the tutorial's settings: 50
    /// epochs, batch 16, 256 hidden units, dropout 0.5, RMSprop; the last epoch is kept (a fixed
    /// schedule: validation is never used to pick weights).
    fn default() -> Self {
        TrainConfig {
            recipe: Recipe::default(),
            probe: ProbeConfig::default(),
            epochs: 50,
            batch_size: 16,
            hidden: 256,
            dropout: 0.5,
            optimizer: OptimizerConfig::rmsprop(crate::DEFAULT_LEARNING_RATE),
            seed: 0,
            keep: Keep::Last,
        }
    }
}

impl TrainConfig {
    /// This config with the settings its recipe ignores reset, so that comparing two configs
    /// only reports differences that change the head.
    pub fn relevant(&self) -> TrainConfig {
        let tutorial = TrainConfig::default();
        match self.recipe {
            Recipe::Probe => TrainConfig {
                recipe: Recipe::Probe,
                probe: self.probe.clone(),
                ..tutorial
            },
            Recipe::Keras2016 => TrainConfig {
                probe: tutorial.probe.clone(),
                ..self.clone()
            },
        }
    }

    /// Checks the numbers that are not checked elsewhere.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Invalid("--epochs must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        self.probe.validate()?;
        Ok(self.optimizer.validate()?)
    }
}

/// The result of [`train`].
#[derive(Debug)]
pub struct Trained {
    /// The head with the kept epoch's weights.
    pub model: HeadModel,
    /// One entry per completed epoch.
    pub history: Vec<EpochMetrics>,
    /// The epoch whose weights `model` holds.
    pub kept_epoch: usize,
    /// Set when the loss became NaN/inf and training stopped early.
    pub diverged: Option<String>,
}

/// Loss, accuracy and predicted class of every sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    /// Expected calibration error (15 bins) of the top-class probabilities.
    pub ece: f64,
    pub predictions: Vec<u32>,
}

/// Mean loss, accuracy and predictions of `model` on `samples` (no dropout).
pub fn evaluate(model: &HeadModel, samples: &Samples) -> Result<Evaluation> {
    let d = samples.dim();
    let k = model.config().outputs();
    let mut probs = vec![0f32; k];
    let (mut loss, mut correct) = (0f64, 0usize);
    let mut predictions = Vec::with_capacity(samples.len());
    let (mut confidence, mut right) = (Vec::new(), Vec::new());
    let labels = samples.labels();
    samples.for_each_chunk(CHUNK_ROWS, |first, chunk| {
        let n = chunk.len() / d;
        let x = Tensor::from_slice(chunk, (n, d), model.device())?;
        let z = model.logits(&x)?.flatten_all()?.to_vec1::<f32>()?;
        for i in 0..n {
            let y = labels[first + i];
            let zi = &z[i * k..(i + 1) * k];
            let (l, pred) = sample_loss(zi, y, &mut probs);
            loss += l as f64;
            correct += usize::from(pred == y);
            predictions.push(pred);
            confidence.push(top_probability(zi, &probs));
            right.push(pred == y);
        }
        Ok(())
    })?;
    let n = samples.len().max(1) as f64;
    Ok(Evaluation {
        loss: loss / n,
        accuracy: correct as f64 / n,
        ece: calibration_error(&confidence, &right),
        predictions,
    })
}

/// Loss and predicted class for one sample's logits; fills `probs` for the softmax case.
fn sample_loss(z: &[f32], y: u32, probs: &mut [f32]) -> (f32, u32) {
    if z.len() == 1 {
        (bce_with_logits(z[0], y as f32), u32::from(z[0] > 0.0))
    } else {
        let l = softmax_cross_entropy(z, y as usize, probs);
        (l, argmax(z))
    }
}

/// The predicted class's probability: from the sigmoid logit, or the softmax `probs` that
/// [`sample_loss`] filled.
fn top_probability(z: &[f32], probs: &[f32]) -> f64 {
    if z.len() == 1 {
        let p = sigmoid(z[0]) as f64;
        p.max(1.0 - p)
    } else {
        probs.iter().fold(0f32, |m, &v| m.max(v)) as f64
    }
}

fn argmax(z: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = i;
        }
    }
    best as u32
}

/// Reusable buffers of one training step.
///
/// The forward product `x·W1` of the *next* batch is computed inside the optimizer's pass over
/// W1, right after each block of rows is updated, so W1 streams through memory once per step
/// instead of twice. Partial products are kept per fixed row group and summed in group order.
struct Step {
    d: usize,
    h: usize,
    k: usize,
    dropout: f32,
    /// Rows of the current batch and, during the update, of the next one.
    xb: Vec<f32>,
    xb_next: Vec<f32>,
    /// `xb·W1` (before the bias) when `pre_ready`.
    pre: Vec<f32>,
    pre_ready: bool,
    act: Vec<f32>,
    mask: Vec<f32>,
    z: Vec<f32>,
    dz: Vec<f32>,
    probs: Vec<f32>,
    dpre: Vec<f32>,
    /// One partial `x·W1[group rows]` per row group of W1.
    partials: Vec<Mutex<Vec<f32>>>,
}

/// Sums of one step, for the epoch averages.
struct StepResult {
    loss_sum: f64,
    correct: usize,
}

impl Step {
    fn new(cfg: &HeadConfig, batch: usize) -> Self {
        let (d, h, k) = (cfg.input_dim(), cfg.hidden, cfg.outputs());
        let groups = d.div_ceil(rows_per_group(d));
        Step {
            d,
            h,
            k,
            dropout: cfg.dropout,
            xb: Vec::with_capacity(batch * d),
            xb_next: Vec::with_capacity(batch * d),
            pre: vec![0.0; batch * h],
            pre_ready: false,
            act: vec![0.0; batch * h],
            mask: vec![0.0; batch * h],
            z: vec![0.0; batch * k],
            dz: vec![0.0; batch * k],
            probs: vec![0.0; k],
            dpre: vec![0.0; batch * h],
            partials: (0..groups)
                .map(|_| Mutex::new(vec![0.0; batch * h]))
                .collect(),
        }
    }

    /// Forgets a forward product computed for a batch that will not run.
    fn invalidate(&mut self) {
        self.pre_ready = false;
    }

    /// Zeroes the partial products for a batch of `b` rows.
    fn clear_partials(&mut self, b: usize) {
        let len = b * self.h;
        for p in &mut self.partials {
            let p = p.get_mut().unwrap_or_else(|e| e.into_inner());
            p.clear();
            p.resize(len, 0.0);
        }
    }

    /// `pre = Σ_groups partial` in group order.
    fn sum_partials(&mut self, b: usize) {
        let len = b * self.h;
        self.pre.clear();
        self.pre.resize(len, 0.0);
        for part in &mut self.partials {
            let part = part.get_mut().unwrap_or_else(|e| e.into_inner());
            for (p, v) in self.pre.iter_mut().zip(part.iter()) {
                *p += v;
            }
        }
    }

    /// `pre = xb · W1` for the `b` gathered rows, one row group of W1 per parallel task.
    fn forward_dense1(&mut self, model: &HeadModel, b: usize) -> Result<()> {
        let (d, h) = (self.d, self.h);
        let group_rows = rows_per_group(d);
        self.clear_partials(b);
        let xb = &self.xb[..b * d];
        let partials = &self.partials;
        with_cpu_f32(model.w1.as_tensor(), |w| {
            partials.par_iter().enumerate().for_each(|(g, out)| {
                let i0 = g * group_rows;
                let depth = group_rows.min(d - i0);
                let s = Scalars {
                    data: &xb[i0..],
                    rs: d,
                    ps: 1,
                };
                let v = Rows {
                    data: &w[i0 * h..],
                    ld: h,
                };
                let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                tile_product(s, v, b, h, depth, &mut out, h, false);
            });
        })?;
        self.sum_partials(b);
        self.pre_ready = true;
        Ok(())
    }

    /// Forward with dropout, loss, backward and one optimizer step on the batch `idx`; when
    /// `next` is given, also computes the next batch's first-layer product during the update.
    fn run(
        &mut self,
        model: &HeadModel,
        optim: &mut Optim,
        data: &Samples,
        idx: &[usize],
        next: Option<&[usize]>,
        rng: &mut ChaCha8Rng,
    ) -> Result<StepResult> {
        let b = idx.len();
        if !self.pre_ready {
            self.xb.clear();
            for &i in idx {
                self.xb.extend_from_slice(data.row(i));
            }
            self.forward_dense1(model, b)?;
        }
        self.pre_ready = false;
        let b1 = model.b1.as_tensor().to_vec1::<f32>()?;
        let w2 = model.w2.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let b2 = model.b2.as_tensor().to_vec1::<f32>()?;
        self.hidden_forward(&b1, b, rng);
        let (loss_sum, correct) = self.output_and_loss(&w2, &b2, data, idx);
        if !loss_sum.is_finite() {
            return Ok(StepResult { loss_sum, correct });
        }
        let small = self.backward_small(&w2, b);
        self.update(model, optim, data, b, next, small)?;
        Ok(StepResult { loss_sum, correct })
    }

    /// Hidden layer: ReLU, then inverted dropout (kept units scaled by 1/(1-p), like Keras).
    #[allow(clippy::needless_range_loop)] // index arithmetic mirrors the layer equations
    fn hidden_forward(&mut self, b1: &[f32], b: usize, rng: &mut ChaCha8Rng) {
        let h = self.h;
        let (act, mask) = (&mut self.act[..b * h], &mut self.mask[..b * h]);
        let pre = &mut self.pre[..b * h];
        let scale = 1.0 / (1.0 - self.dropout);
        for r in 0..b {
            for j in 0..h {
                let i = r * h + j;
                let keep = self.dropout == 0.0 || rng.random::<f32>() >= self.dropout;
                let m = if keep { scale } else { 0.0 };
                pre[i] += b1[j];
                mask[i] = m;
                act[i] = pre[i].max(0.0) * m;
            }
        }
    }

    /// Output layer, loss and its gradient `dz` (mean over the batch); returns the summed loss
    /// and the correct predictions.
    #[allow(clippy::needless_range_loop)] // index arithmetic mirrors the layer equations
    fn output_and_loss(
        &mut self,
        w2: &[f32],
        b2: &[f32],
        data: &Samples,
        idx: &[usize],
    ) -> (f64, usize) {
        let (h, k, b) = (self.h, self.k, idx.len());
        let act = &self.act[..b * h];
        let (z, dz) = (&mut self.z[..b * k], &mut self.dz[..b * k]);
        for r in 0..b {
            for c in 0..k {
                let mut s = b2[c];
                for j in 0..h {
                    s += act[r * h + j] * w2[j * k + c];
                }
                z[r * k + c] = s;
            }
        }
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        let inv_b = 1.0 / b as f32;
        for (r, &i) in idx.iter().enumerate() {
            let y = data.labels()[i];
            let zr = &z[r * k..(r + 1) * k];
            let (l, pred) = sample_loss(zr, y, &mut self.probs);
            loss_sum += l as f64;
            correct += usize::from(pred == y);
            if k == 1 {
                dz[r] = (sigmoid(zr[0]) - y as f32) * inv_b;
            } else {
                for c in 0..k {
                    let t = if c == y as usize { 1.0 } else { 0.0 };
                    dz[r * k + c] = (self.probs[c] - t) * inv_b;
                }
            }
        }
        (loss_sum, correct)
    }

    /// Backward through the output layer, ReLU and dropout: the small gradients, and `dpre`
    /// (the hidden pre-activations' gradient) for the kernel gradient.
    #[allow(clippy::needless_range_loop)] // index arithmetic mirrors the layer equations
    fn backward_small(&mut self, w2: &[f32], b: usize) -> SmallGrads {
        let (h, k) = (self.h, self.k);
        let (act, mask, pre) = (&self.act[..b * h], &self.mask[..b * h], &self.pre[..b * h]);
        let dz = &self.dz[..b * k];
        let mut g2 = SmallGrads {
            dw2: vec![0f32; h * k],
            db2: vec![0f32; k],
            db1: vec![0f32; h],
        };
        let dpre = &mut self.dpre[..b * h];
        for r in 0..b {
            for c in 0..k {
                let g = dz[r * k + c];
                g2.db2[c] += g;
                for j in 0..h {
                    g2.dw2[j * k + c] += act[r * h + j] * g;
                }
            }
            for j in 0..h {
                let mut g = 0f32;
                for c in 0..k {
                    g += dz[r * k + c] * w2[j * k + c];
                }
                let i = r * h + j;
                let gi = if pre[i] > 0.0 { g * mask[i] } else { 0.0 };
                // Keep the big products out of slow subnormal arithmetic once the loss is tiny.
                dpre[i] = if gi.abs() < NEGLIGIBLE_DELTA { 0.0 } else { gi };
                g2.db1[j] += dpre[i];
            }
        }
        g2
    }

    /// The optimizer step. The kernel gradient xᵀ·dpre is produced block by block of rows inside
    /// the update, so the [D, H] gradient never exists as a whole; with `next`, the next batch's
    /// first-layer product is computed from the updated rows as they are written.
    fn update(
        &mut self,
        model: &HeadModel,
        optim: &mut Optim,
        data: &Samples,
        b: usize,
        next: Option<&[usize]>,
        small: SmallGrads,
    ) -> Result<()> {
        let (d, h, k) = (self.d, self.h, self.k);
        let bn = next.map_or(0, <[usize]>::len);
        if let Some(next) = next {
            self.xb_next.clear();
            for &i in next {
                self.xb_next.extend_from_slice(data.row(i));
            }
            self.clear_partials(bn);
        }
        let (xb, xn, dpre) = (
            &self.xb[..b * d],
            &self.xb_next[..bn * d],
            &self.dpre[..b * h],
        );
        let fill = |first_row: usize, out: &mut [f32]| {
            let s = Scalars {
                data: &xb[first_row..],
                rs: 1,
                ps: d,
            };
            let v = Rows { data: dpre, ld: h };
            tile_product(s, v, out.len() / h, h, b, out, h, false);
        };
        let partials = &self.partials;
        let forward_next = |group: usize, first_row: usize, rows: &[f32]| {
            let s = Scalars {
                data: &xn[first_row..],
                rs: d,
                ps: 1,
            };
            let v = Rows { data: rows, ld: h };
            let mut out = partials[group].lock().unwrap_or_else(|e| e.into_inner());
            tile_product(s, v, bn, h, rows.len() / h, &mut out, h, true);
        };
        let dev = model.device().clone();
        let db1 = Tensor::from_vec(small.db1, h, &dev)?;
        let dw2 = Tensor::from_vec(small.dw2, (h, k), &dev)?;
        let db2 = Tensor::from_vec(small.db2, k, &dev)?;
        optim.step_sources(&[
            Grad::Rows {
                row_len: h,
                fill: &fill,
                then: next.map(|_| &forward_next as AfterRows<'_>),
            },
            Grad::Tensor(&db1),
            Grad::Tensor(&dw2),
            Grad::Tensor(&db2),
        ])?;
        if next.is_some() {
            std::mem::swap(&mut self.xb, &mut self.xb_next);
            self.sum_partials(bn);
            self.pre_ready = true;
        }
        Ok(())
    }
}

/// The gradients of the small tensors of one step (the kernel's is streamed, see `update`).
struct SmallGrads {
    dw2: Vec<f32>,
    db2: Vec<f32>,
    db1: Vec<f32>,
}

/// True when every weight is finite.
fn weights_finite(model: &HeadModel) -> Result<bool> {
    let mut ok = true;
    for v in model.vars() {
        ok &= with_cpu_f32(&v.as_tensor().to_device(&Device::Cpu)?, |s| {
            s.iter().all(|x| x.is_finite())
        })?;
    }
    Ok(ok)
}

/// The head being trained, as the epoch driver sees it.
struct MlpLearner<'a> {
    model: HeadModel,
    optim: Optim,
    step: Step,
    train: &'a Samples,
    val: &'a Samples,
    order: Vec<usize>,
    batch: usize,
    shuffle_rng: ChaCha8Rng,
    dropout_rng: ChaCha8Rng,
}

impl Learner for MlpLearner<'_> {
    type State = Weights;
    type Error = Error;

    fn train_epoch(
        &mut self,
        epoch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<PassOutcome> {
        self.order.shuffle(&mut self.shuffle_rng);
        let (mut loss_sum, mut correct, mut done) = (0f64, 0usize, 0usize);
        let chunks: Vec<&[usize]> = self.order.chunks(self.batch).collect();
        self.step.invalidate();
        for (bi, idx) in chunks.iter().enumerate() {
            let next = chunks.get(bi + 1).copied();
            let r = self.step.run(
                &self.model,
                &mut self.optim,
                self.train,
                idx,
                next,
                &mut self.dropout_rng,
            )?;
            if !r.loss_sum.is_finite() {
                return Ok(PassOutcome::Diverged(format!(
                    "the training loss became {} in epoch {epoch}, batch {}",
                    r.loss_sum,
                    bi + 1
                )));
            }
            loss_sum += r.loss_sum;
            correct += r.correct;
            done += idx.len();
            progress(done);
        }
        Ok(PassOutcome::Done(Pass {
            loss_sum,
            correct,
            samples: self.train.len(),
        }))
    }

    fn validate(&mut self) -> Result<Validation> {
        let eval = evaluate(&self.model, self.val)?;
        let finite = weights_finite(&self.model)?;
        Ok(Validation {
            loss: if finite { eval.loss } else { f64::NAN },
            accuracy: eval.accuracy,
        })
    }

    fn state(&self) -> Result<Weights> {
        self.model.snapshot()
    }

    fn restore(&mut self, w: &Weights) -> Result<()> {
        self.model.restore(w)
    }

    fn train_samples(&self) -> usize {
        self.train.len()
    }

    fn learning_rate(&self) -> f64 {
        self.optim.config().learning_rate
    }
}

/// Trains a fresh head on `train`, validating on `val` after every epoch.
pub fn train(
    train: &Samples,
    val: &Samples,
    num_classes: usize,
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(StageEvent<'_>),
) -> Result<Trained> {
    cfg.validate()?;
    if train.is_empty() || val.is_empty() {
        return Err(Error::Data(format!(
            "need training and validation samples, got {} and {}",
            train.len(),
            val.len()
        )));
    }
    if train.sample_shape() != val.sample_shape() {
        return Err(Error::Data(format!(
            "training features have shape {:?} but validation features {:?}",
            train.sample_shape(),
            val.sample_shape()
        )));
    }
    for (name, s) in [("training", train), ("validation", val)] {
        if let Some(&bad) = s.labels().iter().find(|&&y| y as usize >= num_classes) {
            return Err(Error::Data(format!(
                "{name} label {bad} is out of range for {num_classes} classes"
            )));
        }
    }
    let head_cfg = HeadConfig {
        input_shape: train.sample_shape().to_vec(),
        hidden: cfg.hidden,
        num_classes,
        dropout: cfg.dropout,
    };
    let model = HeadModel::new(head_cfg.clone(), cfg.seed, &Device::Cpu)?;
    let optim = Optim::new(model.vars(), cfg.optimizer.clone())?;
    let batch = cfg.batch_size.min(train.len());
    let mut learner = MlpLearner {
        step: Step::new(&head_cfg, batch),
        model,
        optim,
        train,
        val,
        order: (0..train.len()).collect(),
        batch,
        shuffle_rng: runfs::seed::plain(cfg.seed, 1),
        dropout_rng: runfs::seed::plain(cfg.seed, 2),
    };
    let plan = Plan {
        epochs: cfg.epochs,
        stop_after: None,
        keep: cfg.keep,
    };
    let fitted = fit(&mut learner, &plan, Progress::default(), on_event)?;
    if fitted.history.is_empty() {
        return Err(Error::Diverged(format!(
            "{}; no epoch completed, so nothing was saved",
            fitted
                .stopped_early
                .unwrap_or_else(|| "training produced no epoch".into())
        )));
    }
    let kept_epoch = fitted.kept_epoch();
    if let Some((_, w)) = &fitted.best {
        learner.model.restore(w)?;
    }
    Ok(Trained {
        model: learner.model,
        history: fitted.history,
        kept_epoch,
        diverged: fitted.stopped_early,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next batch's product computed inside the update equals a separate forward pass on
    /// the updated weights.
    #[test]
    fn fused_forward_matches_separate_forward() {
        let (n, d) = (40, 300);
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 0.6)
            .collect();
        let y: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let data = Samples::new(vec![d], x, y).unwrap();
        let cfg = HeadConfig {
            input_shape: vec![d],
            hidden: 24,
            num_classes: 3,
            dropout: 0.25,
        };
        let model = HeadModel::new(cfg.clone(), 5, &Device::Cpu).unwrap();
        let mut optim = Optim::new(model.vars(), OptimizerConfig::rmsprop(1e-2)).unwrap();
        let mut rng = runfs::seed::plain(1, 0);
        let mut step = Step::new(&cfg, 13);
        let batches: Vec<usize> = (0..n).collect();
        let (first, next) = (&batches[..13], &batches[13..26]);
        step.run(&model, &mut optim, &data, first, Some(next), &mut rng)
            .unwrap();
        assert!(step.pre_ready);
        let fused = step.pre[..13 * 24].to_vec();
        let mut fresh = Step::new(&cfg, 13);
        for &i in next {
            fresh.xb.extend_from_slice(data.row(i));
        }
        fresh.forward_dense1(&model, 13).unwrap();
        for (a, b) in fused.iter().zip(&fresh.pre[..13 * 24]) {
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert!(fused.iter().any(|v| *v != 0.0));
    }
}
