//! Choosing the Candle device from `--device cpu|cuda|auto`: CUDA that cannot start is an error
//! naming the fix (never a silent CPU run); `auto` falls back to the CPU and says so.

use candle_core::Device;
pub use features::runtime::Device as Choice;

use crate::error::{Error, Result};

/// The command that builds a CUDA-enabled binary (named in error messages).
pub const CUDA_BUILD_HINT: &str =
    "rebuild with `cargo build --release -p bottleneck-cli --features cuda` \
     (needs nvcc: see scripts/cuda_check.sh)";

/// A device picked by [`select`], with a note when it is not what was asked for.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    /// Set when `auto` fell back to the CPU: why (for the user, e.g. a warning event).
    pub note: Option<String>,
}

/// Whether this build has Candle's CUDA backend.
pub const fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// `"cpu"` or `"cuda:N"`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The CUDA device `ordinal`, or an error that says why it cannot start and what fixes it.
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    if !cuda_compiled() {
        return Err(Error::Device(format!(
            "--device cuda: this binary was built without CUDA: {CUDA_BUILD_HINT}, or use --device cpu"
        )));
    }
    if let Some((reason, fix)) = missing_libraries() {
        return Err(Error::Device(format!(
            "--device cuda: CUDA device {ordinal} could not start ({reason}); {fix}, or use --device cpu"
        )));
    }
    // A driver library that misbehaves can panic deep inside the bindings; report it as an error.
    let started = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    match started {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(Error::Device(start_failure(ordinal, &e.to_string()))),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Device(start_failure(ordinal, &what)))
        }
    }
}

/// The CUDA libraries Candle opens at run time (`dynamic-loading`: the binary starts without them),
/// with whether each can be opened here. Asking opens and closes each library; nothing in it runs.
#[cfg(feature = "cuda")]
fn cuda_libraries() -> Vec<(&'static str, bool)> {
    // SAFETY: each call only tries `dlopen` on the library's usual names and closes what it opened.
    unsafe {
        vec![
            (
                "cuBLAS (libcublas)",
                cudarc::cublas::sys::is_culib_present(),
            ),
            (
                "cuBLASLt (libcublasLt)",
                cudarc::cublaslt::sys::is_culib_present(),
            ),
            (
                "cuRAND (libcurand)",
                cudarc::curand::sys::is_culib_present(),
            ),
            ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present()),
            #[cfg(feature = "cudnn")]
            ("cuDNN (libcudnn)", cudarc::cudnn::sys::is_culib_present()),
        ]
    }
}

/// Why CUDA cannot start for want of a library, and the fix; `None` when all are there (or in a
/// build without CUDA, which [`cuda_device`] refuses before asking).
fn missing_libraries() -> Option<(String, String)> {
    #[cfg(feature = "cuda")]
    {
        // SAFETY: as in `cuda_libraries`.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Some((
                "the NVIDIA driver's libcuda.so.1 was not found".into(),
                "install the NVIDIA driver (check `nvidia-smi`) or put its folder on LD_LIBRARY_PATH".into(),
            ));
        }
        let missing: Vec<&str> = cuda_libraries()
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(name, _)| name)
            .collect();
        if !missing.is_empty() {
            return Some((
                format!("not found: {}", missing.join(", ")),
                "install the CUDA libraries of the version this binary was built with (the toolkit's, \
                 or PyTorch's nvidia-* wheels) and put their folders on LD_LIBRARY_PATH"
                    .into(),
            ));
        }
    }
    None
}

/// The message for a CUDA device that would not start, with the likely fix.
fn start_failure(ordinal: usize, reason: &str) -> String {
    let fix = if reason.contains("NO_DEVICE") || reason.contains("no CUDA-capable device") {
        "no NVIDIA GPU is visible (check `nvidia-smi` and CUDA_VISIBLE_DEVICES)"
    } else if reason.contains("INVALID_DEVICE") {
        "there is no GPU with that number (check `nvidia-smi`)"
    } else if reason.contains("INSUFFICIENT_DRIVER") || reason.contains("UNSUPPORTED_PTX") {
        "the NVIDIA driver is older than the CUDA version this binary was built with: update the driver \
         or rebuild with the CUDA toolkit that matches it"
    } else {
        "check the NVIDIA driver with `nvidia-smi`"
    };
    format!("--device cuda: CUDA device {ordinal} could not start ({reason}); {fix}, or use --device cpu")
}

/// The device for a `--device` choice: `cpu`, `cuda` (an error when CUDA cannot start) or `auto`
/// (CUDA when it starts, else the CPU with a note saying why).
pub fn select(choice: Choice) -> Result<Selected> {
    match choice {
        Choice::Cpu => Ok(Selected {
            device: Device::Cpu,
            note: None,
        }),
        Choice::Cuda => Ok(Selected {
            device: cuda_device(0)?,
            note: None,
        }),
        Choice::Auto => match cuda_device(0) {
            Ok(device) => Ok(Selected { device, note: None }),
            Err(e) => Ok(Selected {
                device: Device::Cpu,
                note: Some(fallback_note(&e)),
            }),
        },
    }
}

