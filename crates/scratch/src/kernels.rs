//! Per-image compute kernels on HWC `f32` buffers: the 3×3 stride-1 "valid" convolution as
//! im2col + one matrix product (and the adjoint col2im), bias + ReLU, 2×2 stride-2 max pooling
//! with its argmax, and column sums for bias gradients.

/// Height, width and channels of one HWC image or feature map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hwc {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Hwc {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// True when the map holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The output of a 3×3 valid convolution with `cout` filters (`h − 2`, `w − 2`).
    pub fn conv_valid(self, cout: usize) -> Hwc {
        Hwc {
            h: self.h.saturating_sub(2),
            w: self.w.saturating_sub(2),
            c: cout,
        }
    }

    /// The output of a 2×2 stride-2 max pool (odd sizes round down, like Keras `valid` pooling).
    pub fn pooled(self) -> Hwc {
        Hwc {
            h: self.h / 2,
            w: self.w / 2,
            c: self.c,
        }
    }
}

/// The im2col matrix of a 3×3 valid convolution of `x` (shape `d`): `[(h−2)·(w−2), 9·c]`, one row
/// per output pixel, taps in `(ky, kx)` order with channels innermost (the row-major order of a
/// Keras `[3, 3, c, cout]` kernel). `cols` must hold exactly that many values.
pub fn im2col_valid(x: &[f32], d: Hwc, cols: &mut [f32]) {
    let o = d.conv_valid(0);
    let (c, k) = (d.c, 9 * d.c);
    debug_assert_eq!(x.len(), d.len());
    debug_assert_eq!(cols.len(), o.h * o.w * k);
    for oy in 0..o.h {
        for ox in 0..o.w {
            let row = &mut cols[(oy * o.w + ox) * k..][..k];
            for ky in 0..3 {
                // Taps (ky, 0..3) are 3·c consecutive input values.
                let src = ((oy + ky) * d.w + ox) * c;
                let (to, from) = (&mut row[ky * 3 * c..(ky + 1) * 3 * c], &x[src..src + 3 * c]);
                if c == 3 {
                    // RGB input: a fixed-size copy instead of a `memcpy` call per 9 values.
                    let from: &[f32; 9] = from.try_into().unwrap_or(&[0.0; 9]);
                    if let Ok(to) = <&mut [f32; 9]>::try_from(to) {
                        *to = *from;
                    }
                } else {
                    to.copy_from_slice(from);
                }
            }
        }
    }
}

/// The adjoint of [`im2col_valid`]: adds every tap of `dcols` back onto the input value it was
/// read from (`dx` has shape `d` and is accumulated into).
pub fn col2im_valid(dcols: &[f32], d: Hwc, dx: &mut [f32]) {
    let o = d.conv_valid(0);
    let (c, k) = (d.c, 9 * d.c);
    debug_assert_eq!(dx.len(), d.len());
    debug_assert_eq!(dcols.len(), o.h * o.w * k);
    for oy in 0..o.h {
        for ox in 0..o.w {
            let row = &dcols[(oy * o.w + ox) * k..][..k];
            for ky in 0..3 {
                let dst = ((oy + ky) * d.w + ox) * c;
                for (v, g) in dx[dst..dst + 3 * c]
                    .iter_mut()
                    .zip(&row[ky * 3 * c..(ky + 1) * 3 * c])
                {
                    *v += g;
                }
            }
        }
    }
}

/// Adds `bias` to every row of `y` (`[rows, bias.len()]`) and applies ReLU when `relu` is set.
pub fn bias_relu(y: &mut [f32], bias: &[f32], relu: bool) {
    for row in y.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let s = *v + b;
            // `s < 0` is false for NaN, so a NaN propagates (and is detected as divergence).
            *v = if relu && s < 0.0 { 0.0 } else { s };
        }
    }
}

