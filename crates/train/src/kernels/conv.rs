//! Convolution-network kernels on NHWC `f32` buffers, shared by stage 1 (valid convolutions, one
//! image at a time) and fine-tuning (same-padded convolutions over a batch): the 3×3 stride-1
//! convolution as im2col + one matrix product with a padding parameter (and the adjoint col2im),
//! bias + ReLU, 2×2 stride-2 max pooling with where each maximum came from and its gradient,
//! column sums, and the layout changes between ONNX weights/maps and the im2col forms.

/// Shape of an NHWC batch (one image: `n = 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Nhwc {
    /// One `h × w × c` image.
    pub fn image(h: usize, w: usize, c: usize) -> Nhwc {
        Nhwc { n: 1, h, w, c }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    /// True when the batch holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of pixels (rows of the im2col matrix of a same-padded convolution).
    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// The same batch with `c` channels.
    pub fn with_channels(self, c: usize) -> Nhwc {
        Nhwc { c, ..self }
    }

    /// The output of a 3×3 stride-1 convolution with `cout` filters and `pad` pixels of zero
    /// padding on every side (`pad` 0: valid, 1: same).
    pub fn conv3x3(self, cout: usize, pad: usize) -> Nhwc {
        Nhwc {
            n: self.n,
            h: (self.h + 2 * pad).saturating_sub(2),
            w: (self.w + 2 * pad).saturating_sub(2),
            c: cout,
        }
    }

    /// The shape after a 2×2 stride-2 max pool (odd sizes round down, like Keras `valid` pooling).
    pub fn pooled(self) -> Nhwc {
        Nhwc {
            h: self.h / 2,
            w: self.w / 2,
            ..self
        }
    }
}

/// The im2col matrix of a 3×3 stride-1 convolution of `x` (shape `d`) with `pad` pixels of zero
/// padding: one row per output pixel (batch, then row-major), `9·c` columns with taps in `(ky, kx)`
/// order and channels innermost (the row-major order of a Keras `[3, 3, c, cout]` kernel). Taps
/// outside the image are 0. `cols` must hold exactly `d.conv3x3(_, pad).pixels() · 9c` values.
pub fn im2col3x3(x: &[f32], d: Nhwc, pad: usize, cols: &mut [f32]) {
    let o = d.conv3x3(0, pad);
    let (c, k) = (d.c, 9 * d.c);
    debug_assert_eq!(x.len(), d.len());
    debug_assert_eq!(cols.len(), o.pixels() * k);
    for (r, row) in cols.chunks_exact_mut(k).enumerate() {
        let (ox, oy, b) = (r % o.w, (r / o.w) % o.h, r / (o.w * o.h));
        for ky in 0..3 {
            let taps = &mut row[ky * 3 * c..(ky + 1) * 3 * c];
            let sy = (oy + ky).wrapping_sub(pad);
            if sy >= d.h {
                taps.fill(0.0);
                continue;
            }
            let line = (b * d.h + sy) * d.w;
            if ox >= pad && ox + 3 - pad <= d.w {
                // The three taps are 3·c consecutive input values.
                let src = (line + ox - pad) * c;
                taps.copy_from_slice(&x[src..src + 3 * c]);
                continue;
            }
            for kx in 0..3 {
                let tap = &mut taps[kx * c..(kx + 1) * c];
                let sx = (ox + kx).wrapping_sub(pad);
                if sx >= d.w {
                    tap.fill(0.0);
                } else {
                    let src = (line + sx) * c;
                    tap.copy_from_slice(&x[src..src + c]);
                }
            }
        }
    }
}

/// The adjoint of [`im2col3x3`]: adds every tap of `dcols` back onto the input value it was read
/// from, in output-pixel then tap order (`dx` has shape `d` and is accumulated into).
pub fn col2im3x3(dcols: &[f32], d: Nhwc, pad: usize, dx: &mut [f32]) {
    let o = d.conv3x3(0, pad);
    let (c, k) = (d.c, 9 * d.c);
    debug_assert_eq!(dx.len(), d.len());
    debug_assert_eq!(dcols.len(), o.pixels() * k);
    for (r, row) in dcols.chunks_exact(k).enumerate() {
        let (ox, oy, b) = (r % o.w, (r / o.w) % o.h, r / (o.w * o.h));
        for ky in 0..3 {
            let sy = (oy + ky).wrapping_sub(pad);
            if sy >= d.h {
                continue;
            }
            let line = (b * d.h + sy) * d.w;
            for kx in 0..3 {
                let sx = (ox + kx).wrapping_sub(pad);
                if sx >= d.w {
                    continue;
                }
                let dst = (line + sx) * c;
                let tap = (ky * 3 + kx) * c;
                for (v, g) in dx[dst..dst + c].iter_mut().zip(&row[tap..tap + c]) {
                    *v += g;
                }
            }
        }
    }
}

