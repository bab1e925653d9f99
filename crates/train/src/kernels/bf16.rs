//! Matrix products with bf16 products and FP32 accumulation (mixed precision), on CPUs with
//! AVX512-BF16 (`vdpbf16ps`: twice the FP32 FMA rate). Operands are the same `f32` views as
//! [`super::matmul`]; they are rounded to bf16 (round to nearest even) while being packed, every
//! product of two bf16 values is exact in FP32, and sums are FP32. Results depend only on the
//! inputs (never on the thread count: each output value is summed by one thread in a fixed order).
//!
//! Layout (BLIS-style): K is split into blocks of [`KC`] pairs; for each block the B operand is
//! packed into panels of [`NR`] columns (`[pair][NR]` u32, each u32 two bf16 of consecutive k),
//! the A operand into strips of [`MR`] rows (`[pair][MR]` u32), and an `MR × NR` register tile
//! (24 accumulators) runs over the pairs. M blocks of [`MC`] rows run in parallel.

use rayon::prelude::*;

use super::matmul::{MatRef, Threads};

/// Rows of the register tile.
pub const MR: usize = 12;
/// Columns of the register tile (two 16-lane vectors).
pub const NR: usize = 32;
/// K pairs per block (a `KC × NR` B panel is 32 KiB: it stays in L1 while A strips stream by;
/// measured best of 64, 128 and 256 on block5 shapes).
pub const KC: usize = 256;
/// Rows per parallel M block (its packed A block, `MC × KC` pairs, is 96 KiB and its C rows stay in
/// L2 across the K blocks).
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

/// `bf16(x)` with round to nearest even, as the vector conversion does (NaN stays NaN).
pub fn round_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    if x.is_nan() {
        return x;
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(rounded)
}

/// Logical element `(i, j)` of a view is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    fn of(m: MatRef<'a>) -> Self {
        let (rows, cols) = m.shape();
        let (rs, cs) = if m.t { (1, m.cols) } else { (m.cols, 1) };
        View {
            data: m.data,
            rows,
            cols,
            rs,
            cs,
        }
    }
}

/// `c = a·b` (or `c += a·b` when `accumulate`) with bf16 products and FP32 sums, on `threads`.
/// Falls back to the FP32 product on CPUs without AVX512-BF16 (callers check [`available`]
/// first when the precision is a user's choice).
///
/// Panics when the shapes disagree or a buffer is too short, like [`super::matmul`].
pub fn matmul_bf16(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], accumulate: bool, threads: Threads) {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    assert_eq!(k, k2, "matmul_bf16: inner dimensions differ");
    assert!(a.data.len() >= a.rows * a.cols && b.data.len() >= b.rows * b.cols);
    assert!(c.len() >= m * n, "matmul_bf16: output buffer too small");
    if !available() {
        super::matmul::matmul_on(a, b, c, accumulate, threads);
        return;
    }
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
    blocked(View::of(a), View::of(b), &mut c[..m * n], accumulate, threads);
}

