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

pub(crate) mod http;
pub mod inbox;
pub(crate) mod receipts;
pub mod sale;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Config, KeyProblem};
use crate::laravel::model::{FieldProblem, NewInvoice};
use crate::store::{Enqueued, Job, NewJob, OutboxHandle, StoreError};
use sale::{IntakeOptions, Sale};
use serde_json::Value;

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
    /// The intake over `outbox`: sales read with `options`, `on_commit` called after each commit.
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

    pub(crate) fn options(&self) -> &IntakeOptions {
        &self.options
    }

    pub(crate) fn outbox(&self) -> &OutboxHandle {
        &self.outbox
    }

    /// Commits the sales of one input in one transaction (all or, on a
    /// number conflict, none) and reports what happened to each.
    pub(crate) async fn accept(
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

/// The intake options from config.json (a mapping [`check_config`] refuses
/// counts as none here; the CLI's loading and `service::run` refuse it
/// before anything reads a file).
pub fn options_from_config(cfg: &Config) -> IntakeOptions {
    IntakeOptions {
        mapping: sale::Mapping::from_json(&cfg.intake.mapping).unwrap_or_default(),
        default_customer: cfg.intake.default_customer.clone(),
        encoding: cfg.intake.encoding,
    }
}

/// The intake is the one reader of sales: a backend-shaped sale (the CLI,
/// the demo, tests) is read by it too.
impl NewInvoice {
    /// Reads one sale in any shape the intake reads (the backend's own,
    /// the POS shapes, QuickBooks'), with the intake's rules: a missing
    /// number is derived, a missing customer is "Walk-in customer",
    /// fractional quantities are converted. Every problem is reported, by
    /// field path. One reader serves the CLI, the demo and the service.
    pub fn from_json(v: &Value) -> Result<NewInvoice, Vec<FieldProblem>> {
        match sale::parse_json(v, &Default::default()) {
            Ok(mut sales) if sales.len() == 1 => Ok(sales.remove(0).to_new_invoice()),
            Ok(sales) => Err(vec![FieldProblem {
                field: "(document)".into(),
                problem: format!("holds {} sales; one was expected", sales.len()),
            }]),
            Err(e) => Err(e
                .problems
                .into_iter()
                .map(|p| FieldProblem {
                    field: p.location,
                    problem: p.message,
                })
                .collect()),
        }
    }
}

/// [`check_config`] as the config error the CLI's loading and the service's
/// start both give (exit 2).
pub(crate) fn validate(cfg: &Config) -> Result<(), crate::config::ConfigError> {
    let problems = check_config(cfg);
    if problems.is_empty() {
        return Ok(());
    }
    Err(crate::config::ConfigError::Invalid {
        path: cfg.path.clone(),
        problems,
    })
}

/// What is wrong with the intake's keys of a loaded config: the fields of
/// `intake.mapping` are the intake's to know (config holds plain data).
pub(crate) fn check_config(cfg: &Config) -> Vec<KeyProblem> {
    match sale::Mapping::from_json(&cfg.intake.mapping) {
        Ok(_) => Vec::new(),
        Err(problem) => vec![KeyProblem {
            key: "intake.mapping".into(),
            problem,
        }],
    }
}

/// A one-line account of a conflict: the number is held by another sale.
pub(crate) fn conflict_message(job: &Job) -> String {
    format!(
        "invoice number {} is already in the outbox (job #{}, from {}, state {}) with different \
         content; a sale's number must be unique: correct the number, or the earlier sale if it \
         was wrong (`pos-connector queue show {}`)",
        job.invoice_number, job.id, job.source, job.state, job.invoice_number
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backend_shape_and_synonyms() {
        let v = json!({
            "invoice_number": 1001,
            "customer": {"name": "Generic Customer", "email": "g@example.com"},
            "items": [
                {"description": "A", "quantity": "2", "unit_price": 15.5},
                {"name": "B", "qty": 1.0, "price": "30.00"}
            ]
        });
        let inv = NewInvoice::from_json(&v).unwrap();
        assert_eq!(inv.invoice_number, "1001");
        assert_eq!(inv.customer_name, "Generic Customer");
        assert_eq!(inv.customer_email.as_deref(), Some("g@example.com"));
        assert_eq!(inv.items[0].quantity, 2);
        assert_eq!(inv.items[0].price.to_string(), "15.5");
        assert_eq!(inv.items[1].price.to_string(), "30.00");
        let body = serde_json::to_value(&inv).unwrap();
        assert_eq!(body["items"][0]["price"], json!(15.5));
        assert!(body.get("customer_phone").is_none());
    }

    #[test]
    fn every_problem_is_named() {
        let v = json!({"invoice_number": "X", "items": [
            {"description": "A", "quantity": 1, "price": -1},
            {"quantity": 2, "price": "lots"}
        ]});
        let problems = NewInvoice::from_json(&v).unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        for field in ["items[0].price", "items[1].description", "items[1].price"] {
            assert!(
                text.iter().any(|t| t.starts_with(field)),
                "{field}: {text:?}"
            );
        }
    }

    #[test]
    fn a_mapping_naming_no_field_is_a_problem_of_intake_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            crate::config::load_from(&p, &[]).unwrap()
        };
        let cfg =
            load(r#"{"email": "a@b.co", "intake": {"mapping": {"invoice_number": "Ticket#"}}}"#);
        assert!(check_config(&cfg).is_empty());
        assert_eq!(
            options_from_config(&cfg)
                .mapping
                .get(sale::Field::InvoiceNumber),
            Some("Ticket#")
        );
        for bad in [r#"{"colour": "x"}"#, r#""quantity""#, r#"{"items": null}"#] {
            let cfg = load(&format!(
                r#"{{"email": "a@b.co", "intake": {{"mapping": {bad}}}}}"#
            ));
            let problems = check_config(&cfg);
            assert_eq!(problems.len(), 1, "{bad}");
            assert_eq!(problems[0].key, "intake.mapping", "{bad}");
        }
    }
}
