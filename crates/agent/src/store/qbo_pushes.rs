//! The QuickBooks track of the outbox: one `qbo_pushes` row per job that
//! must reach QuickBooks, beside (not inside) the job's Laravel stages.
//!
//! Why a track of its own: QuickBooks can be throttling, down, or waiting
//! for a person to reconnect for days, and none of that may hold up the
//! tax invoice at JoFotara; and the pusher sends many invoices in one batch
//! request, which a per-job stage machine cannot. The row is created in the
//! transaction of the step that makes the job due (see
//! `Outbox::record_step`), so no sale that reached the push point can be
//! forgotten; it ends as `pushed` with the QuickBooks Id.
//!
//! States: `pending` (due), `retrying` (failed, backing off), `waiting`
//! (held without being charged: QuickBooks throttled us, or needs
//! reconnecting), `parked` (a person must act), `pushed`.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;

use super::{add_event, job_by_id, job_from_row, stamp, Job, Outbox, Stage, StoreError};
use super::{JOB_COLUMNS, JOB_FROM};

/// A job's QuickBooks push as stored.
#[derive(Debug, Clone, Serialize)]
pub struct QboPush {
    pub state: String,
    /// The invoice's Id in QuickBooks, once there.
    pub qbo_id: Option<String>,
    pub attempts: u32,
    #[serde(serialize_with = "super::ser_ms")]
    pub(crate) next_attempt_at: i64,
    pub last_error: Option<String>,
    pub(crate) pushed_at: Option<String>,
}

impl QboPush {
    pub(crate) fn is_pushed(&self) -> bool {
        self.state == "pushed"
    }
}

/// What happened to one push.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum QboUpdate {
    /// In QuickBooks as `qbo_id`.
    Pushed {
        id: i64,
        qbo_id: String,
        detail: String,
    },
    /// Failed (counted); tried again at `next_at`.
    Retry {
        id: i64,
        error: String,
        next_at: DateTime<Utc>,
    },
    /// Held without being charged (throttled, reconnect needed).
    Waiting {
        id: i64,
        reason: String,
        next_at: DateTime<Utc>,
    },
    /// A person must act.
    Parked { id: i64, reason: String },
}

fn apply(conn: &Connection, u: &QboUpdate, now: DateTime<Utc>) -> Result<(), StoreError> {
    let (id, state, charge, text, next_at, event) = match u {
        QboUpdate::Pushed { id, qbo_id, detail } => {
            conn.execute(
                "INSERT INTO qbo_pushes (job_id, push_state, qbo_id, pushed_at, push_updated_at) \
                 VALUES (?1, 'pushed', ?2, ?3, ?3) ON CONFLICT(job_id) DO UPDATE SET \
                 push_state = 'pushed', qbo_id = ?2, pushed_at = ?3, push_updated_at = ?3, \
                 push_error = NULL, push_next_at = 0 WHERE push_state != 'pushed'",
                params![id, qbo_id, stamp(now)],
            )?;
            add_event(conn, *id, now, "qbo_pushed", Some(detail))?;
            return Ok(());
        }
        QboUpdate::Retry { id, error, next_at } => {
            (id, "retrying", true, error, Some(next_at), "qbo_retry")
        }
        QboUpdate::Waiting {
            id,
            reason,
            next_at,
        } => (id, "waiting", false, reason, Some(next_at), "qbo_waiting"),
        QboUpdate::Parked { id, reason } => (id, "parked", true, reason, None, "qbo_parked"),
    };
    let changed = conn.execute(
        "UPDATE qbo_pushes SET push_state = ?2, push_error = ?3, \
         push_attempts = push_attempts + ?4, push_next_at = COALESCE(?5, push_next_at), \
         push_updated_at = ?6 WHERE job_id = ?1 AND push_state != 'pushed'",
        params![
            id,
            state,
            text,
            charge as i64,
            next_at.map(|t| t.timestamp_millis()),
            stamp(now)
        ],
    )?;
    if changed > 0 {
        let detail = match next_at {
            Some(t) => format!("{text}; next attempt at {}", stamp(*t)),
            None => text.to_string(),
        };
        add_event(conn, *id, now, event, Some(&detail))?;
    }
    Ok(())
}

