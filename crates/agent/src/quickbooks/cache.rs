//! The local copy of the connected QuickBooks company's customers,
//! vendors, items and invoices: searched on the till without a round trip
//! (see [`super::search`]), and read by the push before it asks QuickBooks
//! (fewer requests against the company's 500 a minute, fewer 429s).
//!
//! # Keeping it fresh
//! * **Full load** when the copy is empty, belongs to another company
//!   (realm), is older than change data capture reaches (30 days), or when
//!   asked (after a reconnect): every entity read in pages of 1,000
//!   (`SELECT * FROM Customer WHERE Active IN (true, false) ORDERBY Id
//!   STARTPOSITION n MAXRESULTS 1000`, inactive ones included, until a
//!   short page), staged, and swapped in one transaction at the end, so a
//!   load that fails half way leaves the previous copy whole.
//! * **Incremental** otherwise, every `every`: one `cdc` request for the
//!   four entities with `changedSince` = the start of the last successful
//!   refresh minus [`CDC_OVERLAP`] (clocks differ; seeing a change twice is
//!   harmless because the newer SyncToken wins), upserts and deletions
//!   applied in one transaction. Intuit caps a `cdc` answer at 1,000
//!   objects for all entities together, so a full answer is not trusted:
//!   each entity is asked alone, and one that still fills an answer is
//!   reloaded in full. A `cdc` that QuickBooks refuses (a clock far off)
//!   falls back to a full load.
//!
//! [`QboCache::refresh`] is single-flight: a caller arriving while a
//! refresh runs waits for it and gets its result; the refresh itself runs
//! as its own task, so a caller that gives up does not cut it short.
//! [`QboCache::run`] schedules them, waits quietly while QuickBooks needs
//! reconnecting, and retries failures with a capped, jittered backoff.
//!
//! The database work runs on the outbox's thread (one short transaction
//! per page of a load); building the search indexes runs on the blocking
//! pool; the indexes are swapped whole, so a search never waits for a
//! refresh.

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::client::QboClient;
use super::error::QboError;
use super::model::{CdcChanges, Entity, Query, QUERY_MAX_RESULTS};
use super::search::{Base, IndexStatus, SearchAnswer, SearchError, Snapshot, INDEXED};
use crate::clock::Clock;
use crate::store::{CacheKind, CacheRow, CacheState, CacheSynced, OutboxHandle, StoreError};
use crate::token::TokenError;

/// How far back change data capture reaches (Intuit: 30 days).
pub(crate) const CDC_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// Not used within this much of the window's edge: the request must still
/// be inside it when it reaches Intuit.
const CDC_MARGIN: Duration = Duration::from_secs(3600);
/// `changedSince` goes back this much further than the last refresh's
/// start, for the difference between the till's clock and Intuit's.
pub(crate) const CDC_OVERLAP: Duration = Duration::from_secs(300);
/// Objects in one `cdc` answer at most (all entities together).
pub(crate) const CDC_MAX_OBJECTS: usize = 1000;
/// A load stops after this many full pages of one entity (10 million
/// rows): a server that never sends a short page must not fill the disk.
const MAX_PAGES: u32 = 10_000;
/// While QuickBooks needs reconnecting, the connection is looked at this
/// often (a reconnect also wakes the loop through `request_full`).
const RECONNECT_POLL: Duration = Duration::from_secs(30);
/// Failed refreshes are retried from 30 s up to 15 min, +-20% (a fleet of
/// tills must not retry in step).
const BACKOFF: Backoff = Backoff::new(
    Duration::from_secs(30),
    Duration::from_secs(900),
    Jitter::Around,
);
/// Changes the push taught the indexes before they are rebuilt from the
/// database (searches scan these linearly).
const OVERLAY_MAX: usize = 500;
/// Rows `data` answers at most.
pub(crate) const DATA_MAX: usize = 1000;

/// Why a cache refresh or read failed.
#[derive(Debug, Clone, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum CacheError {
    /// QuickBooks is not connected, or the connection needs a person.
    #[error("{reason}; the QuickBooks cache keeps its last copy and catches up once QuickBooks is connected again")]
    NotConnected { reason: String },
    /// QuickBooks refused, failed or was not reached (see the inner error:
    /// auth, throttled, server, transport, parse...).
    #[error("refreshing the QuickBooks cache failed: {0}")]
    Qbo(#[from] QboError),
    #[error("the QuickBooks cache could not be read or saved: {0}")]
    Store(#[source] Arc<StoreError>),
    #[error("unknown entity \"{entity}\": use customers, vendors, items or invoices")]
    UnknownEntity { entity: String },
    #[error("QuickBooks kept sending full pages of {entity} past {rows} rows; the load was stopped (check the company in QuickBooks; the previous copy is kept)")]
    TooLarge { entity: String, rows: u64 },
    #[error("the QuickBooks cache refresh stopped unexpectedly ({0}); it is tried again later")]
    Interrupted(String),
}

impl From<StoreError> for CacheError {
    fn from(e: StoreError) -> Self {
        CacheError::Store(Arc::new(e))
    }
}

impl CacheError {
    /// A person must reconnect QuickBooks before a refresh can work.
    pub fn needs_person(&self) -> bool {
        matches!(self, CacheError::NotConnected { .. })
    }

    /// A short stable name for logs and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CacheError::NotConnected { .. } => "not_connected",
            CacheError::Qbo(e) => e.kind(),
            CacheError::Store(_) => "store",
            CacheError::UnknownEntity { .. } => "unknown_entity",
            CacheError::TooLarge { .. } => "too_large",
            CacheError::Interrupted(_) => "interrupted",
        }
    }

    fn from_qbo(e: QboError) -> CacheError {
        match e {
            QboError::SignIn {
                needs_person: true,
                message,
                ..
            } => CacheError::NotConnected { reason: message },
            e => CacheError::Qbo(e),
        }
    }
}

