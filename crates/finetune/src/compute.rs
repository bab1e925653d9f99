//! Where block + head compute: the per-step work of the epoch loop behind one small interface,
//! [`Compute`], with two implementations — the CPU kernels of [`Net`] ([`Cpu`]) and Candle on a
//! device through `accel` ([`OnDevice`]: `accel::train::FineTuneNet` + `accel::optim::DeviceOptim`,
//! CUDA on a GPU, or the CPU device for tests). The epoch loop, seeds, dropout masks,
//! checkpoints, resume and keep rule stay in `epoch` and `train::driver`; the training [`State`]
//! (weights and optimizer state on the host) stays the one truth between passes: a device loads it
//! at the first step of a pass and writes it back at [`Compute::sync`].

use accel::optim::DeviceOptim;
use accel::train::{BlockLayer, Dropout, FineTuneNet, HeadWeights};
use accel::{DType, Device, Tensor};

use crate::block::{nchw_to_nhwc, nhwc_to_nchw, Layer};
use crate::epoch::State;
use crate::error::{Error, Result};
use crate::net::Net;
use train::kernels::Nhwc;

/// What one training step did.
#[derive(Debug, Clone, Copy)]
pub struct Stepped {
    /// Sum of the per-sample losses of the batch.
    pub loss_sum: f64,
    pub correct: usize,
    /// False when the loss or a gradient was not finite (the weights were left unchanged).
    pub finite: bool,
}

/// The per-step compute of fine-tuning. Batches are NCHW frozen outputs (`n` rows of
/// `row_shape`), as the caches hold them.
pub trait Compute {
    /// Where it runs, in words (`cpu`, `cuda:0 (Candle)`).
    fn name(&self) -> String;
    /// Forward, loss, backward and one optimizer update of `state` on a batch, with an optional
    /// dropout mask `[n, hidden]`; nothing is updated when the step is not finite.
    fn step(
        &mut self,
        state: &mut State,
        rows: &[f32],
        row_shape: [usize; 3],
        labels: &[u32],
        mask: Option<&[f32]>,
    ) -> Result<Stepped>;
    /// Brings `state` up to date after steps (a device writes its weights and optimizer state back).
    fn sync(&mut self, state: &mut State) -> Result<()>;
    /// Logits `[n, outputs]` of `net` (no dropout) for a batch.
    fn logits(&mut self, net: &Net, rows: &[f32], row_shape: [usize; 3]) -> Result<Vec<f32>>;
}

fn dims(rows: &[f32], [c, h, w]: [usize; 3]) -> Result<Nhwc> {
    let row = c * h * w;
    if row == 0 || !rows.len().is_multiple_of(row) {
        return Err(Error::Invalid(format!(
            "{} values are not whole rows of [{c}, {h}, {w}]",
            rows.len()
        )));
    }
    Ok(Nhwc {
        n: rows.len() / row,
        h,
        w,
        c,
    })
}

/// The host step of [`Net`] and the CPU optimizer: a chain block on the CPU kernels (im2col +
/// GEMM, or bf16 direct convolutions); a graph block on its own Candle device ([`for_block`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu;

/// The compute for `block` on `device` (`None`: the CPU kernels): a chain block on a device
/// trains there entirely ([`OnDevice`]); a graph block computes on the device and keeps its
/// weights and optimizer on the host ([`Cpu`], the block moved to the device).
pub fn for_block(
    device: Option<&Device>,
    block: &mut crate::block::Block,
    compute: DType,
) -> Box<dyn Compute> {
    match device {
        None => Box::new(Cpu),
        Some(d) if block.graph().is_some() => {
            block.set_device(d);
            Box::new(Cpu)
        }
        Some(d) => Box::new(OnDevice::new(d.clone(), compute)),
    }
}

