//! The Laravel invoicing backend, simulated.
//!
//! Follows `contracts/laravel-api.md`: the same paths, status codes, JSON
//! shapes and error shapes as the real Laravel 12 + Sanctum 4 backend,
//! including its less obvious habits:
//!
//! * Sanctum plain-text tokens `<id>|<40 random chars><crc32 hex>`, every
//!   login a new token, old ones stay valid; no expiry unless configured
//!   (then measured on tokio's clock, so a paused clock can expire them).
//! * Input goes through Laravel's `TrimStrings` and
//!   `ConvertEmptyStringsToNull` before validation; a body is only read as
//!   JSON when its `Content-Type` says JSON.
//! * Validation messages and the 422 summary (`... (and 2 more errors)`) as
//!   Laravel 10+ writes them, errors in rule order.
//! * Without `Accept: application/json` auth failures become a 302 to
//!   `/login`, validation failures a 302 back, not-found pages HTML.
//! * The create answer is the model as created: no `status`, no items.
//! * Submit: 404, then 403 for a disabled vendor, then 500 when JoFotara is
//!   not configured, else 200 with the outcome (`submitted` or a scripted
//!   `rejected` / `error`).
//!
//! Options beyond the contract: per-route service times
//! ([`LatencyProfile`]) and a bounded worker pool like PHP-FPM's
//! ([`LaravelSandboxOptions::workers`]), both off by default; and, off by
//! default too, a lookup route the real backend does not have
//! (`GET /api/invoices/by-number/{invoice_number}`).
//!
//! Besides the API, `/__sandbox/...` is a control API (JSON) for tests and
//! demos. It is neither counted nor subject to faults nor to the pool:
//!
//! * `GET /__sandbox/stats` (counters, faults injected, pool statistics),
//!   `POST /__sandbox/stats/reset`;
//! * `POST /__sandbox/faults` (a [`FaultSpec`]), `DELETE /__sandbox/faults`;
//! * `POST /__sandbox/random-faults` (a [`RandomFaults`]),
//!   `DELETE /__sandbox/random-faults`;
//! * `POST /__sandbox/tokens/revoke`, `POST /__sandbox/settings`,
//!   `POST /__sandbox/users/active`, `POST /__sandbox/submit-outcomes`;
//! * `POST /__sandbox/foreign-invoices` `{"count": n}`: invoices of another
//!   vendor;
//! * `GET /__sandbox/connector` (the connector channel's key, its
//!   `config_updates`, the heartbeats and transactions received),
//!   `POST /__sandbox/connector` `{"api_key", "config_updates"}`.
//!
//! The connector channel (`/api/pos-connector/...`, contract: "The
//! connector channel") is keyed by `X-API-Key` ([`SANDBOX_API_KEY`] unless
//! [`LaravelSandboxOptions::api_key`] says otherwise); a missing or wrong
//! key answers 401 `{"error": "Invalid API key"}` (JSON whatever the
//! `Accept`: it is the backend's own check, not Sanctum's). The contract
//! names the heartbeat's fields but not its validation rules; the
//! simulator assumes Laravel-style ones: `version` required string,
//! `pos_systems` and `system_info` nullable arrays, `transactions_pending`
//! nullable integer. Transactions are de-duplicated on `transaction_id`.
//!
//! The same controls exist as methods of [`LaravelSandbox`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rand::Rng;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::http::{
    bad_request, control_body, ctl_answer, fault_control_routes, fault_middleware, html_error_page,
    html_response, json_response, lock, serve, CtlResult, Fault, Harness, RandomFaults,
    ServerHandle,
};
use super::pdf::render_text_pdf;
use super::pool::{micros, pool_middleware, PoolStats, WorkerPool};
use crate::tax::{line_tax, round_money, RATE};

/// E-mail of the default sandbox vendor.
pub const SANDBOX_EMAIL: &str = "vendor@sandbox.test";
/// Password of the default sandbox vendor.
pub const SANDBOX_PASSWORD: &str = "sandbox-password";
/// Prefix of the control API.
pub const CONTROL_PREFIX: &str = "/__sandbox";
/// The connector channel's API key (`X-API-Key`) unless configured.
pub const SANDBOX_API_KEY: &str = "sandbox-connector-key";
/// The shop the connector channel's key belongs to.
pub const SANDBOX_CUSTOMER: &str = "Sandbox Shop";
pub const SANDBOX_CUSTOMER_ID: u64 = 1;

const CURRENCY: &str = "JOD";
const INVOICE_MODEL: &str = "App\\Models\\Invoice";

/// A vendor account of the simulated backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxUser {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub password: String,
    pub active: bool,
    pub organization_id: u64,
}

impl SandboxUser {
    /// The default vendor: id 2, [`SANDBOX_EMAIL`] / [`SANDBOX_PASSWORD`].
    pub fn default_vendor() -> SandboxUser {
        SandboxUser {
            id: 2,
            name: "Sandbox Vendor".into(),
            email: SANDBOX_EMAIL.into(),
            password: SANDBOX_PASSWORD.into(),
            active: true,
            organization_id: 1,
        }
    }
}

/// How a [`LaravelSandbox`] starts.
#[derive(Clone, Debug)]
pub struct LaravelSandboxOptions {
    pub users: Vec<SandboxUser>,
    /// Sanctum `expiration`: `None` (the real backend's setting) = tokens
    /// never expire.
    pub token_lifetime: Option<Duration>,
    /// Add `expires_at` to the login answer when a lifetime is set (the real
    /// backend does not; this lets the client's handling of it be tested).
    pub advertise_expiry: bool,
    /// Whether the organisation has JoFotara configured (else submit: 500).
    pub jofotara_configured: bool,
    /// Service time of each API route (default: none, answers at once).
    pub latency: LatencyProfile,
    /// PHP-FPM workers: at most this many API requests are served at once,
    /// the others wait their turn (FIFO). `None` (default) = unbounded.
    /// `Some(0)` is refused by [`LaravelSandbox::start`].
    pub workers: Option<usize>,
    /// Serve `GET /api/invoices/by-number/{invoice_number}`, a lookup the
    /// real backend does NOT have (default off), so that the agent's
    /// configurable lookup path can be tested.
    pub lookup_route: bool,
    /// The connector channel's key (`X-API-Key`); default
    /// [`SANDBOX_API_KEY`].
    pub api_key: String,
    /// What the heartbeat answers in `config_updates`; default
    /// [`default_config_updates`]. Empty: sent as `[]`, as PHP encodes an
    /// empty array.
    pub config_updates: Map<String, Value>,
}

/// The heartbeat's `config_updates` of the contract's example:
/// `{"sync_interval": 300, "debug_mode": false}`.
pub fn default_config_updates() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("sync_interval".into(), json!(300));
    m.insert("debug_mode".into(), json!(false));
    m
}

impl Default for LaravelSandboxOptions {
    fn default() -> Self {
        LaravelSandboxOptions {
            users: vec![SandboxUser::default_vendor()],
            token_lifetime: None,
            advertise_expiry: false,
            jofotara_configured: true,
            latency: LatencyProfile::none(),
            workers: None,
            lookup_route: false,
            api_key: SANDBOX_API_KEY.into(),
            config_updates: default_config_updates(),
        }
    }
}

impl LaravelSandboxOptions {
    /// The defaults with the real stack's service times
    /// ([`LatencyProfile::realistic`]) and [`REALISTIC_WORKERS`] workers.
    pub fn realistic_pool() -> LaravelSandboxOptions {
        LaravelSandboxOptions {
            latency: LatencyProfile::realistic(),
            workers: Some(REALISTIC_WORKERS),
            ..LaravelSandboxOptions::default()
        }
    }
}

/// PHP-FPM workers of [`LaravelSandboxOptions::realistic_pool`].
pub const REALISTIC_WORKERS: usize = 8;

/// Service time of each API route: how long a worker is busy with a request
/// before its handler runs (`tokio::time::sleep`, so a paused clock
/// applies). Routes not listed (unknown paths, `/up`) cost nothing; the
/// lookup route costs what `show` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyProfile {
    /// `POST /api/vendors/login` (bcrypt).
    pub login: Duration,
    /// `POST /api/invoices`.
    pub create: Duration,
    /// `POST /api/invoices/{id}/submit` (the JoFotara round trip).
    pub submit: Duration,
    /// `GET /api/invoices/status/{id}`.
    pub status: Duration,
    /// `GET /api/invoices/{id}` (and the optional lookup by number).
    pub show: Duration,
    /// `GET /api/vendors/profile`.
    pub profile: Duration,
    /// `GET /api/invoices/{id}/pdf` (dompdf).
    pub pdf: Duration,
    /// `GET /api/invoices/{id}/xml`.
    pub xml: Duration,
}

impl LatencyProfile {
    /// No service time anywhere (the default).
    pub fn none() -> LatencyProfile {
        LatencyProfile::default()
    }

    /// The real stack's service times: login 120 ms (bcrypt), create 30 ms,
    /// submit 300 ms (JoFotara round trip), status 15 ms, show 15 ms,
    /// profile 10 ms, pdf 200 ms (dompdf), xml 30 ms.
    pub fn realistic() -> LatencyProfile {
        let ms = Duration::from_millis;
        LatencyProfile {
            login: ms(120),
            create: ms(30),
            submit: ms(300),
            status: ms(15),
            show: ms(15),
            profile: ms(10),
            pdf: ms(200),
            xml: ms(30),
        }
    }

    /// Every time multiplied by `factor` (e.g. `0.01` for quick tests); a
    /// negative or NaN factor gives zero, an overflowing one the maximum.
    pub fn scaled(&self, factor: f64) -> LatencyProfile {
        let f = |d: Duration| {
            let secs = d.as_secs_f64() * factor;
            if secs.is_nan() || secs <= 0.0 {
                Duration::ZERO
            } else {
                Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
            }
        };
        LatencyProfile {
            login: f(self.login),
            create: f(self.create),
            submit: f(self.submit),
            status: f(self.status),
            show: f(self.show),
            profile: f(self.profile),
            pdf: f(self.pdf),
            xml: f(self.xml),
        }
    }

    /// Whether every time is zero.
    pub fn is_none(&self) -> bool {
        *self == LatencyProfile::none()
    }

    /// Worker time of one sale as the agent makes it: create + submit + PDF
    /// (login is amortised over many sales). 530 ms when realistic.
    pub fn per_sale(&self) -> Duration {
        self.create
            .saturating_add(self.submit)
            .saturating_add(self.pdf)
    }

    /// The most sales a second `workers` workers can serve:
    /// `workers / per_sale()` (`None` when a sale costs nothing). About
    /// 15.1 for the realistic profile and 8 workers.
    pub fn ceiling_per_sec(&self, workers: usize) -> Option<f64> {
        let secs = self.per_sale().as_secs_f64();
        (secs > 0.0).then(|| workers as f64 / secs)
    }

    /// The service times by route key.
    pub fn route_times(&self) -> Vec<(String, Duration)> {
        [
            (LOGIN_ROUTE, self.login),
            ("POST /api/invoices", self.create),
            ("POST /api/invoices/{id}/submit", self.submit),
            ("GET /api/invoices/status/{id}", self.status),
            ("GET /api/invoices/{id}", self.show),
            (LOOKUP_ROUTE_KEY, self.show),
            ("GET /api/vendors/profile", self.profile),
            ("GET /api/invoices/{id}/pdf", self.pdf),
            ("GET /api/invoices/{id}/xml", self.xml),
        ]
        .into_iter()
        .map(|(k, d)| (k.to_string(), d))
        .collect()
    }

    /// `{"login_us": 120000, ...}` (microseconds).
    pub fn to_json(&self) -> Value {
        json!({
            "login_us": micros(self.login),
            "create_us": micros(self.create),
            "submit_us": micros(self.submit),
            "status_us": micros(self.status),
            "show_us": micros(self.show),
            "profile_us": micros(self.profile),
            "pdf_us": micros(self.pdf),
            "xml_us": micros(self.xml),
        })
    }
}

/// The latency profile and worker count a named profile stands for, for
/// the CLI's `sandbox --latency <name>`: `"none"` (no service time,
/// unbounded) or `"realistic"` ([`LatencyProfile::realistic`],
/// [`REALISTIC_WORKERS`] workers). Case and surrounding blanks are ignored.
pub fn options_from_profile(name: &str) -> Result<(LatencyProfile, Option<usize>), String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "none" => Ok((LatencyProfile::none(), None)),
        "realistic" => Ok((LatencyProfile::realistic(), Some(REALISTIC_WORKERS))),
        other => Err(format!(
            "unknown latency profile \"{other}\": expected \"none\" or \"realistic\""
        )),
    }
}

/// Route key of the login.
const LOGIN_ROUTE: &str = "POST /api/vendors/login";
/// Route pattern and key of the optional lookup by invoice number.
const LOOKUP_ROUTE: &str = "/api/invoices/by-number/{invoice_number}";
const LOOKUP_ROUTE_KEY: &str = "GET /api/invoices/by-number/{invoice_number}";
/// The vendor that owns [`LaravelSandbox::seed_foreign_invoices`]' invoices.
const FOREIGN_VENDOR_EMAIL: &str = "other-vendor@sandbox.test";

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct TokenRec {
    /// The 48 characters after `<id>|`.
    secret: String,
    user_id: u64,
    created: Instant,
}

#[derive(Clone, Debug)]
struct Item {
    id: u64,
    item_name: String,
    quantity: i64,
    unit_price: Decimal,
    tax: Decimal,
    total: Decimal,
    created_at: String,
}

#[derive(Clone, Debug)]
struct Invoice {
    id: u64,
    invoice_number: String,
    customer_name: String,
    customer_email: Option<String>,
    customer_phone: Option<String>,
    uuid: String,
    vendor_id: u64,
    vendor_name: String,
    organization_id: u64,
    invoice_date: NaiveDate,
    status: String,
    subtotal: Decimal,
    tax_amount: Decimal,
    total_amount: Decimal,
    created_at: String,
    updated_at: String,
    items: Vec<Item>,
}

#[derive(Debug)]
struct Db {
    users: Vec<SandboxUser>,
    users_created_at: String,
    tokens: BTreeMap<u64, TokenRec>,
    next_token_id: u64,
    invoices: BTreeMap<u64, Invoice>,
    next_invoice_id: u64,
    next_item_id: u64,
    token_lifetime: Option<Duration>,
    advertise_expiry: bool,
    jofotara_configured: bool,
    submit_outcomes: VecDeque<String>,
    logins_ok: u64,
    logins_failed: u64,
    tokens_issued: u64,
    connector: ConnectorState,
}

/// The connector channel's side of the backend.
#[derive(Debug, Default)]
struct ConnectorState {
    api_key: String,
    config_updates: Map<String, Value>,
    /// Every accepted heartbeat body, as sent.
    heartbeats: Vec<Value>,
    last_heartbeat_at: Option<String>,
    /// Accepted transactions, first copy of each `transaction_id`.
    transactions: Vec<Value>,
    transaction_ids: std::collections::HashSet<String>,
    transactions_duplicate: u64,
}

impl ConnectorState {
    /// The backend's key check: `None` for a non-empty `X-API-Key` equal
    /// to the shop's key, else the 401 `{"error": "Invalid API key"}`.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let sent = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        match sent {
            Some(k) if !k.is_empty() && k == self.api_key => None,
            _ => Some(json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "Invalid API key"}),
            )),
        }
    }

    /// `config_updates` as Laravel encodes it: an empty PHP array is `[]`.
    fn config_updates_json(&self) -> Value {
        if self.config_updates.is_empty() {
            json!([])
        } else {
            Value::Object(self.config_updates.clone())
        }
    }
}

impl Db {
    fn token_valid(&self, t: &TokenRec, now: Instant) -> bool {
        self.token_lifetime
            .is_none_or(|life| now.saturating_duration_since(t.created) < life)
    }

    /// Sanctum's guard: find the token, check its expiry, return its user.
    fn authenticate(&self, headers: &HeaderMap) -> Option<SandboxUser> {
        let token = bearer_token(headers)?;
        let now = Instant::now();
        let rec = match token.split_once('|') {
            Some((id, secret)) => {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || secret.is_empty() {
                    return None;
                }
                let rec = self.tokens.get(&id.parse::<u64>().ok()?)?;
                (rec.secret == secret).then_some(rec)?
            }
            None => self.tokens.values().find(|r| r.secret == token)?,
        };
        if !self.token_valid(rec, now) {
            return None;
        }
        self.users.iter().find(|u| u.id == rec.user_id).cloned()
    }
}

struct Shared {
    state: Mutex<Db>,
    harness: Arc<Harness>,
    pool: Arc<WorkerPool>,
    latency: Mutex<LatencyProfile>,
    lookup_route: bool,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, Db> {
        lock(&self.state)
    }
}

// ---------------------------------------------------------------------------
// Formatting helpers
// ---------------------------------------------------------------------------

/// Laravel's date serialisation, at the database's second precision.
fn laravel_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S.000000Z").to_string()
}

fn now_timestamp() -> String {
    laravel_timestamp(Utc::now())
}

fn money(d: Decimal) -> String {
    format!("{:.2}", round_money(d))
}

/// The tax rate as a percentage, `16`.
fn tax_percent() -> String {
    (RATE * Decimal::ONE_HUNDRED).normalize().to_string()
}

