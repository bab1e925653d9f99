//! The seeded, stratified hold-out of a data folder without a validation split: which photos
//! validate is decided from each photo's path (and the seed) alone, never from listing order or
//! decoding, so `train-head`, `finetune` and `scratch` hold out the same photos, and the choice is
//! recorded ([`HoldOut`]) so a later stage can check that it sees the same ones.

use serde::{Deserialize, Serialize};

use crate::dataset::{Item, Split};
use crate::{Error, Result};

/// The fraction held out when the data folder is one split (`DIR/<class>/`).
pub const DEFAULT_FRACTION: f64 = 0.2;

/// The seed of the hold-out every stage uses: fixed, so changing a stage's training `--seed`
/// keeps the same validation photos (and `scratch`, the head and fine-tuning share them).
pub const DEFAULT_SEED: u64 = 0;

/// What a stage held out, as recorded in its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldOut {
    /// The split that was divided (`all` for `DIR/<class>/`, or `train` with `--val-split`).
    pub split: String,
    pub fraction: f64,
    pub seed: u64,
    /// How many photos were held out.
    pub count: usize,
    /// Digest of the held-out photos' paths (relative to the data folder, sorted).
    pub digest: String,
}

impl HoldOut {
    /// How the validation data is described in metrics and reports.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} held out ({} photos, stratified, seed {})",
            self.fraction, self.split, self.count, self.seed
        )
    }
}

/// Checks that `fraction` leaves both parts non-empty in principle.
pub fn check_fraction(fraction: f64) -> Result<()> {
    if fraction > 0.0 && fraction < 1.0 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "hold-out fraction {fraction} is out of range; it must be between 0 and 1 (e.g. 0.2)"
        )))
    }
}

/// The rank of a photo within its class: the first 8 bytes of SHA-256(seed, path).
fn rank(rel: &str, seed: u64) -> u64 {
    let mut d = runfs::Digest::new();
    d.field("seed", &seed.to_le_bytes())
        .field("path", rel.as_bytes());
    let b = d.bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// How many of `n` photos of a class [`held_out`] holds out with `fraction`.
fn held_of(n: usize, fraction: f64) -> usize {
    (((n as f64) * fraction).round() as usize).min(n.saturating_sub(1))
}

/// Why holding out `fraction` of classes of `counts` photos leaves no validation photo, and what
/// would work: a larger fraction (the smallest that does), more photos, or a validation folder.
/// With one photo per class no fraction can work (every class keeps a training photo).
pub fn nothing_held_out(counts: &[usize], fraction: f64) -> String {
    let total: usize = counts.iter().sum();
    let largest = counts.iter().copied().max().unwrap_or(0);
    // The fewest photos one class needs for `fraction` to hold out one of them.
    let needed = (2..=1_000_000)
        .find(|&n| held_of(n, fraction) > 0)
        .unwrap_or(usize::MAX);
    let folder = "or put validation photos in their own folder (DIR/train/<class>/ and \
                  DIR/validation/<class>/)";
    let more = format!(
        "add photos (with {fraction} held out, a class needs at least {needed} so that one of them \
         validates and the rest train)"
    );
    let start = format!(
        "holding out {fraction} of {total} photo{} ({largest} in the largest class) leaves no validation photos",
        if total == 1 { "" } else { "s" }
    );
    if largest < 2 {
        return format!(
            "{start}: no fraction can work, since every class keeps at least one photo for training \
             and no class has more than one; {more}, {folder}"
        );
    }
    // The smallest fraction, in hundredths, that holds out one photo of the largest class.
    let smallest = (1..100)
        .map(|k| k as f64 / 100.0)
        .find(|&f| held_of(largest, f) > 0)
        .unwrap_or(0.5);
    format!(
        "{start}: {more}, hold out at least {smallest} (`bottleneck train-head --val-split {smallest}`; \
         `fit` always holds out {DEFAULT_FRACTION}), {folder}"
    )
}

/// `flags[i]` is true when photo `i` (`(relative path, label)`) is held out: within each class
/// the photos are ordered by [`rank`] and the first `round(n · fraction)` of them (at most
/// `n − 1`, so every class keeps a training photo) validate. Photos none of which would validate
/// are an error saying what would work ([`nothing_held_out`]).
pub fn held_out(items: &[(&str, usize)], fraction: f64, seed: u64) -> Result<Vec<bool>> {
    check_fraction(fraction)?;
    let classes = items.iter().map(|&(_, l)| l + 1).max().unwrap_or(0);
    let mut counts = vec![0usize; classes];
    for &(_, l) in items {
        counts[l] += 1;
    }
    if !items.is_empty() && counts.iter().all(|&n| held_of(n, fraction) == 0) {
        return Err(Error::Dataset(nothing_held_out(&counts, fraction)));
    }
    let mut flags = vec![false; items.len()];
    for class in 0..classes {
        let mut idx: Vec<(u64, &str, usize)> = items
            .iter()
            .enumerate()
            .filter(|(_, &(_, l))| l == class)
            .map(|(i, &(rel, _))| (rank(rel, seed), rel, i))
            .collect();
        idx.sort_unstable();
        for &(_, _, i) in idx.iter().take(held_of(idx.len(), fraction)) {
            flags[i] = true;
        }
    }
    Ok(flags)
}

/// The record of holding out `val` (relative paths) of `split`.
pub fn record<'a>(
    split: &str,
    fraction: f64,
    seed: u64,
    val: impl IntoIterator<Item = &'a str>,
) -> HoldOut {
    let mut files: Vec<&str> = val.into_iter().collect();
    files.sort_unstable();
    let mut d = runfs::Digest::new();
    for f in &files {
        d.part(f.as_bytes());
    }
    HoldOut {
        split: split.to_string(),
        fraction,
        seed,
        count: files.len(),
        digest: d.hex(),
    }
}

