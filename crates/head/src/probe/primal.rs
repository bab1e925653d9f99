//! The probe for many training rows (more than [`super::DUAL_MAX_ROWS`]): the same penalised
//! objective over the primal weights, each evaluation one streamed pass over the rows in blocks
//! (no `n × n` matrix, memory independent of `n`); C is chosen on one stratified fold held out of
//! train, the temperature on that fold's logits, then the chosen C is refitted on every row.

use super::cv::{fit_temperature, score, PathPoint};
use super::lbfgs::{minimize, Outcome, Stop};
use super::linalg::Mat;
use super::objective::cross_entropy_grad;
use crate::data::Samples;
use crate::error::{Error, Result};
use rayon::prelude::*;
use train::kernels::{matmul_on, MatRef, Threads};

/// Rows of one block (1 MiB of 150-px features: stays in cache between the block's forward and
/// backward products).
const BLOCK_ROWS: usize = 32;

/// Most groups a pass is cut into (each group's rows are summed by one thread, the groups'
/// sums in group order: results do not depend on the thread count).
const GROUPS: usize = 64;

/// Bytes of all groups' partial gradients together at most.
const PARTIALS_BYTES: usize = 64 << 20;

/// Minimises `Σᵢ ωᵢ CE(s·xᵢ W + b) / Σω + ‖W‖² / (2 C Σω)` over the rows that `used` marks: the
/// dual problem's objective in its own coordinates (`W` acts on the features scaled by `s`).
pub struct Primal<'a> {
    pub x: &'a Samples,
    pub scale: f64,
    pub weights: &'a [f64],
    pub classes: usize,
    /// Rows that take part (all when `None`).
    pub used: Option<&'a [bool]>,
}

/// One group's share of a pass: loss, bias gradient, weight gradient.
struct Partial {
    loss: f64,
    gb: Vec<f64>,
    gw: Vec<f32>,
}

