//! A combination manifest (`parts`): EfficientNet-Lite0 and -Lite2 built into one graph from the shared
//! files, pinned by its sha256; on real photos its features are Lite2's exactly, beside Lite0's of
//! the same photo (resized inside the graph, so close rather than equal); a bad combination is named.

use features::extract::{self, ExtractConfig};
use features::manifest::{self, HubOptions};
use features::onnx::{side_by_side, Part};
use features::store::{self, FeatureFile};

const COMBINATION: &str = "efficientnet-lite0+lite2";

fn features_of(data: &std::path::Path, model: &str, run: std::path::PathBuf) -> FeatureFile {
    let cfg = ExtractConfig::new(data, model, run);
    extract::extract(&cfg, &mut |_| {}).unwrap();
    FeatureFile::read(&store::feature_path(&cfg.run, "validation")).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn the_combination_is_lite2_exactly_beside_lite0_of_the_same_photo() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let resolved = manifest::resolve(COMBINATION, &HubOptions::default()).unwrap();
    let m = resolved.manifest.as_ref().unwrap();
    assert_eq!(
        resolved.sha256, m.sha256,
        "the pinned sha256 of the built graph"
    );
    assert_eq!(m.size, Some(260));

    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::link_shared_subset(&shared, &data, &["validation"], 4).unwrap();
    let both = features_of(&data, COMBINATION, t.path().join("both"));
    let lite0 = features_of(&data, "efficientnet-lite0", t.path().join("lite0"));
    let lite2 = features_of(&data, "efficientnet-lite2", t.path().join("lite2"));
    assert_eq!(both.shape, vec![8, 2560]);
    assert_eq!(both.meta.files, lite2.meta.files);
    for row in 0..8 {
        let r = &both.features[row * 2560..(row + 1) * 2560];
        let (first, second) = r.split_at(1280);
        let l2 = &lite2.features[row * 1280..(row + 1) * 1280];
        let worst = second
            .iter()
            .zip(l2)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "row {row}: Lite2's half differs by {worst}");
        let l0 = &lite0.features[row * 1280..(row + 1) * 1280];
        let c = cosine(first, l0);
        assert!(
            c > 0.95,
            "row {row}: Lite0's half has cosine {c} with Lite0's features"
        );
    }
}

#[test]
fn a_combination_of_parts_with_different_opsets_is_refused_naming_the_part() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let vgg = std::fs::read(shared.join("models/vgg16_keras_notop.onnx")).unwrap();
    let lite0 = std::fs::read(shared.join("models/efficientnet_lite0.onnx")).unwrap();
    let parts = [
        Part {
            name: "lite0",
            bytes: &lite0,
            features: "pooled",
            size: 224,
        },
        Part {
            name: "vgg",
            bytes: &vgg,
            features: "block5_pool",
            size: 224,
        },
    ];
    let err = side_by_side(&parts, 224, "pooled").unwrap_err().to_string();
    assert!(err.contains("part vgg") && err.contains("opsets"), "{err}");
    let err = side_by_side(&parts[..1], 224, "pooled")
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least two parts"), "{err}");
}
