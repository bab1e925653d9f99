//! The single resampling pass: every output pixel reads its input position through an [`Affine`]
//! with bilinear interpolation (scipy `order=1`), and positions outside the image follow the
//! [`FillMode`].

use super::{Affine, FillMode, ImageF32};

/// How far (in pixels) outside the image a position may fall and still count as on the edge in
/// `constant` mode, so that exact transforms (90° turns, flips) computed in floating point do not
/// lose their border pixels to `cval`.
const EDGE_TOLERANCE: f64 = 1e-6;

/// Resamples `src` into `dst` (made the same size as `src`): output pixel `(row, col)` gets the
/// bilinear interpolation of `src` at `affine.map(row, col)`.
pub fn warp_affine(src: &ImageF32, affine: &Affine, fill: FillMode, cval: f32, dst: &mut ImageF32) {
    dst.reshape(src.width, src.height);
    let (w, h) = (src.width as usize, src.height as usize);
    if w == 0 || h == 0 {
        return;
    }
    if affine.is_identity() {
        dst.data.copy_from_slice(&src.data);
        return;
    }
    let [[a, b, c], [d, e, f]] = affine.m;
    let stride = w * 3;
    let s = &src.data[..h * stride];
    let border = Border {
        s,
        w,
        h,
        fill,
        cval,
    };
    for (r, out_row) in dst.data.chunks_exact_mut(stride).enumerate() {
        let base_y = a * r as f64 + c;
        let base_x = d * r as f64 + f;
        for (col, px) in out_row.chunks_exact_mut(3).enumerate() {
            let y = base_y + b * col as f64;
            let x = base_x + e * col as f64;
            // Truncation equals floor for the non-negative positions of the fast path (and avoids
            // a libm call where the target lacks SSE4.1 `roundsd`).
            let (iy, ix) = (y as isize, x as isize);
            if y >= 0.0 && x >= 0.0 && (iy as usize) + 1 < h && (ix as usize) + 1 < w {
                let (fy, fx) = ((y - iy as f64) as f32, (x - ix as f64) as f32);
                let i00 = (iy as usize * w + ix as usize) * 3;
                let top = &s[i00..i00 + 6];
                let bottom = &s[i00 + stride..i00 + stride + 6];
                for ch in 0..3 {
                    let t = top[ch] + fx * (top[ch + 3] - top[ch]);
                    let u = bottom[ch] + fx * (bottom[ch + 3] - bottom[ch]);
                    px[ch] = t + fy * (u - t);
                }
            } else {
                border.sample(y, x, px);
            }
        }
    }
}

/// Sampling near or beyond the edges, where taps need the fill mode.
struct Border<'a> {
    s: &'a [f32],
    w: usize,
    h: usize,
    fill: FillMode,
    cval: f32,
}

impl Border<'_> {
    fn sample(&self, y: f64, x: f64, px: &mut [f32]) {
        let (hm, wm) = ((self.h - 1) as f64, (self.w - 1) as f64);
        if self.fill == FillMode::Constant
            && (y < -EDGE_TOLERANCE
                || y > hm + EDGE_TOLERANCE
                || x < -EDGE_TOLERANCE
                || x > wm + EDGE_TOLERANCE)
        {
            px.fill(self.cval);
            return;
        }
        let (iy, ix) = (floor(y), floor(x));
        let (fy, fx) = ((y - iy as f64) as f32, (x - ix as f64) as f32);
        let (r0, r1) = (self.index(iy, self.h), self.index(iy + 1, self.h));
        let (c0, c1) = (self.index(ix, self.w), self.index(ix + 1, self.w));
        let at = |r: usize, c: usize| (r * self.w + c) * 3;
        let (p00, p01, p10, p11) = (at(r0, c0), at(r0, c1), at(r1, c0), at(r1, c1));
        for (ch, out) in px.iter_mut().enumerate() {
            let t = self.s[p00 + ch] + fx * (self.s[p01 + ch] - self.s[p00 + ch]);
            let u = self.s[p10 + ch] + fx * (self.s[p11 + ch] - self.s[p10 + ch]);
            *out = t + fy * (u - t);
        }
    }

    /// Maps a tap index that may lie outside `0..n` to a pixel index, per fill mode.
    fn index(&self, i: i64, n: usize) -> usize {
        let n = n as i64;
        let j = match self.fill {
            // Constant positions are already known to be inside (up to the tolerance).
            FillMode::Nearest | FillMode::Constant => i.clamp(0, n - 1),
            FillMode::Reflect => {
                let m = i.rem_euclid(2 * n);
                if m >= n {
                    2 * n - 1 - m
                } else {
                    m
                }
            }
            FillMode::Wrap => i.rem_euclid(n),
        };
        j as usize
    }
}

/// `v.floor()` as an integer without the libm call (positions are far inside the `i64` range;
/// NaN maps to 0).
#[inline]
fn floor(v: f64) -> i64 {
    let t = v as i64;
    if (t as f64) > v {
        t - 1
    } else {
        t
    }
}
