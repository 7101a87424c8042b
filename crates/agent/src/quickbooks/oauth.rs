//! QuickBooks' OAuth 2.0: the authorize URL, the code exchange, refreshing,
//! revoking, and keeping the connection (tokens and realm) at rest.
//!
//! The rules that matter (contracts/quickbooks-online.md): a refresh can
//! rotate the refresh token, and the previous one must be taken as dead the
//! moment a new one arrives. So:
//!
//! - the rotated token is written durably (the encrypted vault: temp file,
//!   fsync, rename) in the same synchronous stretch of code that parsed the
//!   answer, before anything else is awaited and before the new access
//!   token is handed to anyone ([`QboTokenSource::fetch`]); a kill can lose
//!   a token only between the answer's last byte and that fsync;
//! - two refreshes for one company never run at once: the [`TokenKeeper`]
//!   makes them single-flight inside a process, and a lock file in the data
//!   folder does it across processes (the service and a `qbo` command); the
//!   stored connection is re-read under that lock, so a process never
//!   refreshes with a token another one already rotated;
//! - `invalid_grant` is terminal: the connection is marked "reconnect
//!   needed" on disk, so neither this run nor the next spends the dead
//!   grant again; only a new connection clears it.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::tid_text;
use crate::call_stats::CallStats;
use crate::clock::Clock;
use crate::config::{QuickbooksConfig, ENV_QB_CLIENT_SECRET};
use crate::laravel::error::parse_retry_after;
use crate::secret::{StoredToken, Vault};
use crate::token::{RefreshError, TokenKeeper, TokenSource, TokenValue};

/// The vault entry holding the connection.
pub const VAULT_NAME: &str = "quickbooks";
/// The scope the agent asks for.
pub(crate) const SCOPE: &str = "com.intuit.quickbooks.accounting";
/// Refresh this long before the access token expires (design.md).
pub(crate) const ACCESS_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Warn when the refresh token's rolling or hard expiry is this close.
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 14;
/// The cross-process refresh lock, in the data folder.
const LOCK_FILE: &str = "quickbooks-refresh.lock";

pub(crate) type QboKeeper = TokenKeeper<QboTokenSource>;

/// The tokens of one connection. `Debug` never shows a token.
#[derive(Clone)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct QboToken {
    pub access: SecretString,
    pub refresh: SecretString,
    pub realm_id: String,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) obtained_at: DateTime<Utc>,
    /// The refresh token's rolling expiry (about 100 days, renewed by use).
    pub(crate) refresh_expires_at: Option<DateTime<Utc>>,
    /// The grant's hard expiry (5 years): after it, only a reconnect helps.
    pub(crate) hard_expires_at: Option<DateTime<Utc>>,
    /// Already written to the vault (by the refresh that produced it).
    pub(crate) durable: bool,
}

impl std::fmt::Debug for QboToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QboToken")
            .field("access", &"[REDACTED]")
            .field("refresh", &"[REDACTED]")
            .field("realm_id", &self.realm_id)
            .field("expires_at", &self.expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("hard_expires_at", &self.hard_expires_at)
            .finish()
    }
}

impl TokenValue for QboToken {
    fn bearer(&self) -> &SecretString {
        &self.access
    }
    fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
    fn issued_at(&self) -> Option<DateTime<Utc>> {
        Some(self.obtained_at)
    }
}

impl QboToken {
    /// The token from a token-endpoint answer. A missing hard expiry keeps
    /// the one known before (Intuit sends it only when asked, and a grant's
    /// hard expiry never moves).
    fn from_answer(
        answer: TokenAnswer,
        realm_id: &str,
        now: DateTime<Utc>,
        previous_hard: Option<DateTime<Utc>>,
    ) -> QboToken {
        let secs = |s: i64| now + chrono::Duration::seconds(s.max(0));
        QboToken {
            access: answer.access_token,
            refresh: answer.refresh_token,
            realm_id: realm_id.to_string(),
            expires_at: secs(answer.expires_in),
            obtained_at: now,
            refresh_expires_at: answer.refresh_expires_in.map(secs),
            hard_expires_at: answer.hard_expires_in.map(secs).or(previous_hard),
            durable: false,
        }
    }
}

/// The last refresh, as kept on disk for `qbo status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct RefreshOutcome {
    pub(crate) at: DateTime<Utc>,
    pub ok: bool,
    pub(crate) detail: String,
}

