//! Extraction end to end on a synthetic folder and a tiny VGG-shaped model: shapes, rows ↔ files ↔ labels,
//! the cache (up to date, invalidated by any change), bad images, and `--strict`.

use std::fs;
use std::path::{Path, PathBuf};

use features::extract::{self, Event, ExtractConfig};
use features::preprocess::Preprocess;
use features::store::{self, FeatureFile};
use testkit::synth::{self, VggSpec};

fn tiny_model(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.onnx");
    fs::write(&p, synth::vgg_like(&VggSpec::default())).unwrap();
    p
}

fn config(data: &Path, model: &Path, run: &Path) -> ExtractConfig {
    let mut c = ExtractConfig::new(data, model.to_string_lossy(), run);
    c.preprocess = Some(Preprocess::Caffe);
    c.size = 64;
    c.batch = 3;
    c.threads = Some(1);
    c
}

/// Runs extraction and returns (summary, number of up-to-date events).
fn run(cfg: &ExtractConfig) -> (extract::ExtractSummary, usize) {
    let mut up = 0;
    let s = extract::extract(cfg, &mut |e| {
        if let Event::UpToDate { .. } = e {
            up += 1
        }
    })
    .unwrap();
    (s, up)
}

#[test]
fn features_shapes_labels_and_files_line_up() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 4), ("validation", 2)], 7).unwrap();
    let model = tiny_model(t.path());
    let (s, up) = run(&config(&data, &model, &t.path().join("run")));
    assert_eq!(up, 0);
    assert_eq!(s.classes, vec!["bright", "dark"]);
    assert_eq!(s.splits.len(), 2);
    let f = FeatureFile::read(&store::feature_path(&t.path().join("run"), "train")).unwrap();
    assert_eq!(f.shape, vec![8, 16, 2, 2]);
    assert_eq!(s.splits[0].class_counts, vec![4, 4]);
    for (file, label) in f.meta.files.iter().zip(&f.labels) {
        let class = file.split('/').nth(1).unwrap();
        assert_eq!(f.meta.classes[*label as usize], class, "{file}");
    }
    assert!(
        f.features.iter().any(|v| *v != 0.0),
        "features are not all zero"
    );
    assert_eq!(f.meta.provenance.preprocess, "caffe");
    assert_eq!(f.meta.provenance.image_size, 64);
    assert_eq!(f.meta.provenance.model_sha256.len(), 64);
}

#[test]
fn cache_is_reused_and_invalidated_by_every_input() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 2), ("validation", 2)], 3).unwrap();
    let model = tiny_model(t.path());
    let run_dir = t.path().join("run");
    let cfg = config(&data, &model, &run_dir);
    run(&cfg);
    let (_, up) = run(&cfg);
    assert_eq!(up, 2, "second identical run does no inference");

    // A changed image re-extracts only its split.
    let victim = data.join("train/dark/dark.1.jpg");
    image::RgbImage::from_pixel(50, 50, image::Rgb([1, 2, 3]))
        .save(&victim)
        .unwrap();
    let (_, up) = run(&cfg);
    assert_eq!(up, 1, "validation reused, train recomputed");

    // An added image.
    image::RgbImage::from_pixel(50, 50, image::Rgb([9, 9, 9]))
        .save(data.join("validation/dark/new.png"))
        .unwrap();
    let (s, up) = run(&cfg);
    assert_eq!(up, 1);
    assert_eq!(s.splits[1].rows, 5);

    // A removed image.
    fs::remove_file(data.join("validation/dark/new.png")).unwrap();
    assert_eq!(run(&cfg).1, 1);

    // Size, preprocessing, resize filter and model each invalidate everything.
    let mut c = cfg.clone();
    c.size = 96;
    assert_eq!(run(&c).1, 0);
    let mut c = cfg.clone();
    c.preprocess = Some(Preprocess::Unit);
    assert_eq!(run(&c).1, 0);
    let mut c = cfg.clone();
    c.resize = features::preprocess::Resize::Bilinear;
    assert_eq!(run(&c).1, 0);
    let other = t.path().join("other.onnx");
    fs::write(
        &other,
        synth::vgg_like(&VggSpec {
            seed: 99,
            ..VggSpec::default()
        }),
    )
    .unwrap();
    let c = config(&data, &other, &run_dir);
    assert_eq!(run(&c).1, 0);
}

