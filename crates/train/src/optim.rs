//! Optimizers with Keras 3 semantics (RMSprop, SGD with momentum/Nesterov, Adam, AdamW): one update
//! rule for plain `f32` buffers ([`Optimizer`], used by the hand-written networks) and for Candle
//! variables ([`Optim`], updated in place).
//!
//! On the CPU the update runs directly on the variable's storage (no temporary tensors), split
//! over threads for large variables and vectorised with AVX2 where available; the arithmetic
//! is element-wise and never fused, so results are bitwise identical whatever the thread count
//! or instruction set. Variables on another device are updated through a CPU copy.
//!
//! Update rules, with `g` the gradient, `lr` the learning rate and `t` the 1-based step:
//! * weight decay (all kinds, decoupled like Keras 3): `w -= w·(wd·lr)` before the update;
//! * RMSprop: `v = ρ·v + (1-ρ)·g²; w -= lr·g / sqrt(v + ε)` (Keras: ε inside the root);
//! * SGD: `m = μ·m - lr·g; w += m` (Nesterov: `w += μ·m - lr·g`); plain `w -= lr·g` when μ = 0;
//! * Adam/AdamW: `m += (g-m)(1-β₁); v += (g²-v)(1-β₂); w -= α·m / (sqrt(v)+ε)` with
//!   `α = lr·sqrt(1-β₂ᵗ)/(1-β₁ᵗ)`. AdamW is Adam with a default weight decay of 0.004.

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Storage, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

base::choices! {
    /// Which update rule to use.
    pub enum OptimizerKind("optimizer") {
        /// RMSprop (Keras default optimizer of the tutorial).
        RmsProp = "rmsprop",
        /// Stochastic gradient descent, optionally with (Nesterov) momentum.
        Sgd = "sgd",
        /// Adam.
        Adam = "adam",
        /// Adam with decoupled weight decay.
        AdamW = "adamw",
    }
}

/// Hyper-parameters of an optimizer. Fields that a kind does not use are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub learning_rate: f64,
    /// SGD momentum μ (0 = plain SGD).
    pub momentum: f64,
    /// SGD: Nesterov momentum.
    pub nesterov: bool,
    /// Decoupled weight decay (all kinds).
    pub weight_decay: f64,
    /// RMSprop discount ρ.
    pub rho: f64,
    /// ε of RMSprop and Adam.
    pub epsilon: f64,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
}

impl OptimizerConfig {
    /// The Keras defaults of `kind` (learning rate 1e-3, SGD 1e-2; AdamW weight decay 0.004).
    pub fn new(kind: OptimizerKind) -> Self {
        OptimizerConfig {
            kind,
            learning_rate: if kind == OptimizerKind::Sgd {
                1e-2
            } else {
                1e-3
            },
            momentum: 0.0,
            nesterov: false,
            weight_decay: if kind == OptimizerKind::AdamW {
                0.004
            } else {
                0.0
            },
            rho: 0.9,
            epsilon: 1e-7,
            beta1: 0.9,
            beta2: 0.999,
        }
    }

    /// RMSprop with Keras defaults and the given learning rate.
    pub fn rmsprop(learning_rate: f64) -> Self {
        OptimizerConfig {
            learning_rate,
            ..Self::new(OptimizerKind::RmsProp)
        }
    }

    /// SGD with the given learning rate and momentum.
    pub fn sgd(learning_rate: f64, momentum: f64, nesterov: bool) -> Self {
        OptimizerConfig {
            learning_rate,
            momentum,
            nesterov,
            ..Self::new(OptimizerKind::Sgd)
        }
    }

    /// Adam with Keras defaults and the given learning rate.
    pub fn adam(learning_rate: f64) -> Self {
        OptimizerConfig {
            learning_rate,
            ..Self::new(OptimizerKind::Adam)
        }
    }

