//! The agent's loopback HTTP server (`local_api.bind`, default
//! 127.0.0.1:8765). Today it carries the sales intake (`/v1/sales`); the
//! status page and the JSON API join it here.
//!
//! Every route it serves needs `Authorization: Bearer <local_api.api_key>`
//! (compared in constant time): a POS agent must not take sales from anyone
//! who can reach the port. Without a configured key the service does not
//! start the server at all (and the check would refuse everything). A
//! non-loopback address is refused unless `local_api.allow_remote` says so
//! (config validation enforces this).

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
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match given {
        Some(token) if crate::secret::constant_time_eq(token, expected) => next.run(req).await,
        Some(_) => unauthorized("wrong API key: send Authorization: Bearer <local_api.api_key>"),
        None => unauthorized("missing API key: send Authorization: Bearer <local_api.api_key>"),
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
