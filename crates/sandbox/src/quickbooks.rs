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
    bad_request, control_body, ctl_answer, fault_control_routes, fault_middleware, html_response,
    json_response, lock, serve, CtlResult, Fault, Harness, ServerHandle,
};

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

// ---------------------------------------------------------------------------
// Token store
// ---------------------------------------------------------------------------

struct AuthCode {
    redirect_uri: String,
    issued: Instant,
    /// The grant its first exchange created (a second exchange revokes it).
    grant: Option<usize>,
}

/// One user authorization: its tokens live and die together.
struct Grant {
    realm: String,
    hard_expiry: Instant,
    revoked: bool,
}

struct RefreshRec {
    grant: usize,
    issued: Instant,
    /// Rolling expiry: issue + the refresh lifetime.
    expires: Instant,
    /// Set when a newer refresh token of the grant was issued.
    dies_at: Option<Instant>,
}

struct AccessRec {
    grant: usize,
    expires: Instant,
    /// `expire_access_tokens` was called after its issue.
    killed: bool,
}

/// Why a token is refused (the text goes into error descriptions).
fn refresh_problem(db: &Db, token: &str, now: Instant) -> Option<&'static str> {
    let Some(rec) = db.refresh.get(token) else {
        return Some("Incorrect or invalid refresh token");
    };
    let grant = &db.grants[rec.grant];
    if grant.revoked {
        Some("Token revoked")
    } else if now >= grant.hard_expiry {
        Some("Refresh token passed its hard expiry: the user must reconnect")
    } else if now >= rec.expires {
        Some("Refresh token expired")
    } else if rec.dies_at.is_some_and(|d| now >= d) {
        Some("Incorrect or invalid refresh token (already rotated)")
    } else {
        None
    }
}

fn random_alnum(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// `AB11` + 46 characters: the shape of Intuit's refresh tokens (50 chars).
fn new_refresh_token() -> String {
    format!("AB11{}", random_alnum(46))
}

/// Authorization codes look like refresh tokens at Intuit too.
fn new_code() -> String {
    format!("AB11{}", random_alnum(38))
}

/// Intuit's access tokens are JWEs of about a thousand characters: long
/// enough to overflow a `VARCHAR(255)` column, which is the point.
fn new_access_token() -> String {
    let b64 = |n: usize| {
        let mut s = random_alnum(n);
        // Base64url alphabet, not just alphanumerics.
        s.replace_range(n / 2..n / 2 + 1, "_");
        s
    };
    format!(
        "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..{}.{}.{}",
        b64(22),
        b64(900),
        b64(22)
    )
}

/// An `intuit_tid`: unique per response (random 96 bits after the time).
fn new_tid() -> HeaderValue {
    let secs = Utc::now().timestamp().max(0) as u64;
    let rnd = uuid::Uuid::new_v4().simple().to_string();
    let s = format!("1-{secs:08x}-{}", &rnd[..24]);
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("1-00000000-0"))
}

// ---------------------------------------------------------------------------
// Entities
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Customer,
    Vendor,
    Item,
    Invoice,
    Account,
    TaxCode,
    TaxRate,
}

const ALL_KINDS: [Kind; 7] = [
    Kind::Customer,
    Kind::Vendor,
    Kind::Item,
    Kind::Invoice,
    Kind::Account,
    Kind::TaxCode,
    Kind::TaxRate,
];

/// Queryable fields shared by every entity.
const COMMON_FIELDS: [&str; 4] = [
    "Id",
    "SyncToken",
    "MetaData.CreateTime",
    "MetaData.LastUpdatedTime",
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Customer => "Customer",
            Kind::Vendor => "Vendor",
            Kind::Item => "Item",
            Kind::Invoice => "Invoice",
            Kind::Account => "Account",
            Kind::TaxCode => "TaxCode",
            Kind::TaxRate => "TaxRate",
        }
    }

    /// Entity names are case-insensitive in queries, `cdc` and URL paths.
    fn parse(s: &str) -> Option<Kind> {
        ALL_KINDS
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Entities the API can create and update.
    fn writable(self) -> bool {
        matches!(
            self,
            Kind::Customer | Kind::Vendor | Kind::Item | Kind::Invoice
        )
    }

    /// Name lists: a query without a condition on `Active` only returns
    /// the active ones, as QuickBooks does.
    fn is_list(self) -> bool {
        !matches!(self, Kind::Invoice)
    }

    /// Queryable fields besides [`COMMON_FIELDS`].
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Customer | Kind::Vendor => &[
                "DisplayName",
                "CompanyName",
                "GivenName",
                "FamilyName",
                "FullyQualifiedName",
                "PrintOnCheckName",
                "Active",
                "Balance",
                "PrimaryEmailAddr",
            ],
            Kind::Item => &[
                "Name",
                "Sku",
                "Type",
                "Active",
                "FullyQualifiedName",
                "UnitPrice",
                "Description",
                "Taxable",
            ],
            Kind::Invoice => &[
                "DocNumber",
                "TxnDate",
                "DueDate",
                "CustomerRef",
                "TotalAmt",
                "Balance",
                "PrivateNote",
            ],
            Kind::Account => &[
                "Name",
                "AccountType",
                "AccountSubType",
                "Classification",
                "Active",
                "FullyQualifiedName",
                "CurrentBalance",
            ],
            Kind::TaxCode => &["Name", "Active", "Taxable", "Description"],
            Kind::TaxRate => &["Name", "Active", "RateValue", "Description"],
        }
    }

    /// The canonical spelling of a queryable field (fields are
    /// case-insensitive), or `None` when it cannot be queried.
    fn field(self, name: &str) -> Option<&'static str> {
        COMMON_FIELDS
            .iter()
            .chain(self.fields())
            .find(|f| f.eq_ignore_ascii_case(name))
            .copied()
    }
}

type Row = Map<String, Value>;

fn row_id(row: &Row) -> &str {
    row.get("Id").and_then(Value::as_str).unwrap_or("")
}

fn is_active(row: &Row) -> bool {
    row.get("Active").and_then(Value::as_bool).unwrap_or(true)
}

/// The company's data: one list per entity, in creation (= Id) order.
struct Tables {
    rows: [Vec<Row>; 7],
    next_id: [u64; 7],
    /// Deleted entities, as `cdc` reports them.
    deleted: [Vec<Row>; 7],
}

impl Tables {
    fn new(us_company: bool) -> Tables {
        let mut t = Tables {
            rows: Default::default(),
            next_id: [1; 7],
            deleted: Default::default(),
        };
        t.next_id[Kind::Invoice.index()] = FIRST_INVOICE_ID;
        let created = meta_now();
        let meta = json!({"CreateTime": created, "LastUpdatedTime": created});
        let account = |id: &str, name: &str, ty: &str, sub: &str, class: &str| {
            json!({"Name": name, "SubAccount": false, "FullyQualifiedName": name,
                   "Active": true, "Classification": class, "AccountType": ty,
                   "AccountSubType": sub, "CurrentBalance": 0.0,
                   "CurrentBalanceWithSubAccounts": 0.0, "domain": "QBO", "sparse": false,
                   "Id": id, "SyncToken": "0", "MetaData": meta})
        };
        for a in [
            account("1", "Services", "Income", "ServiceFeeIncome", "Revenue"),
            account(
                "79",
                "Sales of Product Income",
                "Income",
                "SalesOfProductIncome",
                "Revenue",
            ),
            account(
                "80",
                "Cost of Goods Sold",
                "Cost of Goods Sold",
                "SuppliesMaterialsCogs",
                "Expense",
            ),
            account(
                "81",
                "Inventory Asset",
                "Other Current Asset",
                "Inventory",
                "Asset",
            ),
        ] {
            t.push_seeded(Kind::Account, a);
        }
        t.next_id[Kind::Account.index()] = 82;
        let code = |id: &str, name: &str, taxable: bool, rate: Option<(&str, &str)>| {
            let mut v = json!({"Name": name, "Description": name, "Active": true,
                               "Taxable": taxable, "TaxGroup": false, "domain": "QBO",
                               "sparse": false, "Id": id, "SyncToken": "0", "MetaData": meta});
            if let Some((rate_id, rate_name)) = rate {
                v["SalesTaxRateList"] = json!({"TaxRateDetail": [{
                    "TaxRateRef": {"value": rate_id, "name": rate_name},
                    "TaxTypeApplicable": "TaxOnAmount", "TaxOrder": 0}]});
            }
            v
        };
        if us_company {
            // Automated sales tax: the line codes are the pseudo-codes.
            t.push_seeded(Kind::TaxCode, code("TAX", "TAX", true, None));
            t.push_seeded(Kind::TaxCode, code("NON", "NON", false, None));
        } else {
            t.push_seeded(
                Kind::TaxCode,
                code(VAT_CODE, "VAT 16%", true, Some(("5", "VAT 16%"))),
            );
            t.push_seeded(
                Kind::TaxCode,
                code(ZERO_CODE, "Zero-rated", true, Some(("6", "Zero-rated"))),
            );
            for (id, name, rate) in [("5", "VAT 16%", VAT_PERCENT), ("6", "Zero-rated", 0)] {
                t.push_seeded(
                    Kind::TaxRate,
                    json!({"Name": name, "Description": name, "Active": true,
                           "RateValue": rate, "SpecialTaxType": "NONE", "DisplayType": "ReadOnly",
                           "domain": "QBO", "sparse": false, "Id": id, "SyncToken": "0",
                           "MetaData": meta}),
                );
            }
        }
        t
    }

    fn push_seeded(&mut self, kind: Kind, v: Value) {
        if let Value::Object(m) = v {
            self.rows[kind.index()].push(m);
        }
    }

    fn list(&self, kind: Kind) -> &[Row] {
        &self.rows[kind.index()]
    }

    fn get(&self, kind: Kind, id: &str) -> Option<&Row> {
        self.list(kind).iter().find(|r| row_id(r) == id)
    }

    fn next_id(&mut self, kind: Kind) -> String {
        let n = self.next_id[kind.index()];
        self.next_id[kind.index()] += 1;
        n.to_string()
    }

    /// Stores `row` (replacing the row with its Id, if any).
    fn put(&mut self, kind: Kind, row: Row) {
        let list = &mut self.rows[kind.index()];
        match list.iter().position(|r| row_id(r) == row_id(&row)) {
            Some(i) => list[i] = row,
            None => list.push(row),
        }
    }

    /// Removes entity `id`; `cdc` reports it as deleted from now on.
    fn delete(&mut self, kind: Kind, id: &str) -> bool {
        let list = &mut self.rows[kind.index()];
        let Some(i) = list.iter().position(|r| row_id(r) == id) else {
            return false;
        };
        list.remove(i);
        let mut tomb = Map::new();
        tomb.insert("domain".into(), json!("QBO"));
        tomb.insert("status".into(), json!("Deleted"));
        tomb.insert("Id".into(), json!(id));
        tomb.insert("MetaData".into(), json!({"LastUpdatedTime": meta_now()}));
        self.deleted[kind.index()].push(tomb);
        true
    }

    /// The customer or vendor already using `name` (case-insensitive),
    /// other than `except`.
    fn party_named(&self, name: &str, except: Option<(Kind, &str)>) -> Option<(Kind, &Row)> {
        let wanted = name.trim().to_lowercase();
        [Kind::Customer, Kind::Vendor].into_iter().find_map(|k| {
            self.list(k)
                .iter()
                .find(|r| {
                    except != Some((k, row_id(r)))
                        && r.get("DisplayName")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.trim().to_lowercase() == wanted)
                })
                .map(|r| (k, r))
        })
    }

    fn item_named(&self, name: &str, except: Option<&str>) -> Option<&Row> {
        let wanted = name.trim().to_lowercase();
        self.list(Kind::Item).iter().find(|r| {
            Some(row_id(r)) != except
                && r.get("Name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.trim().to_lowercase() == wanted)
        })
    }
}

// ---------------------------------------------------------------------------
// Rate limiter
// ---------------------------------------------------------------------------

/// The requests a realm was allowed in the last (scaled) minute.
#[derive(Default)]
struct Windows {
    all: VecDeque<Instant>,
    batch: VecDeque<Instant>,
}

impl Windows {
    /// Whether a request at `now` is within the limits; if so it is
    /// recorded. A refused request is not recorded: it does not count
    /// toward the windows (Intuit counts what it served).
    fn admit(&mut self, now: Instant, is_batch: bool, l: &QboLimits) -> bool {
        if !l.enforce {
            return true;
        }
        let (second, minute) = (l.window(1.0), l.window(60.0));
        for q in [&mut self.all, &mut self.batch] {
            while q
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= minute)
            {
                q.pop_front();
            }
        }
        let in_second = self
            .all
            .iter()
            .rev()
            .take_while(|t| now.saturating_duration_since(**t) < second)
            .count();
        if in_second >= l.per_second as usize
            || self.all.len() >= l.per_minute as usize
            || (is_batch && self.batch.len() >= l.batch_per_minute as usize)
        {
            return false;
        }
        self.all.push_back(now);
        if is_batch {
            self.batch.push_back(now);
        }
        true
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

struct Db {
    opts: QuickbooksSandboxOptions,
    duplicate_doc_check: bool,
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

// ---------------------------------------------------------------------------
// Formats and small helpers
// ---------------------------------------------------------------------------

/// The `time` of an answer: RFC 3339 with milliseconds and offset.
fn time_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// `MetaData` times: RFC 3339 to the second, with offset.
fn meta_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn meta_now() -> String {
    meta_time(Utc::now())
}

/// A JSON amount as a decimal: numbers (through their shortest decimal
/// form, so 0.1 is 0.1) or numeric strings.
fn dec(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => {
            let s = n.to_string();
            Decimal::from_str(&s)
                .or_else(|_| Decimal::from_scientific(&s))
                .ok()
        }
        Value::String(s) => Decimal::from_str(s.trim()).ok(),
        _ => None,
    }
}

/// A decimal as a JSON number (QuickBooks writes amounts as numbers).
fn num(d: Decimal) -> Value {
    d.to_f64()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn round2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// A reference's `value` (`{"value": "1"}`), as a string even when the
/// client sent a number.
fn ref_value(v: Option<&Value>) -> Option<String> {
    match v?.get("value")? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn str_field<'a>(m: &'a Row, name: &str) -> Option<&'a str> {
    m.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn header_str(h: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn accepts_json(h: &HeaderMap) -> bool {
    header_str(h, header::ACCEPT)
        .to_ascii_lowercase()
        .contains("application/json")
}

/// Percent-decoding of `application/x-www-form-urlencoded` text.
fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_decode(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

/// Percent-encoding of a query parameter value (RFC 3986 unreserved kept).
fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn query_params(uri: &axum::http::Uri) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Error answers
// ---------------------------------------------------------------------------

/// An API failure: HTTP status and the `Fault` object (without `time`, so
/// that batch items can carry it too).
#[derive(Debug, Clone)]
struct ApiError {
    status: StatusCode,
    fault: Value,
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, code: &str, message: &str, detail: String) -> ApiError {
        ApiError {
            status,
            fault: json!({"Error": [{"Message": message, "Detail": detail, "code": code,
                                     "element": ""}],
                          "type": kind}),
        }
    }

    fn validation(code: &str, message: &str, detail: String) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            code,
            message,
            detail,
        )
    }

    fn element(mut self, element: &str) -> ApiError {
        self.fault["Error"][0]["element"] = json!(element);
        self
    }

    fn body(&self) -> Value {
        json!({"Fault": self.fault, "time": time_now()})
    }
}

/// 6000 with QuickBooks' "Business Validation Error: ..." detail.
fn business(detail: impl std::fmt::Display) -> ApiError {
    ApiError::validation(
        "6000",
        "A business validation error has occurred while processing your request",
        format!("Business Validation Error: {detail}"),
    )
}

/// A required field is missing. (QuickBooks answers 2020 for some fields
/// and 6000 for others; the sandbox uses 6000 throughout, the Detail names
/// the field.)
fn required(field: &str) -> ApiError {
    ApiError::validation(
        "6000",
        "Required param missing, need to supply the required value for the API",
        format!("Required parameter {field} is missing in the request"),
    )
    .element(field)
}

fn invalid_ref(kind: Kind, id: &str, element: &str) -> ApiError {
    ApiError::validation(
        "2500",
        "Invalid Reference Id",
        format!(
            "Invalid Reference Id : {} assigned to this transaction does not exist (Id={id})",
            kind.name()
        ),
    )
    .element(element)
}

const INACTIVE_DETAIL: &str = "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees.";

fn not_found(detail: String) -> ApiError {
    ApiError::validation("610", "Object Not Found", detail)
}

fn unsupported_property(detail: impl std::fmt::Display) -> ApiError {
    ApiError::validation(
        "2010",
        "Request has invalid or unsupported property",
        format!("Property Name:{detail} specified is unsupported or invalid"),
    )
}

fn unsupported_operation(what: &str) -> ApiError {
    ApiError::validation(
        "500",
        "Unsupported Operation",
        format!("Operation {what} is not supported."),
    )
}

fn parse_error(detail: impl std::fmt::Display) -> ApiError {
    ApiError::validation(
        "4000",
        "Error parsing query",
        format!("QueryParserError: {detail}"),
    )
}

fn query_invalid(detail: impl std::fmt::Display) -> ApiError {
    ApiError::validation(
        "4001",
        "Invalid query",
        format!("QueryValidationError: {detail}"),
    )
}

fn system_fault_body() -> Value {
    json!({"Fault": {"Error": [{
        "Message": "An application error has occurred while processing your request",
        "Detail": "System Failure Error: An unexpected error occurred while accessing or saving your data. Please wait a few minutes and try again. If the problem persists, contact customer support.",
        "code": "10000"}], "type": "SystemFault"}, "time": time_now()})
}

/// The API gateway's 401 (lowercase keys).
fn gateway_401_body(detail: &str) -> Value {
    json!({"fault": {"error": [{
        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        "detail": detail, "code": "3200"}], "type": "AUTHENTICATION"}, "time": time_now()})
}

fn gateway_401(detail: &str) -> Response {
    let mut r = json_response(StatusCode::UNAUTHORIZED, &gateway_401_body(detail));
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"Intuit\", error=\"invalid_token\""),
    );
    r
}

fn forbidden_3100_body(detail: &str) -> Value {
    json!({"Fault": {"Error": [{
        "Message": "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
        "Detail": detail, "code": "3100"}], "type": "AUTHORIZATION"}, "time": time_now()})
}

/// Intuit's throttling answer: XML even when JSON was asked for, and no
/// `Retry-After`.
fn throttle_xml() -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><IntuitResponse time=\"{}\"><Fault type=\"SERVICE\"><Error code=\"3001\"><Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message><Detail>The request limit was reached.</Detail></Error></Fault></IntuitResponse>",
        time_now()
    )
}

fn throttled_response() -> Response {
    let mut r = Response::new(Body::from(throttle_xml()));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    r
}

fn oauth_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    let body = match description {
        Some(d) => json!({"error": error, "error_description": d}),
        None => json!({"error": error}),
    };
    json_response(status, &body)
}

