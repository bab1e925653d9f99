//! Depthwise convolution (one filter per channel) of an already padded NHWC map, as a Candle op
//! with its gradients: on the CPU a direct loop over the kernel's taps that scales the contiguous
//! channel axis (forward, input and weight gradients, threads over the batch); on other devices
//! the same sum written with Candle's own ops (shifted views scaled per channel), which Candle
//! differentiates anywhere. Both give the same numbers (a test holds them together).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// Geometry of one depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    dilation: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(
        x: &[usize],
        taps: &[usize],
        kernel: [usize; 2],
        stride: usize,
        dilation: usize,
    ) -> candle_core::Result<Self> {
        let (&[n, h, w, c], &[k, c2]) = (x, taps) else {
            candle_core::bail!(
                "depthwise: input {x:?} and taps {taps:?} are not [N, H, W, C] and [K, C]"
            )
        };
        let [kh, kw] = kernel;
        let (sh, sw) = (dilation * (kh - 1) + 1, dilation * (kw - 1) + 1);
        if c != c2 || k != kh * kw || h < sh || w < sw || stride == 0 {
            candle_core::bail!(
                "depthwise: input {x:?}, taps {taps:?}, kernel {kernel:?} do not fit"
            )
        }
        Ok(Geometry {
            n,
            h,
            w,
            c,
            kh,
            kw,
            stride,
            dilation,
            oh: (h - sh) / stride + 1,
            ow: (w - sw) / stride + 1,
        })
    }

    /// `(tap, input pixel, output pixel)` of one image, pixels as offsets in `C` units.
    fn each(&self, mut f: impl FnMut(usize, usize, usize)) {
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let o = oy * self.ow + ox;
                for ky in 0..self.kh {
                    let iy = oy * self.stride + ky * self.dilation;
                    for kx in 0..self.kw {
                        let ix = ox * self.stride + kx * self.dilation;
                        f(ky * self.kw + kx, iy * self.w + ix, o);
                    }
                }
            }
        }
    }
}

/// The contiguous f32 values of a CPU tensor (the custom CPU ops here and in `nodes` take no other).
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("a custom CPU op takes contiguous f32 tensors only"),
    }
}

/// Runs `f(image index, chunk)` over the batch on a few threads, each image's output a chunk.
fn per_image(out: &mut [f32], per: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let n = out.len() / per.max(1);
    let chunk = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for (t, part) in out.chunks_mut(chunk * per).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (i, img) in part.chunks_mut(per).enumerate() {
                    f(t * chunk + i, img);
                }
            });
        }
    });
}

/// Adds `src · taps` into `dst`, image by image, along every (tap, input pixel, output pixel) of
/// `g`: from input to output pixels (the forward pass), or from output back to input pixels
/// (`backward`: the gradient of the input).
fn accumulate(g: &Geometry, src: &[f32], taps: &[f32], dst: &mut [f32], backward: bool) {
    let c = g.c;
    let (input, output) = (g.h * g.w * c, g.oh * g.ow * c);
    let (src_len, dst_len) = if backward {
        (output, input)
    } else {
        (input, output)
    };
    per_image(dst, dst_len, |b, img| {
        let sb = &src[b * src_len..(b + 1) * src_len];
        g.each(|k, i, o| {
            let (from, to) = if backward { (o, i) } else { (i, o) };
            let (s, t) = (&sb[from * c..(from + 1) * c], &taps[k * c..(k + 1) * c]);
            for ((d, s), w) in img[to * c..(to + 1) * c].iter_mut().zip(s).zip(t) {
                *d += s * w;
            }
        });
    });
}

/// The forward pass: `(x [N, H, W, C], taps [K, C]) → [N, oh, ow, C]`.
#[derive(Debug, Clone, Copy)]
struct Forward {
    kernel: [usize; 2],
    stride: usize,
    dilation: usize,
}

impl Forward {
    /// The geometry of this convolution on an input `x` with `taps`.
    fn geometry(&self, x: &[usize], taps: &[usize]) -> candle_core::Result<Geometry> {
        Geometry::new(x, taps, self.kernel, self.stride, self.dilation)
    }
}

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "depthwise"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry(l1.dims(), l2.dims())?;
        let (x, taps) = (slice(s1, l1)?, slice(s2, l2)?);
        let mut out = vec![0f32; g.n * g.oh * g.ow * g.c];
        accumulate(&g, x, taps, &mut out, false);
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.oh, g.ow, g.c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        taps: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = grad.apply_op2_no_bwd(
            taps,
            &InputGrad {
                op: *self,
                hw: [x.dim(1)?, x.dim(2)?],
            },
        )?;
        let dtaps = x.apply_op2_no_bwd(&grad, &TapGrad(*self))?;
        Ok((Some(dx), Some(dtaps)))
    }
}

/// `(grad [N, oh, ow, C], taps [K, C]) → grad of x [N, H, W, C]`.
struct InputGrad {
    op: Forward,
    hw: [usize; 2],
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "depthwise-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = l1.dims();
        let x_dims = [d[0], self.hw[0], self.hw[1], d[3]];
        let g = self.op.geometry(&x_dims, l2.dims())?;
        if (g.oh, g.ow) != (d[1], d[2]) {
            candle_core::bail!("depthwise: gradient {d:?} does not fit input {x_dims:?}")
        }
        let (grad, taps) = (slice(s1, l1)?, slice(s2, l2)?);
        let mut dx = vec![0f32; g.n * g.h * g.w * g.c];
        accumulate(&g, grad, taps, &mut dx, true);
        Ok((CpuStorage::F32(dx), Shape::from(x_dims.to_vec())))
    }
}

