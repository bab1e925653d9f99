//! Hostile files and folders through the real `bottleneck` binary (issue 34): endless and huge
//! files (`/dev/zero`, a 2 GB sparse file named `.jpg`, a named pipe) are refused from their
//! metadata or first bytes in bounded memory, hidden class folders are named, class folders that
//! are one folder are refused, and one photo per class says what can work.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, extract, tiny_model};

/// The most memory (peak resident set) a command may use on a hostile file.
const MAX_PEAK_MB: u64 = 200;
/// A child past this is killed at once (the old code read `/dev/zero` until the kernel killed it).
const KILL_AT_MB: u64 = 1024;

/// What a finished child did and its peak resident memory.
struct Measured {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    peak_mb: u64,
}

impl Measured {
    fn text(&self) -> String {
        format!(
            "exit {:?}, peak {} MB\nstdout: {}\nstderr: {}",
            self.code, self.peak_mb, self.stdout, self.stderr
        )
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{}", self.text());
        self
    }

    /// Exit 1 (a failed request, not a usage error) within [`MAX_PEAK_MB`].
    fn fails_small(self) -> Self {
        assert_eq!(self.code, Some(1), "{}", self.text());
        self.small()
    }

    fn small(self) -> Self {
        assert!(
            self.peak_mb <= MAX_PEAK_MB,
            "peak memory {} MB > {MAX_PEAK_MB} MB\n{}",
            self.peak_mb,
            self.text()
        );
        self
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    let mut pipe = pipe.unwrap();
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// The child's resident memory in MB from `/proc/PID/status` (0 once it has exited).
fn rss_mb(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Runs `cmd` to the end and measures its peak resident memory (`ru_maxrss` of `wait4`). While it
/// runs, a child past [`KILL_AT_MB`] is killed (it is still unreaped then, so its pid is its own),
/// so that a regression fails this test instead of the machine.
fn measure(cmd: &mut Command) -> Measured {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let pid = child.id() as i32;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: `rusage` is plain data, filled in by `wait4`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits only for our own child, with valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if rss_mb(pid) > KILL_AT_MB || start.elapsed() > Duration::from_secs(300) {
            // SAFETY: `pid` is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // (The child is reaped: dropping `child` does not wait for it.)
    drop(child);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Measured {
        code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        // ru_maxrss is in kB on Linux.
        peak_mb: usage.ru_maxrss as u64 / 1024,
    }
}

/// A run with features and a head, made from synthetic photos and the tiny model.
fn prepared(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    testkit::write_synthetic(&data, &[("train", 3), ("validation", 2)], 7).unwrap();
    let model = tiny_model(dir);
    let run = dir.join("run");
    measure(extract(&data, &model, &run).arg("-q")).ok();
    measure(
        bin()
            .args(["-q", "train-head", "--epochs", "2", "--run"])
            .arg(&run),
    )
    .ok();
    run
}

fn predict(run: &Path) -> Command {
    let mut c = bin();
    c.arg("predict")
        .arg("--run")
        .arg(run)
        .args(["--threads", "1"]);
    c
}

/// A 2 GiB sparse file (no disk used) starting with `head`.
fn sparse_2gb(path: &Path, head: &[u8]) {
    fs::write(path, head).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

#[test]
fn predict_on_dev_zero_is_unreadable_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let run = prepared(t.path());
    let m = measure(predict(&run).arg("/dev/zero")).fails_small();
    eprintln!("predict /dev/zero: peak {} MB", m.peak_mb);
    assert!(
        m.stderr.contains("none of the 1 images could be read")
            && m.stderr.contains("/dev/zero")
            && m.stderr.contains("character device"),
        "{}",
        m.text()
    );
    // A named pipe with no writer: refused without opening it (opening would wait forever).
    let fifo = t.path().join("pipe.jpg");
    mkfifo(&fifo);
    let m = measure(predict(&run).arg(&fifo)).fails_small();
    assert!(
        m.stderr.contains("pipe.jpg") && m.stderr.contains("named pipe"),
        "{}",
        m.text()
    );
}

#[test]
fn predict_on_a_2gb_junk_file_is_unreadable_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let run = prepared(t.path());
    let junk = t.path().join("junk.jpg");
    sparse_2gb(&junk, b"junk, not a photo");
    let m = measure(predict(&run).arg(&junk)).fails_small();
    eprintln!("predict 2 GB junk: peak {} MB", m.peak_mb);
    assert!(
        m.stderr.contains("none of the 1 images could be read")
            && m.stderr.contains("junk.jpg")
            && m.stderr.contains("larger than 256 MiB"),
        "{}",
        m.text()
    );
    // A JPEG header does not make it read either; with one readable photo beside it, predict
    // classifies that one and lists the huge one as skipped.
    let fake = t.path().join("photos/fake.jpg");
    fs::create_dir_all(fake.parent().unwrap()).unwrap();
    sparse_2gb(
        &fake,
        &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0],
    );
    fs::copy(
        t.path().join("data/validation/dark/dark.0.png"),
        t.path().join("photos/real.png"),
    )
    .unwrap();
    let m = measure(predict(&run).arg("--json").arg(t.path().join("photos"))).small();
    assert_eq!(m.code, Some(0), "{}", m.text());
    let v: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
    assert_eq!(
        v["predictions"].as_array().unwrap().len(),
        1,
        "{}",
        m.text()
    );
    assert!(
        v["skipped"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("fake.jpg")
            && v["skipped"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("larger than 256 MiB"),
        "{}",
        m.text()
    );
}

#[test]
fn extract_skips_endless_huge_and_special_files_by_name_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 2), ("validation", 1)], 3).unwrap();
    // In both splits, so that the duplicate check hashes them too.
    for split in ["train", "validation"] {
        let class = data.join(split).join("bright");
        std::os::unix::fs::symlink("/dev/zero", class.join("zero.jpg")).unwrap();
        sparse_2gb(&class.join("huge.jpg"), b"junk");
        mkfifo(&class.join("pipe.png"));
    }
    let model = tiny_model(t.path());
    let run = t.path().join("run");
    let m = measure(extract(&data, &model, &run).args(["-q", "--json"])).ok();
    eprintln!("extract with hostile files: peak {} MB", m.peak_mb);
    let m = m.small();
    let v: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
    for split in v["splits"].as_array().unwrap() {
        let skipped: Vec<(String, String)> = split["skipped"]
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
        let name = split["split"].as_str().unwrap();
        let want = [
            ("huge.jpg", "larger than 256 MiB"),
            ("pipe.png", "named pipe"),
            ("zero.jpg", "character device"),
        ];
        assert_eq!(skipped.len(), want.len(), "{skipped:?}");
        for ((file, reason), (f, words)) in skipped.iter().zip(want) {
            assert_eq!(file, &format!("{name}/bright/{f}"));
            assert!(reason.contains(words), "{file}: {reason}");
        }
        assert_eq!(split["rows"], if name == "train" { 4 } else { 2 });
    }
    // Unreadable files are no duplicates of each other.
    assert_eq!(v["duplicates"].as_array().unwrap().len(), 0, "{}", m.text());
}

