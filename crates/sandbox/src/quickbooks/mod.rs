//! QuickBooks Online (Intuit), simulated: the OAuth 2.0 server and the
//! Accounting API v3 of one company.
//!
//! Follows `contracts/quickbooks-online.md` to the letter and, where it is
//! silent, what the real Intuit services do:
//!
//! * OAuth: an authorize page that approves at once (`302` back to the
//!   `redirect_uri` with `code`, `state` and `realmId`), the token endpoint
//!   (Basic client authentication, codes valid once for 10 minutes, a second
//!   exchange of a code revokes what the first one issued, every refresh
//!   rotates the refresh token, [`Rotation::Strict`] or a grace period for
//!   the previous one, 100-day rolling and 5-year hard expiry, the optional
//!   `x_refresh_token_hard_expires_in`), and the revoke endpoint. Token
//!   lifetimes run on tokio's clock, so a paused clock can expire them.
//! * Accounting API under `/v3/company/{realm}/...`: the gateway's 401 (3200,
//!   lowercase body, `WWW-Authenticate`) and 403 (3100), the per-realm rate
//!   limits (10 a second, 500 a minute, 40 batches a minute, sliding
//!   windows) answered with Intuit's XML 429 even to JSON clients; a subset
//!   of the query language (`SELECT * | COUNT(*) FROM e WHERE a = 'x' AND b
//!   IN (...) AND c LIKE '%y%' ORDERBY ... STARTPOSITION n MAXRESULTS m`,
//!   no `OR`, as at Intuit); create, sparse and full update
//!   (`SyncToken`, 5010) and read of `Customer`, `Vendor`, `Item` and
//!   `Invoice`; read and query of the seeded `Account`, `TaxCode` and
//!   `TaxRate` lists; `requestid` idempotency on POSTs (the original answer
//!   replayed, errors included; reads are idempotent anyway); `batch` (30
//!   items at most, run in order, each seeing what the earlier ones did);
//!   `cdc` (30 days back at most; at most 1,000 objects in one answer,
//!   shared by the entities asked for, oldest changes first, as Intuit
//!   documents; deleted entities as `{"Id", "status": "Deleted"}`).
//!   Invoices are validated like QuickBooks
//!   does (references, inactive customer 610, `Amount` = `Qty` x `UnitPrice`, `DocNumber`
//!   length and duplicates 6140 naming the existing `TxnId`, tax codes),
//!   and totalled with a `SubTotalLineDetail` line and `TxnTaxDetail`.
//!   Names are unique case-insensitively (6240): customers and vendors share
//!   one namespace, inactive ones included.
//! * Every answer carries a fresh `intuit_tid` header.
//! * Faults on demand through the shared [`Harness`] (route keys like
//!   `"POST /v3/company/{realm}/invoice"`), with Intuit-shaped bodies:
//!   injected 429s are the XML throttle answer, 401s the gateway body (the
//!   OAuth `invalid_client` on the token endpoints), 5xx a `SystemFault`.
//!
//! Left out: other entities and operations (delete, void, send, PDF),
//! `SELECT` of a field list and the rarer query syntax (`NOT`, `ORDER BY`
//! spelt in two words), `DiscountLineDetail` and other special invoice
//! lines, multi-currency, sales tax computed for US companies
//! (automated sales tax is Intuit's own engine: the sandbox records the
//! `TAX`/`NON` codes and reports no tax), OpenID Connect (`id_token`,
//! user info), webhooks, and the company's preference switches other than
//! the duplicate document number check.
//!
//! Besides the API, `/__sandbox/...` is a control API (JSON) for tests and
//! demos, neither counted nor faulted:
//!
//! * `GET /__sandbox/stats`, `POST /__sandbox/stats/reset`;
//! * `POST /__sandbox/faults` (a [`FaultSpec`]), `DELETE /__sandbox/faults`;
//!   `POST|DELETE /__sandbox/random-faults` (a [`RandomFaults`]);
//! * `POST /__sandbox/settings` `{"rotation": "strict" | {"grace_secs": n},
//!   "access_token_lifetime_secs": n, "limits": {"per_second", "per_minute",
//!   "batch_per_minute", "time_scale", "enforce"}, "duplicate_doc_check":
//!   bool}` (every field optional; answers the settings);
//! * `POST /__sandbox/tokens/expire` (every access token issued so far
//!   answers 3200), `POST /__sandbox/tokens/revoke` (every grant revoked);
//! * `POST /__sandbox/customers` `{"display_name", "active"}`,
//!   `POST /__sandbox/items` `{"name", "sku"}`,
//!   `POST /__sandbox/invoices` `{"doc_number", "customer"}`: seed data;
//! * `POST /__sandbox/codes` `{"redirect_uri"}`: an authorization code as if
//!   a user had approved.
//!
//! The same controls exist as methods of [`QuickbooksSandbox`], with more
//! for tests and benchmarks: bulk seeding of realistic companies without
//! HTTP ([`QuickbooksSandbox::seed_customers`], `seed_vendors`,
//! `seed_items`), and changing or deleting an entity as a person would in
//! QuickBooks ([`QuickbooksSandbox::update_entity`],
//! [`QuickbooksSandbox::delete_entity`]) so that `cdc` has something to
//! report.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rand::distr::{Alphanumeric, SampleString};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::http::{
    bad_request, control_body, ctl_answer, fault_control_routes, fault_middleware, form_decode,
    html_response, json_response, lock, serve, CtlResult, Fault, Harness, ServerHandle,
};