/// `(x [N, H, W, C], grad [N, oh, ow, C]) → grad of taps [K, C]` (per-thread sums, then added).
struct TapGrad(Forward);

impl CustomOp2 for TapGrad {
    fn name(&self) -> &'static str {
        "depthwise-tap-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xd = l1.dims();
        let k = self.0.kernel[0] * self.0.kernel[1];
        let g = self.0.geometry(xd, &[k, xd[3]])?;
        if l2.dims() != [g.n, g.oh, g.ow, g.c] {
            candle_core::bail!(
                "depthwise: gradient {:?} does not fit input {xd:?}",
                l2.dims()
            )
        }
        let (x, grad) = (slice(s1, l1)?, slice(s2, l2)?);
        let c = g.c;
        // One [K, C] sum per image, then summed over the batch.
        let mut parts = vec![0f32; g.n * k * c];
        per_image(&mut parts, k * c, |b, acc| {
            let xb = &x[b * g.h * g.w * c..(b + 1) * g.h * g.w * c];
            let gb = &grad[b * g.oh * g.ow * c..(b + 1) * g.oh * g.ow * c];
            g.each(|t, i, o| {
                let (xs, gs) = (&xb[i * c..(i + 1) * c], &gb[o * c..(o + 1) * c]);
                for ((d, a), b) in acc[t * c..(t + 1) * c].iter_mut().zip(xs).zip(gs) {
                    *d += a * b;
                }
            });
        });
        let mut out = vec![0f32; k * c];
        for p in parts.chunks_exact(k * c) {
            for (o, v) in out.iter_mut().zip(p) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((k, c))))
    }
}

/// The depthwise convolution of a padded NHWC map `x` `[N, H, W, C]` by ONNX weights `w`
/// `[C, 1, kh, kw]`: `[N, oh, ow, C]`, differentiable in both.
pub fn depthwise(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
    let (c, _, kh, kw) = w.dims4()?;
    // `[kh·kw, C]`: row k scales tap k of every channel.
    let taps = w.reshape((c, kh * kw))?.t()?.contiguous()?;
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        let op = Forward {
            kernel: [kh, kw],
            stride,
            dilation,
        };
        return x.contiguous()?.apply_op2(&taps, op);
    }
    by_views(x, &taps, [kh, kw], stride, dilation)
}

/// The same sum written with Candle's ops (any device): shifted views scaled per channel.
pub fn by_views(
    x: &Tensor,
    taps: &Tensor,
    [kh, kw]: [usize; 2],
    stride: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
    let (_, h, wd, _) = x.dims4()?;
    let (oh1, ow1) = (h - dilation * (kh - 1), wd - dilation * (kw - 1));
    let mut sum: Option<Tensor> = None;
    for ky in 0..kh {
        let rows = x.narrow(1, ky * dilation, oh1)?;
        for kx in 0..kw {
            let view = rows.narrow(2, kx * dilation, ow1)?;
            let term = view.broadcast_mul(&taps.narrow(0, ky * kw + kx, 1)?)?;
            sum = Some(match sum {
                Some(s) => (s + term)?,
                None => term,
            });
        }
    }
    let Some(y) = sum else {
        candle_core::bail!("depthwise: empty kernel")
    };
    let (oh, ow) = ((oh1 - 1) / stride + 1, (ow1 - 1) / stride + 1);
    every(&every(&y, 1, stride, oh)?, 2, stride, ow)
}

/// Every row (or column) `step` apart along `dim`, from the first.
fn every(x: &Tensor, dim: usize, step: usize, count: usize) -> candle_core::Result<Tensor> {
    if step == 1 {
        return x.narrow(dim, 0, count);
    }
    let ids: Vec<u32> = (0..count as u32).map(|i| i * step as u32).collect();
    x.index_select(&Tensor::new(ids.as_slice(), x.device())?, dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    /// The CPU op and the composition of Candle ops agree, forward and both gradients, for
    /// strides 1 and 2, dilation 2 and a 5×5 kernel.
    #[test]
    fn the_cpu_op_equals_candles_own_ops() {
        let dev = Device::Cpu;
        for (k, stride, dilation) in [(3, 1, 1), (3, 2, 1), (5, 2, 1), (3, 1, 2)] {
            let (n, h, w, c) = (2, 9, 8, 5);
            let x = Var::from_vec(values(n * h * w * c, 1), (n, h, w, c), &dev).unwrap();
            let wt = Var::from_vec(values(c * k * k, 2), (c, 1, k, k), &dev).unwrap();
            let fast = depthwise(x.as_tensor(), wt.as_tensor(), stride, dilation).unwrap();
            let taps = wt
                .reshape((c, k * k))
                .unwrap()
                .t()
                .unwrap()
                .contiguous()
                .unwrap();
            let slow = by_views(x.as_tensor(), &taps, [k, k], stride, dilation).unwrap();
            assert_eq!(fast.dims(), slow.dims());
            let g = Tensor::from_vec(values(fast.elem_count(), 3), fast.shape(), &dev).unwrap();
            let close = |a: &Tensor, b: &Tensor| {
                let (a, b) = (
                    a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                a.iter()
                    .zip(&b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max)
            };
            assert!(close(&fast, &slow) < 1e-5);
            let gf = (fast * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gs = (slow * &g).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &wt] {
                let d = close(gf.get(v).unwrap(), gs.get(v).unwrap());
                assert!(
                    d < 1e-4,
                    "k {k} stride {stride} dilation {dilation}: gradient differs by {d}"
                );
            }
        }
    }
}
