//! The multinomial logistic regression objective in Cholesky coordinates: with `K = L Lᵀ` the
//! Gram matrix of the training rows, weights `W = Xᵀ L⁻ᵀ B` give logits `L B + b` and
//! `‖W‖² = ‖B‖²`, so the L2-penalised problem over `d` features becomes an equally conditioned one
//! over `n` coordinates (exact whenever `n ≤ d`, as with a few hundred photos per class).

use super::linalg::{lower_mul, lower_t_mul, solve_lower_t, Mat};

/// One L2-penalised softmax regression problem: minimise
/// `Σᵢ ωᵢ CE(L B + b)ᵢ / Σω + ‖B‖² / (2 C Σω)`.
pub struct Problem<'a> {
    pub l: &'a Mat,
    pub labels: &'a [u32],
    pub weights: &'a [f64],
    pub classes: usize,
    total_weight: f64,
}

impl<'a> Problem<'a> {
    pub fn new(l: &'a Mat, labels: &'a [u32], weights: &'a [f64], classes: usize) -> Self {
        Problem {
            l,
            labels,
            weights,
            classes,
            total_weight: weights.iter().sum(),
        }
    }

    /// Length of the parameter vector: `B` (`[n, classes]`, row-major) then `b` (`[classes]`).
    pub fn params(&self) -> usize {
        (self.l.rows + 1) * self.classes
    }

    /// The objective at `p` for penalty `1/c`, writing its gradient to `grad`.
    pub fn eval(&self, c: f64, p: &[f64], grad: &mut [f64]) -> f64 {
        let (n, k) = (self.l.rows, self.classes);
        let b = Mat {
            rows: n,
            cols: k,
            data: p[..n * k].to_vec(),
        };
        let bias = &p[n * k..];
        let mut z = Mat::zeros(n, k);
        lower_mul(self.l, &b, &mut z);
        let mut g = Mat::zeros(n, k);
        let mut loss = 0.0;
        for i in 0..n {
            let zi = &mut z.data[i * k..(i + 1) * k];
            zi.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            let w = self.weights[i] / self.total_weight;
            let y = self.labels[i] as usize;
            loss += w * cross_entropy_grad(zi, y, &mut g.data[i * k..(i + 1) * k]);
            g.data[i * k..(i + 1) * k].iter_mut().for_each(|v| *v *= w);
        }
        let mut gb = Mat::zeros(n, k);
        lower_t_mul(self.l, &g, &mut gb);
        let lambda = 1.0 / (c * self.total_weight);
        let mut penalty = 0.0;
        for ((o, &gv), &bv) in grad[..n * k].iter_mut().zip(&gb.data).zip(&b.data) {
            *o = gv + lambda * bv;
            penalty += bv * bv;
        }
        for (j, o) in grad[n * k..].iter_mut().enumerate() {
            *o = (0..n).map(|i| g.data[i * k + j]).sum();
        }
        loss + 0.5 * lambda * penalty
    }

    /// `M = L⁻ᵀ B`: the fitted weights are `Xᵀ M`, and rows whose Gram products with the training
    /// rows are `k` get logits `k M + b`.
    pub fn dual_coefficients(&self, p: &[f64]) -> Mat {
        let (n, k) = (self.l.rows, self.classes);
        let b = Mat {
            rows: n,
            cols: k,
            data: p[..n * k].to_vec(),
        };
        solve_lower_t(self.l, &b)
    }
}

/// Softmax cross-entropy of `logits` for class `y`; writes `softmax − onehot` to `grad`.
pub fn cross_entropy_grad(logits: &[f64], y: usize, grad: &mut [f64]) -> f64 {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|z| (z - m).exp()).sum();
    let lse = m + sum.ln();
    for (j, (g, z)) in grad.iter_mut().zip(logits).enumerate() {
        *g = (z - lse).exp() - if j == y { 1.0 } else { 0.0 };
    }
    lse - logits[y]
}

/// Softmax cross-entropy of `logits` for class `y`.
pub fn cross_entropy(logits: &[f64], y: usize) -> f64 {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|z| (z - m).exp()).sum();
    m + sum.ln() - logits[y]
}

/// Index of the largest logit.
pub fn argmax(logits: &[f64]) -> usize {
    let mut best = 0;
    for (j, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = j;
        }
    }
    best
}
