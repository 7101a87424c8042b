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

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use encoding_rs::{DecoderResult, Encoding};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::laravel::model::{NewInvoice, NewItem};

/// The customer of a sale that names none.
pub const DEFAULT_CUSTOMER: &str = "Walk-in customer";
/// Longest accepted text field, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Longest accepted CSV line, in bytes.
pub const MAX_CSV_LINE_BYTES: usize = 64 * 1024;
/// Most sales accepted in one document.
pub const MAX_SALES: usize = 10_000;
/// Most lines accepted in one sale.
pub const MAX_LINES_PER_SALE: usize = 1_000;
/// The largest amount the backend's `decimal(15,2)` columns hold (unit
/// price, line tax and total, the invoice's tax and total).
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_319, 232_830, 0, false, 2);
/// The largest quantity the backend's integer column holds.
pub const MAX_QUANTITY: u32 = i32::MAX as u32;
/// Problems listed in one error; the rest are counted.
const MAX_PROBLEMS: usize = 100;
/// Where a problem about a whole JSON document is reported.
const DOCUMENT: &str = "(document)";

// ---------------------------------------------------------------------------
// The canonical sale
// ---------------------------------------------------------------------------

/// A sale read from a POS export, in canonical form; stored as JSON in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub quantity: Decimal,
    /// The till's unit price; when the till gave only a line total that does
    /// not divide evenly, total / quantity rounded to 6 decimals (for
    /// display only) and `line_total` holds the exact amount.
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    /// The till's line total, when the line was converted from it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub line_total: Option<Decimal>,
}

impl Sale {
    /// The body of `POST /api/invoices` for this sale.
    pub fn to_new_invoice(&self) -> NewInvoice {
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
// Options and mapping
// ---------------------------------------------------------------------------

/// How intake reads its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct IntakeOptions {
    pub mapping: Mapping,
    /// The customer of sales that name none.
    pub default_customer: String,
    /// `intake.encoding`: how text without a byte order mark is read
    /// (UTF-8 unless the tills export in a legacy code page).
    pub encoding: &'static encoding_rs::Encoding,
}

impl Default for IntakeOptions {
    fn default() -> Self {
        IntakeOptions {
            mapping: Mapping::default(),
            default_customer: DEFAULT_CUSTOMER.to_string(),
            encoding: encoding_rs::UTF_8,
        }
    }
}

/// A canonical field of a sale or of one of its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    InvoiceNumber,
    CustomerName,
    CustomerEmail,
    CustomerPhone,
    Date,
    Currency,
    Notes,
    /// The JSON path of a sale's line array (not used for CSV).
    Items,
    Description,
    Quantity,
    UnitPrice,
    LineTotal,
    Sku,
}

impl Field {
    pub const ALL: [Field; 13] = [
        Field::InvoiceNumber,
        Field::CustomerName,
        Field::CustomerEmail,
        Field::CustomerPhone,
        Field::Date,
        Field::Currency,
        Field::Notes,
        Field::Items,
        Field::Description,
        Field::Quantity,
        Field::UnitPrice,
        Field::LineTotal,
        Field::Sku,
    ];

    /// The name used in `intake.mapping`.
    pub fn name(self) -> &'static str {
        match self {
            Field::InvoiceNumber => "invoice_number",
            Field::CustomerName => "customer_name",
            Field::CustomerEmail => "customer_email",
            Field::CustomerPhone => "customer_phone",
            Field::Date => "date",
            Field::Currency => "currency",
            Field::Notes => "notes",
            Field::Items => "items",
            Field::Description => "description",
            Field::Quantity => "quantity",
            Field::UnitPrice => "unit_price",
            Field::LineTotal => "line_total",
            Field::Sku => "sku",
        }
    }

    /// A mapping key, matched like any field name (case, `_`, `-`, spaces ignored).
    pub fn from_name(name: &str) -> Option<Field> {
        let n = norm(name);
        Field::ALL.into_iter().find(|f| norm(f.name()) == n)
    }

    /// Lines are read from line objects (JSON), sale fields from the sale.
    fn is_line_field(self) -> bool {
        matches!(
            self,
            Field::Description | Field::Quantity | Field::UnitPrice | Field::LineTotal | Field::Sku
        )
    }

    /// The field in words, for messages.
    fn label(self) -> &'static str {
        match self {
            Field::InvoiceNumber => "invoice number",
            Field::CustomerName => "customer name",
            Field::CustomerEmail => "customer email",
            Field::CustomerPhone => "customer phone",
            Field::Date => "date",
            Field::Currency => "currency",
            Field::Notes => "notes",
            Field::Items => "item lines",
            Field::Description => "description",
            Field::Quantity => "quantity",
            Field::UnitPrice => "unit price",
            Field::LineTotal => "line total",
            Field::Sku => "SKU",
        }
    }

    /// Names this field goes by, already normalized (see [`norm`]), best
    /// first; dotted ones are JSON paths. Ambiguous names (`id`, `cost`)
    /// come last so a more specific column wins.
    #[rustfmt::skip]
    fn synonyms(self) -> &'static [&'static str] {
        match self {
            Field::InvoiceNumber => &[
                "invoicenumber", "invoiceno", "invoicenum", "invoiceid", "invoice",
                "docnumber", "documentnumber", "documentno",
                "receiptnumber", "receiptno", "receiptid", "receipt",
                "transactionid", "transactionnumber", "transactionno", "txnid", "txnnumber", "txnno",
                "orderid", "ordernumber", "orderno", "order", "saleid", "salenumber", "saleno",
                "ticketid", "ticketnumber", "ticketno", "billnumber", "billno", "appointmentid",
                "txn", "transid", "transno", "checknumber", "checkno",
                "number", "id",
            ],
            Field::CustomerName => &[
                "customername", "customer.name", "customerref.name", "customer",
                "customerfullname", "customer.fullname", "customerdisplayname", "customer.displayname",
                "clientname", "client.name", "client", "buyername", "buyer.name", "buyer", "billto.name",
            ],
            Field::CustomerEmail => &[
                "customeremail", "customer.email", "customer.emailaddress", "email", "emailaddress",
                "clientemail", "client.email", "buyeremail", "buyer.email", "billemail.address", "billemail",
            ],
            Field::CustomerPhone => &[
                "customerphone", "customer.phone", "customer.mobile", "customer.telephone", "customermobile",
                "phone", "phonenumber", "mobile", "mobilenumber", "telephone", "tel",
                "clientphone", "client.phone", "buyerphone", "buyer.phone",
            ],
            Field::Date => &[
                "date", "invoicedate", "saledate", "salesdate", "transactiondate", "txndate", "orderdate",
                "receiptdate", "documentdate", "issuedate", "createdat", "created", "datetime", "timestamp",
            ],
            Field::Currency => &["currency", "currencycode", "currencyref.value", "currencyref"],
            Field::Notes => &[
                "notes", "note", "memo", "comment", "comments", "remarks",
                "customermemo.value", "customermemo", "privatenote",
            ],
            Field::Items => &[
                "items", "lines", "lineitems", "line", "products", "details", "entries",
                "orderitems", "saleitems", "salelines", "itemlines",
            ],
            Field::Description => &[
                "description", "itemdescription", "itemname", "productname", "servicename",
                "productdescription", "name", "item", "product", "service", "title",
                "itemref.name", "salesitemlinedetail.itemref.name",
                "product.name", "product.title", "item.name", "item.title", "article", "articlename",
            ],
            Field::Quantity => &[
                "quantity", "qty", "salesitemlinedetail.qty", "quantitysold", "qtysold", "unitssold",
                "count", "units", "hours", "hrs", "weight",
            ],
            Field::UnitPrice => &[
                "unitprice", "price", "priceeach", "itemprice", "sellingprice", "saleprice",
                "salesitemlinedetail.unitprice", "unitcost", "rate", "cost",
            ],
            Field::LineTotal => &[
                "linetotal", "total", "amount", "lineamount", "subtotal", "linesubtotal",
                "totalprice", "totalamount", "extendedprice",
            ],
            Field::Sku => &[
                "sku", "productsku", "itemsku", "code", "itemcode", "productcode", "barcode",
                "upc", "ean", "partnumber", "partno", "product.sku", "item.sku",
            ],
        }
    }

    fn names() -> String {
        Field::ALL.map(Field::name).join(", ")
    }
}

/// Where a customer's first and last names are found when no field holds
/// the whole name (normalized; dotted ones are JSON paths).
#[rustfmt::skip]
const NAME_PARTS: &[(&str, &str)] = &[
    ("customer.firstname", "customer.lastname"),
    ("customer.givenname", "customer.familyname"),
    ("client.firstname", "client.lastname"),
    ("billingaddress.firstname", "billingaddress.lastname"),
    ("customerfirstname", "customerlastname"),
    ("clientfirstname", "clientlastname"),
    ("firstname", "lastname"),
    ("givenname", "familyname"),
    ("firstname", "surname"),
];

/// "First Last" from the parts present, if any.
fn join_name(first: Option<String>, last: Option<String>) -> Option<String> {
    let parts: Vec<String> = [first, last].into_iter().flatten().collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Keys of wrapper objects holding a document's sales, normalized.
#[rustfmt::skip]
const WRAPPERS: &[&str] = &[
    "invoices", "sales", "transactions", "orders", "receipts", "data",
    "invoice", "sale", "transaction", "order", "receipt", "queryresponse", "results", "records",
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct MapEntry {
    /// As configured: a CSV column name or a dotted JSON path; None when
    /// the field is to be ignored (configured as null).
    path: Option<String>,
    /// Each segment normalized, to compare with synonyms.
    norm: String,
}

/// Explicit field mapping from config.json `intake.mapping`: canonical field -> CSV column name or JSON path.
///
/// JSON paths are dotted (`CustomerRef.name`, `SalesItemLineDetail.Qty`);
/// sale fields are relative to the sale object, line fields to the line
/// object, `items` names the sale's line array. An entry overrides detection
/// for its field only, and the column or key it names is no longer taken by
/// detection for another field. `null` ignores a field the till exports
/// under a misleading name (e.g. a `total` column holding the order total).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    entries: BTreeMap<Field, MapEntry>,
}

impl Mapping {
    /// Validates the config value (a JSON object of string -> string). Err names the bad key and lists the valid canonical fields.
    pub fn from_json(v: &Value) -> Result<Mapping, String> {
        let obj = match v {
            Value::Null => return Ok(Mapping::default()),
            Value::Object(obj) => obj,
            other => {
                return Err(format!(
                    "intake.mapping must be an object of canonical field -> CSV column name or JSON path \
                     (e.g. {{\"quantity\": \"Menge\"}}), found {}",
                    kind_of(other)
                ))
            }
        };
        let mut mapping = Mapping::default();
        let mut errors = Vec::new();
        for (key, value) in obj {
            let Some(field) = Field::from_name(key) else {
                errors.push(format!(
                    "intake.mapping: unknown field \"{key}\"; the valid fields are: {}",
                    Field::names()
                ));
                continue;
            };
            let path = match value {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim()),
                Value::Null if matches!(field, Field::Items | Field::Description) => {
                    errors.push(format!(
                        "intake.mapping.{key} cannot be null: every sale needs its {}",
                        field.label()
                    ));
                    continue;
                }
                Value::Null => None,
                Value::String(_) => {
                    errors.push(format!(
                        "intake.mapping.{key} is empty: give the CSV column name or JSON path, \
                         null to ignore the field, or remove the entry"
                    ));
                    continue;
                }
                other => {
                    errors.push(format!(
                        "intake.mapping.{key} must be a CSV column name or JSON path (text), \
                         or null to ignore the field; found {}",
                        kind_of(other)
                    ));
                    continue;
                }
            };
            if mapping.entries.contains_key(&field) {
                errors.push(format!(
                    "intake.mapping names the field {} twice (again as \"{key}\"): keep one",
                    field.name()
                ));
                continue;
            }
            match path {
                Some(path) => mapping.set(field, path),
                None => mapping.ignore(field),
            }
        }
        if errors.is_empty() {
            Ok(mapping)
        } else {
            Err(errors.join("; "))
        }
    }

    /// Maps `field` to a CSV column name or dotted JSON path.
    pub fn set(&mut self, field: Field, path: &str) {
        let path = path.trim().to_string();
        let norm = path.split('.').map(norm).collect::<Vec<_>>().join(".");
        let path = Some(path);
        self.entries.insert(field, MapEntry { path, norm });
    }

    /// Ignores `field`: it is never read, whatever the input calls it.
    pub fn ignore(&mut self, field: Field) {
        let entry = MapEntry {
            path: None,
            norm: String::new(),
        };
        self.entries.insert(field, entry);
    }

    /// The configured column or path of `field`.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.entries.get(&field).and_then(|e| e.path.as_deref())
    }

    /// The mapping as config.json holds it (the inverse of [`Mapping::from_json`]).
    pub fn to_json(&self) -> Value {
        let map: Map<String, Value> = self
            .entries
            .iter()
            .map(|(f, e)| {
                let path = e.path.clone().map_or(Value::Null, Value::String);
                (f.name().to_string(), path)
            })
            .collect();
        Value::Object(map)
    }

    /// Whether `field` is configured as null (ignored).
    pub fn ignores(&self, field: Field) -> bool {
        self.entries.get(&field).is_some_and(|e| e.path.is_none())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether another field's entry names `synonym` (normalized), which
    /// detection for `field` must then leave alone. In JSON only entries of
    /// the same level (sale or line) count.
    fn claims(&self, synonym: &str, field: Field, same_level: bool) -> bool {
        self.entries.iter().any(|(f, e)| {
            *f != field
                && (!same_level || f.is_line_field() == field.is_line_field())
                && e.norm == synonym
        })
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One thing wrong with an input: where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

// ---------------------------------------------------------------------------
// Text decoding
// ---------------------------------------------------------------------------

const EXPECTED: &str =
    "expected a CSV or JSON export of sales saved as UTF-8, UTF-16 (with byte order mark) \
     or the code page named by intake.encoding";

/// The file's text, or why it is not one. A byte order mark (UTF-8,
/// UTF-16 LE/BE) wins; ASCII text saved as UTF-16 without one is
/// recognised by its NUL bytes; anything else is read in `encoding`.
fn decode(bytes: &[u8], encoding: &'static Encoding) -> Result<String, String> {
    let text = if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        utf8(rest, 3)?
    } else if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        utf16(rest, u16::from_le_bytes)?
    } else if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        utf16(rest, u16::from_be_bytes)?
    } else if encoding == encoding_rs::UTF_16LE {
        utf16(bytes, u16::from_le_bytes)?
    } else if encoding == encoding_rs::UTF_16BE {
        utf16(bytes, u16::from_be_bytes)?
    } else if bytes.len() >= 4 && bytes[0] != 0 && bytes[1] == 0 && bytes[2] != 0 && bytes[3] == 0 {
        // ASCII text saved as UTF-16 LE without a byte order mark.
        utf16(bytes, u16::from_le_bytes)?
    } else if bytes.len() >= 4 && bytes[0] == 0 && bytes[1] != 0 && bytes[2] == 0 && bytes[3] != 0 {
        utf16(bytes, u16::from_be_bytes)?
    } else {
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return Err(format!(
                "not a text file: it holds NUL bytes (first at byte {at}); {EXPECTED}"
            ));
        }
        if encoding == encoding_rs::UTF_8 {
            utf8(bytes, 0)?
        } else {
            legacy(bytes, encoding)?
        }
    };
    // Old DOS tools end text files with Ctrl-Z; a stray BOM may remain.
    let text = text
        .trim_start_matches('\u{feff}')
        .trim_end_matches('\u{1a}');
    if let Some((i, c)) = text
        .char_indices()
        .find(|&(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
    {
        let line = text[..i].matches('\n').count() + 1;
        return Err(format!(
            "not a text file: control character U+{:04X} on line {line}; {EXPECTED}",
            c as u32
        ));
    }
    Ok(text.to_string())
}

fn utf8(bytes: &[u8], offset: usize) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        format!(
            "not a text file: the bytes at offset {} are not UTF-8; {EXPECTED} \
             (a text export in a legacy code page, such as Windows-1256, is read with \
             intake.encoding set to its name, e.g. \"windows-1256\"; or re-save it as UTF-8)",
            e.utf8_error().valid_up_to() + offset
        )
    })
}

