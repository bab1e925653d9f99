//! `bottleneck merge`: the shard files of a job array (`extract --shard I/N`) joined into the
//! ordinary `<split>.safetensors`, byte for byte what one process would have written, after
//! checking that every shard is there, that they agree (photos left out by `--exclude` included,
//! and kept in the merged file), and that every photo is in exactly one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::extract::key_of;
use crate::shard::ShardRecord;
use crate::store::{self, FeatureMeta, FeatureWriter, Skipped};
use crate::{Error, Result};

/// What `merge` wrote for one split.
#[derive(Debug, Clone, Serialize)]
pub struct MergedSplit {
    pub split: String,
    pub shards: usize,
    pub rows: usize,
    pub path: PathBuf,
    /// True when the merged file was already there with the same key.
    pub up_to_date: bool,
    pub seconds: f64,
}

/// One shard file: its header and where its rows start.
struct ShardFile {
    path: PathBuf,
    meta: FeatureMeta,
    record: ShardRecord,
    row_shape: Vec<usize>,
    data_start: u64,
}

/// `(split, index, count)` of a shard file name `<split>.shard-I-of-N.safetensors`.
fn parse_name(name: &str) -> Option<(String, usize, usize)> {
    let stem = name.strip_suffix(".safetensors")?;
    let (split, rest) = stem.rsplit_once(".shard-")?;
    let (i, n) = rest.split_once("-of-")?;
    Some((split.to_string(), i.parse().ok()?, n.parse().ok()?))
}

/// A shard file found in `RUN/features`: (index, count, path).
type Found = (usize, usize, PathBuf);

/// The shard files in `RUN/features`, by split.
fn list_shards(run: &Path) -> Result<BTreeMap<String, Vec<Found>>> {
    let dir = store::features_dir(run);
    let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Some((split, i, n)) = parse_name(&name) {
            out.entry(split).or_default().push((i, n, entry.path()));
        }
    }
    Ok(out)
}

fn open_shard(path: &Path) -> Result<ShardFile> {
    let (meta, shape) = store::read_header(path)?;
    let record = meta.shard.clone().ok_or_else(|| Error::Store {
        path: path.to_path_buf(),
        reason:
            "has a shard's name but no shard record; delete it and re-run its `extract --shard`"
                .into(),
    })?;
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| Error::io(path, e))?;
    Ok(ShardFile {
        path: path.to_path_buf(),
        meta,
        record,
        row_shape: shape.get(1..).unwrap_or_default().to_vec(),
        data_start: 8 + u64::from_le_bytes(len),
    })
}

/// Checks that the shards of `split` are one complete array and agree with each other.
fn check_shards(run: &Path, split: &str, found: &[Found]) -> Result<Vec<ShardFile>> {
    let mut counts: Vec<usize> = found.iter().map(|f| f.1).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.len() > 1 {
        return Err(Error::Dataset(format!(
            "{}: split {split:?} has shards of arrays of {} tasks; delete the files of the old array \
             (`{split}.shard-*-of-N.safetensors`) and merge again",
            store::features_dir(run).display(),
            counts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" and ")
        )));
    }
    let count = counts[0];
    let mut shards = Vec::with_capacity(count);
    for index in 0..count {
        let Some((_, _, path)) = found.iter().find(|f| f.0 == index) else {
            return Err(Error::Dataset(format!(
                "shard {index} of {count} of split {split:?} is missing ({} does not exist): run \
                 `bottleneck extract --shard {index}/{count}` with the same options, then merge again",
                store::feature_path(run, &format!("{split}.shard-{index}-of-{count}")).display()
            )));
        };
        shards.push(open_shard(path)?);
    }
    let first = &shards[0];
    for s in &shards[1..] {
        let mut diff = first.meta.provenance.diff(&s.meta.provenance);
        if s.meta.classes != first.meta.classes {
            diff.push("classes".into());
        }
        if s.record.listing != first.record.listing || s.record.total != first.record.total {
            diff.push(
                "the data folder's listing (photos added or removed between the tasks)".into(),
            );
        }
        if s.record.precision_tag != first.record.precision_tag {
            diff.push("the int8 model".into());
        }
        if s.meta.excluded != first.meta.excluded {
            diff.push("the photos left out (--exclude)".into());
        }
        if !diff.is_empty() {
            return Err(Error::Dataset(format!(
                "{} differs from {} in {}: run every shard with the same data and options, then merge again",
                s.path.display(),
                first.path.display(),
                diff.join("; ")
            )));
        }
    }
    Ok(shards)
}

/// Where each photo of the split is: `table[pos] = (shard, path, label, content)`; fails on a photo
/// missing or in two shards.
fn place(split: &str, shards: &[ShardFile]) -> Result<Vec<(usize, String, usize, String)>> {
    let total = shards[0].record.total;
    let mut table: Vec<Option<(usize, String, usize, String)>> = vec![None; total];
    for (s, sh) in shards.iter().enumerate() {
        for (pos, rel, label, content) in &sh.record.items {
            let slot = table.get_mut(*pos).ok_or_else(|| Error::Store {
                path: sh.path.clone(),
                reason: format!("photo {rel} at position {pos} of a split of {total}"),
            })?;
            if let Some((other, ..)) = slot {
                return Err(Error::Dataset(format!(
                    "{rel} (split {split:?}) is in two shards, {} and {}: the shards come from different \
                     arrays; re-run them with one --shard I/N each",
                    shards[*other].path.display(),
                    sh.path.display()
                )));
            }
            *slot = Some((s, rel.clone(), *label, content.clone()));
        }
    }
    table
        .into_iter()
        .enumerate()
        .map(|(pos, e)| {
            e.ok_or_else(|| {
                Error::Dataset(format!(
                    "photo {pos} of the {total} of split {split:?} is in no shard; re-run the shards \
                     of one array over the same data folder"
                ))
            })
        })
        .collect()
}

