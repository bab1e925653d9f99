//! Photos left out of a run (`--exclude LIST`): reading the list (paths one per line, or
//! `audit.csv` with its `path` column), checking that every listed path is a photo of the data
//! folder, removing them from a scanned [`Dataset`], and reading back what a run's feature files
//! recorded as left out, so that later stages drop the same photos.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::store;
use crate::{Error, Result};

/// Largest list file read (a list of every photo of a very large folder stays far below).
pub const MAX_LIST_BYTES: u64 = 64 << 20;

/// How many unknown paths an error names.
const SHOWN: usize = 5;

/// What a listed path should look like, said by every error about one.
const FIX: &str = "each line is a path relative to DATA as in audit.csv's `path` column, \
                   e.g. train/cats/cat.1.jpg";

/// The rels (paths relative to the data folder) removed from each split, in the order of
/// [`Dataset::splits`] (one entry per split, possibly empty), each list sorted.
pub type Removed = Vec<(String, Vec<String>)>;

/// A list of photos to leave out, as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludeList {
    /// The file the list was read from (named by every error about it).
    pub source: PathBuf,
    /// The normalised paths ([`normalise`]), relative to the data folder.
    pub paths: BTreeSet<String>,
}

impl ExcludeList {
    /// Reads `path`: paths one per line (blank lines and `#` comments ignored), or a CSV whose
    /// first line is a header with a column named `path` (as `bottleneck audit` writes). Files
    /// over [`MAX_LIST_BYTES`] are refused.
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_bounded(path)?;
        Self::parse(path, &text)
    }

    /// The list in `text`, read from `source` (see [`ExcludeList::read`]).
    pub fn parse(source: &Path, text: &str) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let raw = match path_column(text) {
            Some(col) => csv_paths(source, text, col)?,
            None => line_paths(text),
        };
        Ok(ExcludeList {
            source: source.to_path_buf(),
            paths: raw
                .iter()
                .map(|p| normalise(p))
                .filter(|p| !p.is_empty())
                .collect(),
        })
    }

    /// Number of distinct paths listed.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True when the list names no photo.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// SHA-256 (hex) of the normalised paths, sorted, each followed by a newline (what
    /// `sort -u | sha256sum` gives for the same paths in the C locale).
    pub fn sha256(&self) -> String {
        let mut text = String::new();
        for p in &self.paths {
            text.push_str(p);
            text.push('\n');
        }
        runfs::digest::sha256_hex(text.as_bytes())
    }

    /// Removes the listed photos from every split of `data`. A listed path that is no photo of
    /// `data`, or a split or class left without photos, is an error naming the list file.
    pub fn apply(&self, data: &mut Dataset) -> Result<Removed> {
        self.check_known(data)?;
        let removed = remove(data, &self.paths);
        self.check_left(data)?;
        Ok(removed)
    }

    /// Fails when a listed path matches no photo of `data`.
    fn check_known(&self, data: &Dataset) -> Result<()> {
        let known: BTreeSet<&str> = data
            .splits
            .iter()
            .flat_map(|s| s.items.iter().map(|i| i.rel.as_str()))
            .collect();
        let unknown: Vec<&str> = self
            .paths
            .iter()
            .map(String::as_str)
            .filter(|p| !known.contains(p))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let more = if unknown.len() > SHOWN { ", …" } else { "" };
        Err(Error::Invalid(format!(
            "exclusion list {}: {} listed path{} match{} no photo of {} ({}{more}); {FIX}",
            self.source.display(),
            unknown.len(),
            if unknown.len() == 1 { "" } else { "s" },
            if unknown.len() == 1 { "es" } else { "" },
            data.root.display(),
            unknown[..unknown.len().min(SHOWN)].join(", ")
        )))
    }

    /// Fails when a split, or a class of a split, has no photo left.
    fn check_left(&self, data: &Dataset) -> Result<()> {
        for split in &data.splits {
            let counts = data.counts(split);
            if let Some(class) = counts.iter().position(|&n| n == 0) {
                return Err(Error::Invalid(format!(
                    "exclusion list {} leaves class '{}' of split '{}' without photos: every class \
                     needs photos in every split; keep some of them, or remove the folder",
                    self.source.display(),
                    data.classes.get(class).map_or("?", String::as_str),
                    split.name
                )));
            }
        }
        Ok(())
    }
}

