//! Starting and stopping: checks that no writer holds the run, loads its classifier once (the
//! same choice of stage and engine as `predict`), starts the engine thread, listens, and on
//! SIGTERM or Ctrl-C stops accepting, answers the requests in flight, then returns.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use features::runtime::{Engine, SessionOptions};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use predict::{LoadOptions, Predictor};
use tokio::sync::Semaphore;

use crate::api::{self, AppState};
use crate::batcher::{Batcher, Batching};
use crate::card::ModelCard;
use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::options::Options;
use crate::page;

/// Longest a client may take to send a request's line and headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What to serve and how.
pub struct ServeRequest<'a> {
    pub run: &'a Path,
    pub load: LoadOptions,
    pub session: SessionOptions,
    pub engine: Engine,
    pub options: Options,
}

/// What the server reports while it starts and stops.
#[derive(Debug, Clone)]
pub enum Event {
    /// Which classifier is served and why (as `predict` says it).
    Loaded(String),
    /// Something the user should know (e.g. where the network runs instead).
    Note(String),
    /// The server accepts requests at this address.
    Listening(SocketAddr),
    /// Every request in flight was answered; the server stopped.
    Stopped,
}

/// Loads the run's classifier, refusing a run that a writer holds.
fn open(req: &ServeRequest) -> Result<Predictor> {
    if let Some(holder) = runfs::lock::writer(req.run)? {
        return Err(Error::Busy {
            run: req.run.to_path_buf(),
            holder,
        });
    }
    let classifier = predict::load(req.run, &req.load)?;
    Ok(Predictor::new(classifier, &req.session, req.engine)?)
}

fn router(state: AppState) -> Router {
    let limit = state.opts.max_body;
    Router::new()
        .route("/v1/predict", post(api::predict))
        .route("/v1/model", get(api::model))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/", get(page::page))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::track,
        ))
        .with_state(state)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("stopping: answering the requests in flight, accepting no new ones");
}

/// Accepts connections until SIGTERM or Ctrl-C, then waits for the requests in flight. Each
/// connection is HTTP/1 with a header-read timeout, so a client that sends its request head too
/// slowly (slow loris) is answered 408 and disconnected instead of holding the connection.
async fn accept_until_stopped(listener: tokio::net::TcpListener, app: Router) {
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop_signal());
    loop {
        let (stream, _) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended on an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves `req.run`'s classifier until SIGTERM or Ctrl-C.
pub fn serve(req: ServeRequest, on_event: &mut dyn FnMut(Event)) -> Result<()> {
    let opts = req.options.clone();
    opts.check()?;
    let predictor = open(&req)?;
    on_event(Event::Loaded(predictor.classifier.describe()));
    if let Some(n) = &predictor.note {
        on_event(Event::Note(n.clone()));
    }
    let card = ModelCard::new(req.run, &predictor, opts.min_confidence, opts.max_batch);
    let metrics = Arc::new(Metrics::new(opts.max_batch));
    let decoder = Decoder::new(predictor.input_spec(), opts.decode_threads);
    let (batcher, engine) = Batcher::start(
        predictor,
        Batching {
            max_batch: opts.max_batch,
            max_wait: opts.max_wait,
            queue: opts.max_images,
        },
        metrics.clone(),
    )?;
    let state = AppState {
        card: Arc::new(card),
        batcher,
        decoder,
        metrics,
        inflight: Arc::new(Semaphore::new(opts.max_inflight)),
        images: Arc::new(Semaphore::new(opts.max_images)),
        opts: Arc::new(opts.clone()),
    };
    // Worker threads parse HTTP (one per core); decoding runs on the blocking pool, inference on
    // the engine thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&opts.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: opts.addr.clone(),
                source,
            })?;
        on_event(Event::Listening(listener.local_addr()?));
        accept_until_stopped(listener, router(state)).await;
        Ok::<(), Error>(())
    })?;
    drop(runtime);
    // Every sender is gone with the router: the engine thread finishes what is queued and ends.
    if engine.join().is_err() {
        return Err(Error::Invalid(
            "the classifier's thread stopped on a panic".into(),
        ));
    }
    on_event(Event::Stopped);
    Ok(())
}
