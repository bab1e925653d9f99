//! How `audit` scales: a synthetic run of ROWS training photos × DIM pooled features (CLASSES
//! clusters, 1 % near copies) with out-of-fold probabilities, audited without contact sheets; prints
//! the time and what was found. Peak memory: run it under `/usr/bin/time -v`.
//!
//! `cargo run --release -p bottleneck-audit --example audit_scale -- ROWS DIM [DIR]`

use std::path::PathBuf;

use features::provenance::Provenance;
use features::store::{feature_path, FeatureMeta, FeatureWriter};
use head::oof::{self, Oof, OofMeta};
use rand::{Rng, SeedableRng};

const CLASSES: usize = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args.get(1).map_or(Ok(200_000), |s| s.parse())?;
    let dim: usize = args.get(2).map_or(Ok(256), |s| s.parse())?;
    let tmp = tempfile::tempdir()?;
    let run = args.get(3).map_or(tmp.path().to_path_buf(), PathBuf::from);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(30);
    let centres: Vec<Vec<f32>> = (0..CLASSES)
        .map(|_| (0..dim).map(|_| rng.random_range(0.0..2.0f32)).collect())
        .collect();
    let path = feature_path(&run, "train");
    let mut w = FeatureWriter::create(&path, &[dim])?;
    let (mut labels, mut files, mut last) = (Vec::new(), Vec::new(), vec![0f32; dim]);
    for i in 0..rows {
        let y = i % CLASSES;
        let copy = i % 100 == 99;
        let row: Vec<f32> = if copy {
            last.iter()
                .map(|v| v + rng.random_range(0.0..0.05f32))
                .collect()
        } else {
            centres[y]
                .iter()
                .map(|c| (c + rng.random_range(-1.5..1.5f32)).max(0.0))
                .collect()
        };
        let label = if copy { labels[i - 1] } else { y as u32 };
        let file = format!("train/c{label}/{i}.jpg");
        w.push(&row, label as i64, &file)?;
        last = row;
        labels.push(label);
        files.push(file);
    }
    w.finish(FeatureMeta {
        format_version: 1,
        split: "train".into(),
        classes: (0..CLASSES).map(|c| format!("c{c}")).collect(),
        provenance: Provenance {
            model: "synthetic".into(),
            model_sha256: "00".repeat(32),
            output_tensor: "pooled".into(),
            preprocess: "lite".into(),
            image_size: 224,
            resize: "bilinear-crop".into(),
            precision: "fp32".into(),
            engine: None,
        },
        files: vec![],
        skipped: vec![],
        excluded: vec![],
        cache_key: "synthetic".into(),
        shard: None,
    })?;
    let mut probabilities = Vec::with_capacity(rows * CLASSES);
    for &y in &labels {
        let own = rng.random_range(0.3..1.0f32);
        for c in 0..CLASSES {
            probabilities.push(if c == y as usize {
                own
            } else {
                (1.0 - own) / (CLASSES - 1) as f32
            });
        }
    }
    let o = Oof {
        rows: (0..rows).collect(),
        probabilities,
        classes: CLASSES,
    };
    let meta = OofMeta {
        format_version: oof::FORMAT_VERSION,
        classes: (0..CLASSES).map(|c| format!("c{c}")).collect(),
        split: "train".into(),
        files,
        features_key: "synthetic".into(),
        folds: 5,
        all_rows: true,
    };
    std::fs::create_dir_all(run.join("head"))?;
    oof::save(&oof::path(&run), &o, &labels, &meta)?;
    drop(o);
    let started = std::time::Instant::now();
    let a = audit::run(&audit::AuditConfig::new(&run), &mut |_| {})?;
    println!(
        "{rows} rows × {dim}: audit {:.1} s; {} flagged, {} pairs (truncated {}), {} out of place",
        started.elapsed().as_secs_f64(),
        a.mislabeled.len(),
        a.duplicates.len(),
        a.duplicates_truncated,
        a.outliers.len()
    );
    Ok(())
}