/// Text in a legacy code page (`encoding_rs`, no replacement characters:
/// a byte the code page does not define is an error, never a silent `\u{fffd}`).
fn legacy(bytes: &[u8], encoding: &'static Encoding) -> Result<String, String> {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(
        decoder
            .max_utf8_buffer_length_without_replacement(bytes.len())
            .unwrap_or(bytes.len()),
    );
    let mut read = 0;
    loop {
        let (result, n) =
            decoder.decode_to_string_without_replacement(&bytes[read..], &mut out, true);
        read += n;
        match result {
            DecoderResult::InputEmpty => return Ok(out),
            DecoderResult::OutputFull => out.reserve(bytes.len() - read + 16),
            DecoderResult::Malformed(bad, after) => {
                let at = read - usize::from(bad) - usize::from(after);
                return Err(format!(
                    "not a text file: the bytes at offset {at} are not {} (intake.encoding); \
                     {EXPECTED}",
                    encoding.name()
                ));
            }
        }
    }
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, String> {
    if !bytes.len().is_multiple_of(2) {
        return Err(format!(
            "not a text file: UTF-16 text has an odd number of bytes; {EXPECTED}"
        ));
    }
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| format!("not a text file: invalid UTF-16; {EXPECTED}"))
}

// ---------------------------------------------------------------------------
// Field lookup, shared by CSV rows and JSON objects
// ---------------------------------------------------------------------------

/// Field-name normalization: case, `_`, `-` and whitespace ignored.
fn norm_chars(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars()
        .filter(|c| !matches!(c, '_' | '-') && !c.is_whitespace())
        .flat_map(char::to_lowercase)
}

fn norm(s: &str) -> String {
    norm_chars(s).collect()
}

fn norm_eq(key: &str, normalized: &str) -> bool {
    norm_chars(key).eq(normalized.chars())
}

