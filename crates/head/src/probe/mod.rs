//! The default head: an L2-regularised multinomial logistic regression on the flattened features
//! (a "linear probe"), its C chosen by stratified cross-validation on the training split only,
//! its temperature fitted on the out-of-fold logits, balanced class weights. The fitted linear map
//! is stored in the ordinary two-layer head format (see [`as_head`]), so `finetune`, `predict` and
//! `export` use it unchanged.

pub mod cv;
pub mod lbfgs;
pub mod linalg;
pub mod objective;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::Samples;
use crate::error::{Error, Result};
use crate::model::{HeadConfig, HeadModel};
use cv::{cross_validate, fit_temperature, stratified_folds, Folds, PathPoint};
use lbfgs::{minimize, Stop};
use linalg::{cholesky, gram, Mat};
use objective::Problem;
use train::stage::StageEvent;

/// Settings of the probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// Candidate inverse regularisation strengths (features scaled to unit mean squared norm).
    pub grid: Vec<f64>,
    /// Cross-validation folds (fewer when a class has fewer training samples).
    pub folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
}

impl Default for ProbeConfig {
    /// C = 10^-1 … 10^4 in half decades (on unit-norm features: from strong to weak), 5 folds.
    fn default() -> Self {
        ProbeConfig {
            grid: (0..11).map(|i| 10f64.powf(-1.0 + 0.5 * i as f64)).collect(),
            folds: 5,
            seed: 0,
        }
    }
}

impl ProbeConfig {
    pub fn validate(&self) -> Result<()> {
        if self.grid.is_empty() || self.grid.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(Error::Invalid(
                "the probe's C grid must hold positive numbers".into(),
            ));
        }
        if self.folds < 2 {
            return Err(Error::Invalid("--folds must be at least 2".into()));
        }
        Ok(())
    }
}

/// What the fit chose, stored in the head's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    /// The chosen C (on features scaled to unit mean squared norm).
    pub c: f64,
    /// Divides the logits; fitted on the out-of-fold predictions, at least 1.
    pub temperature: f64,
    /// Folds actually used.
    pub folds: usize,
    /// Out-of-fold log loss and accuracy of every C tried.
    pub path: Vec<PathPoint>,
    /// L-BFGS iterations of the final fit, and whether it converged.
    pub iterations: usize,
    pub converged: bool,
}

/// A fitted probe.
#[derive(Debug)]
pub struct Probe {
    pub model: HeadModel,
    pub summary: ProbeSummary,
}

fn solver_stop() -> Stop {
    Stop {
        grad_tol: 1e-7,
        rel_tol: 1e-12,
        max_iter: 600,
    }
}

