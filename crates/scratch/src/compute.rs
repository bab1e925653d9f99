//! Where stage 1's convnet computes: one training step and inference behind [`Compute`], with two
//! implementations — this crate's CPU kernels ([`Cpu`]) and Candle on a device through `accel`
//! ([`OnDevice`]: `accel::train::ScratchNet` + `accel::optim::DeviceOptim`; CUDA on a GPU, the CPU
//! device in tests). The learner keeps the epoch loop, shuffling, augmentation, dropout streams,
//! schedule, weight average and checkpoints; the host [`Params`] and [`Optimizer`] stay the one
//! truth between passes (a device loads them at a pass's first step and writes them back at
//! [`Compute::sync`]).

use accel::optim::DeviceOptim;
use accel::train::{Dropout, ScratchArch, ScratchNet};
use accel::{DType, Device, Tensor};
use rand::RngCore;
use train::kernels::TrainPrecision;
use train::optim::Optimizer;

use crate::error::{Error, Result};
use crate::net::{self, Arch, Params};

/// What one training step did.
#[derive(Debug, Clone, Copy)]
pub struct Stepped {
    /// Sum of the per-sample losses of the batch.
    pub loss_sum: f64,
    pub correct: usize,
}

/// Stage 1's per-step compute. Batches are `[n, size, size, 3]` images scaled to 0–1.
pub trait Compute {
    /// Where it runs, in words (`cpu`, `cuda:0 (Candle)`).
    fn name(&self) -> String;
    /// Forward with dropout drawn from `drop_rng` (as `net::forward` draws it), the loss, and —
    /// when the loss is finite — backward and one update of `params` by `optim`.
    #[allow(clippy::too_many_arguments)] // the step's network, weights, optimizer and batch
    fn step(
        &mut self,
        arch: &Arch,
        params: &mut Params,
        optim: &mut Optimizer,
        x: &[f32],
        labels: &[u32],
        drop_rng: &mut dyn RngCore,
        precision: TrainPrecision,
    ) -> Result<Stepped>;
    /// Copies the current weights into `params` (for the weight average between steps).
    fn sync_params(&mut self, params: &mut Params) -> Result<()>;
    /// Brings `params` and `optim` up to date at the end of a pass.
    fn sync(&mut self, params: &mut Params, optim: &mut Optimizer) -> Result<()>;
    /// Logits `[n, outputs]` of `params` (no dropout).
    fn logits(
        &mut self,
        arch: &Arch,
        params: &Params,
        x: &[f32],
        precision: TrainPrecision,
    ) -> Result<Vec<f32>>;
}

/// This crate's CPU kernels and the CPU optimizer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu;

impl Compute for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn step(
        &mut self,
        arch: &Arch,
        params: &mut Params,
        optim: &mut Optimizer,
        x: &[f32],
        labels: &[u32],
        drop_rng: &mut dyn RngCore,
        precision: TrainPrecision,
    ) -> Result<Stepped> {
        let trace = net::forward(arch, params, x, Some(drop_rng), precision);
        let out = net::loss(&trace.logits, labels, arch.outputs);
        if out.loss_sum.is_finite() {
            let grads = net::backward(arch, params, x, &trace, &out.dlogits, precision);
            let mut w: Vec<&mut [f32]> = params
                .tensors
                .iter_mut()
                .map(|t| t.as_mut_slice())
                .collect();
            let g: Vec<&[f32]> = grads.tensors.iter().map(Vec::as_slice).collect();
            optim.step(&mut w, &g)?;
        }
        Ok(Stepped {
            loss_sum: out.loss_sum,
            correct: out.correct,
        })
    }

    fn sync_params(&mut self, _params: &mut Params) -> Result<()> {
        Ok(())
    }

    fn sync(&mut self, _params: &mut Params, _optim: &mut Optimizer) -> Result<()> {
        Ok(())
    }

    fn logits(
        &mut self,
        arch: &Arch,
        params: &Params,
        x: &[f32],
        precision: TrainPrecision,
    ) -> Result<Vec<f32>> {
        Ok(net::forward::<rand_chacha::ChaCha8Rng>(arch, params, x, None, precision).logits)
    }
}

/// The convnet as Candle variables on a device, trained with the device optimizer.
pub struct OnDevice {
    device: Device,
    /// The dtype of the products (f32, or bf16 on a GPU).
    compute: DType,
    /// The network on the device and the host weights it holds (`None` while steps move them).
    net: Option<(ScratchNet, Option<Params>)>,
    /// The optimizer of the current pass.
    optim: Option<DeviceOptim>,
}

