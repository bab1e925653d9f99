//! `bottleneck audit` (issue 30) on a small real subset of Dogs vs Cats with made problems: three
//! cats moved into the dogs folder, a re-encoded copy of a validation photo in train (a leak), two
//! scene photos among the cats. `fit` audits by default; the findings name those photos (the copy
//! also below the cosine threshold, by its pixels, when the data folder is given); an edited
//! `audit.csv` is not replaced without `--force`; a head without out-of-fold predictions (the 2016
//! recipe) makes `audit` exit 1 saying how to get them.

use std::fs;
use std::path::{Path, PathBuf};

mod common;
use common::{bin, fails, ok};

const MOVED: [&str; 3] = ["cat.1.jpg", "cat.10.jpg", "cat.100.jpg"];
const COPY: &str = "train/dogs/copy_of_validation.jpg";

/// The data folder: 40 + 40 training and 10 + 10 validation photos with the made problems; returns
/// it with the validation photo that was copied and the two scene photos' paths (relative).
fn data(shared: &Path, dir: &Path) -> (PathBuf, String, Vec<String>) {
    let data = dir.join("data");
    testkit::data::link_shared_subset(shared, &data, &["train"], 40).unwrap();
    testkit::data::link_shared_subset(shared, &data, &["validation"], 10).unwrap();
    for name in MOVED {
        let from = data.join("train/cats").join(name);
        assert!(from.exists(), "{name} is among the first 40 cats");
        fs::rename(&from, data.join("train/dogs").join(name)).unwrap();
    }
    let val = fs::read_dir(data.join("validation/dogs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let img = image::open(&val).unwrap().to_rgb8();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 60)
        .encode_image(&img)
        .unwrap();
    fs::write(data.join(COPY), &bytes).unwrap();
    let val_rel = format!(
        "validation/dogs/{}",
        val.file_name().unwrap().to_string_lossy()
    );
    let mut scenes = Vec::new();
    let src = shared.join("data/intel_scenes_dev/train/buildings");
    let mut names: Vec<PathBuf> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names.iter().take(2) {
        let rel = format!(
            "train/cats/scene_{}",
            p.file_name().unwrap().to_string_lossy()
        );
        fs::copy(p, data.join(&rel)).unwrap();
        scenes.push(rel);
    }
    (data, val_rel, scenes)
}

fn audit_json(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(run.join("audit/audit.json")).unwrap()).unwrap()
}

#[test]
fn fit_audits_the_training_photos_and_finds_each_kind_of_problem() {
    let Some(shared) = testkit::data::shared_root() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let (data, val_rel, scenes) = data(&shared, t.path());
    let run = t.path().join("run");
    let model = shared.join("models/efficientnet_lite0.onnx");
    ok(bin()
        .args(["-q", "fit", "--threads", "2", "--data"])
        .arg(&data)
        .arg("--run")
        .arg(&run)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap());
    let a = audit_json(&run);

    // Likely mislabeled: the moved cats, suggested back to cats.
    let flagged: Vec<(&str, &str)> = a["mislabeled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap(),
                m["suggested"].as_str().unwrap(),
            )
        })
        .collect();
    let found = MOVED
        .iter()
        .filter(|n| flagged.contains(&(format!("train/dogs/{n}").as_str(), "cats")))
        .count();
    assert!(found >= 2, "moved cats among the flagged: {flagged:?}");

    // The re-encoded copy of a validation photo is a leak.
    let copy = COPY;
    let leak = a["duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["leak"] == true && d["path"] == copy && d["partner"] == val_rel.as_str());
    assert!(leak, "no leak {copy} ~ {val_rel}: {}", a["duplicates"]);

    // The scene photos are the most out of place (ranked: every photo listed).
    ok(bin()
        .args(["-q", "audit", "--outlier-score=0", "--run"])
        .arg(&run)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap());
    let ranked = audit_json(&run);
    let outliers: Vec<&str> = ranked["outliers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    for s in &scenes {
        assert!(
            outliers[..3.min(outliers.len())].contains(&s.as_str()),
            "{s} not in the top 3 of {outliers:?}"
        );
    }
    assert!(run.join("audit/mislabeled.png").is_file());

    // Below the cosine threshold, the copy is still found by its pixels when the photos can be
    // read, and not without the data folder.
    let strict = |with_data: bool| {
        let mut c = bin();
        c.args(["-q", "audit", "--duplicate-cosine", "1", "--run"])
            .arg(&run);
        if with_data {
            c.arg("--data").arg(&data);
        }
        ok(c.output().unwrap());
        audit_json(&run)["duplicates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == copy && d["partner"] == val_rel.as_str())
            .cloned()
    };
    let by_pixels = strict(true).expect("the copy confirmed by its pixels");
    assert!(
        by_pixels["hash_bits"].as_u64().unwrap() <= 10,
        "{by_pixels}"
    );
    assert!(by_pixels["cosine"].as_f64().unwrap() < 1.0);
    assert_eq!(strict(false), None);

    let report = fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("Photos that may hurt"), "{report}");
    assert!(report.contains(copy), "{report}");

    // An edited audit.csv is not replaced without --force.
    let csv = run.join("audit/audit.csv");
    let edited = "split,path\ntrain,train/dogs/cat.1.jpg\n";
    fs::write(&csv, edited).unwrap();
    let audit = |force: bool| {
        let mut c = bin();
        c.args(["-q", "audit", "--run"]).arg(&run);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let err = fails(audit(false));
    assert!(
        err.contains("audit.csv") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&csv).unwrap(), edited);
    ok(audit(true));
    assert_ne!(fs::read_to_string(&csv).unwrap(), edited);

    // The 2016 head has no out-of-fold predictions: exit 1, saying how to get them; --fit-probe
    // fits the probe for them and leaves the head as it is.
    ok(bin()
        .args([
            "-q",
            "train-head",
            "--keras2016",
            "--epochs",
            "1",
            "--force",
            "--run",
        ])
        .arg(&run)
        .output()
        .unwrap());
    assert!(!run.join("head/oof.safetensors").exists());
    let err = fails(audit(true));
    assert!(
        err.contains("out-of-fold") && err.contains("--fit-probe"),
        "{err}"
    );
    let head = fs::read(run.join("head/head.safetensors")).unwrap();
    ok(bin()
        .args(["-q", "audit", "--fit-probe", "--run"])
        .arg(&run)
        .output()
        .unwrap());
    assert!(run.join("audit/oof.safetensors").is_file());
    assert_eq!(fs::read(run.join("head/head.safetensors")).unwrap(), head);
    let again = audit_json(&run);
    assert!(
        again["mislabeled"].as_array().unwrap().len() >= 2,
        "{again}"
    );
}