/// What kind of refresh ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs, reason = "the variant names say what they are")]
pub enum RefreshKind {
    Full,
    Incremental,
}

/// What a refresh did to one entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct EntityRefresh {
    /// Reloaded whole.
    pub full: bool,
    /// Entities read from QuickBooks (rows of a load, entries of a `cdc`).
    pub(crate) read: u64,
    /// Rows written by a change set (a newer version or a new entity).
    pub upserted: u64,
    pub deleted: u64,
    /// Rows held afterwards.
    pub rows: u64,
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct RefreshReport {
    pub kind: RefreshKind,
    /// Why this kind of refresh ("the cache is empty", "changes since ...").
    pub reason: String,
    pub realm: String,
    pub(crate) started_at: String,
    pub(crate) finished_at: String,
    pub(crate) duration_ms: u64,
    /// QuickBooks API requests made (query pages and `cdc` calls).
    pub requests: u32,
    pub customers: EntityRefresh,
    pub vendors: EntityRefresh,
    pub items: EntityRefresh,
    pub invoices: EntityRefresh,
}

impl RefreshReport {
    fn entity_mut(&mut self, kind: CacheKind) -> &mut EntityRefresh {
        match kind {
            CacheKind::Customer => &mut self.customers,
            CacheKind::Vendor => &mut self.vendors,
            CacheKind::Item => &mut self.items,
            CacheKind::Invoice => &mut self.invoices,
        }
    }

    /// One entity's part of the report.
    pub(crate) fn entity(&self, kind: CacheKind) -> &EntityRefresh {
        match kind {
            CacheKind::Customer => &self.customers,
            CacheKind::Vendor => &self.vendors,
            CacheKind::Item => &self.items,
            CacheKind::Invoice => &self.invoices,
        }
    }
}

/// Rows held per entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct CacheCounts {
    pub customers: u64,
    pub(crate) vendors: u64,
    pub(crate) items: u64,
    pub(crate) invoices: u64,
}

/// The cache at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct CacheStatus {
    /// The company the copy belongs to.
    pub realm: Option<String>,
    pub counts: CacheCounts,
    pub last_full_at: Option<String>,
    pub last_incremental_at: Option<String>,
    /// Since the last successful refresh (either kind).
    pub age_seconds: Option<u64>,
    pub refreshing: bool,
    /// Why the last refresh failed; cleared by the next success.
    pub last_error: Option<String>,
    pub(crate) last_attempt_at: Option<String>,
    /// When `run` refreshes next (not set while it is not running, or
    /// while QuickBooks needs reconnecting).
    pub next_refresh_at: Option<String>,
    /// Set while refreshes wait for QuickBooks to be reconnected: why.
    pub reconnect_needed: Option<String>,
    pub(crate) refresh_every_seconds: u64,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn entity_of(kind: CacheKind) -> Entity {
    match kind {
        CacheKind::Customer => Entity::Customer,
        CacheKind::Vendor => Entity::Vendor,
        CacheKind::Item => Entity::Item,
        CacheKind::Invoice => Entity::Invoice,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Shared = Option<Result<RefreshReport, CacheError>>;

/// The refresh running now, for callers who join it.
struct Flight {
    full: bool,
    done: watch::Receiver<Shared>,
}

/// What `status` and `age` answer without the database.
#[derive(Default)]
struct Mem {
    realm: Option<String>,
    last_success_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    next_refresh_at: Option<DateTime<Utc>>,
    reconnect_needed: Option<String>,
}

struct Inner {
    outbox: OutboxHandle,
    client: QboClient,
    every: Duration,
    clock: Arc<dyn Clock>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serialises the snapshot's writers (never held across an await).
    writer: Mutex<()>,
    /// Numbers the push's changes, so a rebuild keeps those it may have
    /// missed (see `Snapshot::with_base`).
    seq: AtomicU64,
    flight: Mutex<Option<Flight>>,
    wake: Notify,
    full_requested: AtomicBool,
    compacting: AtomicBool,
    mem: Mutex<Mem>,
}

/// The cache: cheap to clone (one shared state).
#[derive(Clone)]
pub struct QboCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for QboCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QboCache")
            .field("every", &self.inner.every)
            .finish_non_exhaustive()
    }
}

/// Clears the running flight when its task ends, even by a panic, so the
/// next caller starts a new refresh instead of joining a dead one.
struct Landing(Arc<Inner>);

impl Drop for Landing {
    fn drop(&mut self) {
        *lock(&self.0.flight) = None;
    }
}