/// The body of an injected [`Fault::Status`], in Intuit's shapes (the
/// outer layer turns 429 into XML and adapts the OAuth endpoints).
fn intuit_error_body(status: u16) -> Value {
    match status {
        401 => gateway_401_body("Token invalid: rejected by the sandbox (injected fault)"),
        403 => forbidden_3100_body("Authorization failed (injected fault)"),
        429 => json!({"Fault": {"Error": [{
            "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
            "Detail": "The request limit was reached.", "code": "3001"}],
            "type": "SERVICE"}, "time": time_now()}),
        404 => ApiError::new(
            StatusCode::NOT_FOUND,
            "ValidationFault",
            "610",
            "Object Not Found",
            "Object Not Found : the resource was not found (injected fault)".into(),
        )
        .body(),
        400..=499 => business("the request was rejected (injected fault)").body(),
        _ => system_fault_body(),
    }
}

// ---------------------------------------------------------------------------
// Query language
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(String),
    Star,
    LParen,
    RParen,
    Comma,
    Op(&'static str),
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::Word(w) | Tok::Num(w) => w.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Star => "*".into(),
            Tok::LParen => "(".into(),
            Tok::RParen => ")".into(),
            Tok::Comma => ",".into(),
            Tok::Op(o) => (*o).into(),
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// Tokens with their 1-based column (for error details).
fn lex(q: &str) -> Result<Vec<(Tok, usize)>, ApiError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            '*' => Tok::Star,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '=' => Tok::Op("="),
            '<' | '>' | '!' => {
                let next = chars.get(i + 1).copied();
                let op = match (c, next) {
                    ('<', Some('=')) => "<=",
                    ('>', Some('=')) => ">=",
                    ('!', Some('=')) | ('<', Some('>')) => "!=",
                    ('<', _) => "<",
                    ('>', _) => ">",
                    _ => {
                        return Err(parse_error(format!(
                            "Encountered \"{c}\" at line 1, column {col}."
                        )))
                    }
                };
                i += op.len() - 1;
                Tok::Op(op)
            }
            '\'' => {
                // `\'` escapes a quote; a backslash before anything else is
                // kept as it is.
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => {
                            return Err(parse_error(format!(
                                "Lexical error at line 1, column {}. Encountered: <EOF> (unterminated string starting at column {col})",
                                chars.len() + 1
                            )))
                        }
                        Some('\\') if chars.get(j + 1) == Some(&'\'') => {
                            s.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(&ch) => {
                            s.push(ch);
                            j += 1;
                        }
                    }
                }
                i = j;
                Tok::Str(s)
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                    j += 1;
                }
                let s: String = chars[i..j].iter().collect();
                i = j - 1;
                Tok::Num(s)
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '.')
                {
                    j += 1;
                }
                let s: String = chars[i..j].iter().collect();
                i = j - 1;
                Tok::Word(s)
            }
            other => {
                return Err(parse_error(format!(
                    "Lexical error at line 1, column {col}. Encountered: \"{other}\""
                )))
            }
        };
        out.push((tok, col));
        i += 1;
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Num(Decimal),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Cmp(&'static str, CmpOp, Lit),
    In(&'static str, Vec<Lit>),
    Like(&'static str, String),
}

impl Cond {
    fn field(&self) -> &'static str {
        match self {
            Cond::Cmp(f, ..) | Cond::In(f, _) | Cond::Like(f, _) => f,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct QboQuery {
    count: bool,
    kind: Kind,
    conds: Vec<Cond>,
    order: Vec<(&'static str, bool)>,
    start: u64,
    max: u64,
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end_col: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn unexpected(&self) -> ApiError {
        match self.toks.get(self.pos) {
            Some((t, col)) => parse_error(format!(
                "Encountered \"{}\" at line 1, column {col}.",
                t.show()
            )),
            None => parse_error(format!(
                "Encountered \"<EOF>\" at line 1, column {}.",
                self.end_col
            )),
        }
    }

    fn next(&mut self) -> Result<Tok, ApiError> {
        let t = self.peek().cloned().ok_or_else(|| self.unexpected())?;
        self.pos += 1;
        Ok(t)
    }

    fn expect(&mut self, want: &Tok) -> Result<(), ApiError> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), ApiError> {
        if self.peek().is_some_and(|t| t.is_kw(kw)) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.peek().is_some_and(|t| t.is_kw(kw));
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn field(&mut self, kind: Kind) -> Result<&'static str, ApiError> {
        match self.next()? {
            Tok::Word(w) => kind
                .field(&w)
                .ok_or_else(|| parse_error(format!("property '{w}' is not queryable"))),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn literal(&mut self) -> Result<Lit, ApiError> {
        match self.next()? {
            Tok::Str(s) => Ok(Lit::Str(s)),
            Tok::Num(n) => match Decimal::from_str(&n) {
                Ok(d) => Ok(Lit::Num(d)),
                Err(_) => {
                    self.pos -= 1;
                    Err(self.unexpected())
                }
            },
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn integer(&mut self) -> Result<u64, ApiError> {
        match self.next()? {
            Tok::Num(n) => n.parse::<u64>().map_err(|_| {
                self.pos -= 1;
                self.unexpected()
            }),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn cond(&mut self, kind: Kind) -> Result<Cond, ApiError> {
        let field = self.field(kind)?;
        match self.next()? {
            Tok::Op(op) => {
                let op = match op {
                    "=" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                Ok(Cond::Cmp(field, op, self.literal()?))
            }
            t if t.is_kw("IN") => {
                self.expect(&Tok::LParen)?;
                let mut list = vec![self.literal()?];
                while self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    list.push(self.literal()?);
                }
                self.expect(&Tok::RParen)?;
                Ok(Cond::In(field, list))
            }
            t if t.is_kw("LIKE") => match self.next()? {
                Tok::Str(s) => Ok(Cond::Like(field, s)),
                _ => {
                    self.pos -= 1;
                    Err(self.unexpected())
                }
            },
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }
}

/// Parses the subset of Intuit's query language the sandbox serves:
/// `SELECT * | SELECT COUNT(*) FROM <Entity> [WHERE cond [AND cond]...]
/// [ORDERBY field [ASC|DESC] [, ...]] [STARTPOSITION n] [MAXRESULTS m]`,
/// keywords, entities and fields case-insensitive; `cond` is `field op
/// literal` (`=`, `!=`, `<`, `<=`, `>`, `>=`), `field IN (literal, ...)` or
/// `field LIKE 'text'` (`%` at either end); literals are `'strings'` (`\'`
/// inside), numbers or `true`/`false`.
fn parse_query(q: &str) -> Result<QboQuery, ApiError> {
    let toks = lex(q)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end_col: q.chars().count() + 1,
    };
    p.keyword("SELECT")?;
    let count = match p.next()? {
        Tok::Star => false,
        t if t.is_kw("COUNT") => {
            p.expect(&Tok::LParen)?;
            p.expect(&Tok::Star)?;
            p.expect(&Tok::RParen)?;
            true
        }
        Tok::Word(_) => {
            return Err(parse_error(
                "the sandbox serves SELECT * and SELECT COUNT(*) only, not field lists",
            ))
        }
        _ => {
            p.pos -= 1;
            return Err(p.unexpected());
        }
    };
    p.keyword("FROM")?;
    let kind = match p.next()? {
        Tok::Word(w) => Kind::parse(&w).ok_or_else(|| {
            parse_error(format!(
                "Invalid entity '{w}': it is not a queryable entity"
            ))
        })?,
        _ => {
            p.pos -= 1;
            return Err(p.unexpected());
        }
    };
    let mut conds = Vec::new();
    if p.eat_kw("WHERE") {
        conds.push(p.cond(kind)?);
        while p.eat_kw("AND") {
            conds.push(p.cond(kind)?);
        }
    }
    let mut order = Vec::new();
    if p.eat_kw("ORDERBY") {
        loop {
            let f = p.field(kind)?;
            let desc = if p.eat_kw("DESC") {
                true
            } else {
                p.eat_kw("ASC");
                false
            };
            order.push((f, desc));
            if p.peek() != Some(&Tok::Comma) {
                break;
            }
            p.pos += 1;
        }
    }
    let (mut start, mut max) = (None, None);
    loop {
        if start.is_none() && p.eat_kw("STARTPOSITION") {
            start = Some(p.integer()?);
        } else if max.is_none() && p.eat_kw("MAXRESULTS") {
            max = Some(p.integer()?);
        } else {
            break;
        }
    }
    if p.peek().is_some() {
        return Err(p.unexpected());
    }
    let max = max.unwrap_or(DEFAULT_MAX_RESULTS);
    if max > MAX_RESULTS_LIMIT {
        return Err(query_invalid(format!(
            "value {max} is too large. Max allowed value is: {MAX_RESULTS_LIMIT}"
        )));
    }
    if max == 0 {
        return Err(query_invalid("MAXRESULTS must be at least 1"));
    }
    Ok(QboQuery {
        count,
        kind,
        conds,
        order,
        start: start.unwrap_or(1).max(1),
        max,
    })
}

/// A field of a row: dotted paths walk objects; a reference
/// (`CustomerRef`) compares by its `value`; `PrimaryEmailAddr` by its
/// `Address`.
fn field_value<'a>(row: &'a Row, field: &str) -> Option<&'a Value> {
    let mut parts = field.split('.');
    let mut v = row.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    match v {
        Value::Object(o) => o.get("value").or_else(|| o.get("Address")),
        other => Some(other),
    }
}

/// A time for comparisons: RFC 3339, a date-time without offset (UTC) or a
/// date (midnight UTC).
fn as_instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Compares a stored value with a literal; `None` when they cannot be
/// compared (the condition is then false). Strings compare
/// case-insensitively, as QuickBooks' queries do; times as times, numbers
/// as numbers.
fn compare(stored: &Value, lit: &Lit) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    let parse_bool = |s: &str| match s.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    match (stored, lit) {
        (Value::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Lit::Str(s)) => parse_bool(s).map(|b| a.cmp(&b)),
        (Value::Number(_), _) => {
            let a = dec(stored)?;
            let b = match lit {
                Lit::Num(d) => *d,
                Lit::Str(s) => Decimal::from_str(s.trim()).ok()?,
                Lit::Bool(_) => return None,
            };
            Some(a.cmp(&b))
        }
        (Value::String(a), Lit::Str(b)) => {
            if let (Some(x), Some(y)) = (as_instant(a), as_instant(b)) {
                return Some(x.cmp(&y));
            }
            if let (Ok(x), Ok(y)) = (Decimal::from_str(a), Decimal::from_str(b)) {
                return Some(x.cmp(&y));
            }
            Some(a.to_lowercase().cmp(&b.to_lowercase()))
        }
        (Value::String(a), Lit::Num(b)) => Decimal::from_str(a.trim()).ok().map(|x| x.cmp(b)),
        (Value::String(a), Lit::Bool(b)) => parse_bool(a).map(|x| x.cmp(b)),
        _ => None::<Ordering>,
    }
}

fn matches(row: &Row, cond: &Cond) -> bool {
    use std::cmp::Ordering::*;
    let Some(v) = field_value(row, cond.field()) else {
        return false;
    };
    match cond {
        Cond::Cmp(_, op, lit) => compare(v, lit).is_some_and(|o| match op {
            CmpOp::Eq => o == Equal,
            CmpOp::Ne => o != Equal,
            CmpOp::Lt => o == Less,
            CmpOp::Le => o != Greater,
            CmpOp::Gt => o == Greater,
            CmpOp::Ge => o != Less,
        }),
        Cond::In(_, list) => list.iter().any(|l| compare(v, l) == Some(Equal)),
        Cond::Like(_, pat) => {
            let Some(s) = v.as_str() else {
                return false;
            };
            let s = s.to_lowercase();
            let pat = pat.to_lowercase();
            let (front, rest) = match pat.strip_prefix('%') {
                Some(r) => (true, r),
                None => (false, pat.as_str()),
            };
            let (back, core) = match rest.strip_suffix('%') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            match (front, back) {
                (true, true) => s.contains(core),
                (true, false) => s.ends_with(core),
                (false, true) => s.starts_with(core),
                (false, false) => s == core,
            }
        }
    }
}

fn lit_of(v: &Value) -> Option<Lit> {
    match v {
        Value::Bool(b) => Some(Lit::Bool(*b)),
        Value::Number(_) => dec(v).map(Lit::Num),
        Value::String(s) => Some(Lit::Str(s.clone())),
        _ => None,
    }
}

/// Runs a query; answers the inner `QueryResponse` object.
fn run_query(t: &Tables, q: &QboQuery) -> Value {
    let mentions_active = q.conds.iter().any(|c| c.field() == "Active");
    let mut rows: Vec<&Row> = t
        .list(q.kind)
        .iter()
        .filter(|r| !q.kind.is_list() || mentions_active || is_active(r))
        .filter(|r| q.conds.iter().all(|c| matches(r, c)))
        .collect();
    if q.count {
        return json!({"totalCount": rows.len()});
    }
    // Rows are kept in creation order, which is ascending Id for the
    // writable entities (Ids are never reused): `ORDERBY Id` needs no sort,
    // which keeps paging through tens of thousands of rows cheap.
    let by_id = q.kind.writable() && q.order.len() == 1 && q.order[0] == ("Id", false);
    if !q.order.is_empty() && !by_id {
        rows.sort_by(|a, b| {
            for (f, desc) in &q.order {
                let o = match (field_value(a, f), field_value(b, f).and_then(lit_of)) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (Some(x), Some(y)) => compare(x, &y).unwrap_or(std::cmp::Ordering::Equal),
                };
                let o = if *desc { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let page: Vec<Value> = rows
        .into_iter()
        .skip((q.start - 1) as usize)
        .take(q.max as usize)
        .map(|r| Value::Object(r.clone()))
        .collect();
    if page.is_empty() {
        return json!({});
    }
    let n = page.len();
    let mut out = Map::new();
    out.insert(q.kind.name().into(), Value::Array(page));
    out.insert("startPosition".into(), json!(q.start));
    out.insert("maxResults".into(), json!(n));
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// Entities: validation and construction
// ---------------------------------------------------------------------------

/// Checks that relax when the sandbox seeds data for a test (a company
/// may hold what the API would refuse today).
#[derive(Clone, Copy)]
struct Checks {
    duplicate_doc: bool,
    strict: bool,
}

/// Fields the server owns: whatever the client sends for them is replaced.
const SERVER_FIELDS: [&str; 6] = ["Id", "SyncToken", "MetaData", "sparse", "domain", "status"];

fn bool_field(m: &Row, name: &str) -> Result<Option<bool>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(unsupported_property(format!("{name} (value {other})"))),
    }
}

/// A customer or vendor (one namespace of names).
fn build_party(t: &Tables, kind: Kind, mut m: Row, self_id: Option<&str>) -> Result<Row, ApiError> {
    let name = str_field(&m, "DisplayName")
        .map(str::to_string)
        .ok_or_else(|| required("DisplayName"))?;
    if name.chars().count() > 500 {
        return Err(string_length("DisplayName", 500, name.chars().count()));
    }
    if t.party_named(&name, self_id.map(|id| (kind, id))).is_some() {
        return Err(ApiError::validation(
            "6240",
            "Duplicate Name Exists Error",
            "The name supplied already exists. : Another customer, vendor or employee is already using this name. Please use a different name.".into(),
        ));
    }
    let active = bool_field(&m, "Active")?.unwrap_or(true);
    m.insert("DisplayName".into(), json!(name));
    m.insert("Active".into(), json!(active));
    m.entry("PrintOnCheckName").or_insert_with(|| json!(name));
    if kind == Kind::Customer {
        m.insert("FullyQualifiedName".into(), json!(name));
        m.entry("Job").or_insert(json!(false));
        m.entry("BillWithParent").or_insert(json!(false));
        m.entry("Taxable").or_insert(json!(true));
        m.entry("Balance").or_insert(json!(0.0));
        m.entry("BalanceWithJobs").or_insert(json!(0.0));
        m.entry("PreferredDeliveryMethod").or_insert(json!("Print"));
    } else {
        m.entry("Vendor1099").or_insert(json!(false));
        m.entry("Balance").or_insert(json!(0.0));
    }
    Ok(m)
}

fn string_length(field: &str, max: usize, got: usize) -> ApiError {
    ApiError::validation(
        "2050",
        "String length is either shorter or longer than supported by specification",
        format!("String length specified does not match the supported length. Min:0 Max:{max} supported. Supplied length:{got}"),
    )
    .element(field)
}

/// An account reference of an item: must name an existing, active account
/// of one of `types`.
fn account_ref(t: &Tables, m: &mut Row, field: &str, types: &[&str]) -> Result<(), ApiError> {
    let what = types.join(" or ");
    let id = ref_value(m.get(field)).ok_or_else(|| {
        business(format!(
            "{field} is required for this item: reference an {what} account"
        ))
        .element(field)
    })?;
    let acct = t
        .get(Kind::Account, &id)
        .filter(|a| is_active(a))
        .filter(|a| {
            a.get("AccountType")
                .and_then(Value::as_str)
                .is_some_and(|ty| types.contains(&ty))
        })
        .ok_or_else(|| {
            business(format!(
                "{field} {id} is not an {what} account of this company"
            ))
            .element(field)
        })?;
    let name = acct.get("Name").cloned().unwrap_or(Value::Null);
    m.insert(field.into(), json!({"value": id, "name": name}));
    Ok(())
}

fn build_item(t: &Tables, mut m: Row, self_id: Option<&str>) -> Result<Row, ApiError> {
    let name = str_field(&m, "Name")
        .map(str::to_string)
        .ok_or_else(|| required("Name"))?;
    if name.chars().count() > 100 {
        return Err(string_length("Name", 100, name.chars().count()));
    }
    if t.item_named(&name, self_id).is_some() {
        return Err(ApiError::validation(
            "6240",
            "Duplicate Name Exists Error",
            "The name supplied already exists. : Another product or service is already using this name. Please use a different name.".into(),
        ));
    }
    let ty = str_field(&m, "Type").map(str::to_string).ok_or_else(|| {
        business("Type is required: Service, NonInventory or Inventory").element("Type")
    })?;
    let ty = ["Service", "NonInventory", "Inventory"]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(&ty))
        .ok_or_else(|| {
            business(format!(
                "Type {ty} is not supported: use Service, NonInventory or Inventory"
            ))
            .element("Type")
        })?;
    if let Some(sku) = m.get("Sku") {
        if !sku.is_string() && !sku.is_null() {
            return Err(unsupported_property(format!("Sku (value {sku})")));
        }
    }
    account_ref(t, &mut m, "IncomeAccountRef", &["Income", "Other Income"])?;
    if ty == "Inventory" {
        account_ref(t, &mut m, "AssetAccountRef", &["Other Current Asset"])?;
        account_ref(
            t,
            &mut m,
            "ExpenseAccountRef",
            &["Cost of Goods Sold", "Expense"],
        )?;
        for f in ["QtyOnHand", "InvStartDate"] {
            if m.get(f).is_none_or(Value::is_null) {
                return Err(required(f));
            }
        }
        m.insert("TrackQtyOnHand".into(), json!(true));
    } else {
        m.entry("TrackQtyOnHand").or_insert(json!(false));
    }
    let active = bool_field(&m, "Active")?.unwrap_or(true);
    m.insert("Name".into(), json!(name));
    m.insert("FullyQualifiedName".into(), json!(name));
    m.insert("Type".into(), json!(ty));
    m.insert("Active".into(), json!(active));
    m.entry("UnitPrice").or_insert(json!(0));
    m.entry("Taxable").or_insert(json!(false));
    Ok(m)
}

/// Tax codes a line may carry.
fn valid_tax_codes(us_company: bool) -> &'static [&'static str] {
    if us_company {
        &["TAX", "NON"]
    } else {
        &[VAT_CODE, ZERO_CODE]
    }
}

fn build_invoice(
    t: &Tables,
    us_company: bool,
    checks: Checks,
    mut m: Row,
    self_id: Option<&str>,
) -> Result<Row, ApiError> {
    // Customer: must exist and be active.
    let cust_id = ref_value(m.get("CustomerRef")).ok_or_else(|| required("CustomerRef"))?;
    let customer = t
        .get(Kind::Customer, &cust_id)
        .ok_or_else(|| invalid_ref(Kind::Customer, &cust_id, "CustomerRef"))?;
    let cust_name = customer.get("DisplayName").cloned().unwrap_or(Value::Null);
    if checks.strict && !is_active(customer) {
        return Err(not_found(format!(
            "{INACTIVE_DETAIL} (Customer Id={cust_id}, DisplayName={})",
            cust_name.as_str().unwrap_or("")
        ))
        .element("CustomerRef"));
    }
    m.insert(
        "CustomerRef".into(),
        json!({"value": cust_id, "name": cust_name}),
    );

    // Document number: length, then duplicates (when the company checks).
    match m.get("DocNumber") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) => {
            let len = d.chars().count();
            if checks.strict && len > DOC_NUMBER_MAX {
                return Err(string_length("DocNumber", DOC_NUMBER_MAX, len));
            }
            if checks.duplicate_doc {
                let clash = t.list(Kind::Invoice).iter().find(|r| {
                    Some(row_id(r)) != self_id
                        && r.get("DocNumber").and_then(Value::as_str) == Some(d.as_str())
                });
                if let Some(other) = clash {
                    return Err(ApiError::validation(
                        "6140",
                        "Duplicate Document Number Error",
                        format!("Duplicate Document Number Error : You must specify a different number. This number has already been used. DocNumber={d} is assigned to TxnType=Invoice with TxnId={}", row_id(other)),
                    ));
                }
            }
        }
        Some(other) => return Err(unsupported_property(format!("DocNumber (value {other})"))),
    }

    // Dates.
    let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
    for f in ["TxnDate", "DueDate"] {
        match m.get(f) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {}
            Some(other) => return Err(unsupported_property(format!("{f} (value {other})"))),
        }
    }
    if m.get("TxnDate").is_none_or(Value::is_null) {
        m.insert("TxnDate".into(), json!(today));
    }

    // Tax mode.
    let gtc = match m.get("GlobalTaxCalculation") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            ["TaxExcluded", "TaxInclusive", "NotApplicable"]
                .into_iter()
                .find(|k| k == s)
                .ok_or_else(|| unsupported_property(format!("GlobalTaxCalculation (value {s})")))?,
        ),
        Some(other) => {
            return Err(unsupported_property(format!(
                "GlobalTaxCalculation (value {other})"
            )))
        }
    };
    let gtc = match (gtc, us_company) {
        (Some(g), _) => Some(g),
        // QuickBooks outside the US works tax-excluded unless told otherwise.
        (None, false) => Some("TaxExcluded"),
        (None, true) => None,
    };
    if let Some(g) = gtc {
        m.insert("GlobalTaxCalculation".into(), json!(g));
    }
    let needs_tax_code = !us_company && gtc != Some("NotApplicable");

    // Lines.
    let lines = match m.get("Line") {
        Some(Value::Array(a)) => a.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => return Err(unsupported_property(format!("Line (value {other})"))),
    };
    let mut out_lines = Vec::new();
    let mut subtotal = Decimal::ZERO;
    let mut vat_base = Decimal::ZERO;
    let mut line_no = 0u32;
    for line in lines {
        let Value::Object(mut line) = line else {
            return Err(unsupported_property("Line (not an object)"));
        };
        let detail_type = str_field(&line, "DetailType")
            .map(str::to_string)
            .ok_or_else(|| required("Line.DetailType"))?;
        match detail_type.as_str() {
            // QuickBooks computes the subtotal line itself.
            "SubTotalLineDetail" => continue,
            "DescriptionOnly" => {
                line.remove("Amount");
            }
            "SalesItemLineDetail" => {
                let Some(Value::Object(mut detail)) = line.get("SalesItemLineDetail").cloned()
                else {
                    return Err(required("Line.SalesItemLineDetail"));
                };
                let item_id = ref_value(detail.get("ItemRef"))
                    .ok_or_else(|| required("Line.SalesItemLineDetail.ItemRef"))?;
                let item = t
                    .get(Kind::Item, &item_id)
                    .ok_or_else(|| invalid_ref(Kind::Item, &item_id, "ItemRef"))?;
                if checks.strict && !is_active(item) {
                    return Err(not_found(format!(
                        "{INACTIVE_DETAIL} (Item Id={item_id})"
                    ))
                    .element("ItemRef"));
                }
                let item_name = item.get("Name").cloned().unwrap_or(Value::Null);
                detail.insert("ItemRef".into(), json!({"value": item_id, "name": item_name}));
                if let Some(acct) = item.get("IncomeAccountRef") {
                    detail
                        .entry("ItemAccountRef")
                        .or_insert_with(|| acct.clone());
                }
                let amount = match line.get("Amount") {
                    None | Some(Value::Null) => return Err(required("Line.Amount")),
                    Some(v) => dec(v).ok_or_else(|| {
                        unsupported_property(format!("Line.Amount (value {v})"))
                    })?,
                };
                let qty = detail.get("Qty").filter(|v| !v.is_null());
                let price = detail.get("UnitPrice").filter(|v| !v.is_null());
                if let (Some(q), Some(p)) = (qty, price) {
                    let q = dec(q)
                        .ok_or_else(|| unsupported_property(format!("Qty (value {q})")))?;
                    let p = dec(p)
                        .ok_or_else(|| unsupported_property(format!("UnitPrice (value {p})")))?;
                    // A whole cent off is an error; sub-cent rounding is not.
                    if (q * p - amount).abs() >= Decimal::new(1, 2) {
                        return Err(business(format!(
                            "Amount is not equal to UnitPrice * Qty. Supplied value:{amount}"
                        ))
                        .element("Line.Amount"));
                    }
                }
                match ref_value(detail.get("TaxCodeRef")) {
                    Some(code) if !valid_tax_codes(us_company).contains(&code.as_str()) => {
                        return Err(invalid_ref(Kind::TaxCode, &code, "TaxCodeRef"));
                    }
                    Some(code) => {
                        if code == VAT_CODE && !us_company {
                            vat_base += amount;
                        }
                        detail.insert("TaxCodeRef".into(), json!({"value": code}));
                    }
                    None if needs_tax_code && checks.strict => {
                        return Err(business(
                            "Make sure all your transactions have a VAT rate before you save.",
                        ));
                    }
                    None => {}
                }
                subtotal += amount;
                line.insert("Amount".into(), num(amount));
                line.insert("SalesItemLineDetail".into(), Value::Object(detail));
            }
            other => {
                return Err(business(format!(
                    "Line DetailType {other} is not supported by the sandbox: use SalesItemLineDetail or DescriptionOnly"
                )))
            }
        }
        line_no += 1;
        line.entry("Id")
            .or_insert_with(|| json!(line_no.to_string()));
        line.insert("LineNum".into(), json!(line_no));
        out_lines.push(Value::Object(line));
    }
    if out_lines.is_empty() {
        return Err(business("You must fill out at least one split line.").element("Line"));
    }
    out_lines.push(
        json!({"Amount": num(subtotal), "DetailType": "SubTotalLineDetail",
                          "SubTotalLineDetail": {}}),
    );

    // Totals: tax-excluded adds the VAT; tax-inclusive amounts already hold it.
    let rate = Decimal::new(VAT_PERCENT, 0);
    let hundred = Decimal::new(100, 0);
    let (tax, total) = match gtc {
        _ if us_company => (Decimal::ZERO, subtotal),
        Some("TaxExcluded") => {
            let tax = round2(vat_base * rate / hundred);
            (tax, subtotal + tax)
        }
        Some("TaxInclusive") => (round2(vat_base * rate / (hundred + rate)), subtotal),
        _ => (Decimal::ZERO, subtotal),
    };
    m.insert("Line".into(), Value::Array(out_lines));
    let mut tax_detail = match m.get("TxnTaxDetail") {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    tax_detail.insert("TotalTax".into(), num(tax));
    m.insert("TxnTaxDetail".into(), Value::Object(tax_detail));
    m.insert("TotalAmt".into(), num(total));
    m.insert("Balance".into(), num(total));
    Ok(m)
}

/// Create (no `Id`) or update (`Id` and `SyncToken`; `"sparse": true`
/// merges into the stored entity, otherwise the body replaces it).
fn upsert(db: &mut Db, kind: Kind, body: Value, checks: Option<Checks>) -> Result<Row, ApiError> {
    let Value::Object(body) = body else {
        return Err(unsupported_property(format!(
            "{} (the body must be a JSON object)",
            kind.name()
        )));
    };
    let checks = checks.unwrap_or(Checks {
        duplicate_doc: db.duplicate_doc_check,
        strict: true,
    });
    let id = match body.get("Id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(unsupported_property(format!("Id (value {other})"))),
    };
    let now = meta_now();
    let (content, id, sync, created) = match id {
        None => {
            let mut content = body;
            for f in SERVER_FIELDS {
                content.remove(f);
            }
            (content, None, 0u64, now.clone())
        }
        Some(id) => {
            let old = db.tables.get(kind, &id).cloned().ok_or_else(|| {
                not_found(format!(
                    "Object Not Found : {} Id={id} does not exist (or was deleted)",
                    kind.name()
                ))
            })?;
            let sent = match body.get("SyncToken") {
                Some(Value::String(s)) => s.trim().to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(required("SyncToken")),
            };
            let current = old.get("SyncToken").and_then(Value::as_str).unwrap_or("0");
            if sent != current {
                return Err(ApiError::validation(
                    "5010",
                    "Stale Object Error",
                    format!("Stale Object Error : You and sandbox were working on this at the same time. sandbox finished before you did, so your work was not saved. (SyncToken {sent} is not the current {current})"),
                ));
            }
            let sparse = body.get("sparse").and_then(Value::as_bool) == Some(true);
            let mut content = if sparse { old.clone() } else { Map::new() };
            for (k, v) in body {
                content.insert(k, v);
            }
            for f in SERVER_FIELDS {
                content.remove(f);
            }
            let created = old
                .get("MetaData")
                .and_then(|md| md.get("CreateTime"))
                .and_then(Value::as_str)
                .unwrap_or(&now)
                .to_string();
            let sync = current.parse::<u64>().unwrap_or(0) + 1;
            (content, Some(id), sync, created)
        }
    };
    let built = match kind {
        Kind::Customer | Kind::Vendor => build_party(&db.tables, kind, content, id.as_deref())?,
        Kind::Item => build_item(&db.tables, content, id.as_deref())?,
        Kind::Invoice => build_invoice(
            &db.tables,
            db.opts.us_company,
            checks,
            content,
            id.as_deref(),
        )?,
        other => {
            return Err(unsupported_operation(&format!(
                "create on {}",
                other.name()
            )))
        }
    };
    let id = id.unwrap_or_else(|| db.tables.next_id(kind));
    let mut row = Map::new();
    row.insert("Id".into(), json!(id));
    row.insert("SyncToken".into(), json!(sync.to_string()));
    row.insert(
        "MetaData".into(),
        json!({"CreateTime": created, "LastUpdatedTime": now}),
    );
    for (k, v) in built {
        row.entry(k).or_insert(v);
    }
    row.insert("domain".into(), json!("QBO"));
    row.insert("sparse".into(), json!(false));
    db.tables.put(kind, row.clone());
    Ok(row)
}

// ---------------------------------------------------------------------------
// Accounting API
// ---------------------------------------------------------------------------

/// What an API call answers.
enum Reply {
    Json(StatusCode, Value),
    /// The gateway's 401 (3200) with this detail.
    Unauthenticated(String),
    Throttled,
}

impl Reply {
    fn err(e: ApiError) -> Reply {
        Reply::Json(e.status, e.body())
    }

    fn into_response(self) -> Response {
        match self {
            Reply::Json(status, v) => json_response(status, &v),
            Reply::Unauthenticated(detail) => gateway_401(&detail),
            Reply::Throttled => throttled_response(),
        }
    }
}

/// The operation a path names (below `/v3/company/{realm}/`).
enum Op {
    Query,
    Batch,
    Cdc,
    /// `POST /{entity}`: create or update.
    Write(Kind),
    /// `GET /{entity}/{id}`.
    Read(Kind, String),
    Unsupported(String),
    NotFound,
}

fn op_of(method: &Method, rest: &[&str]) -> Op {
    let is_get = method == Method::GET;
    let is_post = method == Method::POST;
    match rest {
        [one] if one.eq_ignore_ascii_case("query") && (is_get || is_post) => Op::Query,
        [one] if one.eq_ignore_ascii_case("batch") && is_post => Op::Batch,
        [one] if one.eq_ignore_ascii_case("cdc") && is_get => Op::Cdc,
        [one]
            if ["query", "batch", "cdc"]
                .iter()
                .any(|s| one.eq_ignore_ascii_case(s)) =>
        {
            Op::Unsupported(format!("{method} {one}"))
        }
        [entity] => match Kind::parse(entity) {
            Some(k) if k.writable() && is_post => Op::Write(k),
            Some(k) => Op::Unsupported(format!("{method} {}", k.name())),
            None => Op::NotFound,
        },
        [entity, id] => match Kind::parse(entity) {
            Some(k) if is_get => Op::Read(k, id.to_string()),
            Some(k) => Op::Unsupported(format!("{method} {}/{id}", k.name())),
            None => Op::NotFound,
        },
        _ => Op::NotFound,
    }
}

/// Checks the bearer token against the path's realm.
fn authenticate(db: &Db, headers: &HeaderMap, realm: &str, now: Instant) -> Result<(), Reply> {
    let auth = header_str(headers, header::AUTHORIZATION).trim();
    let token = match auth.split_once(' ') {
        Some((scheme, tok)) if scheme.eq_ignore_ascii_case("bearer") && !tok.trim().is_empty() => {
            tok.trim()
        }
        _ => {
            return Err(Reply::Unauthenticated(
                "Token invalid: no bearer token in the Authorization header".into(),
            ))
        }
    };
    let short: String = token.chars().take(12).collect();
    let Some(rec) = db.access.get(token) else {
        return Err(Reply::Unauthenticated(format!("Token invalid: {short}...")));
    };
    let grant = &db.grants[rec.grant];
    if grant.revoked {
        return Err(Reply::Unauthenticated(format!("Token revoked: {short}...")));
    }
    if rec.killed || now >= rec.expires {
        return Err(Reply::Unauthenticated(format!("Token expired: {short}...")));
    }
    if grant.realm != realm {
        return Err(Reply::Json(
            StatusCode::FORBIDDEN,
            forbidden_3100_body(&format!(
                "The access token was issued for another company than realm {realm}"
            )),
        ));
    }
    Ok(())
}

/// One API request, all of it under the state lock: the gateway checks,
/// then the idempotent replay or the operation itself. Holding the lock
/// throughout makes a `requestid` atomic, as it is at Intuit.
fn api_call(
    db: &mut Db,
    method: &Method,
    path: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let now = Instant::now();
    if param(params, "minorversion") != Some(MINOR_VERSION) {
        db.missing_minorversion += 1;
    }
    if !accepts_json(headers) {
        db.missing_accept_json += 1;
    }
    let segments: Vec<&str> = path
        .strip_prefix("/v3/company/")
        .map(|r| r.split('/').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let Some((realm, rest)) = segments.split_first() else {
        // No company in the path: the gateway still wants a token first.
        if let Err(r) = authenticate(db, headers, &db.opts.realm_id, now) {
            return r;
        }
        return not_found_reply(path);
    };
    if let Err(r) = authenticate(db, headers, realm, now) {
        return r;
    }
    let op = op_of(method, rest);
    let is_batch = matches!(op, Op::Batch);
    let limits = db.opts.limits.clone();
    if !db
        .windows
        .entry(realm.to_string())
        .or_default()
        .admit(now, is_batch, &limits)
    {
        db.throttled += 1;
        return Reply::Throttled;
    }
    let request_id = param(params, "requestid");
    if let Some(rid) = request_id {
        let max = if is_batch {
            MAX_BATCH_REQUESTID
        } else {
            MAX_REQUESTID
        };
        if rid.chars().count() > max {
            return Reply::err(business(format!(
                "requestid is too long: {} characters, at most {max} are allowed{}",
                rid.chars().count(),
                if is_batch { " for a batch" } else { "" }
            )));
        }
    }
    // Only writes are replayed: reads are idempotent anyway.
    let replay_key = request_id
        .filter(|_| method == Method::POST)
        .map(|rid| (realm.to_string(), rid.to_string()));
    if let Some(key) = &replay_key {
        if let Some((status, v)) = db.replies.get(key) {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("time".into(), json!(time_now()));
            }
            let status = *status;
            db.requestid_replays += 1;
            return Reply::Json(status, v);
        }
    }
    let (status, v) = match run_op(db, op, params, body) {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => (e.status, e.body()),
    };
    if let Some(key) = replay_key {
        db.replies.insert(key, (status, v.clone()));
    }
    Reply::Json(status, v)
}

fn not_found_reply(path: &str) -> Reply {
    Reply::Json(
        StatusCode::NOT_FOUND,
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ValidationFault",
            "404",
            "Resource not found",
            format!("The resource {path} does not exist"),
        )
        .body(),
    )
}

fn with_time(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("time".into(), json!(time_now()));
    }
    v
}

fn run_op(
    db: &mut Db,
    op: Op,
    params: &[(String, String)],
    body: &[u8],
) -> Result<Value, ApiError> {
    match op {
        Op::Query => {
            // POSTed queries come as `application/text` (or text/plain);
            // GET carries them in `query`.
            let text = if body.iter().all(u8::is_ascii_whitespace) {
                param(params, "query").unwrap_or("").to_string()
            } else {
                String::from_utf8_lossy(body).into_owned()
            };
            let q = parse_query(&text)?;
            Ok(json!({"QueryResponse": run_query(&db.tables, &q), "time": time_now()}))
        }
        Op::Write(kind) => {
            let v = parse_json_body(body, kind)?;
            let row = upsert(db, kind, v, None)?;
            let mut out = Map::new();
            out.insert(kind.name().into(), Value::Object(row));
            Ok(with_time(Value::Object(out)))
        }
        Op::Read(kind, id) => {
            let row = db.tables.get(kind, &id).cloned().ok_or_else(|| {
                not_found(format!(
                    "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees. ({} Id={id} not found)",
                    kind.name()
                ))
            })?;
            let mut out = Map::new();
            out.insert(kind.name().into(), Value::Object(row));
            Ok(with_time(Value::Object(out)))
        }
        Op::Batch => batch(db, body),
        Op::Cdc => cdc(db, params),
        Op::Unsupported(what) => Err(unsupported_operation(&what)),
        Op::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ValidationFault",
            "404",
            "Resource not found",
            "The requested resource does not exist".into(),
        )),
    }
}

