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
//!
//! Anyone on the machine can reach the port, and any web page the till's
//! browser opens can make the browser send requests to it. So, before any
//! route ([`serve`]):
//! - at most `local_api.max_connections` connections are served at once;
//!   the rest wait in the system's queue, costing the agent no file handle
//!   (thousands of idle connections cannot starve the inbox);
//! - a connection that has not sent a whole request head within
//!   `local_api.header_timeout_seconds` (also an idle kept-alive one) is
//!   closed (slowloris);
//! - a request whose `Host` is not a name of this machine is refused with
//!   421 ([`HostPolicy`]): a page on `evil.example` whose DNS answer turns
//!   into 127.0.0.1 (DNS rebinding) still sends `Host: evil.example`;
//! - a wrong key is answered only after a wait that doubles with each wrong
//!   key in a minute, one at a time, and logged at most once a minute
//!   ([`protect`]).

pub(crate) mod api;
pub(crate) mod callback;
pub(crate) mod metrics;
pub(crate) mod page;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use secrecy::SecretString;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use crate::config::WrongKeyDelay;
use crate::config::{Config, LocalApiSettings};
use crate::logging::untrusted;

/// How long open requests may take to finish once the server stops.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// A refusal worth a warning is logged at most this often (the others
/// are counted into the next one).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Why the local API could not start or serve.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum ServerError {
    #[error("cannot listen on local_api.bind {addr}: {source}; another program (or another pos-connector) may hold the port: stop it, choose another port in local_api.bind, or set local_api.enabled to false")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How [`serve`] guards its connections.
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct ServeOptions {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// A request head must arrive within this (also the longest idle time
    /// of a kept-alive connection).
    pub header_timeout: Duration,
    pub hosts: HostPolicy,
}

impl ServeOptions {
    /// The local API's: `local_api.*`, and the names this machine answers
    /// to (the QuickBooks redirect URI's host, the machine's name when
    /// other machines may connect).
    pub(crate) fn from_config(cfg: &Config) -> ServeOptions {
        let api = &cfg.local_api;
        let mut hosts = HostPolicy::new(&api.allowed_hosts);
        if let Some(h) = cfg.quickbooks.redirect_uri.host_str() {
            hosts = hosts.with(h);
        }
        if api.allow_remote {
            if let Some(name) = crate::heartbeat::hostname() {
                hosts = hosts.with(&name);
            }
        }
        ServeOptions::new(api, hosts)
    }

    fn new(api: &LocalApiSettings, hosts: HostPolicy) -> ServeOptions {
        ServeOptions {
            max_connections: api.max_connections,
            header_timeout: api.header_timeout,
            hosts,
        }
    }

    /// `qbo connect`'s listener on the redirect URI: the defaults, and the
    /// redirect URI's host.
    pub(crate) fn for_redirect(redirect_uri: &reqwest::Url) -> ServeOptions {
        let hosts = match redirect_uri.host_str() {
            Some(h) => HostPolicy::default().with(h),
            None => HostPolicy::default(),
        };
        ServeOptions {
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
            header_timeout: crate::config::DEFAULT_HEADER_TIMEOUT,
            hosts,
        }
    }
}

/// The names (`Host` header, or the authority of an absolute request URI)
/// this machine answers to: `localhost`, loopback addresses, the address the
/// connection came in on, and the names configured. A request without any
/// (HTTP/1.0) is let through: it does not come from a browser.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    names: Vec<String>,
}

impl HostPolicy {
    /// The defaults plus `names` (any case, a trailing dot ignored).
    pub fn new(names: &[String]) -> HostPolicy {
        names
            .iter()
            .fold(HostPolicy::default(), |p, name| p.with(name))
    }

    /// Also answers to `name`.
    pub(crate) fn with(mut self, name: &str) -> HostPolicy {
        let name = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !name.is_empty() && !self.names.contains(&name) {
            self.names.push(name);
        }
        self
    }

    /// Whether `host` (as sent, with or without a port) names this machine;
    /// `local` is the address the connection was accepted on.
    pub(crate) fn allows(&self, host: &str, local: Option<IpAddr>) -> bool {
        let Some(name) = host_part(host) else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return false;
        }
        if name == "localhost" || self.names.contains(&name) {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                ip.is_loopback() || Some(ip) == local.map(|l| l.to_canonical())
            }
            Err(_) => false,
        }
    }
}