/// A connection to one company, as stored in the vault.
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct QboConnection {
    pub token: QboToken,
    /// The app it was made with: tokens of another app are useless.
    pub client_id: String,
    pub(crate) connected_at: DateTime<Utc>,
    pub last_refresh: Option<RefreshOutcome>,
    /// Set by `invalid_grant`: only a new connection helps.
    pub(crate) reconnect_needed: Option<String>,
}

impl QboConnection {
    fn to_stored(&self) -> StoredToken {
        let mut meta = BTreeMap::new();
        let t = &self.token;
        meta.insert("realm_id".into(), Value::from(t.realm_id.clone()));
        meta.insert("client_id".into(), Value::from(self.client_id.clone()));
        meta.insert("connected_at".into(), json_time(Some(self.connected_at)));
        meta.insert("refresh_expires_at".into(), json_time(t.refresh_expires_at));
        meta.insert("hard_expires_at".into(), json_time(t.hard_expires_at));
        if let Some(r) = &self.last_refresh {
            meta.insert(
                "last_refresh".into(),
                serde_json::to_value(r).expect("serialises"),
            );
        }
        if let Some(why) = &self.reconnect_needed {
            meta.insert("reconnect_needed".into(), Value::from(why.clone()));
        }
        StoredToken {
            secret: t.access.clone(),
            expires_at: t.expires_at,
            obtained_at: t.obtained_at,
            refresh: Some(t.refresh.clone()),
            meta,
        }
    }

    fn from_stored(s: StoredToken) -> Option<QboConnection> {
        let text = |k: &str| s.meta.get(k).and_then(Value::as_str).map(str::to_string);
        let time = |k: &str| {
            text(k)
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        Some(QboConnection {
            token: QboToken {
                access: s.secret.clone(),
                refresh: s.refresh.clone()?,
                realm_id: text("realm_id")?,
                expires_at: s.expires_at,
                obtained_at: s.obtained_at,
                refresh_expires_at: time("refresh_expires_at"),
                hard_expires_at: time("hard_expires_at"),
                durable: true,
            },
            client_id: text("client_id").unwrap_or_default(),
            connected_at: time("connected_at").unwrap_or(s.obtained_at),
            last_refresh: s
                .meta
                .get("last_refresh")
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            reconnect_needed: text("reconnect_needed"),
        })
    }

    /// Why the app `client_id` cannot use this connection, if it cannot:
    /// its grant is dead, or it belongs to another app.
    pub(crate) fn unusable(&self, client_id: &str) -> Option<String> {
        if let Some(why) = &self.reconnect_needed {
            return Some(why.clone());
        }
        (self.client_id != client_id).then(|| {
            format!(
                "QuickBooks reconnect needed: the stored connection was made with another app \
                 (client id {}); reconnect with `pos-connector qbo connect`",
                self.client_id
            )
        })
    }

    /// Warnings a person should see before the connection dies on its own.
    pub(crate) fn expiry_warnings(&self, now: DateTime<Utc>) -> Vec<String> {
        let soon = now + chrono::Duration::days(EXPIRY_WARNING_DAYS);
        let mut out = Vec::new();
        if let Some(at) = self.token.refresh_expires_at.filter(|at| *at <= soon) {
            out.push(format!(
                "the QuickBooks refresh token expires {} (unused for ~100 days); the agent renews it \
                 whenever it runs, so keep the agent running or reconnect with `pos-connector qbo connect`",
                at.to_rfc3339()
            ));
        }
        if let Some(at) = self.token.hard_expires_at.filter(|at| *at <= soon) {
            out.push(format!(
                "the QuickBooks connection reaches its hard expiry {} (Intuit's 5-year limit); \
                 reconnect with `pos-connector qbo connect` before then",
                at.to_rfc3339()
            ));
        }
        out
    }
}

fn json_time(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::from(t.to_rfc3339()))
        .unwrap_or(Value::Null)
}

/// The connection at rest: the vault entry plus the refresh lock.
#[derive(Debug, Clone)]
pub struct ConnectionStore {
    vault: Vault,
    lock_path: PathBuf,
}

/// Held while a process refreshes (or replaces) the connection.
pub(crate) struct RefreshLock {
    _file: std::fs::File,
}

