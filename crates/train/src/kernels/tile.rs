//! CPU kernels for the first dense layer at small batch sizes, where a general matmul spends its
//! time on packing and edge tiles: one register-tiled multiply-accumulate (AVX2+FMA with a
//! portable fallback) used both for the forward product and for the kernel gradient.
//!
//! `tile_product` computes `out[r][c] (+)= Σ_p s[r·rs + p·ps] · v[p·ldv + c]` for `r < rows`,
//! `c < cols`: with `s = x` (rs = D, ps = 1) and `v = W` it is `x·W`; with `s = x` (rs = 1,
//! ps = D) and `v = dh` it is `xᵀ·dh`. Results depend only on the inputs, never on threads.

/// Strided view of the scalar operand: element `(r, p)` is `data[r * rs + p * ps]`.
#[derive(Clone, Copy)]
pub struct Scalars<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub ps: usize,
}

/// Row-major view of the vector operand: row `p` starts at `data[p * ld]`.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub ld: usize,
}

/// `out[r * ldo + c] = Σ_{p < depth} s(r, p) · v(p, c)` for `r < rows`, `c < cols`; with
/// `accumulate` the sum is added to what `out` holds.
///
/// Panics if any index would fall outside the slices.
#[allow(clippy::too_many_arguments)] // a BLAS-style signature reads best here
pub fn tile_product(
    s: Scalars<'_>,
    v: Rows<'_>,
    rows: usize,
    cols: usize,
    depth: usize,
    out: &mut [f32],
    ldo: usize,
    accumulate: bool,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        cols <= v.ld && cols <= ldo,
        "tile_product: bad leading dimensions"
    );
    assert!(
        (rows - 1) * ldo + cols <= out.len(),
        "tile_product: output too small"
    );
    if depth == 0 {
        if accumulate {
            return;
        }
        for r in 0..rows {
            out[r * ldo..r * ldo + cols].fill(0.0);
        }
        return;
    }
    assert!(
        (depth - 1) * v.ld + cols <= v.data.len(),
        "tile_product: vector operand too small"
    );
    assert!(
        (rows - 1) * s.rs + (depth - 1) * s.ps < s.data.len(),
        "tile_product: scalar operand too small"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA are available (checked above) and every index the kernel
            // touches is within the bounds asserted above.
            unsafe { avx2::product(s, v, rows, cols, depth, out, ldo, accumulate) };
            return;
        }
    }
    portable(s, v, 0..rows, 0..cols, depth, out, ldo, accumulate);
}