/// ONNX conv weights `[out, in, 3, 3]` as the im2col weight matrix `[9·in, out]`.
pub fn onnx_to_matrix(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut m = vec![0f32; w.len()];
    for o in 0..cout {
        for c in 0..cin {
            for t in 0..9 {
                m[(t * cin + c) * cout + o] = w[(o * cin + c) * 9 + t];
            }
        }
    }
    m
}

/// The inverse of [`onnx_to_matrix`]: `[9·in, out]` back to `[out, in, 3, 3]`.
pub fn matrix_to_onnx(m: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut w = vec![0f32; m.len()];
    for o in 0..cout {
        for c in 0..cin {
            for t in 0..9 {
                w[(o * cin + c) * 9 + t] = m[(t * cin + c) * cout + o];
            }
        }
    }
    w
}

/// Adds `bias` to every row of `y` (`[rows, bias.len()]`) and applies ReLU when `relu` is set.
pub fn bias_relu(y: &mut [f32], bias: &[f32], relu: bool) {
    for row in y.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let s = *v + b;
            // `s < 0` is false for NaN, so a NaN propagates (like ONNX Relu, and is detected as
            // divergence) instead of turning into 0.
            *v = if relu && s < 0.0 { 0.0 } else { s };
        }
    }
}

/// Zeroes the gradient where the ReLU output was not positive (in place).
pub fn relu_backward(grad: &mut [f32], out: &[f32]) {
    for (g, &o) in grad.iter_mut().zip(out) {
        if o <= 0.0 {
            *g = 0.0;
        }
    }
}

/// Column sums of a `[rows, cols]` matrix (a bias gradient over a batch), accumulated in `f64`.
pub fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let mut acc = vec![0f64; cols];
    for row in m.chunks_exact(cols) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// Adds the column sums of `m` (`[rows, acc.len()]`) to `acc` in `f32` (per-image bias gradients
/// summed image by image).
pub fn add_column_sums(m: &[f32], acc: &mut [f32]) {
    for row in m.chunks_exact(acc.len()) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// 2×2 stride-2 max pooling of `x` (shape `d`; rows and columns beyond an even size are dropped).
/// Writes the pooled values to `out` and, for each, where in its window it came from to `arg`
/// (0 to 3 for (0,0), (0,1), (1,0), (1,1): the first maximum in that order; a NaN first value
/// stays). Channels are innermost, so the comparisons run as vectors.
pub fn maxpool2x2(x: &[f32], d: Nhwc, out: &mut [f32], arg: &mut [u8]) {
    let o = d.pooled();
    let c = d.c;
    debug_assert_eq!(out.len(), o.len());
    debug_assert_eq!(arg.len(), o.len());
    for b in 0..o.n {
        for oy in 0..o.h {
            for ox in 0..o.w {
                let dst = ((b * o.h + oy) * o.w + ox) * c;
                let i00 = ((b * d.h + 2 * oy) * d.w + 2 * ox) * c;
                let i10 = i00 + d.w * c;
                let (p, q) = (&x[i00..i00 + c], &x[i00 + c..i00 + 2 * c]);
                let (r, s) = (&x[i10..i10 + c], &x[i10 + c..i10 + 2 * c]);
                let (out, arg) = (&mut out[dst..dst + c], &mut arg[dst..dst + c]);
                for ch in 0..c {
                    let (mut m, mut k) = (p[ch], 0u8);
                    if q[ch] > m {
                        (m, k) = (q[ch], 1);
                    }
                    if r[ch] > m {
                        (m, k) = (r[ch], 2);
                    }
                    if s[ch] > m {
                        (m, k) = (s[ch], 3);
                    }
                    out[ch] = m;
                    arg[ch] = k;
                }
            }
        }
    }
}

/// Gradient of [`maxpool2x2`] (with `relu`: of ReLU followed by it): each pooled gradient goes to
/// the input its maximum came from — unless, with `relu`, that maximum (the pooled value) was not
/// positive. `dx` (input-sized, shape `d`) is overwritten.
pub fn maxpool2x2_backward(
    grad: &[f32],
    pooled: &[f32],
    arg: &[u8],
    d: Nhwc,
    relu: bool,
    dx: &mut [f32],
) {
    let o = d.pooled();
    let c = d.c;
    debug_assert_eq!(dx.len(), d.len());
    if d.h % 2 == 1 || d.w % 2 == 1 {
        // Rows and columns the windows do not cover get no gradient.
        dx.fill(0.0);
    }
    for b in 0..o.n {
        for oy in 0..o.h {
            for ox in 0..o.w {
                let src = ((b * o.h + oy) * o.w + ox) * c;
                let i00 = ((b * d.h + 2 * oy) * d.w + 2 * ox) * c;
                let i10 = i00 + d.w * c;
                let (g, v, a) = (
                    &grad[src..src + c],
                    &pooled[src..src + c],
                    &arg[src..src + c],
                );
                let (top, bottom) = dx.split_at_mut(i10);
                let (p, q) = top[i00..i00 + 2 * c].split_at_mut(c);
                let (r, s) = bottom[..2 * c].split_at_mut(c);
                let pass = |g: f32, v: f32| if relu && v <= 0.0 { 0.0 } else { g };
                let window = p
                    .iter_mut()
                    .zip(q.iter_mut())
                    .zip(r.iter_mut())
                    .zip(s.iter_mut());
                for ((((p, q), r), s), ((&g, &v), &k)) in window.zip(g.iter().zip(v).zip(a)) {
                    let gv = pass(g, v);
                    *p = if k == 0 { gv } else { 0.0 };
                    *q = if k == 1 { gv } else { 0.0 };
                    *r = if k == 2 { gv } else { 0.0 };
                    *s = if k == 3 { gv } else { 0.0 };
                }
            }
        }
    }
}

/// NCHW `[n, c, h, w]` values as NHWC.
pub fn nchw_to_nhwc(x: &[f32], d: Nhwc) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let plane = d.h * d.w;
    for b in 0..d.n {
        for c in 0..d.c {
            let src = &x[(b * d.c + c) * plane..(b * d.c + c + 1) * plane];
            for (p, &v) in src.iter().enumerate() {
                out[(b * plane + p) * d.c + c] = v;
            }
        }
    }
    out
}