    /// AdamW with the given learning rate and weight decay.
    pub fn adamw(learning_rate: f64, weight_decay: f64) -> Self {
        OptimizerConfig {
            learning_rate,
            weight_decay,
            ..Self::new(OptimizerKind::AdamW)
        }
    }

    /// Checks that every hyper-parameter is in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64, range: &str| {
            Err(Error::Invalid(format!(
                "{what} = {v} is out of range; it must be {range}"
            )))
        };
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning rate", self.learning_rate, "> 0");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", self.momentum, "in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight decay", self.weight_decay, ">= 0");
        }
        if !(0.0..1.0).contains(&self.rho) {
            return bad("rho", self.rho, "in [0, 1)");
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad("epsilon", self.epsilon, "> 0");
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("beta1", self.beta1, "in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2", self.beta2, "in [0, 1)");
        }
        Ok(())
    }

    /// Number of f32 state slots kept per parameter.
    fn state_slots(&self) -> usize {
        match self.kind {
            OptimizerKind::RmsProp => 1,
            OptimizerKind::Sgd if self.momentum > 0.0 => 1,
            OptimizerKind::Sgd => 0,
            OptimizerKind::Adam | OptimizerKind::AdamW => 2,
        }
    }
}

/// The scalar coefficients of one update step, shared by every element.
#[derive(Clone, Copy, Debug)]
struct Coefficients {
    rule: Rule,
    lr: f32,
    decay: f32,
    rho: f32,
    one_minus_rho: f32,
    eps: f32,
    momentum: f32,
    one_minus_b1: f32,
    one_minus_b2: f32,
    alpha: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    RmsProp,
    Sgd,
    SgdMomentum,
    SgdNesterov,
    Adam,
}

impl Coefficients {
    fn new(c: &OptimizerConfig, step: u64) -> Self {
        let lr = c.learning_rate as f32;
        let rule = match c.kind {
            OptimizerKind::RmsProp => Rule::RmsProp,
            OptimizerKind::Sgd if c.momentum == 0.0 => Rule::Sgd,
            OptimizerKind::Sgd if c.nesterov => Rule::SgdNesterov,
            OptimizerKind::Sgd => Rule::SgdMomentum,
            OptimizerKind::Adam | OptimizerKind::AdamW => Rule::Adam,
        };
        let t = step as i32;
        let b1 = c.beta1 as f32;
        let b2 = c.beta2 as f32;
        let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        Coefficients {
            rule,
            lr,
            decay: (c.weight_decay as f32) * lr,
            rho: c.rho as f32,
            one_minus_rho: 1.0 - c.rho as f32,
            eps: c.epsilon as f32,
            momentum: c.momentum as f32,
            one_minus_b1: 1.0 - b1,
            one_minus_b2: 1.0 - b2,
            alpha,
        }
    }
}

/// Gradient entries smaller than this are treated as zero, and optimizer state that decays
/// below `f32::MIN_POSITIVE` is flushed to zero (TensorFlow runs with flush-to-zero too).
/// Subnormal arithmetic is several times slower on x86, and such gradients change no weight
/// above ~1e-9 by even one ulp.
pub const NEGLIGIBLE_GRAD: f32 = 1e-18;

/// Elements per parallel work item; smaller variables are updated on the calling thread.
const CHUNK: usize = 1 << 15;
/// Target elements per piece when gradient rows are produced on demand (fits in L1/L2).
const ROWS_CHUNK: usize = 1 << 13;
/// Row-produced gradients are updated in this many fixed groups of consecutive rows (in
/// parallel); within a group, pieces are processed in row order. See [`Grad::Rows`].
pub const ROW_GROUPS: usize = 16;

/// Rows per group when a variable of `rows` rows is updated from [`Grad::Rows`]; group `k`
/// holds rows `k·n .. (k+1)·n`.
pub fn rows_per_group(rows: usize) -> usize {
    rows.div_ceil(ROW_GROUPS).max(1)
}

