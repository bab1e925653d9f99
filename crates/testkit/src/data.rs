//! Test data shared by the workspace's tests: the real data beside the checkout (`../shared`), and small
//! synthetic image folders whose classes a network can tell apart.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use features::{Error, Result};

/// The `../shared` folder beside the workspace (real photos and the real VGG16), if present.
///
/// In CI (`CI` set) a missing folder panics with a clear message, since the real-data tests must run there;
/// elsewhere it returns `None` and the caller skips with a note.
pub fn shared_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let ok = root.join("models/vgg16_keras_notop.onnx").is_file()
        && root.join("data/dogs_vs_cats").is_dir();
    if ok {
        return Some(root.canonicalize().unwrap_or(root));
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "real-data tests need {} (models/vgg16_keras_notop.onnx and data/dogs_vs_cats) beside the checkout",
            root.display()
        );
    }
    eprintln!(
        "note: {} not found; skipping a real-data test",
        root.display()
    );
    None
}

/// The first `per_class` photos (by file name) of each class of the shared dogs-vs-cats `split`,
/// cats first.
pub fn shared_photos(shared: &Path, split: &str, per_class: usize) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for class in ["cats", "dogs"] {
        let src = shared.join("data/dogs_vs_cats").join(split).join(class);
        let mut names: Vec<_> = std::fs::read_dir(&src)
            .map_err(|e| Error::io(&src, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        files.extend(names.into_iter().take(per_class));
    }
    Ok(files)
}

/// Builds `DIR/<split>/<class>/*` from the first `per_class` photos of each class of the shared dogs-vs-cats
/// split, as symbolic links (nothing is copied).
pub fn link_shared_subset(
    shared: &Path,
    dir: &Path,
    splits: &[&str],
    per_class: usize,
) -> Result<()> {
    for split in splits {
        for src in shared_photos(shared, split, per_class)? {
            let (Some(class), Some(name)) =
                (src.parent().and_then(|p| p.file_name()), src.file_name())
            else {
                continue;
            };
            let dst = dir.join(split).join(class);
            std::fs::create_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
            let target = dst.join(name);
            if !target.exists() {
                runfs::atomic::link_or_copy(&src, &target)?;
            }
        }
    }
    Ok(())
}

/// Writes a synthetic two-class image folder: class `bright` images are light with a vertical bar, class
/// `dark` images are dark with a horizontal bar, with seeded noise; sizes vary so resizing is exercised.
pub fn write_synthetic(dir: &Path, splits: &[(&str, usize)], seed: u64) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (split, per_class) in splits {
        for (ci, class) in ["bright", "dark"].iter().enumerate() {
            let d = dir.join(split).join(class);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            for i in 0..*per_class {
                let (w, h) = (rng.random_range(40..90u32), rng.random_range(40..90u32));
                let base = if ci == 0 { 190.0 } else { 60.0 };
                let img = RgbImage::from_fn(w, h, |x, y| {
                    let bar = if ci == 0 {
                        x > w / 3 && x < w / 2
                    } else {
                        y > h / 3 && y < h / 2
                    };
                    let v = if bar { 255.0 - base } else { base };
                    let n: f32 = rng.random_range(-25.0..25.0);
                    let c = (v + n).clamp(0.0, 255.0) as u8;
                    Rgb([c, c.saturating_add(10), c.saturating_sub(10)])
                });
                let ext = if i % 2 == 0 { "png" } else { "jpg" };
                let p = d.join(format!("{class}.{i}.{ext}"));
                img.save(&p).map_err(|e| Error::Image {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
    }
    Ok(())
}

/// Every file below `dir` (recursively), as paths relative to it, sorted; empty when `dir` does
/// not exist.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                pending.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}
