//! The fleet heartbeat: when the shop has a connector `api_key`, the agent
//! tells the backend every `heartbeat_minutes` that it is alive, which
//! version it runs, how its queue looks and on what machine, through the
//! connector channel (`POST /api/pos-connector/heartbeat`, see
//! [`crate::laravel::connector`]).
//!
//! The backend's answer may carry `config_updates`. `sync_interval`
//! (seconds, a number or a string) is applied at once to the shared
//! [`SyncInterval`] the inbox polls with, held within 10 s to 1 hour so a
//! typo in the backend can neither hammer the till's disk nor stall intake
//! for a day. Other settings (`debug_mode`, ...) are logged when their value
//! changes and not applied: the agent has no meaning for them yet.
//!
//! A heartbeat is a courtesy, never a dependency: a failing one (network,
//! refused key, 5xx, garbage) disturbs nothing else. A failing streak is
//! logged once as a warning, with the reason and the fix (again only if the
//! reason changes), and its end once at info; the next beat comes at the
//! normal interval. [`Heartbeat::status`] shows the state for the status
//! page.
//!
//! Wiring (in `service::run_with`): make one [`SyncInterval`] from
//! `cfg.sync_interval`, give a clone to the inbox (`Inbox::new(..,
//! sync.clone(), ..)`) and one to [`Heartbeat::from_config`]; when that
//! returns a heartbeat, spawn `hb.run(stopped())` with the other tasks and
//! keep a clone for the status page ([`HeartbeatStatus::disabled`] when
//! there is none).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::config::Config;
use crate::laravel::connector::{
    ConnectorClient, ConnectorError, HeartbeatAnswer, HeartbeatReport, SystemInfo,
};
use crate::laravel::ApiError;
use crate::logging::untrusted;
use crate::store::OutboxHandle;
use crate::sync_interval::{Origin, SyncInterval};

/// The first beat comes this long after start (or after one interval, if
/// shorter): late enough that the agent has settled, soon enough that the
/// fleet view sees a restart at once.
pub const FIRST_BEAT_AFTER: Duration = Duration::from_secs(5);
/// The bounds of a `sync_interval` the backend sends.
pub(crate) const MIN_SYNC_INTERVAL: Duration = Duration::from_secs(10);
pub(crate) const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(3600);

/// The heartbeat's state, for the status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct HeartbeatStatus {
    /// False when no `api_key` is configured (no heartbeat at all).
    pub enabled: bool,
    pub(crate) interval_seconds: Option<u64>,
    /// When the last beat began.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// A beat is under way (long, with an old `last_attempt_at`: the
    /// backend is slow to answer).
    pub in_flight: bool,
    /// When the backend last accepted one.
    pub last_ok_at: Option<DateTime<Utc>>,
    /// Why the last beat failed, with the fix; null once one succeeds.
    pub last_error: Option<String>,
    /// True when that failure needs a person (a refused key).
    pub needs_person: bool,
    pub consecutive_failures: u64,
    pub beats_ok: u64,
    pub beats_failed: u64,
    /// The backend's clock at the last answer, as it sent it.
    pub server_time: Option<String>,
    /// The polling interval in force.
    pub sync_interval_seconds: Option<u64>,
    /// Where it comes from: config.json, or the backend's answer.
    pub sync_interval_origin: Option<Origin>,
    /// The last `config_updates` the backend sent.
    pub config_updates: Map<String, Value>,
}

impl HeartbeatStatus {
    /// The status when no heartbeat runs.
    #[cfg(test)]
    pub(crate) fn disabled() -> HeartbeatStatus {
        HeartbeatStatus {
            enabled: false,
            interval_seconds: None,
            last_attempt_at: None,
            in_flight: false,
            last_ok_at: None,
            last_error: None,
            needs_person: false,
            consecutive_failures: 0,
            beats_ok: 0,
            beats_failed: 0,
            server_time: None,
            sync_interval_seconds: None,
            sync_interval_origin: None,
            config_updates: Map::new(),
        }
    }
}

