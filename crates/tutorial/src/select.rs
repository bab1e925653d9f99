//! `fit`'s choice of backbone by measurement: each candidate's features are extracted into
//! `RUN/candidates/<name>/` (resumable, reused while up to date), the calibrated probe is fitted there
//! with k-fold cross-validation on the training photos only, and the candidate with the lowest
//! cross-validated log loss wins. A combination of candidates measured before it (a manifest with
//! `parts`) is first probed on their features side by side and extracted only when that beats them.
//! Validation numbers are computed and shown beside, never used.
//! The choice and every candidate's numbers go to `RUN/candidates/selection.json` for the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use features::extract::ExtractConfig;
use features::manifest;
use features::preprocess::Resize;
use head::pipeline::{train_head, TrainHeadOptions};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::config::TutorialConfig;
use crate::error::{Error, Result};
use crate::stages::Event;

/// The folder of the candidates' runs inside the run folder.
pub const CANDIDATES_DIR: &str = "candidates";
/// The record of the last choice, inside [`CANDIDATES_DIR`].
pub const SELECTION_FILE: &str = "selection.json";

/// One candidate backbone and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub model: String,
    pub model_sha256: String,
    pub image_size: u32,
    pub resize: String,
    /// Out-of-fold log loss (class-weighted) and accuracy of the probe at its chosen C, on the
    /// training photos: what the choice is made on.
    pub cv_log_loss: f64,
    pub cv_accuracy: f64,
    pub folds: usize,
    /// On the validation photos (reported, not used for the choice).
    pub val_accuracy: f64,
    pub val_log_loss: f64,
    pub val_ece: Option<f64>,
    /// Feature extraction speed on this machine (training split), and the candidate's total
    /// seconds (extraction and probe) in this call.
    pub images_per_second: f64,
    pub seconds: f64,
    /// A combination measured on its parts' features side by side, without running it: it did not
    /// beat the best candidate before it there, so it was not extracted (and cannot be chosen).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_parts: bool,
}

/// The choice among the candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub candidates: Vec<Candidate>,
    /// Index of the winner in `candidates`.
    pub chosen: usize,
    /// Why it won, in words.
    pub why: String,
}

impl Selection {
    /// The winning candidate.
    pub fn winner(&self) -> &Candidate {
        &self.candidates[self.chosen]
    }
}

/// Where the selection of `run` is recorded.
pub fn path(run: &Path) -> PathBuf {
    run.join(CANDIDATES_DIR).join(SELECTION_FILE)
}