/// The label of a photo from its path relative to the data folder: the class folder right under
/// `split` (or the first folder for the one-split layout `all`).
pub fn label_of(rel: &str, split: &str, classes: &[String]) -> Option<usize> {
    let mut parts = rel.split('/');
    if split != "all" {
        parts.next()?;
    }
    let class = parts.next()?;
    classes.iter().position(|c| c == class)
}

impl Split {
    /// Divides this split into `(train, validation, record)` by [`held_out`].
    pub fn hold_out(&self, fraction: f64, seed: u64) -> Result<(Split, Split, HoldOut)> {
        let keys: Vec<(&str, usize)> = self
            .items
            .iter()
            .map(|it| (it.rel.as_str(), it.label))
            .collect();
        let flags = held_out(&keys, fraction, seed)?;
        let (mut train, mut val): (Vec<Item>, Vec<Item>) = (Vec::new(), Vec::new());
        for (it, v) in self.items.iter().zip(flags) {
            if v { &mut val } else { &mut train }.push(it.clone());
        }
        if val.is_empty() {
            // (Only with no photos at all: otherwise `held_out` has said what would work.)
            return Err(Error::Dataset(format!(
                "split {:?} has no photos to hold out {fraction} of for validation",
                self.name
            )));
        }
        let rec = record(
            &self.name,
            fraction,
            seed,
            val.iter().map(|it| it.rel.as_str()),
        );
        let part = |suffix: &str, items| Split {
            name: format!("{}:{suffix}", self.name),
            items,
        };
        Ok((part("train", train), part("validation", val), rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: &[usize]) -> Vec<(String, usize)> {
        let mut v = Vec::new();
        for (class, &k) in n.iter().enumerate() {
            for i in 0..k {
                v.push((format!("c{class}/img{i}.jpg"), class));
            }
        }
        v
    }

    fn keys(v: &[(String, usize)]) -> Vec<(&str, usize)> {
        v.iter().map(|(r, l)| (r.as_str(), *l)).collect()
    }

    #[test]
    fn stratified_counts_per_class() {
        let v = items(&[300, 40, 1]);
        let flags = held_out(&keys(&v), 0.2, 0).unwrap();
        let per = |c: usize| {
            v.iter()
                .zip(&flags)
                .filter(|((_, l), &f)| *l == c && f)
                .count()
        };
        assert_eq!((per(0), per(1), per(2)), (60, 8, 0));
    }

    #[test]
    fn independent_of_order_and_of_other_photos() {
        let v = items(&[50, 50]);
        let flags = held_out(&keys(&v), 0.2, 3).unwrap();
        let mut rev = v.clone();
        rev.reverse();
        let mut flags_rev = held_out(&keys(&rev), 0.2, 3).unwrap();
        flags_rev.reverse();
        assert_eq!(flags, flags_rev);
        // A different seed holds out different photos.
        assert_ne!(flags, held_out(&keys(&v), 0.2, 4).unwrap());
    }

    #[test]
    fn record_is_order_free_and_fraction_checked() {
        let a = record("all", 0.2, 0, ["b", "a"]);
        let b = record("all", 0.2, 0, ["a", "b"]);
        assert_eq!(a, b);
        assert_ne!(a.digest, record("all", 0.2, 0, ["a", "c"]).digest);
        assert!(held_out(&[("a", 0)], 1.0, 0).is_err());
        assert!(held_out(&[("a", 0)], 0.0, 0).is_err());
    }

    #[test]
    fn nothing_held_out_says_what_would_work() {
        // One photo per class: no fraction can work.
        let one = items(&[1, 1]);
        let e = held_out(&keys(&one), 0.2, 0).unwrap_err().to_string();
        assert!(e.contains("no fraction can work"), "{e}");
        assert!(e.contains("at least 3"), "{e}");
        assert!(e.contains("DIR/validation/<class>/"), "{e}");
        assert!(!e.contains("larger fraction"), "{e}");
        // Two photos in the largest class: 0.25 holds one out, and it does.
        let two = items(&[2, 1]);
        let e = held_out(&keys(&two), 0.2, 0).unwrap_err().to_string();
        assert!(e.contains("hold out at least 0.25"), "{e}");
        let flags = held_out(&keys(&two), 0.25, 0).unwrap();
        assert_eq!(flags.iter().filter(|&&f| f).count(), 1);
    }

    #[test]
    fn labels_from_paths() {
        let classes = vec!["cats".to_string(), "dogs".to_string()];
        assert_eq!(label_of("dogs/x/1.jpg", "all", &classes), Some(1));
        assert_eq!(label_of("train/cats/1.jpg", "train", &classes), Some(0));
        assert_eq!(label_of("birds/1.jpg", "all", &classes), None);
    }
}
