//! The machine a stage ran on: CPU model (from `/proc/cpuinfo`), hardware threads, and the GPU
//! when ONNX Runtime used the CUDA execution provider.

use serde::{Deserialize, Serialize};

/// Where a stage ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name (`unknown CPU` when `/proc/cpuinfo` has none).
    pub cpu: String,
    /// Hardware threads the process may use.
    pub threads: usize,
    /// GPU name, filled in when a stage ran on CUDA.
    pub gpu: Option<String>,
}

impl Machine {
    /// The machine this process runs on (without GPU).
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| cpu_model(&t))
            .unwrap_or_else(|| format!("unknown CPU ({})", std::env::consts::ARCH));
        Machine {
            cpu,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            gpu: None,
        }
    }

    /// This machine, with the GPU's name when `device` is `cuda`.
    pub fn for_device(device: Option<&str>) -> Machine {
        let mut m = Machine::detect();
        if device == Some("cuda") {
            m.gpu = Some(gpu_name().unwrap_or_else(|| "CUDA GPU (name unknown)".into()));
        }
        m
    }

    /// One line: `CPU model, N threads[, GPU name]`.
    pub fn describe(&self) -> String {
        match &self.gpu {
            Some(g) => format!("{}, {} threads, GPU {g}", self.cpu, self.threads),
            None => format!("{}, {} threads, no GPU used", self.cpu, self.threads),
        }
    }
}

/// The `model name` line of `/proc/cpuinfo` (x86), else `Hardware`/`CPU part` lines (ARM).
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Hardware", "Processor", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        })
}

/// The first GPU's name from `nvidia-smi`, if it runs.
fn gpu_name() -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_reads_x86_and_arm_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nHardware\t: BCM2835\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("BCM2835"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }
}