impl Primal<'_> {
    /// Parameters: `W` (`[d, classes]`, row-major) then `b` (`[classes]`).
    pub fn params(&self) -> usize {
        (self.x.dim() + 1) * self.classes
    }

    fn uses(&self, i: usize) -> bool {
        self.used.is_none_or(|u| u[i])
    }

    fn total_weight(&self) -> f64 {
        (0..self.x.len())
            .filter(|&i| self.uses(i))
            .map(|i| self.weights[i])
            .sum()
    }

    /// `s·W` as f32, the matrix the blocks are multiplied with.
    fn scaled(&self, p: &[f64]) -> Vec<f32> {
        p[..self.x.dim() * self.classes]
            .iter()
            .map(|&w| (w * self.scale) as f32)
            .collect()
    }

    /// The row ranges of the groups of a pass (fixed by the shapes alone).
    fn groups(&self) -> Vec<(usize, usize)> {
        let n = self.x.len();
        let per_group = (self.x.dim() * self.classes * 4).max(1);
        let count = (PARTIALS_BYTES / per_group).clamp(1, GROUPS);
        let size = n.div_ceil(count).max(BLOCK_ROWS);
        (0..n)
            .step_by(size)
            .map(|a| (a, (a + size).min(n)))
            .collect()
    }

    /// Logits `[rows, classes]` of the rows in `x`, without the bias (f32 products).
    fn block_logits(&self, x: &[f32], w: &[f32], z: &mut Vec<f32>) {
        let (d, k) = (self.x.dim(), self.classes);
        let r = x.len() / d;
        z.resize(r * k, 0.0);
        matmul_on(
            MatRef::new(x, r, d),
            MatRef::new(w, d, k),
            z,
            false,
            Threads::One,
        );
    }

    /// One group's loss and gradient (rows `range`), weights `w = s·W`, normalised by `total`.
    fn group_partial(&self, range: (usize, usize), w: &[f32], bias: &[f64], total: f64) -> Partial {
        let (d, k) = (self.x.dim(), self.classes);
        let labels = self.x.labels();
        let mut out = Partial {
            loss: 0.0,
            gb: vec![0.0; k],
            gw: vec![0.0; d * k],
        };
        let (mut z, mut g) = (Vec::new(), Vec::new());
        let (mut zi, mut gi) = (vec![0f64; k], vec![0f64; k]);
        for first in (range.0..range.1).step_by(BLOCK_ROWS) {
            let r = BLOCK_ROWS.min(range.1 - first);
            let x = self.x.block(first, r);
            self.block_logits(&x, w, &mut z);
            g.resize(r * k, 0f32);
            for i in 0..r {
                let gr = &mut g[i * k..(i + 1) * k];
                if !self.uses(first + i) {
                    gr.fill(0.0);
                    continue;
                }
                for ((v, &zv), &b) in zi.iter_mut().zip(&z[i * k..(i + 1) * k]).zip(bias) {
                    *v = zv as f64 + b;
                }
                let wi = self.weights[first + i] / total;
                out.loss += wi * cross_entropy_grad(&zi, labels[first + i] as usize, &mut gi);
                for ((o, &gv), acc) in gr.iter_mut().zip(&gi).zip(out.gb.iter_mut()) {
                    *o = (wi * gv) as f32;
                    *acc += wi * gv;
                }
            }
            matmul_on(
                MatRef::t(&x, r, d),
                MatRef::new(&g, r, k),
                &mut out.gw,
                true,
                Threads::One,
            );
        }
        out
    }

    /// The objective at `p` for C = `c`, its gradient written to `grad`; one pass over the rows,
    /// its groups in parallel.
    pub fn eval(&self, c: f64, p: &[f64], grad: &mut [f64]) -> f64 {
        let (d, k) = (self.x.dim(), self.classes);
        let w = self.scaled(p);
        let bias = &p[d * k..];
        let total = self.total_weight();
        let partials: Vec<Partial> = self
            .groups()
            .into_par_iter()
            .map(|range| self.group_partial(range, &w, bias, total))
            .collect();
        let mut gw = vec![0f64; d * k];
        let mut gb = vec![0f64; k];
        let mut loss = 0.0;
        for part in &partials {
            loss += part.loss;
            gb.iter_mut().zip(&part.gb).for_each(|(a, &v)| *a += v);
            gw.iter_mut()
                .zip(&part.gw)
                .for_each(|(a, &v)| *a += v as f64);
        }
        let lambda = 1.0 / (c * total);
        let mut penalty = 0.0;
        for ((o, &gv), &wv) in grad.iter_mut().zip(&gw).zip(&p[..d * k]) {
            *o = self.scale * gv + lambda * wv;
            penalty += wv * wv;
        }
        grad[d * k..].copy_from_slice(&gb);
        loss + 0.5 * lambda * penalty
    }

    /// The rows that `used` leaves out (every row when `None`) and their logits
    /// `[rows, classes]`.
    pub fn held_logits(&self, p: &[f64]) -> (Vec<usize>, Vec<f64>) {
        let (d, k) = (self.x.dim(), self.classes);
        let w = self.scaled(p);
        let bias = &p[d * k..];
        let held = |i: usize| self.used.is_none() || !self.uses(i);
        let per_group: Vec<(Vec<usize>, Vec<f64>)> = self
            .groups()
            .into_par_iter()
            .map(|(a, b)| {
                let (mut rows, mut out, mut z) = (Vec::new(), Vec::new(), Vec::new());
                for first in (a..b).step_by(BLOCK_ROWS) {
                    let r = BLOCK_ROWS.min(b - first);
                    self.block_logits(&self.x.block(first, r), &w, &mut z);
                    for i in (0..r).filter(|&i| held(first + i)) {
                        rows.push(first + i);
                        let zi = &z[i * k..(i + 1) * k];
                        out.extend(zi.iter().zip(bias).map(|(&v, &b)| v as f64 + b));
                    }
                }
                (rows, out)
            })
            .collect();
        let (mut rows, mut out) = (Vec::new(), Vec::new());
        for (r, o) in per_group {
            rows.extend(r);
            out.extend(o);
        }
        (rows, out)
    }

    /// L-BFGS from `p` (updated in place): how it ended and the passes over the rows it took.
    pub fn minimize(&self, c: f64, p: &mut [f64], stop: Stop) -> (Outcome, usize) {
        let mut passes = 0;
        let outcome = minimize(p, stop, &mut |x, g| {
            passes += 1;
            self.eval(c, x, g)
        });
        (outcome, passes)
    }
}

