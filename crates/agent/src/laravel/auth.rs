//! Signing in to the Laravel backend: `POST /api/vendors/login`, and the
//! [`TokenSource`] that lets the generic token keeper look after the
//! Sanctum token.
//!
//! The backend's answer carries no expiry (Sanctum's `expiration` is null
//! there), but an operator can set one or revoke tokens at any time. So the
//! expiry is taken from `expires_at` / `expires_in` when the backend sends
//! them, else assumed to be `token_lifetime_hours` from the login; a 401
//! before then is handled by the keeper's invalidate-and-refresh.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::error::{classify, transport, ApiError};
use super::model::Vendor;
use crate::call_stats::CallStats;
use crate::clock::Clock;
use crate::retry::{RetryHint, Retryable};
use crate::secret::{self, StoredToken, Vault};
use crate::token::{RefreshError, TokenSource, TokenValue};

/// The name under which the token is kept in the secrets store.
pub(crate) const VAULT_TOKEN_NAME: &str = "laravel";
/// Cap on how much of an error body is read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The Laravel login token.
#[derive(Debug, Clone)]
pub struct LaravelToken {
    pub(crate) secret: SecretString,
    pub(crate) expires_at: DateTime<Utc>,
    /// When this agent signed in for it; `None` for a token the old
    /// connector wrote into config.json (its issue time is unknown, so the
    /// keeper gives it the whole refresh window).
    pub(crate) obtained_at: Option<DateTime<Utc>>,
    pub(crate) vendor_id: Option<u64>,
}

impl TokenValue for LaravelToken {
    fn bearer(&self) -> &SecretString {
        &self.secret
    }
    fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
    fn issued_at(&self) -> Option<DateTime<Utc>> {
        self.obtained_at
    }
}

/// The login answer.
#[derive(Debug)]
pub(crate) struct LoginAnswer {
    pub(crate) token: SecretString,
    pub(crate) vendor: Vendor,
    /// Only when the backend says (`expires_at` or `expires_in`).
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// `POST /api/vendors/login`, once.
pub(crate) async fn login(
    http: &reqwest::Client,
    base: &Url,
    email: &str,
    password: &SecretString,
    clock: &dyn Clock,
    stats: Option<&CallStats>,
) -> Result<LoginAnswer, ApiError> {
    const PATH: &str = "/api/vendors/login";
    let url = base.join("api/vendors/login").expect("static path joins");
    let body = json!({"email": email, "password": secret::expose(password)});
    let resp = http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&body)
        .send()
        .await;
    let resp = match stats {
        Some(s) => s.observe("POST", PATH, resp),
        None => resp,
    }
    .map_err(|e| transport("POST", PATH, &e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    if !status.is_success() {
        let bytes = read_capped(resp, MAX_ERROR_BODY).await;
        if status.as_u16() == 401 {
            tracing::warn!(
                method = "POST",
                path = PATH,
                status = 401,
                "login refused: invalid credentials"
            );
            return Err(ApiError::InvalidCredentials {
                email: email.to_string(),
            });
        }
        return Err(classify("POST", PATH, status, &headers, &bytes));
    }
    // The success body holds the token: it is parsed, never logged.
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| transport("POST", PATH, &e))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::Parse {
        method: "POST".into(),
        path: PATH.into(),
        detail: format!("not JSON ({e})"),
        excerpt: "(login answer not shown: it may hold a token)".into(),
    })?;
    let token = v
        .get("token")
        .or_else(|| v.get("access_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Parse {
            method: "POST".into(),
            path: PATH.into(),
            detail: "the login answer has no \"token\"".into(),
            excerpt: "(login answer not shown: it may hold a token)".into(),
        })?;
    let now = clock.now();
    let expires_at = v
        .get("expires_at")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
        .or_else(|| {
            v.get("expires_in")
                .and_then(Value::as_f64)
                .filter(|s| *s > 0.0)
                .and_then(|s| chrono::Duration::from_std(Duration::from_secs_f64(s)).ok())
                .map(|d| now + d)
        })
        .filter(|at| *at > now);
    Ok(LoginAnswer {
        token: SecretString::from(token.to_string()),
        vendor: Vendor::from_json(v.get("user").cloned().unwrap_or(Value::Null)),
        expires_at,
    })
}

/// Reads at most `cap` bytes of a body (error pages can be large).
pub(crate) async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    out
}

/// Where the password comes from at each login: asked anew every time, so
/// a password stored by `--setup-password` while the service runs is
/// picked up without a restart.
pub(crate) type PasswordProvider = Arc<dyn Fn() -> Option<SecretString> + Send + Sync>;

/// The keeper's source for the Laravel token.
pub struct LaravelLogin {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) email: String,
    pub(crate) password: PasswordProvider,
    pub(crate) lifetime: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    /// Where new tokens are persisted; `None` keeps them in memory only.
    pub(crate) vault: Option<Vault>,
    hasher: std::hash::RandomState,
    stats: Option<Arc<CallStats>>,
}

impl LaravelLogin {
    pub(crate) fn new(
        http: reqwest::Client,
        base: Url,
        email: String,
        password: PasswordProvider,
        lifetime: Duration,
        clock: Arc<dyn Clock>,
        vault: Option<Vault>,
    ) -> LaravelLogin {
        LaravelLogin {
            http,
            base,
            email,
            password,
            lifetime,
            clock,
            vault,
            hasher: std::hash::RandomState::new(),
            stats: None,
        }
    }

