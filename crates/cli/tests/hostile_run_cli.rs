//! Hostile run folders and model files, through the real `bottleneck` binary on generated data and
//! the tiny synthetic VGG (issue 34): no file outside the run is written, moved or deleted through a
//! symbolic link; models with external data are refused by name; NaN weights in a head or a
//! checkpoint are refused at load, never served or resumed; a replaced `model.onnx` is refused.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::files_under;

mod common;
use common::{bin, fails, ok, tiny_model};

fn extract(data: &Path, model: &Path, run: &Path) -> Command {
    let mut c = common::extract(data, model, run);
    c.arg("-q");
    c
}

fn train_head(run: &Path) -> Command {
    let mut c = bin();
    c.args(["-q", "train-head", "--force", "--epochs", "2", "--run"])
        .arg(run);
    c
}

fn predict(run: &Path, photo: &Path) -> Command {
    let mut c = bin();
    c.args(["predict", "--run"]).arg(run).arg(photo);
    c
}

/// Synthetic data, the tiny model and a run folder with features and a head.
struct Base {
    _t: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    model: PathBuf,
    run: PathBuf,
}

impl Base {
    fn new() -> Base {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let data = root.join("data");
        testkit::write_synthetic(&data, &[("train", 4), ("validation", 2)], 5).unwrap();
        let model = tiny_model(&root);
        let run = root.join("run");
        ok(extract(&data, &model, &run).output().unwrap());
        ok(train_head(&run).output().unwrap());
        Base {
            _t: t,
            root,
            data,
            model,
            run,
        }
    }

    fn photo(&self) -> PathBuf {
        self.data.join("validation/dark/dark.0.png")
    }

    /// A folder outside the run holding one file of its own; returns (folder, file).
    fn outside(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("validation.safetensors");
        fs::write(&file, "not ours").unwrap();
        (dir, file)
    }
}

#[test]
fn a_symlinked_lock_file_is_replaced_and_the_file_it_points_at_is_untouched() {
    let b = Base::new();
    let precious = b.root.join("precious.txt");
    fs::write(&precious, "keep me").unwrap();
    let lock = b.run.join(".bottleneck.lock");
    fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&precious, &lock).unwrap();
    ok(train_head(&b.run).output().unwrap());
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
    let meta = fs::symlink_metadata(&lock).unwrap();
    assert!(meta.file_type().is_file(), "the lock is a plain file now");
}

#[test]
fn a_run_folder_that_is_a_symbolic_link_is_refused_by_every_command_and_nothing_outside_moves() {
    let b = Base::new();
    // RUN/features → a folder elsewhere holding a file that looks like a stale split.
    let (outside, theirs) = b.outside("elsewhere");
    let features = b.run.join("features");
    fs::rename(&features, b.root.join("features-aside")).unwrap();
    std::os::unix::fs::symlink(&outside, &features).unwrap();
    let before = files_under(&outside);
    let err = fails(extract(&b.data, &b.model, &b.run).output().unwrap());
    assert!(
        err.contains("features") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(
        files_under(&outside),
        before,
        "nothing moved outside the run"
    );
    assert_eq!(fs::read_to_string(&theirs).unwrap(), "not ours");
    let err = fails(train_head(&b.run).output().unwrap());
    assert!(err.contains("symbolic link"), "{err}");
    fs::remove_file(&features).unwrap();
    fs::rename(b.root.join("features-aside"), &features).unwrap();

    // RUN/head → a folder elsewhere: writers and readers refuse it alike.
    let head = b.run.join("head");
    let aside = b.root.join("head-aside");
    fs::rename(&head, &aside).unwrap();
    std::os::unix::fs::symlink(&aside, &head).unwrap();
    let before = fs::read(aside.join("head.safetensors")).unwrap();
    let err = fails(train_head(&b.run).output().unwrap());
    assert!(
        err.contains("head") && err.contains("symbolic link"),
        "{err}"
    );
    let err = fails(predict(&b.run, &b.photo()).output().unwrap());
    assert!(err.contains("symbolic link"), "{err}");
    assert!(fs::read(aside.join("head.safetensors")).unwrap() == before);
}

/// `model` with its first initializer's bytes moved into `dir/w.bin` (ONNX external data).
fn with_external_data(model: &Path, dir: &Path) -> PathBuf {
    use features::onnx::proto::{tensor_proto::DataLocation, StringStringEntryProto};
    let mut m = features::onnx::build::decode(&fs::read(model).unwrap()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.raw_data.as_ref().is_some_and(|r| !r.is_empty()))
        .unwrap();
    let raw = t.raw_data.take().unwrap();
    fs::write(dir.join("w.bin"), &raw).unwrap();
    t.data_location = Some(DataLocation::External as i32);
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.external_data = vec![
        entry("location", "w.bin".into()),
        entry("offset", "0".into()),
        entry("length", raw.len().to_string()),
    ];
    let out = dir.join("external.onnx");
    fs::write(&out, features::onnx::build::encode(&m)).unwrap();
    out
}

#[test]
fn a_model_with_external_data_is_refused_by_name_from_any_folder() {
    let b = Base::new();
    let dir = b.root.join("big-model");
    fs::create_dir_all(&dir).unwrap();
    let model = with_external_data(&b.model, &dir);
    // From a folder holding another w.bin, ONNX Runtime used to read that one (wrong features).
    let cwd = b.root.join("cwd");
    fs::create_dir_all(&cwd).unwrap();
    fs::write(cwd.join("w.bin"), vec![0u8; 1 << 16]).unwrap();
    for from in [&cwd, &dir] {
        let run = b.root.join("ext-run");
        let err = fails(
            extract(&b.data, &model, &run)
                .current_dir(from)
                .output()
                .unwrap(),
        );
        assert!(
            err.contains("external.onnx") && err.contains("w.bin") && err.contains("one file"),
            "{err}"
        );
        assert!(files_under(&run.join("features")).is_empty());
    }
}

/// Sets the first value of the first f32 tensor of a safetensors file whose name starts with
/// `prefix` to NaN, in place.
fn poison(path: &Path, prefix: &str) {
    let mut bytes = fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (_, t) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, v)| k.starts_with(prefix) && v["dtype"] == "F32")
        .unwrap();
    let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    fs::write(path, bytes).unwrap();
}

