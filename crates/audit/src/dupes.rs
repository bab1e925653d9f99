//! Blocked passes over all pairs of embeddings, [`BLOCK`] rows against [`BLOCK`] rows at a time
//! (memory bounded whatever the number of photos): near-duplicate photos by their cosine — within
//! a group (two copies among the training photos) and across groups (a training photo that is also
//! in validation: a leak that inflates validation numbers), at most [`MAX_PAIRS`] of them — and,
//! for every photo, its [`NEIGHBOURS`] most similar training photos (what [`crate::outliers`]
//! scores). Pairs a little below the cosine threshold are kept when their pixels match
//! ([`crate::fingerprint`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use train::kernels::{product, MatRef, Threads};

use crate::fingerprint;
use crate::rows::{Embedding, Group, Rows};

/// Rows of each side of one block of products.
pub const BLOCK: usize = 2048;

/// Most pairs kept (the most similar ones).
pub const MAX_PAIRS: usize = 100_000;

/// Training neighbours kept per photo: the outlier score is the distance to the farthest of them,
/// so a few out-of-place photos alike (a handful of street scenes among cats) do not vouch for
/// each other.
pub const NEIGHBOURS: usize = 10;

/// The `NEIGHBOURS` largest cosines to training photos seen so far, in descending order.
#[derive(Clone, Debug)]
pub struct Nearest {
    pub cos: Vec<f32>,
}

impl Nearest {
    fn new() -> Self {
        Nearest {
            cos: Vec::with_capacity(NEIGHBOURS + 1),
        }
    }

    fn offer(&mut self, c: f32) {
        if self.cos.len() == NEIGHBOURS && self.cos.last().is_some_and(|&m| c <= m) {
            return;
        }
        let at = self.cos.partition_point(|&v| v >= c);
        self.cos.insert(at, c);
        self.cos.truncate(NEIGHBOURS);
    }

    /// The cosine to the farthest of the kept neighbours (`None` without any).
    pub fn kth(&self) -> Option<f32> {
        self.cos.last().copied()
    }
}

/// Two photos whose embeddings are nearly the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DuplicatePair {
    /// The photo to look at (for a leak, the training copy), its group and given class.
    pub path: String,
    pub split: String,
    pub given: String,
    /// The photo it nearly equals.
    pub partner: String,
    pub partner_split: String,
    pub partner_given: String,
    pub cosine: f32,
    /// True when the two photos are in different groups (train ↔ validation).
    pub leak: bool,
    /// For a pair below the cosine threshold confirmed by its pixels: how many bits its
    /// perceptual hashes differ by ([`crate::fingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_bits: Option<u32>,
}

impl DuplicatePair {
    /// Why the two are one photo: `cosine 0.934`, or `cosine 0.842, pixels 3 bits apart`.
    pub fn evidence(&self) -> String {
        match self.hash_bits {
            Some(b) => format!("cosine {:.3}, pixels {b} bits apart", self.cosine),
            None => format!("cosine {:.3}", self.cosine),
        }
    }
}

/// What the search found.
pub struct Found {
    pub pairs: Vec<DuplicatePair>,
    /// True when more than [`MAX_PAIRS`] pairs passed the threshold (the most similar are kept).
    pub truncated: bool,
    /// Pairs below the threshold checked by their pixels, and how many of them matched.
    pub checked: usize,
    pub confirmed: usize,
}

/// What [`blocked`] calls for each pair of blocks: `(first row of block a, first row of block b,
/// rows of block b, cosines [rows of a, rows of b])`, `a ≤ b`.
type Visit<'a> = dyn FnMut(usize, usize, usize, &[f32]) + 'a;

/// Calls `visit` for every pair of blocks of rows.
fn blocked(rows: &Rows, kind: Embedding, visit: &mut Visit<'_>) {
    let (n, d) = (rows.len(), rows.dim);
    for a in (0..n).step_by(BLOCK) {
        let na = BLOCK.min(n - a);
        let ea = rows.embeddings(a, na, kind);
        for b in (a..n).step_by(BLOCK) {
            let nb = BLOCK.min(n - b);
            let eb_owned;
            let eb = if b == a {
                &ea
            } else {
                eb_owned = rows.embeddings(b, nb, kind);
                &eb_owned
            };
            let s = product(MatRef::new(&ea, na, d), MatRef::t(eb, nb, d), Threads::All);
            visit(a, b, nb, &s);
        }
    }
}