fn user_json(u: &SandboxUser, created_at: &str) -> Value {
    json!({
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "organization_id": u.organization_id,
        "is_active": u.active,
        "created_at": created_at,
        "updated_at": created_at,
    })
}

fn invoice_date_json(d: NaiveDate) -> String {
    format!("{}T00:00:00.000000Z", d.format("%Y-%m-%d"))
}

/// The create answer: the model as created (no status, no items).
fn invoice_created_json(inv: &Invoice) -> Value {
    json!({
        "id": inv.id,
        "invoice_number": inv.invoice_number,
        "customer_name": inv.customer_name,
        "customer_email": inv.customer_email,
        "customer_phone": inv.customer_phone,
        "uuid": inv.uuid,
        "vendor_id": inv.vendor_id,
        "organization_id": inv.organization_id,
        "invoice_date": invoice_date_json(inv.invoice_date),
        "total_amount": money(inv.total_amount),
        "tax_amount": money(inv.tax_amount),
        "updated_at": inv.updated_at,
        "created_at": inv.created_at,
    })
}

/// `GET /api/invoices/{id}`: the stored invoice with status and items.
fn invoice_full_json(inv: &Invoice) -> Value {
    let items: Vec<Value> = inv
        .items
        .iter()
        .map(|it| {
            json!({
                "id": it.id,
                "invoice_id": inv.id,
                "item_name": it.item_name,
                "quantity": it.quantity,
                "unit_price": money(it.unit_price),
                "tax": money(it.tax),
                "total": money(it.total),
                "created_at": it.created_at,
                "updated_at": it.created_at,
            })
        })
        .collect();
    // The stored model is the created one plus what the create answer
    // leaves out: its status (the database default) and its items.
    let mut v = invoice_created_json(inv);
    v["status"] = json!(inv.status);
    v["items"] = Value::Array(items);
    v
}

const LEGAL_TEXT: &[&str] = &[
    "Terms and legal notes",
    "1. This document was produced by the pos-connector sandbox, a simulator of the invoicing",
    "   backend. It is not a tax invoice and has not been reported to the Income and Sales Tax",
    "   Department of Jordan (JoFotara). It carries no legal or fiscal value whatsoever.",
    "2. Amounts are expressed in Jordanian dinars (JOD). General sales tax is applied at a flat",
    "   rate of 16% on each line, computed on quantity times unit price and rounded to two",
    "   decimals, half away from zero; the invoice tax is the sum of the line taxes.",
    "3. In the field, the official invoice is rendered by the backend once the invoice has been",
    "   accepted by the national e-invoicing system, and carries the QR code issued by it.",
    "4. Goods remain the property of the seller until paid in full. Payment is due on receipt",
    "   unless otherwise agreed in writing. Late payments may incur charges as permitted by law.",
    "5. Claims regarding the goods or this invoice must be made within fourteen days of the",
    "   invoice date, quoting the invoice number and the unique identifier (UUID) shown above.",
    "6. Returns are accepted only with this document, in the original packaging, within the",
    "   period stated in the store's return policy; refunds are issued as a credit note that",
    "   references this invoice, never by editing or deleting the original invoice.",
    "7. Personal data printed on this document (customer name, e-mail, telephone) is processed",
    "   only to issue and keep the invoice for the period the tax law requires.",
    "8. Integrators: the bytes of this PDF are deterministic for a given invoice, so tests can",
    "   compare a downloaded copy with the sandbox's own rendering.",
    "",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt",
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco",
    "laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in",
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat",
    "cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum.",
    "Sed ut perspiciatis unde omnis iste natus error sit voluptatem accusantium doloremque",
    "laudantium, totam rem aperiam, eaque ipsa quae ab illo inventore veritatis et quasi",
    "architecto beatae vitae dicta sunt explicabo. Nemo enim ipsam voluptatem quia voluptas sit",
    "aspernatur aut odit aut fugit, sed quia consequuntur magni dolores eos qui ratione voluptatem",
    "sequi nesciunt. Neque porro quisquam est, qui dolorem ipsum quia dolor sit amet.",
];

/// The invoice PDF: depends only on the stored invoice (not its status), so
/// the same invoice always gives the same bytes.
fn invoice_pdf(inv: &Invoice) -> Vec<u8> {
    let mut lines = vec![
        "TAX INVOICE (sandbox)".to_string(),
        String::new(),
        format!("Invoice number:   {}", inv.invoice_number),
        format!("Invoice id:       {}", inv.id),
        format!("UUID:             {}", inv.uuid),
        format!("Issue date:       {}", inv.invoice_date.format("%Y-%m-%d")),
        format!(
            "Seller:           {} (vendor {}, organization {})",
            inv.vendor_name, inv.vendor_id, inv.organization_id
        ),
        format!("Customer:         {}", inv.customer_name),
    ];
    if let Some(e) = &inv.customer_email {
        lines.push(format!("Customer e-mail:  {e}"));
    }
    if let Some(p) = &inv.customer_phone {
        lines.push(format!("Customer phone:   {p}"));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<4}{:<44}{:>8}{:>12}{:>10}{:>12}",
        "#", "Description", "Qty", "Unit price", "Tax", "Total"
    ));
    lines.push("-".repeat(90));
    for (n, it) in inv.items.iter().enumerate() {
        let name: String = it.item_name.chars().take(42).collect();
        lines.push(format!(
            "{:<4}{:<44}{:>8}{:>12}{:>10}{:>12}",
            n + 1,
            name,
            it.quantity,
            money(it.unit_price),
            money(it.tax),
            money(it.total)
        ));
        if it.item_name.chars().count() > 42 {
            lines.push(format!("    {}", it.item_name));
        }
    }
    lines.push("-".repeat(90));
    lines.push(format!(
        "{:>78}{:>12}",
        "Subtotal (tax excluded):",
        money(inv.subtotal)
    ));
    lines.push(format!(
        "{:>78}{:>12}",
        format!("General sales tax {}%:", tax_percent()),
        money(inv.tax_amount)
    ));
    lines.push(format!(
        "{:>78}{:>12}",
        format!("Total ({CURRENCY}):"),
        money(inv.total_amount)
    ));
    lines.push(String::new());
    lines.extend(LEGAL_TEXT.iter().map(|s| s.to_string()));
    render_text_pdf(&format!("Invoice {}", inv.invoice_number), &lines)
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A UBL 2.1 invoice, shaped like the one sent to JoFotara.
fn invoice_xml(inv: &Invoice) -> String {
    let e = xml_escape;
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(
        "<Invoice xmlns=\"urn:oasis:names:specification:ubl:schema:xsd:Invoice-2\" \
         xmlns:cac=\"urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2\" \
         xmlns:cbc=\"urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2\">\n",
    );
    x.push_str("  <cbc:UBLVersionID>2.1</cbc:UBLVersionID>\n");
    x.push_str("  <cbc:ProfileID>reporting:1.0</cbc:ProfileID>\n");
    x.push_str(&format!("  <cbc:ID>{}</cbc:ID>\n", e(&inv.invoice_number)));
    x.push_str(&format!("  <cbc:UUID>{}</cbc:UUID>\n", e(&inv.uuid)));
    x.push_str(&format!(
        "  <cbc:IssueDate>{}</cbc:IssueDate>\n",
        inv.invoice_date.format("%Y-%m-%d")
    ));
    x.push_str("  <cbc:InvoiceTypeCode name=\"012\">388</cbc:InvoiceTypeCode>\n");
    x.push_str(&format!(
        "  <cbc:DocumentCurrencyCode>{CURRENCY}</cbc:DocumentCurrencyCode>\n  <cbc:TaxCurrencyCode>{CURRENCY}</cbc:TaxCurrencyCode>\n"
    ));
    x.push_str(&format!(
        "  <cac:AccountingSupplierParty>\n    <cac:Party>\n      <cac:PartyIdentification>\n        <cbc:ID schemeID=\"VENDOR\">{}</cbc:ID>\n      </cac:PartyIdentification>\n      <cac:PartyTaxScheme>\n        <cbc:CompanyID>ORG-{}</cbc:CompanyID>\n        <cac:TaxScheme>\n          <cbc:ID>VAT</cbc:ID>\n        </cac:TaxScheme>\n      </cac:PartyTaxScheme>\n      <cac:PartyLegalEntity>\n        <cbc:RegistrationName>{}</cbc:RegistrationName>\n      </cac:PartyLegalEntity>\n    </cac:Party>\n  </cac:AccountingSupplierParty>\n",
        inv.vendor_id,
        inv.organization_id,
        e(&inv.vendor_name)
    ));
    x.push_str("  <cac:AccountingCustomerParty>\n    <cac:Party>\n");
    x.push_str(&format!(
        "      <cac:PartyLegalEntity>\n        <cbc:RegistrationName>{}</cbc:RegistrationName>\n      </cac:PartyLegalEntity>\n",
        e(&inv.customer_name)
    ));
    if inv.customer_email.is_some() || inv.customer_phone.is_some() {
        x.push_str("      <cac:Contact>\n");
        if let Some(p) = &inv.customer_phone {
            x.push_str(&format!(
                "        <cbc:Telephone>{}</cbc:Telephone>\n",
                e(p)
            ));
        }
        if let Some(m) = &inv.customer_email {
            x.push_str(&format!(
                "        <cbc:ElectronicMail>{}</cbc:ElectronicMail>\n",
                e(m)
            ));
        }
        x.push_str("      </cac:Contact>\n");
    }
    x.push_str("    </cac:Party>\n  </cac:AccountingCustomerParty>\n");
    x.push_str(&format!(
        "  <cac:TaxTotal>\n    <cbc:TaxAmount currencyID=\"{CURRENCY}\">{}</cbc:TaxAmount>\n  </cac:TaxTotal>\n",
        money(inv.tax_amount)
    ));
    x.push_str(&format!(
        "  <cac:LegalMonetaryTotal>\n    <cbc:LineExtensionAmount currencyID=\"{CURRENCY}\">{sub}</cbc:LineExtensionAmount>\n    <cbc:TaxExclusiveAmount currencyID=\"{CURRENCY}\">{sub}</cbc:TaxExclusiveAmount>\n    <cbc:TaxInclusiveAmount currencyID=\"{CURRENCY}\">{total}</cbc:TaxInclusiveAmount>\n    <cbc:PayableAmount currencyID=\"{CURRENCY}\">{total}</cbc:PayableAmount>\n  </cac:LegalMonetaryTotal>\n",
        sub = money(inv.subtotal),
        total = money(inv.total_amount)
    ));
    for (n, it) in inv.items.iter().enumerate() {
        let line_ext = it.total - it.tax;
        x.push_str(&format!(
            "  <cac:InvoiceLine>\n    <cbc:ID>{}</cbc:ID>\n    <cbc:InvoicedQuantity unitCode=\"PCE\">{}</cbc:InvoicedQuantity>\n    <cbc:LineExtensionAmount currencyID=\"{CURRENCY}\">{}</cbc:LineExtensionAmount>\n    <cac:TaxTotal>\n      <cbc:TaxAmount currencyID=\"{CURRENCY}\">{}</cbc:TaxAmount>\n      <cbc:RoundingAmount currencyID=\"{CURRENCY}\">{}</cbc:RoundingAmount>\n      <cac:TaxSubtotal>\n        <cbc:TaxAmount currencyID=\"{CURRENCY}\">{}</cbc:TaxAmount>\n        <cac:TaxCategory>\n          <cbc:ID>S</cbc:ID>\n          <cbc:Percent>{}</cbc:Percent>\n          <cac:TaxScheme>\n            <cbc:ID>VAT</cbc:ID>\n          </cac:TaxScheme>\n        </cac:TaxCategory>\n      </cac:TaxSubtotal>\n    </cac:TaxTotal>\n    <cac:Item>\n      <cbc:Name>{}</cbc:Name>\n    </cac:Item>\n    <cac:Price>\n      <cbc:PriceAmount currencyID=\"{CURRENCY}\">{}</cbc:PriceAmount>\n    </cac:Price>\n  </cac:InvoiceLine>\n",
            n + 1,
            it.quantity,
            money(line_ext),
            money(it.tax),
            money(it.total),
            money(it.tax),
            tax_percent(),
            e(&it.item_name),
            money(it.unit_price)
        ));
    }
    x.push_str("</Invoice>\n");
    x
}

// ---------------------------------------------------------------------------
// Laravel's request handling: input, auth, exceptions
// ---------------------------------------------------------------------------

/// Which Laravel exception a response renders; the render middleware turns
/// it into a redirect or an HTML page for clients that do not expect JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exception {
    Authentication,
    Validation,
    NotFound,
    MethodNotAllowed,
}

fn exception_response(status: StatusCode, body: Value, kind: Exception) -> Response {
    let mut resp = json_response(status, &body);
    resp.extensions_mut().insert(kind);
    resp
}

fn unauthenticated() -> Response {
    exception_response(
        StatusCode::UNAUTHORIZED,
        json!({"message": "Unauthenticated."}),
        Exception::Authentication,
    )
}

/// Laravel's `ModelNotFoundException` answer: with the ids looked up
/// (`findOrFail`), or without (`where(...)->firstOrFail()`).
fn model_not_found(id: Option<&str>) -> Response {
    let message = match id {
        Some(id) => format!("No query results for model [{INVOICE_MODEL}] {id}."),
        None => format!("No query results for model [{INVOICE_MODEL}]."),
    };
    exception_response(
        StatusCode::NOT_FOUND,
        json!({ "message": message }),
        Exception::NotFound,
    )
}

fn server_error() -> Response {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"message": "Server Error"}),
    )
}

/// The error body Laravel gives a status (used for injected faults).
pub fn laravel_error_body(status: u16) -> Value {
    let message = match status {
        401 => "Unauthenticated.".to_string(),
        429 => "Too Many Attempts.".to_string(),
        500 => "Server Error".to_string(),
        503 => "Service Unavailable".to_string(),
        s => StatusCode::from_u16(s)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("Error")
            .to_string(),
    };
    json!({ "message": message })
}

/// Ordered validation errors (field -> messages), Laravel style.
#[derive(Default, Debug)]
struct Errors(Vec<(String, Vec<String>)>);

impl Errors {
    fn add(&mut self, field: &str, message: String) {
        match self.0.iter_mut().find(|(f, _)| f == field) {
            Some((_, msgs)) => msgs.push(message),
            None => self.0.push((field.to_string(), vec![message])),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The 422 answer: first message, `(and N more error[s])`, all errors.
    fn into_response(self) -> Response {
        let total: usize = self.0.iter().map(|(_, m)| m.len()).sum();
        let first = self
            .0
            .first()
            .and_then(|(_, m)| m.first().cloned())
            .unwrap_or_default();
        let message = match total.saturating_sub(1) {
            0 => first,
            1 => format!("{first} (and 1 more error)"),
            n => format!("{first} (and {n} more errors)"),
        };
        let mut errors = Map::new();
        for (field, msgs) in self.0 {
            errors.insert(field, json!(msgs));
        }
        exception_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": message, "errors": errors}),
            Exception::Validation,
        )
    }
}

/// How Laravel names an attribute in messages: underscores become spaces.
fn display_attr(field: &str) -> String {
    field.replace('_', " ")
}

fn msg_required(f: &str) -> String {
    format!("The {} field is required.", display_attr(f))
}

fn msg_string(f: &str) -> String {
    format!("The {} field must be a string.", display_attr(f))
}

/// Laravel's `required`: present, not null, not an empty string (input is
/// already trimmed) and not an empty array.
fn filled(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// PHP's `is_numeric` on a string (leading/trailing whitespace allowed).
fn php_numeric_str(s: &str) -> bool {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{0B}');
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int)
        && frac.is_none_or(digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exp_ok
}

fn is_numeric(v: &Value) -> bool {
    match v {
        Value::Number(_) => true,
        Value::String(s) => php_numeric_str(s),
        _ => false,
    }
}

/// PHP's `filter_var($v, FILTER_VALIDATE_INT)`, as Laravel's `integer` rule
/// uses it; returns the integer.
fn php_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 1e15).then_some(f as i64)
        }),
        Value::String(s) => {
            let t = s.trim();
            let body = t.strip_prefix(['+', '-']).unwrap_or(t);
            let canonical = !body.is_empty()
                && body.bytes().all(|b| b.is_ascii_digit())
                && (body == "0" || !body.starts_with('0'));
            if canonical {
                t.parse().ok()
            } else {
                None
            }
        }
        Value::Bool(true) => Some(1),
        _ => None,
    }
}

fn parse_decimal(s: &str) -> Option<Decimal> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.contains(['e', 'E']) {
        Decimal::from_scientific(t).ok()
    } else {
        Decimal::from_str(t).ok()
    }
}

fn decimal_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => parse_decimal(&n.to_string()),
        Value::String(s) if php_numeric_str(s) => parse_decimal(s),
        _ => None,
    }
}

/// Laravel's size of a value for `min` on an attribute with a numeric rule:
/// the number if numeric, else an array's count, else the string length.
fn numeric_size(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) if php_numeric_str(s) => s.trim().parse::<f64>().unwrap_or(0.0),
        Value::String(s) => s.chars().count() as f64,
        Value::Array(a) => a.len() as f64,
        Value::Object(o) => o.len() as f64,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Null => 0.0,
    }
}

