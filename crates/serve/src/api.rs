//! The HTTP endpoints: `POST /v1/predict` (one image as the body, or several as
//! `multipart/form-data`), `GET /v1/model`, `GET /healthz`, `GET /metrics` and the page at `/`;
//! and [`Problem`], the JSON error every refused request gets (status, reason, the file it names).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::batcher::Batcher;
use crate::card::ModelCard;
use crate::decode::{Decoder, Upload};
use crate::metrics::Metrics;
use crate::options::{Options, MAX_IMAGES_PER_REQUEST};

/// Seconds a client is told to wait when the server is full.
const RETRY_AFTER_S: u64 = 1;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub card: Arc<ModelCard>,
    pub batcher: Batcher,
    pub decoder: Decoder,
    pub metrics: Arc<Metrics>,
    pub inflight: Arc<Semaphore>,
    /// One permit per image of the requests in flight, taken before decoding.
    pub images: Arc<Semaphore>,
    pub opts: Arc<Options>,
}

/// A refused request: its status and a JSON body `{"error": …, "file": …}`.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    error: String,
    file: Option<String>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
}

impl Problem {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Problem {
            status,
            error: error.into(),
            file: None,
        }
    }

    /// 422: an upload that is not an image this tool reads, or one over the decode limits.
    pub fn unreadable(name: &str, e: features::Error) -> Self {
        let reason = match e {
            features::Error::Image { reason, .. } => reason,
            other => other.to_string(),
        };
        Problem {
            file: Some(name.to_string()),
            ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, reason)
        }
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(why: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, why)
    }

    /// 500.
    pub fn internal(why: impl Into<String>) -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, why)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            error: &self.error,
            file: self.file.as_deref(),
        };
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        r
    }
}

/// One class and its probability.
#[derive(Debug, Serialize)]
pub(crate) struct Ranked {
    class: String,
    probability: f32,
}

/// The answer for one image.
#[derive(Debug, Serialize)]
pub(crate) struct Answer {
    file: String,
    /// The most probable class, or `unknown` when the server abstained.
    class: String,
    probability: f32,
    abstained: bool,
    /// The `top_k` most probable classes, best first.
    top: Vec<Ranked>,
    /// Every class's probability, keyed by class name.
    probabilities: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Answers {
    predictions: Vec<Answer>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PredictQuery {
    /// Classes listed in `top`.
    top_k: Option<usize>,
    /// The name an image sent as the body is answered under.
    name: Option<String>,
}

/// Class name given to an abstained answer.
const UNKNOWN: &str = "unknown";

fn answer(file: String, row: &[f32], classes: &[String], top_k: usize, min: Option<f32>) -> Answer {
    let order = predict::run::ranking(row);
    let best = order.first().copied().unwrap_or(0);
    let p = row.get(best).copied().unwrap_or(f32::NAN);
    let abstained = min.is_some_and(|m| p < m);
    Answer {
        file,
        class: if abstained {
            UNKNOWN.to_string()
        } else {
            classes[best].clone()
        },
        probability: p,
        abstained,
        top: order
            .iter()
            .take(top_k)
            .map(|&i| Ranked {
                class: classes[i].clone(),
                probability: row[i],
            })
            .collect(),
        probabilities: classes
            .iter()
            .zip(row)
            .map(|(c, &p)| (c.clone(), serde_json::Value::from(p)))
            .collect(),
    }
}

/// A request's body could not be read: over the size limit (413, naming the flag), or another
/// reason axum gives.
fn unread_body(status: StatusCode, reason: String, max_body: usize) -> Problem {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Problem::new(
            status,
            format!(
                "the request is larger than {} MiB (the server's --max-body-mib): send smaller photos, or fewer per request",
                max_body >> 20
            ),
        );
    }
    Problem::new(status, reason)
}

/// The images of a request: the parts of a multipart form, else the body as one image.
async fn uploads(
    req: Request,
    name: Option<String>,
    max_body: usize,
) -> Result<Vec<Upload>, Problem> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let bytes = Bytes::from_request(req, &())
            .await
            .map_err(|r| unread_body(r.status(), r.body_text(), max_body))?;
        return Ok(vec![Upload {
            name: name.unwrap_or_else(|| "upload".into()),
            bytes,
        }]);
    }
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|r| unread_body(r.status(), r.body_text(), max_body))?;
    let mut out = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| unread_body(e.status(), e.body_text(), max_body))?
    {
        if out.len() == MAX_IMAGES_PER_REQUEST {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("more than {MAX_IMAGES_PER_REQUEST} images in one request: send them in several"),
            ));
        }
        let name = field
            .file_name()
            .or(field.name())
            .map(str::to_string)
            .unwrap_or_else(|| format!("part {}", out.len() + 1));
        let bytes = field
            .bytes()
            .await
            .map_err(|e| unread_body(e.status(), e.body_text(), max_body))?;
        out.push(Upload { name, bytes });
    }
    Ok(out)
}