/// Every row's [`NEIGHBOURS`] most similar training photos (itself excluded), by the cosine of
/// [`Embedding::Plain`] embeddings.
pub fn nearest(rows: &Rows) -> Vec<Nearest> {
    let train: Vec<bool> = rows.group.iter().map(|g| *g == Group::Train).collect();
    let mut nearest = vec![Nearest::new(); rows.len()];
    blocked(rows, Embedding::Plain, &mut |a, b, nb, s| {
        for (i, row) in s.chunks(nb).enumerate() {
            let from = if b == a { i + 1 } else { 0 };
            for (j, &c) in row.iter().enumerate().skip(from) {
                if train[b + j] {
                    nearest[a + i].offer(c);
                }
                if train[a + i] {
                    nearest[b + j].offer(c);
                }
            }
        }
    });
    nearest
}

/// Every pair of rows whose [`Embedding::Root`] cosine is at least `lower`, most similar first
/// (at most [`MAX_PAIRS`]; the flag says when more passed).
fn candidates(rows: &Rows, lower: f32) -> (Vec<(f32, usize, usize)>, bool) {
    let mut hits: Vec<(f32, usize, usize)> = Vec::new();
    let mut truncated = false;
    blocked(rows, Embedding::Root, &mut |a, b, nb, s| {
        for (i, row) in s.chunks(nb).enumerate() {
            let from = if b == a { i + 1 } else { 0 };
            for (j, &c) in row.iter().enumerate().skip(from) {
                if c >= lower {
                    hits.push((c, a + i, b + j));
                }
            }
        }
        if hits.len() > MAX_PAIRS {
            hits.sort_by(|x, y| y.0.total_cmp(&x.0));
            hits.truncate(MAX_PAIRS);
            truncated = true;
        }
    });
    hits.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    (hits, truncated)
}

/// Near-duplicate pairs, most similar first: every pair whose cosine is at least `threshold`,
/// and, when the photos can be read from `data`, the pairs from
/// [`fingerprint::CANDIDATE_COSINE`] whose pixels match ([`fingerprint::check`]).
pub fn find(rows: &Rows, threshold: f32, data: Option<&Path>) -> Found {
    let lower = match data {
        Some(_) => threshold.min(fingerprint::CANDIDATE_COSINE),
        None => threshold,
    };
    let (hits, truncated) = candidates(rows, lower);
    let (sure, unsure): (Vec<_>, Vec<_>) = hits.into_iter().partition(|h| h.0 >= threshold);
    let unsure = &unsure[..unsure.len().min(fingerprint::MAX_CHECKED)];
    let bits = data.map_or_else(Vec::new, |d| fingerprint::check(d, rows, unsure));
    let mut pairs: Vec<DuplicatePair> = sure
        .into_iter()
        .map(|(c, i, j)| pair(rows, c, i, j, None))
        .collect();
    let confirmed: Vec<DuplicatePair> = unsure
        .iter()
        .zip(&bits)
        .filter_map(|(&(c, i, j), b)| {
            b.filter(|&b| b <= fingerprint::MAX_DISTANCE)
                .map(|b| pair(rows, c, i, j, Some(b)))
        })
        .collect();
    let (checked, n_confirmed) = (bits.len(), confirmed.len());
    pairs.extend(confirmed);
    Found {
        pairs,
        truncated,
        checked,
        confirmed: n_confirmed,
    }
}

/// The pair of rows `i < j`, the photo to act on first: for a leak the training copy, within a
/// group the later of the two.
fn pair(rows: &Rows, cosine: f32, i: usize, j: usize, hash_bits: Option<u32>) -> DuplicatePair {
    let leak = rows.group[i] != rows.group[j];
    let train_first = rows.group[i] == Group::Train;
    let (p, q) = if leak && train_first { (i, j) } else { (j, i) };
    DuplicatePair {
        path: rows.files[p].clone(),
        split: rows.group_name(p).to_string(),
        given: rows.classes[rows.labels[p] as usize].clone(),
        partner: rows.files[q].clone(),
        partner_split: rows.group_name(q).to_string(),
        partner_given: rows.classes[rows.labels[q] as usize].clone(),
        cosine: cosine.min(1.0),
        leak,
        hash_bits,
    }
}