/// Fits the probe on `train` (`classes` classes) and returns it as a head.
pub fn fit(
    train: &Samples,
    classes: usize,
    cfg: &ProbeConfig,
    on_event: &mut dyn FnMut(StageEvent<'_>),
) -> Result<Probe> {
    cfg.validate()?;
    let (n, d) = (train.len(), train.dim());
    let counts = train.class_counts(classes);
    let smallest = counts.iter().copied().min().unwrap_or(0);
    if smallest == 0 {
        return Err(Error::Data(
            "a class has no training samples; every class needs photos in train".into(),
        ));
    }
    let folds = cfg.folds.min(smallest);
    if folds < 2 {
        return Err(Error::Data(format!(
            "a class has only {smallest} training sample; the head needs at least 2 per class"
        )));
    }
    let weights: Vec<f64> = train
        .labels()
        .iter()
        .map(|&y| n as f64 / (classes * counts[y as usize]) as f64)
        .collect();
    let mean_sq = train
        .features()
        .chunks(d)
        .map(|r| r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .sum::<f64>()
        / n as f64;
    if !(mean_sq.is_finite() && mean_sq > 0.0) {
        return Err(Error::Data(
            "the training features are all zero: nothing to learn from".into(),
        ));
    }
    let scale = 1.0 / mean_sq.sqrt();
    on_event(StageEvent::Info(format!(
        "linear probe: {n} samples × {d} features, {} values of C, {folds}-fold cross-validation",
        cfg.grid.len()
    )));
    let k_full = gram(train.features(), n, d, scale)?;
    let fold_of = stratified_folds(train.labels(), classes, folds, cfg.seed);
    on_event(StageEvent::PhaseStart {
        name: "cross-validating C".into(),
        total: folds,
    });
    let folds_of = Folds {
        gram: &k_full,
        labels: train.labels(),
        weights: &weights,
        classes,
        fold_of: &fold_of,
        count: folds,
    };
    let cv = cross_validate(&folds_of, &cfg.grid, solver_stop())?;
    on_event(StageEvent::PhaseEnd);
    let c = cfg.grid[cv.best];
    // Out-of-fold models saw 1/folds less data and are less sure than the final one, so a
    // temperature below 1 (sharpening) would over-correct: only soften.
    let temperature = fit_temperature(&cv.oof_logits, train.labels(), &weights, classes).max(1.0);
    let best = &cv.path[cv.best];
    on_event(StageEvent::Info(format!(
        "chose C {c:.3e} (out-of-fold log loss {:.4}, accuracy {:.4}), temperature {temperature:.3}",
        best.log_loss, best.accuracy
    )));
    let l = cholesky(&k_full)?;
    let problem = Problem::new(&l, train.labels(), &weights, classes);
    let mut p = vec![0.0; problem.params()];
    let mut outcome = None;
    for &ci in cfg.grid.iter().take(cv.best + 1) {
        outcome = Some(minimize(&mut p, solver_stop(), &mut |x, g| {
            problem.eval(ci, x, g)
        }));
    }
    let outcome = outcome.ok_or_else(|| Error::Invalid("empty C grid".into()))?;
    let m = problem.dual_coefficients(&p);
    let w = primal_weights(train, &m, scale * scale / temperature);
    let bias: Vec<f64> = p[n * classes..].iter().map(|b| b / temperature).collect();
    let model = as_head(train.sample_shape(), &w, &bias, classes, &Device::Cpu)?;
    Ok(Probe {
        model,
        summary: ProbeSummary {
            c,
            temperature,
            folds,
            path: cv.path,
            iterations: outcome.iterations,
            converged: outcome.converged,
        },
    })
}

/// `factor · Xᵀ M`: the `[d, classes]` weights on the unscaled features.
fn primal_weights(train: &Samples, m: &Mat, factor: f64) -> Mat {
    let (d, k) = (train.dim(), m.cols);
    let mut w = Mat::zeros(d, k);
    for i in 0..train.len() {
        let mi = m.row(i);
        for (j, &x) in train.row(i).iter().enumerate() {
            if x != 0.0 {
                let o = &mut w.data[j * k..(j + 1) * k];
                for (o, &mv) in o.iter_mut().zip(mi) {
                    *o += x as f64 * mv;
                }
            }
        }
    }
    w.data.iter_mut().for_each(|v| *v *= factor);
    w
}

/// The linear map `x ↦ x W + b` as the two-layer head: with `V` the output weights (for two classes
/// the single sigmoid logit `w₁ − w₀`), hidden layer `[V, −V]` without bias, ReLU, and output
/// weights `[I; −I]` give `relu(xV) − relu(−xV) + b = xV + b` exactly.
pub fn as_head(
    sample_shape: &[usize],
    w: &Mat,
    bias: &[f64],
    classes: usize,
    device: &Device,
) -> Result<HeadModel> {
    let d = w.rows;
    let (v, b): (Vec<Vec<f64>>, Vec<f64>) = if classes == 2 {
        let col: Vec<f64> = (0..d).map(|j| w.at(j, 1) - w.at(j, 0)).collect();
        (vec![col], vec![bias[1] - bias[0]])
    } else {
        let cols = (0..classes)
            .map(|c| (0..d).map(|j| w.at(j, c)).collect())
            .collect();
        (cols, bias.to_vec())
    };
    let outputs = v.len();
    let hidden = 2 * outputs;
    let mut w1 = vec![0f32; d * hidden];
    for (c, col) in v.iter().enumerate() {
        for (j, &x) in col.iter().enumerate() {
            w1[j * hidden + c] = x as f32;
            w1[j * hidden + outputs + c] = -x as f32;
        }
    }
    let mut w2 = vec![0f32; hidden * outputs];
    for c in 0..outputs {
        w2[c * outputs + c] = 1.0;
        w2[(outputs + c) * outputs + c] = -1.0;
    }
    let config = HeadConfig {
        input_shape: sample_shape.to_vec(),
        hidden,
        num_classes: classes,
        dropout: 0.0,
    };
    let b2: Vec<f32> = b.iter().map(|&x| x as f32).collect();
    HeadModel::from_tensors(
        config,
        [
            Tensor::from_vec(w1, (d, hidden), device)?,
            Tensor::zeros(hidden, candle_core::DType::F32, device)?,
            Tensor::from_vec(w2, (hidden, outputs), device)?,
            Tensor::from_vec(b2, outputs, device)?,
        ],
    )
}
