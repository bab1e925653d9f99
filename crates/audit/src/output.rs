//! The audit's files: `RUN/audit/audit.json` (everything found and the settings), `audit.csv`
//! (one line per finding: `split,path,issue,score,given,suggested,partner`, the list `--exclude`
//! reads) and the contact sheets. A CSV the user edited since the audit wrote it is not replaced
//! without `--force`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::Audit;

/// The files of `RUN/audit/`.
#[derive(Clone, Debug)]
pub struct AuditPaths {
    pub dir: PathBuf,
    pub json: PathBuf,
    pub csv: PathBuf,
    pub mislabeled_png: PathBuf,
    pub duplicates_png: PathBuf,
    pub outliers_png: PathBuf,
    /// Out-of-fold probabilities fitted by the audit when the head has none (`--fit-probe`).
    pub oof: PathBuf,
}

impl AuditPaths {
    /// The files under `RUN/audit`.
    pub fn new(run: &Path) -> Self {
        let dir = run.join("audit");
        AuditPaths {
            json: dir.join("audit.json"),
            csv: dir.join("audit.csv"),
            mislabeled_png: dir.join("mislabeled.png"),
            duplicates_png: dir.join("duplicates.png"),
            outliers_png: dir.join("outliers.png"),
            oof: dir.join("oof.safetensors"),
            dir,
        }
    }
}

/// One field of a CSV line, quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV text: mislabeled, then duplicates and leaks, then outliers, each most certain first.
pub fn csv(a: &Audit) -> String {
    let mut s = String::from("split,path,issue,score,given,suggested,partner\n");
    let mut line = |cells: [&str; 7]| {
        let cells: Vec<String> = cells.iter().map(|c| field(c)).collect();
        let _ = writeln!(s, "{}", cells.join(","));
    };
    for m in &a.mislabeled {
        let score = format!("{:.4}", m.score);
        line([
            &m.split,
            &m.path,
            "mislabeled",
            &score,
            &m.given,
            &m.suggested,
            "",
        ]);
    }
    for d in &a.duplicates {
        let issue = if d.leak { "leak" } else { "near_duplicate" };
        let score = format!("{:.4}", d.cosine);
        line([&d.split, &d.path, issue, &score, &d.given, "", &d.partner]);
    }
    for o in &a.outliers {
        let score = format!("{:.2}", o.score);
        line([
            &o.split, &o.path, "outlier", &score, &o.given, &o.nearest, "",
        ]);
    }
    s
}

/// Refuses to replace an `audit.csv` whose bytes are not the ones the last audit wrote (the user
/// edited it, e.g. to make an `--exclude` list), unless `force`.
pub fn check_csv(paths: &AuditPaths, force: bool) -> Result<()> {
    if force || !paths.csv.is_file() {
        return Ok(());
    }
    let written = std::fs::read(&paths.json)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("csv_sha256")?.as_str().map(str::to_string));
    let now = runfs::sha256_file(&paths.csv)?;
    if written.as_deref() == Some(now.as_str()) {
        return Ok(());
    }
    Err(Error::Run(format!(
        "{} was changed since the last audit wrote it; copy it elsewhere (e.g. to use it with \
         --exclude) or pass --force to replace it",
        paths.csv.display()
    )))
}

/// Writes `audit.csv` and `audit.json` (recording the CSV's digest) atomically.
pub fn write(paths: &AuditPaths, a: &mut Audit) -> Result<()> {
    std::fs::create_dir_all(&paths.dir).map_err(|e| Error::io(&paths.dir, e))?;
    let text = csv(a);
    a.csv_sha256 = runfs::digest::sha256_hex(text.as_bytes());
    runfs::write_atomic(&paths.csv, text.as_bytes())?;
    let json = serde_json::to_vec_pretty(a).map_err(|e| Error::Invalid(e.to_string()))?;
    runfs::write_atomic(&paths.json, &json)?;
    Ok(())
}

/// Reads `RUN/audit/audit.json` back (for the report), `None` when absent or unreadable.
pub fn load(run: &Path) -> Option<Audit> {
    let bytes = std::fs::read(AuditPaths::new(run).json).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(field("train/a.jpg"), "train/a.jpg");
        assert_eq!(field("a,b.jpg"), "\"a,b.jpg\"");
        assert_eq!(field("say \"hi\".jpg"), "\"say \"\"hi\"\".jpg\"");
    }
}
