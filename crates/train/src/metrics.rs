//! Training history (`metrics.json`), the validation confusion matrix (`confusion.json`) and
//! their text rendering; reusable by any stage that trains for epochs.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use runfs::write_atomic;

/// One epoch's numbers. Train loss/accuracy are averaged over the epoch's batches (with
/// dropout active, like Keras); validation numbers are measured after the epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub seconds: f64,
}

base::choices! {
    /// Which epoch's weights to keep.
    #[derive(Default)]
    pub enum Keep("keep rule") {
        /// The epoch with the lowest validation loss.
        #[default]
        Best = "best",
        /// The last completed epoch.
        Last = "last",
    }
}

/// The content of `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub epochs: Vec<EpochMetrics>,
    /// Validation accuracy after the last completed epoch.
    pub final_val_accuracy: f64,
    /// Highest validation accuracy of any epoch.
    pub best_val_accuracy: f64,
    pub best_val_accuracy_epoch: usize,
    /// Lowest validation loss of any epoch.
    pub best_val_loss: f64,
    pub best_val_loss_epoch: usize,
    /// `best` (lowest validation loss) or `last`.
    pub keep: Keep,
    /// The epoch whose weights were saved, and its validation numbers.
    pub kept_epoch: usize,
    pub kept_val_loss: f64,
    pub kept_val_accuracy: f64,
    /// Expected calibration error (15 bins) of the kept weights on validation.
    #[serde(default)]
    pub kept_val_ece: Option<f64>,
    /// Why training stopped before the last epoch (divergence), if it did.
    pub stopped_early: Option<String>,
    pub train_samples: usize,
    pub val_samples: usize,
    /// Where the validation samples came from (a split name or a hold-out fraction).
    pub validation: String,
    pub total_seconds: f64,
}

impl Metrics {
    /// Summarises a non-empty history. Ties go to the earlier epoch.
    pub fn summarize(
        epochs: Vec<EpochMetrics>,
        keep: Keep,
        stopped_early: Option<String>,
        train_samples: usize,
        val_samples: usize,
        validation: String,
    ) -> Result<Metrics> {
        let Some(last) = epochs.last() else {
            return Err(Error::Invalid("no completed epoch to summarise".into()));
        };
        let mut best_acc = &epochs[0];
        let mut best_loss = &epochs[0];
        for e in &epochs {
            if e.val_accuracy > best_acc.val_accuracy {
                best_acc = e;
            }
            if e.val_loss < best_loss.val_loss {
                best_loss = e;
            }
        }
        let kept = match keep {
            Keep::Best => best_loss,
            Keep::Last => last,
        };
        Ok(Metrics {
            final_val_accuracy: last.val_accuracy,
            best_val_accuracy: best_acc.val_accuracy,
            best_val_accuracy_epoch: best_acc.epoch,
            best_val_loss: best_loss.val_loss,
            best_val_loss_epoch: best_loss.epoch,
            keep,
            kept_epoch: kept.epoch,
            kept_val_loss: kept.val_loss,
            kept_val_accuracy: kept.val_accuracy,
            kept_val_ece: None,
            stopped_early,
            train_samples,
            val_samples,
            validation,
            total_seconds: epochs.iter().map(|e| e.seconds).sum(),
            epochs,
        })
    }
}

/// Per-class numbers derived from a confusion matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    pub class: String,
    pub support: u64,
    pub precision: f64,
    pub recall: f64,
}

/// Counts of (true class, predicted class) pairs; rows are true classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub classes: Vec<String>,
    pub matrix: Vec<Vec<u64>>,
    pub accuracy: f64,
    pub per_class: Vec<ClassStats>,
}

