//! The default head: an L2-regularised multinomial logistic regression on the flattened features
//! (a "linear probe"), its C chosen by stratified cross-validation on the training split only,
//! its temperature fitted on the out-of-fold logits, balanced class weights. The fitted linear map
//! is stored in the ordinary two-layer head format (see [`as_head`]), so `finetune`, `predict` and
//! `export` use it unchanged.

pub mod cv;
pub mod lbfgs;
pub mod linalg;
pub mod objective;
pub mod primal;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::Samples;
use crate::error::{Error, Result};
use crate::model::{HeadConfig, HeadModel};
use crate::oof::Oof;
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
    /// True when the training rows were too many for the dual solver: the primal one streamed
    /// them, and C and the temperature were chosen on one held-out fold instead of all of them.
    #[serde(default)]
    pub streamed: bool,
    /// Passes over the training rows the streamed solver made (`None` for the dual one).
    #[serde(default)]
    pub passes: Option<usize>,
}

/// A fitted probe.
#[derive(Debug)]
pub struct Probe {
    pub model: HeadModel,
    pub summary: ProbeSummary,
    /// Out-of-fold probabilities of the training rows at the chosen C, temperature applied.
    pub oof: Oof,
}

fn solver_stop() -> Stop {
    Stop {
        grad_tol: 1e-7,
        rel_tol: 1e-12,
        max_iter: 600,
    }
}

/// Training rows up to which the probe solves the dual problem (exact, an `n × n` Gram matrix of
/// 128 MiB at this size); beyond it, the primal problem in streamed passes ([`primal`]).
pub const DUAL_MAX_ROWS: usize = 4096;

/// Most `classes × rows²` for the dual solver: each of its objective evaluations costs that many
/// multiply-adds (in f64, for every fold, C and L-BFGS step), so it is the solver for a few
/// classes (2 classes up to [`DUAL_MAX_ROWS`] rows, 6 up to 3,344, 16 up to 2,048). Beyond it —
/// many classes, such as 1,000 classes × 2 photos — the streamed primal solver, whose passes cost
/// `classes × rows × features` in f32 products and whose steps [`primal::ROW_WORK_BUDGET`] bounds.
pub const DUAL_MAX_WORK: usize = 1 << 26;

/// True when the probe solves the dual problem for `rows` training rows of `classes` classes.
pub fn uses_dual(rows: usize, classes: usize) -> bool {
    rows <= DUAL_MAX_ROWS && classes.saturating_mul(rows).saturating_mul(rows) <= DUAL_MAX_WORK
}

/// A fit running longer than this reports its steps (fits of a value of C on a fold) on lines of
/// their own, at most one per this interval.
const SLOW: Duration = Duration::from_secs(3);

/// `about 12 s left` from the time taken for `done` of `total` equal-ish steps.
fn left(elapsed: Duration, done: usize, total: usize) -> String {
    if done == 0 || done >= total {
        return String::new();
    }
    let s = elapsed.as_secs_f64() / done as f64 * (total - done) as f64;
    format!(", about {} left", seconds(s))
}

