//! `extract --exclude LIST` through the real binary on synthetic photos and the tiny synthetic VGG:
//! the listed photos are left out of the feature files and recorded there, a second run with the
//! same list reuses them, a list naming no photo of the folder writes nothing, and without a list
//! (or with an empty one) the feature files are what they always were.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{extract, fails, ok, stderr, tiny_model};

/// Synthetic photos (`train` 4 and `validation` 2 per class), the tiny model, and a run path.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = dir.join("data");
    testkit::write_synthetic(&data, &[("train", 4), ("validation", 2)], 5).unwrap();
    (data, tiny_model(dir), dir.join("run"))
}

/// The raw `__metadata__` of a feature file.
fn raw_metadata(path: &Path) -> HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    st.metadata().clone().unwrap_or_default()
}

#[test]
fn extract_exclude_leaves_the_listed_photos_out_and_records_them() {
    let t = tempfile::tempdir().unwrap();
    let (data, model, run) = setup(t.path());
    // audit.csv as a user left it: a header, a quoted field with a comma, a Windows path.
    let list = t.path().join("audit.csv");
    std::fs::write(
        &list,
        "split,path,issue,score,given,suggested,partner\n\
         train,train/bright/bright.1.jpg,\"mislabel, likely\",0.91,bright,dark,\n\
         train,train\\dark\\dark.2.png,near-duplicate,0.88,dark,,train/dark/dark.3.jpg\n",
    )
    .unwrap();
    let out = ok(extract(&data, &model, &run)
        .arg("--exclude")
        .arg(&list)
        .output()
        .unwrap());
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        said.contains("left out 2 photos of train, 0 photos of validation"),
        "{said}"
    );

    let train = run.join("features/train.safetensors");
    let meta = features::store::read_meta(&train).unwrap();
    let want = ["train/bright/bright.1.jpg", "train/dark/dark.2.png"];
    assert_eq!(meta.excluded, want);
    assert_eq!(meta.files.len(), 6, "{:?}", meta.files);
    assert!(want.iter().all(|w| !meta.files.iter().any(|f| f == w)));
    let val = run.join("features/validation.safetensors");
    assert!(features::store::read_meta(&val)
        .unwrap()
        .excluded
        .is_empty());
    assert!(!raw_metadata(&val).contains_key("excluded"));

    // The same list again: nothing is recomputed or rewritten.
    let before = (std::fs::read(&train).unwrap(), modified(&train));
    let out = ok(extract(&data, &model, &run)
        .arg("--exclude")
        .arg(&list)
        .output()
        .unwrap());
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains("train: features up to date"), "{said}");
    assert_eq!(before, (std::fs::read(&train).unwrap(), modified(&train)));

    // Another list makes the train features stale: they are extracted again and say so.
    let other = t.path().join("other.txt");
    std::fs::write(&other, "# one photo\ntrain/bright/bright.1.jpg\n").unwrap();
    ok(extract(&data, &model, &run)
        .arg("--exclude")
        .arg(&other)
        .output()
        .unwrap());
    let meta = features::store::read_meta(&train).unwrap();
    assert_eq!(meta.excluded, ["train/bright/bright.1.jpg"]);
    assert_eq!(meta.files.len(), 7);
}

fn modified(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn extract_exclude_naming_a_missing_photo_fails_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (data, model, run) = setup(t.path());
    let list = t.path().join("list.txt");
    std::fs::write(
        &list,
        "train/bright/bright.0.png\ntrain/bright/no-such.jpg\n",
    )
    .unwrap();
    let err = fails(
        extract(&data, &model, &run)
            .arg("--exclude")
            .arg(&list)
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("train/bright/no-such.jpg") && err.contains("list.txt"),
        "{err}"
    );
    assert!(err.contains("relative to DATA"), "{err}");
    assert!(
        !err.contains("bright.0.png"),
        "a photo of the folder is no error: {err}"
    );
    assert!(!run.exists(), "nothing may be written");
}

