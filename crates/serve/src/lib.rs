//! `bottleneck serve`: a run's classifier loaded once behind an HTTP API (`POST /v1/predict`,
//! `GET /v1/model`, `/healthz`, Prometheus `/metrics`) and a self-contained drag-and-drop page.
//! Uploads are decoded in parallel with inference, concurrent requests are micro-batched into one
//! network run, and every resource is bounded: body size, decode limits, requests in flight, images
//! waiting for the network, time per request. SIGTERM or Ctrl-C drains requests in flight, then the
//! server exits.

mod api;
mod batcher;
mod card;
mod decode;
mod error;
mod metrics;
mod options;
mod page;
mod server;

pub use card::ModelCard;
pub use error::{Error, Result};
pub use options::*;
pub use server::{serve, Event, ServeRequest};