/// A listed path as feature files record it: surrounding whitespace trimmed, `\` turned into
/// `/`, leading `./` removed.
pub fn normalise(path: &str) -> String {
    let mut p = path.trim().replace('\\', "/");
    while let Some(rest) = p.strip_prefix("./") {
        p = rest.to_string();
    }
    p
}

/// Removes every item whose rel is in `rels` from every split of `data` (one definition for
/// `extract` and the stages that read photos from the data folder). Rels that match nothing are
/// ignored here ([`ExcludeList::apply`] refuses them first).
pub fn remove(data: &mut Dataset, rels: &BTreeSet<String>) -> Removed {
    data.splits
        .iter_mut()
        .map(|split| {
            let mut gone = Vec::new();
            split.items.retain(|item| {
                let keep = !rels.contains(&item.rel);
                if !keep {
                    gone.push(item.rel.clone());
                }
                keep
            });
            gone.sort();
            (split.name.clone(), gone)
        })
        .collect()
}

/// Removes from `data` the photos that the feature files of `run` record as left out
/// (`RUN/features/<split>.safetensors`, metadata `excluded`): what stages after `extract` call
/// so that they drop the same photos. Splits without a feature file leave nothing out.
pub fn apply_recorded(run: &Path, data: &mut Dataset) -> Result<Removed> {
    let mut rels = BTreeSet::new();
    for split in &data.splits {
        let path = store::feature_path(run, &split.name);
        if path.is_file() {
            rels.extend(store::read_meta(&path)?.excluded);
        }
    }
    Ok(remove(data, &rels))
}

/// The rels removed from split `name` (empty when none).
pub fn removed_from<'a>(removed: &'a Removed, name: &str) -> &'a [String] {
    removed
        .iter()
        .find(|(s, _)| s == name)
        .map_or(&[], |(_, r)| r.as_slice())
}