/// The host of a `Host` value, without its port; `None` when malformed.
fn host_part(host: &str) -> Option<&str> {
    let valid_port = |p: &str| p.parse::<u16>().is_ok();
    if let Some(rest) = host.strip_prefix('[') {
        let (ip6, after) = rest.split_once(']')?;
        return match after {
            "" => Some(ip6),
            p => p.strip_prefix(':').filter(|p| valid_port(p)).map(|_| ip6),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if valid_port(port) && !name.contains(':') => Some(name),
        Some(_) => None,
        None => Some(host),
    }
}

/// What a request says its host is: the absolute URI's authority, else the
/// `Host` header. `Ok(None)` without either; `Err` for two Host headers.
fn requested_host(req: &Request<impl Sized>) -> Result<Option<String>, ()> {
    if let Some(a) = req.uri().authority() {
        return Ok(Some(
            a.as_str().rsplit('@').next().unwrap_or("").to_string(),
        ));
    }
    let mut values = req.headers().get_all(header::HOST).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    match first {
        None => Ok(None),
        Some(v) => Ok(Some(String::from_utf8_lossy(v.as_bytes()).into_owned())),
    }
}

/// The peer of a request's connection, for logs (set by [`serve`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// Counts refusals and says when one should be logged: the first, then at
/// most once per [`LOG_EVERY`] with how many were not.
#[derive(Debug, Default)]
struct LogLimiter {
    last: Option<Instant>,
    unlogged: u64,
}

impl LogLimiter {
    /// `Some(unlogged since the last report)` when this one is logged.
    fn note(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// How many connections the system may hold ready for us beyond those
/// served (they cost the agent nothing until accepted; the system caps it
/// at its own `somaxconn`).
const ACCEPT_QUEUE: u32 = 1024;

/// Binds the configured address (port 0 picks a free one, for tests), with
/// a long accept queue: connections beyond `max_connections` wait there.
pub(crate) async fn bind(settings: &LocalApiSettings) -> Result<TcpListener, ServerError> {
    let addr = settings.bind;
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ACCEPT_QUEUE)
    };
    listen().map_err(|source| ServerError::Bind { addr, source })
}

/// The key check's state: the key, and the recent wrong ones.
struct KeyGuard {
    key: Option<SecretString>,
    delay: WrongKeyDelay,
    recent: Mutex<(VecDeque<Instant>, LogLimiter)>,
    /// Wrong keys are answered one at a time.
    penalty: tokio::sync::Mutex<()>,
}

impl KeyGuard {
    /// Records a wrong key: how long to wait before answering, and whether
    /// to log it (with how many went unlogged).
    fn wrong_key(&self, now: Instant) -> (Duration, Option<u64>) {
        let mut guard = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (recent, log) = &mut *guard;
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= LOG_EVERY)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        let doublings = (recent.len() - 1).min(16) as u32;
        let wait = self
            .delay
            .first
            .saturating_mul(1u32 << doublings)
            .min(self.delay.max);
        (wait, log.note(now))
    }
}

/// Wraps `routes` with the API key check. A wrong key waits `delay` (see
/// [`WrongKeyDelay`]) before its 401.
pub fn protect(routes: Router, api_key: Option<SecretString>, delay: WrongKeyDelay) -> Router {
    let guard = KeyGuard {
        key: api_key,
        delay,
        recent: Mutex::default(),
        penalty: tokio::sync::Mutex::new(()),
    };
    routes.layer(axum::middleware::from_fn_with_state(
        Arc::new(guard),
        require_key,
    ))
}