fn parse_json_body(body: &[u8], kind: Kind) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(unsupported_property(format!(
            "{} (the body must be a JSON object)",
            kind.name()
        ))),
        Err(e) => Err(unsupported_property(format!("{} ({e})", kind.name()))),
    }
}

/// `POST /batch`: items run in order, each against the state the earlier
/// items left (so two items with one `DocNumber` give a 6140 for the
/// second); no item can refer to another's result.
fn batch(db: &mut Db, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| unsupported_property(format!("BatchItemRequest ({e})")))?;
    let items = match v.get("BatchItemRequest") {
        Some(Value::Array(a)) => a.clone(),
        _ => return Err(required("BatchItemRequest")),
    };
    if items.len() > MAX_BATCH_ITEMS {
        return Err(business(format!(
            "The batch request has {} items: at most {MAX_BATCH_ITEMS} are allowed in one batch",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let bid = match item.get("bId") {
            Some(Value::String(s)) => json!(s),
            Some(Value::Number(n)) => json!(n.to_string()),
            _ => Value::Null,
        };
        let mut resp = Map::new();
        resp.insert("bId".into(), bid.clone());
        let result = if bid.is_null() {
            Err(required("bId"))
        } else {
            batch_item(db, &item)
        };
        match result {
            Ok((key, value)) => {
                resp.insert(key, value);
            }
            Err(e) => {
                resp.insert("Fault".into(), e.fault);
            }
        }
        out.push(Value::Object(resp));
    }
    Ok(json!({"BatchItemResponse": out, "time": time_now()}))
}

fn batch_item(db: &mut Db, item: &Value) -> Result<(String, Value), ApiError> {
    if let Some(q) = item.get("Query") {
        let q = q
            .as_str()
            .ok_or_else(|| unsupported_property("Query (not a string)"))?;
        let q = parse_query(q)?;
        return Ok(("QueryResponse".into(), run_query(&db.tables, &q)));
    }
    let obj = item
        .as_object()
        .ok_or_else(|| unsupported_property("BatchItemRequest (not an object)"))?;
    let (kind, entity) = obj
        .iter()
        .find_map(|(k, v)| Kind::parse(k).filter(|k| k.writable()).map(|k| (k, v)))
        .ok_or_else(|| required("Customer, Vendor, Item, Invoice or Query"))?;
    let operation = obj
        .get("operation")
        .and_then(Value::as_str)
        .ok_or_else(|| required("operation"))?;
    let mut entity = entity.clone();
    match operation {
        "create" => {
            if let Some(o) = entity.as_object_mut() {
                o.remove("Id");
            }
        }
        "update" => {
            if entity.get("Id").is_none() {
                return Err(required("Id"));
            }
        }
        other => return Err(unsupported_operation(&format!("{other} {}", kind.name()))),
    }
    let row = upsert(db, kind, entity, None)?;
    Ok((kind.name().into(), Value::Object(row)))
}

/// `GET /cdc?entities=...&changedSince=...`.
fn cdc(db: &Db, params: &[(String, String)]) -> Result<Value, ApiError> {
    let entities = param(params, "entities")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| required("entities"))?;
    let since_raw = param(params, "changedSince")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| required("changedSince"))?;
    // An unencoded `+` of an offset arrives as a space: be forgiving.
    let since = as_instant(since_raw)
        .or_else(|| as_instant(&since_raw.replace(' ', "+")))
        .ok_or_else(|| {
            business(format!(
                "changedSince {since_raw} is not a valid ISO 8601 date or date-time"
            ))
        })?;
    if since < Utc::now() - chrono::Duration::days(CDC_MAX_DAYS) {
        return Err(business(format!(
            "changedSince {since_raw} is more than {CDC_MAX_DAYS} days in the past: change data capture only goes back {CDC_MAX_DAYS} days"
        )));
    }
    let mut responses = Vec::new();
    let mut room = CDC_MAX_OBJECTS;
    for name in entities.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind = Kind::parse(name)
            .ok_or_else(|| business(format!("Invalid entity {name} in entities")))?;
        let changed_at = |r: &Row| {
            field_value(r, "MetaData.LastUpdatedTime")
                .and_then(Value::as_str)
                .and_then(as_instant)
        };
        let mut changed: Vec<(DateTime<Utc>, &Row)> = db
            .tables
            .list(kind)
            .iter()
            .chain(db.tables.deleted[kind.index()].iter())
            .filter_map(|r| changed_at(r).filter(|t| *t >= since).map(|t| (t, r)))
            .collect();
        // Oldest first; what does not fit the answer's 1,000 is left out.
        changed.sort_by_key(|(t, _)| *t);
        changed.truncate(room);
        room -= changed.len();
        let changed: Vec<Value> = changed
            .into_iter()
            .map(|(_, r)| Value::Object(r.clone()))
            .collect();
        let mut qr = Map::new();
        if !changed.is_empty() {
            let n = changed.len();
            qr.insert(kind.name().into(), Value::Array(changed));
            qr.insert("startPosition".into(), json!(1));
            qr.insert("maxResults".into(), json!(n));
        }
        responses.push(Value::Object(qr));
    }
    Ok(json!({"CDCResponse": [{"QueryResponse": responses}], "time": time_now()}))
}

