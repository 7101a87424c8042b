//! `pos-connector invoice submit ID [--resubmit]`: submit one invoice to
//! JoFotara by hand, without ever sending it twice.
//!
//! The backend sends an invoice to JoFotara again on every submit call,
//! even a `submitted` one, and finishes a submit after its client has gone.
//! So the command reads the status first (`submitted`: nothing to do;
//! `rejected`: only with `--resubmit`), refuses while an earlier attempt
//! (the service's or another command's) may still be running at the
//! backend, records its own attempt in the outbox before sending (the
//! service then knows too), and after a lost answer waits for the status to
//! tell the outcome instead of submitting again.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::{print_json, Cli, Failure, Outcome};
use crate::config::Config;
use crate::laravel::{ApiError, InvoiceStatus, LaravelClient};
use crate::store::Outbox;

/// How often the status is read while a lost submit may still be running.
const POLL: Duration = Duration::from_secs(3);

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) async fn submit(
    cli: &Cli,
    cfg: &Config,
    client: &LaravelClient,
    id: u64,
    resubmit: bool,
) -> Outcome {
    let settle = chrono::Duration::from_std(cfg.pipeline.submit_settle)
        .unwrap_or(chrono::Duration::seconds(90));
    // The record of attempts lives in the service's outbox; without it the
    // command still works, but cannot see an attempt of the service.
    let mut outbox = match Outbox::open(&cfg.data_dir) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the outbox: submitting without the record of earlier attempts");
            None
        }
    };
    let now = Utc::now();
    if let Some(o) = &outbox {
        if let Some(a) = o.unsettled_submit(id)? {
            if now < a.check_after {
                return Err(Failure::failed(format!(
                    "a submit of invoice {id} started at {} (by the {}) has had no answer, and the \
                     backend may still be working on it: not submitting again before {} \
                     (pipeline.submit_settle_seconds after its start); then `pos-connector invoice \
                     status {id}` tells whether it went through",
                    stamp(a.started_at),
                    if a.started_by == "cli" {
                        "command line"
                    } else {
                        "service"
                    },
                    stamp(a.check_after)
                )));
            }
        }
    }
    let (status, raw) = client.status(id).await?;
    match status {
        InvoiceStatus::Submitted => {
            settle_record(&mut outbox, id);
            if cli.json {
                print_json(&json!({"id": id, "status": "submitted", "submitted_now": false}));
            } else {
                println!(
                    "invoice {id} is already submitted to JoFotara (status submitted); not submitting it again"
                );
            }
            return Ok(());
        }
        InvoiceStatus::Rejected if !resubmit => {
            return Err(Failure::failed(format!(
                "JoFotara rejected invoice {id} (status rejected); it was not submitted again: a \
                 rejected invoice is sent as it is, so correct it in the backend first, then run \
                 `pos-connector invoice submit {id} --resubmit`"
            )));
        }
        _ => {}
    }
    let _ = raw;

    let started = Utc::now();
    let check_after = started + settle;
    if let Some(o) = &mut outbox {
        o.begin_submit(None, id, "cli", started, check_after)?;
    }
    match client.submit(id).await {
        Ok(out) => {
            settle_record(&mut outbox, id);
            report(cli, id, &out.status, &out.raw)
        }
        Err(e) if e.may_still_be_running() => {
            eprintln!(
                "the answer to the submit of invoice {id} was lost ({e}); the backend may still be \
                 working on it: waiting until {} for its status (nothing is sent again)",
                stamp(check_after)
            );
            wait_for_outcome(cli, client, &mut outbox, id, check_after).await
        }
        Err(e) if e.outcome_unknown() || matches!(e, ApiError::SubmitUnavailable { .. }) => {
            // The backend answered without an outcome; its request is over.
            if let Some(o) = &mut outbox {
                o.submit_answered(id, Utc::now())?;
            }
            match client.status(id).await {
                Ok((status, raw)) if status != InvoiceStatus::Draft => {
                    settle_record(&mut outbox, id);
                    report(cli, id, &status, &raw)
                }
                Ok(_) => {
                    settle_record(&mut outbox, id);
                    Err(e.into())
                }
                Err(_) => Err(e.into()),
            }
        }
        Err(e) => {
            // Certainly not submitted.
            settle_record(&mut outbox, id);
            Err(e.into())
        }
    }
}

/// After a lost answer: reads the status until it leaves `draft` or the
/// attempt can no longer be running (`check_after`). Never submits.
async fn wait_for_outcome(
    cli: &Cli,
    client: &LaravelClient,
    outbox: &mut Option<Outbox>,
    id: u64,
    check_after: DateTime<Utc>,
) -> Outcome {
    let mut last_error: Option<ApiError> = None;
    loop {
        let now = Utc::now();
        let past = now >= check_after;
        match client.status(id).await {
            Ok((InvoiceStatus::Draft, _)) if past => {
                settle_record(outbox, id);
                return Err(Failure::failed(format!(
                    "the submit of invoice {id} did not take effect: its status is still draft \
                     after the settle window; run `pos-connector invoice submit {id}` again"
                )));
            }
            Ok((InvoiceStatus::Draft, _)) => {}
            Ok((status, raw)) => {
                settle_record(outbox, id);
                return report(cli, id, &status, &raw);
            }
            Err(e) if past => {
                return Err(Failure::failed(format!(
                    "the outcome of the submit of invoice {id} is not known: {}; check \
                     `pos-connector invoice status {id}` later (submitting again is refused until \
                     the status can be read)",
                    last_error.as_ref().unwrap_or(&e)
                )));
            }
            Err(e) => last_error = Some(e),
        }
        let left = (check_after - now).to_std().unwrap_or_default();
        tokio::time::sleep(POLL.min(left.max(Duration::from_millis(100)))).await;
    }
}

fn settle_record(outbox: &mut Option<Outbox>, id: u64) {
    if let Some(o) = outbox {
        if let Err(e) = o.settle_submit(id) {
            tracing::warn!(error = %e, "cannot record the submit's outcome in the outbox");
        }
    }
}

/// The command's answer for a submit's outcome.
fn report(cli: &Cli, id: u64, status: &InvoiceStatus, raw: &Value) -> Outcome {
    if cli.json {
        print_json(raw);
    }
    match status {
        InvoiceStatus::Submitted => {
            if !cli.json {
                println!("invoice {id} submitted to JoFotara: status submitted");
            }
            Ok(())
        }
        InvoiceStatus::Rejected => Err(Failure::failed(format!(
            "JoFotara rejected invoice {id} (status rejected): it cannot be submitted again as it is; correct the sale in the backend or issue a new invoice"
        ))),
        InvoiceStatus::Error => Err(Failure::failed(format!(
            "the tax system call failed for invoice {id} (status error); try `pos-connector invoice submit {id}` again later"
        ))),
        other => Err(Failure::failed(format!(
            "submit of invoice {id} ended with status {other}"
        ))),
    }
}
