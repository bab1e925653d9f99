//! The one place that decides which engine runs a stage's networks, from `--device` and the
//! engine knob ([`features::runtime::Engine`]: `--engine`, or `BOTTLENECK_ENGINE`):
//!
//! | device | engine `auto` (default) | `ort` | `candle` |
//! |---|---|---|---|
//! | `cpu` | ONNX Runtime + CPU kernels | same | Candle on the CPU |
//! | `cuda` | Candle on CUDA, error if it cannot start | ONNX Runtime's CUDA EP, CPU kernels | Candle on CUDA |
//! | `auto` | Candle on CUDA, else ONNX Runtime + CPU kernels (with a note) | ORT's `auto`, CPU kernels | Candle on CUDA, else on the CPU |
//!
//! [`select`] returns a [`Selected`]: the [`features::engine::Backend`] that opens the frozen
//! networks (extraction, fine-tuning's frozen part) and the Candle device training runs on
//! (`None`: the CPU kernels of `finetune`/`scratch`). [`extract`] is stage 2a on that choice.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use features::engine::{Backend, FeatureNet, NetRequest, Ort};
use features::extract::{ExtractConfig, ExtractSummary};
use features::onnx::Layout;
use features::runtime::{Device as Choice, Engine, SessionOptions};
use train::kernels::TrainPrecision;

use crate::classifier::Network;
use crate::device::{self, name};
use crate::error::{Error, Result};

/// What runs a stage.
#[derive(Clone)]
pub struct Selected {
    /// Opens the frozen networks.
    pub backend: Arc<dyn Backend>,
    /// The Candle device block + head and the stage-1 convnet train on; `None`: the CPU kernels.
    pub train: Option<Device>,
    /// Where the stage runs, in words, for summaries and the tutorial's report (`cpu`,
    /// `cuda:0 (Candle)`, `cpu (Candle)`, `cuda (ONNX Runtime) + cpu`).
    pub ran_on: String,
    /// Set when `auto` fell back to the CPU, or an engine knob is in effect: why (a note to show).
    pub note: Option<String>,
}

impl std::fmt::Debug for Selected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selected")
            .field("train", &self.train.as_ref().map(name))
            .field("ran_on", &self.ran_on)
            .field("note", &self.note)
            .finish()
    }
}

impl Selected {
    /// ONNX Runtime on `device` with the CPU kernels for training.
    fn ort(device: Choice, threads: Option<usize>, note: Option<String>) -> Self {
        let backend = Ort {
            opts: SessionOptions { device, threads },
        };
        let ran_on = match device {
            Choice::Cpu => "cpu".to_string(),
            other => format!("{} (ONNX Runtime) + cpu", other.name()),
        };
        Selected {
            backend: Arc::new(backend),
            train: None,
            ran_on,
            note,
        }
    }

    /// Candle on `device` for every network.
    fn candle(device: Device, note: Option<String>) -> Self {
        let ran_on = format!("{} (Candle)", name(&device));
        Selected {
            backend: Arc::new(Candle {
                device: device.clone(),
            }),
            train: Some(device),
            ran_on,
            note,
        }
    }

    /// True when the networks run on a GPU.
    pub fn on_gpu(&self) -> bool {
        self.train.as_ref().is_some_and(|d| !d.is_cpu())
    }

    /// The precision training products run in here: the CPU kernels resolve `auto` for this CPU
    /// ([`TrainPrecision::resolve`]); on a GPU `auto` is bf16 (bf16 products through Candle's
    /// bf16 matmul and convolution, FP32 weights and optimizer); Candle on the CPU has no bf16
    /// products, so there `auto` is FP32 and `bf16` an error.
    pub fn train_precision(&self, asked: TrainPrecision) -> Result<TrainPrecision> {
        match &self.train {
            None => asked.resolve().map_err(Error::Invalid),
            Some(d) if !d.is_cpu() => Ok(match asked {
                TrainPrecision::Auto => TrainPrecision::Bf16,
                p => p,
            }),
            Some(_) => match asked {
                TrainPrecision::Bf16 => Err(Error::Invalid(
                    "--train-precision bf16: Candle has no bf16 products on the CPU (engine candle \
                     on --device cpu); use fp32 or auto"
                        .into(),
                )),
                _ => Ok(TrainPrecision::Fp32),
            },
        }
    }
}

/// The Candle dtype of a resolved training precision.
pub fn compute_dtype(p: TrainPrecision) -> DType {
    match p {
        TrainPrecision::Bf16 => DType::BF16,
        _ => DType::F32,
    }
}

/// The engine knob in effect: `engine` when given (not `auto`), else `BOTTLENECK_ENGINE`.
pub fn engine_in_effect(engine: Engine) -> Result<Engine> {
    match engine {
        Engine::Auto => Ok(features::runtime::engine_from_env()?),
        e => Ok(e),
    }
}

