//! The agent's loopback HTTP server (`local_api.bind`, default
//! 127.0.0.1:8765): the sales intake (`/v1/sales`), the status page (`/`),
//! the JSON API ([`api`]), `/metrics` ([`metrics`]) and the QuickBooks
//! connect flow's `/callback`.
//!
//! Every route needs the key, `Authorization: Bearer <local_api.api_key>`
//! or `X-API-Key: <key>` (compared in constant time): a POS agent must not
//! take sales from, or show its state to, anyone who can reach the port.
//! The exceptions hold nothing: `/api/health`, the page's HTML, and the
//! OAuth callback (guarded by its `state`). Without a configured key the
//! service does not start the server at all. A non-loopback address is
//! refused unless `local_api.allow_remote` says so (config validation
//! enforces this).

pub mod api;
pub mod metrics;
pub mod page;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use secrecy::SecretString;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::LocalApiSettings;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on local_api.bind {addr}: {source}; another program (or another pos-connector) may hold the port: stop it, choose another port in local_api.bind, or set local_api.enabled to false")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the configured address (port 0 picks a free one, for tests).
pub async fn bind(settings: &LocalApiSettings) -> Result<TcpListener, ServerError> {
    TcpListener::bind(settings.bind)
        .await
        .map_err(|source| ServerError::Bind {
            addr: settings.bind,
            source,
        })
}

/// Wraps `routes` with the API key check.
pub fn protect(routes: Router, api_key: Option<SecretString>) -> Router {
    routes.layer(axum::middleware::from_fn_with_state(
        Arc::new(api_key),
        require_key,
    ))
}

async fn require_key(
    State(key): State<Arc<Option<SecretString>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = key.as_ref() else {
        return unauthorized(
            "the local API has no key configured: set local_api.api_key in config.json and restart",
        );
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let x_api_key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match bearer.or(x_api_key) {
        Some(token) if crate::secret::constant_time_eq(token, expected) => next.run(req).await,
        Some(_) => unauthorized(
            "wrong API key: send Authorization: Bearer <local_api.api_key> (or X-API-Key)",
        ),
        None => unauthorized(
            "missing API key: send Authorization: Bearer <local_api.api_key> (or X-API-Key)",
        ),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "message": message })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Everything the server answers: the open routes, the keyed ones (the
/// API and the sales intake), and a JSON 404 for the rest.
pub fn app(
    local: api::LocalApi,
    intake: crate::intake::Intake,
    api_key: Option<SecretString>,
) -> Router {
    let keyed = api::protected_routes(local.clone()).merge(crate::intake::http::routes(intake));
    api::open_routes(local)
        .merge(protect(keyed, api_key))
        .fallback(|req: Request| async move {
            api::error(
                StatusCode::NOT_FOUND,
                format!(
                    "no such route: {} {}; see the README's \"Local API\" section",
                    req.method(),
                    req.uri().path()
                ),
            )
        })
}

/// Serves until `shutdown`, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "local API listening");
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "local API server stopped with an error");
    }
}
