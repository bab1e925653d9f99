//! One line per stage saying what it actually ran with, read from the stage's own files (so a
//! reused stage reports its real settings, not the ones asked for this time).

use std::path::Path;

use crate::config::Stage;

/// The settings line of `stage` in `run`, or `None` when its files are missing or unreadable.
// Over 80 lines: one match arm per stage, each one sentence of that stage's settings.
pub fn line(run: &Path, stage: Stage) -> Option<String> {
    let dir = run.join(stage.dir());
    match stage {
        Stage::Scratch => {
            let file = dir.join("checkpoint.safetensors");
            let (s, epochs, meta) = scratch::checkpoint::checkpoint_settings(&file).ok()?;
            Some(format!(
                "{} px ({} resize), {} products, {} lr {}{}{}, batch {}, {} epochs{}, augmentation: {}",
                meta.image_size,
                s.resize.name(),
                s.train_precision.name(),
                s.optimizer.kind,
                s.optimizer.learning_rate,
                match s.schedule {
                    train::schedule::LrSchedule::Constant => String::new(),
                    other => format!(" ({other})"),
                },
                match s.optimizer.weight_decay {
                    0.0 => String::new(),
                    wd => format!(" weight decay {wd}"),
                },
                s.batch_size,
                epochs,
                s.ema
                    .map(|m| format!(", weight average (EMA {m}) validated and saved"))
                    .unwrap_or_default(),
                s.augment.summary()
            ))
        }
        Stage::Extract => {
            let m = features::store::read_meta(&dir.join("train.safetensors")).ok()?;
            Some(format!(
                "{} px ({} resize), {} preprocessing, {}, output {}",
                m.provenance.image_size,
                m.provenance.resize,
                m.provenance.preprocess,
                m.provenance.precision,
                m.provenance.output_tensor
            ))
        }
        Stage::TrainHead => {
            let m = head::read_meta(&dir.join("head.safetensors")).ok()?;
            if let Some(p) = &m.probe {
                return Some(format!(
                    "calibrated linear probe: L2 logistic regression, C {:.3} chosen by {}-fold cross-validation on \
                     train, temperature {:.3} from the out-of-fold logits",
                    p.c, p.folds, p.temperature
                ));
            }
            Some(format!(
                "dense {} + dropout {}, {} lr {}, batch {}, {} epochs, keeps the {} epoch",
                m.hidden,
                m.dropout,
                m.optimizer.kind,
                m.optimizer.learning_rate,
                m.batch_size,
                m.epochs,
                match m.keep {
                    train::metrics::Keep::Best => "lowest-val-loss",
                    train::metrics::Keep::Last => "last",
                }
            ))
        }
        Stage::Finetune => {
            let (s, epochs) =
                finetune::checkpoint::read_settings(&dir.join("checkpoint.safetensors")).ok()?;
            Some(format!(
                "{} → {} trained ({} products), {} px, {} frozen part, SGD lr {} momentum {}, batch {}, {} epochs, \
                 --aug-cache {}, augmentation: {}{}",
                s.split_at,
                s.output_tensor,
                s.options.train_precision.name(),
                s.image_size,
                s.options.precision.name(),
                s.options.sgd.learning_rate,
                s.options.sgd.momentum,
                s.options.batch_size,
                epochs,
                s.options.aug_cache,
                s.augment.summary(),
                match s.options.calibrate {
                    0 => String::new(),
                    k => format!(", probabilities calibrated by a {k}-fold cross-fitted temperature"),
                }
            ))
        }
    }
}
