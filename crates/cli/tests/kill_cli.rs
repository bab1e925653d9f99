//! Faults and concurrency with real processes on a small real subset: `extract` and `finetune`
//! killed with SIGKILL at several points and run again (`--resume` once a checkpoint exists) end
//! with files byte-identical to an uninterrupted run and no temporary left; a second `extract`
//! into a run folder in use is refused naming the holder, and the first one is unharmed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::files_under;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bottleneck"))
}

fn run_ok(mut c: Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn temporaries(run: &Path) -> Vec<String> {
    files_under(run)
        .into_iter()
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap_or(f);
            runfs::atomic::is_temp_name(name)
        })
        .collect()
}

/// Starts `cmd`, waits until `ready()` (at most 120 s), waits `after` more, and kills it with
/// SIGKILL. Returns false when the command finished before it could be killed.
fn kill_when(mut cmd: Command, ready: impl Fn() -> bool, after: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready() {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never got ready"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(after);
    let alive = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    alive
}

/// The shared subset (16 train + 4 validation photos per class) and the real VGG16.
fn real_inputs(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let shared = testkit::shared_root()?;
    let data = dir.join("data");
    testkit::link_shared_subset(&shared, &data, &["train"], 16).unwrap();
    let val = dir.join("val-source");
    testkit::link_shared_subset(&shared, &val, &["validation"], 4).unwrap();
    std::fs::rename(val.join("validation"), data.join("validation")).unwrap();
    Some((data, shared.join("models/vgg16_keras_notop.onnx")))
}

fn extract(data: &Path, model: &Path, run: &Path) -> Command {
    let mut c = bin();
    c.args(["-q", "extract", "--batch", "4", "--size", "96", "--data"])
        .arg(data)
        .arg("--model")
        .arg(model)
        .arg("--run")
        .arg(run);
    c
}

fn feature_bytes(run: &Path) -> Vec<Vec<u8>> {
    ["train", "validation"]
        .iter()
        .map(|s| std::fs::read(run.join(format!("features/{s}.safetensors"))).unwrap())
        .collect()
}

fn writing(dir: PathBuf) -> impl Fn() -> bool {
    move || {
        std::fs::read_dir(&dir).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| runfs::atomic::is_temp_name(&e.file_name().to_string_lossy()))
        })
    }
}

#[test]
fn extract_killed_at_several_points_reruns_to_identical_features() {
    let t = tempfile::tempdir().unwrap();
    let Some((data, model)) = real_inputs(t.path()) else {
        return;
    };
    let reference = t.path().join("reference");
    run_ok(extract(&data, &model, &reference));
    let want = feature_bytes(&reference);
    let mut killed = 0;
    for (i, ms) in [0u64, 400, 1200].into_iter().enumerate() {
        let run = t.path().join(format!("run{i}"));
        let ready = writing(run.join("features"));
        killed += usize::from(kill_when(
            extract(&data, &model, &run),
            ready,
            Duration::from_millis(ms),
        ));
        assert!(
            !run.join("features/validation.safetensors").exists()
                || run.join("features/train.safetensors").exists(),
            "a split file appears only complete"
        );
        run_ok(extract(&data, &model, &run));
        assert!(
            feature_bytes(&run) == want,
            "kill point {ms} ms: features differ"
        );
        assert_eq!(
            temporaries(&run),
            Vec::<String>::new(),
            "kill point {ms} ms"
        );
    }
    assert!(killed >= 2, "only {killed} of 3 runs were killed mid-way");
}

#[test]
fn a_second_extract_into_a_busy_run_is_refused_and_the_first_is_unharmed() {
    let t = tempfile::tempdir().unwrap();
    let Some((data, model)) = real_inputs(t.path()) else {
        return;
    };
    let reference = t.path().join("reference");
    run_ok(extract(&data, &model, &reference));
    let run = t.path().join("run");
    let mut first = extract(&data, &model, &run)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = writing(run.join("features"));
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < Duration::from_secs(120));
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended early"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // The second one differs (nearest vs bilinear) and would have mixed rows into the file.
    let second = extract(&data, &model, &run)
        .args(["--resize", "bilinear"])
        .output()
        .unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("is in use by") && err.contains("pid") && err.contains("extract"),
        "{err}"
    );
    assert!(feature_bytes(&run) == feature_bytes(&reference));
    assert_eq!(temporaries(&run), Vec::<String>::new());
}

/// When to kill a run: a condition on its folder.
type Ready = Box<dyn Fn() -> bool>;
/// The condition for a run folder.
type KillPoint = fn(&Path) -> Ready;

fn building_draws(run: &Path) -> Ready {
    Box::new(writing(run.join("finetune-cache")))
}

fn after_epoch_1(run: &Path) -> Ready {
    let checkpoint = run.join("finetune/checkpoint.safetensors");
    Box::new(move || checkpoint.is_file())
}

/// The finetune outputs a user keeps: the block, the head and model.onnx.
fn finetune_bytes(run: &Path) -> Vec<Vec<u8>> {
    ["block.safetensors", "head.safetensors", "model.onnx"]
        .iter()
        .map(|f| std::fs::read(run.join("finetune").join(f)).unwrap())
        .collect()
}

#[test]
fn finetune_killed_at_several_points_resumes_to_identical_outputs() {
    let t = tempfile::tempdir().unwrap();
    let Some((data, model)) = real_inputs(t.path()) else {
        return;
    };
    let base = t.path().join("base");
    run_ok(extract(&data, &model, &base));
    let mut head = bin();
    head.args(["-q", "train-head", "--epochs", "3", "--run"])
        .arg(&base);
    run_ok(head);
    let finetune = |run: &Path, resume: bool| {
        let mut c = bin();
        c.args([
            "-q",
            "finetune",
            "--epochs",
            "3",
            "--aug-cache",
            "2",
            "--lr",
            "1e-5",
        ])
        .arg("--run")
        .arg(run)
        .arg("--data")
        .arg(&data);
        if resume {
            c.arg("--resume");
        }
        c
    };
    let copy_run = |to: &Path| {
        for f in files_under(&base) {
            let dst = to.join(&f);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(base.join(&f), dst).unwrap();
        }
    };
    let reference = t.path().join("reference");
    copy_run(&reference);
    run_ok(finetune(&reference, false));
    let want = finetune_bytes(&reference);

    let points: [(&str, KillPoint); 2] = [
        ("building the augmented draws", building_draws),
        ("in epoch 2", after_epoch_1),
    ];
    for (i, (name, ready)) in points.iter().enumerate() {
        let run = t.path().join(format!("run{i}"));
        copy_run(&run);
        let killed = kill_when(
            finetune(&run, false),
            ready(&run),
            Duration::from_millis(50),
        );
        assert!(killed, "{name}: finished before it could be killed");
        let resume = run.join("finetune/checkpoint.safetensors").is_file();
        run_ok(finetune(&run, resume));
        assert!(
            finetune_bytes(&run) == want,
            "killed {name}: outputs differ"
        );
        assert_eq!(temporaries(&run), Vec::<String>::new(), "killed {name}");
    }
}