fn seconds(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

/// What both fits share: balanced class weights, the feature scale and the folds.
struct Setup {
    classes: usize,
    weights: Vec<f64>,
    /// Multiplies the features to unit mean squared norm.
    scale: f64,
    /// Fold of every training row, in `0..folds`.
    fold_of: Vec<usize>,
    folds: usize,
}

/// The fitted linear map and what the fit chose.
struct Fitted {
    /// `[d, classes]` weights on the unscaled features, temperature applied.
    w: Mat,
    bias: Vec<f64>,
    summary: ProbeSummary,
    oof: Oof,
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
    let setup = Setup {
        classes,
        weights,
        scale: unit_scale(train)?,
        fold_of: stratified_folds(train.labels(), classes, folds, cfg.seed),
        folds,
    };
    let fitted = if uses_dual(n, classes) {
        on_event(StageEvent::Info(format!(
            "linear probe: {n} samples × {d} features, {} values of C, {folds}-fold cross-validation",
            cfg.grid.len()
        )));
        fit_dual(train, cfg, &setup, on_event)?
    } else {
        fit_primal(train, cfg, &setup, on_event)?
    };
    let s = &fitted.summary;
    let best = s.path.iter().find(|q| q.c == s.c);
    if let Some(best) = best {
        on_event(StageEvent::Info(format!(
            "chose C {:.3e} (held-out log loss {:.4}, accuracy {:.4}), temperature {:.3}",
            s.c, best.log_loss, best.accuracy, s.temperature
        )));
    }
    let model = as_head(
        train.sample_shape(),
        &fitted.w,
        &fitted.bias,
        classes,
        &Device::Cpu,
    )?;
    Ok(Probe {
        model,
        summary: fitted.summary,
        oof: fitted.oof,
    })
}

/// `1 / sqrt(mean squared row norm)`: the features scaled to unit mean squared norm.
fn unit_scale(train: &Samples) -> Result<f64> {
    let mut sum = 0f64;
    train.for_each_chunk(crate::data::CHUNK_ROWS, |_, x| {
        for r in x.chunks(train.dim()) {
            sum += r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        }
        Ok(())
    })?;
    let mean_sq = sum / train.len() as f64;
    if !(mean_sq.is_finite() && mean_sq > 0.0) {
        return Err(Error::Data(
            "the training features are all zero: nothing to learn from".into(),
        ));
    }
    Ok(1.0 / mean_sq.sqrt())
}

/// The dual fit: `folds`-fold cross-validation of C on the Gram matrix, temperature on the
/// out-of-fold logits, the best C refitted on every row.
// Over 80 lines: the dual solver's cross-validation, temperature and refit share the Gram matrix
// and its fold views.
fn fit_dual(
    train: &Samples,
    cfg: &ProbeConfig,
    s: &Setup,
    on_event: &mut dyn FnMut(StageEvent<'_>),
) -> Result<Fitted> {
    let (classes, weights, scale, folds) = (s.classes, &s.weights[..], s.scale, s.folds);
    let (n, d) = (train.len(), train.dim());
    let started = Instant::now();
    let k_full = gram(&train.features(), n, d, scale)?;
    let fits = folds * cfg.grid.len();
    on_event(StageEvent::PhaseStart {
        name: "cross-validating C".into(),
        total: fits,
    });
    let folds_of = Folds {
        gram: &k_full,
        labels: train.labels(),
        weights,
        classes,
        fold_of: &s.fold_of,
        count: folds,
    };
    // The folds run on the thread pool; this thread relays their progress to `on_event` (not from
    // inside the pool, whose thread must not block waiting for it: then no progress is relayed).
    let (tx, rx) = mpsc::channel::<()>();
    let (cv, mut said) = if rayon::current_thread_index().is_some() {
        drop(rx);
        (
            cross_validate(&folds_of, &cfg.grid, solver_stop(), &|| {})?,
            started,
        )
    } else {
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                let fitted = move || {
                    let _ = tx.send(());
                };
                cross_validate(&folds_of, &cfg.grid, solver_stop(), &fitted)
            });
            let (mut done, mut said) = (0, started);
            while rx.recv().is_ok() {
                done += 1;
                on_event(StageEvent::Progress { done });
                let elapsed = started.elapsed();
                if said.elapsed() >= SLOW {
                    said = Instant::now();
                    on_event(StageEvent::Info(format!(
                    "cross-validating C: {done} of {fits} fits ({folds} folds × {} values), {}{}",
                    cfg.grid.len(),
                    seconds(elapsed.as_secs_f64()),
                    left(elapsed, done, fits)
                )));
                }
            }
            let cv = worker
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            cv.map(|cv| (cv, said))
        })?
    };
    on_event(StageEvent::PhaseEnd);
    let c = cfg.grid[cv.best];
    // Out-of-fold models saw 1/folds less data and are less sure than the final one, so a
    // temperature below 1 (sharpening) would over-correct: only soften.
    let temperature = fit_temperature(&cv.oof_logits, train.labels(), weights, classes).max(1.0);
    let l = cholesky(&k_full)?;
    let problem = Problem::new(&l, train.labels(), weights, classes);
    let mut p = vec![0.0; problem.params()];
    let mut outcome = None;
    for (i, &ci) in cfg.grid.iter().take(cv.best + 1).enumerate() {
        outcome = Some(minimize(&mut p, solver_stop(), &mut |x, g| {
            problem.eval(ci, x, g)
        }));
        if said.elapsed() >= SLOW {
            said = Instant::now();
            on_event(StageEvent::Info(format!(
                "refitting on all rows: C {ci:.3e} ({} of {} values up to the chosen one), {}",
                i + 1,
                cv.best + 1,
                seconds(started.elapsed().as_secs_f64())
            )));
        }
    }
    let outcome = outcome.ok_or_else(|| Error::Invalid("empty C grid".into()))?;
    let m = problem.dual_coefficients(&p);
    let w = primal_weights(train, &m, scale * scale / temperature);
    let bias: Vec<f64> = p[n * classes..].iter().map(|b| b / temperature).collect();
    let oof = Oof::from_logits((0..n).collect(), &cv.oof_logits, classes, temperature);
    Ok(Fitted {
        w,
        bias,
        oof,
        summary: ProbeSummary {
            c,
            temperature,
            folds,
            path: cv.path,
            iterations: outcome.iterations,
            converged: outcome.converged,
            streamed: false,
            passes: None,
        },
    })
}