/// Called after each piece of rows is updated: `(group, first_row, updated_rows)`.
pub type AfterRows<'a> = &'a (dyn Fn(usize, usize, &[f32]) + Sync);
/// Writes gradient rows `first_row..` into the buffer: `(first_row, out)`.
pub type FillRows<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// A gradient as the update kernels see it.
#[derive(Clone, Copy)]
enum GradSlice<'a> {
    Full(&'a [f32]),
    Rows {
        row_len: usize,
        fill: FillRows<'a>,
        then: Option<AfterRows<'a>>,
    },
}

/// Applies one update to `w` given its gradient, with the state slots `s1` and `s2` (empty when
/// unused). Large variables are split into chunks updated in parallel.
fn apply(c: &Coefficients, w: &mut [f32], g: GradSlice<'_>, s1: &mut [f32], s2: &mut [f32]) {
    match g {
        GradSlice::Full(g) => {
            if w.len() <= CHUNK {
                apply_chunk(c, w, g, s1, s2);
                return;
            }
            let n_chunks = w.len().div_ceil(CHUNK);
            let mut s1_chunks = split_state(s1, CHUNK, n_chunks);
            let mut s2_chunks = split_state(s2, CHUNK, n_chunks);
            w.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(s1_chunks.par_iter_mut())
                .zip(s2_chunks.par_iter_mut())
                .for_each(|(((w, g), s1), s2)| apply_chunk(c, w, g, s1, s2));
        }
        GradSlice::Rows {
            row_len,
            fill,
            then,
        } => {
            let group_rows = rows_per_group(w.len() / row_len);
            let group = group_rows * row_len;
            let piece = row_len * (ROWS_CHUNK / row_len).max(1);
            let n_groups = w.len().div_ceil(group);
            let mut s1_groups = split_state(s1, group, n_groups);
            let mut s2_groups = split_state(s2, group, n_groups);
            w.par_chunks_mut(group)
                .zip(s1_groups.par_iter_mut())
                .zip(s2_groups.par_iter_mut())
                .enumerate()
                .for_each(|(k, ((w, s1), s2))| {
                    let mut buf = vec![0f32; piece.min(w.len())];
                    for start in (0..w.len()).step_by(piece) {
                        let end = (start + piece).min(w.len());
                        let first_row = k * group_rows + start / row_len;
                        let g = &mut buf[..end - start];
                        fill(first_row, g);
                        let part = |s: &mut [f32]| -> std::ops::Range<usize> {
                            if s.is_empty() {
                                0..0
                            } else {
                                start..end
                            }
                        };
                        let (r1, r2) = (part(s1), part(s2));
                        apply_chunk(c, &mut w[start..end], g, &mut s1[r1], &mut s2[r2]);
                        if let Some(then) = then {
                            then(k, first_row, &w[start..end]);
                        }
                    }
                });
        }
    }
}

/// Chunks of a state slot matching the variable's chunks (empty slices when the slot is unused).
fn split_state(s: &mut [f32], chunk: usize, n_chunks: usize) -> Vec<&mut [f32]> {
    if s.is_empty() {
        (0..n_chunks).map(|_| <&mut [f32]>::default()).collect()
    } else {
        s.chunks_mut(chunk).collect()
    }
}

fn apply_chunk(c: &Coefficients, w: &mut [f32], g: &[f32], s1: &mut [f32], s2: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            let done = unsafe { simd::apply(c, w, g, s1, s2) };
            let (s1, s2) = (tail(s1, done), tail(s2, done));
            apply_scalar(c, &mut w[done..], &g[done..], s1, s2);
            return;
        }
    }
    apply_scalar(c, w, g, s1, s2);
}

/// The part of an optional state slot after `done` elements (empty stays empty).
fn tail(s: &mut [f32], done: usize) -> &mut [f32] {
    if s.is_empty() {
        s
    } else {
        &mut s[done..]
    }
}

