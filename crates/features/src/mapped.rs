//! A feature file memory-mapped instead of read: its rows are read in place, and the pages a
//! reader touched are handed back to the kernel every [`RESIDENT_BUDGET`] bytes, so training on
//! a file larger than memory costs a bounded resident set (the page cache keeps the file warm).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::{Mmap, UncheckedAdvice};

use crate::store::{parse, FeatureMeta};
use crate::{Error, Result};

/// Bytes of rows read between two releases of the mapped pages.
pub const RESIDENT_BUDGET: usize = 64 << 20;

/// A checked feature file, mapped read-only.
#[derive(Debug)]
pub struct MappedFeatures {
    map: Mmap,
    /// Byte offset of the first feature value in the file.
    start: usize,
    /// `[N, C, h, w]`.
    pub shape: Vec<usize>,
    pub labels: Vec<i64>,
    pub meta: FeatureMeta,
    pub path: PathBuf,
    /// Row bytes read since the last release.
    touched: AtomicUsize,
}

impl MappedFeatures {
    /// Maps and checks the feature file at `path` (the same checks as
    /// [`crate::store::FeatureFile::read`]). The file must not be truncated while mapped; every
    /// stage replaces feature files by renaming a new one over them, which leaves a mapped one
    /// intact.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only mapping; the project never writes into an existing feature file
        // (see above), so the bytes do not change under the mapping.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let p = parse(&map, path)?;
        let start = p.features.as_ptr() as usize - map.as_ptr() as usize;
        if !cfg!(target_endian = "little") || !(p.features.as_ptr() as usize).is_multiple_of(4) {
            return Err(Error::Store {
                path: path.to_path_buf(),
                reason: "its feature values are not 4-byte aligned in the file (not written by \
                         bottleneck); re-run `bottleneck extract`"
                    .into(),
            });
        }
        let (shape, labels, meta) = (p.shape, p.labels, p.meta);
        let mapped = MappedFeatures {
            map,
            start,
            shape,
            labels,
            meta,
            path: path.to_path_buf(),
            touched: AtomicUsize::new(0),
        };
        mapped.release();
        Ok(mapped)
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

    /// Rows `first..first + count` in place; counts towards the next release.
    pub fn rows(&self, first: usize, count: usize) -> &[f32] {
        let d = self.row_len();
        let all = self.values();
        self.note(count * d * 4);
        &all[first * d..(first + count) * d]
    }

    fn values(&self) -> &[f32] {
        let n = self.len() * self.row_len();
        let bytes = &self.map[self.start..self.start + n * 4];
        // SAFETY: `open` checked the 4-byte alignment and the length (`parse` checked that the
        // tensor holds `n` little-endian f32 values); every bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), n) }
    }

    /// Counts `bytes` read and releases the mapped pages when the budget is spent.
    fn note(&self, bytes: usize) {
        let before = self.touched.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > RESIDENT_BUDGET {
            self.touched.store(0, Ordering::Relaxed);
            self.release();
        }
    }

    /// Drops the mapping's resident pages; later reads fault them back in from the page cache.
    pub fn release(&self) {
        // SAFETY: the mapping is read-only and shared: MADV_DONTNEED only unmaps its pages, whose
        // content is re-read from the unchanged file on the next access. A failure only means
        // the pages stay resident.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, 0, self.map.len())
        };
    }
}