/// The note of `--device auto` running on the CPU because CUDA would not start (`e`, from
/// [`cuda_device`]): why, without the advice meant for `--device cuda`.
pub(crate) fn fallback_note(e: &Error) -> String {
    let why = e.to_string();
    let why = why.trim_start_matches("--device cuda: ");
    let why = why.trim_end_matches(", or use --device cpu");
    format!("--device auto: running on the CPU ({why})")
}

/// The dtype to compute in on `device` for a precision name: `f32`, `bf16` or `f16`. The CPU
/// computes in f32 whatever is asked (Candle's CPU convolutions widen half types to f32 anyway).
pub fn compute_dtype(device: &Device, precision: DTypeChoice) -> candle_core::DType {
    if device.is_cpu() {
        return candle_core::DType::F32;
    }
    precision.dtype()
}

features::choices! {
    /// Arithmetic precision of the Candle networks.
    pub enum DTypeChoice("precision") {
        /// 32-bit floats everywhere (the parity reference).
        F32 = "f32" | "fp32",
        /// bfloat16 weights and activations, f32 accumulation (the fast one on NVIDIA GPUs).
        Bf16 = "bf16",
        /// float16 weights and activations.
        F16 = "f16" | "fp16",
    }
}

impl DTypeChoice {
    /// The Candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            DTypeChoice::F32 => candle_core::DType::F32,
            DTypeChoice::Bf16 => candle_core::DType::BF16,
            DTypeChoice::F16 => candle_core::DType::F16,
        }
    }
}

/// Lets cuBLAS use TF32 tensor cores for f32 products (about 10 bits of mantissa in the
/// products, f32 accumulation). No effect on the CPU or in builds without CUDA.
pub fn allow_tf32(on: bool) {
    #[cfg(feature = "cuda")]
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(on);
    #[cfg(not(feature = "cuda"))]
    let _ = on;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "cuda"))]
    fn cuda_without_the_feature_names_the_rebuild() {
        let e = select(Choice::Cuda).expect_err("no CUDA in this build");
        let msg = e.to_string();
        assert!(msg.contains("built without CUDA"), "{msg}");
        assert!(
            msg.contains("cargo build --release -p bottleneck-cli --features cuda"),
            "{msg}"
        );
        assert!(msg.contains("--device cpu"), "{msg}");
        assert!(cuda_device(0).is_err());
    }

    #[test]
    #[cfg(feature = "cuda")]
    fn a_cuda_build_without_the_cuda_libraries_refuses_cuda_by_name_and_auto_runs_on_the_cpu() {
        // Where the libraries are all there (a GPU machine) the GPU check covers starting;
        // scripts/cuda_check.sh sets BOTTLENECK_EXPECT_NO_CUDA where the driver is missing.
        let expect_missing = std::env::var_os("BOTTLENECK_EXPECT_NO_CUDA").is_some();
        let Some((reason, fix)) = missing_libraries() else {
            assert!(
                !expect_missing,
                "no NVIDIA driver here, yet every CUDA library was found"
            );
            return;
        };
        assert!(
            reason.contains("libcuda.so.1") || !expect_missing,
            "{reason}"
        );
        let e = select(Choice::Cuda)
            .expect_err("CUDA cannot start without its libraries")
            .to_string();
        assert!(
            e.contains(&reason) && e.contains(&fix) && e.ends_with("or use --device cpu"),
            "{e}"
        );
        let auto = select(Choice::Auto).expect("auto never fails for want of CUDA");
        assert!(auto.device.is_cpu());
        let note = auto.note.expect("auto says why it runs on the CPU");
        assert!(
            note.contains(&reason) && !note.contains("use --device cpu"),
            "{note}"
        );
    }

    #[test]
    fn cpu_is_cpu_and_auto_falls_back_with_a_note() {
        let cpu = select(Choice::Cpu).unwrap();
        assert!(cpu.device.is_cpu() && cpu.note.is_none());
        let auto = select(Choice::Auto).unwrap();
        if auto.device.is_cpu() {
            let note = auto.note.expect("auto on the CPU says why");
            assert!(
                note.starts_with("--device auto: running on the CPU ("),
                "{note}"
            );
            if !cuda_compiled() {
                assert!(note.contains("built without CUDA"), "{note}");
            }
        } else {
            assert!(auto.note.is_none());
        }
        assert_eq!(name(&Device::Cpu), "cpu");
    }

    #[test]
    fn start_failures_name_a_fix() {
        let m = start_failure(
            0,
            "DriverError(CUDA_ERROR_NO_DEVICE, \"no CUDA-capable device is detected\")",
        );
        assert!(
            m.contains("no NVIDIA GPU is visible") && m.contains("--device cpu"),
            "{m}"
        );
        let m = start_failure(3, "CUDA_ERROR_INVALID_DEVICE");
        assert!(
            m.contains("device 3") && m.contains("no GPU with that number"),
            "{m}"
        );
        let m = start_failure(0, "CUDA_ERROR_INSUFFICIENT_DRIVER");
        assert!(m.contains("driver is older"), "{m}");
    }

    #[test]
    fn precision_names_parse() {
        assert_eq!("bf16".parse::<DTypeChoice>().unwrap(), DTypeChoice::Bf16);
        assert_eq!(
            compute_dtype(&Device::Cpu, DTypeChoice::Bf16),
            candle_core::DType::F32
        );
    }
}