/// AVX2+FMA versions of the rules whose scalar form needs a square root and a division per
/// element (RMSprop, Adam), which would otherwise dominate the step: the reciprocal (square
/// root) is estimated by the hardware and refined by one Newton–Raphson step, leaving a
/// relative error of about 1e-7 (one or two f32 ulps). Other rules vectorise well as written.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{Coefficients, Rule, NEGLIGIBLE_GRAD};

    /// Updates a multiple-of-8 prefix of `w` and returns its length (0 for rules not handled here).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn apply(
        c: &Coefficients,
        w: &mut [f32],
        g: &[f32],
        s1: &mut [f32],
        s2: &mut [f32],
    ) -> usize {
        let n = w.len() / 8 * 8;
        match c.rule {
            Rule::RmsProp if s1.len() >= n && g.len() >= n => {
                // SAFETY: every slice holds at least `n` elements.
                unsafe { rmsprop(c, n, w.as_mut_ptr(), g.as_ptr(), s1.as_mut_ptr()) };
                n
            }
            Rule::Adam if s1.len() >= n && s2.len() >= n && g.len() >= n => {
                // SAFETY: every slice holds at least `n` elements.
                unsafe {
                    adam(
                        c,
                        n,
                        w.as_mut_ptr(),
                        g.as_ptr(),
                        s1.as_mut_ptr(),
                        s2.as_mut_ptr(),
                    )
                };
                n
            }
            _ => 0,
        }
    }

    /// Zero where `|x| < tiny`: keeps decaying moment estimates and negligible gradients out of
    /// the subnormal range, where every multiply takes a slow microcode path.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn flush_subnormal(x: __m256, tiny: __m256) -> __m256 {
        let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
        _mm256_and_ps(x, _mm256_cmp_ps::<_CMP_GE_OQ>(abs, tiny))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn rmsprop(c: &Coefficients, n: usize, w: *mut f32, g: *const f32, v: *mut f32) {
        let (decay, rho, omr) = (
            _mm256_set1_ps(c.decay),
            _mm256_set1_ps(c.rho),
            _mm256_set1_ps(c.one_minus_rho),
        );
        let (lr, eps) = (_mm256_set1_ps(c.lr), _mm256_set1_ps(c.eps));
        let (half, three_halves) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.5));
        let tiny = _mm256_set1_ps(f32::MIN_POSITIVE);
        let negligible = _mm256_set1_ps(NEGLIGIBLE_GRAD);
        for i in (0..n).step_by(8) {
            let gi = flush_subnormal(_mm256_loadu_ps(g.add(i)), negligible);
            let mut wi = _mm256_loadu_ps(w.add(i));
            wi = _mm256_fnmadd_ps(wi, decay, wi);
            let vi = _mm256_fmadd_ps(
                rho,
                _mm256_loadu_ps(v.add(i)),
                _mm256_mul_ps(omr, _mm256_mul_ps(gi, gi)),
            );
            let vi = flush_subnormal(vi, tiny);
            _mm256_storeu_ps(v.add(i), vi);
            let x = _mm256_add_ps(vi, eps);
            let y = _mm256_rsqrt_ps(x);
            // y · (1.5 - 0.5·x·y²)
            let hxy = _mm256_mul_ps(_mm256_mul_ps(half, x), y);
            let y = _mm256_mul_ps(y, _mm256_fnmadd_ps(hxy, y, three_halves));
            wi = _mm256_fnmadd_ps(_mm256_mul_ps(lr, gi), y, wi);
            _mm256_storeu_ps(w.add(i), wi);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn adam(
        c: &Coefficients,
        n: usize,
        w: *mut f32,
        g: *const f32,
        m: *mut f32,
        v: *mut f32,
    ) {
        let decay = _mm256_set1_ps(c.decay);
        let (omb1, omb2) = (
            _mm256_set1_ps(c.one_minus_b1),
            _mm256_set1_ps(c.one_minus_b2),
        );
        let (alpha, eps, two) = (
            _mm256_set1_ps(c.alpha),
            _mm256_set1_ps(c.eps),
            _mm256_set1_ps(2.0),
        );
        let tiny = _mm256_set1_ps(f32::MIN_POSITIVE);
        let negligible = _mm256_set1_ps(NEGLIGIBLE_GRAD);
        for i in (0..n).step_by(8) {
            let gi = flush_subnormal(_mm256_loadu_ps(g.add(i)), negligible);
            let mut wi = _mm256_loadu_ps(w.add(i));
            wi = _mm256_fnmadd_ps(wi, decay, wi);
            let mi = _mm256_loadu_ps(m.add(i));
            let mi = _mm256_fmadd_ps(_mm256_sub_ps(gi, mi), omb1, mi);
            let vi = _mm256_loadu_ps(v.add(i));
            let vi = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_mul_ps(gi, gi), vi), omb2, vi);
            let (mi, vi) = (flush_subnormal(mi, tiny), flush_subnormal(vi, tiny));
            _mm256_storeu_ps(m.add(i), mi);
            _mm256_storeu_ps(v.add(i), vi);
            let d = _mm256_add_ps(_mm256_sqrt_ps(vi), eps);
            let r = _mm256_rcp_ps(d);
            // r · (2 - d·r)
            let r = _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, two));
            wi = _mm256_fnmadd_ps(_mm256_mul_ps(alpha, mi), r, wi);
            _mm256_storeu_ps(w.add(i), wi);
        }
    }
}

