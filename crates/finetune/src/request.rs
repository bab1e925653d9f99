//! How `--resume` completes a fine-tuning configuration: every setting the command line did not
//! give comes from the checkpoint (the chosen [`crate::Options`] field by field, the model, the
//! split tensor, the epoch count, the augmentation and its seed); without `--resume`, or without
//! a checkpoint (left for [`crate::finetune`] to report), the configuration stays as asked.

use crate::checkpoint;
use crate::config::{FinetuneConfig, FinetunePaths};
use crate::error::Result;

/// `cfg` with what `given(name)` says was not asked for taken from the checkpoint when resuming.
/// The names are [`crate::Options::names`], `model`, `split_at`, `epochs`, `seed` and `augment`
/// (any augmentation setting).
pub fn resolve(mut cfg: FinetuneConfig, given: &dyn Fn(&str) -> bool) -> Result<FinetuneConfig> {
    let paths = FinetunePaths::new(&cfg.run);
    if !cfg.resume || !paths.stage.checkpoint.is_file() {
        return Ok(cfg);
    }
    let (stored, epochs) = checkpoint::read_settings(&paths.stage.checkpoint)?;
    if !given("model") {
        cfg.model = Some(stored.model);
    }
    if !given("split_at") {
        cfg.split_at = Some(stored.split_at);
    }
    if !given("epochs") {
        cfg.epochs = epochs;
    }
    if !given("augment") {
        cfg.augment = stored.augment;
    }
    if !given("seed") {
        cfg.seed = stored.seed;
    }
    cfg.options = cfg.options.resumed(&stored.options, given)?;
    Ok(cfg)
}