/// Merges the shards of one split into `RUN/features/<split>.safetensors`.
fn merge_split(run: &Path, split: &str, found: &[Found]) -> Result<MergedSplit> {
    let start = Instant::now();
    let shards = check_shards(run, split, found)?;
    let table = place(split, &shards)?;
    let first = &shards[0];
    let items: Vec<(String, usize, [u8; 32])> = table
        .iter()
        .map(|(_, rel, label, c)| {
            let mut d = [0u8; 32];
            hex::decode_to_slice(c, &mut d).map_err(|e| Error::Store {
                path: first.path.clone(),
                reason: format!("content digest of {rel}: {e}"),
            })?;
            Ok((rel.clone(), *label, d))
        })
        .collect::<Result<_>>()?;
    let key = key_of(
        &first.meta.provenance,
        &first.record.precision_tag,
        &first.meta.classes,
        &items,
        &first.meta.excluded,
    );
    let path = store::feature_path(run, split);
    let summary = |rows, up_to_date| MergedSplit {
        split: split.to_string(),
        shards: shards.len(),
        rows,
        path: path.clone(),
        up_to_date,
        seconds: start.elapsed().as_secs_f64(),
    };
    if let Ok((meta, _)) = store::read_header(&path) {
        if meta.cache_key == key && meta.shard.is_none() {
            return Ok(summary(meta.files.len(), true));
        }
    }
    let (writer, skipped) = write_rows(&path, &shards, &table, split)?;
    let rows = writer.rows();
    let meta = FeatureMeta {
        format_version: store::FORMAT_VERSION,
        split: split.to_string(),
        classes: first.meta.classes.clone(),
        provenance: first.meta.provenance.clone(),
        files: Vec::new(),
        skipped,
        excluded: first.meta.excluded.clone(),
        cache_key: key,
        shard: None,
    };
    writer.finish(meta)?;
    Ok(summary(rows, false))
}

/// Streams every row into a writer in split order; returns it with the skipped photos in order.
fn write_rows(
    path: &Path,
    shards: &[ShardFile],
    table: &[(usize, String, usize, String)],
    split: &str,
) -> Result<(FeatureWriter, Vec<Skipped>)> {
    let row_shape = shards
        .iter()
        .find(|s| !s.meta.files.is_empty())
        .map(|s| s.row_shape.clone())
        .ok_or_else(|| {
            Error::Dataset(format!(
                "split {split:?}: none of its {} photos could be read in any shard; fix or remove them",
                table.len()
            ))
        })?;
    let mut writer = FeatureWriter::create(path, &row_shape)?;
    let row_bytes = writer.row_len() * 4;
    let mut readers = shards
        .iter()
        .map(|s| {
            let mut r = BufReader::with_capacity(
                1 << 20,
                File::open(&s.path).map_err(|e| Error::io(&s.path, e))?,
            );
            r.seek(SeekFrom::Start(s.data_start))
                .map_err(|e| Error::io(&s.path, e))?;
            Ok(r)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut next_row = vec![0usize; shards.len()];
    // The unreadable photos of every shard by path (looked up once per photo).
    let unreadable: BTreeMap<&str, &Skipped> = shards
        .iter()
        .flat_map(|s| s.meta.skipped.iter().map(|k| (k.file.as_str(), k)))
        .collect();
    let mut skipped = Vec::new();
    let (mut bytes, mut row) = (vec![0u8; row_bytes], vec![0f32; row_bytes / 4]);
    for (s, rel, label, _) in table {
        let sh = &shards[*s];
        if let Some(&sk) = unreadable.get(rel.as_str()) {
            skipped.push(sk.clone());
            continue;
        }
        if sh.meta.files.get(next_row[*s]) != Some(rel) || sh.row_shape != row_shape {
            return Err(Error::Store {
                path: sh.path.clone(),
                reason: format!(
                    "its rows are not its photos in split order at {rel}; re-run this shard"
                ),
            });
        }
        readers[*s]
            .read_exact(&mut bytes)
            .map_err(|e| Error::io(&sh.path, e))?;
        for (v, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        writer.push(&row, *label as i64, rel)?;
        next_row[*s] += 1;
    }
    Ok((writer, skipped))
}

/// Merges every split that has shard files in `RUN/features`.
pub fn merge(run: &Path) -> Result<Vec<MergedSplit>> {
    let _lock = runfs::RunLock::acquire(run, "merge")?;
    let all = list_shards(run)?;
    if all.is_empty() {
        return Err(Error::Dataset(format!(
            "{} holds no shard files (<split>.shard-I-of-N.safetensors); run `bottleneck extract --shard I/N` \
             in each task of a job array first",
            store::features_dir(run).display()
        )));
    }
    all.iter()
        .map(|(split, found)| merge_split(run, split, found))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_name;

    #[test]
    fn shard_names() {
        assert_eq!(
            parse_name("train.shard-2-of-8.safetensors"),
            Some(("train".into(), 2, 8))
        );
        assert_eq!(parse_name("train.safetensors"), None);
        assert_eq!(
            parse_name("a.b.shard-0-of-1.safetensors"),
            Some(("a.b".into(), 0, 1))
        );
    }
}
