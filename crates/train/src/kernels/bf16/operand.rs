//! The operands the bf16 products read without materialising them: a plain matrix view, the
//! im2col matrix of a 3×3 convolution over an NHWC batch (and its transpose), and a conv weight
//! matrix read with its taps flipped and its channels swapped (the input-gradient convolution's
//! weights). Each gives its logical shape and contiguous runs of its values.

use super::super::conv::Nhwc;
use super::super::matmul::MatRef;

/// Logical element `(i, j)` of a plain view is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    pub fn of(m: MatRef<'a>) -> Self {
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

/// The im2col matrix of a 3×3 stride-1 convolution of `x` (shape `d`, NHWC) with `pad` pixels of
/// zero padding: one row per output pixel (batch, then row-major), `9·c` columns, taps `(ky, kx)`
/// in row-major order and channels innermost (the layout of [`super::super::conv::im2col3x3`]).
#[derive(Clone, Copy)]
pub struct ConvView<'a> {
    pub x: &'a [f32],
    pub d: Nhwc,
    pub pad: usize,
}

/// An output pixel's position, advanced pixel by pixel without divisions.
#[derive(Clone, Copy)]
pub struct Pixel {
    b: usize,
    oy: usize,
    ox: usize,
}

impl<'a> ConvView<'a> {
    /// The output map (channels: 0).
    #[inline]
    pub fn out(&self) -> Nhwc {
        self.d.conv3x3(0, self.pad)
    }

    /// Rows of the im2col matrix (output pixels).
    #[inline]
    pub fn pixels(&self) -> usize {
        self.out().pixels()
    }

    /// Columns of the im2col matrix.
    #[inline]
    pub fn depth(&self) -> usize {
        9 * self.d.c
    }

    /// Output pixel `p`.
    #[inline]
    pub fn pixel(&self, p: usize) -> Pixel {
        let o = self.out();
        Pixel {
            ox: p % o.w,
            oy: (p / o.w) % o.h,
            b: p / (o.w * o.h),
        }
    }

    /// The pixel after `q`.
    #[inline]
    pub fn next(&self, q: Pixel) -> Pixel {
        let o = self.out();
        let mut q = q;
        q.ox += 1;
        if q.ox == o.w {
            q.ox = 0;
            q.oy += 1;
            if q.oy == o.h {
                q.oy = 0;
                q.b += 1;
            }
        }
        q
    }

    /// The index in `x` of channel 0 of tap `t` of output pixel `q`; `None` in the padding or
    /// past the last pixel.
    #[inline]
    pub fn tap(&self, q: Pixel, t: usize) -> Option<usize> {
        let d = self.d;
        let sy = (q.oy + t / 3).wrapping_sub(self.pad);
        let sx = (q.ox + t % 3).wrapping_sub(self.pad);
        (q.b < d.n && sy < d.h && sx < d.w).then(|| ((q.b * d.h + sy) * d.w + sx) * d.c)
    }

    /// Columns `k0..k0 + len` of the row of pixel `q` (`len ≥ 1`) when they need no gathering:
    /// `Some(Some(i))` when they are `x[i..i + len]` (taps of one kernel row, all inside the
    /// image), `Some(None)` when they are all padding, `None` otherwise.
    #[inline]
    pub fn row_slice(&self, q: Pixel, k0: usize, len: usize) -> Option<Option<usize>> {
        let c = self.d.c;
        let (t0, t1) = (k0 / c, (k0 + len - 1) / c);
        let first = self.tap(q, t0);
        if t0 == t1 {
            return Some(first.map(|src| src + k0 % c));
        }
        if t0 / 3 != t1 / 3 {
            return (t0..=t1).all(|t| self.tap(q, t).is_none()).then_some(None);
        }
        // Taps of one kernel row are consecutive pixels of one image row.
        match (first, self.tap(q, t1)) {
            (Some(src), Some(_)) => Some(Some(src + k0 % c)),
            (None, None) if t1 - t0 == 1 || self.tap(q, t0 + 1).is_none() => Some(None),
            _ => None,
        }
    }

