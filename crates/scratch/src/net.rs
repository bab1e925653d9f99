//! The tutorial's convnet: `[conv 3×3 valid + ReLU + max-pool 2×2] × 3 → flatten → dense + ReLU →
//! dropout → dense` (1 sigmoid unit for two classes, else softmax), its Keras-default (Glorot
//! uniform, zero bias) initialisation, and the forward and backward passes of one batch. The conv
//! part runs image by image in parallel, each image on one thread, so results do not depend on
//! the number of threads.

use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use train::kernels::conv::{self as kernels, Nhwc};
use train::kernels::convolve::{self, Run};
use train::kernels::{matmul, MatRef, Threads, TrainPrecision};

thread_local! {
    /// Per-thread conv output / output-gradient buffer, reused across images (fresh
    /// multi-megabyte allocations would cost a page fault per 4 KiB on every image).
    static MAP: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's map buffer resized to `len` values (its contents are stale:
/// callers overwrite them).
fn with_map<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    MAP.with_borrow_mut(|m| {
        if m.len() < len {
            m.resize(len, 0.0);
        }
        f(&mut m[..len])
    })
}

/// The network's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    /// Input side in pixels (square RGB input).
    pub size: usize,
    /// Filters of each conv block (the tutorial: 32, 32, 64).
    pub filters: Vec<usize>,
    /// Units of the hidden dense layer (the tutorial: 64).
    pub hidden: usize,
    /// Dropout rate after the hidden layer (the tutorial: 0.5).
    pub dropout: f32,
    /// Output units: 1 (sigmoid) for two classes, else one per class (softmax).
    pub outputs: usize,
}

impl Arch {
    /// The tutorial's network for `classes` classes at `size`×`size`.
    pub fn tutorial(size: usize, classes: usize) -> Self {
        Arch {
            size,
            filters: vec![32, 32, 64],
            hidden: 64,
            dropout: 0.5,
            outputs: Self::outputs_for(classes),
        }
    }

    /// Output units for `classes` classes.
    pub fn outputs_for(classes: usize) -> usize {
        if classes <= 2 {
            1
        } else {
            classes
        }
    }

    /// Input map of each conv block and the final pooled map.
    pub fn maps(&self) -> (Vec<Nhwc>, Nhwc) {
        let mut d = Nhwc::image(self.size, self.size, 3);
        let mut inputs = Vec::new();
        for &f in &self.filters {
            inputs.push(d);
            d = d.conv3x3(f, 0).pooled();
        }
        (inputs, d)
    }

    /// Values per input image.
    pub fn input_len(&self) -> usize {
        self.size * self.size * 3
    }

    /// Length of the flattened conv output.
    pub fn flat_len(&self) -> usize {
        self.maps().1.len()
    }

    /// Checks that every layer has a positive size.
    pub fn validate(&self) -> Result<()> {
        let (_, last) = self.maps();
        if self.filters.is_empty() || self.filters.contains(&0) {
            return Err(Error::Invalid(
                "every conv block needs at least one filter".into(),
            ));
        }
        if last.is_empty() {
            return Err(Error::Invalid(format!(
                "--size {} is too small for {} conv blocks (each takes 2 pixels and halves the rest); use at least {}",
                self.size,
                self.filters.len(),
                min_size(self.filters.len())
            )));
        }
        if self.hidden == 0 || self.outputs == 0 {
            return Err(Error::Invalid("dense layers need at least one unit".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Invalid(format!(
                "dropout {} must be in [0, 1)",
                self.dropout
            )));
        }
        Ok(())
    }

    /// Names and shapes of the parameters, in the order of [`Params::tensors`]. Conv kernels
    /// are Keras `[3, 3, in, out]`, dense kernels `[in, out]`.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::new();
        let mut cin = 3;
        for (i, &f) in self.filters.iter().enumerate() {
            v.push((format!("conv{}.kernel", i + 1), vec![3, 3, cin, f]));
            v.push((format!("conv{}.bias", i + 1), vec![f]));
            cin = f;
        }
        v.push(("dense1.kernel".into(), vec![self.flat_len(), self.hidden]));
        v.push(("dense1.bias".into(), vec![self.hidden]));
        v.push(("dense2.kernel".into(), vec![self.hidden, self.outputs]));
        v.push(("dense2.bias".into(), vec![self.outputs]));
        v
    }

    /// A one-line description (model metadata and reports).
    pub fn describe(&self) -> String {
        let convs: Vec<String> = self
            .filters
            .iter()
            .map(|f| format!("Conv2D({f},3x3,valid)+ReLU+MaxPool(2x2)"))
            .collect();
        let head = if self.outputs == 1 {
            "Dense(1)+sigmoid".to_string()
        } else {
            format!("Dense({})+softmax", self.outputs)
        };
        format!(
            "Input({s}x{s}x3, /255) -> {} -> Flatten({}) -> Dense({})+ReLU -> Dropout({}) -> {head}",
            convs.join(" -> "),
            self.flat_len(),
            self.hidden,
            self.dropout,
            s = self.size
        )
    }
}