// Over 80 lines: the streamed solver's choice of C, temperature and refit share the fold assignment
// and the row stream.
/// The primal fit for many rows: C and the temperature chosen on fold 0 of `fold_of`.
fn fit_primal(
    train: &Samples,
    cfg: &ProbeConfig,
    s: &Setup,
    on_event: &mut dyn FnMut(StageEvent<'_>),
) -> Result<Fitted> {
    let (classes, weights, scale, folds) = (s.classes, &s.weights[..], s.scale, s.folds);
    let (n, d, values) = (train.len(), train.dim(), cfg.grid.len());
    let work = 2.0 * n as f64 * d as f64 * classes as f64;
    let steps = primal::Steps::for_shape(d, classes, values);
    let why = if n > DUAL_MAX_ROWS {
        String::new()
    } else {
        format!(
            ": classes × rows² = {:.1e} is over the exact solver's limit of {:.1e}",
            classes as f64 * n as f64 * n as f64,
            DUAL_MAX_WORK as f64
        )
    };
    on_event(StageEvent::Info(format!(
        "linear probe: {n} samples × {d} features × {classes} classes (streamed passes{why}), \
         {values} values of C chosen on 1 of {folds} folds"
    )));
    let planned = values * steps.path + steps.last;
    on_event(StageEvent::Info(format!(
        "linear probe: at most {} L-BFGS steps per value of C{} and {} for the final fit, \
         each a pass of {:.1e} multiply-adds (at most {planned} passes; the path stops {} values \
         past the best C)",
        steps.path,
        if steps.cut() {
            format!(" (cut from {} by the work budget)", primal::PATH_STEPS)
        } else {
            String::new()
        },
        steps.last,
        work,
        primal::PAST_BEST,
    )));
    on_event(StageEvent::PhaseStart {
        name: "fitting C on a held-out fold".into(),
        total: values,
    });
    let started = Instant::now();
    let f = primal::fit(
        train,
        scale,
        weights,
        classes,
        &cfg.grid,
        &s.fold_of,
        steps,
        &mut |p| match p {
            primal::Progress::Scored {
                index,
                point,
                passes,
            } => {
                on_event(StageEvent::Progress { done: index + 1 });
                let elapsed = started.elapsed().as_secs_f64();
                let rest = (values - index - 1) * (steps.path + 1) + steps.last;
                let per_pass = elapsed / passes.max(1) as f64;
                on_event(StageEvent::Info(format!(
                    "C {:.3e} ({} of {values}): held-out log loss {:.4}, accuracy {:.4}; \
                     {passes} passes, {}, at most about {} left",
                    point.c,
                    index + 1,
                    point.log_loss,
                    point.accuracy,
                    seconds(elapsed),
                    seconds(per_pass * rest as f64),
                )));
            }
            primal::Progress::Refit { c } => {
                let elapsed = started.elapsed();
                on_event(StageEvent::Info(format!(
                    "refitting C {c:.3e} on all rows (at most {} passes), {}",
                    steps.last,
                    seconds(elapsed.as_secs_f64())
                )));
            }
        },
    )?;
    on_event(StageEvent::PhaseEnd);
    let oof = Oof::from_logits(f.held, &f.held_logits, classes, f.temperature);
    Ok(Fitted {
        w: f.w,
        bias: f.bias,
        oof,
        summary: ProbeSummary {
            c: cfg.grid[f.best],
            temperature: f.temperature,
            folds,
            path: f.path,
            iterations: f.outcome.iterations,
            converged: f.outcome.converged,
            streamed: true,
            passes: Some(f.passes),
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