mod api;
mod batch_cdc;
mod control;
mod entities;
mod errors;
mod helpers;
mod limits;
mod model;
mod names;
mod oauth;
mod query;
mod seed;
#[cfg(test)]
mod tests;

use api::*;
use batch_cdc::*;
use control::*;
use entities::*;
use errors::*;
use helpers::*;
use limits::*;
use model::*;
use oauth::*;
use query::*;
use seed::*;

/// Paths under this prefix are the simulator's control API.
pub const CONTROL_PREFIX: &str = "/__sandbox";
/// The company id (`realmId`) of the simulated company.
pub const SANDBOX_REALM: &str = "9341453172531234";
/// The OAuth client (app) the simulator knows.
pub const SANDBOX_CLIENT_ID: &str = "sandbox-client-id";
pub const SANDBOX_CLIENT_SECRET: &str = "sandbox-client-secret";

/// The only minor version Intuit still honours (older ones are ignored).
const MINOR_VERSION: &str = "75";
const ACCOUNTING_SCOPE: &str = "com.intuit.quickbooks.accounting";
/// How long an authorization code can be exchanged.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
const MAX_BATCH_ITEMS: usize = 30;
const MAX_REQUESTID: usize = 50;
const MAX_BATCH_REQUESTID: usize = 36;
const DEFAULT_MAX_RESULTS: u64 = 100;
const MAX_RESULTS_LIMIT: u64 = 1000;
const CDC_MAX_DAYS: i64 = 30;
/// Objects in one `cdc` answer at most, all entities together (Intuit:
/// "Server responses can handle a maximum of 1,000 objects").
const CDC_MAX_OBJECTS: usize = 1000;
/// Bulk-seeded entities look this old (history, outside `cdc`'s window).
const SEEDED_AGE_DAYS: i64 = 90;
const DOC_NUMBER_MAX: usize = 21;
/// Intuit's sandbox companies come with transactions; ours start here.
const FIRST_INVOICE_ID: u64 = 130;
/// Larger request bodies are refused (Intuit cuts far earlier in practice).
const BODY_LIMIT: usize = 10 * 1024 * 1024;
/// The non-US standard rate (tax code "3").
const VAT_PERCENT: i64 = 16;
const VAT_CODE: &str = "3";
const ZERO_CODE: &str = "4";

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// What happens to a refresh token when a newer one of its grant is issued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rotation {
    /// The previous refresh token dies the moment a new one is issued (the
    /// safe reading of Intuit's documents, and the contract's).
    Strict,
    /// The previous refresh token keeps working for this long (Intuit
    /// documents 24 hours); using it returns a fresh pair again.
    Grace(Duration),
}

