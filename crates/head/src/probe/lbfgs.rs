//! Limited-memory BFGS for smooth convex objectives: two-loop recursion, backtracking (Armijo)
//! line search, stopping on a small gradient or a stalled objective.

use std::collections::VecDeque;

/// When to stop.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    /// Largest absolute gradient entry that counts as converged.
    pub grad_tol: f64,
    /// Relative objective decrease per iteration below which the search has stalled.
    pub rel_tol: f64,
    pub max_iter: usize,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            grad_tol: 1e-6,
            rel_tol: 1e-12,
            max_iter: 1000,
        }
    }
}

/// How a minimisation ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub value: f64,
    pub iterations: usize,
    pub converged: bool,
}

const MEMORY: usize = 10;

/// Minimises `f` from `x` (updated in place). `f(x, grad)` returns the value and writes the
/// gradient.
pub fn minimize(
    x: &mut [f64],
    stop: Stop,
    f: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
) -> Outcome {
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut value = f(x, &mut g);
    let mut pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(MEMORY);
    let mut x_new = vec![0.0; n];
    let mut g_new = vec![0.0; n];
    for iter in 0..stop.max_iter {
        if max_abs(&g) <= stop.grad_tol {
            return Outcome {
                value,
                iterations: iter,
                converged: true,
            };
        }
        let mut d = direction(&g, &pairs);
        let mut slope = dot(&d, &g);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            pairs.clear();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&d, &g);
        }
        let mut step = if pairs.is_empty() {
            1.0 / norm(&g).max(1e-12)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..40 {
            for i in 0..n {
                x_new[i] = x[i] + step * d[i];
            }
            let v = f(&x_new, &mut g_new);
            if v.is_finite() && v <= value + 1e-4 * step * slope {
                accepted = Some(v);
                break;
            }
            step *= 0.5;
        }
        let Some(v) = accepted else {
            return Outcome {
                value,
                iterations: iter,
                converged: false,
            };
        };
        let s: Vec<f64> = (0..n).map(|i| x_new[i] - x[i]).collect();
        let y: Vec<f64> = (0..n).map(|i| g_new[i] - g[i]).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * norm(&s) * norm(&y) {
            if pairs.len() == MEMORY {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / sy));
        }
        x.copy_from_slice(&x_new);
        g.copy_from_slice(&g_new);
        let stalled = (value - v) <= stop.rel_tol * value.abs().max(1e-300);
        value = v;
        if stalled {
            return Outcome {
                value,
                iterations: iter + 1,
                converged: max_abs(&g) <= stop.grad_tol * 10.0,
            };
        }
    }
    Outcome {
        value,
        iterations: stop.max_iter,
        converged: max_abs(&g) <= stop.grad_tol,
    }
}

/// `-H g` by the two-loop recursion over the stored `(s, y, 1/sᵀy)` pairs.
fn direction(g: &[f64], pairs: &VecDeque<(Vec<f64>, Vec<f64>, f64)>) -> Vec<f64> {
    let mut q: Vec<f64> = g.to_vec();
    let mut alpha = vec![0.0; pairs.len()];
    for (k, (s, y, rho)) in pairs.iter().enumerate().rev() {
        alpha[k] = rho * dot(s, &q);
        for (qi, yi) in q.iter_mut().zip(y) {
            *qi -= alpha[k] * yi;
        }
    }
    if let Some((s, y, _)) = pairs.back() {
        let gamma = dot(s, y) / dot(y, y).max(1e-300);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for (k, (s, y, rho)) in pairs.iter().enumerate() {
        let beta = rho * dot(y, &q);
        for (qi, si) in q.iter_mut().zip(s) {
            *qi += (alpha[k] - beta) * si;
        }
    }
    q.iter_mut().for_each(|v| *v = -*v);
    q
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_a_badly_scaled_quadratic_and_rosenbrock() {
        let mut x = vec![3.0, -2.0, 1.0];
        let scales = [1.0, 100.0, 1e4];
        let out = minimize(&mut x, Stop::default(), &mut |x, g| {
            let mut v = 0.0;
            for i in 0..3 {
                v += 0.5 * scales[i] * (x[i] - i as f64).powi(2);
                g[i] = scales[i] * (x[i] - i as f64);
            }
            v
        });
        assert!(out.converged, "{out:?}");
        for (i, xi) in x.iter().enumerate() {
            assert!((xi - i as f64).abs() < 1e-6, "{x:?}");
        }
        let mut x = vec![-1.2, 1.0];
        let out = minimize(&mut x, Stop::default(), &mut |x, g| {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        });
        assert!(out.converged, "{out:?}");
        assert!(
            (x[0] - 1.0).abs() < 1e-4 && (x[1] - 1.0).abs() < 1e-4,
            "{x:?}"
        );
    }
}
