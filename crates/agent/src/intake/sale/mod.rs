//! POS exports and HTTP intake bodies -> canonical [`Sale`]s.
//!
//! Tills export sales in many shapes. This module reads them generously and
//! all-or-nothing: a document gives either every sale in it or an
//! [`IntakeError`] listing every problem found, each with where it is (line
//! and column of a CSV file, path of a JSON document) and what to do about
//! it. Nothing is guessed where a wrong guess would put a wrong amount on a
//! legal invoice.
//!
//! # What is read
//! - Text: UTF-8 with or without BOM, UTF-16 LE/BE with BOM (or without a
//!   BOM when the file starts with ASCII text), CRLF, LF or CR line ends.
//!   A file without a byte order mark is read in `intake.encoding`
//!   ([`IntakeOptions::encoding`], default UTF-8): a legacy code page such
//!   as `windows-1256` (the Arabic code page Excel saves CSV in) is decoded
//!   with `encoding_rs`; a byte order mark always wins over the setting.
//!   Anything else (NUL bytes, control characters, bytes invalid in the
//!   encoding) is "not a text file".
//! - JSON (`.json`, `.jsonl`, `.ndjson`, or any file whose content starts
//!   with `{` or `[`): one sale object; an array of sale objects; a wrapper
//!   object holding them under `invoices`, `sales`, `transactions`, `orders`,
//!   `receipts`, `data` (and a few more, nested up to three deep); or JSON
//!   Lines (one value per line). A sale object carries its lines in an array
//!   (`items`, `lines`, `line_items`, `products`, `Line`, `details`,
//!   `entries`, ...). An array of flat objects, each one line with its
//!   invoice number (CSV rows written as JSON), is grouped like CSV rows.
//!   QuickBooks lines whose `DetailType` is not `SalesItemLineDetail` (sub
//!   totals, description-only lines) are skipped, except discount and group
//!   lines, which are refused: dropping them would change the amount.
//! - CSV (any other file): the separator (`,` `;` tab or `|`) is detected
//!   from the header line (an Excel `sep=;` first line is honoured), quoted
//!   fields, blank lines ignored. One row per line item, grouped by the
//!   invoice-number column in order of first appearance; the sale's customer
//!   and date come from its first row. A row with an empty invoice number
//!   continues the numbered sale above it (exports that print the number on
//!   the first row only) unless it names another customer or date; then it
//!   is a sale of its own. Without an invoice-number column each row is a
//!   sale.
//! - Field names (CSV headers, JSON keys) match ignoring case, `_`, `-` and
//!   spaces (`Transaction_ID`, `transactionId` and `transaction id` are the
//!   same); CSV headers also ignore `.`, `#`, `:` and a bracketed unit
//!   (`Receipt No.`, `Invoice #`, `Price (JOD)`). Each canonical field has a
//!   list of synonyms; `intake.mapping` names the column or dotted JSON path
//!   for a field explicitly, overriding detection for that field only, or
//!   ignores a field (`null`).
//!
//! # Amounts
//! Amounts are exact decimals read from the text, never through a binary
//! float. Accepted: JSON numbers, `"4.50"`, `" 4.5 "`, a currency mark
//! (`JOD 4.500`, `$4.50`), Arabic-Indic digits, grouping (`1,234.50`,
//! `1.234,50`, `1 234,50`) and a decimal comma (`4,50`). A lone comma
//! followed by exactly three digits (`1,250`) is refused as ambiguous:
//! thousands or fils? Write `1250` or `1.250`.
//! - Unit prices are tax excluded (the backend adds 16%). When a line has
//!   a quantity, a unit price and a line total, the unit price is used and
//!   the total is not checked (tills differ on whether it includes tax, and
//!   some repeat the order's total on every line).
//! - Unit price missing, line total present: unit price = total / quantity
//!   when that is exact to 3 decimals; otherwise the line is sent as
//!   quantity 1 at the line total, described with " (3 for 10.00)".
//! - Quantity missing but a price or total present: quantity 1. If the
//!   line also has both a unit price and a total, the total must then be
//!   the unit price (with or without the 16% tax); otherwise the quantity is
//!   in a column we did not recognise, and the line is refused.
//! - Refused: quantity 0; negative quantities, prices or totals (returns
//!   and refunds are not supported: issue a credit note at the backend);
//!   whole quantities above 4294967295; missing descriptions; sales without
//!   lines.
//!
//! # The fraction rule
//! The backend takes whole quantities >= 1 only. A line whose quantity is
//! not a whole number (e.g. 1.5 kg, 0.25) is sent as quantity 1 at unit
//! price = quantity x unit price (the exact decimal product, normalized, not
//! rounded), and its description gets " (1.5 x 4.00)" appended: the till's
//! quantity (normalized) and unit price (as the till wrote it).
//! [`SaleLine::converted_from`] records the original values. The line's
//! amount, and so the invoice's totals, are unchanged.
//!
//! # Dates
//! The sale's date is kept as YYYY-MM-DD, the time and any zone dropped
//! without conversion (the date as the till wrote it). Accepted: YYYY-MM-DD,
//! YYYY/MM/DD, YYYY.MM.DD, YYYYMMDD, ISO 8601 date-times
//! (`2025-06-30T09:15:00Z`, `2025-06-30 09:15`), Unix timestamps in seconds
//! or milliseconds (taken in UTC), and day-first DD/MM/YYYY, DD-MM-YYYY,
//! DD.MM.YYYY, optionally followed by a time. Day-first is the Jordanian
//! convention: `03/04/2025` is 3 April 2025; month-first (US) dates are not
//! recognised, and one with a day above 12 (`06/30/2025`) gives no date.
//! Two-digit years and anything unparseable give no date (`None`): the
//! backend sets the invoice date itself, so a date never blocks a sale.
//!
//! # Invoice numbers and customers
//! A sale without a customer is for `IntakeOptions::default_customer`
//! ("Walk-in customer"). A sale without an invoice number gets a stable
//! derived one: `POS-` + the first 16 hex digits of the SHA-256 of its
//! canonical content (customer, date, lines), so the same file dropped twice
//! maps to the same numbers (the backend's unique `invoice_number` then
//! stops a duplicate). Identical sales in one document get `-2`, `-3`, ...
//! on the second, third, ... so they are not merged.
//!
//! # Limits
//! Text fields up to 1000 characters, CSV lines up to 64 KiB, up to 10,000
//! sales per document and 1,000 lines per sale. At most 100 problems are
//! listed, then a count of the rest.
//!
//! # Layout
//! This file: the canonical [`Sale`], problems and [`IntakeError`], the
//! entry points. `fields` (canonical fields, synonyms, `intake.mapping`,
//! [`IntakeOptions`]), `decode` (bytes to text: BOMs, UTF-16,
//! `intake.encoding`), `lookup` (a field's value from a CSV row or JSON
//! object, a line's rules), `numbers` (amounts and dates), `drafts` (sales
//! before defaults and derived numbers), `json` (JSON shapes), `csv_rows`
//! (CSV), `tests`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::laravel::model::{NewInvoice, NewItem};

