//! In-memory training data: flattened feature rows with class indices, sanity checks (finite
//! values, label range, at least two classes); the hold-out rule is `features::holdout`.

use crate::error::{Error, Result};

/// Feature samples of one split, each flattened to `dim` values, with class indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples {
    sample_shape: Vec<usize>,
    dim: usize,
    x: Vec<f32>,
    y: Vec<u32>,
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
            x,
            y: labels,
        })
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
        let y = labels
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
            .collect::<Result<Vec<u32>>>()?;
        Samples::new(sample_shape.to_vec(), x, y)
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

    /// All features, row after row.
    pub fn features(&self) -> &[f32] {
        &self.x
    }

    /// The class index of each sample.
    pub fn labels(&self) -> &[u32] {
        &self.y
    }

    /// The features of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
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
        if let Some(pos) = self.x.iter().position(|v| !v.is_finite()) {
            let bad = self.x.iter().filter(|v| !v.is_finite()).count();
            return Err(Error::Data(format!(
                "split {split:?}: {bad} feature values are NaN or infinite (first in sample {}); \
                 delete the feature file and re-run `bottleneck extract`",
                pos / self.dim
            )));
        }
        Ok(())
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Samples {
        let mut x = Vec::with_capacity(indices.len() * self.dim);
        for &i in indices {
            x.extend_from_slice(self.row(i));
        }
        Samples {
            sample_shape: self.sample_shape.clone(),
            dim: self.dim,
            x,
            y: indices.iter().map(|&i| self.y[i]).collect(),
        }
    }
}
