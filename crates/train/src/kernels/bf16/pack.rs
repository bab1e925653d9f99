//! Packing operands into the register tile's layouts, rounding to bf16 on the way (AVX-512):
//! B into panels of [`NR`] columns (`[pair][NR]` u32) and A into strips of [`MR`] rows
//! (`[pair][MR]` u32), each u32 holding the bf16 values of two consecutive k (the lower k in the
//! low half). Values past the matrix are 0.

use std::arch::x86_64::*;

use super::operand::{ConvView, Lhs, Rhs, View};
use super::{KC, MR, NR};

/// Low `n` bits set (n ≤ 16).
fn mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// 16 u32 pairs `(x[i], y[i])` as bf16 from `count ≤ 16` values of two contiguous lines (`y`
/// absent: zeros).
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn interleave(x: *const f32, y: Option<*const f32>, count: usize) -> __m512i {
    let m = mask(count);
    let lo = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(
        _mm512_maskz_loadu_ps(m, x),
    )));
    match y {
        Some(y) => {
            let hi = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
                _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, y)),
            ));
            _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi))
        }
        None => lo,
    }
}

/// The pairs of a contiguous run of `len ≤ 2·KC` values (an odd last value pairs with 0), into
/// `out[..len.div_ceil(2)]`.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn run_pairs(src: *const f32, len: usize, out: &mut [u32; KC]) {
    let mut done = 0;
    while done < len {
        let take = (len - done).min(32);
        let lo = _mm512_maskz_loadu_ps(mask(take), src.wrapping_add(done));
        let hi = _mm512_maskz_loadu_ps(mask(take.saturating_sub(16)), src.wrapping_add(done + 16));
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(out.as_mut_ptr().add(done / 2) as *mut _, v);
        done += 32;
    }
}

/// Writes `pairs[p]` to `dst[p * stride]` for `p < n` (a run scattered into a panel or strip).
fn scatter(pairs: &[u32; KC], n: usize, dst: &mut [u32], stride: usize) {
    for (p, &v) in pairs[..n].iter().enumerate() {
        dst[p * stride] = v;
    }
}

/// Scratch space of the packers, made once per call (not per row: zeroing it is not free).
struct Lines {
    line: [f32; 2 * KC],
    pairs: [u32; KC],
}

impl Lines {
    fn new() -> Self {
        Lines {
            line: [0.0; 2 * KC],
            pairs: [0; KC],
        }
    }

    /// The `len` values at `src` as pairs, scattered into `dst` with `stride`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn pack_slice(&mut self, src: *const f32, len: usize, kcp: usize, dst: &mut [u32], stride: usize) {
        run_pairs(src, len, &mut self.pairs);
        scatter(&self.pairs, kcp, dst, stride);
    }

    /// A run of `len` values that `fill` writes, as pairs scattered into `dst` with `stride`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn pack_filled(
        &mut self,
        len: usize,
        kcp: usize,
        fill: impl FnOnce(&mut [f32]),
        dst: &mut [u32],
        stride: usize,
    ) {
        fill(&mut self.line[..len]);
        let line = self.line.as_ptr();
        self.pack_slice(line, len, kcp, dst, stride);
    }
}

/// Packs pairs `p0..p0 + kcp` of every column of `b` into panels: `bp[panel][p][j]`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn pack_b(b: Rhs<'_>, p0: usize, kcp: usize, bp: &mut [u32]) {
    let (k, n) = b.shape();
    let len = (k - 2 * p0).min(2 * kcp);
    let mut lines = Lines::new();
    match b {
        Rhs::Mat(v) if v.cs == 1 => pack_b_rows(v, p0, kcp, bp),
        Rhs::Mat(v) => {
            // Columns contiguous (a transposed view): each column's run gives its pairs.
            for j in 0..n {
                let dst = &mut bp[(j / NR) * kcp * NR + j % NR..];
                let src = v.data.as_ptr().add(j * v.cs + 2 * p0 * v.rs);
                lines.pack_slice(src, len, kcp, dst, NR);
            }
        }
        Rhs::Flipped(f) => {
            for j in 0..n {
                let dst = &mut bp[(j / NR) * kcp * NR + j % NR..];
                match f.column_slice(j, 2 * p0, len) {
                    Some(src) => lines.pack_slice(f.w.as_ptr().add(src), len, kcp, dst, NR),
                    None => lines.pack_filled(len, kcp, |l| f.column_run(j, 2 * p0, l), dst, NR),
                }
            }
        }
    }
}

