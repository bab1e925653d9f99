//! A training stage's folder `RUN/<stage>/`, the same for every stage that trains for epochs with
//! a checkpoint (`scratch`, `finetune`): its common files, its one writer at a time, the start rule
//! (never clobber: `--force` deletes, `--resume` needs the checkpoint), where it stands for a request
//! (nothing there, begun, finished, or made from other inputs: the stage brings only its own
//! comparison), and its final outputs (metrics, confusion matrix, learning curves).

use std::path::{Path, PathBuf};

use runfs::{RunLock, Status};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::{write_json, ConfusionMatrix, EpochMetrics};

/// The files every epoch-trained stage keeps under `RUN/<stage>/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageDir {
    pub dir: PathBuf,
    pub checkpoint: PathBuf,
    pub metrics: PathBuf,
    pub confusion: PathBuf,
    pub curves_png: PathBuf,
    pub curves_svg: PathBuf,
}

/// What a stage's own comparison of its checkpoint with a request found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compared {
    /// `what: there vs asked`, one per difference (empty: the same inputs and settings).
    pub differences: Vec<String>,
    /// The stage's final files besides the metrics are all there.
    pub outputs_written: bool,
    /// The epochs the checkpoint's run was asked for, where the stage's outputs are written
    /// before the end (a run paused by `--stop-after` was asked for more than it has done).
    pub epochs_asked_then: Option<usize>,
}

impl Compared {
    /// A comparison that found `why` (e.g. an unreadable checkpoint) and nothing else.
    pub fn differing(why: String) -> Self {
        Compared {
            differences: vec![why],
            ..Compared::default()
        }
    }
}

impl StageDir {
    /// The files of stage `name` in run folder `run`.
    pub fn new(run: &Path, name: &str) -> Self {
        let dir = run.join(name);
        StageDir {
            checkpoint: dir.join("checkpoint.safetensors"),
            metrics: dir.join("metrics.json"),
            confusion: dir.join("confusion.json"),
            curves_png: dir.join("curves.png"),
            curves_svg: dir.join("curves.svg"),
            dir,
        }
    }

    /// The stage's name: its folder's.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    /// The run folder's lock for this stage (one writer at a time).
    pub fn lock(&self) -> Result<RunLock> {
        let run = self.dir.parent().unwrap_or(Path::new("."));
        Ok(RunLock::acquire(run, &self.name())?)
    }

    /// Refuses to start where it would clobber results: `resume` needs the checkpoint, and a
    /// folder with anything in it needs `resume` or `force`. Nothing is changed.
    pub fn check_start(&self, force: bool, resume: bool) -> Result<()> {
        if resume && !self.checkpoint.is_file() {
            return Err(Error::NoCheckpoint {
                path: self.checkpoint.clone(),
            });
        }
        if !resume && !force && runfs::occupied(&self.dir)? {
            return Err(Error::Exists {
                path: self.dir.clone(),
                resumable: self.checkpoint.is_file(),
            });
        }
        Ok(())
    }

