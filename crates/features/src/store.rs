//! The feature cache on disk: `RUN/features/<split>.safetensors` with tensors `features` (f32 [N,C,h,w]) and
//! `labels` (i64 [N]) plus `__metadata__` tying every row to its source file. Written streamed and atomically.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::provenance::Provenance;
use crate::{Error, Result};

/// Version of the layout below; bumped when it changes.
pub const FORMAT_VERSION: u32 = 1;

/// An image that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

/// What a feature file says about itself (its safetensors `__metadata__`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    pub format_version: u32,
    pub split: String,
    /// Class names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// How the features were computed.
    #[serde(flatten)]
    pub provenance: Provenance,
    /// Source file of every row, relative to the data folder (row `i` ↔ `files[i]`).
    pub files: Vec<String>,
    /// Images that could not be decoded.
    pub skipped: Vec<Skipped>,
    /// Photos of the split left out by `extract --exclude LIST`, relative to the data folder,
    /// sorted (stored only when some were; later stages drop the same photos).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// Digest of everything the features depend on; equal key ⇒ nothing to recompute.
    pub cache_key: String,
    /// Set in the file of one shard of a job array (`extract --shard I/N`), until `merge`.
    #[serde(default)]
    pub shard: Option<crate::shard::ShardRecord>,
}

impl FeatureMeta {
    fn to_strings(&self) -> Result<HashMap<String, String>> {
        let mut m = HashMap::new();
        m.insert("format_version".into(), self.format_version.to_string());
        m.insert("split".into(), self.split.clone());
        m.insert("classes".into(), to_json(&self.classes)?);
        let p = &self.provenance;
        m.insert("model".into(), p.model.clone());
        m.insert("model_sha256".into(), p.model_sha256.clone());
        m.insert("output_tensor".into(), p.output_tensor.clone());
        m.insert("preprocess".into(), p.preprocess.clone());
        m.insert("image_size".into(), p.image_size.to_string());
        m.insert("resize".into(), p.resize.clone());
        m.insert("precision".into(), p.precision.clone());
        if let Some(engine) = &p.engine {
            m.insert("engine".into(), engine.clone());
        }
        m.insert("files".into(), to_json(&self.files)?);
        m.insert("skipped".into(), to_json(&self.skipped)?);
        if !self.excluded.is_empty() {
            m.insert("excluded".into(), to_json(&self.excluded)?);
        }
        m.insert("cache_key".into(), self.cache_key.clone());
        if let Some(shard) = &self.shard {
            m.insert("shard".into(), to_json(shard)?);
        }
        Ok(m)
    }

    fn from_strings(path: &Path, m: &HashMap<String, String>) -> Result<Self> {
        let bad = |reason: String| Error::Store {
            path: path.to_path_buf(),
            reason,
        };
        let get = |k: &str| {
            m.get(k).cloned().ok_or_else(|| {
                bad(format!("metadata key '{k}' is missing: not a bottleneck feature file, or an old one; re-run `bottleneck extract`"))
            })
        };
        let num = |k: &str| -> Result<u32> {
            get(k)?
                .parse()
                .map_err(|_| bad(format!("metadata '{k}' is not a number")))
        };
        fn parse<T: serde::de::DeserializeOwned>(s: &str, k: &str, path: &Path) -> Result<T> {
            serde_json::from_str(s).map_err(|e| Error::Store {
                path: path.to_path_buf(),
                reason: format!("metadata '{k}' is not valid JSON: {e}"),
            })
        }
        Ok(FeatureMeta {
            format_version: num("format_version")?,
            split: get("split")?,
            classes: parse(&get("classes")?, "classes", path)?,
            provenance: Provenance {
                model: get("model")?,
                model_sha256: get("model_sha256")?,
                output_tensor: get("output_tensor")?,
                preprocess: get("preprocess")?,
                image_size: num("image_size")?,
                resize: get("resize")?,
                precision: get("precision")?,
                engine: m.get("engine").cloned(),
            },
            files: parse(&get("files")?, "files", path)?,
            skipped: parse(&get("skipped")?, "skipped", path)?,
            excluded: m
                .get("excluded")
                .map(|v| parse(v, "excluded", path))
                .transpose()?
                .unwrap_or_default(),
            cache_key: get("cache_key")?,
            shard: m
                .get("shard")
                .map(|v| parse(v, "shard", path))
                .transpose()?,
        })
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Invalid(e.to_string()))
}

/// A whole feature file in memory.
#[derive(Debug, Clone)]
pub struct FeatureFile {
    /// `[N, C, h, w]`.
    pub shape: Vec<usize>,
    pub features: Vec<f32>,
    pub labels: Vec<i64>,
    pub meta: FeatureMeta,
}

