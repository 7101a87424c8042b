//! The generic token keeper, one per backend (the Laravel login token now,
//! QuickBooks' OAuth tokens later). It hands out a valid token, refreshes it
//! ahead of expiry, and guarantees:
//!
//! - **one refresh at a time**: however many callers find the token stale,
//!   exactly one of them calls the backend; the others wait on the same lock
//!   and take that result, success or failure;
//! - **a 401 invalidates only the token that was sent**: callers hold a
//!   [`Lease`] with the token's generation, and [`TokenKeeper::invalidate`]
//!   ignores generations that have already been replaced, so a late 401 for
//!   an old token never throws away a newer one;
//! - **persist before use**: a new token is written durably by the source's
//!   `persist` before any caller sees it (for QuickBooks this is what keeps
//!   a rotated refresh token across a power cut);
//! - **no hammering**: a transient failure starts a cooldown (exponential
//!   with jitter, capped) during which callers get the cached error instead
//!   of another login attempt; a failure that needs a person (wrong
//!   password, revoked grant) stops refreshing until the credentials change.
//!
//! Time comes from a [`Clock`] (wall time, for expiries that are persisted)
//! and tokio's clock (for waits), so tests drive both with a paused runtime.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::Clock;

/// What a token must tell the keeper.
pub trait TokenValue: Send + Sync + 'static {
    /// The value sent as `Authorization: Bearer ...`.
    fn bearer(&self) -> &SecretString;
    /// When the backend stops accepting the token.
    fn expires_at(&self) -> DateTime<Utc>;
    /// When the token was obtained, if known. Lets the keeper shrink the
    /// refresh window for short-lived tokens (a backend that says a token
    /// lives 10 minutes must not make a 30-minute window refresh forever).
    fn issued_at(&self) -> Option<DateTime<Utc>> {
        None
    }
}

/// Why a refresh failed, as the source classifies it.
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "the variant names say what they are")]
pub enum RefreshError {
    /// Retrying cannot help until a person acts (wrong password, disabled
    /// OAuth grant). The text says what to do.
    NeedsPerson(String),
    /// Network down, 5xx, 429: try again later (after `retry_after` if the
    /// backend said so).
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// A backend's way of obtaining and storing tokens.
pub trait TokenSource: Send + Sync + 'static {
    /// The token this source obtains.
    type Token: TokenValue;

    /// A short name for logs and errors ("laravel", "quickbooks").
    fn name(&self) -> &str;

    /// Obtains a new token; `current` is the one being replaced (an OAuth
    /// source needs its refresh token).
    fn fetch(
        &self,
        current: Option<&Self::Token>,
    ) -> impl Future<Output = Result<Self::Token, RefreshError>> + Send;

    /// Makes `token` durable. Called before anyone may use it.
    fn persist(&self, token: &Self::Token) -> Result<(), String>;

    /// Changes when the credentials a person can fix change (a new stored
    /// password): lets the keeper leave the "needs a person" state on its
    /// own. `None` when the source cannot tell.
    fn credentials_version(&self) -> Option<u64> {
        None
    }
}

/// The keeper's error, cheap to clone so waiters can share one result.
#[derive(Debug, Clone, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum TokenError {
    #[error("{backend} sign-in needs a person: {reason}")]
    NeedsPerson { backend: String, reason: String },
    #[error("{backend} sign-in failed and no valid token is left: {reason}")]
    Unavailable {
        backend: String,
        reason: String,
        retry_after: Option<Duration>,
    },
}

impl TokenError {
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Unavailable { retry_after, .. } => *retry_after,
            TokenError::NeedsPerson { .. } => None,
        }
    }
}

/// A token handed out, with the generation needed to report a 401.
pub struct Lease<T> {
    pub(crate) token: Arc<T>,
    pub(crate) generation: u64,
}

impl<T> Clone for Lease<T> {
    fn clone(&self) -> Self {
        Lease {
            token: self.token.clone(),
            generation: self.generation,
        }
    }
}

/// One refresh attempt, for the status page and logs.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct RefreshRecord {
    pub(crate) at: DateTime<Utc>,
    pub(crate) reason: String,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

