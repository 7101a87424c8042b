//! The browser's return from Intuit's authorize page: the redirect URI is
//! called with `code`, `state` and `realmId`. `state` must be the one this
//! attempt generated (otherwise another site could plant its own company in
//! the agent: CSRF), and the code is taken once.
//!
//! [`check`] is the rule, shared by every place that receives the callback;
//! [`wait_for_callback`] is `qbo connect`'s small listener on the redirect
//! URI's loopback port.

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

/// A valid callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub code: String,
    pub realm_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback's state does not match this connection attempt: it was not started here (or is an old one); it was ignored")]
    StateMismatch,
    #[error("QuickBooks did not authorize the connection ({error}{}); start again with `pos-connector qbo connect`", .description.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error("the callback has no {0}; start again with `pos-connector qbo connect`")]
    Missing(&'static str),
}

/// Checks a callback's query parameters against the expected `state`.
pub fn check(
    params: &HashMap<String, String>,
    expected_state: &str,
) -> Result<Callback, CallbackError> {
    let state = params.get("state").map(String::as_str).unwrap_or("");
    if !crate::secret::constant_time_eq(state, &secrecy::SecretString::from(expected_state)) {
        return Err(CallbackError::StateMismatch);
    }
    if let Some(error) = params.get("error") {
        return Err(CallbackError::Denied {
            error: error.clone(),
            description: params.get("error_description").cloned(),
        });
    }
    let code = params
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or(CallbackError::Missing("code"))?;
    let realm_id = params
        .get("realmId")
        .filter(|r| !r.is_empty())
        .ok_or(CallbackError::Missing("realmId (the company)"))?;
    Ok(Callback {
        code: code.clone(),
        realm_id: realm_id.clone(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
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
pub fn listen_addr(redirect_uri: &Url) -> Result<SocketAddr, ListenError> {
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
pub async fn wait_for_callback(
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
    let options = crate::server::ServeOptions::for_redirect(redirect_uri);
    let server = tokio::spawn(crate::server::serve(listener, app, options, async move {
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

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn state_code_and_realm_are_checked() {
        let ok = params(&[("state", "s1"), ("code", "c"), ("realmId", "123")]);
        assert_eq!(
            check(&ok, "s1").unwrap(),
            Callback {
                code: "c".into(),
                realm_id: "123".into()
            }
        );
        assert_eq!(check(&ok, "s2"), Err(CallbackError::StateMismatch));
        let denied = params(&[("state", "s1"), ("error", "access_denied")]);
        assert!(matches!(
            check(&denied, "s1"),
            Err(CallbackError::Denied { .. })
        ));
        let no_realm = params(&[("state", "s1"), ("code", "c")]);
        assert!(matches!(
            check(&no_realm, "s1"),
            Err(CallbackError::Missing(_))
        ));
    }

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
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
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
