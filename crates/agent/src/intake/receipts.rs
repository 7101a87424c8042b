//! Provisional receipts: for every sale committed to the outbox a local PDF
//! (`receipts.dir`, default `receipts/`) so the shop can print while the
//! backend is unreachable. Rendering happens on a background task, after
//! the commit: a receipt that fails is logged and never holds up or loses
//! a sale. Jobs without a receipt (the agent stopped before printing) are
//! printed at the next start, and a receipt that could not be written (the
//! disk full, the folder unwritable) is tried again while the agent runs:
//! after [`RETRY_FIRST`], doubling up to [`RETRY_MAX`], until it is printed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Local;
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::mpsc;

use super::sale::Sale;
use crate::clock::Clock;
use crate::config::{Config, ReceiptSettings};
use crate::receipt::{self, Receipt, ReceiptLine};
use crate::store::{Job, OutboxHandle};

/// The first retry of receipts that could not be written, after this.
pub(crate) const RETRY_FIRST: Duration = Duration::from_secs(30);
/// Retries back off up to this.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(600);

/// What the printer has done since it started (for the status page).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct PrinterStats {
    pub(crate) printed: u64,
    /// Receipts that could not be written (each retry counts).
    pub(crate) failed: u64,
    /// The last write error, while receipts are waiting for a retry.
    pub(crate) last_error: Option<String>,
}

/// Hands jobs to the printing task.
#[derive(Clone)]
pub(crate) struct ReceiptPrinter {
    tx: Option<mpsc::UnboundedSender<Job>>,
    #[cfg(test)]
    stats: Arc<Mutex<PrinterStats>>,
}

/// What printing one receipt did.
enum Printed {
    Yes,
    /// Not written (disk, folder): worth another try later.
    Failed,
    /// Cannot be printed at all (the stored sale is unreadable).
    Never,
}

impl ReceiptPrinter {
    /// A printer that prints nothing (`receipts.enabled: false`).
    pub(crate) fn disabled() -> ReceiptPrinter {
        ReceiptPrinter {
            tx: None,
            #[cfg(test)]
            stats: Arc::default(),
        }
    }

    /// Starts the printing task; it first prints the receipts missing from
    /// earlier runs, then each job it is given, until every sender is gone;
    /// receipts that could not be written are tried again meanwhile.
    pub(crate) fn start(
        outbox: OutboxHandle,
        settings: ReceiptSettings,
        shop_name: String,
        clock: Arc<dyn Clock>,
    ) -> (ReceiptPrinter, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let stats: Arc<Mutex<PrinterStats>> = Arc::default();
        let printer = Printer {
            outbox,
            settings,
            shop: shop_name,
            clock,
            stats: stats.clone(),
        };
        let task = tokio::spawn(async move {
            // Missing from earlier runs: printed like a retry.
            let mut retry_in = Some(Duration::ZERO);
            let mut backoff = RETRY_FIRST;
            loop {
                let failed = tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => matches!(printer.print(job).await, Printed::Failed),
                        None => break,
                    },
                    _ = tokio::time::sleep(retry_in.unwrap_or_default()), if retry_in.is_some() => {
                        retry_in = None;
                        let failed = printer.print_missing().await;
                        if failed {
                            tracing::warn!(retry_in_secs = backoff.as_secs(), "receipts not printed yet; trying again later");
                        } else {
                            backoff = RETRY_FIRST;
                        }
                        failed
                    }
                };
                if failed && retry_in.is_none() {
                    retry_in = Some(backoff);
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        });
        (
            ReceiptPrinter {
                tx: Some(tx),
                #[cfg(test)]
                stats,
            },
            task,
        )
    }

    pub(crate) fn print(&self, job: &Job) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(job.clone());
        }
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> PrinterStats {
        self.stats.lock().expect("printer stats").clone()
    }
}

/// The printing task's state.
struct Printer {
    outbox: OutboxHandle,
    settings: ReceiptSettings,
    shop: String,
    clock: Arc<dyn Clock>,
    stats: Arc<Mutex<PrinterStats>>,
}

impl Printer {
    /// Prints every receipt still missing; true if some could not be
    /// written.
    async fn print_missing(&self) -> bool {
        match self.outbox.call(|o| o.without_receipt(10_000)).await {
            Ok(missing) => {
                let mut failed = false;
                for job in missing {
                    failed |= matches!(self.print(job).await, Printed::Failed);
                }
                failed
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list jobs without a receipt");
                true
            }
        }
    }

