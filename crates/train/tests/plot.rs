//! Learning curves: a decodable PNG with drawn content and an SVG with both panels' text.

use train::metrics::EpochMetrics;
use train::plot::write_curves;

fn history(n: usize) -> Vec<EpochMetrics> {
    (1..=n)
        .map(|e| EpochMetrics {
            epoch: e,
            loss: 1.0 / e as f64,
            accuracy: 1.0 - 0.5 / e as f64,
            val_loss: 1.2 / e as f64 + 0.1,
            val_accuracy: 0.9 - 0.3 / e as f64,
            seconds: 0.1,
        })
        .collect()
}

#[test]
fn writes_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("curves.png"), dir.path().join("curves.svg"));
    write_curves(&history(20), "cats/dogs head", &png, &svg).unwrap();

    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 10_000, "PNG is only {} bytes", bytes.len());
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1200, 460));
    let colored = img
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0;
            r.max(g).max(b) - r.min(g).min(b) > 60
        })
        .count();
    assert!(
        colored > 500,
        "only {colored} coloured pixels: curves not drawn"
    );
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
    assert!(dark > 500, "only {dark} dark pixels: no text or axes");

    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..40.min(text.len())]);
    for word in ["loss", "accuracy", "validation", "train", "cats/dogs head"] {
        assert!(text.contains(word), "SVG lacks {word:?}");
    }
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 2, "temporary files left behind");
}

#[test]
fn single_epoch_and_empty_history() {
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("a.png"), dir.path().join("a.svg"));
    write_curves(&history(1), "one", &png, &svg).unwrap();
    assert!(image::open(&png).is_ok());
    assert!(write_curves(
        &[],
        "none",
        &dir.path().join("b.png"),
        &dir.path().join("b.svg")
    )
    .is_err());
}
