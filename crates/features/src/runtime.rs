//! ONNX Runtime: finding and loading the shared library once per process, choosing the device
//! (CPU, CUDA, auto) and building sessions from model bytes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::{Error, Result};

/// File name of the ONNX Runtime shared library on this platform.
pub const LIB_NAME: &str = if cfg!(target_os = "windows") {
    "onnxruntime.dll"
} else if cfg!(target_os = "macos") {
    "libonnxruntime.dylib"
} else {
    "libonnxruntime.so"
};

pub use base::runtime::{Device, Engine, ENGINE_VAR};

/// `BOTTLENECK_ENGINE` (unset or empty: `auto`); an unknown name is an error naming the choices.
pub fn engine_from_env() -> Result<Engine> {
    match std::env::var(ENGINE_VAR) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<Engine>()
            .map_err(|e| Error::Invalid(format!("{ENGINE_VAR}={v}: {e}"))),
        _ => Ok(Engine::Auto),
    }
}

/// How to build a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub device: Device,
    /// Intra-op threads; `None` lets ONNX Runtime use every physical core.
    pub threads: Option<usize>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            device: Device::Cpu,
            threads: None,
        }
    }
}

/// A session plus the execution provider that actually runs it.
pub struct Runner {
    pub session: Session,
    /// `"cpu"` or `"cuda"`: what the session really uses.
    pub device: &'static str,
}

static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Candidate locations of the ONNX Runtime library, in the order they are tried.
pub fn library_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    // Installed by scripts/setup.sh into <workspace>/.ort/lib; the binary lives in <workspace>/target/<profile>/.
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            out.push(dir.join(".ort/lib").join(LIB_NAME));
            out.push(dir.join("lib").join(LIB_NAME));
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    out.push(workspace.join(".ort/lib").join(LIB_NAME));
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join(".ort/lib").join(LIB_NAME));
    }
    out
}

/// The ONNX Runtime library this process will load.
pub fn library_path() -> Result<PathBuf> {
    let candidates = library_candidates();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Runtime(format!(
                "ORT_DYLIB_PATH={} does not exist; unset it or point it at libonnxruntime.so",
                p.display()
            )))
        };
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::Runtime(
            "the ONNX Runtime library was not found: run scripts/setup.sh (or scripts/setup.sh --cuda), \
             or set ORT_DYLIB_PATH to a libonnxruntime.so 1.22 or newer"
                .into(),
        )
    })
}

/// Loads ONNX Runtime once for the whole process and returns its environment.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    let env = ENV.get_or_init(|| {
        let path = library_path().map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&path).map_err(|e| format!("loading {}: {e}", path.display()))?;
        builder
            .with_name("bottleneck")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("creating the environment from {}: {e}", path.display()))
    });
    env.as_ref().map_err(|e| Error::Runtime(e.clone()))
}

/// Builds a session for `model` (ONNX protobuf bytes) on the requested device.
pub fn session(model: &[u8], opts: &SessionOptions) -> Result<Runner> {
    let env = environment()?;
    let build = |cuda: bool| -> std::result::Result<Session, ort::Error> {
        let mut b = Session::builder(env)?.with_optimization_level(GraphOptimizationLevel::All)?;
        if let Some(t) = opts.threads {
            b = b.with_intra_threads(t)?;
        }
        if cuda {
            b =
                b.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])?;
        }
        b.commit_from_memory(model)
    };
    match opts.device {
        Device::Cpu => Ok(Runner {
            session: build(false)?,
            device: "cpu",
        }),
        Device::Cuda => build(true)
            .map(|session| Runner {
                session,
                device: "cuda",
            })
            .map_err(|source| Error::OrtContext {
                what: "the CUDA execution provider failed to start; install the CUDA build with \
                       scripts/setup.sh --cuda (needs CUDA 12 and cuDNN 9), or use --device cpu"
                    .into(),
                source,
            }),
        Device::Auto => match build(true) {
            Ok(session) => Ok(Runner {
                session,
                device: "cuda",
            }),
            Err(_) => Ok(Runner {
                session: build(false)?,
                device: "cpu",
            }),
        },
    }
}