/// The smallest input side that leaves at least one pixel after `blocks` conv blocks.
fn min_size(blocks: usize) -> usize {
    (0..blocks).fold(1, |s, _| 2 * s + 2)
}

/// The trainable values, one flat row-major buffer per entry of [`Arch::param_shapes`].
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub tensors: Vec<Vec<f32>>,
}

impl Params {
    /// Keras defaults: Glorot-uniform kernels (fans include the 3×3 receptive field), zero biases.
    pub fn init<R: Rng + ?Sized>(arch: &Arch, rng: &mut R) -> Self {
        let tensors = arch
            .param_shapes()
            .into_iter()
            .map(|(_, shape)| {
                let n: usize = shape.iter().product();
                if shape.len() == 1 {
                    return vec![0f32; n];
                }
                let receptive: usize = shape[..shape.len() - 2].iter().product();
                let fan_in = receptive * shape[shape.len() - 2];
                let fan_out = receptive * shape[shape.len() - 1];
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                (0..n).map(|_| rng.random_range(-limit..limit)).collect()
            })
            .collect();
        Params { tensors }
    }

    /// All zeros, shaped like `arch` (gradient accumulators).
    pub fn zeros(arch: &Arch) -> Self {
        Params {
            tensors: arch
                .param_shapes()
                .into_iter()
                .map(|(_, s)| vec![0f32; s.iter().product()])
                .collect(),
        }
    }

    /// Checks the buffers against `arch`.
    pub fn check(&self, arch: &Arch) -> Result<()> {
        let shapes = arch.param_shapes();
        if shapes.len() != self.tensors.len() {
            return Err(Error::Invalid(format!(
                "{} parameter tensors for a network that has {}",
                self.tensors.len(),
                shapes.len()
            )));
        }
        for ((name, shape), t) in shapes.iter().zip(&self.tensors) {
            let n: usize = shape.iter().product();
            if t.len() != n {
                return Err(Error::Invalid(format!(
                    "{name}: {} values, expected {n} for shape {shape:?}",
                    t.len()
                )));
            }
        }
        Ok(())
    }

    fn conv(&self, i: usize) -> (&[f32], &[f32]) {
        (&self.tensors[2 * i], &self.tensors[2 * i + 1])
    }

    fn dense(&self, arch: &Arch, i: usize) -> (&[f32], &[f32]) {
        let base = 2 * arch.filters.len() + 2 * i;
        (&self.tensors[base], &self.tensors[base + 1])
    }
}

/// What the forward pass of one image keeps for the backward pass: each block's pooled output
/// and where in its window every pooled value came from.
pub struct ImageTrace {
    pooled: Vec<Vec<f32>>,
    args: Vec<Vec<u8>>,
}

/// The forward pass of one batch.
pub struct Trace {
    images: Vec<ImageTrace>,
    /// `[n, flat]` flattened conv output.
    flat: Vec<f32>,
    /// `[n, hidden]` after ReLU and dropout.
    hidden: Vec<f32>,
    /// Dropout multipliers (0 or 1/(1 − rate)), present in training.
    mask: Option<Vec<f32>>,
    /// `[n, outputs]` pre-activation outputs.
    pub logits: Vec<f32>,
}

fn conv_image(arch: &Arch, p: &Params, x: &[f32], precision: TrainPrecision) -> ImageTrace {
    let (inputs, _) = arch.maps();
    let mut pooled: Vec<Vec<f32>> = Vec::with_capacity(inputs.len());
    let mut args = Vec::with_capacity(inputs.len());
    for (l, &d) in inputs.iter().enumerate() {
        let input: &[f32] = if l == 0 { x } else { &pooled[l - 1] };
        let (w, b) = p.conv(l);
        let o = d.conv3x3(arch.filters[l], 0);
        let po = o.pooled();
        let mut out = vec![0f32; po.len()];
        let mut arg = vec![0u8; po.len()];
        with_map(o.len(), |z| {
            convolve::forward(Run::new(precision, Threads::One), input, d, 0, w, o.c, z);
            kernels::bias_relu(z, b, true);
            kernels::maxpool2x2(z, o, &mut out, &mut arg);
        });
        pooled.push(out);
        args.push(arg);
    }
    ImageTrace { pooled, args }
}

