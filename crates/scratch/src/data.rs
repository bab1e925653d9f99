//! The photos of a split decoded and resized once (`features::photos`; 8-bit `size`×`size` each,
//! Keras-parity nearest resize), and turning them into network input scaled by 1/255:
//! plain (validation) or randomly augmented (training), each image with its own RNG stream
//! derived from `(seed, epoch, image)`, so batches are reproducible whatever the thread count.

use features::augment::{Augmenter, ImageF32};
use features::dataset::Split;
use features::preprocess::Resize;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The usable images of one split.
pub struct ImageSet {
    /// Split name.
    pub name: String,
    /// Image side in pixels.
    pub size: usize,
    /// Each image, `size`×`size` RGB bytes.
    pub images: Vec<Vec<u8>>,
    /// Relative paths, in split order.
    pub files: Vec<String>,
    pub labels: Vec<u32>,
    /// `(file, reason)` of images that could not be decoded.
    pub skipped: Vec<(String, String)>,
}

impl ImageSet {
    /// Number of usable images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when no image is usable.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.size * self.size * 3
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i]
    }
}

/// Decodes and resizes (`Resize::Nearest` is Keras `load_img`) every image of `split` with
/// `features::photos`, the one loader; unreadable files are skipped and listed. `on_progress(done)`
/// is called as chunks finish.
pub fn load_split(
    split: &Split,
    size: u32,
    resize: Resize,
    on_progress: &mut dyn FnMut(usize),
) -> Result<ImageSet> {
    let photos = features::photos::load_split(split, size, resize, on_progress)?;
    let set = ImageSet {
        name: split.name.clone(),
        size: size as usize,
        images: photos.images.into_iter().map(|i| i.into_raw()).collect(),
        files: photos.files,
        labels: photos.labels,
        skipped: photos
            .skipped
            .into_iter()
            .map(|s| (s.file, s.reason))
            .collect(),
    };
    Ok(set)
}

/// RNG purposes.
pub const PURPOSE_AUGMENT: u64 = 1;
pub const PURPOSE_SHUFFLE: u64 = 2;
pub const PURPOSE_DROPOUT: u64 = 3;
pub const PURPOSE_INIT: u64 = 4;

/// Writes images `idx` of `set` into `out` (`[idx.len(), size, size, 3]`) scaled by 1/255,
/// augmented when `aug` is given (`(augmenter, seed, epoch)`).
pub fn write_batch(
    set: &ImageSet,
    idx: &[usize],
    aug: Option<(&Augmenter, u64, u64)>,
    out: &mut [f32],
) -> Result<()> {
    let per = set.image_len();
    if out.len() != idx.len() * per {
        return Err(Error::Invalid(format!(
            "batch buffer holds {} values, {} images need {}",
            out.len(),
            idx.len(),
            idx.len() * per
        )));
    }
    let s = set.size as u32;
    out.par_chunks_exact_mut(per)
        .zip(idx.par_iter())
        .try_for_each(|(slot, &i)| -> Result<()> {
            let src = set.image(i);
            match aug {
                Some((augmenter, seed, epoch)) if !augmenter.is_identity() => {
                    let img = ImageF32::from_raw(s, s, src.iter().map(|&v| v as f32).collect())?;
                    let mut rng = runfs::seed::mixed(seed, PURPOSE_AUGMENT, epoch, i as u64);
                    let a = augmenter.augment_with(&img, &mut rng);
                    for (o, v) in slot.iter_mut().zip(a.as_slice()) {
                        *o = v / 255.0;
                    }
                }
                _ => {
                    for (o, &v) in slot.iter_mut().zip(src) {
                        *o = v as f32 / 255.0;
                    }
                }
            }
            Ok(())
        })
}
