//! The bad-input matrix, through the real `bottleneck` binary on generated data and the tiny
//! synthetic VGG: every kind of bad photo is read or skipped by name, bad folders and unusable
//! models are refused naming what to fix and leave no file behind, damaged run files are named
//! (results) or re-made (caches), and a read-only or full run folder fails without a partial file.
//! (EXIF rotation, decode bombs, stale splits and duplicates are checked in the `features` tests;
//! `predict` with nothing readable in `predict_cli.rs`.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use features::onnx::build::{encode, tensor_value, DimSpec, FLOAT};
use testkit::files_under;
use testkit::synth::{self, VggSpec};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bottleneck"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status.code(),
        stderr(&out)
    );
    out
}

/// Exit code 1 (a failed request, not a usage error); returns stderr.
fn fails(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    stderr(&out)
}

fn tiny_model(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.onnx");
    fs::write(&p, synth::vgg_like(&VggSpec::default())).unwrap();
    p
}

fn extract(data: &Path, model: &Path, run: &Path) -> Command {
    let mut c = bin();
    c.args([
        "-q",
        "extract",
        "--preprocess",
        "caffe",
        "--size",
        "64",
        "--threads",
        "1",
        "--data",
    ])
    .arg(data)
    .arg("--model")
    .arg(model)
    .arg("--run")
    .arg(run);
    c
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// Writes one of each kind of awkward photo into `dir`; returns (readable, skipped with the words
/// its reason must contain).
fn awkward_photos(dir: &Path) -> (Vec<&'static str>, Vec<(&'static str, &'static str)>) {
    fs::create_dir_all(dir.join("nested/deeper")).unwrap();
    let good = image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])
    });
    let mut png = Vec::new();
    good.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut jpg = Vec::new();
    good.write_to(
        &mut std::io::Cursor::new(&mut jpg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    fs::write(dir.join("empty.jpg"), b"").unwrap();
    fs::write(dir.join("truncated.jpg"), &jpg[..jpg.len() / 3]).unwrap();
    fs::write(dir.join("notes.jpg"), b"this is text, not a photo").unwrap();
    fs::write(dir.join("png-named.jpg"), &png).unwrap();
    image::GrayImage::from_pixel(40, 40, image::Luma([200]))
        .save(dir.join("gray.png"))
        .unwrap();
    image::RgbaImage::from_pixel(40, 40, image::Rgba([200, 10, 10, 0]))
        .save(dir.join("rgba.png"))
        .unwrap();
    image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(40, 40, image::Rgb([60000, 9, 9]))
        .save(dir.join("deep16.png"))
        .unwrap();
    fs::copy(fixture("cmyk.jpg"), dir.join("cmyk.jpg")).unwrap();
    image::RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3]))
        .save(dir.join("one-pixel.png"))
        .unwrap();
    fs::write(dir.join("huge.png"), synth::claimed_png(100_000, 100_000)).unwrap();
    {
        let f = fs::File::create(dir.join("animated.gif")).unwrap();
        let mut enc = image::codecs::gif::GifEncoder::new(f);
        for v in [30u8, 220] {
            let frame = image::RgbaImage::from_pixel(24, 24, image::Rgba([v, v, v, 255]));
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    good.save(dir.join("photo.webp")).unwrap();
    fs::write(dir.join("café photo (1).png"), &png).unwrap();
    fs::write(dir.join("-starts-with-dash.png"), &png).unwrap();
    fs::write(dir.join("nested/deeper/inside.jpg"), &jpg).unwrap();
    std::os::unix::fs::symlink(dir.join("gone.jpg"), dir.join("dangling.jpg")).unwrap();
    std::os::unix::fs::symlink("loop.jpg", dir.join("loop.jpg")).unwrap();
    let readable = vec![
        "-starts-with-dash.png",
        "animated.gif",
        "café photo (1).png",
        "cmyk.jpg",
        "deep16.png",
        "gray.png",
        "nested/deeper/inside.jpg",
        "one-pixel.png",
        "photo.webp",
        "png-named.jpg",
        "rgba.png",
    ];
    let skipped = vec![
        ("dangling.jpg", "symbolic link"),
        ("empty.jpg", "empty file"),
        ("huge.png", "too large"),
        ("loop.jpg", "symbolic link"),
        ("notes.jpg", "not an image"),
        ("truncated.jpg", "truncated"),
    ];
    (readable, skipped)
}

#[test]
fn every_kind_of_bad_photo_is_read_or_skipped_by_name() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 2)], 3).unwrap();
    let class = data.join("train/bright");
    let (readable, skipped) = awkward_photos(&class);
    let model = tiny_model(t.path());
    let run = t.path().join("run");

    let out = ok(extract(&data, &model, &run).arg("--json").output().unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let split = &v["splits"][0];
    let listed: Vec<(String, String)> = split["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["file"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(listed.len(), skipped.len(), "{listed:?}");
    for ((file, reason), (name, words)) in listed.iter().zip(&skipped) {
        assert_eq!(file, &format!("train/bright/{name}"));
        assert!(reason.contains(words), "{file}: {reason}");
    }
    let f = features::store::FeatureFile::read(&run.join("features/train.safetensors")).unwrap();
    for name in &readable {
        let rel = format!("train/bright/{name}");
        let i = f.meta.files.iter().position(|x| *x == rel);
        let i = i.unwrap_or_else(|| panic!("{rel} is not in the features"));
        assert_eq!(f.labels[i], 0, "{rel} keeps its class folder's label");
    }
    assert_eq!(f.meta.files.len(), 2 * 2 + readable.len());

    // --strict: the first unreadable photo is named, exit 1, and nothing is left in the run.
    let strict_run = t.path().join("strict");
    let err = fails(
        extract(&data, &model, &strict_run)
            .arg("--strict")
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("dangling.jpg") && err.contains("--strict"),
        "{err}"
    );
    let left: Vec<String> = files_under(&strict_run.join("features"));
    assert!(left.is_empty(), "a failed extract leaves nothing: {left:?}");
}

/// Runs extract on the data folder `make` builds, expects exit 1 with every one of `words` in
/// the message, and no feature file or temporary in the run folder.
fn refused(name: &str, make: impl FnOnce(&Path), words: &[&str]) {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make(&data);
    let run = t.path().join("run");
    let err = fails(
        extract(&data, &tiny_model(t.path()), &run)
            .output()
            .unwrap(),
    );
    for w in words {
        assert!(err.contains(w), "{name}: the message lacks {w:?}: {err}");
    }
    let left = files_under(&run.join("features"));
    assert!(left.is_empty(), "{name}: files left behind: {left:?}");
}

#[test]
fn bad_folders_are_refused_naming_the_folder_and_the_fix() {
    let synthetic = |splits: &'static [(&'static str, usize)]| {
        move |d: &Path| testkit::write_synthetic(d, splits, 1).unwrap()
    };
    refused(
        "empty class",
        |d| {
            synthetic(&[("train", 2)])(d);
            fs::create_dir_all(d.join("train/empty_class")).unwrap();
        },
        &["train/empty_class is empty", "remove the folder"],
    );
    refused(
        "one class",
        |d| {
            synthetic(&[("train", 2)])(d);
            fs::remove_dir_all(d.join("train/dark")).unwrap();
        },
        &["1 class folder", "at least two"],
    );
    refused(
        "mismatched classes",
        |d| {
            synthetic(&[("train", 2), ("validation", 1)])(d);
            fs::rename(d.join("validation/dark"), d.join("validation/darker")).unwrap();
        },
        &["different classes", "missing [dark]", "extra [darker]"],
    );
    refused(
        "empty split",
        |d| {
            synthetic(&[("train", 2)])(d);
            fs::create_dir_all(d.join("test")).unwrap();
        },
        &["data/test holds no class folders", "or remove it"],
    );
    refused("no data folder", |_| {}, &["does not exist", "--data DIR"]);
}

