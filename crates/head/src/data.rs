//! Training data: flattened feature rows with class indices, held in memory or read in place from
//! a memory-mapped feature file (so that a split larger than memory trains in bounded memory),
//! and sanity checks (finite values, label range); the hold-out rule is `features::holdout`.

use std::borrow::Cow;
use std::sync::Arc;

use features::mapped::MappedFeatures;

use crate::error::{Error, Result};

/// Rows read by one step of [`Samples::for_each_chunk`].
pub const CHUNK_ROWS: usize = 256;

/// Where the feature values are.
#[derive(Clone, Debug)]
enum Values {
    Owned(Vec<f32>),
    /// Rows of a mapped file: sample `i` is row `index[i]` there, or row `i` without an index.
    Mapped {
        file: Arc<MappedFeatures>,
        index: Option<Arc<[usize]>>,
    },
}

/// Feature samples of one split, each flattened to `dim` values, with class indices.
#[derive(Clone, Debug)]
pub struct Samples {
    sample_shape: Vec<usize>,
    dim: usize,
    x: Values,
    y: Vec<u32>,
}

impl PartialEq for Samples {
    /// Same shape, labels and values (wherever they are held).
    fn eq(&self, other: &Samples) -> bool {
        self.sample_shape == other.sample_shape
            && self.y == other.y
            && (0..self.len()).all(|i| self.row(i) == other.row(i))
    }
}

impl Samples {
    /// Wraps `x` (`labels.len()` rows of `product(sample_shape)` values) and class indices.
    pub fn new(sample_shape: Vec<usize>, x: Vec<f32>, labels: Vec<u32>) -> Result<Self> {
        let dim: usize = sample_shape.iter().product();
        if dim == 0 {
            return Err(Error::Data(format!(
                "feature shape {sample_shape:?} has no values"
            )));
        }
        if x.len() != dim * labels.len() {
            return Err(Error::Data(format!(
                "{} feature values for {} labels of shape {sample_shape:?} (expected {})",
                x.len(),
                labels.len(),
                dim * labels.len()
            )));
        }
        Ok(Samples {
            sample_shape,
            dim,
            x: Values::Owned(x),
            y: labels,
        })
    }

    /// The rows of a mapped feature file, read in place, with labels checked against
    /// `num_classes`.
    pub fn mapped(file: Arc<MappedFeatures>, num_classes: usize) -> Result<Self> {
        let Some((_, sample_shape)) = file.shape.split_first() else {
            return Err(Error::Data("feature tensor has no dimensions".into()));
        };
        if file.row_len() == 0 {
            return Err(Error::Data(format!(
                "feature shape {sample_shape:?} has no values"
            )));
        }
        let y = labels_of(&file.labels, num_classes)?;
        Ok(Samples {
            sample_shape: sample_shape.to_vec(),
            dim: file.row_len(),
            x: Values::Mapped { file, index: None },
            y,
        })
    }