/// A feature file's parts, checked, as [`parse`] finds them in the file's bytes.
pub(crate) struct Parsed<'a> {
    /// `[N, C, h, w]`.
    pub shape: Vec<usize>,
    /// The `features` tensor's bytes (little-endian f32, row after row).
    pub features: &'a [u8],
    pub labels: Vec<i64>,
    pub meta: FeatureMeta,
}

/// Checks a whole feature file held in `bytes` (shapes, labels in range, one file name per row)
/// and returns its parts; the features stay where they are.
pub(crate) fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<Parsed<'a>> {
    let bad = |reason: String| Error::Store {
        path: path.to_path_buf(),
        reason,
    };
    let (_, st_meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        bad(format!(
            "not a safetensors file ({e}); delete it and re-run `bottleneck extract`"
        ))
    })?;
    let meta =
        FeatureMeta::from_strings(path, st_meta.metadata().as_ref().unwrap_or(&HashMap::new()))?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let f = st
        .tensor("features")
        .map_err(|_| bad("no tensor 'features'".into()))?;
    let l = st
        .tensor("labels")
        .map_err(|_| bad("no tensor 'labels'".into()))?;
    if f.dtype() != safetensors::Dtype::F32 || !matches!(f.shape().len(), 2 | 4) {
        return Err(bad(format!(
            "'features' must be F32 [N,C,h,w] or [N,C], found {:?} {:?}",
            f.dtype(),
            f.shape()
        )));
    }
    if l.dtype() != safetensors::Dtype::I64 || l.shape().len() != 1 {
        return Err(bad(format!(
            "'labels' must be I64 [N], found {:?} {:?}",
            l.dtype(),
            l.shape()
        )));
    }
    let shape = f.shape().to_vec();
    let n = shape[0];
    if l.shape()[0] != n || meta.files.len() != n {
        return Err(bad(format!(
            "{} feature rows, {} labels and {} file names: the file is inconsistent; re-run `bottleneck extract`",
            n,
            l.shape()[0],
            meta.files.len()
        )));
    }
    let labels: Vec<i64> = l
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    if let Some(bad_label) = labels
        .iter()
        .find(|&&y| y < 0 || y as usize >= meta.classes.len())
    {
        return Err(bad(format!(
            "label {bad_label} is outside the {} classes",
            meta.classes.len()
        )));
    }
    Ok(Parsed {
        shape,
        features: f.data(),
        labels,
        meta,
    })
}

impl FeatureFile {
    /// Reads and checks a feature file (shapes, labels in range, one file name per row).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let p = parse(&bytes, path)?;
        let features: Vec<f32> = p
            .features
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(FeatureFile {
            shape: p.shape,
            features,
            labels: p.labels,
            meta: p.meta,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per row (C·h·w).
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
}

/// Reads only the metadata of a feature file (cheap: the header, not the tensors).
pub fn read_meta(path: &Path) -> Result<FeatureMeta> {
    read_header(path).map(|(meta, _)| meta)
}

/// Reads the metadata and the `features` shape from the header alone.
pub fn read_header(path: &Path) -> Result<(FeatureMeta, Vec<usize>)> {
    let bad = |reason: String| Error::Store {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("too short to be a safetensors file".into()))?;
    let n = u64::from_le_bytes(len);
    if n > 512 << 20 {
        return Err(bad("header larger than 512 MiB: not a feature file".into()));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|_| bad("truncated header".into()))?;
    #[derive(Deserialize)]
    struct TensorInfo {
        shape: Vec<usize>,
    }
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
        features: Option<TensorInfo>,
    }
    let h: Header = serde_json::from_slice(&header).map_err(|e| bad(format!("bad header: {e}")))?;
    check_length(&f, &header, 8 + n).map_err(bad)?;
    let shape = h
        .features
        .map(|t| t.shape)
        .ok_or_else(|| bad("no tensor 'features'".into()))?;
    Ok((FeatureMeta::from_strings(path, &h.metadata)?, shape))
}

/// Fails when the file is shorter or longer than its header says (a truncated copy, a disk that
/// filled up): the header alone would otherwise pass for a whole file.
fn check_length(f: &File, header: &[u8], data_start: u64) -> std::result::Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| format!("bad header: {e}"))?;
    let end = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let want = data_start + end;
    let have = f
        .metadata()
        .map_err(|e| format!("cannot read the file size: {e}"))?
        .len();
    if have != want {
        return Err(format!(
            "the file is {have} bytes but its header describes {want} (truncated or damaged); \
             delete it and run `bottleneck extract` again"
        ));
    }
    Ok(())
}

/// `RUN/features`.
pub fn features_dir(run: &Path) -> PathBuf {
    run.join("features")
}

/// `RUN/features/<split>.safetensors`.
pub fn feature_path(run: &Path, split: &str) -> PathBuf {
    features_dir(run).join(format!("{split}.safetensors"))
}

