//! The tutorial as a dispatcher over its stages: the configuration each stage runs with (built in
//! one place, used both to ask a stage about its outputs and to run it), and each stage's own
//! answer about what `RUN` holds for it.

use features::extract::ExtractConfig;
use finetune::FinetuneConfig;
use head::mlp::TrainConfig;
use runfs::Status;

use crate::config::{Stage, TutorialConfig};
use crate::error::Result;
use crate::inputs::Prepared;

/// What each stage's outputs say (the tutorial's name for [`Status`]).
pub type Found = Status;

/// The extraction settings of the tutorial.
pub fn extract_config(cfg: &TutorialConfig, prep: &Prepared) -> ExtractConfig {
    ExtractConfig {
        data: prep.data_dir.clone(),
        model: prep.model.clone(),
        run: cfg.run.clone(),
        preprocess: Some(prep.preprocess),
        size: prep.size,
        batch: 16,
        device: cfg.device,
        engine: cfg.engine,
        threads: cfg.threads,
        resize: prep.resize,
        strict: false,
        hub: cfg.hub.clone(),
        precision: cfg.precision,
        shard: None,
        exclude: cfg.exclude.clone(),
    }
}

/// The head settings of the tutorial.
pub fn head_config(cfg: &TutorialConfig) -> TrainConfig {
    TrainConfig {
        epochs: cfg.head_epochs,
        recipe: cfg.head_recipe,
        ..TrainConfig::default()
    }
}

/// The fine-tuning settings of the tutorial (`resume` and `force` are the caller's).
pub fn finetune_config(cfg: &TutorialConfig, prep: &Prepared) -> FinetuneConfig {
    let mut f = FinetuneConfig::new(&cfg.run, &prep.data_dir);
    f.model = Some(prep.model.clone());
    f.split_at = cfg.split_at.clone();
    f.epochs = cfg.finetune_epochs;
    f.options = finetune::Options {
        precision: prep.finetune_precision,
        train_precision: cfg.train_precision,
        ..cfg.finetune.clone()
    };
    f.device = cfg.device;
    f.engine = cfg.engine;
    f.threads = cfg.threads;
    f.hub = cfg.hub.clone();
    f
}

/// The outputs of `stage`, as the stage itself judges them.
pub fn stage(stage: Stage, cfg: &TutorialConfig, prep: &Prepared) -> Result<Found> {
    Ok(match stage {
        Stage::Scratch => scratch::freshness::status(&cfg.scratch_config(&prep.data_dir))?,
        Stage::Extract => {
            let engine = accel::engine::select(cfg.device, cfg.engine, cfg.threads)?;
            features::freshness::status(
                &extract_config(cfg, prep),
                engine.backend.engine().as_deref(),
            )?
        }
        Stage::TrainHead => head::pipeline::status(&cfg.run, &head_config(cfg))?,
        Stage::Finetune => finetune::freshness::status(&finetune_config(cfg, prep))?,
    })
}
