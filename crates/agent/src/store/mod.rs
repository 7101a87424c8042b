//! The outbox: one SQLite database in `data_dir` holding one row per sale
//! (keyed by `invoice_number`), its progress through the pipeline, and a
//! log of everything that happened to it.
//!
//! Why SQLite with WAL and `synchronous=FULL`: a till can lose power at any
//! instant, and a sale is acknowledged (file archived, HTTP 202) only once
//! its row is on disk. Every state change and its step's result are one
//! transaction, so after a crash a job is exactly where its last committed
//! step left it, and every step is safe to redo from there.
//!
//! [`Outbox`] is the synchronous API (used directly by CLI commands);
//! [`OutboxHandle`] runs it on a dedicated thread so the async runtime's
//! workers never block on disk.
//!
//! Schema changes are versioned with `PRAGMA user_version`: [`MIGRATIONS`]
//! only ever grows, so a later release opens today's database and brings it
//! up to date, and today's release refuses (clearly) a database from a
//! newer one instead of misreading it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;
use serde_json::Value;

mod qbo_cache;
mod qbo_pushes;
mod queue_stats;
mod submits;
pub use qbo_cache::{CacheKind, CacheState};
pub(crate) use qbo_cache::{CacheRow, CacheSynced};
pub(crate) use qbo_pushes::{QboPush, QboUpdate};
pub(crate) use queue_stats::QueueStats;

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "outbox.sqlite3";

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// How long opening the outbox waits for another process holding it.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// Runs `f` again while SQLite says the database is busy, up to
/// [`BUSY_WAIT`]. For the few statements SQLite does not retry itself.
fn retry_while_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_WAIT;
    loop {
        match f() {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(15));
            }
            other => return other,
        }
    }
}

/// Schema migrations, applied in order; index + 1 is the `user_version`
/// they bring the database to. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    // v1: jobs, their event log, and small key/value facts.
    "CREATE TABLE jobs (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        invoice_number  TEXT NOT NULL UNIQUE,
        sale_json       TEXT NOT NULL,
        content_hash    TEXT NOT NULL,
        source          TEXT NOT NULL,
        state           TEXT NOT NULL,
        stage           TEXT NOT NULL,
        laravel_id      INTEGER,
        backend_status  TEXT,
        id_floor        INTEGER,
        in_flight       TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        pdf_path        TEXT,
        receipt_path    TEXT,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs(state, next_attempt_at);
    CREATE TABLE job_events (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id          INTEGER NOT NULL REFERENCES jobs(id),
        at              TEXT NOT NULL,
        event           TEXT NOT NULL,
        detail          TEXT
    );
    CREATE INDEX job_events_by_job ON job_events(job_id, id);
    CREATE TABLE meta (
        key             TEXT PRIMARY KEY,
        value           TEXT NOT NULL
    );",
    // v2: QuickBooks. A job's push is a track of its own beside the Laravel
    // stages (one row per job, created with the step that makes it due), so
    // QuickBooks being down or disconnected never holds up JoFotara; and the
    // JoFotara uuid, which the QuickBooks invoice's note carries.
    "CREATE TABLE qbo_pushes (
        job_id          INTEGER PRIMARY KEY REFERENCES jobs(id),
        push_state      TEXT NOT NULL,
        qbo_id          TEXT,
        push_attempts   INTEGER NOT NULL DEFAULT 0,
        push_next_at    INTEGER NOT NULL DEFAULT 0,
        push_error      TEXT,
        pushed_at       TEXT,
        push_updated_at TEXT NOT NULL
    );
    CREATE INDEX qbo_pushes_due ON qbo_pushes(push_state, push_next_at);
    ALTER TABLE jobs ADD COLUMN uuid TEXT;",
    // v3: the local copy of the QuickBooks company's customers, vendors,
    // items and invoices (searched locally, and spares the push queries);
    // a staging twin so a full load replaces the copy in one swap; and one
    // row of facts (company, last refreshes, last failure).
    "CREATE TABLE qbo_cache (
        entity          TEXT NOT NULL,
        qbo_id          TEXT NOT NULL,
        name            TEXT,
        company_name    TEXT,
        email           TEXT,
        sku             TEXT,
        description     TEXT,
        item_type       TEXT,
        unit_price      TEXT,
        customer_name   TEXT,
        total_amt       TEXT,
        txn_date        TEXT,
        active          INTEGER NOT NULL,
        sync_token      TEXT,
        updated_ms      INTEGER,
        raw_json        TEXT NOT NULL,
        UNIQUE (entity, qbo_id)
    );
    CREATE INDEX qbo_cache_newest ON qbo_cache(entity, updated_ms);
    CREATE TABLE qbo_cache_staging (
        entity          TEXT NOT NULL,
        qbo_id          TEXT NOT NULL,
        name            TEXT,
        company_name    TEXT,
        email           TEXT,
        sku             TEXT,
        description     TEXT,
        item_type       TEXT,
        unit_price      TEXT,
        customer_name   TEXT,
        total_amt       TEXT,
        txn_date        TEXT,
        active          INTEGER NOT NULL,
        sync_token      TEXT,
        updated_ms      INTEGER,
        raw_json        TEXT NOT NULL,
        UNIQUE (entity, qbo_id)
    );
    CREATE TABLE qbo_cache_state (
        id                  INTEGER PRIMARY KEY CHECK (id = 1),
        realm               TEXT,
        synced_from         TEXT,
        last_full_at        TEXT,
        last_incremental_at TEXT,
        last_attempt_at     TEXT,
        last_error          TEXT
    );
    INSERT INTO qbo_cache_state (id) VALUES (1);",
    // v4: exactly once at the edges. Each submit attempt's start, written
    // before it is sent, so an attempt whose answer was lost is not sent
    // again while the backend may still be working on it (across restarts,
    // and between the service and `invoice submit`); per job, the submits
    // that answered `error` (or 5xx) in a row; and whether an earlier create
    // of this job may have reached the backend (only then can an invoice
    // found under its number be this job's own).
    "CREATE TABLE submit_attempts (
        laravel_id      INTEGER PRIMARY KEY,
        started_at      INTEGER NOT NULL,
        check_after     INTEGER NOT NULL,
        settled         INTEGER NOT NULL DEFAULT 0,
        started_by      TEXT NOT NULL
    );
    ALTER TABLE jobs ADD COLUMN submit_errors INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN lost_create INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET lost_create = 1 WHERE in_flight IN ('create', 'recover');
    INSERT OR IGNORE INTO submit_attempts (laravel_id, started_at, check_after, started_by)
        SELECT laravel_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000,
               (CAST(strftime('%s', 'now') AS INTEGER) + 90) * 1000, 'service'
        FROM jobs WHERE in_flight = 'submit' AND laravel_id IS NOT NULL;",
];