async fn require_key(State(guard): State<Arc<KeyGuard>>, req: Request, next: Next) -> Response {
    let Some(expected) = guard.key.as_ref() else {
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
        Some(_) => {
            let (wait, log) = guard.wrong_key(Instant::now());
            if let Some(unlogged) = log {
                let peer = req
                    .extensions()
                    .get::<Peer>()
                    .map(|p| p.0.to_string())
                    .unwrap_or_else(|| "an unknown peer".into());
                tracing::warn!(
                    peer = %peer,
                    method = %req.method(),
                    path = %untrusted(req.uri().path()),
                    unlogged,
                    "wrong local API key from {peer} for {} {}: refused, and answered only after a wait that grows with each wrong key ({unlogged} more since the last report; the next report comes after a minute at the earliest)",
                    req.method(),
                    untrusted(req.uri().path())
                );
            }
            let _one_at_a_time = guard.penalty.lock().await;
            tokio::time::sleep(wait).await;
            unauthorized(
                "wrong API key: send Authorization: Bearer <local_api.api_key> (or X-API-Key)",
            )
        }
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
pub(crate) fn app(
    local: api::LocalApi,
    intake: crate::intake::Intake,
    settings: &LocalApiSettings,
) -> Router {
    let keyed = api::protected_routes(local.clone()).merge(crate::intake::http::routes(intake));
    api::open_routes(local)
        .merge(protect(
            keyed,
            settings.api_key.clone(),
            settings.wrong_key_delay,
        ))
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

/// Serves `app` until `shutdown`, with the guards of `options` (see the
/// module's documentation), then lets open requests finish (a few seconds
/// at most).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // The address in the message too: with port 0 in `local_api.bind` this
    // line is where a person or a test learns the port.
    let addr = listener
        .local_addr()
        .map_or_else(|e| format!("(unknown: {e})"), |a| a.to_string());
    tracing::info!(
        addr = %addr,
        max_connections = options.max_connections,
        header_timeout_seconds = options.header_timeout.as_secs_f64(),
        "local API listening on {addr}"
    );
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (closing, closing_rx) = watch::channel(false);
    let refusals = Arc::new(Mutex::new(LogLimiter::default()));
    let router = TowerToHyperService::new(app);
    let options = Arc::new(options);
    let mut connections = JoinSet::new();
    loop {
        // A free slot first: while none is free, connections wait in the
        // system's accept queue and hold nothing of ours.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file handles, or the like: never spin on it.
                    tracing::warn!(error = %e, "local API: cannot accept a connection; trying again in a second");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let local = stream.local_addr().ok().map(|a| a.ip());
        let service = {
            let router = router.clone();
            let options = options.clone();
            let refusals = refusals.clone();
            hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let refused = check_host(&req, &options.hosts, local, remote, &refusals);
                req.extensions_mut().insert(Peer(remote));
                let router = router.clone();
                async move {
                    match refused {
                        Some(resp) => Ok::<_, Infallible>(resp),
                        None => hyper::service::Service::call(&router, req).await,
                    }
                }
            })
        };
        let header_timeout = options.header_timeout;
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let outcome = tokio::select! {
                outcome = conn.as_mut() => outcome,
                _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(peer = %remote, error = %e, "local API connection ended");
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// The 421 (or 400) for a request whose host is not this machine, logged
/// at most once a minute; `None` to serve it.
fn check_host(
    req: &Request<hyper::body::Incoming>,
    policy: &HostPolicy,
    local: Option<IpAddr>,
    remote: SocketAddr,
    refusals: &Mutex<LogLimiter>,
) -> Option<Response> {
    let host = match requested_host(req) {
        Ok(None) => return None,
        Ok(Some(h)) if policy.allows(&h, local) => return None,
        Ok(Some(h)) => h,
        Err(()) => {
            return Some(api::error(
                StatusCode::BAD_REQUEST,
                "more than one Host header: send exactly one".to_string(),
            ))
        }
    };
    let shown = crate::laravel::error::first_chars(&host, 100);
    let log = refusals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .note(Instant::now());
    if let Some(unlogged) = log {
        tracing::warn!(
            peer = %remote,
            host = %untrusted(&shown),
            unlogged,
            "refused a request for host \"{}\" from {remote}: not a name of this machine (a web page trying to reach the local API through its own DNS name?); {unlogged} more since the last report",
            untrusted(&shown)
        );
    }
    Some(api::error(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "host \"{shown}\" is not this machine: the local API answers only to localhost, \
             127.0.0.1 and its own address; open it by one of those, or add the name to \
             local_api.allowed_hosts"
        ),
    ))
}