/// Sorted names of the splits that have a feature file in `RUN/features` (shards of a job array,
/// `<split>.shard-I-of-N.safetensors`, are not splits until merged).
pub fn list_splits(run: &Path) -> Result<Vec<String>> {
    let dir = features_dir(run);
    let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".safetensors") {
            if !stem.starts_with('.') && !stem.contains(".shard-") {
                out.push(stem.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Streams feature rows to disk and turns them into a safetensors file on [`FeatureWriter::finish`].
///
/// Rows go to a raw side file as they arrive (memory stays flat however many images there are); `finish`
/// writes header + rows + labels into a temporary file next to the target and renames it into place, so an
/// interrupted run never leaves a half-written feature file behind.
pub struct FeatureWriter {
    target: PathBuf,
    raw_tmp: runfs::TempFile,
    raw: BufWriter<File>,
    row_shape: Vec<usize>,
    rows: usize,
    labels: Vec<i64>,
    files: Vec<String>,
}

impl FeatureWriter {
    /// Starts a feature file at `target` whose rows have shape `row_shape` (`[C, h, w]`).
    pub fn create(target: &Path, row_shape: &[usize]) -> Result<Self> {
        let dir = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let raw_tmp = runfs::TempFile::new(&sibling_name(target, "rows"));
        let raw = raw_tmp.create()?;
        Ok(FeatureWriter {
            target: target.to_path_buf(),
            raw_tmp,
            raw: BufWriter::with_capacity(1 << 20, raw),
            row_shape: row_shape.to_vec(),
            rows: 0,
            labels: Vec::new(),
            files: Vec::new(),
        })
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.row_shape.iter().product()
    }

    /// Appends one row with its label and source file.
    pub fn push(&mut self, row: &[f32], label: i64, file: &str) -> Result<()> {
        if row.len() != self.row_len() {
            return Err(Error::Invalid(format!(
                "feature row of {} values, expected {} ({:?})",
                row.len(),
                self.row_len(),
                self.row_shape
            )));
        }
        let mut buf = Vec::with_capacity(row.len() * 4);
        for v in row {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        self.raw
            .write_all(&buf)
            .map_err(|e| Error::io(self.raw_tmp.path(), e))?;
        self.rows += 1;
        self.labels.push(label);
        self.files.push(file.to_string());
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes the final file atomically; `meta.files` is filled from the pushed rows.
    pub fn finish(mut self, mut meta: FeatureMeta) -> Result<PathBuf> {
        meta.files = std::mem::take(&mut self.files);
        meta.format_version = FORMAT_VERSION;
        let row_len = self.row_len();
        let raw_path = self.raw_tmp.path().to_path_buf();
        self.raw.flush().map_err(|e| Error::io(&raw_path, e))?;
        let raw_file = self
            .raw
            .into_inner()
            .map_err(|e| Error::io(&raw_path, e.into_error()))?;
        drop(raw_file);

        let n = self.rows;
        let feat_bytes = n * row_len * 4;
        let label_bytes = n * 8;
        let mut shape = vec![n];
        shape.extend_from_slice(&self.row_shape);
        let header = serde_json::json!({
            "__metadata__": meta.to_strings()?,
            "features": {"dtype": "F32", "shape": shape, "data_offsets": [0, feat_bytes]},
            "labels": {"dtype": "I64", "shape": [n], "data_offsets": [feat_bytes, feat_bytes + label_bytes]},
        });
        let mut header = serde_json::to_vec(&header).map_err(|e| Error::Invalid(e.to_string()))?;
        while header.len() % 8 != 0 {
            header.push(b' ');
        }

        let tmp = runfs::TempFile::new(&self.target);
        let result = (|| -> std::io::Result<()> {
            let file = File::options()
                .write(true)
                .create_new(true)
                .open(tmp.path())?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            out.write_all(&(header.len() as u64).to_le_bytes())?;
            out.write_all(&header)?;
            let mut raw = BufReader::new(File::open(&raw_path)?);
            raw.seek(SeekFrom::Start(0))?;
            let copied = std::io::copy(&mut raw, &mut out)?;
            if copied as usize != feat_bytes {
                return Err(std::io::Error::other(format!(
                    "row file holds {copied} bytes, expected {feat_bytes}"
                )));
            }
            for y in &self.labels {
                out.write_all(&y.to_le_bytes())?;
            }
            let f = out.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            Ok(())
        })();
        drop(self.raw_tmp);
        if let Err(e) = result {
            return Err(Error::io(tmp.path(), e));
        }
        Ok(tmp.commit()?)
    }
}

/// `dir/<name>.<suffix>` beside `target` (temporaries derived from it stay recognisable).
fn sibling_name(target: &Path, suffix: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!("{name}.{suffix}"))
}