impl ConnectionStore {
    /// The connection kept in the secrets store of `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> ConnectionStore {
        ConnectionStore {
            vault: Vault::new(data_dir),
            lock_path: data_dir.join(LOCK_FILE),
        }
    }

    /// The saved connection, if QuickBooks was ever connected.
    pub fn load(&self) -> Result<Option<QboConnection>, String> {
        let stored = self.vault.token(VAULT_NAME).map_err(|e| e.to_string())?;
        Ok(stored.and_then(QboConnection::from_stored))
    }

    /// Writes durably (fsync + rename) before returning.
    pub(crate) fn save(&self, conn: &QboConnection) -> Result<(), String> {
        self.vault
            .save_token(VAULT_NAME, &conn.to_stored())
            .map_err(|e| e.to_string())
    }

    pub(crate) fn forget(&self) -> Result<(), String> {
        self.vault
            .forget_token(VAULT_NAME)
            .map_err(|e| e.to_string())
    }

    /// Takes the cross-process refresh lock, waiting up to 60 s for another
    /// process that holds it (a refresh takes well under that).
    pub(crate) async fn lock(&self) -> Result<RefreshLock, String> {
        let file = crate::fsutil::open_lock_file(&self.lock_path)
            .map_err(|e| format!("cannot open {}: {e}", self.lock_path.display()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(RefreshLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!(
                            "another pos-connector process has held {} for a minute",
                            self.lock_path.display()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(format!("cannot lock {}: {e}", self.lock_path.display()))
                }
            }
        }
    }
}

/// What the token endpoint answered (tokens wrapped at once).
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct TokenAnswer {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub(crate) expires_in: i64,
    pub(crate) refresh_expires_in: Option<i64>,
    pub(crate) hard_expires_in: Option<i64>,
}

/// The wire shape; never printed (no `Debug`).
#[derive(Deserialize)]
struct RawTokenAnswer {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    x_refresh_token_expires_in: Option<Value>,
    #[serde(default)]
    x_refresh_token_hard_expires_in: Option<Value>,
}

/// Seconds given as a number or a numeric string.
fn seconds(v: &Option<Value>) -> Option<i64> {
    match v.as_ref()? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Why the token endpoint did not give tokens.
#[derive(Debug, Clone, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum OAuthError {
    #[error("QuickBooks refused the refresh token (invalid_grant: {description}){}: the connection is gone; reconnect with `pos-connector qbo connect`", tid_text(.tid))]
    InvalidGrant {
        description: String,
        tid: Option<String>,
    },
    #[error("QuickBooks refused the app's credentials (invalid_client){}: check quickbooks.client_id and the client secret ({ENV_QB_CLIENT_SECRET} or quickbooks.client_secret)", tid_text(.tid))]
    InvalidClient { tid: Option<String> },
    #[error("QuickBooks' token endpoint refused the request ({status} {error}: {description}){}", tid_text(.tid))]
    Rejected {
        status: u16,
        error: String,
        description: String,
        tid: Option<String>,
    },
    #[error("QuickBooks' token endpoint is unavailable (HTTP {status}){}; the stored token is kept and the refresh retried", tid_text(.tid))]
    Unavailable {
        status: u16,
        retry_after: Option<Duration>,
        tid: Option<String>,
    },
    #[error("cannot reach QuickBooks' token endpoint: {0}; the stored token is kept and the refresh retried")]
    Transport(String),
    #[error("QuickBooks' token endpoint answered something unreadable (HTTP {status}: {detail}){}", tid_text(.tid))]
    Parse {
        status: u16,
        detail: String,
        tid: Option<String>,
    },
}

impl OAuthError {
    /// Transport, 5xx and 429: try again later with the same token.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            OAuthError::Unavailable { .. } | OAuthError::Transport(_) | OAuthError::Parse { .. }
        )
    }
}

