//! The server's Prometheus metrics (text format at `GET /metrics`): requests by endpoint and
//! outcome, request latency, batch sizes, images classified and time in the network (their rates
//! are images/s and the network's busy share), and the images waiting for it.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

/// Every metric the server keeps.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    batch_size: Histogram,
    images: Counter,
    inference_seconds: Counter<f64, AtomicU64>,
    queue: Gauge,
    in_flight: Gauge,
}

/// A request in flight; dropping it counts it out.
pub(crate) struct InFlight(std::sync::Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// The outcome label of a status code.
pub(crate) fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        408 => "timeout",
        413 => "too_large",
        422 => "unreadable_image",
        503 => "overloaded",
        400..=499 => "bad_request",
        _ => "error",
    }
}

impl Metrics {
    pub fn new(max_batch: usize) -> Self {
        let mut registry = Registry::with_prefix("bottleneck");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and outcome",
            requests.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.002, 2.0, 14));
        registry.register(
            "predict_latency_seconds",
            "Time from a /v1/predict request to its answer",
            latency.clone(),
        );
        let top = max_batch.max(1) as f64;
        let batch_size = Histogram::new(
            exponential_buckets(1.0, 2.0, 12)
                .take_while(|b| *b < top)
                .chain([top]),
        );
        registry.register(
            "batch_size",
            "Images per network run (micro-batches)",
            batch_size.clone(),
        );
        let images = Counter::default();
        registry.register(
            "images_classified",
            "Images classified (its rate is images/s)",
            images.clone(),
        );
        let inference_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "inference_seconds",
            "Time the network spent on batches",
            inference_seconds.clone(),
        );
        let queue = Gauge::default();
        registry.register(
            "queue_images",
            "Decoded images waiting for the network",
            queue.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "predict_requests_in_flight",
            "/v1/predict requests being read, decoded or classified",
            in_flight.clone(),
        );
        Metrics {
            in_flight,
            registry,
            requests,
            latency,
            batch_size,
            images,
            inference_seconds,
            queue,
        }
    }

    /// Counts one answered request (latency only for predictions).
    pub fn request(&self, endpoint: &'static str, status: StatusCode, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                outcome: outcome(status),
            })
            .inc();
        if endpoint == "predict" {
            self.latency.observe(took.as_secs_f64());
        }
    }

    /// Counts one network run of `n` images.
    pub fn batch(&self, n: usize, took: Duration) {
        self.batch_size.observe(n as f64);
        self.images.inc_by(n as u64);
        self.inference_seconds.inc_by(took.as_secs_f64());
    }

    /// Images waiting for the network now.
    pub fn queued(&self, n: usize) {
        self.queue.set(n as i64);
    }

    /// Counts a prediction request in flight until the guard is dropped.
    pub fn in_flight(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