/// PHP's string conversion of a scalar (for comparisons).
fn php_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("1".into()),
        Value::Bool(false) => Some(String::new()),
        _ => None,
    }
}

/// A plausible e-mail address (Laravel's default `email` rule is RFC based
/// and lenient: no dot needed in the domain).
fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !local.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && domain.chars().all(|c| {
            c.is_alphanumeric() || c == '-' || c == '.' || c == '[' || c == ']' || c == ':'
        })
}

/// Laravel's `TrimStrings` (not for passwords) then
/// `ConvertEmptyStringsToNull`, applied to the whole input.
fn clean_input(v: Value, top_key: Option<&str>) -> Value {
    const NO_TRIM: [&str; 3] = ["password", "password_confirmation", "current_password"];
    match v {
        Value::String(s) => {
            let s = if top_key.is_some_and(|k| NO_TRIM.contains(&k)) {
                s
            } else {
                s.trim_matches(|c: char| {
                    c.is_ascii_whitespace() || c == '\u{0B}' || c == '\u{FEFF}' || c == '\u{200B}'
                })
                .to_string()
            };
            if s.is_empty() {
                Value::Null
            } else {
                Value::String(s)
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| clean_input(x, None)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| {
                    let cleaned = clean_input(x, if top_key.is_none() { Some(&k) } else { None });
                    (k, cleaned)
                })
                .collect(),
        ),
        other => other,
    }
}

/// The request input as Laravel sees it: the JSON body when the
/// `Content-Type` is JSON (an unparsable body is empty input), else nothing.
fn request_input(headers: &HeaderMap, body: &[u8]) -> Map<String, Value> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("/json") || ct.contains("+json"));
    if !is_json {
        return Map::new();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => match clean_input(Value::Object(o), None) {
            Value::Object(o) => o,
            _ => Map::new(),
        },
        _ => Map::new(),
    }
}

/// `$request->bearerToken()`.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let lower = h.to_ascii_lowercase();
    let pos = lower.rfind("bearer ")?;
    let rest = &h[pos + 7..];
    let token = rest.split(',').next().unwrap_or("");
    (!token.is_empty()).then(|| token.to_string())
}

/// `$request->expectsJson()`: ajax accepting anything, or the preferred
/// `Accept` type is JSON.
fn expects_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    // Acceptable types, best quality first (stable for equal quality).
    let mut types: Vec<(f32, String)> = accept
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let ty = it.next()?.trim().to_ascii_lowercase();
            if ty.is_empty() {
                return None;
            }
            let q = it
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((q, ty))
        })
        .collect();
    types.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let first = types.first().map(|(_, t)| t.as_str());
    let wants_json = first.is_some_and(|t| t.contains("/json") || t.contains("+json"));
    let ajax = headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes() == b"XMLHttpRequest");
    let pjax = headers.contains_key("x-pjax");
    let accepts_any = matches!(first, None | Some("*/*") | Some("*"));
    wants_json || (ajax && !pjax && accepts_any)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#039;")
}

/// Symfony's `RedirectResponse`.
fn redirect(to: &str) -> Response {
    let esc = html_escape(to);
    let body = format!(
        "<!DOCTYPE html>\n<html>\n    <head>\n        <meta charset=\"UTF-8\" />\n        <meta http-equiv=\"refresh\" content=\"0;url='{esc}'\" />\n\n        <title>Redirecting to {esc}</title>\n    </head>\n    <body>\n        Redirecting to <a href=\"{esc}\">{esc}</a>.\n    </body>\n</html>"
    );
    let mut resp = html_response(StatusCode::FOUND, &body);
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Laravel's exception rendering for clients that do not expect JSON, and
/// its 405 message (axum answers 405 with an empty body and `Allow`).
async fn laravel_render(req: Request, next: Next) -> Response {
    let json = expects_json(req.headers());
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let referer = req
        .headers()
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method().clone();
    let path = laravel_path(req.uri());
    let mut resp = next.run(req).await;

    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && resp.extensions().get::<Exception>().is_none()
        && !resp.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = resp.headers().get(header::ALLOW).cloned();
        let supported = allow
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let message = format!(
            "The {method} method is not supported for route {path}. Supported methods: {supported}."
        );
        resp = exception_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "message": message }),
            Exception::MethodNotAllowed,
        );
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    if json {
        return resp;
    }
    let base = format!("http://{host}");
    match resp.extensions().get::<Exception>().copied() {
        None => resp,
        Some(Exception::Authentication) => redirect(&format!("{base}/login")),
        Some(Exception::Validation) => redirect(&referer.unwrap_or(base)),
        Some(Exception::NotFound | Exception::MethodNotAllowed) => {
            let allow = resp.headers().get(header::ALLOW).cloned();
            let mut html = html_response(resp.status(), &html_error_page(resp.status()));
            if let Some(a) = allow {
                html.headers_mut().insert(header::ALLOW, a);
            }
            html
        }
    }
}

/// `$request->path()`: the path without its leading slash, `/` for the root.
fn laravel_path(uri: &Uri) -> String {
    let p = uri.path().trim_matches('/');
    if p.is_empty() {
        "/".into()
    } else {
        p.to_string()
    }
}

// ---------------------------------------------------------------------------
// API handlers
// ---------------------------------------------------------------------------

type Sh = Arc<Shared>;

async fn route_not_found(uri: Uri) -> Response {
    exception_response(
        StatusCode::NOT_FOUND,
        json!({"message": format!("The route {} could not be found.", laravel_path(&uri))}),
        Exception::NotFound,
    )
}

async fn health() -> Response {
    html_response(
        StatusCode::OK,
        "<!DOCTYPE html>\n<html><head><title>Sandbox</title></head><body>Application up</body></html>\n",
    )
}

async fn login(State(sh): State<Sh>, headers: HeaderMap, body: Bytes) -> Response {
    let input = request_input(&headers, &body);
    let mut errors = Errors::default();
    let email = input.get("email");
    if !filled(email) {
        errors.add("email", msg_required("email"));
    } else if !email.and_then(Value::as_str).is_some_and(valid_email) {
        errors.add(
            "email",
            "The email field must be a valid email address.".into(),
        );
    }
    let password = input.get("password");
    if !filled(password) {
        errors.add("password", msg_required("password"));
    }
    if !errors.is_empty() {
        return errors.into_response();
    }
    let email = email.and_then(Value::as_str).unwrap_or_default();
    let password = password.and_then(php_string);

    let mut st = sh.state();
    let user = st
        .users
        .iter()
        .find(|u| u.email == email && Some(&u.password) == password.as_ref())
        .cloned();
    let Some(user) = user else {
        st.logins_failed += 1;
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "Invalid credentials"}),
        );
    };
    let entropy: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let secret = format!("{entropy}{:08x}", crc32fast::hash(entropy.as_bytes()));
    let id = st.next_token_id;
    st.next_token_id += 1;
    st.tokens.insert(
        id,
        TokenRec {
            secret: secret.clone(),
            user_id: user.id,
            created: Instant::now(),
        },
    );
    st.logins_ok += 1;
    st.tokens_issued += 1;
    let mut answer = json!({
        "token": format!("{id}|{secret}"),
        "user": user_json(&user, &st.users_created_at),
    });
    if st.advertise_expiry {
        if let Some(life) = st.token_lifetime {
            let at = Utc::now() + chrono::Duration::from_std(life).unwrap_or(chrono::Duration::MAX);
            answer["expires_at"] = json!(at.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
    }
    json_response(StatusCode::OK, &answer)
}

async fn profile(State(sh): State<Sh>, headers: HeaderMap) -> Response {
    let st = sh.state();
    match st.authenticate(&headers) {
        Some(u) => json_response(StatusCode::OK, &user_json(&u, &st.users_created_at)),
        None => unauthenticated(),
    }
}

/// A validated line, ready to store.
struct NewItem {
    name: String,
    quantity: i64,
    price: Decimal,
}

/// Validates a create request against the contract's rules, in Laravel's
/// order (fields, then each wildcard rule over every item).
fn validate_invoice(
    input: &Map<String, Value>,
    taken: impl Fn(&str) -> bool,
) -> Result<Vec<NewItem>, Errors> {
    let mut errors = Errors::default();

    let f = "invoice_number";
    let v = input.get(f);
    if !filled(v) {
        errors.add(f, msg_required(f));
    } else if let Some(v) = v {
        if !v.is_string() {
            errors.add(f, msg_string(f));
        }
        if php_string(v).is_some_and(|s| taken(&s)) {
            errors.add(
                f,
                format!("The {} has already been taken.", display_attr(f)),
            );
        }
    }

    let f = "customer_name";
    let v = input.get(f);
    if !filled(v) {
        errors.add(f, msg_required(f));
    } else if !v.is_some_and(Value::is_string) {
        errors.add(f, msg_string(f));
    }

    let f = "customer_email";
    if let Some(v) = input.get(f).filter(|v| !v.is_null()) {
        if !v.as_str().is_some_and(valid_email) {
            errors.add(
                f,
                format!(
                    "The {} field must be a valid email address.",
                    display_attr(f)
                ),
            );
        }
    }

    let f = "customer_phone";
    if let Some(v) = input.get(f).filter(|v| !v.is_null()) {
        if !v.is_string() {
            errors.add(f, msg_string(f));
        }
    }

    let items = input.get("items");
    let mut entries: Vec<(String, Option<&Map<String, Value>>)> = Vec::new();
    if !filled(items) {
        errors.add("items", msg_required("items"));
    } else {
        match items {
            Some(Value::Array(a)) => {
                entries = a
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (i.to_string(), x.as_object()))
                    .collect();
            }
            // A JSON object is a PHP (associative) array too.
            Some(Value::Object(o)) => {
                entries = o.iter().map(|(k, x)| (k.clone(), x.as_object())).collect();
            }
            _ => errors.add("items", "The items field must be an array.".into()),
        }
    }
    let get = |item: Option<&Map<String, Value>>, k: &str| -> Option<Value> {
        item.and_then(|m| m.get(k)).cloned()
    };
    for (key, item) in &entries {
        let f = format!("items.{key}.description");
        let v = get(*item, "description");
        if !filled(v.as_ref()) {
            errors.add(&f, msg_required(&f));
        } else if !v.as_ref().is_some_and(Value::is_string) {
            errors.add(&f, msg_string(&f));
        }
    }
    for (key, item) in &entries {
        let f = format!("items.{key}.quantity");
        match get(*item, "quantity") {
            v if !filled(v.as_ref()) => errors.add(&f, msg_required(&f)),
            Some(v) => {
                if php_int(&v).is_none() {
                    errors.add(&f, format!("The {f} field must be an integer."));
                }
                if numeric_size(&v) < 1.0 {
                    errors.add(&f, format!("The {f} field must be at least 1."));
                }
            }
            None => {}
        }
    }
    for (key, item) in &entries {
        let f = format!("items.{key}.price");
        match get(*item, "price") {
            v if !filled(v.as_ref()) => errors.add(&f, msg_required(&f)),
            Some(v) => {
                if !is_numeric(&v) {
                    errors.add(&f, format!("The {f} field must be a number."));
                }
                if numeric_size(&v) < 0.0 {
                    errors.add(&f, format!("The {f} field must be at least 0."));
                }
            }
            None => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut out = Vec::new();
    for (_, item) in entries {
        let item = item.ok_or_else(Errors::default)?;
        out.push(NewItem {
            name: item
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            quantity: item.get("quantity").and_then(php_int).unwrap_or(0),
            price: item
                .get("price")
                .and_then(decimal_of)
                .ok_or_else(Errors::default)?,
        });
    }
    Ok(out)
}

async fn create_invoice(State(sh): State<Sh>, headers: HeaderMap, body: Bytes) -> Response {
    let input = request_input(&headers, &body);
    let mut st = sh.state();
    let Some(user) = st.authenticate(&headers) else {
        return unauthenticated();
    };
    let items = match validate_invoice(&input, |n| {
        st.invoices.values().any(|i| i.invoice_number == n)
    }) {
        Ok(items) => items,
        Err(e) if e.is_empty() => return server_error(),
        Err(e) => return e.into_response(),
    };

    // Money: exact decimals, each line's tax rounded half away from zero to
    // cents: the shared rule of `crate::tax`, which receipts use too.
    let now = now_timestamp();
    let id = st.next_invoice_id;
    let mut stored = Vec::new();
    let mut subtotal = Decimal::ZERO;
    let mut tax_amount = Decimal::ZERO;
    for it in items {
        let Some(line) = Decimal::from(it.quantity).checked_mul(it.price) else {
            return server_error();
        };
        let Some(tax) = line_tax(line) else {
            return server_error();
        };
        let (Some(s), Some(t), Some(total)) = (
            subtotal.checked_add(line),
            tax_amount.checked_add(tax),
            line.checked_add(tax).map(round_money),
        ) else {
            return server_error();
        };
        subtotal = s;
        tax_amount = t;
        stored.push(Item {
            id: st.next_item_id + stored.len() as u64,
            item_name: it.name,
            quantity: it.quantity,
            unit_price: round_money(it.price),
            tax,
            total,
            created_at: now.clone(),
        });
    }
    let subtotal = round_money(subtotal);
    let Some(total_amount) = subtotal.checked_add(tax_amount) else {
        return server_error();
    };
    let str_field = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
    let invoice = Invoice {
        id,
        invoice_number: str_field("invoice_number").unwrap_or_default(),
        customer_name: str_field("customer_name").unwrap_or_default(),
        customer_email: str_field("customer_email"),
        customer_phone: str_field("customer_phone"),
        uuid: uuid::Uuid::new_v4().to_string(),
        vendor_id: user.id,
        vendor_name: user.name.clone(),
        organization_id: user.organization_id,
        invoice_date: Utc::now().date_naive(),
        status: "draft".into(),
        subtotal,
        tax_amount,
        total_amount,
        created_at: now.clone(),
        updated_at: now,
        items: stored,
    };
    st.next_item_id += invoice.items.len() as u64;
    st.next_invoice_id += 1;
    let answer = invoice_created_json(&invoice);
    st.invoices.insert(id, invoice);
    json_response(StatusCode::CREATED, &answer)
}

/// Authenticates, then finds the invoice (401 before 404, like Laravel's
/// middleware order) and maps it.
fn with_invoice(
    sh: &Shared,
    headers: &HeaderMap,
    id: &str,
    f: impl FnOnce(&mut Db, SandboxUser, u64) -> Response,
) -> Response {
    let mut st = sh.state();
    let Some(user) = st.authenticate(headers) else {
        return unauthenticated();
    };
    match id
        .parse::<u64>()
        .ok()
        .filter(|n| st.invoices.contains_key(n))
    {
        Some(n) => f(&mut st, user, n),
        None => model_not_found(Some(id)),
    }
}

async fn show_invoice(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_invoice(&sh, &headers, &id, |st, _, n| {
        json_response(StatusCode::OK, &invoice_full_json(&st.invoices[&n]))
    })
}

/// `GET /api/invoices/by-number/{invoice_number}` (optional, not in the
/// real backend): like `show`, found by number. Like the real routes, it
/// does not check that the invoice belongs to the caller's vendor.
async fn show_by_number(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let st = sh.state();
    if st.authenticate(&headers).is_none() {
        return unauthenticated();
    }
    match st.invoices.values().find(|i| i.invoice_number == number) {
        Some(inv) => json_response(StatusCode::OK, &invoice_full_json(inv)),
        None => model_not_found(None),
    }
}

async fn invoice_status(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_invoice(&sh, &headers, &id, |st, _, n| {
        json_response(StatusCode::OK, &json!({"status": st.invoices[&n].status}))
    })
}

async fn submit_invoice(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_invoice(&sh, &headers, &id, |st, user, n| {
        if !user.active {
            return json_response(
                StatusCode::FORBIDDEN,
                &json!({"message": "Your account is disabled. Please contact admin."}),
            );
        }
        if !st.jofotara_configured {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"message": "JoFotara integration is not configured for this organization."}),
            );
        }
        let outcome = st
            .submit_outcomes
            .pop_front()
            .unwrap_or_else(|| "submitted".into());
        if let Some(inv) = st.invoices.get_mut(&n) {
            inv.status = outcome.clone();
            inv.updated_at = now_timestamp();
        }
        json_response(StatusCode::OK, &json!({ "status": outcome }))
    })
}