impl QboCache {
    /// Opens the saved cache and builds the in-memory search indexes from it.
    pub async fn open(
        outbox: OutboxHandle,
        client: QboClient,
        every: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<QboCache, StoreError> {
        let mut state = outbox.call(|o| o.qbo_cache_state()).await?;
        // A copy of another company must never be searched or used by the
        // push, not even until the first refresh.
        let connected = client.keeper().current().map(|t| t.realm_id.clone());
        if let (Some(held), Some(now)) = (&state.realm, &connected) {
            if held != now {
                tracing::info!(backend = "quickbooks", held = %held, connected = %now, "the QuickBooks cache holds another company; wiped, it reloads at the next refresh");
                let now = now.clone();
                outbox.call(move |o| o.qbo_cache_wipe(Some(&now))).await?;
                state = outbox.call(|o| o.qbo_cache_state()).await?;
            }
        }
        let cache = QboCache {
            inner: Arc::new(Inner {
                outbox,
                client,
                every,
                snapshot: RwLock::new(Arc::new(Snapshot::empty(clock.now()))),
                clock,
                writer: Mutex::new(()),
                seq: AtomicU64::new(0),
                flight: Mutex::new(None),
                wake: Notify::new(),
                full_requested: AtomicBool::new(false),
                compacting: AtomicBool::new(false),
                mem: Mutex::new(Mem {
                    realm: state.realm.clone(),
                    last_success_at: state.last_success_at(),
                    last_error: state.last_error.clone(),
                    ..Mem::default()
                }),
            }),
        };
        cache.rebuild(&INDEXED).await?;
        Ok(cache)
    }

    /// Background loop until `stopped`: a full load when the cache is empty, for another realm, or too old for cdc; then cdc every `every`. While QuickBooks needs reconnecting (the client's keeper `needs_person()`), it waits quietly (one log line) and resumes by itself. Failures are logged with the reason and retried with backoff; never panics.
    pub async fn run(&self, stopped: impl Future<Output = ()>) {
        let me = &self.inner;
        tokio::pin!(stopped);
        tracing::info!(
            backend = "quickbooks",
            every_minutes = me.every.as_secs_f64() / 60.0,
            "QuickBooks cache started"
        );
        let mut failures: u32 = 0;
        let mut retry_at: Option<Instant> = None;
        let mut held = false;
        loop {
            if let Some(why) = me.client.keeper().needs_person() {
                if !held {
                    tracing::warn!(backend = "quickbooks", reason = %why, "the QuickBooks cache waits until QuickBooks is reconnected (`pos-connector qbo connect`); searches use the copy it has");
                    held = true;
                }
                {
                    let mut m = lock(&me.mem);
                    m.reconnect_needed = Some(why);
                    m.next_refresh_at = None;
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = me.wake.notified() => {}
                    _ = tokio::time::sleep(RECONNECT_POLL.min(me.every)) => {}
                }
                continue;
            }
            if held {
                held = false;
                (failures, retry_at) = (0, None);
                lock(&me.mem).reconnect_needed = None;
                tracing::info!(
                    backend = "quickbooks",
                    "QuickBooks is connected again; the cache catches up"
                );
            }
            if retry_at.is_some() && lock(&me.mem).last_error.is_none() {
                // Another caller's refresh succeeded meanwhile.
                (failures, retry_at) = (0, None);
            }
            let due = if me.full_requested.load(Ordering::SeqCst) {
                Instant::now()
            } else {
                retry_at.unwrap_or_else(|| self.next_due())
            };
            let wait = due.saturating_duration_since(Instant::now());
            lock(&me.mem).next_refresh_at =
                Some(me.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default());
            if !wait.is_zero() {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = me.wake.notified() => continue,
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
            let full = me.full_requested.swap(false, Ordering::SeqCst);
            match self.refresh(full).await {
                Ok(_) => (failures, retry_at) = (0, None),
                Err(e) => {
                    if full {
                        me.full_requested.store(true, Ordering::SeqCst);
                    }
                    // The keeper holds for a person: wait above, quietly.
                    if e.needs_person() && me.client.keeper().needs_person().is_some() {
                        continue;
                    }
                    failures += 1;
                    let mut wait = BACKOFF.after(failures);
                    if let Some(until) = me.client.limiter().paused_until() {
                        wait = wait.max(until.saturating_duration_since(Instant::now()));
                    }
                    retry_at = Some(Instant::now() + wait);
                    tracing::warn!(backend = "quickbooks", error = %e, kind = e.kind(), attempt = failures, retry_in_secs = wait.as_secs(), "QuickBooks cache refresh failed; it is retried");
                }
            }
        }
        lock(&me.mem).next_refresh_at = None;
        tracing::info!(backend = "quickbooks", "QuickBooks cache stopped");
    }

    /// After a (re)connect: wake `run` to do a full load now.
    pub fn request_full(&self) {
        self.inner.full_requested.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Refreshes now (single-flight: a concurrent caller waits for the running refresh and gets its result). `full` forces a full load; otherwise incremental (or full if needed).
    pub async fn refresh(&self, full: bool) -> Result<RefreshReport, CacheError> {
        loop {
            let (mut done, joined) = {
                let mut flight = lock(&self.inner.flight);
                match flight.as_ref() {
                    // A full load answers an incremental request too; an
                    // incremental one does not answer a full request.
                    Some(f) => (f.done.clone(), f.full || !full),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        *flight = Some(Flight {
                            full,
                            done: rx.clone(),
                        });
                        let me = self.clone();
                        tokio::spawn(async move {
                            let landing = Landing(me.inner.clone());
                            let result = me.refresh_now(full).await;
                            // Landed before the news: a waiter that wants
                            // another kind of refresh starts a new one.
                            drop(landing);
                            let _ = tx.send(Some(result));
                        });
                        (rx, true)
                    }
                }
            };
            let result = match done.wait_for(Option::is_some).await {
                Ok(r) => r.clone().expect("waited for Some"),
                Err(_) => Err(CacheError::Interrupted(
                    "the refresh task ended without an answer".into(),
                )),
            };
            if joined {
                return result;
            }
        }
    }

    /// `index`: client_names (customer DisplayName, CompanyName and email), vendor_names, product_names (item Name and Sku), product_descriptions, part_numbers (Sku), part_names (alias of product_names). `limit`: default 15, clamped to 1..=100.
    ///
    /// An empty (or all-space) `q` matches nothing (`total` 0). Ranking and
    /// folding are described in [`super::search`].
    pub fn search(
        &self,
        index: &str,
        q: &str,
        limit: Option<usize>,
    ) -> Result<SearchAnswer, SearchError> {
        self.snapshot().search(index, q, limit)
    }

    /// What the cache holds: counts per entity, the last full and incremental refreshes, whether one runs now.
    pub async fn status(&self) -> Result<CacheStatus, CacheError> {
        let (state, counts) = self
            .inner
            .outbox
            .call(|o| Ok((o.qbo_cache_state()?, o.qbo_cache_counts()?)))
            .await?;
        let count = |k| counts.get(&k).copied().unwrap_or(0);
        let m = lock(&self.inner.mem);
        Ok(CacheStatus {
            realm: state.realm.clone(),
            counts: CacheCounts {
                customers: count(CacheKind::Customer),
                vendors: count(CacheKind::Vendor),
                items: count(CacheKind::Item),
                invoices: count(CacheKind::Invoice),
            },
            last_full_at: state.last_full_at.map(rfc3339),
            last_incremental_at: state.last_incremental_at.map(rfc3339),
            age_seconds: self.age_at(state.last_success_at()).map(|d| d.as_secs()),
            refreshing: lock(&self.inner.flight).is_some(),
            last_error: state.last_error.clone(),
            last_attempt_at: state.last_attempt_at.map(rfc3339),
            next_refresh_at: m.next_refresh_at.map(rfc3339),
            reconnect_needed: m.reconnect_needed.clone(),
            refresh_every_seconds: self.inner.every.as_secs(),
        })
    }

    /// The in-memory search indexes and their sizes.
    pub fn indexes_status(&self) -> Vec<IndexStatus> {
        self.snapshot().status()
    }

    /// entity: customers | vendors | items | invoices (unknown -> error naming the four); rows as JSON, newest change first.
    ///
    /// Each row is the entity as QuickBooks sent it; `limit` is clamped to
    /// 1..=[`DATA_MAX`].
    pub async fn data(&self, entity: &str, limit: usize) -> Result<Vec<Value>, CacheError> {
        let kind = CacheKind::from_plural(&entity.trim().to_lowercase()).ok_or_else(|| {
            CacheError::UnknownEntity {
                entity: entity.to_string(),
            }
        })?;
        let limit = limit.clamp(1, DATA_MAX);
        let raw = self
            .inner
            .outbox
            .call(move |o| o.qbo_cache_raw(kind, limit))
            .await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// Time since the last successful refresh, if any.
    pub fn age(&self) -> Option<Duration> {
        self.age_at(lock(&self.inner.mem).last_success_at)
    }

    fn age_at(&self, at: Option<DateTime<Utc>>) -> Option<Duration> {
        at.map(|t| (self.inner.clock.now() - t).to_std().unwrap_or_default())
    }

    // ------------------------------------------------------------ the push

    /// The active customer whose DisplayName is `name` (case-insensitive),
    /// if the cache holds one for the connected company.
    pub fn find_customer(&self, name: &str) -> Option<String> {
        self.for_this_company()?
            .find_by_name(CacheKind::Customer, name)
            .filter(|f| f.active)
            .map(|f| f.id)
    }

    /// The active item named `name`, else the active one with SKU `sku`
    /// (both case-insensitive), as the push looks items up.
    pub fn find_item(&self, name: &str, sku: Option<&str>) -> Option<String> {
        let snap = self.for_this_company()?;
        snap.find_by_name(CacheKind::Item, name)
            .filter(|f| f.active)
            .or_else(|| {
                sku.filter(|s| !s.trim().is_empty())
                    .and_then(|s| snap.find_by_sku(s))
                    .filter(|f| f.active)
            })
            .map(|f| f.id)
    }

    /// Keeps an entity the push found or created (its JSON as QuickBooks
    /// answered), in the database and the indexes at once. Never fails the
    /// push: a problem is logged.
    pub(crate) async fn remember(&self, kind: CacheKind, entity: &Value) {
        if self.for_this_company().is_none() {
            return;
        }
        let Some(row) = to_row(kind, entity.clone()) else {
            return;
        };
        let stored = row.clone();
        match self
            .inner
            .outbox
            .call(move |o| o.qbo_cache_put(&stored))
            .await
        {
            Ok(true) => self.learn(|s, seq| s.with_upsert(row, seq), kind),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(backend = "quickbooks", error = %e, "cannot keep a QuickBooks entity in the cache; the next refresh brings it")
            }
        }
    }

    /// Drops an entity QuickBooks no longer accepts as a reference.
    pub(crate) async fn forget(&self, kind: CacheKind, id: &str) {
        let owned = id.to_string();
        if let Err(e) = self
            .inner
            .outbox
            .call(move |o| o.qbo_cache_delete(kind, &owned))
            .await
        {
            tracing::warn!(backend = "quickbooks", error = %e, "cannot drop a stale QuickBooks entity from the cache");
        }
        self.learn(|s, seq| s.with_removal(kind, id, seq), kind);
    }

    /// The indexes, when they belong to the company connected now.
    fn for_this_company(&self) -> Option<Arc<Snapshot>> {
        let connected = self.inner.client.keeper().current()?;
        let held = lock(&self.inner.mem).realm.clone()?;
        (held == connected.realm_id).then(|| self.snapshot())
    }

    /// Applies changes to the indexes (after the database has them), and
    /// rebuilds when such changes pile up.
    fn learn(&self, change: impl FnOnce(&Snapshot, u64) -> Snapshot, kind: CacheKind) {
        let pending = {
            let _w = lock(&self.inner.writer);
            let seq = self.inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let next = change(&self.snapshot(), seq);
            let pending = next.pending(kind);
            *self
                .inner
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
            pending
        };
        if pending > OVERLAY_MAX && !self.inner.compacting.swap(true, Ordering::SeqCst) {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.rebuild(&[kind]).await {
                    tracing::warn!(backend = "quickbooks", error = %e, "cannot rebuild a QuickBooks search index");
                }
                me.inner.compacting.store(false, Ordering::SeqCst);
            });
        }
    }

