//! `augment-preview`: random variants of one photo at its original size, written atomically, and
//! a contact sheet (original first, framed, then the variants).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{ImageEncoder, Rgb, RgbImage};
use rand::Rng;
use serde::Serialize;

use super::{worker_rng, AugmentParams, Augmenter, ImageF32, Transform};
use crate::image_io::load_rgb8;
use crate::{Error, Result};

/// File format of the variants (the contact sheet is always PNG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PreviewFormat {
    #[default]
    Jpeg,
    Png,
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

impl FromStr for PreviewFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Ok(PreviewFormat::Jpeg),
            "png" => Ok(PreviewFormat::Png),
            _ => Err(Error::Invalid(format!(
                "unknown image format '{s}': use jpeg or png"
            ))),
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

/// Draws `count` transforms from `rng` and applies them to `image`.
pub fn variants<R: Rng + ?Sized>(
    image: &ImageF32,
    augmenter: &Augmenter,
    rng: &mut R,
    count: usize,
) -> Vec<(Transform, ImageF32)> {
    (0..count)
        .map(|_| {
            let mut out = ImageF32::new(0, 0);
            let t = augmenter.augment_into(image, rng, &mut out);
            (t, out)
        })
        .collect()
}

/// Lays `tiles` out as thumbnails (longest side `thumb`) in a near-square grid on a dark
/// background; the first tile (the original) gets an orange frame.
pub fn contact_sheet(tiles: &[RgbImage], thumb: u32) -> RgbImage {
    const PAD: u32 = 6;
    const BACKGROUND: Rgb<u8> = Rgb([28, 28, 28]);
    const FRAME: Rgb<u8> = Rgb([255, 150, 0]);
    let thumb = thumb.max(8);
    let n = tiles.len().max(1) as u32;
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = n.div_ceil(cols);
    let cell = thumb + PAD;
    let mut sheet = RgbImage::from_pixel(cols * cell + PAD, rows * cell + PAD, BACKGROUND);
    for (i, tile) in tiles.iter().enumerate() {
        let (tw, th) = fit(tile.width(), tile.height(), thumb);
        let small = image::imageops::resize(tile, tw, th, FilterType::Triangle);
        let (gx, gy) = (i as u32 % cols, i as u32 / cols);
        let x = PAD + gx * cell + (thumb - tw) / 2;
        let y = PAD + gy * cell + (thumb - th) / 2;
        if i == 0 {
            let b = PAD / 2;
            for yy in y.saturating_sub(b)..(y + th + b).min(sheet.height()) {
                for xx in x.saturating_sub(b)..(x + tw + b).min(sheet.width()) {
                    sheet.put_pixel(xx, yy, FRAME);
                }
            }
        }
        image::imageops::replace(&mut sheet, &small, x as i64, y as i64);
    }
    sheet
}

/// Thumbnail size fitting `w`×`h` into `max`×`max`, keeping the aspect ratio.
fn fit(w: u32, h: u32, max: u32) -> (u32, u32) {
    let scale = max as f64 / w.max(h).max(1) as f64;
    (
        ((w as f64 * scale).round() as u32).clamp(1, max),
        ((h as f64 * scale).round() as u32).clamp(1, max),
    )
}

/// Loads `input`, writes `count` augmented copies at the original size plus the contact sheet.
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

    let mut rng = worker_rng(opts.seed, 0);
    let mut files = Vec::with_capacity(opts.count);
    let mut transforms = Vec::with_capacity(opts.count);
    let mut tiles = Vec::with_capacity(opts.count + 1);
    tiles.push(decoded.image.clone());
    for (i, (t, img)) in variants(&original, &augmenter, &mut rng, opts.count)
        .into_iter()
        .enumerate()
    {
        let rgb = img.to_rgb8();
        let path = opts
            .out_dir
            .join(format!("{}_{i}.{}", opts.prefix, opts.format.extension()));
        save_atomic(&rgb, &path, opts.format)?;
        files.push(path);
        transforms.push(t);
        tiles.push(rgb);
    }
    let grid = opts.out_dir.join(format!("{}_grid.png", opts.prefix));
    save_atomic(
        &contact_sheet(&tiles, opts.thumb_size),
        &grid,
        PreviewFormat::Png,
    )?;
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

/// Encodes `img` into a temporary file next to `path` and renames it into place.
pub fn save_atomic(img: &RgbImage, path: &Path, format: PreviewFormat) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let result = encode(img, &tmp, format)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn encode(img: &RgbImage, tmp: &Path, format: PreviewFormat) -> Result<()> {
    let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut w = BufWriter::new(file);
    let (width, height) = img.dimensions();
    let encoded = match format {
        PreviewFormat::Jpeg => JpegEncoder::new_with_quality(&mut w, 92).write_image(
            img.as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        ),
        PreviewFormat::Png => PngEncoder::new(&mut w).write_image(
            img.as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        ),
    };
    encoded.map_err(|e| Error::Image {
        path: tmp.to_path_buf(),
        reason: format!("cannot encode: {e}"),
    })?;
    let file = w.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(tmp, e))?;
    Ok(())
}