/// Every `push_state`, for counts.
pub(crate) const PUSH_STATES: [&str; 5] = ["pending", "retrying", "waiting", "parked", "pushed"];

/// Makes job `id` due for a push (nothing if it already has a row).
pub(super) fn queue_push(
    conn: &Connection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let added = conn.execute(
        "INSERT OR IGNORE INTO qbo_pushes (job_id, push_state, push_updated_at) \
         VALUES (?1, 'pending', ?2)",
        params![id, stamp(now)],
    )?;
    if added > 0 {
        add_event(conn, id, now, "qbo_queued", Some("due for QuickBooks"))?;
    }
    Ok(added > 0)
}

/// `queue retry`: a push not yet done is made due now. True if one was.
pub(super) fn release_push(
    conn: &Connection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE qbo_pushes SET push_state = 'pending', push_attempts = 0, push_next_at = 0, \
         push_updated_at = ?2 WHERE job_id = ?1 AND push_state != 'pushed'",
        params![id, stamp(now)],
    )?;
    Ok(changed > 0)
}

impl Outbox {
    /// Turns the QuickBooks track on: from now on a job reaching `after`
    /// is queued for a push in the same transaction. `None` turns it off.
    pub fn set_qbo_push_after(&mut self, after: Option<Stage>) {
        self.qbo_push_after = after;
    }

    /// Queues job `id` for a push whatever its stage (`qbo push NUMBER`).
    /// Returns the job; false when it already had a push row.
    pub(crate) fn qbo_queue(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<(Job, bool), StoreError> {
        let tx = self.conn.transaction()?;
        let added = queue_push(&tx, id, now)?;
        let job = job_by_id(&tx, id)?;
        tx.commit()?;
        Ok((job, added))
    }

    /// Pushes due now, oldest first, skipping `busy` jobs.
    pub(crate) fn qbo_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        busy: &[i64],
    ) -> Result<Vec<Job>, StoreError> {
        let busy_json = serde_json::to_string(busy).expect("ids serialise");
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} \
             WHERE push_state IN ('pending', 'retrying', 'waiting') AND push_next_at <= ?1 \
               AND id NOT IN (SELECT value FROM json_each(?2)) \
             ORDER BY push_next_at, id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![now.timestamp_millis(), busy_json, limit as i64],
            job_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every push not yet done and not parked, due or not (`qbo push
    /// --all-pending`).
    pub(crate) fn qbo_pending(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} \
             WHERE push_state IN ('pending', 'retrying', 'waiting') ORDER BY id LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![limit as i64], job_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the earliest waiting push becomes due.
    pub(crate) fn qbo_next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let ms: Option<i64> = self.conn.query_row(
            "SELECT MIN(push_next_at) FROM qbo_pushes \
             WHERE push_state IN ('pending', 'retrying', 'waiting')",
            [],
            |r| r.get(0),
        )?;
        Ok(ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
    }