impl ConfusionMatrix {
    /// Tallies predictions against the truth. Both must have the same length and hold class indices.
    pub fn new(classes: &[String], truth: &[u32], predicted: &[u32]) -> Result<Self> {
        let k = classes.len();
        if truth.len() != predicted.len() {
            return Err(Error::Invalid(format!(
                "{} true labels but {} predictions",
                truth.len(),
                predicted.len()
            )));
        }
        let mut matrix = vec![vec![0u64; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            let cell = matrix
                .get_mut(t as usize)
                .and_then(|row| row.get_mut(p as usize))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "class index {t} or {p} out of range for {k} classes"
                    ))
                })?;
            *cell += 1;
        }
        let total: u64 = matrix.iter().flatten().sum();
        let correct: u64 = (0..k).map(|i| matrix[i][i]).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let per_class = (0..k)
            .map(|i| {
                let support: u64 = matrix[i].iter().sum();
                let predicted: u64 = matrix.iter().map(|r| r[i]).sum();
                ClassStats {
                    class: classes[i].clone(),
                    support,
                    precision: ratio(matrix[i][i], predicted),
                    recall: ratio(matrix[i][i], support),
                }
            })
            .collect();
        Ok(ConfusionMatrix {
            classes: classes.to_vec(),
            matrix,
            accuracy: ratio(correct, total),
            per_class,
        })
    }

    /// `class recall, …` on one line (the per-class recall a user checks for a neglected class).
    pub fn recall_line(&self) -> String {
        self.per_class
            .iter()
            .map(|c| format!("{} {:.3}", c.class, c.recall))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A fixed-width table: one row per true class, one column per predicted class, then recall.
    pub fn render(&self) -> String {
        const CORNER: &str = "true \\ predicted";
        let w = self
            .classes
            .iter()
            .map(|c| c.chars().count())
            .chain(self.matrix.iter().flatten().map(|v| v.to_string().len()))
            .max()
            .unwrap_or(1)
            .max(6);
        let first = self
            .classes
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
            .max(CORNER.len());
        let mut s = String::new();
        let _ = write!(s, "{CORNER:<first$}");
        for c in &self.classes {
            let _ = write!(s, "  {c:>w$}");
        }
        let _ = writeln!(s, "  {:>6}", "recall");
        for (i, row) in self.matrix.iter().enumerate() {
            let _ = write!(s, "{:<first$}", self.classes[i]);
            for v in row {
                let _ = write!(s, "  {v:>w$}");
            }
            let _ = writeln!(s, "  {:>6.3}", self.per_class[i].recall);
        }
        s
    }
}

/// Writes any serialisable value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invalid(format!("cannot encode {}: {e}", path.display())))?;
    text.push('\n');
    Ok(write_atomic(path, text.as_bytes())?)
}

/// Reads a `metrics.json` written by any training stage.
pub fn read_json(path: &Path) -> Result<Metrics> {
    let text = std::fs::read_to_string(path).map_err(|e| runfs::Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "{}: not a metrics.json ({e}); delete the stage's folder to train it again",
            path.display()
        ))
    })
}

/// Bins of [`calibration_error`], as in Guo et al. (2017).
pub const CALIBRATION_BINS: usize = 15;

/// Expected calibration error: the sample-weighted mean gap between confidence (the top class's
/// probability) and accuracy over [`CALIBRATION_BINS`] equal-width confidence bins.
pub fn calibration_error(confidence: &[f64], correct: &[bool]) -> f64 {
    let bins = CALIBRATION_BINS;
    let mut sum_conf = vec![0.0; bins];
    let mut sum_right = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        sum_conf[b] += c;
        sum_right[b] += f64::from(u8::from(ok));
        count[b] += 1;
    }
    let n = confidence.len().max(1) as f64;
    (0..bins)
        .map(|b| (sum_conf[b] - sum_right[b]).abs() / n)
        .sum()
}

#[cfg(test)]
mod calibration_tests {
    use super::*;

    #[test]
    fn calibration_error_is_zero_when_confidence_matches_accuracy_and_grows_with_overconfidence() {
        // 10 samples at 0.8 confidence, 8 right: perfectly calibrated.
        let conf = vec![0.8; 10];
        let right: Vec<bool> = (0..10).map(|i| i < 8).collect();
        assert!(calibration_error(&conf, &right).abs() < 1e-12);
        // Same hits at 0.99 confidence: gap 0.19.
        let conf = vec![0.99; 10];
        assert!((calibration_error(&conf, &right) - 0.19).abs() < 1e-12);
    }
}