/// Every `/v3/...` request (and unknown paths, through the fallback).
async fn api_entry(State(sh): State<Sh>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if !parts.uri.path().starts_with("/v3/") {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "path": parts.uri.path()}),
        );
    }
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return Reply::err(business(format!(
                "the request body is larger than {BODY_LIMIT} bytes"
            )))
            .into_response()
        }
    };
    let params = query_params(&parts.uri);
    let reply = {
        let mut db = sh.db();
        api_call(
            &mut db,
            &parts.method,
            parts.uri.path(),
            &params,
            &parts.headers,
            &body,
        )
    };
    reply.into_response()
}

// ---------------------------------------------------------------------------
// OAuth 2.0
// ---------------------------------------------------------------------------

fn authorize_error(problem: &str) -> Response {
    html_response(
        StatusCode::BAD_REQUEST,
        &format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Intuit - Authorization error</title>\n</head>\n<body>\n<h1>We can't connect this app</h1>\n<p class=\"error\">{}</p>\n</body>\n</html>\n",
            html_escape(problem)
        ),
    )
}

/// `redirect_uri` with `params` added to its query (keeping its own
/// query, before any fragment).
fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let (base, fragment) = match redirect_uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (redirect_uri, None),
    };
    let mut out = base.to_string();
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    out.push_str(sep);
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", pct_encode(v)))
        .collect();
    out.push_str(&query.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn issue_code_locked(db: &mut Db, redirect_uri: &str) -> String {
    let code = new_code();
    db.codes.insert(
        code.clone(),
        AuthCode {
            redirect_uri: redirect_uri.to_string(),
            issued: Instant::now(),
            grant: None,
        },
    );
    code
}

/// `GET /connect/oauth2`: the user approves at once.
async fn authorize(State(sh): State<Sh>, req: Request) -> Response {
    let params = query_params(req.uri());
    let get = |k: &str| param(&params, k).map(str::trim).filter(|v| !v.is_empty());
    let mut db = sh.db();
    match get("client_id") {
        None => return authorize_error("The client_id parameter is missing."),
        Some(id) if id != db.opts.client_id => {
            return authorize_error(&format!("Unknown client_id {id}: no app has this id."))
        }
        _ => {}
    }
    match get("response_type") {
        Some("code") => {}
        None => return authorize_error("The response_type parameter is missing: use code."),
        Some(other) => {
            return authorize_error(&format!(
                "Unsupported response_type {other}: only code is supported."
            ))
        }
    }
    let scope = get("scope").unwrap_or("");
    if !scope.split_whitespace().any(|s| s == ACCOUNTING_SCOPE) {
        return authorize_error(&format!(
            "The scope \"{scope}\" does not include {ACCOUNTING_SCOPE}."
        ));
    }
    let Some(redirect_uri) = get("redirect_uri") else {
        return authorize_error("The redirect_uri parameter is missing.");
    };
    if !(redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://")) {
        return authorize_error(&format!(
            "The redirect_uri {redirect_uri} is not an absolute http(s) URL."
        ));
    }
    let Some(state) = get("state") else {
        return authorize_error(
            "The state parameter is missing: it is required (CSRF protection).",
        );
    };
    let code = issue_code_locked(&mut db, redirect_uri);
    let realm = db.opts.realm_id.clone();
    drop(db);
    let location = redirect_with(
        redirect_uri,
        &[("code", &code), ("state", state), ("realmId", &realm)],
    );
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => authorize_error("The redirect_uri contains characters that cannot be used."),
    }
}

/// Whether the request authenticates the known client (HTTP Basic).
fn client_ok(db: &Db, headers: &HeaderMap) -> bool {
    let auth = header_str(headers, header::AUTHORIZATION).trim();
    let Some((scheme, cred)) = auth.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(cred.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(raw) else {
        return false;
    };
    text.split_once(':')
        .is_some_and(|(id, secret)| id == db.opts.client_id && secret == db.opts.client_secret)
}

/// Issues a new pair for `grant`; the grant's previous latest refresh
/// token dies now (strict) or after the grace period.
fn issue_pair(db: &mut Db, grant: usize, now: Instant, include_hard: bool) -> Value {
    let dies_at = match db.opts.rotation {
        Rotation::Strict => now,
        Rotation::Grace(d) => now + d,
    };
    for rec in db.refresh.values_mut() {
        if rec.grant == grant && rec.dies_at.is_none() {
            rec.dies_at = Some(dies_at);
        }
    }
    let access = new_access_token();
    let refresh = new_refresh_token();
    let access_life = db.opts.access_token_lifetime;
    let refresh_life = db.opts.refresh_token_lifetime;
    db.access.insert(
        access.clone(),
        AccessRec {
            grant,
            expires: now + access_life,
            killed: false,
        },
    );
    db.refresh.insert(
        refresh.clone(),
        RefreshRec {
            grant,
            issued: now,
            expires: now + refresh_life,
            dies_at: None,
        },
    );
    db.latest_refresh = Some(refresh.clone());
    let hard_left = db.grants[grant].hard_expiry.saturating_duration_since(now);
    let mut v = json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "bearer",
        "expires_in": access_life.as_secs(),
        "x_refresh_token_expires_in": refresh_life.min(hard_left).as_secs(),
    });
    if include_hard {
        v["x_refresh_token_hard_expires_in"] = json!(hard_left.as_secs());
    }
    v
}

fn invalid_grant(db: &mut Db, description: &str) -> Response {
    db.counts.invalid_grant += 1;
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", Some(description))
}

/// `POST /oauth2/v1/tokens/bearer`.
async fn token_endpoint(State(sh): State<Sh>, headers: HeaderMap, body: Bytes) -> Response {
    let form = form_decode(&body);
    let get = |k: &str| param(&form, k).map(str::trim).filter(|v| !v.is_empty());
    let include_hard = header_str(&headers, "x-include-refresh-token-hard-expires-in")
        .trim()
        .eq_ignore_ascii_case("true");
    let now = Instant::now();
    let mut db = sh.db();
    if !accepts_json(&headers) {
        db.token_missing_accept_json += 1;
    }
    if !client_ok(&db, &headers) {
        db.counts.invalid_client += 1;
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", None);
    }
    match get("grant_type") {
        Some("authorization_code") => {
            let Some(code) = get("code") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("code is required"),
                );
            };
            let redirect_uri = get("redirect_uri").unwrap_or("");
            let Some(rec) = db.codes.get(code) else {
                return invalid_grant(&mut db, "Invalid authorization code");
            };
            if let Some(g) = rec.grant {
                // A second exchange spoils what the first one issued.
                db.grants[g].revoked = true;
                return invalid_grant(&mut db, "Authorization code has already been used");
            }
            if now.saturating_duration_since(rec.issued) >= CODE_LIFETIME {
                return invalid_grant(&mut db, "Authorization code expired");
            }
            if rec.redirect_uri != redirect_uri {
                return invalid_grant(
                    &mut db,
                    "redirect_uri does not match the one of the authorization request",
                );
            }
            let hard_expiry = rec.issued + db.opts.hard_expiry;
            let grant = db.grants.len();
            let realm = db.opts.realm_id.clone();
            db.grants.push(Grant {
                realm,
                hard_expiry,
                revoked: false,
            });
            if let Some(rec) = db.codes.get_mut(code) {
                rec.grant = Some(grant);
            }
            db.counts.codes_exchanged += 1;
            let v = issue_pair(&mut db, grant, now, include_hard);
            json_response(StatusCode::OK, &v)
        }
        Some("refresh_token") => {
            let Some(token) = get("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("refresh_token is required"),
                );
            };
            if let Some(problem) = refresh_problem(&db, token, now) {
                return invalid_grant(&mut db, problem);
            }
            let grant = db.refresh.get(token).map_or(0, |r| r.grant);
            db.counts.refreshes_ok += 1;
            let v = issue_pair(&mut db, grant, now, include_hard);
            json_response(StatusCode::OK, &v)
        }
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("grant_type is required"),
        ),
        Some(other) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            Some(&format!("grant_type {other} is not supported")),
        ),
    }
}

/// `POST /v2/oauth2/tokens/revoke`: revokes the token's whole grant.
async fn revoke_endpoint(State(sh): State<Sh>, headers: HeaderMap, body: Bytes) -> Response {
    let mut db = sh.db();
    if !client_ok(&db, &headers) {
        db.counts.invalid_client += 1;
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", None);
    }
    // JSON as documented; a form body is tolerated.
    let token = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => v.get("token").and_then(Value::as_str).map(str::to_string),
        Err(_) => param(&form_decode(&body), "token").map(str::to_string),
    };
    let Some(token) = token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("token is required"),
        );
    };
    let grant = db
        .refresh
        .get(&token)
        .map(|r| r.grant)
        .or_else(|| db.access.get(&token).map(|a| a.grant));
    if let Some(g) = grant {
        if !db.grants[g].revoked {
            db.grants[g].revoked = true;
            db.counts.revoked += 1;
        }
    }
    // Unknown or already revoked: 200 all the same (revocation is idempotent).
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::OK;
    r
}

// ---------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------

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
// Control API
// ---------------------------------------------------------------------------

fn rotation_json(r: Rotation) -> Value {
    match r {
        Rotation::Strict => json!("strict"),
        Rotation::Grace(d) => json!({"grace_secs": d.as_secs_f64()}),
    }
}

fn settings_json(db: &Db) -> Value {
    json!({
        "realm_id": db.opts.realm_id,
        "us_company": db.opts.us_company,
        "rotation": rotation_json(db.opts.rotation),
        "access_token_lifetime_secs": db.opts.access_token_lifetime.as_secs(),
        "refresh_token_lifetime_secs": db.opts.refresh_token_lifetime.as_secs(),
        "hard_expiry_secs": db.opts.hard_expiry.as_secs(),
        "limits": db.opts.limits.to_json(),
        "duplicate_doc_check": db.duplicate_doc_check,
    })
}

fn parse_rotation(v: &Value) -> Result<Rotation, (StatusCode, String)> {
    let msg = "\"rotation\" must be \"strict\" or {\"grace_secs\": n}";
    match v {
        Value::String(s) if s.eq_ignore_ascii_case("strict") => Ok(Rotation::Strict),
        Value::Object(o) => {
            let secs = o
                .get("grace_secs")
                .and_then(Value::as_f64)
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                .ok_or_else(|| bad_request(msg))?;
            Ok(Rotation::Grace(Duration::from_secs_f64(secs)))
        }
        _ => Err(bad_request(msg)),
    }
}

fn parse_limits(v: &Value, current: &QboLimits) -> Result<QboLimits, (StatusCode, String)> {
    let o = v
        .as_object()
        .ok_or_else(|| bad_request("\"limits\" must be an object"))?;
    const KNOWN: [&str; 5] = [
        "per_second",
        "per_minute",
        "batch_per_minute",
        "time_scale",
        "enforce",
    ];
    if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad_request(format!(
            "unknown limits field \"{k}\"; expected: {}",
            KNOWN.join(", ")
        )));
    }
    let mut l = current.clone();
    let count = |name: &str, into: &mut u32| -> Result<(), (StatusCode, String)> {
        if let Some(v) = o.get(name) {
            *into = v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad_request(format!("\"{name}\" must be a non-negative integer")))?;
        }
        Ok(())
    };
    count("per_second", &mut l.per_second)?;
    count("per_minute", &mut l.per_minute)?;
    count("batch_per_minute", &mut l.batch_per_minute)?;
    if let Some(v) = o.get("time_scale") {
        l.time_scale = v
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| bad_request("\"time_scale\" must be a positive number"))?;
    }
    if let Some(v) = o.get("enforce") {
        l.enforce = v
            .as_bool()
            .ok_or_else(|| bad_request("\"enforce\" must be a boolean"))?;
    }
    Ok(l)
}

fn settings(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(
        body,
        &[
            "rotation",
            "access_token_lifetime_secs",
            "limits",
            "duplicate_doc_check",
        ],
    )?;
    let mut db = sh.db();
    // Everything is checked before anything changes.
    let rotation = body.get("rotation").map(parse_rotation).transpose()?;
    let lifetime = match body.get("access_token_lifetime_secs") {
        None => None,
        Some(v) => Some(Duration::from_secs(v.as_u64().ok_or_else(|| {
            bad_request("\"access_token_lifetime_secs\" must be a non-negative integer")
        })?)),
    };
    let limits = body
        .get("limits")
        .map(|v| parse_limits(v, &db.opts.limits))
        .transpose()?;
    let dup = match body.get("duplicate_doc_check") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(bad_request("\"duplicate_doc_check\" must be a boolean")),
    };
    if let Some(r) = rotation {
        db.opts.rotation = r;
    }
    if let Some(l) = lifetime {
        db.opts.access_token_lifetime = l;
    }
    if let Some(l) = limits {
        db.opts.limits = l;
    }
    if let Some(d) = dup {
        db.duplicate_doc_check = d;
    }
    Ok(settings_json(&db))
}

fn stats_json(sh: &Shared) -> Value {
    let mut v = sh.harness.counters_json();
    let db = sh.db();
    let now = Instant::now();
    v["tokens"] = json!(db.counts);
    v["live_refresh_tokens"] = json!(live_refresh(&db, now).len());
    v["throttled"] = json!(db.throttled);
    v["missing_minorversion"] = json!(db.missing_minorversion);
    v["missing_accept_json"] = json!(db.missing_accept_json);
    v["token_requests_missing_accept_json"] = json!(db.token_missing_accept_json);
    v["requestid_replays"] = json!(db.requestid_replays);
    let mut entities = Map::new();
    for k in ALL_KINDS {
        entities.insert(k.name().into(), json!(db.tables.list(k).len()));
    }
    v["entities"] = Value::Object(entities);
    v["settings"] = settings_json(&db);
    drop(db);
    v["faults_pending"] = sh.harness.pending_faults_json();
    v["random_faults"] = sh.harness.random_faults_json();
    v
}

