//! Read-only summaries of the outbox for the people and systems watching
//! the agent: the status page, `pos-connector status`, `/metrics` and the
//! fleet heartbeat. Nothing here writes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::{Outbox, Stage, StoreError};

/// The queue at a glance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueStats {
    /// Jobs in each state, every state listed.
    pub(crate) counts: BTreeMap<String, u64>,
    /// Jobs still on their way (neither done nor parked).
    pub(crate) pending: u64,
    /// Jobs waiting for a person.
    pub(crate) parked: u64,
    /// When the oldest pending job was taken in.
    pub oldest_pending_since: Option<DateTime<Utc>>,
    /// The last time a step succeeded at the backend (create, submit, PDF).
    pub(crate) last_success_at: Option<DateTime<Utc>>,
    /// Jobs that failed [`FAILING_AFTER`] times or more in a row and are
    /// still retrying: the agent is degraded even if the backend answers.
    #[serde(default)]
    pub(crate) failing: u64,
    /// The last error of the job failing longest, to say why.
    #[serde(default)]
    pub(crate) failing_error: Option<String>,
}

/// Failed attempts in a row after which a retrying job counts as failing.
pub(crate) const FAILING_AFTER: u32 = 3;

/// The states of a job still on its way; listed (rather than "not done,
/// not parked") so SQLite can use the state index.
const PENDING_STATES: &str = "'queued','created','submitted','pdf_saved','retrying'";

impl Outbox {
    /// The queue's summary: counts by state, pending, parked, oldest pending, last success.
    pub fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let counts = self.counts()?;
        let pending = counts
            .iter()
            .filter(|(s, _)| !matches!(s.as_str(), "done" | "parked"))
            .map(|(_, n)| n)
            .sum();
        let parked = counts.get("parked").copied().unwrap_or(0);
        let oldest: Option<String> = self.conn.query_row(
            &format!("SELECT MIN(created_at) FROM jobs WHERE state IN ({PENDING_STATES})"),
            [],
            |r| r.get(0),
        )?;
        // Steps are logged under their stage's name; the newest rows are
        // read first, so this stops at the latest success.
        let steps: Vec<&str> = Stage::ALL[1..].iter().map(|s| s.as_str()).collect();
        let last_success: Option<String> = self
            .conn
            .query_row(
                &format!(
                    "SELECT at FROM job_events WHERE event IN ({}) ORDER BY id DESC LIMIT 1",
                    steps
                        .iter()
                        .map(|s| format!("'{s}'"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                [],
                |r| r.get(0),
            )
            .optional()?;
        let (failing, failing_error): (i64, Option<String>) = self.conn.query_row(
            "SELECT COUNT(*), (SELECT last_error FROM jobs WHERE state = 'retrying' \
             AND attempts >= ?1 ORDER BY attempts DESC, id LIMIT 1) \
             FROM jobs WHERE state = 'retrying' AND attempts >= ?1",
            [FAILING_AFTER],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(QueueStats {
            failing: failing as u64,
            failing_error,
            counts,
            pending,
            parked,
            oldest_pending_since: oldest.as_deref().and_then(parse_stamp),
            last_success_at: last_success.as_deref().and_then(parse_stamp),
        })
    }
}

fn parse_stamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewJob, StepResult};
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_750_000_000 + s, 0).unwrap()
    }

    fn job(n: &str) -> NewJob {
        NewJob {
            invoice_number: n.into(),
            sale_json: format!("{{\"invoice_number\":\"{n}\"}}"),
            content_hash: format!("h-{n}"),
            source: "test".into(),
        }
    }

    #[test]
    fn counts_pending_parked_oldest_and_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        let empty = o.queue_stats().unwrap();
        assert_eq!((empty.pending, empty.parked), (0, 0));
        assert_eq!(empty.oldest_pending_since, None);
        assert_eq!(empty.last_success_at, None);

        let a = o.enqueue(&job("A"), at(0)).unwrap().job().id;
        let b = o.enqueue(&job("B"), at(10)).unwrap().job().id;
        o.enqueue(&job("C"), at(20)).unwrap();
        o.record_step(a, Stage::Created, &StepResult::default(), "id 1", at(30))
            .unwrap();
        o.park(b, "rejected", at(40)).unwrap();
        let s = o.queue_stats().unwrap();
        assert_eq!((s.pending, s.parked), (2, 1));
        assert_eq!((s.failing, s.failing_error.as_deref()), (0, None));
        assert_eq!(s.counts["created"], 1);
        assert_eq!(s.counts["queued"], 1);
        assert_eq!(s.oldest_pending_since, Some(at(0)));
        assert_eq!(s.last_success_at, Some(at(30)));

        o.record_step(a, Stage::Done, &StepResult::default(), "", at(50))
            .unwrap();
        let s = o.queue_stats().unwrap();
        assert_eq!(s.oldest_pending_since, Some(at(20)));
        assert_eq!(s.last_success_at, Some(at(50)));

        // A job failing again and again counts as failing, with its error.
        let c = o.find("C").unwrap().unwrap().id;
        for i in 0..FAILING_AFTER {
            let s = o.queue_stats().unwrap();
            assert_eq!(s.failing, 0, "after {i} failures");
            o.record_retry(c, "HTTP 500", at(60), at(55)).unwrap();
        }
        let s = o.queue_stats().unwrap();
        assert_eq!(
            (s.failing, s.failing_error.as_deref()),
            (1, Some("HTTP 500"))
        );
    }
}
