//! Turning the paths given to `predict` into a list of image files: files as they are, folders
//! walked recursively (image extensions only, hidden entries skipped, sorted, each folder once).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use features::dataset::{is_image_name, Item};

use crate::error::{Error, Result};

/// The image files under `paths`, in order: each path's files sorted by name, folders first
/// expanded recursively. Each item's `rel` is the path as the user would write it.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<Item>> {
    if paths.is_empty() {
        return Err(Error::Input(
            "no images given: pass image files or folders, e.g. `bottleneck predict --run RUN photos/`".into(),
        ));
    }
    let mut out = Vec::new();
    let mut seen_dirs = HashSet::new();
    for p in paths {
        if p.is_dir() {
            let before = out.len();
            walk(p, &mut out, &mut seen_dirs)?;
            if out.len() == before {
                return Err(Error::Input(format!(
                    "{} holds no image files (looked for {} recursively)",
                    p.display(),
                    features::dataset::IMAGE_EXTENSIONS.join(", ")
                )));
            }
        } else if p.exists() {
            out.push(item(p.clone()));
        } else {
            return Err(Error::Input(format!(
                "{} does not exist: pass existing image files or folders",
                p.display()
            )));
        }
    }
    Ok(out)
}

fn item(path: PathBuf) -> Item {
    Item {
        rel: path.to_string_lossy().into_owned(),
        path,
        label: 0,
    }
}

fn walk(dir: &Path, out: &mut Vec<Item>, seen: &mut HashSet<PathBuf>) -> Result<()> {
    // A symbolic link back up the tree would loop forever: visit each real folder once.
    let real = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    if !seen.insert(real) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out, seen)?;
        } else if is_image_name(&p) {
            // (A broken link, a device or a named pipe is listed so that it is reported as
            // skipped, not silently dropped; reading it is refused without opening it.)
            out.push(item(p));
        }
    }
    Ok(())
}

/// When not one of `items` passes [`features::image_io::check_photo`] (each a device, an endless
/// or huge file, no image format…), every one of them with the reason: the classifier need not
/// even be loaded. `None` when at least one may be read.
pub fn none_readable(items: &[Item]) -> Option<Vec<features::store::Skipped>> {
    if items.is_empty() {
        return None;
    }
    let mut skipped = Vec::with_capacity(items.len());
    for item in items {
        match features::image_io::check_photo(&item.path) {
            Ok(()) => return None,
            Err(e) => skipped.push(features::store::Skipped {
                file: item.rel.clone(),
                reason: features::Error::skip_reason(e),
            }),
        }
    }
    Some(skipped)
}