    /// Counts the sign-in calls in `stats` (shared with the client).
    pub(crate) fn with_stats(mut self, stats: Arc<CallStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The token persisted earlier for this backend and account, if any.
    pub(crate) fn restore(&self) -> Option<LaravelToken> {
        let vault = self.vault.as_ref()?;
        let stored = match vault.token(VAULT_TOKEN_NAME) {
            Ok(t) => t?,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the stored token; signing in afresh");
                return None;
            }
        };
        let same_account = stored.meta.get("base_url").and_then(Value::as_str)
            == Some(self.base.as_str())
            && stored.meta.get("email").and_then(Value::as_str) == Some(self.email.as_str());
        if !same_account {
            return None;
        }
        Some(LaravelToken {
            secret: stored.secret,
            expires_at: stored.expires_at,
            obtained_at: Some(stored.obtained_at),
            vendor_id: stored.meta.get("vendor_id").and_then(Value::as_u64),
        })
    }
}

impl TokenSource for LaravelLogin {
    type Token = LaravelToken;

    fn name(&self) -> &str {
        "laravel"
    }

    async fn fetch(&self, _current: Option<&LaravelToken>) -> Result<LaravelToken, RefreshError> {
        let Some(password) = (self.password)() else {
            return Err(RefreshError::NeedsPerson(
                "no password is configured: run `pos-connector --setup-password` (or set POS_CONNECTOR_PASSWORD)"
                    .into(),
            ));
        };
        match login(
            &self.http,
            &self.base,
            &self.email,
            &password,
            &*self.clock,
            self.stats.as_deref(),
        )
        .await
        {
            Ok(answer) => {
                let now = self.clock.now();
                let lifetime = chrono::Duration::from_std(self.lifetime)
                    .unwrap_or_else(|_| chrono::Duration::hours(24));
                Ok(LaravelToken {
                    secret: answer.token,
                    expires_at: answer.expires_at.unwrap_or(now + lifetime),
                    obtained_at: Some(now),
                    vendor_id: answer.vendor.id,
                })
            }
            Err(e) => Err(match e.retry_hint() {
                RetryHint::After(retry_after) => RefreshError::Transient {
                    reason: e.to_string(),
                    retry_after,
                },
                RetryHint::Never => RefreshError::NeedsPerson(e.to_string()),
            }),
        }
    }

    fn persist(&self, token: &LaravelToken) -> Result<(), String> {
        let Some(vault) = &self.vault else {
            return Ok(());
        };
        let mut meta = BTreeMap::new();
        meta.insert("base_url".into(), Value::from(self.base.as_str()));
        meta.insert("email".into(), Value::from(self.email.as_str()));
        if let Some(id) = token.vendor_id {
            meta.insert("vendor_id".into(), Value::from(id));
        }
        vault
            .save_token(
                VAULT_TOKEN_NAME,
                &StoredToken {
                    secret: token.secret.clone(),
                    expires_at: token.expires_at,
                    // Only tokens this agent obtained are persisted.
                    obtained_at: token.obtained_at.unwrap_or_else(|| self.clock.now()),
                    refresh: None,
                    meta,
                },
            )
            .map_err(|e| e.to_string())
    }

    fn credentials_version(&self) -> Option<u64> {
        let password = (self.password)()?;
        let mut h = self.hasher.build_hasher();
        h.write(secret::expose(&password).as_bytes());
        Some(h.finish())
    }
}

/// Where `--setup-password` keeps the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordStore {
    /// The encrypted secrets store (the default).
    Encrypted,
    /// config.json, plain text, mode 0600 (`--in-config`).
    ConfigFile,
}

/// What `verify_and_store_password` did.
#[derive(Debug)]
pub(crate) struct PasswordSaved {
    pub(crate) location: std::path::PathBuf,
    /// A plain-text `password` was removed from config.json.
    pub(crate) removed_plaintext: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Verifies `password` by logging in (retrying transient failures), then
/// stores it, and keeps the token that login produced so the next command
/// needs no login. Nothing is stored when the login fails.
pub(crate) async fn verify_and_store_password(
    cfg: &crate::config::Config,
    password: &SecretString,
    store: PasswordStore,
    clock: Arc<dyn Clock>,
) -> Result<PasswordSaved, SetupError> {
    let http = super::http_client(cfg);
    let answer = crate::retry::RetryPolicy::default()
        .run("verify password", |_| {
            login(&http, &cfg.base_url, &cfg.email, password, &*clock, None)
        })
        .await?;
    let vault = Vault::new(&cfg.data_dir);
    let saved = match store {
        PasswordStore::ConfigFile => {
            crate::secret::write_password_to_file(&cfg.path, Some(secret::expose(password)))?;
            // A stored copy would take precedence over config.json: drop it.
            vault.set_password(None)?;
            PasswordSaved {
                location: cfg.path.clone(),
                removed_plaintext: false,
            }
        }
        PasswordStore::Encrypted => {
            vault.set_password(Some(password))?;
            // The encrypted copy wins anyway; the plain one is obsolete.
            let removed_plaintext = cfg.password.is_some();
            if removed_plaintext {
                crate::secret::write_password_to_file(&cfg.path, None)?;
            }
            PasswordSaved {
                location: vault.path(),
                removed_plaintext,
            }
        }
    };
    let fixed = password.clone();
    let source = LaravelLogin::new(
        http,
        cfg.base_url.clone(),
        cfg.email.clone(),
        Arc::new(move || Some(fixed.clone())),
        cfg.token_lifetime,
        clock.clone(),
        Some(vault),
    );
    let now = clock.now();
    let lifetime = chrono::Duration::from_std(cfg.token_lifetime).unwrap_or_default();
    let token = LaravelToken {
        secret: answer.token,
        expires_at: answer.expires_at.unwrap_or(now + lifetime),
        obtained_at: Some(now),
        vendor_id: answer.vendor.id,
    };
    if let Err(e) = source.persist(&token) {
        tracing::warn!(error = %e, "could not keep the new token; the next command will log in again");
    }
    Ok(saved)
}