/// A failure's family: a warning is logged when a failing streak starts
/// and when its family changes, not at every beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    KeyRefused,
    KeyNotSendable,
    Api(std::mem::Discriminant<ApiError>),
}

impl FailureKind {
    fn of(e: &ConnectorError) -> FailureKind {
        match e {
            ConnectorError::KeyRefused { .. } => FailureKind::KeyRefused,
            ConnectorError::KeyNotSendable { .. } => FailureKind::KeyNotSendable,
            ConnectorError::Api(a) => FailureKind::Api(std::mem::discriminant(a)),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    last_attempt_at: Option<DateTime<Utc>>,
    /// Beats under way (one from `run`, perhaps one more called directly).
    in_flight: u32,
    last_ok_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    needs_person: bool,
    consecutive_failures: u64,
    failing: Option<FailureKind>,
    beats_ok: u64,
    beats_failed: u64,
    server_time: Option<String>,
    config_updates: Map<String, Value>,
}

/// What does not change while the agent runs, read once.
#[derive(Debug)]
struct Host {
    os_version: Option<String>,
    hostname: Option<String>,
    cpus: Option<usize>,
}

struct Inner {
    client: ConnectorClient,
    outbox: OutboxHandle,
    sync: SyncInterval,
    clock: Arc<dyn Clock>,
    every: Duration,
    pos_systems: Vec<String>,
    started_at: DateTime<Utc>,
    host: Host,
    state: Mutex<State>,
}

/// The heartbeat. Clones share one state: run one, read `status()` from
/// another.
#[derive(Clone)]
pub struct Heartbeat {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("client", &self.inner.client)
            .field("every", &self.inner.every)
            .field("sync", &self.inner.sync)
            .finish_non_exhaustive()
    }
}

impl Heartbeat {
    /// The configured heartbeat: `None` when no `api_key` is configured
    /// (then nothing is ever sent on the connector channel).
    pub fn from_config(
        cfg: &Config,
        outbox: OutboxHandle,
        sync: SyncInterval,
        clock: Arc<dyn Clock>,
    ) -> Option<Heartbeat> {
        let client = ConnectorClient::from_config(cfg)?;
        Some(Heartbeat::new(
            client,
            outbox,
            sync,
            clock,
            cfg.connector.heartbeat_interval,
            cfg.connector.pos_systems.clone(),
        ))
    }