/// The customer of a sale that names none.
pub(crate) const DEFAULT_CUSTOMER: &str = "Walk-in customer";
/// Longest accepted text field, in characters.
pub(crate) const MAX_TEXT_CHARS: usize = 1000;
/// Longest accepted CSV line, in bytes.
pub(crate) const MAX_CSV_LINE_BYTES: usize = 64 * 1024;
/// Most sales accepted in one document.
pub(crate) const MAX_SALES: usize = 10_000;
/// Most lines accepted in one sale.
pub(crate) const MAX_LINES_PER_SALE: usize = 1_000;
/// The largest amount the backend's `decimal(15,2)` columns hold (unit
/// price, line tax and total, the invoice's tax and total).
pub(crate) const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_319, 232_830, 0, false, 2);
/// The largest quantity the backend's integer column holds.
pub(crate) const MAX_QUANTITY: u32 = i32::MAX as u32;
/// Problems listed in one error; the rest are counted.
const MAX_PROBLEMS: usize = 100;
/// Where a problem about a whole JSON document is reported.
const DOCUMENT: &str = "(document)";

mod csv_rows;
mod decode;
mod drafts;
mod fields;
mod json;
mod lookup;
mod numbers;

use self::csv_rows::*;
use self::decode::*;
use self::drafts::*;
pub(crate) use self::fields::Field;
use self::fields::*;
pub use self::fields::{IntakeOptions, Mapping};
use self::json::*;
use self::lookup::*;
use self::numbers::*;

// ---------------------------------------------------------------------------
// The canonical sale
// ---------------------------------------------------------------------------

/// A sale read from a POS export, in canonical form; stored as JSON in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct Sale {
    pub invoice_number: String,
    /// true when the till gave no number and one was derived from the content.
    #[serde(default)]
    pub number_derived: bool,
    pub customer_name: String,
    pub customer_email: Option<String>,
    pub customer_phone: Option<String>,
    /// The sale's date as YYYY-MM-DD when the input had a parseable one (time dropped), else None.
    pub date: Option<String>,
    pub currency: Option<String>,
    pub notes: Option<String>,
    pub lines: Vec<SaleLine>,
}

/// One line of a [`Sale`], as it is sent to the backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct SaleLine {
    /// As sent to the backend (may carry the " (1.5 x 4.00)" note of the fraction rule).
    pub description: String,
    /// As sent to the backend: whole, >= 1.
    pub quantity: u32,
    /// As sent, tax excluded. Stored as a string: an amount never becomes a float.
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    pub sku: Option<String>,
    /// Set when the fraction rule converted this line: the till's own quantity and unit price.
    pub converted_from: Option<OriginalQuantity>,
}

/// The till's own values of a line the fraction rule converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalQuantity {
    #[serde(with = "rust_decimal::serde::str")]
    pub(crate) quantity: Decimal,
    /// The till's unit price; when the till gave only a line total that does
    /// not divide evenly, total / quantity rounded to 6 decimals (for
    /// display only) and `line_total` holds the exact amount.
    #[serde(with = "rust_decimal::serde::str")]
    pub(crate) unit_price: Decimal,
    /// The till's line total, when the line was converted from it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub(crate) line_total: Option<Decimal>,
}