/// A raw value found for a field.
enum Scalar {
    /// Text, or a JSON number's exact text.
    Text(String),
    /// A JSON value of the wrong kind ("an array", "true/false").
    Bad(&'static str),
}

/// What a source holds for one field, and where.
struct Slot {
    /// Where the value is (or would be).
    loc: String,
    /// None when absent or blank.
    val: Option<Scalar>,
    /// How an absent value is described ("is missing", "is empty").
    absent: &'static str,
    /// Set when `intake.mapping` chose the place.
    mapped: bool,
}

/// A CSV row or a JSON object that fields are read from.
trait Source {
    fn slot(&self, field: Field) -> Slot;
    /// The customer's name from separate first and last name fields
    /// (`first_name` + `last_name`, `customer.given_name` +
    /// `customer.family_name`...), when there is no whole-name field.
    fn name_parts(&self) -> Option<String> {
        None
    }
    /// Where the row or object is, for problems about it as a whole.
    fn here(&self) -> String;
}

enum Got<T> {
    Absent,
    /// Present but wrong; the problem is already reported.
    Bad,
    Value(T),
}

impl<T> Got<T> {
    fn value(self) -> Option<T> {
        match self {
            Got::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Placeholder texts tills print for "nothing here".
fn is_placeholder(t: &str) -> bool {
    ["-", "--", "n/a", "null", "none"]
        .iter()
        .any(|p| t.eq_ignore_ascii_case(p))
}

/// A value shortened for quoting in a message.
fn shorten(t: &str) -> String {
    crate::laravel::error::first_chars(t, 40)
}

fn absent_message(field: Field, slot: &Slot, what: &str) -> String {
    let via = if slot.mapped {
        " (as intake.mapping says)"
    } else {
        ""
    };
    format!("{} {}{via}: {what}", field.label(), slot.absent)
}

fn text_of(p: &mut Problems, slot: &Slot) -> Got<String> {
    match &slot.val {
        None => Got::Absent,
        Some(Scalar::Bad(kind)) => {
            p.push(&slot.loc, format!("must be text, found {kind}"));
            Got::Bad
        }
        Some(Scalar::Text(t)) => {
            let t = t.trim();
            if t.is_empty() || is_placeholder(t) {
                return Got::Absent;
            }
            let chars = t.chars().count();
            if chars > MAX_TEXT_CHARS {
                p.push(
                    &slot.loc,
                    format!(
                        "is {chars} characters long, at most {MAX_TEXT_CHARS} are accepted: \
                         is this the right column, or is the file damaged?"
                    ),
                );
                return Got::Bad;
            }
            Got::Value(t.to_string())
        }
    }
}

fn number_of(p: &mut Problems, slot: &Slot) -> Got<Decimal> {
    match &slot.val {
        None => Got::Absent,
        Some(Scalar::Bad(kind)) => {
            p.push(&slot.loc, format!("must be a number, found {kind}"));
            Got::Bad
        }
        Some(Scalar::Text(t)) => {
            let t = t.trim();
            if t.is_empty() {
                return Got::Absent;
            }
            match parse_amount(t) {
                Ok(d) => Got::Value(d),
                Err(NumError::Ambiguous) => {
                    p.push(
                        &slot.loc,
                        format!(
                            "\"{t}\" is ambiguous (a thousands separator or a decimal comma?): \
                             write it as {} or {}",
                            t.replace(',', ""),
                            t.replace(',', ".")
                        ),
                    );
                    Got::Bad
                }
                Err(NumError::TooLarge) => {
                    p.push(
                        &slot.loc,
                        format!("\"{}\" has too many digits for an amount", shorten(t)),
                    );
                    Got::Bad
                }
                Err(NumError::NotANumber) => {
                    p.push(
                        &slot.loc,
                        format!("\"{}\" is not a number: write it like 4.50", shorten(t)),
                    );
                    Got::Bad
                }
            }
        }
    }
}

/// Text for grouping rows by invoice number; problems are reported later.
fn plain_text(slot: &Slot) -> Option<String> {
    match &slot.val {
        Some(Scalar::Text(t)) => {
            let t = t.trim();
            (!t.is_empty() && !is_placeholder(t)).then(|| t.to_string())
        }
        _ => None,
    }
}

/// The sale-level fields of a sale, checked.
struct SaleFields {
    here: String,
    number_loc: String,
    number: Option<String>,
    customer_name: Option<String>,
    customer_email: Option<String>,
    customer_phone: Option<String>,
    date: Option<String>,
    currency: Option<String>,
    notes: Option<String>,
}

fn read_sale_fields<S: Source + ?Sized>(src: &S, p: &mut Problems) -> SaleFields {
    let number_slot = src.slot(Field::InvoiceNumber);
    let number = text_of(p, &number_slot).value();
    if let Some(problem) = number.as_deref().and_then(number_problem) {
        p.push(&number_slot.loc, problem);
    }
    let customer_name = text_of(p, &src.slot(Field::CustomerName))
        .value()
        .or_else(|| src.name_parts());
    let email_slot = src.slot(Field::CustomerEmail);
    let customer_email = text_of(p, &email_slot).value();
    if let Some(e) = &customer_email {
        if !looks_like_email(e) {
            p.push(
                &email_slot.loc,
                format!(
                    "\"{}\" is not an email address: correct it or leave it empty \
                     (the backend would refuse the whole invoice)",
                    shorten(e)
                ),
            );
        }
    }
    let customer_phone = text_of(p, &src.slot(Field::CustomerPhone)).value();
    let date = text_of(p, &src.slot(Field::Date))
        .value()
        .and_then(|d| parse_date(&d));
    let currency = text_of(p, &src.slot(Field::Currency)).value();
    let notes = text_of(p, &src.slot(Field::Notes)).value();
    SaleFields {
        here: src.here(),
        number_loc: number_slot.loc,
        number,
        customer_name,
        customer_email,
        customer_phone,
        date,
        currency,
        notes,
    }
}

/// Close to what the backend's `email` rule accepts: one `@`, a local part,
/// a domain of letters, digits, `-` and dots, no spaces.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "()<>[]:;,\\\"@".contains(c))
        && !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// Why an invoice number cannot be sent, if it cannot: a control or
/// invisible format character (a line break, ESC, NUL, a bidi override)
/// would forge log lines, drive a terminal or show another number than the
/// one stored. The number is quoted escaped.
fn number_problem(number: &str) -> Option<String> {
    let (at, c) = number
        .chars()
        .enumerate()
        .find(|&(_, c)| crate::logging::is_unsafe_char(c))?;
    let what = match c {
        '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => "a line break",
        '\t' => "a tab",
        '\u{0}' => "NUL",
        '\u{1b}' => "ESC, which starts terminal escape codes",
        '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            "a bidirectional control, which changes the order text is shown in"
        }
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' => "a zero-width character",
        c if c.is_control() => "a control character",
        _ => "an invisible format character",
    };
    Some(format!(
        "\"{}\" holds U+{:04X}, {what}, at character {}: an invoice number is printed on the \
         legal invoice and in logs and must be plain text; correct it in the till's export",
        crate::logging::untrusted(&shorten(number)),
        c as u32,
        at + 1
    ))
}

/// One line, checked and converted (the fraction rule) and within what the
/// backend can store, or None with the problems reported.
fn read_line<S: Source + ?Sized>(src: &S, p: &mut Problems) -> Option<SaleLine> {
    let line = convert_line(src, p)?;
    storable_line(src, &line, p).then_some(line)
}

/// Whether the backend can store `line`: its unit price, and its total
/// with the 16% tax, within `decimal(15,2)`. One absurd sale must be
/// refused here: at the backend it fails with a 500 forever, which looks
/// like the backend being down.
fn storable_line<S: Source + ?Sized>(src: &S, line: &SaleLine, p: &mut Problems) -> bool {
    let price_loc = || {
        let u = src.slot(Field::UnitPrice);
        if u.val.is_some() {
            u.loc
        } else {
            src.slot(Field::LineTotal).loc
        }
    };
    if crate::tax::round_money(line.unit_price) > MAX_AMOUNT {
        let how = match &line.converted_from {
            Some(o) if o.line_total.is_none() => {
                format!(
                    "{} x {} = {}",
                    o.quantity.normalize(),
                    o.unit_price,
                    line.unit_price
                )
            }
            _ => line.unit_price.to_string(),
        };
        p.push(
            price_loc(),
            format!(
                "{how} is too large: the backend stores amounts up to {MAX_AMOUNT}; \
                 is this the right column? Otherwise split the sale"
            ),
        );
        return false;
    }
    match line_total_with_tax(line) {
        Some(total) if total <= MAX_AMOUNT => true,
        total => {
            p.push(
                src.here(),
                format!(
                    "the line's total with the 16% sales tax would be {}, more than the backend \
                     can store ({MAX_AMOUNT}): split it into several lines or invoices",
                    shown_total(total)
                ),
            );
            false
        }
    }
}

/// `quantity x unit price` plus the 16% tax, as the backend stores it
/// (rounded to cents); `None` beyond what a decimal holds.
fn line_total_with_tax(line: &SaleLine) -> Option<Decimal> {
    Decimal::from(line.quantity)
        .checked_mul(line.unit_price)?
        .checked_mul(Decimal::ONE + crate::tax::RATE)
        .map(crate::tax::round_money)
}

/// The invoice's total with tax as the backend computes it (the tax is
/// rounded once, on the sum).
fn invoice_total_with_tax(lines: &[SaleLine]) -> Option<Decimal> {
    let mut net = Decimal::ZERO;
    for l in lines {
        net = net.checked_add(Decimal::from(l.quantity).checked_mul(l.unit_price)?)?;
    }
    net.checked_mul(Decimal::ONE + crate::tax::RATE)
        .map(crate::tax::round_money)
}

fn shown_total(total: Option<Decimal>) -> String {
    match total {
        Some(t) => format!("{t:.2}"),
        None => "beyond any amount".into(),
    }
}

/// One line, checked and converted (the fraction rule), or None with the
/// problems reported.
fn convert_line<S: Source + ?Sized>(src: &S, p: &mut Problems) -> Option<SaleLine> {
    let before = p.count();
    let d_slot = src.slot(Field::Description);
    let description = match text_of(p, &d_slot) {
        Got::Value(d) => Some(d),
        Got::Absent => {
            p.push(
                &d_slot.loc,
                absent_message(
                    Field::Description,
                    &d_slot,
                    "every line needs a description of the item sold",
                ),
            );
            None
        }
        Got::Bad => None,
    };
    let q_slot = src.slot(Field::Quantity);
    let u_slot = src.slot(Field::UnitPrice);
    let t_slot = src.slot(Field::LineTotal);
    let quantity = number_of(p, &q_slot);
    let unit = number_of(p, &u_slot);
    let total = number_of(p, &t_slot);
    let sku = text_of(p, &src.slot(Field::Sku)).value();

    if let Got::Value(q) = &quantity {
        if q.is_zero() {
            p.push(
                &q_slot.loc,
                "is 0: a line must sell at least some of the item; remove the line or correct the quantity",
            );
        } else if q.is_sign_negative() {
            p.push(
                &q_slot.loc,
                format!(
                    "is negative ({q}): returns and refunds are not supported here; \
                     issue a credit note at the backend, and remove this line"
                ),
            );
        }
    }
    for (amount, slot) in [(&unit, &u_slot), (&total, &t_slot)] {
        if let Got::Value(a) = amount {
            if a.is_sign_negative() && !a.is_zero() {
                p.push(
                    &slot.loc,
                    format!(
                        "is negative ({a}): discount and refund lines are not supported; \
                         put the discounted price on the item itself, and issue a credit note \
                         at the backend for refunds"
                    ),
                );
            }
        }
    }
    if matches!(unit, Got::Absent) && matches!(total, Got::Absent) {
        p.push(
            &u_slot.loc,
            absent_message(
                Field::UnitPrice,
                &u_slot,
                "give the unit price (tax excluded) or the line total",
            ),
        );
    }
    if p.count() > before {
        return None;
    }
    let description = description?;
    let quantity_given = matches!(quantity, Got::Value(_));
    let q = quantity.value().unwrap_or(Decimal::ONE);
    let (unit, total) = (unit.value(), total.value());
    if let (false, Some(u), Some(t)) = (quantity_given, unit, total) {
        // A quantity of 1 is our assumption: the total must agree with it
        // (with or without the 16% tax), or the quantity is somewhere we
        // did not look and the invoice would be wrong.
        let near = |a: Decimal| (a - t).abs() <= Decimal::new(1, 2);
        if !near(u) && !u.checked_mul(Decimal::new(116, 2)).is_some_and(near) {
            p.push(
                &t_slot.loc,
                format!(
                    "is {t}, but the line has no quantity and its unit price is {u}: name the quantity \
                     column or path in intake.mapping.quantity, or set intake.mapping.line_total to \
                     null if this is not the line's total"
                ),
            );
            return None;
        }
    }

    let unit = match (unit, total) {
        (Some(u), _) => u,
        (None, Some(t)) => match exact_unit(t, q) {
            Some(u) => u,
            None => {
                // No exact unit price: one unit at the line total, so the
                // amount is exactly what the till charged.
                let per_unit = t.checked_div(q).map(|u| u.round_dp(6).normalize());
                return Some(SaleLine {
                    description: format!("{description} ({} for {t})", q.normalize()),
                    quantity: 1,
                    unit_price: t,
                    sku,
                    converted_from: Some(OriginalQuantity {
                        quantity: q,
                        unit_price: per_unit.unwrap_or(t),
                        line_total: Some(t),
                    }),
                });
            }
        },
        (None, None) => return None, // reported above
    };

    if q.fract().is_zero() {
        let Some(whole) = q.to_u32().filter(|n| *n <= MAX_QUANTITY) else {
            p.push(
                &q_slot.loc,
                format!(
                    "is {q}: too large, the backend stores at most {MAX_QUANTITY} units per line"
                ),
            );
            return None;
        };
        return Some(SaleLine {
            description,
            quantity: whole,
            unit_price: unit,
            sku,
            converted_from: None,
        });
    }
    // The fraction rule (see the module documentation).
    let Some(amount) = q.checked_mul(unit) else {
        p.push(
            &q_slot.loc,
            format!("{q} x {unit} is too large for an amount"),
        );
        return None;
    };
    Some(SaleLine {
        description: format!("{description} ({} x {unit})", q.normalize()),
        quantity: 1,
        unit_price: amount.normalize(),
        sku,
        converted_from: Some(OriginalQuantity {
            quantity: q,
            unit_price: unit,
            line_total: None,
        }),
    })
}

/// total / quantity when that is exact to 3 decimals (fils).
fn exact_unit(total: Decimal, q: Decimal) -> Option<Decimal> {
    let u = total.checked_div(q)?.round_dp(3);
    (u.checked_mul(q)? == total).then(|| u.normalize())
}

// ---------------------------------------------------------------------------
// Numbers and dates
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum NumError {
    NotANumber,
    Ambiguous,
    TooLarge,
}

const CURRENCY_MARKS: &[&str] = &[
    "JOD", "JD", "USD", "EUR", "GBP", "SAR", "AED", "$", "€", "£", "د.ا",
];

/// Drops a currency mark before or after an amount (`JOD 4.500`, `4.50$`).
fn strip_currency(s: &str) -> &str {
    let mut s = s.trim();
    for mark in CURRENCY_MARKS {
        let n = mark.len();
        if s.get(..n)
            .is_some_and(|head| head.eq_ignore_ascii_case(mark))
        {
            s = s[n..].trim_start();
        }
        let cut = s.len().saturating_sub(n);
        if s.get(cut..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(mark))
        {
            s = s[..cut].trim_end();
        }
    }
    s
}

/// An exact decimal from a till's text (see "Amounts" in the module docs).
fn parse_amount(raw: &str) -> Result<Decimal, NumError> {
    let mapped: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            '\u{660}'..='\u{669}' => char::from_digit(c as u32 - 0x660, 10).unwrap_or(c),
            '\u{6F0}'..='\u{6F9}' => char::from_digit(c as u32 - 0x6F0, 10).unwrap_or(c),
            '\u{66B}' => '.',
            '\u{66C}' => ',',
            '\u{2212}' => '-',
            other => other,
        })
        .collect();
    let mut s = strip_currency(&mapped);
    let mut negative = false;
    if let Some(inner) = s.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        negative = true;
        s = inner.trim();
    }
    if let Some(rest) = s.strip_prefix('-') {
        negative = !negative;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    let s = strip_currency(s);
    if s.is_empty() {
        return Err(NumError::NotANumber);
    }
    let value = if s.contains(['e', 'E']) {
        // JSON numbers print as 1e-7 when very small or large.
        if !s.chars().all(|c| c.is_ascii_digit() || "eE.+-".contains(c)) {
            return Err(NumError::NotANumber);
        }
        Decimal::from_scientific(s).map_err(|_| NumError::NotANumber)?
    } else {
        let (int, frac) = split_decimal(s)?;
        let int = ungroup(int)?;
        if !frac.chars().all(|c| c.is_ascii_digit()) || (int.is_empty() && frac.is_empty()) {
            return Err(NumError::NotANumber);
        }
        let int = if int.is_empty() { "0" } else { &int };
        let text = if frac.is_empty() {
            int.to_string()
        } else {
            format!("{int}.{frac}")
        };
        text.parse::<Decimal>().map_err(|_| NumError::TooLarge)?
    };
    Ok(if negative { -value } else { value })
}

/// Splits at the decimal separator: the last of `.` and `,` when both
/// appear, a lone `,` (decimal comma) or a lone `.`.
fn split_decimal(s: &str) -> Result<(&str, &str), NumError> {
    let dots = s.matches('.').count();
    let commas = s.matches(',').count();
    let at = match (dots, commas) {
        (0, 0) => return Ok((s, "")),
        (_, 0) if dots > 1 => return Ok((s, "")), // 1.234.567
        (0, _) if commas > 1 => return Ok((s, "")), // 1,234,567
        (0, 1) => {
            let (int, frac) = s.split_once(',').unwrap_or((s, ""));
            let digits = int.trim_start_matches(['\u{a0}', ' ']);
            if frac.len() == 3
                && (1..=3).contains(&digits.len())
                && !digits.starts_with('0')
                && digits.chars().all(|c| c.is_ascii_digit())
            {
                return Err(NumError::Ambiguous);
            }
            s.len() - frac.len() - 1
        }
        _ => s.rfind(['.', ',']).unwrap_or(s.len()),
    };
    let sep = s[at..].chars().next().unwrap_or('.');
    let (int, frac) = (&s[..at], &s[at + sep.len_utf8()..]);
    if int.contains(sep) {
        return Err(NumError::NotANumber);
    }
    Ok((int, frac))
}

/// The digits of an integer part, with thousands grouping (`,` `.` space,
/// no-break space, apostrophe) removed only when it groups by three.
fn ungroup(int: &str) -> Result<String, NumError> {
    let is_sep = |c: char| matches!(c, ',' | '.' | ' ' | '\u{a0}' | '\u{202f}' | '\'' | '’');
    if !int.contains(is_sep) {
        return if int.chars().all(|c| c.is_ascii_digit()) {
            Ok(int.to_string())
        } else {
            Err(NumError::NotANumber)
        };
    }
    let groups: Vec<&str> = int.split(is_sep).collect();
    let well_grouped = groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
        && (1..=3).contains(&groups[0].len())
        && groups[1..].iter().all(|g| g.len() == 3);
    if well_grouped {
        Ok(groups.concat())
    } else {
        Err(NumError::NotANumber)
    }
}

/// A sale date as YYYY-MM-DD (see "Dates" in the module docs).
fn parse_date(s: &str) -> Option<String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return match s.len() {
            8 => ymd(&s[..4], &s[4..6], &s[6..]),
            10 => epoch(s.parse().ok()?),
            13 => epoch(s.parse::<i64>().ok()? / 1000),
            _ => None,
        };
    }
    let day = s.split(|c: char| c == 'T' || c.is_whitespace()).next()?;
    let parts: Vec<&str> = day.split(['-', '/', '.']).collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|x| x.is_empty() || !x.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    match (parts[0].len(), parts[1].len(), parts[2].len()) {
        (4, 1..=2, 1..=2) => ymd(parts[0], parts[1], parts[2]),
        (1..=2, 1..=2, 4) => ymd(parts[2], parts[1], parts[0]),
        _ => None,
    }
}

fn ymd(y: &str, m: &str, d: &str) -> Option<String> {
    let date = chrono::NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    Some(date.format("%Y-%m-%d").to_string())
}

fn epoch(seconds: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.date_naive().format("%Y-%m-%d").to_string())
}

// ---------------------------------------------------------------------------
// Drafts: sales before defaults and derived numbers
// ---------------------------------------------------------------------------

struct Draft {
    fields: SaleFields,
    lines: Vec<SaleLine>,
}

