//! Reading image files into 8-bit RGB: format sniffing, decode limits, EXIF orientation, and clear
//! errors for empty, truncated or non-image files.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::{Error, Result};

/// Largest width or height we decode; larger files are rejected before allocating.
pub const MAX_SIDE: u32 = 16_384;
/// Largest decode buffer.
pub const MAX_ALLOC: u64 = 1 << 30;
/// Most pixels we decode (64 MP, e.g. 8192×8192; a 48 MP phone photo passes), checked from the
/// header before any pixel is decoded: a small file can claim a huge image (a decode bomb).
pub const MAX_PIXELS: u64 = 64 << 20;

/// A decoded photo and what was done to make it plain RGB.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub image: RgbImage,
    /// Notes such as "EXIF orientation Rotate90 applied" or "converted from La8".
    pub notes: Vec<String>,
}

/// Reads and decodes `path` into 8-bit RGB (see [`decode_rgb8`]).
pub fn load_rgb8(path: &Path) -> Result<Decoded> {
    decode_rgb8(&read_photo(path)?, path)
}

/// What a broken symbolic link is called in messages and skip lists.
pub const BROKEN_LINK: &str =
    "a symbolic link whose target is missing or that loops: fix or remove the link";

/// The bytes of a photo; a symbolic link that leads nowhere is an [`Error::Image`] saying so
/// (looked at only when the read fails).
pub fn read_photo(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if crate::dataset::is_broken_link(path) {
            Error::Image {
                path: path.to_path_buf(),
                reason: BROKEN_LINK.into(),
            }
        } else {
            Error::io(path, e)
        }
    })
}

/// SHA-256 of a photo's bytes, for cache keys and digests. A broken symbolic link (which every
/// stage skips as unreadable) hashes as [`BROKEN_LINK`] and its own path, so it equals no other file.
pub fn photo_sha256(path: &Path) -> Result<[u8; 32]> {
    match read_photo(path) {
        Ok(bytes) => Ok(runfs::digest::sha256(&bytes)),
        Err(Error::Image { .. }) => {
            let marker = format!("{BROKEN_LINK}\n{}", path.display());
            Ok(runfs::digest::sha256(marker.as_bytes()))
        }
        Err(e) => Err(e),
    }
}

/// Decodes image bytes into 8-bit RGB the way Keras' `load_img` sees them (RGB, alpha dropped,
/// 16-bit scaled to 8-bit, grayscale replicated), plus EXIF orientation applied so the pixels
/// are upright as a photo viewer shows them. `path` is only used in error messages.
pub fn decode_rgb8(bytes: &[u8], path: &Path) -> Result<Decoded> {
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(bad(
            "empty file (0 bytes): delete it or replace it with the real image".into(),
        ));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(bad(
            "not an image this tool reads (JPEG, PNG, BMP, GIF, TIFF, WebP): remove it from the data folder"
                .into(),
        ));
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_has_end(bytes) {
        return Err(bad(
            "corrupt or truncated image (the JPEG data stops before its end marker): re-download or remove it".into(),
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let mut reader = reader;
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| bad(describe(e)))?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(bad(format!(
            "too large to decode safely ({w}×{h} px = {} MP; limit {} MP): downscale it first",
            (u64::from(w) * u64::from(h)) >> 20,
            MAX_PIXELS >> 20
        )));
    }
    let orientation = decoder.orientation().ok();
    let color = decoder.color_type();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| bad(describe(e)))?;
    let mut notes = Vec::new();
    if let Some(o) = orientation {
        if o != image::metadata::Orientation::NoTransforms {
            img.apply_orientation(o);
            notes.push(format!("EXIF orientation {o:?} applied"));
        }
    }
    if color != image::ColorType::Rgb8 {
        notes.push(format!("converted from {color:?} to RGB8"));
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(bad("image has zero width or height".into()));
    }
    Ok(Decoded {
        image: img.into_rgb8(),
        notes,
    })
}

fn describe(e: image::ImageError) -> String {
    match e {
        image::ImageError::Limits(l) => format!(
            "too large to decode safely ({l}; limit {MAX_SIDE}×{MAX_SIDE} px, {} MiB): downscale it first",
            MAX_ALLOC >> 20
        ),
        image::ImageError::Decoding(d) => {
            format!("corrupt or truncated image ({d}): re-download or remove it")
        }
        image::ImageError::Unsupported(u) => format!("unsupported image ({u}): convert it to JPEG or PNG"),
        other => other.to_string(),
    }
}

/// True when a JPEG has an end-of-image marker after its first start-of-scan, i.e. it was not cut short.
/// (Decoders fill a truncated scan with grey instead of failing; PIL, and so Keras, refuse such files.)
/// Inside entropy-coded data a 0xFF byte is always stuffed, so `FF D9` there can only be the real marker;
/// an EXIF thumbnail's own end marker comes before the first scan and does not count.
pub fn jpeg_has_end(bytes: &[u8]) -> bool {
    let Some(sos) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}
