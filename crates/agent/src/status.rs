//! The agent's state as a person sees it: the status page (`GET /` renders
//! `GET /api/status`), `pos-connector status` and `qbo status` all show a
//! [`StatusReport`] or a part of it, so the three never disagree.
//!
//! A report is collected from the running service's live parts (token
//! keepers, call stats, heartbeat, cache) or, when the service is not
//! running, from what is on disk (outbox, vault): then the live-only facts
//! (uptime, last refresh in this process, reachability) are absent and
//! `agent.running` is false. Nothing in a report is secret.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::call_stats::Reachability;
use crate::config::Config;
use crate::laravel::LaravelClient;
pub use crate::pipeline::GateView;
use crate::quickbooks::limiter::LimiterStatus;
use crate::quickbooks::oauth::RefreshOutcome;
use crate::quickbooks::{ConnectionStore, QboClient};
use crate::store::{Job, ListFilter, OutboxHandle, QueueStats, StoreError};
use crate::sync_interval::{Origin, SyncInterval};
use crate::token::RefreshRecord;

/// How many recent jobs the page lists.
pub(crate) const RECENT_JOBS: usize = 50;

/// What a person sees about the agent: sign-in, QuickBooks link, queue, inbox, health and what needs attention.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub(crate) generated_at: DateTime<Utc>,
    pub(crate) agent: AgentInfo,
    pub(crate) laravel: LaravelLink,
    pub(crate) quickbooks: QuickbooksLink,
    pub(crate) queue: QueueView,
    /// The inbox folder and how often it is looked at, and why.
    #[serde(default)]
    pub inbox: InboxView,
    pub(crate) health: Health,
    /// One line per thing a person should do, most urgent first.
    pub(crate) attention: Vec<String>,
}

/// The inbox folder's polling: the interval in force and where it comes
/// from (config.json, or the backend's heartbeat answer).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct InboxView {
    pub(crate) folder: PathBuf,
    pub interval_seconds: u64,
    pub interval_origin: Origin,
    /// config.json's `sync_interval`.
    pub configured_interval_seconds: u64,
}

impl InboxView {
    fn read(cfg: &Config, sync: Option<&SyncInterval>) -> InboxView {
        let configured = cfg.sync_interval.as_secs();
        let (interval, origin) = match sync {
            Some(s) => (s.get().as_secs(), s.origin()),
            None => (configured, Origin::Config),
        };
        InboxView {
            folder: cfg.invoice_folder.clone(),
            interval_seconds: interval,
            interval_origin: origin,
            configured_interval_seconds: configured,
        }
    }

