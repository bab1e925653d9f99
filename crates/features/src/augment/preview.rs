//! `augment-preview`: random variants of one photo at its original size, written atomically, and
//! a contact sheet (original first, framed, then the variants).

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use super::{worker_rng, AugmentParams, Augmenter, ImageF32, Transform};
use crate::image_io::load_rgb8;
use crate::sheet;
use crate::{Error, Result};

crate::choices! {
    /// File format of the variants (the contact sheet is always PNG).
    #[derive(Default)]
    pub enum PreviewFormat("image format") {
        #[default]
        Jpeg = "jpeg" | "jpg",
        Png = "png",
    }
}

impl PreviewFormat {
    /// File extension, as Keras' `save_format` writes it (`jpeg`, `png`).
    pub fn extension(self) -> &'static str {
        match self {
            PreviewFormat::Jpeg => "jpeg",
            PreviewFormat::Png => "png",
        }
    }
}

/// What to write.
#[derive(Debug, Clone)]
pub struct PreviewOptions {
    /// Number of augmented copies (at least 1).
    pub count: usize,
    /// Output folder; created if missing, other files in it are left alone.
    pub out_dir: PathBuf,
    /// File names are `<prefix>_<i>.<ext>` and `<prefix>_grid.png`.
    pub prefix: String,
    pub format: PreviewFormat,
    pub seed: u64,
    /// Longest side of each contact-sheet thumbnail, pixels.
    pub thumb_size: u32,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewReport {
    pub input: PathBuf,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub params: AugmentParams,
    /// The variants, in order (`<prefix>_0`, `<prefix>_1`, …).
    pub files: Vec<PathBuf>,
    /// The transform drawn for each variant.
    pub transforms: Vec<Transform>,
    /// The contact sheet.
    pub grid: PathBuf,
    /// Decoder notes (EXIF rotation applied, colour conversion).
    pub notes: Vec<String>,
}

/// Loads `input`, writes `count` augmented copies at the original size plus the contact sheet.
/// Each copy is written as soon as it is drawn and only its thumbnail is kept, so memory does not
/// grow with `count`.
pub fn write_preview(
    input: &Path,
    params: &AugmentParams,
    opts: &PreviewOptions,
) -> Result<PreviewReport> {
    if opts.count == 0 {
        return Err(Error::Invalid("--count must be at least 1".into()));
    }
    check_prefix(&opts.prefix)?;
    let augmenter = Augmenter::new(params.clone(), opts.seed)?;
    let decoded = load_rgb8(input)?;
    let original = ImageF32::from(&decoded.image);
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;

    let thumb = |img: &RgbImage| {
        let (w, h) = sheet::fit(img.width(), img.height(), opts.thumb_size.max(8));
        image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle)
    };
    let mut rng = worker_rng(opts.seed, 0);
    let mut files = Vec::with_capacity(opts.count);
    let mut transforms = Vec::with_capacity(opts.count);
    let mut tiles = Vec::with_capacity(opts.count + 1);
    tiles.push(sheet::Tile::picture(thumb(&decoded.image)));
    let mut out = ImageF32::new(0, 0);
    for i in 0..opts.count {
        let t = augmenter.augment_into(&original, &mut rng, &mut out);
        let rgb = out.to_rgb8();
        let path = opts
            .out_dir
            .join(format!("{}_{i}.{}", opts.prefix, opts.format.extension()));
        sheet::save(&rgb, &path, opts.format.into())?;
        files.push(path);
        transforms.push(t);
        tiles.push(sheet::Tile::picture(thumb(&rgb)));
    }
    let grid = opts.out_dir.join(format!("{}_grid.png", opts.prefix));
    let picture = sheet::render(None, &tiles, &sheet::Style::preview(opts.thumb_size))?;
    sheet::save(&picture, &grid, sheet::Format::Png)?;
    Ok(PreviewReport {
        input: input.to_path_buf(),
        width: decoded.image.width(),
        height: decoded.image.height(),
        seed: opts.seed,
        params: params.clone(),
        files,
        transforms,
        grid,
        notes: decoded.notes,
    })
}

impl From<PreviewFormat> for sheet::Format {
    fn from(f: PreviewFormat) -> Self {
        match f {
            PreviewFormat::Jpeg => sheet::Format::Jpeg,
            PreviewFormat::Png => sheet::Format::Png,
        }
    }
}

/// A prefix must be a plain file-name fragment.
fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty()
        || prefix.contains(['/', '\\'])
        || prefix == "."
        || prefix == ".."
        || prefix.contains('\0')
    {
        return Err(Error::Invalid(format!(
            "--prefix '{prefix}' must be a non-empty file-name fragment without slashes, e.g. cat"
        )));
    }
    Ok(())
}
