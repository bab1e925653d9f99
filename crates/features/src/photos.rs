//! A split's photos decoded and framed once, in memory, for the stages that train on pixels
//! (`scratch`, `finetune`): the one loader and its one concurrency scheme (rayon over chunks taken
//! in split order, so the result never depends on the thread count).

use rayon::prelude::*;

use image::RgbImage;

use crate::dataset::Split;
use crate::preprocess::{self, Resize};
use crate::store::Skipped;
use crate::{Error, Result};

/// Photos decoded per parallel chunk; progress is reported after each.
const CHUNK: usize = 32;

/// The usable photos of one split, in split order.
pub struct Photos {
    /// Relative paths (as feature files record them).
    pub files: Vec<String>,
    pub labels: Vec<u32>,
    /// Each photo framed to `size`×`size` by the resize rule.
    pub images: Vec<RgbImage>,
    /// SHA-256 of each file's bytes.
    pub contents: Vec<[u8; 32]>,
    /// The photos that could not be read, with why.
    pub skipped: Vec<Skipped>,
}

/// Reads, decodes and frames every photo of `split` (`Resize::Nearest` is Keras' `load_img`);
/// unreadable files are skipped and listed, a split of which none can be read is an error.
/// `on_progress(done)` is called after each chunk.
pub fn load_split(
    split: &Split,
    size: u32,
    resize: Resize,
    on_progress: &mut dyn FnMut(usize),
) -> Result<Photos> {
    let mut photos = Photos {
        files: Vec::new(),
        labels: Vec::new(),
        images: Vec::with_capacity(split.items.len()),
        contents: Vec::with_capacity(split.items.len()),
        skipped: Vec::new(),
    };
    let mut done = 0;
    for chunk in split.items.chunks(CHUNK) {
        let decoded: Vec<std::result::Result<(RgbImage, [u8; 32]), String>> = chunk
            .par_iter()
            .map(|item| one(&item.path, size, resize))
            .collect();
        for (item, r) in chunk.iter().zip(decoded) {
            match r {
                Ok((img, content)) => {
                    photos.files.push(item.rel.clone());
                    photos.labels.push(item.label as u32);
                    photos.images.push(img);
                    photos.contents.push(content);
                }
                Err(reason) => photos.skipped.push(Skipped {
                    file: item.rel.clone(),
                    reason,
                }),
            }
        }
        done += chunk.len();
        on_progress(done);
    }
    if photos.files.is_empty() {
        return Err(none_read(&split.name, split.items.len(), &photos.skipped));
    }
    Ok(photos)
}

/// The error of a split none of whose `total` photos could be read (extraction's and training's).
pub fn none_read(split: &str, total: usize, skipped: &[Skipped]) -> Error {
    Error::Dataset(format!(
        "split '{split}': none of its {total} images could be read (first: {}); fix or remove them",
        skipped
            .first()
            .map(|s| format!("{}: {}", s.file, s.reason))
            .unwrap_or_default()
    ))
}

fn one(
    path: &std::path::Path,
    size: u32,
    resize: Resize,
) -> std::result::Result<(RgbImage, [u8; 32]), String> {
    let bytes = crate::image_io::read_photo(path).map_err(crate::Error::skip_reason)?;
    let content = runfs::digest::sha256(&bytes);
    let decoded = crate::image_io::decode_rgb8(&bytes, path).map_err(crate::Error::skip_reason)?;
    let img = preprocess::frame(&decoded.image, size, resize).map_err(|e| e.to_string())?;
    Ok((img, content))
}