    // ------------------------------------------------------------ internals

    fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rebuilds the indexes of `kinds` from the database.
    async fn rebuild(&self, kinds: &[CacheKind]) -> Result<(), StoreError> {
        for &kind in kinds.iter().filter(|k| INDEXED.contains(k)) {
            let seq = self.inner.seq.load(Ordering::SeqCst);
            let rows = self
                .inner
                .outbox
                .call(move |o| o.qbo_cache_rows(kind))
                .await?;
            let now = self.inner.clock.now();
            let base = match tokio::task::spawn_blocking(move || Base::build(kind, rows, now)).await
            {
                Ok(b) => b,
                Err(e) => {
                    // Keep the indexes there are rather than none.
                    tracing::error!(backend = "quickbooks", error = %e, entity = kind.plural(), "building a search index failed; the previous one is kept");
                    continue;
                }
            };
            let _w = lock(&self.inner.writer);
            let next = self.snapshot().with_base(base, seq);
            *self
                .inner
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        }
        Ok(())
    }

    /// When `run` refreshes next without news: `every` after the last
    /// success; at once when there is none or it is for another company.
    fn next_due(&self) -> Instant {
        let m = lock(&self.inner.mem);
        let connected = self
            .inner
            .client
            .keeper()
            .current()
            .map(|t| t.realm_id.clone());
        match m.last_success_at {
            Some(at) if connected.is_none() || connected == m.realm => {
                let due = at + chrono::Duration::from_std(self.inner.every).unwrap_or_default();
                let wait = (due - self.inner.clock.now()).to_std().unwrap_or_default();
                Instant::now() + wait
            }
            _ => Instant::now(),
        }
    }

