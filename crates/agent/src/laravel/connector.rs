//! The backend's connector channel (contracts/laravel-api.md, "The
//! connector channel"): routes for connectors identified by a per-shop API
//! key in the `X-API-Key` header, separate from the vendor's Sanctum login.
//! The agent uses it for the fleet heartbeat (`POST
//! /api/pos-connector/heartbeat`) and a connection check (`GET
//! /api/pos-connector/test`).
//!
//! Requests are built like the invoice client's (`Accept:
//! application/json`, the configured timeouts, no redirects, the same
//! [`ApiError`] mapping). Differences: a 401 here answers
//! `{"error": "Invalid API key"}` (not `message`) and means the *key* was
//! refused, which no sign-in can fix, so it gets its own error naming
//! `api_key` and `POS_CONNECTOR_API_KEY`; and calls make one attempt and
//! do not log each failure themselves, because their caller (the
//! heartbeat) beats again at its own pace and logs a failing streak once.
//!
//! Answers are read generously: the backend is PHP, so an empty
//! `config_updates` may arrive as `[]`, numbers may arrive as strings,
//! fields may be missing, and unknown fields are kept.

use std::collections::BTreeMap;

use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::{Method, Url};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Map, Value};

use super::auth::read_capped;
use super::error::{classify, describe_transport, excerpt, ApiError};
use crate::config::{Config, ENV_CONNECTOR_API_KEY};
use crate::secret;

/// The header carrying the shop's key.
pub(crate) const API_KEY_HEADER: &str = "X-API-Key";
pub(crate) const HEARTBEAT_PATH: &str = "/api/pos-connector/heartbeat";
pub(crate) const TEST_PATH: &str = "/api/pos-connector/test";

const MAX_ERROR_BODY: usize = 64 * 1024;

/// What can go wrong on the connector channel: the key (a person must fix
/// it), or anything the invoice calls can meet ([`ApiError`]).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum ConnectorError {
    #[error("the backend refused the connector API key (401 on {method} {path}: \"{message}\"): {}", key_fix(*.from_env))]
    KeyRefused {
        method: String,
        path: String,
        /// The backend's `error` (or `message`) text.
        message: String,
        /// Whether the key came from `POS_CONNECTOR_API_KEY`.
        from_env: bool,
    },

    #[error("the connector API key cannot be sent: it holds characters an HTTP header cannot carry (line breaks, control or non-ASCII characters); {}", key_fix(*.from_env))]
    KeyNotSendable { from_env: bool },

    #[error(transparent)]
    Api(#[from] ApiError),
}

fn key_fix(from_env: bool) -> String {
    if from_env {
        format!(
            "the key comes from the {ENV_CONNECTOR_API_KEY} environment variable, which wins over \
             \"api_key\" in config.json: set it to the key the backend issued for this shop, or \
             unset it to use config.json's"
        )
    } else {
        format!(
            "check \"api_key\" in config.json (or {ENV_CONNECTOR_API_KEY}, which wins over it) \
             against the key the backend issued for this shop"
        )
    }
}

impl ConnectorError {
    /// True when a person must act before this can succeed.
    pub(crate) fn needs_person(&self) -> bool {
        match self {
            ConnectorError::KeyRefused { .. } | ConnectorError::KeyNotSendable { .. } => true,
            ConnectorError::Api(e) => e.needs_person(),
        }
    }
}

// ---------------------------------------------------------------------------
// What is sent and what comes back
// ---------------------------------------------------------------------------

/// The heartbeat's body: the contract's fields (`version`, `pos_systems`,
/// `transactions_pending`, `last_sync`, `system_info`) plus
/// `transactions_parked`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct HeartbeatReport {
    /// The agent's version (the crate's).
    pub(crate) version: String,
    /// The tills' POS software (`pos_systems` in config.json).
    pub(crate) pos_systems: Vec<String>,
    /// Sales still on their way to the backend; null when the outbox could
    /// not be read (see `system_info.outbox_error`).
    pub(crate) transactions_pending: Option<u64>,
    /// Sales waiting for a person.
    pub(crate) transactions_parked: Option<u64>,
    /// The last successful step at the backend, RFC 3339 (UTC), or null.
    pub(crate) last_sync: Option<String>,
    pub(crate) system_info: SystemInfo,
}

