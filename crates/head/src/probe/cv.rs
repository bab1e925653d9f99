//! Choosing the probe's regularisation by stratified k-fold cross-validation on the training
//! split only (warm-started along the C path), and its temperature on the out-of-fold logits.

use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::lbfgs::{minimize, Stop};
use super::linalg::{cholesky, Mat};
use super::objective::{argmax, cross_entropy, Problem};
use crate::error::Result;

/// Out-of-fold numbers of one C.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathPoint {
    pub c: f64,
    /// Class-weighted mean log loss of the out-of-fold predictions.
    pub log_loss: f64,
    pub accuracy: f64,
}

/// The cross-validation result.
#[derive(Clone, Debug)]
pub struct CvResult {
    pub path: Vec<PathPoint>,
    pub best: usize,
    /// Out-of-fold logits at the best C, `[n, classes]` row-major.
    pub oof_logits: Vec<f64>,
}

/// Fold index of every sample: each class's samples are shuffled (seeded) and dealt round-robin.
pub fn stratified_folds(labels: &[u32], classes: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut rng = runfs::seed::plain(seed, 7);
    let mut fold = vec![0; labels.len()];
    for c in 0..classes as u32 {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        idx.shuffle(&mut rng);
        for (p, i) in idx.into_iter().enumerate() {
            fold[i] = p % folds;
        }
    }
    fold
}

/// The training samples as cross-validation sees them.
pub struct Folds<'a> {
    /// Gram matrix of all training rows.
    pub gram: &'a Mat,
    pub labels: &'a [u32],
    /// Per-sample weights (balanced class weights).
    pub weights: &'a [f64],
    pub classes: usize,
    /// Fold of every sample, in `0..count`.
    pub fold_of: &'a [usize],
    pub count: usize,
}

/// Held-out sample indices of one fold and their logits for every C.
type FoldLogits = (Vec<usize>, Vec<Vec<f64>>);

/// Fits every C of `grid` (ascending) on each fold's training part and scores the held-out part;
/// `fitted` is called (from any thread) after each of the `count × grid.len()` fits, for progress.
pub fn cross_validate(
    f: &Folds<'_>,
    grid: &[f64],
    stop: Stop,
    fitted: &(dyn Fn() + Sync),
) -> Result<CvResult> {
    let (labels, weights, classes) = (f.labels, f.weights, f.classes);
    let n = labels.len();
    let per_fold: Vec<Result<FoldLogits>> = (0..f.count)
        .into_par_iter()
        .map(|k| fold_logits(f, k, grid, stop, fitted))
        .collect();
    let mut oof = vec![vec![0.0; n * classes]; grid.len()];
    for r in per_fold {
        let (held, logits) = r?;
        for (per_c, z) in oof.iter_mut().zip(logits) {
            for (r, &i) in held.iter().enumerate() {
                per_c[i * classes..(i + 1) * classes]
                    .copy_from_slice(&z[r * classes..(r + 1) * classes]);
            }
        }
    }
    let path: Vec<PathPoint> = grid
        .iter()
        .zip(&oof)
        .map(|(&c, z)| {
            let (log_loss, accuracy) = score(z, labels, weights, classes, 1.0);
            PathPoint {
                c,
                log_loss,
                accuracy,
            }
        })
        .collect();
    let best = (0..path.len())
        .min_by(|&a, &b| path[a].log_loss.total_cmp(&path[b].log_loss))
        .unwrap_or(0);
    Ok(CvResult {
        path,
        best,
        oof_logits: oof.swap_remove(best),
    })
}

/// Fits fold `k`'s training part along `grid` (warm-started) and returns its held-out logits.
fn fold_logits(
    f: &Folds<'_>,
    k: usize,
    grid: &[f64],
    stop: Stop,
    fitted: &(dyn Fn() + Sync),
) -> Result<FoldLogits> {
    let n = f.labels.len();
    let train: Vec<usize> = (0..n).filter(|&i| f.fold_of[i] != k).collect();
    let held: Vec<usize> = (0..n).filter(|&i| f.fold_of[i] == k).collect();
    let l = cholesky(&f.gram.select(&train, &train))?;
    let cross = f.gram.select(&held, &train);
    let y: Vec<u32> = train.iter().map(|&i| f.labels[i]).collect();
    let w: Vec<f64> = train.iter().map(|&i| f.weights[i]).collect();
    let problem = Problem::new(&l, &y, &w, f.classes);
    let mut p = vec![0.0; problem.params()];
    let mut logits = Vec::with_capacity(grid.len());
    for &c in grid {
        minimize(&mut p, stop, &mut |x, g| problem.eval(c, x, g));
        logits.push(held_logits(&problem, &p, &cross));
        fitted();
    }
    Ok((held, logits))
}

/// Logits of held-out rows whose Gram products with the training rows are `cross`.
pub fn held_logits(problem: &Problem<'_>, p: &[f64], cross: &Mat) -> Vec<f64> {
    let k = problem.classes;
    let m = problem.dual_coefficients(p);
    let mut z = cross.matmul(&m);
    let bias = &p[problem.l.rows * k..];
    for row in z.data.chunks_mut(k) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
    z.data
}

/// Weighted mean log loss and plain accuracy of `logits / temperature`.
pub fn score(
    logits: &[f64],
    labels: &[u32],
    weights: &[f64],
    classes: usize,
    temperature: f64,
) -> (f64, f64) {
    let (mut loss, mut total, mut right) = (0.0, 0.0, 0usize);
    let mut z = vec![0.0; classes];
    for (i, &y) in labels.iter().enumerate() {
        for (zj, v) in z.iter_mut().zip(&logits[i * classes..(i + 1) * classes]) {
            *zj = v / temperature;
        }
        loss += weights[i] * cross_entropy(&z, y as usize);
        total += weights[i];
        right += usize::from(argmax(&z) == y as usize);
    }
    (loss / total, right as f64 / labels.len().max(1) as f64)
}

/// The temperature in `[1/20, 20]` that minimises the weighted log loss of `logits / T`
/// (golden-section search on `ln T`; the loss is unimodal in `T`).
pub fn fit_temperature(logits: &[f64], labels: &[u32], weights: &[f64], classes: usize) -> f64 {
    let loss = |t: f64| score(logits, labels, weights, classes, t.exp()).0;
    let (mut a, mut b) = (-(20f64.ln()), 20f64.ln());
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - r * (b - a), a + r * (b - a));
    let (mut fc, mut fd) = (loss(c), loss(d));
    for _ in 0..80 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - r * (b - a);
            fc = loss(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + r * (b - a);
            fd = loss(d);
        }
    }
    (0.5 * (a + b)).exp()
}
