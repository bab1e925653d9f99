//! 3×3 convolutions with bf16 products and FP32 accumulation (mixed precision) on CPUs with
//! AVX512-BF16 (`vdpbf16ps`: twice the FP32 FMA rate). Inputs and weights are `f32`; they are
//! rounded to bf16 (round to nearest even) when converted to the kernels' layouts ([`layout`]),
//! once per layer: activations are not expanded into an im2col matrix. Every product of two
//! bf16 values is exact in FP32 and all sums are FP32 ([`tile`]). The forward pass, the weight
//! gradient and the input gradient are direct convolutions ([`direct`]); each output value is
//! summed by one thread in a fixed order, so results never depend on the thread count.

#[cfg(target_arch = "x86_64")]
mod direct;
#[cfg(target_arch = "x86_64")]
mod layout;
#[cfg(target_arch = "x86_64")]
mod tile;

use super::conv::Nhwc;
use super::matmul::Threads;

/// Rows of the register tile (output pixels, or taps × input channels).
pub const MR: usize = 12;
/// Columns of the register tile (output channels: two 16-lane vectors).
pub const NR: usize = 32;

/// True when this CPU runs the bf16 kernels (AVX512F and AVX512-BF16) and the environment does
/// not turn them off (`BOTTLENECK_NO_BF16=1`, e.g. to check a run against the FP32 kernels or to
/// see what a CPU without them does).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var_os("BOTTLENECK_NO_BF16").is_some_and(|v| !v.is_empty() && v != "0");
        !off && cpu_has_bf16()
    })
}

fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `bf16(x)` as the vector conversion computes it: round to nearest even, subnormals to zero,
/// NaN stays NaN.
pub fn round_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let bits = x.to_bits();
    if bits & 0x7f80_0000 == 0 {
        return f32::from_bits(bits & 0x8000_0000);
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(rounded)
}

/// Panics unless the CPU runs the kernels and the buffers match the layer (internal
/// invariants: callers resolve the precision first and size buffers from the same shapes).
fn check(d: Nhwc, pad: usize, w: &[f32], cout: usize, lens: [(usize, usize); 2]) {
    assert!(
        available(),
        "bf16 kernels called on a CPU without AVX512-BF16"
    );
    assert!(
        pad <= 2,
        "3×3 convolutions take at most 2 pixels of padding"
    );
    assert!(w.len() >= 9 * d.c * cout, "bf16 conv: weights too short");
    for (have, need) in lens {
        assert!(
            have >= need,
            "bf16 conv: buffer of {have} values, {need} needed"
        );
    }
}