    /// Makes the folder ready to write after [`StageDir::check_start`]: with `force` (and not
    /// `resume`) whatever was there is deleted first.
    pub fn create(&self, force: bool, resume: bool) -> Result<()> {
        let io = |e| runfs::Error::io(&self.dir, e);
        if force && !resume && self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(io)?;
        }
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        Ok(())
    }

    /// Where the stage stands for a request of `epochs`: `compare` is asked only when there is a
    /// checkpoint (one it cannot read is a difference too).
    pub fn status<E: From<Error>>(
        &self,
        epochs: usize,
        compare: impl FnOnce() -> Result<Compared, E>,
    ) -> Result<Status, E> {
        if !runfs::occupied(&self.dir).map_err(|e| E::from(e.into()))? {
            return Ok(Status::Absent);
        }
        if !self.checkpoint.is_file() {
            return Ok(Status::Partial(format!(
                "{} has no checkpoint (interrupted in the first epoch)",
                self.dir.display()
            )));
        }
        let found = compare()?;
        let mut d = found.differences;
        let metrics = self
            .metrics
            .is_file()
            .then(|| crate::metrics::read_json(&self.metrics))
            .transpose()
            .map_err(E::from)?;
        let done = metrics.as_ref().map_or(0, |m| m.epochs.len());
        if done > epochs {
            d.push(format!(
                "{} epochs: {done} done there vs {epochs} asked",
                self.name()
            ));
        }
        if !d.is_empty() {
            return Ok(Status::Other(d));
        }
        let stopped = metrics.as_ref().is_some_and(|m| m.stopped_early.is_some());
        let same_plan = found.epochs_asked_then.is_none_or(|e| e == epochs);
        Ok(
            if found.outputs_written && (done == epochs || stopped) && (same_plan || stopped) {
                Status::Done
            } else {
                Status::Partial(format!(
                    "{done} of {epochs} epochs done: resuming from the checkpoint"
                ))
            },
        )
    }

    /// Writes `metrics.json` and the learning curves of the epochs so far (after every epoch).
    pub fn write_progress<M: Serialize>(
        &self,
        metrics: &M,
        epochs: &[EpochMetrics],
        title: &str,
    ) -> Result<()> {
        write_json(&self.metrics, metrics)?;
        crate::plot::write_curves(epochs, title, &self.curves_png, &self.curves_svg)
    }

    /// Writes the final `metrics.json` (`metrics`: the stage's record, its `epochs` plotted), the
    /// confusion matrix and the learning curves titled `title`.
    pub fn write_results<M: Serialize>(
        &self,
        metrics: &M,
        epochs: &[EpochMetrics],
        confusion: &ConfusionMatrix,
        title: &str,
    ) -> Result<()> {
        write_json(&self.confusion, confusion)?;
        self.write_progress(metrics, epochs, title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_refuses_to_clobber_and_resume_needs_a_checkpoint() {
        let run = tempfile::tempdir().unwrap();
        let s = StageDir::new(run.path(), "scratch");
        assert_eq!(s.name(), "scratch");
        s.check_start(false, false).unwrap();
        let e = s.check_start(false, true).unwrap_err().to_string();
        assert!(e.contains("nothing to resume"), "{e}");
        s.create(false, false).unwrap();
        std::fs::write(s.dir.join("metrics.json"), b"{}").unwrap();
        let e = s.check_start(false, false).unwrap_err().to_string();
        assert!(e.contains("--force") && !e.contains("--resume"), "{e}");
        std::fs::write(&s.checkpoint, b"x").unwrap();
        let e = s.check_start(false, false).unwrap_err().to_string();
        assert!(e.contains("--force") && e.contains("--resume"), "{e}");
        s.check_start(false, true).unwrap();
        s.check_start(true, false).unwrap();
        s.create(false, true).unwrap();
        assert!(s.checkpoint.is_file(), "resume keeps the folder");
        s.create(true, false).unwrap();
        assert!(
            !s.checkpoint.exists() && s.dir.is_dir(),
            "force starts over"
        );
    }

    #[test]
    fn status_follows_the_checkpoint_the_comparison_and_the_epochs() {
        let run = tempfile::tempdir().unwrap();
        let s = StageDir::new(run.path(), "finetune");
        let same = || {
            Ok::<_, Error>(Compared {
                differences: vec![],
                outputs_written: true,
                epochs_asked_then: None,
            })
        };
        assert_eq!(s.status(3, same).unwrap(), Status::Absent);
        s.create(false, false).unwrap();
        std::fs::write(s.dir.join("block.safetensors"), b"x").unwrap();
        assert!(matches!(s.status(3, same).unwrap(), Status::Partial(_)));
        std::fs::write(&s.checkpoint, b"x").unwrap();
        let failed = s.status(3, || Err(Error::Invalid("no data".into())));
        assert!(failed.is_err_and(|e| e.to_string() == "no data"));
        let epochs = (1..=2)
            .map(|epoch| EpochMetrics {
                epoch,
                loss: 0.5,
                accuracy: 0.5,
                val_loss: 0.5,
                val_accuracy: 0.5,
                seconds: 1.0,
            })
            .collect();
        let m = crate::metrics::Metrics::summarize(
            epochs,
            crate::metrics::Keep::Last,
            None,
            4,
            2,
            "validation".into(),
        )
        .unwrap();
        write_json(&s.metrics, &m).unwrap();
        assert!(matches!(s.status(3, same).unwrap(), Status::Partial(_)));
        assert_eq!(s.status(2, same).unwrap(), Status::Done);
        let Status::Other(d) = s.status(1, same).unwrap() else {
            panic!("more epochs done than asked")
        };
        assert_eq!(
            d,
            vec!["finetune epochs: 2 done there vs 1 asked".to_string()]
        );
        let other = || {
            Ok::<_, Error>(Compared {
                differences: vec!["seed: 1 vs 2".into()],
                ..Compared::default()
            })
        };
        assert!(matches!(s.status(2, other).unwrap(), Status::Other(_)));
        let paused = || {
            Ok::<_, Error>(Compared {
                outputs_written: true,
                epochs_asked_then: Some(5),
                ..Compared::default()
            })
        };
        assert!(matches!(s.status(2, paused).unwrap(), Status::Partial(_)));
    }
}
