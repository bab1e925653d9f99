//! Files that appear whole or not at all: written under a unique hidden temporary name beside the
//! target (`.name.tmp-<pid>-<n>.ext`, so two writers never share one), synced, then renamed into place.
//! A [`TempFile`] that is dropped without [`TempFile::commit`] removes itself, so no error path leaves
//! a temporary behind; temporaries of killed processes are removed by [`remove_stale`] under the run lock.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Marker in every temporary name (`.name.tmp-<pid>-<n>.ext`).
pub const TEMP_MARK: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary path beside `path` that keeps its extension (plotters picks the image format
/// from it): `dir/.stem.tmp-<pid>-<n>.ext`, unique within this process and across processes.
pub fn temp_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{stem}{TEMP_MARK}{}-{n}{ext}", std::process::id()))
}

/// True when `name` is a temporary made by [`temp_path`] (`.stem.tmp-<pid>-<n>[.ext]`).
pub fn is_temp_name(name: &str) -> bool {
    let Some(at) = name.find(TEMP_MARK).filter(|_| name.starts_with('.')) else {
        return false;
    };
    let rest = &name[at + TEMP_MARK.len()..];
    let rest = rest.split_once('.').map_or(rest, |(id, _)| id);
    let mut parts = rest.split('-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// A temporary file beside its target; removed when dropped, unless committed.
#[derive(Debug)]
pub struct TempFile {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl TempFile {
    /// Reserves a temporary name for `target` (nothing is created yet).
    pub fn new(target: &Path) -> Self {
        TempFile {
            tmp: temp_path(target),
            target: target.to_path_buf(),
            committed: false,
        }
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Creates the temporary file for writing; it must not exist yet (a file or link already at the
    /// unique name is an error, never written through).
    pub fn create(&self) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.tmp)
            .map_err(|e| Error::io(&self.tmp, e))
    }

    /// Renames the finished temporary over the target.
    pub fn commit(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` so that readers never see a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = TempFile::new(path);
    let mut f = tmp.create()?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(tmp.path(), e))?;
    drop(f);
    tmp.commit().map(|_| ())
}

/// Copies `src` to `dst` the way [`write_atomic`] writes (a link at `dst` is replaced, not written
/// through).
pub fn copy_atomic(src: &Path, dst: &Path) -> Result<()> {
    let bytes = std::fs::read(src).map_err(|e| Error::io(src, e))?;
    write_atomic(dst, &bytes)
}

/// Removes the temporaries left in `dir` and its sub-folders (three levels, links not followed) by
/// processes that were killed; only safe while holding the run folder's lock, when every other
/// writer is gone. Returns what was removed.
pub fn remove_stale(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if depth < 3 {
                    stack.push((path, depth + 1));
                }
            } else if is_temp_name(&e.file_name().to_string_lossy())
                && std::fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
    }
    removed.sort();
    removed
}

/// True when `dir` exists and holds at least one entry.
pub fn occupied(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Makes `dst` refer to `src`: a symbolic link where the platform has them, else a copy.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(src, dst).map_err(|e| Error::io(dst, e))
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(src, dst)
            .map(|_| ())
            .map_err(|e| Error::io(dst, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_hidden_and_keep_the_extension() {
        let a = temp_path(Path::new("/x/curves.png"));
        let b = temp_path(Path::new("/x/curves.png"));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".curves.tmp-") && name.ends_with(".png"),
            "{name}"
        );
        assert!(is_temp_name(&name));
        assert!(is_temp_name(".train.safetensors.rows.tmp-12-3"));
        assert!(!is_temp_name("curves.png"));
        assert!(!is_temp_name(".notes.tmp-draft.txt"));
    }

    #[test]
    fn a_dropped_temporary_is_removed_and_a_committed_one_replaces_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f.json");
        std::fs::write(&target, "old").unwrap();
        let t = TempFile::new(&target);
        std::fs::write(t.path(), "half").unwrap();
        drop(t);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporaries_are_found_in_sub_folders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("head")).unwrap();
        let stale = dir.path().join("head/.head.tmp-99999-0.safetensors");
        std::fs::write(&stale, "x").unwrap();
        std::fs::write(dir.path().join("head/head.safetensors"), "y").unwrap();
        assert_eq!(remove_stale(dir.path()), vec![stale.clone()]);
        assert!(!stale.exists() && dir.path().join("head/head.safetensors").exists());
    }
}
