//! The one matrix-product backend of the workspace's hand-written networks: `f32` products on
//! row-major slices through the `gemm` crate (the crate Candle's CPU matmul uses, called the same
//! way), with either operand read transposed through its strides, so no transposed copy is made.
//! Results do not depend on the thread count.

use gemm::Parallelism;

/// A row-major `rows × cols` matrix view, optionally read as its transpose.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Use the transpose (`cols × rows`) of the stored matrix.
    pub t: bool,
}

impl<'a> MatRef<'a> {
    /// The stored matrix as is.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            t: false,
        }
    }

    /// The transpose of the stored matrix.
    pub fn t(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            t: true,
        }
    }

    /// `(rows, cols)` as seen by the product.
    pub fn shape(&self) -> (usize, usize) {
        if self.t {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// `(column stride, row stride)` as seen by the product.
    fn strides(&self) -> (isize, isize) {
        if self.t {
            (self.cols as isize, 1)
        } else {
            (1, self.cols as isize)
        }
    }
}

/// How many threads one product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only (callers that already run one product per core).
    One,
    /// Rayon's threads, as many as Candle would use (`RAYON_NUM_THREADS`, else the cores).
    All,
}

impl Threads {
    fn parallelism(self) -> Parallelism {
        match self {
            Threads::One => Parallelism::None,
            Threads::All => match candle_core::utils::get_num_threads() {
                0 | 1 => Parallelism::None,
                n => Parallelism::Rayon(n),
            },
        }
    }
}

/// `c = a·b` (or `c += a·b` when `accumulate`) on the calling thread, `c` row-major `m × n`.
///
/// Panics when the shapes disagree or a buffer is too short (internal invariant: every caller
/// builds its buffers from the same shapes).
pub fn matmul(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], accumulate: bool) {
    matmul_on(a, b, c, accumulate, Threads::One)
}

/// A new `m × n` matrix `a·b` computed on `threads`.
pub fn product(a: MatRef<'_>, b: MatRef<'_>, threads: Threads) -> Vec<f32> {
    let (m, n) = (a.shape().0, b.shape().1);
    let mut c = vec![0f32; m * n];
    matmul_on(a, b, &mut c, false, threads);
    c
}

/// `c = a·b` (or `c += a·b` when `accumulate`) on `threads`.
///
/// Panics like [`matmul`].
pub fn matmul_on(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], accumulate: bool, threads: Threads) {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    assert_eq!(k, k2, "matmul: inner dimensions differ");
    assert!(a.data.len() >= a.rows * a.cols && b.data.len() >= b.rows * b.cols);
    assert!(c.len() >= m * n, "matmul: output buffer too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let (a_cs, a_rs) = a.strides();
    let (b_cs, b_rs) = b.strides();
    // SAFETY: the asserts above guarantee that every index the strides reach lies inside the
    // slices (a: m×k, b: k×n, c: m×n, all row-major or transposed row-major views).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            // dst = alpha·dst + beta·a·b; alpha is read only when accumulating (Candle passes 0).
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            threads.parallelism(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0f32; x.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn products_match_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.71).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-5);
        let mut c = vec![9f32; m * n];
        matmul(MatRef::new(&a, m, k), MatRef::new(&b, k, n), &mut c, false);
        assert!(close(&c, &want));
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        let mut c2 = vec![0f32; m * n];
        matmul(MatRef::t(&at, k, m), MatRef::t(&bt, n, k), &mut c2, false);
        assert!(close(&c2, &want));
        matmul(MatRef::new(&a, m, k), MatRef::t(&bt, n, k), &mut c2, true);
        let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
        assert!(close(&c2, &twice));
    }
}