/// The text of `path`, refusing files over [`MAX_LIST_BYTES`] and text that is not UTF-8.
fn read_bounded(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let too_big = |size: u64| {
        Error::Invalid(format!(
            "exclusion list {} is {size} bytes, over the {} MiB limit: it should hold one photo \
             path per line (or be audit.csv)",
            path.display(),
            MAX_LIST_BYTES >> 20
        ))
    };
    if size > MAX_LIST_BYTES {
        return Err(too_big(size));
    }
    let mut bytes = Vec::new();
    file.take(MAX_LIST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_LIST_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::Invalid(format!(
            "exclusion list {} is not UTF-8 text (at byte {}): save it as UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Paths of a plain list: one per line, blank lines and lines starting with `#` ignored.
fn line_paths(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The index of the `path` column when the first line is a CSV header that has one.
fn path_column(text: &str) -> Option<usize> {
    let first = text.lines().next()?;
    let header = csv_records(first).ok()?.into_iter().next()?.1;
    header.iter().position(|h| h.trim() == "path")
}

/// The `path` column (index `col`) of every row after the header; rows whose first field starts
/// with `#` are skipped.
fn csv_paths(source: &Path, text: &str, col: usize) -> Result<Vec<String>> {
    let bad = |reason: String| {
        Error::Invalid(format!(
            "exclusion list {}: {reason}; {FIX}",
            source.display()
        ))
    };
    let records = csv_records(text).map_err(bad)?;
    let mut out = Vec::new();
    for (line, fields) in records.into_iter().skip(1) {
        if fields
            .first()
            .is_some_and(|f| f.trim_start().starts_with('#'))
        {
            continue;
        }
        let field = fields.get(col).ok_or_else(|| {
            bad(format!(
                "line {line} has {} field{} but the header puts `path` in column {}",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" },
                col + 1
            ))
        })?;
        out.push(field.clone());
    }
    Ok(out)
}

/// A CSV field or record being read.
#[derive(Default)]
struct Reader {
    records: Vec<(usize, Vec<String>)>,
    fields: Vec<String>,
    field: String,
    /// The current field started with a quote (and may still be inside it).
    quoted: bool,
    in_quotes: bool,
    line: usize,
    start: usize,
}

impl Reader {
    fn end_field(&mut self) {
        self.fields.push(std::mem::take(&mut self.field));
        self.quoted = false;
    }

    /// Ends the record (a blank line, one empty field, is dropped).
    fn end_record(&mut self) {
        self.end_field();
        let fields = std::mem::take(&mut self.fields);
        if !(fields.len() == 1 && fields[0].trim().is_empty()) {
            self.records.push((self.start, fields));
        }
    }
}

/// The records of CSV `text` with the line each starts on (1-based): comma-separated fields,
/// double-quoted fields may hold commas, newlines and doubled quotes (`""`); blank lines are
/// dropped. An unclosed quote is an error.
fn csv_records(text: &str) -> std::result::Result<Vec<(usize, Vec<String>)>, String> {
    let mut r = Reader {
        line: 1,
        start: 1,
        ..Reader::default()
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if r.in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    r.field.push('"');
                }
                '"' => r.in_quotes = false,
                c => {
                    r.line += usize::from(c == '\n');
                    r.field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if r.field.trim().is_empty() && !r.quoted => {
                r.field.clear();
                r.quoted = true;
                r.in_quotes = true;
            }
            ',' => r.end_field(),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                r.end_record();
                r.line += 1;
                r.start = r.line;
            }
            c => r.field.push(c),
        }
    }
    if r.in_quotes {
        return Err(format!(
            "the quoted field that starts on line {} is not closed",
            r.start
        ));
    }
    if !r.field.is_empty() || !r.fields.is_empty() {
        r.end_record();
    }
    Ok(r.records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Item, Split};

    fn data() -> Dataset {
        let split = |name: &str, rels: &[(&str, usize)]| Split {
            name: name.into(),
            items: rels
                .iter()
                .map(|&(rel, label)| Item {
                    path: PathBuf::from("/d").join(rel),
                    rel: rel.into(),
                    label,
                })
                .collect(),
        };
        Dataset {
            root: PathBuf::from("/d"),
            classes: vec!["cats".into(), "dogs".into()],
            splits: vec![
                split(
                    "train",
                    &[
                        ("train/cats/cat.1.jpg", 0),
                        ("train/cats/cat, 2.jpg", 0),
                        ("train/dogs/dog.1.jpg", 1),
                        ("train/dogs/dog.2.jpg", 1),
                    ],
                ),
                split(
                    "validation",
                    &[
                        ("validation/cats/cat.9.jpg", 0),
                        ("validation/dogs/dog.9.jpg", 1),
                    ],
                ),
            ],
            ignored: Vec::new(),
        }
    }

    fn list(text: &str) -> ExcludeList {
        ExcludeList::parse(Path::new("list.txt"), text).unwrap()
    }

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn exclude_lines_skip_blanks_and_comments() {
        let l = list("# flagged\n\n  train/cats/cat.1.jpg  \r\ntrain/dogs/dog.2.jpg\n# x\n");
        assert_eq!(
            l.paths,
            set(&["train/cats/cat.1.jpg", "train/dogs/dog.2.jpg"])
        );
        let mut d = data();
        let removed = l.apply(&mut d).unwrap();
        assert_eq!(
            removed,
            vec![
                (
                    "train".to_string(),
                    vec![
                        "train/cats/cat.1.jpg".to_string(),
                        "train/dogs/dog.2.jpg".to_string()
                    ]
                ),
                ("validation".to_string(), vec![]),
            ]
        );
        assert_eq!(d.splits[0].items.len(), 2);
        assert_eq!(d.splits[1].items.len(), 2);
        assert_eq!(removed_from(&removed, "validation"), &[] as &[String]);
    }

    #[test]
    fn exclude_csv_takes_the_path_column_with_quoted_fields() {
        let text = "\u{feff}split,path,issue,score,given,suggested,partner\n\
                    train,\"train/cats/cat, 2.jpg\",\"mislabel, likely\",0.9,cats,dogs,\n\
                    validation,validation/dogs/dog.9.jpg,\"says \"\"dup\"\"\",0.5,dogs,,\"a\nb\"\r\n\
                    \n\
                    #train,train/dogs/dog.1.jpg,kept,0,,,\n";
        let l = list(text);
        assert_eq!(
            l.paths,
            set(&["train/cats/cat, 2.jpg", "validation/dogs/dog.9.jpg"])
        );
        let err = ExcludeList::parse(Path::new("a.csv"), "path,x\n\"open,1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.csv") && err.contains("not closed"), "{err}");
        let err = ExcludeList::parse(Path::new("a.csv"), "x,path\nonly\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("column 2"), "{err}");
    }

    #[test]
    fn exclude_normalises_paths() {
        assert_eq!(
            normalise("  .\\train\\cats\\cat.1.jpg "),
            "train/cats/cat.1.jpg"
        );
        assert_eq!(normalise("././cats/a.jpg"), "cats/a.jpg");
        let a = list("train\\dogs\\dog.1.jpg\n./train/cats/cat.1.jpg\n");
        let b = list("train/cats/cat.1.jpg\ntrain/dogs/dog.1.jpg\ntrain/dogs/dog.1.jpg\n");
        assert_eq!(a.paths, b.paths);
        assert_eq!(a.sha256(), b.sha256());
        assert_ne!(a.sha256(), list("train/cats/cat.1.jpg\n").sha256());
        assert_eq!(
            list("").sha256(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn exclude_unknown_paths_are_an_error_naming_them() {
        let l = list("train/cats/cat.1.jpg\ncats/cat.1.jpg\n/d/train/dogs/dog.1.jpg\n");
        let mut d = data();
        let err = l.apply(&mut d).unwrap_err().to_string();
        assert!(
            err.contains("list.txt") && err.contains("2 listed paths"),
            "{err}"
        );
        assert!(
            err.contains("/d/train/dogs/dog.1.jpg") && err.contains(", cats/cat.1.jpg"),
            "{err}"
        );
        assert!(
            err.contains("relative to DATA") && err.contains("train/cats/cat.1.jpg"),
            "{err}"
        );
        assert_eq!(d.splits[0].items.len(), 4, "nothing removed on error");
    }

    #[test]
    fn exclude_empty_list_removes_nothing_and_a_class_must_keep_photos() {
        let mut d = data();
        let removed = list("# nothing\n").apply(&mut d).unwrap();
        assert!(removed.iter().all(|(_, r)| r.is_empty()));
        assert_eq!(d.splits[0].items.len(), 4);
        let err = list("validation/cats/cat.9.jpg\n")
            .apply(&mut data())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'cats'") && err.contains("'validation'"),
            "{err}"
        );
    }

    #[test]
    fn exclude_refuses_a_list_over_the_size_limit() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("huge.txt");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_LIST_BYTES + 1).unwrap();
        let err = ExcludeList::read(&p).unwrap_err().to_string();
        assert!(err.contains("huge.txt") && err.contains("64 MiB"), "{err}");
        let ok = t.path().join("ok.txt");
        std::fs::write(&ok, "train/cats/cat.1.jpg\n").unwrap();
        assert_eq!(ExcludeList::read(&ok).unwrap().len(), 1);
        let err = ExcludeList::read(&t.path().join("missing.txt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.txt"), "{err}");
    }
}
