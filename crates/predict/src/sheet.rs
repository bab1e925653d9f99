//! The contact sheet of mistakes: thumbnails in a grid, each with its file name, true and
//! predicted class and probability, drawn into an RGB image with the bundled DejaVu Sans font
//! (plotters' ab_glyph text; no system fonts needed) and saved as PNG atomically.

use std::path::Path;
use std::sync::Once;

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use plotters::backend::{BitMapBackend, RGBPixel};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::evaluate::Mistake;

/// DejaVu Sans (Bitstream Vera licence, see `crates/head/assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../head/assets/DejaVuSans.ttf");
const FAMILY: &str = "bottleneck-sheet";
/// Side of the square a thumbnail is fitted into.
pub const THUMB: u32 = 160;
const PAD: u32 = 8;
const LINE: u32 = 16;
const TITLE: u32 = 34;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled font is a valid TTF; if registration failed, plotters would skip the text.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// One cell of the sheet: an image (or `None` for a grey placeholder) and lines of text below it.
pub struct Tile {
    pub image: Option<RgbImage>,
    pub lines: Vec<String>,
    /// Colour of the first line.
    pub accent: [u8; 3],
}

fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(n - (max - 1)).collect();
        format!("…{tail}")
    }
}

/// Draws `tiles` in a grid of up to 4 columns under `title`.
pub fn render(title: &str, tiles: &[Tile]) -> Result<RgbImage> {
    register_font();
    let lines = tiles.iter().map(|t| t.lines.len()).max().unwrap_or(0) as u32;
    let cols = tiles.len().clamp(1, 4) as u32;
    let rows = tiles.len().div_ceil(cols as usize).max(1) as u32;
    let (cw, ch) = (THUMB + 2 * PAD, THUMB + PAD * 2 + lines * LINE);
    let (w, h) = ((cols * cw).max(520), TITLE + rows * ch);
    let mut canvas = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for (i, t) in tiles.iter().enumerate() {
        let (x0, y0) = (
            (i as u32 % cols) * cw + PAD,
            TITLE + (i as u32 / cols) * ch + PAD,
        );
        match &t.image {
            Some(img) => {
                let (tw, th) = fit(img.width(), img.height(), THUMB);
                let thumb = imageops::resize(img, tw, th, FilterType::Triangle);
                let (dx, dy) = ((THUMB - tw) / 2, (THUMB - th) / 2);
                imageops::replace(&mut canvas, &thumb, (x0 + dx) as i64, (y0 + dy) as i64);
            }
            None => {
                let grey = RgbImage::from_pixel(THUMB, THUMB, Rgb([200, 200, 200]));
                imageops::replace(&mut canvas, &grey, x0 as i64, y0 as i64);
            }
        }
    }
    let (w, h) = canvas.dimensions();
    {
        let err = |e: String| Error::Sheet {
            path: "worst.png".into(),
            reason: e,
        };
        let root = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut canvas, (w, h))
            .map_err(|e| err(e.to_string()))?
            .into_drawing_area();
        let big = TextStyle::from((FAMILY, 20).into_font()).color(&BLACK);
        root.draw_text(title, &big, (PAD as i32, 7))
            .map_err(|e| err(e.to_string()))?;
        for (i, t) in tiles.iter().enumerate() {
            let (x0, y0) = (
                (i as u32 % cols) * cw + PAD,
                TITLE + (i as u32 / cols) * ch + PAD,
            );
            for (j, line) in t.lines.iter().enumerate() {
                let colour = if j == 0 {
                    RGBColor(t.accent[0], t.accent[1], t.accent[2])
                } else {
                    RGBColor(40, 40, 40)
                };
                let style = TextStyle::from((FAMILY, 13).into_font()).color(&colour);
                let y = y0 + THUMB + 4 + j as u32 * LINE;
                root.draw_text(&shorten(line, 25), &style, (x0 as i32, y as i32))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(canvas)
}

fn fit(w: u32, h: u32, max: u32) -> (u32, u32) {
    if w >= h {
        (
            max,
            ((h as u64 * max as u64) / w.max(1) as u64).max(1) as u32,
        )
    } else {
        (
            ((w as u64 * max as u64) / h.max(1) as u64).max(1) as u32,
            max,
        )
    }
}

/// The sheet of the most confidently wrong images of `split`.
pub fn render_mistakes(worst: &[Mistake], split: &str) -> Result<RgbImage> {
    let title = if worst.is_empty() {
        format!("{split}: no misclassified images")
    } else {
        format!("{split}: the {} most confidently wrong images", worst.len())
    };
    let tiles: Vec<Tile> = worst
        .iter()
        .map(|m| Tile {
            image: features::image_io::load_rgb8(&m.path).ok().map(|d| d.image),
            lines: vec![
                format!("{} {:.3}", m.predicted, m.probability),
                format!("true: {} ({:.3})", m.truth, m.true_probability),
                m.file.clone(),
            ],
            accent: [200, 30, 30],
        })
        .collect();
    render(&title, &tiles)
}

/// Writes `img` as PNG to `path` through a temporary sibling file.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::Sheet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    head::write_atomic(path, &bytes)?;
    Ok(())
}
