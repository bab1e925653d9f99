//! Compute kernels of the trainable block on NHWC `f32` buffers: the 3×3 stride-1 "same"
//! convolution as im2col + one Candle matrix product (forward and backward, including col2im),
//! bias + ReLU, 2×2 stride-2 max pooling and its gradient, and zero-copy access to Candle storage.

use candle_core::{CpuStorage, Device, Storage, Tensor};

use crate::error::{Error, Result};

/// Shape of an NHWC batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Nhwc {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    /// True when the batch holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of pixels (rows of the im2col matrix).
    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// The same batch with `c` channels.
    pub fn with_channels(self, c: usize) -> Nhwc {
        Nhwc { c, ..self }
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

/// The im2col matrix of a 3×3, stride 1, padding 1 convolution: `[n·h·w, 9·c]`, one row per
/// output pixel, taps in `(ky, kx)` order with channels innermost; taps outside the image are 0.
pub fn im2col3x3(x: &[f32], d: Nhwc) -> Vec<f32> {
    debug_assert_eq!(x.len(), d.len());
    let (h, w, c) = (d.h as isize, d.w as isize, d.c);
    let k = 9 * c;
    let mut cols = vec![0f32; d.pixels() * k];
    for (r, row) in cols.chunks_exact_mut(k).enumerate() {
        let xx = (r % d.w) as isize;
        let y = ((r / d.w) % d.h) as isize;
        let b = r / (d.w * d.h);
        for ky in 0..3isize {
            let sy = y + ky - 1;
            if sy < 0 || sy >= h {
                continue;
            }
            for kx in 0..3isize {
                let sx = xx + kx - 1;
                if sx < 0 || sx >= w {
                    continue;
                }
                let src = ((b * d.h + sy as usize) * d.w + sx as usize) * c;
                let tap = (ky * 3 + kx) as usize * c;
                row[tap..tap + c].copy_from_slice(&x[src..src + c]);
            }
        }
    }
    cols
}

/// The adjoint of [`im2col3x3`]: sums every row tap of `dcols` (`[n·h·w, 9·c]`) back onto the pixel
/// it was read from, giving the gradient with respect to the convolution input.
pub fn col2im3x3(dcols: &[f32], d: Nhwc) -> Vec<f32> {
    let (h, w, c) = (d.h as isize, d.w as isize, d.c);
    let k = 9 * c;
    debug_assert_eq!(dcols.len(), d.pixels() * k);
    let mut dx = vec![0f32; d.len()];
    for (r, row) in dcols.chunks_exact(k).enumerate() {
        let xx = (r % d.w) as isize;
        let y = ((r / d.w) % d.h) as isize;
        let b = r / (d.w * d.h);
        for ky in 0..3isize {
            let sy = y + ky - 1;
            if sy < 0 || sy >= h {
                continue;
            }
            for kx in 0..3isize {
                let sx = xx + kx - 1;
                if sx < 0 || sx >= w {
                    continue;
                }
                let dst = ((b * d.h + sy as usize) * d.w + sx as usize) * c;
                let tap = (ky * 3 + kx) as usize * c;
                for (o, g) in dx[dst..dst + c].iter_mut().zip(&row[tap..tap + c]) {
                    *o += g;
                }
            }
        }
    }
    dx
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
            // `s < 0` is false for NaN, so a NaN propagates (like ONNX Relu) instead of turning into 0.
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

/// Column sums of a `[rows, cols]` matrix (the bias gradient), accumulated in `f64`.
pub fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let mut acc = vec![0f64; cols];
    for row in m.chunks_exact(cols) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// 2×2 stride-2 max pooling (rows and columns beyond an even size are dropped). Returns the
/// pooled values and, for each, the input index it came from (the first maximum in row-major
/// window order).
pub fn maxpool2x2(x: &[f32], d: Nhwc) -> (Vec<f32>, Vec<u32>) {
    let o = d.pooled();
    let mut out = vec![0f32; o.len()];
    let mut arg = vec![0u32; o.len()];
    let c = d.c;
    for b in 0..o.n {
        for oy in 0..o.h {
            for ox in 0..o.w {
                let dst = ((b * o.h + oy) * o.w + ox) * c;
                let first = ((b * d.h + 2 * oy) * d.w + 2 * ox) * c;
                out[dst..dst + c].copy_from_slice(&x[first..first + c]);
                for (i, a) in arg[dst..dst + c].iter_mut().enumerate() {
                    *a = (first + i) as u32;
                }
                for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                    let src = ((b * d.h + 2 * oy + dy) * d.w + 2 * ox + dx) * c;
                    for i in 0..c {
                        let v = x[src + i];
                        if v > out[dst + i] {
                            out[dst + i] = v;
                            arg[dst + i] = (src + i) as u32;
                        }
                    }
                }
            }
        }
    }
    (out, arg)
}

/// Gradient of [`maxpool2x2`]: each output gradient goes to the input its maximum came from.
pub fn maxpool2x2_backward(grad: &[f32], arg: &[u32], input_len: usize) -> Vec<f32> {
    let mut dx = vec![0f32; input_len];
    for (&g, &a) in grad.iter().zip(arg) {
        dx[a as usize] += g;
    }
    dx
}

/// A `[rows, cols]` CPU tensor that takes ownership of `data` (no copy).
pub fn matrix(data: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
    if data.len() != rows * cols {
        return Err(Error::Invalid(format!(
            "matrix of {rows}×{cols} needs {} values, got {}",
            rows * cols,
            data.len()
        )));
    }
    Ok(Tensor::from_vec(data, (rows, cols), &Device::Cpu)?)
}

/// A `[rows, cols]` CPU tensor copied from `data`.
pub fn matrix_from(data: &[f32], rows: usize, cols: usize) -> Result<Tensor> {
    matrix(data.to_vec(), rows, cols)
}

/// Runs `f` on the contiguous `f32` values of a CPU tensor without copying them (a
/// non-contiguous tensor is made contiguous first).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = if t.is_contiguous() {
        t.clone()
    } else {
        t.contiguous()?
    };
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(f(&v[a..b])),
        _ => Err(Error::Invalid(format!(
            "expected a contiguous f32 CPU tensor, got {:?} on {:?}",
            t.dtype(),
            t.device().location()
        ))),
    }
}

/// The values of a CPU tensor as an owned vector.
pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    with_f32(t, |v| v.to_vec())
}
