//! `bottleneck audit`: the photos that hurt a small data set, found from a run's cached features
//! and the probe's out-of-fold probabilities on train (no validation photo is used for a choice):
//! likely mislabeled photos ([`labels`], confident learning), near-duplicates within a split and
//! leaks across splits ([`dupes`]), photos far from every class ([`outliers`]), the class pairs
//! most confused; written to `RUN/audit/` ([`output`], [`sheets`]). It never moves or changes a
//! photo: `extract`/`fit --exclude audit.csv` retrain without the ones a user agrees with.

pub(crate) mod dupes;
pub(crate) mod error;
pub(crate) mod fingerprint;
pub(crate) mod labels;
pub(crate) mod outliers;
pub(crate) mod output;
pub(crate) mod rows;
pub(crate) mod sheets;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use train::stage::StageEvent;

pub use error::{Error, Result};
pub use output::{load, AuditPaths};

use dupes::DuplicatePair;
use labels::{ConfusedPair, Mislabeled};
use outliers::Outlier;
use rows::{Group, Rows};

/// Version of `audit.json`.
pub const FORMAT_VERSION: u32 = 1;

/// Embedding cosine from which two photos count as near-duplicates (calibrated on made copies:
/// re-encoded, resized and cropped photos; BENCHMARKS.md, "Finding the photos that hurt"). With
/// the data folder, pairs from [`fingerprint::CANDIDATE_COSINE`] count too when their pixels match.
pub const DUPLICATE_COSINE: f32 = 0.90;

/// Distance to the nearest training photos, in robust standard deviations above the median
/// training photo's, from which a photo is listed as out of place.
pub const OUTLIER_SCORE: f32 = 3.0;

/// What `bottleneck audit` asks for.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub run: PathBuf,
    /// The data folder, for the contact sheets and the pixel check of near-duplicates (neither
    /// without it).
    pub data: Option<PathBuf>,
    pub duplicate_cosine: f32,
    pub outlier_score: f32,
    /// Replace an `audit.csv` the user edited.
    pub force: bool,
    /// When the head has no out-of-fold predictions (the 2016 recipe), fit the calibrated probe
    /// for them (`RUN/audit/oof.safetensors`; seconds).
    pub fit_probe: bool,
}

impl AuditConfig {
    /// The defaults for `run`.
    pub fn new(run: impl Into<PathBuf>) -> Self {
        AuditConfig {
            run: run.into(),
            data: None,
            duplicate_cosine: DUPLICATE_COSINE,
            outlier_score: OUTLIER_SCORE,
            force: false,
            fit_probe: false,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.duplicate_cosine > 0.0 && self.duplicate_cosine <= 1.0) {
            return Err(Error::Invalid(format!(
                "--duplicate-cosine {} must be in (0, 1]",
                self.duplicate_cosine
            )));
        }
        if !self.outlier_score.is_finite() {
            return Err(Error::Invalid("--outlier-score must be a number".into()));
        }
        Ok(())
    }
}

/// Everything an audit found (`RUN/audit/audit.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Audit {
    pub format_version: u32,
    pub classes: Vec<String>,
    /// Training photos, photos of the other groups (validation, held out) and their names.
    pub train_rows: usize,
    pub other_rows: usize,
    pub other_groups: Vec<String>,
    /// Training photos with out-of-fold probabilities; `false` when the probe scored one fold only.
    pub scored_rows: usize,
    pub all_rows_scored: bool,
    /// Confident learning's per-class thresholds (mean own-class probability).
    pub thresholds: Vec<Option<f32>>,
    pub duplicate_cosine: f32,
    pub outlier_score: f32,
    pub mislabeled: Vec<Mislabeled>,
    pub duplicates: Vec<DuplicatePair>,
    /// More pairs passed the threshold than were kept.
    pub duplicates_truncated: bool,
    pub outliers: Vec<Outlier>,
    pub confused: Vec<ConfusedPair>,
    /// Contact sheets, relative to the run folder.
    pub sheets: Vec<String>,
    pub seconds: f64,
    /// Digest of the `audit.csv` written with this file.
    pub csv_sha256: String,
}

impl Audit {
    /// Leaks: near-duplicates across groups.
    pub fn leaks(&self) -> usize {
        self.duplicates.iter().filter(|d| d.leak).count()
    }
}

