//! The accounting API client: every call goes through the token keeper (a
//! 3200/401 invalidates the token that was sent, refreshes once and replays
//! the same request, `requestid` included) and the per-realm rate limiter
//! (so the agent stays under 500/min and 10/s by itself), carries
//! `minorversion=75` and `Accept: application/json`, and logs `intuit_tid`
//! with every failure.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::QboError;
use super::limiter::{RateLimiter, RateLimits};
use super::model::{self, BatchItemResult, BatchRequest, CdcChanges, Entity, QueryResponse};
use super::oauth::{intuit_tid, QboKeeper};
use crate::call_stats::CallStats;
use crate::laravel::error::parse_retry_after;
use crate::token::TokenError;

/// Sent on every call: versions below 75 are ignored since August 2025.
pub(crate) const MINOR_VERSION: &str = "75";

/// A `requestid` derived from what is being created, so every retry and
/// replay of one logical operation sends the same one (at most 36 chars,
/// which also fits a batch's limit).
pub fn request_id(kind: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{kind}\0{key}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut id = format!("pc-{kind}-{hex}");
    id.truncate(36);
    id
}

/// The QuickBooks Online accounting API of one company: token keeper, rate limiter, refresh-and-replay.
#[derive(Clone)]
pub struct QboClient {
    http: reqwest::Client,
    api_base: Url,
    keeper: Arc<QboKeeper>,
    limiter: Arc<RateLimiter>,
    stats: Arc<CallStats>,
}

impl std::fmt::Debug for QboClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QboClient")
            .field("api_base", &self.api_base.as_str())
            .finish_non_exhaustive()
    }
}

fn sign_in_error(e: TokenError) -> QboError {
    match e {
        // The reason already says what to do ("reconnect needed: ...").
        TokenError::NeedsPerson { reason, .. } => QboError::SignIn {
            message: reason,
            needs_person: true,
            retry_after: None,
        },
        e => QboError::SignIn {
            message: e.to_string(),
            needs_person: false,
            retry_after: e.retry_after(),
        },
    }
}

impl QboClient {
    /// `api_base` ends in `/v3/`.
    pub(crate) fn new(
        http: reqwest::Client,
        api_base: Url,
        keeper: Arc<QboKeeper>,
        limits: RateLimits,
    ) -> QboClient {
        QboClient {
            http,
            api_base,
            keeper,
            limiter: Arc::new(RateLimiter::new(limits)),
            stats: CallStats::new("quickbooks"),
        }
    }

    /// Counts this client's calls in `stats` (shared with the token
    /// endpoint's).
    pub(crate) fn with_stats(mut self, stats: Arc<CallStats>) -> Self {
        self.stats = stats;
        self
    }

    pub(crate) fn stats(&self) -> &Arc<CallStats> {
        &self.stats
    }

    pub(crate) fn keeper(&self) -> &Arc<QboKeeper> {
        &self.keeper
    }