#[inline(always)]
#[allow(clippy::needless_range_loop)] // lock-step indexing of w, g and state vectorises well
fn apply_scalar(c: &Coefficients, w: &mut [f32], g: &[f32], s1: &mut [f32], s2: &mut [f32]) {
    let n = w.len();
    let g = &g[..n];
    let grad = |i: usize| {
        let gi = g[i];
        if gi.abs() < NEGLIGIBLE_GRAD {
            0.0
        } else {
            gi
        }
    };
    let flush = |x: f32| if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x };
    match c.rule {
        Rule::RmsProp => {
            let v = &mut s1[..n];
            for i in 0..n {
                let gi = grad(i);
                let wi = w[i] - w[i] * c.decay;
                let vi = flush(c.rho * v[i] + c.one_minus_rho * (gi * gi));
                v[i] = vi;
                w[i] = wi - (c.lr * gi) / (vi + c.eps).sqrt();
            }
        }
        Rule::Sgd => {
            for i in 0..n {
                let wi = w[i] - w[i] * c.decay;
                w[i] = wi - grad(i) * c.lr;
            }
        }
        Rule::SgdMomentum | Rule::SgdNesterov => {
            let m = &mut s1[..n];
            let nesterov = c.rule == Rule::SgdNesterov;
            for i in 0..n {
                let wi = w[i] - w[i] * c.decay;
                let step = -grad(i) * c.lr;
                let mi = flush(step + m[i] * c.momentum);
                m[i] = mi;
                w[i] = if nesterov {
                    wi + (step + mi * c.momentum)
                } else {
                    wi + mi
                };
            }
        }
        Rule::Adam => {
            let m = &mut s1[..n];
            let v = &mut s2[..n];
            for i in 0..n {
                let gi = grad(i);
                let wi = w[i] - w[i] * c.decay;
                let mi = flush(m[i] + (gi - m[i]) * c.one_minus_b1);
                let vi = flush(v[i] + (gi * gi - v[i]) * c.one_minus_b2);
                m[i] = mi;
                v[i] = vi;
                w[i] = wi - (mi * c.alpha) / (vi.sqrt() + c.eps);
            }
        }
    }
}

/// The in-place op handed to Candle: updates the variable's own CPU storage.
struct InPlaceUpdate<'a> {
    coeffs: Coefficients,
    grad: GradSlice<'a>,
    len: usize,
    s1: RefCell<&'a mut [f32]>,
    s2: RefCell<&'a mut [f32]>,
}

