//! Symbolic links inside a run folder. Every file a stage writes is created anew under a unique
//! name and renamed into place (a link at the target is replaced, never written through), the lock
//! file is opened without following a link, and a folder of the run that is a link — `RUN/features`
//! pointing at a folder elsewhere — is refused before anything is written or read, so no command
//! writes, moves or deletes a file outside the places the user named.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How deep below the run folder a linked folder is looked for (`RUN/a`, `RUN/a/b`): every folder
/// a stage writes into is at most this deep.
const DEPTH: usize = 2;

/// Fails naming the first folder of `run` (down to two levels) that is a symbolic link to a folder,
/// with the fix. A missing run folder holds no links.
pub fn refuse_linked_folders(run: &Path) -> Result<()> {
    match linked_folders(run).into_iter().next() {
        None => Ok(()),
        Some(link) => {
            let target = std::fs::read_link(&link)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            Err(Error::Linked {
                link,
                target,
                run: run.to_path_buf(),
            })
        }
    }
}

/// The entries of `run` (down to [`DEPTH`] levels, links not followed) that are symbolic links to
/// folders, sorted.
pub fn linked_folders(run: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(run.to_path_buf(), 1)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_symlink() {
                if path.is_dir() {
                    found.push(path);
                }
            } else if ft.is_dir() && depth < DEPTH {
                stack.push((path, depth + 1));
            }
        }
    }
    found.sort();
    found
}

/// Opens `path` for reading and writing, created if missing, never through a symbolic link: a link
/// at `path` is removed (the link, not what it points at) and a plain file created in its place.
pub fn open_plain(path: &Path) -> Result<std::fs::File> {
    let open = || {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.custom_flags(libc::O_NOFOLLOW);
        }
        o.open(path)
    };
    match open() {
        Ok(f) => Ok(f),
        Err(e) if is_link(path) => {
            std::fs::remove_file(path).map_err(|_| Error::io(path, e))?;
            open().map_err(|e| Error::io(path, e))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

/// True when `path` itself is a symbolic link.
pub fn is_link(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn linked_folders_are_found_two_levels_down_and_files_are_not() {
        let run = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), "x").unwrap();
        std::fs::create_dir_all(run.path().join("finetune")).unwrap();
        symlink(outside.path().join("f"), run.path().join("report.html")).unwrap();
        assert!(refuse_linked_folders(run.path()).is_ok());
        symlink(outside.path(), run.path().join("finetune/cache")).unwrap();
        symlink(outside.path(), run.path().join("features")).unwrap();
        assert_eq!(
            linked_folders(run.path()),
            vec![
                run.path().join("features"),
                run.path().join("finetune/cache")
            ]
        );
        let e = refuse_linked_folders(run.path()).unwrap_err().to_string();
        assert!(e.contains("features") && e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_linked_file_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "keep me").unwrap();
        let lock = dir.path().join("lock");
        symlink(&outside, &lock).unwrap();
        let mut f = open_plain(&lock).unwrap();
        std::io::Write::write_all(&mut f, b"pid 1").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");
        assert!(!is_link(&lock));
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), "pid 1");
    }
}
