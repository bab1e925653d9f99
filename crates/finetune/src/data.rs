//! Where the block's input comes from: frozen outputs of plain images (validation, computed once
//! and kept in `RUN/finetune-cache/validation.safetensors`), of augmented images (the
//! `--aug-cache K` draws, one row file per draw, each built once), or of images augmented afresh
//! for one epoch (`--aug-cache 0`). Every random transform uses its own stream derived from the
//! seed, so all of them are reproducible and independent of batching and threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use features::augment::Augmenter;

use crate::error::{Error, Result};
use crate::frozen::Frozen;
use crate::images::{self, ImageSet, InputSpec};
use crate::rows::{Precision, RowReader, RowWriter};

/// Version of the cache layout; part of every cache key.
pub const CACHE_FORMAT: &str = "finetune-cache-v1";

/// How the training images are augmented.
pub struct Augmentation<'a> {
    pub augmenter: &'a Augmenter,
    pub seed: u64,
    /// `"cache"` for cached draws, `"epoch"` for fresh augmentation.
    pub purpose: &'static str,
    /// Draw number or epoch.
    pub index: u64,
}

/// Frozen outputs (NCHW rows) of images `idx` of `set`, augmented when `aug` is given (image `i`
/// uses stream `i` of the draw's RNG).
pub fn frozen_rows(
    frozen: &mut Frozen,
    set: &ImageSet,
    idx: &[usize],
    spec: InputSpec,
    aug: Option<&Augmentation<'_>>,
) -> Result<Vec<f32>> {
    let per = frozen.input_len();
    // In the layout the frozen network takes (Candle's is NCHW whatever the ONNX graph's is).
    let spec = InputSpec {
        layout: frozen.layout,
        ..spec
    };
    let mut input = vec![0f32; idx.len() * per];
    for (slot, &i) in input.chunks_exact_mut(per).zip(idx) {
        let img = &set.images[i];
        match aug {
            None => images::write_plain(img, spec, slot)?,
            Some(a) => {
                let mut rng = runfs::seed::keyed(a.seed, a.purpose, a.index, i as u64);
                images::write_augmented(img, a.augmenter, &mut rng, spec, slot)?
            }
        }
    }
    frozen.run(&input, idx.len())
}

/// Progress of a cache build: `(done, total)` images.
pub type OnRows<'a> = &'a mut dyn FnMut(usize, usize);

/// A row file to build.
pub struct RowTarget<'a> {
    pub path: &'a Path,
    /// Digest of everything the rows depend on (stored as metadata `key`).
    pub key: &'a str,
    pub precision: Precision,
    /// Images per ONNX Runtime batch.
    pub batch: usize,
}

/// Computes the frozen output of every image of `set` (augmented or not) into a row file.
pub fn build_rows(
    frozen: &mut Frozen,
    set: &ImageSet,
    spec: InputSpec,
    aug: Option<&Augmentation<'_>>,
    target: &RowTarget<'_>,
    on_rows: OnRows<'_>,
) -> Result<()> {
    let RowTarget {
        path,
        key,
        precision,
        batch,
    } = *target;
    let n = set.len();
    let idx: Vec<usize> = (0..n).collect();
    let mut writer: Option<RowWriter> = None;
    let mut meta = BTreeMap::new();
    meta.insert("key".to_string(), key.to_string());
    meta.insert("rows".to_string(), n.to_string());
    meta.insert("tensor".to_string(), frozen.output.clone());
    meta.insert(
        "files".to_string(),
        serde_json::to_string(&set.files).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    let mut done = 0;
    for chunk in idx.chunks(batch.max(1)) {
        let rows = frozen_rows(frozen, set, chunk, spec, aug)?;
        let shape = frozen
            .output_shape
            .ok_or_else(|| Error::Invalid("frozen output shape unknown".into()))?;
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(RowWriter::create(path, n, &shape, precision, &meta)?),
        };
        let row_len: usize = shape.iter().product();
        for r in rows.chunks_exact(row_len) {
            w.push(r)?;
        }
        done += chunk.len();
        on_rows(done, n);
    }
    match writer {
        Some(w) => w.finish(),
        None => Err(Error::Invalid("no images to cache".into())),
    }
}

/// Opens a row file when it exists and was built for `key` (and holds `rows` rows).
pub fn open_if_current(path: &Path, key: &str, rows: usize) -> Option<RowReader> {
    let r = RowReader::open(path).ok()?;
    (r.metadata.get("key").map(String::as_str) == Some(key) && r.rows == rows).then_some(r)
}

/// Path of cached draw `k`.
pub fn draw_path(cache: &Path, k: usize) -> PathBuf {
    cache.join(format!("train-aug-{k:04}.safetensors"))
}

/// Path of the validation feature maps.
pub fn validation_path(cache: &Path) -> PathBuf {
    cache.join("validation.safetensors")
}

/// Path of the training photos' feature maps without augmentation.
pub fn train_path(cache: &Path) -> PathBuf {
    cache.join("train.safetensors")
}
