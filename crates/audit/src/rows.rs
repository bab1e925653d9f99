//! The rows an audit looks at: every photo of the run's feature splits, which of them are the
//! training photos the head saw (and their out-of-fold probabilities from `RUN/head/oof.safetensors`),
//! which are held out or in other splits, and each row's embedding (the features averaged over
//! space, optionally square-rooted, unit length) computed block by block from the mapped files.

use std::collections::HashMap;
use std::path::Path;

use features::mapped::MappedFeatures;
use features::store;
use head::oof::{self, OofFile};

use crate::error::{Error, Result};

/// Where a row sits: the training photos the head saw, or another group (a validation split, the
/// photos held out of a one-split folder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Train,
    Other(usize),
}

/// Every row of the run's feature files.
pub struct Rows {
    pub classes: Vec<String>,
    /// Photo of every row (relative to the data folder) and its given class.
    pub files: Vec<String>,
    pub labels: Vec<u32>,
    pub group: Vec<Group>,
    /// Names of the [`Group::Other`] groups, e.g. `validation`, `all (held out)`.
    pub other_names: Vec<String>,
    /// Row of the out-of-fold file of every row that has one.
    pub oof_row: Vec<Option<usize>>,
    pub oof: OofFile,
    /// `(split file, row in it)` of every row.
    source: Vec<(usize, usize)>,
    splits: Vec<MappedFeatures>,
    /// Values averaged into one embedding dimension (h·w of a spatial map, 1 for pooled features).
    spatial: usize,
    /// Embedding dimensions (channels).
    pub dim: usize,
}

/// How a row becomes an embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Embedding {
    /// The pooled features, unit length: where a photo lies among the classes (outliers).
    Plain,
    /// The square root of each (non-negative) pooled value, unit length: power normalisation,
    /// which keeps a few large activations from deciding the cosine (near-duplicates).
    Root,
}

/// The per-row lists [`Rows::open`] builds before it owns the files.
#[derive(Default)]
struct Listing {
    classes: Vec<String>,
    files: Vec<String>,
    labels: Vec<u32>,
    group: Vec<Group>,
    other_names: Vec<String>,
    oof_row: Vec<Option<usize>>,
    source: Vec<(usize, usize)>,
}

impl Rows {
    /// Opens the run's feature splits and the out-of-fold file `oof_path`, and checks that they
    /// belong together.
    pub fn open(run: &Path, oof_path: &Path) -> Result<Rows> {
        let oof = oof::load(oof_path)?;
        let names = store::list_splits(run)?;
        if !names.contains(&oof.meta.split) {
            return Err(Error::Run(format!(
                "{} has no {}.safetensors, the split the head was trained on; re-run `bottleneck fit` \
                 (or extract and train-head)",
                store::features_dir(run).display(),
                oof.meta.split
            )));
        }
        let mut splits = Vec::new();
        for name in &names {
            splits.push(MappedFeatures::open(&store::feature_path(run, name))?);
        }
        Rows::assemble(splits, oof)
    }

    // Over 80 lines: one pass that joins every split's rows to the out-of-fold file, checking
    // each split as it comes.
    fn assemble(splits: Vec<MappedFeatures>, oof: OofFile) -> Result<Rows> {
        let first = &splits[0];
        let shape = first.shape.clone();
        let dim = shape.get(1).copied().unwrap_or(0);
        let spatial: usize = shape.iter().skip(2).product();
        let by_file: HashMap<&str, usize> = oof
            .meta
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.as_str(), i))
            .collect();
        let mut r = Listing {
            classes: oof.meta.classes.clone(),
            ..Listing::default()
        };
        for (s, m) in splits.iter().enumerate() {
            let meta = &m.meta;
            if meta.classes != r.classes || m.shape[1..] != shape[1..] {
                return Err(Error::Run(format!(
                    "{} does not match the head's classes or the other splits' feature shape; \
                     re-run `bottleneck fit`",
                    m.path.display()
                )));
            }
            let is_train_split = meta.split == oof.meta.split;
            if is_train_split && meta.cache_key != oof.meta.features_key {
                return Err(Error::Run(format!(
                    "{} changed since the head was trained (its out-of-fold predictions are of other \
                     features); re-run `bottleneck train-head --force` or `bottleneck fit`, then audit",
                    m.path.display()
                )));
            }
            let mut other = None;
            for (i, file) in meta.files.iter().enumerate() {
                let found = if is_train_split {
                    by_file.get(file.as_str()).copied()
                } else {
                    None
                };
                let group = match found {
                    Some(_) => Group::Train,
                    // A one-split folder: its rows the probe did not see are the held-out ones
                    // (with the streamed solver only one fold was scored: the rest are train).
                    None if is_train_split && !oof.meta.all_rows => Group::Train,
                    None => {
                        let name = if is_train_split {
                            format!("{} (held out)", meta.split)
                        } else {
                            meta.split.clone()
                        };
                        *other.get_or_insert_with(|| {
                            r.other_names.push(name);
                            Group::Other(r.other_names.len() - 1)
                        })
                    }
                };
                let label = m.labels[i];
                if label < 0 || label as usize >= r.classes.len() {
                    return Err(Error::Run(format!(
                        "{}: row {i} has label {label}; re-run `bottleneck extract`",
                        m.path.display()
                    )));
                }
                if let Some(o) = found {
                    if oof.labels[o] != label as u32 {
                        return Err(Error::Run(format!(
                            "{file}: class {} in the features but {} in the head's out-of-fold file; \
                             re-run `bottleneck train-head --force`",
                            r.classes[label as usize], r.classes[oof.labels[o] as usize]
                        )));
                    }
                }
                r.files.push(file.clone());
                r.labels.push(label as u32);
                r.group.push(group);
                r.oof_row.push(found);
                r.source.push((s, i));
            }
        }
        Ok(Rows {
            classes: r.classes,
            files: r.files,
            labels: r.labels,
            group: r.group,
            other_names: r.other_names,
            oof_row: r.oof_row,
            oof,
            source: r.source,
            splits,
            spatial,
            dim,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The out-of-fold probabilities of row `i`, when it has them.
    pub fn probabilities(&self, i: usize) -> Option<&[f32]> {
        let k = self.classes.len();
        self.oof_row[i].map(|o| &self.oof.probabilities[o * k..(o + 1) * k])
    }

    /// The name of row `i`'s group (`train`, `validation`, …).
    pub fn group_name(&self, i: usize) -> &str {
        match self.group[i] {
            Group::Train => "train",
            Group::Other(g) => &self.other_names[g],
        }
    }

    /// The spatial average of row `i`'s features, written into `out` (`dim` values).
    fn pooled(&self, i: usize, out: &mut [f32]) {
        let (s, r) = self.source[i];
        let x = self.splits[s].rows(r, 1);
        let hw = self.spatial.max(1);
        for (o, ch) in out.iter_mut().zip(x.chunks(hw)) {
            *o = ch.iter().sum::<f32>() / hw as f32;
        }
    }

    /// Embeddings of rows `first..first + count`, `[count, dim]` row-major (a zero row stays
    /// zero).
    pub fn embeddings(&self, first: usize, count: usize, kind: Embedding) -> Vec<f32> {
        let d = self.dim;
        let mut out = vec![0f32; count * d];
        for (k, e) in out.chunks_mut(d).enumerate() {
            self.pooled(first + k, e);
            if kind == Embedding::Root {
                e.iter_mut().for_each(|v| *v = v.max(0.0).sqrt());
            }
            let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                e.iter_mut().for_each(|v| *v /= norm);
            }
        }
        out
    }
}
