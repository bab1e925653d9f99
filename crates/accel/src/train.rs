//! Training steps in Candle with autograd on any device: fine-tuning's trainable block + dense
//! head ([`FineTuneNet`]) and stage 1's small convnet ([`ScratchNet`]). Weights come in and go out
//! as plain `Vec<f32>` in the CPU crates' layouts (conv kernels `[3, 3, in, out]`, dense kernels
//! `[in, out]` with rows of a flattened map in NHWC order), in the CPU crates' parameter order,
//! so a stage can hand its parameters over, train on the device and read them back.
//!
//! A step runs forward, computes the batch-mean loss and its gradient with respect to the
//! logits exactly like the CPU kernels (binary cross-entropy on one sigmoid unit, or softmax
//! cross-entropy; in f64 on the host from the downloaded logits), then back-propagates that
//! gradient through the network with `Tensor::backward`. Weights are f32 variables; with a
//! half `compute` dtype (bf16 on a GPU) the forward and backward products run in that dtype and
//! the gradients come back in f32.

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::ops;

/// Dropout on the hidden dense layer during a step.
#[derive(Debug, Clone, Copy)]
pub enum Dropout<'a> {
    /// No dropout (evaluation, or gradient checks).
    Off,
    /// A given mask `[n, hidden]` of multipliers (0 or `1/(1-rate)`), e.g. drawn by the CPU
    /// crate's random stream so that a run is the same on every device.
    Mask(&'a [f32]),
    /// Drawn on the device from its random generator (`Device::set_seed`).
    Random,
}

/// What one step computed.
pub struct Step {
    /// Sum of the per-sample losses (divide by the batch size for the mean).
    pub loss_sum: f64,
    /// Correct predictions in the batch.
    pub correct: usize,
    /// Gradients of the batch-mean loss, one per variable in parameter order (f32, on the
    /// device; `None` only for a variable the loss does not reach).
    pub grads: Vec<Option<Tensor>>,
}

impl Step {
    /// The gradients as flat `f32` vectors in the variables' layouts (zeros where `None`).
    pub fn grads_f32(&self, vars: &[Var]) -> Result<Vec<Vec<f32>>> {
        self.grads
            .iter()
            .zip(vars)
            .map(|(g, v)| match g {
                Some(g) => Ok(ops::to_host(g)?),
                None => Ok(vec![0f32; v.elem_count()]),
            })
            .collect()
    }
}

/// The loss of a batch from its logits `[n, outputs]`: sum of losses, correct predictions, and
/// the gradient of the mean loss with respect to the logits (as the CPU crates compute them).
fn loss(z: &[f32], labels: &[u32], outputs: usize) -> Result<(f64, usize, Vec<f32>)> {
    let n = labels.len();
    if z.len() != n * outputs {
        return Err(Error::Invalid(format!(
            "{} logits for {n} labels of {outputs} outputs",
            z.len()
        )));
    }
    let inv_n = 1.0 / n.max(1) as f64;
    let (mut sum, mut correct) = (0f64, 0usize);
    let mut dz = vec![0f32; z.len()];
    for (i, &y) in labels.iter().enumerate() {
        let zi = &z[i * outputs..(i + 1) * outputs];
        if outputs == 1 {
            if y > 1 {
                return Err(Error::Invalid(format!(
                    "label {y} for a two-class (sigmoid) output"
                )));
            }
            let (v, t) = (zi[0] as f64, y as f64);
            sum += v.max(0.0) - v * t + (-v.abs()).exp().ln_1p();
            dz[i] = ((1.0 / (1.0 + (-v).exp()) - t) * inv_n) as f32;
            correct += usize::from(u32::from(zi[0] > 0.0) == y);
        } else {
            if y as usize >= outputs {
                return Err(Error::Invalid(format!("label {y} for {outputs} classes")));
            }
            let max = zi.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = zi.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            sum += lse - zi[y as usize] as f64;
            let mut best = 0;
            for (j, &v) in zi.iter().enumerate() {
                let t = if j == y as usize { 1.0 } else { 0.0 };
                dz[i * outputs + j] = (((v as f64 - lse).exp() - t) * inv_n) as f32;
                if v > zi[best] {
                    best = j;
                }
            }
            correct += usize::from(best == y as usize);
        }
    }
    Ok((sum, correct, dz))
}

