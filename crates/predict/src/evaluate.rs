//! `evaluate`: the run's classifier on a labelled split: accuracy, log loss, per-class
//! precision/recall/F1, the confusion matrix, and the most confidently wrong images (listed and
//! drawn as a contact sheet). Written to `RUN/evaluate/<split>/{evaluation.json, worst.png}` as a
//! whole (a temporary folder renamed into place); an existing result needs `force`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use features::dataset;
use features::runtime::{Engine, SessionOptions};
use features::store::Skipped;
use serde::Serialize;
use train::metrics::ConfusionMatrix;

use crate::classifier::{self, Classifier, ClassifierInfo, LoadOptions};
use crate::error::{Error, Result};
use crate::run::{Prediction, Predictor};
use crate::sheet;

/// Default number of mistakes listed and drawn.
pub const DEFAULT_WORST: usize = 16;

/// What `bottleneck evaluate` is asked to do.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    pub run: PathBuf,
    /// Labelled data: `DIR/<split>/<class>/*` or `DIR/<class>/*`.
    pub data: PathBuf,
    /// Split to evaluate; `None`: `validation`, or the only split there is.
    pub split: Option<String>,
    /// How many of the most confidently wrong images to list and draw.
    pub worst: usize,
    /// Replace an existing `RUN/evaluate/<split>`.
    pub force: bool,
    pub batch: usize,
    pub session: SessionOptions,
    /// The engine knob (`accel::engine::select`).
    pub engine: Engine,
    pub load: LoadOptions,
}

impl EvaluateOptions {
    /// The command line's defaults for `run` and `data`.
    pub fn new(run: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Self {
        EvaluateOptions {
            run: run.into(),
            data: data.into(),
            split: None,
            worst: DEFAULT_WORST,
            force: false,
            batch: 16,
            session: SessionOptions::default(),
            engine: Engine::Auto,
            load: LoadOptions::default(),
        }
    }
}

/// Progress reports while evaluating.
#[derive(Debug)]
pub enum Event<'a> {
    /// The classifier is loaded; `total` images of `split` will run.
    Ready {
        classifier: &'a Classifier,
        device: &'a str,
        /// Why it runs elsewhere than asked (`--device auto` on the CPU), if it does.
        note: Option<&'a str>,
        split: &'a str,
        total: usize,
    },
    /// `done` of `total` images are processed.
    Progress { done: usize, total: usize },
    /// An image could not be read; it is left out of the numbers.
    Skipped { file: &'a str, reason: &'a str },
}

/// Per-class numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    pub class: String,
    /// Images of this class.
    pub support: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// A wrongly classified image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mistake {
    /// Path relative to the data folder.
    pub file: String,
    pub path: PathBuf,
    pub truth: String,
    pub predicted: String,
    /// Probability of the predicted (wrong) class.
    pub probability: f32,
    /// Probability of the true class.
    pub true_probability: f32,
}

/// The numbers of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    pub images: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Mean cross-entropy of the true class (probabilities clipped at 1e-7).
    pub log_loss: f64,
    /// Expected calibration error of the top-class probabilities (15 bins).
    pub ece: f64,
    /// Mean of the per-class F1 scores.
    pub macro_f1: f64,
    pub per_class: Vec<ClassReport>,
    pub confusion: ConfusionMatrix,
    /// The most confidently wrong images, most confident first.
    pub worst: Vec<Mistake>,
}

/// Where an evaluation was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvaluationPaths {
    pub dir: PathBuf,
    pub json: PathBuf,
    pub sheet: PathBuf,
}

impl EvaluationPaths {
    /// `RUN/evaluate/<split>/…`
    pub fn new(run: &Path, split: &str) -> Self {
        let dir = run.join("evaluate").join(split);
        EvaluationPaths {
            json: dir.join("evaluation.json"),
            sheet: dir.join("worst.png"),
            dir,
        }
    }
}