/// Intuit's per-realm rate limits.
#[derive(Debug, Clone)]
pub struct QboLimits {
    /// Requests in any second (sliding window).
    pub per_second: u32,
    /// Requests in any minute.
    pub per_minute: u32,
    /// Batch requests in any minute (a batch also counts as one request
    /// for the two limits above).
    pub batch_per_minute: u32,
    /// Multiplies the window lengths: 0.1 makes them 100 ms and 6 s, for
    /// quick tests.
    pub time_scale: f64,
    /// `false`: no limit at all.
    pub enforce: bool,
}

impl Default for QboLimits {
    fn default() -> Self {
        QboLimits {
            per_second: 10,
            per_minute: 500,
            batch_per_minute: 40,
            time_scale: 1.0,
            enforce: true,
        }
    }
}

impl QboLimits {
    fn to_json(&self) -> Value {
        json!({
            "per_second": self.per_second,
            "per_minute": self.per_minute,
            "batch_per_minute": self.batch_per_minute,
            "time_scale": self.time_scale,
            "enforce": self.enforce,
        })
    }

    /// A window of `secs` seconds, scaled. A nonsensical scale counts as 1
    /// (`Duration::from_secs_f64` would panic on it).
    fn window(&self, secs: f64) -> Duration {
        let scale = if self.time_scale.is_finite() && self.time_scale > 0.0 {
            self.time_scale
        } else {
            1.0
        };
        Duration::from_secs_f64((secs * scale).min(1e9))
    }
}

/// How the simulated company and its OAuth server behave; the defaults
/// are Intuit's (a US company, strict rotation, production limits).
#[derive(Debug, Clone)]
pub struct QuickbooksSandboxOptions {
    pub realm_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// `expires_in` of access tokens (Intuit: 3600 s).
    pub access_token_lifetime: Duration,
    /// Rolling lifetime of a refresh token from its issue (Intuit: 100
    /// days); each refresh issues a new one with the full lifetime.
    pub refresh_token_lifetime: Duration,
    /// Hard limit of a grant, from the user's authorization (Intuit: 5
    /// years since November 2025); then the user must reconnect.
    pub hard_expiry: Duration,
    pub rotation: Rotation,
    pub limits: QboLimits,
    /// `true`: a US company (line tax codes `TAX`/`NON`, no tax computed).
    /// `false`: tax code Id "3" "VAT 16%" (rate 16) and Id "4"
    /// "Zero-rated" (rate 0), with `GlobalTaxCalculation`.
    pub us_company: bool,
}

impl Default for QuickbooksSandboxOptions {
    fn default() -> Self {
        QuickbooksSandboxOptions {
            realm_id: SANDBOX_REALM.into(),
            client_id: SANDBOX_CLIENT_ID.into(),
            client_secret: SANDBOX_CLIENT_SECRET.into(),
            access_token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: Duration::from_secs(100 * 86_400),
            hard_expiry: Duration::from_secs(5 * 365 * 86_400),
            rotation: Rotation::Strict,
            limits: QboLimits::default(),
            us_company: true,
        }
    }
}

/// What the OAuth token and revoke endpoints did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TokenCounts {
    /// Authorization codes exchanged successfully.
    pub codes_exchanged: u64,
    /// Successful refreshes.
    pub refreshes_ok: u64,
    /// `400 invalid_grant` answers.
    pub invalid_grant: u64,
    /// `401 invalid_client` answers (token and revoke endpoints).
    pub invalid_client: u64,
    /// Grants revoked through the revoke endpoint.
    pub revoked: u64,
}

struct Db {
    opts: QuickbooksSandboxOptions,
    duplicate_doc_check: bool,
    /// Invoices another till creates just before our next create with the
    /// same `DocNumber` lands: DocNumber -> the other till's customer.
    races: HashMap<String, String>,
    codes: HashMap<String, AuthCode>,
    grants: Vec<Grant>,
    refresh: HashMap<String, RefreshRec>,
    access: HashMap<String, AccessRec>,
    latest_refresh: Option<String>,
    counts: TokenCounts,
    throttled: u64,
    missing_minorversion: u64,
    missing_accept_json: u64,
    token_missing_accept_json: u64,
    requestid_replays: u64,
    windows: HashMap<String, Windows>,
    tables: Tables,
    /// `requestid` -> the original answer, per realm.
    replies: HashMap<(String, String), (StatusCode, Value)>,
    /// Entities bulk-seeded so far (customers, vendors, items): the next
    /// call continues the sequence, so generated names stay unique.
    bulk_seeded: [usize; 3],
}