/// The recorded selection of `run`, if any (an unreadable record counts as none).
pub fn load(run: &Path) -> Option<Selection> {
    let text = std::fs::read_to_string(path(run)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Measures every candidate of `cfg` and returns the choice (also written to
/// [`SELECTION_FILE`]). Needs at least two candidates.
pub fn select(cfg: &TutorialConfig, on_event: &mut dyn FnMut(Event<'_>)) -> Result<Selection> {
    let mut measured: Vec<Candidate> = Vec::new();
    for (i, name) in cfg.candidates.iter().enumerate() {
        on_event(Event::Info(format!(
            "backbone candidate {}/{}: {name}",
            i + 1,
            cfg.candidates.len()
        )));
        let candidate = match measured_combination(cfg, name, &measured) {
            Some(m) => measure_combination(cfg, &m, &measured, on_event)?,
            None => measure(cfg, name, on_event)?,
        };
        measured.push(candidate);
    }
    let chosen = best(&measured).ok_or_else(|| {
        Error::Invalid("no backbone candidate gave a finite cross-validated log loss".into())
    })?;
    let why = reason(&measured, chosen);
    let selection = Selection {
        candidates: measured,
        chosen,
        why,
    };
    let mut text = serde_json::to_string_pretty(&selection)
        .map_err(|e| Error::Invalid(format!("cannot encode the selection: {e}")))?;
    text.push('\n');
    runfs::write_atomic(&path(&cfg.run), text.as_bytes())?;
    on_event(Event::Info(selection.why.clone()));
    Ok(selection)
}

/// The run folder of candidate `name`.
fn candidate_run(cfg: &TutorialConfig, name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cfg.run.join(CANDIDATES_DIR).join(safe)
}

/// The manifest of `name` when it is a combination whose parts are all among the candidates
/// measured before it.
fn measured_combination(
    cfg: &TutorialConfig,
    name: &str,
    measured: &[Candidate],
) -> Option<manifest::Manifest> {
    let m = manifest::find(name, &cfg.hub)?;
    let all_there = m
        .parts
        .iter()
        .all(|p| measured.iter().any(|c| &c.model == p && !c.from_parts));
    (!m.parts.is_empty() && all_there).then_some(m)
}

/// A combination whose parts were measured: the probe on their features side by side first (no
/// extraction); only if that beats every candidate so far is the combination extracted and measured.
fn measure_combination(
    cfg: &TutorialConfig,
    m: &manifest::Manifest,
    measured: &[Candidate],
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Candidate> {
    let started = Instant::now();
    let name = m.name.as_str();
    let run = candidate_run(cfg, &format!("{name}.parts"));
    let part_runs: Vec<PathBuf> = m.parts.iter().map(|p| candidate_run(cfg, p)).collect();
    let part_refs: Vec<&Path> = part_runs.iter().map(PathBuf::as_path).collect();
    let (size, resize) = cfg.input(Some(m));
    let provenance = features::provenance::Provenance {
        model: format!("{name} (its parts' features side by side)"),
        model_sha256: String::new(),
        output_tensor: m.features.clone(),
        preprocess: m.preprocess.name().into(),
        image_size: size,
        resize: resize.name().into(),
        precision: cfg.precision.name().into(),
        engine: None,
    };
    features::side_by_side::join(&part_refs, &run, &provenance)?;
    let c = probe(cfg, &run, name, (size, resize), started, on_event)?;
    let best_so_far = measured
        .iter()
        .map(|c| c.cv_log_loss)
        .fold(f64::INFINITY, f64::min);
    if c.cv_log_loss < best_so_far {
        on_event(Event::Info(format!(
            "{name}: cross-validated log loss {:.4} on its parts' features side by side (best so far {best_so_far:.4}); extracting it",
            c.cv_log_loss
        )));
        return measure(cfg, name, on_event);
    }
    Ok(Candidate {
        from_parts: true,
        ..c
    })
}

/// Extracts `name`'s features and fits the probe on them.
fn measure(
    cfg: &TutorialConfig,
    name: &str,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Candidate> {
    let started = Instant::now();
    let run = candidate_run(cfg, name);
    let (size, resize) = cfg.input(manifest::find(name, &cfg.hub).as_ref());
    let ecfg = ExtractConfig {
        data: cfg.data.clone(),
        model: name.to_string(),
        run: run.clone(),
        preprocess: cfg.preprocess,
        size,
        batch: 16,
        device: cfg.device,
        engine: cfg.engine,
        threads: cfg.threads,
        resize,
        strict: false,
        hub: cfg.hub.clone(),
        precision: cfg.precision,
        shard: None,
        exclude: cfg.exclude.clone(),
    };
    let summary = accel::engine::extract(&ecfg, &mut |ev| on_event(Event::Extract(ev)))?;
    let images_per_second = summary
        .splits
        .iter()
        .find(|s| s.split == "train" || s.split == "all")
        .or(summary.splits.first())
        .map_or(0.0, |s| s.images_per_second);
    let c = probe(cfg, &run, name, (size, resize), started, on_event)?;
    Ok(Candidate {
        images_per_second,
        ..c
    })
}

/// Fits the calibrated probe on the features in `run` (computed at `input`) and reads its
/// cross-validated and validation numbers; the seconds count from `started` (the extraction
/// speed is the caller's to fill).
fn probe(
    cfg: &TutorialConfig,
    run: &Path,
    name: &str,
    input: (u32, Resize),
    started: Instant,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Candidate> {
    let opts = TrainHeadOptions {
        run: run.to_path_buf(),
        config: check::head_config(cfg),
        val_split: None,
        force: true,
    };
    let report = train_head(&opts, &mut |p| on_event(Event::Head(p)))?;
    let probe = report.meta.probe.as_ref().ok_or_else(|| {
        Error::Invalid(format!(
            "candidate {name}: the head is not the probe, so it has no cross-validated log loss"
        ))
    })?;
    let at_c = probe
        .path
        .iter()
        .find(|p| p.c == probe.c)
        .or(probe.path.first())
        .ok_or_else(|| Error::Invalid(format!("candidate {name}: the probe tried no C")))?;
    Ok(Candidate {
        model: name.to_string(),
        model_sha256: report.meta.features.model_sha256.clone(),
        image_size: input.0,
        resize: input.1.name().into(),
        cv_log_loss: at_c.log_loss,
        cv_accuracy: at_c.accuracy,
        folds: probe.folds,
        val_accuracy: report.metrics.kept_val_accuracy,
        val_log_loss: report.metrics.kept_val_loss,
        val_ece: report.metrics.kept_val_ece,
        images_per_second: 0.0,
        seconds: started.elapsed().as_secs_f64(),
        from_parts: false,
    })
}

/// The candidate with the lowest cross-validated log loss (the first on a tie).
fn best(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.cv_log_loss.is_finite() && !c.from_parts)
        .min_by(|a, b| a.1.cv_log_loss.total_cmp(&b.1.cv_log_loss))
        .map(|(i, _)| i)
}

/// Why `chosen` won, in words.
fn reason(candidates: &[Candidate], chosen: usize) -> String {
    let w = &candidates[chosen];
    let others: Vec<String> = candidates
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != chosen)
        .map(|(_, c)| {
            let how = if c.from_parts {
                " on its parts' features side by side, so not extracted"
            } else {
                ""
            };
            format!("{} {:.4}{how}", c.model, c.cv_log_loss)
        })
        .collect();
    format!(
        "chose {} for the lowest cross-validated log loss on the training photos ({:.4}, {}-fold; {}); \
         validation was not used for the choice",
        w.model,
        w.cv_log_loss,
        w.folds,
        if others.is_empty() {
            "no other candidate".to_string()
        } else {
            others.join(", ")
        }
    )
}

/// Gives `RUN/features` the winner's feature files where it has none yet (they are the same bytes
/// the extract stage would write), so the chosen backbone is not run twice.
pub fn adopt_features(cfg: &TutorialConfig, winner: &str) -> Result<()> {
    let from = candidate_run(cfg, winner).join("features");
    let to = cfg.run.join("features");
    let Ok(entries) = std::fs::read_dir(&from) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let src = e.path();
        let dst = to.join(&name);
        let is_features = src.extension().is_some_and(|x| x == "safetensors");
        if is_features && src.is_file() && !dst.exists() {
            std::fs::create_dir_all(&to).map_err(|err| Error::io(&to, err))?;
            runfs::copy_atomic(&src, &dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(model: &str, cv: f64, val: f64) -> Candidate {
        Candidate {
            model: model.into(),
            model_sha256: String::new(),
            image_size: 224,
            resize: "bilinear-crop".into(),
            cv_log_loss: cv,
            cv_accuracy: 0.9,
            folds: 5,
            val_accuracy: 0.9,
            val_log_loss: val,
            val_ece: None,
            images_per_second: 1.0,
            seconds: 1.0,
            from_parts: false,
        }
    }

    #[test]
    fn the_lowest_cross_validated_loss_wins_whatever_validation_says() {
        let all = [
            c("a", 0.30, 0.01),
            c("b", 0.20, 0.90),
            c("n", f64::NAN, 0.0),
        ];
        assert_eq!(best(&all), Some(1));
        assert!(
            reason(&all, 1).starts_with("chose b "),
            "{}",
            reason(&all, 1)
        );
        assert_eq!(best(&[c("n", f64::NAN, 0.0)]), None);
        // A combination measured only on its parts' features is never the choice.
        let parts_only = Candidate {
            from_parts: true,
            ..c("a+b", 0.10, 0.0)
        };
        assert_eq!(best(&[c("a", 0.30, 0.0), parts_only.clone()]), Some(0));
        let why = reason(&[c("a", 0.30, 0.0), parts_only], 0);
        assert!(why.contains("a+b 0.1000 on its parts' features"), "{why}");
    }
}
