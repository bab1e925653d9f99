//! Whether `RUN/scratch` is current for a stage-1 request: its checkpoint's classes, image size,
//! settings and images (by content) against what `cfg` asks for, and how many epochs are done.

use std::collections::BTreeSet;

use features::provenance::{differences, files_digest};
use runfs::Status;

use features::dataset::Split;
use train::stage_dir::Compared;

use crate::checkpoint::{read_checkpoint, Training};
use crate::config::{ScratchConfig, ScratchPaths};
use crate::error::Result;
use crate::pipeline::Settings;

/// The state of `RUN/scratch` for `cfg`.
pub fn status(cfg: &ScratchConfig) -> Result<Status> {
    let paths = ScratchPaths::new(&cfg.run);
    paths.stage.status(cfg.epochs, || compare(cfg, &paths))
}

/// The checkpoint's classes, image size, settings and images against `cfg`'s.
fn compare(cfg: &ScratchConfig, paths: &ScratchPaths) -> Result<Compared> {
    let (_, meta, t) = match read_checkpoint(&paths.stage.checkpoint) {
        Ok(x) => x,
        Err(e) => return Ok(Compared::differing(format!("unreadable checkpoint: {e}"))),
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
    match crate::splits::choose(&ds, cfg) {
        Ok((train, val)) => d.extend(other_images(cfg, &t, &train, &val)?),
        Err(e) => d.push(format!("the data folder: {e}")),
    }
    Ok(Compared {
        differences: d,
        outputs_written: paths.stage.curves_png.is_file() && paths.stage.confusion.is_file(),
        // Written at every stop, also a pause before the last epoch.
        epochs_asked_then: Some(t.epochs),
    })
}

/// The splits whose images are not those the checkpoint was trained and validated on.
fn other_images(
    cfg: &ScratchConfig,
    t: &Training,
    train: &Split,
    val: &Split,
) -> Result<Vec<String>> {
    let mut d = Vec::new();
    for (split, n, digest) in [
        (train, t.train_images, t.data.as_ref().map(|x| &x.train)),
        (val, t.val_images, t.data.as_ref().map(|x| &x.validation)),
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
    Ok(d)
}