/// The machine and the agent, for the fleet view. Nothing secret, nothing
/// about customers: identity of the till, platform, and the agent's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SystemInfo {
    /// `linux`, `windows`, `macos`, ...
    pub(crate) os: String,
    /// `unix` or `windows`.
    pub(crate) os_family: String,
    /// The distribution's name and version (`PRETTY_NAME` of
    /// /etc/os-release), where the system says.
    pub(crate) os_version: Option<String>,
    /// `x86_64`, `aarch64`, ...
    pub(crate) arch: String,
    pub(crate) hostname: Option<String>,
    /// Logical CPUs available to the agent.
    pub(crate) cpus: Option<usize>,
    /// The agent's process id, which with `started_at` shows restarts.
    pub(crate) pid: u32,
    /// When this agent process started, RFC 3339 (UTC).
    pub(crate) started_at: String,
    pub(crate) uptime_seconds: u64,
    /// The polling interval in force (it may come from the backend).
    pub(crate) sync_interval_seconds: u64,
    pub(crate) heartbeat_interval_seconds: u64,
    /// When the oldest pending sale was taken in, RFC 3339 (UTC).
    pub(crate) oldest_pending_since: Option<String>,
    /// Jobs in each state of the outbox.
    pub(crate) queue: BTreeMap<String, u64>,
    /// Why the outbox could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) outbox_error: Option<String>,
}

/// The heartbeat's answer: `{"status": "ok", "config_updates": {...},
/// "server_time": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HeartbeatAnswer {
    pub(crate) status: Option<String>,
    /// Settings the backend wants the agent to use. Missing, null and
    /// PHP's empty array `[]` all mean none.
    pub config_updates: Map<String, Value>,
    pub(crate) server_time: Option<String>,
    /// Fields this version does not know.
    pub extra: Map<String, Value>,
}

impl HeartbeatAnswer {
    /// Reads an answer; the error says what is wrong with it.
    pub(crate) fn from_json(v: Value) -> Result<HeartbeatAnswer, String> {
        let Value::Object(mut o) = v else {
            return Err(format!(
                "expected a JSON object, got {}",
                crate::config::json_type(&v)
            ));
        };
        let config_updates = match o.remove("config_updates") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(Value::Array(a)) if a.is_empty() => Map::new(),
            Some(other) => {
                return Err(format!(
                    "\"config_updates\" should be an object, got {}",
                    crate::config::json_type(&other)
                ))
            }
        };
        Ok(HeartbeatAnswer {
            status: o.remove("status").as_ref().and_then(text),
            config_updates,
            server_time: o.remove("server_time").as_ref().and_then(text),
            extra: o,
        })
    }
}

/// `GET /api/pos-connector/test`: `{"status": "connection_ok", "customer",
/// "customer_id", "server_time", "message"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct ConnectionTest {
    pub(crate) status: Option<String>,
    /// The shop the key belongs to.
    pub customer: Option<String>,
    /// Its id, as text (the backend may send a number or a string).
    pub customer_id: Option<String>,
    pub(crate) server_time: Option<String>,
    pub message: Option<String>,
    pub(crate) extra: Map<String, Value>,
}

impl ConnectionTest {
    pub(crate) fn from_json(v: Value) -> Result<ConnectionTest, String> {
        let Value::Object(mut o) = v else {
            return Err(format!(
                "expected a JSON object, got {}",
                crate::config::json_type(&v)
            ));
        };
        let mut take = |k: &str| o.remove(k).as_ref().and_then(text);
        Ok(ConnectionTest {
            status: take("status"),
            customer: take("customer"),
            customer_id: take("customer_id"),
            server_time: take("server_time"),
            message: take("message"),
            extra: o,
        })
    }

    /// Whether the backend said the connection works.
    pub fn is_ok(&self) -> bool {
        self.status.as_deref() == Some("connection_ok")
    }
}

/// A scalar as text: strings as they are, numbers and booleans written
/// out; null, arrays and objects are not text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// The client of the connector channel. `Debug` never shows the key.
#[derive(Clone)]
pub struct ConnectorClient {
    http: reqwest::Client,
    base: Url,
    key: SecretString,
    key_from_env: bool,
}

