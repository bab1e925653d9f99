//! The "adding a stage" recipe of docs/ARCHITECTURE.md, followed once: a toy stage that owns only
//! its model (one weight), its step and its checkpoint record, and gets the folder, the lock, the
//! start rule, the epoch loop, the outputs and its status from `train::stage_dir` and
//! `train::driver`. It pauses, resumes to the same result as an uninterrupted run, and reports
//! where it stands.

use std::path::Path;

use runfs::Status;
use serde::{Deserialize, Serialize};
use train::driver::{self, EpochEnd, Learner, Pass, PassOutcome, Plan, Progress, Validation};
use train::metrics::{ConfusionMatrix, EpochMetrics, Keep, Metrics};
use train::stage_dir::{Compared, StageDir};

/// The toy's settings (a real stage derives clap on these too).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    target: f64,
    learning_rate: f64,
}

/// The toy's checkpoint record.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    settings: Settings,
    epochs: usize,
    history: Vec<EpochMetrics>,
    weight: f64,
}

struct Toy<'a> {
    weight: f64,
    settings: &'a Settings,
    epochs: usize,
    dir: &'a StageDir,
}

impl Learner for Toy<'_> {
    type State = f64;
    type Error = train::Error;

    fn train_epoch(
        &mut self,
        _: usize,
        progress: &mut dyn FnMut(usize),
    ) -> train::Result<PassOutcome> {
        self.weight -= self.settings.learning_rate * 2.0 * (self.weight - self.settings.target);
        progress(1);
        let loss = (self.weight - self.settings.target).powi(2);
        Ok(PassOutcome::Done(Pass {
            loss_sum: loss,
            correct: usize::from(loss < 0.1),
            samples: 1,
        }))
    }
    fn validate(&mut self) -> train::Result<Validation> {
        let loss = (self.weight - self.settings.target).powi(2);
        Ok(Validation {
            loss,
            accuracy: f64::from(u8::from(loss < 0.1)),
        })
    }
    fn state(&self) -> train::Result<f64> {
        Ok(self.weight)
    }
    fn restore(&mut self, w: &f64) -> train::Result<()> {
        self.weight = *w;
        Ok(())
    }
    fn end_epoch(&mut self, end: &EpochEnd<'_, f64>) -> train::Result<()> {
        let ck = Checkpoint {
            settings: self.settings.clone(),
            epochs: self.epochs,
            history: end.history.to_vec(),
            weight: self.weight,
        };
        runfs::write_atomic(&self.dir.checkpoint, &serde_json::to_vec(&ck).unwrap())?;
        self.dir
            .write_progress(&summary(end.history)?, end.history, "toy")
    }
    fn train_samples(&self) -> usize {
        1
    }
    fn learning_rate(&self) -> f64 {
        self.settings.learning_rate
    }
}

fn summary(history: &[EpochMetrics]) -> train::Result<Metrics> {
    Metrics::summarize(history.to_vec(), Keep::Last, None, 1, 1, "toy".into())
}

fn read(dir: &StageDir) -> Checkpoint {
    serde_json::from_slice(&std::fs::read(&dir.checkpoint).unwrap()).unwrap()
}

/// The toy stage: `run(config, on_event)` of the recipe. Returns the final weight.
fn run(run: &Path, s: &Settings, plan: &Plan, force: bool, resume: bool) -> train::Result<f64> {
    let dir = StageDir::new(run, "toy");
    let _lock = dir.lock()?;
    dir.check_start(force, resume)?;
    let (weight, progress) = if resume {
        let ck = read(&dir);
        let history = ck.history;
        (
            ck.weight,
            Progress {
                history,
                best: None,
            },
        )
    } else {
        (0.0, Progress::default())
    };
    dir.create(force, resume)?;
    let mut toy = Toy {
        weight,
        settings: s,
        epochs: plan.epochs,
        dir: &dir,
    };
    let fitted = driver::fit(&mut toy, plan, progress, &mut |_| {})?;
    if fitted.finished(plan) {
        let confusion = ConfusionMatrix::new(&["a".to_string()], &[0], &[0])?;
        let metrics = summary(&fitted.history)?;
        dir.write_results(&metrics, &metrics.epochs, &confusion, "toy")?;
    }
    Ok(toy.weight)
}

/// The toy stage's `status(run, config)`: only its own comparison is its code.
fn status(run: &Path, s: &Settings, epochs: usize) -> train::Result<Status> {
    let dir = StageDir::new(run, "toy");
    dir.status(epochs, || {
        let there = read(&dir).settings;
        Ok::<_, train::Error>(Compared {
            differences: (there != *s)
                .then(|| format!("toy settings: {there:?} there vs {s:?} asked"))
                .into_iter()
                .collect(),
            outputs_written: dir.confusion.is_file(),
            epochs_asked_then: Some(read(&dir).epochs),
        })
    })
}

#[test]
fn a_toy_stage_pauses_resumes_and_knows_where_it_stands() {
    let s = Settings {
        target: 3.0,
        learning_rate: 0.1,
    };
    let plan = |stop_after| Plan {
        epochs: 4,
        stop_after,
        keep: Keep::Last,
    };
    let whole = tempfile::tempdir().unwrap();
    let uninterrupted = run(whole.path(), &s, &plan(None), false, false).unwrap();
    assert_eq!(status(whole.path(), &s, 4).unwrap(), Status::Done);

    let parts = tempfile::tempdir().unwrap();
    assert_eq!(status(parts.path(), &s, 4).unwrap(), Status::Absent);
    run(parts.path(), &s, &plan(Some(2)), false, false).unwrap();
    assert!(matches!(
        status(parts.path(), &s, 4).unwrap(),
        Status::Partial(_)
    ));
    let e = run(parts.path(), &s, &plan(None), false, false).unwrap_err();
    assert!(
        matches!(
            e,
            train::Error::Exists {
                resumable: true,
                ..
            }
        ),
        "{e}"
    );
    let resumed = run(parts.path(), &s, &plan(None), false, true).unwrap();
    assert_eq!(resumed.to_bits(), uninterrupted.to_bits());
    assert_eq!(status(parts.path(), &s, 4).unwrap(), Status::Done);
    let dir = StageDir::new(parts.path(), "toy");
    for f in [
        &dir.metrics,
        &dir.confusion,
        &dir.curves_png,
        &dir.curves_svg,
    ] {
        assert!(f.is_file(), "{}", f.display());
    }

    let other = Settings {
        learning_rate: 0.2,
        ..s.clone()
    };
    assert!(matches!(
        status(parts.path(), &other, 4).unwrap(),
        Status::Other(_)
    ));
    run(parts.path(), &other, &plan(None), true, false).unwrap();
    assert_eq!(status(parts.path(), &other, 4).unwrap(), Status::Done);
}
