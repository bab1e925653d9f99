//! Matrix products with bf16 products and FP32 accumulation (mixed precision), on CPUs with
//! AVX512-BF16 (`vdpbf16ps`: twice the FP32 FMA rate). Operands are `f32`, read in place: plain
//! matrix views, the im2col matrix of a 3×3 convolution (never materialised) and conv weights read
//! as the input-gradient convolution's ([`operand`]). They are rounded to bf16 (round to nearest
//! even) while being packed ([`pack`]); every product of two bf16 values is exact in FP32 and sums
//! are FP32 ([`tile`]). Results depend only on the inputs, never on the thread count: each output
//! value is summed by one thread in a fixed order.
//!
//! Blocking (BLIS-style): all of B is packed once, K split into blocks of [`KC`] pairs and B into
//! panels of [`NR`] columns; M blocks of [`MC`] rows run in parallel, each packing its A block
//! into strips of [`MR`] rows per K block and running the `MR × NR` tile over it, its C rows
//! staying in L2 across the K blocks.

pub mod operand;
#[cfg(target_arch = "x86_64")]
mod pack;
#[cfg(target_arch = "x86_64")]
mod tile;

use rayon::prelude::*;

use super::conv;
use super::matmul::{matmul_on, MatRef, Threads};
pub use operand::{ConvView, Flipped, Lhs, Rhs};
use operand::View;

/// Rows of the register tile.
pub const MR: usize = 12;
/// Columns of the register tile (two 16-lane vectors).
pub const NR: usize = 32;
/// K pairs per block (a `KC × NR` B panel is 32 KiB: it stays in L1 while A strips stream by;
/// measured best of 64, 128 and 256 on block5 shapes).
pub const KC: usize = 256;
/// Rows per parallel M block (its C rows stay in L2 across the K blocks; measured best of 96,
/// 192 and 288 rows on block5 shapes).
pub const MC: usize = MR * 8;

/// True when this CPU runs the bf16 kernels (AVX512F and AVX512-BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `bf16(x)` as the vector conversion computes it: round to nearest even, subnormals to zero,
/// NaN stays NaN.
pub fn round_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let bits = x.to_bits();
    if bits & 0x7f80_0000 == 0 {
        return f32::from_bits(bits & 0x8000_0000);
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(rounded)
}

/// `c = a·b` (or `c += a·b` when `accumulate`) of two matrix views, bf16 products and FP32 sums.
///
/// Panics when the shapes disagree or a buffer is too short, like [`super::matmul`].
pub fn matmul_bf16(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], accumulate: bool, threads: Threads) {
    product(Lhs::Mat(View::of(a)), Rhs::Mat(View::of(b)), c, accumulate, threads)
}

/// `c = a·b` (or `c += a·b` when `accumulate`) of two operands, bf16 products and FP32 sums, on
/// `threads`. On a CPU without AVX512-BF16 the operands are materialised and multiplied in FP32
/// (callers check [`available`] first where the precision is a user's choice).
///
/// Panics when the shapes disagree or a buffer is too short (internal invariant: every caller
/// builds its buffers from the same shapes).
pub fn product(a: Lhs<'_>, b: Rhs<'_>, c: &mut [f32], accumulate: bool, threads: Threads) {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    assert_eq!(k, k2, "bf16 product: inner dimensions differ");
    assert!(a.in_bounds() && b.in_bounds(), "bf16 product: operand buffer too small");
    assert!(c.len() >= m * n, "bf16 product: output buffer too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        blocked(a, b, &mut c[..m * n], accumulate, threads);
        return;
    }
    fp32_fallback(a, b, c, accumulate, threads);
}

/// The same product in FP32 on materialised operands (CPUs without AVX512-BF16).
fn fp32_fallback(a: Lhs<'_>, b: Rhs<'_>, c: &mut [f32], accumulate: bool, threads: Threads) {
    let (m, k) = a.shape();
    let n = b.shape().1;
    let (a_buf, b_buf) = (dense_lhs(&a), dense_rhs(&b));
    matmul_on(
        MatRef::new(&a_buf, m, k),
        MatRef::new(&b_buf, k, n),
        c,
        accumulate,
        threads,
    );
}

/// A view's values, row-major.
fn dense(v: &View<'_>) -> Vec<f32> {
    let mut out = vec![0f32; v.rows * v.cols];
    for (i, row) in out.chunks_exact_mut(v.cols.max(1)).enumerate().take(v.rows) {
        for (j, o) in row.iter_mut().enumerate() {
            *o = v.data[i * v.rs + j * v.cs];
        }
    }
    out
}

/// The left operand as a row-major matrix.
fn dense_lhs(a: &Lhs<'_>) -> Vec<f32> {
    let cols_of = |cv: &ConvView<'_>| {
        let mut cols = vec![0f32; cv.pixels() * cv.depth()];
        conv::im2col3x3(cv.x, cv.d, cv.pad, &mut cols);
        cols
    };
    match a {
        Lhs::Mat(v) => dense(v),
        Lhs::Conv(cv) => cols_of(cv),
        Lhs::ConvT(cv) => dense(&View::of(MatRef::t(&cols_of(cv), cv.pixels(), cv.depth()))),
    }
}

