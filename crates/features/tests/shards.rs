//! Sharded extraction (`extract --shard I/N`) and `merge` on a synthetic folder with an unreadable
//! photo and a tiny VGG-shaped model: the merged files are byte for byte the one-process ones, a
//! one-process `extract` then finds them up to date, and a missing or foreign shard is refused by name.

use std::fs;
use std::path::Path;

use features::extract::{self, ExtractConfig};
use features::preprocess::Preprocess;
use features::shard::Shard;
use features::{merge, store};
use testkit::synth::{self, VggSpec};

fn config(data: &Path, model: &Path, run: &Path, shard: Option<Shard>) -> ExtractConfig {
    let mut c = ExtractConfig::new(data, model.to_string_lossy(), run);
    c.preprocess = Some(Preprocess::Caffe);
    c.size = 64;
    c.batch = 3;
    c.threads = Some(1);
    c.shard = shard;
    c
}

fn bytes(run: &Path, split: &str) -> Vec<u8> {
    fs::read(store::feature_path(run, split)).unwrap()
}

#[test]
fn merged_shards_equal_one_process_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 9), ("validation", 4)], 3).unwrap();
    fs::write(data.join("train/dark/broken.jpg"), b"not a jpeg").unwrap();
    let model = t.path().join("tiny.onnx");
    fs::write(&model, synth::vgg_like(&VggSpec::default())).unwrap();
    let (one, many) = (t.path().join("one"), t.path().join("many"));
    extract::extract(&config(&data, &model, &one, None), &mut |_| {}).unwrap();

    for i in 0..3 {
        let sh = Shard::new(i, 3).unwrap();
        extract::extract(&config(&data, &model, &many, Some(sh)), &mut |_| {}).unwrap();
    }
    // Shards are not splits until merged.
    assert!(store::list_splits(&many).unwrap().is_empty());
    let merged = merge::merge(&many).unwrap();
    assert_eq!(merged.len(), 2);
    for split in ["train", "validation"] {
        assert_eq!(bytes(&one, split), bytes(&many, split), "{split} differs");
    }
    let mut up = 0;
    extract::extract(&config(&data, &model, &many, None), &mut |e| {
        if let extract::Event::UpToDate { .. } = e {
            up += 1
        }
    })
    .unwrap();
    assert_eq!(
        up, 2,
        "a one-process extract finds the merged files up to date"
    );

    // A missing shard is named, and nothing is written.
    let broken = t.path().join("broken");
    for i in [0, 2] {
        let sh = Shard::new(i, 3).unwrap();
        extract::extract(&config(&data, &model, &broken, Some(sh)), &mut |_| {}).unwrap();
    }
    let err = merge::merge(&broken).unwrap_err().to_string();
    assert!(
        err.contains("shard 1 of 3") && err.contains("--shard 1/3"),
        "{err}"
    );
    assert!(store::list_splits(&broken).unwrap().is_empty());
    // Shards of two different arrays are refused.
    let sh = Shard::new(1, 4).unwrap();
    extract::extract(&config(&data, &model, &broken, Some(sh)), &mut |_| {}).unwrap();
    let err = merge::merge(&broken).unwrap_err().to_string();
    assert!(err.contains("3 and 4"), "{err}");
}

#[test]
fn exclude_sharded_then_merged_equals_one_process_and_keeps_the_record() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 6), ("validation", 2)], 9).unwrap();
    let model = t.path().join("tiny.onnx");
    fs::write(&model, synth::vgg_like(&VggSpec::default())).unwrap();
    let list = t.path().join("list.txt");
    fs::write(&list, "train/dark/dark.1.jpg\ntrain/bright/bright.4.png\n").unwrap();
    let with_list = |run: &Path, shard| ExtractConfig {
        exclude: Some(list.clone()),
        ..config(&data, &model, run, shard)
    };
    let (one, many) = (t.path().join("one"), t.path().join("many"));
    extract::extract(&with_list(&one, None), &mut |_| {}).unwrap();
    for i in 0..2 {
        let sh = Shard::new(i, 2).unwrap();
        extract::extract(&with_list(&many, Some(sh)), &mut |_| {}).unwrap();
    }
    merge::merge(&many).unwrap();
    for split in ["train", "validation"] {
        assert_eq!(bytes(&one, split), bytes(&many, split), "{split} differs");
    }
    let meta = store::read_meta(&store::feature_path(&many, "train")).unwrap();
    assert_eq!(
        meta.excluded,
        ["train/bright/bright.4.png", "train/dark/dark.1.jpg"]
    );
    assert_eq!(meta.files.len(), 10);
    assert_eq!(
        features::freshness::status(&with_list(&many, None), None).unwrap(),
        runfs::Status::Done
    );
    // Without the list, the same features are stale.
    let plain = config(&data, &model, &many, None);
    assert!(matches!(
        features::freshness::status(&plain, None).unwrap(),
        runfs::Status::Other(_)
    ));
}