/// Back-propagates `dz` (gradient of the loss w.r.t. `logits`) and collects the gradients of `vars`.
fn backward(logits: &Tensor, dz: Vec<f32>, vars: &[Var]) -> Result<Vec<Option<Tensor>>> {
    let dz = Tensor::from_vec(dz, logits.dims(), logits.device())?;
    let surrogate = logits.to_dtype(DType::F32)?.mul(&dz)?.sum_all()?;
    let mut store = surrogate.backward()?;
    vars.iter()
        .map(|v| {
            store
                .remove(v.as_tensor())
                .map(|g| g.to_dtype(DType::F32))
                .transpose()
                .map_err(Error::from)
        })
        .collect()
}

/// Half-precision products exist only on GPUs in Candle.
fn check_compute(device: &Device, compute: DType) -> Result<()> {
    match compute {
        DType::F32 => Ok(()),
        DType::BF16 | DType::F16 if !device.is_cpu() => Ok(()),
        DType::BF16 | DType::F16 => Err(Error::Invalid(format!(
            "{compute:?} training needs a GPU (Candle has no half-precision products on the CPU): use f32 there"
        ))),
        other => Err(Error::Invalid(format!(
            "training computes in f32, bf16 or f16, not {other:?}"
        ))),
    }
}

fn var(values: &[f32], shape: &[usize], device: &Device, what: &str) -> Result<Var> {
    let n: usize = shape.iter().product();
    if values.len() != n {
        return Err(Error::Invalid(format!(
            "{what}: {} values, expected {n} for shape {shape:?}",
            values.len()
        )));
    }
    Ok(Var::from_slice(values, shape, device)?)
}

/// A conv kernel variable `[3, 3, in, out]` as the `[out, in, 3, 3]` tensor Candle convolves with.
fn oihw(w: &Var, dtype: DType) -> Result<Tensor> {
    Ok(w.as_tensor()
        .to_dtype(dtype)?
        .permute((3, 2, 0, 1))?
        .contiguous()?)
}

/// The dense head: `relu(x·w1 + b1)` → dropout → `·w2 + b2`.
fn head_forward(
    x: &Tensor,
    [w1, b1, w2, b2]: [&Var; 4],
    dropout: Dropout<'_>,
    rate: f32,
    dtype: DType,
) -> Result<Tensor> {
    let n = x.dim(0)?;
    let c = |v: &Var| v.as_tensor().to_dtype(dtype);
    let h = ops::relu(&ops::dense(x, &c(w1)?, &c(b1)?)?)?;
    let hidden = h.dim(1)?;
    let h = match dropout {
        Dropout::Off => h,
        Dropout::Mask(m) => {
            if m.len() != n * hidden {
                return Err(Error::Invalid(format!(
                    "dropout mask of {} values, need {}",
                    m.len(),
                    n * hidden
                )));
            }
            let m = Tensor::from_slice(m, (n, hidden), x.device())?.to_dtype(dtype)?;
            h.mul(&m)?
        }
        Dropout::Random if rate > 0.0 => {
            let keep = 1.0 - rate as f64;
            let u = Tensor::rand(0f32, 1f32, (n, hidden), x.device())?;
            let m = (u.lt(keep)?.to_dtype(DType::F32)? * (1.0 / keep))?.to_dtype(dtype)?;
            h.mul(&m)?
        }
        Dropout::Random => h,
    };
    Ok(ops::dense(&h, &c(w2)?, &c(b2)?)?)
}

/// One layer of the trainable block.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockLayer {
    /// 3×3 stride-1 "same" convolution + bias (+ ReLU): `kernel` `[3, 3, cin, cout]` (the CPU
    /// crate's im2col matrix `[9·cin, cout]`; `finetune::block::ConvLayer::wm`), `bias` `[cout]`.
    Conv {
        cin: usize,
        cout: usize,
        relu: bool,
        kernel: Vec<f32>,
        bias: Vec<f32>,
    },
    /// 2×2 stride-2 max pooling.
    MaxPool,
}

/// The dense head's weights as `finetune::classifier::Classifier` holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadWeights {
    /// Shape `[C, h, w]` of one block output.
    pub feature_shape: [usize; 3],
    pub hidden: usize,
    /// 1 (sigmoid, two classes) or the number of classes (softmax).
    pub outputs: usize,
    pub dropout: f32,
    /// `[C·h·w, hidden]`, rows in NHWC order of the block output.
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    /// `[hidden, outputs]`.
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

#[derive(Debug, Clone)]
enum Layer {
    /// Index into the variables of the conv's kernel; the bias is the next one.
    Conv {
        at: usize,
        relu: bool,
    },
    MaxPool,
}