/// The OAuth endpoints and the app's credentials.
#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
    authorize_url: Url,
    token_url: Url,
    revoke_url: Url,
    client_id: String,
    client_secret: SecretString,
    redirect_uri: Url,
    stats: Arc<CallStats>,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// From `quickbooks.*`; `None` (with the reason) without an app id and
    /// secret.
    pub fn from_config(
        qb: &QuickbooksConfig,
        http: reqwest::Client,
    ) -> Result<OAuthClient, String> {
        let client_id = qb.client_id.clone().ok_or_else(|| {
            "quickbooks.client_id is not set: copy the app's Client ID from developer.intuit.com"
                .to_string()
        })?;
        let client_secret = qb.client_secret.clone().ok_or_else(|| {
            format!("the QuickBooks client secret is not set: set {ENV_QB_CLIENT_SECRET} or quickbooks.client_secret")
        })?;
        Ok(OAuthClient {
            http,
            authorize_url: qb.authorize_url.clone(),
            token_url: qb.token_url.clone(),
            revoke_url: qb.revoke_url.clone(),
            client_id,
            client_secret,
            redirect_uri: qb.redirect_uri.clone(),
            stats: CallStats::new("quickbooks"),
        })
    }

    /// Counts the token endpoint's calls in `stats` (shared with the
    /// accounting client).
    pub(crate) fn with_stats(mut self, stats: Arc<CallStats>) -> Self {
        self.stats = stats;
        self
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    pub(crate) fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// Where a person approves the connection; `state` comes back with the
    /// redirect and must be checked.
    pub(crate) fn authorize_url(&self, state: &str) -> Url {
        let mut url = self.authorize_url.clone();
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("scope", SCOPE)
            .append_pair("redirect_uri", self.redirect_uri.as_str())
            .append_pair("state", state);
        url
    }

    fn basic_auth(&self) -> String {
        use base64::Engine;
        let pair = format!("{}:{}", self.client_id, self.client_secret.expose_secret());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    fn auth_header(&self) -> reqwest::header::HeaderValue {
        let mut v = reqwest::header::HeaderValue::from_str(&self.basic_auth())
            .expect("base64 is a valid header value");
        v.set_sensitive(true);
        v
    }

    /// Exchanges an authorization code. Call it once per code: Intuit
    /// spoils the tokens of a code exchanged twice.
    pub async fn exchange_code(&self, code: &str) -> Result<TokenAnswer, OAuthError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
        ])
        .await
    }

    /// Refreshes; the answer may carry a new (rotated) refresh token.
    pub(crate) async fn refresh(
        &self,
        refresh_token: &SecretString,
    ) -> Result<TokenAnswer, OAuthError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ])
        .await
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenAnswer, OAuthError> {
        let resp = self
            .http
            .post(self.token_url.clone())
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, self.auth_header())
            .header("x-include-refresh-token-hard-expires-in", "true")
            .form(form)
            .send()
            .await;
        let resp = self
            .stats
            .observe("POST", self.token_url.as_str(), resp)
            .map_err(|e| OAuthError::Transport(crate::laravel::error::describe_transport(&e)))?;
        let status = resp.status().as_u16();
        let tid = intuit_tid(resp.headers());
        let retry_after = parse_retry_after(resp.headers());
        let body = resp
            .bytes()
            .await
            .map_err(|e| OAuthError::Transport(crate::laravel::error::describe_transport(&e)))?;
        if (200..300).contains(&status) {
            let raw: RawTokenAnswer =
                serde_json::from_slice(&body).map_err(|e| OAuthError::Parse {
                    status,
                    detail: format!("not a token answer ({e})"),
                    tid: tid.clone(),
                })?;
            return Ok(TokenAnswer {
                expires_in: seconds(&raw.expires_in).unwrap_or(3600),
                refresh_expires_in: seconds(&raw.x_refresh_token_expires_in),
                hard_expires_in: seconds(&raw.x_refresh_token_hard_expires_in),
                access_token: SecretString::from(raw.access_token),
                refresh_token: SecretString::from(raw.refresh_token),
            });
        }
        if status == 429 || status >= 500 {
            return Err(OAuthError::Unavailable {
                status,
                retry_after,
                tid,
            });
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let error = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let description = v
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Err(match error.as_str() {
            "invalid_grant" => OAuthError::InvalidGrant { description, tid },
            "invalid_client" => OAuthError::InvalidClient { tid },
            "" if status == 401 => OAuthError::InvalidClient { tid },
            "" => OAuthError::Parse {
                status,
                detail: crate::laravel::error::first_chars(&String::from_utf8_lossy(&body), 200),
                tid,
            },
            _ => OAuthError::Rejected {
                status,
                error,
                description,
                tid,
            },
        })
    }

    /// Revokes the grant `token` belongs to (`qbo disconnect`).
    pub(crate) async fn revoke(&self, token: &SecretString) -> Result<(), OAuthError> {
        let resp = self
            .http
            .post(self.revoke_url.clone())
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, self.auth_header())
            .json(&serde_json::json!({ "token": token.expose_secret() }))
            .send()
            .await;
        let resp = self
            .stats
            .observe("POST", self.revoke_url.as_str(), resp)
            .map_err(|e| OAuthError::Transport(crate::laravel::error::describe_transport(&e)))?;
        let status = resp.status().as_u16();
        let tid = intuit_tid(resp.headers());
        let retry_after = parse_retry_after(resp.headers());
        match status {
            200..=299 => Ok(()),
            401 => Err(OAuthError::InvalidClient { tid }),
            429 | 500.. => Err(OAuthError::Unavailable {
                status,
                retry_after,
                tid,
            }),
            _ => {
                let body = resp.text().await.unwrap_or_default();
                Err(OAuthError::Rejected {
                    status,
                    error: "revoke".into(),
                    description: crate::laravel::error::first_chars(&body, 200),
                    tid,
                })
            }
        }
    }
}

