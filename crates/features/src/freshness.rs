//! Whether a run's feature cache is current for a data folder, model and settings: the answer
//! `extract` gives about its own outputs (absent, done, some splits missing, or made from other
//! inputs, with the differences read from each split file's metadata). The photos of an
//! `--exclude` list are left out of the folder first, as `extract` leaves them out.

use std::collections::BTreeSet;

use runfs::Status;

use crate::dataset;
use crate::exclude::{self, ExcludeList, Removed};
use crate::extract::{self, ExtractConfig, Precision};
use crate::store;
use crate::Result;

/// The state of `RUN/features` for the extraction `cfg` asks for, on `engine`
/// ([`crate::engine::Backend::engine`]: `None` for ONNX Runtime). With an FP32 backbone the image
/// contents are compared too (through the cache key); an int8 one is compared by its settings.
// Over 80 lines: one loop over the splits that counts the missing and present feature files
// and compares each one's provenance.
pub fn status(cfg: &ExtractConfig, engine: Option<&str>) -> Result<Status> {
    let mut data = dataset::scan(&cfg.data)?;
    let removed = match &cfg.exclude {
        Some(file) => ExcludeList::read(file)?.apply(&mut data)?,
        None => Removed::new(),
    };
    let backbone = extract::load_backbone(&cfg.model, cfg.preprocess, &cfg.hub)?;
    let asked = backbone.provenance(cfg, engine);
    let (mut missing, mut present, mut diffs) = (Vec::new(), 0, Vec::new());
    for split in &data.splits {
        let path = store::feature_path(&cfg.run, &split.name);
        if !path.is_file() {
            missing.push(split.name.clone());
            continue;
        }
        present += 1;
        let meta = match store::read_meta(&path) {
            Ok(m) => m,
            Err(e) => {
                diffs.push(format!("{}: unreadable ({e})", path.display()));
                continue;
            }
        };
        let tag = format!("features/{}", split.name);
        let before = diffs.len();
        diffs.extend(
            meta.provenance
                .diff(&asked)
                .into_iter()
                .map(|d| format!("{tag} {d} (there vs asked)")),
        );
        if meta.classes != data.classes {
            diffs.push(format!(
                "{tag} classes: {:?} there vs {:?} asked",
                meta.classes, data.classes
            ));
        }
        let there: BTreeSet<&str> = meta
            .files
            .iter()
            .chain(meta.skipped.iter().map(|s| &s.file))
            .map(String::as_str)
            .collect();
        let wanted: BTreeSet<&str> = split.items.iter().map(|i| i.rel.as_str()).collect();
        if there != wanted {
            diffs.push(format!(
                "{tag} images: {} there vs {} in {} ({} in common)",
                there.len(),
                wanted.len(),
                cfg.data.display(),
                there.intersection(&wanted).count()
            ));
        }
        let excluded = exclude::removed_from(&removed, &split.name);
        if meta.excluded != excluded {
            diffs.push(format!(
                "{tag} photos left out (--exclude): {} there vs {} asked{}",
                meta.excluded.len(),
                excluded.len(),
                if meta.excluded.len() == excluded.len() {
                    ", not the same ones"
                } else {
                    ""
                }
            ));
        }
        if diffs.len() == before && cfg.precision == Precision::Fp32 {
            let key = extract::cache_key(
                &backbone,
                cfg,
                engine,
                &data.classes,
                split,
                "fp32",
                excluded,
            )?;
            if key != meta.cache_key {
                diffs.push(format!(
                    "{tag}: the image contents differ from those the features were extracted from"
                ));
            }
        }
    }
    Ok(if !diffs.is_empty() {
        Status::Other(diffs)
    } else if present == 0 {
        Status::Absent
    } else if !missing.is_empty() {
        Status::Partial(format!("no features yet for {}", missing.join(", ")))
    } else {
        Status::Done
    })
}
