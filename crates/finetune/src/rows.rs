//! Row files: a safetensors file with one tensor `features` `[rows, C, h, w]` (F16 or F32) plus
//! string metadata, written row by row straight to a temporary file (the size is known up front,
//! so the header goes first) and renamed into place when complete; read back one row at a time.
//! Used for the augmentation cache and the validation feature maps.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

features::choices! {
    /// Storage precision of a row file.
    pub enum Precision("cache precision") {
        /// Half precision: half the disk and I/O, about 3 significant digits.
        F16 = "f16",
        /// Exact.
        F32 = "f32",
    }
}

impl Precision {
    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F16 => 2,
            Precision::F32 => 4,
        }
    }

    fn dtype(self) -> &'static str {
        match self {
            Precision::F16 => "F16",
            Precision::F32 => "F32",
        }
    }
}

/// Streams rows into a new row file.
pub struct RowWriter {
    tmp: runfs::TempFile,
    out: Option<BufWriter<File>>,
    rows: usize,
    row_len: usize,
    written: usize,
    precision: Precision,
    buf: Vec<u8>,
}

impl RowWriter {
    /// Starts `target` for `rows` rows of `row_shape`.
    pub fn create(
        target: &Path,
        rows: usize,
        row_shape: &[usize],
        precision: Precision,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let dir = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let row_len: usize = row_shape.iter().product();
        let bytes = rows * row_len * precision.bytes();
        let mut shape = vec![rows];
        shape.extend_from_slice(row_shape);
        let header = serde_json::json!({
            "__metadata__": metadata,
            "features": {"dtype": precision.dtype(), "shape": shape, "data_offsets": [0, bytes]},
        });
        let mut header = serde_json::to_vec(&header).map_err(|e| Error::Invalid(e.to_string()))?;
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        let tmp = runfs::TempFile::new(target);
        let mut out = BufWriter::with_capacity(1 << 20, tmp.create()?);
        let start = (header.len() as u64).to_le_bytes();
        out.write_all(&start)
            .and_then(|_| out.write_all(&header))
            .map_err(|e| Error::io(tmp.path(), e))?;
        Ok(RowWriter {
            tmp,
            out: Some(out),
            rows,
            row_len,
            written: 0,
            precision,
            buf: Vec::new(),
        })
    }

    /// Appends one row.
    pub fn push(&mut self, row: &[f32]) -> Result<()> {
        if row.len() != self.row_len || self.written >= self.rows {
            return Err(Error::Invalid(format!(
                "row {} of {} values for a file of {} rows of {}",
                self.written,
                row.len(),
                self.rows,
                self.row_len
            )));
        }
        self.buf.clear();
        match self.precision {
            Precision::F16 => {
                for v in row {
                    self.buf
                        .extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
                }
            }
            Precision::F32 => {
                for v in row {
                    self.buf.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        let Some(out) = self.out.as_mut() else {
            return Err(Error::Invalid("row file already finished".into()));
        };
        out.write_all(&self.buf)
            .map_err(|e| Error::io(self.tmp.path(), e))?;
        self.written += 1;
        Ok(())
    }

    /// Checks every row was written, syncs and renames the file into place.
    pub fn finish(self) -> Result<()> {
        if self.written != self.rows {
            return Err(Error::Invalid(format!(
                "{} of {} rows written",
                self.written, self.rows
            )));
        }
        let RowWriter { tmp, out, .. } = self;
        let Some(out) = out else {
            return Err(Error::Invalid("row file already finished".into()));
        };
        let f = out
            .into_inner()
            .map_err(|e| Error::io(tmp.path(), e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
        drop(f);
        tmp.commit()?;
        Ok(())
    }
}

/// Reads rows of a row file.
pub struct RowReader {
    pub path: PathBuf,
    file: File,
    data_start: u64,
    pub rows: usize,
    pub row_shape: Vec<usize>,
    pub precision: Precision,
    pub metadata: BTreeMap<String, String>,
}

impl RowReader {
    /// Opens and checks a row file.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| {
            Error::file(
                path,
                format!("{reason}; delete the file to have it rebuilt"),
            )
        };
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n).map_err(|e| Error::io(path, e))?;
        let n = u64::from_le_bytes(n);
        if n > 100_000_000 || n + 8 > len {
            return Err(bad("not a safetensors file".into()));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)
            .map_err(|e| Error::io(path, e))?;
        #[derive(Deserialize)]
        struct Info {
            dtype: String,
            shape: Vec<usize>,
            data_offsets: [u64; 2],
        }
        #[derive(Deserialize)]
        struct Header {
            #[serde(rename = "__metadata__", default)]
            metadata: BTreeMap<String, String>,
            features: Info,
        }
        let h: Header =
            serde_json::from_slice(&header).map_err(|e| bad(format!("bad header ({e})")))?;
        let precision = match h.features.dtype.as_str() {
            "F16" => Precision::F16,
            "F32" => Precision::F32,
            other => return Err(bad(format!("features of dtype {other}"))),
        };
        let Some((&rows, row_shape)) = h.features.shape.split_first() else {
            return Err(bad("features without a shape".into()));
        };
        let bytes = (h.features.shape.iter().product::<usize>() * precision.bytes()) as u64;
        if h.features.data_offsets != [0, bytes] || 8 + n + bytes != len {
            return Err(bad(format!(
                "truncated or inconsistent ({len} bytes on disk)"
            )));
        }
        Ok(RowReader {
            path: path.to_path_buf(),
            file,
            data_start: 8 + n,
            rows,
            row_shape: row_shape.to_vec(),
            precision,
            metadata: h.metadata,
        })
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.row_shape.iter().product()
    }

    /// Reads row `i` into `out` (converted to f32).
    pub fn read_row(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let row_len = self.row_len();
        if i >= self.rows || out.len() != row_len {
            return Err(Error::Invalid(format!(
                "row {i} of {} ({} values asked, {row_len} stored)",
                self.rows,
                out.len()
            )));
        }
        let b = self.precision.bytes();
        let mut buf = vec![0u8; row_len * b];
        let at = self.data_start + (i * row_len * b) as u64;
        read_at(&self.file, &mut buf, at).map_err(|e| Error::io(&self.path, e))?;
        match self.precision {
            Precision::F16 => {
                for (o, c) in out.iter_mut().zip(buf.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            Precision::F32 => {
                for (o, c) in out.iter_mut().zip(buf.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
        Ok(())
    }

    /// The first `n` rows (all of them when there are fewer), one after the other.
    pub fn read_first(&self, n: usize) -> Result<Vec<f32>> {
        let row_len = self.row_len();
        let mut out = vec![0f32; n.min(self.rows) * row_len];
        for (i, row) in out.chunks_exact_mut(row_len.max(1)).enumerate() {
            self.read_row(i, row)?;
        }
        Ok(out)
    }
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(buf, at)
}

#[cfg(not(unix))]
fn read_at(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = f.try_clone()?;
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(buf)
}
