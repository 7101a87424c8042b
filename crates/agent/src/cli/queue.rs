//! `queue list|show|retry` and `invoice render`: commands that work on the
//! outbox and local files, with no backend call. They open the outbox
//! directly; SQLite's WAL lets them run beside the service.

use std::path::{Path, PathBuf};

use chrono::{Local, Utc};
use serde_json::{json, Value};

use super::{print_json, Cli, Failure, Outcome, QueueCommand};
use crate::config::Config;
use crate::intake::receipts::{receipt_for, receipt_path, shop_name};
use crate::intake::sale::{self, Sale};
use crate::laravel::error::first_chars;
use crate::store::{Job, ListFilter, Outbox, StoreError, STATES};

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooNew { .. } => Failure::usage(e.to_string()),
            other => Failure::failed(other.to_string()),
        }
    }
}

fn open(cfg: &Config) -> Result<Outbox, Failure> {
    Ok(Outbox::open(&cfg.data_dir)?)
}

fn find(outbox: &Outbox, key: &str) -> Result<Job, Failure> {
    outbox
        .find(key)?
        .ok_or_else(|| Failure::failed(StoreError::NoSuchJob(key.to_string()).to_string()))
}

pub(crate) fn queue(cli: &Cli, cfg: &Config, cmd: &QueueCommand) -> Outcome {
    match cmd {
        QueueCommand::List { state, limit } => {
            if let Some(s) = state {
                if !STATES.contains(&s.as_str()) {
                    return Err(Failure::usage(format!(
                        "--state {s}: use one of {}",
                        STATES.join(", ")
                    )));
                }
            }
            let outbox = open(cfg)?;
            let jobs = outbox.list(&ListFilter {
                state: state.clone(),
                limit: Some(*limit),
            })?;
            let counts = outbox.counts()?;
            if cli.json {
                print_json(&json!({ "counts": counts, "jobs": jobs }));
                return Ok(());
            }
            let summary: Vec<String> = counts
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            println!(
                "outbox {}: {}",
                outbox.path().display(),
                if summary.is_empty() {
                    "empty".to_string()
                } else {
                    summary.join(", ")
                }
            );
            for j in &jobs {
                let qbo = match &j.qbo {
                    None => "-".to_string(),
                    Some(q) if q.is_pushed() => {
                        format!("qbo:{}", q.qbo_id.as_deref().unwrap_or("?"))
                    }
                    Some(q) => format!("qbo:{}", q.state),
                };
                println!(
                    "#{:<6} {:<24} {:<10} {:<8} {:<14} {}",
                    j.id,
                    j.invoice_number,
                    j.state,
                    j.laravel_id
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "-".into()),
                    qbo,
                    j.last_error
                        .as_deref()
                        .map(|e| first_chars(e, 100))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        QueueCommand::Show { job } => {
            let outbox = open(cfg)?;
            let j = find(&outbox, job)?;
            let events = outbox.events(j.id)?;
            if cli.json {
                let mut v = serde_json::to_value(&j).expect("serialises");
                if let Value::Object(m) = &mut v {
                    m.insert(
                        "events".into(),
                        serde_json::to_value(&events).expect("serialises"),
                    );
                }
                print_json(&v);
                return Ok(());
            }
            println!("job #{}: invoice {} ({})", j.id, j.invoice_number, j.state);
            println!("  stage: {}", j.stage.as_str());
            println!("  from: {}", j.source);
            if let Some(id) = j.laravel_id {
                println!("  backend invoice id: {id}");
            }
            if let Some(s) = &j.backend_status {
                println!("  backend status: {s}");
            }
            println!("  attempts: {}", j.attempts);
            if j.state == "retrying" {
                if let Some(at) = chrono::DateTime::<Utc>::from_timestamp_millis(j.next_attempt_at)
                {
                    println!("  next attempt: {}", at.with_timezone(&Local).to_rfc3339());
                }
            }
            if let Some(e) = &j.last_error {
                println!("  last error: {e}");
            }
            if let Some(p) = &j.pdf_path {
                println!("  official PDF: {p}");
            }
            if let Some(p) = &j.receipt_path {
                println!("  provisional receipt: {p}");
            }
            if let Some(q) = &j.qbo {
                match &q.qbo_id {
                    Some(id) if q.is_pushed() => println!("  QuickBooks: pushed, invoice Id {id}"),
                    _ => println!(
                        "  QuickBooks: {} (attempts {}){}",
                        q.state,
                        q.attempts,
                        q.last_error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                }
            }
            println!("  created: {}  updated: {}", j.created_at, j.updated_at);
            println!("  log:");
            for e in events {
                println!(
                    "    {} {}{}",
                    e.at,
                    e.event,
                    e.detail.map(|d| format!(": {d}")).unwrap_or_default()
                );
            }
            Ok(())
        }
        QueueCommand::Retry { job, all_parked } => {
            let mut outbox = open(cfg)?;
            let now = Utc::now();
            let released: Vec<Job> = if *all_parked {
                outbox.retry_all_parked(now)?
            } else {
                let key = job
                    .as_deref()
                    .expect("clap requires N without --all-parked");
                let j = find(&outbox, key)?;
                let push_open = j.qbo.as_ref().is_some_and(|q| !q.is_pushed());
                if j.state == "done" && !push_open {
                    return Err(Failure::failed(format!(
                        "job #{} ({}) is done; there is nothing to retry",
                        j.id, j.invoice_number
                    )));
                }
                outbox.retry_now(j.id, now)?.into_iter().collect()
            };
            if cli.json {
                print_json(&json!({ "released": released }));
            } else if released.is_empty() {
                println!("no parked jobs");
            } else {
                for j in &released {
                    println!(
                        "job #{} ({}) released: due now at stage {}",
                        j.id,
                        j.invoice_number,
                        j.stage.as_str()
                    );
                }
                println!("a running agent picks them up within 30 seconds");
            }
            Ok(())
        }
    }
}

/// `invoice render FILE|ID`: the provisional receipt(s), locally.
pub(crate) fn render(cli: &Cli, cfg: &Config, source: &str, out: Option<&Path>) -> Outcome {
    let sales: Vec<Sale> = if Path::new(source).is_file() {
        let bytes = std::fs::read(source)
            .map_err(|e| Failure::usage(format!("cannot read {source}: {e}")))?;
        let name = Path::new(source)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| source.to_string());
        sale::parse_file(&name, &bytes, &crate::intake::options_from_config(cfg))
            .map_err(|e| Failure::usage(format!("{source} cannot be read as a sale:\n{e}")))?
    } else {
        let outbox = open(cfg)?;
        let job = outbox.find(source)?.ok_or_else(|| {
            Failure::usage(format!(
                "{source} is neither a file nor a job in the outbox (`pos-connector queue list` shows the jobs)"
            ))
        })?;
        vec![serde_json::from_str(&job.sale_json)
            .map_err(|e| Failure::failed(format!("the stored sale cannot be read: {e}")))?]
    };
    let shop = shop_name(cfg);
    let today = Local::now().format("%Y-%m-%d").to_string();
    let mut written = Vec::new();
    for s in &sales {
        let path: PathBuf = match out {
            Some(p) if sales.len() == 1 && !p.is_dir() => p.to_path_buf(),
            Some(dir) => receipt_path(dir, &s.invoice_number),
            None => receipt_path(&cfg.receipts.dir, &s.invoice_number),
        };
        let r = receipt_for(s, &shop, &today);
        let warnings =
            crate::receipt::write_with_warnings(&r, cfg.receipts.paper, &path).map_err(|e| {
                Failure::failed(format!("cannot write the receipt {}: {e}", path.display()))
            })?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        written.push(json!({"invoice_number": s.invoice_number, "path": path}));
        if !cli.json {
            println!(
                "receipt for {} written to {}",
                s.invoice_number,
                path.display()
            );
        }
    }
    if cli.json {
        print_json(&json!({ "receipts": written }));
    }
    Ok(())
}