/// The result of [`evaluate`] (also the content of `evaluation.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub classifier: ClassifierInfo,
    pub device: String,
    pub data: PathBuf,
    pub split: String,
    #[serde(flatten)]
    pub scores: Scores,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
    pub images_per_second: f64,
    pub paths: EvaluationPaths,
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Scores predictions of labelled images (`Prediction::label` is the truth).
pub fn score(classes: &[String], preds: &[Prediction], worst: usize) -> Result<Scores> {
    if preds.is_empty() {
        return Err(Error::Input(
            "no image could be classified, so there is nothing to score".into(),
        ));
    }
    let truth: Vec<u32> = preds.iter().map(|p| p.label as u32).collect();
    let predicted: Vec<u32> = preds.iter().map(|p| p.index as u32).collect();
    let confusion = ConfusionMatrix::new(classes, &truth, &predicted)?;
    let per_class: Vec<ClassReport> = confusion
        .per_class
        .iter()
        .map(|c| ClassReport {
            class: c.class.clone(),
            support: c.support,
            precision: c.precision,
            recall: c.recall,
            f1: f1(c.precision, c.recall),
        })
        .collect();
    let log_loss = preds
        .iter()
        .map(|p| {
            let q = p.probabilities.get(p.label).copied().unwrap_or(0.0) as f64;
            -q.clamp(1e-7, 1.0).ln()
        })
        .sum::<f64>()
        / preds.len() as f64;
    let confidence: Vec<f64> = preds.iter().map(|p| p.probability as f64).collect();
    let right: Vec<bool> = preds.iter().map(|p| p.index == p.label).collect();
    let ece = train::metrics::calibration_error(&confidence, &right);
    let mut wrong: Vec<&Prediction> = preds.iter().filter(|p| p.index != p.label).collect();
    wrong.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then_with(|| a.file.cmp(&b.file))
    });
    let correct = preds.len() - wrong.len();
    Ok(Scores {
        images: preds.len(),
        correct,
        accuracy: confusion.accuracy,
        log_loss,
        ece,
        macro_f1: per_class.iter().map(|c| c.f1).sum::<f64>() / per_class.len().max(1) as f64,
        per_class,
        confusion,
        worst: wrong
            .into_iter()
            .take(worst)
            .map(|p| Mistake {
                file: p.file.clone(),
                path: p.path.clone(),
                truth: classes[p.label].clone(),
                predicted: p.class.clone(),
                probability: p.probability,
                true_probability: p.probabilities.get(p.label).copied().unwrap_or(0.0),
            })
            .collect(),
    })
}

fn pick_split<'a>(data: &'a dataset::Dataset, wanted: Option<&str>) -> Result<&'a dataset::Split> {
    let names = || {
        data.splits
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(w) => data.split(w).ok_or_else(|| {
            Error::Input(format!(
                "{} has no split '{w}' (found: {}): pass --split with one of them",
                data.root.display(),
                names()
            ))
        }),
        None => data
            .split("validation")
            .or_else(|| (data.splits.len() == 1).then(|| &data.splits[0]))
            .ok_or_else(|| {
                Error::Input(format!(
                    "{} has no 'validation' split (found: {}): pass --split with one of them",
                    data.root.display(),
                    names()
                ))
            }),
    }
}

/// Evaluates the run's classifier on a labelled split and writes `evaluation.json` and `worst.png`.
pub fn evaluate(opts: &EvaluateOptions, on_event: &mut dyn FnMut(Event)) -> Result<Evaluation> {
    if opts.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let data = dataset::scan(&opts.data)?;
    let split = pick_split(&data, opts.split.as_deref())?;
    let paths = EvaluationPaths::new(&opts.run, &split.name);
    let _lock = runfs::RunLock::acquire(&opts.run, "evaluate")?;
    if !opts.force && runfs::occupied(&paths.dir)? {
        return Err(Error::Exists { path: paths.dir });
    }
    let classifier = classifier::load(&opts.run, &opts.load)?;
    if classifier.classes != data.classes {
        return Err(Error::Mismatch(format!(
            "the classifier knows classes {:?} but {} has {:?}: evaluate on data with the same class folders",
            classifier.classes,
            opts.data.display(),
            data.classes
        )));
    }
    let mut predictor = Predictor::new(classifier, &opts.session, opts.engine)?;
    let device = predictor.device();
    let total = split.items.len();
    on_event(Event::Ready {
        classifier: &predictor.classifier,
        device: &device,
        note: predictor.note.as_deref(),
        split: &split.name,
        total,
    });
    let start = Instant::now();
    let mut preds: Vec<Prediction> = Vec::with_capacity(total);
    let mut done = 0;
    let k = predictor.classifier.classes.len();
    let stats = predictor.run(&split.items, opts.batch, k, &mut |batch, skipped| {
        for s in skipped {
            on_event(Event::Skipped {
                file: &s.file,
                reason: &s.reason,
            });
        }
        done += batch.len() + skipped.len();
        preds.extend_from_slice(batch);
        on_event(Event::Progress { done, total });
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let classes = predictor.classifier.classes.clone();
    let scores = score(&classes, &preds, opts.worst)?;
    let eval = Evaluation {
        classifier: predictor.classifier.info(),
        device,
        data: opts.data.clone(),
        split: split.name.clone(),
        scores,
        skipped: stats.skipped,
        seconds,
        images_per_second: stats.predicted as f64 / seconds.max(1e-9),
        paths,
    };
    write(&eval)?;
    Ok(eval)
}

/// Writes `evaluation.json` and `worst.png` into a temporary sibling folder, then swaps it in.
fn write(eval: &Evaluation) -> Result<()> {
    let dir = &eval.paths.dir;
    let parent = dir
        .parent()
        .ok_or_else(|| Error::Invalid(format!("{} has no parent folder", dir.display())))?;
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let result = (|| -> Result<()> {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut text = serde_json::to_string_pretty(eval)
            .map_err(|e| Error::Invalid(format!("cannot encode the evaluation: {e}")))?;
        text.push('\n');
        let json = tmp.join("evaluation.json");
        std::fs::write(&json, text).map_err(|e| Error::io(&json, e))?;
        let png = sheet::render_mistakes(&eval.scores.worst, &eval.split)?;
        let sheet_path = tmp.join("worst.png");
        sheet::save_png(&png, &sheet_path)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
