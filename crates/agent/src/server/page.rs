//! `GET /`: the status page. One self-contained file (no external assets:
//! the till may be offline) compiled into the binary; it holds no data and
//! reads everything from the API with the key the person enters.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("status_page.html");

/// Inline script and style only, talking to this origin only; no framing
/// (clickjacking the buttons), no form posts elsewhere.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

pub(crate) async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}
