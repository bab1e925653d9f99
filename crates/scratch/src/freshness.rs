//! Whether `RUN/scratch` is current for a stage-1 request: its checkpoint's classes, image size,
//! settings and images (by content) against what `cfg` asks for, and how many epochs are done.

use std::collections::BTreeSet;

use features::provenance::{differences, files_digest};
use runfs::Status;

use crate::checkpoint::read_checkpoint;
use crate::config::{ScratchConfig, ScratchPaths};
use crate::error::Result;
use crate::pipeline::Settings;

/// The state of `RUN/scratch` for `cfg`.
pub fn status(cfg: &ScratchConfig) -> Result<Status> {
    let paths = ScratchPaths::new(&cfg.run);
    if !runfs::occupied(&paths.dir)? {
        return Ok(Status::Absent);
    }
    if !paths.checkpoint.is_file() {
        return Ok(Status::Partial(format!(
            "{} has no checkpoint (interrupted in the first epoch)",
            paths.dir.display()
        )));
    }
    let (_, meta, t) = match read_checkpoint(&paths.checkpoint) {
        Ok(x) => x,
        Err(e) => return Ok(Status::Other(vec![format!("unreadable checkpoint: {e}")])),
    };
    let ds = features::dataset::scan(&cfg.data)?;
    let mut d = Vec::new();
    if meta.classes != ds.classes {
        d.push(format!(
            "scratch classes: {:?} there vs {:?} asked",
            meta.classes, ds.classes
        ));
    }
    if meta.image_size != cfg.size as usize {
        d.push(format!(
            "scratch image size: {} there vs {} asked",
            meta.image_size, cfg.size
        ));
    }
    d.extend(
        differences(
            &t.settings,
            &Settings::of(cfg, &accel::engine::select(cfg.device, cfg.engine, None)?)?,
        )
        .into_iter()
        .map(|x| format!("scratch {x} (there vs asked)")),
    );
    let (train_split, val_split) = match crate::splits::choose(&ds, cfg) {
        Ok(pair) => pair,
        Err(e) => {
            d.push(format!("the data folder: {e}"));
            return Ok(Status::Other(d));
        }
    };
    for (split, n, digest) in [
        (
            &train_split,
            t.train_images,
            t.data.as_ref().map(|x| &x.train),
        ),
        (
            &val_split,
            t.val_images,
            t.data.as_ref().map(|x| &x.validation),
        ),
    ] {
        let items = &split.items[..];
        let same = match (&t.data, digest) {
            (Some(data), Some(there)) => {
                let skip: BTreeSet<String> = data.skipped.iter().cloned().collect();
                files_digest(items, &skip)? == *there
            }
            // A checkpoint of an earlier version: only the number of images can be compared.
            _ => n <= items.len(),
        };
        if !same {
            d.push(format!(
                "scratch {} images: other images than those in {}",
                split.name,
                cfg.data.display()
            ));
        }
    }
    let metrics = paths
        .metrics
        .is_file()
        .then(|| train::metrics::read_json(&paths.metrics))
        .transpose()?;
    let done = metrics.as_ref().map_or(0, |m| m.epochs.len());
    if done > cfg.epochs {
        d.push(format!(
            "scratch epochs: {done} done there vs {} asked",
            cfg.epochs
        ));
    }
    if !d.is_empty() {
        return Ok(Status::Other(d));
    }
    let stopped = metrics.as_ref().is_some_and(|m| m.stopped_early.is_some());
    let finished = paths.curves_png.is_file()
        && paths.confusion.is_file()
        && (done == cfg.epochs || stopped)
        && (t.epochs == cfg.epochs || stopped);
    Ok(if finished {
        Status::Done
    } else {
        Status::Partial(format!(
            "{done} of {} epochs done: resuming from the checkpoint",
            cfg.epochs
        ))
    })
}