/// Adds the column sums of `m` (`[rows, acc.len()]`) to `acc`.
pub fn add_column_sums(m: &[f32], acc: &mut [f32]) {
    for row in m.chunks_exact(acc.len()) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// 2×2 stride-2 max pooling of `x` (shape `d`; rows and columns beyond an even size are
/// dropped). Writes the pooled values to `out` and, for each, the index in `x` it came from (the
/// first maximum in row-major window order) to `arg`.
pub fn maxpool2x2(x: &[f32], d: Hwc, out: &mut [f32], arg: &mut [u32]) {
    let o = d.pooled();
    let c = d.c;
    debug_assert_eq!(out.len(), o.len());
    debug_assert_eq!(arg.len(), o.len());
    for oy in 0..o.h {
        for ox in 0..o.w {
            let dst = (oy * o.w + ox) * c;
            let i00 = (2 * oy * d.w + 2 * ox) * c;
            let (i01, i10) = (i00 + c, i00 + d.w * c);
            let i11 = i10 + c;
            let (a, b) = (&x[i00..i00 + c], &x[i01..i01 + c]);
            let (e, f) = (&x[i10..i10 + c], &x[i11..i11 + c]);
            let (out, arg) = (&mut out[dst..dst + c], &mut arg[dst..dst + c]);
            for ch in 0..c {
                // Window order (0,0), (0,1), (1,0), (1,1); ties keep the first.
                let (mut m, mut k) = (a[ch], i00);
                if b[ch] > m {
                    (m, k) = (b[ch], i01);
                }
                if e[ch] > m {
                    (m, k) = (e[ch], i10);
                }
                if f[ch] > m {
                    (m, k) = (f[ch], i11);
                }
                out[ch] = m;
                arg[ch] = (k + ch) as u32;
            }
        }
    }
}

/// Gradient of ReLU followed by [`maxpool2x2`], in one step: each pooled gradient goes to the
/// input its maximum came from, unless that (post-ReLU) maximum was not positive. `dx` (the
/// gradient of the pre-activation, input-sized) is overwritten.
pub fn maxpool_relu_backward(grad: &[f32], pooled: &[f32], arg: &[u32], dx: &mut [f32]) {
    dx.fill(0.0);
    for ((&g, &p), &a) in grad.iter().zip(pooled).zip(arg) {
        if p > 0.0 {
            dx[a as usize] += g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn im2col_and_col2im_are_adjoint() {
        let d = Hwc { h: 5, w: 6, c: 2 };
        let o = d.conv_valid(0);
        let x: Vec<f32> = (0..d.len()).map(|i| (i as f32 * 0.3).sin()).collect();
        let y: Vec<f32> = (0..o.h * o.w * 9 * d.c)
            .map(|i| (i as f32 * 0.7).cos())
            .collect();
        let mut cols = vec![0f32; y.len()];
        im2col_valid(&x, d, &mut cols);
        // Row (1, 2), tap (ky 2, kx 1), channel 1 reads input (3, 3, 1).
        assert_eq!(
            cols[(o.w + 2) * 18 + (2 * 3 + 1) * 2 + 1],
            x[(3 * 6 + 3) * 2 + 1]
        );
        let mut back = vec![0f32; d.len()];
        col2im_valid(&y, d, &mut back);
        let lhs: f64 = cols
            .iter()
            .zip(&y)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(&back)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }

    #[test]
    fn pooling_picks_the_maximum_and_drops_odd_edges() {
        let d = Hwc { h: 3, w: 5, c: 1 };
        let x: Vec<f32> = vec![
            1., 5., 2., 0., 9., //
            3., 4., 8., 1., 9., //
            9., 9., 9., 9., 9.,
        ];
        let mut out = vec![0f32; 2];
        let mut arg = vec![0u32; 2];
        maxpool2x2(&x, d, &mut out, &mut arg);
        assert_eq!(out, vec![5., 8.]);
        assert_eq!(arg, vec![1, 7]);
        let mut dx = vec![1f32; x.len()];
        maxpool_relu_backward(&[2.0, 3.0], &out, &arg, &mut dx);
        let mut want = vec![0f32; x.len()];
        want[1] = 2.0;
        want[7] = 3.0;
        assert_eq!(dx, want);
    }
}