impl std::fmt::Debug for ConnectorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorClient")
            .field("base", &self.base.as_str())
            .field("key", &"[REDACTED]")
            .field("key_from_env", &self.key_from_env)
            .finish()
    }
}

impl ConnectorClient {
    /// `http` as built by [`super::http_client`] (timeouts, no redirects).
    pub(crate) fn new(http: reqwest::Client, base: Url, key: SecretString) -> ConnectorClient {
        ConnectorClient {
            http,
            base,
            key,
            key_from_env: false,
        }
    }

    /// Says where the key came from, so that a refusal names the right
    /// place to fix it.
    pub(crate) fn key_from_env(mut self, from_env: bool) -> ConnectorClient {
        self.key_from_env = from_env;
        self
    }

    /// The client for the configured backend and key; `None` when no
    /// `api_key` is configured (the channel is optional).
    pub fn from_config(cfg: &Config) -> Option<ConnectorClient> {
        let key = cfg.connector.api_key.clone()?;
        Some(
            ConnectorClient::new(super::http_client(cfg), cfg.base_url.clone(), key)
                .key_from_env(cfg.connector.api_key_from_env),
        )
    }

    pub(crate) fn base_url(&self) -> &Url {
        &self.base
    }

    /// `POST /api/pos-connector/heartbeat`, one attempt.
    pub(crate) async fn heartbeat(
        &self,
        report: &HeartbeatReport,
    ) -> Result<HeartbeatAnswer, ConnectorError> {
        let body = serde_json::to_value(report).expect("the report serialises");
        let raw = self
            .call_json(Method::POST, HEARTBEAT_PATH, Some(&body))
            .await?;
        HeartbeatAnswer::from_json(raw.clone())
            .map_err(|d| parse_error("POST", HEARTBEAT_PATH, d, &raw))
    }

    /// `GET /api/pos-connector/test`, one attempt: whether the backend
    /// knows the key, and for which shop.
    pub async fn test(&self) -> Result<ConnectionTest, ConnectorError> {
        let raw = self.call_json(Method::GET, TEST_PATH, None).await?;
        ConnectionTest::from_json(raw.clone()).map_err(|d| parse_error("GET", TEST_PATH, d, &raw))
    }

    /// One request with the key; a 2xx answer's JSON, or the error.
    async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ConnectorError> {
        let m = method.as_str().to_string();
        let mut key = HeaderValue::from_str(secret::expose(&self.key)).map_err(|_| {
            ConnectorError::KeyNotSendable {
                from_env: self.key_from_env,
            }
        })?;
        // Marked sensitive so no HTTP-layer debug output ever prints it.
        key.set_sensitive(true);
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .expect("relative API paths join");
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, "application/json")
            .header(API_KEY_HEADER, key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| transport(&m, path, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            let bytes = read_capped(resp, MAX_ERROR_BODY).await;
            if status == reqwest::StatusCode::UNAUTHORIZED {
                return Err(ConnectorError::KeyRefused {
                    method: m,
                    path: path.to_string(),
                    message: refusal_text(&bytes),
                    from_env: self.key_from_env,
                });
            }
            return Err(quietly(|| classify(&m, path, status, &headers, &bytes)).into());
        }
        let bytes = resp.bytes().await.map_err(|e| transport(&m, path, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ConnectorError::Api(ApiError::Parse {
                method: m,
                path: path.to_string(),
                detail: format!("not JSON ({e})"),
                excerpt: excerpt(&bytes),
            })
        })
    }
}

/// The backend's reason on a 401: `error` on this channel, `message`
/// elsewhere in Laravel, else the start of the body.
fn refusal_text(body: &[u8]) -> String {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    json.as_ref()
        .and_then(|v| v.get("error").or_else(|| v.get("message")))
        .and_then(Value::as_str)
        .map(|s| super::error::first_chars(s, 200))
        .unwrap_or_else(|| excerpt(body))
}

/// Runs the shared error mapping without its own per-call warning: the
/// heartbeat logs a failing streak once, not every beat.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    tracing::dispatcher::with_default(&tracing::Dispatch::none(), f)
}

