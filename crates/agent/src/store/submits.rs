//! Submit attempts, by backend invoice id: when each started and whether
//! its outcome is known.
//!
//! Why: the real backend has no guard against resubmitting, and a submit
//! keeps running after its client has gone (PHP finishes the request; the
//! status leaves `draft` only when JoFotara has answered, seconds later).
//! So after an attempt whose answer was lost, a status read can say
//! `draft` while the first submit is still in flight, and submitting again
//! would send the invoice to JoFotara twice. The start of every attempt is
//! written here *before* the request is sent; an attempt whose outcome is
//! unknown is "unsettled", and nobody (the service or `invoice submit`)
//! sends that invoice again before its `check_after`: the start plus
//! `pipeline.submit_settle_seconds`, longer than the backend can still be
//! working on it (PHP's 30 s limit, nginx's 60 s). Then the status decides:
//! only a status still `draft` allows another submit.
//!
//! An attempt is settled when its outcome is recorded: in the transaction
//! of the job's `submitted` step, or after a park or a retry has been
//! written. Settling never precedes the record, so a crash in between
//! leaves the attempt unsettled (the cautious side).

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{job_by_id, Job, Outbox, StoreError};

/// One submit attempt whose outcome is not known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmitAttempt {
    pub(crate) laravel_id: u64,
    pub started_at: DateTime<Utc>,
    /// Before this, the backend may still be working on the attempt: no
    /// status read can tell "not submitted" from "not finished".
    pub check_after: DateTime<Utc>,
    /// `service` or `cli`.
    pub(crate) started_by: String,
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(super) fn settle(conn: &Connection, laravel_id: u64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE submit_attempts SET settled = 1 WHERE laravel_id = ?1")?
        .execute([laravel_id as i64])?;
    Ok(())
}

/// Settles the attempt of job `id`'s invoice (inside the step's transaction).
pub(super) fn settle_job(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE submit_attempts SET settled = 1 \
         WHERE laravel_id = (SELECT laravel_id FROM jobs WHERE id = ?1)",
    )?
    .execute([id])?;
    Ok(())
}

