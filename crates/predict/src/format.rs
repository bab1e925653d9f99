//! Text forms of predictions: an aligned table (default), CSV (one column per class probability)
//! and the JSON document of a whole `predict` call.

use serde::Serialize;

use crate::classifier::ClassifierInfo;
use crate::run::{Prediction, RunStats};

/// Output format of `predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// An aligned table: `file`, `class`, `probability`, and the top-k list when `top_k > 1`.
pub struct Table {
    file_width: usize,
    class_width: usize,
    top_k: usize,
}

impl Table {
    /// Column widths for these files and classes.
    pub fn new<'a>(
        files: impl IntoIterator<Item = &'a str>,
        classes: &[String],
        top_k: usize,
    ) -> Self {
        Table {
            file_width: files
                .into_iter()
                .map(|f| f.chars().count())
                .max()
                .unwrap_or(0)
                .max(4),
            class_width: classes
                .iter()
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
                .max(5),
            top_k,
        }
    }

    pub fn header(&self) -> String {
        let mut s = format!(
            "{:<fw$}  {:<cw$}  {:>11}",
            "file",
            "class",
            "probability",
            fw = self.file_width,
            cw = self.class_width
        );
        if self.top_k > 1 {
            s.push_str(&format!("  top-{}", self.top_k));
        }
        s
    }

    pub fn row(&self, p: &Prediction) -> String {
        let mut s = format!(
            "{:<fw$}  {:<cw$}  {:>11.4}",
            p.file,
            p.class,
            p.probability,
            fw = self.file_width,
            cw = self.class_width
        );
        if self.top_k > 1 {
            let top: Vec<String> = p
                .top
                .iter()
                .map(|r| format!("{} {:.4}", r.class, r.probability))
                .collect();
            s.push_str("  ");
            s.push_str(&top.join(", "));
        }
        s
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `file,class,probability,p_<class>…`
pub fn csv_header(classes: &[String]) -> String {
    let mut cols = vec!["file".to_string(), "class".into(), "probability".into()];
    cols.extend(classes.iter().map(|c| csv_field(&format!("p_{c}"))));
    cols.join(",")
}

/// One CSV line (probabilities with 6 decimals).
pub fn csv_row(p: &Prediction) -> String {
    let mut cols = vec![
        csv_field(&p.file),
        csv_field(&p.class),
        format!("{:.6}", p.probability),
    ];
    cols.extend(p.probabilities.iter().map(|v| format!("{v:.6}")));
    cols.join(",")
}

/// The JSON document printed by `predict --json`.
#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    pub classifier: ClassifierInfo,
    pub device: String,
    pub predictions: Vec<Prediction>,
    #[serde(flatten)]
    pub stats: RunStats,
}
