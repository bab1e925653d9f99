//! A memory-mapped feature file: the same rows as the file read into memory, the same refusals of
//! damaged files, and a resident set that stays bounded while every row is read.

use features::mapped::{MappedFeatures, RESIDENT_BUDGET};
use features::provenance::Provenance;
use features::store::{FeatureFile, FeatureMeta, FeatureWriter};

fn meta() -> FeatureMeta {
    FeatureMeta {
        format_version: 1,
        split: "train".into(),
        classes: vec!["a".into(), "b".into()],
        provenance: Provenance {
            model: "m".into(),
            model_sha256: "00".repeat(32),
            output_tensor: "block5_pool".into(),
            preprocess: "caffe".into(),
            image_size: 150,
            resize: "nearest".into(),
            precision: "fp32".into(),
            engine: None,
        },
        files: vec![],
        skipped: vec![],
        excluded: vec![],
        cache_key: "k".into(),
        shard: None,
    }
}

/// `rows` rows of [512, 4, 4] whose values encode their position.
fn write(path: &std::path::Path, rows: usize) {
    let mut w = FeatureWriter::create(path, &[512, 4, 4]).unwrap();
    let mut row = vec![0f32; 8192];
    for i in 0..rows {
        row.iter_mut()
            .enumerate()
            .for_each(|(j, v)| *v = (i * 8192 + j) as f32);
        w.push(&row, (i % 2) as i64, &format!("x/{i}.jpg")).unwrap();
    }
    w.finish(meta()).unwrap();
}

/// Resident file-backed memory of this process (`RssFile` + `RssShmem` in /proc/self/status: a
/// temporary folder on tmpfs maps as shared memory), in bytes.
fn rss_file() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = |key: &str| -> usize {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/self/status"))
    };
    (kb("RssFile:") + kb("RssShmem:")) * 1024
}

#[test]
fn mapped_rows_equal_the_rows_read_into_memory() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("train.safetensors");
    write(&path, 40);
    let m = MappedFeatures::open(&path).unwrap();
    let f = FeatureFile::read(&path).unwrap();
    assert_eq!((m.len(), m.row_len()), (40, 8192));
    assert_eq!(m.shape, f.shape);
    assert_eq!(m.labels, f.labels);
    assert_eq!(m.meta, f.meta);
    assert_eq!(m.rows(0, 40), &f.features[..]);
    assert_eq!(m.rows(7, 2), &f.features[7 * 8192..9 * 8192]);
}

#[test]
fn damaged_files_are_refused_by_name_as_when_read() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("train.safetensors");
    write(&path, 4);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = MappedFeatures::open(&path).unwrap_err().to_string();
    assert!(e.contains("train.safetensors"), "{e}");
    std::fs::write(&path, b"not a feature file").unwrap();
    let e = MappedFeatures::open(&path).unwrap_err().to_string();
    assert!(e.contains("re-run `bottleneck extract`"), "{e}");
}

#[test]
fn reading_every_row_keeps_the_resident_set_within_the_budget() {
    // 3 × the budget of rows, read twice, block by block and row by row.
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("train.safetensors");
    let rows = 3 * RESIDENT_BUDGET / (8192 * 4);
    write(&path, rows);
    let m = MappedFeatures::open(&path).unwrap();
    let before = rss_file();
    let (mut peak, mut sum) = (0usize, 0f64);
    for first in (0..rows).step_by(64) {
        sum += m.rows(first, 64.min(rows - first))[5] as f64;
        peak = peak.max(rss_file().saturating_sub(before));
    }
    for i in (0..rows).rev() {
        sum += m.rows(i, 1)[8191] as f64;
        if i % 97 == 0 {
            peak = peak.max(rss_file().saturating_sub(before));
        }
    }
    assert!(sum > 0.0);
    let file = rows * 8192 * 4;
    assert!(
        peak <= RESIDENT_BUDGET + (8 << 20),
        "{} MiB resident while reading a {} MiB file (budget {} MiB)",
        peak >> 20,
        file >> 20,
        RESIDENT_BUDGET >> 20
    );
}
