//! The three products of a 3×3 stride-1 convolution as direct bf16 convolutions: each register
//! tile reads its rows in place from a bf16 copy of the activations (an output pixel's three
//! kernel rows for the forward pass and the input gradient; one tap and input channel over all
//! output pixels for the weight gradient), so no im2col matrix is built. Tiles are independent,
//! so results do not depend on the thread count.

use rayon::prelude::*;

use super::super::conv::Nhwc;
use super::super::matmul::Threads;
use super::layout::{self, Padded};
use super::tile::{tile, Walk};
use super::{MR, NR};

/// Per-thread layouts, reused across calls (fresh allocations cost a page fault per 4 KiB).
#[derive(Default)]
struct Buffers {
    map: Vec<u32>,
    /// The input as read by tap columns 0, 1 and 2 (weight gradient).
    taps: [Vec<u32>; 3],
    grad: Vec<u32>,
    weights: Vec<u32>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

/// `out = conv(x, w)` (`[pixels, cout]`, overwritten): `x` of shape `d` padded by `pad`, `w` the
/// im2col weight matrix `[9·cin, cout]`.
///
/// # Safety
/// AVX512F and AVX512-BF16 must be available; buffers must match the shapes.
pub unsafe fn forward(
    x: &[f32],
    d: Nhwc,
    pad: usize,
    w: &[f32],
    cout: usize,
    out: &mut [f32],
    threads: Threads,
) {
    BUFFERS.with_borrow_mut(|b| {
        let p = layout::channel_pairs(x, d, pad, &mut b.map);
        layout::forward_weights(w, d.c, cout, &mut b.weights);
        convolve(&b.map, p, &b.weights, cout, out, threads);
    })
}

/// `dx` (shape `d`, overwritten): the input gradient of the layer `forward(x, d, pad, w, cout)`
/// given its output gradient `dz` — the convolution of `dz`, padded by `2 − pad`, with the
/// flipped kernel.
///
/// # Safety
/// As [`forward`].
pub unsafe fn input_grad(
    dz: &[f32],
    d: Nhwc,
    pad: usize,
    w: &[f32],
    cout: usize,
    dx: &mut [f32],
    threads: Threads,
) {
    let od = d.conv3x3(cout, pad);
    BUFFERS.with_borrow_mut(|b| {
        let p = layout::channel_pairs(dz, od, 2 - pad, &mut b.map);
        layout::flipped_weights(w, d.c, cout, &mut b.weights);
        convolve(&b.map, p, &b.weights, d.c, dx, threads);
    })
}

/// `out[pixel][j] = Σ_{tap, k} map[pixel + tap][k] · wts[tap][k][j]` over the padded map `p`:
/// tiles of `MR` output pixels (each read through its own pointer, so tiles may cross rows and
/// images) by `NR` output channels.
unsafe fn convolve(
    map: &[u32],
    p: Padded,
    wts: &[u32],
    cols: usize,
    out: &mut [f32],
    threads: Threads,
) {
    let (ho, wo, c2) = (p.hp - 2, p.wp - 2, p.c2());
    let m = p.n * ho * wo;
    debug_assert!(out.len() >= m * cols && map.len() >= p.n * p.hp * p.wp * c2);
    // Per output pixel: three kernel rows (segments) of three consecutive padded pixels.
    let walk = Walk {
        nseg: 3,
        len: 3 * c2,
        a_step: 1,
        a_seg: p.wp * c2,
        b_step: NR,
        b_seg: 3 * c2 * NR,
    };
    let panels = cols.div_ceil(NR);
    // Blocks of strips, panel by panel: a panel's weights stay in L2 while the block's strips
    // use them, and the block's input rows stay in L2 across the panels.
    let block = |(blk, cb): (usize, &mut [f32])| {
        let first = blk * STRIPS * MR;
        let strips = (m - first).div_ceil(MR).min(STRIPS);
        let mut rows_of = [[std::ptr::null::<u32>(); MR]; STRIPS];
        let mut q = (first % wo, (first / wo) % ho, first / (wo * ho));
        for (i, a) in rows_of.iter_mut().enumerate().take(strips) {
            let rows = (m - first - i * MR).min(MR);
            for (r, ptr) in a.iter_mut().enumerate() {
                // Rows past the end repeat the last pixel (read, never stored).
                let (ox, oy, b) = q;
                *ptr = map.as_ptr().add(((b * p.hp + oy) * p.wp + ox) * c2);
                if r + 1 < rows {
                    q = next_pixel(q, wo, ho);
                }
            }
            q = next_pixel(q, wo, ho);
        }
        for panel in 0..panels {
            let width = (cols - panel * NR).min(NR);
            let b = wts.as_ptr().add(panel * 9 * c2 * NR);
            for (i, a) in rows_of.iter().enumerate().take(strips) {
                let rows = (m - first - i * MR).min(MR);
                // SAFETY: every pointer walks three padded rows of three pixels inside `map`;
                // the weights hold 9·c2 pairs per panel; the block holds `rows` rows of `cols`.
                tile(
                    &walk,
                    a,
                    b,
                    &mut cb[i * MR * cols + panel * NR..],
                    cols,
                    rows,
                    width,
                    true,
                );
            }
        }
    };
    let chunk = STRIPS * MR * cols;
    match threads {
        Threads::One => out[..m * cols]
            .chunks_mut(chunk)
            .enumerate()
            .for_each(block),
        Threads::All => out[..m * cols]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(block),
    }
}

/// Strips of output pixels that share each panel's weights while they are in L2.
const STRIPS: usize = 16;
/// Strips of weight-gradient rows that share each panel of the output gradient.
const GRAD_STRIPS: usize = 4;

/// The output pixel after `(ox, oy, image)`.
fn next_pixel((ox, oy, b): (usize, usize, usize), wo: usize, ho: usize) -> (usize, usize, usize) {
    if ox + 1 < wo {
        (ox + 1, oy, b)
    } else if oy + 1 < ho {
        (0, oy + 1, b)
    } else {
        (0, 0, b + 1)
    }
}

/// `dw = Σ_pixels x[pixel + tap]ᵀ·dz[pixel]` (`[9·cin, cout]`, overwritten): the weight gradient
/// of the layer `forward(x, d, pad, w, cout)` given its output gradient `dz`. Pairs run over
/// horizontally adjacent output pixels; each tap column reads the input laid out for it.
///
/// # Safety
/// As [`forward`].
pub unsafe fn weight_grad(
    x: &[f32],
    d: Nhwc,
    pad: usize,
    dz: &[f32],
    cout: usize,
    dw: &mut [f32],
    threads: Threads,
) {
    let od = d.conv3x3(cout, pad);
    BUFFERS.with_borrow_mut(|b| {
        for (kx, t) in b.taps.iter_mut().enumerate() {
            layout::tap_pairs(x, d, pad, kx, t);
        }
        let ld = layout::row_pairs(dz, od, &mut b.grad);
        let p = Padded::of(d, pad);
        let (cin, qo) = (d.c, od.w.div_ceil(2));
        // One segment per image: its output rows' pixel pairs, consecutive in both layouts.
        let walk = Walk {
            nseg: d.n,
            len: od.h * qo,
            a_step: cin,
            a_seg: p.hp * qo * cin,
            b_step: ld,
            b_seg: od.h * qo * ld,
        };
        let rows_total = 9 * cin;
        let panels = cout.div_ceil(NR);
        let (taps, grad) = (&b.taps, &b.grad[..]);
        // Blocks of strips, panel by panel: a panel of the output gradient stays in L2 while
        // the block's strips use it, and the block's input columns stay in L2 across panels.
        let block = |(blk, cb): (usize, &mut [f32])| {
            let first_row = blk * GRAD_STRIPS * MR;
            let strips = (rows_total - first_row).div_ceil(MR).min(GRAD_STRIPS);
            // Row r of strip i is tap (ky, kx), input channel ci: its pairs start at kernel row
            // ky of image 0 in tap column kx's layout.
            let mut starts = [[std::ptr::null::<u32>(); MR]; GRAD_STRIPS];
            for (i, strip) in starts.iter_mut().enumerate().take(strips) {
                let rows = (rows_total - first_row - i * MR).min(MR);
                for (r, f) in strip.iter_mut().enumerate() {
                    let k = first_row + i * MR + r.min(rows - 1);
                    let (t, ci) = (k / cin, k % cin);
                    *f = taps[t % 3].as_ptr().add((t / 3 * qo) * cin + ci);
                }
            }
            for panel in 0..panels {
                let width = (cout - panel * NR).min(NR);
                let b = grad.as_ptr().add(panel * NR);
                for (i, a) in starts.iter().enumerate().take(strips) {
                    let rows = (rows_total - first_row - i * MR).min(MR);
                    // SAFETY: each pointer walks rows ky..ky + ho of every image in its tap
                    // layout; the gradient pairs cover every image's output rows.
                    tile(
                        &walk,
                        a,
                        b,
                        &mut cb[i * MR * cout + panel * NR..],
                        cout,
                        rows,
                        width,
                        true,
                    );
                }
            }
        };
        let chunk = GRAD_STRIPS * MR * cout;
        match threads {
            Threads::One => dw[..rows_total * cout]
                .chunks_mut(chunk)
                .enumerate()
                .for_each(block),
            Threads::All => dw[..rows_total * cout]
                .par_chunks_mut(chunk)
                .enumerate()
                .for_each(block),
        }
    })
}
