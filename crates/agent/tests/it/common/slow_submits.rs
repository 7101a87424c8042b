//! A purpose-built stand-in for what the real stack does to a submit:
//! PHP-FPM behind nginx keeps working after the client has gone, and the
//! invoice's status leaves `draft` only when JoFotara has answered.
//!
//! It is a reverse proxy in front of the sandbox: every request is passed
//! on as it is, except a submit, which is passed on only after `work` (the
//! JoFotara call), on a task of its own that finishes even if the client
//! timed out or disconnected. Until then a status read of that invoice
//! says `draft`; from then on it waits for the submit to have reached the
//! sandbox, so what the agent reads depends only on (tokio) time, never on
//! how fast this machine runs. The sandbox's submit counter is then the
//! number of times JoFotara received an invoice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

/// A submit's work: when it ends, and whether it has reached the sandbox.
type Submit = (Instant, tokio::sync::watch::Receiver<bool>);

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    work: Duration,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    /// Per invoice id, its latest submit: when its work ends, and whether
    /// it has reached the sandbox.
    working: Arc<Mutex<HashMap<String, Submit>>>,
}

/// The proxy, serving on 127.0.0.1:0 until dropped.
pub struct SlowSubmits {
    pub base_url: String,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl SlowSubmits {
    /// In front of `upstream` (the sandbox's base URL); each submit takes
    /// `work` (tokio time, so a paused clock applies) before it happens.
    pub async fn start(upstream: &str, work: Duration) -> SlowSubmits {
        let log: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: pos_connector::http_client::builder()
                .no_proxy()
                .build()
                .unwrap(),
            work,
            log: log.clone(),
            working: Arc::default(),
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        SlowSubmits {
            base_url,
            log,
            _server: server,
        }
    }

    /// When each request reached the proxy (tokio time), as "METHOD path".
    pub fn requests(&self) -> Vec<(Instant, String)> {
        self.log.lock().unwrap().clone()
    }

    /// When the requests whose "METHOD path" contains `what` arrived.
    pub fn times_of(&self, what: &str) -> Vec<Instant> {
        self.requests()
            .into_iter()
            .filter(|(_, r)| r.contains(what))
            .map(|(t, _)| t)
            .collect()
    }
}

async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    p.log
        .lock()
        .unwrap()
        .push((Instant::now(), format!("{} {path}", parts.method)));
    let segments: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
    let submit_of = match segments.as_slice() {
        ["api", "invoices", id, "submit"] if parts.method == Method::POST => Some(id.to_string()),
        _ => None,
    };
    let status_of = match segments.as_slice() {
        ["api", "invoices", "status", id] => Some(id.to_string()),
        _ => None,
    };
    if let Some(id) = status_of {
        let pending = p.working.lock().unwrap().get(&id).cloned();
        if let Some((done_at, mut reached)) = pending {
            if Instant::now() < done_at {
                // JoFotara has not answered yet: still a draft.
                return axum::Json(serde_json::json!({"status": "draft"})).into_response();
            }
            let _ = reached.wait_for(|r| *r).await;
        }
    }
    let call = send(p.clone(), parts.method, path, parts.headers, body);
    let answer = if let Some(id) = submit_of {
        let work = p.work;
        let (reached_tx, reached_rx) = tokio::sync::watch::channel(false);
        p.working
            .lock()
            .unwrap()
            .insert(id, (Instant::now() + work, reached_rx));
        // The work goes on whatever happens to this request's client.
        tokio::spawn(async move {
            tokio::time::sleep(work).await;
            let answer = call.await;
            let _ = reached_tx.send(true);
            answer
        })
        .await
        .unwrap_or_else(|_| Err("the worker died".into()))
    } else {
        call.await
    };
    match answer {
        Ok((status, headers, bytes)) => {
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            resp
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

async fn send(
    p: Proxy,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let mut req = p.http.request(method, format!("{}{path}", p.upstream));
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let resp = req.body(body).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut out = resp.headers().clone();
    out.remove("content-length");
    out.remove("transfer-encoding");
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, out, bytes))
}