    async fn print(&self, job: Job) -> Printed {
        let sale: Sale = match serde_json::from_str(&job.sale_json) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(invoice = %job.invoice_number, error = %e, "cannot read the stored sale for its receipt");
                return Printed::Never;
            }
        };
        let path = receipt_path(&self.settings.dir, &sale.invoice_number);
        let r = receipt_for(
            &sale,
            &self.shop,
            &self
                .clock
                .now()
                .with_timezone(&Local)
                .format("%Y-%m-%d")
                .to_string(),
        );
        let target = path.clone();
        let paper = self.settings.paper;
        let written =
            tokio::task::spawn_blocking(move || receipt::write_with_warnings(&r, paper, &target))
                .await;
        let error = match written {
            Ok(Ok(warnings)) => {
                // Characters the font lacks: printed as boxes and listed on
                // the receipt; the log says so too.
                for w in warnings {
                    tracing::warn!(invoice = %job.invoice_number, "{w}");
                }
                let id = job.id;
                let shown = path.display().to_string();
                if let Err(e) = self
                    .outbox
                    .call(move |o| o.set_receipt_path(id, &shown))
                    .await
                {
                    tracing::warn!(error = %e, "cannot record the receipt's path");
                }
                let mut st = self.stats.lock().expect("printer stats");
                st.printed += 1;
                st.last_error = None;
                return Printed::Yes;
            }
            Ok(Err(e @ receipt::ReceiptError::Write { .. })) => e.to_string(),
            Ok(Err(e)) => {
                // The sale itself cannot be printed: trying again won't help.
                tracing::warn!(invoice = %job.invoice_number, error = %e, "provisional receipt not printed (the sale is safe and will be sent)");
                return Printed::Never;
            }
            Err(e) => format!("receipt task failed: {e}"),
        };
        tracing::warn!(invoice = %job.invoice_number, error = %error, "provisional receipt not printed (the sale is safe and will be sent; the receipt is tried again)");
        let mut st = self.stats.lock().expect("printer stats");
        st.failed += 1;
        st.last_error = Some(error);
        Printed::Failed
    }
}

/// The name printed at the top: `receipts.shop_name`, else the login email.
pub(crate) fn shop_name(cfg: &Config) -> String {
    cfg.receipts
        .shop_name
        .clone()
        .unwrap_or_else(|| cfg.email.clone())
}

/// The receipt of a sale. `today` is used when the sale has no date.
pub(crate) fn receipt_for(sale: &Sale, shop: &str, today: &str) -> Receipt {
    Receipt {
        shop_name: shop.to_string(),
        invoice_number: sale.invoice_number.clone(),
        date: sale.date.clone().unwrap_or_else(|| today.to_string()),
        customer: sale.customer_name.clone(),
        currency: sale.currency.clone().unwrap_or_else(|| "JOD".into()),
        lines: sale
            .lines
            .iter()
            .map(|l| ReceiptLine {
                description: l.description.clone(),
                quantity: Decimal::from(l.quantity),
                unit_price: l.unit_price,
            })
            .collect(),
    }
}

/// `dir/<invoice number>.pdf`, the number made safe as a file name (a
/// short hash is added when characters had to be replaced, so two numbers
/// never share a file).
pub(crate) fn receipt_path(dir: &Path, invoice_number: &str) -> PathBuf {
    dir.join(format!("{}.pdf", safe_file_stem(invoice_number)))
}

pub(crate) fn safe_file_stem(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned == s && !s.is_empty() && s.len() <= 120 {
        return cleaned;
    }
    let short: String = cleaned.chars().take(100).collect();
    let hash = crc32fast::hash(s.as_bytes());
    format!("{short}_{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe_and_distinct() {
        assert_eq!(safe_file_stem("INV-001"), "INV-001");
        let a = safe_file_stem("A/1");
        let b = safe_file_stem("A:1");
        assert!(a.starts_with("A_1_") && b.starts_with("A_1_"));
        assert_ne!(a, b);
        assert!(!safe_file_stem("../x").contains('/'));
    }

    /// Polls `check` for up to a minute of real time (rendering runs on a
    /// real thread; the paused clock moves on while the runtime idles).
    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_receipt_not_written_is_printed_when_the_disk_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxHandle::open(&dir.path().join("data")).unwrap();
        // The receipts folder cannot be created: a file holds its parent's
        // name (as a full disk or a read-only mount would refuse writes).
        let blocker = dir.path().join("blocked");
        std::fs::write(&blocker, b"not a folder").unwrap();
        let settings = ReceiptSettings {
            enabled: true,
            dir: blocker.join("receipts"),
            shop_name: None,
            paper: Default::default(),
        };
        let sale = crate::intake::sale::parse_file(
            "sale.json",
            br#"{"invoice_number": "R-1", "customer_name": "C", "items": [{"description": "Tea", "quantity": 1, "price": 2}]}"#,
            &Default::default(),
        )
        .unwrap()
        .remove(0);
        let job = outbox
            .call(move |o| o.enqueue(&crate::intake::new_job(&sale, "test"), chrono::Utc::now()))
            .await
            .unwrap()
            .job()
            .clone();
        let (printer, _task) = ReceiptPrinter::start(
            outbox.clone(),
            settings,
            "Shop".into(),
            Arc::new(crate::clock::TokioClock::new()),
        );
        printer.print(&job);
        until("the first failure", || printer.stats().failed >= 1).await;
        assert_eq!(printer.stats().printed, 0);
        assert!(printer.stats().last_error.is_some());
        // Space returns: the receipt is printed without a restart.
        std::fs::remove_file(&blocker).unwrap();
        until("the receipt printed", || printer.stats().printed == 1).await;
        let stored = outbox.call(move |o| o.find("R-1")).await.unwrap().unwrap();
        let path = stored.receipt_path.expect("receipt recorded");
        assert!(std::fs::read(&path).unwrap().starts_with(b"%PDF-"));
        assert_eq!(printer.stats().last_error, None);
    }
}
