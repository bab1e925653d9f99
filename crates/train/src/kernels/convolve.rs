//! The three products of a 3×3 stride-1 convolution layer on NHWC maps, in a chosen precision:
//! the forward pass, the weight gradient and the input gradient. FP32 materialises the im2col
//! matrix (in a per-thread buffer) and runs the `gemm` crate, the input gradient as column
//! gradients added back by col2im; bf16 runs the direct convolutions of [`super::bf16`]. Weights
//! are the im2col matrix `[9·cin, cout]` in both.

use super::bf16;
use super::conv::{self, Nhwc};
use super::matmul::{matmul_on, MatRef, Threads};
use super::precision::TrainPrecision;

thread_local! {
    /// Per-thread im2col / column-gradient buffer of the FP32 path, reused across calls (fresh
    /// multi-megabyte allocations would cost a page fault per 4 KiB every time).
    static COLS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's column buffer resized to `len` values (contents stale).
fn with_cols<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COLS.with_borrow_mut(|c| {
        if c.len() < len {
            c.resize(len, 0.0);
        }
        f(&mut c[..len])
    })
}

/// How a convolution runs: its arithmetic and how many threads it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub precision: TrainPrecision,
    pub threads: Threads,
}

impl Run {
    pub fn new(precision: TrainPrecision, threads: Threads) -> Run {
        Run { precision, threads }
    }

    /// True when this run uses the bf16 kernels.
    fn bf16(self) -> bool {
        self.precision != TrainPrecision::Fp32
    }
}

/// `out = im2col(x)·w` (`[pixels, cout]`, overwritten) for input `x` of shape `d` with `pad`.
pub fn forward(run: Run, x: &[f32], d: Nhwc, pad: usize, w: &[f32], cout: usize, out: &mut [f32]) {
    let threads = run.threads;
    if run.bf16() {
        bf16::forward(x, d, pad, w, cout, out, threads);
        return;
    }
    let (rows, k) = (d.conv3x3(cout, pad).pixels(), 9 * d.c);
    let wm = MatRef::new(w, k, cout);
    with_cols(rows * k, |cols| {
        conv::im2col3x3(x, d, pad, cols);
        matmul_on(MatRef::new(cols, rows, k), wm, out, false, threads);
    });
}

/// `dw = im2col(x)ᵀ·dz` (`[9·cin, cout]`, overwritten): the weight gradient given the gradient
/// `dz` (`[pixels, cout]`) of the layer's pre-activation output.
pub fn weight_grad(
    run: Run,
    x: &[f32],
    d: Nhwc,
    pad: usize,
    dz: &[f32],
    cout: usize,
    dw: &mut [f32],
) {
    let threads = run.threads;
    if run.bf16() {
        bf16::weight_grad(x, d, pad, dz, cout, dw, threads);
        return;
    }
    let (rows, k) = (d.conv3x3(cout, pad).pixels(), 9 * d.c);
    let dzm = MatRef::new(dz, rows, cout);
    with_cols(rows * k, |cols| {
        conv::im2col3x3(x, d, pad, cols);
        matmul_on(MatRef::t(cols, rows, k), dzm, dw, false, threads);
    });
}

/// `dx` (shape `d`, overwritten): the gradient with respect to the layer's input given `dz`
/// (`[pixels, cout]`) and the weights `w` (`[9·cin, cout]`).
pub fn input_grad(
    run: Run,
    dz: &[f32],
    d: Nhwc,
    pad: usize,
    w: &[f32],
    cout: usize,
    dx: &mut [f32],
) {
    let threads = run.threads;
    if run.bf16() {
        bf16::input_grad(dz, d, pad, w, cout, dx, threads);
        return;
    }
    let od = d.conv3x3(cout, pad);
    let k = 9 * d.c;
    with_cols(od.pixels() * k, |dcols| {
        matmul_on(
            MatRef::new(dz, od.pixels(), cout),
            MatRef::t(w, k, cout),
            dcols,
            false,
            threads,
        );
        dx.fill(0.0);
        conv::col2im3x3(dcols, d, pad, dx);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * seed).sin()).collect()
    }

    fn abs(v: &[f32]) -> Vec<f32> {
        v.iter().map(|x| x.abs()).collect()
    }

    /// The forward output, weight gradient and input gradient of one layer.
    struct Grads {
        y: Vec<f32>,
        dw: Vec<f32>,
        dx: Vec<f32>,
    }

    fn layer(
        p: TrainPrecision,
        x: &[f32],
        d: Nhwc,
        pad: usize,
        w: &[f32],
        dz: &[f32],
        cout: usize,
    ) -> Grads {
        let mut y = vec![7f32; d.conv3x3(cout, pad).len()];
        forward(Run::new(p, Threads::All), x, d, pad, w, cout, &mut y);
        let mut dw = vec![7f32; w.len()];
        weight_grad(Run::new(p, Threads::All), x, d, pad, dz, cout, &mut dw);
        let mut dx = vec![7f32; d.len()];
        input_grad(Run::new(p, Threads::One), dz, d, pad, w, cout, &mut dx);
        Grads { y, dw, dx }
    }

    #[test]
    fn bf16_products_follow_fp32_within_bf16_rounding() {
        if !bf16::available() {
            // CI machines differ: some are AVX2 only (no bf16 kernels to compare).
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        // Same and valid padding, channel counts that do and do not split into pairs evenly.
        for &(n, h, w, c, cout, pad) in &[
            (2, 6, 7, 16, 24, 1),
            (1, 9, 8, 3, 32, 0),
            (2, 5, 5, 5, 7, 0),
        ] {
            let d = Nhwc { n, h, w, c };
            let x = values(d.len(), 0.37);
            let wts = values(9 * c * cout, 0.71);
            let dz = values(d.conv3x3(cout, pad).len(), 0.23);
            let f32s = layer(TrainPrecision::Fp32, &x, d, pad, &wts, &dz, cout);
            let bf16s = layer(TrainPrecision::Bf16, &x, d, pad, &wts, &dz, cout);
            // Σ|a·b| of every output: the same products on absolute values.
            let scale = layer(
                TrainPrecision::Fp32,
                &abs(&x),
                d,
                pad,
                &abs(&wts),
                &abs(&dz),
                cout,
            );
            // Rounding both factors to bf16 (8 significant bits, round to nearest) moves each
            // product by at most (2·2⁻⁹ + 2⁻¹⁸)·|a·b|; both FP32 sums add at most 2·k·2⁻²⁴·Σ|a·b|.
            let k = (9 * c.max(cout)) as f32;
            let bound = 2f32.powi(-8) + 2f32.powi(-18) + 2.0 * k * 2f32.powi(-24);
            for (what, a, b, s) in [
                ("forward", &bf16s.y, &f32s.y, &scale.y),
                ("dw", &bf16s.dw, &f32s.dw, &scale.dw),
                ("dx", &bf16s.dx, &f32s.dx, &scale.dx),
            ] {
                for (i, ((p, q), m)) in a.iter().zip(b.iter()).zip(s.iter()).enumerate() {
                    assert!(
                        (p - q).abs() <= bound * m + 1e-6,
                        "{what} {n}×{h}×{w}×{c}→{cout} pad {pad}, value {i}: bf16 {p} vs fp32 {q} (Σ|ab| {m})"
                    );
                }
            }
        }
    }
}