/// The dropout multipliers of `len` hidden units at `rate`, drawn from `rng` in order (`1/(1-rate)`
/// kept, 0 dropped): what [`forward`] applies, also drawn for a device (`crate::compute`).
pub fn dropout_mask<R: Rng + ?Sized>(rng: &mut R, len: usize, rate: f32) -> Vec<f32> {
    let keep = 1.0 - rate;
    let scale = 1.0 / keep;
    (0..len)
        .map(|_| {
            if rng.random::<f32>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect()
}

/// Runs `n` images (`x`: `[n, size, size, 3]`, already scaled) through the network, the
/// convolutions' products in `precision`. With `dropout_rng`, dropout is active (training) and its
/// mask is drawn from that RNG.
pub fn forward<R: Rng + ?Sized>(
    arch: &Arch,
    p: &Params,
    x: &[f32],
    dropout_rng: Option<&mut R>,
    precision: TrainPrecision,
) -> Trace {
    let per = arch.input_len();
    let n = x.len() / per;
    let images: Vec<ImageTrace> = x
        .par_chunks_exact(per)
        .map(|img| conv_image(arch, p, img, precision))
        .collect();
    let f = arch.flat_len();
    let mut flat = Vec::with_capacity(n * f);
    for t in &images {
        if let Some(last) = t.pooled.last() {
            flat.extend_from_slice(last);
        }
    }
    let (w1, b1) = p.dense(arch, 0);
    let mut hidden = vec![0f32; n * arch.hidden];
    matmul(
        MatRef::new(&flat, n, f),
        MatRef::new(w1, f, arch.hidden),
        &mut hidden,
        false,
    );
    kernels::bias_relu(&mut hidden, b1, true);
    let mask = dropout_rng.filter(|_| arch.dropout > 0.0).map(|rng| {
        let mask = dropout_mask(rng, hidden.len(), arch.dropout);
        for (h, m) in hidden.iter_mut().zip(&mask) {
            *h *= m;
        }
        mask
    });
    let (w2, b2) = p.dense(arch, 1);
    let mut logits = vec![0f32; n * arch.outputs];
    matmul(
        MatRef::new(&hidden, n, arch.hidden),
        MatRef::new(w2, arch.hidden, arch.outputs),
        &mut logits,
        false,
    );
    kernels::bias_relu(&mut logits, b2, false);
    Trace {
        images,
        flat,
        hidden,
        mask,
        logits,
    }
}

/// Gradients of the conv part of one image, given the gradient of its flattened output.
fn conv_image_backward(
    arch: &Arch,
    p: &Params,
    x: &[f32],
    t: &ImageTrace,
    dflat: &[f32],
    precision: TrainPrecision,
) -> Vec<Vec<f32>> {
    let (inputs, _) = arch.maps();
    let blocks = inputs.len();
    let mut grads: Vec<Vec<f32>> = vec![Vec::new(); 2 * blocks];
    let mut g = dflat.to_vec();
    for l in (0..blocks).rev() {
        let d = inputs[l];
        let o = d.conv3x3(arch.filters[l], 0);
        let input: &[f32] = if l == 0 { x } else { &t.pooled[l - 1] };
        let mut dw = vec![0f32; 9 * d.c * o.c];
        let mut db = vec![0f32; o.c];
        let mut dx = if l > 0 {
            vec![0f32; d.len()]
        } else {
            Vec::new()
        };
        with_map(o.len(), |dz| {
            kernels::maxpool2x2_backward(&g, &t.pooled[l], &t.args[l], o, true, dz);
            convolve::weight_grad(
                Run::new(precision, Threads::One),
                input,
                d,
                0,
                dz,
                o.c,
                &mut dw,
            );
            kernels::add_column_sums(dz, &mut db);
            if l > 0 {
                let (w, _) = p.conv(l);
                convolve::input_grad(Run::new(precision, Threads::One), dz, d, 0, w, o.c, &mut dx);
            }
        });
        grads[2 * l] = dw;
        grads[2 * l + 1] = db;
        if l > 0 {
            g = dx;
        }
    }
    grads
}

/// Gradients of every parameter given the forward `trace` of `x` and the gradient of the loss
/// with respect to the logits (`[n, outputs]`), the convolutions' products in `precision`.
/// Per-image conv gradients are summed in image order, so the result is the same for any thread
/// count.
pub fn backward(
    arch: &Arch,
    p: &Params,
    x: &[f32],
    trace: &Trace,
    dlogits: &[f32],
    precision: TrainPrecision,
) -> Params {
    let n = trace.images.len();
    let f = arch.flat_len();
    let hd = arch.hidden;
    let o = arch.outputs;
    let mut grads = Params::zeros(arch);
    let base = 2 * arch.filters.len();
    // Output layer.
    matmul(
        MatRef::t(&trace.hidden, n, hd),
        MatRef::new(dlogits, n, o),
        &mut grads.tensors[base + 2],
        false,
    );
    kernels::add_column_sums(dlogits, &mut grads.tensors[base + 3]);
    let (w2, _) = p.dense(arch, 1);
    let mut dh = vec![0f32; n * hd];
    matmul(
        MatRef::new(dlogits, n, o),
        MatRef::t(w2, hd, o),
        &mut dh,
        false,
    );
    // Dropout and ReLU: `hidden` is post-dropout, so a zero there means no gradient either way.
    for (i, g) in dh.iter_mut().enumerate() {
        let m = trace.mask.as_ref().map_or(1.0, |m| m[i]);
        *g = if trace.hidden[i] > 0.0 { *g * m } else { 0.0 };
    }
    matmul(
        MatRef::t(&trace.flat, n, f),
        MatRef::new(&dh, n, hd),
        &mut grads.tensors[base],
        false,
    );
    kernels::add_column_sums(&dh, &mut grads.tensors[base + 1]);
    let (w1, _) = p.dense(arch, 0);
    let mut dflat = vec![0f32; n * f];
    matmul(
        MatRef::new(&dh, n, hd),
        MatRef::t(w1, f, hd),
        &mut dflat,
        false,
    );
    let per = arch.input_len();
    let per_image: Vec<Vec<Vec<f32>>> = (0..n)
        .into_par_iter()
        .map(|i| {
            conv_image_backward(
                arch,
                p,
                &x[i * per..(i + 1) * per],
                &trace.images[i],
                &dflat[i * f..(i + 1) * f],
                precision,
            )
        })
        .collect();
    for img in &per_image {
        for (acc, g) in grads.tensors.iter_mut().zip(img) {
            for (a, v) in acc.iter_mut().zip(g) {
                *a += v;
            }
        }
    }
    grads
}

/// Class probabilities of `n` images (`x`: `[n, size, size, 3]`, RGB scaled by 1/255, e.g. from
/// [`crate::data::write_batch`]): `[n, classes]`, rows summing to 1 (for the sigmoid network,
/// `[1 − p, p]` with `p` the probability of class 1).
pub fn predict_proba(arch: &Arch, p: &Params, x: &[f32]) -> Vec<f32> {
    let t = forward::<rand_chacha::ChaCha8Rng>(arch, p, x, None, TrainPrecision::Fp32);
    let mut out = Vec::new();
    for z in t.logits.chunks_exact(arch.outputs) {
        if arch.outputs == 1 {
            let p1 = 1.0 / (1.0 + (-z[0] as f64).exp());
            out.extend([(1.0 - p1) as f32, p1 as f32]);
        } else {
            let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let e: Vec<f64> = z.iter().map(|&v| ((v - max) as f64).exp()).collect();
            let sum: f64 = e.iter().sum();
            out.extend(e.iter().map(|v| (v / sum) as f32));
        }
    }
    out
}

/// Loss, accuracy and output gradient of one batch.
pub struct LossOut {
    /// Sum of the per-sample losses.
    pub loss_sum: f64,
    /// Number of correct predictions.
    pub correct: usize,
    /// Predicted class of each sample.
    pub predictions: Vec<u32>,
    /// Gradient of the **mean** loss with respect to the logits.
    pub dlogits: Vec<f32>,
}

/// Binary cross-entropy on a sigmoid unit (`outputs == 1`, label 1 is the positive class) or
/// categorical cross-entropy on a softmax, computed from the logits for stability.
pub fn loss(logits: &[f32], labels: &[u32], outputs: usize) -> LossOut {
    let n = labels.len();
    let mut out = LossOut {
        loss_sum: 0.0,
        correct: 0,
        predictions: Vec::with_capacity(n),
        dlogits: vec![0f32; logits.len()],
    };
    let inv_n = 1.0 / n.max(1) as f64;
    for (i, &y) in labels.iter().enumerate() {
        let z = &logits[i * outputs..(i + 1) * outputs];
        let dz = &mut out.dlogits[i * outputs..(i + 1) * outputs];
        let pred = if outputs == 1 {
            let z = z[0] as f64;
            let t = y as f64;
            // max(z, 0) − z·t + log(1 + e^(−|z|))
            out.loss_sum += z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
            let p = 1.0 / (1.0 + (-z).exp());
            dz[0] = ((p - t) * inv_n) as f32;
            u32::from(z > 0.0)
        } else {
            let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let sum: f64 = z.iter().map(|&v| (v as f64 - max).exp()).sum();
            let log_sum = sum.ln() + max;
            out.loss_sum += log_sum - z[y as usize] as f64;
            for (j, d) in dz.iter_mut().enumerate() {
                let p = (z[j] as f64 - log_sum).exp();
                let t = if j == y as usize { 1.0 } else { 0.0 };
                *d = ((p - t) * inv_n) as f32;
            }
            let mut best = 0;
            for j in 1..outputs {
                if z[j] > z[best] {
                    best = j;
                }
            }
            best as u32
        };
        if pred == y {
            out.correct += 1;
        }
        out.predictions.push(pred);
    }
    out
}