    /// One refresh, with its logging and bookkeeping.
    async fn refresh_now(&self, force_full: bool) -> Result<RefreshReport, CacheError> {
        let me = &self.inner;
        let started = me.clock.now();
        let t0 = std::time::Instant::now();
        let result = self.refresh_inner(force_full, started).await;
        let finished = me.clock.now();
        match result {
            Ok(mut report) => {
                report.finished_at = rfc3339(finished);
                report.duration_ms = t0.elapsed().as_millis() as u64;
                {
                    let mut m = lock(&me.mem);
                    m.realm = Some(report.realm.clone());
                    m.last_success_at = Some(finished);
                    m.last_error = None;
                }
                tracing::info!(
                    backend = "quickbooks",
                    kind = ?report.kind,
                    reason = %report.reason,
                    customers = report.customers.rows,
                    vendors = report.vendors.rows,
                    items = report.items.rows,
                    invoices = report.invoices.rows,
                    requests = report.requests,
                    duration_ms = report.duration_ms,
                    "QuickBooks cache refreshed"
                );
                // `run` looks at its schedule again.
                me.wake.notify_one();
                Ok(report)
            }
            Err(e) => {
                let text = e.to_string();
                lock(&me.mem).last_error = Some(text.clone());
                if !e.needs_person() {
                    tracing::warn!(backend = "quickbooks", kind = e.kind(), error = %e, "QuickBooks cache refresh failed; the previous copy is kept");
                }
                if let Err(se) = me
                    .outbox
                    .call(move |o| o.qbo_cache_failed(finished, &text))
                    .await
                {
                    tracing::warn!(backend = "quickbooks", error = %se, "cannot record the cache refresh failure");
                }
                Err(e)
            }
        }
    }

    async fn refresh_inner(
        &self,
        force_full: bool,
        started: DateTime<Utc>,
    ) -> Result<RefreshReport, CacheError> {
        let realm = self.realm().await?;
        let report = self.refresh_for(&realm, force_full, started).await?;
        // The connection can change under a refresh: after a reconnect to
        // another company (by `qbo connect` in another process), the token
        // held here is refused, and the keeper re-reads the stored
        // connection and replays for the new company. What was read may
        // then be of either: start over for the one connected now, once
        // (its state says the other realm, so this is a wipe and a full
        // load).
        let now = self.inner.client.keeper().current();
        match now.filter(|t| t.realm_id != realm) {
            Some(token) => {
                let mut again = self
                    .refresh_for(&token.realm_id, true, self.inner.clock.now())
                    .await?;
                again.requests += report.requests;
                again.started_at = report.started_at;
                Ok(again)
            }
            None => Ok(report),
        }
    }

