//! End-to-end tests of `data::build` on tiny synthetic archives (zip and folder, Kaggle and Microsoft naming,
//! with the kinds of broken files the real archives hold), plus one check against the shared real data.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use data::dogs_vs_cats::{Config, Counts};
use data::{Class, Error, Scheme, SourceKind};

/// A small real JPEG whose pixels depend on `seed`.
fn jpeg(seed: u64) -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 12, |x, y| {
        let v = (seed * 37 + u64::from(x) * 11 + u64::from(y) * 5) % 256;
        image::Rgb([v as u8, (255 - v) as u8, (v * 3 % 256) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// A JPEG cut short inside its scan data (no end marker after the scan).
fn truncated(seed: u64) -> Vec<u8> {
    let full = jpeg(seed);
    let sos = full.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    full[..sos + 12].to_vec()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bad {
    Empty,
    Text,
    Truncated,
}

fn content(bad: Option<Bad>, seed: u64) -> Vec<u8> {
    match bad {
        None => jpeg(seed),
        Some(Bad::Empty) => Vec::new(),
        Some(Bad::Text) => b"<html>404 not found</html>".to_vec(),
        Some(Bad::Truncated) => truncated(seed),
    }
}

/// Member path of photo (class, id) under a naming scheme.
fn member(scheme: Scheme, class: Class, id: u64) -> String {
    match (scheme, class) {
        (Scheme::Kaggle, c) => format!("train/{}.{id}.jpg", c.name()),
        (Scheme::Microsoft, Class::Cat) => format!("PetImages/Cat/{id}.jpg"),
        (Scheme::Microsoft, Class::Dog) => format!("PetImages/Dog/{id}.jpg"),
    }
}

/// The files of a synthetic archive: IDs 0..n per class, the given broken ones, plus non-photo members.
fn archive_files(
    scheme: Scheme,
    n: u64,
    broken: &[(Class, u64, Bad)],
) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for class in Class::ALL {
        for id in 0..n {
            let bad = broken
                .iter()
                .find(|(c, i, _)| *c == class && *i == id)
                .map(|b| b.2);
            let seed = id * 2 + u64::from(class == Class::Dog);
            files.insert(member(scheme, class, id), content(bad, seed));
        }
    }
    match scheme {
        Scheme::Kaggle => {
            files.insert("test1/1.jpg".into(), jpeg(999));
            files.insert("__MACOSX/train/._cat.0.jpg".into(), b"junk".to_vec());
        }
        Scheme::Microsoft => {
            files.insert("PetImages/Cat/Thumbs.db".into(), b"thumbs".to_vec());
            files.insert("PetImages/Dog/Thumbs.db".into(), b"thumbs".to_vec());
            files.insert("readme[1].txt".into(), b"license".to_vec());
        }
    }
    files
}

fn write_zip(path: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        zip.start_file(name.as_str(), opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn write_folder(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

fn config(out: &Path, archive: &Path, counts: Counts) -> Config {
    let mut cfg = Config::new(out);
    cfg.archive = Some(archive.to_path_buf());
    cfg.counts = counts;
    cfg.search_dirs = Vec::new();
    cfg.download_url = None;
    cfg.threads = Some(2);
    cfg
}

fn small() -> Counts {
    Counts {
        train: 3,
        validation: 2,
        test: 2,
    }
}

/// IDs found in OUT/split/folder, from the file names `class.ID.jpg`.
fn ids_in(out: &Path, split: &str, class: Class) -> Vec<u64> {
    let dir = out.join(split).join(class.folder());
    let mut ids: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            let prefix = format!("{}.", class.name());
            n.strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".jpg"))
                .unwrap_or_else(|| panic!("unexpected file {n} in {}", dir.display()))
                .parse()
                .unwrap()
        })
        .collect();
    ids.sort();
    ids
}

/// Top-level entries of OUT.
fn entries(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The broken files every synthetic archive holds, and where the good photos must go because of them.
const BROKEN: [(Class, u64, Bad); 3] = [
    (Class::Cat, 2, Bad::Empty),
    (Class::Cat, 5, Bad::Text),
    (Class::Dog, 1, Bad::Truncated),
];
const CAT_IDS: [&[u64]; 3] = [&[0, 1, 3], &[4, 6], &[7, 8]];
const DOG_IDS: [&[u64]; 3] = [&[0, 2, 3], &[4, 5], &[6, 7]];

fn check_layout(
    out: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    scheme: Scheme,
    summary: &data::Summary,
) {
    assert_eq!(
        entries(out),
        ["test", "train", "validation"],
        "no temp folder left"
    );
    for (k, split) in ["train", "validation", "test"].into_iter().enumerate() {
        assert_eq!(ids_in(out, split, Class::Cat), CAT_IDS[k], "{split}/cats");
        assert_eq!(ids_in(out, split, Class::Dog), DOG_IDS[k], "{split}/dogs");
        for class in Class::ALL {
            for id in ids_in(out, split, class) {
                let written = std::fs::read(
                    out.join(split)
                        .join(class.folder())
                        .join(format!("{}.{id}.jpg", class.name())),
                )
                .unwrap();
                assert_eq!(
                    &written,
                    &files[&member(scheme, class, id)],
                    "{split} {class:?} {id} copied unchanged"
                );
            }
        }
        let s = &summary.splits[k];
        assert_eq!(s.split, split);
        let cats = &s.classes[0];
        assert_eq!((cats.class, cats.count), (Class::Cat, CAT_IDS[k].len()));
        assert_eq!(cats.first_id, CAT_IDS[k].first().copied());
        assert_eq!(cats.last_id, CAT_IDS[k].last().copied());
    }
    let mut skipped: Vec<(Class, u64, String)> = summary
        .skipped
        .iter()
        .map(|s| (s.class, s.id, s.file.clone()))
        .collect();
    skipped.sort();
    let expected: Vec<(Class, u64, String)> = BROKEN
        .iter()
        .map(|&(c, i, _)| (c, i, member(scheme, c, i)))
        .collect();
    assert_eq!(skipped, expected);
    let reason = |c: Class, i: u64| {
        summary
            .skipped
            .iter()
            .find(|s| s.class == c && s.id == i)
            .unwrap()
            .reason
            .clone()
    };
    assert!(
        reason(Class::Cat, 2).contains("empty"),
        "{}",
        reason(Class::Cat, 2)
    );
    assert!(
        reason(Class::Cat, 5).contains("not an image"),
        "{}",
        reason(Class::Cat, 5)
    );
    assert!(
        reason(Class::Dog, 1).contains("truncated"),
        "{}",
        reason(Class::Dog, 1)
    );
    assert_eq!(summary.source.scheme, scheme);
}

#[test]
fn kaggle_zip() {
    let tmp = tempfile::tempdir().unwrap();
    let files = archive_files(Scheme::Kaggle, 12, &BROKEN);
    let zip = tmp.path().join("train.zip");
    write_zip(&zip, &files);
    let out = tmp.path().join("data");
    let mut skipped_events = Vec::new();
    let summary = data::build(&config(&out, &zip, small()), &mut |ev| {
        if let data::Event::Skipped { file, .. } = ev {
            skipped_events.push(file.to_string());
        }
    })
    .unwrap();
    check_layout(&out, &files, Scheme::Kaggle, &summary);
    assert_eq!(skipped_events.len(), 3);
    assert_eq!(summary.source.kind, SourceKind::Zip);
    // test1/1.jpg and the __MACOSX member are not photos of a class.
    assert_eq!(summary.ignored_entries, 2);
    // The JSON summary carries counts and skipped files.
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["splits"][1]["classes"][1]["count"], 2);
    assert_eq!(json["skipped"].as_array().unwrap().len(), 3);
    assert_eq!(json["source"]["scheme"], "kaggle");
}

#[test]
fn microsoft_zip_and_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let files = archive_files(Scheme::Microsoft, 12, &BROKEN);
    let zip = tmp.path().join("kagglecatsanddogs_5340.zip");
    write_zip(&zip, &files);
    let out = tmp.path().join("from_zip");
    let summary = data::build(&config(&out, &zip, small()), &mut |_| {}).unwrap();
    check_layout(&out, &files, Scheme::Microsoft, &summary);
    assert_eq!(summary.ignored_entries, 3, "2 Thumbs.db + readme");

    let folder = tmp.path().join("extracted");
    write_folder(&folder, &files);
    let out = tmp.path().join("from_folder");
    let summary = data::build(&config(&out, &folder, small()), &mut |_| {}).unwrap();
    check_layout(&out, &files, Scheme::Microsoft, &summary);
    assert_eq!(summary.source.kind, SourceKind::Folder);
    assert_eq!(summary.mode, "copy");
    assert!(!out.join("train/cats/cat.0.jpg").is_symlink());
}

#[cfg(unix)]
#[test]
fn kaggle_folder_linked() {
    let tmp = tempfile::tempdir().unwrap();
    let files = archive_files(Scheme::Kaggle, 12, &BROKEN);
    let folder = tmp.path().join("kaggle");
    write_folder(&folder, &files);
    // The output folder inside the extracted archive must not be read as part of it.
    let out = folder.join("data");
    let mut cfg = config(&out, &folder, small());
    cfg.link = true;
    let summary = data::build(&cfg, &mut |_| {}).unwrap();
    check_layout(&out, &files, Scheme::Kaggle, &summary);
    assert_eq!(summary.mode, "link");
    let link = out.join("validation/dogs/dog.5.jpg");
    assert!(link.is_symlink());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        std::fs::canonicalize(folder.join("train/dog.5.jpg")).unwrap()
    );

    // --link needs a folder.
    let zip = tmp.path().join("train.zip");
    write_zip(&zip, &files);
    let mut cfg = config(&tmp.path().join("other"), &zip, small());
    cfg.link = true;
    match data::build(&cfg, &mut |_| {}) {
        Err(Error::Invalid(m)) => assert!(m.contains("--link"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn refuses_existing_splits_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let files = archive_files(Scheme::Kaggle, 12, &BROKEN);
    let zip = tmp.path().join("train.zip");
    write_zip(&zip, &files);
    let out = tmp.path().join("data");
    std::fs::create_dir_all(out.join("validation/cats")).unwrap();
    std::fs::write(out.join("validation/cats/mine.jpg"), b"user file").unwrap();
    std::fs::write(out.join("notes.txt"), b"keep me").unwrap();

    match data::build(&config(&out, &zip, small()), &mut |_| {}) {
        Err(e @ Error::Exists { .. }) => {
            let m = e.to_string();
            assert!(m.contains("validation/") && m.contains("--force"), "{m}");
            assert!(!m.contains("train/"), "{m}");
        }
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(
        entries(&out),
        ["notes.txt", "validation"],
        "nothing written"
    );
    assert!(out.join("validation/cats/mine.jpg").exists());

    let mut cfg = config(&out, &zip, small());
    cfg.force = true;
    let summary = data::build(&cfg, &mut |_| {}).unwrap();
    assert!(
        !out.join("validation/cats/mine.jpg").exists(),
        "old split replaced"
    );
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"keep me");
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    check_layout(&out, &files, Scheme::Kaggle, &summary);
}

#[test]
fn too_few_photos_is_a_clear_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // 8 IDs per class, 2 cats broken: 6 good cats, 7 good dogs; 7 are needed per class.
    let files = archive_files(Scheme::Microsoft, 8, &BROKEN);
    let zip = tmp.path().join("kagglecatsanddogs_5340.zip");
    write_zip(&zip, &files);
    let out = tmp.path().join("data");
    match data::build(&config(&out, &zip, small()), &mut |_| {}) {
        Err(
            e @ Error::TooFew {
                needed: 7,
                found: 6,
                skipped: 2,
                ..
            },
        ) => {
            let m = e.to_string();
            assert!(m.contains("cat") && m.contains("smaller splits"), "{m}");
        }
        other => panic!("expected TooFew for cats, got {other:?}"),
    }
    assert!(
        !out.exists() || entries(&out).is_empty(),
        "no splits, no temp folder"
    );

    // Without the test split the same archive is enough.
    let counts = Counts { test: 0, ..small() };
    let summary = data::build(&config(&out, &zip, counts), &mut |_| {}).unwrap();
    assert_eq!(entries(&out), ["train", "validation"]);
    assert_eq!(summary.splits.len(), 2);
    assert_eq!(ids_in(&out, "validation", Class::Cat), [4, 6]);
}

#[test]
fn first_id_shifts_the_split() {
    let tmp = tempfile::tempdir().unwrap();
    let files = archive_files(Scheme::Kaggle, 12, &BROKEN);
    let zip = tmp.path().join("train.zip");
    write_zip(&zip, &files);
    let out = tmp.path().join("data");
    let mut cfg = config(&out, &zip, small());
    cfg.first_id = 3;
    let summary = data::build(&cfg, &mut |_| {}).unwrap();
    assert_eq!(ids_in(&out, "train", Class::Cat), [3, 4, 6]);
    assert_eq!(ids_in(&out, "test", Class::Cat), [9, 10]);
    assert_eq!(ids_in(&out, "train", Class::Dog), [3, 4, 5]);
    assert_eq!(
        summary.skipped.len(),
        1,
        "only cat.5 lies in the range read"
    );
}

#[test]
fn unrecognised_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("data");
    // Kaggle's competition bundle holds train.zip inside.
    let bundle = tmp.path().join("dogs-vs-cats.zip");
    let mut inner = BTreeMap::new();
    inner.insert("train.zip".to_string(), b"PK".to_vec());
    inner.insert("sampleSubmission.csv".to_string(), b"id,label".to_vec());
    write_zip(&bundle, &inner);
    match data::build(&config(&out, &bundle, small()), &mut |_| {}) {
        Err(Error::Archive { reason, .. }) => {
            assert!(reason.contains("extract train.zip"), "{reason}")
        }
        other => panic!("expected Archive, got {other:?}"),
    }
    // A file that is not a zip.
    let notzip = tmp.path().join("train.zip");
    std::fs::write(&notzip, b"not a zip").unwrap();
    match data::build(&config(&out, &notzip, small()), &mut |_| {}) {
        Err(Error::Zip { reason, .. }) => {
            assert!(reason.contains("not a readable zip"), "{reason}")
        }
        other => panic!("expected Zip, got {other:?}"),
    }
    // A missing path.
    match data::build(
        &config(&out, &tmp.path().join("nope.zip"), small()),
        &mut |_| {},
    ) {
        Err(Error::NotFound(m)) => assert!(m.contains("nope.zip"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn finds_archive_in_search_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let downloads = tmp.path().join("Downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let zip = downloads.join("kagglecatsanddogs_5340.zip");
    write_zip(&zip, &archive_files(Scheme::Microsoft, 12, &BROKEN));
    let out = tmp.path().join("data");
    let mut cfg = config(&out, &zip, small());
    cfg.archive = None;
    cfg.search_dirs = vec![tmp.path().join("empty"), downloads.clone()];
    let mut found = None;
    let summary = data::build(&cfg, &mut |ev| {
        if let data::Event::Found { archive } = ev {
            found = Some(archive.to_path_buf());
        }
    })
    .unwrap();
    assert_eq!(found.as_deref(), Some(zip.as_path()));
    assert!(summary.source.located && !summary.source.downloaded);
    assert_eq!(summary.source.path, zip);
    assert_eq!(ids_in(&out, "train", Class::Dog), [0, 2, 3]);
}

#[test]
fn offline_without_archive_says_where_to_download() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("data");
    let mut cfg = Config::new(&out);
    cfg.search_dirs = vec![tmp.path().to_path_buf()];
    // A port nothing listens on stands for an unreachable download host.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    cfg.download_url = Some(format!(
        "http://127.0.0.1:{port}/kagglecatsanddogs_5340.zip"
    ));
    let mut probed = false;
    match data::build(&cfg, &mut |ev| {
        probed |= matches!(ev, data::Event::Probing { .. })
    }) {
        Err(Error::NotFound(m)) => {
            assert!(probed);
            for needle in [
                "offline",
                data::download::MICROSOFT_URL,
                data::download::KAGGLE_PAGE,
                "--archive",
                "kagglecatsanddogs",
            ] {
                assert!(m.contains(needle), "message lacks {needle:?}: {m}");
            }
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!out.exists(), "nothing created");

    cfg.download_url = None;
    match data::build(&cfg, &mut |_| {}) {
        Err(Error::NotFound(m)) => assert!(
            m.contains("downloads are off") && m.contains("--archive"),
            "{m}"
        ),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// The shared tutorial split, read as an extracted Kaggle-named folder, is rebuilt exactly with 1-based IDs:
/// its missing dog IDs are simply absent, and none of its photos is rejected.
#[cfg(unix)]
#[test]
fn rebuilds_the_shared_split() {
    let shared =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/dogs_vs_cats");
    if !shared.is_dir() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{} is missing (CI is set): the real Dogs vs Cats split is needed",
                shared.display()
            );
        }
        eprintln!("skipping: {} not found", shared.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("data");
    let mut cfg = config(
        &out,
        &shared,
        Counts {
            train: 1000,
            validation: 400,
            test: 0,
        },
    );
    cfg.first_id = 1;
    cfg.link = true;
    cfg.threads = None;
    let summary = data::build(&cfg, &mut |_| {}).unwrap();
    assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);
    for split in ["train", "validation"] {
        for class in Class::ALL {
            let mut expected: Vec<u64> = std::fs::read_dir(shared.join(split).join(class.folder()))
                .unwrap()
                .map(|e| {
                    let n = e.unwrap().file_name().to_string_lossy().into_owned();
                    n.split('.').nth(1).unwrap().parse().unwrap()
                })
                .collect();
            expected.sort();
            assert_eq!(
                ids_in(&out, split, class),
                expected,
                "{split}/{}",
                class.folder()
            );
        }
    }
}