fn transport(method: &str, path: &str, err: &reqwest::Error) -> ConnectorError {
    ConnectorError::Api(ApiError::Transport {
        method: method.to_string(),
        path: path.to_string(),
        detail: describe_transport(err),
        maybe_sent: !err.is_connect(),
    })
}

fn parse_error(method: &str, path: &str, detail: String, raw: &Value) -> ConnectorError {
    ConnectorError::Api(ApiError::Parse {
        method: method.into(),
        path: path.into(),
        detail,
        excerpt: excerpt(raw.to_string().as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn heartbeat_answers_are_read_generously() {
        let a = HeartbeatAnswer::from_json(json!({
            "status": "ok",
            "config_updates": {"sync_interval": "300", "debug_mode": false},
            "server_time": "2025-07-12T10:00:00.000000Z",
            "note": "kept"
        }))
        .unwrap();
        assert_eq!(a.status.as_deref(), Some("ok"));
        assert_eq!(a.config_updates["sync_interval"], json!("300"));
        assert_eq!(
            a.server_time.as_deref(),
            Some("2025-07-12T10:00:00.000000Z")
        );
        assert_eq!(a.extra["note"], json!("kept"));

        // PHP's empty array, null, or nothing at all: no updates.
        for updates in [json!([]), Value::Null] {
            let a = HeartbeatAnswer::from_json(json!({"status": "ok", "config_updates": updates}))
                .unwrap();
            assert!(a.config_updates.is_empty());
        }
        let a = HeartbeatAnswer::from_json(json!({"server_time": 1752314400})).unwrap();
        assert_eq!(a.status, None);
        assert_eq!(a.server_time.as_deref(), Some("1752314400"));

        let e = HeartbeatAnswer::from_json(json!({"config_updates": [1, 2]})).unwrap_err();
        assert!(e.contains("config_updates") && e.contains("array"), "{e}");
        let e = HeartbeatAnswer::from_json(json!("ok")).unwrap_err();
        assert!(e.contains("a string"), "{e}");
    }

    #[test]
    fn connection_tests_take_numbers_as_text() {
        let t = ConnectionTest::from_json(json!({
            "status": "connection_ok", "customer": "Cafe Amman", "customer_id": 7,
            "server_time": "2025-07-12T10:00:00Z", "message": "Connection successful",
            "plan": "pro"
        }))
        .unwrap();
        assert!(t.is_ok());
        assert_eq!(t.customer_id.as_deref(), Some("7"));
        assert_eq!(t.extra["plan"], json!("pro"));
        let t = ConnectionTest::from_json(json!({"status": "nope", "customer_id": "7"})).unwrap();
        assert!(!t.is_ok());
        assert_eq!(t.customer_id.as_deref(), Some("7"));
    }

    #[test]
    fn refusals_name_the_key_and_where_to_fix_it() {
        assert_eq!(
            refusal_text(br#"{"error": "Invalid API key"}"#),
            "Invalid API key"
        );
        assert_eq!(
            refusal_text(br#"{"message": "Unauthenticated."}"#),
            "Unauthenticated."
        );
        assert_eq!(refusal_text(b"<html>no</html>"), "<html>no</html>");
        for from_env in [false, true] {
            let e = ConnectorError::KeyRefused {
                method: "POST".into(),
                path: HEARTBEAT_PATH.into(),
                message: "Invalid API key".into(),
                from_env,
            };
            let text = e.to_string();
            assert!(text.contains("refused the connector API key"), "{text}");
            assert!(text.contains("\"api_key\""), "{text}");
            assert!(text.contains(ENV_CONNECTOR_API_KEY), "{text}");
            assert!(e.needs_person());
        }
        let env = ConnectorError::KeyNotSendable { from_env: true }.to_string();
        assert!(
            env.contains("comes from the POS_CONNECTOR_API_KEY"),
            "{env}"
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let c = ConnectorClient::new(
            crate::http_client::builder().build().unwrap(),
            Url::parse("http://127.0.0.1:8000/").unwrap(),
            SecretString::from("very-secret-shop-key"),
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret-shop-key"), "{shown}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
    }
}