impl Compute for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn step(
        &mut self,
        state: &mut State,
        rows: &[f32],
        row_shape: [usize; 3],
        labels: &[u32],
        mask: Option<&[f32]>,
    ) -> Result<Stepped> {
        let d = dims(rows, row_shape)?;
        let r = state.net.step(&nchw_to_nhwc(rows, d), d, labels, mask)?;
        let finite =
            r.loss_sum.is_finite() && r.grads.iter().all(|g| g.iter().all(|v| v.is_finite()));
        if finite {
            let mut params: Vec<&mut [f32]> = state
                .net
                .params_mut()
                .into_iter()
                .map(|p| p.as_mut_slice())
                .collect();
            let grads: Vec<&[f32]> = r.grads.iter().map(Vec::as_slice).collect();
            state.optim.step(&mut params, &grads)?;
        }
        Ok(Stepped {
            loss_sum: r.loss_sum,
            correct: r.correct,
            finite,
        })
    }

    fn sync(&mut self, _state: &mut State) -> Result<()> {
        Ok(())
    }

    fn logits(&mut self, net: &Net, rows: &[f32], row_shape: [usize; 3]) -> Result<Vec<f32>> {
        let d = dims(rows, row_shape)?;
        net.logits(&nchw_to_nhwc(rows, d), d)
    }
}

/// Block + head as Candle variables on a device, trained with the device optimizer.
pub struct OnDevice {
    device: Device,
    /// The dtype of the products (f32, or bf16 on a GPU).
    compute: DType,
    /// The network on the device and the host weights it was loaded from (`None` once steps
    /// changed the device's weights, until [`Compute::sync`]).
    net: Option<(FineTuneNet, Option<Net>)>,
    /// The optimizer of the current pass (its state loaded from the host at the pass's first step).
    optim: Option<DeviceOptim>,
}

impl OnDevice {
    /// Block + head on `device`, products in `compute` (f32, or bf16 on a GPU).
    pub fn new(device: Device, compute: DType) -> Self {
        OnDevice {
            device,
            compute,
            net: None,
            optim: None,
        }
    }

    /// The weights of `net` on the device (built on first use, uploaded when they differ).
    fn load(&mut self, net: &Net) -> Result<&FineTuneNet> {
        let current = matches!(&self.net, Some((_, Some(loaded))) if loaded == net);
        if !current {
            match &mut self.net {
                Some((dev, loaded)) if loaded.as_ref().is_none_or(|l| same_shapes(l, net)) => {
                    dev.set_params(&net.params())?;
                    *loaded = Some(net.clone());
                }
                _ => {
                    let (block, head) = handover(net)?;
                    let dev = FineTuneNet::new(&block, &head, &self.device, self.compute)?;
                    self.net = Some((dev, Some(net.clone())));
                }
            }
        }
        match &self.net {
            Some((dev, _)) => Ok(dev),
            None => Err(Error::Invalid("the device network was not built".into())),
        }
    }

    /// The device optimizer for this pass: the host optimizer's state, loaded at its first step.
    fn begin_pass(&mut self, state: &State) -> Result<()> {
        if self.optim.is_some() {
            return Ok(());
        }
        let vars = self.load(&state.net)?.vars().to_vec();
        self.optim = Some(DeviceOptim::continuing(vars, &state.optim)?);
        Ok(())
    }

    fn batch(&self, rows: &[f32], row_shape: [usize; 3]) -> Result<Tensor> {
        let d = dims(rows, row_shape)?;
        Ok(Tensor::from_slice(
            rows,
            (d.n, d.c, d.h, d.w),
            &self.device,
        )?)
    }
}

/// Same layer shapes (so new weights can be copied into the variables already on the device).
fn same_shapes(a: &Net, b: &Net) -> bool {
    let (pa, pb) = (a.params(), b.params());
    pa.len() == pb.len() && pa.iter().zip(&pb).all(|(x, y)| x.len() == y.len())
}

