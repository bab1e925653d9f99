//! One writer per run folder: an advisory lock on `RUN/.bottleneck.lock` held for as long as the
//! command runs. The lock file names its holder (pid and command line), so a second writer is told
//! who has the folder instead of silently interleaving its files with the first one's. Taking the lock
//! again in the same process (a stage run by `tutorial` or `fit`) shares the first hold. The lock is
//! released when the last [`RunLock`] of the folder is dropped, or when the process dies. The lock
//! file is never opened through a symbolic link, and a run whose folders are links is refused
//! ([`crate::links`]).

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::atomic;
use crate::error::{Error, Result};
use crate::links;

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".bottleneck.lock";

#[derive(Debug)]
struct Held {
    _file: File,
}

static HELD: Mutex<Vec<(PathBuf, Weak<Held>)>> = Mutex::new(Vec::new());

/// Proof that this process is the one writer of a run folder.
#[derive(Debug, Clone)]
pub struct RunLock {
    run: PathBuf,
    _held: Arc<Held>,
}

impl RunLock {
    /// Takes the lock of `run` (created if needed) for `stage`, or fails at once naming the process
    /// that holds it (its pid and command line). Temporaries left by killed writers are removed
    /// once the lock is taken.
    pub fn acquire(run: &Path, stage: &str) -> Result<RunLock> {
        Self::take(run, stage, LOCK_FILE, true)
    }

    /// Takes a lock of its own for one shard of a job array (`name`, e.g. `extract-shard-2-of-8`),
    /// so that the shards of one run work side by side; it removes no temporaries, as the other
    /// shards' are in use.
    pub fn acquire_shard(run: &Path, stage: &str, name: &str) -> Result<RunLock> {
        Self::take(run, stage, &format!(".bottleneck.{name}.lock"), false)
    }

    fn take(run: &Path, stage: &str, file_name: &str, clean: bool) -> Result<RunLock> {
        std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
        links::refuse_linked_folders(run)?;
        let key = run
            .canonicalize()
            .map_err(|e| Error::io(run, e))?
            .join(file_name);
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(_, w)| w.strong_count() > 0);
        if let Some(h) = held
            .iter()
            .find(|(p, _)| *p == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(RunLock {
                run: run.to_path_buf(),
                _held: h,
            });
        }
        let path = run.join(file_name);
        let mut file = links::open_plain(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Error::Locked {
                    run: run.to_path_buf(),
                    holder: describe_holder(&text),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let argv: Vec<String> = std::env::args().collect();
        let command = match argv.len() {
            0 => stage.to_string(),
            _ => argv.join(" "),
        };
        let note = format!(
            "pid {}\ncommand {command}\nstage {stage}\n",
            std::process::id()
        );
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(note.as_bytes()))
            .map_err(|e| Error::io(&path, e))?;
        if clean {
            atomic::remove_stale(run);
        }
        let h = Arc::new(Held { _file: file });
        held.push((key, Arc::downgrade(&h)));
        Ok(RunLock {
            run: run.to_path_buf(),
            _held: h,
        })
    }

    /// The run folder this lock holds.
    pub fn run(&self) -> &Path {
        &self.run
    }
}

/// The process writing `run` (`pid N (command …)`), or `None` when no writer holds it. Opens the
/// lock file read-only and creates nothing, for readers that must not write to the run (`serve`).
pub fn writer(run: &Path) -> Result<Option<String>> {
    let path = run.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Ok(Some(describe_holder(&text)))
        }
        Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// `pid N (command …)` from the lock file's text.
fn describe_holder(text: &str) -> String {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).map(str::trim).map(str::to_string))
    };
    match (field("pid "), field("command ")) {
        (Some(p), Some(c)) => format!("pid {p} (command {c})"),
        (Some(p), None) => format!("pid {p}"),
        _ => "another process".into(),
    }
}

/// The holders of locks taken in this process, by lock file (for diagnostics and tests).
pub fn held_here() -> HashMap<PathBuf, usize> {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.iter()
        .filter(|(_, w)| w.strong_count() > 0)
        .map(|(p, w)| (p.clone(), w.strong_count()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_process_shares_its_lock_and_releases_it_with_the_last_hold() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunLock::acquire(dir.path(), "extract").unwrap();
        let b = RunLock::acquire(dir.path(), "train-head").unwrap();
        let key = dir.path().canonicalize().unwrap().join(LOCK_FILE);
        assert_eq!(held_here().get(&key), Some(&2));
        drop(a);
        drop(b);
        assert_eq!(held_here().get(&key), None);
        // A second open file description is refused while the lock is held, and named.
        let _c = RunLock::acquire(dir.path(), "fit").unwrap();
        let f = File::open(dir.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(f.try_lock(), Err(TryLockError::WouldBlock)));
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        let holder = describe_holder(&text);
        assert!(
            holder.starts_with(&format!("pid {} (command ", std::process::id())),
            "{holder}"
        );
    }

    #[test]
    fn writer_names_the_holder_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(writer(dir.path()).unwrap(), None);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let lock = RunLock::acquire(dir.path(), "fit").unwrap();
        let holder = writer(dir.path()).unwrap().expect("a writer holds the run");
        assert!(
            holder.starts_with(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        drop(lock);
        assert_eq!(writer(dir.path()).unwrap(), None);
    }

    #[test]
    fn stale_temporaries_go_when_the_lock_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".train.tmp-1-0.safetensors");
        let kept = dir.path().join(".notes.tmp-draft");
        std::fs::write(&kept, "mine").unwrap();
        std::fs::write(&stale, "x").unwrap();
        let _l = RunLock::acquire(dir.path(), "extract").unwrap();
        assert!(!stale.exists() && kept.exists());
    }

    #[test]
    fn shards_lock_side_by_side_and_leave_the_others_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let busy = dir.path().join(".train.shard-1-of-2.safetensors.tmp-1-0");
        std::fs::write(&busy, b"rows of shard 1").unwrap();
        let _a = RunLock::acquire_shard(dir.path(), "extract", "extract-shard-0-of-2").unwrap();
        let _b = RunLock::acquire_shard(dir.path(), "extract", "extract-shard-1-of-2").unwrap();
        assert!(
            busy.is_file(),
            "a shard's lock removed another shard's temporary"
        );
        let f = File::open(dir.path().join(".bottleneck.extract-shard-0-of-2.lock")).unwrap();
        assert!(matches!(f.try_lock(), Err(TryLockError::WouldBlock)));
    }
}