impl InplaceOp1 for InPlaceUpdate<'_> {
    fn name(&self) -> &'static str {
        "head-optimizer-update"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("optimizer: only f32 variables are supported")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("optimizer: variable is not contiguous")
        };
        let w = &mut data[start..end];
        if w.len() != self.len {
            candle_core::bail!(
                "optimizer: gradient has {} elements, variable {}",
                self.len,
                w.len()
            )
        }
        apply(
            &self.coeffs,
            w,
            self.grad,
            &mut self.s1.borrow_mut(),
            &mut self.s2.borrow_mut(),
        );
        Ok(())
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
pub fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = if t.is_contiguous() {
        t.clone()
    } else {
        t.contiguous()?
    };
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(f(&v[a..b])),
        (Storage::Cpu(_), _) => candle_core::bail!("expected an f32 tensor, got {:?}", t.dtype()),
        _ => candle_core::bail!("expected a tensor on the CPU"),
    }
}

/// An optimizer over plain `f32` buffers (the parameters of hand-written networks), with its
/// state exposed for checkpoints. [`Optim`] is the same optimizer over Candle variables.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    state: Vec<[Vec<f32>; 2]>,
    config: OptimizerConfig,
    iterations: u64,
}

impl Optimizer {
    /// Zeroed state for parameters of the given lengths.
    pub fn new(config: OptimizerConfig, sizes: &[usize]) -> Result<Self> {
        config.validate()?;
        let slots = config.state_slots();
        let state = sizes
            .iter()
            .map(|&n| {
                [
                    vec![0f32; if slots >= 1 { n } else { 0 }],
                    vec![0f32; if slots >= 2 { n } else { 0 }],
                ]
            })
            .collect();
        Ok(Optimizer {
            state,
            config,
            iterations: 0,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The moving averages (two slots per parameter, in order; a slot the kind does not use is
    /// empty) and the step count: what a checkpoint must keep for a resumed run to continue exactly.
    pub fn state(&self) -> (&[[Vec<f32>; 2]], u64) {
        (&self.state, self.iterations)
    }

    /// Restores what [`Optimizer::state`] returned; the slots must have this optimizer's sizes.
    pub fn set_state(&mut self, slots: Vec<[Vec<f32>; 2]>, iterations: u64) -> Result<()> {
        let fits = slots.len() == self.state.len()
            && slots
                .iter()
                .zip(&self.state)
                .all(|(a, b)| a[0].len() == b[0].len() && a[1].len() == b[1].len());
        if !fits {
            return Err(Error::Invalid(
                "optimizer state does not fit the variables (another optimizer or network)".into(),
            ));
        }
        self.state = slots;
        self.iterations = iterations;
        Ok(())
    }

    /// Sets the learning rate of the following steps (a schedule's rate for the epoch).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.config.learning_rate = lr;
    }

    /// Number of steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// Starts a step: counts it and returns its coefficients.
    fn begin_step(&mut self) -> Coefficients {
        self.iterations += 1;
        Coefficients::new(&self.config, self.iterations)
    }

    /// One update of every parameter with its gradient (same order and lengths).
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<()> {
        let fits = params.len() == grads.len()
            && params.len() == self.state.len()
            && params
                .iter()
                .zip(grads)
                .zip(&self.state)
                .all(|((w, g), [s1, s2])| {
                    w.len() == g.len()
                        && (s1.is_empty() || s1.len() == w.len())
                        && (s2.is_empty() || s2.len() == w.len())
                });
        if !fits {
            return Err(Error::Invalid(format!(
                "optimizer: {} parameters, {} gradients, {} state buffers of other sizes",
                params.len(),
                grads.len(),
                self.state.len()
            )));
        }
        let coeffs = self.begin_step();
        for ((w, g), [s1, s2]) in params.iter_mut().zip(grads).zip(self.state.iter_mut()) {
            apply(&coeffs, w, GradSlice::Full(g), s1, s2);
        }
        Ok(())
    }
}

/// SGD with (Nesterov) momentum and decoupled weight decay: the settings fine-tuning records,
/// and (under the `clap` feature) its flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct SgdConfig {
    /// SGD learning rate.
    #[cfg_attr(feature = "clap", arg(long = "lr", value_name = "LR", default_value_t = SgdConfig::default().learning_rate))]
    pub learning_rate: f64,
    /// SGD momentum.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = SgdConfig::default().momentum))]
    pub momentum: f64,
    /// Nesterov momentum.
    #[cfg_attr(
        feature = "clap",
        arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_value_t = false,
            default_missing_value = "true", value_name = "BOOL")
    )]
    pub nesterov: bool,
    /// Decoupled weight decay (w -= w·wd·lr before each update).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    /// The tutorial's fine-tuning optimizer: SGD, learning rate 1e-4, momentum 0.9.
    fn default() -> Self {
        SgdConfig {
            learning_rate: 1e-4,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl SgdConfig {
    /// Checks the ranges, naming the flags.
    pub fn validate(&self) -> Result<()> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::Invalid(format!(
                "--lr {} must be > 0",
                self.learning_rate
            )));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::Invalid(format!(
                "--momentum {} must be in [0, 1)",
                self.momentum
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::Invalid(format!(
                "--weight-decay {} must be >= 0",
                self.weight_decay
            )));
        }
        Ok(())
    }

    /// The same settings as an [`OptimizerConfig`].
    pub fn to_config(&self) -> OptimizerConfig {
        OptimizerConfig {
            weight_decay: self.weight_decay,
            ..OptimizerConfig::sgd(self.learning_rate, self.momentum, self.nesterov)
        }
    }
}