/// Where a job is in the life of a sale (design.md). `stage` is how far it
/// got; `state` is what people see: the stage, or `retrying`/`parked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs, reason = "the variant names say what they are")]
pub enum Stage {
    Queued,
    Created,
    Submitted,
    PdfSaved,
    Done,
}

impl Stage {
    pub(crate) const ALL: [Stage; 5] = [
        Stage::Queued,
        Stage::Created,
        Stage::Submitted,
        Stage::PdfSaved,
        Stage::Done,
    ];

    /// The stage as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Created => "created",
            Stage::Submitted => "submitted",
            Stage::PdfSaved => "pdf_saved",
            Stage::Done => "done",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Every value of the `state` column, for `queue list --state`.
pub(crate) const STATES: [&str; 7] = [
    "queued",
    "created",
    "submitted",
    "pdf_saved",
    "done",
    "retrying",
    "parked",
];

/// Why the outbox could not be opened, migrated, read or written.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum StoreError {
    #[error("cannot create the data folder {}: {source}", .path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the outbox database {} cannot be used: {source}; check the disk and the folder's permissions", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the outbox database {} was written by a newer pos-connector (schema v{found}, this release knows up to v{known}); upgrade the agent, or restore the previous data folder", .path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("outbox database error: {0}; if it persists, check the disk (space, permissions)")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the outbox's database thread has stopped; restart the agent")]
    Closed,
    #[error("no job {0} in the outbox (`pos-connector queue list` shows them)")]
    NoSuchJob(String),
}

/// A sale to put in the outbox.
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct NewJob {
    pub invoice_number: String,
    /// The canonical sale, as JSON.
    pub sale_json: String,
    /// Tells "the same sale sent again" from "another sale with this number".
    pub content_hash: String,
    /// Where it came from: `inbox:<file>`, `http`, `cli`.
    pub source: String,
}