    /// "every 45 s (the backend's heartbeat answer; config.json says 30 s)".
    pub(crate) fn describe(&self) -> String {
        let mut why = self.interval_origin.describe().to_string();
        if self.interval_origin != Origin::Config {
            why.push_str(&format!(
                "; config.json says {} s",
                self.configured_interval_seconds
            ));
        }
        format!("every {} s ({why})", self.interval_seconds)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AgentInfo {
    pub(crate) version: String,
    /// False when this report was read from disk by a command because no
    /// service answered.
    pub(crate) running: bool,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) uptime_seconds: Option<u64>,
    pub(crate) config_path: PathBuf,
    pub(crate) data_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LaravelLink {
    pub(crate) backend_url: String,
    /// Signed in as.
    pub(crate) email: String,
    pub(crate) vendor_id: Option<u64>,
    pub(crate) has_token: bool,
    pub(crate) token_valid: bool,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) seconds_left: Option<i64>,
    pub(crate) refresh_due_at: Option<DateTime<Utc>>,
    /// The last refresh by this process (absent when not running).
    pub(crate) last_refresh: Option<RefreshRecord>,
    pub(crate) refreshes_ok: u64,
    pub(crate) refreshes_failed: u64,
    /// Set when only a person can fix the sign-in (wrong password...).
    pub(crate) needs_person: Option<String>,
}

impl LaravelLink {
    /// The keeper's view of the sign-in (no network).
    pub(crate) fn read(cfg: &Config, laravel: &LaravelClient, now: DateTime<Utc>) -> LaravelLink {
        let keeper = laravel.keeper();
        let k = keeper.status();
        LaravelLink {
            backend_url: cfg.base_url.to_string(),
            email: cfg.email.clone(),
            vendor_id: keeper.current().and_then(|t| t.vendor_id).or(cfg.vendor_id),
            has_token: k.has_token,
            token_valid: k.token_valid,
            expires_at: k.expires_at,
            seconds_left: k.expires_at.map(|e| (e - now).num_seconds()),
            refresh_due_at: k.refresh_due_at,
            last_refresh: k.last_refresh,
            refreshes_ok: k.refreshes_ok,
            refreshes_failed: k.refreshes_failed,
            needs_person: k.needs_person,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QuickbooksLink {
    pub(crate) enabled: bool,
    pub(crate) environment: String,
    /// `disabled`, `not_connected`, `connected` or `reconnect_needed`.
    pub(crate) state: String,
    /// Why it is not usable, and what to do.
    pub(crate) reason: Option<String>,
    pub(crate) realm_id: Option<String>,
    pub(crate) connected_at: Option<DateTime<Utc>>,
    pub(crate) access_expires_at: Option<DateTime<Utc>>,
    pub(crate) access_valid: bool,
    pub(crate) refresh_expires_at: Option<DateTime<Utc>>,
    pub(crate) hard_expires_at: Option<DateTime<Utc>>,
    pub(crate) last_refresh: Option<RefreshOutcome>,
    /// Expiries within 14 days.
    pub(crate) warnings: Vec<String>,
    /// Pushes by state.
    pub(crate) pushes: BTreeMap<String, u64>,
    /// The local copy of the company's lists (when the service runs it).
    pub(crate) cache: Option<Value>,
    /// This agent's learned share of the company's request limits and the
    /// 429s met (when the service runs: it is learned while pushing).
    #[serde(default)]
    pub(crate) limiter: Option<LimiterStatus>,
}

impl QuickbooksLink {
    pub(crate) fn is_connected(&self) -> bool {
        self.state == "connected"
    }

    /// Reads the stored connection (no network).
    pub(crate) fn read(
        cfg: &Config,
        now: DateTime<Utc>,
        pushes: BTreeMap<String, u64>,
    ) -> QuickbooksLink {
        let qb = &cfg.quickbooks;
        let mut link = QuickbooksLink {
            enabled: qb.enabled,
            environment: qb.environment.clone(),
            state: "not_connected".into(),
            reason: None,
            realm_id: None,
            connected_at: None,
            access_expires_at: None,
            access_valid: false,
            refresh_expires_at: None,
            hard_expires_at: None,
            last_refresh: None,
            warnings: Vec::new(),
            pushes,
            cache: None,
            limiter: None,
        };
        let conn = match ConnectionStore::new(&cfg.data_dir).load() {
            Ok(c) => c,
            Err(e) => {
                link.reason = Some(format!("cannot read the stored QuickBooks connection: {e}"));
                None
            }
        };
        match &conn {
            None if link.reason.is_none() => {
                link.reason =
                    Some("QuickBooks is not connected: run `pos-connector qbo connect` or use \"Connect to QuickBooks\" on the status page".into());
            }
            None => {}
            Some(c) => {
                let t = &c.token;
                link.realm_id = Some(t.realm_id.clone());
                link.connected_at = Some(c.connected_at);
                link.access_expires_at = Some(t.expires_at);
                link.access_valid = t.expires_at > now;
                link.refresh_expires_at = t.refresh_expires_at;
                link.hard_expires_at = t.hard_expires_at;
                link.last_refresh = c.last_refresh.clone();
                link.warnings = c.expiry_warnings(now);
                match c.unusable(qb.client_id.as_deref().unwrap_or_default()) {
                    Some(why) => {
                        link.state = "reconnect_needed".into();
                        link.reason = Some(why);
                    }
                    None => link.state = "connected".into(),
                }
            }
        }
        if !qb.enabled {
            link.state = "disabled".into();
            link.reason = Some("QuickBooks is not enabled (quickbooks.enabled is false)".into());
        }
        link
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QueueView {
    #[serde(flatten)]
    pub(crate) stats: QueueStats,
    /// The newest jobs, newest first.
    pub(crate) recent: Vec<JobLine>,
    /// Jobs waiting for a person (newest first), each retryable.
    pub(crate) parked_jobs: Vec<JobLine>,
}

/// A job as one line of the page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct JobLine {
    pub(crate) invoice_number: String,
    pub(crate) state: String,
    pub(crate) stage: String,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) laravel_id: Option<u64>,
    pub(crate) backend_status: Option<String>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) quickbooks_state: Option<String>,
    pub(crate) quickbooks_id: Option<String>,
    pub(crate) quickbooks_error: Option<String>,
}

impl From<&Job> for JobLine {
    fn from(j: &Job) -> JobLine {
        JobLine {
            invoice_number: j.invoice_number.clone(),
            state: j.state.clone(),
            stage: j.stage.as_str().to_string(),
            attempts: j.attempts,
            last_error: j.last_error.clone(),
            laravel_id: j.laravel_id,
            backend_status: j.backend_status.clone(),
            created_at: j.created_at.clone(),
            updated_at: j.updated_at.clone(),
            quickbooks_state: j.qbo.as_ref().map(|q| q.state.clone()),
            quickbooks_id: j.qbo.as_ref().and_then(|q| q.qbo_id.clone()),
            quickbooks_error: j.qbo.as_ref().and_then(|q| q.last_error.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Health {
    /// The invoicing backend, as this process has seen it (absent before
    /// the first call, and when the service is not running).
    pub(crate) backend: Option<Reachability>,
    pub(crate) quickbooks: Option<Reachability>,
    /// The fleet heartbeat (when `api_key` is configured).
    pub(crate) heartbeat: Option<Value>,
    /// The pipeline's backend gate while the backend fails for everyone
    /// (all sales wait; a probe decides when they resume).
    #[serde(default)]
    pub(crate) backend_gate: Option<GateView>,
}

/// The live parts of a running service; absent when a command reads the
/// state from disk.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct Live {
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat: Option<Value>,
    pub cache: Option<Value>,
    /// The inbox's live polling interval.
    pub sync: Option<SyncInterval>,
    pub backend_gate: Option<GateView>,
}

/// Collects a report. `live` is `None` when no service is running.
pub async fn collect(
    cfg: &Config,
    now: DateTime<Utc>,
    outbox: &OutboxHandle,
    laravel: &LaravelClient,
    qbo: Option<&QboClient>,
    live: Option<Live>,
) -> Result<StatusReport, StoreError> {
    let (stats, recent, parked, pushes) = outbox
        .call(|o| {
            let recent = o.list(&ListFilter {
                state: None,
                limit: Some(RECENT_JOBS),
            })?;
            let parked = o.list(&ListFilter {
                state: Some("parked".into()),
                limit: Some(RECENT_JOBS),
            })?;
            Ok((o.queue_stats()?, recent, parked, o.qbo_counts()?))
        })
        .await?;
    let running = live.is_some();
    let live = live.unwrap_or_default();

    let laravel_link = LaravelLink::read(cfg, laravel, now);
    let mut quickbooks = QuickbooksLink::read(cfg, now, pushes);
    quickbooks.cache = live.cache;
    // A command's fresh client knows nothing yet: only the service's.
    quickbooks.limiter = qbo.filter(|_| running).map(|c| c.limiter().status());

    let health = Health {
        backend: running.then(|| laravel.stats().reachability()).flatten(),
        quickbooks: qbo.and_then(|c| c.stats().reachability()),
        heartbeat: live.heartbeat,
        backend_gate: live.backend_gate,
    };
    let queue = QueueView {
        stats,
        recent: recent.iter().map(JobLine::from).collect(),
        parked_jobs: parked.iter().map(JobLine::from).collect(),
    };
    let inbox = InboxView::read(cfg, live.sync.as_ref());
    let attention = attention(&laravel_link, &quickbooks, &queue, &health);
    Ok(StatusReport {
        generated_at: now,
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            running,
            started_at: live.started_at,
            uptime_seconds: live
                .started_at
                .map(|s| (now - s).num_seconds().max(0) as u64),
            config_path: cfg.path.clone(),
            data_dir: cfg.data_dir.clone(),
        },
        laravel: laravel_link,
        quickbooks,
        queue,
        inbox,
        health,
        attention,
    })
}

fn attention(l: &LaravelLink, q: &QuickbooksLink, queue: &QueueView, h: &Health) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(why) = &l.needs_person {
        out.push(format!("Invoicing backend sign-in: {why}"));
    }
    if q.enabled && q.state != "connected" {
        if let Some(why) = &q.reason {
            out.push(why.clone());
        }
    }
    if let Some(r) = h.backend.as_ref().filter(|r| !r.reachable) {
        out.push(format!(
            "The invoicing backend has not been reachable since {}: {}. Sales wait in the queue and go out when it answers.",
            short_time(r.since),
            r.last_error.as_deref().unwrap_or("no answer")
        ));
    }
    if let Some(g) = &h.backend_gate {
        out.push(format!(
            "The invoicing backend is failing for every sale since {} ({}): all sales wait; {}",
            short_time(g.down_since),
            g.last_error.as_deref().unwrap_or("no answer"),
            match g.next_probe_in_seconds {
                Some(s) => format!("the next check is in {s} s."),
                None => "checking it now.".to_string(),
            }
        ));
    }
    if queue.stats.failing > 0 {
        out.push(format!(
            "{} sale(s) keep failing although the backend answers others (last error: {}). They are retried on their own schedule; see `pos-connector queue list --state retrying`.",
            queue.stats.failing,
            queue.stats.failing_error.as_deref().unwrap_or("-")
        ));
    }
    let jofotara = queue
        .parked_jobs
        .iter()
        .filter(|j| {
            j.last_error
                .as_deref()
                .is_some_and(|e| e.contains("JoFotara integration is probably misconfigured"))
        })
        .count();
    if jofotara > 0 {
        out.push(format!(
            "{jofotara} sale(s) parked because every submit to JoFotara failed: the backend's JoFotara integration is probably misconfigured. Ask the backend administrator to fix it, then \"Retry all parked\" (or `pos-connector queue retry --all-parked`)."
        ));
    }
    if queue.stats.parked > 0 {
        out.push(format!(
            "{} sale(s) parked: each needs a person (see its last error), then \"Retry\" (or `pos-connector queue retry`)",
            queue.stats.parked
        ));
    }
    if q.enabled {
        out.extend(q.warnings.iter().cloned());
    }
    out
}

fn short_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(short_time).unwrap_or_else(|| "-".into())
}

/// "3h 12m" for a number of seconds; negative is "expired".
pub(crate) fn human_left(secs: i64) -> String {
    if secs <= 0 {
        return "expired".into();
    }
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m {}s", secs % 60),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

impl StatusReport {
    /// Does a person have to act on a sign-in or a connection (exit 3)?
    pub(crate) fn needs_person(&self) -> bool {
        self.laravel.needs_person.is_some()
            || (self.quickbooks.enabled && self.quickbooks.state == "reconnect_needed")
    }

    /// The terminal rendering of `pos-connector status`.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let a = &self.agent;
        let _ = writeln!(
            s,
            "pos-connector {}: {}",
            a.version,
            match a.uptime_seconds {
                Some(up) if a.running => format!("running for {}", human_left(up as i64)),
                _ if a.running => "running".to_string(),
                _ => "service NOT RUNNING (this is what is on disk)".to_string(),
            }
        );
        let _ = writeln!(
            s,
            "  config {}  data {}",
            a.config_path.display(),
            a.data_dir.display()
        );

        let l = &self.laravel;
        let _ = writeln!(s, "\nInvoicing backend  {}", l.backend_url);
        let _ = writeln!(
            s,
            "  signed in as {}{}",
            l.email,
            l.vendor_id
                .map(|v| format!(" (vendor {v})"))
                .unwrap_or_default()
        );
        if let Some(why) = &l.needs_person {
            let _ = writeln!(s, "  SIGN-IN NEEDS A PERSON: {why}");
        }
        match (l.has_token, l.expires_at) {
            (true, Some(exp)) => {
                let _ = writeln!(
                    s,
                    "  token {} until {} ({} left), next refresh {}",
                    if l.token_valid { "valid" } else { "NOT valid" },
                    short_time(exp),
                    human_left(l.seconds_left.unwrap_or(0)),
                    opt_time(l.refresh_due_at)
                );
            }
            _ => {
                let _ = writeln!(s, "  no token yet: the agent signs in at its next call");
            }
        }
        match &l.last_refresh {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "  last refresh {} {} ({}): {}",
                    short_time(r.at),
                    if r.ok { "ok" } else { "FAILED" },
                    r.reason,
                    r.detail
                );
            }
            None if a.running => {
                let _ = writeln!(s, "  no refresh since the service started");
            }
            None => {}
        }
        match &self.health.backend {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "  backend {} since {} (last call {}){}",
                    if r.reachable {
                        "reachable"
                    } else {
                        "NOT REACHABLE"
                    },
                    short_time(r.since),
                    short_time(r.last_call_at),
                    r.last_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
            None if a.running => {
                let _ = writeln!(s, "  backend not called yet");
            }
            None => {}
        }

        let q = &self.quickbooks;
        let _ = writeln!(s, "\nQuickBooks Online");
        match q.state.as_str() {
            "disabled" => {
                let _ = writeln!(s, "  not enabled (quickbooks.enabled)");
            }
            state => {
                let _ = writeln!(
                    s,
                    "  {} {}",
                    match state {
                        "connected" => "connected",
                        "reconnect_needed" => "RECONNECT NEEDED",
                        _ => "not connected",
                    },
                    q.realm_id
                        .as_deref()
                        .map(|r| format!("(company {r}, {})", q.environment))
                        .unwrap_or_default()
                );
                if let Some(why) = q.reason.as_deref().filter(|_| state != "connected") {
                    let _ = writeln!(s, "  why: {why}");
                }
                if q.realm_id.is_some() {
                    let _ = writeln!(
                        s,
                        "  access token {} until {}; refresh token until {}; hard expiry {}",
                        if q.access_valid { "valid" } else { "expired" },
                        opt_time(q.access_expires_at),
                        opt_time(q.refresh_expires_at),
                        opt_time(q.hard_expires_at)
                    );
                }
                if let Some(r) = &q.last_refresh {
                    let _ = writeln!(
                        s,
                        "  last refresh {} {}: {}",
                        short_time(r.at),
                        if r.ok { "ok" } else { "FAILED" },
                        r.detail
                    );
                }
                let pushes: Vec<String> = q
                    .pushes
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "  pushes: {}",
                    if pushes.is_empty() {
                        "none yet".into()
                    } else {
                        pushes.join(", ")
                    }
                );
                if let Some(l) = &q.limiter {
                    let _ = writeln!(s, "  rate budget: {}", limiter_line(l));
                }
                if let Some(c) = &q.cache {
                    let _ = writeln!(s, "  cache: {}", cache_line(c));
                }
            }
        }