/// An optimizer over a fixed list of Candle variables (all f32).
#[derive(Debug)]
pub struct Optim {
    vars: Vec<Var>,
    inner: Optimizer,
}

impl Optim {
    /// Creates the optimizer with zeroed state for every variable.
    pub fn new(vars: Vec<Var>, config: OptimizerConfig) -> Result<Self> {
        if let Some(v) = vars.iter().find(|v| v.dtype() != DType::F32) {
            return Err(Error::Invalid(format!(
                "optimizer: only f32 variables are supported, got {:?}",
                v.dtype()
            )));
        }
        let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
        Ok(Optim {
            inner: Optimizer::new(config, &sizes)?,
            vars,
        })
    }

    /// The variables this optimizer updates, in order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &OptimizerConfig {
        self.inner.config()
    }

    /// See [`Optimizer::state`].
    pub fn state(&self) -> (&[[Vec<f32>; 2]], u64) {
        self.inner.state()
    }

    /// See [`Optimizer::set_state`].
    pub fn set_state(&mut self, slots: Vec<[Vec<f32>; 2]>, iterations: u64) -> Result<()> {
        self.inner.set_state(slots, iterations)
    }

    /// Sets the learning rate of the following steps (a schedule's rate for the epoch).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.inner.set_learning_rate(lr)
    }

    /// Number of steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.inner.iterations()
    }

    /// One step with gradients given in the order of [`Optim::vars`]; `None` leaves a variable
    /// (and its state) untouched.
    pub fn step_with(&mut self, grads: &[Option<&Tensor>]) -> candle_core::Result<()> {
        let sources: Vec<Grad<'_>> = grads
            .iter()
            .map(|g| g.map_or(Grad::None, Grad::Tensor))
            .collect();
        self.step_sources(&sources)
    }

    /// One step with every variable's gradient present, in the order of [`Optim::vars`].
    pub fn step_all(&mut self, grads: &[Tensor]) -> candle_core::Result<()> {
        let sources: Vec<Grad<'_>> = grads.iter().map(Grad::Tensor).collect();
        self.step_sources(&sources)
    }

    /// One step where each gradient may be a tensor or produced on demand, chunk by chunk,
    /// while the update runs (so a large gradient never has to exist in memory).
    pub fn step_sources(&mut self, grads: &[Grad<'_>]) -> candle_core::Result<()> {
        if grads.len() != self.vars.len() {
            candle_core::bail!(
                "optimizer: {} gradients for {} variables",
                grads.len(),
                self.vars.len()
            )
        }
        let coeffs = self.inner.begin_step();
        for ((var, grad), state) in self.vars.iter().zip(grads).zip(self.inner.state.iter_mut()) {
            match *grad {
                Grad::None => {}
                Grad::Tensor(t) => update_var(&coeffs, var, t, state)?,
                Grad::Rows {
                    row_len,
                    fill,
                    then,
                } => {
                    if row_len == 0 || var.elem_count() % row_len != 0 {
                        candle_core::bail!(
                            "optimizer: row length {row_len} does not divide the {} elements of {:?}",
                            var.elem_count(),
                            var.shape()
                        )
                    }
                    update_var_with(
                        &coeffs,
                        var,
                        GradSlice::Rows {
                            row_len,
                            fill,
                            then,
                        },
                        state,
                    )?
                }
            }
        }
        Ok(())
    }
}