impl Sale {
    /// The body of `POST /api/invoices` for this sale.
    pub(crate) fn to_new_invoice(&self) -> NewInvoice {
        NewInvoice {
            invoice_number: self.invoice_number.clone(),
            customer_name: self.customer_name.clone(),
            customer_email: self.customer_email.clone(),
            customer_phone: self.customer_phone.clone(),
            items: self
                .lines
                .iter()
                .map(|l| NewItem {
                    description: l.description.clone(),
                    quantity: l.quantity,
                    price: l.unit_price,
                })
                .collect(),
        }
    }

    /// Hex SHA-256 of a canonical encoding of everything but `number_derived`
    /// (amounts normalized, so `4.50` and `4.5` are the same sale). Tells "the
    /// same sale resubmitted" from "the same number, a different sale".
    pub fn content_hash(&self) -> String {
        sha256_hex(canonical(self, true).as_bytes())
    }

    /// The content a derived number is made from: customer, date and lines.
    /// Changing this encoding changes every derived number (and so would
    /// let a re-dropped file through twice): it is pinned by a test.
    fn derivation_hash(&self) -> String {
        sha256_hex(canonical(self, false).as_bytes())
    }
}

/// A positional JSON array (stable whatever serde_json's map ordering) of
/// the sale's content.
fn canonical(sale: &Sale, whole: bool) -> String {
    let lines: Vec<Value> = sale
        .lines
        .iter()
        .map(|l| {
            let original = l.converted_from.as_ref().map(|o| {
                json!([
                    o.quantity.normalize().to_string(),
                    o.unit_price.normalize().to_string(),
                    o.line_total.map(|t| t.normalize().to_string()),
                ])
            });
            json!([
                l.description,
                l.quantity,
                l.unit_price.normalize().to_string(),
                l.sku,
                original,
            ])
        })
        .collect();
    let customer = json!([sale.customer_name, sale.customer_email, sale.customer_phone]);
    let value = if whole {
        json!([
            "sale-v1",
            sale.invoice_number,
            customer,
            sale.date,
            sale.currency,
            sale.notes,
            lines,
        ])
    } else {
        json!(["derived-v1", customer, sale.date, lines])
    };
    value.to_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}
// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One thing wrong with an input: where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct Problem {
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found in one input, each with where it is and what to do.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct IntakeError {
    pub problems: Vec<Problem>,
}

impl IntakeError {
    fn one(location: &str, message: impl Into<String>) -> IntakeError {
        IntakeError {
            problems: vec![Problem {
                location: location.to_string(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for IntakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for IntakeError {}

/// Collects problems, listing the first [`MAX_PROBLEMS`] and counting the
/// rest (a garbage file must not produce a garbage-sized report).
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    more: usize,
}

impl Problems {
    fn push(&mut self, location: impl Into<String>, message: impl Into<String>) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(Problem {
                location: location.into(),
                message: message.into(),
            });
        } else {
            self.more += 1;
        }
    }

    fn count(&self) -> usize {
        self.list.len() + self.more
    }

    fn is_empty(&self) -> bool {
        self.count() == 0
    }

    fn into_error(mut self) -> IntakeError {
        if self.more > 0 {
            self.list.push(Problem {
                location: "(more)".to_string(),
                message: format!(
                    "{} more problems not listed: fix the ones above and try again",
                    self.more
                ),
            });
        }
        IntakeError {
            problems: self.list,
        }
    }
}
// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// A whole POS export file (any supported format), all-or-nothing: Ok with every sale, or Err listing every problem.
pub fn parse_file(
    file_name: &str,
    bytes: &[u8],
    opts: &IntakeOptions,
) -> Result<Vec<Sale>, IntakeError> {
    let here = if file_name.trim().is_empty() {
        "(file)"
    } else {
        file_name
    };
    let text = decode(bytes, opts.encoding).map_err(|m| IntakeError::one(here, m))?;
    if text.trim().is_empty() {
        return Err(IntakeError::one(
            here,
            "the file is empty: it holds no sales (was it still being written?); export the sales again",
        ));
    }
    let mut p = Problems::default();
    let drafts = if is_json(file_name, &text) {
        json_text_drafts(&text, opts, &mut p)
    } else {
        csv_drafts(&text, opts, &mut p)
    };
    finish(drafts, opts, p, here)
}

/// A JSON document (HTTP intake body): one sale object, an array of them, or a wrapper object.
pub fn parse_json(v: &Value, opts: &IntakeOptions) -> Result<Vec<Sale>, IntakeError> {
    let mut p = Problems::default();
    let drafts = json_drafts(v, opts, &mut p);
    finish(drafts, opts, p, DOCUMENT)
}

fn is_json(file_name: &str, text: &str) -> bool {
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "json" | "jsonl" | "ndjson" => true,
        "csv" | "tsv" | "tab" => false,
        // Unknown or missing extension: a CSV header never starts with a bracket.
        _ => text.trim_start().starts_with(['{', '[']),
    }
}

#[cfg(test)]
mod tests;