#[test]
fn extract_without_exclude_or_with_an_empty_list_writes_no_excluded_key() {
    let t = tempfile::tempdir().unwrap();
    let (data, model, run) = setup(t.path());
    ok(extract(&data, &model, &run).output().unwrap());
    let plain = run.join("features/train.safetensors");
    assert!(!raw_metadata(&plain).contains_key("excluded"));
    assert!(features::store::read_meta(&plain)
        .unwrap()
        .excluded
        .is_empty());

    let empty = t.path().join("empty.txt");
    std::fs::write(&empty, "# nothing flagged\n\n").unwrap();
    let run2 = t.path().join("run2");
    ok(extract(&data, &model, &run2)
        .arg("--exclude")
        .arg(&empty)
        .output()
        .unwrap());
    let listed = run2.join("features/train.safetensors");
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&listed).unwrap(),
        "an empty list changes nothing"
    );
}

/// `fit --json --exclude LIST` of `data` with `model` into `run` (64 px, one fine-tuning epoch).
fn fit(data: &Path, model: &Path, run: &Path, list: &Path) -> serde_json::Value {
    let out = ok(common::fit_tiny(data, model)
        .arg("--exclude")
        .arg(list)
        .arg("--run")
        .arg(run)
        .output()
        .unwrap());
    serde_json::from_slice(&out.stdout).expect("a JSON summary on stdout")
}

#[test]
fn fit_exclude_on_one_folder_holds_out_the_same_photos_in_every_stage() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("photos");
    // DIR/<class>/*: the hold-out is drawn from the photos left, so fine-tuning must leave out the
    // same photos as extraction to validate on the head's (15 bright would hold out 3, 10 hold 2).
    testkit::write_synthetic(&data, &[("", 15)], 5).unwrap();
    let model = tiny_model(t.path());
    let run = t.path().join("run");
    let list = t.path().join("flagged.txt");
    let flagged: Vec<String> = (0..5)
        .map(|i| format!("bright/bright.{i}.{}", ["png", "jpg"][i % 2]))
        .collect();
    std::fs::write(&list, flagged.join("\n")).unwrap();
    fit(&data, &model, &run, &list);

    let meta = features::store::read_meta(&run.join("features/all.safetensors")).unwrap();
    assert_eq!(meta.excluded, flagged);
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(p)).unwrap()).unwrap()
    };
    let (head, ft) = (read("head/metrics.json"), read("finetune/metrics.json"));
    assert_eq!(ft["validation"], head["validation"]);
    for m in [&head, &ft] {
        assert_eq!(
            (m["train_samples"].as_u64(), m["val_samples"].as_u64()),
            (Some(20), Some(5)),
            "{m}"
        );
    }
    // Run again: every stage is reused (the head's status reads the `all` split of this layout).
    assert_reused(&fit(&data, &model, &run, &list));
}

/// Every stage of the transfer chain was reused.
fn assert_reused(again: &serde_json::Value) {
    for stage in ["extract", "train-head", "finetune"] {
        let row = again["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["stage"] == stage)
            .unwrap_or_else(|| panic!("no {stage} in {again}"));
        assert_eq!(row["action"], "reuse", "{stage} should be reused: {again}");
    }
}

#[test]
fn fit_exclude_leaves_the_photos_out_of_every_stage_then_reuses_them() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("photos");
    testkit::write_synthetic(&data, &[("train", 8), ("val", 3)], 7).unwrap();
    let model = tiny_model(t.path());
    let run = t.path().join("run");
    let list = t.path().join("audit.csv");
    std::fs::write(
        &list,
        "split,path,issue\ntrain,train/dark/dark.3.jpg,mislabel\nval,val/bright/bright.0.png,mislabel\n",
    )
    .unwrap();
    fit(&data, &model, &run, &list);
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(p)).unwrap()).unwrap()
    };
    for m in [read("head/metrics.json"), read("finetune/metrics.json")] {
        assert_eq!(
            (m["train_samples"].as_u64(), m["val_samples"].as_u64()),
            (Some(15), Some(5)),
            "{m}"
        );
    }
    // The validation split's features record what they left out.
    let val = features::store::read_meta(&run.join("features/val.safetensors")).unwrap();
    assert_eq!(val.excluded, ["val/bright/bright.0.png"]);

    assert_reused(&fit(&data, &model, &run, &list));
}
