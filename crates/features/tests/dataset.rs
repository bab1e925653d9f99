//! Dataset scanning: layouts, label order, and the errors a user can hit.

use std::fs;
use std::path::Path;

use features::dataset;

fn touch(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, b"x").unwrap();
}

#[test]
fn split_layout_sorted_classes_and_labels() {
    let t = tempfile::tempdir().unwrap();
    for s in ["train", "validation"] {
        for f in [
            "dogs/d2.jpg",
            "dogs/d1.jpg",
            "cats/c1.jpg",
            "cats/.hidden.jpg",
        ] {
            touch(&t.path().join(s).join(f));
        }
    }
    let d = dataset::scan(t.path()).unwrap();
    assert_eq!(d.classes, vec!["cats", "dogs"]);
    assert_eq!(
        d.splits.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec!["train", "validation"]
    );
    let train = d.split("train").unwrap();
    let got: Vec<(&str, usize)> = train
        .items
        .iter()
        .map(|i| (i.rel.as_str(), i.label))
        .collect();
    assert_eq!(
        got,
        vec![
            ("train/cats/c1.jpg", 0),
            ("train/dogs/d1.jpg", 1),
            ("train/dogs/d2.jpg", 1)
        ]
    );
    assert_eq!(d.counts(train), vec![1, 2]);
}

#[test]
fn flat_layout_is_one_split_named_all() {
    let t = tempfile::tempdir().unwrap();
    touch(&t.path().join("b/1.png"));
    touch(&t.path().join("a/1.png"));
    let d = dataset::scan(t.path()).unwrap();
    assert_eq!(d.splits.len(), 1);
    assert_eq!(d.splits[0].name, "all");
    assert_eq!(d.classes, vec!["a", "b"]);
    assert_eq!(d.splits[0].items[0].rel, "a/1.png");
}

#[test]
fn differing_classes_name_the_difference() {
    let t = tempfile::tempdir().unwrap();
    touch(&t.path().join("train/cats/1.jpg"));
    touch(&t.path().join("train/dogs/1.jpg"));
    touch(&t.path().join("validation/cats/1.jpg"));
    touch(&t.path().join("validation/horses/1.jpg"));
    let e = dataset::scan(t.path()).unwrap_err().to_string();
    assert!(
        e.contains("validation") && e.contains("missing [dogs]") && e.contains("extra [horses]"),
        "{e}"
    );
}

#[test]
fn one_class_empty_class_and_missing_folder_are_errors() {
    let t = tempfile::tempdir().unwrap();
    touch(&t.path().join("only/1.jpg"));
    let e = dataset::scan(t.path()).unwrap_err().to_string();
    assert!(e.contains("at least two"), "{e}");

    fs::create_dir_all(t.path().join("empty")).unwrap();
    let e = dataset::scan(t.path()).unwrap_err().to_string();
    assert!(e.contains("empty") && e.contains("is empty"), "{e}");

    let e = dataset::scan(&t.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn mixing_split_and_class_folders_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    touch(&t.path().join("train/cats/1.jpg"));
    touch(&t.path().join("train/dogs/1.jpg"));
    touch(&t.path().join("birds/1.jpg"));
    let e = dataset::scan(t.path()).unwrap_err().to_string();
    assert!(e.contains("mixes") && e.contains("birds"), "{e}");
}

#[test]
fn photos_in_sub_folders_of_a_class_are_included_with_their_label() {
    let t = tempfile::tempdir().unwrap();
    touch(&t.path().join("train/cats/1.jpg"));
    touch(&t.path().join("train/cats/indoor/2.jpg"));
    touch(&t.path().join("train/cats/indoor/deeper/3.jpg"));
    touch(&t.path().join("train/dogs/1.jpg"));
    touch(&t.path().join("val/cats/1.jpg"));
    touch(&t.path().join("val/dogs/park/1.jpg"));
    let ds = dataset::scan(t.path()).unwrap();
    assert_eq!(ds.classes, ["cats", "dogs"]);
    let train = ds.split("train").unwrap();
    let rels: Vec<(&str, usize)> = train
        .items
        .iter()
        .map(|i| (i.rel.as_str(), i.label))
        .collect();
    assert_eq!(
        rels,
        [
            ("train/cats/1.jpg", 0),
            ("train/cats/indoor/2.jpg", 0),
            ("train/cats/indoor/deeper/3.jpg", 0),
            ("train/dogs/1.jpg", 1)
        ]
    );
    let val = ds
        .split("validation")
        .expect("`val` answers for validation");
    assert_eq!(val.name, "val");
    assert_eq!(val.items[1].rel, "val/dogs/park/1.jpg");
}

#[test]
fn every_usual_validation_name_is_found() {
    for name in ["validation", "val", "valid", "dev", "test"] {
        let t = tempfile::tempdir().unwrap();
        for split in ["train", name] {
            touch(&t.path().join(format!("{split}/a/1.jpg")));
            touch(&t.path().join(format!("{split}/b/1.jpg")));
        }
        let ds = dataset::scan(t.path()).unwrap();
        assert_eq!(ds.split("validation").map(|s| s.name.as_str()), Some(name));
    }
}
