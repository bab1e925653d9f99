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

/// Rows of one block when the weights `[d, classes]` outgrow [`CACHED_WEIGHTS`] (many classes):
/// every block reads all the weights twice, so blocks carry more rows to pay for that.
const WIDE_BLOCK_ROWS: usize = 256;

/// Bytes of f32 weights up to which [`BLOCK_ROWS`] rows make a block.
const CACHED_WEIGHTS: usize = 1 << 20;

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

    /// Rows of one block (fixed by the shapes alone).
    fn block_rows(&self) -> usize {
        if self.x.dim() * self.classes * 4 > CACHED_WEIGHTS {
            WIDE_BLOCK_ROWS
        } else {
            BLOCK_ROWS
        }
    }

    /// Multiply-adds of one pass (the forward and the backward product of every row).
    pub fn work_per_pass(&self) -> f64 {
        2.0 * self.x.len() as f64 * self.x.dim() as f64 * self.classes as f64
    }

    /// The row ranges of the groups of a pass (fixed by the shapes alone).
    fn groups(&self) -> Vec<(usize, usize)> {
        let n = self.x.len();
        let per_group = (self.x.dim() * self.classes * 4).max(1);
        let count = (PARTIALS_BYTES / per_group).clamp(1, GROUPS);
        let size = n.div_ceil(count).max(self.block_rows());
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
        let block = self.block_rows();
        // With wide blocks (many classes) the rows left out are not multiplied at all: the rows
        // that take part are gathered into the blocks. Narrow blocks keep every row in place.
        let rows: Vec<usize> = if self.used.is_some() && block == WIDE_BLOCK_ROWS {
            (range.0..range.1).filter(|&i| self.uses(i)).collect()
        } else {
            (range.0..range.1).collect()
        };
        let mut gathered = Vec::new();
        for chunk in rows.chunks(block) {
            let (first, r) = (chunk[0], chunk.len());
            let in_place;
            let x: &[f32] = if chunk[r - 1] - first + 1 == r {
                in_place = self.x.block(first, r);
                &in_place
            } else {
                gathered.clear();
                for &i in chunk {
                    gathered.extend_from_slice(self.x.row(i));
                }
                &gathered
            };
            self.block_logits(x, w, &mut z);
            g.resize(r * k, 0f32);
            for (i, &row) in chunk.iter().enumerate() {
                let gr = &mut g[i * k..(i + 1) * k];
                if !self.uses(row) {
                    gr.fill(0.0);
                    continue;
                }
                for ((v, &zv), &b) in zi.iter_mut().zip(&z[i * k..(i + 1) * k]).zip(bias) {
                    *v = zv as f64 + b;
                }
                let wi = self.weights[row] / total;
                out.loss += wi * cross_entropy_grad(&zi, labels[row] as usize, &mut gi);
                for ((o, &gv), acc) in gr.iter_mut().zip(&gi).zip(out.gb.iter_mut()) {
                    *o = (wi * gv) as f32;
                    *acc += wi * gv;
                }
            }
            matmul_on(
                MatRef::t(x, r, d),
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
        let block = self.block_rows();
        let per_group: Vec<(Vec<usize>, Vec<f64>)> = self
            .groups()
            .into_par_iter()
            .map(|(a, b)| {
                let (mut rows, mut out, mut z) = (Vec::new(), Vec::new(), Vec::new());
                for first in (a..b).step_by(block) {
                    let r = block.min(b - first);
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
    /// The held-out rows (fold 0) and their logits at the chosen C, before the temperature.
    pub held: Vec<usize>,
    pub held_logits: Vec<f64>,
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
pub const PATH_STEPS: usize = 100;
pub const FINAL_STEPS: usize = 200;

/// Fewest steps of one fit along the C path when [`ROW_WORK_BUDGET`] cuts them.
pub const MIN_STEPS: usize = 20;

/// Multiply-adds per training row the streamed probe may plan for (every pass of the C path and
/// of the final fit at their step limits, `2 × features × classes` per row and pass). It cuts the
/// step limits only when a pass is expensive per row — many classes × features, such as 1,000
/// classes of 2,048 features (20 steps per C, the floor) — and leaves them at [`PATH_STEPS`] and
/// [`FINAL_STEPS`] for a few classes whatever the rows (their time grows with the rows, as
/// documented).
pub const ROW_WORK_BUDGET: f64 = 1.0e9;

/// Step limits of the streamed fits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Steps {
    /// Each C along the path (warm-started from the previous one).
    pub path: usize,
    /// The final fit of the chosen C on every row.
    pub last: usize,
}

impl Steps {
    /// The limits for `values` values of C on rows of `dim` features and `classes` classes: the
    /// defaults while the planned passes fit [`ROW_WORK_BUDGET`], else fewer (at least
    /// [`MIN_STEPS`] per C, twice that for the final fit).
    pub fn for_shape(dim: usize, classes: usize, values: usize) -> Steps {
        let per_row = 2.0 * dim as f64 * classes as f64;
        let passes = ROW_WORK_BUDGET / per_row.max(1.0);
        let per_fit = passes / (values + 2) as f64;
        let path = if per_fit >= PATH_STEPS as f64 {
            PATH_STEPS
        } else {
            (per_fit as usize).max(MIN_STEPS)
        };
        Steps {
            path,
            last: (2 * path).min(FINAL_STEPS),
        }
    }

    /// True when the budget cut the limits below the defaults.
    pub fn cut(&self) -> bool {
        self.path < PATH_STEPS
    }
}

/// What the streamed fit reports as it goes.
pub enum Progress<'a> {
    /// Value `index` of C was fitted on the training part and scored on the held-out fold.
    Scored {
        index: usize,
        point: &'a PathPoint,
        /// Passes over the rows so far.
        passes: usize,
    },
    /// The path stopped; the chosen C is refitted on every row.
    Refit { c: f64 },
}

/// C values tried past the best one before the path stops (the held-out loss along C rises on
/// both sides of its minimum; this saves the passes of the weakest penalties).
pub const PAST_BEST: usize = 2;

/// Fits the C values of `grid` (ascending, warm-started) on the rows outside fold 0, scores
/// fold 0, and stops [`PAST_BEST`] values after the best; then refits the best C on every row.
/// Each fit takes at most `steps` L-BFGS steps; `progress` hears of every value of C.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    x: &Samples,
    scale: f64,
    weights: &[f64],
    classes: usize,
    grid: &[f64],
    fold_of: &[usize],
    steps: Steps,
    progress: &mut dyn FnMut(Progress<'_>),
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
        passes += part.minimize(c, &mut p, stop(steps.path)).1 + 1;
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
        if let Some(point) = path.last() {
            progress(Progress::Scored {
                index: ci,
                point,
                passes,
            });
        }
    }
    let (best, mut p, logits) =
        best.ok_or_else(|| Error::Invalid("the probe's C grid is empty".into()))?;
    let y: Vec<u32> = held_rows.iter().map(|&i| x.labels()[i]).collect();
    let w: Vec<f64> = held_rows.iter().map(|&i| weights[i]).collect();
    let temperature = fit_temperature(&logits, &y, &w, classes).max(1.0);
    let all = Primal { used: None, ..part };
    progress(Progress::Refit { c: grid[best] });
    let (outcome, last) = all.minimize(grid[best], &mut p, stop(steps.last));
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
        held: held_rows,
        held_logits: logits,
    })
}
