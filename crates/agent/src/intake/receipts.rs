//! Provisional receipts: for every sale committed to the outbox a local PDF
//! (`receipts.dir`, default `receipts/`) so the shop can print while the
//! backend is unreachable. Rendering happens on a background task, after
//! the commit: a receipt that fails is logged and never holds up or loses
//! a sale. Jobs without a receipt (the agent stopped before printing) are
//! printed at the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Local;
use rust_decimal::Decimal;
use tokio::sync::mpsc;

use super::sale::Sale;
use crate::clock::Clock;
use crate::config::{Config, ReceiptSettings};
use crate::receipt::{self, Receipt, ReceiptLine};
use crate::store::{Job, OutboxHandle};

/// Hands jobs to the printing task.
#[derive(Clone)]
pub struct ReceiptPrinter {
    tx: Option<mpsc::UnboundedSender<Job>>,
}

impl ReceiptPrinter {
    /// A printer that prints nothing (`receipts.enabled: false`).
    pub fn disabled() -> ReceiptPrinter {
        ReceiptPrinter { tx: None }
    }

    /// Starts the printing task; it first prints the receipts missing from
    /// earlier runs, then each job it is given, until every sender is gone.
    pub fn start(
        outbox: OutboxHandle,
        settings: ReceiptSettings,
        shop_name: String,
        clock: Arc<dyn Clock>,
    ) -> (ReceiptPrinter, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let task = tokio::spawn(async move {
            match outbox.call(|o| o.without_receipt(10_000)).await {
                Ok(missing) => {
                    for job in missing {
                        print_one(&outbox, &settings, &shop_name, &clock, job).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list jobs without a receipt"),
            }
            while let Some(job) = rx.recv().await {
                print_one(&outbox, &settings, &shop_name, &clock, job).await;
            }
        });
        (ReceiptPrinter { tx: Some(tx) }, task)
    }

    pub fn print(&self, job: &Job) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(job.clone());
        }
    }
}

async fn print_one(
    outbox: &OutboxHandle,
    settings: &ReceiptSettings,
    shop: &str,
    clock: &Arc<dyn Clock>,
    job: Job,
) {
    let sale: Sale = match serde_json::from_str(&job.sale_json) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(invoice = %job.invoice_number, error = %e, "cannot read the stored sale for its receipt");
            return;
        }
    };
    let path = receipt_path(&settings.dir, &sale.invoice_number);
    let r = receipt_for(
        &sale,
        shop,
        &clock
            .now()
            .with_timezone(&Local)
            .format("%Y-%m-%d")
            .to_string(),
    );
    let target = path.clone();
    let paper = settings.paper;
    let written =
        tokio::task::spawn_blocking(move || receipt::write_with_warnings(&r, paper, &target)).await;
    match written {
        Ok(Ok(warnings)) => {
            // Characters the font lacks: printed as boxes and listed on the
            // receipt; the log says so too.
            for w in warnings {
                tracing::warn!(invoice = %job.invoice_number, "{w}");
            }
            let id = job.id;
            let shown = path.display().to_string();
            if let Err(e) = outbox.call(move |o| o.set_receipt_path(id, &shown)).await {
                tracing::warn!(error = %e, "cannot record the receipt's path");
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(invoice = %job.invoice_number, error = %e, "provisional receipt not printed (the sale is safe and will be sent)");
        }
        Err(e) => tracing::warn!(error = %e, "receipt task failed"),
    }
}

/// The name printed at the top: `receipts.shop_name`, else the login email.
pub fn shop_name(cfg: &Config) -> String {
    cfg.receipts
        .shop_name
        .clone()
        .unwrap_or_else(|| cfg.email.clone())
}

/// The receipt of a sale. `today` is used when the sale has no date.
pub fn receipt_for(sale: &Sale, shop: &str, today: &str) -> Receipt {
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
pub fn receipt_path(dir: &Path, invoice_number: &str) -> PathBuf {
    dir.join(format!("{}.pdf", safe_file_stem(invoice_number)))
}

pub fn safe_file_stem(s: &str) -> String {
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
}
