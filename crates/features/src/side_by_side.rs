//! Feature files of several backbones joined row by row: what a combination of them would give,
//! measured without running it (`fit` tries a combination on its parts' features first).

use std::path::Path;

use crate::mapped::MappedFeatures;
use crate::provenance::Provenance;
use crate::store::{self, FeatureWriter};
use crate::{Error, Result};

/// Rows joined per write (bounded memory whatever the number of photos).
const CHUNK: usize = 256;

/// Writes `RUN/features/<split>.safetensors` for every split the first of `parts` (run folders) has:
/// each row the parts' rows of the same photo, flattened and concatenated in order, recorded as
/// computed by `provenance`. The parts must hold the same photos, labels and classes in the same order.
pub fn join(parts: &[&Path], run: &Path, provenance: &Provenance) -> Result<()> {
    let first = parts
        .first()
        .ok_or_else(|| Error::Invalid("nothing to join: no part given".into()))?;
    for split in store::list_splits(first)? {
        let files: Vec<MappedFeatures> = parts
            .iter()
            .map(|p| MappedFeatures::open(&store::feature_path(p, &split)))
            .collect::<Result<_>>()?;
        join_split(&files, &store::feature_path(run, &split), provenance)?;
    }
    Ok(())
}

fn join_split(files: &[MappedFeatures], target: &Path, provenance: &Provenance) -> Result<()> {
    let head = &files[0];
    if let Some(other) = files.iter().find(|f| {
        f.meta.files != head.meta.files
            || f.labels != head.labels
            || f.meta.classes != head.meta.classes
    }) {
        return Err(Error::Invalid(format!(
            "{} and {} do not hold the same photos in the same order: extract both from the same folder",
            head.path.display(),
            other.path.display()
        )));
    }
    let width: usize = files.iter().map(MappedFeatures::row_len).sum();
    let mut out = FeatureWriter::create(target, &[width])?;
    let mut row = vec![0f32; width];
    for first in (0..head.len()).step_by(CHUNK) {
        let count = CHUNK.min(head.len() - first);
        let blocks: Vec<&[f32]> = files.iter().map(|f| f.rows(first, count)).collect();
        for r in 0..count {
            let mut at = 0;
            for (f, block) in files.iter().zip(&blocks) {
                let d = f.row_len();
                row[at..at + d].copy_from_slice(&block[r * d..(r + 1) * d]);
                at += d;
            }
            out.push(&row, head.labels[first + r], &head.meta.files[first + r])?;
        }
    }
    let mut meta = head.meta.clone();
    meta.provenance = provenance.clone();
    meta.cache_key = String::new();
    out.finish(meta)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FeatureFile, FeatureMeta};

    fn provenance(model: &str) -> Provenance {
        Provenance {
            model: model.into(),
            model_sha256: String::new(),
            output_tensor: "pooled".into(),
            preprocess: "lite".into(),
            image_size: 32,
            resize: "bilinear-crop".into(),
            precision: "fp32".into(),
            engine: None,
        }
    }

    /// A run with one `train` split of `rows` rows of `width` values `base + row + column / 100`.
    fn part(run: &Path, width: usize, base: f32, files: &[&str]) {
        let mut w = FeatureWriter::create(&store::feature_path(run, "train"), &[width]).unwrap();
        for (r, f) in files.iter().enumerate() {
            let row: Vec<f32> = (0..width)
                .map(|c| base + r as f32 + c as f32 / 100.0)
                .collect();
            w.push(&row, (r % 2) as i64, f).unwrap();
        }
        w.finish(FeatureMeta {
            format_version: store::FORMAT_VERSION,
            split: "train".into(),
            classes: vec!["a".into(), "b".into()],
            provenance: provenance("part"),
            files: Vec::new(),
            skipped: Vec::new(),
            excluded: Vec::new(),
            cache_key: "k".into(),
            shard: None,
        })
        .unwrap();
    }

    #[test]
    fn rows_of_the_same_photo_are_joined_in_order_and_other_photos_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, c, out) = (
            t.path().join("a"),
            t.path().join("b"),
            t.path().join("c"),
            t.path().join("out"),
        );
        let files: Vec<String> = (0..300).map(|i| format!("train/a/{i}.jpg")).collect();
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        part(&a, 3, 0.0, &names);
        part(&b, 2, 1000.0, &names);
        join(&[a.as_path(), b.as_path()], &out, &provenance("a+b")).unwrap();
        let f = FeatureFile::read(&store::feature_path(&out, "train")).unwrap();
        assert_eq!(f.shape, vec![300, 5]);
        assert_eq!(f.meta.files, files);
        assert_eq!(f.meta.provenance.model, "a+b");
        assert_eq!(f.labels[299], 1);
        // Row 257 crosses a chunk boundary: a's three values, then b's two.
        assert_eq!(
            &f.features[257 * 5..258 * 5],
            &[257.0, 257.01, 257.02, 1257.0, 1257.01]
        );

        let mut other = names.clone();
        other[7] = "train/b/x.jpg";
        part(&c, 2, 0.0, &other);
        let err = join(
            &[a.as_path(), c.as_path()],
            &t.path().join("bad"),
            &provenance("a+c"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("same photos"), "{err}");
        assert!(!store::feature_path(&t.path().join("bad"), "train").exists());
    }
}