/// Fine-tuning's trainable network on a device: the conv block (e.g. VGG16 block5) over the
/// frozen part's output, then the dense head.
pub struct FineTuneNet {
    layers: Vec<Layer>,
    /// Conv kernels and biases in order, then `w1, b1, w2, b2` (`finetune::net::Net::params` order).
    vars: Vec<Var>,
    feature_shape: [usize; 3],
    in_channels: usize,
    outputs: usize,
    dropout: f32,
    compute: DType,
}

impl FineTuneNet {
    /// Puts the block and head on `device` as f32 variables; `compute` is the dtype of the
    /// arithmetic (f32, or bf16/f16 on a GPU).
    pub fn new(
        block: &[BlockLayer],
        head: &HeadWeights,
        device: &Device,
        compute: DType,
    ) -> Result<Self> {
        check_compute(device, compute)?;
        let mut vars = Vec::new();
        let mut layers = Vec::new();
        let mut channels: Option<usize> = None;
        for (i, l) in block.iter().enumerate() {
            match l {
                BlockLayer::Conv {
                    cin,
                    cout,
                    relu,
                    kernel,
                    bias,
                } => {
                    if channels.is_some_and(|c| c != *cin) {
                        return Err(Error::Invalid(format!(
                            "block layer {i} takes {cin} channels, the layer before gives {}",
                            channels.unwrap_or_default()
                        )));
                    }
                    channels = Some(*cout);
                    layers.push(Layer::Conv {
                        at: vars.len(),
                        relu: *relu,
                    });
                    vars.push(var(kernel, &[3, 3, *cin, *cout], device, "conv kernel")?);
                    vars.push(var(bias, &[*cout], device, "conv bias")?);
                }
                BlockLayer::MaxPool => layers.push(Layer::MaxPool),
            }
        }
        let in_channels = match block.first() {
            Some(BlockLayer::Conv { cin, .. }) => *cin,
            _ => {
                return Err(Error::Invalid(
                    "the trainable block must start with a convolution".into(),
                ))
            }
        };
        let [c, h, w] = head.feature_shape;
        if channels != Some(c) {
            return Err(Error::Invalid(format!(
                "the block gives {} channels, the head expects {c}",
                channels.unwrap_or_default()
            )));
        }
        let d = c * h * w;
        vars.push(var(&head.w1, &[d, head.hidden], device, "head w1")?);
        vars.push(var(&head.b1, &[head.hidden], device, "head b1")?);
        vars.push(var(
            &head.w2,
            &[head.hidden, head.outputs],
            device,
            "head w2",
        )?);
        vars.push(var(&head.b2, &[head.outputs], device, "head b2")?);
        Ok(FineTuneNet {
            layers,
            vars,
            feature_shape: head.feature_shape,
            in_channels,
            outputs: head.outputs,
            dropout: head.dropout,
            compute,
        })
    }

    /// The variables in `finetune::net::Net::params` order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The current weights as flat vectors, in [`FineTuneNet::vars`] order and layouts.
    pub fn params(&self) -> Result<Vec<Vec<f32>>> {
        self.vars
            .iter()
            .map(|v| Ok(ops::to_host(v.as_tensor())?))
            .collect()
    }

    /// Overwrites the weights (same order, lengths and layouts as [`FineTuneNet::params`]).
    pub fn set_params(&self, params: &[&[f32]]) -> Result<()> {
        set_vars(&self.vars, params)
    }

    /// The block output `[N, C, h, w]` for the frozen part's output `x` `[N, in, H, W]`.
    fn block(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = x.dims4()?;
        if c != self.in_channels {
            return Err(Error::Invalid(format!(
                "the block takes {} channels, the batch has {c}",
                self.in_channels
            )));
        }
        let mut x = x.to_dtype(self.compute)?;
        for l in &self.layers {
            x = match l {
                Layer::Conv { at, relu } => {
                    let w = oihw(&self.vars[*at], self.compute)?;
                    let b = self.vars[at + 1].as_tensor().to_dtype(self.compute)?;
                    ops::conv_bias_relu(&x, &w, &b, 1, *relu)?
                }
                Layer::MaxPool => ops::max_pool2(&x)?,
            };
        }
        let (_, c, h, w) = x.dims4()?;
        if [c, h, w] != self.feature_shape {
            return Err(Error::Invalid(format!(
                "the block gives [{c}, {h}, {w}] maps, the head expects {:?}: another image size?",
                self.feature_shape
            )));
        }
        Ok(x)
    }

    fn head_vars(&self) -> [&Var; 4] {
        let k = self.vars.len();
        [
            &self.vars[k - 4],
            &self.vars[k - 3],
            &self.vars[k - 2],
            &self.vars[k - 1],
        ]
    }