/// Chooses what runs a stage on `device` with `engine` (see the module doc). Asked-for CUDA that
/// cannot start is an error naming the fix; `auto` falls back to the CPU with a note.
pub fn select(device: Choice, engine: Engine, threads: Option<usize>) -> Result<Selected> {
    let engine = engine_in_effect(engine)?;
    match (engine, device) {
        (Engine::Auto | Engine::Ort, Choice::Cpu) => Ok(Selected::ort(Choice::Cpu, threads, None)),
        (Engine::Ort, d) => Ok(Selected::ort(
            d,
            threads,
            Some(format!(
                "engine ort: the frozen networks run in ONNX Runtime on --device {} (its CUDA build: \
                 scripts/setup.sh --cuda); training runs on the CPU",
                d.name()
            )),
        )),
        (_, Choice::Cuda) => Ok(Selected::candle(device::cuda_device(0)?, None)),
        (Engine::Candle, Choice::Cpu) => Ok(Selected::candle(
            Device::Cpu,
            Some("engine candle: the networks run in Candle on the CPU".into()),
        )),
        (Engine::Auto, Choice::Auto) => match device::cuda_device(0) {
            Ok(d) => Ok(Selected::candle(d, None)),
            Err(e) => Ok(Selected::ort(Choice::Cpu, threads, Some(device::fallback_note(&e)))),
        },
        (Engine::Candle, Choice::Auto) => match device::cuda_device(0) {
            Ok(d) => Ok(Selected::candle(d, None)),
            Err(e) => Ok(Selected::candle(Device::Cpu, Some(device::fallback_note(&e)))),
        },
    }
}

/// Stage 2a on the engine [`select`] picks for `cfg.device` and `cfg.engine`.
pub fn extract(
    cfg: &ExtractConfig,
    on_event: &mut dyn FnMut(features::extract::Event),
) -> Result<ExtractSummary> {
    let selected = select(cfg.device, cfg.engine, cfg.threads)?;
    if let Some(note) = &selected.note {
        on_event(features::extract::Event::Note(note));
    }
    Ok(features::extract::extract_with(
        cfg,
        selected.backend.as_ref(),
        on_event,
    )?)
}

/// Candle's frozen networks ([`Network`]: a VGG conv chain or a graph of the nodes
/// [`crate::nodes`] rebuilds, and a classifier's dense head when the requested output is one) on
/// one device.
#[derive(Debug, Clone)]
pub struct Candle {
    pub device: Device,
}

impl Candle {
    /// The device in words (`cuda:0`, `cpu`).
    pub fn device_name(&self) -> String {
        name(&self.device)
    }
}

impl Backend for Candle {
    fn open(&self, req: &NetRequest<'_>) -> features::Result<Box<dyn FeatureNet>> {
        if req.int8 {
            return Err(features::Error::Invalid(format!(
                "an int8 frozen network runs in ONNX Runtime on the CPU only; on {} use --precision fp32",
                self.device_name()
            )));
        }
        let net = Network::from_onnx(req.model, req.output, &self.device)
            .map_err(|e| features::Error::Engine(Box::new(e)))?;
        Ok(Box::new(CandleNet {
            net,
            device: format!("{} (Candle)", self.device_name()),
        }))
    }

    fn engine(&self) -> Option<String> {
        Some(format!("candle {} fp32", self.device_name()))
    }
}

/// A [`Network`] as a frozen network: NCHW images in, NCHW maps (or a classifier's
/// probabilities) out.
pub struct CandleNet {
    net: Network,
    device: String,
}

impl FeatureNet for CandleNet {
    fn device(&self) -> String {
        self.device.clone()
    }

    fn layout(&self) -> Layout {
        Layout::Nchw
    }

    fn run(
        &mut self,
        input: &[f32],
        n: usize,
        size: usize,
    ) -> features::Result<(Vec<usize>, Vec<f32>)> {
        let run = || -> Result<(Vec<usize>, Vec<f32>)> {
            if input.len() != n * 3 * size * size {
                return Err(Error::Invalid(format!(
                    "input batch holds {} values, {n} images of {size}×{size}×3 need {}",
                    input.len(),
                    n * 3 * size * size
                )));
            }
            let x = Tensor::from_slice(input, (n, 3, size, size), self.net.device())?;
            let y = self.net.forward(&x)?;
            let dims = y.dims().to_vec();
            Ok((dims, crate::ops::to_host(&y)?))
        };
        run().map_err(|e| features::Error::Engine(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_onnx_runtime_and_the_knob_selects_candle() {
        let s = select(Choice::Cpu, Engine::Ort, None).unwrap();
        assert!(s.train.is_none() && s.backend.engine().is_none());
        assert_eq!(s.ran_on, "cpu");
        let s = select(Choice::Cpu, Engine::Candle, None).unwrap();
        assert!(s.train.as_ref().is_some_and(Device::is_cpu));
        assert_eq!(s.backend.engine().as_deref(), Some("candle cpu fp32"));
        assert_eq!(s.ran_on, "cpu (Candle)");
        assert_eq!(
            s.train_precision(TrainPrecision::Auto).unwrap(),
            TrainPrecision::Fp32
        );
        assert!(s.train_precision(TrainPrecision::Bf16).is_err());
    }

    #[test]
    #[cfg(not(feature = "cuda"))]
    fn cuda_without_the_feature_is_an_error_and_auto_says_cpu() {
        for engine in [Engine::Auto, Engine::Candle] {
            let e = select(Choice::Cuda, engine, None).unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        let s = select(Choice::Auto, Engine::Ort, None).unwrap();
        assert!(s.train.is_none());
        let s = select(Choice::Auto, Engine::Candle, None).unwrap();
        assert!(s
            .note
            .unwrap()
            .starts_with("--device auto: running on the CPU"));
        assert!(s.train.unwrap().is_cpu());
    }
}
