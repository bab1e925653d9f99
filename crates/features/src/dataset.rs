//! Scanning a data folder: `DIR/<split>/<class>/*` or `DIR/<class>/*` (one split named `all`), class names in
//! sorted order, the same classes in every split, and every file tied to its label.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// File extensions treated as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];

/// One image file and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub path: PathBuf,
    /// Path relative to the data folder, with `/` separators (what feature files record).
    pub rel: String,
    pub label: usize,
}

/// Names a validation split goes by, in the order they are looked for: asking for the
/// `validation` split finds the first of these that exists.
pub const VALIDATION_NAMES: [&str; 5] = ["validation", "val", "valid", "dev", "test"];

/// Folder names that mark `DIR/<split>/<class>/` even when a class folder has sub-folders.
const SPLIT_NAMES: [&str; 6] = ["train", "validation", "val", "valid", "dev", "test"];

/// A named split (train, validation, test, or `all`).
#[derive(Debug, Clone)]
pub struct Split {
    pub name: String,
    pub items: Vec<Item>,
}

/// A scanned data folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    /// Class names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    pub splits: Vec<Split>,
    /// Hidden folders (names starting with `.`) where split or class folders are looked for, which
    /// are not read: what a user should be told, since a class folder named `.cats` or `...` would
    /// otherwise vanish without a word.
    pub ignored: Vec<PathBuf>,
}

impl Dataset {
    /// The split called `name`; `validation` also finds `val`, `valid`, `dev` or `test` (the
    /// first that exists, see [`VALIDATION_NAMES`]).
    pub fn split(&self, name: &str) -> Option<&Split> {
        let exact = self.splits.iter().find(|s| s.name == name);
        if exact.is_some() || name != VALIDATION_NAMES[0] {
            return exact;
        }
        VALIDATION_NAMES
            .iter()
            .find_map(|n| self.splits.iter().find(|s| s.name == *n))
    }

    /// Number of files of each class in a split.
    pub fn counts(&self, split: &Split) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for it in &split.items {
            c[it.label] += 1;
        }
        c
    }
}

/// True when the file name has an image extension.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// What the user is told about a hidden folder that [`scan`] did not read ([`Dataset::ignored`]).
pub fn ignored_note(dir: &Path) -> String {
    format!(
        "note: {} is not read (folders whose name starts with '.' are hidden); rename it if it holds a class",
        dir.display()
    )
}