/// Applies defaults and derived numbers, checks numbers across the
/// document, and decides all-or-nothing.
fn finish(
    drafts: Vec<Draft>,
    opts: &IntakeOptions,
    mut p: Problems,
    here: &str,
) -> Result<Vec<Sale>, IntakeError> {
    if drafts.is_empty() && p.is_empty() {
        p.push(here, "holds no sales: export at least one sale");
    }
    for d in &drafts {
        let total = invoice_total_with_tax(&d.lines);
        if total.is_none_or(|t| t > MAX_AMOUNT) {
            p.push(
                &d.fields.here,
                format!(
                    "the invoice total with the 16% sales tax would be {}, more than the backend \
                     can store ({MAX_AMOUNT}): split the sale into several invoices",
                    shown_total(total)
                ),
            );
        }
    }
    if !p.is_empty() {
        return Err(p.into_error());
    }
    let default_customer = match opts.default_customer.trim() {
        "" => DEFAULT_CUSTOMER,
        name => name,
    };
    let mut derived: HashMap<String, u32> = HashMap::new();
    let mut explicit: HashMap<String, (String, String)> = HashMap::new();
    let mut sales = Vec::with_capacity(drafts.len());
    for Draft { fields: f, lines } in drafts {
        let mut sale = Sale {
            invoice_number: f.number.clone().unwrap_or_default(),
            number_derived: f.number.is_none(),
            customer_name: f.customer_name.clone().unwrap_or_default(),
            customer_email: f.customer_email,
            customer_phone: f.customer_phone,
            date: f.date,
            currency: f.currency,
            notes: f.notes,
            lines,
        };
        if sale.number_derived {
            let base = format!("POS-{}", &sale.derivation_hash()[..16]);
            let seen = derived.entry(base.clone()).or_insert(0);
            *seen += 1;
            sale.invoice_number = if *seen == 1 {
                base
            } else {
                format!("{base}-{seen}")
            };
        }
        // Filled in after deriving the number, so changing the configured
        // default customer does not renumber a file dropped again.
        if f.customer_name.is_none() {
            sale.customer_name = default_customer.to_string();
        }
        if !sale.number_derived {
            let hash = sale.content_hash();
            match explicit.get(&sale.invoice_number) {
                Some((first, h)) if *h != hash => p.push(
                    &f.number_loc,
                    format!(
                        "invoice number \"{}\" is also used by the sale at {first} with different content: \
                         each sale needs its own number",
                        sale.invoice_number
                    ),
                ),
                Some(_) => {}
                None => {
                    explicit.insert(sale.invoice_number.clone(), (f.here.clone(), hash));
                }
            }
        }
        sales.push(sale);
    }
    if p.is_empty() {
        Ok(sales)
    } else {
        Err(p.into_error())
    }
}

/// Rows (CSV rows, flat JSON objects), one line each, grouped into sales by
/// invoice number in order of first appearance.
fn drafts_from_rows<S: Source>(rows: &[S], p: &mut Problems) -> Vec<Draft> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_number: HashMap<String, usize> = HashMap::new();
    // The numbered sale the previous row belongs to: a row with no number
    // continues it unless it names another customer or date.
    let mut open: Option<usize> = None;
    for (i, row) in rows.iter().enumerate() {
        match plain_text(&row.slot(Field::InvoiceNumber)) {
            Some(number) => {
                let g = *by_number.entry(number).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push(i);
                open = Some(g);
            }
            None => match open {
                Some(g) if continues(row, &rows[groups[g][0]]) => groups[g].push(i),
                _ => {
                    groups.push(vec![i]);
                    open = None;
                }
            },
        }
        if groups.len() > MAX_SALES {
            p.push(
                row.here(),
                format!(
                    "starts sale number {}: at most {MAX_SALES} sales are accepted in one file; split the export",
                    MAX_SALES + 1
                ),
            );
            return Vec::new();
        }
    }
    let mut drafts = Vec::with_capacity(groups.len());
    for group in groups {
        let first = &rows[group[0]];
        let fields = read_sale_fields(first, p);
        if let (Some(name), Some(number)) = (&fields.customer_name, &fields.number) {
            for &i in &group[1..] {
                let slot = rows[i].slot(Field::CustomerName);
                if let Some(other) = plain_text(&slot) {
                    if other != *name {
                        p.push(
                            &slot.loc,
                            format!(
                                "is \"{}\" but invoice {number} (from {}) is for \"{}\": \
                                 one invoice number must be one sale; give each sale its own number",
                                shorten(&other),
                                fields.here,
                                shorten(name)
                            ),
                        );
                    }
                }
            }
        }
        if group.len() > MAX_LINES_PER_SALE {
            p.push(
                &fields.here,
                format!(
                    "starts a sale of {} lines: at most {MAX_LINES_PER_SALE} lines are accepted in one sale",
                    group.len()
                ),
            );
            continue;
        }
        let lines = group
            .iter()
            .filter_map(|&i| read_line(&rows[i], p))
            .collect();
        drafts.push(Draft { fields, lines });
    }
    drafts
}

/// Whether an unnumbered row belongs to the sale started by `first`: its
/// customer and date are blank or repeat the sale's.
fn continues<S: Source>(row: &S, first: &S) -> bool {
    [
        Field::CustomerName,
        Field::CustomerEmail,
        Field::CustomerPhone,
        Field::Date,
    ]
    .into_iter()
    .all(|f| match plain_text(&row.slot(f)) {
        None => true,
        Some(v) => plain_text(&first.slot(f)).as_deref() == Some(v.as_str()),
    })
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_string()
    } else {
        format!("{prefix}.{path}")
    }
}

fn find_key<'v>(map: &'v Map<String, Value>, segment: &str) -> Option<(&'v str, &'v Value)> {
    if let Some((k, v)) = map.get_key_value(segment) {
        return Some((k.as_str(), v));
    }
    let n = norm(segment);
    map.iter()
        .find(|(k, _)| norm_eq(k, &n))
        .map(|(k, v)| (k.as_str(), v))
}

/// The value at a dotted path, keys matched like field names; with the path
/// as the document spells it.
fn resolve<'v>(obj: &'v Value, path: &str) -> Option<(String, &'v Value)> {
    let mut current = obj;
    let mut written = String::new();
    for segment in path.split('.') {
        let (key, value) = find_key(current.as_object()?, segment)?;
        if !written.is_empty() {
            written.push('.');
        }
        written.push_str(key);
        current = value;
    }
    Some((written, current))
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

fn scalar(v: &Value) -> Scalar {
    match v {
        Value::String(s) => Scalar::Text(s.clone()),
        // The shortest exact text of the number: never through a float.
        Value::Number(n) => Scalar::Text(n.to_string()),
        other => Scalar::Bad(kind_of(other)),
    }
}

/// A JSON object read as a sale, a line or a flat row.
struct JsonObj<'a> {
    obj: &'a Value,
    /// Path of the object: "", "[2]", "invoices[2].items[1]".
    prefix: String,
    mapping: &'a Mapping,
}

impl Source for JsonObj<'_> {
    fn name_parts(&self) -> Option<String> {
        let text = |path: &str| {
            resolve(self.obj, path).and_then(|(_, v)| match v {
                Value::String(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                _ => None,
            })
        };
        NAME_PARTS
            .iter()
            .find_map(|(first, last)| join_name(text(first), text(last)))
    }

    fn slot(&self, field: Field) -> Slot {
        if self.mapping.ignores(field) {
            return Slot {
                loc: join(&self.prefix, field.name()),
                val: None,
                absent: "is ignored",
                mapped: true,
            };
        }
        if let Some(path) = self.mapping.get(field) {
            return match resolve(self.obj, path) {
                Some((written, v)) if !is_blank(v) => Slot {
                    loc: join(&self.prefix, &written),
                    val: Some(scalar(v)),
                    absent: "is missing",
                    mapped: true,
                },
                _ => Slot {
                    loc: join(&self.prefix, path),
                    val: None,
                    absent: "is missing",
                    mapped: true,
                },
            };
        }
        let mut bad = None;
        for synonym in field.synonyms() {
            if self.mapping.claims(synonym, field, true) {
                continue;
            }
            let Some((written, v)) = resolve(self.obj, synonym) else {
                continue;
            };
            match v {
                // Objects are containers (`customer: {name}`, `ItemRef`),
                // read through the dotted synonyms.
                Value::Null | Value::Object(_) => {}
                Value::String(_) | Value::Number(_) => {
                    if !is_blank(v) {
                        return Slot {
                            loc: join(&self.prefix, &written),
                            val: Some(scalar(v)),
                            absent: "is missing",
                            mapped: false,
                        };
                    }
                }
                Value::Bool(_) | Value::Array(_) => {
                    bad.get_or_insert(Slot {
                        loc: join(&self.prefix, &written),
                        val: Some(scalar(v)),
                        absent: "is missing",
                        mapped: false,
                    });
                }
            }
        }
        bad.unwrap_or_else(|| Slot {
            loc: join(&self.prefix, field.name()),
            val: None,
            absent: "is missing",
            mapped: false,
        })
    }

    fn here(&self) -> String {
        if self.prefix.is_empty() {
            DOCUMENT.to_string()
        } else {
            self.prefix.clone()
        }
    }
}

impl JsonObj<'_> {
    fn has(&self, field: Field) -> bool {
        self.slot(field).val.is_some()
    }

    /// The sale's line array, where it is.
    fn lines(&self) -> Lines<'_> {
        if let Some(path) = self.mapping.get(Field::Items) {
            return match resolve(self.obj, path) {
                Some((w, Value::Array(a))) => Lines::Array(join(&self.prefix, &w), a),
                Some((w, v)) if !v.is_null() => Lines::NotArray(join(&self.prefix, &w), v),
                _ => Lines::Missing,
            };
        }
        let mut other = None;
        for synonym in Field::Items.synonyms() {
            if self.mapping.claims(synonym, Field::Items, true) {
                continue;
            }
            match resolve(self.obj, synonym) {
                Some((w, Value::Array(a))) => return Lines::Array(join(&self.prefix, &w), a),
                Some((w, v)) if !v.is_null() && other.is_none() => other = Some((w, v)),
                _ => {}
            }
        }
        match other {
            Some((w, v)) => Lines::NotArray(join(&self.prefix, &w), v),
            None => Lines::Missing,
        }
    }

    /// One line item written flat, with its sale's fields beside it.
    fn is_flat_row(&self) -> bool {
        !matches!(self.lines(), Lines::Array(..))
            && self.has(Field::Description)
            && (self.has(Field::Quantity)
                || self.has(Field::UnitPrice)
                || self.has(Field::LineTotal))
    }

    fn is_sale(&self) -> bool {
        matches!(self.lines(), Lines::Array(..)) || self.is_flat_row()
    }
}

enum Lines<'v> {
    Array(String, &'v Vec<Value>),
    NotArray(String, &'v Value),
    Missing,
}

/// JSON text: one document, or JSON Lines (several values, one sale each).
fn json_text_drafts(text: &str, opts: &IntakeOptions, p: &mut Problems) -> Vec<Draft> {
    let mut values = Vec::new();
    for item in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match item {
            Ok(v) => values.push(v),
            Err(e) => {
                let what = if e.is_eof() {
                    "the file ends too early: it is truncated or was still being written; export it again"
                } else {
                    "correct the JSON or export the sales again"
                };
                p.push(
                    format!("line {}, column {}", e.line(), e.column()),
                    format!("the JSON is not valid ({e}): {what}"),
                );
                return Vec::new();
            }
        }
    }
    if values.len() == 1 {
        json_drafts(&values[0], opts, p)
    } else {
        json_drafts(&Value::Array(values), opts, p)
    }
}

fn json_drafts(v: &Value, opts: &IntakeOptions, p: &mut Problems) -> Vec<Draft> {
    let mapping = &opts.mapping;
    let mut found = Vec::new();
    collect_sales(v, String::new(), 0, mapping, p, &mut found);
    if found.len() > MAX_SALES {
        p.push(
            DOCUMENT,
            format!(
                "holds {} sales: at most {MAX_SALES} are accepted in one document; split it",
                found.len()
            ),
        );
        return Vec::new();
    }
    // Flat rows (one line item per object) are grouped like CSV rows.
    if found.len() > 1 && found.iter().all(JsonObj::is_flat_row) {
        return drafts_from_rows(&found, p);
    }
    let mut drafts = Vec::with_capacity(found.len());
    for sale in &found {
        if sale.is_flat_row() {
            drafts.extend(drafts_from_rows(std::slice::from_ref(sale), p));
        } else if let Some(d) = nested_draft(sale, p) {
            drafts.push(d);
        }
    }
    drafts
}

/// The sale objects of a document, with their paths.
fn collect_sales<'a>(
    v: &'a Value,
    prefix: String,
    depth: usize,
    mapping: &'a Mapping,
    p: &mut Problems,
    out: &mut Vec<JsonObj<'a>>,
) {
    let here = if prefix.is_empty() {
        DOCUMENT.to_string()
    } else {
        prefix.clone()
    };
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                p.push(here, "is an empty list: it holds no sales");
            }
            for (i, item) in items.iter().enumerate() {
                let at = format!("{prefix}[{i}]");
                if item.is_object() {
                    out.push(JsonObj {
                        obj: item,
                        prefix: at,
                        mapping,
                    });
                } else {
                    p.push(
                        at,
                        format!("must be an object describing one sale, found {}", kind_of(item)),
                    );
                }
            }
        }
        Value::Object(map) => {
            let sale = JsonObj {
                obj: v,
                prefix,
                mapping,
            };
            // A sale with a line array is a sale even if it has a `data`
            // key; otherwise a wrapper key holding sales wins over reading
            // the object's own metadata (`name`, `count`) as a flat line.
            if depth < 3 && !matches!(sale.lines(), Lines::Array(..)) {
                if let Some((key, inner)) = wrapped_sales(map, depth, mapping) {
                    let at = join(&sale.prefix, key);
                    return collect_sales(inner, at, depth + 1, mapping, p, out);
                }
            }
            out.push(sale);
        }
        other => p.push(
            here,
            format!(
                "the JSON document is {}; expected one sale object, an array of sales, or an object \
                 holding them under \"invoices\", \"sales\", \"transactions\", \"orders\", \"receipts\" or \"data\"",
                kind_of(other)
            ),
        ),
    }
}