/// `out = conv(x, w)`: the layer's pre-activation output `[pixels, cout]` (overwritten) for input
/// `x` of shape `d` with `pad` pixels of zero padding; `w` is the im2col weight matrix
/// `[9·cin, cout]`.
///
/// Panics on a CPU without AVX512-BF16 (see [`available`]) or when a buffer is too short.
pub fn forward(
    x: &[f32],
    d: Nhwc,
    pad: usize,
    w: &[f32],
    cout: usize,
    out: &mut [f32],
    threads: Threads,
) {
    let od = d.conv3x3(cout, pad);
    check(d, pad, w, cout, [(x.len(), d.len()), (out.len(), od.len())]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512F/BF16 and the buffer sizes were checked above.
    unsafe {
        direct::forward(x, d, pad, w, cout, out, threads)
    }
}

/// `dw` (`[9·cin, cout]`, overwritten): the weight gradient of [`forward`]'s layer given its
/// output gradient `dz` (`[pixels, cout]`).
///
/// Panics like [`forward`].
pub fn weight_grad(
    x: &[f32],
    d: Nhwc,
    pad: usize,
    dz: &[f32],
    cout: usize,
    dw: &mut [f32],
    threads: Threads,
) {
    let od = d.conv3x3(cout, pad);
    check(d, pad, dw, cout, [(x.len(), d.len()), (dz.len(), od.len())]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `forward`.
    unsafe {
        direct::weight_grad(x, d, pad, dz, cout, dw, threads)
    }
}

/// `dx` (shape `d`, overwritten): the input gradient of [`forward`]'s layer given its output
/// gradient `dz` (`[pixels, cout]`).
///
/// Panics like [`forward`].
pub fn input_grad(
    dz: &[f32],
    d: Nhwc,
    pad: usize,
    w: &[f32],
    cout: usize,
    dx: &mut [f32],
    threads: Threads,
) {
    let od = d.conv3x3(cout, pad);
    check(d, pad, w, cout, [(dz.len(), od.len()), (dx.len(), d.len())]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `forward`.
    unsafe {
        direct::input_grad(dz, d, pad, w, cout, dx, threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skips on CPUs without AVX512-BF16 (CI machines differ: some are AVX2 only).
    fn bf16_cpu() -> bool {
        if available() {
            return true;
        }
        eprintln!("skipping: this CPU has no AVX512-BF16");
        false
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * seed).sin() * 3.0 + (i % 7) as f32 * 0.01) * 1.7)
            .collect()
    }

    /// One term of every output of a layer in f64: `(output index, weight index, input index)`
    /// visited for every product `x · w · dz` the three passes sum.
    fn terms(d: Nhwc, pad: usize, cout: usize, mut f: impl FnMut(usize, usize, Option<usize>)) {
        let od = d.conv3x3(cout, pad);
        for b in 0..d.n {
            for oy in 0..od.h {
                for ox in 0..od.w {
                    for t in 0..9 {
                        let (y, x) = (
                            (oy + t / 3).wrapping_sub(pad),
                            (ox + t % 3).wrapping_sub(pad),
                        );
                        let inside = y < d.h && x < d.w;
                        for ci in 0..d.c {
                            for co in 0..cout {
                                let o = ((b * od.h + oy) * od.w + ox) * cout + co;
                                let input = inside.then(|| ((b * d.h + y) * d.w + x) * d.c + ci);
                                f(o, (t * d.c + ci) * cout + co, input);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Checks `got` against sums of exact products of bf16-rounded factors: products of bf16
    /// values are exact in FP32, so only the FP32 sums round, by at most (k + 1)·2⁻²⁴·Σ|a·b|.
    fn check_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], k: usize) {
        for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
            let tol = (k as f64 + 1.0) * 2f64.powi(-24) * s + 1e-30;
            assert!(
                (*g as f64 - w).abs() <= tol,
                "{what} value {i}: {g} vs {w} (tol {tol:e})"
            );
        }
    }

    #[test]
    fn direct_convolutions_equal_exact_bf16_products_summed_in_fp32() {
        if !bf16_cpu() {
            return;
        }
        // Odd and even channel counts (pairs inside and across pixels), output widths odd and
        // even (pixel pairs), the paddings of VGG (1) and of the tutorial's convnet (0), more
        // output channels than one panel, and tiles that cross rows and images.
        for &(n, h, w, c, cout, pad) in &[
            (2, 5, 6, 3, 7, 0),
            (2, 6, 5, 4, 33, 1),
            (1, 7, 7, 5, 12, 1),
            (3, 4, 9, 16, 40, 0),
        ] {
            let d = Nhwc { n, h, w, c };
            let od = d.conv3x3(cout, pad);
            let (x, wts, dz) = (
                values(d.len(), 0.29),
                values(9 * c * cout, 0.53),
                values(od.len(), 0.61),
            );
            let r = |v: &[f32]| v.iter().map(|&v| round_bf16(v) as f64).collect::<Vec<_>>();
            let (xr, wr, dzr) = (r(&x), r(&wts), r(&dz));
            let (mut y, mut ys) = (vec![0f64; od.len()], vec![0f64; od.len()]);
            let (mut gw, mut gws) = (vec![0f64; wts.len()], vec![0f64; wts.len()]);
            let (mut gx, mut gxs) = (vec![0f64; d.len()], vec![0f64; d.len()]);
            terms(d, pad, cout, |o, wi, xi| {
                let xv = xi.map_or(0.0, |i| xr[i]);
                y[o] += xv * wr[wi];
                ys[o] += (xv * wr[wi]).abs();
                gw[wi] += xv * dzr[o];
                gws[wi] += (xv * dzr[o]).abs();
                if let Some(i) = xi {
                    gx[i] += wr[wi] * dzr[o];
                    gxs[i] += (wr[wi] * dzr[o]).abs();
                }
            });
            for threads in [Threads::One, Threads::All] {
                let mut out = vec![f32::NAN; od.len()];
                forward(&x, d, pad, &wts, cout, &mut out, threads);
                check_close("forward", &out, &y, &ys, 9 * c);
                let mut dw = vec![f32::NAN; wts.len()];
                weight_grad(&x, d, pad, &dz, cout, &mut dw, threads);
                check_close("weight grad", &dw, &gw, &gws, od.pixels());
                let mut dx = vec![f32::NAN; d.len()];
                input_grad(&dz, d, pad, &wts, cout, &mut dx, threads);
                check_close("input grad", &dx, &gx, &gxs, 9 * cout);
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_threads() {
        if !bf16_cpu() {
            return;
        }
        let (d, cout, pad) = (
            Nhwc {
                n: 4,
                h: 14,
                w: 14,
                c: 64,
            },
            64,
            1,
        );
        let od = d.conv3x3(cout, pad);
        let (x, wts, dz) = (
            values(d.len(), 0.3),
            values(9 * d.c * cout, 0.5),
            values(od.len(), 0.7),
        );
        let run = |threads| {
            let mut y = vec![0f32; od.len()];
            forward(&x, d, pad, &wts, cout, &mut y, threads);
            let mut dw = vec![0f32; wts.len()];
            weight_grad(&x, d, pad, &dz, cout, &mut dw, threads);
            let mut dx = vec![0f32; d.len()];
            input_grad(&dz, d, pad, &wts, cout, &mut dx, threads);
            (y, dw, dx)
        };
        assert!(run(Threads::One) == run(Threads::All));
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1.0).
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(round_bf16(1e-40), 0.0);
        assert!(round_bf16(f32::NAN).is_nan());
    }
}