    /// One refresh of `realm`'s copy: full or incremental, as needed.
    async fn refresh_for(
        &self,
        realm: &str,
        force_full: bool,
        started: DateTime<Utc>,
    ) -> Result<RefreshReport, CacheError> {
        let me = &self.inner;
        let realm = realm.to_string();
        let state = me.outbox.call(|o| o.qbo_cache_state()).await?;
        let mut report = RefreshReport {
            kind: RefreshKind::Full,
            reason: String::new(),
            realm: realm.clone(),
            started_at: rfc3339(started),
            finished_at: String::new(),
            duration_ms: 0,
            requests: 0,
            customers: EntityRefresh::default(),
            vendors: EntityRefresh::default(),
            items: EntityRefresh::default(),
            invoices: EntityRefresh::default(),
        };
        if let Some(held) = state.realm.as_deref().filter(|r| *r != realm) {
            report.reason = format!(
                "the cache held another company ({held}); QuickBooks is now connected to {realm}"
            );
            self.wipe(&realm).await?;
        } else if force_full {
            report.reason = "a full load was asked for".into();
        } else if let Some(since) = cdc_since(&state, started) {
            report.kind = RefreshKind::Incremental;
            report.reason = format!("changes since {}", rfc3339(since));
            self.incremental(&realm, since, started, &mut report)
                .await?;
            return Ok(report);
        } else if state.synced_from.is_none() {
            report.reason = "the cache is empty".into();
        } else {
            report.reason = format!(
                "the last refresh is older than the {} days change data capture reaches",
                CDC_WINDOW.as_secs() / 86_400
            );
        }
        self.full_load(&CacheKind::ALL, &realm, started, &mut report, true)
            .await?;
        Ok(report)
    }

    /// The company the connection is for (refreshing the token if needed).
    async fn realm(&self) -> Result<String, CacheError> {
        match self.inner.client.keeper().get().await {
            Ok(lease) => Ok(lease.token.realm_id.clone()),
            Err(TokenError::NeedsPerson { reason, .. }) => Err(CacheError::NotConnected { reason }),
            Err(e) => Err(CacheError::Qbo(QboError::SignIn {
                message: e.to_string(),
                needs_person: false,
                retry_after: e.retry_after(),
            })),
        }
    }

