//! Dense f64 linear algebra for the probe: the Gram matrix of feature rows, a jittered Cholesky
//! factorisation, triangular products and solves. Row-major, no external BLAS.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// A row-major matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    /// The sub-matrix of rows `ri` and columns `ci`.
    pub fn select(&self, ri: &[usize], ci: &[usize]) -> Mat {
        let mut out = Mat::zeros(ri.len(), ci.len());
        for (o, &i) in ri.iter().enumerate() {
            let row = self.row(i);
            for (p, &j) in ci.iter().enumerate() {
                out.data[o * ci.len() + p] = row[j];
            }
        }
        out
    }

    /// `self · b` for a `[cols, k]` matrix `b`.
    pub fn matmul(&self, b: &Mat) -> Mat {
        let k = b.cols;
        let mut out = Mat::zeros(self.rows, k);
        out.data
            .par_chunks_mut(k.max(1))
            .enumerate()
            .for_each(|(i, o)| {
                for (j, &a) in self.row(i).iter().enumerate() {
                    if a != 0.0 {
                        for (o, &bv) in o.iter_mut().zip(b.row(j)) {
                            *o += a * bv;
                        }
                    }
                }
            });
        out
    }
}

/// `X Xᵀ` in f64 for `n` rows of `dim` f32 values, each multiplied by `scale` first. Computed in
/// column blocks so the f64 copy stays small.
pub fn gram(x: &[f32], n: usize, dim: usize, scale: f64) -> Result<Mat> {
    const BLOCK: usize = 2048;
    let mut k = Tensor::zeros((n, n), candle_core::DType::F64, &Device::Cpu)?;
    let mut start = 0;
    while start < dim {
        let w = BLOCK.min(dim - start);
        let mut block = Vec::with_capacity(n * w);
        for i in 0..n {
            let row = &x[i * dim + start..i * dim + start + w];
            block.extend(row.iter().map(|&v| v as f64 * scale));
        }
        let b = Tensor::from_vec(block, (n, w), &Device::Cpu)?;
        k = (k + b.matmul(&b.t()?)?)?;
        start += w;
    }
    let data = k.flatten_all()?.to_vec1::<f64>()?;
    // Exact symmetry (the blocked products are symmetric up to rounding).
    let mut m = Mat {
        rows: n,
        cols: n,
        data,
    };
    for i in 0..n {
        for j in 0..i {
            let v = 0.5 * (m.data[i * n + j] + m.data[j * n + i]);
            m.data[i * n + j] = v;
            m.data[j * n + i] = v;
        }
    }
    Ok(m)
}

/// The lower Cholesky factor `L` of `a + εI` (`L Lᵀ = a + εI`), with the smallest jitter ε of
/// `1e-10, 1e-8, …, 1e-2` times the mean diagonal that makes the factorisation succeed.
pub fn cholesky(a: &Mat) -> Result<Mat> {
    let n = a.rows;
    let mean_diag = (0..n).map(|i| a.at(i, i)).sum::<f64>() / n.max(1) as f64;
    if !(mean_diag.is_finite() && mean_diag > 0.0) {
        return Err(Error::Data(
            "the training features are all zero (or not finite): nothing to learn from".into(),
        ));
    }
    let mut jitter = 1e-10;
    while jitter <= 1e-2 {
        if let Some(l) = try_cholesky(a, jitter * mean_diag) {
            return Ok(l);
        }
        jitter *= 100.0;
    }
    Err(Error::Data(
        "the training features are degenerate (their Gram matrix is not positive definite)".into(),
    ))
}