fn live_refresh(db: &Db, now: Instant) -> Vec<String> {
    let mut live: Vec<(&String, Instant)> = db
        .refresh
        .iter()
        .filter(|(t, _)| refresh_problem(db, t, now).is_none())
        .map(|(t, r)| (t, r.issued))
        .collect();
    live.sort_by_key(|(_, issued)| *issued);
    live.into_iter().map(|(t, _)| t.clone()).collect()
}

async fn ctl_stats(State(sh): State<Sh>) -> Response {
    json_response(StatusCode::OK, &stats_json(&sh))
}

async fn ctl_stats_reset(State(sh): State<Sh>) -> Response {
    sh.harness.reset_counters();
    let mut db = sh.db();
    db.counts = TokenCounts::default();
    db.throttled = 0;
    db.missing_minorversion = 0;
    db.missing_accept_json = 0;
    db.token_missing_accept_json = 0;
    db.requestid_replays = 0;
    json_response(StatusCode::OK, &json!({"ok": true}))
}

async fn ctl_settings(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(settings(&sh, &body))
}

async fn ctl_expire(State(sh): State<Sh>) -> Response {
    let n = expire_all(&mut sh.db());
    json_response(StatusCode::OK, &json!({"ok": true, "expired": n}))
}

async fn ctl_revoke(State(sh): State<Sh>) -> Response {
    let n = revoke_all(&mut sh.db());
    json_response(StatusCode::OK, &json!({"ok": true, "revoked": n}))
}

fn expire_all(db: &mut Db) -> usize {
    let mut n = 0;
    for a in db.access.values_mut().filter(|a| !a.killed) {
        a.killed = true;
        n += 1;
    }
    n
}

fn revoke_all(db: &mut Db) -> usize {
    let mut n = 0;
    for g in db.grants.iter_mut().filter(|g| !g.revoked) {
        g.revoked = true;
        n += 1;
    }
    n
}

fn ctl_string(body: &Map<String, Value>, name: &str) -> Result<String, (StatusCode, String)> {
    body.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| bad_request(format!("\"{name}\" (a non-empty string) is required")))
}

fn ctl_customer(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["display_name", "active"])?;
    let name = ctl_string(&body, "display_name")?;
    let active = match body.get("active") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_request("\"active\" must be a boolean")),
    };
    let id = seed_customer(&mut sh.db(), &name, active);
    Ok(json!({"ok": true, "Id": id}))
}

fn ctl_item(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["name", "sku"])?;
    let name = ctl_string(&body, "name")?;
    let sku = match body.get("sku") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad_request("\"sku\" must be a string")),
    };
    let id = seed_item(&mut sh.db(), &name, sku.as_deref());
    Ok(json!({"ok": true, "Id": id}))
}

fn ctl_invoice(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["doc_number", "customer"])?;
    let doc = ctl_string(&body, "doc_number")?;
    let customer = ctl_string(&body, "customer")?;
    let id = seed_invoice(&mut sh.db(), &doc, &customer);
    Ok(json!({"ok": true, "Id": id}))
}

fn ctl_code(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["redirect_uri"])?;
    let uri = ctl_string(&body, "redirect_uri")?;
    let mut db = sh.db();
    let code = issue_code_locked(&mut db, &uri);
    Ok(json!({"ok": true, "code": code, "realmId": db.opts.realm_id}))
}

async fn ctl_customers(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(ctl_customer(&sh, &body))
}

async fn ctl_items(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(ctl_item(&sh, &body))
}

async fn ctl_invoices(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(ctl_invoice(&sh, &body))
}

async fn ctl_codes(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(ctl_code(&sh, &body))
}

// ---------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------

/// The customer named `name` (its Active flag set as asked), created if
/// there is none: a company cannot hold two with one name.
fn seed_customer(db: &mut Db, name: &str, active: bool) -> String {
    let existing = db
        .tables
        .party_named(name, None)
        .filter(|(k, _)| *k == Kind::Customer)
        .map(|(_, r)| r.clone());
    let body = match existing {
        Some(row) if is_active(&row) == active => return row_id(&row).to_string(),
        Some(row) => json!({"Id": row_id(&row), "SyncToken": row["SyncToken"],
                            "sparse": true, "Active": active}),
        None => json!({"DisplayName": name, "Active": active}),
    };
    match upsert(db, Kind::Customer, body, None) {
        Ok(row) => row_id(&row).to_string(),
        // Only a vendor can hold the name: seed regardless, as a company
        // migrated from elsewhere might.
        Err(_) => force_row(
            db,
            Kind::Customer,
            json!({"DisplayName": name, "FullyQualifiedName": name, "Active": active,
                   "Balance": 0.0}),
        ),
    }
}

fn seed_item(db: &mut Db, name: &str, sku: Option<&str>) -> String {
    if let Some(row) = db.tables.item_named(name, None) {
        return row_id(row).to_string();
    }
    let mut body = json!({"Name": name, "Type": "Service", "IncomeAccountRef": {"value": "1"},
                          "UnitPrice": 0});
    if let Some(s) = sku {
        body["Sku"] = json!(s);
    }
    match upsert(db, Kind::Item, body.clone(), None) {
        Ok(row) => row_id(&row).to_string(),
        Err(_) => force_row(db, Kind::Item, body),
    }
}

/// An invoice of 100.00 for one "Services" line, as if entered in the
/// QuickBooks UI: no duplicate number or length check, any customer.
fn seed_invoice(db: &mut Db, doc_number: &str, customer: &str) -> String {
    let cust = match db.tables.party_named(customer, None) {
        Some((Kind::Customer, r)) => row_id(r).to_string(),
        _ => seed_customer(db, customer, true),
    };
    let item = seed_item(db, "Services", None);
    let tax = if db.opts.us_company { "NON" } else { ZERO_CODE };
    let body = json!({
        "DocNumber": doc_number,
        "CustomerRef": {"value": cust},
        "Line": [{"Amount": 100.0, "DetailType": "SalesItemLineDetail",
                  "SalesItemLineDetail": {"ItemRef": {"value": item}, "Qty": 1,
                                          "UnitPrice": 100.0, "TaxCodeRef": {"value": tax}}}],
    });
    let checks = Checks {
        duplicate_doc: false,
        strict: false,
    };
    match upsert(db, Kind::Invoice, body.clone(), Some(checks)) {
        Ok(row) => row_id(&row).to_string(),
        Err(_) => force_row(db, Kind::Invoice, body),
    }
}

/// Names for bulk seeding: a Jordanian shop's customers, suppliers and
/// products, in Latin and Arabic script.
mod names {
    pub const FIRST: [&str; 40] = [
        "Ahmad", "Mohammad", "Omar", "Khaled", "Yousef", "Ali", "Hassan", "Hussein", "Ibrahim",
        "Tareq", "Zaid", "Hamza", "Faisal", "Saleh", "Nasser", "Majed", "Rami", "Sami", "Laith",
        "Anas", "Bilal", "Osama", "Waleed", "Ziad", "Fadi", "Lina", "Sara", "Rana", "Dana", "Hala",
        "Noor", "Aya", "Reem", "Maha", "Rasha", "Hiba", "Yasmin", "Leen", "Farah", "Tala",
    ];
    pub const MIDDLE: [&str; 30] = [
        "Abdullah", "Mahmoud", "Mustafa", "Jamal", "Kamal", "Adel", "Nabil", "Samir", "Talal",
        "Fawzi", "Hani", "Issa", "Jaber", "Marwan", "Nidal", "Raed", "Salem", "Suleiman", "Wael",
        "Yaser", "Adnan", "Bassam", "Emad", "Ghassan", "Hatem", "Imad", "Jihad", "Munir", "Qasem",
        "Shadi",
    ];
    pub const LAST: [&str; 50] = [
        "Haddad",
        "Khatib",
        "Nasser",
        "Masri",
        "Khoury",
        "Saleh",
        "Obeidat",
        "Tamimi",
        "Zoubi",
        "Hijazi",
        "Qasem",
        "Shami",
        "Bataineh",
        "Rawashdeh",
        "Momani",
        "Smadi",
        "Khalaf",
        "Awad",
        "Hamdan",
        "Jaradat",
        "Abu Ghazaleh",
        "Al-Omari",
        "Al-Rifai",
        "Darwish",
        "Farouk",
        "Ghanem",
        "Habash",
        "Issa",
        "Jabri",
        "Kurdi",
        "Louzi",
        "Mansour",
        "Najjar",
        "Odeh",
        "Qudah",
        "Rashid",
        "Sabbagh",
        "Tarawneh",
        "Uraiqat",
        "Wahsh",
        "Yaghi",
        "Zaatari",
        "Abbadi",
        "Bakri",
        "Dajani",
        "Fakhoury",
        "Halaseh",
        "Kilani",
        "Muasher",
        "Sharif",
    ];
    pub const AR_FIRST: [&str; 30] = [
        "أحمد",
        "محمد",
        "عمر",
        "خالد",
        "يوسف",
        "علي",
        "حسن",
        "حسين",
        "إبراهيم",
        "طارق",
        "زيد",
        "حمزة",
        "فيصل",
        "صالح",
        "ناصر",
        "ماجد",
        "رامي",
        "سامي",
        "ليث",
        "أنس",
        "لينا",
        "سارة",
        "رنا",
        "دانا",
        "هالة",
        "نور",
        "آية",
        "ريم",
        "مها",
        "فرح",
    ];
    pub const AR_MIDDLE: [&str; 25] = [
        "عبدالله",
        "محمود",
        "مصطفى",
        "جمال",
        "كمال",
        "عادل",
        "نبيل",
        "سمير",
        "طلال",
        "فوزي",
        "هاني",
        "عيسى",
        "جابر",
        "مروان",
        "نضال",
        "رائد",
        "سالم",
        "سليمان",
        "وائل",
        "ياسر",
        "عدنان",
        "بسام",
        "عماد",
        "غسان",
        "حاتم",
    ];
    pub const AR_LAST: [&str; 30] = [
        "الحداد",
        "الخطيب",
        "الناصر",
        "المصري",
        "الخوري",
        "الصالح",
        "العبيدات",
        "التميمي",
        "الزعبي",
        "الحجازي",
        "القاسم",
        "الشامي",
        "البطاينة",
        "الرواشدة",
        "المومني",
        "الصمادي",
        "خلف",
        "عوض",
        "حمدان",
        "جرادات",
        "العمري",
        "الرفاعي",
        "درويش",
        "غانم",
        "حبش",
        "المنصور",
        "النجار",
        "عودة",
        "القضاة",
        "الطراونة",
    ];
    pub const COMPANY: [&str; 8] = [
        "Trading",
        "Supermarket",
        "Pharmacy",
        "Bakery",
        "Motors",
        "Electronics",
        "Contracting",
        "& Sons",
    ];
    pub const AR_COMPANY: [&str; 4] = ["مؤسسة", "شركة", "سوبرماركت", "صيدلية"];
    pub const SUPPLIER: [&str; 8] = [
        "Supplies",
        "Wholesale",
        "Distribution",
        "Imports",
        "Foods",
        "Packaging",
        "Logistics",
        "Trading Co.",
    ];
    pub const PRODUCT: [(&str, &str); 50] = [
        ("Arabic Coffee", "COF"),
        ("Turkish Coffee", "COF"),
        ("Espresso Beans", "COF"),
        ("Green Tea", "TEA"),
        ("Black Tea", "TEA"),
        ("Sage Tea", "TEA"),
        ("Zaatar", "SPC"),
        ("Olive Oil", "OIL"),
        ("Labneh", "DRY"),
        ("Halloumi", "DRY"),
        ("Hummus", "CAN"),
        ("Tahini", "CAN"),
        ("Medjool Dates", "DAT"),
        ("Basmati Rice", "GRN"),
        ("Bulgur", "GRN"),
        ("Lentils", "GRN"),
        ("Chickpeas", "GRN"),
        ("Sumac", "SPC"),
        ("Cardamom", "SPC"),
        ("Saffron", "SPC"),
        ("Pita Bread", "BAK"),
        ("Kaak", "BAK"),
        ("Knafeh", "SWT"),
        ("Baklava", "SWT"),
        ("Maamoul", "SWT"),
        ("Pistachio", "NUT"),
        ("Almonds", "NUT"),
        ("Cashews", "NUT"),
        ("Mineral Water", "BEV"),
        ("Orange Juice", "BEV"),
        ("Laban", "DRY"),
        ("Yogurt", "DRY"),
        ("Dish Soap", "HSE"),
        ("Laundry Powder", "HSE"),
        ("Tissue Box", "HSE"),
        ("Paper Cups", "HSE"),
        ("Phone Charger", "ELC"),
        ("USB Cable", "ELC"),
        ("AA Batteries", "ELC"),
        ("LED Bulb", "ELC"),
        ("قهوة عربية", "COF"),
        ("شاي أخضر", "TEA"),
        ("زيت زيتون", "OIL"),
        ("زعتر بلدي", "SPC"),
        ("لبنة", "DRY"),
        ("حلاوة", "SWT"),
        ("تمر مجدول", "DAT"),
        ("أرز بسمتي", "GRN"),
        ("كعك بالسمسم", "BAK"),
        ("مياه معدنية", "BEV"),
    ];
    pub const VARIANT: [&str; 25] = [
        "",
        "Premium",
        "Classic",
        "Organic",
        "Extra",
        "Family Pack",
        "Mini",
        "Gold",
        "Light",
        "Spicy",
        "Sugar Free",
        "Bulk",
        "Imported",
        "Local",
        "Fresh",
        "Frozen",
        "Roasted",
        "Salted",
        "Unsalted",
        "Double",
        "Select",
        "Value",
        "Deluxe",
        "Eco",
        "Special",
    ];
    pub const SIZE: [&str; 20] = [
        "100g",
        "250g",
        "500g",
        "1kg",
        "2kg",
        "5kg",
        "250ml",
        "500ml",
        "1L",
        "1.5L",
        "2L",
        "5L",
        "Pack of 6",
        "Pack of 12",
        "Pack of 24",
        "Small",
        "Medium",
        "Large",
        "XL",
        "Box",
    ];

    /// The digits of `i` in the mixed radix of `lens`, and the round past
    /// the last combination (a round number keeps results unique). Within
    /// a round `i` is scrambled (multiplied by a prime coprime with the
    /// number of combinations: still one-to-one), so consecutive entities
    /// do not share a family name.
    pub fn digits<const N: usize>(i: usize, lens: [usize; N]) -> ([usize; N], usize) {
        let combos: usize = lens.iter().product();
        let step = [7919, 7927, 7933]
            .into_iter()
            .find(|p| !combos.is_multiple_of(*p))
            .unwrap_or(1);
        let (round, within) = (i / combos, i % combos);
        let mut rest = within * step % combos;
        let mut out = [0; N];
        for (o, len) in out.iter_mut().zip(lens) {
            *o = rest % len;
            rest /= len;
        }
        (out, round)
    }