pub(crate) fn intuit_tid(headers: &HeaderMap) -> Option<String> {
    headers
        .get("intuit_tid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A random `state` for one authorization attempt (CSRF protection).
pub(crate) fn new_state() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exchanges `code` once and stores the new connection for `realm_id`,
/// replacing any earlier one (and clearing "reconnect needed").
pub async fn connect_with_code(
    oauth: &OAuthClient,
    store: &ConnectionStore,
    clock: &dyn Clock,
    code: &str,
    realm_id: &str,
) -> Result<QboConnection, String> {
    let _lock = store.lock().await?;
    let answer = oauth.exchange_code(code).await.map_err(|e| e.to_string())?;
    let now = clock.now();
    let mut token = QboToken::from_answer(answer, realm_id, now, None);
    token.durable = true;
    let conn = QboConnection {
        token,
        client_id: oauth.client_id().to_string(),
        connected_at: now,
        last_refresh: None,
        reconnect_needed: None,
    };
    store.save(&conn).map_err(|e| {
        format!("QuickBooks connected but the tokens could not be stored ({e}); fix the data folder and connect again")
    })?;
    Ok(conn)
}

/// Revokes the connection at Intuit, then forgets it here; returns the
/// company it was for (`None`: nothing was connected). A revoke Intuit
/// refuses (the grant is already dead) still forgets; a network failure
/// keeps the connection unless `force`.
pub(crate) async fn disconnect(
    oauth: &OAuthClient,
    store: &ConnectionStore,
    force: bool,
) -> Result<Option<String>, String> {
    let Some(conn) = store.load()? else {
        return Ok(None);
    };
    match oauth.revoke(&conn.token.refresh).await {
        Ok(()) => {}
        Err(e @ (OAuthError::InvalidGrant { .. } | OAuthError::Rejected { .. })) => {
            // Already dead at Intuit: forgetting is all that is left.
            tracing::warn!(error = %e, "revoke refused; forgetting the connection anyway");
        }
        Err(e) if !force => {
            return Err(format!(
                "{e}; the connection is kept: try again, or forget it here anyway with `pos-connector qbo disconnect --force` (API: POST /api/quickbooks/disconnect?force=true)"
            ))
        }
        Err(e) => tracing::warn!(error = %e, "revoke failed; forgetting the connection (forced)"),
    }
    store.forget()?;
    Ok(Some(conn.token.realm_id))
}

/// The keeper's source for QuickBooks tokens.
pub(crate) struct QboTokenSource {
    oauth: OAuthClient,
    store: ConnectionStore,
    clock: Arc<dyn Clock>,
    hasher: std::hash::RandomState,
    /// When the expiry warnings were last logged (once a day is enough).
    warned_at: Mutex<Option<DateTime<Utc>>>,
}

impl QboTokenSource {
    pub(crate) fn new(
        oauth: OAuthClient,
        store: ConnectionStore,
        clock: Arc<dyn Clock>,
    ) -> QboTokenSource {
        QboTokenSource {
            oauth,
            store,
            clock,
            hasher: std::hash::RandomState::new(),
            warned_at: Mutex::new(None),
        }
    }

    /// Logs the expiry warnings, at most once a day.
    pub(crate) fn warn_ahead(&self, conn: &QboConnection) {
        let now = self.clock.now();
        let warnings = conn.expiry_warnings(now);
        if warnings.is_empty() {
            return;
        }
        let mut last = self.warned_at.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now - at < chrono::Duration::days(1)) {
            return;
        }
        *last = Some(now);
        for w in warnings {
            tracing::warn!(backend = "quickbooks", "{w}");
        }
    }

    fn record(&self, conn: &mut QboConnection, ok: bool, detail: String) {
        conn.last_refresh = Some(RefreshOutcome {
            at: self.clock.now(),
            ok,
            detail,
        });
    }

    /// Keeps a failed refresh's outcome on disk (best effort: the stored
    /// token itself is unchanged).
    fn save_outcome(&self, conn: &QboConnection) {
        if let Err(e) = self.store.save(conn) {
            tracing::warn!(backend = "quickbooks", error = %e, "could not record the refresh outcome");
        }
    }
}

impl TokenSource for QboTokenSource {
    type Token = QboToken;

    fn name(&self) -> &str {
        "quickbooks"
    }

    async fn fetch(&self, current: Option<&QboToken>) -> Result<QboToken, RefreshError> {
        let _lock = self
            .store
            .lock()
            .await
            .map_err(|e| RefreshError::Transient {
                reason: e,
                retry_after: None,
            })?;
        let mut conn = match self.store.load() {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(RefreshError::NeedsPerson(
                    "QuickBooks is not connected: run `pos-connector qbo connect`".into(),
                ))
            }
            Err(e) => {
                return Err(RefreshError::NeedsPerson(format!(
                    "the stored QuickBooks connection cannot be read ({e}); reconnect with `pos-connector qbo connect`"
                )))
            }
        };
        if let Some(why) = conn.unusable(&self.oauth.client_id) {
            return Err(RefreshError::NeedsPerson(why));
        }
        let now = self.clock.now();
        // Another process (or a reconnect) may have stored a newer token
        // since this one was handed out: use it rather than refresh again.
        let stored = &conn.token;
        let newer = current.is_none_or(|c| {
            c.access.expose_secret() != stored.access.expose_secret()
                || c.refresh.expose_secret() != stored.refresh.expose_secret()
        });
        let window = chrono::Duration::from_std(ACCESS_WINDOW).expect("small");
        if newer && stored.expires_at - now > window {
            return Ok(stored.clone());
        }
        let previous_hard = stored.hard_expires_at;
        let realm = stored.realm_id.clone();
        match self.oauth.refresh(&stored.refresh).await {
            Ok(answer) => {
                // From here to the fsync nothing is awaited: the previous
                // refresh token may already be dead, and this answer holds
                // the only live one.
                let mut token = QboToken::from_answer(answer, &realm, now, previous_hard);
                conn.token = token.clone();
                let detail = format!("valid until {}", token.expires_at.to_rfc3339());
                self.record(&mut conn, true, detail);
                match self.store.save(&conn) {
                    Ok(()) => token.durable = true,
                    Err(e) => tracing::error!(
                        backend = "quickbooks",
                        error = %e,
                        "could not store the rotated QuickBooks token; it is used from memory and a restart will need `qbo connect`"
                    ),
                }
                self.warn_ahead(&conn);
                Ok(token)
            }
            Err(e) if e.is_transient() => {
                let retry_after = match &e {
                    OAuthError::Unavailable { retry_after, .. } => *retry_after,
                    _ => None,
                };
                self.record(&mut conn, false, e.to_string());
                self.save_outcome(&conn);
                Err(RefreshError::Transient {
                    reason: e.to_string(),
                    retry_after,
                })
            }
            Err(e) => {
                let why = e.to_string();
                if matches!(e, OAuthError::InvalidGrant { .. }) {
                    // Terminal: remember it, so no run spends the dead
                    // grant again until a person reconnects.
                    conn.reconnect_needed = Some(format!("QuickBooks reconnect needed: {why}"));
                }
                self.record(&mut conn, false, why.clone());
                self.save_outcome(&conn);
                Err(RefreshError::NeedsPerson(
                    conn.reconnect_needed.clone().unwrap_or(why),
                ))
            }
        }
    }

    fn persist(&self, token: &QboToken) -> Result<(), String> {
        if token.durable {
            return Ok(());
        }
        // Only reached when the write inside `fetch` failed: try again.
        let mut conn = self
            .store
            .load()?
            .ok_or_else(|| "the QuickBooks connection was forgotten meanwhile".to_string())?;
        conn.token = token.clone();
        self.store.save(&conn)
    }

    /// Changes when a person reconnects (new tokens stored) or changes the
    /// app secret, which lets the keeper leave "reconnect needed".
    fn credentials_version(&self) -> Option<u64> {
        let mut h = self.hasher.build_hasher();
        h.write(self.oauth.client_secret.expose_secret().as_bytes());
        if let Ok(Some(conn)) = self.store.load() {
            h.write(conn.token.refresh.expose_secret().as_bytes());
            h.write_u8(conn.reconnect_needed.is_some() as u8);
        }
        Some(h.finish())
    }
}