    /// Forgets another company's copy, at once and everywhere.
    async fn wipe(&self, realm: &str) -> Result<(), CacheError> {
        let owned = realm.to_string();
        self.inner
            .outbox
            .call(move |o| o.qbo_cache_wipe(Some(&owned)))
            .await?;
        {
            let _w = lock(&self.inner.writer);
            *self
                .inner
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner) =
                Arc::new(Snapshot::empty(self.inner.clock.now()));
            let mut m = lock(&self.inner.mem);
            m.realm = Some(realm.to_string());
            m.last_success_at = None;
        }
        Ok(())
    }

    /// Reads `kinds` whole, page after page, into the staging table, then
    /// swaps them in (with the refresh's state when `record` is set).
    async fn full_load(
        &self,
        kinds: &[CacheKind],
        realm: &str,
        started: DateTime<Utc>,
        report: &mut RefreshReport,
        record: bool,
    ) -> Result<(), CacheError> {
        let me = &self.inner;
        let staged = kinds.to_vec();
        me.outbox
            .call(move |o| o.qbo_cache_stage_begin(&staged))
            .await?;
        for &kind in kinds {
            let entity = entity_of(kind);
            let mut start = 1u32;
            let mut pages = 0u32;
            loop {
                let mut q = Query::select(entity);
                if kind != CacheKind::Invoice {
                    // Without it QuickBooks answers active ones only.
                    q = q.where_bool_in_active_both();
                }
                // A stable order keeps pages from shifting under entities
                // created during the load (they come last).
                let q = q.order_by("Id").start(start).max(QUERY_MAX_RESULTS).build();
                let page = me
                    .client
                    .query::<Value>(entity, &q)
                    .await
                    .map_err(CacheError::from_qbo)?;
                report.requests += 1;
                let n = page.items.len();
                report.entity_mut(kind).read += n as u64;
                let rows: Vec<CacheRow> = page
                    .items
                    .into_iter()
                    .filter_map(|v| to_row(kind, v))
                    .collect();
                if !rows.is_empty() {
                    me.outbox.call(move |o| o.qbo_cache_stage(&rows)).await?;
                }
                if n < QUERY_MAX_RESULTS as usize {
                    break;
                }
                pages += 1;
                if pages >= MAX_PAGES {
                    return Err(CacheError::TooLarge {
                        entity: kind.plural().into(),
                        rows: report.entity(kind).read,
                    });
                }
                start += QUERY_MAX_RESULTS;
            }
        }
        let synced = record.then(|| CacheSynced {
            realm: realm.to_string(),
            started_at: started,
            finished_at: me.clock.now(),
            full: true,
        });
        let swapped = kinds.to_vec();
        let counts = me
            .outbox
            .call(move |o| o.qbo_cache_swap(&swapped, synced.as_ref()))
            .await?;
        for (kind, rows) in counts {
            let e = report.entity_mut(kind);
            e.full = true;
            e.rows = rows;
        }
        self.rebuild(kinds).await?;
        Ok(())
    }

    /// Change data capture since `since`, applied in one transaction.
    async fn incremental(
        &self,
        realm: &str,
        since: DateTime<Utc>,
        started: DateTime<Utc>,
        report: &mut RefreshReport,
    ) -> Result<(), CacheError> {
        let me = &self.inner;
        let all: Vec<Entity> = CacheKind::ALL.into_iter().map(entity_of).collect();
        let changes = match me.client.cdc(&all, since).await {
            Ok(c) => c,
            Err(e @ QboError::Validation { .. }) => {
                // QuickBooks refused `changedSince` (the till's clock far
                // off, or its window): a full load is always right.
                report.requests += 1;
                report.kind = RefreshKind::Full;
                report.reason =
                    format!("QuickBooks refused the change data capture ({e}); reloaded in full");
                return self
                    .full_load(&CacheKind::ALL, realm, started, report, true)
                    .await;
            }
            Err(e) => return Err(CacheError::from_qbo(e)),
        };
        report.requests += 1;
        let mut sets = split(changes);
        let mut reload = Vec::new();
        if sets.values().map(Vec::len).sum::<usize>() >= CDC_MAX_OBJECTS {
            // The answer may have been cut at 1,000 objects shared by the
            // four entities: ask for each alone; one that still fills an
            // answer is reloaded whole.
            for kind in CacheKind::ALL {
                let alone = me
                    .client
                    .cdc(&[entity_of(kind)], since)
                    .await
                    .map_err(CacheError::from_qbo)?;
                report.requests += 1;
                let list = split(alone).remove(&kind).unwrap_or_default();
                if list.len() >= CDC_MAX_OBJECTS {
                    sets.remove(&kind);
                    reload.push(kind);
                } else {
                    sets.insert(kind, list);
                }
            }
            if !reload.is_empty() {
                let names: Vec<&str> = reload.iter().map(|k| k.plural()).collect();
                report.reason.push_str(&format!(
                    "; {} changed too much for one change data capture answer and were reloaded",
                    names.join(", ")
                ));
                self.full_load(&reload, realm, started, report, false)
                    .await?;
            }
        }
        let mut upserts = Vec::new();
        let mut deletions = Vec::new();
        for (kind, list) in sets {
            report.entity_mut(kind).read += list.len() as u64;
            for v in list {
                if is_deleted(&v) {
                    if let Some(id) = id_of(&v) {
                        deletions.push((kind, id));
                    }
                } else if let Some(row) = to_row(kind, v) {
                    upserts.push(row);
                }
            }
        }
        let synced = CacheSynced {
            realm: realm.to_string(),
            started_at: started,
            finished_at: me.clock.now(),
            full: false,
        };
        let (mut applied, counts) = me
            .outbox
            .call(move |o| {
                let applied = o.qbo_cache_apply(upserts, deletions, &synced)?;
                Ok((applied, o.qbo_cache_counts()?))
            })
            .await?;
        let mut rebuild = Vec::new();
        for kind in CacheKind::ALL {
            let a = applied.counts.get(&kind).copied().unwrap_or_default();
            let e = report.entity_mut(kind);
            e.upserted = a.upserted;
            e.deleted = a.deleted;
            e.rows = counts.get(&kind).copied().unwrap_or(0);
            let changes = (a.upserted + a.deleted) as usize;
            if changes == 0 || reload.contains(&kind) || !INDEXED.contains(&kind) {
                continue;
            }
            // A few changes go to the overlay at once (rebuilding 50,000
            // entries for 100 changes would cost the till half a second);
            // many make a rebuild cheaper than scanning them on every
            // search.
            if self.snapshot().pending(kind) + changes > OVERLAY_MAX {
                rebuild.push(kind);
                continue;
            }
            let (rows, rest): (Vec<CacheRow>, Vec<CacheRow>) =
                applied.upserted.into_iter().partition(|r| r.kind == kind);
            applied.upserted = rest;
            let gone = applied
                .deleted
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, id)| id.clone())
                .collect();
            self.learn(|s, seq| s.with_changes(kind, rows, gone, seq), kind);
        }
        self.rebuild(&rebuild).await?;
        Ok(())
    }
}

/// The `changedSince` of an incremental refresh, if one can be made: the
/// copy is of this company and recent enough for change data capture.
fn cdc_since(state: &CacheState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let since = state.synced_from? - chrono::Duration::from_std(CDC_OVERLAP).ok()?;
    let reach = chrono::Duration::from_std(CDC_WINDOW - CDC_MARGIN).ok()?;
    (now - since < reach).then_some(since)
}

/// A change set by entity, as JSON.
fn split(c: CdcChanges) -> BTreeMap<CacheKind, Vec<Value>> {
    fn values<T: Serialize>(list: Vec<T>) -> Vec<Value> {
        list.into_iter()
            .filter_map(|x| serde_json::to_value(x).ok())
            .collect()
    }
    BTreeMap::from([
        (CacheKind::Customer, values(c.customers)),
        (CacheKind::Vendor, c.vendors),
        (CacheKind::Item, values(c.items)),
        (CacheKind::Invoice, values(c.invoices)),
    ])
}

fn is_deleted(v: &Value) -> bool {
    v.get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("Deleted"))
}