/// The hidden folders (names starting with `.`) directly in `dir`, sorted.
fn hidden_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Every visible file in `dir` and its visible sub-folders, sorted by path. A symbolic link that
/// leads nowhere (its target is missing, or it loops), a device or a named pipe is listed too, so
/// that reading it fails and it is reported with the other unreadable files instead of vanishing. A folder reached twice (a
/// symbolic link back up the tree) is read once.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let real = d.canonicalize().map_err(|e| Error::io(&d, e))?;
        if !seen.insert(real) {
            continue;
        }
        for p in visible_entries(&d)? {
            if p.is_dir() {
                pending.push(p);
            } else {
                // Files, broken links, and things that are no file at all (a device, a named
                // pipe): reading fails for all but files, and they are reported as skipped.
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// True for a symbolic link whose target cannot be reached (missing, or a loop of links).
pub fn is_broken_link(p: &Path) -> bool {
    p.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
        && std::fs::metadata(p).is_err()
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Scans `root`. Every non-hidden file inside a class folder and its sub-folders is listed (a
/// non-image among them is reported when it fails to decode), as Keras' `flow_from_directory`
/// does. `root`'s folders are splits when one of them is named like a split (`train`, `val`, …)
/// or every one of them holds folders; otherwise they are classes (one split named `all`).
pub fn scan(root: &Path) -> Result<Dataset> {
    if !root.is_dir() {
        return Err(Error::Dataset(format!(
            "data folder {} does not exist or is not a folder: pass --data DIR with DIR/<split>/<class>/*.jpg or DIR/<class>/*.jpg",
            root.display()
        )));
    }
    let subdirs: Vec<PathBuf> = visible_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if subdirs.is_empty() {
        return Err(Error::Dataset(format!(
            "{} has no sub-folders: put each class in its own folder (DIR/cats/*.jpg, DIR/dogs/*.jpg), optionally under split folders (DIR/train/cats/…)",
            root.display()
        )));
    }
    let is_split_name = |d: &Path| SPLIT_NAMES.contains(&name_of(d).to_ascii_lowercase().as_str());
    let named_like_splits = subdirs.iter().any(|d| is_split_name(d));
    let mut split_dirs = Vec::new();
    let mut class_dirs = Vec::new();
    for d in &subdirs {
        let has_subdirs = visible_entries(d)?.iter().any(|p| p.is_dir());
        // A folder named like a split holding only files is still a split (the mix is refused
        // below with a clear message rather than read as a class).
        let split = if named_like_splits {
            is_split_name(d) || has_subdirs
        } else {
            has_subdirs
        };
        if split {
            split_dirs.push(d.clone());
        } else {
            class_dirs.push(d.clone());
        }
    }
    let layout: Vec<(String, PathBuf)> = if split_dirs.is_empty() {
        vec![("all".to_string(), root.to_path_buf())]
    } else {
        if !class_dirs.is_empty() {
            return Err(Error::Dataset(format!(
                "{} mixes split folders ({}) with folders that hold files directly ({}): use either DIR/<split>/<class>/ or DIR/<class>/",
                root.display(),
                split_dirs.iter().map(|p| name_of(p)).collect::<Vec<_>>().join(", "),
                class_dirs.iter().map(|p| name_of(p)).collect::<Vec<_>>().join(", ")
            )));
        }
        split_dirs.iter().map(|d| (name_of(d), d.clone())).collect()
    };

    let mut ignored = hidden_folders(root)?;
    let mut classes: Option<(String, Vec<String>)> = None;
    let mut splits = Vec::new();
    for (split_name, dir) in layout {
        if dir != root {
            ignored.extend(hidden_folders(&dir)?);
        }
        splits.push(scan_split(root, split_name, &dir, &mut classes)?);
    }
    let classes = classes.map(|(_, c)| c).unwrap_or_default();
    Ok(Dataset {
        root: root.to_path_buf(),
        classes,
        splits,
        ignored,
    })
}

/// The photos of one split folder `dir`: its class folders (the same as every earlier split's,
/// `classes` holds the first split's name and classes) and every file below them, labelled.
fn scan_split(
    root: &Path,
    split_name: String,
    dir: &Path,
    classes: &mut Option<(String, Vec<String>)>,
) -> Result<Split> {
    let class_paths: Vec<PathBuf> = visible_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    let names: Vec<String> = class_paths.iter().map(|p| name_of(p)).collect();
    if names.is_empty() && dir != root {
        return Err(Error::Dataset(format!(
            "split folder {} holds no class folders: put one folder per class in it ({}/cats, {}/dogs, …) \
             or remove it",
            dir.display(),
            dir.display(),
            dir.display()
        )));
    }
    if names.len() < 2 {
        return Err(Error::Dataset(format!(
            "{} has {} class folder{} ({}): a classifier needs at least two, e.g. {}/cats and {}/dogs",
            dir.display(),
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", "),
            dir.display(),
            dir.display()
        )));
    }
    match classes {
        None => *classes = Some((split_name.clone(), names.clone())),
        Some((first, known)) if *known != names => {
            let a: BTreeSet<_> = known.iter().collect();
            let b: BTreeSet<_> = names.iter().collect();
            let missing: Vec<_> = a.difference(&b).map(|s| s.as_str()).collect();
            let extra: Vec<_> = b.difference(&a).map(|s| s.as_str()).collect();
            return Err(Error::Dataset(format!(
                "split '{split_name}' has different classes from split '{first}': missing [{}], extra [{}]; every split needs the same class folders",
                missing.join(", "),
                extra.join(", ")
            )));
        }
        Some(_) => {}
    }
    refuse_shared_folders(&class_paths)?;
    let mut items = Vec::new();
    for (label, cdir) in class_paths.iter().enumerate() {
        let files = files_below(cdir)?;
        if files.is_empty() {
            return Err(Error::Dataset(format!(
                "class folder {} is empty: add images of class '{}' or remove the folder",
                cdir.display(),
                names[label]
            )));
        }
        for path in files {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            items.push(Item { path, rel, label });
        }
    }
    Ok(Split {
        name: split_name,
        items,
    })
}

/// Refuses two class folders that are the same folder, or one inside the other, once symbolic links
/// are followed (`dogs -> cats`): their photos would be in two classes at once.
fn refuse_shared_folders(class_paths: &[PathBuf]) -> Result<()> {
    let real: Vec<PathBuf> = class_paths
        .iter()
        .map(|p| p.canonicalize().map_err(|e| Error::io(p, e)))
        .collect::<Result<_>>()?;
    for (i, a) in real.iter().enumerate() {
        for (j, b) in real.iter().enumerate() {
            if i == j || !a.starts_with(b) {
                continue;
            }
            let how = if a == b {
                format!("are the same folder ({})", a.display())
            } else {
                format!("overlap: {} is inside {}", a.display(), b.display())
            };
            return Err(Error::Dataset(format!(
                "class folders {} and {} {how} (a symbolic link?): the same photos would be in two \
                 classes; make each class its own folder of its own photos",
                class_paths[i.min(j)].display(),
                class_paths[i.max(j)].display(),
            )));
        }
    }
    Ok(())
}
