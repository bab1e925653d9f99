//! `bottleneck serve` through a real HTTP client against the real binary on a free loopback port
//! (issue 31), with a run made from generated photos and the tiny synthetic VGG: the endpoints
//! answer what `predict` answers, multipart, bad uploads and limits get a 4xx with a JSON reason
//! while good requests go on, abstaining, overload (503 + Retry-After), timeouts (408), a request
//! head sent too slowly, metrics, a run being written is refused, SIGTERM answers the request in
//! flight before exit 0, and the page works in headless Chromium.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{bin, fails, ok, tiny_model};

/// HTTP status codes the tests expect.
mod code {
    pub const OK: u16 = 200;
    pub const BAD_REQUEST: u16 = 400;
    pub const NOT_FOUND: u16 = 404;
    pub const METHOD_NOT_ALLOWED: u16 = 405;
    pub const PAYLOAD_TOO_LARGE: u16 = 413;
    pub const UNPROCESSABLE_ENTITY: u16 = 422;
    pub const SERVICE_UNAVAILABLE: u16 = 503;
}

/// A small blocking HTTP client (ureq, which `hf-hub` already builds).
mod http {
    use std::time::Duration;

    /// A whole answer: status, headers, body.
    pub struct Reply {
        pub status: u16,
        headers: Vec<(String, String)>,
        pub text: String,
    }

    impl Reply {
        /// A header's value ("" when absent).
        pub fn header(&self, name: &str) -> &str {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map_or("", |(_, v)| v.as_str())
        }
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build()
    }

    fn reply(r: Result<ureq::Response, ureq::Error>) -> Reply {
        let r = match r {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("no HTTP answer: {e}"),
        };
        let headers = r
            .headers_names()
            .into_iter()
            .map(|n| (n.clone(), r.header(&n).unwrap_or_default().to_string()))
            .collect();
        Reply {
            status: r.status(),
            headers,
            text: r.into_string().unwrap(),
        }
    }

    pub fn get(url: &str) -> Reply {
        reply(agent().get(url).call())
    }

    pub fn post(url: &str, content_type: &str, body: &[u8]) -> Reply {
        reply(
            agent()
                .post(url)
                .set("Content-Type", content_type)
                .send_bytes(body),
        )
    }

    /// A `multipart/form-data` body of image parts.
    #[derive(Default)]
    pub struct Form {
        body: Vec<u8>,
    }

    const BOUNDARY: &str = "bottleneck-test-boundary-7d3f";

    impl Form {
        /// Adds one part named `image` with this file name and content.
        pub fn file(mut self, name: &str, bytes: &[u8]) -> Self {
            let head = format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            );
            self.body.extend_from_slice(head.as_bytes());
            self.body.extend_from_slice(bytes);
            self.body.extend_from_slice(b"\r\n");
            self
        }

        pub fn post(mut self, url: &str) -> Reply {
            self.body
                .extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
            post(
                url,
                &format!("multipart/form-data; boundary={BOUNDARY}"),
                &self.body,
            )
        }
    }
}

/// Generated photos, the tiny model and a run with features and a head.
struct Base {
    _t: tempfile::TempDir,
    data: PathBuf,
    run: PathBuf,
}

impl Base {
    fn new() -> Base {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        testkit::write_synthetic(&data, &[("train", 4), ("validation", 3)], 11).unwrap();
        let model = tiny_model(t.path());
        let run = t.path().join("run");
        let mut extract = common::extract(&data, &model, &run);
        ok(extract.arg("-q").output().unwrap());
        ok(bin()
            .args(["-q", "train-head", "--epochs", "2", "--run"])
            .arg(&run)
            .output()
            .unwrap());
        Base { _t: t, data, run }
    }

    /// The validation photos, sorted.
    fn photos(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = ["bright", "dark"]
            .iter()
            .flat_map(|c| std::fs::read_dir(self.data.join("validation").join(c)).unwrap())
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }
}

