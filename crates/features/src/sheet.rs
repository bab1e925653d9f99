//! Pictures made of photos: contact sheets (thumbnails in a grid, optionally with a title and lines of
//! text under each, in the bundled font of [`base::font`]) and atomic PNG/JPEG writing. Augmentation
//! previews and the worst-mistakes sheet use it.

use std::io::{BufWriter, Write};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::{self, FilterType};
use image::{ImageEncoder, Rgb, RgbImage};
use plotters::backend::{BitMapBackend, RGBPixel};
use plotters::prelude::*;

use crate::{Error, Result};

/// One cell of a sheet: an image (`None`: a grey placeholder) and lines of text below it.
pub struct Tile {
    pub image: Option<RgbImage>,
    pub lines: Vec<String>,
    /// Colour of the first line.
    pub accent: [u8; 3],
}

impl Tile {
    /// A tile without text.
    pub fn picture(image: RgbImage) -> Tile {
        Tile {
            image: Some(image),
            lines: Vec::new(),
            accent: [0, 0, 0],
        }
    }
}

/// How a sheet looks.
#[derive(Clone, Debug)]
pub struct Style {
    /// Side of the square each thumbnail is fitted into.
    pub thumb: u32,
    /// Space around every cell.
    pub pad: u32,
    /// Columns at most; `None`: a near-square grid.
    pub max_cols: Option<u32>,
    /// Narrowest sheet (room for the title).
    pub min_width: u32,
    pub background: [u8; 3],
    /// Colour of a frame around the first tile (e.g. the original among augmented copies).
    pub frame_first: Option<[u8; 3]>,
    /// Characters per text line before it is shortened from the left.
    pub line_chars: usize,
}

impl Style {
    /// White sheet of up to 4 columns of 160-px thumbnails with text (reports of mistakes).
    pub fn report() -> Style {
        Style {
            thumb: 160,
            pad: 8,
            max_cols: Some(4),
            min_width: 520,
            background: [255, 255, 255],
            frame_first: None,
            line_chars: 25,
        }
    }

    /// Dark near-square grid, the first tile framed in orange (augmentation previews).
    pub fn preview(thumb: u32) -> Style {
        Style {
            thumb: thumb.max(8),
            pad: 6,
            max_cols: None,
            min_width: 0,
            background: [28, 28, 28],
            frame_first: Some([255, 150, 0]),
            line_chars: 25,
        }
    }
}

const LINE: u32 = 16;
const TITLE: u32 = 34;

fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(n - (max - 1)).collect();
        format!("…{tail}")
    }
}

/// Thumbnail size fitting `w`×`h` into `max`×`max`, keeping the aspect ratio.
pub fn fit(w: u32, h: u32, max: u32) -> (u32, u32) {
    let scale = max as f64 / w.max(h).max(1) as f64;
    (
        ((w as f64 * scale).round() as u32).clamp(1, max),
        ((h as f64 * scale).round() as u32).clamp(1, max),
    )
}

/// Draws `tiles` in a grid, under `title` when given.
pub fn render(title: Option<&str>, tiles: &[Tile], style: &Style) -> Result<RgbImage> {
    let lines = tiles.iter().map(|t| t.lines.len()).max().unwrap_or(0) as u32;
    let n = tiles.len().max(1) as u32;
    let cols = match style.max_cols {
        Some(c) => n.clamp(1, c),
        None => (n as f64).sqrt().ceil() as u32,
    };
    let rows = n.div_ceil(cols).max(1);
    let top = if title.is_some() { TITLE } else { 0 };
    let (pad, thumb) = (style.pad, style.thumb);
    let (cw, ch) = (thumb + pad, thumb + pad + lines * (LINE + 1));
    let (w, h) = (
        (cols * cw + pad).max(style.min_width),
        top + rows * ch + pad,
    );
    let mut canvas = RgbImage::from_pixel(w, h, Rgb(style.background));
    let origin = |i: usize| {
        (
            pad + (i as u32 % cols) * cw,
            top + pad + (i as u32 / cols) * ch,
        )
    };
    for (i, t) in tiles.iter().enumerate() {
        let (x0, y0) = origin(i);
        let img = match &t.image {
            Some(img) => {
                let (tw, th) = fit(img.width(), img.height(), thumb);
                imageops::resize(img, tw, th, FilterType::Triangle)
            }
            None => RgbImage::from_pixel(thumb, thumb, Rgb([200, 200, 200])),
        };
        let (x, y) = (
            x0 + (thumb - img.width()) / 2,
            y0 + (thumb - img.height()) / 2,
        );
        if let (0, Some(frame)) = (i, style.frame_first) {
            let b = pad / 2;
            for yy in y.saturating_sub(b)..(y + img.height() + b).min(h) {
                for xx in x.saturating_sub(b)..(x + img.width() + b).min(w) {
                    canvas.put_pixel(xx, yy, Rgb(frame));
                }
            }
        }
        imageops::replace(&mut canvas, &img, x as i64, y as i64);
    }
    if title.is_some() || lines > 0 {
        draw_text(&mut canvas, title, tiles, style, &origin)?;
    }
    Ok(canvas)
}

fn draw_text(
    canvas: &mut RgbImage,
    title: Option<&str>,
    tiles: &[Tile],
    style: &Style,
    origin: &dyn Fn(usize) -> (u32, u32),
) -> Result<()> {
    let family = base::font::font();
    let (w, h) = canvas.dimensions();
    let err = |e: String| Error::Image {
        path: "contact sheet".into(),
        reason: e,
    };
    let root = BitMapBackend::<RGBPixel>::with_buffer_and_format(canvas, (w, h))
        .map_err(|e| err(e.to_string()))?
        .into_drawing_area();
    if let Some(title) = title {
        let big = TextStyle::from((family, 20).into_font()).color(&BLACK);
        root.draw_text(title, &big, (style.pad as i32, 7))
            .map_err(|e| err(e.to_string()))?;
    }
    for (i, t) in tiles.iter().enumerate() {
        let (x0, y0) = origin(i);
        for (j, line) in t.lines.iter().enumerate() {
            let colour = if j == 0 {
                RGBColor(t.accent[0], t.accent[1], t.accent[2])
            } else {
                RGBColor(40, 40, 40)
            };
            let text = TextStyle::from((family, 13).into_font()).color(&colour);
            let y = y0 + style.thumb + 4 + j as u32 * LINE;
            root.draw_text(
                &shorten(line, style.line_chars),
                &text,
                (x0 as i32, y as i32),
            )
            .map_err(|e| err(e.to_string()))?;
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// File format of a written picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
}

/// Encodes `img` into a temporary file beside `path` and renames it into place.
pub fn save(img: &RgbImage, path: &Path, format: Format) -> Result<()> {
    let tmp = runfs::TempFile::new(path);
    let file = tmp.create()?;
    let mut w = BufWriter::new(file);
    let (width, height) = img.dimensions();
    let raw = img.as_raw();
    let encoded = match format {
        Format::Jpeg => JpegEncoder::new_with_quality(&mut w, 92).write_image(
            raw,
            width,
            height,
            image::ExtendedColorType::Rgb8,
        ),
        Format::Png => {
            PngEncoder::new(&mut w).write_image(raw, width, height, image::ExtendedColorType::Rgb8)
        }
    };
    encoded.map_err(|e| Error::Image {
        path: path.to_path_buf(),
        reason: format!("cannot encode: {e}"),
    })?;
    w.flush().map_err(|e| Error::io(tmp.path(), e))?;
    let file = w
        .into_inner()
        .map_err(|e| Error::io(tmp.path(), e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    drop(file);
    tmp.commit()?;
    Ok(())
}