    /// Logits `[N, outputs]` (f32, no dropout) for a batch of frozen outputs `[N, in, H, W]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let f = ops::flatten_nhwc(&self.block(&x.detach())?.detach())?;
        let z = head_forward(&f, self.head_vars(), Dropout::Off, 0.0, self.compute)?;
        Ok(z.detach().to_dtype(DType::F32)?)
    }

    /// Forward, loss and backward on a batch of frozen outputs `x` `[N, in, H, W]` (on this
    /// network's device) with `labels`: the gradients of the batch-mean loss in
    /// [`FineTuneNet::vars`] order (`finetune::net::Net::step`'s).
    pub fn step(&self, x: &Tensor, labels: &[u32], dropout: Dropout<'_>) -> Result<Step> {
        let n = x.dim(0)?;
        if labels.len() != n {
            return Err(Error::Invalid(format!(
                "{} labels for {n} samples",
                labels.len()
            )));
        }
        let f = ops::flatten_nhwc(&self.block(&x.detach())?)?;
        let z = head_forward(&f, self.head_vars(), dropout, self.dropout, self.compute)?;
        let zs = ops::to_host(&z)?;
        let (loss_sum, correct, dz) = loss(&zs, labels, self.outputs)?;
        Ok(Step {
            loss_sum,
            correct,
            grads: backward(&z, dz, &self.vars)?,
        })
    }
}

fn set_vars(vars: &[Var], params: &[&[f32]]) -> Result<()> {
    if params.len() != vars.len() {
        return Err(Error::Invalid(format!(
            "{} parameter tensors for {} variables",
            params.len(),
            vars.len()
        )));
    }
    for (v, p) in vars.iter().zip(params) {
        if p.len() != v.elem_count() {
            return Err(Error::Invalid(format!(
                "{} values for a variable of shape {:?}",
                p.len(),
                v.dims()
            )));
        }
        v.set(&Tensor::from_slice(p, v.shape(), v.device())?)?;
    }
    Ok(())
}

/// The shape of stage 1's network (as `scratch::net::Arch`): `[conv 3×3 valid + ReLU + max-pool
/// 2×2] × filters.len() → flatten (NHWC) → dense + ReLU → dropout → dense`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScratchArch {
    /// Input side (square RGB images).
    pub size: usize,
    pub filters: Vec<usize>,
    pub hidden: usize,
    pub dropout: f32,
    /// 1 (sigmoid) or the number of classes (softmax).
    pub outputs: usize,
}

impl ScratchArch {
    /// Side of the last pooled map.
    fn last_side(&self) -> Result<usize> {
        let mut s = self.size;
        for _ in &self.filters {
            if s < 4 {
                return Err(Error::Invalid(format!(
                    "--size {} is too small for {} conv blocks",
                    self.size,
                    self.filters.len()
                )));
            }
            s = (s - 2) / 2;
        }
        Ok(s)
    }

    /// Names and shapes of the parameters in `scratch::net::Arch::param_shapes` order.
    pub fn param_shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let side = self.last_side()?;
        let mut v = Vec::new();
        let mut cin = 3;
        for (i, &f) in self.filters.iter().enumerate() {
            v.push((format!("conv{}.kernel", i + 1), vec![3, 3, cin, f]));
            v.push((format!("conv{}.bias", i + 1), vec![f]));
            cin = f;
        }
        v.push(("dense1.kernel".into(), vec![side * side * cin, self.hidden]));
        v.push(("dense1.bias".into(), vec![self.hidden]));
        v.push(("dense2.kernel".into(), vec![self.hidden, self.outputs]));
        v.push(("dense2.bias".into(), vec![self.outputs]));
        Ok(v)
    }
}

/// Stage 1's convnet on a device.
pub struct ScratchNet {
    arch: ScratchArch,
    /// `scratch::net::Params::tensors` order.
    vars: Vec<Var>,
    compute: DType,
}

impl ScratchNet {
    /// Puts the parameters (`scratch::net::Params::tensors`: conv kernels `[3, 3, in, out]`,
    /// biases, dense kernels `[in, out]`) on `device` as f32 variables.
    pub fn new(
        arch: &ScratchArch,
        params: &[&[f32]],
        device: &Device,
        compute: DType,
    ) -> Result<Self> {
        check_compute(device, compute)?;
        let shapes = arch.param_shapes()?;
        if params.len() != shapes.len() {
            return Err(Error::Invalid(format!(
                "{} parameter tensors for a network that has {}",
                params.len(),
                shapes.len()
            )));
        }
        let vars = shapes
            .iter()
            .zip(params)
            .map(|((name, shape), p)| var(p, shape, device, name))
            .collect::<Result<_>>()?;
        Ok(ScratchNet {
            arch: arch.clone(),
            vars,
            compute,
        })
    }

