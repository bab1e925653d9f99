//! The photos of a split decoded and resized once (8-bit, `size`×`size`), their content digest,
//! and turning them into network input: plain (validation) or randomly augmented (training).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use features::augment::{Augmenter, ImageF32};
use features::dataset::Split;
use features::onnx::Layout;
use features::preprocess::{self, Preprocess, Resize};
use features::store::Skipped;
use image::RgbImage;
use rand::Rng;

use crate::error::{Error, Result};

/// The usable images of one split.
pub struct ImageSet {
    /// Relative paths (as feature files record them), in split order.
    pub files: Vec<String>,
    pub labels: Vec<u32>,
    /// Each photo resized to `size`×`size`.
    pub images: Vec<RgbImage>,
    /// Images that could not be decoded.
    pub skipped: Vec<Skipped>,
    /// Digest of every file name, label and content.
    pub digest: String,
}

impl ImageSet {
    /// Number of usable images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when no image is usable.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// Decodes and resizes every image of `split` on `workers` threads; unreadable files are skipped
/// and reported. `on_progress(done)` is called from the calling thread.
pub fn load_split(
    split: &Split,
    size: u32,
    resize: Resize,
    workers: usize,
    on_progress: &mut dyn FnMut(usize),
) -> Result<ImageSet> {
    let n = split.items.len();
    let next = AtomicUsize::new(0);
    type Decoded = std::result::Result<(RgbImage, [u8; 32]), String>;
    let mut slots: Vec<Option<Decoded>> = (0..n).map(|_| None).collect();
    let (tx, rx) = crossbeam_channel::bounded::<(usize, Decoded)>(64);
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, 8) {
            let (tx, next) = (tx.clone(), &next);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n
                    || tx
                        .send((i, decode_one(&split.items[i].path, size, resize)))
                        .is_err()
                {
                    break;
                }
            });
        }
        drop(tx);
        for (done, (i, r)) in rx.iter().enumerate() {
            slots[i] = Some(r);
            if done % 16 == 15 {
                on_progress(done + 1);
            }
        }
    });
    on_progress(n);
    let mut h = runfs::Digest::new();
    let mut set = ImageSet {
        files: Vec::new(),
        labels: Vec::new(),
        images: Vec::new(),
        skipped: Vec::new(),
        digest: String::new(),
    };
    for (item, slot) in split.items.iter().zip(slots) {
        match slot {
            Some(Ok((img, content))) => {
                h.part(item.rel.as_bytes())
                    .raw(&(item.label as u64).to_le_bytes())
                    .raw(&content);
                set.files.push(item.rel.clone());
                set.labels.push(item.label as u32);
                set.images.push(img);
            }
            Some(Err(reason)) => set.skipped.push(Skipped {
                file: item.rel.clone(),
                reason,
            }),
            None => set.skipped.push(Skipped {
                file: item.rel.clone(),
                reason: "a decoding thread failed".into(),
            }),
        }
    }
    set.digest = h.hex();
    if set.is_empty() {
        return Err(Error::Features(features::Error::Dataset(format!(
            "split '{}': none of its {n} images could be read (first: {}); fix or remove them",
            split.name,
            set.skipped
                .first()
                .map(|s| format!("{}: {}", s.file, s.reason))
                .unwrap_or_default()
        ))));
    }
    Ok(set)
}

fn decode_one(
    path: &Path,
    size: u32,
    resize: Resize,
) -> std::result::Result<(RgbImage, [u8; 32]), String> {
    let bytes = features::image_io::read_photo(path).map_err(features::Error::skip_reason)?;
    let content = runfs::digest::sha256(&bytes);
    let decoded =
        features::image_io::decode_rgb8(&bytes, path).map_err(features::Error::skip_reason)?;
    let img = preprocess::frame(&decoded.image, size, resize).map_err(|e| e.to_string())?;
    Ok((img, content))
}

/// How images become network input.
#[derive(Clone, Copy)]
pub struct InputSpec {
    pub preprocess: Preprocess,
    pub layout: Layout,
}

/// Writes image `img` into a batch slot, unchanged.
pub fn write_plain(img: &RgbImage, spec: InputSpec, slot: &mut [f32]) -> Result<()> {
    Ok(preprocess::write_input(
        img,
        spec.preprocess,
        spec.layout,
        slot,
    )?)
}

/// Writes a randomly augmented copy of `img` (transform drawn from `rng`) into a batch slot.
pub fn write_augmented<R: Rng + ?Sized>(
    img: &RgbImage,
    augmenter: &Augmenter,
    rng: &mut R,
    spec: InputSpec,
    slot: &mut [f32],
) -> Result<()> {
    let src = ImageF32::from(img);
    let out = augmenter.augment_with(&src, rng);
    Ok(preprocess::write_input_f32(
        out.as_slice(),
        spec.preprocess,
        spec.layout,
        slot,
    )?)
}
