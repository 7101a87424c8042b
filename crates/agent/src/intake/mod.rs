//! Intake: where sales come in. Two doors, one rule: a sale is
//! acknowledged (its file archived, its HTTP request answered 202) only
//! after its row is committed to the outbox.
//!
//! - `sale.rs`: reading POS exports (JSON in many shapes, CSV) into the
//!   canonical [`sale::Sale`]; the field synonyms, the explicit mapping, the
//!   fraction rule and derived invoice numbers live there.
//! - `inbox.rs`: the inbox folder (claim, parse, commit, archive/reject).
//! - `http.rs`: `POST /v1/sales` and `GET /v1/sales/{invoice_number}`.
//! - `receipts.rs`: the provisional receipt printed for each new sale.

pub mod http;
pub mod inbox;
pub mod receipts;
pub mod sale;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::store::{Enqueued, Job, NewJob, OutboxHandle, StoreError};
use sale::{IntakeOptions, Sale};

/// Called with every job the intake has just committed.
pub type OnCommit = Arc<dyn Fn(&Job) + Send + Sync>;

/// The shared door to the outbox for both intakes.
#[derive(Clone)]
pub struct Intake {
    outbox: OutboxHandle,
    options: Arc<IntakeOptions>,
    clock: Arc<dyn Clock>,
    on_commit: OnCommit,
}

impl Intake {
    pub fn new(
        outbox: OutboxHandle,
        options: IntakeOptions,
        clock: Arc<dyn Clock>,
        on_commit: OnCommit,
    ) -> Intake {
        Intake {
            outbox,
            options: Arc::new(options),
            clock,
            on_commit,
        }
    }

    pub fn options(&self) -> &IntakeOptions {
        &self.options
    }

    pub fn outbox(&self) -> &OutboxHandle {
        &self.outbox
    }

    /// Commits the sales of one input in one transaction (all or, on a
    /// number conflict, none) and reports what happened to each.
    pub async fn accept(
        &self,
        sales: Vec<Sale>,
        source: String,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let jobs: Vec<NewJob> = sales.iter().map(|s| new_job(s, &source)).collect();
        let now = self.clock.now();
        let results = self.outbox.call(move |o| o.enqueue_all(&jobs, now)).await?;
        for r in &results {
            if let Enqueued::New(job) = r {
                (self.on_commit)(job);
            }
        }
        Ok(results)
    }
}

/// The outbox row for a sale.
pub fn new_job(sale: &Sale, source: &str) -> NewJob {
    NewJob {
        invoice_number: sale.invoice_number.clone(),
        sale_json: serde_json::to_string(sale).expect("a sale serialises"),
        content_hash: sale.content_hash(),
        source: source.to_string(),
    }
}

/// The intake options from config.json.
pub fn options_from_config(cfg: &Config) -> IntakeOptions {
    IntakeOptions {
        mapping: cfg.intake.mapping.clone(),
        default_customer: cfg.intake.default_customer.clone(),
        encoding: cfg.intake.encoding,
    }
}

/// A one-line account of a conflict: the number is held by another sale.
pub fn conflict_message(job: &Job) -> String {
    format!(
        "invoice number {} is already in the outbox (job #{}, from {}, state {}) with different \
         content; a sale's number must be unique: correct the number, or the earlier sale if it \
         was wrong (`pos-connector queue show {}`)",
        job.invoice_number, job.id, job.source, job.state, job.invoice_number
    )
}