struct Shared {
    db: Mutex<Db>,
    harness: Arc<Harness>,
}

impl Shared {
    fn db(&self) -> MutexGuard<'_, Db> {
        lock(&self.db)
    }
}

type Sh = Arc<Shared>;

/// Marks answers that came from a handler (as opposed to a fault the
/// harness injected in front of it).
#[derive(Clone, Copy)]
struct Handled;

async fn mark_handled(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    r.extensions_mut().insert(Handled);
    r
}

fn is_oauth_path(path: &str) -> bool {
    path.starts_with("/oauth2/") || path.starts_with("/v2/oauth2/")
}

/// Gives an injected status answer Intuit's shape where the harness'
/// JSON body is not it: the XML 429 everywhere, the OAuth errors on the
/// token endpoints, `WWW-Authenticate` on the API's 401.
fn reshape_injected(path: &str, resp: Response) -> Response {
    let is_html = header_str(resp.headers(), header::CONTENT_TYPE).starts_with("text/html");
    if is_html {
        return resp;
    }
    let status = resp.status();
    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
    let mut out = if status == StatusCode::TOO_MANY_REQUESTS {
        throttled_response()
    } else if is_oauth_path(path) && status == StatusCode::UNAUTHORIZED {
        oauth_error(status, "invalid_client", None)
    } else if is_oauth_path(path) && status == StatusCode::BAD_REQUEST {
        oauth_error(
            status,
            "invalid_grant",
            Some("Token invalid (injected fault)"),
        )
    } else if status == StatusCode::UNAUTHORIZED && path.starts_with("/v3/") {
        let mut r = resp;
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"Intuit\", error=\"invalid_token\""),
        );
        return r;
    } else {
        return resp;
    };
    if let Some(ra) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, ra);
    }
    out
}

/// Outermost layer: every answer gets a fresh `intuit_tid`.
async fn intuit_layer(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    if resp.extensions().get::<Handled>().is_none() && !path.starts_with(CONTROL_PREFIX) {
        resp = reshape_injected(&path, resp);
    }
    resp.headers_mut()
        .insert(HeaderName::from_static("intuit_tid"), new_tid());
    resp
}

// ---------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------

/// Entities with a `/{entity}` and `/{entity}/{id}` route (lowercase, as
/// Intuit's paths spell them), so that route keys name them.
const ENTITY_PATHS: [&str; 7] = [
    "customer", "vendor", "item", "invoice", "account", "taxcode", "taxrate",
];

fn router(sh: Sh) -> Router {
    let mut api = Router::new()
        .route("/connect/oauth2", get(authorize))
        .route("/oauth2/v1/tokens/bearer", post(token_endpoint))
        .route("/v2/oauth2/tokens/revoke", post(revoke_endpoint))
        .route("/v3/company/{realm}/query", any(api_entry))
        .route("/v3/company/{realm}/batch", any(api_entry))
        .route("/v3/company/{realm}/cdc", any(api_entry));
    for e in ENTITY_PATHS {
        api = api
            .route(&format!("/v3/company/{{realm}}/{e}"), any(api_entry))
            .route(&format!("/v3/company/{{realm}}/{e}/{{id}}"), any(api_entry));
    }
    let api = api
        .fallback(api_entry)
        .layer(from_fn(mark_handled))
        // Unbounded and free: there only to spend a `slow_work` fault's time.
        .layer(from_fn_with_state(
            crate::pool::WorkerPool::new(None),
            crate::pool::pool_middleware,
        ))
        .layer(from_fn_with_state(sh.harness.clone(), fault_middleware))
        .with_state(sh.clone());
    let control = Router::new()
        .route("/__sandbox/stats", get(ctl_stats))
        .route("/__sandbox/stats/reset", post(ctl_stats_reset))
        .route("/__sandbox/settings", post(ctl_settings))
        .route("/__sandbox/tokens/expire", post(ctl_expire))
        .route("/__sandbox/tokens/revoke", post(ctl_revoke))
        .route("/__sandbox/customers", post(ctl_customers))
        .route("/__sandbox/items", post(ctl_items))
        .route("/__sandbox/invoices", post(ctl_invoices))
        .route("/__sandbox/codes", post(ctl_codes))
        .with_state(sh.clone());
    api.merge(control)
        .merge(fault_control_routes(CONTROL_PREFIX, sh.harness.clone()))
        .layer(from_fn(intuit_layer))
}

