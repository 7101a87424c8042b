//! The local JSON API: what the status page and POS front-ends call.
//!
//! Every route needs the API key except `GET /api/health` (for monitors),
//! `GET /` (the page itself, which holds no data and asks for the key) and
//! `GET /callback` (Intuit's redirect in the browser, guarded by the OAuth
//! `state`). The key check is `server::protect`'s.
//!
//! Errors are `{"message": "...what happened and what to do"}` with a
//! status that says whose problem it is: 4xx the caller's request, 404 an
//! unknown job or route, 409 a state that forbids the action (QuickBooks
//! not connected), 502 the backend or Intuit said no or could not be
//! reached, 503 a part that is not enabled here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::config::Config;
use crate::laravel::auth::VAULT_TOKEN_NAME;
use crate::laravel::LaravelClient;
use crate::pipeline::{GateView, Pipeline};
use crate::quickbooks::callback::{self, CallbackError};
use crate::quickbooks::model::{Entity, Query as QboQuery};
use crate::quickbooks::{
    oauth, CacheError, ConnectionStore, OAuthClient, Pusher, QboCache, QboClient, SearchError,
};
use crate::status::{self, LaravelLink, Live, QuickbooksLink, StatusReport};
use crate::store::{ListFilter, OutboxHandle, StoreError, STATES};
use crate::token::{RefreshRecord, TokenError};

/// Default and largest `limit` of `GET /api/jobs`.
const JOBS_DEFAULT: usize = 50;
const JOBS_MAX: usize = 1000;

/// How long a "Connect to QuickBooks" attempt may take in the browser.
const CONNECT_FLOW_TTL: Duration = Duration::from_secs(15 * 60);

/// The running agent's parts the API reads and acts on. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LocalApi {
    cfg: Arc<Config>,
    clock: Arc<dyn Clock>,
    started_at: DateTime<Utc>,
    outbox: OutboxHandle,
    laravel: LaravelClient,
    /// Wakes the workers after a retry (pipeline and pusher).
    on_retry: Arc<dyn Fn() + Send + Sync>,
    qbo: Option<QboSide>,
    heartbeat: Option<Arc<dyn Fn() -> Value + Send + Sync>>,
    sync: Option<crate::sync_interval::SyncInterval>,
    /// The pipeline, for its backend gate (health).
    pipeline: Option<Pipeline>,
}

/// The QuickBooks side, when `quickbooks.enabled`.
#[derive(Clone)]
pub(crate) struct QboSide {
    pub(crate) client: QboClient,
    pub(crate) oauth: OAuthClient,
    pub(crate) pusher: Pusher,
    pub(crate) cache: QboCache,
    flows: Arc<ConnectFlows>,
}

impl QboSide {
    pub(crate) fn new(
        client: QboClient,
        oauth: OAuthClient,
        pusher: Pusher,
        cache: QboCache,
    ) -> QboSide {
        QboSide {
            client,
            oauth,
            pusher,
            cache,
            flows: Arc::default(),
        }
    }
}

impl QboSide {
    /// After the stored connection was forgotten: the token in memory goes
    /// too, and callers are held until someone connects again.
    fn drop_connection(&self) {
        let keeper = self.client.keeper();
        keeper.forget();
        keeper.hold_for_person(
            "QuickBooks is not connected: use \"Connect to QuickBooks\" on the status page, or `pos-connector qbo connect`",
        );
    }
}

/// The `state` of each "Connect to QuickBooks" started from the page and
/// not yet come back: a callback must carry one of them (CSRF), and each is
/// taken once.
#[derive(Default)]
struct ConnectFlows {
    pending: Mutex<Vec<(String, Instant)>>,
}

impl ConnectFlows {
    fn start(&self) -> String {
        let state = oauth::new_state();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|(_, at)| at.elapsed() < CONNECT_FLOW_TTL);
        // A few open attempts (two tabs, a retry); not an unbounded list.
        if p.len() >= 8 {
            p.remove(0);
        }
        p.push((state.clone(), Instant::now()));
        state
    }

    /// The pending state this callback carries, removed (taken once).
    fn take(&self, params: &HashMap<String, String>) -> Option<String> {
        let given = params.get("state")?;
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|(_, at)| at.elapsed() < CONNECT_FLOW_TTL);
        let i = p.iter().position(|(s, _)| {
            crate::secret::constant_time_eq(given, &secrecy::SecretString::from(s.as_str()))
        })?;
        Some(p.remove(i).0)
    }
}