#[test]
fn nan_weights_in_a_head_are_refused_by_predict_evaluate_and_export() {
    let b = Base::new();
    let head = b.run.join("head/head.safetensors");
    poison(&head, "");
    let err = fails(predict(&b.run, &b.photo()).output().unwrap());
    assert!(
        err.contains("head.safetensors") && err.contains("NaN"),
        "{err}"
    );
    let err = fails(
        bin()
            .args(["-q", "evaluate", "--run"])
            .arg(&b.run)
            .arg("--data")
            .arg(&b.data)
            .output()
            .unwrap(),
    );
    assert!(err.contains("head.safetensors"), "{err}");
    assert!(!b.run.join("evaluate").exists() && !b.run.join("evaluation").exists());
    let out = b.root.join("exported.onnx");
    let err = fails(
        bin()
            .args(["-q", "export", "--run"])
            .arg(&b.run)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap(),
    );
    assert!(err.contains("head.safetensors"), "{err}");
    assert!(!out.exists(), "no model exported from NaN weights");
}

#[test]
fn a_nan_checkpoint_is_not_resumed_and_a_replaced_model_onnx_is_refused() {
    let b = Base::new();
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
        .arg(&b.run)
        .arg("--data")
        .arg(&b.data)
        .args(extra);
        c
    };
    ok(finetune(&["--epochs", "1"]).output().unwrap());
    let model = b.run.join("finetune/model.onnx");
    ok(predict(&b.run, &b.photo()).output().unwrap());

    // A valid classifier that is not the one fine-tuning wrote (here: re-serialized with another
    // doc string) is refused, naming the file and the way out.
    let good = fs::read(&model).unwrap();
    let mut m = features::onnx::build::decode(&good).unwrap();
    m.doc_string = Some("replaced by hand".into());
    fs::write(&model, features::onnx::build::encode(&m)).unwrap();
    let err = fails(predict(&b.run, &b.photo()).output().unwrap());
    assert!(
        err.contains("model.onnx") && err.contains("--stage head"),
        "{err}"
    );
    fs::write(&model, &good).unwrap();

    // A checkpoint with NaN weights is refused by --resume, naming it; the outputs stay as they were.
    let checkpoint = b.run.join("finetune/checkpoint.safetensors");
    poison(&checkpoint, "param/");
    let err = fails(finetune(&["--epochs", "2", "--resume"]).output().unwrap());
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("NaN"),
        "{err}"
    );
    assert!(fs::read(&model).unwrap() == good, "model.onnx untouched");
    ok(predict(&b.run, &b.photo()).output().unwrap());
}
