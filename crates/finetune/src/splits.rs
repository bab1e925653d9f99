//! Which photos train and which validate: the data folder's named splits, or, when the stage-2
//! head held out part of its training split (the one-split layout `DIR/<class>/`, or
//! `train-head --val-split`), the very same photos, checked against the head's record.

use features::dataset::{Dataset, Split};
use head::HeadMeta;

use crate::config::FinetuneConfig;
use crate::error::{Error, Result};
use crate::setup::find_split;

/// The training and validation photos of the run, and how validation is described.
pub struct Chosen {
    pub train: Split,
    pub val: Split,
    pub validation: String,
    /// The data folder's split the training photos come from (int8 calibration draws from it;
    /// calibration reads no labels).
    pub source: String,
}

/// The head's hold-out when the data folder has no split called `--val-split`, else the named
/// `--train-split` and `--val-split`.
pub fn choose(data: &Dataset, cfg: &FinetuneConfig, head: &HeadMeta) -> Result<Chosen> {
    match &head.hold_out {
        Some(h) if data.split(&cfg.val_split).is_none() => {
            let whole = find_split(data, &h.split, "--train-split")?;
            let folder = match h.split.as_str() {
                "all" => data.root.clone(),
                s => data.root.join(s),
            };
            let (train, val, rec) = whole.hold_out(h.fraction, h.seed)?;
            if rec.digest != h.digest {
                return Err(Error::Mismatch(format!(
                    "the photos of {} changed since the head was trained: it validated on {} of them, \
                     the same rule now holds out {} photos that are not all the same; re-run \
                     `bottleneck extract` and `bottleneck train-head` (or `bottleneck fit`) so that \
                     fine-tuning validates on photos it never trains on",
                    folder.display(),
                    h.count,
                    rec.count
                )));
            }
            Ok(Chosen {
                train,
                val,
                validation: h.describe(),
                source: h.split.clone(),
            })
        }
        _ => {
            let train = find_split(data, &cfg.train_split, "--train-split")?.clone();
            let val = find_split(data, &cfg.val_split, "--val-split")?.clone();
            let validation = format!("split {}", val.name);
            Ok(Chosen {
                source: train.name.clone(),
                train,
                val,
                validation,
            })
        }
    }
}
