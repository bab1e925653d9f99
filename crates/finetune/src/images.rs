//! The photos of a split decoded and resized once (8-bit, `size`×`size`, by `features::photos`),
//! their content digest, and turning them into network input: plain (validation) or randomly
//! augmented (training).

use features::augment::{Augmenter, ImageF32};
use features::dataset::Split;
use features::onnx::Layout;
use features::preprocess::{self, Preprocess, Resize};
use features::store::Skipped;
use image::RgbImage;
use rand::Rng;

use crate::error::Result;

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

/// Decodes and frames every image of `split` (`features::photos`, the one loader); unreadable files
/// are skipped and reported. `on_progress(done)` is called from the calling thread.
pub fn load_split(
    split: &Split,
    size: u32,
    resize: Resize,
    on_progress: &mut dyn FnMut(usize),
) -> Result<ImageSet> {
    let photos = features::photos::load_split(split, size, resize, on_progress)?;
    let mut h = runfs::Digest::new();
    for ((file, label), content) in photos
        .files
        .iter()
        .zip(&photos.labels)
        .zip(&photos.contents)
    {
        h.part(file.as_bytes())
            .raw(&u64::from(*label).to_le_bytes())
            .raw(content);
    }
    let set = ImageSet {
        files: photos.files,
        labels: photos.labels,
        images: photos.images,
        skipped: photos.skipped,
        digest: h.hex(),
    };
    Ok(set)
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