/// A running server; killed when dropped if it has not exited.
struct Server {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(run: &Path, extra: &[&str]) -> Server {
        let mut child = bin()
            .args(["serve", "--addr", "127.0.0.1:0", "--threads", "1", "--run"])
            .arg(run)
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("serve ended before listening:\n{seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.strip_prefix("serving ") {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .trim_end_matches('/')
                    .to_string();
            }
        };
        let stderr = Arc::new(Mutex::new(seen));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Server { child, url, stderr }
    }

    /// Waits (at most 30 s) until `n` prediction requests are in flight.
    fn wait_in_flight(&self, n: usize) {
        let want = format!("bottleneck_predict_requests_in_flight {n}\n");
        let until = Instant::now() + Duration::from_secs(30);
        while !self.metrics().contains(&want) {
            assert!(Instant::now() < until, "never {n} requests in flight");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `/metrics` text.
    fn metrics(&self) -> String {
        http::get(&format!("{}/metrics", self.url)).text
    }

    fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let pid = self.child.id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// Waits (at most 20 s) for the process to exit; its exit code.
    fn wait(&mut self) -> Option<i32> {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not exit:\n{}", self.stderr.lock().unwrap());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status and JSON body of an answer.
fn json(r: http::Reply) -> (u16, serde_json::Value) {
    let v =
        serde_json::from_str(&r.text).unwrap_or_else(|e| panic!("{}: {e}: {}", r.status, r.text));
    (r.status, v)
}

/// POSTs `body` (one image) to `/v1/predict?QUERY`.
fn post_body(server: &Server, query: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let url = format!("{}/v1/predict?{query}", server.url);
    json(http::post(&url, "image/jpeg", &body))
}

/// POSTs a multipart form to `/v1/predict`.
fn post_form(server: &Server, form: http::Form) -> (u16, serde_json::Value) {
    json(form.post(&format!("{}/v1/predict", server.url)))
}

/// A form with one part per photo.
fn form_of(photos: &[PathBuf]) -> http::Form {
    photos.iter().fold(http::Form::default(), |f, p| {
        let name = p.file_name().unwrap().to_string_lossy();
        f.file(&name, &std::fs::read(p).unwrap())
    })
}

/// `predict --json` probabilities by file name.
fn predict_probs(run: &Path, photos: &[PathBuf]) -> Vec<(String, Vec<f64>)> {
    let out = ok(bin()
        .args(["--json", "predict", "--threads", "1", "--run"])
        .arg(run)
        .args(photos)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = Path::new(p["file"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let probs = p["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (name, probs)
        })
        .collect()
}

fn served_probs(answer: &serde_json::Value, classes: &[&str]) -> Vec<f64> {
    classes
        .iter()
        .map(|c| answer["probabilities"][*c].as_f64().unwrap())
        .collect()
}

#[test]
fn endpoints_answer_what_predict_answers() {
    let base = Base::new();
    let photos = base.photos();
    let expected = predict_probs(&base.run, &photos);
    assert_eq!(expected.len(), photos.len());
    let server = Server::start(&base.run, &[]);

    let (status, card) = json(http::get(&format!("{}/v1/model", server.url)));
    assert_eq!(status, code::OK);
    assert_eq!(card["classes"], serde_json::json!(["bright", "dark"]));
    assert_eq!(card["stage"], "head");
    assert_eq!(card["source"], "head/head.safetensors");
    assert_eq!(card["classifier_sha256"].as_str().unwrap().len(), 64);
    let classes = ["bright", "dark"];

    // One photo as the body, named by ?name=.
    let (name, want) = &expected[0];
    let body = std::fs::read(photos.iter().find(|p| p.ends_with(name)).unwrap()).unwrap();
    let (status, v) = post_body(&server, &format!("name={name}&top_k=1"), body);
    assert_eq!(status, code::OK, "{v}");
    let a = &v["predictions"][0];
    assert_eq!(a["file"], name.as_str());
    assert_eq!(a["top"].as_array().unwrap().len(), 1);
    assert_eq!(a["abstained"], false);
    for (x, y) in served_probs(a, &classes).iter().zip(want) {
        assert!((x - y).abs() <= 1e-5, "served {x} vs predict {y}");
    }

    // Every photo in one multipart request: same order, same probabilities as predict.
    let (status, v) = post_form(&server, form_of(&photos));
    assert_eq!(status, code::OK, "{v}");
    let answers = v["predictions"].as_array().unwrap();
    assert_eq!(answers.len(), photos.len());
    for (a, p) in answers.iter().zip(&photos) {
        let name = p.file_name().unwrap().to_string_lossy();
        assert_eq!(a["file"], name.as_ref());
        let want = &expected.iter().find(|(n, _)| *n == name).unwrap().1;
        let got = served_probs(a, &classes);
        for (x, y) in got.iter().zip(want) {
            assert!((x - y).abs() <= 1e-5, "{name}: served {x} vs predict {y}");
        }
        let best = if got[0] >= got[1] { "bright" } else { "dark" };
        assert_eq!(a["class"], best);
    }

    let r = http::get(&format!("{}/healthz", server.url));
    assert_eq!(r.status, code::OK);
    let r = http::get(&format!("{}/", server.url));
    assert_eq!(r.status, code::OK);
    assert!(r
        .header("content-security-policy")
        .contains("default-src 'none'"));
    let page = r.text;
    assert!(
        page.contains("id=\"drop\"") && !page.contains("http://") && !page.contains("https://")
    );
    let (status, v) = json(http::get(&format!("{}/v1/nothing", server.url)));
    assert_eq!(status, code::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("/v1/predict"));
    let r = http::get(&format!("{}/v1/predict", server.url));
    assert_eq!(r.status, code::METHOD_NOT_ALLOWED);

    let metrics = server.metrics();
    assert!(
        metrics.contains("bottleneck_http_requests_total{endpoint=\"predict\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
    let images = format!("bottleneck_images_classified_total {}", photos.len() + 1);
    assert!(metrics.contains(&images), "{metrics}");
    assert!(metrics.contains("bottleneck_batch_size_bucket"));
    // The two predictions and the refused GET.
    assert!(
        metrics.contains("bottleneck_predict_latency_seconds_count 3"),
        "{metrics}"
    );
}

#[test]
fn bad_uploads_get_a_4xx_with_the_reason_and_good_ones_still_pass() {
    let base = Base::new();
    let good = base.photos()[0].clone();
    let server = Server::start(&base.run, &["--max-body-mib", "1", "--max-images", "4"]);
    let post = |body: Vec<u8>| post_body(&server, "name=x.jpg", body);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("empty", vec![], code::UNPROCESSABLE_ENTITY, "empty file"),
        (
            "text",
            b"not a photo at all".to_vec(),
            code::UNPROCESSABLE_ENTITY,
            "not an image",
        ),
        (
            "16000x16000 PNG bomb",
            testkit::synth::claimed_png(16_000, 16_000),
            code::UNPROCESSABLE_ENTITY,
            "too large to decode safely",
        ),
        (
            "truncated JPEG",
            {
                let mut jpg = Vec::new();
                image::RgbImage::from_pixel(64, 64, image::Rgb([200, 10, 10]))
                    .write_to(
                        &mut std::io::Cursor::new(&mut jpg),
                        image::ImageFormat::Jpeg,
                    )
                    .unwrap();
                jpg.truncate(jpg.len() / 2);
                jpg
            },
            code::UNPROCESSABLE_ENTITY,
            "truncated",
        ),
    ];
    for (what, body, want, reason) in cases {
        let (status, v) = post(body);
        assert_eq!(status, want, "{what}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason) && !error.is_empty(), "{what}: {v}");
        // A good photo right after each bad one is answered.
        let (status, v) = post(std::fs::read(&good).unwrap());
        assert_eq!(status, code::OK, "after {what}: {v}");
    }
    // A body over the limit: the server answers once it has read the limit, without the rest (a
    // raw connection, which reads that answer although the server stops reading the upload).
    let (status, text) = post_raw(server.addr(), &vec![0u8; 2 << 20]);
    assert_eq!(status, code::PAYLOAD_TOO_LARGE, "{text}");
    assert!(
        text.contains("larger than 1 MiB (the server's --max-body-mib)"),
        "{text}"
    );
    let (status, v) = post(std::fs::read(&good).unwrap());
    assert_eq!(status, code::OK, "after the 2 MiB body: {v}");

    // Multipart: a bad part is named and nothing is classified; too many parts; no part at all.
    let form = form_of(std::slice::from_ref(&good)).file("zero.jpg", &[]);
    let (status, v) = post_form(&server, form);
    assert_eq!(status, code::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["file"], "zero.jpg");
    let form = (0..=serve::MAX_IMAGES_PER_REQUEST)
        .fold(http::Form::default(), |f, _| f.file("a.jpg", &[1]));
    let (status, v) = post_form(&server, form);
    assert_eq!(status, code::PAYLOAD_TOO_LARGE, "{v}");
    let (status, v) = post_form(&server, http::Form::default());
    assert_eq!(status, code::BAD_REQUEST, "{v}");
    let (status, v) = post_form(&server, form_of(&vec![good.clone(); 5]));
    assert_eq!(status, code::PAYLOAD_TOO_LARGE, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("--max-images 4"),
        "{v}"
    );

    let metrics = server.metrics();
    for line in [
        "{endpoint=\"predict\",outcome=\"ok\"} 5",
        "{endpoint=\"predict\",outcome=\"unreadable_image\"} 5",
        "{endpoint=\"predict\",outcome=\"too_large\"} 3",
        "{endpoint=\"predict\",outcome=\"bad_request\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
}

#[test]
fn below_min_confidence_the_answer_is_unknown() {
    let base = Base::new();
    let server = Server::start(&base.run, &["--min-confidence", "1"]);
    let (status, v) = post_form(&server, form_of(&base.photos()));
    assert_eq!(status, code::OK);
    let mut abstained = 0;
    for a in v["predictions"].as_array().unwrap() {
        let p = a["probability"].as_f64().unwrap();
        assert_eq!(a["abstained"].as_bool().unwrap(), p < 1.0, "{a}");
        if p < 1.0 {
            abstained += 1;
            assert_eq!(a["class"], "unknown", "{a}");
            assert_ne!(a["top"][0]["class"], "unknown", "{a}");
        }
    }
    assert!(abstained > 0, "{v}");
    let (_, card) = json(http::get(&format!("{}/v1/model", server.url)));
    assert_eq!(card["min_confidence"], 1.0);
    let out = bin()
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--min-confidence",
            "1.5",
            "--run",
        ])
        .arg(&base.run)
        .output()
        .unwrap();
    assert!(fails(out).contains("--min-confidence"));
}

/// Headers and the first `sent` bytes of a `len`-byte body to `/v1/predict` on a raw connection.
fn partial_post(addr: &str, len: usize, head: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/predict?name=slow.jpg HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/jpeg\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s.write_all(head).unwrap();
    s.flush().unwrap();
    s
}

/// The status code and body of a raw HTTP/1.1 response.
fn read_response(mut s: TcpStream) -> (u16, String) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut bytes = Vec::new();
    // A reset after the answer (the server closed with upload bytes unread) keeps what was read.
    let _ = s.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (code, text)
}

/// POSTs `body` on a raw connection and returns the answer, read by a second thread while the
/// body is written (the server may answer — 413, 503 — and stop reading before the body ends,
/// where an HTTP client stops at the broken pipe and never reads the answer).
fn post_raw(addr: &str, body: &[u8]) -> (u16, String) {
    let mut s = partial_post(addr, body.len(), &[]);
    let reader = s.try_clone().unwrap();
    let answer = std::thread::spawn(move || read_response(reader));
    let _ = s.write_all(body);
    answer.join().unwrap()
}

#[test]
fn overload_is_503_with_retry_after_and_a_stalled_upload_times_out() {
    let base = Base::new();
    let photo = std::fs::read(&base.photos()[0]).unwrap();
    let server = Server::start(&base.run, &["--max-inflight", "1", "--timeout-s", "3"]);
    // A client that stops halfway through its upload holds the one slot…
    let slow = partial_post(server.addr(), photo.len(), &photo[..photo.len() / 2]);
    server.wait_in_flight(1);
    let (status, text) = post_raw(server.addr(), &photo);
    assert_eq!(status, code::SERVICE_UNAVAILABLE, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{text}"
    );
    assert!(text.contains("in flight"), "{text}");
    // …until the request timeout answers it 408 with the reason.
    let (code, text) = read_response(slow);
    assert_eq!(code, 408, "{text}");
    assert!(text.contains("longer than 3 s"), "{text}");
    let (status, v) = post_body(&server, "", photo);
    assert_eq!(status, code::OK, "{v}");
}

#[test]
fn a_request_head_sent_too_slowly_is_cut_off() {
    let base = Base::new();
    let server = Server::start(&base.run, &[]);
    // Half a request line, then nothing: the server closes the connection (slow loris).
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let start = Instant::now();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap_or(0);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(30),
        "closed after {took:?}"
    );
    assert!(n == 0 || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"));
    // The server still answers.
    let r = http::get(&format!("{}/healthz", server.url));
    assert_eq!(r.status, code::OK);
}

#[test]
fn sigterm_answers_the_request_in_flight_then_exits_0() {
    let base = Base::new();
    let photo = std::fs::read(&base.photos()[1]).unwrap();
    let mut server = Server::start(&base.run, &[]);
    let half = photo.len() / 2;
    let mut s = partial_post(server.addr(), photo.len(), &photo[..half]);
    server.wait_in_flight(1);
    server.terminate();
    std::thread::sleep(Duration::from_millis(300));
    // Stopping: no new connection is accepted, the one in flight still is answered.
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    s.write_all(&photo[half..]).unwrap();
    let (code, text) = read_response(s);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"file\":\"slow.jpg\""), "{text}");
    assert_eq!(server.wait(), Some(0), "{}", server.stderr.lock().unwrap());
    assert!(server.stderr.lock().unwrap().contains("stopped"));
}

#[test]
fn a_run_being_written_is_refused_and_nothing_is_created() {
    let base = Base::new();
    let lock = runfs::lock::RunLock::acquire(&base.run, "fit").unwrap();
    let before = testkit::files_under(&base.run);
    let out = bin()
        .args(["serve", "--addr", "127.0.0.1:0", "--run"])
        .arg(&base.run)
        .output()
        .unwrap();
    let err = fails(out);
    assert!(err.contains("is being written by pid"), "{err}");
    drop(lock);
    assert_eq!(testkit::files_under(&base.run), before);
    let missing = base.run.join("nothing-here");
    let err = fails(
        bin()
            .args(["serve", "--addr", "127.0.0.1:0", "--run"])
            .arg(&missing)
            .output()
            .unwrap(),
    );
    assert!(err.contains("nothing-here"), "{err}");
    assert!(!missing.exists());
}

/// The Chromium binary: `BOTTLENECK_CHROMIUM`, else the first of the usual names on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BOTTLENECK_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// A minimal DevTools-protocol client: one page target, commands answered in order.
struct DevTools {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl DevTools {
    /// Connects to the first page of the browser listening on `port`.
    fn page(port: u16) -> DevTools {
        let list: serde_json::Value =
            serde_json::from_str(&http::get(&format!("http://127.0.0.1:{port}/json/list")).text)
                .unwrap();
        let url = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (ws, _) = tungstenite::connect(url).unwrap();
        DevTools { ws, next: 0 }
    }

    /// Sends a command and returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let Ok(text) = m.to_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` every 100 ms until it is truthy (at most 30 s).
    fn wait_for(&mut self, expr: &str) -> serde_json::Value {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.eval(expr);
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(Instant::now() < until, "timed out waiting for {expr}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Chromium, headless, with the DevTools protocol on a free port; killed when dropped.
struct Browser {
    child: std::process::Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(exe: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(exe)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1000,820",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let file = profile.path().join("DevToolsActivePort");
        let until = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.parse().ok()))
            {
                break p;
            }
            assert!(
                Instant::now() < until,
                "Chromium did not start its DevTools server"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            child,
            port,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page in a real headless Chromium: it shows the model card, and a photo dropped on it (a
/// real `drop` event carrying the file) comes back with its class and one bar per class, the
/// same class the API gives. `BOTTLENECK_SCREENSHOT=FILE` saves the page (the docs' screenshot;
/// with `BOTTLENECK_PAGE_RUN` and `BOTTLENECK_PAGE_PHOTOS` (a comma-separated list) it shows a
/// real run). Needs Chromium (Debian's `chromium`); skipped without it, except in CI.
#[test]
fn the_page_classifies_a_dropped_photo_in_headless_chromium() {
    let Some(exe) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is missing: `apt-get install chromium` (or set BOTTLENECK_CHROMIUM)"
        );
        eprintln!("skipped: no Chromium on the PATH (apt-get install chromium)");
        return;
    };
    let base = Base::new();
    let run = std::env::var_os("BOTTLENECK_PAGE_RUN").map_or(base.run.clone(), PathBuf::from);
    let photos: Vec<PathBuf> = match std::env::var("BOTTLENECK_PAGE_PHOTOS") {
        Ok(list) => list.split(',').map(PathBuf::from).collect(),
        Err(_) => vec![base.photos()[0].clone()],
    };
    let server = Server::start(&run, &[]);
    let browser = Browser::start(&exe);
    let mut page = DevTools::page(browser.port);
    page.call(
        "Page.navigate",
        serde_json::json!({"url": format!("{}/", server.url)}),
    );
    page.wait_for("document.querySelectorAll('#card dt').length");

    for photo in &photos {
        let name = photo.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(photo).unwrap();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
        let dropped = page.eval(&format!(
            "(() => {{ const b = Uint8Array.from(atob('{b64}'), c => c.charCodeAt(0)); \
             const dt = new DataTransfer(); dt.items.add(new File([b], {name:?})); \
             const d = document.getElementById('drop'); \
             for (const t of ['dragenter', 'dragover', 'drop']) \
               d.dispatchEvent(new DragEvent(t, {{dataTransfer: dt, bubbles: true, cancelable: true}})); \
             return true; }})()"
        ));
        assert_eq!(dropped, true);
        let shown = page.wait_for(&format!(
            "(() => {{ const r = [...document.querySelectorAll('.result')].find(e => e.dataset.file === {name:?}); \
             return r ? {{cls: r.dataset.class, bars: r.querySelectorAll('.bar').length}} : null; }})()"
        ));
        let (status, v) = post_body(&server, &format!("name={name}"), bytes);
        assert_eq!(status, code::OK);
        let api = &v["predictions"][0];
        assert_eq!(shown["cls"], api["class"], "page {shown} vs API {api}");
        let classes = api["probabilities"].as_object().unwrap().len();
        assert_eq!(shown["bars"], classes as u64, "{shown}");
    }
    let status = page.eval("document.getElementById('status').textContent");
    assert!(
        status.as_str().unwrap().starts_with("classified 1"),
        "{status}"
    );

    let shot = page.call(
        "Page.captureScreenshot",
        serde_json::json!({"format": "png"}),
    );
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["data"].as_str().unwrap(),
    )
    .unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 1000);
    if let Some(out) = std::env::var_os("BOTTLENECK_SCREENSHOT") {
        std::fs::write(out, &png).unwrap();
    }
}