/// What the primal fit chose.
pub struct PrimalFit {
    /// Weights on the unscaled features, `[d, classes]`, divided by the temperature.
    pub w: Mat,
    pub bias: Vec<f64>,
    pub best: usize,
    pub temperature: f64,
    pub path: Vec<PathPoint>,
    /// The final fit's end.
    pub outcome: Outcome,
    /// Passes over the rows, all fits together.
    pub passes: usize,
}

/// Stopping rule of each fit: at most `max_iter` L-BFGS steps (scikit-learn's default is 100).
fn stop(max_iter: usize) -> Stop {
    Stop {
        grad_tol: 1e-6,
        rel_tol: 1e-9,
        max_iter,
    }
}

/// Steps of each fit along the C path (warm-started from the previous C) and of the final fit.
const PATH_STEPS: usize = 100;
const FINAL_STEPS: usize = 200;

/// C values tried past the best one before the path stops (the held-out loss along C rises on
/// both sides of its minimum; this saves the passes of the weakest penalties).
const PAST_BEST: usize = 2;

/// Fits the C values of `grid` (ascending, warm-started) on the rows outside fold 0, scores
/// fold 0, and stops [`PAST_BEST`] values after the best; then refits the best C on every row.
pub fn fit(
    x: &Samples,
    scale: f64,
    weights: &[f64],
    classes: usize,
    grid: &[f64],
    fold_of: &[usize],
) -> Result<PrimalFit> {
    let used: Vec<bool> = fold_of.iter().map(|&f| f != 0).collect();
    let part = Primal {
        x,
        scale,
        weights,
        classes,
        used: Some(&used),
    };
    let mut p = vec![0.0; part.params()];
    let mut path = Vec::with_capacity(grid.len());
    let mut best: Option<(usize, Vec<f64>, Vec<f64>)> = None;
    let (mut held_rows, mut passes) = (Vec::new(), 0);
    for (ci, &c) in grid.iter().enumerate() {
        if best.as_ref().is_some_and(|b| ci > b.0 + PAST_BEST) {
            break;
        }
        passes += part.minimize(c, &mut p, stop(PATH_STEPS)).1 + 1;
        let (held, logits) = part.held_logits(&p);
        let y: Vec<u32> = held.iter().map(|&i| x.labels()[i]).collect();
        let w: Vec<f64> = held.iter().map(|&i| weights[i]).collect();
        let (log_loss, accuracy) = score(&logits, &y, &w, classes, 1.0);
        path.push(PathPoint {
            c,
            log_loss,
            accuracy,
        });
        if best.is_none() || path.iter().all(|q| log_loss <= q.log_loss) {
            best = Some((ci, p.clone(), logits));
        }
        held_rows = held;
    }
    let (best, mut p, logits) =
        best.ok_or_else(|| Error::Invalid("the probe's C grid is empty".into()))?;
    let y: Vec<u32> = held_rows.iter().map(|&i| x.labels()[i]).collect();
    let w: Vec<f64> = held_rows.iter().map(|&i| weights[i]).collect();
    let temperature = fit_temperature(&logits, &y, &w, classes).max(1.0);
    let all = Primal { used: None, ..part };
    let (outcome, last) = all.minimize(grid[best], &mut p, stop(FINAL_STEPS));
    let d = x.dim();
    let factor = scale / temperature;
    let w = Mat {
        rows: d,
        cols: classes,
        data: p[..d * classes].iter().map(|v| v * factor).collect(),
    };
    let bias = p[d * classes..].iter().map(|b| b / temperature).collect();
    Ok(PrimalFit {
        w,
        bias,
        best,
        temperature,
        path,
        outcome,
        passes: passes + last,
    })
}
