//! The register tile of the bf16 convolutions: `MR × NR` FP32 accumulators (24 AVX-512
//! registers) updated with `vdpbf16ps`, each of the `MR` rows read through its own pointer (an
//! output pixel's taps, or one tap and channel of the input), then written to or added into C.

use std::arch::x86_64::*;

use super::{MR, NR};

/// Repeats `$body` with `$r` bound to 0, 1, …, 11 (the tile's rows, unrolled so that the
/// accumulators live in registers).
macro_rules! rows12 {
    ($r:ident => $body:block) => {{
        {
            const $r: usize = 0;
            $body
        }
        {
            const $r: usize = 1;
            $body
        }
        {
            const $r: usize = 2;
            $body
        }
        {
            const $r: usize = 3;
            $body
        }
        {
            const $r: usize = 4;
            $body
        }
        {
            const $r: usize = 5;
            $body
        }
        {
            const $r: usize = 6;
            $body
        }
        {
            const $r: usize = 7;
            $body
        }
        {
            const $r: usize = 8;
            $body
        }
        {
            const $r: usize = 9;
            $body
        }
        {
            const $r: usize = 10;
            $body
        }
        {
            const $r: usize = 11;
            $body
        }
    }};
}

/// How a tile walks its operands: `nseg` segments of `len` pairs; row pointer `r` reads
/// `a[r] + s·a_seg + j·a_step` and the B panel `b + s·b_seg + j·b_step` (`NR` u32) at pair `j`
/// of segment `s` (offsets in u32).
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    pub nseg: usize,
    pub len: usize,
    pub a_step: usize,
    pub a_seg: usize,
    pub b_step: usize,
    pub b_seg: usize,
}

/// One `MR × NR` tile: the products of `MR` rows (each read through its own pointer) and one
/// `NR`-column panel summed over `walk`, written (`overwrite`) or added to `c` (row stride
/// `ldc`), of which only `rows × cols` is stored.
///
/// # Safety
/// AVX512F and AVX512-BF16 must be available; every address the walk reaches must be readable
/// and `c` must hold `rows` rows of `ldc` values (the last one `cols` long).
#[allow(clippy::too_many_arguments)] // a BLAS-style signature reads best here
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn tile(
    walk: &Walk,
    a: &[*const u32; MR],
    b: *const u32,
    c: &mut [f32],
    ldc: usize,
    rows: usize,
    cols: usize,
    overwrite: bool,
) {
    debug_assert!(rows >= 1 && (rows - 1) * ldc + cols <= c.len());
    let z = _mm512_setzero_ps();
    let mut acc = [[z; 2]; MR];
    for s in 0..walk.nseg {
        let (ao, mut bp) = (s * walk.a_seg, b.wrapping_add(s * walk.b_seg));
        let mut ap: [*const u32; MR] = [std::ptr::null(); MR];
        rows12!(R => {
            ap[R] = a[R].wrapping_add(ao);
        });
        for _ in 0..walk.len {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16) as *const _));
            rows12!(R => {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap[R] as i32));
                acc[R][0] = _mm512_dpbf16_ps(acc[R][0], av, b0);
                acc[R][1] = _mm512_dpbf16_ps(acc[R][1], av, b1);
                ap[R] = ap[R].wrapping_add(walk.a_step);
            });
            bp = bp.wrapping_add(walk.b_step);
        }
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