/// One job as stored.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct Job {
    pub id: i64,
    pub invoice_number: String,
    pub state: String,
    pub stage: Stage,
    pub laravel_id: Option<u64>,
    pub backend_status: Option<String>,
    /// The invoice's JoFotara uuid, as the backend gave it at create.
    pub uuid: Option<String>,
    /// Its QuickBooks push, when QuickBooks is enabled and the job got far
    /// enough (`quickbooks.push_after`).
    pub qbo: Option<QboPush>,
    /// Highest backend invoice id seen before the first create attempt:
    /// a lost create's invoice has a larger id.
    pub(crate) id_floor: Option<u64>,
    /// The step begun and not yet recorded (`create`, `submit`): after a
    /// crash, its outcome at the backend is unknown and must be checked.
    /// `recover`: the backend said the number is taken; the invoice an
    /// earlier create made is being looked for.
    pub in_flight: Option<String>,
    pub attempts: u32,
    /// Submits in a row that answered `error` (or failed with a 5xx while
    /// the backend otherwise worked); at `pipeline.max_submit_errors` the
    /// job is parked.
    pub submit_errors: u32,
    /// An earlier create of this job may have reached the backend (its
    /// answer was lost, or the agent stopped mid-call): only then may an
    /// invoice found under its number be adopted as this job's own.
    pub lost_create: bool,
    #[serde(serialize_with = "ser_ms")]
    pub(crate) next_attempt_at: i64,
    pub last_error: Option<String>,
    pub pdf_path: Option<String>,
    pub receipt_path: Option<String>,
    pub(crate) source: String,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    #[serde(skip)]
    pub content_hash: String,
    #[serde(rename = "sale", serialize_with = "ser_sale")]
    pub sale_json: String,
}

fn ser_ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    if *ms <= 0 {
        return s.serialize_none();
    }
    match Utc.timestamp_millis_opt(*ms).single() {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => s.serialize_i64(*ms),
    }
}

fn ser_sale<S: serde::Serializer>(json: &str, s: S) -> Result<S::Ok, S::Error> {
    let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    v.serialize(s)
}

/// One line of a job's log.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct JobEvent {
    pub(crate) at: String,
    pub event: String,
    pub detail: Option<String>,
}

/// What putting a sale in the outbox did.
#[derive(Debug, Clone)]
pub enum Enqueued {
    /// A new job, committed.
    New(Job),
    /// The same sale was already there: nothing changed.
    Duplicate(Job),
    /// Another sale already holds this invoice number: nothing changed.
    Conflict(Job),
}

impl Enqueued {
    /// The job, whichever way enqueueing went.
    pub fn job(&self) -> &Job {
        match self {
            Enqueued::New(j) | Enqueued::Duplicate(j) | Enqueued::Conflict(j) => j,
        }
    }
}

/// A step's result, recorded with the job's new stage in one transaction.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct StepResult {
    pub laravel_id: Option<u64>,
    pub uuid: Option<String>,
    pub backend_status: Option<String>,
    pub pdf_path: Option<String>,
}

const JOB_COLUMNS: &str =
    "id, invoice_number, state, stage, laravel_id, backend_status, id_floor, \
     in_flight, attempts, next_attempt_at, last_error, pdf_path, receipt_path, source, created_at, \
     updated_at, content_hash, sale_json, uuid, push_state, qbo_id, push_attempts, push_next_at, \
     push_error, pushed_at, submit_errors, lost_create";

/// Jobs with their QuickBooks push, if any (column names do not clash).
const JOB_FROM: &str = "jobs LEFT JOIN qbo_pushes ON qbo_pushes.job_id = jobs.id";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let stage: String = row.get(3)?;
    Ok(Job {
        id: row.get(0)?,
        invoice_number: row.get(1)?,
        state: row.get(2)?,
        stage: Stage::parse(&stage).unwrap_or(Stage::Queued),
        laravel_id: row.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        backend_status: row.get(5)?,
        id_floor: row.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        in_flight: row.get(7)?,
        attempts: row.get::<_, i64>(8)? as u32,
        next_attempt_at: row.get(9)?,
        last_error: row.get(10)?,
        pdf_path: row.get(11)?,
        receipt_path: row.get(12)?,
        source: row.get(13)?,
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
        content_hash: row.get(16)?,
        sale_json: row.get(17)?,
        uuid: row.get(18)?,
        submit_errors: row.get::<_, i64>(25)? as u32,
        lost_create: row.get::<_, i64>(26)? != 0,
        qbo: match row.get::<_, Option<String>>(19)? {
            None => None,
            Some(state) => Some(QboPush {
                state,
                qbo_id: row.get(20)?,
                attempts: row.get::<_, i64>(21)? as u32,
                next_attempt_at: row.get(22)?,
                last_error: row.get(23)?,
                pushed_at: row.get(24)?,
            }),
        },
    })
}

