//! Hostile files (issue 34): what is not a regular file, what is larger than any photo and what
//! does not start like an image are refused before being read, and photo digests are streamed.

use std::fs;
use std::path::Path;

use features::dataset;
use features::image_io::{load_rgb8, photo_sha256, read_photo, MAX_FILE_BYTES};

fn reason(path: &Path) -> String {
    read_photo(path).unwrap_err().to_string()
}

#[test]
fn devices_and_huge_files_are_refused_without_reading_them() {
    let t = tempfile::tempdir().unwrap();
    // A character device that never ends: refused from its metadata.
    let e = reason(Path::new("/dev/zero"));
    assert!(
        e.contains("/dev/zero") && e.contains("character device"),
        "{e}"
    );
    let link = t.path().join("zero.jpg");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let e = reason(&link);
    assert!(
        e.contains("zero.jpg") && e.contains("character device"),
        "{e}"
    );
    // A folder named like a photo.
    fs::create_dir(t.path().join("dir.jpg")).unwrap();
    assert!(reason(&t.path().join("dir.jpg")).contains("a folder"));

    // A sparse file one byte over the limit, even with a JPEG header: refused by its size.
    let big = t.path().join("big.jpg");
    fs::write(&big, [0xFF, 0xD8, 0xFF, 0xE0]).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    let e = reason(&big);
    assert!(
        e.contains("big.jpg") && e.contains(&format!("larger than {} MiB", MAX_FILE_BYTES >> 20)),
        "{e}"
    );
    assert!(load_rgb8(&big).is_err());

    // Not an image: told from the first bytes.
    let text = t.path().join("notes.jpg");
    fs::write(&text, b"plain text, not a photo").unwrap();
    assert!(reason(&text).contains("not an image"));
    let empty = t.path().join("empty.png");
    fs::write(&empty, b"").unwrap();
    assert!(reason(&empty).contains("empty file"));
}

#[test]
fn photo_digests_stream_and_tell_unreadable_files_apart() {
    let t = tempfile::tempdir().unwrap();
    // The digest of a readable file is the plain SHA-256 of its bytes (cache keys do not change).
    let p = t.path().join("a.jpg");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&p, &bytes).unwrap();
    assert_eq!(photo_sha256(&p).unwrap(), runfs::digest::sha256(&bytes));
    // Endless and huge files get a digest of their own without being read.
    let zero = t.path().join("zero.jpg");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let big = t.path().join("big.jpg");
    fs::write(&big, b"x").unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let (a, b) = (photo_sha256(&zero).unwrap(), photo_sha256(&big).unwrap());
    assert_ne!(a, b);
    assert_ne!(a, photo_sha256(Path::new("/dev/zero")).unwrap());
}

fn touch(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, b"x").unwrap();
}

#[test]
fn hidden_class_folders_are_listed_as_ignored() {
    let t = tempfile::tempdir().unwrap();
    for f in ["cats/1.jpg", "dogs/1.jpg", ".hidden/1.jpg", ".../1.jpg"] {
        touch(&t.path().join(f));
    }
    let d = dataset::scan(t.path()).unwrap();
    assert_eq!(d.classes, vec!["cats", "dogs"]);
    assert_eq!(
        d.ignored,
        vec![t.path().join("..."), t.path().join(".hidden")]
    );
    let note = dataset::ignored_note(&d.ignored[0]);
    assert!(note.contains("...") && note.contains("rename"), "{note}");
    // In the split layout, hidden folders among the class folders are listed too.
    let s = tempfile::tempdir().unwrap();
    for f in ["train/cats/1.jpg", "train/dogs/1.jpg", "train/.cows/1.jpg"] {
        touch(&s.path().join(f));
    }
    let d = dataset::scan(s.path()).unwrap();
    assert_eq!(d.ignored, vec![s.path().join("train/.cows")]);
}

#[test]
fn class_folders_that_are_one_folder_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let train = t.path().join("train");
    touch(&train.join("cats/1.jpg"));
    touch(&train.join("dogs/sub/1.jpg"));
    std::os::unix::fs::symlink(train.join("cats"), train.join("kittens")).unwrap();
    let e = dataset::scan(t.path()).unwrap_err().to_string();
    assert!(
        e.contains("train/cats") && e.contains("train/kittens") && e.contains("same folder"),
        "{e}"
    );
    fs::remove_file(train.join("kittens")).unwrap();
    // One class folder inside another.
    std::os::unix::fs::symlink(train.join("dogs/sub"), train.join("puppies")).unwrap();
    let e = dataset::scan(t.path()).unwrap_err().to_string();
    assert!(e.contains("puppies") && e.contains("inside"), "{e}");
    fs::remove_file(train.join("puppies")).unwrap();
    // A link back up inside a class folder is read once, not forever.
    std::os::unix::fs::symlink(train.join("dogs"), train.join("dogs/sub/up")).unwrap();
    let d = dataset::scan(t.path()).unwrap();
    assert_eq!(d.splits[0].items.len(), 2);
}

#[test]
fn special_files_in_class_folders_are_listed_to_be_reported() {
    let t = tempfile::tempdir().unwrap();
    touch(&t.path().join("cats/1.jpg"));
    touch(&t.path().join("dogs/1.jpg"));
    std::os::unix::fs::symlink("/dev/zero", t.path().join("dogs/zero.jpg")).unwrap();
    let d = dataset::scan(t.path()).unwrap();
    let rels: Vec<&str> = d.splits[0].items.iter().map(|i| i.rel.as_str()).collect();
    assert_eq!(rels, vec!["cats/1.jpg", "dogs/1.jpg", "dogs/zero.jpg"]);
}