#[test]
fn unusable_models_are_refused_naming_the_model() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 2)], 1).unwrap();
    let not_onnx = t.path().join("not-a-model.onnx");
    fs::write(&not_onnx, b"<html>404 not found</html>").unwrap();
    let gray = t.path().join("gray-input.onnx");
    fs::write(
        &gray,
        synth::vgg_like(&VggSpec {
            channels: 1,
            ..VggSpec::default()
        }),
    )
    .unwrap();
    let flat = t.path().join("flat-input.onnx");
    let mut m = synth::vgg_like_proto(&VggSpec::default());
    let g = m.graph.as_mut().unwrap();
    g.input[0] = tensor_value(
        "input",
        FLOAT,
        Some(&[DimSpec::Param("N"), DimSpec::Value(3072)]),
    );
    fs::write(&flat, encode(&m)).unwrap();
    for (model, words) in [
        (&not_onnx, vec!["not-a-model.onnx"]),
        (&gray, vec!["gray-input.onnx", "1 channel", "3-channel"]),
        (&flat, vec!["flat-input.onnx", "image"]),
    ] {
        let run = t.path().join("run");
        let err = fails(extract(&data, model, &run).output().unwrap());
        for w in &words {
            assert!(
                err.contains(w),
                "{}: the message lacks {w:?}: {err}",
                model.display()
            );
        }
        assert!(
            !err.contains("--cut-at"),
            "no flag that does not exist: {err}"
        );
        assert!(files_under(&run.join("features")).is_empty());
    }
}

