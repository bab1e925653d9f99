//! The bf16 layouts the direct convolution reads, each made once per layer and step from FP32
//! values (rounded to nearest even, AVX-512): a u32 holds two bf16 values of consecutive k, the
//! lower k in the low half. Activations are converted once (not nine times, as an im2col
//! matrix would be); weights are packed into panels of [`NR`] output columns.

use std::arch::x86_64::*;

use super::super::conv::Nhwc;
use super::NR;

/// Low `n` bits set (n ≤ 16).
pub fn mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// `dst[i] = (src[2i], src[2i + 1])` as bf16 for `i < dst.len()`; a value past `src` is 0.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn pairs(src: &[f32], dst: &mut [u32]) {
    let (p, len) = (src.as_ptr(), src.len().min(2 * dst.len()));
    let mut i = 0;
    while i < dst.len() {
        let (done, n) = (2 * i, (dst.len() - i).min(16));
        let take = len.saturating_sub(done).min(32);
        let lo = _mm512_maskz_loadu_ps(mask(take), p.wrapping_add(done));
        let hi = _mm512_maskz_loadu_ps(mask(take.saturating_sub(16)), p.wrapping_add(done + 16));
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(i) as *mut _, mask(n), v);
        i += 16;
    }
}

/// `dst[i] = (x[i], y[i])` as bf16 for `i < dst.len()` (`y` absent: zeros).
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn interleave(x: &[f32], y: Option<&[f32]>, dst: &mut [u32]) {
    let n = dst.len();
    debug_assert!(x.len() >= n && y.is_none_or(|y| y.len() >= n));
    let mut i = 0;
    while i < n {
        let m = mask(n - i);
        let lo = bf16_lanes(_mm512_maskz_loadu_ps(m, x.as_ptr().add(i)));
        let v = match y {
            Some(y) => {
                let hi = bf16_lanes(_mm512_maskz_loadu_ps(m, y.as_ptr().add(i)));
                _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi))
            }
            None => lo,
        };
        _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(i) as *mut _, m, v);
        i += 16;
    }
}

/// 16 values as bf16 in the low halves of 16 u32 lanes.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn bf16_lanes(v: __m512) -> __m512i {
    _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
        _mm512_cvtneps_pbh(v),
    ))
}

/// Sizes of an activation map padded by `pad` zeros on every side.
#[derive(Clone, Copy, Debug)]
pub struct Padded {
    pub n: usize,
    pub hp: usize,
    pub wp: usize,
    pub c: usize,
}

impl Padded {
    pub fn of(d: Nhwc, pad: usize) -> Self {
        Padded {
            n: d.n,
            hp: d.h + 2 * pad,
            wp: d.w + 2 * pad,
            c: d.c,
        }
    }

    /// Channel pairs per pixel.
    pub fn c2(&self) -> usize {
        self.c.div_ceil(2)
    }
}

/// The map `x` (shape `d`) padded by `pad` zeros, as channel pairs: `[n][hp][wp][c2]` u32.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn channel_pairs(x: &[f32], d: Nhwc, pad: usize, out: &mut Vec<u32>) -> Padded {
    let p = Padded::of(d, pad);
    let c2 = p.c2();
    // Every value is written below (the buffer is reused across layers: no clearing pass).
    out.resize(p.n * p.hp * p.wp * c2, 0);
    for b in 0..d.n {
        for row in 0..p.hp {
            let line = &mut out[(b * p.hp + row) * p.wp * c2..][..p.wp * c2];
            let y = row.wrapping_sub(pad);
            if y >= d.h {
                line.fill(0);
                continue;
            }
            let src = &x[((b * d.h + y) * d.w) * d.c..][..d.w * d.c];
            line[..pad * c2].fill(0);
            line[(pad + d.w) * c2..].fill(0);
            let inner = &mut line[pad * c2..(pad + d.w) * c2];
            if d.c.is_multiple_of(2) {
                // Pairs never straddle pixels: the image row is one run.
                pairs(src, inner);
            } else {
                for (v, dst) in src.chunks_exact(d.c).zip(inner.chunks_exact_mut(c2)) {
                    pairs(v, dst);
                }
            }
        }
    }
    p
}

