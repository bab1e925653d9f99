//! The frozen-output caches of a run in `RUN/finetune-cache/` (`RUN/finetune-cache/int8/` when the
//! frozen part runs in int8): the validation feature maps (f32, computed once), the training
//! photos' maps without augmentation (for `--calibrate`), and the `--aug-cache K` augmented draws
//! of the training images, each file keyed by everything it depends on (the int8 model's key
//! included) and rebuilt only when that changes.

use features::augment::Augmenter;

use crate::config::{FinetuneConfig, FinetunePaths};
use crate::data::{self, Augmentation, RowTarget};
use crate::error::{Error, Result};
use crate::frozen::Frozen;
use crate::int8;
use crate::pipeline::Event;
use crate::rows::{Precision, RowReader};
use crate::setup::Setup;

/// Digest of what every cache of this run depends on (model, split tensor, preprocessing, size, for
/// int8 the quantized model's key, and the engine when it is not ONNX Runtime: Candle's FP32 maps
/// agree with ONNX Runtime's to ~1e-6, not bit for bit, so each engine keeps its own caches).
pub fn base_key(s: &Setup) -> String {
    let tag = int8::cache_tag(s.settings.int8_key.as_deref());
    let mut parts = vec![
        ("format", data::CACHE_FORMAT),
        ("model", s.model.sha256.as_str()),
        ("split", s.settings.split_at.as_str()),
        ("preprocess", s.spec.preprocess.name()),
        ("resize", s.resize.name()),
    ];
    let size = s.size.to_string();
    parts.push(("size", &size));
    if let Some(t) = &tag {
        parts.push(("frozen", t));
    }
    if let Some(e) = &s.frozen_engine {
        parts.push(("engine", e));
    }
    runfs::digest::of_strings(&parts)
}

/// The folder holding this run's caches (per frozen precision).
pub fn dir(s: &Setup, paths: &FinetunePaths) -> std::path::PathBuf {
    int8::cache_dir(paths, s.settings.options.precision)
}

/// The validation feature maps (f32), reused when current.
pub fn validation_maps(
    frozen: &mut Frozen,
    s: &Setup,
    cfg: &FinetuneConfig,
    paths: &FinetunePaths,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RowReader> {
    let plain = Plain {
        set: &s.val,
        name: "validation",
        path: data::validation_path(&dir(s, paths)),
        precision: Precision::F32,
    };
    plain_maps(frozen, &plain, s, cfg, on_event)
}

/// The feature maps of the training photos without augmentation (what `--calibrate` scores the
/// held-out folds on; cache precision), reused when current.
pub fn train_maps(
    frozen: &mut Frozen,
    s: &Setup,
    cfg: &FinetuneConfig,
    paths: &FinetunePaths,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RowReader> {
    let plain = Plain {
        set: &s.train,
        name: "train",
        path: data::train_path(&dir(s, paths)),
        precision: cfg.options.cache_precision,
    };
    plain_maps(frozen, &plain, s, cfg, on_event)
}

/// A split's frozen outputs without augmentation, and where they are cached.
struct Plain<'a> {
    set: &'a crate::images::ImageSet,
    name: &'a str,
    path: std::path::PathBuf,
    precision: Precision,
}

fn plain_maps(
    frozen: &mut Frozen,
    plain: &Plain<'_>,
    s: &Setup,
    cfg: &FinetuneConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RowReader> {
    let Plain {
        set,
        name,
        ref path,
        precision,
    } = *plain;
    let key = runfs::digest::of_strings(&[
        ("base", &base_key(s)),
        (name, &set.digest),
        ("precision", precision.name()),
    ]);
    if let Some(r) = data::open_if_current(path, &key, set.len()) {
        on_event(Event::Info(format!(
            "{name} feature maps: reusing {}",
            path.display()
        )));
        return Ok(r);
    }
    on_event(Event::PhaseStart {
        name: format!("{name} maps"),
        total: set.len(),
    });
    let target = RowTarget {
        path,
        key: &key,
        precision,
        batch: cfg.options.batch_size,
    };
    data::build_rows(frozen, set, s.spec, None, &target, &mut |done, _| {
        on_event(Event::Progress { done })
    })?;
    on_event(Event::PhaseEnd);
    RowReader::open(path)
}

/// The `cfg.options.aug_cache` augmented draws of the training images (rows of `row_len` values),
/// building the missing ones; also returns the seconds each draw built now took.
pub fn augmented_draws(
    frozen: &mut Frozen,
    augmenter: &Augmenter,
    row_len: usize,
    s: &Setup,
    cfg: &FinetuneConfig,
    paths: &FinetunePaths,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(Vec<RowReader>, Vec<f64>)> {
    let mut readers = Vec::new();
    let mut draw_seconds = Vec::new();
    if cfg.options.aug_cache == 0 {
        return Ok((readers, draw_seconds));
    }
    let row_bytes = row_len * cfg.options.cache_precision.bytes();
    on_event(Event::Info(format!(
        "augmentation cache: {} draws × {} images × {:.0} KiB = {:.2} GiB in {}",
        cfg.options.aug_cache,
        s.train.len(),
        row_bytes as f64 / 1024.0,
        (cfg.options.aug_cache * s.train.len() * row_bytes) as f64 / (1u64 << 30) as f64,
        dir(s, paths).display()
    )));
    let base = base_key(s);
    let aug_json =
        serde_json::to_string(&cfg.augment).map_err(|e| Error::Invalid(e.to_string()))?;
    for k in 0..cfg.options.aug_cache {
        let path = data::draw_path(&dir(s, paths), k);
        let key = runfs::digest::of_strings(&[
            ("base", &base),
            ("train", &s.train.digest),
            ("augment", &aug_json),
            ("seed", &cfg.seed.to_string()),
            ("draw", &k.to_string()),
            ("precision", cfg.options.cache_precision.name()),
        ]);
        if let Some(r) = data::open_if_current(&path, &key, s.train.len()) {
            readers.push(r);
            continue;
        }
        let t = std::time::Instant::now();
        on_event(Event::PhaseStart {
            name: format!("draw {}/{}", k + 1, cfg.options.aug_cache),
            total: s.train.len(),
        });
        let aug = Augmentation {
            augmenter,
            seed: cfg.seed,
            purpose: "cache",
            index: k as u64,
        };
        let target = RowTarget {
            path: &path,
            key: &key,
            precision: cfg.options.cache_precision,
            batch: cfg.options.batch_size,
        };
        data::build_rows(
            frozen,
            &s.train,
            s.spec,
            Some(&aug),
            &target,
            &mut |done, _| on_event(Event::Progress { done }),
        )?;
        on_event(Event::PhaseEnd);
        let secs = t.elapsed().as_secs_f64();
        draw_seconds.push(secs);
        on_event(Event::Info(format!(
            "draw {}/{} ({} frozen part): {:.1} s, {:.1} img/s",
            k + 1,
            cfg.options.aug_cache,
            s.settings.options.precision.name(),
            secs,
            s.train.len() as f64 / secs.max(1e-9)
        )));
        readers.push(RowReader::open(&path)?);
    }
    Ok((readers, draw_seconds))
}
