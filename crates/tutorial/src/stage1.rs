//! Stage 1 (the small convnet from scratch): running `scratch::train` with the tutorial's settings
//! (resuming from its checkpoint when interrupted).

use crate::config::TutorialConfig;
use crate::error::{Error, Result};
use crate::inputs::Prepared;

/// Trains stage 1 (resuming when `resume`, starting over when `force`).
pub fn run(
    cfg: &TutorialConfig,
    prep: &Prepared,
    resume: bool,
    force: bool,
    on_event: &mut dyn FnMut(scratch::Event),
) -> Result<scratch::ScratchReport> {
    let mut scfg = cfg.scratch_config(&prep.data_dir);
    scfg.resume = resume;
    scfg.force = force && !resume;
    let report = scratch::train(&scfg, on_event)?;
    if !report.finished {
        return Err(Error::Invalid(format!(
            "stopped after epoch {} of {}; run the tutorial again to continue",
            report.epochs_done, report.epochs
        )));
    }
    Ok(report)
}