/// A snapshot of the keeper for `status` views. Never contains a secret.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct KeeperStatus {
    pub(crate) backend: String,
    pub(crate) has_token: bool,
    pub(crate) token_valid: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub(crate) refresh_due_at: Option<DateTime<Utc>>,
    pub(crate) generation: u64,
    pub(crate) refreshes_ok: u64,
    pub(crate) refreshes_failed: u64,
    pub(crate) last_refresh: Option<RefreshRecord>,
    pub(crate) needs_person: Option<String>,
}

/// How the keeper backs off after transient failures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cooldown {
    pub(crate) first: Duration,
    pub(crate) max: Duration,
}

impl Default for Cooldown {
    fn default() -> Self {
        Cooldown {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Cooldown {
    /// Exponential in the number of failures in a row, capped, with +-20%
    /// jitter so a fleet of tills does not retry in step.
    fn after(&self, failures: u32) -> Duration {
        Backoff::new(self.first, self.max, Jitter::Around).after(failures)
    }
}

struct State<T> {
    current: Option<Arc<T>>,
    generation: u64,
    /// The current token got a 401 (or was expired on purpose).
    rejected: bool,
    /// Counts refresh attempts; waiters compare it to learn that a refresh
    /// ran (and failed) while they queued.
    attempts: u64,
    last_error: Option<TokenError>,
    failures_in_row: u32,
    cooldown_until: Option<Instant>,
    needs_person: Option<String>,
    blocked_credentials: Option<u64>,
    last: Option<RefreshRecord>,
    refreshes_ok: u64,
    refreshes_failed: u64,
}

/// Keeps one backend's token fresh: expiry window, single-flight refresh, 401 invalidation, cooldown, persistence.
pub struct TokenKeeper<S: TokenSource> {
    source: S,
    clock: Arc<dyn Clock>,
    window: Duration,
    cooldown: Cooldown,
    state: Mutex<State<S::Token>>,
    refresh_lock: tokio::sync::Mutex<()>,
    changed: Notify,
}

impl<S: TokenSource> TokenKeeper<S> {
    /// `window`: refresh when the token expires within this long.
    /// `initial`: a token restored from disk (or a legacy config), if any.
    pub(crate) fn new(
        source: S,
        clock: Arc<dyn Clock>,
        window: Duration,
        initial: Option<S::Token>,
    ) -> TokenKeeper<S> {
        TokenKeeper {
            source,
            clock,
            window,
            cooldown: Cooldown::default(),
            state: Mutex::new(State {
                current: initial.map(Arc::new),
                generation: 1,
                rejected: false,
                attempts: 0,
                last_error: None,
                failures_in_row: 0,
                cooldown_until: None,
                needs_person: None,
                blocked_credentials: None,
                last: None,
                refreshes_ok: 0,
                refreshes_failed: 0,
            }),
            refresh_lock: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
        }
    }

    pub(crate) fn source(&self) -> &S {
        &self.source
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> MutexGuard<'_, State<S::Token>> {
        // A panic while holding this lock cannot leave the state torn (every
        // update is a few assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn backend(&self) -> String {
        self.source.name().to_string()
    }

    /// True when a token expiring at `expires_at` is due for refresh now.
    pub(crate) fn is_expiring_soon(&self, expires_at: DateTime<Utc>) -> bool {
        expiring_within(expires_at, self.clock.now(), self.window)
    }

    /// When `tok` is due for refresh: `window` before its expiry, or half
    /// its lifetime before, whichever is later.
    fn refresh_due(&self, tok: &S::Token) -> DateTime<Utc> {
        let mut window = chrono::Duration::from_std(self.window).unwrap_or_default();
        if let Some(issued) = tok.issued_at() {
            let half_life = (tok.expires_at() - issued) / 2;
            if half_life > chrono::Duration::zero() && half_life < window {
                window = half_life;
            }
        }
        tok.expires_at() - window
    }

    /// A token that needs no refresh yet.
    fn fresh(&self, st: &State<S::Token>) -> Option<Lease<S::Token>> {
        let tok = st.current.as_ref()?;
        (!st.rejected && self.refresh_due(tok) > self.clock.now()).then(|| Lease {
            token: tok.clone(),
            generation: st.generation,
        })
    }

    /// A token that is still valid, if inside the refresh window.
    fn usable(&self, st: &State<S::Token>) -> Option<Lease<S::Token>> {
        let tok = st.current.as_ref()?;
        (!st.rejected && tok.expires_at() > self.clock.now()).then(|| Lease {
            token: tok.clone(),
            generation: st.generation,
        })
    }

    fn needs_person_error(&self, reason: &str) -> TokenError {
        TokenError::NeedsPerson {
            backend: self.backend(),
            reason: reason.to_string(),
        }
    }

    /// Leaves the "needs a person" state when the credentials changed.
    fn unblock_if_credentials_changed(&self, st: &mut State<S::Token>) {
        if st.needs_person.is_some() {
            let now = self.source.credentials_version();
            if now.is_some() && now != st.blocked_credentials {
                tracing::info!(backend = %self.backend(), "credentials changed; trying to sign in again");
                st.needs_person = None;
                st.blocked_credentials = None;
                st.cooldown_until = None;
                st.failures_in_row = 0;
            }
        }
    }

    /// A valid token, refreshing first if it expires within the window.
    pub async fn get(&self) -> Result<Lease<S::Token>, TokenError> {
        let seen = {
            let mut st = self.lock();
            self.unblock_if_credentials_changed(&mut st);
            if let Some(reason) = &st.needs_person {
                return Err(self.needs_person_error(reason));
            }
            if let Some(lease) = self.fresh(&st) {
                return Ok(lease);
            }
            st.attempts
        };
        let _guard = self.refresh_lock.lock().await;
        let reason = {
            let st = self.lock();
            if let Some(reason) = &st.needs_person {
                return Err(self.needs_person_error(reason));
            }
            if let Some(lease) = self.fresh(&st) {
                return Ok(lease);
            }
            if st.attempts != seen {
                // A refresh ran while we queued and did not give a fresh
                // token: share its outcome rather than trying again.
                if let Some(lease) = self.usable(&st) {
                    return Ok(lease);
                }
                if let Some(err) = &st.last_error {
                    return Err(err.clone());
                }
            }
            if let Some(until) = st.cooldown_until {
                let now = Instant::now();
                if now < until {
                    if let Some(lease) = self.usable(&st) {
                        return Ok(lease);
                    }
                    return Err(TokenError::Unavailable {
                        backend: self.backend(),
                        reason: st
                            .last_error
                            .as_ref()
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "recent sign-in failure".into()),
                        retry_after: Some(until - now),
                    });
                }
            }
            match &st.current {
                None => "no token yet",
                Some(_) if st.rejected => "token rejected by the backend",
                Some(t) if t.expires_at() <= self.clock.now() => "token expired",
                Some(_) => "token expires soon",
            }
        };
        self.refresh_locked(reason).await
    }

    /// Refreshes now, whatever the state (operator's "refresh now", the
    /// harness). Clears a "needs a person" block: the person is acting.
    pub(crate) async fn force_refresh(&self) -> Result<Lease<S::Token>, TokenError> {
        let _guard = self.refresh_lock.lock().await;
        {
            let mut st = self.lock();
            st.needs_person = None;
            st.cooldown_until = None;
        }
        self.refresh_locked("refresh requested").await
    }

    /// Must be called with `refresh_lock` held.
    async fn refresh_locked(&self, reason: &str) -> Result<Lease<S::Token>, TokenError> {
        let current = self.lock().current.clone();
        let outcome = self.source.fetch(current.as_deref()).await;
        let backend = self.backend();
        match outcome {
            Ok(token) => {
                // Persist before anyone can use it. A failure to persist is
                // logged loudly but the token is still used: it is the only
                // valid one we have (an OAuth refresh just rotated).
                if let Err(e) = self.source.persist(&token) {
                    tracing::error!(backend = %backend, error = %e, "could not persist the new token; it is used in memory only and a restart will need a new sign-in");
                }
                let expires_at = token.expires_at();
                let due = self.refresh_due(&token);
                let mut st = self.lock();
                st.current = Some(Arc::new(token));
                st.generation += 1;
                st.rejected = false;
                st.attempts += 1;
                st.last_error = None;
                st.failures_in_row = 0;
                st.cooldown_until = None;
                st.refreshes_ok += 1;
                st.last = Some(RefreshRecord {
                    at: self.clock.now(),
                    reason: reason.to_string(),
                    ok: true,
                    detail: format!("valid until {}", expires_at.to_rfc3339()),
                });
                tracing::info!(backend = %backend, reason, outcome = "ok", expires_at = %expires_at.to_rfc3339(), next_refresh = %due.to_rfc3339(), "token refreshed");
                let lease = Lease {
                    token: st.current.clone().expect("just set"),
                    generation: st.generation,
                };
                drop(st);
                self.changed.notify_waiters();
                Ok(lease)
            }
            Err(err) => {
                let mut st = self.lock();
                st.attempts += 1;
                st.failures_in_row += 1;
                st.refreshes_failed += 1;
                let (error, detail) = match err {
                    RefreshError::NeedsPerson(why) => {
                        tracing::error!(backend = %backend, reason, outcome = "needs a person", error = %why, "token refresh failed; not retrying until the credentials are fixed");
                        st.needs_person = Some(why.clone());
                        st.blocked_credentials = self.source.credentials_version();
                        (self.needs_person_error(&why), why)
                    }
                    RefreshError::Transient {
                        reason: why,
                        retry_after,
                    } => {
                        let wait = self
                            .cooldown
                            .after(st.failures_in_row)
                            .max(retry_after.unwrap_or_default());
                        st.cooldown_until = Some(Instant::now() + wait);
                        tracing::warn!(backend = %backend, reason, outcome = "failed", error = %why, retry_in_secs = wait.as_secs_f64(), "token refresh failed; will retry");
                        (
                            TokenError::Unavailable {
                                backend: backend.clone(),
                                reason: why.clone(),
                                retry_after: Some(wait),
                            },
                            why,
                        )
                    }
                };
                st.last_error = Some(error.clone());
                st.last = Some(RefreshRecord {
                    at: self.clock.now(),
                    reason: reason.to_string(),
                    ok: false,
                    detail,
                });
                let keep = match &error {
                    TokenError::Unavailable { .. } => self.usable(&st),
                    TokenError::NeedsPerson { .. } => None,
                };
                drop(st);
                self.changed.notify_waiters();
                match keep {
                    Some(lease) => {
                        tracing::warn!(backend = %backend, "keeping the current token, still valid until {}", lease.token.expires_at().to_rfc3339());
                        Ok(lease)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Reports that the backend answered 401 to `generation`'s token. Only
    /// that token is marked bad; a newer one is left alone.
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut st = self.lock();
        if st.generation == generation && st.current.is_some() && !st.rejected {
            st.rejected = true;
            tracing::info!(backend = %self.backend(), generation, "token rejected by the backend (401); it will be replaced");
        }
    }

    /// Starts in (or enters) "needs a person" without trying the backend:
    /// a state persisted by an earlier run (QuickBooks' "reconnect
    /// needed"), so a restart does not spend the dead grant again. Left
    /// when the source's credentials change, like any other.
    pub(crate) fn hold_for_person(&self, reason: &str) {
        let mut st = self.lock();
        st.needs_person = Some(reason.to_string());
        st.blocked_credentials = self.source.credentials_version();
    }

    /// The reason refreshing is held for a person, if it is.
    pub(crate) fn needs_person(&self) -> Option<String> {
        let mut st = self.lock();
        self.unblock_if_credentials_changed(&mut st);
        st.needs_person.clone()
    }

    /// Treats the current token as expired (the harness's simulated expiry).
    pub fn expire_locally(&self) {
        let mut st = self.lock();
        if st.current.is_some() {
            st.rejected = true;
        }
    }

    /// Forgets the current token (the status page's "Forget token").
    pub(crate) fn forget(&self) {
        let mut st = self.lock();
        st.current = None;
        st.generation += 1;
        st.rejected = false;
    }

    /// The token held now, whatever its state, without refreshing (for
    /// facts that came with it, like the Laravel vendor id).
    pub(crate) fn current(&self) -> Option<Arc<S::Token>> {
        self.lock().current.clone()
    }

    /// A snapshot for the status page and the metrics: token, expiry, refreshes, last outcome.
    pub fn status(&self) -> KeeperStatus {
        let st = self.lock();
        let tok = st.current.as_ref();
        KeeperStatus {
            backend: self.backend(),
            has_token: tok.is_some(),
            token_valid: self.usable(&st).is_some(),
            expires_at: tok.map(|t| t.expires_at()),
            refresh_due_at: tok.map(|t| self.refresh_due(t)),
            generation: st.generation,
            refreshes_ok: st.refreshes_ok,
            refreshes_failed: st.refreshes_failed,
            last_refresh: st.last.clone(),
            needs_person: st.needs_person.clone(),
        }
    }

    /// How long the background refresher may sleep before it must act.
    fn next_wake(&self) -> Duration {
        const MAX_SLEEP: Duration = Duration::from_secs(60);
        let mut st = self.lock();
        self.unblock_if_credentials_changed(&mut st);
        if st.needs_person.is_some() {
            // Only a person can fix it; look again now and then in case the
            // stored password was updated.
            return Duration::from_secs(30);
        }
        if let Some(until) = st.cooldown_until {
            let now = Instant::now();
            if now < until {
                return (until - now).min(MAX_SLEEP);
            }
        }
        let Some(tok) = st.current.as_ref().filter(|_| !st.rejected) else {
            return Duration::ZERO;
        };
        let due = self.refresh_due(tok);
        // Sleep in slices of at most a minute: a wall-clock jump (NTP, a
        // suspended till) is noticed within that.
        (due - self.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP)
    }

    /// Keeps the token fresh ahead of its expiry even when no request is
    /// flowing, until `shutdown` completes. Failures are retried after the
    /// keeper's cooldown, forever; a "needs a person" state just waits.
    pub(crate) async fn keep_fresh(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let wait = self.next_wake();
            if wait.is_zero() {
                let blocked = self.lock().needs_person.is_some();
                if !blocked {
                    // Errors are logged by the refresh itself.
                    let _ = self.get().await;
                }
                let still_due = self.next_wake().is_zero();
                if still_due {
                    // Should not happen (a failure sets a cooldown), but never spin.
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                continue;
            }
            let changed = self.changed.notified();
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
            }
        }
    }
}

/// The expiring-soon rule: due when `expires_at - window <= now`.
pub(crate) fn expiring_within(
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    window: Duration,
) -> bool {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    expires_at - window <= now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    struct Tok {
        value: SecretString,
        expires_at: DateTime<Utc>,
        issued_at: DateTime<Utc>,
    }
    impl TokenValue for Tok {
        fn bearer(&self) -> &SecretString {
            &self.value
        }
        fn expires_at(&self) -> DateTime<Utc> {
            self.expires_at
        }
        fn issued_at(&self) -> Option<DateTime<Utc>> {
            Some(self.issued_at)
        }
    }

    /// A scripted source: counts calls, fails as told, takes time.
    struct Fake {
        clock: Arc<TokioClock>,
        calls: AtomicU64,
        fail_next: AtomicU32,
        needs_person: std::sync::atomic::AtomicBool,
        persisted: AtomicU64,
        lifetime: chrono::Duration,
        creds: AtomicU64,
    }
    impl TokenSource for Fake {
        type Token = Tok;
        fn name(&self) -> &str {
            "fake"
        }
        async fn fetch(&self, _current: Option<&Tok>) -> Result<Tok, RefreshError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(120)).await;
            if self.needs_person.load(Ordering::SeqCst) {
                return Err(RefreshError::NeedsPerson("wrong password".into()));
            }
            if self.fail_next.load(Ordering::SeqCst) > 0 {
                self.fail_next.fetch_sub(1, Ordering::SeqCst);
                return Err(RefreshError::Transient {
                    reason: "503".into(),
                    retry_after: None,
                });
            }
            Ok(Tok {
                value: SecretString::from(format!("tok-{n}")),
                expires_at: self.clock.now() + self.lifetime,
                issued_at: self.clock.now(),
            })
        }
        fn persist(&self, _t: &Tok) -> Result<(), String> {
            self.persisted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn credentials_version(&self) -> Option<u64> {
            Some(self.creds.load(Ordering::SeqCst))
        }
    }

    fn keeper() -> Arc<TokenKeeper<Fake>> {
        keeper_with_lifetime(chrono::Duration::hours(24))
    }

    /// A keeper with a 30-minute window over a fake backend whose tokens
    /// live `lifetime`.
    fn keeper_with_lifetime(lifetime: chrono::Duration) -> Arc<TokenKeeper<Fake>> {
        let clock = Arc::new(TokioClock::new());
        let fake = Fake {
            clock: clock.clone(),
            calls: AtomicU64::new(0),
            fail_next: AtomicU32::new(0),
            needs_person: false.into(),
            persisted: AtomicU64::new(0),
            lifetime,
            creds: AtomicU64::new(1),
        };
        Arc::new(TokenKeeper::new(
            fake,
            clock,
            Duration::from_secs(30 * 60),
            None,
        ))
    }

    use secrecy::ExposeSecret;

    #[tokio::test(start_paused = true)]
    async fn many_waiters_one_refresh() {
        let k = keeper();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let k = k.clone();
            tasks.push(tokio::spawn(async move {
                k.get()
                    .await
                    .unwrap()
                    .token
                    .value
                    .expose_secret()
                    .to_string()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), "tok-1");
        }
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 1);
        assert_eq!(k.source().persisted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_inside_the_window_not_before() {
        let k = keeper();
        k.get().await.unwrap();
        // 23h29m later: 31 minutes left, no refresh.
        tokio::time::advance(Duration::from_secs(23 * 3600 + 29 * 60)).await;
        k.get().await.unwrap();
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 1);
        // Two more minutes: 29 minutes left, refresh.
        tokio::time::advance(Duration::from_secs(120)).await;
        let lease = k.get().await.unwrap();
        assert_eq!(lease.token.value.expose_secret(), "tok-2");
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_only_hits_the_generation_sent() {
        let k = keeper();
        let old = k.get().await.unwrap();
        k.invalidate(old.generation);
        let new = k.get().await.unwrap();
        assert_ne!(new.generation, old.generation);
        // A late 401 for the old token must not discard the new one.
        k.invalidate(old.generation);
        let again = k.get().await.unwrap();
        assert_eq!(again.generation, new.generation);
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failure_keeps_valid_token_and_cools_down() {
        let k = keeper();
        k.get().await.unwrap();
        // Into the window, with the backend failing.
        tokio::time::advance(Duration::from_secs(23 * 3600 + 45 * 60)).await;
        k.source().fail_next.store(5, Ordering::SeqCst);
        let kept = k.get().await.unwrap();
        assert_eq!(kept.token.value.expose_secret(), "tok-1");
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 2);
        // Within the cooldown no new attempt is made.
        k.get().await.unwrap();
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 2);
        // Past expiry with no valid token: an error naming the cause.
        tokio::time::advance(Duration::from_secs(20 * 60)).await;
        let mut saw_error = false;
        for _ in 0..10 {
            match k.get().await {
                Ok(l) => {
                    assert_eq!(l.token.value.expose_secret(), "tok-7");
                    break;
                }
                Err(TokenError::Unavailable { retry_after, .. }) => {
                    saw_error = true;
                    tokio::time::advance(retry_after.unwrap()).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(saw_error);
        assert_eq!(k.status().refreshes_failed, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn needs_person_stops_until_credentials_change() {
        let k = keeper();
        k.source().needs_person.store(true, Ordering::SeqCst);
        let err = k.get().await.err().unwrap();
        assert!(matches!(err, TokenError::NeedsPerson { .. }), "{err}");
        for _ in 0..5 {
            assert!(k.get().await.is_err());
        }
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 1);
        // The person fixes the password.
        k.source().needs_person.store(false, Ordering::SeqCst);
        k.source().creds.store(2, Ordering::SeqCst);
        k.get().await.unwrap();
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn background_refresh_ahead_of_expiry_when_idle() {
        let k = keeper();
        k.get().await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let bg = {
            let k = k.clone();
            tokio::spawn(async move {
                k.keep_fresh(async {
                    let _ = stop_rx.await;
                })
                .await
            })
        };
        // Three days of idling: a refresh each ~23.5 hours, never expired.
        for _ in 0..(3 * 24 * 6) {
            tokio::time::advance(Duration::from_secs(600)).await;
            tokio::task::yield_now().await;
            let st = k.status();
            assert!(st.token_valid, "token lapsed while idle: {st:?}");
        }
        let calls = k.source().calls.load(Ordering::SeqCst);
        assert!((4..=5).contains(&calls), "calls {calls}");
        stop_tx.send(()).unwrap();
        bg.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_tokens_are_not_refreshed_on_every_call() {
        // The backend says 10 minutes; the window is 30.
        let k = keeper_with_lifetime(chrono::Duration::minutes(10));
        for _ in 0..20 {
            k.get().await.unwrap();
        }
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 1);
        // Half its life later it is refreshed.
        tokio::time::advance(Duration::from_secs(5 * 60 + 1)).await;
        k.get().await.unwrap();
        assert_eq!(k.source().calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn expiring_soon_rule() {
        let now = Utc::now();
        let w = Duration::from_secs(30 * 60);
        assert!(expiring_within(now + chrono::Duration::minutes(20), now, w));
        assert!(!expiring_within(
            now + chrono::Duration::minutes(40),
            now,
            w
        ));
    }
}