        let qu = &self.queue;
        let _ = writeln!(s, "\nQueue");
        let counts: Vec<String> = qu
            .stats
            .counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(s, "  {}", counts.join(", "));
        let _ = writeln!(
            s,
            "  pending {} (oldest since {}), parked {}, last success {}",
            qu.stats.pending,
            opt_time(qu.stats.oldest_pending_since),
            qu.stats.parked,
            opt_time(qu.stats.last_success_at)
        );
        for j in &qu.parked_jobs {
            let _ = writeln!(
                s,
                "  PARKED {}: {}",
                j.invoice_number,
                j.last_error.as_deref().unwrap_or("-")
            );
        }
        for j in qu.recent.iter().take(10) {
            let _ = writeln!(
                s,
                "  {:<24} {:<10} {}",
                j.invoice_number,
                j.state,
                j.last_error.as_deref().unwrap_or("")
            );
        }

        let _ = writeln!(
            s,
            "\nInbox  {}: looked at {}",
            self.inbox.folder.display(),
            self.inbox.describe()
        );
        if let Some(hb) = &self.health.heartbeat {
            let _ = writeln!(s, "\nHeartbeat: {}", heartbeat_line(hb));
        }
        if self.attention.is_empty() {
            let _ = writeln!(s, "\nNothing needs a person.");
        } else {
            let _ = writeln!(s, "\nNeeds attention:");
            for line in &self.attention {
                let _ = writeln!(s, "  - {line}");
            }
        }
        s
    }
}