/// A chain block + head in `accel`'s layouts (which are this crate's: kernels `[3, 3, in, out]`).
/// A graph block has no such form: it already computes on its device through [`Cpu`].
pub fn handover(net: &Net) -> Result<(Vec<BlockLayer>, HeadWeights)> {
    let block = net
        .block
        .layers
        .iter()
        .map(|l| match l {
            Layer::Conv(c) => Ok(BlockLayer::Conv {
                cin: c.cin,
                cout: c.cout,
                relu: c.relu,
                kernel: c.wm.clone(),
                bias: c.bias.clone(),
            }),
            Layer::MaxPool { .. } => Ok(BlockLayer::MaxPool),
            Layer::Graph(_) => Err(Error::Invalid(
                "a block rebuilt from graph nodes trains through the host step on its device"
                    .into(),
            )),
        })
        .collect::<Result<_>>()?;
    let h = &net.head;
    let head = HeadWeights {
        feature_shape: h.feature_shape,
        hidden: h.hidden,
        outputs: h.outputs(),
        dropout: h.dropout,
        w1: h.w1.clone(),
        b1: h.b1.clone(),
        w2: h.w2.clone(),
        b2: h.b2.clone(),
    };
    Ok((block, head))
}

/// True when every gradient is finite (one number per gradient read back).
fn all_finite(grads: &[Option<Tensor>]) -> Result<bool> {
    let sums: Vec<Tensor> = grads
        .iter()
        .flatten()
        .map(|g| g.sum_all())
        .collect::<std::result::Result<_, _>>()?;
    if sums.is_empty() {
        return Ok(true);
    }
    let sums = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
    Ok(sums.iter().all(|v| v.is_finite()))
}

impl Compute for OnDevice {
    fn name(&self) -> String {
        format!("{} (Candle)", accel::device::name(&self.device))
    }

    fn step(
        &mut self,
        state: &mut State,
        rows: &[f32],
        row_shape: [usize; 3],
        labels: &[u32],
        mask: Option<&[f32]>,
    ) -> Result<Stepped> {
        self.begin_pass(state)?;
        let x = self.batch(rows, row_shape)?;
        let dev = match &mut self.net {
            Some((dev, loaded)) => {
                // The device's weights move away from the host's until `sync`.
                *loaded = None;
                &*dev
            }
            None => return Err(Error::Invalid("the device network was not built".into())),
        };
        let dropout = mask.map_or(Dropout::Off, Dropout::Mask);
        let r = dev.step(&x, labels, dropout)?;
        let finite = r.loss_sum.is_finite() && all_finite(&r.grads)?;
        if finite {
            match &mut self.optim {
                Some(optim) => optim.step(&r.grads)?,
                None => return Err(Error::Invalid("the device optimizer is missing".into())),
            }
        }
        Ok(Stepped {
            loss_sum: r.loss_sum,
            correct: r.correct,
            finite,
        })
    }

    fn sync(&mut self, state: &mut State) -> Result<()> {
        let Some(optim) = self.optim.take() else {
            return Ok(());
        };
        let Some((dev, loaded)) = &mut self.net else {
            return Ok(());
        };
        for (host, value) in state.net.params_mut().into_iter().zip(dev.params()?) {
            *host = value;
        }
        optim.write_back(&mut state.optim)?;
        *loaded = Some(state.net.clone());
        Ok(())
    }

    fn logits(&mut self, net: &Net, rows: &[f32], row_shape: [usize; 3]) -> Result<Vec<f32>> {
        if self.optim.is_some() {
            return Err(Error::Invalid(
                "logits asked for in the middle of a training pass (sync first)".into(),
            ));
        }
        let x = self.batch(rows, row_shape)?;
        let z = self.load(net)?.logits(&x)?;
        Ok(accel::ops::to_host(&z)?)
    }
}

/// Block outputs (NCHW rows) of `net` for NCHW `rows`, on the CPU kernels.
pub fn block_rows(net: &Net, rows: &[f32], row_shape: [usize; 3]) -> Result<(Vec<f32>, Nhwc)> {
    let d = dims(rows, row_shape)?;
    let (y, od) = net.block.infer(&nchw_to_nhwc(rows, d), d)?;
    Ok((nhwc_to_nchw(&y, od), od))
}