impl LocalApi {
    pub(crate) fn new(
        cfg: &Config,
        clock: Arc<dyn Clock>,
        outbox: OutboxHandle,
        laravel: LaravelClient,
        on_retry: Arc<dyn Fn() + Send + Sync>,
    ) -> LocalApi {
        LocalApi {
            started_at: clock.now(),
            cfg: Arc::new(cfg.clone()),
            clock,
            outbox,
            laravel,
            on_retry,
            qbo: None,
            heartbeat: None,
            sync: None,
            pipeline: None,
        }
    }

    /// The inbox's live polling interval, for the report.
    pub(crate) fn with_sync_interval(
        mut self,
        sync: crate::sync_interval::SyncInterval,
    ) -> LocalApi {
        self.sync = Some(sync);
        self
    }

    /// The pipeline whose backend gate `/api/health` and the report show.
    pub(crate) fn with_pipeline(mut self, pipeline: Pipeline) -> LocalApi {
        self.pipeline = Some(pipeline);
        self
    }

    fn backend_gate(&self) -> Option<GateView> {
        self.pipeline.as_ref().and_then(Pipeline::gate)
    }

    pub(crate) fn with_quickbooks(mut self, side: QboSide) -> LocalApi {
        self.qbo = Some(side);
        self
    }

    /// `status` gives the heartbeat's state for the page.
    pub(crate) fn with_heartbeat(
        mut self,
        status: Arc<dyn Fn() -> Value + Send + Sync>,
    ) -> LocalApi {
        self.heartbeat = Some(status);
        self
    }

    /// The whole report, as `GET /api/status` and the page show it.
    pub(crate) async fn report(&self) -> Result<StatusReport, StoreError> {
        let cache = match &self.qbo {
            Some(side) => side
                .cache
                .status()
                .await
                .ok()
                .map(|c| serde_json::to_value(c).expect("serialises")),
            None => None,
        };
        let live = Live {
            started_at: Some(self.started_at),
            heartbeat: self.heartbeat.as_ref().map(|f| f()),
            cache,
            sync: self.sync.clone(),
            backend_gate: self.backend_gate(),
        };
        status::collect(
            &self.cfg,
            self.clock.now(),
            &self.outbox,
            &self.laravel,
            self.qbo.as_ref().map(|q| &q.client),
            Some(live),
        )
        .await
    }

    fn qbo_link(&self) -> QuickbooksLink {
        // The push counts are on the page; this view is about the link.
        QuickbooksLink::read(&self.cfg, self.clock.now(), Default::default())
    }
}

/// The routes that need the key (the caller wraps them in the check).
pub(crate) fn protected_routes(api: LocalApi) -> Router {
    Router::new()
        .route("/api/status", get(get_status))
        .route("/api/config", get(get_config))
        .route(
            "/api/token",
            get(laravel_token)
                .post(laravel_refresh)
                .delete(laravel_forget),
        )
        .route(
            "/api/quickbooks/token",
            get(qbo_token).post(qbo_refresh).delete(qbo_forget),
        )
        .route("/api/quickbooks/connect", get(qbo_connect))
        .route("/api/quickbooks/disconnect", post(qbo_disconnect))
        .route("/api/quickbooks/test", post(qbo_test))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/retry-parked", post(retry_parked))
        .route("/api/jobs/{invoice_number}", get(show_job))
        .route("/api/jobs/{invoice_number}/retry", post(retry_job))
        .route("/api/search/{index}", get(search))
        .route("/api/cache/status", get(cache_status))
        .route("/api/cache/refresh", post(cache_refresh))
        .route("/api/indexes/status", get(indexes_status))
        .route("/api/data/{entity}", get(cache_data))
        .route("/metrics", get(super::metrics::metrics))
        .with_state(api)
}

/// The routes open without the key.
pub(crate) fn open_routes(api: LocalApi) -> Router {
    Router::new()
        .route("/", get(super::page::status_page))
        .route("/api/health", get(health))
        .route("/callback", get(qbo_callback))
        .with_state(api)
}