impl Outbox {
    /// Records, durably, that a submit of `laravel_id` starts now and may
    /// run until `check_after`; with `job`, marks that job's submit in
    /// flight in the same transaction. Replaces an earlier attempt's row
    /// (its outcome was learnt before this one was allowed to start).
    pub fn begin_submit(
        &mut self,
        job: Option<i64>,
        laravel_id: u64,
        started_by: &str,
        now: DateTime<Utc>,
        check_after: DateTime<Utc>,
    ) -> Result<Option<Job>, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO submit_attempts (laravel_id, started_at, check_after, settled, started_by) \
             VALUES (?1, ?2, ?3, 0, ?4) ON CONFLICT(laravel_id) DO UPDATE SET \
             started_at = ?2, check_after = ?3, settled = 0, started_by = ?4",
            params![
                laravel_id as i64,
                now.timestamp_millis(),
                check_after.timestamp_millis(),
                started_by
            ],
        )?;
        let job = match job {
            Some(id) => {
                tx.execute("UPDATE jobs SET in_flight = 'submit' WHERE id = ?1", [id])?;
                Some(job_by_id(&tx, id)?)
            }
            None => None,
        };
        tx.commit()?;
        Ok(job)
    }

    /// The attempt on `laravel_id` whose outcome is unknown, if any.
    pub fn unsettled_submit(&self, laravel_id: u64) -> Result<Option<SubmitAttempt>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT started_at, check_after, started_by FROM submit_attempts \
                 WHERE laravel_id = ?1 AND settled = 0",
            )?
            .query_row([laravel_id as i64], |r| {
                Ok(SubmitAttempt {
                    laravel_id,
                    started_at: at_ms(r.get(0)?),
                    check_after: at_ms(r.get(1)?),
                    started_by: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Whether invoice `laravel_id` was ever submitted from here (its
    /// attempts settled or not): a new submit then reads the status first
    /// (a `rejected` invoice released by `queue retry` is not sent again).
    pub(crate) fn submitted_before(&self, laravel_id: u64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM submit_attempts WHERE laravel_id = ?1")?
            .query_row([laravel_id as i64], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The attempt was answered, but not with an outcome we could read (a
    /// 5xx from the application, an unreadable body): the request is over,
    /// so the status can be read at once, but it must be read before any
    /// new submit.
    pub(crate) fn submit_answered(
        &mut self,
        laravel_id: u64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE submit_attempts SET check_after = MIN(check_after, ?2) \
                 WHERE laravel_id = ?1 AND settled = 0",
            )?
            .execute(params![laravel_id as i64, now.timestamp_millis()])?;
        Ok(())
    }

    /// The attempt's outcome is known and recorded (or it never reached
    /// the backend).
    pub(crate) fn settle_submit(&mut self, laravel_id: u64) -> Result<(), StoreError> {
        settle(&self.conn, laravel_id)
    }

    /// Forgets that job `id`'s step is in flight: its request certainly did
    /// not take effect (the connection was refused, the backend said no).
    pub(crate) fn end_step(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE jobs SET in_flight = NULL WHERE id = ?1", [id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NewJob, Stage, StepResult};
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn an_attempt_is_unsettled_until_its_outcome_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        let job = o
            .enqueue(
                &NewJob {
                    invoice_number: "A".into(),
                    sale_json: "{}".into(),
                    content_hash: "h".into(),
                    source: "test".into(),
                },
                at(0),
            )
            .unwrap()
            .job()
            .clone();
        o.record_step(
            job.id,
            Stage::Created,
            &StepResult {
                laravel_id: Some(7),
                ..Default::default()
            },
            "created",
            at(1),
        )
        .unwrap();
        assert_eq!(o.unsettled_submit(7).unwrap(), None);
        let begun = o
            .begin_submit(Some(job.id), 7, "service", at(2), at(92))
            .unwrap()
            .unwrap();
        assert_eq!(begun.in_flight.as_deref(), Some("submit"));
        let a = o.unsettled_submit(7).unwrap().unwrap();
        assert_eq!((a.started_at, a.check_after), (at(2), at(92)));
        // Answered without a readable outcome: the status may be read now.
        o.submit_answered(7, at(3)).unwrap();
        assert_eq!(o.unsettled_submit(7).unwrap().unwrap().check_after, at(3));
        // A reopened outbox still knows (across restarts).
        drop(o);
        let mut o = Outbox::open(dir.path()).unwrap();
        assert!(o.unsettled_submit(7).unwrap().is_some());
        o.record_step(
            job.id,
            Stage::Submitted,
            &StepResult::default(),
            "ok",
            at(4),
        )
        .unwrap();
        assert_eq!(
            o.unsettled_submit(7).unwrap(),
            None,
            "settled with the step"
        );
        // Another attempt (a person's `invoice submit`) on an id no job has.
        o.begin_submit(None, 99, "cli", at(5), at(95)).unwrap();
        assert_eq!(o.unsettled_submit(99).unwrap().unwrap().started_by, "cli");
        o.settle_submit(99).unwrap();
        assert_eq!(o.unsettled_submit(99).unwrap(), None);
    }

    #[test]
    fn a_create_begun_over_an_unfinished_one_marks_a_possible_lost_create() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        let new = |n: &str| NewJob {
            invoice_number: n.into(),
            sale_json: "{}".into(),
            content_hash: "h".into(),
            source: "test".into(),
        };
        let a = o.enqueue(&new("A"), at(0)).unwrap().job().id;
        let b = o.enqueue(&new("B"), at(0)).unwrap().job().id;
        // A: the first create's outcome was never learnt.
        assert!(!o.begin_step(a, "create").unwrap().lost_create);
        assert!(o.begin_step(a, "create").unwrap().lost_create);
        // B: the first create certainly failed (connection refused).
        o.begin_step(b, "create").unwrap();
        o.end_step(b).unwrap();
        assert!(!o.begin_step(b, "create").unwrap().lost_create);
    }
}