/// A download answer; the file name goes in raw, as the backend does.
fn download(content_type: &'static str, filename: &str, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition: Vec<u8> = format!("attachment; filename=\"{filename}\"")
        .bytes()
        .map(|b| if b < 0x20 || b == 0x7f { b'_' } else { b })
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

async fn pdf(State(sh): State<Sh>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    with_invoice(&sh, &headers, &id, |st, _, n| {
        let inv = &st.invoices[&n];
        download(
            "application/pdf",
            &format!("invoice_{}.pdf", inv.invoice_number),
            invoice_pdf(inv),
        )
    })
}

async fn xml(State(sh): State<Sh>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    with_invoice(&sh, &headers, &id, |st, _, n| {
        let inv = &st.invoices[&n];
        download(
            "application/xml",
            &format!("invoice_{}.xml", inv.invoice_number),
            invoice_xml(inv).into_bytes(),
        )
    })
}

// ---------------------------------------------------------------------------
// The connector channel (X-API-Key)
// ---------------------------------------------------------------------------

/// Laravel-style checks of a heartbeat (see the module doc: assumed rules).
fn validate_heartbeat(input: &Map<String, Value>) -> Result<(), Errors> {
    let mut errors = Errors::default();
    let f = "version";
    match input.get(f) {
        v if !filled(v) => errors.add(f, msg_required(f)),
        Some(v) if !v.is_string() => errors.add(f, msg_string(f)),
        _ => {}
    }
    for f in ["pos_systems", "system_info"] {
        if let Some(v) = input.get(f).filter(|v| !v.is_null()) {
            if !v.is_array() && !v.is_object() {
                errors.add(
                    f,
                    format!("The {} field must be an array.", display_attr(f)),
                );
            }
        }
    }
    let f = "transactions_pending";
    if let Some(v) = input.get(f).filter(|v| !v.is_null()) {
        if php_int(v).is_none() {
            errors.add(
                f,
                format!("The {} field must be an integer.", display_attr(f)),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

async fn connector_heartbeat(State(sh): State<Sh>, headers: HeaderMap, body: Bytes) -> Response {
    let mut st = sh.state();
    if let Some(refused) = st.connector.refusal(&headers) {
        return refused;
    }
    let input = request_input(&headers, &body);
    if let Err(e) = validate_heartbeat(&input) {
        return e.into_response();
    }
    // Recorded as sent (before Laravel's input cleaning), for tests to read.
    let sent = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Object(input));
    let now = now_timestamp();
    let c = &mut st.connector;
    c.heartbeats.push(sent);
    c.last_heartbeat_at = Some(now.clone());
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "config_updates": c.config_updates_json(), "server_time": now}),
    )
}

async fn connector_test(State(sh): State<Sh>, headers: HeaderMap) -> Response {
    let st = sh.state();
    if let Some(refused) = st.connector.refusal(&headers) {
        return refused;
    }
    json_response(
        StatusCode::OK,
        &json!({
            "status": "connection_ok",
            "customer": SANDBOX_CUSTOMER,
            "customer_id": SANDBOX_CUSTOMER_ID,
            "server_time": now_timestamp(),
            "message": "Connection successful",
        }),
    )
}

async fn connector_config(State(sh): State<Sh>, headers: HeaderMap) -> Response {
    let st = sh.state();
    if let Some(refused) = st.connector.refusal(&headers) {
        return refused;
    }
    json_response(
        StatusCode::OK,
        &json!({
            "customer": SANDBOX_CUSTOMER,
            "customer_id": SANDBOX_CUSTOMER_ID,
            "config": st.connector.config_updates_json(),
            "server_time": now_timestamp(),
        }),
    )
}

fn connector_stats_json(c: &ConnectorState) -> Value {
    json!({
        "customer_id": SANDBOX_CUSTOMER_ID,
        "heartbeats_received": c.heartbeats.len(),
        "last_heartbeat": c.last_heartbeat_at,
        "last_version": c.heartbeats.last().and_then(|h| h.get("version")).cloned(),
        "transactions_received": c.transactions.len(),
        "transactions_duplicate": c.transactions_duplicate,
    })
}

async fn connector_stats(State(sh): State<Sh>, headers: HeaderMap) -> Response {
    let st = sh.state();
    if let Some(refused) = st.connector.refusal(&headers) {
        return refused;
    }
    json_response(StatusCode::OK, &connector_stats_json(&st.connector))
}

/// `POST /api/pos-connector/transactions`: `{"transactions": [{...,
/// "transaction_id"}]}`, or one transaction as the whole body. Stored once
/// per `transaction_id`; a repeat (in this request or an earlier one) is
/// counted, not stored.
async fn connector_transactions(State(sh): State<Sh>, headers: HeaderMap, body: Bytes) -> Response {
    let mut st = sh.state();
    if let Some(refused) = st.connector.refusal(&headers) {
        return refused;
    }
    let input = request_input(&headers, &body);
    let list: Vec<Value> = match input.get("transactions") {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Object(o)) => o.values().cloned().collect(),
        None if input.contains_key("transaction_id") => vec![Value::Object(input.clone())],
        _ => Vec::new(),
    };
    let mut errors = Errors::default();
    if list.is_empty() {
        errors.add("transactions", msg_required("transactions"));
    }
    let id_of = |t: &Value| t.get("transaction_id").and_then(php_string);
    for (i, t) in list.iter().enumerate() {
        if id_of(t).is_none_or(|id| id.is_empty()) {
            let f = format!("transactions.{i}.transaction_id");
            errors.add(&f, msg_required(&f));
        }
    }
    if !errors.is_empty() {
        return errors.into_response();
    }
    let c = &mut st.connector;
    let (mut new, mut duplicates) = (0u64, 0u64);
    for t in list {
        let id = id_of(&t).unwrap_or_default();
        if c.transaction_ids.insert(id) {
            c.transactions.push(t);
            new += 1;
        } else {
            c.transactions_duplicate += 1;
            duplicates += 1;
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "received": new + duplicates, "new": new, "duplicates": duplicates}),
    )
}

// ---------------------------------------------------------------------------
// Control API
// ---------------------------------------------------------------------------

async fn ctl_stats(State(sh): State<Sh>) -> Response {
    json_response(StatusCode::OK, &stats_json(&sh))
}

async fn ctl_stats_reset(State(sh): State<Sh>) -> Response {
    sh.harness.reset_counters();
    sh.pool.reset_stats();
    {
        let mut st = sh.state();
        st.logins_ok = 0;
        st.logins_failed = 0;
        st.tokens_issued = 0;
    }
    json_response(StatusCode::OK, &json!({"ok": true}))
}

fn foreign_invoices(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["count"])?;
    let count = body
        .get("count")
        .and_then(Value::as_u64)
        .filter(|n| (1..=100_000).contains(n))
        .ok_or_else(|| bad_request("\"count\" (an integer from 1 to 100000) is required"))?;
    let ids = seed_foreign(sh, count as usize);
    let highest = sh.state().invoices.keys().next_back().copied();
    Ok(json!({"ok": true, "ids": ids, "highest_invoice_id": highest}))
}

async fn ctl_foreign_invoices(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(foreign_invoices(&sh, &body))
}

async fn ctl_revoke(State(sh): State<Sh>) -> Response {
    let n = {
        let mut st = sh.state();
        let n = st.tokens.len();
        st.tokens.clear();
        n
    };
    json_response(StatusCode::OK, &json!({"ok": true, "revoked": n}))
}

fn settings(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(
        body,
        &[
            "token_lifetime_secs",
            "advertise_expiry",
            "jofotara_configured",
        ],
    )?;
    let lifetime = match body.get("token_lifetime_secs") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(Duration::from_secs(v.as_u64().ok_or_else(|| {
            bad_request("\"token_lifetime_secs\" must be a non-negative integer or null")
        })?))),
    };
    let flag = |name: &str| match body.get(name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad_request(format!("\"{name}\" must be a boolean"))),
    };
    let advertise = flag("advertise_expiry")?;
    let configured = flag("jofotara_configured")?;
    let mut st = sh.state();
    if let Some(l) = lifetime {
        st.token_lifetime = l;
    }
    if let Some(a) = advertise {
        st.advertise_expiry = a;
    }
    if let Some(c) = configured {
        st.jofotara_configured = c;
    }
    Ok(settings_json(&st))
}

async fn ctl_settings(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(settings(&sh, &body))
}

fn user_active(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["email", "active"])?;
    let email = body
        .get("email")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("\"email\" (string) is required"))?;
    let active = body
        .get("active")
        .and_then(Value::as_bool)
        .ok_or_else(|| bad_request("\"active\" (boolean) is required"))?;
    let mut st = sh.state();
    let user = st
        .users
        .iter_mut()
        .find(|u| u.email == email)
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no user with email {email}")))?;
    user.active = active;
    Ok(json!({"ok": true, "email": email, "active": active}))
}

async fn ctl_user_active(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(user_active(&sh, &body))
}

fn submit_outcomes(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["outcomes"])?;
    let outcomes: Vec<String> = body
        .get("outcomes")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_string))
                .collect()
        })
        .ok_or_else(|| {
            bad_request(
                "\"outcomes\" must be an array of non-empty strings, e.g. [\"rejected\", \"error\"]",
            )
        })?;
    let mut st = sh.state();
    st.submit_outcomes.extend(outcomes);
    Ok(json!({"ok": true, "submit_outcomes": st.submit_outcomes}))
}

async fn ctl_submit_outcomes(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(submit_outcomes(&sh, &body))
}

fn connector_control_json(c: &ConnectorState) -> Value {
    json!({
        "api_key": c.api_key,
        "config_updates": c.config_updates,
        "heartbeats": c.heartbeats,
        "transactions": c.transactions,
        "stats": connector_stats_json(c),
    })
}

fn connector_settings(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["api_key", "config_updates"])?;
    let key = match body.get("api_key") {
        None => None,
        Some(Value::String(k)) if !k.is_empty() => Some(k.clone()),
        Some(_) => return Err(bad_request("\"api_key\" must be a non-empty string")),
    };
    let updates = match body.get("config_updates") {
        None => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(bad_request("\"config_updates\" must be a JSON object")),
    };
    let mut st = sh.state();
    if let Some(k) = key {
        st.connector.api_key = k;
    }
    if let Some(u) = updates {
        st.connector.config_updates = u;
    }
    Ok(connector_control_json(&st.connector))
}

async fn ctl_connector(State(sh): State<Sh>) -> Response {
    json_response(
        StatusCode::OK,
        &connector_control_json(&sh.state().connector),
    )
}

async fn ctl_connector_settings(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(connector_settings(&sh, &body))
}

fn settings_json(st: &Db) -> Value {
    json!({
        "token_lifetime_secs": st.token_lifetime.map(|d| d.as_secs()),
        "advertise_expiry": st.advertise_expiry,
        "jofotara_configured": st.jofotara_configured,
        "submit_outcomes": st.submit_outcomes,
    })
}

fn stats_json(sh: &Shared) -> Value {
    let mut v = sh.harness.counters_json();
    let st = sh.state();
    let now = Instant::now();
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for inv in st.invoices.values() {
        *by_status.entry(inv.status.as_str()).or_insert(0) += 1;
    }
    v["logins_ok"] = json!(st.logins_ok);
    v["logins_failed"] = json!(st.logins_failed);
    v["tokens_issued"] = json!(st.tokens_issued);
    v["tokens_active"] = json!(st
        .tokens
        .values()
        .filter(|t| st.token_valid(t, now))
        .count());
    v["invoices"] = json!(st.invoices.len());
    v["invoices_by_status"] = json!(by_status);
    v["highest_invoice_id"] = json!(st.invoices.keys().next_back());
    v["faults_pending"] = sh.harness.pending_faults_json();
    v["random_faults"] = sh.harness.random_faults_json();
    v["settings"] = settings_json(&st);
    v["connector"] = connector_stats_json(&st.connector);
    drop(st);
    v["pool"] = pool_json(sh);
    v
}

/// The pool's statistics, latency profile and ceiling.
fn pool_json(sh: &Shared) -> Value {
    let stats = sh.pool.stats();
    let latency = *lock(&sh.latency);
    let mut v = stats.to_json();
    v["latency"] = latency.to_json();
    v["per_sale_us"] = json!(micros(latency.per_sale()));
    v["ceiling_sales_per_sec"] = json!(stats.workers.and_then(|w| latency.ceiling_per_sec(w)));
    v
}

/// Adds `count` invoices owned by another vendor (created on first use,
/// organisation 2), as other shops sharing the backend would; returns
/// their ids.
fn seed_foreign(sh: &Shared, count: usize) -> Vec<u64> {
    let mut st = sh.state();
    let vendor = match st.users.iter().find(|u| u.email == FOREIGN_VENDOR_EMAIL) {
        Some(u) => u.clone(),
        None => {
            let id = st.users.iter().map(|u| u.id).max().unwrap_or(1) + 1;
            let org = st
                .users
                .iter()
                .map(|u| u.organization_id)
                .max()
                .unwrap_or(0)
                + 1;
            let u = SandboxUser {
                id,
                name: "Other Vendor".into(),
                email: FOREIGN_VENDOR_EMAIL.into(),
                password: uuid::Uuid::new_v4().to_string(),
                active: true,
                organization_id: org,
            };
            st.users.push(u.clone());
            u
        }
    };
    let now = now_timestamp();
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = st.next_invoice_id;
        let quantity = 1 + (id % 3) as i64;
        let unit_price = Decimal::new(250 + (id % 7) as i64 * 125, 2);
        let subtotal = Decimal::from(quantity) * unit_price;
        let tax = line_tax(subtotal).unwrap_or_default();
        let item = Item {
            id: st.next_item_id,
            item_name: "Other shop's article".into(),
            quantity,
            unit_price,
            tax,
            total: round_money(subtotal + tax),
            created_at: now.clone(),
        };
        let mut number = format!("OTHER-{}-{id:06}", vendor.id);
        while st.invoices.values().any(|i| i.invoice_number == number) {
            number.push('X');
        }
        let invoice = Invoice {
            id,
            invoice_number: number,
            customer_name: "Another shop's customer".into(),
            customer_email: None,
            customer_phone: None,
            uuid: uuid::Uuid::new_v4().to_string(),
            vendor_id: vendor.id,
            vendor_name: vendor.name.clone(),
            organization_id: vendor.organization_id,
            invoice_date: Utc::now().date_naive(),
            status: "submitted".into(),
            subtotal: round_money(subtotal),
            tax_amount: tax,
            total_amount: round_money(subtotal + tax),
            created_at: now.clone(),
            updated_at: now.clone(),
            items: vec![item],
        };
        st.next_item_id += 1;
        st.next_invoice_id += 1;
        st.invoices.insert(id, invoice);
        ids.push(id);
    }
    ids
}

fn router(sh: Sh) -> Router {
    let mut api = Router::new();
    if sh.lookup_route {
        // A static segment: matched before `/api/invoices/{id}`, which it
        // does not shadow (two segments after `invoices`, not one).
        api = api.route(LOOKUP_ROUTE, get(show_by_number));
    }
    let api = api
        .route("/api/vendors/login", post(login))
        .route("/api/vendors/profile", get(profile))
        .route("/api/invoices", post(create_invoice))
        .route("/api/invoices/{id}", get(show_invoice))
        .route("/api/invoices/status/{id}", get(invoice_status))
        .route("/api/invoices/{id}/submit", post(submit_invoice))
        .route("/api/invoices/{id}/pdf", get(pdf))
        .route("/api/invoices/{id}/xml", get(xml))
        .route("/api/pos-connector/heartbeat", post(connector_heartbeat))
        .route("/api/pos-connector/test", get(connector_test))
        .route("/api/pos-connector/config", get(connector_config))
        .route("/api/pos-connector/stats", get(connector_stats))
        .route(
            "/api/pos-connector/transactions",
            post(connector_transactions),
        )
        .route("/up", get(health))
        .fallback(route_not_found)
        // Inner: the worker pool (faults that answer without the handler
        // never take a worker; DropAfter and HoldAfter run it in one).
        .layer(from_fn_with_state(sh.pool.clone(), pool_middleware))
        .layer(from_fn_with_state(sh.harness.clone(), fault_middleware))
        .with_state(sh.clone());
    // The renderer wraps the whole API router (not each route) so that it
    // sees the `Allow` header axum adds to its 405 answers.
    let api = Router::new()
        .fallback_service(api)
        .layer(from_fn(laravel_render));
    let control = Router::new()
        .route("/__sandbox/stats", get(ctl_stats))
        .route("/__sandbox/stats/reset", post(ctl_stats_reset))
        .route("/__sandbox/tokens/revoke", post(ctl_revoke))
        .route("/__sandbox/settings", post(ctl_settings))
        .route("/__sandbox/users/active", post(ctl_user_active))
        .route("/__sandbox/submit-outcomes", post(ctl_submit_outcomes))
        .route("/__sandbox/foreign-invoices", post(ctl_foreign_invoices))
        .route(
            "/__sandbox/connector",
            get(ctl_connector).post(ctl_connector_settings),
        )
        .with_state(sh.clone());
    api.merge(control)
        .merge(fault_control_routes(CONTROL_PREFIX, sh.harness.clone()))
}

// ---------------------------------------------------------------------------
// Public handle
// ---------------------------------------------------------------------------

/// A running Laravel backend simulator. Dropping it stops the server.
pub struct LaravelSandbox {
    shared: Arc<Shared>,
    server: ServerHandle,
}