fn qbo_not_enabled() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "QuickBooks is not enabled on this agent: set quickbooks.enabled to true (with the app's client_id and secret) and restart",
    )
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "message": message.into() }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    tracing::error!(error = %e, "local API: the outbox failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the outbox cannot be read: {e}"),
    )
}

/// A token refresh that failed: whose fault, and whether a person must act.
fn token_error(backend: &str, e: &TokenError) -> Response {
    let needs_person = matches!(e, TokenError::NeedsPerson { .. });
    (
        if needs_person {
            StatusCode::CONFLICT
        } else {
            StatusCode::BAD_GATEWAY
        },
        Json(json!({
            "message": format!("{backend}: {e}"),
            "needs_person": needs_person,
        })),
    )
        .into_response()
}

// ------------------------------------------------------------------ health

async fn health(State(api): State<LocalApi>) -> Response {
    let now = api.clock.now();
    let stats = api.outbox.call(|o| o.queue_stats()).await;
    let k = api.laravel.keeper().status();
    let reach = api.laravel.stats().reachability();
    let qbo_state = api.qbo.as_ref().map(|_| api.qbo_link().state);
    let gate = api.backend_gate();
    // Degraded too while all sales wait behind the pipeline's backend gate,
    // or some sales keep failing although the backend answers others.
    let failing = stats.as_ref().map(|s| s.failing).unwrap_or(0);
    let degraded = k.needs_person.is_some()
        || reach.as_ref().is_some_and(|r| !r.reachable)
        || qbo_state.as_deref() == Some("reconnect_needed")
        || stats.is_err()
        || gate.is_some()
        || failing > 0;
    let (depth, parked) = match &stats {
        Ok(s) => (Some(s.pending), Some(s.parked)),
        Err(_) => (None, None),
    };
    Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": (now - api.started_at).num_seconds().max(0),
        "authenticated": k.token_valid,
        "sign_in_needs_person": k.needs_person.is_some(),
        "backend_reachable": reach.as_ref().map(|r| r.reachable),
        "queue_depth": depth,
        "parked": parked,
        "failing": failing,
        "backend_gate": gate,
        "quickbooks": qbo_state,
        "cache_age_seconds": api
            .qbo
            .as_ref()
            .and_then(|q| q.cache.age())
            .map(|a| a.as_secs()),
    }))
    .into_response()
}

// ------------------------------------------------------------------ status, config

async fn get_status(State(api): State<LocalApi>) -> Response {
    match api.report().await {
        Ok(r) => Json(r).into_response(),
        Err(e) => store_error(e),
    }
}

async fn get_config(State(api): State<LocalApi>) -> Response {
    let origin = match crate::secret::password_origin(&api.cfg) {
        Ok(o) => o.unwrap_or("not set").to_string(),
        Err(e) => format!("unreadable ({e})"),
    };
    Json(crate::config::redacted_view(&api.cfg, &origin)).into_response()
}

// ------------------------------------------------------------------ the Laravel token

fn laravel_view(api: &LocalApi) -> Value {
    let link = LaravelLink::read(&api.cfg, &api.laravel, api.clock.now());
    serde_json::to_value(link).expect("serialises")
}

async fn laravel_token(State(api): State<LocalApi>) -> Response {
    Json(laravel_view(&api)).into_response()
}

/// After a forced refresh: the view, or 502 when the refresh failed even
/// though the keeper kept a still-valid token (the person asked for a
/// refresh and must know it did not happen).
fn refreshed(backend: &str, last: Option<RefreshRecord>, view: impl Serialize) -> Response {
    match last.filter(|r| !r.ok) {
        None => Json(view).into_response(),
        Some(r) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({
                "message": format!("{backend}: the refresh failed ({}); the current token is kept while it is valid", r.detail),
                "needs_person": false,
                "status": view,
            })),
        )
            .into_response(),
    }
}

async fn laravel_refresh(State(api): State<LocalApi>) -> Response {
    let keeper = api.laravel.keeper();
    match keeper.force_refresh().await {
        Ok(_) => refreshed(
            "invoicing backend sign-in",
            keeper.status().last_refresh,
            laravel_view(&api),
        ),
        Err(e) => token_error("invoicing backend sign-in", &e),
    }
}