/// A gradient handed to [`Optim::step_sources`].
#[derive(Clone, Copy)]
pub enum Grad<'a> {
    /// No gradient: the variable and its state are left alone.
    None,
    /// A gradient tensor of the variable's shape.
    Tensor(&'a Tensor),
    /// Gradient rows produced on demand while the update runs: `fill(first_row, out)` must
    /// write rows `first_row .. first_row + out.len() / row_len` of the row-major flattened
    /// gradient into `out`. The rows are split into [`ROW_GROUPS`] fixed groups of
    /// [`rows_per_group`] rows, updated in parallel, each group piece by piece in row order;
    /// after each piece `then(group, first_row, updated_rows)` is called (e.g. to start the next
    /// forward pass on weights that are still in cache). Both run on several threads at once.
    Rows {
        row_len: usize,
        fill: FillRows<'a>,
        then: Option<AfterRows<'a>>,
    },
}

fn update_var(
    coeffs: &Coefficients,
    var: &Var,
    grad: &Tensor,
    state: &mut [Vec<f32>; 2],
) -> candle_core::Result<()> {
    if grad.shape() != var.shape() {
        candle_core::bail!(
            "optimizer: gradient shape {:?} does not match variable shape {:?}",
            grad.shape(),
            var.shape()
        )
    }
    let grad = grad
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .contiguous()?;
    with_cpu_f32(&grad, |g| {
        update_var_with(coeffs, var, GradSlice::Full(g), state)
    })?
}

fn update_var_with(
    coeffs: &Coefficients,
    var: &Var,
    grad: GradSlice<'_>,
    state: &mut [Vec<f32>; 2],
) -> candle_core::Result<()> {
    let [s1, s2] = state;
    if var.device().is_cpu() && var.is_contiguous() {
        let op = InPlaceUpdate {
            coeffs: *coeffs,
            grad,
            len: var.elem_count(),
            s1: RefCell::new(s1.as_mut_slice()),
            s2: RefCell::new(s2.as_mut_slice()),
        };
        var.inplace_op1(&op)
    } else {
        // Other devices: update a CPU copy and write it back.
        let mut w = var
            .as_tensor()
            .flatten_all()?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?;
        apply(coeffs, &mut w, grad, s1, s2);
        var.set(&Tensor::from_vec(w, var.shape(), var.device())?)
    }
}

impl candle_nn::Optimizer for Optim {
    type Config = OptimizerConfig;

    fn new(vars: Vec<Var>, config: OptimizerConfig) -> candle_core::Result<Self> {
        Optim::new(vars, config).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let vars = self.vars.clone();
        let grads: Vec<Option<&Tensor>> = vars.iter().map(|v| grads.get(v.as_tensor())).collect();
        self.step_with(&grads)
    }

    fn learning_rate(&self) -> f64 {
        self.inner.config.learning_rate
    }

    fn set_learning_rate(&mut self, lr: f64) {
        Optim::set_learning_rate(self, lr)
    }
}