/// NHWC values as NCHW `[n, c, h, w]`.
pub fn nhwc_to_nchw(x: &[f32], d: Nhwc) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let plane = d.h * d.w;
    for b in 0..d.n {
        for p in 0..plane {
            for c in 0..d.c {
                out[(b * d.c + c) * plane + p] = x[(b * plane + p) * d.c + c];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_adjoint(d: Nhwc, pad: usize) {
        let o = d.conv3x3(0, pad);
        let x: Vec<f32> = (0..d.len()).map(|i| (i as f32 * 0.3).sin()).collect();
        let y: Vec<f32> = (0..o.pixels() * 9 * d.c)
            .map(|i| (i as f32 * 0.7).cos())
            .collect();
        let mut cols = vec![7f32; y.len()];
        im2col3x3(&x, d, pad, &mut cols);
        let mut back = vec![0f32; d.len()];
        col2im3x3(&y, d, pad, &mut back);
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(p, q)| (*p as f64) * (*q as f64))
                .sum()
        };
        let (lhs, rhs) = (dot(&cols, &y), dot(&x, &back));
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }

    #[test]
    fn im2col_and_col2im_are_adjoint_valid_and_same() {
        check_adjoint(Nhwc::image(5, 6, 2), 0);
        check_adjoint(
            Nhwc {
                n: 2,
                h: 4,
                w: 5,
                c: 3,
            },
            1,
        );
    }

    #[test]
    fn taps_read_the_right_pixels_and_padding_is_zero() {
        let d = Nhwc::image(5, 6, 2);
        let x: Vec<f32> = (0..d.len()).map(|i| i as f32 + 1.0).collect();
        let o = d.conv3x3(0, 0);
        let mut cols = vec![0f32; o.pixels() * 18];
        im2col3x3(&x, d, 0, &mut cols);
        // Row (1, 2), tap (ky 2, kx 1), channel 1 reads input (3, 3, 1).
        assert_eq!(
            cols[(o.w + 2) * 18 + (2 * 3 + 1) * 2 + 1],
            x[(3 * 6 + 3) * 2 + 1]
        );
        let mut same = vec![9f32; d.pixels() * 18];
        im2col3x3(&x, d, 1, &mut same);
        // Output pixel (0, 0): the top row and left column of taps are padding.
        assert!(same[..6].iter().all(|&v| v == 0.0));
        assert_eq!(same[4 * 2], x[0]);
    }

    #[test]
    fn pooling_picks_the_first_maximum_and_drops_odd_edges() {
        let d = Nhwc::image(3, 5, 1);
        let x: Vec<f32> = vec![
            1., 5., 2., 0., 9., //
            3., 4., 8., 1., 9., //
            9., 9., 9., 9., 9.,
        ];
        let mut out = vec![0f32; 2];
        let mut arg = vec![0u8; 2];
        maxpool2x2(&x, d, &mut out, &mut arg);
        // Windows: (1, 5 / 3, 4) → 5 at (0, 1); (2, 0 / 8, 1) → 8 at (1, 0).
        assert_eq!((out.clone(), arg.clone()), (vec![5., 8.], vec![1, 2]));
        let mut dx = vec![1f32; x.len()];
        maxpool2x2_backward(&[2.0, 3.0], &out, &arg, d, true, &mut dx);
        let mut want = vec![0f32; x.len()];
        want[1] = 2.0;
        want[7] = 3.0;
        assert_eq!(dx, want);
        // With ReLU a non-positive maximum passes no gradient; without, it does.
        let neg = [-1.0, -2.0];
        maxpool2x2_backward(&[2.0, 3.0], &neg, &arg, d, true, &mut dx);
        assert!(dx.iter().all(|&v| v == 0.0));
        maxpool2x2_backward(&[2.0, 3.0], &neg, &arg, d, false, &mut dx);
        assert_eq!(dx, want);
    }
}