    /// The variables in `scratch::net::Params::tensors` order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The current weights, in [`ScratchNet::vars`] order and layouts.
    pub fn params(&self) -> Result<Vec<Vec<f32>>> {
        self.vars
            .iter()
            .map(|v| Ok(ops::to_host(v.as_tensor())?))
            .collect()
    }

    /// Overwrites the weights (same order, lengths and layouts as [`ScratchNet::params`]).
    pub fn set_params(&self, params: &[&[f32]]) -> Result<()> {
        set_vars(&self.vars, params)
    }

    fn forward(&self, x: &Tensor, dropout: Dropout<'_>) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if (c, h, w) != (3, self.arch.size, self.arch.size) {
            return Err(Error::Invalid(format!(
                "the network takes [3, {s}, {s}] images, the batch has [{c}, {h}, {w}]",
                s = self.arch.size
            )));
        }
        let mut x = x.detach().to_dtype(self.compute)?;
        for i in 0..self.arch.filters.len() {
            let w = oihw(&self.vars[2 * i], self.compute)?;
            let b = self.vars[2 * i + 1].as_tensor().to_dtype(self.compute)?;
            x = ops::max_pool2(&ops::conv_bias_relu(&x, &w, &b, 0, true)?)?;
        }
        let f = ops::flatten_nhwc(&x)?;
        let k = 2 * self.arch.filters.len();
        let head = [
            &self.vars[k],
            &self.vars[k + 1],
            &self.vars[k + 2],
            &self.vars[k + 3],
        ];
        head_forward(&f, head, dropout, self.arch.dropout, self.compute)
    }

    /// Logits `[N, outputs]` (f32, no dropout) of images `[N, 3, size, size]` (RGB / 255).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .forward(x, Dropout::Off)?
            .detach()
            .to_dtype(DType::F32)?)
    }

    /// Forward, loss and backward on images `x` `[N, 3, size, size]` (RGB / 255, on this
    /// network's device): the gradients of the batch-mean loss in [`ScratchNet::vars`] order
    /// (`scratch::net::backward` of `scratch::net::loss`'s `dlogits`).
    pub fn step(&self, x: &Tensor, labels: &[u32], dropout: Dropout<'_>) -> Result<Step> {
        let n = x.dim(0)?;
        if labels.len() != n {
            return Err(Error::Invalid(format!(
                "{} labels for {n} images",
                labels.len()
            )));
        }
        let z = self.forward(x, dropout)?;
        let zs = ops::to_host(&z)?;
        let (loss_sum, correct, dz) = loss(&zs, labels, self.arch.outputs)?;
        Ok(Step {
            loss_sum,
            correct,
            grads: backward(&z, dz, &self.vars)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_matches_the_closed_forms() {
        let (s, c, dz) = loss(&[0.0, 2.0], &[1, 0], 1).unwrap();
        let want = 2f64.ln() + (2.0 + (-2f64).exp().ln_1p());
        assert!((s - want).abs() < 1e-9);
        assert_eq!(c, 0);
        assert!((dz[0] - (0.5 - 1.0) / 2.0).abs() < 1e-7);
        let (s, c, _) = loss(&[1.0, 1.0, 1.0], &[2], 3).unwrap();
        assert!((s - 3f64.ln()).abs() < 1e-9);
        assert_eq!(c, 0);
        assert!(loss(&[0.0], &[2], 1).is_err());
        assert!(loss(&[0.0, 1.0], &[5], 2).is_err());
    }

    #[test]
    fn shapes_are_checked() {
        let arch = ScratchArch {
            size: 6,
            filters: vec![2],
            hidden: 3,
            dropout: 0.5,
            outputs: 1,
        };
        let shapes = arch.param_shapes().unwrap();
        assert_eq!(shapes[2].1, vec![2 * 2 * 2, 3]);
        let bad = ScratchNet::new(&arch, &[&[0.0]], &Device::Cpu, DType::F32);
        assert!(bad.is_err());
        let zeros: Vec<Vec<f32>> = shapes
            .iter()
            .map(|(_, s)| vec![0.0; s.iter().product()])
            .collect();
        let refs: Vec<&[f32]> = zeros.iter().map(Vec::as_slice).collect();
        let half = ScratchNet::new(&arch, &refs, &Device::Cpu, DType::BF16);
        assert!(half.is_err_and(|e| e.to_string().contains("needs a GPU")));
        let tiny = ScratchArch { size: 3, ..arch };
        assert!(tiny.param_shapes().is_err());
    }
}