fn stamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub(crate) state: Option<String>,
    pub(crate) limit: Option<usize>,
}

/// The outbox database (synchronous).
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    /// With QuickBooks enabled: the stage from which a job is pushed.
    qbo_push_after: Option<Stage>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish()
    }
}

impl Outbox {
    /// Opens (creating if needed) `data_dir/outbox.sqlite3` and brings its
    /// schema up to date.
    pub fn open(data_dir: &Path) -> Result<Outbox, StoreError> {
        crate::fsutil::create_private_dir(data_dir).map_err(|source| StoreError::Folder {
            path: data_dir.to_path_buf(),
            source,
        })?;
        Outbox::open_file(&data_dir.join(DB_FILE))
    }

    pub(crate) fn open_file(path: &Path) -> Result<Outbox, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        precreate_private(path);
        let conn = Connection::open(path).map_err(open_err)?;
        // WAL: readers (CLI `queue list`) never block the service's writes.
        // synchronous=FULL: a commit is on disk before we acknowledge a sale.
        conn.busy_timeout(BUSY_WAIT).map_err(open_err)?;
        // Switching to WAL needs an exclusive lock, and SQLite answers BUSY
        // at once (without its busy handler) when two first opens race for
        // it, so the service and a CLI command starting together would fail.
        // Wait it out ourselves within the same bound.
        retry_while_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let mut outbox = Outbox {
            conn,
            path: path.to_path_buf(),
            qbo_push_after: None,
        };
        outbox.migrate()?;
        Ok(outbox)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version this database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        retry_while_busy(|| match self.migrate_once() {
            Err(StoreError::Sqlite(e)) if is_busy(&e) => Err(e),
            other => Ok(other),
        })
        .map_err(|source| StoreError::Open { path, source })?
    }

    fn migrate_once(&mut self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        // IMMEDIATE: the version is read and the schema changed under one
        // write lock, so a CLI command opening the outbox while the service
        // starts cannot run the same migration twice.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for sql in MIGRATIONS.iter().skip(found as usize) {
            tx.execute_batch(sql)?;
        }
        if found < known {
            // PRAGMA does not take parameters; the value is our own integer.
            tx.execute_batch(&format!("PRAGMA user_version = {known}"))?;
        }
        tx.commit()?;
        if found < known {
            tracing::info!(from = found, to = known, path = %self.path.display(), "outbox schema migrated");
        }
        Ok(())
    }

    /// Puts one sale in the outbox (see [`Outbox::enqueue_all`]).
    pub fn enqueue(&mut self, job: &NewJob, now: DateTime<Utc>) -> Result<Enqueued, StoreError> {
        Ok(self
            .enqueue_all(std::slice::from_ref(job), now)?
            .pop()
            .expect("one result per job"))
    }

    /// Puts the sales of one input (a file, a request) in the outbox in one
    /// transaction: all of them or, if any number is already held by a
    /// different sale, none (the results then contain the conflicts and
    /// nothing was written). A sale already there unchanged is a no-op.
    pub fn enqueue_all(
        &mut self,
        jobs: &[NewJob],
        now: DateTime<Utc>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut results = Vec::with_capacity(jobs.len());
        let mut conflict = false;
        for job in jobs {
            let existing = find_job(&tx, &job.invoice_number)?;
            let result = match existing {
                Some(j) if j.content_hash == job.content_hash => Enqueued::Duplicate(j),
                Some(j) => {
                    conflict = true;
                    Enqueued::Conflict(j)
                }
                None => {
                    let at = stamp(now);
                    tx.execute(
                        "INSERT INTO jobs (invoice_number, sale_json, content_hash, source, state, \
                         stage, next_attempt_at, created_at, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, 'queued', 'queued', 0, ?5, ?5)",
                        params![
                            job.invoice_number,
                            job.sale_json,
                            job.content_hash,
                            job.source,
                            at
                        ],
                    )?;
                    let id = tx.last_insert_rowid();
                    add_event(
                        &tx,
                        id,
                        now,
                        "queued",
                        Some(&format!("from {}", job.source)),
                    )?;
                    Enqueued::New(find_job(&tx, &job.invoice_number)?.expect("just inserted"))
                }
            };
            results.push(result);
        }
        if conflict {
            tx.rollback()?;
        } else {
            tx.commit()?;
        }
        Ok(results)
    }

    /// A job by its number in the outbox (`#12`, `12`) or its invoice number.
    pub fn find(&self, key: &str) -> Result<Option<Job>, StoreError> {
        if let Some(j) = find_job(&self.conn, key)? {
            return Ok(Some(j));
        }
        let Ok(id) = key.trim().trim_start_matches('#').parse::<i64>() else {
            return Ok(None);
        };
        find_job_by_id(&self.conn, id)
    }

    /// Jobs, newest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Job>, StoreError> {
        let limit = filter.limit.map(|l| l as i64).unwrap_or(-1);
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE (?1 IS NULL OR state = ?1) \
             ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![filter.state, limit], job_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of jobs in each state (every state listed, zeros included).
    pub fn counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut counts: BTreeMap<String, u64> = STATES.iter().map(|s| (s.to_string(), 0)).collect();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            counts.insert(state, n as u64);
        }
        Ok(counts)
    }

    /// A job's log, oldest first.
    pub fn events(&self, job_id: i64) -> Result<Vec<JobEvent>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, event, detail FROM job_events WHERE job_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([job_id], |r| {
            Ok(JobEvent {
                at: r.get(0)?,
                event: r.get(1)?,
                detail: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Jobs whose next step is due, oldest first, skipping `busy` (in
    /// flight) ones. With `stop_at_created` (auto-submit off) a created
    /// invoice has nothing left to do.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        busy: &[i64],
        stop_at_created: bool,
    ) -> Result<Vec<Job>, StoreError> {
        let busy_json = serde_json::to_string(busy).expect("ids serialise");
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} \
             WHERE state NOT IN ('done', 'parked') AND next_attempt_at <= ?1 \
               AND NOT (?2 AND stage = 'created') \
               AND id NOT IN (SELECT value FROM json_each(?3)) \
             ORDER BY next_attempt_at, id LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![
                now.timestamp_millis(),
                stop_at_created,
                busy_json,
                limit as i64
            ],
            job_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest job (the sale that came in last) whose next step is due,
    /// skipping `busy`: the pipeline keeps one of its slots for it, so a
    /// sale rung up while a day's backlog drains is not queued behind it.
    pub(crate) fn newest_due(
        &self,
        now: DateTime<Utc>,
        busy: &[i64],
        stop_at_created: bool,
    ) -> Result<Option<Job>, StoreError> {
        let busy_json = serde_json::to_string(busy).expect("ids serialise");
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM {JOB_FROM} \
                 WHERE state NOT IN ('done', 'parked') AND next_attempt_at <= ?1 \
                   AND NOT (?2 AND stage = 'created') \
                   AND id NOT IN (SELECT value FROM json_each(?3)) \
                 ORDER BY id DESC LIMIT 1"
            ))?
            .query_row(
                params![now.timestamp_millis(), stop_at_created, busy_json],
                job_from_row,
            )
            .optional()?)
    }

    /// When the earliest waiting job becomes due (for the worker's timer).
    pub(crate) fn next_due_at(
        &self,
        busy: &[i64],
        stop_at_created: bool,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let busy_json = serde_json::to_string(busy).expect("ids serialise");
        let ms: Option<i64> = self.conn.query_row(
            "SELECT MIN(next_attempt_at) FROM jobs \
             WHERE state NOT IN ('done', 'parked') AND NOT (?1 AND stage = 'created') \
               AND id NOT IN (SELECT value FROM json_each(?2))",
            params![stop_at_created, busy_json],
            |r| r.get(0),
        )?;
        Ok(ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
    }

    /// Records a finished step: the job moves to `stage` with the step's
    /// results, its retry count resets, and the log says what happened.
    pub fn record_step(
        &mut self,
        id: i64,
        stage: Stage,
        result: &StepResult,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE jobs SET stage = ?2, state = ?2, attempts = 0, next_attempt_at = 0, \
             last_error = NULL, in_flight = NULL, submit_errors = 0, \
             laravel_id = COALESCE(?3, laravel_id), \
             backend_status = COALESCE(?4, backend_status), pdf_path = COALESCE(?5, pdf_path), \
             updated_at = ?6, uuid = COALESCE(?7, uuid) WHERE id = ?1",
            params![
                id,
                stage.as_str(),
                result.laravel_id.map(|v| v as i64),
                result.backend_status,
                result.pdf_path,
                stamp(now),
                result.uuid,
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NoSuchJob(format!("#{id}")));
        }
        if let Some(lid) = result.laravel_id {
            raise_max_seen_id(&tx, lid)?;
        }
        if stage == Stage::Submitted {
            // The submit's outcome is known, settled in the step's own
            // transaction: never "settled" without the step recorded.
            submits::settle_job(&tx, id)?;
        }
        add_event(&tx, id, now, stage.as_str(), Some(detail))?;
        if self.qbo_push_after.is_some_and(|after| stage >= after) {
            // In the same transaction as the step: a sale that reached the
            // push point is never forgotten by QuickBooks.
            qbo_pushes::queue_push(&tx, id, now)?;
        }
        let job = job_by_id(&tx, id)?;
        tx.commit()?;
        Ok(job)
    }

    /// Records a failed attempt that will be retried at `next_at`.
    pub(crate) fn record_retry(
        &mut self,
        id: i64,
        error: &str,
        next_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        self.record_failure(id, error, next_at, now, false)
    }

    /// [`Outbox::record_retry`] for a submit that answered `error` (or a
    /// 5xx): also counts it in [`Job::submit_errors`].
    pub(crate) fn record_submit_error(
        &mut self,
        id: i64,
        error: &str,
        next_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        self.record_failure(id, error, next_at, now, true)
    }

    fn record_failure(
        &mut self,
        id: i64,
        error: &str,
        next_at: DateTime<Utc>,
        now: DateTime<Utc>,
        submit_error: bool,
    ) -> Result<Job, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET state = 'retrying', attempts = attempts + 1, next_attempt_at = ?2, \
             last_error = ?3, updated_at = ?4, submit_errors = submit_errors + ?5 WHERE id = ?1",
            params![
                id,
                next_at.timestamp_millis(),
                error,
                stamp(now),
                submit_error as i64
            ],
        )?;
        let job = job_by_id(&tx, id)?;
        add_event(
            &tx,
            id,
            now,
            "retry",
            Some(&format!(
                "attempt {} failed: {error}; next attempt at {}",
                job.attempts,
                stamp(next_at)
            )),
        )?;
        tx.commit()?;
        Ok(job)
    }

    /// Delays a job without counting a failed attempt (the backend as a
    /// whole is unavailable, or the agent is stopping mid-step).
    pub(crate) fn postpone(
        &mut self,
        id: i64,
        reason: &str,
        next_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET next_attempt_at = ?2, last_error = ?3, updated_at = ?4, \
             state = CASE WHEN attempts > 0 THEN 'retrying' ELSE state END WHERE id = ?1",
            params![id, next_at.timestamp_millis(), reason, stamp(now)],
        )?;
        add_event(&tx, id, now, "postponed", Some(reason))?;
        tx.commit()?;
        Ok(())
    }

    /// Stops a job until a person acts; the reason says what to do.
    pub fn park(&mut self, id: i64, reason: &str, now: DateTime<Utc>) -> Result<Job, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET state = 'parked', attempts = attempts + 1, last_error = ?2, \
             updated_at = ?3 WHERE id = ?1",
            params![id, reason, stamp(now)],
        )?;
        add_event(&tx, id, now, "parked", Some(reason))?;
        let job = job_by_id(&tx, id)?;
        tx.commit()?;
        Ok(job)
    }

    /// Makes a parked or waiting job due now (`queue retry`). A done job is
    /// left alone. Returns the job, or `None` when there was nothing to do.
    pub fn retry_now(&mut self, id: i64, now: DateTime<Utc>) -> Result<Option<Job>, StoreError> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            // A released job that was searching for a lost create tries the
            // create again (the person may have freed the number); a submit
            // in flight keeps its mark, so its status is still checked first.
            "UPDATE jobs SET state = stage, attempts = 0, next_attempt_at = 0, updated_at = ?2, \
             submit_errors = 0, \
             in_flight = CASE WHEN in_flight = 'recover' THEN NULL ELSE in_flight END \
             WHERE id = ?1 AND state != 'done'",
            params![id, stamp(now)],
        )?;
        let push_released = qbo_pushes::release_push(&tx, id, now)?;
        if changed == 0 && !push_released {
            return Ok(None);
        }
        add_event(&tx, id, now, "retry_requested", Some("by an operator"))?;
        let job = job_by_id(&tx, id)?;
        tx.commit()?;
        Ok(Some(job))
    }

    /// `queue retry --all-parked`: the jobs released.
    pub fn retry_all_parked(&mut self, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        let ids: Vec<i64> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM jobs WHERE state = 'parked' OR id IN \
                     (SELECT job_id FROM qbo_pushes WHERE push_state = 'parked') ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut released = Vec::new();
        for id in ids {
            if let Some(j) = self.retry_now(id, now)? {
                released.push(j);
            }
        }
        Ok(released)
    }

    /// Marks `step` as begun, durably, before its request is sent, so a
    /// crash mid-call leaves a trace the next attempt checks. Before the
    /// first create it also remembers the highest backend id seen so far
    /// (see [`Job::id_floor`]); a create begun while an earlier one is still
    /// marked (its outcome never learnt) sets [`Job::lost_create`]. Returns
    /// the job as it now is.
    pub fn begin_step(&mut self, id: i64, step: &str) -> Result<Job, StoreError> {
        let tx = self.conn.transaction()?;
        let floor = max_seen_id(&tx)?;
        tx.execute(
            "UPDATE jobs SET \
             lost_create = CASE WHEN ?2 = 'create' AND in_flight = 'create' THEN 1 \
                           ELSE lost_create END, \
             in_flight = ?2, \
             id_floor = CASE WHEN ?2 = 'create' THEN COALESCE(id_floor, ?3) ELSE id_floor END \
             WHERE id = ?1",
            params![id, step, floor as i64],
        )?;
        let job = job_by_id(&tx, id)?;
        tx.commit()?;
        Ok(job)
    }

    pub(crate) fn set_receipt_path(&mut self, id: i64, path: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE jobs SET receipt_path = ?2 WHERE id = ?1",
            params![id, path],
        )?;
        Ok(())
    }

    /// Jobs that have no receipt yet (rendered after a restart).
    pub fn without_receipt(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE receipt_path IS NULL ORDER BY id LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], job_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The highest backend invoice id the agent has seen.
    pub fn max_seen_id(&self) -> Result<u64, StoreError> {
        max_seen_id(&self.conn)
    }

    pub(crate) fn note_seen_id(&mut self, id: u64) -> Result<(), StoreError> {
        raise_max_seen_id(&self.conn, id)
    }
}