    /// Writes columns `k0..k0 + out.len()` of the row of pixel `q` into `out`: per kernel row,
    /// the taps inside the image as one copy (they are consecutive pixels), the rest zeros.
    #[inline]
    pub fn row_run(&self, q: Pixel, k0: usize, out: &mut [f32]) {
        let (d, c) = (self.d, self.d.c);
        let end = k0 + out.len();
        let mut k = k0;
        while k < end {
            let ky = k / (3 * c);
            let row_end = ((ky + 1) * 3 * c).min(end);
            let sy = (q.oy + ky).wrapping_sub(self.pad);
            if q.b >= d.n || sy >= d.h {
                out[k - k0..row_end - k0].fill(0.0);
                k = row_end;
                continue;
            }
            let line = (q.b * d.h + sy) * d.w;
            while k < row_end {
                let kx = (k / c) % 3;
                let sx = (q.ox + kx).wrapping_sub(self.pad);
                let mut n = (((k / c) + 1) * c).min(row_end) - k;
                if sx >= d.w {
                    out[k - k0..k - k0 + n].fill(0.0);
                } else {
                    // Following taps of this kernel row that are inside the image continue the run.
                    let mut next = kx + 1;
                    while k + n < row_end && (q.ox + next).wrapping_sub(self.pad) < d.w {
                        n += c.min(row_end - k - n);
                        next += 1;
                    }
                    let src = (line + sx) * c + k % c;
                    copy_short(&self.x[src..src + n], &mut out[k - k0..k - k0 + n]);
                }
                k += n;
            }
        }
    }
}

/// A conv weight matrix `w` (`[9·cin, cout]`, taps outer, input channels inner) read as the
/// weights of the input-gradient convolution: `[9·cout, cin]` with the taps in reverse order
/// (`(ky, kx)` → `(2 − ky, 2 − kx)`), element `(t·cout + co, ci) = w[((8 − t)·cin + ci)·cout + co]`.
#[derive(Clone, Copy)]
pub struct Flipped<'a> {
    pub w: &'a [f32],
    pub cin: usize,
    pub cout: usize,
}

impl Flipped<'_> {
    /// Writes rows `k0..k0 + out.len()` of column `ci` into `out`.
    #[inline]
    pub fn column_run(&self, ci: usize, k0: usize, out: &mut [f32]) {
        let (cin, cout) = (self.cin, self.cout);
        let mut k = k0;
        let end = k0 + out.len();
        while k < end {
            let (t, co) = (k / cout, k % cout);
            let n = (cout - co).min(end - k);
            let src = ((8 - t) * cin + ci) * cout + co;
            copy_short(&self.w[src..src + n], &mut out[k - k0..k - k0 + n]);
            k += n;
        }
    }

    /// Rows `k0..k0 + len` of column `ci` when they lie in one tap: their index in `w`.
    #[inline]
    pub fn column_slice(&self, ci: usize, k0: usize, len: usize) -> Option<usize> {
        let (t, co) = (k0 / self.cout, k0 % self.cout);
        (co + len <= self.cout).then(|| ((8 - t) * self.cin + ci) * self.cout + co)
    }
}

/// `dst = src` without a library call for the few values of a tap's channel run (a `memcpy`
/// call per 3 or 12 values costs more than the copy).
#[inline]
fn copy_short(src: &[f32], dst: &mut [f32]) {
    if src.len() >= 64 {
        dst.copy_from_slice(src);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// The left operand `A` (`m × k`) of a product.
#[derive(Clone, Copy)]
pub enum Lhs<'a> {
    Mat(View<'a>),
    /// The im2col matrix of a convolution (`pixels × 9c`).
    Conv(ConvView<'a>),
    /// Its transpose (`9c × pixels`): the weight-gradient product's left operand.
    ConvT(ConvView<'a>),
}

impl Lhs<'_> {
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Lhs::Mat(v) => (v.rows, v.cols),
            Lhs::Conv(c) => (c.pixels(), c.depth()),
            Lhs::ConvT(c) => (c.depth(), c.pixels()),
        }
    }

    /// True when every value the shape implies is inside the buffer.
    pub fn in_bounds(&self) -> bool {
        match self {
            Lhs::Mat(v) => v.rows == 0 || v.cols == 0 || (v.rows - 1) * v.rs + (v.cols - 1) * v.cs < v.data.len(),
            Lhs::Conv(c) | Lhs::ConvT(c) => c.x.len() >= c.d.len(),
        }
    }
}

/// The right operand `B` (`k × n`) of a product.
#[derive(Clone, Copy)]
pub enum Rhs<'a> {
    Mat(View<'a>),
    /// Conv weights read as the input-gradient convolution's (`9·cout × cin`).
    Flipped(Flipped<'a>),
}

impl Rhs<'_> {
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Rhs::Mat(v) => (v.rows, v.cols),
            Rhs::Flipped(f) => (9 * f.cout, f.cin),
        }
    }

    /// True when every value the shape implies is inside the buffer.
    pub fn in_bounds(&self) -> bool {
        match self {
            Rhs::Mat(v) => v.rows == 0 || v.cols == 0 || (v.rows - 1) * v.rs + (v.cols - 1) * v.cs < v.data.len(),
            Rhs::Flipped(f) => f.w.len() >= 9 * f.cin * f.cout,
        }
    }
}
