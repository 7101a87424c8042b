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
//!   not configured, else 200 with the outcome (`submitted`, a scripted
//!   `rejected` / `error`, or `error` while the integration is broken); no
//!   guard against resubmitting, as in the real backend.
//! * Totals in the backend's own float arithmetic ([`crate::tax`]); item
//!   amounts shown as unrounded JSON numbers, invoice amounts as two-decimal
//!   strings.
//!
//! What the real stack does on a bad day, on demand: work that finishes
//! after its client left ([`LaravelSandboxOptions::finish_after_disconnect`],
//! PHP-FPM behind nginx), slow work ([`Fault::SlowWork`]: a submit stays
//! `draft` until its JoFotara call ends), answers lost after the work was
//! done ([`Fault::DropAfter`], [`Fault::HoldAfter`]), a broken JoFotara
//! integration ([`LaravelSandbox::set_jofotara_broken`]), other tills
//! creating invoices ([`LaravelSandbox::create_as_another_till`]), and a
//! per-invoice count of what JoFotara received
//! ([`LaravelSandbox::jofotara_submissions`]).
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
//! * `POST /__sandbox/invoices` `{"vendor": "same" | "other",
//!   "invoice_number", "customer_name", "items", ...}`: another till creates
//!   an invoice now (the create route's validation and arithmetic), answers
//!   `{"ok": true, "id": n}` or 422 with the backend's message;
//! * `POST /__sandbox/settings` also takes `"jofotara_broken"` (every submit
//!   answers `{"status": "error"}`) and `"finish_after_disconnect"`;
//!   `GET /__sandbox/stats` has `"jofotara"`: how many times JoFotara
//!   received each invoice (`submissions_total`, `by_invoice`,
//!   `more_than_once`);
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

mod auth;
mod connector;
mod control;
mod documents;
mod framework;
mod invoices;
mod latency;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
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
use rand::RngExt;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::http::{
    bad_request, control_body, ctl_answer, fault_control_routes, fault_middleware, form_decode,
    html_error_page, html_response, json_response, lock, serve_on, CtlResult, Fault, Harness,
    RandomFaults, ServerHandle,
};
use super::pdf::render_text_pdf;
use super::pool::{micros, pool_middleware, PoolStats, WorkerPool};
use crate::tax::{round_half_up, stored_float, RATE};

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
    /// A create or submit (any API request) whose client timed out or
    /// disconnected keeps running to completion, as PHP-FPM behind nginx
    /// does, so its effect lands after the client left (default off: the
    /// work is dropped with the connection; on in
    /// [`LaravelSandboxOptions::realistic_pool`]). Time spent before the
    /// request reaches the backend ([`Fault::Delay`]) is not work: a client
    /// that leaves during it leaves nothing behind.
    pub finish_after_disconnect: bool,
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
            finish_after_disconnect: false,
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
    /// ([`LatencyProfile::realistic`]), [`REALISTIC_WORKERS`] workers, and
    /// work that finishes after its client left.
    pub fn realistic_pool() -> LaravelSandboxOptions {
        LaravelSandboxOptions {
            latency: LatencyProfile::realistic(),
            workers: Some(REALISTIC_WORKERS),
            finish_after_disconnect: true,
            ..LaravelSandboxOptions::default()
        }
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
    /// The amounts as PHP computed them (floats, unrounded: the items'
    /// columns are not cast, and SQLite keeps what PHP sent).
    unit_price: f64,
    tax: f64,
    total: f64,
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
    /// Whether the create request had these keys (the create answer shows
    /// them only then).
    email_sent: bool,
    phone_sent: bool,
    /// When JoFotara last accepted it (`submitted`).
    submitted_at: Option<String>,
    /// How many times the backend handed this invoice to JoFotara (every
    /// submit that got past its checks, whatever JoFotara answered).
    jofotara_submissions: u64,
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
    /// The integration is misconfigured: every submit answers `error`.
    jofotara_broken: bool,
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
    /// When each accepted transaction arrived (for the channel's stats).
    received_at: Vec<DateTime<Utc>>,
    first_heartbeat: Option<DateTime<Utc>>,
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

type Sh = Arc<Shared>;

use auth::*;
use connector::*;
pub use control::TillVendor;
use control::*;
use documents::*;
pub use framework::laravel_error_body;
use framework::*;
use invoices::*;
pub use latency::{options_from_profile, LatencyProfile, REALISTIC_WORKERS};

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
        .route("/__sandbox/invoices", post(ctl_another_till))
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
        LaravelSandbox::start_on(tokio::net::TcpListener::bind(bind).await?, opts)
    }

    /// [`LaravelSandbox::start`] on a listener the caller bound: a backend
    /// whose address was handed out while it was still down.
    pub fn start_on(
        listener: tokio::net::TcpListener,
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
        pool.set_finish_after_disconnect(opts.finish_after_disconnect);
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
                jofotara_broken: false,
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
        let server = serve_on(listener, router(shared.clone()))?;
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

    /// A misconfigured JoFotara integration (a missing supplier income
    /// source, an SDK mismatch): while on, every submit of every invoice
    /// answers 200 `{"status": "error"}` (and leaves the invoice `error`),
    /// unlike the 500 of an organisation with no integration at all.
    pub fn set_jofotara_broken(&self, on: bool) {
        self.shared.state().jofotara_broken = on;
    }

    /// See [`LaravelSandboxOptions::finish_after_disconnect`]; applies to
    /// requests received from now on.
    pub fn set_finish_after_disconnect(&self, on: bool) {
        self.shared.pool.set_finish_after_disconnect(on);
    }

    /// How many times the backend handed invoice `id` to JoFotara (every
    /// submit that got past its checks, whatever the outcome); 0 for an
    /// unknown id. Exactly-once checks want 1.
    pub fn jofotara_submissions(&self, id: u64) -> u64 {
        self.shared
            .state()
            .invoices
            .get(&id)
            .map_or(0, |i| i.jofotara_submissions)
    }

    /// [`LaravelSandbox::jofotara_submissions`] summed over the invoices
    /// carrying `number`.
    pub fn jofotara_submissions_by_number(&self, number: &str) -> u64 {
        self.shared
            .state()
            .invoices
            .values()
            .filter(|i| i.invoice_number == number)
            .map(|i| i.jofotara_submissions)
            .sum()
    }

    /// Another till creates an invoice now, with the create route's
    /// validation and arithmetic: `invoice` is a create request's body
    /// (`{"invoice_number", "customer_name", "items": [{"description",
    /// "quantity", "price"}], ...}`), `vendor` whose till it is. Returns
    /// its id, or the backend's message (e.g. "The invoice number has
    /// already been taken.").
    pub fn create_as_another_till(
        &self,
        vendor: TillVendor,
        invoice: Value,
    ) -> Result<u64, String> {
        another_till_create(&self.shared, vendor, invoice)
    }

    /// The invoice `id` as `GET /api/invoices/{id}` shows it.
    pub fn invoice(&self, id: u64) -> Option<Value> {
        self.shared.state().invoices.get(&id).map(invoice_full_json)
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
