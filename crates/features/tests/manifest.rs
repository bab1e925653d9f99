//! Model manifests and hub resolution, tested with local files only: the built-in manifests parse, a local file
//! is recognised by its sha256, the hf-hub cache layout is honoured offline, and an unreachable hub fails fast.

use std::time::{Duration, Instant};

use features::manifest::{self, HubOptions, HubSource};
use features::preprocess::{Preprocess, Resize};

#[test]
fn builtin_manifests_parse() {
    let all = manifest::builtin().unwrap();
    let names: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "vgg16",
            "vgg16-keras",
            "mobilenet-v2",
            "efficientnet-lite0",
            "efficientnet-lite2",
            "efficientnet-lite0+lite2"
        ]
    );
    let keras = &all[1];
    assert_eq!(keras.preprocess, Preprocess::Caffe);
    assert_eq!(keras.trainable_from.as_deref(), Some("block4_pool"));
    assert_eq!(keras.sha256.len(), 64);
    assert!(all[0].hub.is_some());
    // The modern backbones: their own preprocessing, native size, shorter side + centre crop, cut at
    // the pooled vector; recognised by sha256 (the shared files' SHA256SUMS).
    for m in &all[2..] {
        assert_eq!(m.features, "pooled", "{}", m.name);
        assert_eq!(m.resize, Some(Resize::BilinearCrop), "{}", m.name);
        assert_eq!(m.sha256.len(), 64, "{}", m.name);
    }
    assert_eq!(all[2].preprocess, Preprocess::Torch);
    assert_eq!(all[4].preprocess, Preprocess::Lite);
    assert_eq!((all[3].size, all[4].size), (Some(224), Some(260)));
    // The combination: two parts of the same preprocessing, fed at the larger part's size.
    assert_eq!(all[5].parts, ["efficientnet-lite0", "efficientnet-lite2"]);
    assert_eq!(
        (all[5].preprocess, all[5].size),
        (Preprocess::Lite, Some(260))
    );
}

#[test]
fn the_shared_backbones_are_recognised_by_their_sha256() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    for (file, name) in [
        ("mobilenet_v2_torchvision.onnx", "mobilenet-v2"),
        ("efficientnet_lite0.onnx", "efficientnet-lite0"),
        ("efficientnet_lite2.onnx", "efficientnet-lite2"),
        ("vgg16_keras_notop.onnx", "vgg16-keras"),
    ] {
        let path = shared.join("models").join(file);
        let found = manifest::find(path.to_str().unwrap(), &HubOptions::default());
        assert_eq!(found.map(|m| m.name), Some(name.to_string()), "{file}");
    }
}

#[test]
fn a_users_manifest_describes_a_local_file_and_a_wrong_one_is_named() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("mine.onnx");
    std::fs::write(&model, b"model bytes").unwrap();
    let write = |text: &str| {
        let p = t.path().join("mine.toml");
        std::fs::write(&p, text).unwrap();
        HubOptions {
            manifest: Some(p),
            ..HubOptions::default()
        }
    };
    let good = write(
        "name = \"mine\"\npreprocess = \"lite\"\nfeatures = \"pooled\"\nsize = 96\nresize = \"bicubic-crop\"\n",
    );
    let r = manifest::resolve(model.to_str().unwrap(), &good).unwrap();
    let m = r.manifest.unwrap();
    assert_eq!((m.preprocess, m.size), (Preprocess::Lite, Some(96)));
    assert_eq!(m.resize, Some(Resize::BicubicCrop));
    // A misspelt field, a missing one, a bad value, a wrong sha256: each is named.
    for (text, named) in [
        (
            "name = \"m\"\npreprocess = \"lite\"\nfeature = \"pooled\"\n",
            "feature",
        ),
        ("name = \"m\"\nfeatures = \"pooled\"\n", "preprocess"),
        (
            "name = \"m\"\npreprocess = \"lite\"\nresize = \"squash\"\n",
            "resize",
        ),
        (
            "name = \"m\"\npreprocess = \"lite\"\nsha256 = \"00\"\n",
            "sha256",
        ),
    ] {
        let e = manifest::resolve(model.to_str().unwrap(), &write(text))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mine.toml") && e.contains(named), "{named}: {e}");
    }
}

#[test]
fn local_file_gets_its_manifest_by_checksum_only() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("some.onnx");
    std::fs::write(&p, b"not the keras model").unwrap();
    let r = manifest::resolve(p.to_str().unwrap(), &HubOptions::default()).unwrap();
    assert!(r.manifest.is_none());
    assert_eq!(r.sha256, manifest::sha256_hex(b"not the keras model"));
    let e = manifest::resolve(
        t.path().join("missing.onnx").to_str().unwrap(),
        &HubOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

fn source() -> HubSource {
    HubSource {
        repo: "someorg/models".into(),
        file: "sub/dir/m.onnx".into(),
        revision: "main".into(),
    }
}

#[test]
fn offline_uses_the_hugging_face_cache_layout() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("models--someorg--models");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit).join("sub/dir");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(snap.join("m.onnx"), b"weights").unwrap();
    let hub = HubOptions {
        cache_dir: Some(t.path().to_path_buf()),
        offline: true,
        endpoint: None,
        int8_cache: None,
        manifest: None,
    };
    let got = manifest::fetch(&source(), &hub).unwrap();
    assert_eq!(std::fs::read(got).unwrap(), b"weights");

    let empty = tempfile::tempdir().unwrap();
    let hub = HubOptions {
        cache_dir: Some(empty.path().to_path_buf()),
        offline: true,
        endpoint: None,
        int8_cache: None,
        manifest: None,
    };
    let e = manifest::fetch(&source(), &hub).unwrap_err().to_string();
    assert!(
        e.contains("offline") && e.contains("someorg/models") && e.contains("--model"),
        "{e}"
    );
}

#[test]
fn unreachable_hub_fails_fast_with_advice() {
    let empty = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of the loopback address: the connection is refused at once.
    let hub = HubOptions {
        cache_dir: Some(empty.path().to_path_buf()),
        offline: false,
        endpoint: Some("http://127.0.0.1:9".into()),
        int8_cache: None,
        manifest: None,
    };
    let start = Instant::now();
    let e = manifest::fetch(&source(), &hub).unwrap_err().to_string();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        e.contains("cannot reach") && e.contains("--model /path/to/file.onnx"),
        "{e}"
    );
}