async fn laravel_forget(State(api): State<LocalApi>) -> Response {
    let keeper = api.laravel.keeper();
    keeper.forget();
    if let Some(vault) = &keeper.source().vault {
        if let Err(e) = vault.forget_token(VAULT_TOKEN_NAME) {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the token was dropped from memory but the stored copy could not be removed: {e}"),
            );
        }
    }
    tracing::info!("Laravel token forgotten from the local API; the next call signs in again");
    let mut v = laravel_view(&api);
    v["forgotten"] = json!(true);
    Json(v).into_response()
}

// ------------------------------------------------------------------ QuickBooks

/// The stored link when it is usable; otherwise 409 with why.
fn connected_link(api: &LocalApi) -> Result<QuickbooksLink, Box<Response>> {
    let link = api.qbo_link();
    if link.is_connected() {
        return Ok(link);
    }
    Err(Box::new(error(
        StatusCode::CONFLICT,
        link.reason
            .unwrap_or_else(|| "QuickBooks is not connected".into()),
    )))
}

async fn qbo_token(State(api): State<LocalApi>) -> Response {
    if api.qbo.is_none() {
        return qbo_not_enabled();
    }
    Json(api.qbo_link()).into_response()
}

async fn qbo_refresh(State(api): State<LocalApi>) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    if let Err(r) = connected_link(&api) {
        return *r;
    }
    let keeper = side.client.keeper();
    match keeper.force_refresh().await {
        Ok(_) => refreshed("QuickBooks", keeper.status().last_refresh, api.qbo_link()),
        Err(e) => token_error("QuickBooks", &e),
    }
}

async fn qbo_forget(State(api): State<LocalApi>) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    let store = ConnectionStore::new(&api.cfg.data_dir);
    let _lock = match store.lock().await {
        Ok(l) => l,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    if let Err(e) = store.forget() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    side.drop_connection();
    tracing::warn!("QuickBooks connection forgotten from the local API (not revoked at Intuit)");
    let mut v = serde_json::to_value(api.qbo_link()).expect("serialises");
    v["forgotten"] = json!(true);
    Json(v).into_response()
}

async fn qbo_connect(State(api): State<LocalApi>) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    let state = side.flows.start();
    let url = side.oauth.authorize_url(&state);
    Json(json!({
        "authorize_url": url.as_str(),
        "redirect_uri": side.oauth.redirect_uri().as_str(),
        "expires_in": CONNECT_FLOW_TTL.as_secs(),
    }))
    .into_response()
}

/// A small page for the browser when the connect flow cannot go back to
/// the status page with good news.
fn callback_page(status: StatusCode, title: &str, text: &str) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pos-connector: {t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1><p>{x}</p>\
         <p><a href=\"/\">Back to the status page</a></p></body></html>",
        t = esc(title),
        x = esc(text)
    );
    (status, Html(html)).into_response()
}

async fn qbo_callback(
    State(api): State<LocalApi>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return callback_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "QuickBooks is not enabled",
            "Set quickbooks.enabled to true in config.json and restart the agent.",
        );
    };
    let Some(state) = side.flows.take(&params) else {
        tracing::warn!("QuickBooks callback with an unknown state ignored");
        return callback_page(
            StatusCode::BAD_REQUEST,
            "Not accepted",
            &CallbackError::StateMismatch.to_string(),
        );
    };
    let cb = match callback::check(&params, &state) {
        Ok(cb) => cb,
        Err(e) => return callback_page(StatusCode::BAD_REQUEST, "Not connected", &e.to_string()),
    };
    if let Some(expected) = &api.cfg.quickbooks.realm_id {
        if expected != &cb.realm_id {
            return callback_page(
                StatusCode::BAD_REQUEST,
                "Wrong company",
                &format!(
                    "The company approved (realmId {}) is not quickbooks.realm_id ({expected}): connect to the right company, or change quickbooks.realm_id.",
                    cb.realm_id
                ),
            );
        }
    }
    let store = ConnectionStore::new(&api.cfg.data_dir);
    match oauth::connect_with_code(&side.oauth, &store, &*api.clock, &cb.code, &cb.realm_id).await {
        Ok(conn) => {
            tracing::info!(
                realm = %conn.token.realm_id,
                "QuickBooks connected from the status page"
            );
            // The keeper notices the new stored connection by itself; the
            // pusher releases what waited for it; the cache loads the
            // company's lists.
            side.pusher.wake();
            side.cache.request_full();
            Redirect::to("/?quickbooks=connected").into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "QuickBooks connect from the status page failed");
            callback_page(StatusCode::BAD_GATEWAY, "Not connected", &e)
        }
    }
}

