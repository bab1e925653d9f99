//! Sharded extraction for job arrays: which photos shard I of N takes (a stable hash of the path,
//! so adding photos moves only those), the shard's file name and what it records so that
//! [`crate::merge`] can rebuild the one-process file exactly, and where I/N come from (the flag,
//! a Slurm job array, a Kubernetes Indexed Job).

use serde::{Deserialize, Serialize};

use crate::dataset::Split;
use crate::{Error, Result};

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// A checked shard identity.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::Invalid(format!(
                "shard {index} of {count} does not exist: shards are numbered 0 to N-1 (e.g. --shard 0/4)"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Parses `I/N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "--shard {s:?} is not I/N (e.g. --shard 0/4 for the first of four shards)"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        Shard::new(
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        )
    }

    /// True when the photo at `rel` (relative to the data folder) belongs to this shard.
    pub fn takes(&self, rel: &str) -> bool {
        let mut d = runfs::Digest::new();
        d.field("shard", rel.as_bytes());
        let b = d.bytes();
        let h = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        h % self.count as u64 == self.index as u64
    }

    /// `<split>.shard-I-of-N` (the feature file's stem).
    pub fn stem(&self, split: &str) -> String {
        format!("{split}.shard-{}-of-{}", self.index, self.count)
    }

    /// The part of `split` this shard extracts, and each item's position in `split`.
    pub fn part(&self, split: &Split) -> (Split, Vec<usize>) {
        let (pos, items): (Vec<usize>, Vec<_>) = split
            .items
            .iter()
            .enumerate()
            .filter(|(_, it)| self.takes(&it.rel))
            .map(|(i, it)| (i, it.clone()))
            .unzip();
        (
            Split {
                name: split.name.clone(),
                items,
            },
            pos,
        )
    }
}

/// Where the shard identity came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    pub shard: Shard,
    /// e.g. `--shard 1/4`, or `Slurm job array (SLURM_ARRAY_TASK_ID=5, …)`.
    pub source: String,
}

/// The shard of this task from the environment of a job array: Slurm
/// (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`, or `shards`), or a
/// Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` of `shards`). `var` reads a variable.
pub fn from_env(var: &dyn Fn(&str) -> Option<String>, shards: Option<usize>) -> Result<Picked> {
    let num = |k: &str| -> Result<Option<usize>> {
        var(k)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| Error::Invalid(format!("{k}={v:?} is not a number")))
            })
            .transpose()
    };
    if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let count =
            match (shards, num("SLURM_ARRAY_TASK_COUNT")?) {
                (Some(n), _) | (None, Some(n)) => n,
                (None, None) => return Err(Error::Invalid(
                    "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: pass --shards N"
                        .into(),
                )),
            };
        if let Some(max) = num("SLURM_ARRAY_TASK_MAX")? {
            if max + 1 != min + count || id < min {
                return Err(Error::Invalid(format!(
                    "the Slurm array {min}-{max} with {count} tasks has gaps or a step: submit it as \
                     --array=0-{} so that every shard runs once",
                    count.saturating_sub(1)
                )));
            }
        }
        let shard = Shard::new(id.saturating_sub(min), count)?;
        return Ok(Picked {
            shard,
            source: format!(
                "Slurm job array (SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_MIN={min}, {count} tasks)"
            ),
        });
    }
    if let Some(index) = num("JOB_COMPLETION_INDEX")? {
        let count = shards.ok_or_else(|| {
            Error::Invalid(
                "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --shards N with N = the Job's completions".into(),
            )
        })?;
        return Ok(Picked {
            shard: Shard::new(index, count)?,
            source: format!(
                "Kubernetes Indexed Job (JOB_COMPLETION_INDEX={index}, --shards {count})"
            ),
        });
    }
    Err(Error::Invalid(
        "--shard without I/N needs a Slurm job array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job \
         (JOB_COMPLETION_INDEX) around it; pass --shard I/N otherwise"
            .into(),
    ))
}

/// What a shard's feature file records beyond an ordinary one: enough to put every row back in its
/// place and to recompute the one-process cache key without reading a photo again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub index: usize,
    pub count: usize,
    /// Photos in the whole split, and a digest of its listing (paths and labels, in order).
    pub total: usize,
    pub listing: String,
    /// The precision part of the cache key (`fp32`, or `int8:<model key>`).
    pub precision_tag: String,
    /// Every photo of the shard, readable or not: (position in the split, path, label, SHA-256 of
    /// its bytes), in split order.
    pub items: Vec<(usize, String, usize, String)>,
}

/// Digest of a split's listing (paths and labels in order): equal in every shard of one data folder.
pub fn listing_digest(split: &Split) -> String {
    let mut d = runfs::Digest::new();
    for it in &split.items {
        d.field("file", it.rel.as_bytes())
            .field("label", &(it.label as u64).to_le_bytes());
    }
    d.hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn shards_cover_every_photo_once_and_stay_put_when_photos_are_added() {
        let shards: Vec<Shard> = (0..4).map(|i| Shard::new(i, 4).unwrap()).collect();
        let names: Vec<String> = (0..400).map(|i| format!("train/c/{i}.jpg")).collect();
        let mut sizes = [0; 4];
        for n in &names {
            let owners: Vec<usize> = shards
                .iter()
                .filter(|s| s.takes(n))
                .map(|s| s.index)
                .collect();
            assert_eq!(owners.len(), 1, "{n}: {owners:?}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&k| (70..130).contains(&k)), "{sizes:?}");
        assert!(Shard::parse("4/4").is_err() && Shard::parse("x").is_err());
        assert_eq!(Shard::parse(" 1/3").unwrap(), Shard::new(1, 3).unwrap());
    }

    #[test]
    fn the_environment_names_the_shard() {
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_MAX", "8"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        let p = from_env(&slurm, None).unwrap();
        assert_eq!(p.shard, Shard::new(2, 4).unwrap());
        assert!(p.source.contains("Slurm"), "{}", p.source);
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MAX", "6"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        // 0-6:2 → 0, 2, 4, 6: would leave shards unrun.
        assert!(from_env(&stepped, None).is_err());
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        assert!(from_env(&k8s, None).is_err());
        assert_eq!(
            from_env(&k8s, Some(5)).unwrap().shard,
            Shard::new(3, 5).unwrap()
        );
        assert!(from_env(&env(&[]), Some(5)).is_err());
    }
}
