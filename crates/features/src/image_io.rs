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

/// Largest photo file read, in bytes (256 MiB). Real photos are far smaller (a 48 MP JPEG is about
/// 20 MB, an uncompressed 8192×8192 RGB TIFF 192 MiB); a larger file is refused before it is read, so
/// that a huge or endless file (a disk image, `/dev/zero`) named `.jpg` costs no memory.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Bytes read first to tell the format; no more is read from a file that is not an image.
const HEADER_BYTES: usize = 64;

/// Reads and decodes `path` into 8-bit RGB (see [`decode_rgb8`]).
pub fn load_rgb8(path: &Path) -> Result<Decoded> {
    decode_rgb8(&read_photo(path)?, path)
}

/// What a broken symbolic link is called in messages and skip lists.
pub const BROKEN_LINK: &str =
    "a symbolic link whose target is missing or that loops: fix or remove the link";

/// The reason a file too large to be a photo is refused.
fn too_large(len: u64) -> String {
    format!(
        "larger than {} MiB ({} MiB): not a photo this tool reads; remove it from the data folder",
        MAX_FILE_BYTES >> 20,
        len >> 20
    )
}

/// What kind of thing a path that is not a regular file is, for messages.
fn kind_of(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        return "a folder";
    }
    "not a regular file"
}

/// Opens a photo after checking, from its metadata alone, that it is a regular file of at most
/// [`MAX_FILE_BYTES`]: a device (`/dev/zero`), a named pipe or a socket is never opened (reading
/// it could block or never end). Returns the open file and its length.
fn open_photo(path: &Path) -> Result<(std::fs::File, u64)> {
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let io = |e: std::io::Error| {
        if crate::dataset::is_broken_link(path) {
            bad(BROKEN_LINK.into())
        } else {
            Error::io(path, e)
        }
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(bad(format!(
                "{}, not a file: not a photo this tool reads; remove it from the data folder",
                kind_of(meta.file_type())
            )));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(bad(too_large(meta.len())));
        }
        Ok(())
    };
    check(&meta)?;
    let file = std::fs::File::open(path).map_err(io)?;
    // The file opened may not be the one looked at (replaced in between): check it again.
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    check(&meta)?;
    Ok((file, meta.len()))
}

/// The bytes of a photo, read only once its first bytes show an image format this tool decodes,
/// and never more than [`MAX_FILE_BYTES`]. Refused as an [`Error::Image`] saying why (so that
/// every stage skips it as unreadable): a symbolic link that leads nowhere, something that is not a
/// regular file (a device such as `/dev/zero`, a named pipe), an empty file, a file larger than
/// [`MAX_FILE_BYTES`], a file whose first bytes are no image format.
pub fn read_photo(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let (file, len) = open_photo(path)?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES.min(len as usize));
    let mut file = file.take(MAX_FILE_BYTES + 1);
    (&mut file)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    sniff(&bytes, path)?;
    bytes.reserve_exact((len as usize).saturating_sub(bytes.len()));
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        // The file grew while it was read.
        return Err(Error::Image {
            path: path.to_path_buf(),
            reason: too_large(bytes.len() as u64),
        });
    }
    Ok(bytes)
}

/// Checks what [`read_photo`] checks before reading the whole file — a regular file of at most
/// [`MAX_FILE_BYTES`] whose first bytes are an image format this tool decodes — reading only
/// those first bytes. (A photo that passes can still fail to decode.)
pub fn check_photo(path: &Path) -> Result<()> {
    use std::io::Read;
    let (file, _) = open_photo(path)?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    file.take(HEADER_BYTES as u64)
        .read_to_end(&mut header)
        .map_err(|e| Error::io(path, e))?;
    sniff(&header, path).map(|_| ())
}

/// SHA-256 of a photo's bytes, for cache keys, digests and the duplicate check, read in pieces
/// (a file's size does not cost memory). A file every stage skips without reading it (a broken
/// symbolic link, a device or named pipe, a file larger than [`MAX_FILE_BYTES`]) hashes as the
/// reason, its own path and its size, so it equals no other file.
pub fn photo_sha256(path: &Path) -> Result<[u8; 32]> {
    use std::io::Read;
    match open_photo(path) {
        Ok((file, _)) => {
            // `raw` adds bytes without a length prefix: the digest is the plain SHA-256 of the file.
            let mut d = runfs::Digest::new();
            let mut file = file.take(MAX_FILE_BYTES + 1);
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        d.raw(&buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(path, e)),
                }
            }
            Ok(d.bytes())
        }
        Err(Error::Image { reason, .. }) => {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let marker = format!("{reason}\n{}\n{len}", path.display());
            Ok(runfs::digest::sha256(marker.as_bytes()))
        }
        Err(e) => Err(e),
    }
}

/// The image format of a photo from its first bytes; an empty file or one whose first bytes are
/// no format this tool decodes is an [`Error::Image`] saying so.
fn sniff(header: &[u8], path: &Path) -> Result<image::ImageFormat> {
    let bad = |reason: &str| Error::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    if header.is_empty() {
        return Err(bad(
            "empty file (0 bytes): delete it or replace it with the real image",
        ));
    }
    image::guess_format(header).map_err(|_| {
        bad("not an image this tool reads (JPEG, PNG, BMP, GIF, TIFF, WebP): remove it from the data folder")
    })
}

/// Decodes image bytes into 8-bit RGB the way Keras' `load_img` sees them (RGB, alpha dropped,
/// 16-bit scaled to 8-bit, grayscale replicated), plus EXIF orientation applied so the pixels
/// are upright as a photo viewer shows them. `path` is only used in error messages.
pub fn decode_rgb8(bytes: &[u8], path: &Path) -> Result<Decoded> {
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(bad(too_large(bytes.len() as u64)));
    }
    let format = sniff(&bytes[..bytes.len().min(HEADER_BYTES)], path)?;
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_has_end(bytes) {
        return Err(bad(
            "corrupt or truncated image (the JPEG data stops before its end marker): re-download or remove it".into(),
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
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
