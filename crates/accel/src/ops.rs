//! The layers as Candle ops with hand-written backward passes that run on fast kernels on every
//! device: 3×3 convolution + bias (+ ReLU) and 2×2 max pooling. Candle's own conv backward takes
//! the input gradient through a naive `conv_transpose2d` kernel (one thread per output value, no
//! tiling) that would dominate a training step on a GPU; here the input gradient is a convolution
//! with the flipped kernel (im2col + matrix product, or cuDNN) and the weight gradient the same
//! product Candle uses. The semantics are those of the CPU kernels in `train::kernels::conv`:
//! ReLU passes the gradient where its output is positive, max pooling floors odd sides.
//!
//! Each op computes its output with plain (untracked) Candle ops and, when an argument needs a
//! gradient, hands a copy of it to the autograd graph through a custom op whose `bwd` is below.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, MetalStorage, Shape, Storage,
    Tensor, D,
};

/// An output computed ahead of the custom op, taken (and freed) by the op's forward.
struct Ahead(Mutex<Option<Tensor>>);

impl Ahead {
    fn new(t: Tensor) -> Self {
        Ahead(Mutex::new(Some(t)))
    }

    /// The output's storage, copied out of its tensor (which is then dropped).
    fn take(&self) -> candle_core::Result<(Storage, Shape)> {
        let t = self
            .0
            .lock()
            .map_err(|_| candle_core::Error::Msg("precomputed output lock poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("custom op forward ran twice".into()))?;
        let shape = t.shape().clone();
        let (storage, layout) = t.storage_and_layout();
        if !layout.is_contiguous() || layout.start_offset() != 0 {
            candle_core::bail!("precomputed output must be contiguous");
        }
        let copy = match &*storage {
            Storage::Cpu(s) => Storage::Cpu(s.try_clone(layout)?),
            Storage::Cuda(s) => Storage::Cuda(s.try_clone(layout)?),
            Storage::Metal(s) => Storage::Metal(s.try_clone(layout)?),
        };
        Ok((copy, shape))
    }

    fn cpu(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        match self.take()? {
            (Storage::Cpu(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("arguments and precomputed output on different devices"),
        }
    }

    fn cuda(&self) -> candle_core::Result<(CudaStorage, Shape)> {
        match self.take()? {
            (Storage::Cuda(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("arguments and precomputed output on different devices"),
        }
    }

    fn metal(&self) -> candle_core::Result<(MetalStorage, Shape)> {
        match self.take()? {
            (Storage::Metal(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("arguments and precomputed output on different devices"),
        }
    }
}

/// `conv2d(x, w) + b` (then ReLU) with stride 1 and `pad` zeros on every side.
struct ConvBiasRelu {
    pad: usize,
    relu: bool,
    out: Ahead,
}

/// The kernel of the input gradient: `w` `[out, in, k, k]` flipped in space and transposed to
/// `[in, out, k, k]`.
fn flipped(w: &Tensor) -> candle_core::Result<Tensor> {
    w.flip(&[2, 3])?.transpose(0, 1)?.contiguous()
}

impl CustomOp3 for ConvBiasRelu {
    fn name(&self) -> &'static str {
        "conv-bias-relu"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.out.cpu()
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.out.cuda()
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> candle_core::Result<(MetalStorage, Shape)> {
        self.out.metal()
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = if self.relu {
            grad.mul(&res.gt(0.0)?.to_dtype(grad.dtype())?)?
        } else {
            grad.clone()
        };
        let db = b
            .track_op()
            .then(|| g.sum(D::Minus1)?.sum(D::Minus1)?.sum(0))
            .transpose()?;
        let k = w.dim(2)?;
        let dw = if w.track_op() {
            // dW[o, i, ky, kx] = Σ_{n,y,x} g[n, o, y, x] · x_pad[n, i, y + ky, x + kx]: a convolution
            // of the batch-transposed input with the batch-transposed gradient as kernel.
            let dw = x
                .transpose(0, 1)?
                .conv2d(&g.transpose(0, 1)?, self.pad, 1, 1, 1)?
                .transpose(0, 1)?;
            let dw = if dw.dim(2)? != k || dw.dim(3)? != k {
                dw.narrow(2, 0, k)?.narrow(3, 0, k)?
            } else {
                dw
            };
            Some(dw.contiguous()?)
        } else {
            None
        };
        let dx = x
            .track_op()
            .then(|| g.conv2d(&flipped(w)?, k - 1 - self.pad, 1, 1, 1))
            .transpose()?;
        Ok((dx, dw, db))
    }
}

/// 2×2 stride-2 max pooling (odd sides floored), gradient to the maxima.
struct MaxPool2 {
    out: Ahead,
}

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "max-pool-2x2"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.out.cpu()
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        self.out.cuda()
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
    ) -> candle_core::Result<(MetalStorage, Shape)> {
        self.out.metal()
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, c, h, w) = x.dims4()?;
        let (ph, pw) = (h / 2, w / 2);
        let xs = x
            .narrow(2, 0, 2 * ph)?
            .narrow(3, 0, 2 * pw)?
            .contiguous()?
            .reshape((n, c, ph, 2, pw, 2))?;
        let at = xs.broadcast_eq(&res.reshape((n, c, ph, 1, pw, 1))?)?;
        // Ties (equal values in one window) would each get the gradient; the CPU kernel gives it
        // to the first. After a ReLU the only common tie is a window of zeros, whose gradient
        // the ReLU below stops either way.
        let dx = grad
            .reshape((n, c, ph, 1, pw, 1))?
            .broadcast_mul(&at.to_dtype(grad.dtype())?)?
            .reshape((n, c, 2 * ph, 2 * pw))?;
        let dx = if 2 * ph != h || 2 * pw != w {
            dx.pad_with_zeros(2, 0, h - 2 * ph)?
                .pad_with_zeros(3, 0, w - 2 * pw)?
        } else {
            dx
        };
        Ok(Some(dx))
    }
}

/// `relu(conv2d(x, w, stride 1, padding pad) + b)` (no ReLU when `relu` is false) for `x`
/// `[N, in, H, W]`, `w` `[out, in, k, k]`, `b` `[out]`, all of one dtype. Tracks gradients for
/// whichever argument needs them, with the CPU kernels' semantics (see the module doc).
pub fn conv_bias_relu(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    pad: usize,
    relu: bool,
) -> candle_core::Result<Tensor> {
    let cout = w.dim(0)?;
    let y = x
        .detach()
        .conv2d(&w.detach(), pad, 1, 1, 1)?
        .broadcast_add(&b.detach().reshape((1, cout, 1, 1))?)?;
    let y = if relu { y.relu()? } else { y };
    if !(x.track_op() || w.track_op() || b.track_op()) {
        return Ok(y);
    }
    x.apply_op3(
        w,
        b,
        ConvBiasRelu {
            pad,
            relu,
            out: Ahead::new(y.contiguous()?),
        },
    )
}

/// 2×2 stride-2 max pooling of `[N, C, H, W]` (odd sides floored, like ONNX MaxPool and Keras).
pub fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        candle_core::bail!("max pooling a {h}×{w} map: the input image is too small");
    }
    let y = x.detach().max_pool2d(2)?;
    if !x.track_op() {
        return Ok(y);
    }
    x.apply_op1(MaxPool2 {
        out: Ahead::new(y.contiguous()?),
    })
}

/// ReLU whose gradient passes where the input is positive (Candle's passes at zero too), like
/// the CPU kernels.
pub fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    if !x.track_op() {
        return x.relu();
    }
    x.mul(&x.detach().gt(0.0)?.to_dtype(x.dtype())?)
}

/// A tensor's values as flat `f32` on the host, in row-major order (widened from half types).
pub fn to_host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// `x @ w + b` for `x` `[n, in]`, `w` `[in, out]`, `b` `[out]`.
pub fn dense(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.matmul(w)?.broadcast_add(b)
}

/// Flattens `[N, C, h, w]` in NHWC order (the CPU crates' row order) to `[N, h·w·C]`.
pub fn flatten_nhwc(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x.dim(0)?;
    x.permute((0, 2, 3, 1))?.contiguous()?.reshape((n, ()))
}

/// An NHWC batch of `f32` (the CPU crates' layout) as an NCHW tensor on `device` in `dtype`
/// (uploaded as it is, permuted on the device).
pub fn nchw_from_nhwc(
    x: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    device: &candle_core::Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    if x.len() != n * h * w * c {
        candle_core::bail!(
            "an NHWC batch of {n}×{h}×{w}×{c} needs {} values, got {}",
            n * h * w * c,
            x.len()
        );
    }
    Tensor::from_slice(x, (n, h, w, c), device)?
        .to_dtype(dtype)?
        .permute((0, 3, 1, 2))?
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn seeded(shape: &[usize], seed: u64) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let a = to_host(a).unwrap();
        let b = to_host(b).unwrap();
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// The custom conv backward equals Candle's own autograd of the same forward (conv2d, bias,
    /// a ReLU that is never exactly zero before it) for same and valid padding and an odd side.
    #[test]
    fn conv_gradients_match_candle_autograd() {
        let dev = Device::Cpu;
        for (pad, side) in [(1usize, 7usize), (0, 9)] {
            let o = side + 2 * pad - 2;
            let x =
                Var::from_vec(seeded(&[2, 3, side, side], 1), (2, 3, side, side), &dev).unwrap();
            let w = Var::from_vec(seeded(&[4, 3, 3, 3], 2), (4, 3, 3, 3), &dev).unwrap();
            let b = Var::from_vec(seeded(&[4], 3), 4, &dev).unwrap();
            let proj = Tensor::from_vec(seeded(&[2 * 4 * o * o], 4), (2, 4, o, o), &dev).unwrap();
            let ours = conv_bias_relu(&x, &w, &b, pad, true).unwrap();
            let theirs = x
                .conv2d(&w, pad, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            assert_eq!(max_rel(&ours, &theirs), 0.0);
            let g1 = (ours * &proj)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = (theirs * &proj)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &w, &b] {
                let (a, c) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(max_rel(a, c) < 1e-5, "pad {pad}: {}", max_rel(a, c));
            }
        }
    }

    /// Max pooling sends each window's gradient to its maximum, whole (Candle 0.11's own
    /// `max_pool2d` backward sends a quarter of it), and nothing to a floored odd row/column.
    #[test]
    fn pool_gradient_goes_to_the_maximum() {
        let dev = Device::Cpu;
        let v: Vec<f32> = (0..20).map(|i| ((i * 7) % 20) as f32).collect();
        let x = Var::from_vec(v.clone(), (1, 1, 5, 4), &dev).unwrap();
        let y = max_pool2(&x).unwrap();
        assert_eq!(y.dims4().unwrap(), (1, 1, 2, 2));
        let up = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &dev).unwrap();
        let g = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g = to_host(g.get(&x).unwrap()).unwrap();
        let mut want = vec![0f32; 20];
        for (k, (py, px)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
            let idx = [0, 1, 4, 5].map(|d| (2 * py) * 4 + 2 * px + d);
            let best = idx
                .into_iter()
                .fold(idx[0], |b, i| if v[i] > v[b] { i } else { b });
            want[best] = (k + 1) as f32;
        }
        assert_eq!(g, want);
    }

    #[test]
    fn untracked_inputs_take_the_plain_path() {
        let dev = Device::Cpu;
        let x = Tensor::ones((1, 2, 4, 4), DType::F32, &dev).unwrap();
        let w = Tensor::ones((3, 2, 3, 3), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(3, DType::F32, &dev).unwrap();
        let y = conv_bias_relu(&x, &w, &b, 1, true).unwrap();
        assert!(!y.track_op());
        assert_eq!(y.dims4().unwrap(), (1, 3, 4, 4));
        let corner: f32 = y
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(corner, 8.0);
        assert!(max_pool2(&Tensor::zeros((1, 1, 1, 4), DType::F32, &dev).unwrap()).is_err());
    }

    #[test]
    fn nhwc_upload_permutes() {
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let t = nchw_from_nhwc(&x, (1, 2, 2, 3), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(
            to_host(&t).unwrap(),
            vec![0., 3., 6., 9., 1., 4., 7., 10., 2., 5., 8., 11.]
        );
        let back = flatten_nhwc(&t).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(back[0], x);
        assert!(nchw_from_nhwc(&x, (1, 2, 2, 2), &Device::Cpu, DType::F32).is_err());
    }
}
