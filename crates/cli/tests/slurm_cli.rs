//! Sharded extraction on a real single-node Slurm cluster (Debian's slurm-wlm and munge, started by
//! `scripts/slurm/single_node.sh`): a 4-task job array over a small subset of the shared Dogs vs
//! Cats photos and the real VGG16, `merge` as a dependent job (`scripts/slurm/submit.sh`), and the
//! merged files compared byte for byte with a one-process `extract`. In CI a Slurm that cannot be
//! started fails the test; elsewhere it is skipped with a note.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Stops the daemons when the test ends, whatever happens.
struct Cluster(PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/slurm/single_node.sh"))
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

fn logs(dir: &Path) -> String {
    let mut s = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "log" || e == "out") {
            s += &format!(
                "--- {}\n{}\n",
                p.display(),
                std::fs::read_to_string(&p).unwrap_or_default()
            );
        }
    }
    s
}

#[test]
fn a_slurm_job_array_extracts_shards_that_merge_into_the_one_process_file() {
    let Some(shared) = testkit::shared_root() else {
        return;
    };
    let in_ci = std::env::var_os("CI").is_some();
    if !(have("slurmctld") && have("slurmd") && have("sbatch") && have("munged")) {
        assert!(
            !in_ci,
            "CI must run the Slurm test: install slurm-wlm and munge (.ci/run does)"
        );
        eprintln!(
            "note: Slurm (slurm-wlm, munge) is not installed; SKIPPING the Slurm job-array test"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::link_shared_subset(&shared, &data, &["train", "validation"], 6).unwrap();
    let model = shared.join("models/vgg16_keras_notop.onnx");
    let bin = env!("CARGO_BIN_EXE_bottleneck");

    let one = t.path().join("one");
    let out = Command::new(bin)
        .args(["-q", "extract", "--threads", "1", "--data"])
        .arg(&data)
        .arg("--model")
        .arg(&model)
        .arg("--run")
        .arg(&one)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let slurm = t.path().join("slurm");
    let started = Command::new(repo().join("scripts/slurm/single_node.sh"))
        .arg("start")
        .arg(&slurm)
        .env("SLURMCTLD_PORT", "16817")
        .env("SLURMD_PORT", "16818")
        .output()
        .unwrap();
    let _cluster = Cluster(slurm.clone());
    if !started.status.success() {
        let why = String::from_utf8_lossy(&started.stderr);
        assert!(!in_ci, "Slurm could not be started in CI: {why}");
        eprintln!(
            "note: Slurm could not be started here ({why}); SKIPPING the Slurm job-array test"
        );
        return;
    }
    let conf = slurm.join("slurm.conf");
    let run = t.path().join("sharded");
    let submitted = Command::new(repo().join("scripts/slurm/submit.sh"))
        .arg("4")
        .arg(&data)
        .arg(&run)
        .arg(&model)
        .env("SLURM_CONF", &conf)
        .env("BIN", bin)
        .env("NO_HEAD", "1")
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "sbatch failed: {}\n{}",
        String::from_utf8_lossy(&submitted.stderr),
        logs(&slurm)
    );
    let start = Instant::now();
    let merged = run.join("slurm-merge.out");
    loop {
        let queue = Command::new("squeue")
            .args(["-h", "-o", "%i %T"])
            .env("SLURM_CONF", &conf)
            .output()
            .unwrap();
        let queue = String::from_utf8_lossy(&queue.stdout).to_string();
        if queue.trim().is_empty() && merged.is_file() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the jobs did not finish in 10 minutes: {queue}\n{}\n{}",
            logs(&run),
            logs(&slurm)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for split in ["train", "validation"] {
        let a = std::fs::read(one.join("features").join(format!("{split}.safetensors"))).unwrap();
        let b = std::fs::read(run.join("features").join(format!("{split}.safetensors")))
            .unwrap_or_else(|e| {
                panic!("no merged {split} ({e}):\n{}\n{}", logs(&run), logs(&slurm))
            });
        assert!(a == b, "merged {split} differs from the one-process file");
        for i in 0..4 {
            let shard = run
                .join("features")
                .join(format!("{split}.shard-{i}-of-4.safetensors"));
            assert!(shard.is_file(), "{} missing", shard.display());
        }
    }
    let out = std::fs::read_to_string(run.join("slurm-extract-3.out")).unwrap();
    assert!(
        out.contains("shard 3 of 4") && out.contains("Slurm job array"),
        "{out}"
    );
}
