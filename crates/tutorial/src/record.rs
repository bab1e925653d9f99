//! `RUN/tutorial.json`: the inputs of the run and, per stage, its status, the seconds it took
//! (summed over sittings) and the machine it ran on; rewritten atomically after every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Stage;
use crate::error::{Error, Result};
use crate::inputs::Inputs;
use crate::machine::Machine;

/// Version of the `tutorial.json` layout.
pub const FORMAT_VERSION: u32 = 1;

/// Where a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started and not finished (interrupted, or running now).
    Running,
    /// Finished; its outputs are complete.
    Done,
}

/// What the tutorial knows about one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub status: Status,
    /// Wall-clock seconds over every sitting that worked on the stage.
    pub seconds: f64,
    /// Number of sittings that worked on it (more than 1 after a resume).
    pub sittings: usize,
    /// Where ONNX Runtime ran (`cpu`, `cuda`), when the stage uses it.
    pub device: Option<String>,
    pub machine: Machine,
    /// Unix time of the last update.
    pub updated: u64,
}

/// The content of `RUN/tutorial.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub format_version: u32,
    pub inputs: Option<Inputs>,
    pub stages: BTreeMap<Stage, StageRecord>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            format_version: FORMAT_VERSION,
            inputs: None,
            stages: BTreeMap::new(),
        }
    }
}

/// `RUN/tutorial.json`.
pub fn path(run: &Path) -> PathBuf {
    run.join("tutorial.json")
}

impl Record {
    /// Reads the record of `run` (an empty one when there is none).
    pub fn load(run: &Path) -> Result<Record> {
        let p = path(run);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Record::default()),
            Err(e) => return Err(Error::io(&p, e)),
        };
        let rec: Record = serde_json::from_str(&text).map_err(|e| {
            Error::record(
                &p,
                format!("not a tutorial record ({e}); delete it to start the record afresh"),
            )
        })?;
        if rec.format_version != FORMAT_VERSION {
            return Err(Error::record(
                &p,
                format!(
                    "format version {} is not {FORMAT_VERSION}; delete it to start the record afresh",
                    rec.format_version
                ),
            ));
        }
        Ok(rec)
    }

    /// Writes the record of `run` atomically (temporary file, then rename).
    pub fn save(&self, run: &Path) -> Result<()> {
        let p = path(run);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::record(&p, format!("cannot encode the record: {e}")))?;
        Ok(runfs::write_atomic(&p, text.as_bytes())?)
    }

    /// Seconds and sittings already recorded for `stage`, which a continued stage adds to.
    pub fn prior(&self, stage: Stage) -> (f64, usize) {
        self.stages
            .get(&stage)
            .map_or((0.0, 0), |r| (r.seconds, r.sittings))
    }

    /// Sets the entry of `stage`.
    pub fn set(
        &mut self,
        stage: Stage,
        status: Status,
        seconds: f64,
        sittings: usize,
        device: Option<String>,
    ) {
        let machine = Machine::for_device(device.as_deref());
        self.stages.insert(
            stage,
            StageRecord {
                status,
                seconds,
                sittings,
                device,
                machine,
                updated: now(),
            },
        );
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