/// Creates the database file with mode 0600 before SQLite opens it (SQLite
/// gives its -wal and -shm files the same mode): sales hold customer data.
fn precreate_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path);
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn find_job(conn: &Connection, invoice_number: &str) -> Result<Option<Job>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE invoice_number = ?1"),
            [invoice_number],
            job_from_row,
        )
        .optional()?)
}

fn find_job_by_id(conn: &Connection, id: i64) -> Result<Option<Job>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE id = ?1"),
            [id],
            job_from_row,
        )
        .optional()?)
}

fn job_by_id(conn: &Connection, id: i64) -> Result<Job, StoreError> {
    find_job_by_id(conn, id)?.ok_or_else(|| StoreError::NoSuchJob(format!("#{id}")))
}

fn add_event(
    conn: &Connection,
    job_id: i64,
    now: DateTime<Utc>,
    event: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO job_events (job_id, at, event, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![job_id, stamp(now), event, detail])?;
    Ok(())
}

const MAX_SEEN_ID: &str = "laravel_max_seen_id";

fn max_seen_id(conn: &Connection) -> Result<u64, StoreError> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [MAX_SEEN_ID],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
}

fn raise_max_seen_id(conn: &Connection, id: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE \
         SET value = CASE WHEN CAST(excluded.value AS INTEGER) > CAST(value AS INTEGER) \
         THEN excluded.value ELSE value END",
        params![MAX_SEEN_ID, id.to_string()],
    )?;
    Ok(())
}