/// This agent's share of the company's limits and its 429s, on one line
/// (`pos-connector status`, `qbo status`).
pub(crate) fn limiter_line(l: &LimiterStatus) -> String {
    let budget = if l.share >= 1.0 {
        format!(
            "the full limits ({}/s, {}/min, {} batches/min)",
            l.per_second_limit, l.per_minute_limit, l.batch_per_minute_limit
        )
    } else {
        format!(
            "{:.1}/s of {}, {:.0}/min of {}, {:.1} batches/min of {} ({:.0}% of the company's limits; other tills use the rest)",
            l.per_second,
            l.per_second_limit,
            l.per_minute,
            l.per_minute_limit,
            l.batch_per_minute,
            l.batch_per_minute_limit,
            l.share * 100.0
        )
    };
    let throttled = match (l.throttled, l.last_throttled_at) {
        (0, _) => "no 429 yet".to_string(),
        (n, Some(at)) => format!("429s {n}, the last at {}", short_time(at)),
        (n, None) => format!("429s {n}"),
    };
    let paused = if l.paused_ms > 0 {
        format!(", paused for {:.1} s", l.paused_ms as f64 / 1000.0)
    } else {
        String::new()
    };
    format!("{budget}; {throttled}{paused}")
}

fn cache_line(c: &Value) -> String {
    let counts = c
        .get("counts")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let age = c
        .get("age_seconds")
        .and_then(Value::as_i64)
        .map(|a| format!(", refreshed {} ago", human_left(a.max(1))))
        .unwrap_or_else(|| ", never loaded".into());
    format!("{counts}{age}")
}

fn heartbeat_line(hb: &Value) -> String {
    let ok = hb.get("last_ok_at").and_then(Value::as_str);
    let err = hb.get("last_error").and_then(Value::as_str);
    match (ok, err) {
        (_, Some(e)) => format!("FAILING: {e}"),
        (Some(t), None) => format!("ok, last at {t}"),
        (None, None) => "not sent yet".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_left(-5), "expired");
        assert_eq!(human_left(59), "0m 59s");
        assert_eq!(human_left(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(human_left(2 * 86_400 + 3600), "2d 1h");
    }
}