    /// A heartbeat from its parts: the connector channel, the outbox it reports on, the inbox interval the backend may change, how often it beats and the POS systems it names.
    pub fn new(
        client: ConnectorClient,
        outbox: OutboxHandle,
        sync: SyncInterval,
        clock: Arc<dyn Clock>,
        every: Duration,
        pos_systems: Vec<String>,
    ) -> Heartbeat {
        let started_at = clock.now();
        Heartbeat {
            inner: Arc::new(Inner {
                client,
                outbox,
                sync,
                clock,
                // A zero interval would spin; config.rs never gives one.
                every: every.max(Duration::from_secs(1)),
                pos_systems,
                started_at,
                host: Host {
                    os_version: os_version(),
                    hostname: hostname(),
                    cpus: std::thread::available_parallelism().ok().map(|n| n.get()),
                },
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state for the status page.
    pub fn status(&self) -> HeartbeatStatus {
        let st = self.state();
        HeartbeatStatus {
            enabled: true,
            interval_seconds: Some(self.inner.every.as_secs()),
            last_attempt_at: st.last_attempt_at,
            in_flight: st.in_flight > 0,
            last_ok_at: st.last_ok_at,
            last_error: st.last_error.clone(),
            needs_person: st.needs_person,
            consecutive_failures: st.consecutive_failures,
            beats_ok: st.beats_ok,
            beats_failed: st.beats_failed,
            server_time: st.server_time.clone(),
            sync_interval_seconds: Some(self.inner.sync.get().as_secs()),
            sync_interval_origin: Some(self.inner.sync.origin()),
            config_updates: st.config_updates.clone(),
        }
    }

    /// Beats until `stopped`: first after [`FIRST_BEAT_AFTER`], then every
    /// interval (counted from the start of the previous beat), whatever
    /// the outcome. A beat in flight is abandoned at `stopped`.
    pub async fn run(&self, stopped: impl Future<Output = ()>) {
        tokio::pin!(stopped);
        let every = self.inner.every;
        tracing::info!(
            backend = %self.inner.client.base_url(),
            every_seconds = every.as_secs(),
            "heartbeat on: reporting to the backend's connector channel"
        );
        let mut next = tokio::time::Instant::now() + FIRST_BEAT_AFTER.min(every);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            next = tokio::time::Instant::now() + every;
            tokio::select! {
                _ = &mut stopped => return,
                // The outcome is recorded and logged by `beat` itself.
                _ = self.beat() => {}
            }
        }
    }

    /// One heartbeat now: report, send, apply the answer, record and log
    /// the outcome (a failing streak once).
    pub async fn beat(&self) -> Result<HeartbeatAnswer, ConnectorError> {
        let now = self.inner.clock.now();
        {
            let mut st = self.state();
            st.last_attempt_at = Some(now);
            st.in_flight += 1;
        }
        // Cleared however the beat ends, also when it is abandoned at
        // shutdown (the future dropped mid-request).
        let _in_flight = InFlight(self);
        let report = self.report_at(now).await;
        let result = self.inner.client.heartbeat(&report).await;
        match &result {
            Ok(answer) => self.on_answer(answer),
            Err(e) => self.on_failure(e),
        }
        result
    }

    /// The report of a beat that began at `now` (its uptime is measured
    /// then, not after the outbox's answer).
    async fn report_at(&self, now: DateTime<Utc>) -> HeartbeatReport {
        let i = &self.inner;
        let stats = i.outbox.call(|o| o.queue_stats()).await;
        if let Err(e) = &stats {
            // Still sent: the fleet view needs to see a till whose outbox
            // fails more than one that looks fine.
            tracing::debug!(error = %e, "heartbeat: cannot read the queue");
        }
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let (pending, parked, last_sync, oldest, queue, outbox_error) = match stats {
            Ok(s) => (
                Some(s.pending),
                Some(s.parked),
                s.last_success_at.map(stamp),
                s.oldest_pending_since.map(stamp),
                s.counts,
                None,
            ),
            Err(e) => (None, None, None, None, BTreeMap::new(), Some(e.to_string())),
        };
        HeartbeatReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pos_systems: i.pos_systems.clone(),
            transactions_pending: pending,
            transactions_parked: parked,
            last_sync,
            system_info: SystemInfo {
                os: std::env::consts::OS.to_string(),
                os_family: std::env::consts::FAMILY.to_string(),
                os_version: i.host.os_version.clone(),
                arch: std::env::consts::ARCH.to_string(),
                hostname: i.host.hostname.clone(),
                cpus: i.host.cpus,
                pid: std::process::id(),
                started_at: stamp(i.started_at),
                uptime_seconds: (now - i.started_at).num_seconds().max(0) as u64,
                sync_interval_seconds: i.sync.get().as_secs(),
                heartbeat_interval_seconds: i.every.as_secs(),
                oldest_pending_since: oldest,
                queue,
                outbox_error,
            },
        }
    }

    fn on_failure(&self, e: &ConnectorError) {
        let kind = FailureKind::of(e);
        let mut st = self.state();
        st.consecutive_failures += 1;
        st.beats_failed += 1;
        st.last_error = Some(e.to_string());
        st.needs_person = e.needs_person();
        let announce = st.failing != Some(kind);
        st.failing = Some(kind);
        let failures = st.consecutive_failures;
        drop(st);
        let every_min = self.inner.every.as_secs_f64() / 60.0;
        if announce {
            tracing::warn!(
                failures,
                "heartbeat failed: {e}. Sales are not affected; the heartbeat is tried again every {every_min} min (logged again only when it recovers or fails differently)"
            );
        } else {
            tracing::debug!(failures, error = %e, "heartbeat failed again");
        }
    }

    fn on_answer(&self, answer: &HeartbeatAnswer) {
        let mut st = self.state();
        let failures = st.consecutive_failures;
        let first = st.beats_ok == 0;
        st.consecutive_failures = 0;
        st.failing = None;
        st.last_error = None;
        st.needs_person = false;
        st.beats_ok += 1;
        st.last_ok_at = Some(self.inner.clock.now());
        st.server_time = answer.server_time.clone();
        let previous = std::mem::replace(&mut st.config_updates, answer.config_updates.clone());
        drop(st);
        if failures > 0 {
            tracing::info!(
                after_failures = failures,
                "heartbeat recovered: the backend accepts it again"
            );
        } else if first {
            tracing::info!(server_time = ?answer.server_time, "heartbeat accepted by the backend");
        } else {
            tracing::debug!("heartbeat accepted");
        }
        if answer.status.as_deref().is_some_and(|s| s != "ok") {
            tracing::debug!(status = ?answer.status, "heartbeat answer with an unusual status");
        }
        self.apply_updates(&previous, &answer.config_updates);
    }

    /// Applies `sync_interval`; logs the other settings when they change.
    fn apply_updates(&self, previous: &Map<String, Value>, updates: &Map<String, Value>) {
        for (key, value) in updates {
            let changed = previous.get(key) != Some(value);
            if key == "sync_interval" {
                self.apply_sync_interval(value, changed);
            } else if changed {
                let (key, value) = (untrusted(key), value.to_string());
                let value = untrusted(&value);
                tracing::info!(
                    setting = %key,
                    value = %value,
                    "the backend sends the setting {key} = {value}; this agent does not use it (nothing changed)"
                );
            }
        }
        // An answer without a setting changes nothing (PHP sends `[]` for
        // "no updates"): an interval the backend set stays in force.
        for key in previous.keys().filter(|k| !updates.contains_key(*k)) {
            tracing::info!(setting = %untrusted(key), "the backend no longer sends the setting {}", untrusted(key));
        }
    }

    /// `changed`: the backend's value differs from its previous answer (so
    /// a note about it is new, not a repeat).
    fn apply_sync_interval(&self, value: &Value, changed: bool) {
        let sync = &self.inner.sync;
        let Some(requested) = seconds(value) else {
            if changed {
                tracing::warn!(
                    value = %untrusted(&value.to_string()),
                    "the backend's config_updates.sync_interval is not a number of seconds above 0; ignored, polling stays every {} s",
                    sync.get().as_secs()
                );
            }
            return;
        };
        let (applied, clamped) = clamp_sync_interval(requested);
        let before = sync.set(applied);
        let (from, to) = (before.as_secs_f64(), applied.as_secs());
        let bounds = format!(
            "{} to {} s",
            MIN_SYNC_INTERVAL.as_secs(),
            MAX_SYNC_INTERVAL.as_secs()
        );
        match (before != applied, clamped) {
            (true, false) => tracing::info!(
                from_seconds = from,
                to_seconds = to,
                "sync interval changed by the backend: polling every {to} s (was {from} s)"
            ),
            (true, true) => tracing::info!(
                from_seconds = from,
                to_seconds = to,
                requested_seconds = requested,
                "sync interval changed by the backend: it asked for {requested} s, outside the allowed {bounds}; polling every {to} s (was {from} s)"
            ),
            (false, true) if changed => tracing::info!(
                requested_seconds = requested,
                "the backend asks for a sync interval of {requested} s, outside the allowed {bounds}; polling stays every {to} s"
            ),
            _ => {}
        }
    }
}

/// Ends a beat's `in_flight` mark when dropped.
struct InFlight<'a>(&'a Heartbeat);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.in_flight = st.in_flight.saturating_sub(1);
    }
}