    /// True when the values are read in place from a mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.x, Values::Mapped { .. })
    }

    /// Like [`Samples::new`] from a feature file's `[N, ...]` shape and `i64` labels, checking
    /// that every label is a valid index into `num_classes`.
    pub fn from_store(
        shape: &[usize],
        x: Vec<f32>,
        labels: &[i64],
        num_classes: usize,
    ) -> Result<Self> {
        let Some((&n, sample_shape)) = shape.split_first() else {
            return Err(Error::Data("feature tensor has no dimensions".into()));
        };
        if n != labels.len() {
            return Err(Error::Data(format!(
                "{n} feature rows but {} labels",
                labels.len()
            )));
        }
        Samples::new(sample_shape.to_vec(), x, labels_of(labels, num_classes)?)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Values per sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Shape of one sample.
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    /// All features, row after row (see [`Samples::block`]; meant for small data: passes over
    /// large data use [`Samples::for_each_chunk`]).
    pub fn features(&self) -> Cow<'_, [f32]> {
        self.block(0, self.len())
    }

    /// Calls `f(first, rows)` on consecutive blocks of at most `rows` samples, in order; mapped
    /// values are read in place (or gathered, for a selection of a file's rows).
    pub fn for_each_chunk(
        &self,
        rows: usize,
        mut f: impl FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        for first in (0..self.len()).step_by(rows.max(1)) {
            f(first, &self.block(first, rows.min(self.len() - first)))?;
        }
        Ok(())
    }

    /// Samples `first..first + count`, row after row: in place when held in memory or mapped
    /// whole, gathered for a selection of a file's rows.
    pub fn block(&self, first: usize, count: usize) -> Cow<'_, [f32]> {
        match &self.x {
            Values::Owned(x) => Cow::Borrowed(&x[first * self.dim..(first + count) * self.dim]),
            Values::Mapped { file, index: None } => Cow::Borrowed(file.rows(first, count)),
            Values::Mapped { index: Some(_), .. } => {
                let mut buf = Vec::with_capacity(count * self.dim);
                for i in first..first + count {
                    buf.extend_from_slice(self.row(i));
                }
                Cow::Owned(buf)
            }
        }
    }

    /// The class index of each sample.
    pub fn labels(&self) -> &[u32] {
        &self.y
    }

    /// The features of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        match &self.x {
            Values::Owned(x) => &x[i * self.dim..(i + 1) * self.dim],
            Values::Mapped { file, index } => {
                file.rows(index.as_ref().map_or(i, |index| index[i]), 1)
            }
        }
    }

    /// Samples per class index (length `num_classes`).
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut c = vec![0; num_classes];
        for &y in &self.y {
            if let Some(slot) = c.get_mut(y as usize) {
                *slot += 1;
            }
        }
        c
    }

    /// Fails if any value is NaN or infinite, naming the split and the first bad sample.
    pub fn check_finite(&self, split: &str) -> Result<()> {
        let (mut first, mut bad) = (None, 0usize);
        self.for_each_chunk(CHUNK_ROWS, |start, x| {
            if let Some(pos) = x.iter().position(|v| !v.is_finite()) {
                first.get_or_insert(start + pos / self.dim);
                bad += x.iter().filter(|v| !v.is_finite()).count();
            }
            Ok(())
        })?;
        if let Some(sample) = first {
            return Err(Error::Data(format!(
                "split {split:?}: {bad} feature values are NaN or infinite (first in sample {sample}); \
                 delete the feature file and re-run `bottleneck extract`"
            )));
        }
        Ok(())
    }

    /// The samples at `indices`, in that order.
    /// The samples at `indices`, in that order (copied when held in memory, a view of the same
    /// file when mapped).
    pub fn select(&self, indices: &[usize]) -> Samples {
        let x = match &self.x {
            Values::Owned(_) => {
                let mut x = Vec::with_capacity(indices.len() * self.dim);
                for &i in indices {
                    x.extend_from_slice(self.row(i));
                }
                Values::Owned(x)
            }
            Values::Mapped { file, index } => Values::Mapped {
                file: file.clone(),
                index: Some(
                    indices
                        .iter()
                        .map(|&i| index.as_ref().map_or(i, |index| index[i]))
                        .collect(),
                ),
            },
        };
        Samples {
            sample_shape: self.sample_shape.clone(),
            dim: self.dim,
            x,
            y: indices.iter().map(|&i| self.y[i]).collect(),
        }
    }
}

/// Class indices from a feature file's labels, each checked against `num_classes`.
fn labels_of(labels: &[i64], num_classes: usize) -> Result<Vec<u32>> {
    labels
        .iter()
        .map(|&l| {
            u32::try_from(l)
                .ok()
                .filter(|&l| (l as usize) < num_classes)
                .ok_or_else(|| {
                    Error::Data(format!(
                        "label {l} is out of range for {num_classes} classes"
                    ))
                })
        })
        .collect()
}