/// Truncates `path` to half its length.
fn truncate_half(path: &Path) {
    let len = fs::metadata(path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

#[test]
fn damaged_run_files_are_remade_or_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 4), ("validation", 2)], 5).unwrap();
    let model = tiny_model(t.path());
    let run = t.path().join("run");
    ok(extract(&data, &model, &run).output().unwrap());
    let features = run.join("features/train.safetensors");
    let good = fs::read(&features).unwrap();

    // A truncated cache is not "up to date": extract makes it again, byte for byte.
    truncate_half(&features);
    let out = ok(extract(&data, &model, &run).arg("--json").output().unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let train = v["splits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == "train")
        .unwrap();
    assert_eq!(train["up_to_date"], false);
    assert!(fs::read(&features).unwrap() == good, "re-made identically");

    // A truncated feature file is refused by train-head, naming it.
    truncate_half(&features);
    let head_cmd = || {
        let mut c = bin();
        c.args(["-q", "train-head", "--epochs", "2", "--run"])
            .arg(&run);
        c
    };
    let err = fails(head_cmd().output().unwrap());
    assert!(err.contains("train.safetensors"), "{err}");
    assert!(!run.join("head").exists(), "no head from damaged features");
    fs::write(&features, &good).unwrap();
    ok(head_cmd().output().unwrap());

    // A truncated head is refused by predict and finetune, naming it.
    let head = run.join("head/head.safetensors");
    let head_bytes = fs::read(&head).unwrap();
    truncate_half(&head);
    let photo = data.join("validation/dark/dark.0.png");
    let err = fails(
        bin()
            .args(["predict", "--run"])
            .arg(&run)
            .arg(&photo)
            .output()
            .unwrap(),
    );
    assert!(err.contains("head.safetensors"), "{err}");
    fs::write(&head, &head_bytes).unwrap();

    // A truncated checkpoint is refused by --resume, naming it, and left as it was.
    let finetune = |extra: &[&str]| {
        let mut c = bin();
        c.args([
            "-q",
            "finetune",
            "--split-at",
            "block4_pool",
            "--aug-cache",
            "1",
            "--threads",
            "1",
            "--run",
        ])
        .arg(&run)
        .arg("--data")
        .arg(&data)
        .args(extra);
        c
    };
    ok(finetune(&["--epochs", "1"]).output().unwrap());
    let checkpoint = run.join("finetune/checkpoint.safetensors");
    truncate_half(&checkpoint);
    let damaged = fs::read(&checkpoint).unwrap();
    let err = fails(finetune(&["--epochs", "2", "--resume"]).output().unwrap());
    assert!(err.contains("checkpoint.safetensors"), "{err}");
    assert!(
        fs::read(&checkpoint).unwrap() == damaged,
        "the checkpoint is untouched"
    );
}

/// Mounts a tmpfs at `dir` with `opts` (root only); false when this machine does not allow it.
fn mount_tmpfs(dir: &Path, opts: &str) -> bool {
    fs::create_dir_all(dir).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn unmount(dir: &Path) {
    let _ = Command::new("umount").arg(dir).output();
}

#[test]
fn a_read_only_or_full_run_folder_fails_by_name_without_partial_files() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 3)], 5).unwrap();
    let model = tiny_model(t.path());
    let read_only = t.path().join("ro");
    let full = t.path().join("full");
    // 16 KiB holds the lock file but not the features (6 rows × 16 × 2 × 2 floats and a header).
    if !(mount_tmpfs(&read_only, "ro,size=64k") && mount_tmpfs(&full, "size=16k")) {
        unmount(&read_only);
        unmount(&full);
        eprintln!(
            "cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): read-only and full run \
             folders not checked"
        );
        return;
    }
    // Fill the small one so that the features cannot fit.
    let filler = full.join("filler");
    let _ = fs::write(&filler, vec![0u8; 12 * 1024]);
    let err_ro = fails(
        extract(&data, &model, &read_only.join("run"))
            .output()
            .unwrap(),
    );
    let err_full = fails(extract(&data, &model, &full.join("run")).output().unwrap());
    let left_ro = files_under(&read_only);
    let left_full = files_under(&full);
    unmount(&read_only);
    unmount(&full);
    assert!(
        err_ro.contains("ro/run") && err_ro.contains("Read-only"),
        "{err_ro}"
    );
    assert!(
        err_full.contains("full/run") && err_full.contains("No space left"),
        "{err_full}"
    );
    assert_eq!(
        err_full.matches("No space left").count(),
        1,
        "said once: {err_full}"
    );
    assert!(left_ro.is_empty(), "{left_ro:?}");
    assert!(
        left_full
            .iter()
            .all(|f| f == "filler" || f.ends_with(".bottleneck.lock")),
        "no partial feature file on a full disk: {left_full:?}"
    );
}