/// The right operand as a row-major matrix.
fn dense_rhs(b: &Rhs<'_>) -> Vec<f32> {
    match b {
        Rhs::Mat(v) => dense(v),
        Rhs::Flipped(f) => {
            let (k, n) = b.shape();
            let mut out = vec![0f32; k * n];
            let mut col = vec![0f32; k];
            for ci in 0..n {
                f.column_run(ci, 0, &mut col);
                for (r, v) in col.iter().enumerate() {
                    out[r * n + ci] = *v;
                }
            }
            out
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn blocked(a: Lhs<'_>, b: Rhs<'_>, c: &mut [f32], accumulate: bool, threads: Threads) {
    let (m, k) = a.shape();
    let n = b.shape().1;
    let pairs = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    let mut bp = vec![0u32; pairs * panels * NR];
    let pack = |(kb, dst): (usize, &mut [u32])| {
        let p0 = kb * KC;
        // SAFETY: AVX512F/BF16 checked by the caller; the packers stay inside the operands
        // (bounds asserted by the caller).
        unsafe { pack::pack_b(b, p0, KC.min(pairs - p0), dst) };
    };
    match threads {
        Threads::One => bp.chunks_mut(KC * panels * NR).enumerate().for_each(pack),
        Threads::All => bp.par_chunks_mut(KC * panels * NR).enumerate().for_each(pack),
    }
    let block = |(mb, cb): (usize, &mut [f32])| {
        let rows = (m - mb * MC).min(MC);
        let strips = rows.div_ceil(MR);
        PACK_A.with_borrow_mut(|ap| {
            for p0 in (0..pairs).step_by(KC) {
                let kcp = KC.min(pairs - p0);
                ap.clear();
                ap.resize(strips * kcp * MR, 0);
                // SAFETY: as above.
                unsafe { pack::pack_a(a, mb * MC, rows, p0, kcp, ap) };
                let overwrite = p0 == 0 && !accumulate;
                let bblock = &bp[p0 * panels * NR..];
                for panel in 0..panels {
                    let cols = (n - panel * NR).min(NR);
                    let bpanel = &bblock[panel * kcp * NR..(panel + 1) * kcp * NR];
                    for s in 0..strips {
                        let tile_rows = (rows - s * MR).min(MR);
                        let astrip = &ap[s * kcp * MR..(s + 1) * kcp * MR];
                        let out = &mut cb[s * MR * n + panel * NR..];
                        // SAFETY: `out` holds `tile_rows` rows of `n` values from the tile's
                        // first column on (the tile's columns end at or before `n`).
                        unsafe {
                            tile::tile(kcp, astrip, bpanel, out, n, tile_rows, cols, overwrite)
                        };
                    }
                }
            }
        });
    };
    match threads {
        Threads::One => c.chunks_mut(MC * n).enumerate().for_each(block),
        Threads::All => c.par_chunks_mut(MC * n).enumerate().for_each(block),
    }
}

thread_local! {
    /// Each thread's packed A block (reused: fresh allocations cost a page fault per 4 KiB).
    static PACK_A: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skips (outside CI) on CPUs without AVX512-BF16; both CI machines have it.
    fn bf16_cpu() -> bool {
        if available() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs on CPUs with AVX512-BF16; this one has none"
        );
        eprintln!("skipping: this CPU has no AVX512-BF16");
        false
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * seed).sin() * 3.0 + (i % 7) as f32 * 0.01) * 1.7)
            .collect()
    }

    /// Checks `a·b` (added to `start` when accumulating) against the exact product of the
    /// bf16-rounded operands in f64: products of bf16 values are exact in FP32, so only the FP32
    /// sums round, by at most (k + 2)·2⁻²⁴·(Σ|a·b| + |start|).
    fn check_op(a: Lhs<'_>, b: Rhs<'_>, accumulate: bool, threads: Threads, what: &str) {
        let ((m, k), n) = (a.shape(), b.shape().1);
        let (ad, bd) = (dense_lhs(&a), dense_rhs(&b));
        let start = values(m * n, 0.13);
        let mut c = start.clone();
        product(a, b, &mut c, accumulate, threads);
        for i in 0..m {
            for j in 0..n {
                let (mut want, mut scale) = (0f64, 0f64);
                for p in 0..k {
                    let v = round_bf16(ad[i * k + p]) as f64 * round_bf16(bd[p * n + j]) as f64;
                    want += v;
                    scale += v.abs();
                }
                let base = if accumulate { start[i * n + j] as f64 } else { 0.0 };
                let tol = (k as f64 + 2.0) * 2f64.powi(-24) * (scale + base.abs()) + 1e-30;
                let got = c[i * n + j] as f64;
                assert!(
                    (got - (want + base)).abs() <= tol,
                    "{what} {m}×{k}×{n} acc={accumulate}: ({i}, {j}): {got} vs {} (tol {tol:e})",
                    want + base
                );
            }
        }
    }

    fn check(m: usize, k: usize, n: usize, ta: bool, tb: bool, accumulate: bool, threads: Threads) {
        let a = values(m * k, 0.37);
        let b = values(k * n, 0.71);
        let av = if ta { MatRef::t(&a, k, m) } else { MatRef::new(&a, m, k) };
        let bv = if tb { MatRef::t(&b, n, k) } else { MatRef::new(&b, k, n) };
        let what = format!("ta={ta} tb={tb}");
        check_op(Lhs::Mat(View::of(av)), Rhs::Mat(View::of(bv)), accumulate, threads, &what);
    }

    #[test]
    fn products_equal_exact_bf16_products_summed_in_fp32() {
        if !bf16_cpu() {
            return;
        }
        for &(m, k, n) in &[(1, 1, 1), (12, 2, 32), (13, 3, 33), (50, 257, 70), (200, 300, 65)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                check(m, k, n, ta, tb, false, Threads::One);
            }
        }
        check(200, 300, 65, false, false, true, Threads::All);
        check(400, 513, 40, true, false, true, Threads::All);
    }

    #[test]
    fn conv_operands_equal_their_materialised_matrices() {
        if !bf16_cpu() {
            return;
        }
        // Channel counts that make pairs and 12-row strips straddle taps (3, 5), and one that
        // does not (32); paddings of the forward (0, 1) and of the input gradient (2, 1).
        for &(n, h, w, c, pad) in &[(2, 5, 6, 3, 0), (2, 5, 6, 5, 1), (1, 4, 7, 32, 2), (3, 9, 9, 3, 1)] {
            let d = conv::Nhwc { n, h, w, c };
            let x = values(d.len(), 0.29);
            let cv = ConvView { x: &x, d, pad };
            let cout = 7;
            let wts = values(9 * c * cout, 0.53);
            let fwd_w = Rhs::Mat(View::of(MatRef::new(&wts, 9 * c, cout)));
            check_op(Lhs::Conv(cv), fwd_w, false, Threads::One, "conv");
            let dz = values(cv.pixels() * cout, 0.61);
            let dz_view = Rhs::Mat(View::of(MatRef::new(&dz, cv.pixels(), cout)));
            check_op(Lhs::ConvT(cv), dz_view, false, Threads::All, "convT");
            let flipped = Rhs::Flipped(Flipped { w: &wts, cin: c, cout });
            let od = d.conv3x3(cout, pad);
            let g = values(od.len(), 0.77);
            let gv = ConvView { x: &g, d: od, pad: 2 - pad.min(2) };
            if gv.pixels() > 0 {
                check_op(Lhs::Conv(gv), flipped, true, Threads::All, "flipped");
            }
        }
    }

    #[test]
    fn flipped_weights_read_the_reversed_taps() {
        // w[(t·cin + ci)·cout + co] = 100·t + 10·ci + co: flipped (t'·cout + co, ci) is tap 8 − t'.
        let (cin, cout) = (2, 3);
        let w: Vec<f32> = (0..9 * cin * cout)
            .map(|i| {
                let (t, ci, co) = (i / (cin * cout), (i / cout) % cin, i % cout);
                (100 * t + 10 * ci + co) as f32
            })
            .collect();
        let f = Flipped { w: &w, cin, cout };
        let mut col = vec![0f32; 9 * cout];
        f.column_run(1, 0, &mut col);
        assert_eq!(&col[..3], &[810.0, 811.0, 812.0]);
        assert_eq!(&col[24..], &[10.0, 11.0, 12.0]);
    }

    #[test]
    fn results_do_not_depend_on_threads() {
        if !bf16_cpu() {
            return;
        }
        let (m, k, n) = (500, 600, 96);
        let a = values(m * k, 0.3);
        let b = values(k * n, 0.5);
        let mut one = vec![0f32; m * n];
        let mut all = vec![0f32; m * n];
        matmul_bf16(MatRef::new(&a, m, k), MatRef::new(&b, k, n), &mut one, false, Threads::One);
        matmul_bf16(MatRef::new(&a, m, k), MatRef::new(&b, k, n), &mut all, false, Threads::All);
        assert_eq!(one, all);
    }

    #[test]
    fn close_to_the_fp32_product_within_bf16_rounding() {
        if !bf16_cpu() {
            return;
        }
        // Rounding both inputs to bf16 (8 bits) changes each product by at most 2·2⁻⁹ relative.
        let (m, k, n) = (37, 300, 45);
        let a = values(m * k, 0.21);
        let b = values(k * n, 0.43);
        let mut c = vec![0f32; m * n];
        matmul_bf16(MatRef::new(&a, m, k), MatRef::new(&b, k, n), &mut c, false, Threads::One);
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut scale) = (0f64, 0f64);
                for p in 0..k {
                    let v = a[i * k + p] as f64 * b[p * n + j] as f64;
                    exact += v;
                    scale += v.abs();
                }
                let tol = (2.0 * 2f64.powi(-9) + 2f64.powi(-17) + k as f64 * 2f64.powi(-24)) * scale;
                assert!((c[i * n + j] as f64 - exact).abs() <= tol, "{i},{j}");
            }
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1.0).
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert!(round_bf16(f32::NAN).is_nan());
    }
}