async fn classify(st: &AppState, q: PredictQuery, req: Request) -> Result<Answers, Problem> {
    let uploads = uploads(req, q.name, st.opts.max_body).await?;
    if uploads.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "no image in the request: send one image as the body, or several as multipart/form-data",
        ));
    }
    let busy = || {
        Problem::unavailable(format!(
            "the server already holds {} images: retry shortly",
            st.opts.max_images
        ))
    };
    if uploads.len() > st.opts.max_images {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} images in one request, more than the server holds at once (--max-images {}): send them in several",
                uploads.len(),
                st.opts.max_images
            ),
        ));
    }
    // Held until the answer: decoded images in memory never exceed --max-images.
    let _images = u32::try_from(uploads.len())
        .ok()
        .and_then(|n| st.images.clone().try_acquire_many_owned(n).ok())
        .ok_or_else(busy)?;
    let names: Vec<String> = uploads.iter().map(|u| u.name.clone()).collect();
    let rows = st.decoder.prepare_all(uploads).await?;
    let mut pending = Vec::with_capacity(rows.len());
    for (row, name) in rows.into_iter().zip(&names) {
        pending.push(st.batcher.submit(row, name.clone()).map_err(|_| busy())?);
    }
    let classes = &st.card.classes;
    let top_k = q
        .top_k
        .unwrap_or(st.opts.top_k)
        .clamp(1, classes.len().max(1));
    let mut predictions = Vec::with_capacity(pending.len());
    for (rx, name) in pending.into_iter().zip(names) {
        let row = rx
            .await
            .map_err(|_| Problem::unavailable("the server is shutting down"))?
            .map_err(Problem::internal)?;
        predictions.push(answer(name, &row, classes, top_k, st.opts.min_confidence));
    }
    Ok(Answers { predictions })
}

/// `POST /v1/predict`.
pub(crate) async fn predict(
    State(st): State<AppState>,
    Query(q): Query<PredictQuery>,
    req: Request,
) -> Response {
    let Ok(_permit) = st.inflight.clone().try_acquire_owned() else {
        return Problem::unavailable(format!(
            "{} requests are already in flight: retry shortly",
            st.opts.max_inflight
        ))
        .into_response();
    };
    let _counted = st.metrics.in_flight();
    match tokio::time::timeout(st.opts.timeout, classify(&st, q, req)).await {
        Ok(Ok(a)) => Json(a).into_response(),
        Ok(Err(p)) => p.into_response(),
        Err(_) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {:.0} s (upload included): send it again, or fewer images at once",
                st.opts.timeout.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// `GET /v1/model`.
pub(crate) async fn model(State(st): State<AppState>) -> Json<ModelCard> {
    Json(st.card.as_ref().clone())
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
}

/// Anything else.
pub(crate) async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no such endpoint: POST /v1/predict, GET /v1/model, /healthz, /metrics, or / for the page",
    )
}

/// The endpoint label of a path, for metrics and logs.
fn endpoint(path: &str) -> &'static str {
    match path {
        "/v1/predict" => "predict",
        "/v1/model" => "model",
        "/healthz" => "healthz",
        "/metrics" => "metrics",
        "/" => "page",
        _ => "other",
    }
}

/// Counts and logs every request (one structured line each).
pub(crate) async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let took = start.elapsed();
    let status = response.status();
    st.metrics.request(endpoint(&path), status, took);
    tracing::info!(
        method = %method,
        path = %path,
        status = status.as_u16(),
        ms = format_args!("{:.1}", took.as_secs_f64() * 1e3),
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_answer_ranks_lists_every_class_and_abstains_below_the_threshold() {
        let row = [0.2f32, 0.5, 0.3];
        let a = answer("x.jpg".into(), &row, &classes(), 2, Some(0.4));
        assert_eq!(
            (a.class.as_str(), a.abstained, a.probability),
            ("b", false, 0.5)
        );
        let top: Vec<&str> = a.top.iter().map(|r| r.class.as_str()).collect();
        assert_eq!(top, ["b", "c"]);
        let names: Vec<&String> = a.probabilities.keys().collect();
        assert_eq!(names, ["a", "b", "c"]);
        let a = answer("x.jpg".into(), &row, &classes(), 1, Some(0.6));
        assert_eq!((a.class.as_str(), a.abstained), (UNKNOWN, true));
        assert_eq!(a.top[0].class, "b", "the best guess stays in `top`");
        assert!(!answer("x.jpg".into(), &row, &classes(), 1, None).abstained);
    }

    #[test]
    fn a_body_over_the_limit_names_the_flag() {
        let p = unread_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            "length limit exceeded".into(),
            32 << 20,
        );
        assert!(
            p.error.contains("32 MiB") && p.error.contains("--max-body-mib"),
            "{}",
            p.error
        );
        let p = unread_body(StatusCode::BAD_REQUEST, "bad multipart".into(), 1 << 20);
        assert_eq!(p.error, "bad multipart");
    }
}