/// Runs the audit of `cfg.run` and writes `RUN/audit/`.
pub fn run(cfg: &AuditConfig, on_event: &mut dyn FnMut(StageEvent<'_>)) -> Result<Audit> {
    cfg.validate()?;
    let started = Instant::now();
    let _lock = runfs::RunLock::acquire(&cfg.run, "audit")?;
    let paths = AuditPaths::new(&cfg.run);
    output::check_csv(&paths, cfg.force)?;
    let oof = out_of_fold(cfg, &paths, on_event)?;
    let rows = Rows::open(&cfg.run, &oof)?;
    let mut audit = find(&rows, cfg, on_event);
    audit.sheets = draw(cfg, &paths, &audit, on_event)?;
    audit.seconds = started.elapsed().as_secs_f64();
    output::write(&paths, &mut audit)?;
    Ok(audit)
}

/// The out-of-fold file to read: the head's, else (with `fit_probe`) one fitted now.
fn out_of_fold(
    cfg: &AuditConfig,
    paths: &AuditPaths,
    on_event: &mut dyn FnMut(StageEvent<'_>),
) -> Result<PathBuf> {
    let run = &cfg.run;
    let head = head::oof::path(run);
    if head.is_file() {
        return Ok(head);
    }
    if !head::pipeline::HeadPaths::new(run).weights.is_file() {
        return Err(Error::Run(format!(
            "{} has no trained head; run `bottleneck fit --data DIR --run {}` first",
            run.display(),
            run.display()
        )));
    }
    if !cfg.fit_probe {
        return Err(Error::Run(format!(
            "{} is missing: the audit needs out-of-fold predictions on train, which the calibrated \
             linear probe writes (the 2016 tutorial head has none, nor do heads trained before audits \
             existed). Pass --fit-probe to fit the probe for them now (seconds; the head is not \
             changed), or run `bottleneck fit --data DIR --run {}`",
            head.display(),
            run.display()
        )));
    }
    on_event(StageEvent::Info(
        "audit: the head has no out-of-fold predictions; fitting the calibrated probe for them"
            .into(),
    ));
    head::pipeline::out_of_fold(run, &paths.oof, on_event)?;
    Ok(paths.oof.clone())
}

/// The findings of every kind.
fn find(rows: &Rows, cfg: &AuditConfig, on_event: &mut dyn FnMut(StageEvent<'_>)) -> Audit {
    let train_rows = rows.group.iter().filter(|g| **g == Group::Train).count();
    let scored_rows = rows.oof_row.iter().filter(|o| o.is_some()).count();
    on_event(StageEvent::Info(format!(
        "audit: {train_rows} training photos ({scored_rows} with out-of-fold probabilities), \
         {} in {}, {} embedding dimensions",
        rows.len() - train_rows,
        if rows.other_names.is_empty() {
            "no other split".to_string()
        } else {
            rows.other_names.join(", ")
        },
        rows.dim
    )));
    let t = labels::thresholds(rows);
    let mislabeled = labels::mislabeled(rows, &t);
    let confused = labels::confused_pairs(rows);
    let found = dupes::find(rows, cfg.duplicate_cosine, cfg.data.as_deref());
    if found.checked > 0 {
        on_event(StageEvent::Info(format!(
            "audit: {} pairs with a cosine from {} to {} checked by their pixels, {} the same photo",
            found.checked,
            fingerprint::CANDIDATE_COSINE,
            cfg.duplicate_cosine,
            found.confirmed
        )));
    }
    let outliers = outliers::find(rows, &dupes::nearest(rows), cfg.outlier_score);
    Audit {
        format_version: FORMAT_VERSION,
        classes: rows.classes.clone(),
        train_rows,
        other_rows: rows.len() - train_rows,
        other_groups: rows.other_names.clone(),
        scored_rows,
        all_rows_scored: rows.oof.meta.all_rows,
        thresholds: t.iter().map(|v| v.is_finite().then_some(*v)).collect(),
        duplicate_cosine: cfg.duplicate_cosine,
        outlier_score: cfg.outlier_score,
        mislabeled,
        duplicates: found.pairs,
        duplicates_truncated: found.truncated,
        outliers,
        confused,
        sheets: Vec::new(),
        seconds: 0.0,
        csv_sha256: String::new(),
    }
}

/// Draws the contact sheets when the data folder is known (removing older ones otherwise, which
/// would show other findings); returns their paths relative to the run.
fn draw(
    cfg: &AuditConfig,
    paths: &AuditPaths,
    a: &Audit,
    on_event: &mut dyn FnMut(StageEvent<'_>),
) -> Result<Vec<String>> {
    let all = [
        &paths.mislabeled_png,
        &paths.duplicates_png,
        &paths.outliers_png,
    ];
    let Some(data) = &cfg.data else {
        for p in all {
            if p.is_file() {
                std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
            }
        }
        on_event(StageEvent::Info(
            "audit: no contact sheets (pass --data DIR to draw the photos)".into(),
        ));
        return Ok(Vec::new());
    };
    std::fs::create_dir_all(&paths.dir).map_err(|e| Error::io(&paths.dir, e))?;
    let mut drawn = Vec::new();
    let mut keep = |found: bool, p: &Path| -> Result<()> {
        if found {
            drawn.push(format!("audit/{}", file_name(p)));
        } else if p.is_file() {
            std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
        }
        Ok(())
    };
    if !a.mislabeled.is_empty() {
        sheets::mislabeled(data, &a.mislabeled, &paths.mislabeled_png)?;
    }
    keep(!a.mislabeled.is_empty(), &paths.mislabeled_png)?;
    if !a.duplicates.is_empty() {
        sheets::duplicates(data, &a.duplicates, &paths.duplicates_png)?;
    }
    keep(!a.duplicates.is_empty(), &paths.duplicates_png)?;
    if !a.outliers.is_empty() {
        sheets::outliers(data, &a.outliers, &paths.outliers_png)?;
    }
    keep(!a.outliers.is_empty(), &paths.outliers_png)?;
    Ok(drawn)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