/// The keeper for the configured app, starting from the stored connection
/// (and in "reconnect needed" if that is what it says).
pub(crate) fn keeper(
    qb: &QuickbooksConfig,
    data_dir: &std::path::Path,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    stats: Arc<CallStats>,
) -> Result<Arc<QboKeeper>, String> {
    let oauth = OAuthClient::from_config(qb, http)?.with_stats(stats);
    let store = ConnectionStore::new(data_dir);
    let stored = store.load().unwrap_or_else(|e| {
        tracing::warn!(backend = "quickbooks", error = %e, "cannot read the stored QuickBooks connection");
        None
    });
    let source = QboTokenSource::new(oauth, store, clock.clone());
    let initial = stored
        .as_ref()
        .filter(|c| c.reconnect_needed.is_none())
        .map(|c| c.token.clone());
    if let Some(c) = &stored {
        source.warn_ahead(c);
    }
    let keeper = Arc::new(TokenKeeper::new(source, clock, ACCESS_WINDOW, initial));
    match stored {
        None => {
            keeper.hold_for_person("QuickBooks is not connected: run `pos-connector qbo connect`")
        }
        Some(c) => {
            // Said once by whoever uses the keeper (the pusher's log, a
            // command's exit 3), not here.
            if let Some(why) = c.reconnect_needed {
                keeper.hold_for_person(&why);
            }
        }
    }
    Ok(keeper)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(refresh_days: i64, hard_days: i64, now: DateTime<Utc>) -> QboConnection {
        QboConnection {
            token: QboToken {
                access: SecretString::from("a"),
                refresh: SecretString::from("r"),
                realm_id: "1".into(),
                expires_at: now,
                obtained_at: now,
                refresh_expires_at: Some(now + chrono::Duration::days(refresh_days)),
                hard_expires_at: Some(now + chrono::Duration::days(hard_days)),
                durable: true,
            },
            client_id: "app".into(),
            connected_at: now,
            last_refresh: None,
            reconnect_needed: None,
        }
    }

    #[test]
    fn warns_within_fourteen_days_of_either_expiry() {
        let now = Utc::now();
        assert!(conn(100, 1800, now).expiry_warnings(now).is_empty());
        let w = conn(13, 1800, now).expiry_warnings(now);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("refresh token expires"), "{w:?}");
        let w = conn(100, 10, now).expiry_warnings(now);
        assert!(w[0].contains("hard expiry"), "{w:?}");
        assert_eq!(conn(5, 5, now).expiry_warnings(now).len(), 2);
    }

    #[test]
    fn the_connection_round_trips_through_the_vault_and_debug_hides_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConnectionStore::new(dir.path());
        let now = Utc::now();
        let mut c = conn(100, 1800, now);
        c.reconnect_needed = Some("QuickBooks reconnect needed: x".into());
        c.last_refresh = Some(RefreshOutcome {
            at: now,
            ok: false,
            detail: "invalid_grant".into(),
        });
        store.save(&c).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.token.realm_id, "1");
        assert_eq!(back.reconnect_needed, c.reconnect_needed);
        assert_eq!(back.last_refresh, c.last_refresh);
        assert_eq!(
            back.token.hard_expires_at.map(|t| t.timestamp()),
            c.token.hard_expires_at.map(|t| t.timestamp())
        );
        let shown = format!("{back:?}");
        assert!(
            !shown.contains("\"r\"") && shown.contains("REDACTED"),
            "{shown}"
        );
        store.forget().unwrap();
        assert!(store.load().unwrap().is_none());
    }
}