type Task = Box<dyn FnOnce(&mut Outbox) + Send>;

/// The outbox on its own thread: async callers send it closures and await
/// the answer, so SQLite's fsyncs never stall the runtime's workers.
#[derive(Clone)]
pub struct OutboxHandle {
    tx: mpsc::Sender<Task>,
    path: PathBuf,
}

impl std::fmt::Debug for OutboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl OutboxHandle {
    /// Opens the outbox and starts its thread. The thread ends when the
    /// last handle is dropped.
    pub fn open(data_dir: &Path) -> Result<OutboxHandle, StoreError> {
        OutboxHandle::start(Outbox::open(data_dir)?)
    }

    /// Moves the outbox to its own thread; calls then go through the handle.
    pub fn start(mut outbox: Outbox) -> Result<OutboxHandle, StoreError> {
        let (tx, rx) = mpsc::channel::<Task>();
        let path = outbox.path().to_path_buf();
        std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || {
                for task in rx {
                    task(&mut outbox);
                }
            })
            .map_err(|source| StoreError::Folder {
                path: path.clone(),
                source,
            })?;
        Ok(OutboxHandle { tx, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the outbox's thread.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Outbox) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move |outbox: &mut Outbox| {
                let _ = reply.send(f(outbox));
            }))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: &str, hash: &str) -> NewJob {
        NewJob {
            invoice_number: n.into(),
            sale_json: format!("{{\"invoice_number\":\"{n}\"}}"),
            content_hash: hash.into(),
            source: "test".into(),
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn enqueue_is_idempotent_and_conflicts_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        assert!(matches!(
            o.enqueue(&job("A", "h1"), at(0)).unwrap(),
            Enqueued::New(_)
        ));
        assert!(matches!(
            o.enqueue(&job("A", "h1"), at(1)).unwrap(),
            Enqueued::Duplicate(_)
        ));
        // A batch with one conflicting sale commits none of its sales.
        let r = o
            .enqueue_all(&[job("B", "h2"), job("A", "other")], at(2))
            .unwrap();
        assert!(matches!(r[1], Enqueued::Conflict(_)));
        assert!(o.find("B").unwrap().is_none());
        assert_eq!(o.counts().unwrap()["queued"], 1);
    }

    #[test]
    fn steps_retries_parking_and_due_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        let a = o.enqueue(&job("A", "h"), at(0)).unwrap().job().clone();
        let b = o.enqueue(&job("B", "h"), at(0)).unwrap().job().clone();
        assert_eq!(o.due(at(0), 10, &[], false).unwrap().len(), 2);
        assert_eq!(o.due(at(0), 10, &[a.id], false).unwrap().len(), 1);

        let begun = o.begin_step(a.id, "create").unwrap();
        assert_eq!(
            (begun.id_floor, begun.in_flight.as_deref()),
            (Some(0), Some("create"))
        );
        let a = o
            .record_step(
                a.id,
                Stage::Created,
                &StepResult {
                    laravel_id: Some(41),
                    ..Default::default()
                },
                "created",
                at(1),
            )
            .unwrap();
        assert_eq!((a.state.as_str(), a.laravel_id), ("created", Some(41)));
        assert_eq!(a.in_flight, None);
        assert_eq!(o.max_seen_id().unwrap(), 41);
        o.note_seen_id(7).unwrap();
        assert_eq!(o.max_seen_id().unwrap(), 41, "never lowered");
        // Auto-submit off: a created job has nothing left to do.
        assert_eq!(o.due(at(1), 10, &[], true).unwrap().len(), 1);

        let b = o.record_retry(b.id, "HTTP 500", at(60), at(2)).unwrap();
        assert_eq!((b.state.as_str(), b.attempts), ("retrying", 1));
        assert!(o.due(at(30), 10, &[a.id], false).unwrap().is_empty());
        assert_eq!(o.next_due_at(&[a.id], false).unwrap(), Some(at(60)));
        let b = o.park(b.id, "rejected by JoFotara", at(3)).unwrap();
        assert_eq!(b.state, "parked");
        assert!(o.due(at(100), 10, &[a.id], false).unwrap().is_empty());
        let released = o.retry_all_parked(at(4)).unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].state, "queued");
        let events: Vec<String> = o
            .events(b.id)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(events, ["queued", "retry", "parked", "retry_requested"]);
        assert_eq!(o.find("#1").unwrap().unwrap().invoice_number, "A");

        // Released by a person: a lost-create search starts over with a
        // create; a submit in flight keeps its mark (status checked first).
        o.begin_step(b.id, "recover").unwrap();
        let b = o.retry_now(b.id, at(5)).unwrap().unwrap();
        assert_eq!(b.in_flight, None);
        o.begin_step(a.id, "submit").unwrap();
        let a = o.retry_now(a.id, at(5)).unwrap().unwrap();
        assert_eq!(a.in_flight.as_deref(), Some("submit"));
    }

    #[test]
    fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path()).unwrap();
            o.enqueue(&job("A", "h"), at(0)).unwrap();
        }
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert!(o.find("A").unwrap().is_some());
        o.conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(o);
        let err = Outbox::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("newer pos-connector"));
    }

    #[test]
    fn concurrent_first_opens_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || Outbox::open(&d).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn the_handle_runs_calls_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let h = OutboxHandle::open(dir.path()).unwrap();
        let thread = h
            .call(|_| Ok(std::thread::current().name().map(str::to_string)))
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("outbox"));
        let r = h.call(|o| o.enqueue(&job("A", "h"), at(0))).await.unwrap();
        assert!(matches!(r, Enqueued::New(_)));
    }
}
