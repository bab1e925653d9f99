//! `GET /`: one self-contained page (inline CSS and script, no CDN, works offline) to drop photos
//! and see each one's class and a bar per class, under the model card. Its Content-Security-Policy
//! allows no origin but this server.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("page.html");

/// Only this server may be reached from the page; scripts and styles are the page's own.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   img-src blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'";

pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        PAGE,
    )
}