/// B with contiguous rows: rows 2p and 2p + 1 paired column by column.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_b_rows(b: View<'_>, p0: usize, kcp: usize, bp: &mut [u32]) {
    let (k, n) = (b.rows, b.cols);
    for panel in 0..n.div_ceil(NR) {
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
                    x.wrapping_add(16 * h),
                    y.map(|y| y.wrapping_add(16 * h)),
                    count,
                );
                _mm512_storeu_si512(dst.add(16 * h) as *mut _, v);
            }
        }
    }
}

/// Packs pairs `p0..p0 + kcp` of rows `i0..i0 + rows` of `a` into strips: `ap[strip][p][r]`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn pack_a(a: Lhs<'_>, i0: usize, rows: usize, p0: usize, kcp: usize, ap: &mut [u32]) {
    let k = a.shape().1;
    let len = (k - 2 * p0).min(2 * kcp);
    let strip = |r: usize| (r / MR) * kcp * MR + r % MR;
    let mut lines = Lines::new();
    match a {
        Lhs::Mat(v) if v.rs == 1 => pack_a_columns(v, i0, rows, p0, kcp, ap),
        Lhs::Mat(v) => {
            for r in 0..rows {
                let src = v.data.as_ptr().add((i0 + r) * v.rs + 2 * p0 * v.cs);
                lines.pack_slice(src, len, kcp, &mut ap[strip(r)..], MR);
            }
        }
        Lhs::Conv(cv) => {
            let mut q = cv.pixel(i0);
            for r in 0..rows {
                let dst = &mut ap[strip(r)..];
                match cv.row_slice(q, 2 * p0, len) {
                    Some(Some(src)) => lines.pack_slice(cv.x.as_ptr().add(src), len, kcp, dst, MR),
                    Some(None) => scatter(&[0u32; KC], kcp, dst, MR),
                    None => lines.pack_filled(len, kcp, |l| cv.row_run(q, 2 * p0, l), dst, MR),
                }
                q = cv.next(q);
            }
        }
        Lhs::ConvT(cv) => pack_a_conv_t(cv, i0, rows, p0, kcp, ap),
    }
}

/// A transposed plain view: for a fixed k the rows are contiguous; k = 2p and 2p + 1 paired.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_a_columns(a: View<'_>, i0: usize, rows: usize, p0: usize, kcp: usize, ap: &mut [u32]) {
    let k = a.cols;
    for s in 0..rows.div_ceil(MR) {
        let r0 = i0 + s * MR;
        let count = (rows - s * MR).min(MR);
        for p in 0..kcp {
            let kk = 2 * (p0 + p);
            let x = a.data.as_ptr().add(kk * a.cs + r0);
            let y = (kk + 1 < k).then(|| a.data.as_ptr().add((kk + 1) * a.cs + r0));
            let v = interleave(x, y, count);
            _mm512_mask_storeu_epi32(ap.as_mut_ptr().add((s * kcp + p) * MR) as *mut _, mask(MR), v);
        }
    }
}

/// The transposed im2col matrix: rows are (tap, channel), pairs run over consecutive output
/// pixels. For each pixel pair, the block's rows are read from each pixel's taps in place when
/// they are one channel run of one tap (or padding; the common case for wide layers), else
/// gathered tap by tap, and dealt out to the strips.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_a_conv_t(
    cv: ConvView<'_>,
    i0: usize,
    rows: usize,
    p0: usize,
    kcp: usize,
    ap: &mut [u32],
) {
    let pixels = cv.pixels();
    let zeros = [0f32; MC_MAX];
    let mut lines = [[0f32; MC_MAX]; 2];
    let mut q = cv.pixel(2 * p0);
    for p in 0..kcp {
        let mut src = [zeros.as_ptr(); 2];
        for (h, line) in lines.iter_mut().enumerate() {
            if 2 * (p0 + p) + h < pixels {
                src[h] = match cv.row_slice(q, i0, rows) {
                    Some(Some(i)) => cv.x.as_ptr().add(i),
                    Some(None) => zeros.as_ptr(),
                    None => {
                        cv.row_run(q, i0, &mut line[..rows]);
                        line.as_ptr()
                    }
                };
                q = cv.next(q);
            }
        }
        for s in 0..rows.div_ceil(MR) {
            let count = (rows - s * MR).min(MR);
            let v = interleave(src[0].add(s * MR), Some(src[1].add(s * MR)), count);
            _mm512_mask_storeu_epi32(ap.as_mut_ptr().add((s * kcp + p) * MR) as *mut _, mask(MR), v);
        }
    }
}

/// Rows of the largest A block the transposed im2col packer reads at once.
const MC_MAX: usize = super::MC;