/// The map `x` (shape `d`) padded by `pad` zeros, as the pairs of horizontally adjacent pixels
/// that tap column `kx` of a 3×3 convolution reads for output pixel pairs `(2q, 2q + 1)`:
/// `[n][hp][qo][c]` u32 holding padded columns `(2q + kx, 2q + kx + 1)` of each padded row, with
/// `qo = ceil(wo/2)` pairs per row (`wo = wp − 2`; columns past the row are 0). Consecutive
/// output rows are then consecutive in memory.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn tap_pairs(x: &[f32], d: Nhwc, pad: usize, kx: usize, out: &mut Vec<u32>) {
    let p = Padded::of(d, pad);
    let (qo, c) = ((p.wp - 2).div_ceil(2), d.c);
    // Every value is written below (the buffer is reused across layers: no clearing pass).
    out.resize(p.n * p.hp * qo * c, 0);
    for b in 0..d.n {
        for row in 0..p.hp {
            let line = &mut out[(b * p.hp + row) * qo * c..][..qo * c];
            let y = row.wrapping_sub(pad);
            if y >= d.h {
                line.fill(0);
                continue;
            }
            let src = &x[((b * d.h + y) * d.w) * c..][..d.w * c];
            // Padded column `col` of this row, or None in the border.
            let pixel = |col: usize| {
                let xx = col.wrapping_sub(pad);
                (xx < d.w).then(|| &src[xx * c..(xx + 1) * c])
            };
            for (q, dst) in line.chunks_exact_mut(c).enumerate() {
                let col = 2 * q + kx;
                let (lo, hi) = (pixel(col), pixel(col + 1));
                if c >= 16 {
                    match (lo, hi) {
                        (Some(lo), hi) => interleave(lo, hi, dst),
                        (None, Some(hi)) => {
                            interleave(hi, None, dst);
                            dst.iter_mut().for_each(|v| *v <<= 16);
                        }
                        (None, None) => dst.fill(0),
                    }
                } else {
                    // A few channels: a vector call per pixel pair costs more than the values.
                    for (ch, v) in dst.iter_mut().enumerate() {
                        *v = lo.map_or(0, |l| bits(l[ch])) | hi.map_or(0, |h| bits(h[ch])) << 16;
                    }
                }
            }
        }
    }
}

/// An output gradient `dz` (`[pixels of od, cout]`) as pairs of horizontally adjacent output
/// pixels: `[n][ho][qo][ld]` u32 with `qo = ceil(wo/2)` and `ld` = `cout` rounded up to [`NR`]
/// (a missing right pixel and the extra columns are 0). Returns `ld`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn row_pairs(dz: &[f32], od: Nhwc, out: &mut Vec<u32>) -> usize {
    let (c, ld, qo) = (od.c, od.c.div_ceil(NR) * NR, od.w.div_ceil(2));
    out.clear();
    out.resize(od.n * od.h * qo * ld, 0);
    for line in 0..od.n * od.h {
        for q in 0..qo {
            let left = (line * od.w + 2 * q) * c;
            let right = (2 * q + 1 < od.w).then(|| &dz[left + c..left + 2 * c]);
            interleave(
                &dz[left..left + c],
                right,
                &mut out[(line * qo + q) * ld..][..c],
            );
        }
    }
    ld
}

/// Conv weights `w` (`[9·cin, cout]`, taps outer) packed for the forward product:
/// `[panel][tap][c2][NR]` u32 pairing input channels `2p, 2p + 1` (0 past `cin` and `cout`).
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn forward_weights(w: &[f32], cin: usize, cout: usize, out: &mut Vec<u32>) {
    let (c2, panels) = (cin.div_ceil(2), cout.div_ceil(NR));
    out.clear();
    out.resize(panels * 9 * c2 * NR, 0);
    for panel in 0..panels {
        let (j0, cols) = (panel * NR, (cout - panel * NR).min(NR));
        for t in 0..9 {
            for p in 0..c2 {
                let (ci, dst) = (2 * p, ((panel * 9 + t) * c2 + p) * NR);
                let lo = &w[(t * cin + ci) * cout + j0..][..cols];
                let hi = (ci + 1 < cin).then(|| &w[(t * cin + ci + 1) * cout + j0..][..cols]);
                interleave(lo, hi, &mut out[dst..dst + cols]);
            }
        }
    }
}

/// The same weights packed for the input-gradient product (the convolution of the output
/// gradient with the flipped kernel): `[panel over cin][tap t][cout pairs][NR]` u32 holding
/// `w[(8 − t)·cin + ci][2p]` and `[2p + 1]` for column `ci`.
pub fn flipped_weights(w: &[f32], cin: usize, cout: usize, out: &mut Vec<u32>) {
    let (c2, panels) = (cout.div_ceil(2), cin.div_ceil(NR));
    out.clear();
    out.resize(panels * 9 * c2 * NR, 0);
    for t in 0..9 {
        for ci in 0..cin {
            let src = &w[((8 - t) * cin + ci) * cout..][..cout];
            let (panel, col) = (ci / NR, ci % NR);
            for p in 0..c2 {
                let lo = bits(src[2 * p]);
                let hi = src.get(2 * p + 1).map_or(0, |&v| bits(v));
                out[((panel * 9 + t) * c2 + p) * NR + col] = lo | (hi << 16);
            }
        }
    }
}

/// The bf16 bits of `x` ([`super::round_bf16`], the vector conversion's rounding).
fn bits(x: f32) -> u32 {
    super::round_bf16(x).to_bits() >> 16
}