impl std::fmt::Debug for LaravelSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaravelSandbox")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl LaravelSandbox {
    /// Starts the simulator on `bind` (port 0 = any free port).
    pub async fn start(
        bind: SocketAddr,
        opts: LaravelSandboxOptions,
    ) -> std::io::Result<LaravelSandbox> {
        if opts.workers == Some(0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the sandbox needs at least 1 worker",
            ));
        }
        let harness = Harness::new(CONTROL_PREFIX, laravel_error_body);
        let pool = WorkerPool::new(opts.workers);
        pool.set_service_times(opts.latency.route_times());
        let shared = Arc::new(Shared {
            state: Mutex::new(Db {
                users: opts.users,
                users_created_at: now_timestamp(),
                tokens: BTreeMap::new(),
                next_token_id: 1,
                invoices: BTreeMap::new(),
                next_invoice_id: 1,
                next_item_id: 1,
                token_lifetime: opts.token_lifetime,
                advertise_expiry: opts.advertise_expiry,
                jofotara_configured: opts.jofotara_configured,
                submit_outcomes: VecDeque::new(),
                logins_ok: 0,
                logins_failed: 0,
                tokens_issued: 0,
                connector: ConnectorState {
                    api_key: opts.api_key,
                    config_updates: opts.config_updates,
                    ..Default::default()
                },
            }),
            harness,
            pool,
            latency: Mutex::new(opts.latency),
            lookup_route: opts.lookup_route,
        });
        let server = serve(bind, router(shared.clone())).await?;
        tracing::info!(addr = %server.addr(), "Laravel sandbox listening");
        Ok(LaravelSandbox { shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://IP:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Queues `fault` for the next `times` requests of `route`
    /// (`"POST /api/invoices/{id}/submit"`, or `"*"` for any route).
    pub fn inject(&self, route: &str, fault: Fault, times: u32) {
        self.shared.harness.inject(route, fault, times);
    }

    pub fn clear_faults(&self) {
        self.shared.harness.clear_faults();
    }

    /// From now on, API requests fault at random as `spec` says (replacing
    /// earlier random faults; queued faults still come first). The error
    /// says what is wrong with `spec`.
    pub fn inject_random(&self, spec: RandomFaults) -> Result<(), String> {
        self.shared.harness.inject_random(spec)
    }

    /// Stops the random faults.
    pub fn clear_random(&self) {
        self.shared.harness.clear_random();
    }

    /// Faults injected at random so far, by kind (`"status"`, `"drop"`,
    /// ...); also in the stats as `faults_injected.random`.
    pub fn random_faults_injected(&self) -> BTreeMap<String, u64> {
        self.shared.harness.random_injected()
    }

    /// What the worker pool did: requests served, in flight, queue, busy
    /// time ([`PoolStats::utilisation`] gives the fraction of the pool used;
    /// compare sales a second with [`LatencyProfile::ceiling_per_sec`]).
    pub fn pool_stats(&self) -> PoolStats {
        self.shared.pool.stats()
    }

    /// The current service times.
    pub fn latency(&self) -> LatencyProfile {
        *lock(&self.shared.latency)
    }

    /// Changes the service times (requests already served keep theirs).
    pub fn set_latency(&self, latency: LatencyProfile) {
        *lock(&self.shared.latency) = latency;
        self.shared.pool.set_service_times(latency.route_times());
    }

    /// The largest invoice id in use (every vendor's), `None` when empty.
    pub fn highest_invoice_id(&self) -> Option<u64> {
        self.shared.state().invoices.keys().next_back().copied()
    }

    /// Adds `count` invoices owned by another vendor (another shop on the
    /// same backend: its own vendor id and organisation, status
    /// `submitted`, numbers `OTHER-<vendor>-<id>`), taking the next ids;
    /// returns them.
    pub fn seed_foreign_invoices(&self, count: usize) -> Vec<u64> {
        seed_foreign(&self.shared, count)
    }

    /// Every token answers 401 from now on (an operator's revocation).
    pub fn revoke_all_tokens(&self) {
        self.shared.state().tokens.clear();
    }

    /// Sanctum `expiration`; applies to existing tokens too (from their
    /// creation), as in Sanctum.
    pub fn set_token_lifetime(&self, lifetime: Option<Duration>) {
        self.shared.state().token_lifetime = lifetime;
    }

    pub fn set_advertise_expiry(&self, on: bool) {
        self.shared.state().advertise_expiry = on;
    }

    /// Enables or disables a vendor (unknown e-mail: no effect).
    pub fn set_user_active(&self, email: &str, active: bool) {
        if let Some(u) = self
            .shared
            .state()
            .users
            .iter_mut()
            .find(|u| u.email == email)
        {
            u.active = active;
        }
    }

    pub fn set_jofotara_configured(&self, on: bool) {
        self.shared.state().jofotara_configured = on;
    }

    /// The next submits answer these statuses (in order) instead of
    /// `submitted`.
    pub fn queue_submit_outcomes(&self, outcomes: &[&str]) {
        self.shared
            .state()
            .submit_outcomes
            .extend(outcomes.iter().map(|s| s.to_string()));
    }

    /// Requests received on `route`, e.g. `"POST /api/vendors/login"`.
    pub fn requests(&self, route: &str) -> u64 {
        self.shared.harness.requests(route)
    }

    /// Responses with `status` actually sent on `route`.
    pub fn responses(&self, route: &str, status: u16) -> u64 {
        self.shared.harness.responses(route, status)
    }

    /// The same document as `GET /__sandbox/stats`.
    pub fn stats_json(&self) -> Value {
        stats_json(&self.shared)
    }

    pub fn logins_ok(&self) -> u64 {
        self.shared.state().logins_ok
    }

    pub fn invoice_count(&self) -> usize {
        self.shared.state().invoices.len()
    }

    /// The invoice as `GET /api/invoices/{id}` shows it.
    pub fn invoice_by_number(&self, number: &str) -> Option<Value> {
        self.shared
            .state()
            .invoices
            .values()
            .find(|i| i.invoice_number == number)
            .map(invoice_full_json)
    }

    /// How many stored invoices carry `number` (exactly-once checks).
    pub fn invoices_with_number(&self, number: &str) -> usize {
        self.shared
            .state()
            .invoices
            .values()
            .filter(|i| i.invoice_number == number)
            .count()
    }

    /// The bytes `GET /api/invoices/{id}/pdf` serves.
    pub fn pdf_bytes(&self, id: u64) -> Option<Vec<u8>> {
        self.shared.state().invoices.get(&id).map(invoice_pdf)
    }

    /// The connector channel's key (`X-API-Key`).
    pub fn api_key(&self) -> String {
        self.shared.state().connector.api_key.clone()
    }

    /// Changes the connector channel's key: the old one answers 401.
    pub fn set_api_key(&self, key: &str) {
        self.shared.state().connector.api_key = key.to_string();
    }

    /// What the next heartbeats answer in `config_updates`: a JSON object
    /// (`{}` is sent as `[]`, as PHP does); the error says what is wrong.
    pub fn set_config_updates(&self, updates: Value) -> Result<(), String> {
        match updates {
            Value::Object(m) => {
                self.shared.state().connector.config_updates = m;
                Ok(())
            }
            other => Err(format!("config_updates must be a JSON object, not {other}")),
        }
    }

    /// Every heartbeat body accepted so far, as sent, oldest first.
    pub fn heartbeats(&self) -> Vec<Value> {
        self.shared.state().connector.heartbeats.clone()
    }

    /// The transactions accepted (one per `transaction_id`), oldest first.
    pub fn connector_transactions(&self) -> Vec<Value> {
        self.shared.state().connector.transactions.clone()
    }

    /// Stops the server and closes every connection.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap as RHeaders;

    const LOGIN: &str = "POST /api/vendors/login";
    const CREATE: &str = "POST /api/invoices";
    const SUBMIT: &str = "POST /api/invoices/{id}/submit";

    struct T {
        sb: LaravelSandbox,
        c: reqwest::Client,
        base: String,
    }

    fn json_client() -> reqwest::Client {
        let mut h = RHeaders::new();
        h.insert("accept", "application/json".parse().unwrap());
        reqwest::Client::builder()
            .no_proxy()
            .default_headers(h)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    async fn start_with(opts: LaravelSandboxOptions) -> T {
        let sb = LaravelSandbox::start("127.0.0.1:0".parse().unwrap(), opts)
            .await
            .unwrap();
        let base = sb.base_url();
        T {
            sb,
            c: json_client(),
            base,
        }
    }

    async fn start() -> T {
        start_with(LaravelSandboxOptions::default()).await
    }

    impl T {
        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        async fn login_raw(&self, body: Value) -> (u16, Value) {
            let r = self
                .c
                .post(self.url("/api/vendors/login"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        }

        async fn login(&self) -> String {
            let (s, v) = self
                .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
                .await;
            assert_eq!(s, 200, "{v}");
            v["token"].as_str().unwrap().to_string()
        }

        async fn get(&self, token: &str, path: &str) -> reqwest::Response {
            self.c
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }

        async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
            let r = self.get(token, path).await;
            (r.status().as_u16(), r.json().await.unwrap())
        }

        async fn post_json(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
            let r = self
                .c
                .post(self.url(path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        }

        async fn create(&self, token: &str, number: &str) -> (u16, Value) {
            self.post_json(
                token,
                "/api/invoices",
                json!({
                    "invoice_number": number,
                    "customer_name": "Walk-in customer",
                    "items": [{"description": "Coffee beans 1kg", "quantity": 2, "price": 50}],
                }),
            )
            .await
        }
    }

    #[tokio::test]
    async fn login_ok_invalid_and_validation() {
        let t = start().await;
        let (s, v) = t
            .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
            .await;
        assert_eq!(s, 200);
        let user = &v["user"];
        assert_eq!(user["id"], 2);
        assert_eq!(user["name"], "Sandbox Vendor");
        assert_eq!(user["email"], SANDBOX_EMAIL);
        assert_eq!(user["organization_id"], 1);
        assert_eq!(user["is_active"], true);
        assert!(user["created_at"].as_str().unwrap().ends_with(".000000Z"));
        assert!(v.get("expires_at").is_none());

        // Sanctum token: <id>|<40 alnum><crc32 of them, 8 lowercase hex>
        let token = v["token"].as_str().unwrap();
        let (id, secret) = token.split_once('|').unwrap();
        assert_eq!(id, "1");
        assert_eq!(secret.len(), 48);
        let (entropy, crc) = secret.split_at(40);
        assert!(entropy.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(crc, format!("{:08x}", crc32fast::hash(entropy.as_bytes())));
        // every login a new token, ids increment, old ones stay valid
        let second = t.login().await;
        assert!(second.starts_with("2|"));
        assert_eq!(t.get(token, "/api/vendors/profile").await.status(), 200);

        for bad in [
            json!({"email": SANDBOX_EMAIL, "password": "wrong"}),
            json!({"email": "nobody@sandbox.test", "password": SANDBOX_PASSWORD}),
        ] {
            let (s, v) = t.login_raw(bad).await;
            assert_eq!(s, 401);
            assert_eq!(v, json!({"message": "Invalid credentials"}));
        }

        let (s, v) = t.login_raw(json!({"email": SANDBOX_EMAIL})).await;
        assert_eq!(s, 422);
        assert_eq!(
            v,
            json!({"message": "The password field is required.",
                   "errors": {"password": ["The password field is required."]}})
        );
        let (s, v) = t
            .login_raw(json!({"email": "  not-an-email ", "password": ""}))
            .await;
        assert_eq!(s, 422);
        assert_eq!(
            v["message"],
            "The email field must be a valid email address. (and 1 more error)"
        );
        assert_eq!(
            v["errors"]["password"][0],
            "The password field is required."
        );
        // a body that is not JSON: validation of empty input
        let r =
            t.c.post(t.url("/api/vendors/login"))
                .header("content-type", "application/json")
                .body("{nope")
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 422);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["message"],
            "The email field is required. (and 1 more error)"
        );

        assert_eq!(t.sb.logins_ok(), 2);
        assert_eq!(t.sb.requests(LOGIN), 7);
        assert_eq!(t.sb.responses(LOGIN, 401), 2);
        assert_eq!(t.sb.responses(LOGIN, 422), 3);
    }

    #[tokio::test]
    async fn unauthenticated_tokens() {
        let t = start().await;
        let token = t.login().await;
        let (id, secret) = token.split_once('|').unwrap();
        let unauth = json!({"message": "Unauthenticated."});
        for bad in [
            format!("{id}|{}", "x".repeat(48)),
            format!("99|{secret}"),
            "garbage".to_string(),
            format!("a{id}|{secret}"),
        ] {
            assert_eq!(
                t.get_json(&bad, "/api/vendors/profile").await,
                (401, unauth.clone())
            );
        }
        let r = t.c.get(t.url("/api/invoices/1")).send().await.unwrap();
        assert_eq!(r.status(), 401);

        let (s, v) = t.get_json(&token, "/api/vendors/profile").await;
        assert_eq!((s, &v["email"]), (200, &json!(SANDBOX_EMAIL)));
        // auth comes before the model lookup
        t.sb.revoke_all_tokens();
        assert_eq!(
            t.get_json(&token, "/api/invoices/999").await,
            (401, unauth.clone())
        );
        assert_eq!(t.create(&token, "X").await, (401, unauth));
        assert_eq!(t.sb.invoice_count(), 0);
        let fresh = t.login().await;
        assert_eq!(t.get(&fresh, "/api/vendors/profile").await.status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn token_expiry_on_the_paused_clock() {
        let t = start_with(LaravelSandboxOptions {
            token_lifetime: Some(Duration::from_secs(3600)),
            ..Default::default()
        })
        .await;
        let token = t.login().await;
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
        tokio::time::advance(Duration::from_secs(2)).await;
        let (s, v) = t.get_json(&token, "/api/vendors/profile").await;
        assert_eq!((s, v), (401, json!({"message": "Unauthenticated."})));
        let token2 = t.login().await;
        assert_eq!(t.get(&token2, "/api/vendors/profile").await.status(), 200);
        // the setting applies to existing tokens, like Sanctum's expiration
        t.sb.set_token_lifetime(None);
        assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
        t.sb.set_token_lifetime(Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(t.get(&token2, "/api/vendors/profile").await.status(), 401);
        assert_eq!(t.sb.stats_json()["tokens_active"], 0);
    }

    #[tokio::test]
    async fn advertised_expiry() {
        let t = start().await;
        t.sb.set_advertise_expiry(true);
        let (_, v) = t
            .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
            .await;
        assert!(
            v.get("expires_at").is_none(),
            "no lifetime, nothing to advertise"
        );
        t.sb.set_token_lifetime(Some(Duration::from_secs(7200)));
        let (_, v) = t
            .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
            .await;
        let at = DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
        let left = at.with_timezone(&Utc) - Utc::now();
        assert!(left > chrono::Duration::seconds(7100) && left <= chrono::Duration::seconds(7200));
        assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    }

    #[tokio::test]
    async fn create_show_status_and_duplicate() {
        let t = start().await;
        let token = t.login().await;
        let (s, v) = t
            .post_json(
                &token,
                "/api/invoices",
                json!({
                    "invoice_number": "  INV-1  ",
                    "customer_name": "Ahmad",
                    "customer_email": "ahmad@example.jo",
                    "invoice_date": "2001-01-01",
                    "currency": "USD",
                    "items": [
                        {"description": "Coffee", "quantity": 2, "price": 50, "tax": 99},
                        {"description": "Tea", "quantity": "3", "price": "0.335"},
                    ],
                }),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "invoice_number",
                "customer_name",
                "customer_email",
                "customer_phone",
                "uuid",
                "vendor_id",
                "organization_id",
                "invoice_date",
                "total_amount",
                "tax_amount",
                "updated_at",
                "created_at"
            ]
        );
        assert_eq!(v["id"], 1);
        assert_eq!(v["invoice_number"], "INV-1");
        assert_eq!(v["customer_phone"], Value::Null);
        assert_eq!(v["vendor_id"], 2);
        assert_eq!(v["organization_id"], 1);
        let today = Utc::now().format("%Y-%m-%dT00:00:00.000000Z").to_string();
        assert_eq!(v["invoice_date"], json!(today));
        // 2*50 = 100 + 16.00; 3*0.335 = 1.005, tax 0.1608 -> 0.16
        assert_eq!(v["tax_amount"], "16.16");
        assert_eq!(v["total_amount"], "117.17");
        assert_eq!(
            uuid::Uuid::parse_str(v["uuid"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );

        let (s, full) = t.get_json(&token, "/api/invoices/1").await;
        assert_eq!(s, 200);
        assert_eq!(full["status"], "draft");
        assert_eq!(full["uuid"], v["uuid"]);
        let items = full["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["invoice_id"], 1);
        assert_eq!(items[0]["item_name"], "Coffee");
        assert_eq!(items[0]["quantity"], 2);
        assert_eq!(items[0]["unit_price"], "50.00");
        assert_eq!(items[0]["tax"], "16.00");
        assert_eq!(items[0]["total"], "116.00");
        assert_eq!(items[1]["quantity"], 3);
        assert_eq!(items[1]["unit_price"], "0.34");
        assert_eq!(items[1]["tax"], "0.16");
        assert_eq!(items[1]["total"], "1.17");
        assert_eq!(t.sb.invoice_by_number("INV-1").unwrap(), full);

        assert_eq!(
            t.get_json(&token, "/api/invoices/status/1").await,
            (200, json!({"status": "draft"}))
        );
        for missing in ["/api/invoices/status/99", "/api/invoices/99"] {
            assert_eq!(
                t.get_json(&token, missing).await,
                (
                    404,
                    json!({"message": "No query results for model [App\\Models\\Invoice] 99."})
                )
            );
        }
        let (s, v) = t.get_json(&token, "/api/invoices/abc").await;
        assert_eq!(s, 404);
        assert_eq!(
            v["message"],
            "No query results for model [App\\Models\\Invoice] abc."
        );

        // the simple case of the contract, and ids shared by all invoices
        let (s, v) = t.create(&token, "INV-2").await;
        assert_eq!(s, 201);
        assert_eq!(
            (&v["id"], &v["total_amount"], &v["tax_amount"]),
            (&json!(2), &json!("116.00"), &json!("16.00"))
        );
        assert!(v.get("status").is_none() && v.get("items").is_none());

        let (s, v) = t.create(&token, "INV-1").await;
        assert_eq!(s, 422);
        assert_eq!(
            v,
            json!({"message": "The invoice number has already been taken.",
                   "errors": {"invoice_number": ["The invoice number has already been taken."]}})
        );
        assert_eq!(t.sb.invoices_with_number("INV-1"), 1);
        assert_eq!(t.sb.invoice_count(), 2);
        assert_eq!(t.sb.responses(CREATE, 201), 2);
        assert_eq!(t.sb.responses(CREATE, 422), 1);
        assert_eq!(t.sb.requests("GET /api/invoices/{id}"), 3);
        assert_eq!(t.sb.requests("GET /api/invoices/status/{id}"), 2);
    }

    #[tokio::test]
    async fn validation_messages() {
        let t = start().await;
        let token = t.login().await;
        let (s, v) = t.post_json(&token, "/api/invoices", json!({})).await;
        assert_eq!(s, 422);
        assert_eq!(
            v["message"],
            "The invoice number field is required. (and 2 more errors)"
        );
        assert_eq!(
            v["errors"],
            json!({
                "invoice_number": ["The invoice number field is required."],
                "customer_name": ["The customer name field is required."],
                "items": ["The items field is required."],
            })
        );
        let (_, v) = t
            .post_json(
                &token,
                "/api/invoices",
                json!({"invoice_number": 5, "customer_name": "A", "customer_email": "nope", "items": []}),
            )
            .await;
        assert_eq!(
            v["errors"],
            json!({
                "invoice_number": ["The invoice number field must be a string."],
                "customer_email": ["The customer email field must be a valid email address."],
                "items": ["The items field is required."],
            })
        );
        let (_, v) = t
            .post_json(
                &token,
                "/api/invoices",
                json!({"invoice_number": "N", "customer_name": "A", "items": "lots"}),
            )
            .await;
        assert_eq!(
            v,
            json!({"message": "The items field must be an array.",
                   "errors": {"items": ["The items field must be an array."]}})
        );
        let (s, v) = t
            .post_json(
                &token,
                "/api/invoices",
                json!({"invoice_number": "N", "customer_name": "A", "customer_email": "",
                "items": [
                    {"description": " ", "quantity": 1.5, "price": "abc"},
                    {"description": "ok", "quantity": 0, "price": -1},
                    {"description": "ok", "quantity": "x", "price": null},
                    7,
                ]}),
            )
            .await;
        assert_eq!(s, 422);
        assert_eq!(
            v["errors"],
            json!({
                "items.0.description": ["The items.0.description field is required."],
                "items.3.description": ["The items.3.description field is required."],
                "items.0.quantity": ["The items.0.quantity field must be an integer."],
                "items.1.quantity": ["The items.1.quantity field must be at least 1."],
                "items.2.quantity": ["The items.2.quantity field must be an integer."],
                "items.3.quantity": ["The items.3.quantity field is required."],
                "items.0.price": ["The items.0.price field must be a number."],
                "items.1.price": ["The items.1.price field must be at least 0."],
                "items.2.price": ["The items.2.price field is required."],
                "items.3.price": ["The items.3.price field is required."],
            })
        );
        assert_eq!(
            v["message"],
            "The items.0.description field is required. (and 9 more errors)"
        );
        // error order in the object is rule order
        let keys: Vec<&String> = v["errors"].as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "items.0.description");
        assert_eq!(keys[1], "items.3.description");
        assert_eq!(keys[2], "items.0.quantity");
        assert_eq!(t.sb.invoice_count(), 0);

        // JSON without a JSON content type is not read: all fields missing
        let r = t
            .c
            .post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .body(r#"{"invoice_number":"N","customer_name":"A","items":[{"description":"d","quantity":1,"price":1}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
    }

    #[tokio::test]
    async fn submit_outcomes_disabled_and_unconfigured() {
        let t = start().await;
        let token = t.login().await;
        t.create(&token, "S-1").await;
        let submit = |id: u64| {
            let t = &t;
            let token = token.clone();
            async move {
                t.post_json(&token, &format!("/api/invoices/{id}/submit"), json!({}))
                    .await
            }
        };
        assert_eq!(submit(1).await, (200, json!({"status": "submitted"})));
        assert_eq!(
            t.sb.invoice_by_number("S-1").unwrap()["status"],
            "submitted"
        );
        t.sb.queue_submit_outcomes(&["rejected", "error"]);
        assert_eq!(submit(1).await, (200, json!({"status": "rejected"})));
        assert_eq!(
            t.get_json(&token, "/api/invoices/status/1").await.1,
            json!({"status": "rejected"})
        );
        assert_eq!(submit(1).await, (200, json!({"status": "error"})));
        assert_eq!(submit(1).await, (200, json!({"status": "submitted"})));
        assert_eq!(
            submit(42).await,
            (
                404,
                json!({"message": "No query results for model [App\\Models\\Invoice] 42."})
            )
        );

        t.sb.set_user_active(SANDBOX_EMAIL, false);
        // a disabled vendor still logs in and reads; only submit refuses
        let token2 = t.login().await;
        assert_eq!(t.get(&token2, "/api/invoices/1").await.status(), 200);
        assert_eq!(
            submit(1).await,
            (
                403,
                json!({"message": "Your account is disabled. Please contact admin."})
            )
        );
        t.sb.set_user_active(SANDBOX_EMAIL, true);
        t.sb.set_jofotara_configured(false);
        assert_eq!(
            submit(1).await,
            (
                500,
                json!({"message": "JoFotara integration is not configured for this organization."})
            )
        );
        t.sb.set_jofotara_configured(true);
        assert_eq!(submit(1).await.0, 200);
        assert_eq!(t.sb.requests(SUBMIT), 8);
        assert_eq!(t.sb.responses(SUBMIT, 200), 5);
        assert_eq!(
            t.sb.stats_json()["invoices_by_status"],
            json!({"submitted": 1})
        );
    }

    #[tokio::test]
    async fn pdf_and_xml_downloads() {
        let t = start().await;
        let token = t.login().await;
        let (_, v) = t
            .post_json(
                &token,
                "/api/invoices",
                json!({
                    "invoice_number": "INV-<&>",
                    "customer_name": "Café \"Amman\" & Sons",
                    "customer_phone": "+962 6 000 0000",
                    "items": (0..12).map(|i| json!({"description": format!("Item {i} (large)"), "quantity": i + 1, "price": "1.10"})).collect::<Vec<_>>(),
                }),
            )
            .await;
        let id = v["id"].as_u64().unwrap();
        let r = t.get(&token, &format!("/api/invoices/{id}/pdf")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/pdf");
        assert_eq!(
            r.headers()["content-disposition"],
            "attachment; filename=\"invoice_INV-<&>.pdf\""
        );
        let body = r.bytes().await.unwrap();
        assert!(body.starts_with(b"%PDF-1.4"));
        assert!(body.len() > 4096, "{} bytes", body.len());
        assert_eq!(body.to_vec(), t.sb.pdf_bytes(id).unwrap());
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("Item 11 \\(large\\)"));
        assert!(text.contains("(Customer:         Caf? \"Amman\" & Sons) Tj"));
        // deterministic, and independent of the status
        t.post_json(&token, &format!("/api/invoices/{id}/submit"), json!({}))
            .await;
        let again = t.get(&token, &format!("/api/invoices/{id}/pdf")).await;
        assert_eq!(again.bytes().await.unwrap(), body);
        assert!(t.sb.pdf_bytes(99).is_none());

        let r = t.get(&token, &format!("/api/invoices/{id}/xml")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/xml");
        assert_eq!(
            r.headers()["content-disposition"],
            "attachment; filename=\"invoice_INV-<&>.xml\""
        );
        let xml = r.text().await.unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(xml.contains("<cbc:ID>INV-&lt;&amp;&gt;</cbc:ID>"));
        assert!(xml.contains(&format!(
            "<cbc:UUID>{}</cbc:UUID>",
            v["uuid"].as_str().unwrap()
        )));
        assert!(xml.contains("Café &quot;Amman&quot; &amp; Sons"));
        assert_eq!(xml.matches("<cac:InvoiceLine>").count(), 12);
        let tax = v["tax_amount"].as_str().unwrap();
        assert!(xml.contains(&format!(
            "<cbc:TaxAmount currencyID=\"JOD\">{tax}</cbc:TaxAmount>\n  </cac:TaxTotal>"
        )));
        assert!(xml.contains(&format!(
            "<cbc:PayableAmount currencyID=\"JOD\">{}</cbc:PayableAmount>",
            v["total_amount"].as_str().unwrap()
        )));
        assert!(xml.trim_end().ends_with("</Invoice>"));
        assert_eq!(t.get(&token, "/api/invoices/99/xml").await.status(), 404);
    }

    #[tokio::test]
    async fn laravel_answers_without_accept_json() {
        let t = start().await;
        let token = t.login().await;
        let plain = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = plain
            .get(t.url("/api/vendors/profile"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(
            r.headers()["location"],
            format!("{}/login", t.base).as_str()
        );
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(r.text().await.unwrap().contains("Redirecting to"));

        let r = plain
            .post(t.url("/api/vendors/login"))
            .header("accept", "text/html")
            .header("referer", "http://shop.example/form")
            .json(&json!({"email": SANDBOX_EMAIL}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], "http://shop.example/form");
        let r = plain
            .post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], t.base.as_str());

        // not found: an HTML page; success and controller answers: JSON anyway
        let r = plain
            .get(t.url("/api/invoices/5"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let r = plain
            .post(t.url("/api/vendors/login"))
            .json(&json!({"email": SANDBOX_EMAIL, "password": "bad"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.json::<Value>().await.unwrap()["message"],
            "Invalid credentials"
        );
        let r = plain
            .get(t.url("/api/vendors/profile"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["id"], 2);
        // an XHR accepting anything counts as expecting JSON
        let r = plain
            .get(t.url("/api/vendors/profile"))
            .header("x-requested-with", "XMLHttpRequest")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }

    #[tokio::test]
    async fn unknown_routes_and_methods() {
        let t = start().await;
        let (s, v) = t.get_json("x", "/api/xyz").await;
        assert_eq!(
            (s, v),
            (
                404,
                json!({"message": "The route api/xyz could not be found."})
            )
        );
        let (s, v) = t.get_json("x", "/api/invoices").await;
        assert_eq!(s, 405);
        assert_eq!(
            v,
            json!({"message": "The GET method is not supported for route api/invoices. Supported methods: POST."})
        );
        let (s, v) = t.post_json("x", "/api/invoices/1", json!({})).await;
        assert_eq!(s, 405);
        assert_eq!(
            v["message"],
            "The POST method is not supported for route api/invoices/1. Supported methods: GET, HEAD."
        );
        assert_eq!(t.sb.responses("GET /api/invoices", 405), 1);
        assert_eq!(t.sb.responses("GET /api/xyz", 404), 1);
    }

    #[tokio::test]
    async fn status_faults() {
        let t = start().await;
        t.sb.inject(
            LOGIN,
            Fault::Status {
                status: 429,
                retry_after: Some(2),
                html: false,
            },
            1,
        );
        let r =
            t.c.post(t.url("/api/vendors/login"))
                .json(&json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"message": "Too Many Attempts."})
        );
        assert_eq!(t.sb.logins_ok(), 0);
        let token = t.login().await;

        t.sb.inject(
            CREATE,
            Fault::Status {
                status: 500,
                retry_after: None,
                html: false,
            },
            1,
        );
        t.sb.inject(
            CREATE,
            Fault::Status {
                status: 503,
                retry_after: None,
                html: false,
            },
            1,
        );
        t.sb.inject(
            CREATE,
            Fault::Status {
                status: 502,
                retry_after: None,
                html: true,
            },
            1,
        );
        assert_eq!(
            t.create(&token, "F-1").await,
            (500, json!({"message": "Server Error"}))
        );
        assert_eq!(
            t.create(&token, "F-1").await,
            (503, json!({"message": "Service Unavailable"}))
        );
        let r =
            t.c.post(t.url("/api/invoices"))
                .bearer_auth(&token)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 502);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(r.text().await.unwrap().starts_with("<!DOCTYPE html>"));
        assert_eq!(t.sb.invoice_count(), 0);
        assert_eq!(t.create(&token, "F-1").await.0, 201);
        assert_eq!(t.sb.requests(CREATE), 4);
        assert_eq!(t.sb.responses(CREATE, 500), 1);
        assert_eq!(t.sb.responses(CREATE, 201), 1);
    }

    #[tokio::test]
    async fn drop_faults() {
        let t = start().await;
        let token = t.login().await;
        t.sb.inject(CREATE, Fault::Drop, 1);
        let e =
            t.c.post(t.url("/api/invoices"))
                .bearer_auth(&token)
                .json(&json!({"invoice_number": "D-1", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}))
                .send()
                .await;
        assert!(e.is_err(), "{e:?}");
        assert_eq!(t.sb.invoice_count(), 0, "Drop: nothing happens server-side");

        t.sb.inject(CREATE, Fault::DropAfter, 1);
        let e =
            t.c.post(t.url("/api/invoices"))
                .bearer_auth(&token)
                .json(&json!({"invoice_number": "D-1", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}))
                .send()
                .await;
        assert!(e.is_err(), "{e:?}");
        assert_eq!(t.sb.invoices_with_number("D-1"), 1, "DropAfter: committed");
        // the retry learns it through the 422
        let (s, v) = t.create(&token, "D-1").await;
        assert_eq!(s, 422);
        assert_eq!(
            v["errors"]["invoice_number"][0],
            "The invoice number has already been taken."
        );

        t.sb.inject(SUBMIT, Fault::DropAfter, 1);
        let e =
            t.c.post(t.url("/api/invoices/1/submit"))
                .bearer_auth(&token)
                .send()
                .await;
        assert!(e.is_err());
        assert_eq!(
            t.get_json(&token, "/api/invoices/status/1").await.1,
            json!({"status": "submitted"})
        );
        assert_eq!(t.sb.requests(CREATE), 3);
        assert_eq!(t.sb.responses(CREATE, 201), 0);
        assert_eq!(t.sb.responses(CREATE, 422), 1);
        assert_eq!(t.sb.stats_json()["routes"][CREATE]["unanswered"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_fault_on_the_paused_clock() {
        let t = start().await;
        let token = t.login().await;
        t.sb.inject("*", Fault::Delay(Duration::from_secs(20)), 1);
        let started = Instant::now();
        let r = t.get(&token, "/api/vendors/profile").await;
        assert_eq!(r.status(), 200);
        assert!(started.elapsed() >= Duration::from_secs(20));
        // a client timeout shorter than the delay fires
        t.sb.inject(SUBMIT, Fault::Delay(Duration::from_secs(60)), 1);
        t.create(&token, "SLOW").await;
        let e =
            t.c.post(t.url("/api/invoices/1/submit"))
                .bearer_auth(&token)
                .timeout(Duration::from_secs(30))
                .send()
                .await;
        assert!(e.unwrap_err().is_timeout());
    }

    #[tokio::test]
    async fn control_api_over_http() {
        let t = start().await;
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let ctl = |p: &str| t.url(&format!("/__sandbox{p}"));
        let post = |p: &str, body: Value| c.post(ctl(p)).json(&body).send();

        let r = post("/faults", json!({"route": "POST /api/vendors/login", "kind": "status", "status": 503, "retry_after": 5, "times": 2})).await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["faults_pending"][0]["remaining"], 2);
        for bad in [
            json!({"route": "POST /api/vendors/login", "kind": "boom"}),
            json!({"route": "login", "kind": "drop"}),
            json!({"route": "*", "kind": "delay"}),
            json!({"route": "*", "kind": "status", "status": "500"}),
        ] {
            let r = post("/faults", bad.clone()).await.unwrap();
            assert_eq!(r.status(), 400, "{bad}");
            assert!(
                r.json::<Value>().await.unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .len()
                    > 10
            );
        }
        let (s, _) = t
            .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
            .await;
        assert_eq!(s, 503);
        let r = c.delete(ctl("/faults")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let token = t.login().await;

        let r = post(
            "/settings",
            json!({"token_lifetime_secs": 60, "advertise_expiry": true}),
        )
        .await
        .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["token_lifetime_secs"], 60);
        let (_, v) = t
            .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
            .await;
        assert!(v["expires_at"].is_string());
        let r = post(
            "/settings",
            json!({"token_lifetime_secs": null, "jofotara_configured": false}),
        )
        .await
        .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (&v["token_lifetime_secs"], &v["jofotara_configured"]),
            (&Value::Null, &json!(false))
        );
        assert_eq!(
            post("/settings", json!({"advertise_expiry": "yes"}))
                .await
                .unwrap()
                .status(),
            400
        );
        assert_eq!(
            post("/settings", json!({"lifetime": 5}))
                .await
                .unwrap()
                .status(),
            400
        );
        t.create(&token, "C-1").await;
        let (s, _) = t
            .post_json(&token, "/api/invoices/1/submit", json!({}))
            .await;
        assert_eq!(s, 500);
        post("/settings", json!({"jofotara_configured": true}))
            .await
            .unwrap();

        let r = post("/submit-outcomes", json!({"outcomes": ["rejected"]}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            post("/submit-outcomes", json!({"outcomes": [1]}))
                .await
                .unwrap()
                .status(),
            400
        );
        assert_eq!(
            t.post_json(&token, "/api/invoices/1/submit", json!({}))
                .await
                .1,
            json!({"status": "rejected"})
        );

        let r = post(
            "/users/active",
            json!({"email": SANDBOX_EMAIL, "active": false}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            t.post_json(&token, "/api/invoices/1/submit", json!({}))
                .await
                .0,
            403
        );
        assert_eq!(
            post("/users/active", json!({"email": "x@y.z", "active": true}))
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            post("/users/active", json!({"email": SANDBOX_EMAIL}))
                .await
                .unwrap()
                .status(),
            400
        );
        post(
            "/users/active",
            json!({"email": SANDBOX_EMAIL, "active": true}),
        )
        .await
        .unwrap();

        let r = c.post(ctl("/tokens/revoke")).send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 2);
        assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 401);

        let stats: Value = c
            .get(ctl("/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["routes"][LOGIN]["requests"], 3);
        assert_eq!(stats["routes"][LOGIN]["responses"]["503"], 1);
        assert_eq!(stats["routes"][LOGIN]["responses"]["200"], 2);
        assert_eq!(stats["routes"][SUBMIT]["responses"]["403"], 1);
        assert_eq!(stats["statuses"]["401"], 1);
        assert_eq!(stats["logins_ok"], 2);
        assert_eq!(stats["tokens_issued"], 2);
        assert_eq!(stats["invoices"], 1);
        assert_eq!(stats["tokens_active"], 0);
        assert!(stats["routes"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.contains("__sandbox")));
        assert_eq!(stats, t.sb.stats_json());

        assert_eq!(
            c.post(ctl("/stats/reset")).send().await.unwrap().status(),
            200
        );
        let stats: Value = c
            .get(ctl("/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["requests_total"], 0);
        assert_eq!(stats["logins_ok"], 0);
        assert_eq!(stats["invoices"], 1);
        // control routes are never faulted
        t.sb.inject("*", Fault::Drop, 10);
        assert_eq!(c.get(ctl("/stats")).send().await.unwrap().status(), 200);
        t.sb.clear_faults();
        t.sb.shutdown().await;
    }

    const PROFILE: &str = "GET /api/vendors/profile";
    const LOOKUP: &str = "GET /api/invoices/by-number/{invoice_number}";

    #[tokio::test]
    async fn totals_follow_the_shared_tax_rule() {
        let t = start().await;
        let token = t.login().await;
        let lines = [
            ("3", "0.335"),
            ("1", "0.03125"),
            ("7", "1.005"),
            ("2", "15.5"),
        ];
        let items: Vec<Value> = lines
            .iter()
            .map(|(q, p)| json!({"description": "x", "quantity": q, "price": p}))
            .collect();
        let (s, v) = t
            .post_json(
                &token,
                "/api/invoices",
                json!({"invoice_number": "TAX-1", "customer_name": "A", "items": items}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let expected = crate::tax::totals(lines.iter().map(|(q, p)| (d(q), d(p)))).unwrap();
        assert_eq!(v["tax_amount"], json!(money(expected.tax)));
        assert_eq!(v["total_amount"], json!(money(expected.total)));
        let full = t.sb.invoice_by_number("TAX-1").unwrap();
        for (item, (q, p)) in full["items"].as_array().unwrap().iter().zip(lines) {
            let tax = crate::tax::line_tax(d(q) * d(p)).unwrap();
            assert_eq!(item["tax"], json!(money(tax)));
        }
        assert_eq!(tax_percent(), "16");
    }

    #[test]
    fn latency_profiles() {
        let r = LatencyProfile::realistic();
        let ms = Duration::from_millis;
        assert_eq!(
            (r.login, r.create, r.submit, r.status, r.show, r.profile, r.pdf, r.xml),
            (
                ms(120),
                ms(30),
                ms(300),
                ms(15),
                ms(15),
                ms(10),
                ms(200),
                ms(30)
            )
        );
        assert_eq!(r.per_sale(), ms(530));
        let ceiling = r.ceiling_per_sec(REALISTIC_WORKERS).unwrap();
        assert!((ceiling - 8.0 / 0.53).abs() < 1e-9, "{ceiling}");
        let small = r.scaled(0.1);
        assert_eq!(
            (small.submit, small.status),
            (ms(30), Duration::from_micros(1500))
        );
        assert!(r.scaled(0.0).is_none());
        assert!(r.scaled(-2.0).is_none());
        assert!(r.scaled(f64::NAN).is_none());
        assert_eq!(r.scaled(f64::INFINITY).login, Duration::MAX);
        assert!(LatencyProfile::none().is_none());
        assert_eq!(LatencyProfile::none().ceiling_per_sec(8), None);
        assert_eq!(LatencyProfile::default(), LatencyProfile::none());
        let routes = r.route_times();
        assert!(routes.contains(&(LOOKUP.to_string(), ms(15))));
        assert!(routes.contains(&(SUBMIT.to_string(), ms(300))));
        assert_eq!(r.to_json()["pdf_us"], json!(200_000));

        assert_eq!(
            options_from_profile(" Realistic "),
            Ok((LatencyProfile::realistic(), Some(8)))
        );
        assert_eq!(
            options_from_profile("none"),
            Ok((LatencyProfile::none(), None))
        );
        let e = options_from_profile("fast").unwrap_err();
        assert!(e.contains("realistic") && e.contains("fast"), "{e}");
        let o = LaravelSandboxOptions::realistic_pool();
        assert_eq!(
            (o.latency, o.workers),
            (LatencyProfile::realistic(), Some(8))
        );
        assert!(!o.lookup_route && o.jofotara_configured);
        let d = LaravelSandboxOptions::default();
        assert_eq!(
            (d.latency, d.workers, d.lookup_route),
            (LatencyProfile::none(), None, false)
        );
    }

    #[tokio::test]
    async fn zero_workers_is_refused() {
        let e = LaravelSandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            LaravelSandboxOptions {
                workers: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[tokio::test(start_paused = true)]
    async fn worker_pool_bounds_concurrency_on_the_paused_clock() {
        let t = start_with(LaravelSandboxOptions {
            latency: LatencyProfile {
                profile: Duration::from_millis(100),
                ..LatencyProfile::none()
            },
            workers: Some(2),
            ..Default::default()
        })
        .await;
        let token = t.login().await;
        let base = t.sb.pool_stats();
        assert_eq!(
            (base.workers, base.served, base.in_flight, base.queued),
            (Some(2), 1, 0, 0),
            "the login went through a worker"
        );
        let started = Instant::now();
        let requests: Vec<_> = (0..6)
            .map(|_| {
                let req = t.c.get(t.url("/api/vendors/profile")).bearer_auth(&token);
                tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
            })
            .collect();
        for r in requests {
            assert_eq!(r.await.unwrap(), 200);
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        let p = t.sb.pool_stats();
        assert_eq!(p.max_in_flight, 2);
        assert_eq!((p.served, p.in_flight, p.queued), (7, 0, 0));
        assert!(p.max_queued >= 1, "{p:?}");
        assert!(p.busy >= Duration::from_millis(600), "{p:?}");
        // waits 0, 0, 100, 100, 200, 200 ms when the six arrive together
        assert!(p.queue_wait >= Duration::from_millis(500), "{p:?}");
        let u = p.utilisation(elapsed).unwrap();
        assert!(u > 0.5 && u <= 1.0, "{u}");

        // a fault answered without the handler takes no worker
        t.sb.inject(
            PROFILE,
            Fault::Status {
                status: 503,
                retry_after: None,
                html: false,
            },
            1,
        );
        assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 503);
        assert_eq!(t.sb.pool_stats().served, 7);

        let stats = t.sb.stats_json();
        let pool = &stats["pool"];
        assert_eq!(pool["workers"], 2);
        assert_eq!(pool["served"], 7);
        assert_eq!(pool["max_in_flight"], 2);
        assert_eq!(pool["latency"]["profile_us"], json!(100_000));
        assert_eq!(pool["per_sale_us"], json!(0));
        assert_eq!(pool["ceiling_sales_per_sec"], Value::Null);
        assert!(pool["busy_us"].as_u64().unwrap() >= 600_000);

        // the control API's reset zeroes the totals
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        c.post(t.url("/__sandbox/stats/reset"))
            .send()
            .await
            .unwrap();
        let p = t.sb.pool_stats();
        assert_eq!((p.served, p.max_in_flight, p.busy), (0, 0, Duration::ZERO));

        // the service times can change at run time
        t.sb.set_latency(LatencyProfile::none());
        let started = Instant::now();
        assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(t.sb.latency(), LatencyProfile::none());
    }

    #[tokio::test(start_paused = true)]
    async fn realistic_pool_ceiling_in_the_stats() {
        let t = start_with(LaravelSandboxOptions::realistic_pool()).await;
        let started = Instant::now();
        let token = t.login().await;
        assert!(started.elapsed() >= Duration::from_millis(120), "bcrypt");
        let started = Instant::now();
        let (s, v) = t.create(&token, "R-1").await;
        assert_eq!(s, 201);
        let id = v["id"].as_u64().unwrap();
        t.post_json(&token, &format!("/api/invoices/{id}/submit"), json!({}))
            .await;
        let pdf = t.get(&token, &format!("/api/invoices/{id}/pdf")).await;
        assert_eq!(pdf.status(), 200);
        pdf.bytes().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(530));
        let pool = &t.sb.stats_json()["pool"];
        assert_eq!(pool["workers"], 8);
        assert_eq!(pool["per_sale_us"], json!(530_000));
        let ceiling = pool["ceiling_sales_per_sec"].as_f64().unwrap();
        assert!((ceiling - 8.0 / 0.53).abs() < 1e-9);
        assert_eq!(pool["served"], 4);
        assert_eq!(pool["max_in_flight"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn queued_work_is_finished_when_the_client_hangs_up() {
        let t = start_with(LaravelSandboxOptions {
            latency: LatencyProfile {
                create: Duration::from_secs(2),
                ..LatencyProfile::none()
            },
            workers: Some(1),
            ..Default::default()
        })
        .await;
        let token = t.login().await;
        let e =
            t.c.post(t.url("/api/invoices"))
                .bearer_auth(&token)
                .timeout(Duration::from_secs(1))
                .json(&json!({"invoice_number": "GONE-1", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}))
                .send()
                .await;
        assert!(e.unwrap_err().is_timeout());
        assert_eq!(t.sb.invoice_count(), 0, "still in its service time");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(t.sb.invoices_with_number("GONE-1"), 1, "PHP ran to the end");
        assert_eq!(t.sb.pool_stats().served, 2);
        // the retry learns it through the 422
        assert_eq!(t.create(&token, "GONE-1").await.0, 422);
    }

    #[tokio::test(start_paused = true)]
    async fn hold_after_commits_before_answering() {
        let t = start().await;
        let token = t.login().await;
        t.sb.inject(CREATE, Fault::HoldAfter(Duration::from_secs(5)), 1);
        let started = Instant::now();
        let req =
            t.c.post(t.url("/api/invoices"))
                .bearer_auth(&token)
                .json(&json!({"invoice_number": "HOLD-1", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}));
        let pending = tokio::spawn(async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        });
        while t.sb.invoices_with_number("HOLD-1") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!pending.is_finished(), "committed, but not answered yet");
        assert_eq!(t.sb.responses(CREATE, 201), 0);
        let (s, v) = pending.await.unwrap();
        assert_eq!(s, 201);
        assert_eq!(v["invoice_number"], "HOLD-1");
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert_eq!(t.sb.responses(CREATE, 201), 1);

        // a client that gives up during the hold: the invoice stays
        t.sb.inject(CREATE, Fault::HoldAfter(Duration::from_secs(60)), 1);
        let e =
            t.c.post(t.url("/api/invoices"))
                .bearer_auth(&token)
                .timeout(Duration::from_secs(2))
                .json(&json!({"invoice_number": "HOLD-2", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}))
                .send()
                .await;
        assert!(e.unwrap_err().is_timeout());
        assert_eq!(t.sb.invoices_with_number("HOLD-2"), 1);
        assert_eq!(
            t.sb.stats_json()["faults_injected"]["planned"]["hold_after"],
            2
        );
    }

    #[tokio::test]
    async fn random_faults() {
        let t = start().await;
        let token = t.login().await;
        let s503 = Fault::Status {
            status: 503,
            retry_after: None,
            html: false,
        };
        // rate 1: every request on the listed routes faults
        t.sb.inject_random(RandomFaults {
            rate: 1.0,
            routes: vec![PROFILE.into(), CREATE.into()],
            kinds: vec![s503.clone()],
            seed: None,
        })
        .unwrap();
        for _ in 0..5 {
            assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 503);
        }
        assert_eq!(t.create(&token, "RF-1").await.0, 503);
        assert_eq!(t.get(&token, "/api/invoices/status/1").await.status(), 404);
        assert_eq!(t.sb.invoice_count(), 0);
        assert_eq!(
            t.sb.random_faults_injected(),
            BTreeMap::from([("status".to_string(), 6)])
        );
        assert_eq!(t.sb.stats_json()["faults_injected"]["random"]["status"], 6);
        assert_eq!(t.sb.stats_json()["random_faults"]["rate"], 1.0);

        // "*" and several kinds, all of them used
        t.sb.inject_random(RandomFaults {
            rate: 1.0,
            routes: vec!["*".into()],
            kinds: vec![s503.clone(), Fault::Drop],
            seed: Some(9),
        })
        .unwrap();
        let mut drops = 0;
        for _ in 0..40 {
            match t
                .c
                .get(t.url("/api/vendors/profile"))
                .bearer_auth(&token)
                .send()
                .await
            {
                Ok(r) => assert_eq!(r.status(), 503),
                Err(_) => drops += 1,
            }
        }
        assert!((1..40).contains(&drops), "{drops}");
        assert_eq!(t.sb.random_faults_injected()["drop"], drops);

        // seeded runs repeat
        let run = |seed: u64| {
            let t = &t;
            let token = token.clone();
            let kinds = vec![
                s503.clone(),
                Fault::Status {
                    status: 500,
                    retry_after: None,
                    html: false,
                },
            ];
            async move {
                t.sb.inject_random(RandomFaults {
                    rate: 0.5,
                    routes: vec!["*".into()],
                    kinds,
                    seed: Some(seed),
                })
                .unwrap();
                let mut statuses = Vec::new();
                for _ in 0..30 {
                    statuses.push(
                        t.get(&token, "/api/vendors/profile")
                            .await
                            .status()
                            .as_u16(),
                    );
                }
                statuses
            }
        };
        let first = run(1234).await;
        assert_eq!(run(1234).await, first);
        assert_ne!(run(4321).await, first);
        for s in [200, 500, 503] {
            assert!(first.contains(&s), "{first:?}");
        }

        // queued faults come first; clearing stops the random ones
        t.sb.inject(
            PROFILE,
            Fault::Status {
                status: 418,
                retry_after: None,
                html: false,
            },
            1,
        );
        assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 418);
        t.sb.clear_random();
        assert_eq!(t.sb.stats_json()["random_faults"], Value::Null);
        for _ in 0..10 {
            assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
        }
        let bad = RandomFaults {
            rate: 0.5,
            routes: vec![],
            kinds: vec![Fault::Drop],
            seed: None,
        };
        assert!(t.sb.inject_random(bad).is_err());
    }

    #[tokio::test]
    async fn lookup_route_by_number() {
        let t = start_with(LaravelSandboxOptions {
            lookup_route: true,
            ..Default::default()
        })
        .await;
        let token = t.login().await;
        for n in ["L-1", "L/2 x", "pdf", "by-number"] {
            assert_eq!(t.create(&token, n).await.0, 201, "{n}");
        }
        let (s, by_id) = t.get_json(&token, "/api/invoices/2").await;
        assert_eq!(s, 200, "GET /api/invoices/{{id}} still answers");
        let (s, v) = t
            .get_json(&token, "/api/invoices/by-number/L%2F2%20x")
            .await;
        assert_eq!((s, &v), (200, &by_id));
        assert_eq!(
            t.get_json(&token, "/api/invoices/by-number/pdf").await.1["id"],
            3
        );
        assert_eq!(
            t.get_json(&token, "/api/invoices/by-number/by-number")
                .await
                .1["id"],
            4
        );
        assert_eq!(
            t.get_json(&token, "/api/invoices/by-number/NOPE").await,
            (
                404,
                json!({"message": "No query results for model [App\\Models\\Invoice]."})
            )
        );
        assert_eq!(
            t.get_json("bad-token", "/api/invoices/by-number/L-1").await,
            (401, json!({"message": "Unauthenticated."}))
        );
        // the other invoice routes are not shadowed
        assert_eq!(t.get(&token, "/api/invoices/1/pdf").await.status(), 200);
        assert_eq!(t.get(&token, "/api/invoices/1/xml").await.status(), 200);
        assert_eq!(
            t.get_json(&token, "/api/invoices/status/1").await,
            (200, json!({"status": "draft"}))
        );
        assert_eq!(
            t.post_json(&token, "/api/invoices/1/submit", json!({}))
                .await,
            (200, json!({"status": "submitted"}))
        );
        assert_eq!(
            t.get_json(&token, "/api/invoices/by-number").await.1["message"],
            "No query results for model [App\\Models\\Invoice] by-number."
        );
        assert_eq!(t.sb.requests(LOOKUP), 5);
        assert_eq!(t.sb.responses(LOOKUP, 200), 3);
        assert_eq!(t.sb.requests("GET /api/invoices/{id}"), 2);

        // off by default: the real backend has no such route
        let t = start().await;
        let token = t.login().await;
        t.create(&token, "L-1").await;
        assert_eq!(
            t.get_json(&token, "/api/invoices/by-number/L-1").await,
            (
                404,
                json!({"message": "The route api/invoices/by-number/L-1 could not be found."})
            )
        );
    }

    #[tokio::test]
    async fn foreign_invoices_and_the_highest_id() {
        let t = start().await;
        let token = t.login().await;
        assert_eq!(t.sb.highest_invoice_id(), None);
        assert_eq!(t.sb.stats_json()["highest_invoice_id"], Value::Null);
        t.create(&token, "OWN-1").await;
        assert_eq!(t.sb.seed_foreign_invoices(3), vec![2, 3, 4]);
        assert_eq!(t.create(&token, "OWN-2").await.1["id"], 5);
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = c
            .post(t.url("/__sandbox/foreign-invoices"))
            .json(&json!({"count": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"ok": true, "ids": [6, 7], "highest_invoice_id": 7})
        );
        for bad in [
            json!({}),
            json!({"count": 0}),
            json!({"count": "2"}),
            json!({"n": 1}),
        ] {
            let r = c
                .post(t.url("/__sandbox/foreign-invoices"))
                .json(&bad)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{bad}");
        }
        assert_eq!(t.create(&token, "OWN-3").await.1["id"], 8);
        assert_eq!(t.sb.highest_invoice_id(), Some(8));
        assert_eq!(t.sb.stats_json()["highest_invoice_id"], 8);

        // an id scan that keeps only the caller's invoices
        let mut own = Vec::new();
        for id in 1..=t.sb.highest_invoice_id().unwrap() {
            let (s, v) = t.get_json(&token, &format!("/api/invoices/{id}")).await;
            assert_eq!(s, 200);
            if v["vendor_id"] == 2 {
                own.push(v["invoice_number"].as_str().unwrap().to_string());
            } else {
                assert_eq!(v["vendor_id"], 3);
                assert_eq!(v["organization_id"], 2);
                assert_eq!(v["status"], "submitted");
                assert!(v["invoice_number"]
                    .as_str()
                    .unwrap()
                    .starts_with("OTHER-3-"));
                let items = v["items"].as_array().unwrap();
                let tax = crate::tax::line_tax(
                    Decimal::from(items[0]["quantity"].as_i64().unwrap())
                        * items[0]["unit_price"]
                            .as_str()
                            .unwrap()
                            .parse::<Decimal>()
                            .unwrap(),
                )
                .unwrap();
                assert_eq!(v["tax_amount"], json!(money(tax)));
            }
        }
        assert_eq!(own, ["OWN-1", "OWN-2", "OWN-3"]);
        assert_eq!(t.sb.invoice_count(), 8);
        // the other vendor's invoice numbers are taken for everyone
        let (s, _) = t.create(&token, "OTHER-3-000002").await;
        assert_eq!(s, 422);
        // the other vendor is a second account; its password is not known
        let (s, _) = t
            .login_raw(json!({"email": FOREIGN_VENDOR_EMAIL, "password": SANDBOX_PASSWORD}))
            .await;
        assert_eq!(s, 401);
    }

    #[tokio::test]
    async fn control_api_random_and_hold_after_faults() {
        let t = start().await;
        let token = t.login().await;
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let ctl = |p: &str| t.url(&format!("/__sandbox{p}"));

        let r = c
            .post(ctl("/faults"))
            .json(&json!({"route": CREATE, "kind": "hold_after", "hold_ms": 5000, "times": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap()["faults_pending"],
            json!([{"kind": "hold_after", "hold_ms": 5000, "route": CREATE, "remaining": 2}])
        );
        c.delete(ctl("/faults")).send().await.unwrap();

        let spec = json!({"rate": 1.0, "routes": [PROFILE],
                          "kinds": [{"kind": "status", "status": 500, "retry_after": 3}],
                          "seed": 5});
        let r = c
            .post(ctl("/random-faults"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["random_faults"]["seed"], 5);
        assert_eq!(v["random_faults"]["kinds"][0]["status"], 500);
        let r = t.get(&token, "/api/vendors/profile").await;
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers()["retry-after"], "3");
        let stats: Value = c
            .get(ctl("/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["random_faults"]["routes"], json!([PROFILE]));
        assert_eq!(stats["faults_injected"]["random"], json!({"status": 1}));
        assert_eq!(stats["pool"]["workers"], Value::Null);
        assert_eq!(
            stats["pool"]["served"], 1,
            "the login; the fault took no worker"
        );
        for bad in [
            json!({"rate": 2, "kinds": [{"kind": "drop"}]}),
            json!({"rate": 0.5, "kinds": []}),
            json!({"rate": 0.5, "kinds": [{"kind": "drop"}], "routes": ["nope"]}),
        ] {
            let r = c
                .post(ctl("/random-faults"))
                .json(&bad)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{bad}");
        }
        let r = c
            .post(ctl("/random-faults"))
            .body("{")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = c.delete(ctl("/random-faults")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
        c.post(ctl("/stats/reset")).send().await.unwrap();
        let stats: Value = c
            .get(ctl("/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            stats["faults_injected"],
            json!({"planned": {}, "random": {}})
        );
    }

    // ---- the connector channel ----

    const HEARTBEAT: &str = "POST /api/pos-connector/heartbeat";

    impl T {
        /// A connector-channel request with `key` (none: no header).
        async fn connector(
            &self,
            method: reqwest::Method,
            path: &str,
            key: Option<&str>,
            body: Option<Value>,
        ) -> (u16, Value) {
            let mut req = self.c.request(method, self.url(path));
            if let Some(k) = key {
                req = req.header("X-API-Key", k);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        }
    }

    fn beat_body() -> Value {
        json!({
            "version": "0.1.0",
            "pos_systems": ["square"],
            "transactions_pending": 3,
            "transactions_parked": 1,
            "last_sync": null,
            "system_info": {"os": "linux", "hostname": "till-1"},
        })
    }

    #[tokio::test]
    async fn connector_routes_refuse_a_missing_or_wrong_key() {
        let t = start().await;
        let token = t.login().await;
        let invalid = json!({"error": "Invalid API key"});
        let routes = [
            (reqwest::Method::GET, "/api/pos-connector/test"),
            (reqwest::Method::GET, "/api/pos-connector/config"),
            (reqwest::Method::GET, "/api/pos-connector/stats"),
            (reqwest::Method::POST, "/api/pos-connector/heartbeat"),
            (reqwest::Method::POST, "/api/pos-connector/transactions"),
        ];
        for (m, path) in &routes {
            for key in [None, Some("wrong-key"), Some("")] {
                let body = (*m == reqwest::Method::POST).then(beat_body);
                let answer = t.connector(m.clone(), path, key, body).await;
                assert_eq!(answer, (401, invalid.clone()), "{m} {path} {key:?}");
            }
        }
        // The vendor's Sanctum token is not a connector key.
        let r =
            t.c.get(t.url("/api/pos-connector/test"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 401);
        // JSON even for a client that does not ask for it: the backend's
        // own check, not Sanctum's redirect to a login page.
        let r = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(t.url("/api/pos-connector/test"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap(), invalid);
        assert!(t.sb.heartbeats().is_empty());
        assert_eq!(t.sb.responses(HEARTBEAT, 401), 3);

        // A new key: the old one stops working.
        t.sb.set_api_key("rotated-key");
        let get = reqwest::Method::GET;
        let (s, _) = t
            .connector(
                get.clone(),
                "/api/pos-connector/test",
                Some(SANDBOX_API_KEY),
                None,
            )
            .await;
        assert_eq!(s, 401);
        let (s, v) = t
            .connector(get, "/api/pos-connector/test", Some("rotated-key"), None)
            .await;
        assert_eq!((s, &v["status"]), (200, &json!("connection_ok")));
    }

    #[tokio::test]
    async fn heartbeats_are_recorded_and_answered_with_config_updates() {
        let t = start().await;
        let post = reqwest::Method::POST;
        let (s, v) = t
            .connector(
                post.clone(),
                "/api/pos-connector/heartbeat",
                Some(SANDBOX_API_KEY),
                Some(beat_body()),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "ok");
        assert_eq!(
            v["config_updates"],
            json!({"sync_interval": 300, "debug_mode": false})
        );
        assert!(v["server_time"].as_str().unwrap().ends_with(".000000Z"));
        assert_eq!(t.sb.heartbeats(), vec![beat_body()]);

        t.sb.set_config_updates(json!({"sync_interval": "60"}))
            .unwrap();
        let (_, v) = t
            .connector(
                post.clone(),
                "/api/pos-connector/heartbeat",
                Some(SANDBOX_API_KEY),
                Some(beat_body()),
            )
            .await;
        assert_eq!(v["config_updates"], json!({"sync_interval": "60"}));
        // No updates: PHP's empty array.
        t.sb.set_config_updates(json!({})).unwrap();
        let (_, v) = t
            .connector(
                post.clone(),
                "/api/pos-connector/heartbeat",
                Some(SANDBOX_API_KEY),
                Some(beat_body()),
            )
            .await;
        assert_eq!(v["config_updates"], json!([]));
        assert!(t.sb.set_config_updates(json!([1])).is_err());

        // Validation, Laravel style.
        let (s, v) = t
            .connector(
                post.clone(),
                "/api/pos-connector/heartbeat",
                Some(SANDBOX_API_KEY),
                Some(json!({"transactions_pending": "many"})),
            )
            .await;
        assert_eq!(s, 422);
        assert_eq!(
            v["message"],
            "The version field is required. (and 1 more error)"
        );
        assert_eq!(
            v["errors"]["transactions_pending"][0],
            "The transactions pending field must be an integer."
        );
        let (s, _) = t
            .connector(
                post,
                "/api/pos-connector/heartbeat",
                Some(SANDBOX_API_KEY),
                Some(json!({"version": "1", "system_info": "linux"})),
            )
            .await;
        assert_eq!(s, 422);
        assert_eq!(t.sb.heartbeats().len(), 3);
        assert_eq!(t.sb.requests(HEARTBEAT), 5);
        assert_eq!(t.sb.responses(HEARTBEAT, 200), 3);
        assert_eq!(t.sb.responses(HEARTBEAT, 422), 2);
    }

    #[tokio::test]
    async fn connector_test_config_and_stats() {
        let t = start().await;
        let get = reqwest::Method::GET;
        let key = Some(SANDBOX_API_KEY);
        let (s, v) = t
            .connector(get.clone(), "/api/pos-connector/test", key, None)
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["status"], "connection_ok");
        assert_eq!(v["customer"], SANDBOX_CUSTOMER);
        assert_eq!(v["customer_id"], SANDBOX_CUSTOMER_ID);
        assert_eq!(v["message"], "Connection successful");
        assert!(v["server_time"].is_string());

        let (s, v) = t
            .connector(get.clone(), "/api/pos-connector/config", key, None)
            .await;
        assert_eq!(s, 200);
        assert_eq!(
            v["config"],
            json!({"sync_interval": 300, "debug_mode": false})
        );
        assert_eq!(v["customer"], SANDBOX_CUSTOMER);

        let (_, v) = t
            .connector(get.clone(), "/api/pos-connector/stats", key, None)
            .await;
        assert_eq!(v["heartbeats_received"], 0);
        assert_eq!(v["last_heartbeat"], Value::Null);
        t.connector(
            reqwest::Method::POST,
            "/api/pos-connector/heartbeat",
            key,
            Some(beat_body()),
        )
        .await;
        let (_, v) = t
            .connector(get, "/api/pos-connector/stats", key, None)
            .await;
        assert_eq!(v["heartbeats_received"], 1);
        assert!(v["last_heartbeat"].is_string());
        assert_eq!(v["last_version"], "0.1.0");
        assert_eq!(v["transactions_received"], 0);
        assert_eq!(t.sb.stats_json()["connector"]["heartbeats_received"], 1);
    }

    #[tokio::test]
    async fn transactions_are_deduplicated_on_their_id() {
        let t = start().await;
        let post = reqwest::Method::POST;
        let key = Some(SANDBOX_API_KEY);
        let path = "/api/pos-connector/transactions";
        let tx = |id: Value, total: u32| json!({"transaction_id": id, "total": total});
        let (s, v) = t
            .connector(post.clone(), path, key, Some(json!({"transactions": [tx(json!("A"), 1), tx(json!("B"), 2), tx(json!("A"), 3)]})))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v,
            json!({"status": "ok", "received": 3, "new": 2, "duplicates": 1})
        );
        // Again, and a number for an id already sent as text is the same id.
        let (_, v) = t
            .connector(
                post.clone(),
                path,
                key,
                Some(json!({"transactions": [tx(json!("B"), 9), tx(json!(7), 4)]})),
            )
            .await;
        assert_eq!(
            (v["new"].as_u64(), v["duplicates"].as_u64()),
            (Some(1), Some(1))
        );
        let (_, v) = t
            .connector(post.clone(), path, key, Some(tx(json!("7"), 5)))
            .await;
        assert_eq!(
            (v["new"].as_u64(), v["duplicates"].as_u64()),
            (Some(0), Some(1))
        );
        // The first copy is kept.
        let kept = t.sb.connector_transactions();
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[0], tx(json!("A"), 1));
        assert_eq!(kept[1], tx(json!("B"), 2));

        let (s, v) = t
            .connector(
                post.clone(),
                path,
                key,
                Some(json!({"transactions": [{"total": 1}]})),
            )
            .await;
        assert_eq!(s, 422);
        assert_eq!(
            v["errors"]["transactions.0.transaction_id"][0],
            "The transactions.0.transaction id field is required."
        );
        let (s, _) = t.connector(post, path, key, Some(json!({}))).await;
        assert_eq!(s, 422);
        let (_, v) = t
            .connector(reqwest::Method::GET, "/api/pos-connector/stats", key, None)
            .await;
        assert_eq!(v["transactions_received"], 3);
        assert_eq!(v["transactions_duplicate"], 3);
    }

    #[tokio::test]
    async fn connector_routes_take_faults_and_the_control_api() {
        let t = start().await;
        let key = Some(SANDBOX_API_KEY);
        t.sb.inject(
            HEARTBEAT,
            Fault::Status {
                status: 503,
                retry_after: Some(5),
                html: false,
            },
            1,
        );
        t.sb.inject(HEARTBEAT, Fault::Drop, 1);
        let post = reqwest::Method::POST;
        let (s, _) = t
            .connector(
                post.clone(),
                "/api/pos-connector/heartbeat",
                key,
                Some(beat_body()),
            )
            .await;
        assert_eq!(s, 503);
        let dropped =
            t.c.post(t.url("/api/pos-connector/heartbeat"))
                .header("X-API-Key", SANDBOX_API_KEY)
                .json(&beat_body())
                .send()
                .await;
        assert!(dropped.is_err());
        let (s, _) = t
            .connector(post, "/api/pos-connector/heartbeat", key, Some(beat_body()))
            .await;
        assert_eq!(s, 200);
        assert_eq!(t.sb.requests(HEARTBEAT), 3);
        assert_eq!(t.sb.responses(HEARTBEAT, 503), 1);
        assert_eq!(t.sb.responses(HEARTBEAT, 200), 1);
        assert_eq!(t.sb.heartbeats().len(), 1);

        // The control API reads and changes the channel.
        let ctl = t.url("/__sandbox/connector");
        let v: Value = t.c.get(&ctl).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["api_key"], SANDBOX_API_KEY);
        assert_eq!(v["heartbeats"].as_array().unwrap().len(), 1);
        let r =
            t.c.post(&ctl)
                .json(&json!({"api_key": "k2", "config_updates": {"sync_interval": 30}}))
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(t.sb.api_key(), "k2");
        let (_, v) = t
            .connector(
                reqwest::Method::GET,
                "/api/pos-connector/config",
                Some("k2"),
                None,
            )
            .await;
        assert_eq!(v["config"], json!({"sync_interval": 30}));
        for bad in [
            json!({"api_key": ""}),
            json!({"config_updates": 3}),
            json!({"other": 1}),
        ] {
            let r = t.c.post(&ctl).json(&bad).send().await.unwrap();
            assert_eq!(r.status(), 400, "{bad}");
        }
        // Control requests are neither counted nor faulted.
        assert_eq!(t.sb.requests("GET /__sandbox/connector"), 0);
    }
}