fn try_cholesky(a: &Mat, eps: f64) -> Option<Mat> {
    let n = a.rows;
    let mut l = Mat::zeros(n, n);
    for j in 0..n {
        let (done, rest) = l.data.split_at_mut((j + 1) * n);
        let lj = &mut done[j * n..j * n + n];
        let d = a.at(j, j) + eps - dot(&lj[..j], &lj[..j]);
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let djj = d.sqrt();
        lj[j] = djj;
        let lj = &*lj;
        rest.par_chunks_mut(n).enumerate().for_each(|(r, li)| {
            let i = j + 1 + r;
            li[j] = (a.at(i, j) - dot(&li[..j], &lj[..j])) / djj;
        });
    }
    Some(l)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `L · b` for lower-triangular `l` (`[n, n]`) and `b` (`[n, k]`).
pub fn lower_mul(l: &Mat, b: &Mat, out: &mut Mat) {
    let k = b.cols;
    out.data
        .par_chunks_mut(k.max(1))
        .enumerate()
        .for_each(|(i, o)| {
            o.iter_mut().for_each(|v| *v = 0.0);
            for (j, &a) in l.row(i)[..=i].iter().enumerate() {
                for (o, &bv) in o.iter_mut().zip(b.row(j)) {
                    *o += a * bv;
                }
            }
        });
}

/// `Lᵀ · g` for lower-triangular `l` (`[n, n]`) and `g` (`[n, k]`).
pub fn lower_t_mul(l: &Mat, g: &Mat, out: &mut Mat) {
    let k = g.cols;
    out.data.iter_mut().for_each(|v| *v = 0.0);
    for i in 0..l.rows {
        let gi = g.row(i);
        for (j, &a) in l.row(i)[..=i].iter().enumerate() {
            let o = &mut out.data[j * k..(j + 1) * k];
            for (o, &gv) in o.iter_mut().zip(gi) {
                *o += a * gv;
            }
        }
    }
}

/// Solves `Lᵀ m = b` for `m` (back substitution), `l` lower-triangular.
pub fn solve_lower_t(l: &Mat, b: &Mat) -> Mat {
    let (n, k) = (l.rows, b.cols);
    let mut m = b.clone();
    for j in (0..n).rev() {
        let d = l.at(j, j);
        for c in 0..k {
            m.data[j * k + c] /= d;
        }
        // Subtract this row's contribution from every earlier unknown: m[i] -= L[j][i] m[j].
        let (head, tail) = m.data.split_at_mut(j * k);
        let mj = &tail[..k];
        for (i, &lji) in l.row(j)[..j].iter().enumerate() {
            if lji != 0.0 {
                for (o, &v) in head[i * k..(i + 1) * k].iter_mut().zip(mj) {
                    *o -= lji * v;
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> Mat {
        let x: Vec<f32> = (0..n * (n + 3))
            .map(|i| ((i * 7919 % 101) as f32) / 50.0 - 1.0)
            .collect();
        gram(&x, n, n + 3, 1.0).unwrap()
    }

    #[test]
    fn cholesky_reconstructs_and_solves() {
        let a = spd(7);
        let l = cholesky(&a).unwrap();
        for i in 0..7 {
            for j in 0..7 {
                let v: f64 = (0..7).map(|p| l.at(i, p) * l.at(j, p)).sum();
                assert!((v - a.at(i, j)).abs() < 1e-8 * (1.0 + a.at(i, j).abs()));
            }
        }
        let b = Mat {
            rows: 7,
            cols: 2,
            data: (0..14).map(|i| i as f64 - 3.0).collect(),
        };
        let m = solve_lower_t(&l, &b);
        let mut back = Mat::zeros(7, 2);
        // Lᵀ m should give b back.
        let lt = Mat {
            rows: 7,
            cols: 7,
            data: (0..49).map(|p| l.at(p % 7, p / 7)).collect(),
        };
        back.data = lt.matmul(&m).data;
        for (x, y) in back.data.iter().zip(&b.data) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        let mut lm = Mat::zeros(7, 2);
        lower_mul(&l, &b, &mut lm);
        assert_eq!(lm.data, l.matmul(&b).data);
        let mut ltg = Mat::zeros(7, 2);
        lower_t_mul(&l, &b, &mut ltg);
        for (x, y) in ltg.data.iter().zip(&lt.matmul(&b).data) {
            assert!((x - y).abs() < 1e-12);
        }
    }
}