#[allow(clippy::too_many_arguments)]
fn portable(
    s: Scalars<'_>,
    v: Rows<'_>,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    depth: usize,
    out: &mut [f32],
    ldo: usize,
    accumulate: bool,
) {
    let width = cols.len();
    let mut acc = vec![0f32; width];
    for r in rows {
        acc.fill(0.0);
        for p in 0..depth {
            let sv = s.data[r * s.rs + p * s.ps];
            let vrow = &v.data[p * v.ld + cols.start..p * v.ld + cols.end];
            for (a, &x) in acc.iter_mut().zip(vrow) {
                *a += sv * x;
            }
        }
        let dst = &mut out[r * ldo + cols.start..r * ldo + cols.end];
        if accumulate {
            for (d, a) in dst.iter_mut().zip(&acc) {
                *d += a;
            }
        } else {
            dst.copy_from_slice(&acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{portable, Rows, Scalars};

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn product(
        s: Scalars<'_>,
        v: Rows<'_>,
        rows: usize,
        cols: usize,
        depth: usize,
        out: &mut [f32],
        ldo: usize,
        acc: bool,
    ) {
        // 6 rows × 16 columns: 12 accumulators + 2 row vectors + 1 broadcast fill the 16 AVX
        // registers (measured fastest of 1–6 rows × 8–64 columns for both products).
        tiles::<6, 2>(s, v, rows, cols, depth, out, ldo, acc)
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    fn tiles<const R: usize, const V: usize>(
        s: Scalars<'_>,
        v: Rows<'_>,
        rows: usize,
        cols: usize,
        depth: usize,
        out: &mut [f32],
        ldo: usize,
        acc: bool,
    ) {
        let tc = 8 * V;
        let full_cols = cols / tc * tc;
        let full_rows = rows / R * R;
        debug_assert!(R <= 6, "remainder tiles cover at most 5 rows");
        for c0 in (0..full_cols).step_by(tc) {
            for r0 in (0..full_rows).step_by(R) {
                // SAFETY: bounds were asserted by the caller for all r < rows, c < cols, p < depth.
                unsafe { tile::<R, V>(s, v, r0, c0, depth, out, ldo, acc) };
            }
            // SAFETY: as above.
            unsafe {
                match rows - full_rows {
                    1 => tile::<1, V>(s, v, full_rows, c0, depth, out, ldo, acc),
                    2 => tile::<2, V>(s, v, full_rows, c0, depth, out, ldo, acc),
                    3 => tile::<3, V>(s, v, full_rows, c0, depth, out, ldo, acc),
                    4 => tile::<4, V>(s, v, full_rows, c0, depth, out, ldo, acc),
                    5 => tile::<5, V>(s, v, full_rows, c0, depth, out, ldo, acc),
                    _ => {}
                }
            }
        }
        if full_cols < cols {
            portable(s, v, 0..rows, full_cols..cols, depth, out, ldo, acc);
        }
    }

    /// One `R × 8V` tile kept in registers for the whole depth loop.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const V: usize>(
        s: Scalars<'_>,
        v: Rows<'_>,
        r0: usize,
        c0: usize,
        depth: usize,
        out: &mut [f32],
        ldo: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        let sp = s.data.as_ptr().add(r0 * s.rs);
        let vp = v.data.as_ptr().add(c0);
        for p in 0..depth {
            let vrow = vp.add(p * v.ld);
            let mut vv = [_mm256_setzero_ps(); V];
            for (k, x) in vv.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(vrow.add(8 * k));
            }
            let sc = sp.add(p * s.ps);
            for (r, a) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*sc.add(r * s.rs));
                for k in 0..V {
                    a[k] = _mm256_fmadd_ps(x, vv[k], a[k]);
                }
            }
        }
        let op = out.as_mut_ptr().add(r0 * ldo + c0);
        for (r, a) in acc.iter().enumerate() {
            for (k, x) in a.iter().enumerate() {
                let dst = op.add(r * ldo + 8 * k);
                let x = if accumulate {
                    _mm256_add_ps(_mm256_loadu_ps(dst), *x)
                } else {
                    *x
                };
                _mm256_storeu_ps(dst, x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_products_with_ragged_sizes() {
        let (b, d, h) = (7, 37, 35);
        let x: Vec<f32> = (0..b * d)
            .map(|i| ((i * 7919) % 13) as f32 * 0.25 - 1.5)
            .collect();
        let w: Vec<f32> = (0..d * h)
            .map(|i| ((i * 104729) % 11) as f32 * 0.125 - 0.6)
            .collect();
        // x · W
        let mut out = vec![f32::NAN; b * h];
        let s = Scalars {
            data: &x,
            rs: d,
            ps: 1,
        };
        tile_product(s, Rows { data: &w, ld: h }, b, h, d, &mut out, h, false);
        for r in 0..b {
            for c in 0..h {
                let want: f32 = (0..d).map(|p| x[r * d + p] * w[p * h + c]).sum();
                assert!((out[r * h + c] - want).abs() < 1e-3, "{r},{c}");
            }
        }
        // xᵀ · dh over a row window
        let dh: Vec<f32> = (0..b * h).map(|i| ((i * 31) % 7) as f32 - 3.0).collect();
        let (i0, n) = (5, 30);
        let mut g = vec![f32::NAN; n * h];
        let s = Scalars {
            data: &x[i0..],
            rs: 1,
            ps: d,
        };
        tile_product(s, Rows { data: &dh, ld: h }, n, h, b, &mut g, h, false);
        for r in 0..n {
            for c in 0..h {
                let want: f32 = (0..b).map(|p| x[p * d + i0 + r] * dh[p * h + c]).sum();
                assert!((g[r * h + c] - want).abs() < 1e-3, "{r},{c}");
            }
        }
    }
}
