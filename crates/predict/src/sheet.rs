//! The contact sheet of mistakes: the most confidently wrong photos with their file name, true and
//! predicted class and probability, drawn by `features::sheet`.

use std::path::Path;

use features::sheet::{self, Style, Tile};
use image::RgbImage;

use crate::error::Result;
use crate::evaluate::Mistake;

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
    Ok(sheet::render(Some(&title), &tiles, &Style::report())?)
}

/// Writes `img` as PNG to `path` through a temporary sibling file.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    Ok(sheet::save(img, path, sheet::Format::Png)?)
}