    /// One entry of each list, by [`digits`].
    pub fn pick<const N: usize>(
        i: usize,
        lists: [&[&'static str]; N],
    ) -> ([&'static str; N], usize) {
        let (d, round) = digits(i, lists.map(|l| l.len()));
        let mut out = [""; N];
        for ((o, l), d) in out.iter_mut().zip(lists).zip(d) {
            *o = l[d];
        }
        (out, round)
    }

    /// `base`, or `base N` from the second round on.
    pub fn numbered(base: String, round: usize) -> String {
        if round == 0 {
            base
        } else {
            format!("{base} {}", round + 1)
        }
    }
}

/// The `i`-th generated party of `kind` (customer or vendor).
fn seeded_party(kind: Kind, i: usize) -> Map<String, Value> {
    use names::*;
    let mut m = Map::new();
    // Every third is Arabic; each script counts its own sequence so that
    // names stay unique.
    let arabic = i % 3 == 2;
    let j = if arabic { i / 3 } else { i / 3 * 2 + i % 3 };
    let (display, company, email) = if kind == Kind::Vendor {
        let ([last, what], round) = pick(j, [&LAST[..], &SUPPLIER[..]]);
        let name = if arabic {
            let ([last], round) = pick(j, [&AR_LAST[..]]);
            numbered(format!("شركة {last} للتوريدات"), round)
        } else {
            numbered(format!("{last} {what}"), round)
        };
        let email = format!("orders{i}@supplier.example.jo");
        (name.clone(), Some(name), Some(email))
    } else if arabic {
        let ([first, middle, last], round) = pick(j, [&AR_FIRST[..], &AR_MIDDLE[..], &AR_LAST[..]]);
        let company = i
            .is_multiple_of(4)
            .then(|| format!("{} {last}", AR_COMPANY[i / 4 % AR_COMPANY.len()]));
        let email = i
            .is_multiple_of(3)
            .then(|| format!("customer{i}@example.jo"));
        (
            numbered(format!("{first} {middle} {last}"), round),
            company,
            email,
        )
    } else {
        let ([first, middle, last], round) = pick(j, [&FIRST[..], &MIDDLE[..], &LAST[..]]);
        let company = i
            .is_multiple_of(4)
            .then(|| format!("{last} {}", COMPANY[i / 4 % COMPANY.len()]));
        let email = i.is_multiple_of(2).then(|| {
            let user: String = format!("{first}.{last}")
                .to_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            format!("{user}{j}@example.jo")
        });
        m.insert("GivenName".into(), json!(first));
        m.insert("FamilyName".into(), json!(last));
        (
            numbered(format!("{first} {middle} {last}"), round),
            company,
            email,
        )
    };
    m.insert("DisplayName".into(), json!(display));
    m.insert("PrintOnCheckName".into(), json!(display));
    if let Some(c) = company {
        m.insert("CompanyName".into(), json!(c));
    }
    if let Some(e) = email {
        m.insert("PrimaryEmailAddr".into(), json!({"Address": e}));
    }
    m.insert("Active".into(), json!(i % 20 != 19));
    m.insert("Balance".into(), json!(0.0));
    if kind == Kind::Customer {
        m.insert("FullyQualifiedName".into(), json!(display));
        m.insert("Job".into(), json!(false));
        m.insert("BillWithParent".into(), json!(false));
        m.insert("Taxable".into(), json!(true));
        m.insert("BalanceWithJobs".into(), json!(0.0));
        m.insert("PreferredDeliveryMethod".into(), json!("Print"));
    } else {
        m.insert("Vendor1099".into(), json!(false));
    }
    m
}

/// The `i`-th generated item.
fn seeded_item(i: usize) -> Map<String, Value> {
    use names::*;
    let ([p, v, z], round) = digits(i, [PRODUCT.len(), VARIANT.len(), SIZE.len()]);
    let ((base, code), variant, size) = (PRODUCT[p], VARIANT[v], SIZE[z]);
    let name = if variant.is_empty() {
        format!("{base} {size}")
    } else {
        format!("{base} {variant} {size}")
    };
    let name = numbered(name, round);
    let ty = ["Inventory", "NonInventory", "Service"][i % 3];
    // 0.25 to 200.00 in steps of 0.25.
    let price = Decimal::new(25 * (1 + (i * 7919) % 800) as i64, 2);
    let mut m = Map::new();
    m.insert("Name".into(), json!(name));
    m.insert("FullyQualifiedName".into(), json!(name));
    m.insert("Sku".into(), json!(format!("{code}-{:05}", i + 1)));
    let description = if variant.is_empty() {
        format!("{base}, {size}")
    } else {
        format!("{base} ({}), {size}", variant.to_lowercase())
    };
    m.insert("Description".into(), json!(description));
    m.insert("Type".into(), json!(ty));
    m.insert("UnitPrice".into(), num(price));
    m.insert("Taxable".into(), json!(true));
    m.insert("Active".into(), json!(i % 25 != 24));
    m.insert(
        "IncomeAccountRef".into(),
        json!({"value": "79", "name": "Sales of Product Income"}),
    );
    if ty == "Inventory" {
        m.insert("TrackQtyOnHand".into(), json!(true));
        m.insert("QtyOnHand".into(), json!((i * 31) % 500));
        m.insert("InvStartDate".into(), json!("2024-01-01"));
        m.insert(
            "AssetAccountRef".into(),
            json!({"value": "81", "name": "Inventory Asset"}),
        );
        m.insert(
            "ExpenseAccountRef".into(),
            json!({"value": "80", "name": "Cost of Goods Sold"}),
        );
    } else {
        m.insert("TrackQtyOnHand".into(), json!(false));
    }
    m
}

/// Stores `n` generated entities of `kind` directly (no per-row search for
/// an existing Id: they are new), dated [`SEEDED_AGE_DAYS`] ago.
fn bulk_seed(db: &mut Db, kind: Kind, n: usize) -> Vec<String> {
    let slot = match kind {
        Kind::Customer => 0,
        Kind::Vendor => 1,
        _ => 2,
    };
    let first = db.bulk_seeded[slot];
    db.bulk_seeded[slot] += n;
    let when = meta_time(Utc::now() - chrono::Duration::days(SEEDED_AGE_DAYS));
    let mut ids = Vec::with_capacity(n);
    for i in first..first + n {
        let content = match kind {
            Kind::Item => seeded_item(i),
            _ => seeded_party(kind, i),
        };
        let id = db.tables.next_id(kind);
        let mut row = Map::new();
        row.insert("Id".into(), json!(id));
        row.insert("SyncToken".into(), json!("0"));
        row.insert(
            "MetaData".into(),
            json!({"CreateTime": when, "LastUpdatedTime": when}),
        );
        row.extend(content);
        row.insert("domain".into(), json!("QBO"));
        row.insert("sparse".into(), json!(false));
        db.tables.rows[kind.index()].push(row);
        ids.push(id);
    }
    ids
}

/// Stores `v` as a new row without validation (seeding's last resort).
fn force_row(db: &mut Db, kind: Kind, v: Value) -> String {
    let id = db.tables.next_id(kind);
    let now = meta_now();
    let mut row = Map::new();
    row.insert("Id".into(), json!(id));
    row.insert("SyncToken".into(), json!("0"));
    row.insert(
        "MetaData".into(),
        json!({"CreateTime": now, "LastUpdatedTime": now}),
    );
    if let Value::Object(o) = v {
        for (k, v) in o {
            row.entry(k).or_insert(v);
        }
    }
    db.tables.put(kind, row);
    id
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap as RHeaders;

    const REDIRECT: &str = "http://localhost:8765/callback";
    const TOKEN_PATH: &str = "/oauth2/v1/tokens/bearer";
    const INVOICE_ROUTE: &str = "POST /v3/company/{realm}/invoice";

    struct T {
        sb: QuickbooksSandbox,
        c: reqwest::Client,
        base: String,
        realm: String,
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    async fn start_with(opts: QuickbooksSandboxOptions) -> T {
        let sb = QuickbooksSandbox::start("127.0.0.1:0".parse().unwrap(), opts)
            .await
            .unwrap();
        let base = sb.base_url();
        let realm = sb.realm_id();
        T {
            sb,
            c: client(),
            base,
            realm,
        }
    }

    /// Default options, but no rate limit: most tests send more than 10
    /// requests a second (the limiter has its own tests).
    fn unlimited() -> QuickbooksSandboxOptions {
        QuickbooksSandboxOptions {
            limits: QboLimits {
                enforce: false,
                ..QboLimits::default()
            },
            ..Default::default()
        }
    }

    async fn start() -> T {
        start_with(unlimited()).await
    }

    fn tid(h: &RHeaders) -> String {
        h.get("intuit_tid")
            .expect("every answer carries intuit_tid")
            .to_str()
            .unwrap()
            .to_string()
    }

    impl T {
        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        /// `/v3/company/{realm}/{rest}`, with `minorversion=75` added.
        fn api(&self, rest: &str) -> String {
            let sep = if rest.contains('?') { '&' } else { '?' };
            format!(
                "{}/v3/company/{}/{rest}{sep}minorversion=75",
                self.base, self.realm
            )
        }

        async fn token_req(&self, form: &[(&str, &str)], hard: bool) -> reqwest::Response {
            let mut r = self
                .c
                .post(self.url(TOKEN_PATH))
                .basic_auth(SANDBOX_CLIENT_ID, Some(SANDBOX_CLIENT_SECRET))
                .header("accept", "application/json")
                .form(form);
            if hard {
                r = r.header("x-include-refresh-token-hard-expires-in", "true");
            }
            r.send().await.unwrap()
        }

        async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
            let r = self.token_req(form, false).await;
            (r.status().as_u16(), r.json().await.unwrap())
        }

        async fn exchange(&self, code: &str, redirect: &str) -> (u16, Value) {
            self.token(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect),
            ])
            .await
        }

        async fn refresh(&self, rt: &str) -> (u16, Value) {
            self.token(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
                .await
        }

        /// A fresh grant: (access token, refresh token).
        async fn connect(&self) -> (String, String) {
            let code = self.sb.issue_code(REDIRECT);
            let (s, v) = self.exchange(&code, REDIRECT).await;
            assert_eq!(s, 200, "{v}");
            (
                v["access_token"].as_str().unwrap().to_string(),
                v["refresh_token"].as_str().unwrap().to_string(),
            )
        }

        async fn get(&self, token: &str, rest: &str) -> (u16, Value) {
            let r = self
                .c
                .get(self.api(rest))
                .bearer_auth(token)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        }

        async fn post(&self, token: &str, rest: &str, body: &Value) -> (u16, Value) {
            let r = self
                .c
                .post(self.api(rest))
                .bearer_auth(token)
                .header("accept", "application/json")
                .json(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        }

        async fn query(&self, token: &str, q: &str) -> (u16, Value) {
            let r = self
                .c
                .get(self.api("query"))
                .query(&[("query", q)])
                .bearer_auth(token)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        }

        /// A customer and an item to invoice: (customer Id, item Id).
        async fn basics(&self, token: &str) -> (String, String) {
            let (s, c) = self
                .post(token, "customer", &json!({"DisplayName": "Acme"}))
                .await;
            assert_eq!(s, 200, "{c}");
            let (s, i) = self
                .post(
                    token,
                    "item",
                    &json!({"Name": "Coffee", "Type": "Service", "Sku": "SKU-1",
                            "IncomeAccountRef": {"value": "1"}}),
                )
                .await;
            assert_eq!(s, 200, "{i}");
            (
                c["Customer"]["Id"].as_str().unwrap().to_string(),
                i["Item"]["Id"].as_str().unwrap().to_string(),
            )
        }
    }

    fn fault_code(v: &Value) -> &str {
        v["Fault"]["Error"][0]["code"].as_str().unwrap_or("")
    }

    fn fault_detail(v: &Value) -> &str {
        v["Fault"]["Error"][0]["Detail"].as_str().unwrap_or("")
    }

    fn invoice_body(customer: &str, item: &str, doc: &str) -> Value {
        json!({"CustomerRef": {"value": customer}, "DocNumber": doc,
               "Line": [{"Amount": 100.0, "DetailType": "SalesItemLineDetail",
                         "SalesItemLineDetail": {"ItemRef": {"value": item},
                                                 "Qty": 2, "UnitPrice": 50.0}}]})
    }

    fn location_params(loc: &str) -> HashMap<String, String> {
        let query = loc.split_once('?').map(|(_, q)| q).unwrap_or("");
        form_decode(query.as_bytes()).into_iter().collect()
    }

    #[tokio::test]
    async fn authorize_redirects_with_code_state_and_realm() {
        let t = start().await;
        let redirect = "http://localhost:8765/cb?tenant=a b";
        let state = "st ate/+&=x";
        let r =
            t.c.get(t.url("/connect/oauth2"))
                .query(&[
                    ("client_id", SANDBOX_CLIENT_ID),
                    ("response_type", "code"),
                    ("scope", "openid com.intuit.quickbooks.accounting"),
                    ("redirect_uri", redirect),
                    ("state", state),
                ])
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 302);
        tid(r.headers());
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert!(
            loc.starts_with("http://localhost:8765/cb?tenant=a b&code="),
            "{loc}"
        );
        assert!(loc.contains("&state=st%20ate%2F%2B%26%3Dx&"), "{loc}");
        let p = location_params(&loc);
        assert_eq!(p["state"], state);
        assert_eq!(p["realmId"], SANDBOX_REALM);
        assert_eq!(p["tenant"], "a b");
        let (s, v) = t.exchange(&p["code"], redirect).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["token_type"], "bearer");

        let bad = [
            ("client_id", "nobody", "Unknown client_id"),
            ("response_type", "token", "response_type"),
            ("scope", "openid email", "com.intuit.quickbooks.accounting"),
            ("state", "", "state"),
            ("redirect_uri", "", "redirect_uri"),
        ];
        for (field, value, says) in bad {
            let mut q = vec![
                ("client_id", SANDBOX_CLIENT_ID),
                ("response_type", "code"),
                ("scope", ACCOUNTING_SCOPE),
                ("redirect_uri", REDIRECT),
                ("state", "s1"),
            ];
            q.retain(|(k, _)| *k != field);
            if !value.is_empty() {
                q.push((field, value));
            }
            let r =
                t.c.get(t.url("/connect/oauth2"))
                    .query(&q)
                    .send()
                    .await
                    .unwrap();
            assert_eq!(r.status(), 400, "{field}");
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            let html = r.text().await.unwrap();
            assert!(html.contains(says), "{field}: {html}");
        }
    }

    #[tokio::test]
    async fn a_code_is_exchanged_once_and_a_second_exchange_spoils_the_tokens() {
        let t = start().await;
        let code = t.sb.issue_code(REDIRECT);
        // Wrong redirect_uri: refused, the code stays usable.
        let (s, v) = t.exchange(&code, "http://localhost:8765/other").await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
        let (s, v) = t.exchange(&code, REDIRECT).await;
        assert_eq!(s, 200, "{v}");
        let access = v["access_token"].as_str().unwrap().to_string();
        let refresh = v["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(v["expires_in"], 3600);
        assert_eq!(v["x_refresh_token_expires_in"], 8_640_000);
        assert!(v.get("x_refresh_token_hard_expires_in").is_none());
        assert_eq!(refresh.len(), 50);
        assert!(refresh.starts_with("AB11"));
        assert!(access.len() > 500);
        assert_eq!(t.query(&access, "select * from Customer").await.0, 200);

        let (s, v) = t.exchange(&code, REDIRECT).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("invalid_grant")),
            "{v}"
        );
        let (s, v) = t.query(&access, "select * from Customer").await;
        assert_eq!(
            (s, v["fault"]["error"][0]["code"].as_str()),
            (401, Some("3200"))
        );
        let (s, v) = t.refresh(&refresh).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
        assert!(t.sb.live_refresh_tokens().is_empty());

        // Client authentication.
        let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
        let r =
            t.c.post(t.url(TOKEN_PATH))
                .form(&form)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"error": "invalid_client"})
        );
        let r =
            t.c.post(t.url(TOKEN_PATH))
                .basic_auth(SANDBOX_CLIENT_ID, Some("wrong"))
                .form(&form)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 401);
        let (s, v) = t.token(&[("grant_type", "password")]).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("unsupported_grant_type"))
        );
        let (s, v) = t.exchange("AB11nonsense", REDIRECT).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));

        let counts = t.sb.token_grants();
        assert_eq!(counts.codes_exchanged, 1);
        assert_eq!(counts.invalid_grant, 4);
        assert_eq!(counts.invalid_client, 2);
        assert_eq!(t.sb.requests(&format!("POST {TOKEN_PATH}")), 8);
    }

    #[tokio::test]
    async fn strict_rotation_kills_the_previous_refresh_token_at_once() {
        let t = start().await;
        let (_, r1) = t.connect().await;
        assert_eq!(t.sb.live_refresh_tokens(), vec![r1.clone()]);
        let (s, v) = t.refresh(&r1).await;
        assert_eq!(s, 200, "{v}");
        let r2 = v["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(r1, r2, "every refresh rotates");
        assert_eq!(v["expires_in"], 3600);
        let (s, v) = t.refresh(&r1).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
        assert!(v["error_description"].is_string());
        let (s, v) = t.refresh(&r2).await;
        assert_eq!(s, 200);
        let r3 = v["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(t.sb.live_refresh_tokens(), vec![r3.clone()]);
        assert_eq!(t.sb.latest_refresh_token(), Some(r3));
        let counts = t.sb.token_grants();
        assert_eq!((counts.refreshes_ok, counts.invalid_grant), (2, 1));
    }

    #[tokio::test]
    async fn grace_rotation_keeps_the_previous_token_for_a_while() {
        let grace = Duration::from_millis(300);
        let t = start_with(QuickbooksSandboxOptions {
            rotation: Rotation::Grace(grace),
            ..unlimited()
        })
        .await;
        let (_, r1) = t.connect().await;
        let begin = std::time::Instant::now();
        let (s, v) = t.refresh(&r1).await;
        assert_eq!(s, 200);
        let r2 = v["refresh_token"].as_str().unwrap().to_string();
        // Within the grace period the old one still works, with a new pair.
        let (s, v) = t.refresh(&r1).await;
        assert_eq!(s, 200, "{v}");
        let r3 = v["refresh_token"].as_str().unwrap().to_string();
        assert!(
            begin.elapsed() < grace,
            "the machine is too slow for this test"
        );
        assert_ne!(r3, r2);
        let live = t.sb.live_refresh_tokens();
        assert!([&r1, &r2, &r3].iter().all(|r| live.contains(r)), "{live:?}");
        tokio::time::sleep(grace + Duration::from_millis(50)).await;
        for old in [&r1, &r2] {
            let (s, v) = t.refresh(old).await;
            assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
        }
        assert_eq!(t.refresh(&r3).await.0, 200);
        // Back to strict: the previous token dies at once again.
        t.sb.set_rotation(Rotation::Strict);
        let r4 = t.sb.latest_refresh_token().unwrap();
        assert_eq!(t.refresh(&r4).await.0, 200);
        assert_eq!(t.refresh(&r4).await.0, 400);
    }

    #[tokio::test]
    async fn hard_expiry_is_reported_only_when_asked() {
        let t = start().await;
        let code = t.sb.issue_code(REDIRECT);
        let r = t
            .token_req(
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                ],
                true,
            )
            .await;
        let v: Value = r.json().await.unwrap();
        let hard = v["x_refresh_token_hard_expires_in"].as_u64().unwrap();
        let five_years = 5 * 365 * 86_400;
        assert!(hard <= five_years && hard > five_years - 60, "{hard}");
        let rt = v["refresh_token"].as_str().unwrap();
        let (_, v) = t.refresh(rt).await;
        assert!(v.get("x_refresh_token_hard_expires_in").is_none(), "{v}");
    }

    #[tokio::test(start_paused = true)]
    async fn lifetimes_run_on_tokio_time() {
        let t = start_with(QuickbooksSandboxOptions {
            access_token_lifetime: Duration::from_secs(60),
            hard_expiry: Duration::from_secs(3600),
            ..unlimited()
        })
        .await;
        let code = t.sb.issue_code(REDIRECT);
        tokio::time::sleep(Duration::from_secs(601)).await;
        let (s, v) = t.exchange(&code, REDIRECT).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("invalid_grant")),
            "{v}"
        );

        let (access, refresh) = t.connect().await;
        assert_eq!(t.sb.token_grants().codes_exchanged, 1);
        let (_, v) = t.refresh(&refresh).await;
        // The rolling lifetime cannot outlast the grant's hard expiry.
        assert!(v["x_refresh_token_expires_in"].as_u64().unwrap() <= 3600);
        tokio::time::sleep(Duration::from_secs(61)).await;
        let (s, v) = t.query(&access, "select * from Item").await;
        assert_eq!(s, 401);
        assert!(v["fault"]["error"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("Token expired"));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let rt = t.sb.latest_refresh_token().unwrap();
        let (s, v) = t.refresh(&rt).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    }

    #[tokio::test]
    async fn revoke_kills_the_whole_grant() {
        let t = start().await;
        let (a1, r1) = t.connect().await;
        let (a2, r2) = t.connect().await;
        let revoke = |body: Value, auth: bool| {
            let mut r = t.c.post(t.url("/v2/oauth2/tokens/revoke")).json(&body);
            if auth {
                r = r.basic_auth(SANDBOX_CLIENT_ID, Some(SANDBOX_CLIENT_SECRET));
            }
            r.send()
        };
        let r = revoke(json!({"token": r1}), true).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "");
        assert_eq!(t.query(&a1, "select * from Item").await.0, 401);
        assert_eq!(t.refresh(&r1).await.0, 400);
        assert_eq!(t.query(&a2, "select * from Item").await.0, 200);
        // By its access token.
        let r = revoke(json!({"token": a2}), true).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(t.refresh(&r2).await.0, 400);
        // Idempotent; authenticated; needs a token.
        assert_eq!(
            revoke(json!({"token": "nope"}), true)
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            revoke(json!({"token": r1}), true).await.unwrap().status(),
            200
        );
        let r = revoke(json!({"token": "nope"}), false).await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
        assert_eq!(revoke(json!({}), true).await.unwrap().status(), 400);
        assert_eq!(t.sb.token_grants().revoked, 2);

        let (a3, _) = t.connect().await;
        t.sb.revoke_all();
        assert_eq!(t.query(&a3, "select * from Item").await.0, 401);
        assert!(t.sb.live_refresh_tokens().is_empty());
    }

    #[tokio::test]
    async fn the_gateway_answers_3200_and_3100() {
        let t = start().await;
        let (access, _) = t.connect().await;
        let r = t.c.get(t.api("customer/1")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer realm=\"Intuit\", error=\"invalid_token\""
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["fault"]["type"], "AUTHENTICATION");
        assert_eq!(
            v["fault"]["error"][0]["message"],
            "message=AuthenticationFailed; errorCode=003200; statusCode=401"
        );
        assert!(v["time"].is_string());

        t.sb.expire_access_tokens();
        let r =
            t.c.get(t.api("query?query=select%20*%20from%20Item"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["fault"]["error"][0]["code"], "3200");
        assert!(v["fault"]["error"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("Token expired: "));

        // Tokens issued afterwards work; another company's path is 403.
        let (access, _) = t.connect().await;
        let r =
            t.c.get(format!(
                "{}/v3/company/123145/query?query=select%20*%20from%20Item&minorversion=75",
                t.base
            ))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["Fault"]["type"], "AUTHORIZATION");
        assert_eq!(fault_code(&v), "3100");
        // An unknown resource: 404 with a Fault.
        let (s, v) = t.get(&access, "gizmo").await;
        assert_eq!(s, 404, "{v}");
        assert!(v["Fault"]["Error"].is_array());
    }

    #[tokio::test]
    async fn query_language() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        t.sb.seed_customer("Alice's Bakery", true);
        t.sb.seed_customer("Bob Ltd", true);
        t.sb.seed_customer("Carol", false);
        t.sb.seed_customer("Dave", true);
        t.sb.seed_item("Espresso", Some("SKU-9"));
        let names = |v: &Value| -> Vec<String> {
            v["QueryResponse"]["Customer"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| c["DisplayName"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let ok = |q: &'static str| {
            let t = &t;
            let tok = &tok;
            async move {
                let (s, v) = t.query(tok, q).await;
                assert_eq!(s, 200, "{q}: {v}");
                v
            }
        };
        let v = ok(r"select * from Customer where DisplayName = 'Alice\'s Bakery'").await;
        assert_eq!(names(&v), ["Alice's Bakery"]);
        assert_eq!(v["QueryResponse"]["startPosition"], 1);
        assert_eq!(v["QueryResponse"]["maxResults"], 1);
        assert!(v["time"].is_string());
        let v = ok("SeLeCt * FrOm customer WHERE displayname = 'bob ltd'").await;
        assert_eq!(names(&v), ["Bob Ltd"]);
        let v = ok("select * from Customer where DisplayName in ('Bob Ltd','Dave', 'Zed')").await;
        assert_eq!(names(&v), ["Bob Ltd", "Dave"]);
        let v = ok("select * from Customer where DisplayName like '%a%'").await;
        assert_eq!(
            names(&v),
            ["Alice's Bakery", "Dave"],
            "inactive Carol left out"
        );
        let v = ok("select * from Customer where DisplayName like 'b%'").await;
        assert_eq!(names(&v), ["Bob Ltd"]);
        let v = ok("select * from Customer where Active = false").await;
        assert_eq!(names(&v), ["Carol"]);
        let v = ok("select count(*) from Customer").await;
        assert_eq!(v["QueryResponse"], json!({"totalCount": 3}));
        let v = ok("SELECT COUNT(*) FROM Customer WHERE Active IN (true, false)").await;
        assert_eq!(v["QueryResponse"]["totalCount"], 4);
        let v = ok("select * from Customer ORDERBY DisplayName DESC STARTPOSITION 2 MAXRESULTS 2")
            .await;
        assert_eq!(names(&v), ["Bob Ltd", "Alice's Bakery"]);
        assert_eq!(v["QueryResponse"]["startPosition"], 2);
        assert_eq!(v["QueryResponse"]["maxResults"], 2);
        let v = ok("select * from Customer where DisplayName = 'Nobody'").await;
        assert_eq!(v["QueryResponse"], json!({}));
        let v = ok(
            "select * from Customer where MetaData.LastUpdatedTime > '2020-01-01T00:00:00-08:00'",
        )
        .await;
        assert_eq!(names(&v).len(), 3);
        let v = ok("select * from Item where Sku = 'SKU-9'").await;
        assert_eq!(v["QueryResponse"]["Item"][0]["Name"], "Espresso");
        let v = ok("select * from Account where AccountType = 'Income'").await;
        assert_eq!(v["QueryResponse"]["maxResults"], 2);
        let v = ok("select * from TaxCode").await;
        assert_eq!(v["QueryResponse"]["TaxCode"][0]["Id"], "TAX");
        assert_eq!(ok("select * from Vendor").await["QueryResponse"], json!({}));

        // POSTed as application/text.
        let r =
            t.c.post(t.api("query"))
                .bearer_auth(&tok)
                .header("accept", "application/json")
                .header("content-type", "application/text")
                .body("select * from Customer where DisplayName = 'Dave'")
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(names(&r.json().await.unwrap()), ["Dave"]);

        for (q, code) in [
            ("select * from Customer where", "4000"),
            ("select * from Gizmo", "4000"),
            ("select * from Customer where Nope = '1'", "4000"),
            (
                "select * from Customer where DisplayName = 'a' OR Active = true",
                "4000",
            ),
            (
                "select * from Customer where DisplayName = 'unterminated",
                "4000",
            ),
            ("select Id from Customer", "4000"),
            ("select * from Customer MAXRESULTS 1001", "4001"),
        ] {
            let (s, v) = t.query(&tok, q).await;
            assert_eq!((s, fault_code(&v)), (400, code), "{q}: {v}");
            assert_eq!(v["Fault"]["type"], "ValidationFault");
        }
        let (_, v) = t.query(&tok, "select * from Customer where").await;
        assert_eq!(v["Fault"]["Error"][0]["Message"], "Error parsing query");
        assert!(fault_detail(&v).starts_with("QueryParserError: "));

        // Header and version hygiene is counted.
        assert_eq!(t.sb.missing_minorversion(), 0);
        assert_eq!(t.sb.missing_accept_json(), 0);
        let r =
            t.c.get(format!(
                "{}/v3/company/{}/query?query=select%20*%20from%20Item",
                t.base, t.realm
            ))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(t.sb.missing_minorversion(), 1);
        assert_eq!(t.sb.missing_accept_json(), 1);
    }

    #[tokio::test]
    async fn customer_names_are_unique_including_inactive_ones() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        let (s, v) = t
            .post(
                &tok,
                "customer",
                &json!({"DisplayName": "Acme", "Notes": "x"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let c = &v["Customer"];
        assert_eq!(
            (c["SyncToken"].as_str(), c["Active"].as_bool()),
            (Some("0"), Some(true))
        );
        assert_eq!(c["Notes"], "x");
        let id = c["Id"].as_str().unwrap().to_string();
        let (s, v) = t
            .post(&tok, "customer", &json!({"DisplayName": "acme"}))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6240"));
        assert_eq!(
            v["Fault"]["Error"][0]["Message"],
            "Duplicate Name Exists Error"
        );
        assert_eq!(
            fault_detail(&v),
            "The name supplied already exists. : Another customer, vendor or employee is already using this name. Please use a different name."
        );
        t.sb.seed_customer("Old Co", false);
        let (s, v) = t
            .post(&tok, "customer", &json!({"DisplayName": "Old Co"}))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6240"));
        let (s, v) = t.post(&tok, "customer", &json!({"CompanyName": "X"})).await;
        assert_eq!((s, fault_code(&v)), (400, "6000"));
        assert!(fault_detail(&v).contains("DisplayName"));
        let (s, v) = t
            .post(&tok, "customer", &json!({"DisplayName": "Vendor Co"}))
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = t
            .post(&tok, "vendor", &json!({"DisplayName": "vendor co"}))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6240"), "one namespace");

        // Sparse update, then a stale one.
        let upd = json!({"Id": id, "SyncToken": "0", "sparse": true, "Active": false});
        let (s, v) = t.post(&tok, "customer", &upd).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["Customer"]["SyncToken"], "1");
        assert_eq!(v["Customer"]["Notes"], "x", "sparse keeps the rest");
        assert_eq!(v["Customer"]["Active"], false);
        let (s, v) = t.post(&tok, "customer", &upd).await;
        assert_eq!((s, fault_code(&v)), (400, "5010"));
        assert_eq!(v["Fault"]["Error"][0]["Message"], "Stale Object Error");
        let (s, v) = t.get(&tok, &format!("customer/{id}")).await;
        assert_eq!((s, v["Customer"]["SyncToken"].as_str()), (200, Some("1")));
        let (s, v) = t.get(&tok, "customer/999").await;
        assert_eq!((s, fault_code(&v)), (400, "610"));
        assert_eq!(t.sb.customers().len(), 3);
    }

    #[tokio::test]
    async fn items_need_a_type_and_an_income_account() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        let (s, v) = t
            .post(
                &tok,
                "item",
                &json!({"Name": "Tea", "IncomeAccountRef": {"value": "1"}}),
            )
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6000"), "{v}");
        let (s, v) = t
            .post(&tok, "item", &json!({"Name": "Tea", "Type": "Service"}))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6000"));
        assert!(fault_detail(&v).contains("IncomeAccountRef"));
        let (s, v) = t
            .post(
                &tok,
                "item",
                &json!({"Name": "Tea", "Type": "NonInventory", "IncomeAccountRef": {"value": "81"}}),
            )
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6000"), "81 is an asset account");
        let (s, v) = t
            .post(
                &tok,
                "item",
                &json!({"Name": "Tea", "Type": "NonInventory", "IncomeAccountRef": {"value": "79"}}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["Item"]["IncomeAccountRef"]["name"],
            "Sales of Product Income"
        );
        let (s, v) = t
            .post(
                &tok,
                "item",
                &json!({"Name": "TEA", "Type": "Service", "IncomeAccountRef": {"value": "1"}}),
            )
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6240"));
    }

    #[tokio::test]
    async fn invoices_are_validated_totalled_and_checked_for_duplicates() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        let (cust, item) = t.basics(&tok).await;
        let mut body = invoice_body(&cust, &item, "INV-1");
        body["PrivateNote"] = json!("sale 1");
        body["CustomerMemo"] = json!({"value": "thanks"});
        body["SomethingNew"] = json!({"a": 1});
        let (s, v) = t.post(&tok, "invoice", &body).await;
        assert_eq!(s, 200, "{v}");
        let inv = &v["Invoice"];
        assert_eq!(inv["Id"], "130");
        assert_eq!(inv["SyncToken"], "0");
        assert_eq!(inv["TotalAmt"], json!(100.0));
        assert_eq!(inv["Balance"], json!(100.0));
        assert_eq!(inv["TxnTaxDetail"]["TotalTax"], json!(0.0));
        assert_eq!(inv["CustomerRef"], json!({"value": cust, "name": "Acme"}));
        assert_eq!(inv["PrivateNote"], "sale 1");
        assert_eq!(inv["CustomerMemo"]["value"], "thanks");
        assert_eq!(inv["SomethingNew"]["a"], 1);
        assert_eq!(
            inv["TxnDate"],
            Utc::now().date_naive().format("%Y-%m-%d").to_string()
        );
        assert!(
            DateTime::parse_from_rfc3339(inv["MetaData"]["CreateTime"].as_str().unwrap()).is_ok()
        );
        let lines = inv["Line"].as_array().unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["SalesItemLineDetail"]["ItemRef"]["name"], "Coffee");
        assert_eq!(
            lines[1],
            json!({"Amount": 100.0, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        );
        assert!(v["time"].is_string());

        let (s, v) = t
            .post(&tok, "invoice", &invoice_body(&cust, &item, "INV-1"))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6140"));
        assert_eq!(
            v["Fault"]["Error"][0]["Message"],
            "Duplicate Document Number Error"
        );
        assert_eq!(
            fault_detail(&v),
            "Duplicate Document Number Error : You must specify a different number. This number has already been used. DocNumber=INV-1 is assigned to TxnType=Invoice with TxnId=130"
        );
        t.sb.set_duplicate_doc_check(false);
        let (s, v) = t
            .post(&tok, "invoice", &invoice_body(&cust, &item, "INV-1"))
            .await;
        assert_eq!((s, v["Invoice"]["Id"].as_str()), (200, Some("131")));
        t.sb.set_duplicate_doc_check(true);

        let mut bad = invoice_body(&cust, &item, "INV-2");
        bad["Line"][0]["Amount"] = json!(99.0);
        let (s, v) = t.post(&tok, "invoice", &bad).await;
        assert_eq!((s, fault_code(&v)), (400, "6000"));
        assert!(fault_detail(&v).contains("Amount is not equal to UnitPrice * Qty"));
        let (s, v) = t
            .post(&tok, "invoice", &invoice_body(&cust, "999", "INV-2"))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "2500"));
        let (s, v) = t
            .post(&tok, "invoice", &invoice_body("999", &item, "INV-2"))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "2500"));
        let (s, v) = t
            .post(
                &tok,
                "invoice",
                &invoice_body(&cust, &item, "INV-2-IS-FAR-TOO-LONG!"),
            )
            .await;
        assert_eq!((s, fault_code(&v)), (400, "2050"), "{v}");
        let mut bad = invoice_body(&cust, &item, "INV-2");
        bad["Line"] = json!([]);
        let (s, v) = t.post(&tok, "invoice", &bad).await;
        assert_eq!((s, fault_code(&v)), (400, "6000"));
        let mut bad = invoice_body(&cust, &item, "INV-2");
        bad["Line"][0]["SalesItemLineDetail"]["TaxCodeRef"] = json!({"value": "3"});
        let (s, v) = t.post(&tok, "invoice", &bad).await;
        assert_eq!((s, fault_code(&v)), (400, "2500"), "US codes are TAX/NON");
        let inactive = t.sb.seed_customer("Gone Ltd", false);
        let (s, v) = t
            .post(&tok, "invoice", &invoice_body(&inactive, &item, "INV-2"))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "610"));
        assert!(fault_detail(&v).contains("Gone Ltd"), "{v}");
        assert_eq!(t.sb.invoices().len(), 2);

        // Read, then a full update with the current SyncToken.
        let (s, v) = t.get(&tok, "invoice/130").await;
        assert_eq!(
            (s, v["Invoice"]["DocNumber"].as_str()),
            (200, Some("INV-1"))
        );
        // (Renumbered: 131 holds INV-1 too since the check was off.)
        let mut upd = invoice_body(&cust, &item, "INV-1R");
        upd["Id"] = json!("130");
        upd["SyncToken"] = json!("0");
        upd["Line"][0]["Amount"] = json!(120.0);
        upd["Line"][0]["SalesItemLineDetail"]["UnitPrice"] = json!(60.0);
        let (s, v) = t.post(&tok, "invoice", &upd).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["Invoice"]["TotalAmt"], json!(120.0));
        assert_eq!(v["Invoice"]["SyncToken"], "1");
        assert!(
            v["Invoice"].get("PrivateNote").is_none(),
            "a full update replaces"
        );
        let (s, v) = t.get(&tok, "invoice/999").await;
        assert_eq!((s, fault_code(&v)), (400, "610"));
    }

    #[tokio::test]
    async fn non_us_companies_compute_vat() {
        let t = start_with(QuickbooksSandboxOptions {
            us_company: false,
            ..unlimited()
        })
        .await;
        let (tok, _) = t.connect().await;
        let (cust, item) = t.basics(&tok).await;
        let line = |amount: f64, code: Option<&str>| {
            let mut l = json!({"Amount": amount, "DetailType": "SalesItemLineDetail",
                               "SalesItemLineDetail": {"ItemRef": {"value": item}}});
            if let Some(c) = code {
                l["SalesItemLineDetail"]["TaxCodeRef"] = json!({"value": c});
            }
            l
        };
        let body = |lines: Vec<Value>, gtc: &str| json!({"CustomerRef": {"value": cust}, "GlobalTaxCalculation": gtc, "Line": lines});
        let (s, v) = t
            .post(
                &tok,
                "invoice",
                &body(
                    vec![line(100.0, Some("3")), line(50.0, Some("4"))],
                    "TaxExcluded",
                ),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["Invoice"]["TxnTaxDetail"]["TotalTax"], json!(16.0));
        assert_eq!(v["Invoice"]["TotalAmt"], json!(166.0));
        assert_eq!(v["Invoice"]["Line"][2]["Amount"], json!(150.0));
        let (s, v) = t
            .post(
                &tok,
                "invoice",
                &body(vec![line(116.0, Some("3"))], "TaxInclusive"),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["Invoice"]["TotalAmt"], json!(116.0));
        assert_eq!(v["Invoice"]["TxnTaxDetail"]["TotalTax"], json!(16.0));
        // Decimals, not floats: 0.1 + 0.2 is 0.3; 16% of 0.3 rounds to 0.05.
        let (s, v) = t
            .post(
                &tok,
                "invoice",
                &body(
                    vec![line(0.1, Some("3")), line(0.2, Some("3"))],
                    "TaxExcluded",
                ),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["Invoice"]["Line"][2]["Amount"], json!(0.3));
        assert_eq!(v["Invoice"]["TxnTaxDetail"]["TotalTax"], json!(0.05));
        assert_eq!(v["Invoice"]["TotalAmt"], json!(0.35));
        let (s, v) = t
            .post(
                &tok,
                "invoice",
                &body(vec![line(10.0, None)], "TaxExcluded"),
            )
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6000"));
        let (s, v) = t
            .post(
                &tok,
                "invoice",
                &body(vec![line(10.0, Some("TAX"))], "TaxExcluded"),
            )
            .await;
        assert_eq!((s, fault_code(&v)), (400, "2500"));
        let (s, v) = t
            .post(
                &tok,
                "invoice",
                &body(vec![line(10.0, None)], "NotApplicable"),
            )
            .await;
        assert_eq!((s, v["Invoice"]["TotalAmt"].clone()), (200, json!(10.0)));
        let (s, v) = t.query(&tok, "select * from TaxCode where Id = '3'").await;
        assert_eq!(
            (s, v["QueryResponse"]["TaxCode"][0]["Name"].as_str()),
            (200, Some("VAT 16%"))
        );
        let (_, v) = t
            .query(&tok, "select * from TaxRate where Name = 'VAT 16%'")
            .await;
        assert_eq!(v["QueryResponse"]["TaxRate"][0]["RateValue"], 16);
    }

    #[tokio::test]
    async fn requestid_replays_the_original_answer() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        let (cust, item) = t.basics(&tok).await;
        let body = invoice_body(&cust, &item, "R-1");
        let (s, first) = t.post(&tok, "invoice?requestid=rq-1", &body).await;
        assert_eq!(s, 200);
        // Same requestid, even with another body: the original answer.
        let (s, again) = t
            .post(
                &tok,
                "invoice?requestid=rq-1",
                &invoice_body(&cust, &item, "R-2"),
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(again["Invoice"], first["Invoice"]);
        assert_eq!(t.sb.invoices().len(), 1);
        // A new requestid with the same body is a new request: 6140.
        let (s, v) = t.post(&tok, "invoice?requestid=rq-2", &body).await;
        assert_eq!((s, fault_code(&v)), (400, "6140"));
        // Errors replay too, even once the cause is gone.
        t.sb.set_duplicate_doc_check(false);
        let (s, v2) = t.post(&tok, "invoice?requestid=rq-2", &body).await;
        assert_eq!((s, fault_code(&v2)), (400, "6140"));
        assert_eq!(v2["Fault"], v["Fault"]);
        assert_eq!(t.sb.invoices().len(), 1);
        // Length limits: 50, and 36 for a batch.
        let long = "x".repeat(51);
        let (s, v) = t
            .post(&tok, &format!("invoice?requestid={long}"), &body)
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6000"));
        assert!(fault_detail(&v).contains("requestid"));
        assert_eq!(t.sb.invoices().len(), 1);
        let ok50 = "y".repeat(50);
        let (s, _) = t
            .post(&tok, &format!("invoice?requestid={ok50}"), &body)
            .await;
        assert_eq!(s, 200);
        let batch = json!({"BatchItemRequest": [{"bId": "1", "Query": "select * from Item"}]});
        let (s, v) = t
            .post(&tok, &format!("batch?requestid={}", "z".repeat(37)), &batch)
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6000"));
        let (s, _) = t
            .post(&tok, &format!("batch?requestid={}", "z".repeat(36)), &batch)
            .await;
        assert_eq!(s, 200);
        assert_eq!(t.sb.stats_json()["requestid_replays"], 2);
    }

    #[tokio::test]
    async fn batch_runs_items_independently() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        let (cust, item) = t.basics(&tok).await;
        let body = json!({"BatchItemRequest": [
            {"bId": "1", "operation": "create", "Invoice": invoice_body(&cust, &item, "B-1")},
            {"bId": "2", "operation": "create", "Invoice": invoice_body("999", &item, "B-2")},
            {"bId": "3", "Query": "select * from Customer where DisplayName = 'Acme'"},
            {"bId": "4", "operation": "create", "Invoice": invoice_body(&cust, &item, "B-1")},
            {"bId": "5", "operation": "update", "Customer": {"Id": cust, "SyncToken": "7", "DisplayName": "Acme"}},
            {"bId": "6", "operation": "delete", "Invoice": {"Id": "130", "SyncToken": "0"}},
            {"bId": "7", "Query": "select * from Nothing"},
        ]});
        let (s, v) = t.post(&tok, "batch", &body).await;
        assert_eq!(s, 200, "{v}");
        let items = v["BatchItemResponse"].as_array().unwrap();
        let bids: Vec<&str> = items.iter().map(|i| i["bId"].as_str().unwrap()).collect();
        assert_eq!(bids, ["1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!(items[0]["Invoice"]["DocNumber"], "B-1");
        assert_eq!(fault_code(&items[1]), "2500");
        assert_eq!(items[1]["Fault"]["type"], "ValidationFault");
        assert_eq!(items[2]["QueryResponse"]["Customer"][0]["Id"], json!(cust));
        assert_eq!(fault_code(&items[3]), "6140");
        assert_eq!(fault_code(&items[4]), "5010");
        assert_eq!(fault_code(&items[5]), "500");
        assert_eq!(fault_code(&items[6]), "4000");
        assert!(v["time"].is_string());
        assert_eq!(t.sb.invoices().len(), 1);

        let many: Vec<Value> = (0..31)
            .map(|i| json!({"bId": i.to_string(), "Query": "select * from Item"}))
            .collect();
        let (s, v) = t
            .post(&tok, "batch", &json!({"BatchItemRequest": many}))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6000"));
        assert!(fault_detail(&v).contains("30"), "{v}");
        assert_eq!(t.sb.requests("POST /v3/company/{realm}/batch"), 2);
    }

    #[tokio::test]
    async fn cdc_returns_what_changed() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        let (cust, item) = t.basics(&tok).await;
        t.post(&tok, "invoice", &invoice_body(&cust, &item, "C-1"))
            .await;
        let since = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let r =
            t.c.get(t.api("cdc"))
                .query(&[
                    ("entities", "Customer,Item,invoice"),
                    ("changedSince", &since),
                ])
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let qr = &v["CDCResponse"][0]["QueryResponse"];
        assert_eq!(qr[0]["Customer"][0]["DisplayName"], "Acme");
        assert_eq!(qr[1]["Item"][0]["Name"], "Coffee");
        assert_eq!(qr[2]["Invoice"][0]["DocNumber"], "C-1");
        assert_eq!(qr[2]["maxResults"], 1);
        let future = (Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
        let (s, v) = t
            .get(
                &tok,
                &format!("cdc?entities=Customer&changedSince={future}"),
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["CDCResponse"][0]["QueryResponse"], json!([{}]));
        let old = (Utc::now() - chrono::Duration::days(31)).format("%Y-%m-%d");
        let (s, v) = t
            .get(&tok, &format!("cdc?entities=Customer&changedSince={old}"))
            .await;
        assert_eq!((s, fault_code(&v)), (400, "6000"));
        let (s, _) = t.get(&tok, "cdc?entities=Customer").await;
        assert_eq!(s, 400);
        let (s, _) = t.get(&tok, "cdc?changedSince=2030-01-01").await;
        assert_eq!(s, 400);
    }

    #[tokio::test]
    async fn cdc_reports_changes_and_deletions_and_caps_an_answer_at_1000() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        // History (90 days old): outside cdc's window.
        let customers = t.sb.seed_customers(1200);
        let items = t.sb.seed_items(30);
        let since = (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
        let cdc = |entities: &'static str| {
            let since = since.clone();
            let t = &t;
            let tok = tok.clone();
            async move {
                let r =
                    t.c.get(t.api("cdc"))
                        .query(&[("entities", entities), ("changedSince", &since)])
                        .bearer_auth(&tok)
                        .send()
                        .await
                        .unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                v["CDCResponse"][0]["QueryResponse"].clone()
            }
        };
        assert_eq!(cdc("Customer,Item").await, json!([{}, {}]));

        let renamed =
            t.sb.update_entity(
                "customer",
                &customers[3],
                json!({"DisplayName": "Renamed One"}),
            )
            .unwrap();
        assert_eq!(renamed["SyncToken"], "1");
        assert!(t.sb.delete_entity("Item", &items[0]));
        assert!(!t.sb.delete_entity("Item", &items[0]), "gone already");
        assert!(
            !t.sb.delete_entity("Account", "1"),
            "lists cannot be deleted"
        );
        let qr = cdc("Customer,Item").await;
        assert_eq!(qr[0]["Customer"].as_array().unwrap().len(), 1);
        assert_eq!(qr[0]["Customer"][0]["DisplayName"], "Renamed One");
        assert_eq!(
            qr[1]["Item"],
            json!([{"domain": "QBO", "status": "Deleted", "Id": items[0],
                    "MetaData": qr[1]["Item"][0]["MetaData"].clone()}])
        );
        let (s, v) = t.get(&tok, &format!("item/{}", items[0])).await;
        assert_eq!((s, fault_code(&v)), (400, "610"), "deleted: not found");
        // A clash is refused as QuickBooks would.
        let clash = t.sb.update_entity(
            "Customer",
            &customers[4],
            json!({"DisplayName": "renamed one"}),
        );
        assert!(clash.unwrap_err().contains("6240"));

        // 1,000 objects at most, shared by the entities, oldest first.
        for id in &customers[100..1100] {
            t.sb.update_entity("Customer", id, json!({"Notes": "touched"}))
                .unwrap();
        }
        let qr = cdc("Item,Customer").await;
        assert_eq!(qr[0]["Item"].as_array().unwrap().len(), 1, "items first");
        let got = qr[1]["Customer"].as_array().unwrap();
        assert_eq!(got.len(), 999);
        assert_eq!(
            got[0]["DisplayName"], "Renamed One",
            "the oldest change first"
        );
    }

    #[tokio::test]
    async fn bulk_seeds_are_realistic_unique_and_paged_by_id() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        let ids = t.sb.seed_customers(3000);
        let more = t.sb.seed_customers(10);
        assert_eq!(ids.len(), 3000);
        let all = t.sb.customers();
        let mut names: Vec<&str> = all
            .iter()
            .map(|c| c["DisplayName"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 3010, "unique across calls");
        let arabic = all
            .iter()
            .filter(|c| {
                c["DisplayName"]
                    .as_str()
                    .unwrap()
                    .chars()
                    .any(|ch| ('\u{0600}'..='\u{06FF}').contains(&ch))
            })
            .count();
        assert!((900..=1100).contains(&arabic), "{arabic}");
        let inactive = all.iter().filter(|c| c["Active"] == false).count();
        assert_eq!(inactive, 150);
        assert!(all.iter().any(|c| c["CompanyName"].is_string()));
        assert!(all
            .iter()
            .any(|c| c["PrimaryEmailAddr"]["Address"].is_string()));
        assert_eq!(more[0], "3001");

        // Pages by Id, inactive ones included when asked.
        let (s, v) = t
            .query(
                &tok,
                "SELECT * FROM Customer WHERE Active IN (true, false) ORDERBY Id STARTPOSITION 2001 MAXRESULTS 1000",
            )
            .await;
        assert_eq!(s, 200);
        let page = v["QueryResponse"]["Customer"].as_array().unwrap();
        assert_eq!(page.len(), 1000);
        assert_eq!(page[0]["Id"], "2001");
        let (_, v) = t.query(&tok, "SELECT COUNT(*) FROM Customer").await;
        assert_eq!(v["QueryResponse"]["totalCount"], 3010 - 150, "active only");

        let items = t.sb.seed_items(600);
        let all = t.sb.items();
        assert_eq!(all.len(), 600);
        let mut skus: Vec<&str> = all.iter().map(|i| i["Sku"].as_str().unwrap()).collect();
        skus.sort_unstable();
        skus.dedup();
        assert_eq!(skus.len(), 600);
        assert!(all.iter().all(|i| i["UnitPrice"].as_f64().unwrap() > 0.0));
        assert!(all.iter().any(|i| i["Type"] == "Inventory"));
        assert!(all.iter().any(|i| i["Type"] == "Service"));
        // A seeded item is as usable as any.
        let cust = t.sb.seed_customer("Bulk Buyer", true);
        let (s, v) = t
            .post(&tok, "invoice", &invoice_body(&cust, &items[5], "BULK-1"))
            .await;
        assert_eq!(s, 200, "{v}");
        let vendors = t.sb.seed_vendors(20);
        assert_eq!(t.sb.vendors().len(), 20);
        assert_eq!(vendors.len(), 20);
        assert!(t
            .sb
            .seed_vendor("Bulk Buyer", true)
            .unwrap_err()
            .contains("6240"));
        assert!(t.sb.seed_vendor("Beans Inc", true).is_ok());
    }

    #[test]
    fn sliding_windows() {
        let l = QboLimits {
            per_second: 3,
            per_minute: 5,
            batch_per_minute: 2,
            time_scale: 0.1,
            enforce: true,
        };
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = Windows::default();
        // 3 in the (100 ms) second, the 4th refused, and not counted.
        assert!((0..3).all(|i| w.admit(at(i), false, &l)));
        assert!(!w.admit(at(50), false, &l));
        assert!(!w.admit(at(99), false, &l));
        assert!(w.admit(at(100), false, &l), "the first one left the window");
        assert!(w.admit(at(150), false, &l));
        // 5 in the (6 s) minute: full, even a second later.
        assert!(!w.admit(at(400), false, &l));
        assert!(
            w.admit(at(6000), false, &l),
            "requests at 0 ms left the minute"
        );
        // Batches: 2 a minute, besides counting as requests.
        let mut w = Windows::default();
        assert!(w.admit(at(0), true, &l));
        assert!(w.admit(at(200), true, &l));
        assert!(!w.admit(at(400), true, &l));
        assert!(w.admit(at(400), false, &l), "plain requests still pass");
        assert!(w.admit(at(6000), true, &l));
        // Not enforced: anything goes.
        let off = QboLimits {
            enforce: false,
            ..l.clone()
        };
        assert!((0..100).all(|_| w.admit(at(6001), true, &off)));
    }

    #[tokio::test]
    async fn the_limiter_answers_xml_429_past_the_limit() {
        let t = start_with(QuickbooksSandboxOptions {
            // A 3 s "second": the burst below fits in it on any machine.
            limits: QboLimits {
                time_scale: 3.0,
                ..QboLimits::default()
            },
            ..Default::default()
        })
        .await;
        let (tok, _) = t.connect().await;
        for i in 0..10 {
            let (s, v) = t.query(&tok, "select * from Item").await;
            assert_eq!(s, 200, "request {i}: {v}");
        }
        assert_eq!(t.sb.throttled(), 0);
        let r =
            t.c.get(t.api("customer/1"))
                .bearer_auth(&tok)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["content-type"], "application/xml");
        assert!(r.headers().get("retry-after").is_none());
        tid(r.headers());
        let body = r.text().await.unwrap();
        assert!(body.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><IntuitResponse time=\""
        ));
        assert!(body.contains("<Fault type=\"SERVICE\"><Error code=\"3001\"><Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message><Detail>The request limit was reached.</Detail></Error></Fault></IntuitResponse>"));
        assert_eq!(t.sb.throttled(), 1);

        // Batches have their own limit; a batch is one request.
        t.sb.set_limits(QboLimits {
            per_second: 1000,
            batch_per_minute: 2,
            ..QboLimits::default()
        });
        let batch = json!({"BatchItemRequest": [{"bId": "1", "Query": "select * from Item"}]});
        assert_eq!(t.post(&tok, "batch", &batch).await.0, 200);
        assert_eq!(t.post(&tok, "batch", &batch).await.0, 200);
        let r =
            t.c.post(t.api("batch"))
                .bearer_auth(&tok)
                .json(&batch)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(t.query(&tok, "select * from Item").await.0, 200);
        assert_eq!(t.sb.throttled(), 2);
    }

    #[tokio::test]
    async fn every_answer_carries_a_fresh_intuit_tid() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        let mut tids = Vec::new();
        let reqs = vec![
            t.c.get(t.url("/connect/oauth2")),
            t.c.post(t.url(TOKEN_PATH)),
            t.c.get(t.api("query?query=select%20*%20from%20Item"))
                .bearer_auth(&tok),
            t.c.get(t.api("query?query=select%20*%20from%20Item")),
            t.c.get(t.api("customer/77")).bearer_auth(&tok),
            t.c.get(t.url("/nowhere")),
            t.c.get(t.url("/__sandbox/stats")),
            t.c.post(t.url("/v2/oauth2/tokens/revoke")),
        ];
        for rb in reqs {
            let r = rb.send().await.unwrap();
            tids.push(tid(r.headers()));
        }
        let n = tids.len();
        tids.sort();
        tids.dedup();
        assert_eq!(tids.len(), n, "all distinct: {tids:?}");
    }

    #[tokio::test]
    async fn injected_faults_have_intuit_shapes() {
        let t = start().await;
        let (tok, _) = t.connect().await;
        let (cust, item) = t.basics(&tok).await;
        let body = invoice_body(&cust, &item, "F-1");
        t.sb.inject(
            INVOICE_ROUTE,
            Fault::Status {
                status: 503,
                retry_after: None,
                html: false,
            },
            1,
        );
        let (s, v) = t.post(&tok, "invoice", &body).await;
        assert_eq!((s, fault_code(&v)), (503, "10000"));
        assert_eq!(v["Fault"]["type"], "SystemFault");
        assert!(t.sb.invoices().is_empty(), "nothing was done");
        assert_eq!(t.post(&tok, "invoice", &body).await.0, 200);
        assert_eq!(t.sb.responses(INVOICE_ROUTE, 503), 1);
        assert_eq!(t.sb.responses(INVOICE_ROUTE, 200), 1);

        // Through the control API: a 429 is XML.
        let r = t
            .c
            .post(t.url("/__sandbox/faults"))
            .json(
                &json!({"route": "GET /v3/company/{realm}/query", "kind": "status", "status": 429}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r =
            t.c.get(t.api("query?query=select%20*%20from%20Item"))
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["content-type"], "application/xml");
        assert!(r.text().await.unwrap().contains("<Error code=\"3001\">"));
        assert_eq!(t.sb.throttled(), 0, "injected, not the limiter");

        // A 401 on the API is the gateway's; on the token endpoint, OAuth's.
        let unauth = Fault::Status {
            status: 401,
            retry_after: None,
            html: false,
        };
        t.sb.inject("GET /v3/company/{realm}/customer/{id}", unauth.clone(), 1);
        let r =
            t.c.get(t.api(&format!("customer/{cust}")))
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["fault"]["error"][0]["code"], "3200");
        t.sb.inject(&format!("POST {TOKEN_PATH}"), unauth, 1);
        let (s, v) = t.refresh("whatever").await;
        assert_eq!((s, v), (401, json!({"error": "invalid_client"})));
        t.sb.inject("*", Fault::Drop, 1);
        t.sb.clear_faults();
        assert_eq!(t.query(&tok, "select * from Item").await.0, 200);
    }

    #[tokio::test]
    async fn control_api() {
        let t = start().await;
        let post = |path: &str, body: Value| t.c.post(t.url(path)).json(&body).send();
        let r = post(
            "/__sandbox/settings",
            json!({"rotation": {"grace_secs": 2}, "access_token_lifetime_secs": 120,
                   "limits": {"per_second": 3, "time_scale": 0.5}, "duplicate_doc_check": false}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["rotation"], json!({"grace_secs": 2.0}));
        assert_eq!(v["limits"]["per_second"], 3);
        assert_eq!(v["limits"]["per_minute"], 500);
        assert_eq!(v["duplicate_doc_check"], false);
        for bad in [
            json!({"rotation": "lenient"}),
            json!({"limits": {"per_hour": 1}}),
            json!({"limits": {"time_scale": 0}}),
            json!({"nope": 1}),
        ] {
            let r = post("/__sandbox/settings", bad.clone()).await.unwrap();
            assert_eq!(r.status(), 400, "{bad}");
        }
        let (access, _) = t.connect().await;
        let code = t.sb.issue_code(REDIRECT);
        let (_, v) = t.exchange(&code, REDIRECT).await;
        assert_eq!(v["expires_in"], 120);

        let r = post(
            "/__sandbox/customers",
            json!({"display_name": "Zed", "active": false}),
        )
        .await
        .unwrap();
        let id = r.json::<Value>().await.unwrap()["Id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(t.sb.customers()[0]["Id"], json!(id));
        assert_eq!(t.sb.customers()[0]["Active"], false);
        assert_eq!(t.sb.seed_customer("Zed", true), id, "one customer per name");
        assert_eq!(t.sb.customers().len(), 1);
        let inv = t.sb.seed_invoice("S-1", "Yolanda");
        assert_eq!(inv, "130");
        assert_eq!(t.sb.invoices()[0]["TotalAmt"], json!(100.0));
        assert_eq!(t.sb.items()[0]["Name"], "Services");
        assert_eq!(
            t.sb.seed_item("Services", None),
            t.sb.items()[0]["Id"].as_str().unwrap()
        );
        let r = post("/__sandbox/codes", json!({"redirect_uri": REDIRECT}))
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            t.exchange(v["code"].as_str().unwrap(), REDIRECT).await.0,
            200
        );

        assert_eq!(
            post("/__sandbox/tokens/expire", json!({}))
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(t.query(&access, "select * from Item").await.0, 401);
        let r = post("/__sandbox/tokens/revoke", json!({})).await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 3);
        assert!(t.sb.live_refresh_tokens().is_empty());

        let v: Value =
            t.c.get(t.url("/__sandbox/stats"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(v["tokens"]["codes_exchanged"], 3);
        assert_eq!(v["entities"]["Invoice"], 1);
        assert_eq!(
            v["routes"]["GET /v3/company/{realm}/query"]["responses"]["401"],
            1
        );
        assert!(v["routes"].get("GET /__sandbox/stats").is_none());
        post("/__sandbox/stats/reset", json!({})).await.unwrap();
        let v = t.sb.stats_json();
        assert_eq!(v["tokens"]["codes_exchanged"], 0);
        assert_eq!(v["requests_total"], 0);
    }
}