#[test]
fn bad_images_are_skipped_and_listed_or_fatal_with_strict() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 3)], 5).unwrap();
    let cats = data.join("train/bright");
    fs::write(cats.join("empty.jpg"), b"").unwrap();
    fs::write(cats.join("notes.jpg"), b"this is text, not a photo").unwrap();
    let good = fs::read(cats.join("bright.1.jpg")).unwrap();
    fs::write(cats.join("truncated.jpg"), &good[..good.len() / 3]).unwrap();
    // Grayscale, RGBA and 16-bit images are converted, not skipped.
    image::GrayImage::from_pixel(40, 40, image::Luma([200]))
        .save(cats.join("gray.png"))
        .unwrap();
    image::RgbaImage::from_pixel(40, 40, image::Rgba([200, 10, 10, 0]))
        .save(cats.join("rgba.png"))
        .unwrap();
    image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(
        40,
        40,
        image::Rgb([60000, 100, 100]),
    )
    .save(cats.join("deep.png"))
    .unwrap();
    // A PNG header claiming 100000×100000 pixels.
    fs::write(cats.join("huge.png"), synth::claimed_png(100_000, 100_000)).unwrap();

    let model = tiny_model(t.path());
    let cfg = config(&data, &model, &t.path().join("run"));
    let mut events = Vec::new();
    let s = extract::extract(&cfg, &mut |e| {
        if let Event::Skipped { file, reason, .. } = e {
            events.push(format!("{file}: {reason}"))
        }
    })
    .unwrap();
    let skipped: Vec<&str> = s.splits[0]
        .skipped
        .iter()
        .map(|k| k.file.as_str())
        .collect();
    assert_eq!(
        skipped,
        vec![
            "train/bright/empty.jpg",
            "train/bright/huge.png",
            "train/bright/notes.jpg",
            "train/bright/truncated.jpg"
        ]
    );
    let reasons = events.join("\n");
    assert!(reasons.contains("empty file"), "{reasons}");
    assert!(reasons.contains("too large"), "{reasons}");
    assert!(reasons.contains("not an image"), "{reasons}");
    assert!(reasons.contains("corrupt or truncated"), "{reasons}");
    assert_eq!(
        s.splits[0].rows,
        3 + 3 + 3,
        "3 bright + 3 converted + 3 dark"
    );
    let f = FeatureFile::read(&s.splits[0].path).unwrap();
    assert_eq!(
        f.meta.skipped.len(),
        4,
        "skips are recorded in the metadata"
    );
    assert!(f.meta.files.iter().any(|x| x.ends_with("deep.png")));

    let mut strict = cfg.clone();
    strict.strict = true;
    strict.run = t.path().join("run2");
    let e = extract::extract(&strict, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty.jpg") && e.contains("--strict"), "{e}");
    assert!(
        !store::feature_path(&strict.run, "train").exists(),
        "no feature file after a failed run"
    );
}

#[test]
fn exif_orientation_is_applied() {
    // A 40×20 JPEG with an EXIF APP1 segment saying "rotate 90° clockwise" (orientation 6).
    let img = image::RgbImage::from_fn(40, 20, |x, _| image::Rgb([(x * 6) as u8, 0, 0]));
    let mut jpeg = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    let tiff: Vec<u8> = [
        &b"MM\x00\x2a\x00\x00\x00\x08"[..],
        &[0x00, 0x01],
        &[
            0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00,
        ],
        &[0, 0, 0, 0],
    ]
    .concat();
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let len = (app1.len() + 2) as u16;
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    let d = features::image_io::decode_rgb8(&out, Path::new("rotated.jpg")).unwrap();
    assert_eq!(d.image.dimensions(), (20, 40), "width and height swap");
    assert!(
        d.notes.iter().any(|n| n.contains("orientation")),
        "{:?}",
        d.notes
    );
}