    /// The company's rate limiter, shared by every call of this client.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// One API call. `path` is below `/company/{realm}/`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        body: Option<&Value>,
        batch: bool,
    ) -> Result<Answer, QboError> {
        let mut replayed = false;
        let mut resubmitted = false;
        loop {
            let lease = self.keeper.get().await.map_err(sign_in_error)?;
            let realm = lease.token.realm_id.clone();
            let mut url = self
                .api_base
                .join(&format!("company/{realm}/{path}"))
                .map_err(|e| QboError::Parse {
                    status: 0,
                    message: format!("cannot build the URL for {path}: {e}"),
                    tid: None,
                })?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("minorversion", MINOR_VERSION);
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            let path_label = url.path().to_string();
            self.limiter.acquire(batch).await;
            let mut bearer = reqwest::header::HeaderValue::from_str(&format!(
                "Bearer {}",
                lease.token.access.expose_secret()
            ))
            .map_err(|_| QboError::SignIn {
                message: "the stored QuickBooks access token is not a valid header value; reconnect with `pos-connector qbo connect`".into(),
                needs_person: true,
                retry_after: None,
            })?;
            bearer.set_sensitive(true);
            let mut req = self
                .http
                .request(method.clone(), url)
                .header(ACCEPT, "application/json")
                .header(AUTHORIZATION, bearer);
            if let Some(b) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(b).expect("JSON serialises"));
            }
            let transport = |e: reqwest::Error, tid: Option<&str>| {
                let err = QboError::Transport {
                    message: crate::laravel::error::describe_transport(&e),
                };
                tracing::warn!(
                    backend = "quickbooks",
                    path,
                    intuit_tid = tid,
                    kind = err.kind(),
                    "QuickBooks not reached or its answer lost: {err}"
                );
                err
            };
            let resp = self
                .stats
                .observe(method.as_str(), &path_label, req.send().await)
                .map_err(|e| transport(e, None))?;
            let status = resp.status().as_u16();
            let tid = intuit_tid(resp.headers());
            let wait = parse_retry_after(resp.headers());
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| transport(e, tid.as_deref()))?;
            if (200..300).contains(&status) {
                // The company took the request (whatever the body says).
                self.limiter.admitted();
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) if v.get("Fault").is_none() && v.get("fault").is_none() => {
                        return Ok(Answer { value: v, tid })
                    }
                    Ok(_) => {} // a fault with HTTP 200: classified below
                    Err(e) => {
                        let err = QboError::Parse {
                            status,
                            message: format!("the answer is not JSON ({e})"),
                            tid: tid.clone(),
                        };
                        tracing::warn!(
                            backend = "quickbooks",
                            path,
                            intuit_tid = tid.as_deref(),
                            "{err}"
                        );
                        return Err(err);
                    }
                }
            }
            let err = QboError::from_response(status, wait, tid.clone(), &bytes);
            if !matches!(err, QboError::Throttled { .. }) {
                self.limiter.admitted();
            }
            match &err {
                QboError::Auth { .. } if !replayed => {
                    // The same request (same requestid) after one refresh.
                    tracing::info!(
                        backend = "quickbooks",
                        path,
                        intuit_tid = tid.as_deref(),
                        "access token refused (3200); refreshing and replaying once"
                    );
                    self.keeper.invalidate(lease.generation);
                    replayed = true;
                    continue;
                }
                QboError::Server { status: 500, .. } if !resubmitted => {
                    // Intuit: "500: resubmit once".
                    tracing::info!(
                        backend = "quickbooks",
                        path,
                        intuit_tid = tid.as_deref(),
                        "QuickBooks answered 500; resubmitting once"
                    );
                    resubmitted = true;
                    continue;
                }
                QboError::Throttled { retry_after, .. } => {
                    // Other tills may share the company: learn from it (a
                    // smaller budget) and pause everyone here briefly.
                    let pause = self.limiter.throttled(*retry_after, batch);
                    let st = self.limiter.status();
                    tracing::warn!(
                        backend = "quickbooks",
                        path,
                        status,
                        intuit_tid = tid.as_deref(),
                        pause_ms = pause.as_millis() as u64,
                        budget_per_second = st.per_second,
                        budget_per_minute = st.per_minute,
                        throttled = st.throttled,
                        "QuickBooks throttled the request (429); pausing, then going on with a smaller share"
                    );
                    return Err(err);
                }
                _ => {}
            }
            tracing::warn!(
                backend = "quickbooks",
                path,
                status,
                intuit_tid = tid.as_deref(),
                kind = err.kind(),
                "QuickBooks request failed: {err}"
            );
            return Err(err);
        }
    }

    /// One page of a query.
    pub async fn query<T: DeserializeOwned>(
        &self,
        entity: Entity,
        query: &str,
    ) -> Result<QueryResponse<T>, QboError> {
        self.call(Method::GET, "query", &[("query", query)], None, false)
            .await?
            .decode(|v| model::parse_query_response(entity, v))
    }

    /// Creates an entity; the same `request_id` on a retry or replay gets
    /// the original answer instead of a second object.
    pub async fn create<T: DeserializeOwned>(
        &self,
        entity: Entity,
        body: &impl Serialize,
        request_id: &str,
    ) -> Result<T, QboError> {
        let body = serde_json::to_value(body).expect("entities serialise");
        self.call(
            Method::POST,
            entity.path(),
            &[("requestid", request_id)],
            Some(&body),
            false,
        )
        .await?
        .decode(|v| model::parse_entity(entity, v))
    }

    /// Up to 30 operations in one request (one request against the limits).
    pub(crate) async fn batch(
        &self,
        request: &BatchRequest,
        request_id: &str,
    ) -> Result<Vec<BatchItemResult>, QboError> {
        let body = serde_json::to_value(request).expect("batches serialise");
        self.call(
            Method::POST,
            "batch",
            &[("requestid", request_id)],
            Some(&body),
            true,
        )
        .await?
        .decode(|v| model::BatchResponse::parse(v).map(|r| r.items))
    }

    /// What changed since `since` (at most 30 days back).
    pub(crate) async fn cdc(
        &self,
        entities: &[Entity],
        since: DateTime<Utc>,
    ) -> Result<CdcChanges, QboError> {
        let names: Vec<&str> = entities.iter().map(|e| e.name()).collect();
        let since = since.to_rfc3339_opts(SecondsFormat::Secs, true);
        self.call(
            Method::GET,
            "cdc",
            &[("entities", &names.join(",")), ("changedSince", &since)],
            None,
            false,
        )
        .await?
        .decode(model::parse_cdc)
    }
}

/// A successful answer and its `intuit_tid`.
struct Answer {
    value: Value,
    tid: Option<String>,
}

impl Answer {
    /// Reads the answer's body; a body that is not what was asked for is
    /// a parse error, logged with the answer's `intuit_tid` like any other
    /// failure.
    fn decode<T>(self, read: impl FnOnce(&Value) -> Result<T, String>) -> Result<T, QboError> {
        read(&self.value).map_err(|message| {
            let err = QboError::Parse {
                status: 200,
                message,
                tid: self.tid,
            };
            tracing::warn!(
                backend = "quickbooks",
                intuit_tid = err.intuit_tid(),
                kind = err.kind(),
                "{err}"
            );
            err
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_stable_short_and_distinct() {
        let a = request_id("inv", "INV-1\0hash");
        assert_eq!(a, request_id("inv", "INV-1\0hash"));
        assert_ne!(a, request_id("inv", "INV-2\0hash"));
        assert_ne!(a, request_id("cus", "INV-1\0hash"));
        assert!(a.len() <= 36, "{a}");
        assert!(a.starts_with("pc-inv-"));
    }
}
