//! `bottleneck serve`: parses the options, starts structured logs on stderr and calls
//! `serve::serve`, saying where it listens and when it stopped.

use std::time::Duration;

use anyhow::Context;

use crate::args::{Global, RuntimeFlags};
use crate::commands::predict::ClassifierFlags;
use crate::progress;

/// Serve the best stage of a run over HTTP.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  bottleneck serve --run runs/dvc\n  \
curl -s --data-binary @photo.jpg http://127.0.0.1:8080/v1/predict\n  \
curl -s -F image=@a.jpg -F image=@b.jpg 'http://127.0.0.1:8080/v1/predict?top_k=2'\n\n\
Endpoints: POST /v1/predict (one image as the body, or several as multipart/form-data), GET /v1/model, \
/healthz, /metrics (Prometheus) and / (a page to drop photos on). The classifier is loaded once: a run \
that `fit` or another stage is writing is refused, and a later change to the run is served only after a \
restart. SIGTERM or Ctrl-C answers the requests in flight, then exits 0.")]
pub struct ServeArgs {
    #[command(flatten)]
    pub classifier: ClassifierFlags,
    /// Address to listen on (127.0.0.1:0 picks a free port; 0.0.0.0:PORT for other machines).
    #[arg(long, default_value = serve::DEFAULT_ADDR)]
    pub addr: String,
    /// Answer `unknown` (with "abstained": true) when the top probability is below P.
    #[arg(long, value_name = "P")]
    pub min_confidence: Option<f32>,
    /// Most images in one network run (concurrent requests are batched together).
    #[arg(long, default_value_t = serve::DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// How long the first image of a batch waits for others, in milliseconds.
    #[arg(long, default_value_t = serve::DEFAULT_MAX_WAIT_MS)]
    pub max_wait_ms: u64,
    /// Largest request body in MiB (413 above it).
    #[arg(long, default_value_t = serve::DEFAULT_MAX_BODY_MIB)]
    pub max_body_mib: usize,
    /// Most requests at once (503 with Retry-After above it).
    #[arg(long, default_value_t = serve::DEFAULT_MAX_INFLIGHT)]
    pub max_inflight: usize,
    /// Most images of the requests in flight, decoded or waiting for the network (503 with
    /// Retry-After above it).
    #[arg(long, default_value_t = serve::DEFAULT_MAX_IMAGES)]
    pub max_images: usize,
    /// Longest a request may take, upload included, in seconds (408 after it).
    #[arg(long, default_value_t = serve::DEFAULT_TIMEOUT_S)]
    pub timeout_s: u64,
    /// Classes listed in each answer's `top` unless the request says (?top_k=K).
    #[arg(long, default_value_t = serve::DEFAULT_TOP_K)]
    pub top_k: usize,
    /// Uploads decoded at once [default: the cores, at most 4].
    #[arg(long)]
    pub decode_threads: Option<usize>,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
}

impl ServeArgs {
    fn options(&self) -> serve::Options {
        serve::Options {
            addr: self.addr.clone(),
            max_batch: self.max_batch,
            max_wait: Duration::from_millis(self.max_wait_ms),
            max_body: self.max_body_mib.saturating_mul(1 << 20),
            max_inflight: self.max_inflight,
            max_images: self.max_images,
            timeout: Duration::from_secs(self.timeout_s),
            min_confidence: self.min_confidence,
            top_k: self.top_k,
            decode_threads: self
                .decode_threads
                .unwrap_or_else(serve::default_decode_threads),
        }
    }
}

/// One structured line per request on stderr (JSON lines with --json); none with --quiet.
fn start_logs(global: &Global) {
    if global.quiet {
        return;
    }
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    // A second subscriber (none here) would be the only reason this fails: keep the first.
    let _ = if global.json {
        logs.json().try_init()
    } else {
        logs.try_init()
    };
}

pub fn run(args: &ServeArgs, global: &Global) -> anyhow::Result<()> {
    start_logs(global);
    let run = &args.classifier.run;
    let request = serve::ServeRequest {
        run,
        load: args.classifier.load_options(),
        session: args.runtime.options(),
        engine: args.runtime.engine.get(),
        options: args.options(),
    };
    serve::serve(request, &mut |e| match e {
        serve::Event::Loaded(what) => progress::note(global, what),
        serve::Event::Note(n) => progress::note(global, n),
        // Always said, even with --quiet: with port 0 it is the only way to learn the port.
        serve::Event::Listening(addr) => {
            eprintln!("serving http://{addr}/ (POST /v1/predict; Ctrl-C or SIGTERM to stop)")
        }
        serve::Event::Stopped => {
            progress::note(global, "stopped: every request in flight was answered")
        }
    })
    .with_context(|| format!("serving {}", run.display()))
}