/// Seconds from a number or a numeric string (PHP sends either); `None`
/// for anything else, zero, negative or not finite.
pub(crate) fn seconds(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (n.is_finite() && n > 0.0).then_some(n)
}

/// The interval to use for `requested` seconds, whole seconds within
/// [`MIN_SYNC_INTERVAL`]..=[`MAX_SYNC_INTERVAL`], and whether it had to be
/// moved into those bounds.
pub(crate) fn clamp_sync_interval(requested: f64) -> (Duration, bool) {
    let (lo, hi) = (
        MIN_SYNC_INTERVAL.as_secs_f64(),
        MAX_SYNC_INTERVAL.as_secs_f64(),
    );
    let clamped = requested.round().clamp(lo, hi);
    (
        Duration::from_secs_f64(clamped),
        clamped != requested.round(),
    )
}

/// The machine's name, with the standard library only: the environment
/// (`HOSTNAME`, `COMPUTERNAME` on Windows), then /etc/hostname, then
/// /proc/sys/kernel/hostname.
pub(crate) fn hostname() -> Option<String> {
    let from_env = ["HOSTNAME", "COMPUTERNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok());
    let from_files = ["/etc/hostname", "/proc/sys/kernel/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok());
    from_env.chain(from_files).find_map(|s| clean_line(&s, 253))
}

/// The distribution's `PRETTY_NAME` from /etc/os-release (Linux), if any.
fn os_version() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .and_then(|v| clean_line(v.trim().trim_matches('"'), 100))
}

/// The first line of `s`, trimmed and capped at `max` characters; `None`
/// when empty.
fn clean_line(s: &str, max: usize) -> Option<String> {
    let line: String = s
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect();
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seconds_come_as_numbers_or_strings() {
        assert_eq!(seconds(&json!(300)), Some(300.0));
        assert_eq!(seconds(&json!(12.5)), Some(12.5));
        assert_eq!(seconds(&json!(" 60 ")), Some(60.0));
        assert_eq!(seconds(&json!("90.0")), Some(90.0));
        for bad in [
            json!(0),
            json!(-5),
            json!("fast"),
            json!(""),
            json!(null),
            json!(true),
            json!([300]),
            json!("NaN"),
            json!("inf"),
        ] {
            assert_eq!(seconds(&bad), None, "{bad}");
        }
    }

    #[test]
    fn intervals_are_held_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(clamp_sync_interval(1.0), (s(10), true));
        assert_eq!(clamp_sync_interval(10.0), (s(10), false));
        assert_eq!(clamp_sync_interval(300.0), (s(300), false));
        assert_eq!(clamp_sync_interval(12.4), (s(12), false));
        assert_eq!(clamp_sync_interval(3600.0), (s(3600), false));
        assert_eq!(clamp_sync_interval(999_999.0), (s(3600), true));
        assert_eq!(clamp_sync_interval(1e300), (s(3600), true));
    }

    #[test]
    fn names_are_one_clean_line() {
        assert_eq!(
            clean_line("till-04\nsecond line\n", 253).as_deref(),
            Some("till-04")
        );
        assert_eq!(clean_line("  \n", 253), None);
        assert_eq!(clean_line("a\u{7}b", 253).as_deref(), Some("ab"));
        assert_eq!(clean_line(&"x".repeat(300), 253).unwrap().len(), 253);
        // Every machine the tests run on has a name by one of the routes.
        assert!(hostname().is_some_and(|h| !h.is_empty()));
    }

    #[test]
    fn a_disabled_status_says_so() {
        let v = serde_json::to_value(HeartbeatStatus::disabled()).unwrap();
        assert_eq!(v["enabled"], json!(false));
        assert_eq!(v["consecutive_failures"], json!(0));
        assert_eq!(v["config_updates"], json!({}));
    }
}