#[derive(Debug, Deserialize)]
struct ForceParam {
    #[serde(default)]
    force: Option<String>,
}

async fn qbo_disconnect(State(api): State<LocalApi>, Query(q): Query<ForceParam>) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    let force = flag(q.force.as_deref());
    let store = ConnectionStore::new(&api.cfg.data_dir);
    match oauth::disconnect(&side.oauth, &store, force).await {
        Ok(realm) => {
            side.drop_connection();
            let mut v = serde_json::to_value(api.qbo_link()).expect("serialises");
            v["disconnected"] = json!(realm.is_some());
            v["disconnected_realm_id"] = json!(realm);
            Json(v).into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

/// Signs in if needed and makes one cheap call (a customer count).
async fn qbo_test(State(api): State<LocalApi>) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    let link = match connected_link(&api) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let started = Instant::now();
    let q = QboQuery::select(Entity::Customer).count().build();
    match side.client.query::<Value>(Entity::Customer, &q).await {
        Ok(answer) => Json(json!({
            "ok": true,
            "realm_id": link.realm_id,
            "customers": answer.total_count,
            "took_ms": started.elapsed().as_millis() as u64,
            "message": format!(
                "QuickBooks answered: company {}, {} customers",
                link.realm_id.as_deref().unwrap_or("?"),
                answer.total_count.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
            ),
        }))
        .into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({
                "ok": false,
                "message": format!("QuickBooks test failed: {e}"),
                "took_ms": started.elapsed().as_millis() as u64,
            })),
        )
            .into_response(),
    }
}

// ------------------------------------------------------------------ jobs

#[derive(Debug, Deserialize)]
struct JobsQuery {
    state: Option<String>,
    limit: Option<String>,
}

async fn list_jobs(State(api): State<LocalApi>, Query(q): Query<JobsQuery>) -> Response {
    let state = q.state.filter(|s| !s.trim().is_empty());
    if let Some(s) = &state {
        if !STATES.contains(&s.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "state \"{s}\" is not a job state: use one of {}",
                    STATES.join(", ")
                ),
            );
        }
    }
    let limit = match parse_limit(q.limit.as_deref(), JOBS_MAX) {
        Ok(l) => l.unwrap_or(JOBS_DEFAULT),
        Err(r) => return *r,
    };
    let filter = ListFilter {
        state: state.clone(),
        limit: Some(limit),
    };
    match api
        .outbox
        .call(move |o| Ok((o.list(&filter)?, o.counts()?)))
        .await
    {
        Ok((jobs, counts)) => Json(json!({
            "state": state,
            "limit": limit,
            "counts": counts,
            "jobs": jobs,
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}

async fn show_job(State(api): State<LocalApi>, Path(number): Path<String>) -> Response {
    let key = number.clone();
    let found = api
        .outbox
        .call(move |o| match o.find(&key)? {
            Some(job) => {
                let events = o.events(job.id)?;
                Ok(Some((job, events)))
            }
            None => Ok(None),
        })
        .await;
    match found {
        Ok(Some((job, events))) => {
            let mut v = serde_json::to_value(&job).expect("serialises");
            v["events"] = serde_json::to_value(events).expect("serialises");
            Json(v).into_response()
        }
        Ok(None) => no_such_job(&number),
        Err(e) => store_error(e),
    }
}

fn no_such_job(number: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no job with invoice number \"{number}\" in the outbox"),
    )
}

async fn retry_job(State(api): State<LocalApi>, Path(number): Path<String>) -> Response {
    let now = api.clock.now();
    let key = number.clone();
    let done = api
        .outbox
        .call(move |o| {
            let Some(job) = o.find(&key)? else {
                return Ok(None);
            };
            let retried = o.retry_now(job.id, now)?;
            Ok(Some((job, retried)))
        })
        .await;
    match done {
        Ok(None) => no_such_job(&number),
        Ok(Some((job, None))) => error(
            StatusCode::CONFLICT,
            format!("job {number} is {} and has nothing to retry", job.state),
        ),
        Ok(Some((_, Some(job)))) => {
            tracing::info!(invoice_number = %number, "retry requested from the local API");
            (api.on_retry)();
            Json(job).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn retry_parked(State(api): State<LocalApi>) -> Response {
    let now = api.clock.now();
    match api.outbox.call(move |o| o.retry_all_parked(now)).await {
        Ok(jobs) => {
            if !jobs.is_empty() {
                tracing::info!(
                    count = jobs.len(),
                    "retry of every parked job requested from the local API"
                );
                (api.on_retry)();
            }
            Json(json!({
                "retried": jobs.len(),
                "invoice_numbers": jobs.iter().map(|j| j.invoice_number.clone()).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(e) => store_error(e),
    }
}

/// For the page's handler and metrics: the shared state.
impl LocalApi {
    pub(super) fn outbox(&self) -> &OutboxHandle {
        &self.outbox
    }
    pub(super) fn laravel(&self) -> &LaravelClient {
        &self.laravel
    }
    pub(super) fn qbo_client(&self) -> Option<&QboClient> {
        self.qbo.as_ref().map(|q| &q.client)
    }
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
    pub(super) fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }
}

/// `Content-Type` for Prometheus' text format.
pub(crate) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

// ------------------------------------------------------------------ the QuickBooks cache

/// A yes/no query parameter: present without a value, `1`, `true` or `yes`.
fn flag(raw: Option<&str>) -> bool {
    matches!(
        raw.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("" | "1" | "true" | "yes")
    )
}

/// A `limit` query parameter: absent is `None`; not a positive number is a
/// 400 naming it.
fn parse_limit(raw: Option<&str>, max: usize) -> Result<Option<usize>, Box<Response>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n.min(max))),
            _ => Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                format!("limit \"{l}\" is not a number from 1 to {max}"),
            ))),
        },
    }
}

