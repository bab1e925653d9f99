//! Contact sheets of the top findings (`RUN/audit/*.png`), so a user can look at the photos in
//! minutes: each tile shows the photo, what was found and its path. Photos are read only inside
//! the data folder the user named.

use std::path::{Component, Path, PathBuf};

use features::sheet::{self, Style, Tile};

use crate::dupes::DuplicatePair;
use crate::error::Result;
use crate::labels::Mislabeled;
use crate::outliers::Outlier;

/// Tiles per sheet (duplicate pairs: half as many pairs).
pub const TILES: usize = 16;

/// `data/rel` when `rel` is a plain relative path (no `..`, not absolute): feature files name
/// photos that way, and nothing else is read.
pub(crate) fn inside(data: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| data.join(p))
}

fn tile(data: &Path, rel: &str, lines: Vec<String>, accent: [u8; 3]) -> Tile {
    let image = inside(data, rel)
        .and_then(|p| features::image_io::load_rgb8(&p).ok())
        .map(|d| d.image);
    let mut lines = lines;
    lines.push(rel.to_string());
    Tile {
        image,
        lines,
        accent,
    }
}

/// The likely mislabeled photos.
pub fn mislabeled(data: &Path, found: &[Mislabeled], out: &Path) -> Result<()> {
    let tiles: Vec<Tile> = found
        .iter()
        .take(TILES)
        .map(|m| {
            tile(
                data,
                &m.path,
                vec![
                    format!("{} {:.2}?", m.suggested, m.suggested_probability),
                    format!("labelled {} ({:.2})", m.given, m.given_probability),
                ],
                [200, 30, 30],
            )
        })
        .collect();
    let title = format!("Likely mislabeled: {} of {}", tiles.len(), found.len());
    save(&title, &tiles, out)
}

/// Near-duplicate pairs side by side.
pub fn duplicates(data: &Path, found: &[DuplicatePair], out: &Path) -> Result<()> {
    let mut tiles = Vec::new();
    for d in found.iter().take(TILES / 2) {
        let kind = if d.leak { "leak" } else { "near copy" };
        tiles.push(tile(
            data,
            &d.path,
            vec![
                match d.hash_bits {
                    Some(_) => format!("{kind} {:.3}, pixels", d.cosine),
                    None => format!("{kind} {:.3}", d.cosine),
                },
                d.split.clone(),
            ],
            [200, 110, 0],
        ));
        tiles.push(tile(
            data,
            &d.partner,
            vec!["of".into(), d.partner_split.clone()],
            [90, 90, 90],
        ));
    }
    let title = format!(
        "Near-duplicates: {} of {} pairs",
        tiles.len() / 2,
        found.len()
    );
    save(&title, &tiles, out)
}

/// Photos far from every class.
pub fn outliers(data: &Path, found: &[Outlier], out: &Path) -> Result<()> {
    let tiles: Vec<Tile> = found
        .iter()
        .take(TILES)
        .map(|o| {
            tile(
                data,
                &o.path,
                vec![
                    format!("{:.1} sd; like {}", o.score, o.nearest),
                    format!("in {} ({})", o.given, o.split),
                ],
                [40, 90, 200],
            )
        })
        .collect();
    let title = format!("Out of place: {} of {}", tiles.len(), found.len());
    save(&title, &tiles, out)
}

fn save(title: &str, tiles: &[Tile], out: &Path) -> Result<()> {
    let img = sheet::render(Some(title), tiles, &Style::report())?;
    sheet::save(&img, out, sheet::Format::Png)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_read() {
        let d = Path::new("data");
        assert_eq!(
            inside(d, "train/cats/a.jpg"),
            Some(PathBuf::from("data/train/cats/a.jpg"))
        );
        assert_eq!(inside(d, "../secret.jpg"), None);
        assert_eq!(inside(d, "/etc/passwd"), None);
        assert_eq!(inside(d, "train/../../x.jpg"), None);
    }
}