// ---------------------------------------------------------------------------
// Public handle
// ---------------------------------------------------------------------------

/// A running QuickBooks Online simulator (OAuth server and Accounting API
/// on one port). Dropping it stops the server.
pub struct QuickbooksSandbox {
    shared: Arc<Shared>,
    server: ServerHandle,
}

impl std::fmt::Debug for QuickbooksSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickbooksSandbox")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl QuickbooksSandbox {
    /// Starts the simulator on `bind` (port 0 = any free port).
    pub async fn start(
        bind: SocketAddr,
        opts: QuickbooksSandboxOptions,
    ) -> std::io::Result<QuickbooksSandbox> {
        let harness = Harness::new(CONTROL_PREFIX, intuit_error_body);
        let tables = Tables::new(opts.us_company);
        let shared = Arc::new(Shared {
            db: Mutex::new(Db {
                opts,
                duplicate_doc_check: true,
                races: HashMap::new(),
                codes: HashMap::new(),
                grants: Vec::new(),
                refresh: HashMap::new(),
                access: HashMap::new(),
                latest_refresh: None,
                counts: TokenCounts::default(),
                throttled: 0,
                missing_minorversion: 0,
                missing_accept_json: 0,
                token_missing_accept_json: 0,
                requestid_replays: 0,
                windows: HashMap::new(),
                tables,
                replies: HashMap::new(),
                bulk_seeded: [0; 3],
            }),
            harness,
        });
        let server = serve(bind, router(shared.clone())).await?;
        tracing::info!(addr = %server.addr(), "QuickBooks Online sandbox listening");
        Ok(QuickbooksSandbox { shared, server })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://IP:PORT`, without a trailing slash: serves both the OAuth
    /// and the API paths.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Authorize at `{auth_base}/connect/oauth2`, tokens at
    /// `{auth_base}/oauth2/v1/tokens/bearer`, revoke at
    /// `{auth_base}/v2/oauth2/tokens/revoke`.
    pub fn auth_base(&self) -> String {
        self.base_url()
    }

    /// The Accounting API base: `{base_url}/v3`.
    pub fn api_base(&self) -> String {
        format!("{}/v3", self.base_url())
    }

    /// The company id (`realmId`) of the simulated company.
    pub fn realm_id(&self) -> String {
        self.shared.db().opts.realm_id.clone()
    }

    /// Queues `fault` for the next `times` requests of `route`
    /// (`"POST /v3/company/{realm}/invoice"`, or `"*"` for any route).
    pub fn inject(&self, route: &str, fault: Fault, times: u32) {
        self.shared.harness.inject(route, fault, times);
    }

    /// Forgets every queued fault.
    pub fn clear_faults(&self) {
        self.shared.harness.clear_faults();
    }

    /// Requests received on `route`, e.g. `"POST /oauth2/v1/tokens/bearer"`.
    pub fn requests(&self, route: &str) -> u64 {
        self.shared.harness.requests(route)
    }

    /// Answers with `status` sent on `route`.
    pub fn responses(&self, route: &str, status: u16) -> u64 {
        self.shared.harness.responses(route, status)
    }

    /// Counters, token facts, limiter and header counts, entity counts and
    /// settings (what `GET /__sandbox/stats` answers).
    pub fn stats_json(&self) -> Value {
        stats_json(&self.shared)
    }

    /// Applies to refreshes from now on.
    pub fn set_rotation(&self, r: Rotation) {
        self.shared.db().opts.rotation = r;
    }

    /// Applies to access tokens issued from now on.
    pub fn set_access_token_lifetime(&self, d: Duration) {
        self.shared.db().opts.access_token_lifetime = d;
    }

    /// Every access token issued so far answers 3200 from now on.
    pub fn expire_access_tokens(&self) {
        expire_all(&mut self.shared.db());
    }

    /// Every grant is revoked: its access tokens answer 3200 and its
    /// refresh tokens `invalid_grant`.
    pub fn revoke_all(&self) {
        revoke_all(&mut self.shared.db());
    }

    /// Refresh tokens the token endpoint would accept now (the latest of
    /// each grant, plus rotated ones still in their grace period), oldest
    /// first.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        live_refresh(&self.shared.db(), Instant::now())
    }

    /// The newest refresh token issued (of any grant), live or not.
    pub fn latest_refresh_token(&self) -> Option<String> {
        self.shared.db().latest_refresh.clone()
    }

    /// What the token and revoke endpoints did so far.
    pub fn token_grants(&self) -> TokenCounts {
        self.shared.db().counts.clone()
    }

    /// 429s answered by the rate limiter (not injected ones).
    pub fn throttled(&self) -> u64 {
        self.shared.db().throttled
    }

    /// API requests without `minorversion=75`.
    pub fn missing_minorversion(&self) -> u64 {
        self.shared.db().missing_minorversion
    }

    /// API requests without `Accept: application/json`.
    pub fn missing_accept_json(&self) -> u64 {
        self.shared.db().missing_accept_json
    }

    /// Every invoice, as the API returns them, by Id.
    pub fn invoices(&self) -> Vec<Value> {
        self.rows(Kind::Invoice)
    }

    /// Every customer, inactive ones included.
    pub fn customers(&self) -> Vec<Value> {
        self.rows(Kind::Customer)
    }

    /// Every item, inactive ones included.
    pub fn items(&self) -> Vec<Value> {
        self.rows(Kind::Item)
    }

    /// Every vendor, inactive ones included.
    pub fn vendors(&self) -> Vec<Value> {
        self.rows(Kind::Vendor)
    }

    /// `n` more customers of a Jordanian shop's kind (about a third with
    /// Arabic names; "First Father Family" names, unique; some with a
    /// company name or an email; one in 20 inactive), stored directly
    /// without HTTP or validation, dated 90 days ago (history, outside
    /// `cdc`'s window). Returns their Ids, in order.
    pub fn seed_customers(&self, n: usize) -> Vec<String> {
        bulk_seed(&mut self.shared.db(), Kind::Customer, n)
    }

    /// `n` more vendors (suppliers' company names, unique), as
    /// [`QuickbooksSandbox::seed_customers`] does.
    pub fn seed_vendors(&self, n: usize) -> Vec<String> {
        bulk_seed(&mut self.shared.db(), Kind::Vendor, n)
    }

    /// `n` more items ("Arabic Coffee Premium 250g", some Arabic, unique
    /// names and SKUs, descriptions, prices, Service / NonInventory /
    /// Inventory; one in 25 inactive), as
    /// [`QuickbooksSandbox::seed_customers`] does.
    pub fn seed_items(&self, n: usize) -> Vec<String> {
        bulk_seed(&mut self.shared.db(), Kind::Item, n)
    }

    /// The vendor with this DisplayName (created through the API's rules,
    /// so a clash with a customer's name fails); returns its Id.
    pub fn seed_vendor(&self, display_name: &str, active: bool) -> Result<String, String> {
        upsert(
            &mut self.shared.db(),
            Kind::Vendor,
            json!({"DisplayName": display_name, "Active": active}),
            None,
        )
        .map(|row| row_id(&row).to_string())
        .map_err(|e| e.body().to_string())
    }

    /// Changes a Customer, Vendor, Item or Invoice as a person would in
    /// QuickBooks (a sparse update through the API's rules: the SyncToken
    /// and LastUpdatedTime move on, so `cdc` reports it). Answers the
    /// entity, or QuickBooks' fault as text.
    pub fn update_entity(&self, entity: &str, id: &str, fields: Value) -> Result<Value, String> {
        let kind = Kind::parse(entity)
            .filter(|k| k.writable())
            .ok_or_else(|| {
                format!("{entity} cannot be changed: use Customer, Vendor, Item or Invoice")
            })?;
        let Value::Object(mut body) = fields else {
            return Err("the fields to change must be a JSON object".into());
        };
        let mut db = self.shared.db();
        let sync = db
            .tables
            .get(kind, id)
            .and_then(|r| r.get("SyncToken").cloned())
            .ok_or_else(|| format!("no {} with Id {id}", kind.name()))?;
        body.insert("Id".into(), json!(id));
        body.insert("SyncToken".into(), sync);
        body.insert("sparse".into(), json!(true));
        upsert(&mut db, kind, Value::Object(body), None)
            .map(Value::Object)
            .map_err(|e| e.body().to_string())
    }

    /// Deletes a Customer, Vendor, Item or Invoice: it is gone from queries
    /// and reads, and `cdc` reports it with `"status": "Deleted"`. (In
    /// QuickBooks transactions are deleted and names are usually made
    /// inactive, or merged, which deletes one of them.) False when there
    /// is no such entity.
    pub fn delete_entity(&self, entity: &str, id: &str) -> bool {
        match Kind::parse(entity).filter(|k| k.writable()) {
            Some(kind) => self.shared.db().tables.delete(kind, id),
            None => false,
        }
    }

    fn rows(&self, kind: Kind) -> Vec<Value> {
        self.shared
            .db()
            .tables
            .list(kind)
            .iter()
            .map(|r| Value::Object(r.clone()))
            .collect()
    }

    /// The customer with this DisplayName (created, or its Active flag
    /// set); returns its Id.
    pub fn seed_customer(&self, display_name: &str, active: bool) -> String {
        seed_customer(&mut self.shared.db(), display_name, active)
    }

    /// The Service item with this Name (created if there is none, with
    /// `sku` and income account "1"); returns its Id.
    pub fn seed_item(&self, name: &str, sku: Option<&str>) -> String {
        seed_item(&mut self.shared.db(), name, sku)
    }

    /// An invoice of 100.00 (one line of item "Services", created if
    /// needed) for the customer of that DisplayName (created if needed),
    /// without the duplicate-number check; returns its Id.
    pub fn seed_invoice(&self, doc_number: &str, customer_display_name: &str) -> String {
        seed_invoice(&mut self.shared.db(), doc_number, customer_display_name)
    }

    /// Another till wins a race: the next invoice create (single or in a
    /// batch) with `doc_number` finds that number just taken by an invoice
    /// for `customer_display_name`, created after any query that came
    /// before it (so the check-then-create sees nothing, then meets 6140).
    /// The other invoice's id is in [`QuickbooksSandbox::invoices`].
    pub fn race_next_create(&self, doc_number: &str, customer_display_name: &str) {
        self.shared
            .db()
            .races
            .insert(doc_number.into(), customer_display_name.into());
    }

    /// Replaces the rate limits (the requests already counted stay in the
    /// windows).
    pub fn set_limits(&self, limits: QboLimits) {
        self.shared.db().opts.limits = limits;
    }

    /// On (the default): a repeated invoice `DocNumber` is fault 6140. Real
    /// QuickBooks only checks when the company's preference is on.
    pub fn set_duplicate_doc_check(&self, on: bool) {
        self.shared.db().duplicate_doc_check = on;
    }

    /// An authorization code for `redirect_uri`, as if a user had approved
    /// the app (exchange it within 10 minutes, once).
    pub fn issue_code(&self, redirect_uri: &str) -> String {
        issue_code_locked(&mut self.shared.db(), redirect_uri)
    }
}

/// Before a create of `kind` with `body` is handled: the other till's
/// invoice of a pending [`QuickbooksSandbox::race_next_create`] goes in.
fn run_race(db: &mut Db, kind: Kind, body: &Value) {
    if kind != Kind::Invoice || body.get("Id").is_some_and(|id| !id.is_null()) {
        return;
    }
    let Some(doc) = body.get("DocNumber").and_then(Value::as_str) else {
        return;
    };
    if let Some(customer) = db.races.remove(doc) {
        seed_invoice(db, doc, &customer);
    }
}