impl OnDevice {
    /// The convnet on `device`, products in `compute` (f32, or bf16 on a GPU).
    pub fn new(device: Device, compute: DType) -> Self {
        OnDevice {
            device,
            compute,
            net: None,
            optim: None,
        }
    }

    fn load(&mut self, arch: &Arch, params: &Params) -> Result<&ScratchNet> {
        let current = matches!(&self.net, Some((_, Some(p))) if p.tensors == params.tensors);
        if !current {
            let refs: Vec<&[f32]> = params.tensors.iter().map(Vec::as_slice).collect();
            match &mut self.net {
                Some((dev, loaded)) => {
                    dev.set_params(&refs)?;
                    *loaded = Some(params.clone());
                }
                None => {
                    let a = ScratchArch {
                        size: arch.size,
                        filters: arch.filters.clone(),
                        hidden: arch.hidden,
                        dropout: arch.dropout,
                        outputs: arch.outputs,
                    };
                    let dev = ScratchNet::new(&a, &refs, &self.device, self.compute)?;
                    self.net = Some((dev, Some(params.clone())));
                }
            }
        }
        match &self.net {
            Some((dev, _)) => Ok(dev),
            None => Err(Error::Invalid("the device network was not built".into())),
        }
    }

    fn batch(&self, arch: &Arch, x: &[f32]) -> Result<Tensor> {
        let s = arch.size;
        let n = x.len() / arch.input_len().max(1);
        Ok(accel::ops::nchw_from_nhwc(
            x,
            (n, s, s, 3),
            &self.device,
            DType::F32,
        )?)
    }

    fn read_params(&self, params: &mut Params) -> Result<()> {
        if let Some((dev, _)) = &self.net {
            for (host, value) in params.tensors.iter_mut().zip(dev.params()?) {
                *host = value;
            }
        }
        Ok(())
    }
}

impl Compute for OnDevice {
    fn name(&self) -> String {
        format!("{} (Candle)", accel::device::name(&self.device))
    }

    fn step(
        &mut self,
        arch: &Arch,
        params: &mut Params,
        optim: &mut Optimizer,
        x: &[f32],
        labels: &[u32],
        drop_rng: &mut dyn RngCore,
        _precision: TrainPrecision,
    ) -> Result<Stepped> {
        if self.optim.is_none() {
            let vars = self.load(arch, params)?.vars().to_vec();
            self.optim = Some(DeviceOptim::continuing(vars, optim)?);
        }
        let xt = self.batch(arch, x)?;
        let n = labels.len();
        let mask = (arch.dropout > 0.0)
            .then(|| net::dropout_mask(drop_rng, n * arch.hidden, arch.dropout));
        let (Some((dev, loaded)), Some(device_optim)) = (&mut self.net, &mut self.optim) else {
            return Err(Error::Invalid("the device network was not built".into()));
        };
        *loaded = None;
        let dropout = mask.as_deref().map_or(Dropout::Off, Dropout::Mask);
        let r = dev.step(&xt, labels, dropout)?;
        if r.loss_sum.is_finite() {
            device_optim.step(&r.grads)?;
        }
        Ok(Stepped {
            loss_sum: r.loss_sum,
            correct: r.correct,
        })
    }

    fn sync_params(&mut self, params: &mut Params) -> Result<()> {
        self.read_params(params)
    }

    fn sync(&mut self, params: &mut Params, optim: &mut Optimizer) -> Result<()> {
        let Some(device_optim) = self.optim.take() else {
            return Ok(());
        };
        self.read_params(params)?;
        device_optim.write_back(optim)?;
        if let Some((_, loaded)) = &mut self.net {
            *loaded = Some(params.clone());
        }
        Ok(())
    }

    fn logits(
        &mut self,
        arch: &Arch,
        params: &Params,
        x: &[f32],
        _precision: TrainPrecision,
    ) -> Result<Vec<f32>> {
        if self.optim.is_some() {
            return Err(Error::Invalid(
                "logits asked for in the middle of a training pass (sync first)".into(),
            ));
        }
        let xt = self.batch(arch, x)?;
        let z = self.load(arch, params)?.logits(&xt)?;
        Ok(z.flatten_all()?.to_vec1::<f32>()?)
    }
}