#[test]
fn hidden_class_folders_are_named_and_one_folder_in_two_classes_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("train", 2), ("validation", 1)], 3).unwrap();
    for split in ["train", "validation"] {
        fs::create_dir_all(data.join(split).join(".hidden")).unwrap();
        fs::create_dir_all(data.join(split).join("...")).unwrap();
        fs::copy(
            data.join(split).join("dark/dark.0.png"),
            data.join(split).join("...").join("x.png"),
        )
        .unwrap();
    }
    let m = measure(&mut extract(&data, &model, &t.path().join("run"))).ok();
    for split in ["train", "validation"] {
        for hidden in [".hidden", "..."] {
            let dir = data.join(split).join(hidden);
            assert!(
                m.stderr.contains(&format!("{} is not read", dir.display())),
                "{hidden} in {split} is named\n{}",
                m.text()
            );
        }
    }

    // A class folder that is a symbolic link to another: the same photos in two classes.
    let data2 = t.path().join("data2");
    testkit::write_synthetic(&data2, &[("train", 2), ("validation", 1)], 3).unwrap();
    for split in ["train", "validation"] {
        std::os::unix::fs::symlink(
            data2.join(split).join("dark"),
            data2.join(split).join("shadow"),
        )
        .unwrap();
    }
    let run2 = t.path().join("run2");
    let m = measure(extract(&data2, &model, &run2).arg("-q")).fails_small();
    assert!(
        m.stderr.contains("train/dark")
            && m.stderr.contains("train/shadow")
            && m.stderr.contains("same folder")
            && m.stderr.contains("two classes"),
        "{}",
        m.text()
    );
    assert!(!run2.join("features").exists(), "nothing written");
}

#[test]
fn one_photo_per_class_says_no_fraction_can_work() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let data = t.path().join("data");
    testkit::write_synthetic(&data, &[("all", 1)], 3).unwrap();
    // The one-split layout DIR/<class>/: move the classes up.
    for class in ["bright", "dark"] {
        fs::rename(data.join("all").join(class), data.join(class)).unwrap();
    }
    fs::remove_dir(data.join("all")).unwrap();
    let m = measure(
        bin()
            .args(["-q", "fit", "--data"])
            .arg(&data)
            .arg("--model")
            .arg(&model)
            .args(["--preprocess", "caffe", "--size", "64", "--threads", "1"])
            .args(["--no-finetune", "--run"])
            .arg(t.path().join("run")),
    );
    assert_eq!(m.code, Some(1), "{}", m.text());
    assert!(
        m.stderr.contains("no fraction can work")
            && m.stderr.contains("at least 3")
            && m.stderr.contains("DIR/validation/<class>/")
            && !m.stderr.contains("larger fraction"),
        "{}",
        m.text()
    );
}