    /// Records push outcomes, all in one transaction (a batch of 30 is one
    /// fsync, not 30). A push already `pushed` is never changed again.
    pub(crate) fn qbo_record(
        &mut self,
        updates: &[QboUpdate],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for u in updates {
            apply(&tx, u, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes every held (`waiting`) push due now: what held them is over
    /// (QuickBooks was reconnected). Returns how many.
    pub(crate) fn qbo_release_waiting(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE qbo_pushes SET push_next_at = 0, push_updated_at = ?1 \
             WHERE push_state = 'waiting'",
            params![stamp(now)],
        )?)
    }

    /// Pushes in each state (every state listed, zeros included).
    pub fn qbo_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let mut counts: std::collections::BTreeMap<String, u64> =
            PUSH_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT push_state, COUNT(*) FROM qbo_pushes GROUP BY push_state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            counts.insert(state, n as u64);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn outbox_with_job(dir: &std::path::Path) -> (Outbox, i64) {
        let mut o = Outbox::open(dir).unwrap();
        let job = o
            .enqueue(
                &super::super::NewJob {
                    invoice_number: "INV-1".into(),
                    sale_json: "{}".into(),
                    content_hash: "h".into(),
                    source: "test".into(),
                },
                at(0),
            )
            .unwrap();
        let id = job.job().id;
        (o, id)
    }

    #[test]
    fn a_push_is_queued_with_the_step_that_reaches_push_after() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, id) = outbox_with_job(dir.path());
        o.set_qbo_push_after(Some(Stage::Submitted));
        let step = super::super::StepResult::default();
        let job = o
            .record_step(id, Stage::Created, &step, "created", at(1))
            .unwrap();
        assert!(job.qbo.is_none(), "not due before submitted");
        let job = o
            .record_step(id, Stage::Submitted, &step, "submitted", at(2))
            .unwrap();
        assert_eq!(job.qbo.as_ref().unwrap().state, "pending");
        // Later stages do not queue it twice.
        o.record_step(id, Stage::PdfSaved, &step, "pdf", at(3))
            .unwrap();
        assert_eq!(o.qbo_due(at(4), 10, &[]).unwrap().len(), 1);
        assert_eq!(o.qbo_counts().unwrap()["pending"], 1);
    }

    #[test]
    fn retry_wait_park_release_and_pushed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, id) = outbox_with_job(dir.path());
        let (_, added) = o.qbo_queue(id, at(0)).unwrap();
        assert!(added);
        assert!(!o.qbo_queue(id, at(0)).unwrap().1, "queued once");
        let retry = |next| QboUpdate::Retry {
            id,
            error: "503".into(),
            next_at: next,
        };
        let wait = |next| QboUpdate::Waiting {
            id,
            reason: "reconnect needed".into(),
            next_at: next,
        };
        o.qbo_record(&[retry(at(60))], at(1)).unwrap();
        assert!(
            o.qbo_due(at(30), 10, &[]).unwrap().is_empty(),
            "backing off"
        );
        assert_eq!(o.qbo_due(at(60), 10, &[]).unwrap().len(), 1);
        assert_eq!(o.qbo_next_due_at().unwrap(), Some(at(60)));
        o.qbo_record(&[wait(at(120))], at(61)).unwrap();
        assert!(o.qbo_due(at(62), 10, &[]).unwrap().is_empty());
        assert_eq!(o.qbo_release_waiting(at(62)).unwrap(), 1);
        assert_eq!(
            o.qbo_due(at(62), 10, &[]).unwrap().len(),
            1,
            "due again once released"
        );
        o.qbo_record(&[wait(at(120))], at(61)).unwrap();
        let job = o.find("INV-1").unwrap().unwrap();
        let push = job.qbo.unwrap();
        assert_eq!(
            (push.state.as_str(), push.attempts),
            ("waiting", 1),
            "waiting is not charged"
        );
        let park = |why: &str| QboUpdate::Parked {
            id,
            reason: why.into(),
        };
        o.qbo_record(&[park("item missing")], at(62)).unwrap();
        assert!(o.qbo_due(at(1000), 10, &[]).unwrap().is_empty());
        assert!(
            o.qbo_pending(10).unwrap().is_empty(),
            "parked is not pending"
        );
        // The job itself is not done, but `queue retry` releases the push.
        let released = o.retry_all_parked(at(63)).unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].qbo.as_ref().unwrap().state, "pending");
        let pushed = |qbo_id: &str| QboUpdate::Pushed {
            id,
            qbo_id: qbo_id.into(),
            detail: "created".into(),
        };
        o.qbo_record(&[pushed("130")], at(64)).unwrap();
        let push = o.find("INV-1").unwrap().unwrap().qbo.unwrap();
        assert_eq!(push.qbo_id.as_deref(), Some("130"));
        assert!(push.is_pushed());
        // A pushed one is never touched again.
        o.qbo_record(&[park("late"), pushed("999")], at(65))
            .unwrap();
        let push = o.find("INV-1").unwrap().unwrap().qbo.unwrap();
        assert_eq!(
            (push.is_pushed(), push.qbo_id.as_deref()),
            (true, Some("130"))
        );
    }
}