fn cache_error(e: CacheError) -> Response {
    let status = match &e {
        CacheError::NotConnected { .. } => StatusCode::CONFLICT,
        CacheError::UnknownEntity { .. } => StatusCode::NOT_FOUND,
        CacheError::Store(_) | CacheError::Interrupted(_) => StatusCode::INTERNAL_SERVER_ERROR,
        CacheError::Qbo(_) | CacheError::TooLarge { .. } => StatusCode::BAD_GATEWAY,
    };
    error(status, e.to_string())
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
    limit: Option<String>,
}

async fn search(
    State(api): State<LocalApi>,
    Path(index): Path<String>,
    Query(q): Query<SearchQuery>,
) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    let limit = match parse_limit(q.limit.as_deref(), crate::quickbooks::search::MAX_LIMIT) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    match side
        .cache
        .search(&index, q.q.as_deref().unwrap_or_default(), limit)
    {
        Ok(answer) => Json(answer).into_response(),
        Err(e @ SearchError::UnknownIndex { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn cache_status(State(api): State<LocalApi>) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    match side.cache.status().await {
        Ok(s) => Json(s).into_response(),
        Err(e) => cache_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct RefreshQuery {
    full: Option<String>,
}

/// Refreshes now and answers with what changed (a full load of a large
/// company can take minutes: the request waits for it).
async fn cache_refresh(State(api): State<LocalApi>, Query(q): Query<RefreshQuery>) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    let full = flag(q.full.as_deref());
    match side.cache.refresh(full).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => cache_error(e),
    }
}

async fn indexes_status(State(api): State<LocalApi>) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    Json(json!({ "indexes": side.cache.indexes_status() })).into_response()
}

#[derive(Debug, Deserialize)]
struct DataQuery {
    limit: Option<String>,
}

async fn cache_data(
    State(api): State<LocalApi>,
    Path(entity): Path<String>,
    Query(q): Query<DataQuery>,
) -> Response {
    let Some(side) = api.qbo.as_ref() else {
        return qbo_not_enabled();
    };
    let limit = match parse_limit(q.limit.as_deref(), crate::quickbooks::cache::DATA_MAX) {
        Ok(l) => l.unwrap_or(100),
        Err(r) => return *r,
    };
    match side.cache.data(&entity, limit).await {
        Ok(rows) => Json(json!({
            "entity": entity,
            "limit": limit,
            "count": rows.len(),
            "rows": rows,
        }))
        .into_response(),
        Err(e) => cache_error(e),
    }
}