#[test]
fn model_without_manifest_needs_preprocess() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 1)], 1).unwrap();
    let model = tiny_model(t.path());
    let mut cfg = config(&data, &model, &t.path().join("run"));
    cfg.preprocess = None;
    let e = extract::extract(&cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("--preprocess") && e.contains("caffe") && e.contains("torch"),
        "{e}"
    );
}

#[test]
fn int8_precision_is_recorded_and_separates_the_cache() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 5), ("validation", 2)], 21).unwrap();
    let model = tiny_model(t.path());
    let run_dir = t.path().join("run");
    let fp32 = config(&data, &model, &run_dir);
    let (_, up) = run(&fp32);
    assert_eq!(up, 0);
    let mut int8 = fp32.clone();
    int8.precision = extract::Precision::Int8;
    let (s, up) = run(&int8);
    assert_eq!(up, 0, "int8 does not reuse fp32 features");
    assert_eq!(s.precision, extract::Precision::Int8);
    let q = FeatureFile::read(&store::feature_path(&run_dir, "train")).unwrap();
    assert_eq!(q.meta.provenance.precision, "int8");
    assert!(
        run_dir.join("models").is_dir(),
        "the quantized model is cached in RUN/models"
    );
    assert_eq!(run(&int8).1, 2, "second int8 run is up to date");
}

#[test]
fn a_truncated_feature_file_is_not_up_to_date_and_is_remade() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 3), ("validation", 2)], 4).unwrap();
    let model = tiny_model(t.path());
    let run_dir = t.path().join("run");
    let cfg = config(&data, &model, &run_dir);
    run(&cfg);
    let path = store::feature_path(&run_dir, "train");
    let whole = fs::read(&path).unwrap();
    fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let err = store::read_meta(&path).unwrap_err().to_string();
    assert!(
        err.contains("truncated") && err.contains("train.safetensors"),
        "{err}"
    );
    let (_, up) = run(&cfg);
    assert_eq!(up, 1, "only validation is up to date; train is re-made");
    assert_eq!(fs::read(&path).unwrap(), whole, "re-made bit for bit");
}

#[test]
fn a_split_gone_from_the_data_folder_is_set_aside_not_left_for_training() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 3), ("validation", 2)], 6).unwrap();
    let model = tiny_model(t.path());
    let run_dir = t.path().join("run");
    let cfg = config(&data, &model, &run_dir);
    run(&cfg);
    // The user moves the validation photos into train and deletes validation/.
    for class in ["bright", "dark"] {
        for e in fs::read_dir(data.join("validation").join(class)).unwrap() {
            let p = e.unwrap().path();
            let name = format!("moved-{}", p.file_name().unwrap().to_string_lossy());
            fs::rename(&p, data.join("train").join(class).join(name)).unwrap();
        }
    }
    fs::remove_dir_all(data.join("validation")).unwrap();
    let (s, _) = run(&cfg);
    assert_eq!(store::list_splits(&run_dir).unwrap(), ["train"]);
    let moved = run_dir.join("features/stale/validation.safetensors");
    assert_eq!(s.stale, std::slice::from_ref(&moved));
    assert!(moved.is_file());
}

#[test]
fn an_input_size_beyond_the_bound_is_refused_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 1)], 6).unwrap();
    let model = tiny_model(t.path());
    let mut cfg = config(&data, &model, &t.path().join("run"));
    cfg.size = 4000;
    let err = extract::extract(&cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("--size 4000 is too large") && err.contains("1024"),
        "{err}"
    );
    assert!(!t.path().join("run").exists(), "nothing written");
}

#[test]
fn a_training_photo_copied_into_validation_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 3), ("validation", 2)], 5).unwrap();
    let model = tiny_model(t.path());
    let run_dir = t.path().join("run");
    let (clean, _) = run(&config(&data, &model, &run_dir));
    assert!(clean.duplicates.is_empty(), "{:?}", clean.duplicates);
    fs::copy(
        data.join("train/dark/dark.1.jpg"),
        data.join("validation/dark/copy.jpg"),
    )
    .unwrap();
    let (s, _) = run(&config(&data, &model, &run_dir));
    assert_eq!(
        s.duplicates,
        vec![extract::Duplicate {
            file: "validation/dark/copy.jpg".into(),
            same_as: "train/dark/dark.1.jpg".into(),
        }]
    );
}