/// The first wrapper key of `map` whose value holds sales: an array, or an
/// object that is a sale or wraps sales itself.
fn wrapped_sales<'a>(
    map: &'a Map<String, Value>,
    depth: usize,
    mapping: &'a Mapping,
) -> Option<(&'a str, &'a Value)> {
    WRAPPERS.iter().find_map(|wrapper| {
        let (key, inner) = find_key(map, wrapper)?;
        let holds = match inner {
            Value::Array(_) => true,
            Value::Object(inner_map) => {
                let obj = JsonObj {
                    obj: inner,
                    prefix: String::new(),
                    mapping,
                };
                obj.is_sale()
                    || (depth < 2 && wrapped_sales(inner_map, depth + 1, mapping).is_some())
            }
            _ => false,
        };
        holds.then_some((key, inner))
    })
}

/// A sale object with a line array.
fn nested_draft(sale: &JsonObj<'_>, p: &mut Problems) -> Option<Draft> {
    let fields = read_sale_fields(sale, p);
    let (at, list) = match sale.lines() {
        Lines::Array(at, list) => (at, list),
        Lines::NotArray(at, v) => {
            p.push(
                at,
                format!("must be an array of item lines, found {}", kind_of(v)),
            );
            return None;
        }
        Lines::Missing => {
            let at = join(
                &sale.prefix,
                sale.mapping.get(Field::Items).unwrap_or("items"),
            );
            p.push(
                at,
                "item lines are missing: a sale needs an array of lines named items, lines, \
                 line_items, products, Line, details or entries (or set intake.mapping.items)",
            );
            return None;
        }
    };
    if list.is_empty() {
        p.push(at, "is empty: a sale needs at least one item line");
        return None;
    }
    if list.len() > MAX_LINES_PER_SALE {
        p.push(
            at,
            format!(
                "has {} lines: at most {MAX_LINES_PER_SALE} are accepted in one sale",
                list.len()
            ),
        );
        return None;
    }
    let before = p.count();
    let mut lines = Vec::with_capacity(list.len());
    for (i, line) in list.iter().enumerate() {
        let line_at = format!("{at}[{i}]");
        if !line.is_object() {
            p.push(
                line_at,
                format!(
                    "must be an object with a description, quantity and unit price, found {}",
                    kind_of(line)
                ),
            );
            continue;
        }
        match quickbooks_detail(line) {
            Detail::Sale => {}
            Detail::Skip => continue,
            Detail::Refuse(key, why) => {
                p.push(join(&line_at, key), why);
                continue;
            }
        }
        let src = JsonObj {
            obj: line,
            prefix: line_at,
            mapping: sale.mapping,
        };
        lines.extend(read_line(&src, p));
    }
    if lines.is_empty() && p.count() == before {
        p.push(
            at,
            "has no item lines (only sub-total or description lines): a sale needs at least one item",
        );
        return None;
    }
    Some(Draft { fields, lines })
}

enum Detail<'v> {
    Sale,
    Skip,
    Refuse(&'v str, &'static str),
}

/// QuickBooks lines carry a `DetailType`: only item lines are sales. Sub
/// totals and description-only lines are skipped; discount and group lines
/// are refused, because skipping them would change the invoice's amount.
fn quickbooks_detail(line: &Value) -> Detail<'_> {
    let Some((key, Value::String(kind))) = line.as_object().and_then(|m| find_key(m, "detailtype"))
    else {
        return Detail::Sale;
    };
    match norm(kind).as_str() {
        "salesitemlinedetail" => Detail::Sale,
        "discountlinedetail" => Detail::Refuse(
            key,
            "is a discount line: discount lines are not supported; put the discounted price on the items",
        ),
        "grouplinedetail" => Detail::Refuse(
            key,
            "is a group (bundle) line: list the bundle's items as separate lines",
        ),
        _ => Detail::Skip,
    }
}

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

/// Which column holds which field.
struct Columns {
    by_field: BTreeMap<Field, (usize, String)>,
    /// First and last name columns, used when no column holds the name.
    name_parts: Option<(Option<usize>, Option<usize>)>,
}

struct CsvRow<'a> {
    line: u64,
    record: &'a csv::StringRecord,
    columns: &'a Columns,
}

impl Source for CsvRow<'_> {
    fn slot(&self, field: Field) -> Slot {
        match self.columns.by_field.get(&field) {
            Some((i, name)) => {
                let cell = self.record.get(*i).unwrap_or("");
                Slot {
                    loc: format!("line {}, column \"{name}\"", self.line),
                    val: (!cell.trim().is_empty()).then(|| Scalar::Text(cell.to_string())),
                    absent: "is empty",
                    mapped: false,
                }
            }
            None => Slot {
                loc: format!("line {}", self.line),
                val: None,
                absent: "has no column",
                mapped: false,
            },
        }
    }

    fn here(&self) -> String {
        format!("line {}", self.line)
    }

    fn name_parts(&self) -> Option<String> {
        let (first, last) = self.columns.name_parts?;
        let cell = |i: Option<usize>| {
            i.and_then(|i| self.record.get(i))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        join_name(cell(first), cell(last))
    }
}

/// A header matched loosely: `Receipt No.`, `Invoice #`, `Price (JOD)`.
fn header_key(h: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in h.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            '.' | '#' | ':' | '*' => {}
            _ => out.push(c),
        }
    }
    let key = norm(&out);
    if key.is_empty() {
        norm(h)
    } else {
        key
    }
}

fn delimiter_name(d: u8) -> &'static str {
    match d {
        b';' => "\";\"",
        b'\t' => "tab",
        b'|' => "\"|\"",
        _ => "\",\"",
    }
}

/// The separator used most in the header line (outside quotes).
fn detect_delimiter(header: &str) -> u8 {
    let mut counts = [0usize; 4];
    let candidates = [b',', b';', b'\t', b'|'];
    let mut quoted = false;
    for b in header.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            if let Some(i) = candidates.iter().position(|&c| c == b) {
                counts[i] += 1;
            }
        }
    }
    let mut best = 0;
    for i in 1..4 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    candidates[best]
}

fn csv_drafts(text: &str, opts: &IntakeOptions, p: &mut Problems) -> Vec<Draft> {
    // Classic Mac line ends: make them lines.
    let owned;
    let text = if !text.contains('\n') && text.contains('\r') {
        owned = text.replace('\r', "\n");
        owned.as_str()
    } else {
        text
    };
    let mut too_long = false;
    for (i, line) in text.split('\n').enumerate() {
        if line.len() > MAX_CSV_LINE_BYTES {
            p.push(
                format!("line {}", i + 1),
                format!(
                    "is {} bytes long, a POS export line is at most 64 KiB: this is not a sales \
                     export, or the file is damaged",
                    line.len()
                ),
            );
            too_long = true;
        }
    }
    if too_long {
        return Vec::new();
    }

    // The header is the first non-blank line, after an Excel "sep=;" hint.
    let mut start = 0;
    let mut skipped = 0u64;
    let mut delimiter = None;
    for piece in text.split_inclusive('\n') {
        let line = piece.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            start += piece.len();
            skipped += 1;
            continue;
        }
        let hint = line
            .trim_start()
            .strip_prefix("sep=")
            .filter(|_| delimiter.is_none());
        if let Some(sep) = hint.and_then(|s| s.bytes().next()) {
            delimiter = Some(sep);
            start += piece.len();
            skipped += 1;
            continue;
        }
        delimiter.get_or_insert_with(|| detect_delimiter(line));
        break;
    }
    let delimiter = delimiter.unwrap_or(b',');
    let body = &text[start..];

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes());
    let line_of = |pos: Option<&csv::Position>| skipped + pos.map_or(1, csv::Position::line);
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            p.push(
                format!("line {}", line_of(e.position())),
                format!("cannot be read as CSV: {e}"),
            );
            return Vec::new();
        }
        None => {
            p.push("line 1", "the file has no header line: it holds no sales");
            return Vec::new();
        }
    };
    let header_line = line_of(header.position());
    let headers: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let before = p.count();
    let columns = assign_columns(&headers, header_line, &opts.mapping, p);
    if p.count() > before {
        return Vec::new();
    }

    let mut rows = Vec::new();
    for record in records {
        match record {
            Ok(rec) => {
                let line = line_of(rec.position());
                if rec.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                if rec.len() > headers.len()
                    && rec.iter().skip(headers.len()).any(|c| !c.trim().is_empty())
                {
                    p.push(
                        format!("line {line}"),
                        format!(
                            "has {} values but the header (line {header_line}) names {} columns: a value \
                             probably contains the separator {} without quotes around it; quote it or export again",
                            rec.len(),
                            headers.len(),
                            delimiter_name(delimiter)
                        ),
                    );
                    continue;
                }
                rows.push((line, rec));
            }
            Err(e) => p.push(
                format!("line {}", line_of(e.position())),
                format!("cannot be read as CSV: {e}"),
            ),
        }
    }
    if rows.is_empty() {
        if p.is_empty() {
            p.push(
                format!("line {header_line}"),
                "is a header with no sale rows below it: the file holds no sales",
            );
        }
        return Vec::new();
    }
    let sources: Vec<CsvRow<'_>> = rows
        .iter()
        .map(|(line, record)| CsvRow {
            line: *line,
            record,
            columns: &columns,
        })
        .collect();
    drafts_from_rows(&sources, p)
}