#[cfg(target_arch = "x86_64")]
fn blocked(a: View<'_>, b: View<'_>, c: &mut [f32], accumulate: bool, threads: Threads) {
    let (m, n) = (a.rows, b.cols);
    let pairs = a.cols.div_ceil(2);
    let panels = n.div_ceil(NR);
    // All of B packed once (K blocks one after the other), shared by the threads; each M block
    // then runs every K block with its C rows hot in L2.
    let mut bp = vec![0u32; pairs * panels * NR];
    let pack = |(kb, dst): (usize, &mut [u32])| {
        let p0 = kb * KC;
        // SAFETY: AVX512F/BF16 checked by the caller; the packers stay inside the views.
        unsafe { x86::pack_b(b, p0, KC.min(pairs - p0), dst) };
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
                unsafe { x86::pack_a(a, mb * MC, rows, p0, kcp, ap) };
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
                            x86::tile(kcp, astrip, bpanel, out, n, tile_rows, cols, overwrite)
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{View, KC, MR, NR};

    /// Low `n` bits set (n ≤ 16).
    fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// 16 u32 pairs `(x[i], y[i])` as bf16 (x in the low half) from `count ≤ 16` values of two
    /// contiguous lines (`y` absent: zeros).
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn interleave(x: *const f32, y: Option<*const f32>, count: usize) -> __m512i {
        let m = mask(count);
        let xv = _mm512_maskz_loadu_ps(m, x);
        let lo = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
            _mm512_cvtneps_pbh(xv),
        ));
        match y {
            Some(y) => {
                let yv = _mm512_maskz_loadu_ps(m, y);
                let hi = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
                    _mm512_cvtneps_pbh(yv),
                ));
                _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi))
            }
            None => lo,
        }
    }

    /// The pairs of a contiguous run of `len ≤ 2·KC` values (an odd last value pairs with 0),
    /// written to `out[q]` for `q < len.div_ceil(2)`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn run_pairs(src: *const f32, len: usize, out: &mut [u32; KC]) {
        let mut done = 0;
        while done < len {
            let take = (len - done).min(32);
            let lo = _mm512_maskz_loadu_ps(mask(take), src.add(done));
            let hi = _mm512_maskz_loadu_ps(mask(take.saturating_sub(16)), src.add(done + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.as_mut_ptr().add(done / 2) as *mut _, v);
            done += 32;
        }
    }

    /// Packs pairs `p0..p0 + kcp` of every column of `b` (logical `k × n`) into panels of `NR`
    /// columns: `bp[panel][p][j]` (columns and pairs past the matrix are 0).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_b(b: View<'_>, p0: usize, kcp: usize, bp: &mut [u32]) {
        let (k, n) = (b.rows, b.cols);
        let panels = n.div_ceil(NR);
        if b.cs == 1 {
            // Rows contiguous: pair rows 2p and 2p + 1 column by column.
            for panel in 0..panels {
                let j0 = panel * NR;
                let cols = (n - j0).min(NR);
                for p in 0..kcp {
                    let r = 2 * (p0 + p);
                    let x = b.data.as_ptr().add(r * b.rs + j0);
                    let y = (r + 1 < k).then(|| b.data.as_ptr().add((r + 1) * b.rs + j0));
                    let dst = bp.as_mut_ptr().add((panel * kcp + p) * NR);
                    for h in 0..2 {
                        let count = cols.saturating_sub(16 * h).min(16);
                        let v = interleave(
                            x.add(16 * h),
                            y.map(|y| y.add(16 * h)),
                            count,
                        );
                        _mm512_storeu_si512(dst.add(16 * h) as *mut _, v);
                    }
                }
            }
        } else {
            // Columns contiguous (a transposed view): each column's run of k values gives its
            // pairs directly; scatter them into the panel rows.
            let mut run = [0u32; KC];
            let len = (k - 2 * p0).min(2 * kcp);
            for j in 0..n {
                run_pairs(b.data.as_ptr().add(j * b.cs + 2 * p0 * b.rs), len, &mut run);
                let (panel, col) = (j / NR, j % NR);
                let dst = &mut bp[panel * kcp * NR + col..];
                for (p, &v) in run[..kcp].iter().enumerate() {
                    *dst.get_unchecked_mut(p * NR) = v;
                }
            }
        }
    }

    /// Packs pairs `p0..p0 + kcp` of rows `i0..i0 + rows` of `a` (logical `m × k`) into strips
    /// of `MR` rows: `ap[strip][p][r]` (rows and pairs past the matrix are 0).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_a(
        a: View<'_>,
        i0: usize,
        rows: usize,
        p0: usize,
        kcp: usize,
        ap: &mut [u32],
    ) {
        let k = a.cols;
        let strips = rows.div_ceil(MR);
        if a.rs == 1 {
            // A transposed view: for a fixed k the rows are contiguous; pair k = 2p and 2p + 1.
            for s in 0..strips {
                let r0 = i0 + s * MR;
                let count = (rows - s * MR).min(MR);
                for p in 0..kcp {
                    let kk = 2 * (p0 + p);
                    let x = a.data.as_ptr().add(kk * a.cs + r0);
                    let y = (kk + 1 < k).then(|| a.data.as_ptr().add((kk + 1) * a.cs + r0));
                    let v = interleave(x, y, count);
                    let dst = ap.as_mut_ptr().add((s * kcp + p) * MR);
                    _mm512_mask_storeu_epi32(dst as *mut _, mask(MR), v);
                }
            }
        } else {
            // Rows contiguous: each row's run of k values gives its pairs directly.
            let mut run = [0u32; KC];
            let len = (k - 2 * p0).min(2 * kcp);
            for r in 0..rows {
                let src = a.data.as_ptr().add((i0 + r) * a.rs + 2 * p0 * a.cs);
                run_pairs(src, len, &mut run);
                let (s, row) = (r / MR, r % MR);
                let dst = &mut ap[s * kcp * MR + row..];
                for (p, &v) in run[..kcp].iter().enumerate() {
                    *dst.get_unchecked_mut(p * MR) = v;
                }
            }
        }
    }

    /// Repeats `$body` with `$r` bound to 0, 1, …, 11 (the tile's rows, unrolled so that the
    /// accumulators live in registers).
    macro_rules! rows12 {
        ($r:ident => $body:block) => {{
            { const $r: usize = 0; $body }
            { const $r: usize = 1; $body }
            { const $r: usize = 2; $body }
            { const $r: usize = 3; $body }
            { const $r: usize = 4; $body }
            { const $r: usize = 5; $body }
            { const $r: usize = 6; $body }
            { const $r: usize = 7; $body }
            { const $r: usize = 8; $body }
            { const $r: usize = 9; $body }
            { const $r: usize = 10; $body }
            { const $r: usize = 11; $body }
        }};
    }

    /// One `MR × NR` tile over `kcp` pairs, written (`overwrite`) or added to `c` (row stride
    /// `ldc`), of which only `rows × cols` is stored.
    #[allow(clippy::too_many_arguments)] // a BLAS-style signature reads best here
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile(
        kcp: usize,
        a: &[u32],
        b: &[u32],
        c: &mut [f32],
        ldc: usize,
        rows: usize,
        cols: usize,
        overwrite: bool,
    ) {
        debug_assert!(a.len() >= kcp * MR && b.len() >= kcp * NR);
        debug_assert!(rows >= 1 && (rows - 1) * ldc + cols <= c.len());
        let z = _mm512_setzero_ps();
        let mut acc = [[z; 2]; MR];
        let (mut ap, mut bp) = (a.as_ptr(), b.as_ptr());
        for _ in 0..kcp {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16) as *const _));
            rows12!(R => {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(R) as i32));
                acc[R][0] = _mm512_dpbf16_ps(acc[R][0], av, b0);
                acc[R][1] = _mm512_dpbf16_ps(acc[R][1], av, b1);
            });
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
        let cp = c.as_mut_ptr();
        if rows == MR && cols == NR {
            rows12!(R => {
                let dst = cp.add(R * ldc);
                let (mut v0, mut v1) = (acc[R][0], acc[R][1]);
                if !overwrite {
                    v0 = _mm512_add_ps(v0, _mm512_loadu_ps(dst));
                    v1 = _mm512_add_ps(v1, _mm512_loadu_ps(dst.add(16)));
                }
                _mm512_storeu_ps(dst, v0);
                _mm512_storeu_ps(dst.add(16), v1);
            });
            return;
        }
        // An edge tile: spill the accumulators (constant indices), then store the valid part.
        let mut tile = [[0f32; NR]; MR];
        rows12!(R => {
            _mm512_storeu_ps(tile[R].as_mut_ptr(), acc[R][0]);
            _mm512_storeu_ps(tile[R].as_mut_ptr().add(16), acc[R][1]);
        });
        for (r, t) in tile.iter().enumerate().take(rows) {
            let dst = &mut c[r * ldc..r * ldc + cols];
            if overwrite {
                dst.copy_from_slice(&t[..cols]);
            } else {
                for (d, v) in dst.iter_mut().zip(t) {
                    *d += v;
                }
            }
        }
    }
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

    /// The exact product of the bf16-rounded operands, in f64, and `Σ|a·b|` per element.
    fn reference(a: MatRef<'_>, b: MatRef<'_>) -> (Vec<f64>, Vec<f64>) {
        let (va, vb) = (View::of(a), View::of(b));
        let (m, k, n) = (va.rows, va.cols, vb.cols);
        let mut c = vec![0f64; m * n];
        let mut s = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let x = round_bf16(va.data[i * va.rs + p * va.cs]) as f64;
                    let y = round_bf16(vb.data[p * vb.rs + j * vb.cs]) as f64;
                    c[i * n + j] += x * y;
                    s[i * n + j] += (x * y).abs();
                }
            }
        }
        (c, s)
    }

    fn check(m: usize, k: usize, n: usize, ta: bool, tb: bool, accumulate: bool, threads: Threads) {
        let a = values(m * k, 0.37);
        let b = values(k * n, 0.71);
        let av = if ta { MatRef::t(&a, k, m) } else { MatRef::new(&a, m, k) };
        let bv = if tb { MatRef::t(&b, n, k) } else { MatRef::new(&b, k, n) };
        let start = values(m * n, 0.13);
        let mut c = start.clone();
        matmul_bf16(av, bv, &mut c, accumulate, threads);
        let (want, scale) = reference(av, bv);
        // Products of bf16 values are exact in FP32; only the FP32 sums round: at most
        // k·2⁻²⁴·Σ|a·b| (plus the rounding of the final addition when accumulating).
        for i in 0..m * n {
            let base = if accumulate { start[i] as f64 } else { 0.0 };
            let tol = (k as f64 + 2.0) * 2f64.powi(-24) * (scale[i] + base.abs()) + 1e-30;
            let err = (c[i] as f64 - (want[i] + base)).abs();
            assert!(
                err <= tol,
                "{m}×{k}×{n} ta={ta} tb={tb} acc={accumulate}: element {i}: {} vs {} (tol {tol:e})",
                c[i],
                want[i] + base
            );
        }
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