/// Runs `cmd` to the end; returns whether it succeeded and its peak resident memory in MiB.
fn peak_rss_mib(mut cmd: Command) -> (bool, f64) {
    // (Reaped below with wait4, which also reports the child's peak memory.)
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
        .id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; `usage` is a zeroed out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child, &mut status, 0, &mut usage) };
    assert_eq!(pid, child);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, usage.ru_maxrss as f64 / 1024.0) // ru_maxrss is in KiB on Linux
}

#[test]
fn big_photos_cost_memory_once_and_bombs_none() {
    let t = tempfile::tempdir().unwrap();
    // 4000×4000 (16 MP, a small file: smooth), well under the pixel limit.
    let big = t.path().join("big.png");
    image::RgbImage::from_fn(4000, 4000, |x, y| {
        image::Rgb([(x / 16) as u8, (y / 16) as u8, 77])
    })
    .save(&big)
    .unwrap();
    let preview = |count: &str, out: &str| {
        let mut c = bin();
        c.args([
            "-q",
            "augment-preview",
            "--count",
            count,
            "--format",
            "jpeg",
            "--out",
        ])
        .arg(t.path().join(out))
        .arg(&big);
        c
    };
    let (ok1, one) = peak_rss_mib(preview("1", "one"));
    let (ok12, twelve) = peak_rss_mib(preview("12", "twelve"));
    assert!(ok1 && ok12);
    assert!(
        twelve < one * 1.25 + 32.0,
        "augment-preview memory grows with --count: {one:.0} MiB for 1, {twelve:.0} MiB for 12"
    );

    // A 16000×16000 PNG bomb (a few dozen bytes) is refused before anything is decoded.
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 2)], 1).unwrap();
    fs::write(
        data.join("train/bright/bomb.png"),
        synth::claimed_png(16_000, 16_000),
    )
    .unwrap();
    let model = tiny_model(t.path());
    let (ok, rss) = peak_rss_mib(extract(&data, &model, &t.path().join("run")));
    assert!(ok, "the bomb is skipped, the rest extracted");
    assert!(rss < 400.0, "extract used {rss:.0} MiB for a decode bomb");
    let mut bomb_preview = bin();
    bomb_preview
        .args(["-q", "augment-preview", "--out"])
        .arg(t.path().join("bomb"))
        .arg(data.join("train/bright/bomb.png"));
    let (ok, rss) = peak_rss_mib(bomb_preview);
    assert!(
        !ok && rss < 200.0,
        "refused with little memory ({rss:.0} MiB)"
    );
}