/// Matches the header to fields: mapping entries first, then synonyms,
/// each column used once. The description and a price or total are required.
fn assign_columns(
    headers: &[String],
    header_line: u64,
    mapping: &Mapping,
    p: &mut Problems,
) -> Columns {
    let keys: Vec<String> = headers.iter().map(|h| header_key(h)).collect();
    let mut taken = vec![false; headers.len()];
    let mut by_field = BTreeMap::new();
    let list = || {
        headers
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for field in Field::ALL {
        let Some(column) = mapping.get(field) else {
            continue;
        };
        if field == Field::Items {
            continue; // a JSON path; CSV rows are lines already
        }
        let found = headers
            .iter()
            .position(|h| h == column)
            .or_else(|| headers.iter().position(|h| h.eq_ignore_ascii_case(column)))
            .or_else(|| keys.iter().position(|k| *k == header_key(column)));
        match found {
            Some(i) => {
                taken[i] = true;
                by_field.insert(field, (i, headers[i].clone()));
            }
            None => p.push(
                format!("line {header_line}"),
                format!(
                    "intake.mapping.{} names the column \"{column}\", which this file does not have; \
                     its columns are: {}",
                    field.name(),
                    list()
                ),
            ),
        }
    }
    for field in Field::ALL {
        if field == Field::Items || by_field.contains_key(&field) || mapping.ignores(field) {
            continue;
        }
        let found = field.synonyms().iter().find_map(|syn| {
            let syn = syn.replace('.', "");
            (0..headers.len()).find(|&i| !taken[i] && keys[i] == syn)
        });
        if let Some(i) = found {
            taken[i] = true;
            by_field.insert(field, (i, headers[i].clone()));
        }
    }
    let expect = |field: Field| match field {
        Field::Description => {
            "description, item_name, product_name, service_name, name, item, product or title"
        }
        Field::UnitPrice => "unit_price, price, rate or cost",
        _ => "line_total, total, amount or subtotal",
    };
    if !by_field.contains_key(&Field::Description) {
        p.push(
            format!("line {header_line}"),
            format!(
                "no column for the item description: expected one named like {} (case, \"_\", \"-\" \
                 and spaces ignored), or set intake.mapping.description to its name; the columns \
                 (the first line must name them) are: {}",
                expect(Field::Description),
                list()
            ),
        );
    }
    if !by_field.contains_key(&Field::UnitPrice) && !by_field.contains_key(&Field::LineTotal) {
        p.push(
            format!("line {header_line}"),
            format!(
                "no column for the unit price or the line total: expected one named like {} or {}, \
                 or set intake.mapping.unit_price to its name; the columns are: {}",
                expect(Field::UnitPrice),
                expect(Field::LineTotal),
                list()
            ),
        );
    }
    let name_parts = if by_field.contains_key(&Field::CustomerName) {
        None
    } else {
        NAME_PARTS.iter().find_map(|(first, last)| {
            let at = |name: &str| {
                let name = name.replace('.', "");
                (0..headers.len()).find(|&i| !taken[i] && keys[i] == name)
            };
            let (f, l) = (at(first), at(last));
            (f.is_some() || l.is_some()).then_some((f, l))
        })
    };
    Columns {
        by_field,
        name_parts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/intake/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn parse(name: &str, bytes: &[u8]) -> Vec<Sale> {
        parse_file(name, bytes, &IntakeOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fails(name: &str, bytes: &[u8]) -> IntakeError {
        match parse_file(name, bytes, &IntakeOptions::default()) {
            Ok(sales) => panic!("expected problems, got {sales:?}"),
            Err(e) => e,
        }
    }

    fn json_fails(v: Value) -> IntakeError {
        match parse_json(&v, &IntakeOptions::default()) {
            Ok(sales) => panic!("expected problems, got {sales:?}"),
            Err(e) => e,
        }
    }

    /// Asserts a problem at `location` whose message contains `needle`.
    fn has(e: &IntakeError, location: &str, needle: &str) {
        assert!(
            e.problems
                .iter()
                .any(|p| p.location == location && p.message.contains(needle)),
            "no problem at {location:?} containing {needle:?} in:\n{e}"
        );
    }

    fn dec(s: &str) -> Decimal {
        s.parse().expect("test decimal")
    }

    fn line(sale: &Sale, i: usize) -> (&str, u32, String) {
        let l = &sale.lines[i];
        (l.description.as_str(), l.quantity, l.unit_price.to_string())
    }

    // --- the sample files -------------------------------------------------

    #[test]
    fn cafe_csv_sample() {
        let sales = parse("cafe_pos_sales.csv", &fixture("cafe_pos_sales.csv"));
        assert_eq!(sales.len(), 8);
        let first = &sales[0];
        assert_eq!(first.invoice_number, "TXN001");
        assert!(!first.number_derived);
        assert_eq!(first.customer_name, "John Smith");
        assert_eq!(first.date.as_deref(), Some("2025-06-30"));
        assert_eq!(line(first, 0), ("Coffee - Large", 2, "4.50".into()));
        assert_eq!(first.lines.len(), 1);
        assert_eq!(sales[5].invoice_number, "TXN006");
        assert_eq!(sales[5].customer_name, "David Lee");
        assert_eq!(line(&sales[5], 0), ("Lunch Combo", 2, "12.99".into()));
        assert_eq!(sales[7].customer_name, "Frank Miller");
        assert_eq!(line(&sales[7], 0), ("Muffin - Blueberry", 2, "3.25".into()));
    }

    #[test]
    fn store_csv_sample() {
        let sales = parse("store_sales.csv", &fixture("store_sales.csv"));
        let numbers: Vec<&str> = sales.iter().map(|s| s.invoice_number.as_str()).collect();
        assert_eq!(numbers, ["TXN001", "TXN002", "TXN003"]);
        let s = &sales[0];
        assert_eq!(s.customer_name, DEFAULT_CUSTOMER);
        assert_eq!(line(s, 0), ("Blue T-Shirt", 2, "19.99".into()));
        assert_eq!(s.lines[0].unit_price, dec("19.99"));
        assert_eq!(s.lines[0].sku.as_deref(), Some("SKU001"));
        assert_eq!(line(&sales[2], 0), ("Sneakers", 1, "79.99".into()));
    }

    #[test]
    fn generic_json_sample() {
        let sales = parse("generic_pos.json", &fixture("generic_pos.json"));
        assert_eq!(sales.len(), 1);
        let s = &sales[0];
        assert_eq!(s.invoice_number, "INV-GEN-001");
        assert_eq!(s.customer_name, "Generic Customer");
        assert_eq!(s.customer_email.as_deref(), Some("generic@example.com"));
        assert_eq!(s.customer_phone.as_deref(), Some("+962791234567"));
        assert_eq!(s.date.as_deref(), Some("2025-01-11"));
        assert_eq!(s.currency.as_deref(), Some("JOD"));
        assert_eq!(
            s.notes.as_deref(),
            Some("Test invoice for generic POS system")
        );
        assert_eq!(line(s, 0), ("Generic Product 1", 2, "15.5".into()));
        assert_eq!(line(s, 1), ("Generic Product 2", 1, "30.0".into()));
    }

    #[test]
    fn minimal_json_sample_gets_a_stable_derived_number() {
        let bytes = fixture("minimal_format.json");
        let a = parse("minimal_format.json", &bytes);
        let b = parse("minimal_format.json", &bytes);
        let s = &a[0];
        assert!(s.number_derived);
        assert!(s.invoice_number.starts_with("POS-"), "{}", s.invoice_number);
        assert_eq!(s.invoice_number.len(), 4 + 16);
        assert!(s.invoice_number[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(s.invoice_number, b[0].invoice_number);
        assert_eq!(s.customer_name, "Minimal Customer");
        assert_eq!(s.date.as_deref(), Some("2025-01-11"));
        assert_eq!(line(s, 0), ("Simple Product", 1, "25.0".into()));
    }

    #[test]
    fn quickbooks_json_sample() {
        let sales = parse("quickbooks_format.json", &fixture("quickbooks_format.json"));
        let s = &sales[0];
        assert_eq!(s.customer_name, "QuickBooks Customer");
        assert!(s.number_derived);
        assert_eq!(s.date.as_deref(), Some("2025-01-11"));
        assert_eq!(s.currency.as_deref(), Some("JOD"));
        assert_eq!(s.lines.len(), 2);
        // Amount 31.0 over Qty 2.
        assert_eq!(line(s, 0), ("QB Product 1", 2, "15.5".into()));
        assert_eq!(s.lines[1].quantity, 1);
        assert_eq!(s.lines[1].unit_price, dec("45"));
        assert!(s.lines.iter().all(|l| l.converted_from.is_none()));
    }

    // --- JSON shapes ------------------------------------------------------

    #[test]
    fn json_array_of_two_invoices_keeps_indexes() {
        let doc = json!([
            {"invoice_number": "A-1", "customer_name": "Ann",
             "items": [{"description": "Tea", "quantity": 1, "unit_price": "1.250"}]},
            {"invoice_number": "A-2", "customer": "Bob",
             "items": [{"description": "Cake", "qty": "3", "price": " 2.5 "}]}
        ]);
        let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
        assert_eq!(sales.len(), 2);
        assert_eq!(sales[0].lines[0].unit_price.to_string(), "1.250");
        assert_eq!(sales[1].customer_name, "Bob");
        assert_eq!(line(&sales[1], 0), ("Cake", 3, "2.5".into()));

        let mut bad = doc.clone();
        bad[1]["items"][0]["qty"] = json!("three");
        let e = json_fails(bad);
        has(&e, "[1].items[0].qty", "not a number");
    }

    #[test]
    fn wrapper_objects() {
        let sale = json!({"receipt_no": 7, "lines": [{"name": "Pen", "price": 1}]});
        for key in [
            "invoices",
            "Sales",
            "transactions",
            "orders",
            "receipts",
            "data",
        ] {
            let doc = json!({"store": "Main", key: [sale.clone(), sale.clone()]});
            let sales = parse_json(&doc, &IntakeOptions::default()).expect(key);
            assert_eq!(sales.len(), 2, "{key}");
            assert_eq!(sales[0].invoice_number, "7");
        }
        let nested = json!({"data": {"invoices": [{"invoice": "X", "items": []}]}});
        has(
            &json_fails(nested),
            "data.invoices[0].items",
            "at least one item line",
        );
    }

    #[test]
    fn wrapper_metadata_is_not_read_as_a_line() {
        let doc = json!({"name": "Main store", "count": 1, "sales": [
            {"invoice": "S1", "items": [{"name": "Tea", "price": "1"}]}
        ]});
        let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
        assert_eq!(sales.len(), 1);
        assert_eq!(sales[0].invoice_number, "S1");
        // A QuickBooks API answer.
        let doc = json!({"QueryResponse": {"Invoice": [{"DocNumber": "1037",
            "CustomerRef": {"value": "3", "name": "Cool Cars"},
            "BillEmail": {"Address": "cool@example.com"},
            "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 10,
                      "SalesItemLineDetail": {"ItemRef": {"name": "Wash"}, "UnitPrice": 5, "Qty": 2}}]}]}});
        let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
        assert_eq!(sales[0].invoice_number, "1037");
        assert_eq!(sales[0].customer_email.as_deref(), Some("cool@example.com"));
        assert_eq!(line(&sales[0], 0), ("Wash", 2, "5".into()));
    }

    #[test]
    fn flat_json_rows_group_like_csv_rows() {
        let doc = json!([
            {"order_id": "O1", "customer": "Ann", "product": "Tea", "qty": 2, "price": 1.5},
            {"order_id": "O2", "product": "Cake", "amount": "6.00", "qty": 3},
            {"order_id": "O1", "product": "Scone", "qty": 1, "price": 2}
        ]);
        let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
        assert_eq!(sales.len(), 2);
        assert_eq!(sales[0].invoice_number, "O1");
        assert_eq!(sales[0].lines.len(), 2);
        assert_eq!(line(&sales[1], 0), ("Cake", 3, "2".into()));
    }

    #[test]
    fn json_lines_file() {
        let text = "{\"id\":1,\"items\":[{\"item\":\"A\",\"rate\":3}]}\n{\"id\":2,\"items\":[{\"item\":\"B\",\"rate\":4}]}\n";
        let sales = parse("sales.jsonl", text.as_bytes());
        assert_eq!(sales.len(), 2);
        assert_eq!(sales[1].invoice_number, "2");
    }

    #[test]
    fn keys_match_ignoring_case_and_separators() {
        for key in [
            "Transaction_ID",
            "transactionId",
            "transaction id",
            "TRANSACTION-ID",
        ] {
            let doc = json!({key: "T-9", "Line_Items": [{"Item Name": "X", "Unit-Price": "2"}]});
            let sales = parse_json(&doc, &IntakeOptions::default()).expect(key);
            assert_eq!(sales[0].invoice_number, "T-9", "{key}");
            assert_eq!(sales[0].lines[0].unit_price, dec("2"));
        }
    }

    #[test]
    fn quickbooks_non_item_lines() {
        let mut doc: Value =
            serde_json::from_slice(&fixture("quickbooks_format.json")).expect("fixture json");
        let lines = doc["Line"].as_array_mut().expect("Line array");
        lines.push(json!({"DetailType": "SubTotalLineDetail", "Amount": 76.0}));
        let sales = parse_json(&doc, &IntakeOptions::default()).expect("subtotal skipped");
        assert_eq!(sales[0].lines.len(), 2);

        doc["Line"]
            .as_array_mut()
            .expect("Line array")
            .push(json!({"DetailType": "DiscountLineDetail", "Amount": 5.0}));
        has(&json_fails(doc), "Line[3].DetailType", "discount");
    }

    // --- CSV variants -----------------------------------------------------

    #[test]
    fn bom_and_crlf_csv() {
        let text = "\u{feff}Invoice No,Customer,Item,Qty,Price\r\n\
                    INV-1,Ann,Tea,2,1.500\r\n\
                    INV-1,,Cake,1,3\r\n\
                    INV-2,\"Bob, Jr.\",\"Big \"\"Mug\"\"\",1,9.99\r\n\r\n\r\n";
        let sales = parse("export.csv", text.as_bytes());
        assert_eq!(sales.len(), 2);
        assert_eq!(sales[0].invoice_number, "INV-1");
        assert_eq!(sales[0].lines.len(), 2);
        assert_eq!(line(&sales[0], 0), ("Tea", 2, "1.500".into()));
        assert_eq!(sales[1].customer_name, "Bob, Jr.");
        assert_eq!(sales[1].lines[0].description, "Big \"Mug\"");
    }

    #[test]
    fn semicolon_and_tab_csv() {
        let text = "Receipt No.;Date;Product;Quantity;Unit Price (JOD)\n\
                    R1;30/06/2025 09:15;Cheese;2;4,50\n\
                    R2;2025/07/01;Bread;1;\"1.234,50\"\n";
        let sales = parse("till.csv", text.as_bytes());
        assert_eq!(sales[0].date.as_deref(), Some("2025-06-30"));
        assert_eq!(line(&sales[0], 0), ("Cheese", 2, "4.50".into()));
        assert_eq!(sales[1].lines[0].unit_price, dec("1234.50"));

        let tabbed = "id\tname\tprice\n5\tSoap\t1.25\n";
        let sales = parse("till.txt", tabbed.as_bytes());
        assert_eq!(line(&sales[0], 0), ("Soap", 1, "1.25".into()));
    }

    #[test]
    fn excel_separator_hint() {
        let text = "sep=;\r\nitem;price\r\nTea;1,5\r\n";
        assert_eq!(
            parse("x.csv", text.as_bytes())[0].lines[0].unit_price,
            dec("1.5")
        );
        let text = "sep=\t\nitem\tprice\nTea\t2\n";
        assert_eq!(
            parse("x.csv", text.as_bytes())[0].lines[0].unit_price,
            dec("2")
        );
    }

    #[test]
    fn shop_platform_shapes_first_and_last_names_and_nested_products() {
        let opts = IntakeOptions::default();
        // Shopify-like: order_number, customer first/last name, title.
        let shopify = br#"{"orders":[{"order_number":1001,"customer":{"first_name":"John","last_name":"Smith","email":"j@x.com"},
            "line_items":[{"title":"Shirt","quantity":2,"price":"19.99","sku":"S1"}]}]}"#;
        let s = parse_file("orders.json", shopify, &opts).unwrap();
        assert_eq!(s[0].invoice_number, "1001");
        assert_eq!(s[0].customer_name, "John Smith");
        assert_eq!(s[0].customer_email.as_deref(), Some("j@x.com"));
        assert_eq!(s[0].lines[0].description, "Shirt");
        // A nested product object.
        let nested = br#"{"sale_id":"N-1","client":{"name":"Omar"},"lines":[{"product":{"name":"Widget","sku":"W1"},"qty":1,"price":2.5}]}"#;
        let s = parse_file("n.json", nested, &opts).unwrap();
        assert_eq!(s[0].lines[0].description, "Widget");
        assert_eq!(s[0].lines[0].sku.as_deref(), Some("W1"));
        assert_eq!(s[0].customer_name, "Omar");
        // JSON Lines keyed by "txn", grouped into one sale.
        let jsonl = b"{\"txn\":\"J-1\",\"item_name\":\"Cola\",\"qty\":2,\"price\":\"0.75\"}\n{\"txn\":\"J-1\",\"item_name\":\"Chips\",\"qty\":1,\"price\":\"0.50\"}\n";
        let s = parse_file("t.jsonl", jsonl, &opts).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].invoice_number.as_str(), s[0].lines.len()), ("J-1", 2));
        // CSV with separate name columns.
        let csv =
            b"Ticket No,First Name,Last Name,Item,Qty,Price\r\nT9,Sara,Haddad,Haircut,1,15.000\r\n";
        let s = parse_file("t.csv", csv, &opts).unwrap();
        assert_eq!(s[0].invoice_number, "T9");
        assert_eq!(s[0].customer_name, "Sara Haddad");
    }

    #[test]
    fn synonyms_are_written_normalized() {
        for field in Field::ALL {
            for synonym in field.synonyms() {
                for segment in synonym.split('.') {
                    assert_eq!(norm(segment), segment, "{field:?}: {synonym}");
                }
            }
            assert_eq!(Field::from_name(field.name()), Some(field));
        }
        for wrapper in WRAPPERS {
            assert_eq!(norm(wrapper), *wrapper);
        }
    }

    #[test]
    fn utf16_files() {
        let text = "transaction_id,item_name,quantity,price\r\nT1,Café,1,2.00\r\n";
        let mut le = vec![0xFF, 0xFE];
        let mut be = vec![0xFE, 0xFF];
        for unit in text.encode_utf16() {
            le.extend(unit.to_le_bytes());
            be.extend(unit.to_be_bytes());
        }
        for bytes in [le, be] {
            let sales = parse("export.csv", &bytes);
            assert_eq!(line(&sales[0], 0), ("Café", 1, "2.00".into()));
        }
    }

    /// A CSV export saved by Excel in Windows-1256 (the Arabic code page):
    /// the bytes as Windows writes them, not produced by the decoder under test.
    const CP1256_CSV: &[u8] = b"invoice_number,customer,description,quantity,price\r\n\
        W-1,\xc3\xcd\xe3\xcf,\xde\xe5\xe6\xc9 \xda\xd1\xc8\xed\xc9,2,1.500\r\n";

    fn with_encoding(label: &str) -> IntakeOptions {
        IntakeOptions {
            encoding: encoding_rs::Encoding::for_label(label.as_bytes()).unwrap(),
            ..IntakeOptions::default()
        }
    }

    #[test]
    fn a_legacy_code_page_is_read_with_intake_encoding() {
        let sales = parse_file("export.csv", CP1256_CSV, &with_encoding("windows-1256"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sales[0].customer_name, "أحمد");
        assert_eq!(line(&sales[0], 0), ("قهوة عربية", 2, "1.500".into()));
        // Without the setting the same bytes are not UTF-8, and the
        // message says which setting reads them.
        let e = fails("export.csv", CP1256_CSV).to_string();
        assert!(
            e.contains("not UTF-8") && e.contains("intake.encoding"),
            "{e}"
        );
    }

    #[test]
    fn a_byte_order_mark_wins_over_intake_encoding() {
        let text = "invoice_number,customer,description,quantity,price\r\nW-1,أحمد,قهوة,1,2\r\n";
        let opts = with_encoding("windows-1256");
        let mut utf8 = vec![0xEF, 0xBB, 0xBF];
        utf8.extend(text.as_bytes());
        let mut le = vec![0xFF, 0xFE];
        for unit in text.encode_utf16() {
            le.extend(unit.to_le_bytes());
        }
        for bytes in [utf8, le] {
            let sales = parse_file("x.csv", &bytes, &opts).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(sales[0].customer_name, "أحمد");
            assert_eq!(line(&sales[0], 0).0, "قهوة");
        }
        // UTF-16 named as the encoding: no byte order mark needed.
        let mut be = Vec::new();
        for unit in text.encode_utf16() {
            be.extend(unit.to_be_bytes());
        }
        let sales = parse_file("x.csv", &be, &with_encoding("utf-16be")).unwrap();
        assert_eq!(sales[0].customer_name, "أحمد");
    }

    #[test]
    fn a_byte_the_code_page_does_not_define_is_located() {
        // ISO-8859-6 leaves 0xA1 undefined: an error with its offset, never
        // a replacement character on a legal invoice.
        let bytes = b"invoice_number,description,price\nI-1,\xc7\xa1,1\n";
        let e = parse_file("x.csv", bytes, &with_encoding("iso-8859-6"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("offset 38") && e.contains("ISO-8859-6"), "{e}");
        // NUL bytes stay "not a text file" whatever the code page.
        let e = parse_file("x.csv", b"a,b\n\x001,2\n", &with_encoding("windows-1256"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("NUL bytes"), "{e}");
    }

    #[test]
    fn no_invoice_column_each_row_is_a_sale_and_blank_numbers_continue() {
        let text = "item,price\nA,1\nB,2\n";
        let sales = parse("x.csv", text.as_bytes());
        assert_eq!(sales.len(), 2);
        assert!(sales.iter().all(|s| s.number_derived));

        let text = "number,customer,item,price\nN1,Ann,A,1\n,,B,2\n,Ann,B2,2\n,Bob,C,3\n";
        let sales = parse("x.csv", text.as_bytes());
        assert_eq!(sales.len(), 2);
        assert_eq!(sales[0].lines.len(), 3);
        assert_eq!(sales[1].customer_name, "Bob");
        assert!(sales[1].number_derived);
    }

    #[test]
    fn one_number_two_customers_is_a_problem() {
        let text = "invoice,customer,item,price\nI1,Ann,A,1\nI1,Bob,B,2\n";
        has(
            &fails("x.csv", text.as_bytes()),
            "line 3, column \"customer\"",
            "own number",
        );
    }

    #[test]
    fn unknown_extension_is_sniffed() {
        let json = br#"{"invoice_id": "Z", "entries": [{"title": "T", "cost": 1}]}"#;
        assert_eq!(parse("drop.dat", json)[0].invoice_number, "Z");
        assert_eq!(
            parse("drop", b"invoice_id,title,cost\nZ,T,1\n")[0]
                .lines
                .len(),
            1
        );
    }

    // --- mapping ----------------------------------------------------------

    #[test]
    fn mapping_overrides_csv_detection() {
        let mapping = Mapping::from_json(&json!({
            "invoice_number": "Ticket#",
            "description": "Artikel",
            "quantity": "Menge",
            "unit_price": "Preis"
        }))
        .expect("valid mapping");
        assert!(!mapping.is_empty());
        let opts = IntakeOptions {
            mapping,
            ..IntakeOptions::default()
        };
        let text = "Ticket#;Artikel;Menge;Preis;Kunde\n\
                    77;Brezel;3;0,80;x\n\
                    77;Kaffee;1;2,10;x\n";
        let sales = parse_file("kasse.csv", text.as_bytes(), &opts).expect("mapped");
        assert_eq!(sales.len(), 1);
        assert_eq!(sales[0].invoice_number, "77");
        assert_eq!(line(&sales[0], 0), ("Brezel", 3, "0.80".into()));

        // Without the mapping the file is refused, naming the missing columns.
        let e = fails("kasse.csv", text.as_bytes());
        has(&e, "line 1", "no column for the item description");
        has(&e, "line 1", "\"Ticket#\", \"Artikel\"");
        // A mapping naming a column the file lacks.
        let opts = IntakeOptions {
            mapping: Mapping::from_json(&json!({"quantity": "Anzahl"})).expect("valid"),
            ..IntakeOptions::default()
        };
        let e = parse_file("k.csv", b"item,price,Menge\nA,1,2\n", &opts).expect_err("no column");
        has(
            &e,
            "line 1",
            "intake.mapping.quantity names the column \"Anzahl\"",
        );
    }

    #[test]
    fn mapping_overrides_json_detection() {
        let mapping = Mapping::from_json(&json!({
            "items": "cart.entries",
            "description": "label.en",
            "unit_price": "money.net",
            "customer_name": "who"
        }))
        .expect("valid mapping");
        let opts = IntakeOptions {
            mapping,
            ..IntakeOptions::default()
        };
        let doc = json!({
            "id": "C-1", "who": "Dana", "customer": "not this one",
            "cart": {"entries": [
                {"label": {"en": "Oil"}, "name": "ignored", "money": {"net": "3.25"}, "qty": 2}
            ]}
        });
        let sales = parse_json(&doc, &opts).expect("mapped");
        assert_eq!(sales[0].customer_name, "Dana");
        assert_eq!(line(&sales[0], 0), ("Oil", 2, "3.25".into()));

        let doc = json!({"cart": {"entries": [{"name": "Oil", "money": {"net": 1}}]}});
        let e = parse_json(&doc, &opts).expect_err("mapped description missing");
        has(&e, "cart.entries[0].label.en", "intake.mapping");
    }

    #[test]
    fn quantity_hidden_in_an_unknown_column_is_not_assumed_to_be_1() {
        let text = "invoice,item,Menge,price,total\nA,Tea,3,2.00,6.00\nB,Jam,1,2.00,2.32\n";
        let e = fails("x.csv", text.as_bytes());
        has(&e, "line 2, column \"total\"", "intake.mapping.quantity");
        assert_eq!(
            e.problems.len(),
            1,
            "a total with 16% tax is consistent: {e}"
        );
        // A total column that is not the line's total can be ignored.
        let text = "order,item,qty,price,total\nA,Tea,1,2.00,9.00\nA,Jam,1,7.00,9.00\n";
        let opts = IntakeOptions {
            mapping: Mapping::from_json(&json!({"line_total": null})).expect("null ignores"),
            ..IntakeOptions::default()
        };
        let sales = parse_file("x.csv", text.as_bytes(), &opts).expect("valid");
        assert_eq!(sales[0].lines.len(), 2);
        let e = Mapping::from_json(&json!({"description": null})).expect_err("required");
        assert!(e.contains("cannot be null"), "{e}");
    }

    #[test]
    fn mapping_config_errors() {
        let e = Mapping::from_json(&json!({"qty": "Menge"})).expect_err("unknown key");
        assert!(e.contains("\"qty\""), "{e}");
        assert!(e.contains("invoice_number, customer_name"), "{e}");
        assert!(e.contains("line_total, sku"), "{e}");
        let e = Mapping::from_json(&json!({"quantity": 3})).expect_err("not text");
        assert!(e.contains("intake.mapping.quantity"), "{e}");
        assert!(Mapping::from_json(&json!(["x"])).is_err());
        assert!(Mapping::from_json(&Value::Null).expect("null").is_empty());
        let m = Mapping::from_json(&json!({"UnitPrice": "P"})).expect("normalized key");
        assert_eq!(m.get(Field::UnitPrice), Some("P"));
        let config =
            json!({"items": "Line", "unit_price": "SalesItemLineDetail.UnitPrice", "sku": null});
        let m = Mapping::from_json(&config).expect("valid");
        assert_eq!(m.to_json(), config);
        assert_eq!(Mapping::from_json(&m.to_json()), Ok(m));
    }

    // --- amounts ----------------------------------------------------------

    #[test]
    fn fraction_rule() {
        let doc = json!({"invoice_number": "F1", "items": [
            {"description": "Cheese", "quantity": "1.5", "unit_price": "4.00"},
            {"description": "Labour", "quantity": 0.25, "unit_price": 30},
            {"description": "Olives", "quantity": "0.750", "unit_price": "3.333"}
        ]});
        let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
        let l = &sales[0].lines[0];
        assert_eq!(l.description, "Cheese (1.5 x 4.00)");
        assert_eq!(l.quantity, 1);
        assert_eq!(l.unit_price, dec("6.00"));
        assert_eq!(l.unit_price.to_string(), "6");
        assert_eq!(
            l.converted_from,
            Some(OriginalQuantity {
                quantity: dec("1.5"),
                unit_price: dec("4.00"),
                line_total: None
            })
        );
        assert_eq!(line(&sales[0], 1), ("Labour (0.25 x 30)", 1, "7.5".into()));
        // Exact product, not rounded: 0.75 x 3.333 = 2.49975.
        assert_eq!(
            line(&sales[0], 2),
            ("Olives (0.75 x 3.333)", 1, "2.49975".into())
        );
        // The backend body carries the converted line.
        let body = sales[0].to_new_invoice();
        assert_eq!(body.items[0].quantity, 1);
        assert_eq!(body.items[0].price, dec("6"));
    }

    #[test]
    fn line_total_without_unit_price() {
        let doc = json!({"invoice_number": "T", "items": [
            {"description": "Nuts", "quantity": 4, "total": "10.00"},
            {"description": "Bag", "quantity": 3, "line_total": "10.00"},
            {"description": "Figs", "quantity": "1.5", "amount": "6.00"},
            {"description": "Card", "total": 2}
        ]});
        let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
        assert_eq!(line(&sales[0], 0), ("Nuts", 4, "2.5".into()));
        let bag = &sales[0].lines[1];
        assert_eq!(
            (bag.description.as_str(), bag.quantity),
            ("Bag (3 for 10.00)", 1)
        );
        assert_eq!(bag.unit_price, dec("10.00"));
        let original = bag.converted_from.as_ref().expect("converted");
        assert_eq!(original.line_total, Some(dec("10.00")));
        assert_eq!(original.unit_price, dec("3.333333"));
        assert_eq!(line(&sales[0], 2), ("Figs (1.5 x 4)", 1, "6".into()));
        assert_eq!(line(&sales[0], 3), ("Card", 1, "2".into()));
    }

    #[test]
    fn amounts_are_read_exactly() {
        let ok = [
            ("4.50", "4.50"),
            (" 4.5 ", "4.5"),
            ("4,50", "4.50"),
            ("0,250", "0.250"),
            ("1,234.50", "1234.50"),
            ("1.234,50", "1234.50"),
            ("1 234,5", "1234.5"),
            ("1,234,567", "1234567"),
            ("JOD 4.500", "4.500"),
            ("$19.99", "19.99"),
            ("-3", "-3"),
            ("(2.00)", "-2.00"),
            ("٤٫٥٠", "4.50"),
            ("1e-7", "0.0000001"),
            (".5", "0.5"),
            ("0.1", "0.1"),
        ];
        for (text, want) in ok {
            assert_eq!(
                parse_amount(text).map(|d| d.to_string()),
                Ok(want.to_string()),
                "{text}"
            );
        }
        assert_eq!(parse_amount("1,250"), Err(NumError::Ambiguous));
        for bad in [
            "abc", "4.5.6x", "1,2.5", "4 5", "", "--1", "12abc", "1_000", "0x10",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        let e = json_fails(json!({"items": [{"description": "A", "price": "1,250"}]}));
        has(&e, "items[0].price", "ambiguous");
    }

    #[test]
    fn dates() {
        let cases = [
            ("2025-06-30", Some("2025-06-30")),
            ("2025/6/3", Some("2025-06-03")),
            ("2025-06-30T09:15:00Z", Some("2025-06-30")),
            ("2025-06-30T23:30:00-05:00", Some("2025-06-30")),
            ("2025-06-30 09:15", Some("2025-06-30")),
            ("03/04/2025", Some("2025-04-03")),
            ("30-06-2025", Some("2025-06-30")),
            ("30.06.2025 14:00", Some("2025-06-30")),
            ("20250630", Some("2025-06-30")),
            ("1751241600", Some("2025-06-30")),
            ("1751241600000", Some("2025-06-30")),
            ("06/30/2025", None),
            ("2025-02-30", None),
            ("30/06/25", None),
            ("yesterday", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_date(text).as_deref(), want, "{text}");
        }
    }

    // --- derived numbers and hashes ---------------------------------------

    #[test]
    fn identical_sales_in_one_file_get_distinct_numbers() {
        let text = "item,qty,price\nCoffee,1,2.00\nCoffee,1,2.00\nTea,1,1.00\nCoffee,1,2.00\n";
        let a = parse("walkins.csv", text.as_bytes());
        let numbers: Vec<&str> = a.iter().map(|s| s.invoice_number.as_str()).collect();
        assert_eq!(numbers[1], format!("{}-2", numbers[0]));
        assert_eq!(numbers[3], format!("{}-3", numbers[0]));
        assert_ne!(numbers[2], numbers[0]);
        // The same file dropped again maps to the same numbers, even after
        // the default customer was reconfigured.
        let b = parse("walkins-again.csv", text.as_bytes());
        assert_eq!(a, b);
        let opts = IntakeOptions {
            default_customer: "Cash sale".into(),
            ..IntakeOptions::default()
        };
        let c = parse_file("walkins.csv", text.as_bytes(), &opts).expect("valid");
        assert_eq!(c[0].customer_name, "Cash sale");
        assert_eq!(c[0].invoice_number, a[0].invoice_number);
    }

    #[test]
    fn derived_numbers_are_pinned() {
        // Changing the canonical encoding would renumber every re-dropped
        // file and let it through twice: this value must never change.
        let doc = json!({"customer": "Ann", "date": "2025-01-11",
                         "items": [{"description": "Tea", "quantity": 2, "price": "1.50"}]});
        let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
        assert_eq!(sales[0].invoice_number, "POS-f7b62db2537e0e6d");
    }

    #[test]
    fn content_hash_tells_resubmission_from_conflict() {
        let bytes = fixture("generic_pos.json");
        let a = parse("a.json", &bytes).remove(0);
        let b = parse("b.json", &bytes).remove(0);
        assert_eq!(a.content_hash(), b.content_hash());
        assert_eq!(a.content_hash().len(), 64);
        let mut c = a.clone();
        c.lines[0].unit_price = dec("15.51");
        assert_ne!(a.content_hash(), c.content_hash());
        let mut d = a.clone();
        d.lines[0].unit_price = dec("15.50");
        assert_eq!(a.content_hash(), d.content_hash(), "scale is not content");
        let mut e = a.clone();
        e.number_derived = true;
        assert_eq!(a.content_hash(), e.content_hash());
    }

    #[test]
    fn same_number_different_content_in_one_document() {
        let doc = json!([
            {"invoice_number": "D", "items": [{"description": "A", "price": 1}]},
            {"invoice_number": "D", "items": [{"description": "A", "price": 1}]},
            {"invoice_number": "D", "items": [{"description": "B", "price": 1}]}
        ]);
        has(
            &json_fails(doc),
            "[2].invoice_number",
            "also used by the sale at [0]",
        );
    }

    #[test]
    fn sale_round_trips_through_json_with_string_amounts() {
        let doc = json!({"invoice_number": "R", "items": [
            {"description": "Cheese", "quantity": "1.5", "unit_price": "4.00", "sku": "C1"},
            {"description": "Tea", "quantity": 2, "unit_price": "0.1"}
        ]});
        let sale = parse_json(&doc, &IntakeOptions::default())
            .expect("valid")
            .remove(0);
        let stored = serde_json::to_value(&sale).expect("serialize");
        assert_eq!(stored["lines"][1]["unit_price"], json!("0.1"));
        assert_eq!(
            stored["lines"][0]["converted_from"]["quantity"],
            json!("1.5")
        );
        assert_eq!(
            stored["lines"][0]["converted_from"]["unit_price"],
            json!("4.00")
        );
        let back: Sale = serde_json::from_value(stored).expect("deserialize");
        assert_eq!(back, sale);
        let body = serde_json::to_value(sale.to_new_invoice()).expect("body");
        assert_eq!(body["items"][1]["price"], json!(0.1));
        assert_eq!(body["customer_name"], json!(DEFAULT_CUSTOMER));
    }

    // --- bad inputs -------------------------------------------------------

    #[test]
    fn empty_files() {
        has(&fails("a.csv", b""), "a.csv", "the file is empty");
        has(
            &fails("a.json", b" \r\n\t\n"),
            "a.json",
            "the file is empty",
        );
        has(
            &fails("a.csv", b"\xEF\xBB\xBF\n"),
            "a.csv",
            "the file is empty",
        );
        has(&fails("a.csv", b"item,price\n\n"), "line 1", "no sale rows");
        has(&fails("a.json", b"[]"), DOCUMENT, "empty list");
    }

    #[test]
    fn truncated_json_reports_line_and_column() {
        let bytes = fixture("generic_pos.json");
        let e = fails("generic_pos.json", &bytes[..bytes.len() / 2]);
        assert_eq!(e.problems.len(), 1);
        let p = &e.problems[0];
        assert!(p.location.starts_with("line "), "{p}");
        assert!(p.message.contains("EOF while parsing"), "{p}");
        assert!(p.message.contains("truncated"), "{p}");
    }

    #[test]
    fn binary_content() {
        let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";
        let e = fails("photo.csv", png);
        has(&e, "photo.csv", "not a text file");
        has(&e, "photo.csv", "expected a CSV or JSON export");
        has(
            &fails("latin1.csv", b"item,price\ncaf\xe9,1\n"),
            "latin1.csv",
            "not UTF-8",
        );
        has(
            &fails("ctl.csv", b"item,price\nA\x01,1\n"),
            "ctl.csv",
            "line 2",
        );
    }

    #[test]
    fn top_level_json_must_be_object_or_array() {
        has(
            &fails("n.json", b"42"),
            DOCUMENT,
            "the JSON document is a number",
        );
        has(
            &json_fails(json!("text")),
            DOCUMENT,
            "expected one sale object",
        );
        has(
            &json_fails(json!([1, {"items": []}])),
            "[0]",
            "must be an object",
        );
    }

    #[test]
    fn wrong_types_are_located() {
        let e = json_fails(json!([
            {"items": "coffee"},
            {"items": [{"description": ["x"], "quantity": true, "price": {"v": 1}}]},
            {"items": [7]},
            {"customer_email": "a@b.c", "lines": [{"name": "A", "price": "1O.00"}]}
        ]));
        has(&e, "[0].items", "must be an array");
        has(
            &e,
            "[1].items[0].description",
            "must be text, found an array",
        );
        has(
            &e,
            "[1].items[0].quantity",
            "must be a number, found true/false",
        );
        has(&e, "[1].items[0].unit_price", "unit price is missing");
        has(&e, "[2].items[0]", "must be an object");
        has(&e, "[3].lines[0].price", "\"1O.00\" is not a number");
    }

    #[test]
    fn csv_problems_name_line_and_column() {
        let text = "invoice,item,quantity,price,email\n\
                    A,Tea,1,1.00,a@example.com\n\
                    B,,2,1.00,\n\
                    C,Cake,-1,2.00,\n\
                    D,Bun,0,2.00,\n\
                    E,Jam,1,-2.00,\n\
                    F,Pie,5000000000,1,\n\
                    G,Oil,1,,\n\
                    H,Egg,x,1,not-an-email\n";
        let e = fails("bad.csv", text.as_bytes());
        has(&e, "line 3, column \"item\"", "description is empty");
        has(
            &e,
            "line 4, column \"quantity\"",
            "credit note at the backend",
        );
        has(&e, "line 5, column \"quantity\"", "is 0");
        has(&e, "line 6, column \"price\"", "is negative");
        has(&e, "line 7, column \"quantity\"", "too large");
        has(&e, "line 8, column \"price\"", "unit price is empty");
        has(&e, "line 9, column \"quantity\"", "not a number");
        has(&e, "line 9, column \"email\"", "not an email address");
        assert_eq!(e.problems.len(), 8, "{e}");
        // Display: one problem per line.
        assert_eq!(e.to_string().lines().count(), 8);
        assert!(e
            .to_string()
            .starts_with("line 3, column \"item\": description is empty"));
    }

    #[test]
    fn bad_email_in_json() {
        let e = json_fails(
            json!({"invoice_number": "E", "customer": {"name": "X", "email": "x at y"},
                                  "items": [{"description": "A", "price": 1}]}),
        );
        has(&e, "customer.email", "not an email address");
        for good in ["a@b.co", "first.last+tag@sub.example.jo", "user@localhost"] {
            assert!(looks_like_email(good), "{good}");
        }
        for bad in ["a@", "@b.c", "a@@b.c", "a b@c.d", "a@b..c", "a@b.c; d@e.f"] {
            assert!(!looks_like_email(bad), "{bad}");
        }
    }

    #[test]
    fn unquoted_separator_in_a_value() {
        let text = "invoice,item,qty,price\nA,Coffee, Large,1,4.50\n";
        has(&fails("x.csv", text.as_bytes()), "line 2", "without quotes");
    }

    #[test]
    fn a_10_mb_line() {
        let mut text = b"invoice,item,price\nA,".to_vec();
        text.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
        text.extend(b",1\nB,Tea,1\n");
        let e = fails("huge.csv", &text);
        assert_eq!(e.problems.len(), 1, "{e}");
        has(&e, "line 2", "at most 64 KiB");
        let e = fails("one-line.csv", &vec![b'a'; 10 * 1024 * 1024]);
        assert_eq!(e.problems.len(), 1, "{e}");
        has(&e, "line 1", "is 10485760 bytes long");
        // As JSON, the text field limit catches it.
        let long = "y".repeat(5000);
        let e = json_fails(json!({"items": [{"description": long, "price": 1}]}));
        has(&e, "items[0].description", "at most 1000");
    }

    #[test]
    fn volume_limits() {
        let mut text = String::from("invoice,item,price\n");
        for i in 0..=MAX_SALES {
            let _ = writeln!(text, "N{i},Tea,1");
        }
        has(
            &fails("big.csv", text.as_bytes()),
            "line 10002",
            "at most 10000 sales",
        );
        let lines: Vec<Value> = (0..=MAX_LINES_PER_SALE)
            .map(|_| json!({"description": "A", "price": 1}))
            .collect();
        has(
            &json_fails(json!({"items": lines})),
            "items",
            "at most 1000",
        );
    }

    #[test]
    fn problems_are_capped() {
        let mut text = String::from("item,price\n");
        for _ in 0..150 {
            text.push_str(",1\n");
        }
        let e = fails("many.csv", text.as_bytes());
        assert_eq!(e.problems.len(), MAX_PROBLEMS + 1);
        has(&e, "(more)", "50 more problems");
    }
}