fn id_of(v: &Value) -> Option<String> {
    match v.get("Id")? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// An amount as its text shows it (never through a float's noise).
fn amount(v: &Value, pointer: &str) -> Option<Decimal> {
    match v.pointer(pointer)? {
        Value::Number(n) => {
            let t = n.to_string();
            Decimal::from_str(&t)
                .ok()
                .or_else(|| Decimal::from_scientific(&t).ok())
        }
        Value::String(s) => Decimal::from_str(s.trim()).ok(),
        _ => None,
    }
}

/// The row of an entity as QuickBooks sent it; `None` without an Id.
fn to_row(kind: CacheKind, v: Value) -> Option<CacheRow> {
    let mut r = CacheRow::new(kind, id_of(&v)?);
    r.active = v.get("Active").and_then(Value::as_bool).unwrap_or(true);
    r.sync_token = match v.get("SyncToken") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    r.updated_at = text(&v, "/MetaData/LastUpdatedTime")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    match kind {
        CacheKind::Customer | CacheKind::Vendor => {
            r.name = text(&v, "/DisplayName");
            r.company_name = text(&v, "/CompanyName");
            r.email = text(&v, "/PrimaryEmailAddr/Address");
        }
        CacheKind::Item => {
            r.name = text(&v, "/Name");
            r.sku = text(&v, "/Sku");
            r.description = text(&v, "/Description");
            r.item_type = text(&v, "/Type");
            r.unit_price = amount(&v, "/UnitPrice");
        }
        CacheKind::Invoice => {
            r.name = text(&v, "/DocNumber");
            r.customer_name = text(&v, "/CustomerRef/name");
            r.total_amt = amount(&v, "/TotalAmt");
            r.txn_date = text(&v, "/TxnDate");
        }
    }
    r.raw = v.to_string();
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_from_quickbooks_json() {
        let c = to_row(
            CacheKind::Customer,
            json!({"Id": "58", "SyncToken": "3", "DisplayName": " Ahmad Café ", "CompanyName": "",
                   "PrimaryEmailAddr": {"Address": "a@example.com"}, "Active": false,
                   "MetaData": {"LastUpdatedTime": "2024-01-15T10:00:00-08:00"}}),
        )
        .unwrap();
        assert_eq!(c.name.as_deref(), Some("Ahmad Café"));
        assert_eq!(c.company_name, None, "empty is none");
        assert_eq!(c.email.as_deref(), Some("a@example.com"));
        assert!(!c.active);
        assert_eq!(c.sync_token.as_deref(), Some("3"));
        assert_eq!(
            c.updated_at.unwrap().to_rfc3339(),
            "2024-01-15T18:00:00+00:00"
        );
        assert!(c.raw.contains("\"Id\":\"58\""));

        let i = to_row(
            CacheKind::Item,
            json!({"Id": 7, "Name": "Espresso", "Sku": "ESP-1", "Type": "Service",
                   "UnitPrice": 19.99, "Description": "Double shot"}),
        )
        .unwrap();
        assert_eq!(i.id, "7");
        assert_eq!(i.unit_price, Some("19.99".parse().unwrap()));
        assert!(i.active, "active unless said otherwise");
        assert_eq!(
            (i.sku.as_deref(), i.item_type.as_deref()),
            (Some("ESP-1"), Some("Service"))
        );

        let inv = to_row(
            CacheKind::Invoice,
            json!({"Id": "130", "DocNumber": "POS-1", "TxnDate": "2024-01-15", "TotalAmt": 116.0,
                   "CustomerRef": {"value": "1", "name": "Amy's Bird Sanctuary"}}),
        )
        .unwrap();
        assert_eq!(inv.total_amt, Some("116.0".parse().unwrap()));
        assert_eq!(inv.customer_name.as_deref(), Some("Amy's Bird Sanctuary"));
        assert_eq!(inv.txn_date.as_deref(), Some("2024-01-15"));
        assert!(to_row(CacheKind::Item, json!({"Name": "no id"})).is_none());

        assert!(is_deleted(&json!({"Id": "5", "status": "Deleted"})));
        assert!(!is_deleted(&json!({"Id": "5"})));
    }

    #[test]
    fn when_change_data_capture_can_be_used() {
        let now = Utc::now();
        let state = |ago: Option<i64>| CacheState {
            realm: Some("1".into()),
            synced_from: ago.map(|d| now - chrono::Duration::hours(d)),
            ..CacheState::default()
        };
        assert_eq!(cdc_since(&state(None), now), None, "never loaded");
        assert_eq!(
            cdc_since(&state(Some(1)), now),
            Some(now - chrono::Duration::hours(1) - chrono::Duration::minutes(5)),
            "the overlap"
        );
        assert!(cdc_since(&state(Some(29 * 24)), now).is_some());
        assert!(
            cdc_since(&state(Some(30 * 24 - 1)), now).is_none(),
            "too close to the 30 days"
        );
        assert!(cdc_since(&state(Some(31 * 24)), now).is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!((24..=36).contains(&BACKOFF.after(1).as_secs()));
        assert!((48..=72).contains(&BACKOFF.after(2).as_secs()));
        assert!(BACKOFF.after(30) <= BACKOFF.max.mul_f64(1.2));
        assert!(BACKOFF.after(30) >= BACKOFF.max.mul_f64(0.8));
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = CacheError::NotConnected {
            reason: "QuickBooks is not connected: run `pos-connector qbo connect`".into(),
        };
        assert!(e.to_string().contains("qbo connect"), "{e}");
        assert!(e.needs_person());
        let e = CacheError::UnknownEntity {
            entity: "clients".into(),
        };
        let text = e.to_string();
        for name in ["customers", "vendors", "items", "invoices", "\"clients\""] {
            assert!(text.contains(name), "{text}");
        }
        let e = CacheError::from_qbo(QboError::Throttled {
            retry_after: None,
            tid: None,
        });
        assert_eq!(e.kind(), "throttled");
        assert!(matches!(e, CacheError::Qbo(QboError::Throttled { .. })));
        let e = CacheError::from_qbo(QboError::SignIn {
            message: "QuickBooks reconnect needed: run `pos-connector qbo connect`".into(),
            needs_person: true,
            retry_after: None,
        });
        assert!(e.needs_person());
    }
}
