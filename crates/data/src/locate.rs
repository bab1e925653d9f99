//! Finding a Dogs vs Cats archive the user already has: `train.zip`, `kagglecatsanddogs*.zip` or an
//! extracted `PetImages/` folder in the current folder or `~/Downloads`.

use std::path::{Path, PathBuf};

/// The folders searched when no `--archive` is given: the current folder, then `~/Downloads`.
pub fn default_search_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))];
    if let Some(home) = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")) {
        dirs.push(Path::new(&home).join("Downloads"));
    }
    dirs
}

/// What [`find_archive`] looks for, for messages.
pub const LOOKED_FOR: &str = "train.zip, kagglecatsanddogs*.zip or an extracted PetImages/ folder";

/// The first archive found in `dirs`, in order: `train.zip`, the newest-named `kagglecatsanddogs*.zip`
/// (also as a hidden `.kagglecatsanddogs*.zip`, the name a download is kept under), then `PetImages/`.
pub fn find_archive(dirs: &[PathBuf]) -> Option<PathBuf> {
    for dir in dirs {
        let train = dir.join("train.zip");
        if train.is_file() {
            return Some(train);
        }
        let mut ms: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_ascii_lowercase();
                let n = n.strip_prefix('.').unwrap_or(&n).to_string();
                n.starts_with("kagglecatsanddogs") && n.ends_with(".zip")
            })
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        ms.sort();
        if let Some(p) = ms.pop() {
            return Some(p);
        }
        let pets = dir.join("PetImages");
        if pets.is_dir() {
            return Some(pets);
        }
    }
    None
}
