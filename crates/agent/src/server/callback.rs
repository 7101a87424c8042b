//! `qbo connect`'s small listener on the QuickBooks redirect URI's loopback
//! port (when the service, which serves `/callback` itself, is not
//! running): the loopback server's guards, [`check`] for the rule.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use reqwest::Url;
use tokio::sync::mpsc;

use crate::config::is_loopback_host;
use crate::quickbooks::callback::{check, Callback, CallbackError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ListenError {
    #[error("quickbooks.redirect_uri {0} is not on this machine, so `qbo connect` cannot receive the callback; approve in a browser, then pass the code with `pos-connector qbo exchange-code --code C --realm R`")]
    NotLocal(String),
    #[error("cannot listen on {addr} for the QuickBooks callback: {source}; if the agent's service holds that port, press \"Connect to QuickBooks\" on its status page (http://{addr}/) instead, or use `qbo exchange-code`")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no QuickBooks callback within {0} s; run `pos-connector qbo connect` again")]
    Timeout(u64),
    #[error(transparent)]
    Callback(#[from] CallbackError),
}

struct Shared {
    state: String,
    taken: Mutex<bool>,
    tx: mpsc::UnboundedSender<Result<Callback, CallbackError>>,
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pos-connector: {title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{title}</h1><p>{text}</p></body></html>"
    );
    (status, Html(html)).into_response()
}

async fn on_callback(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match check(&params, &shared.state) {
        Ok(cb) => {
            let mut taken = shared.taken.lock().unwrap_or_else(|e| e.into_inner());
            if *taken {
                return page(
                    StatusCode::CONFLICT,
                    "Already received",
                    "This connection attempt already has its answer; the terminal shows the result.",
                );
            }
            *taken = true;
            let _ = shared.tx.send(Ok(cb));
            page(
                StatusCode::OK,
                "QuickBooks approved",
                "pos-connector received the authorization and is finishing the connection. You can close this window; the terminal shows the result.",
            )
        }
        Err(e @ CallbackError::StateMismatch) => {
            // Not ours: refuse it and keep waiting for the real answer.
            tracing::warn!("QuickBooks callback with a wrong state ignored");
            page(StatusCode::BAD_REQUEST, "Not accepted", &e.to_string())
        }
        Err(e) => {
            let _ = shared.tx.send(Err(e.clone()));
            page(StatusCode::BAD_REQUEST, "Not connected", &e.to_string())
        }
    }
}

/// The address to listen on for `redirect_uri` (loopback only).
pub(crate) fn listen_addr(redirect_uri: &Url) -> Result<SocketAddr, ListenError> {
    let host = redirect_uri.host_str().unwrap_or("");
    if !is_loopback_host(host) {
        return Err(ListenError::NotLocal(redirect_uri.to_string()));
    }
    let port = redirect_uri.port_or_known_default().unwrap_or(80);
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    Ok(SocketAddr::new(ip, port))
}

/// Listens on the redirect URI's port until a callback with `state`
/// arrives (or `timeout`); callbacks with another state are refused and
/// waiting goes on. `listening` is told once the port is open.
pub(crate) async fn wait_for_callback(
    redirect_uri: &Url,
    state: &str,
    timeout: Duration,
    listening: impl FnOnce(SocketAddr),
) -> Result<Callback, ListenError> {
    let addr = listen_addr(redirect_uri)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: state.to_string(),
        taken: Mutex::new(false),
        tx,
    });
    let path = match redirect_uri.path() {
        "" => "/".to_string(),
        p => p.to_string(),
    };
    let app = Router::new()
        .route(&path, axum::routing::get(on_callback))
        .with_state(shared);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = super::ServeOptions::for_redirect(redirect_uri);
    let server = tokio::spawn(super::serve(listener, app, options, async move {
        let _ = stop_rx.await;
    }));
    listening(addr);
    let outcome = tokio::time::timeout(timeout, rx.recv()).await;
    // Let the browser's page be delivered before the listener goes.
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    match outcome {
        Ok(Some(result)) => Ok(result?),
        Ok(None) | Err(_) => Err(ListenError::Timeout(timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_redirects_are_listened_on() {
        let u = Url::parse("http://localhost:8765/callback").unwrap();
        assert_eq!(listen_addr(&u).unwrap(), "127.0.0.1:8765".parse().unwrap());
        let remote = Url::parse("https://shop.example.com/qbo").unwrap();
        assert!(matches!(
            listen_addr(&remote),
            Err(ListenError::NotLocal(_))
        ));
    }

    #[tokio::test]
    async fn a_wrong_state_is_refused_and_the_right_one_taken() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let uri = Url::parse(&format!("http://127.0.0.1:{port}/cb")).unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let wait = tokio::spawn(async move {
            wait_for_callback(&uri, "good", Duration::from_secs(10), |_| {
                let _ = ready_tx.send(());
            })
            .await
        });
        ready_rx.await.unwrap();
        let http = crate::http_client::builder().no_proxy().build().unwrap();
        let base = format!("http://127.0.0.1:{port}/cb");
        let bad = http
            .get(format!("{base}?state=evil&code=x&realmId=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let good = http
            .get(format!("{base}?state=good&code=abc&realmId=42"))
            .send()
            .await
            .unwrap();
        assert_eq!(good.status(), 200);
        let cb = wait.await.unwrap().unwrap();
        assert_eq!((cb.code.as_str(), cb.realm_id.as_str()), ("abc", "42"));
    }
}
