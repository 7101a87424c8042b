//! Generic test-server machinery shared by the backend simulators.
//!
//! Nothing here knows about Laravel (or QuickBooks): it is the plumbing every
//! simulator needs to behave like a real, occasionally misbehaving, server.
//!
//! * [`serve`] binds a TCP listener and serves an axum [`Router`] over
//!   HTTP/1.1, one task per connection. Each request carries a [`ConnKill`]
//!   in its extensions: calling [`ConnKill::kill`] closes that connection
//!   without writing any response (what a crashed proxy or a cut network
//!   looks like to the client).
//! * [`Harness`] holds a fault plan ([`Fault`], per route key, FIFO, each with
//!   a remaining count), optional random faults ([`RandomFaults`], seeded
//!   for reproducible runs), and per-route counters of what was answered and
//!   which faults were injected.
//!   [`fault_middleware`] applies both; install it with
//!   `axum::middleware::from_fn_with_state(harness, fault_middleware)` via
//!   `Router::layer`, so that axum's [`MatchedPath`] is known to it.
//!
//! Route keys are `"METHOD /matched/path"` with axum's path syntax (for
//! example `"POST /api/invoices/{id}/submit"`); requests that matched no
//! route use their raw path; `"*"` in the fault plan means any route.
//! Requests whose path starts with the harness' control prefix (the
//! simulator's own control API) are neither counted nor subject to faults.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// Locks a mutex, recovering the data if a panicking thread poisoned it (a
/// failed assertion in one test handler must not wedge the whole simulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Connection kill switch
// ---------------------------------------------------------------------------

/// The kill switch of one client connection, found in every request's
/// extensions (extract it with `axum::Extension<ConnKill>`).
#[derive(Clone, Debug, Default)]
pub struct ConnKill(Arc<Notify>);

impl ConnKill {
    /// Closes the connection this request came on, without any response.
    /// A handler that calls this should then never complete (see
    /// [`kill_connection`]), or its response may still reach the client.
    pub fn kill(&self) {
        self.0.notify_one();
    }

    async fn killed(&self) {
        self.0.notified().await;
    }
}

/// Kills the request's connection and never returns: the connection task
/// drops this future together with the connection. Without a [`ConnKill`]
/// (the router is not served by [`serve`]) it answers 500 instead.
pub async fn kill_connection(kill: Option<ConnKill>) -> Response {
    match kill {
        Some(k) => {
            k.kill();
            std::future::pending::<Response>().await
        }
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection kill switch unavailable: serve the router with sandbox::http::serve",
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------------------
// Serve loop
// ---------------------------------------------------------------------------

/// A running server. Dropping it (or [`ServerHandle::shutdown`]) stops
/// accepting and closes every open connection.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound address (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until its task has ended.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `bind` (port 0 = any free port) and serves `router` on it until the
/// returned handle is shut down or dropped.
pub async fn serve(bind: SocketAddr, router: Router) -> std::io::Result<ServerHandle> {
    serve_on(TcpListener::bind(bind).await?, router)
}

/// [`serve`] on a listener the caller made (its port known before, or held
/// closed while the server was "down").
pub fn serve_on(listener: TcpListener, router: Router) -> std::io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, router));
    Ok(ServerHandle {
        addr,
        task: Some(task),
    })
}

async fn accept_loop(listener: TcpListener, router: Router) {
    // Connection tasks live in the JoinSet: aborting this task drops the set,
    // which aborts them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    conns.spawn(serve_connection(stream, router.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off a little.
                    tracing::debug!(error = %e, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    let kill = ConnKill::default();
    let svc = TowerToHyperService::new(router);
    let req_kill = kill.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(req_kill.clone());
            hyper::service::Service::call(&svc, req)
        });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::trace!(error = %e, "sandbox connection ended with an error");
            }
        }
        _ = kill.killed() => {
            // Dropping the connection future closes the socket unanswered.
        }
    }
}

// ---------------------------------------------------------------------------
// Faults and counters
// ---------------------------------------------------------------------------

/// A misbehaviour to inject into the next request(s) of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status without running the handler. The body is the
    /// simulator's usual JSON error for that status (see [`Harness::new`]),
    /// or a small HTML page when `html`. `retry_after` (seconds) is sent as
    /// a `Retry-After` header.
    Status {
        status: u16,
        retry_after: Option<u64>,
        html: bool,
    },
    /// Close the connection without answering, before the handler runs:
    /// nothing happens server-side.
    Drop,
    /// Run the handler (its effect is committed), then close the connection
    /// without answering: the client never learns the outcome.
    DropAfter,
    /// Wait this long (tokio time, so a paused clock applies), then handle
    /// the request normally.
    Delay(Duration),
    /// Run the handler (its effect is committed), then wait this long
    /// (tokio time) before answering: a window in which the backend has
    /// done the work but the client has not heard of it yet (to kill the
    /// client in between, for example).
    HoldAfter(Duration),
    /// The work itself takes this much longer (tokio time): the handler's
    /// effect lands only when it ends (a submit's status stays `draft`
    /// during a slow JoFotara call). Unlike [`Fault::Delay`] (time spent
    /// before the request reaches the backend), this time is part of the
    /// request's work: it holds a worker of the simulator's pool, and when
    /// the simulator finishes work after a disconnect, it still lands after
    /// the client left. The fault middleware passes it on as an [`ExtraWork`]
    /// request extension to the layer that runs the work (the worker pool).
    SlowWork(Duration),
}

/// Extra work time of a request (from [`Fault::SlowWork`]), found in the
/// request's extensions by the layer that runs the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraWork(pub Duration);

impl Fault {
    /// The control-API name of the fault's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "status",
            Fault::Drop => "drop",
            Fault::DropAfter => "drop_after",
            Fault::Delay(_) => "delay",
            Fault::HoldAfter(_) => "hold_after",
            Fault::SlowWork(_) => "slow_work",
        }
    }

    /// JSON description, the same fields [`FaultSpec::from_json`] reads.
    pub fn to_json(&self) -> Value {
        match self {
            Fault::Status {
                status,
                retry_after,
                html,
            } => {
                json!({"kind": "status", "status": status, "retry_after": retry_after, "html": html})
            }
            Fault::Delay(d) => json!({"kind": "delay", "delay_ms": d.as_millis() as u64}),
            Fault::HoldAfter(d) => {
                json!({"kind": "hold_after", "hold_ms": d.as_millis() as u64})
            }
            Fault::SlowWork(d) => {
                json!({"kind": "slow_work", "work_ms": d.as_millis() as u64})
            }
            other => json!({"kind": other.kind()}),
        }
    }

    /// Parses a fault from its JSON description (the fields of
    /// [`Fault::to_json`]): `{"kind": "status", "status": 500, "retry_after":
    /// 2, "html": false}`, `{"kind": "drop"}`, `{"kind": "drop_after"}`,
    /// `{"kind": "delay", "delay_ms": 100}`, `{"kind": "hold_after",
    /// "hold_ms": 5000}`, `{"kind": "slow_work", "work_ms": 15000}` (`"ms"`
    /// is accepted for any duration). Other
    /// fields are ignored; the error says what is wrong.
    pub fn from_json(v: &Value) -> Result<Fault, String> {
        let obj = v
            .as_object()
            .ok_or("a fault must be a JSON object with a \"kind\"")?;
        let opt_u64 = |name: &str| opt_u64_field(obj, name);
        let html = match obj.get("html") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("\"html\" must be a boolean".into()),
        };
        let kind = match obj.get("kind") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err("\"kind\" must be a string".into()),
            None => return Err(format!("\"kind\" is required: one of {KINDS}")),
        };
        let millis = |name: &str| -> Result<Duration, String> {
            let ms = match opt_u64(name)? {
                Some(ms) => Some(ms),
                None => opt_u64("ms")?,
            };
            ms.map(Duration::from_millis)
                .ok_or(format!("\"{name}\" is required when kind is \"{kind}\""))
        };
        Ok(match kind {
            "status" => {
                let status =
                    opt_u64("status")?.ok_or("\"status\" is required when kind is \"status\"")?;
                if !(100..=599).contains(&status) {
                    return Err(format!(
                        "\"status\" must be an HTTP status code (100-599), got {status}"
                    ));
                }
                Fault::Status {
                    status: status as u16,
                    retry_after: opt_u64("retry_after")?,
                    html,
                }
            }
            "drop" => Fault::Drop,
            "drop_after" => Fault::DropAfter,
            "delay" => Fault::Delay(millis("delay_ms")?),
            "hold_after" => Fault::HoldAfter(millis("hold_ms")?),
            "slow_work" => Fault::SlowWork(millis("work_ms")?),
            other => return Err(format!("unknown kind \"{other}\": expected one of {KINDS}")),
        })
    }
}

/// The fault kinds, as error messages list them.
const KINDS: &str = "status, drop, drop_after, delay, hold_after, slow_work";

fn opt_u64_field(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or(format!("\"{name}\" must be a non-negative integer")),
    }
}

/// A fault request as the control APIs receive it:
/// `{"route": "POST /api/x", "kind": "status"|"drop"|"drop_after"|"delay"|"hold_after"|"slow_work",
///   "status": 500, "retry_after": 2, "html": false, "delay_ms": 100,
///   "hold_ms": 5000, "work_ms": 15000, "times": 1}` (see [`Fault::from_json`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub route: String,
    pub fault: Fault,
    pub times: u32,
}

impl FaultSpec {
    /// Parses and validates a fault request; the error says what is wrong.
    pub fn from_json(v: &Value) -> Result<FaultSpec, String> {
        let obj = v
            .as_object()
            .ok_or("the body must be a JSON object with \"route\" and \"kind\"")?;
        let route = match obj.get("route") {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(_) => return Err("\"route\" must be a string".into()),
            None => {
                return Err("\"route\" is required, e.g. \"POST /api/invoices\" or \"*\"".into())
            }
        };
        validate_route_key(&route)?;
        let times = match opt_u64_field(obj, "times")? {
            None => 1,
            Some(0) => return Err("\"times\" must be at least 1".into()),
            Some(t) => u32::try_from(t).map_err(|_| "\"times\" is too large".to_string())?,
        };
        let fault = Fault::from_json(v)?;
        Ok(FaultSpec {
            route,
            fault,
            times,
        })
    }
}

/// Faults injected at random: each API request whose route key is in
/// `routes` (or any request when `routes` holds `"*"`) gets, with
/// probability `rate`, one of `kinds` picked uniformly. Queued faults
/// ([`Harness::inject`]) take precedence. With a `seed` the sequence of
/// decisions is reproducible (for the same sequence of requests).
///
/// Control-API form: `{"rate": 0.2, "routes": ["POST /api/invoices", "*"],
/// "kinds": [{"kind": "status", "status": 500}, {"kind": "drop"}], "seed": 42}`.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomFaults {
    /// Probability, 0.0 to 1.0, that a matching request faults.
    pub rate: f64,
    /// Route keys (`"POST /api/invoices/{id}/submit"`) or `"*"`.
    pub routes: Vec<String>,
    /// The faults to pick from, uniformly.
    pub kinds: Vec<Fault>,
    /// Seed of the generator; `None` = from the OS.
    pub seed: Option<u64>,
}

impl RandomFaults {
    /// Checks the rate, the route keys and that there is a kind to pick.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(format!(
                "\"rate\" must be a probability between 0 and 1, got {}",
                self.rate
            ));
        }
        if self.routes.is_empty() {
            return Err("\"routes\" must list route keys, or [\"*\"] for every route".into());
        }
        for r in &self.routes {
            validate_route_key(r)?;
        }
        if self.kinds.is_empty() {
            return Err("\"kinds\" must list at least one fault".into());
        }
        Ok(())
    }

    /// Parses and validates the control-API form.
    pub fn from_json(v: &Value) -> Result<RandomFaults, String> {
        let obj = v
            .as_object()
            .ok_or("the body must be a JSON object with \"rate\", \"routes\" and \"kinds\"")?;
        const KNOWN: [&str; 4] = ["rate", "routes", "kinds", "seed"];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!(
                "unknown field \"{k}\"; expected: {}",
                KNOWN.join(", ")
            ));
        }
        let rate = obj
            .get("rate")
            .and_then(Value::as_f64)
            .ok_or("\"rate\" (a number between 0 and 1) is required")?;
        let routes = match obj.get("routes") {
            None | Some(Value::Null) => vec!["*".to_string()],
            Some(Value::String(s)) => vec![s.trim().to_string()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|r| r.as_str().map(|s| s.trim().to_string()))
                .collect::<Option<Vec<_>>>()
                .ok_or("\"routes\" must be an array of route keys")?,
            Some(_) => return Err("\"routes\" must be an array of route keys".into()),
        };
        let kinds = obj
            .get("kinds")
            .and_then(Value::as_array)
            .ok_or("\"kinds\" (an array of faults, e.g. [{\"kind\": \"drop\"}]) is required")?
            .iter()
            .map(Fault::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        let seed = opt_u64_field(obj, "seed")?;
        let rf = RandomFaults {
            rate,
            routes,
            kinds,
            seed,
        };
        rf.validate()?;
        Ok(rf)
    }

    /// The control-API form.
    pub fn to_json(&self) -> Value {
        json!({
            "rate": self.rate,
            "routes": self.routes,
            "kinds": self.kinds.iter().map(Fault::to_json).collect::<Vec<_>>(),
            "seed": self.seed,
        })
    }

    fn matches(&self, key: &str) -> bool {
        self.routes.iter().any(|r| r == "*" || r == key)
    }
}

/// Random faults in force, with their generator.
struct RandomPlan {
    spec: RandomFaults,
    rng: StdRng,
}

/// Checks that a route key is `"*"` or `"METHOD /path"`.
pub fn validate_route_key(route: &str) -> Result<(), String> {
    if route == "*" {
        return Ok(());
    }
    let valid = route.split_once(' ').is_some_and(|(m, p)| {
        !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) && p.starts_with('/')
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"route\" must be \"*\" or \"METHOD /path\" with the route's pattern, e.g. \"POST /api/invoices/{{id}}/submit\"; got \"{route}\""
        ))
    }
}

#[derive(Clone, Debug)]
struct PlannedFault {
    fault: Fault,
    remaining: u32,
}

#[derive(Clone, Debug, Default)]
struct RouteCounter {
    requests: u64,
    unanswered: u64,
    statuses: BTreeMap<u16, u64>,
}

/// Builds the JSON error body a simulator answers for a status.
pub type ErrorBodyFn = Arc<dyn Fn(u16) -> Value + Send + Sync>;

/// Faults injected so far, by source and kind.
#[derive(Clone, Debug, Default)]
struct Injected {
    planned: BTreeMap<&'static str, u64>,
    random: BTreeMap<&'static str, u64>,
}

/// Fault plan and counters of one simulator.
pub struct Harness {
    plan: Mutex<HashMap<String, VecDeque<PlannedFault>>>,
    random: Mutex<Option<RandomPlan>>,
    injected: Mutex<Injected>,
    counters: Mutex<BTreeMap<String, RouteCounter>>,
    error_body: ErrorBodyFn,
    control_prefix: String,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("control_prefix", &self.control_prefix)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// `control_prefix`: paths starting with it (e.g. `"/__sandbox"`) are
    /// not counted nor faulted. `error_body`: the JSON body of an injected
    /// [`Fault::Status`], in the simulator's own error shape.
    pub fn new(
        control_prefix: impl Into<String>,
        error_body: impl Fn(u16) -> Value + Send + Sync + 'static,
    ) -> Arc<Harness> {
        Arc::new(Harness {
            plan: Mutex::new(HashMap::new()),
            random: Mutex::new(None),
            injected: Mutex::new(Injected::default()),
            counters: Mutex::new(BTreeMap::new()),
            error_body: Arc::new(error_body),
            control_prefix: control_prefix.into(),
        })
    }

    /// Whether `path` belongs to the control API.
    pub fn is_control(&self, path: &str) -> bool {
        !self.control_prefix.is_empty() && path.starts_with(&self.control_prefix)
    }

    /// Queues `fault` for the next `times` requests of `route` (after the
    /// faults already queued for it). `times == 0` queues nothing.
    pub fn inject(&self, route: &str, fault: Fault, times: u32) {
        if times == 0 {
            return;
        }
        lock(&self.plan)
            .entry(route.to_string())
            .or_default()
            .push_back(PlannedFault {
                fault,
                remaining: times,
            });
    }

    /// Forgets every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.plan).clear();
    }

    /// The queued faults, as `[{"route", "kind", ..., "remaining"}]`.
    pub fn pending_faults_json(&self) -> Value {
        let plan = lock(&self.plan);
        let mut routes: Vec<&String> = plan.keys().collect();
        routes.sort();
        let mut out = Vec::new();
        for route in routes {
            for p in &plan[route] {
                let mut v = p.fault.to_json();
                v["route"] = json!(route);
                v["remaining"] = json!(p.remaining);
                out.push(v);
            }
        }
        Value::Array(out)
    }

    /// From now on, faults `spec` at random (replacing any earlier random
    /// faults); the error says what is wrong with `spec`.
    pub fn inject_random(&self, spec: RandomFaults) -> Result<(), String> {
        spec.validate()?;
        let rng = match spec.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng::<StdRng>(),
        };
        *lock(&self.random) = Some(RandomPlan { spec, rng });
        Ok(())
    }

    /// Stops the random faults (the queued ones stay).
    pub fn clear_random(&self) {
        *lock(&self.random) = None;
    }

    /// The random faults in force, if any.
    pub fn random_faults(&self) -> Option<RandomFaults> {
        lock(&self.random).as_ref().map(|p| p.spec.clone())
    }

    /// How many faults were injected at random, by kind
    /// ([`Fault::kind`]), since the counters were last reset.
    pub fn random_injected(&self) -> BTreeMap<String, u64> {
        lock(&self.injected)
            .random
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect()
    }

    /// `{"planned": {kind: n}, "random": {kind: n}}`: faults injected since
    /// the counters were last reset.
    pub fn injected_json(&self) -> Value {
        let inj = lock(&self.injected);
        json!({"planned": inj.planned, "random": inj.random})
    }

    /// The random faults in force (their control-API form), or null.
    pub fn random_faults_json(&self) -> Value {
        self.random_faults().map_or(Value::Null, |r| r.to_json())
    }

    /// Takes the fault for a request on `key`: the next queued one (exact
    /// key first, then `"*"`), else maybe a random one.
    fn take_fault(&self, key: &str) -> Option<Fault> {
        if let Some(f) = self.take_planned(key) {
            *lock(&self.injected).planned.entry(f.kind()).or_insert(0) += 1;
            return Some(f);
        }
        let f = {
            let mut random = lock(&self.random);
            let plan = random.as_mut().filter(|p| p.spec.matches(key))?;
            if !plan.rng.random_bool(plan.spec.rate) {
                return None;
            }
            let i = plan.rng.random_range(0..plan.spec.kinds.len());
            plan.spec.kinds[i].clone()
        };
        *lock(&self.injected).random.entry(f.kind()).or_insert(0) += 1;
        Some(f)
    }

    fn take_planned(&self, key: &str) -> Option<Fault> {
        let mut plan = lock(&self.plan);
        for k in [key, "*"] {
            if let Some(queue) = plan.get_mut(k) {
                if let Some(front) = queue.front_mut() {
                    let fault = front.fault.clone();
                    front.remaining -= 1;
                    if front.remaining == 0 {
                        queue.pop_front();
                    }
                    if queue.is_empty() {
                        plan.remove(k);
                    }
                    return Some(fault);
                }
            }
        }
        None
    }

    fn count_request(&self, key: &str) {
        lock(&self.counters)
            .entry(key.to_string())
            .or_default()
            .requests += 1;
    }

    fn count_status(&self, key: &str, status: StatusCode) {
        *lock(&self.counters)
            .entry(key.to_string())
            .or_default()
            .statuses
            .entry(status.as_u16())
            .or_insert(0) += 1;
    }

    fn count_unanswered(&self, key: &str) {
        lock(&self.counters)
            .entry(key.to_string())
            .or_default()
            .unanswered += 1;
    }

    /// Requests received on `route` (answered or not).
    pub fn requests(&self, route: &str) -> u64 {
        lock(&self.counters).get(route).map_or(0, |c| c.requests)
    }

    /// Responses with `status` actually sent on `route`.
    pub fn responses(&self, route: &str, status: u16) -> u64 {
        lock(&self.counters)
            .get(route)
            .and_then(|c| c.statuses.get(&status).copied())
            .unwrap_or(0)
    }

    /// Requests whose connection was closed without an answer.
    pub fn unanswered(&self, route: &str) -> u64 {
        lock(&self.counters).get(route).map_or(0, |c| c.unanswered)
    }

    /// Zeroes every counter (requests, answers, injected faults).
    pub fn reset_counters(&self) {
        lock(&self.counters).clear();
        *lock(&self.injected) = Injected::default();
    }

    /// `{"routes": {key: {"requests", "unanswered", "responses": {"200": n}}},
    ///   "statuses": {"200": n}, "requests_total": n,
    ///   "faults_injected": {"planned": {kind: n}, "random": {kind: n}}}`.
    pub fn counters_json(&self) -> Value {
        let counters = lock(&self.counters);
        let mut routes = serde_json::Map::new();
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let mut total = 0;
        for (key, c) in counters.iter() {
            total += c.requests;
            let mut resp = serde_json::Map::new();
            for (s, n) in &c.statuses {
                resp.insert(s.to_string(), json!(n));
                *statuses.entry(*s).or_insert(0) += n;
            }
            routes.insert(
                key.clone(),
                json!({"requests": c.requests, "unanswered": c.unanswered, "responses": resp}),
            );
        }
        let statuses: serde_json::Map<String, Value> = statuses
            .into_iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        drop(counters);
        json!({"routes": routes, "statuses": statuses, "requests_total": total,
               "faults_injected": self.injected_json()})
    }

    /// The answer to an injected [`Fault::Status`].
    pub fn status_response(&self, status: u16, retry_after: Option<u64>, html: bool) -> Response {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = if html {
            html_response(code, &html_error_page(code))
        } else {
            json_response(code, &(self.error_body)(code.as_u16()))
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The key of a request: `"METHOD /matched/{path}"`, or the raw path when no
/// route matched.
pub fn route_key(req: &Request) -> String {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    format!("{} {}", req.method(), path)
}

/// The middleware applying a [`Harness`]: counts the request, applies the
/// next queued fault of its route if any (else perhaps a random one), counts
/// the answer.
pub async fn fault_middleware(
    State(h): State<Arc<Harness>>,
    mut req: Request,
    next: Next,
) -> Response {
    if h.is_control(req.uri().path()) {
        return next.run(req).await;
    }
    let key = route_key(&req);
    let kill = req.extensions().get::<ConnKill>().cloned();
    let fault = h.take_fault(&key);
    h.count_request(&key);
    if let Some(f) = &fault {
        tracing::debug!(route = %key, fault = ?f, "sandbox injecting fault");
    }
    let resp = match fault {
        None => next.run(req).await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::Status {
            status,
            retry_after,
            html,
        }) => h.status_response(status, retry_after, html),
        Some(Fault::Drop) => {
            h.count_unanswered(&key);
            return kill_connection(kill).await;
        }
        Some(Fault::DropAfter) => {
            let resp = next.run(req).await;
            drop(resp);
            h.count_unanswered(&key);
            return kill_connection(kill).await;
        }
        Some(Fault::HoldAfter(d)) => {
            let resp = next.run(req).await;
            tokio::time::sleep(d).await;
            resp
        }
        Some(Fault::SlowWork(d)) => {
            req.extensions_mut().insert(ExtraWork(d));
            next.run(req).await
        }
    };
    h.count_status(&key, resp.status());
    resp
}

// ---------------------------------------------------------------------------
// The fault control routes every simulator serves
// ---------------------------------------------------------------------------

/// `POST|DELETE {prefix}/faults` (a [`FaultSpec`]) and `POST|DELETE
/// {prefix}/random-faults` (a [`RandomFaults`]) on `harness`, for merging
/// into a simulator's router.
pub fn fault_control_routes(prefix: &str, harness: Arc<Harness>) -> Router {
    use axum::routing::post;
    Router::new()
        .route(
            &format!("{prefix}/faults"),
            post(ctl_add_fault).delete(ctl_clear_faults),
        )
        .route(
            &format!("{prefix}/random-faults"),
            post(ctl_random_faults).delete(ctl_clear_random_faults),
        )
        .with_state(harness)
}

fn control_answer(r: Result<Value, String>) -> Response {
    ctl_answer(r.map_err(bad_request))
}

fn body_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Value>(body).map_err(|e| format!("the body is not valid JSON: {e}"))
}

async fn ctl_add_fault(State(h): State<Arc<Harness>>, body: axum::body::Bytes) -> Response {
    control_answer(
        body_json(&body)
            .and_then(|v| FaultSpec::from_json(&v))
            .map(|s| {
                h.inject(&s.route, s.fault, s.times);
                json!({"ok": true, "faults_pending": h.pending_faults_json()})
            }),
    )
}

async fn ctl_clear_faults(State(h): State<Arc<Harness>>) -> Response {
    h.clear_faults();
    json_response(StatusCode::OK, &json!({"ok": true}))
}

async fn ctl_random_faults(State(h): State<Arc<Harness>>, body: axum::body::Bytes) -> Response {
    control_answer(
        body_json(&body)
            .and_then(|v| RandomFaults::from_json(&v))
            .and_then(|spec| h.inject_random(spec))
            .map(|()| json!({"ok": true, "random_faults": h.random_faults_json()})),
    )
}

async fn ctl_clear_random_faults(State(h): State<Arc<Harness>>) -> Response {
    h.clear_random();
    json_response(StatusCode::OK, &json!({"ok": true}))
}

// ---------------------------------------------------------------------------
// Control API helpers (shared by the simulators)
// ---------------------------------------------------------------------------

/// A control API answer: the JSON to send, or a status and message.
pub type CtlResult = Result<Value, (StatusCode, String)>;

pub fn bad_request(msg: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, msg.into())
}

pub fn ctl_answer(r: CtlResult) -> Response {
    match r {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err((status, message)) => json_response(status, &json!({ "message": message })),
    }
}

/// A control body: a JSON object (an empty body is an empty object), with
/// no other fields than `known`.
pub fn control_body(
    body: &[u8],
    known: &[&str],
) -> Result<serde_json::Map<String, Value>, (StatusCode, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    let map = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(bad_request("the body must be a JSON object")),
        Err(e) => return Err(bad_request(format!("the body is not valid JSON: {e}"))),
    };
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad_request(format!(
            "unknown field \"{k}\"; expected: {}",
            known.join(", ")
        )));
    }
    Ok(map)
}

// ---------------------------------------------------------------------------
// Small response helpers
// ---------------------------------------------------------------------------

/// Percent-decoding of `application/x-www-form-urlencoded` text.
pub fn pct_decode(s: &str) -> String {
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

/// The `name=value` pairs of an `application/x-www-form-urlencoded` body
/// (or query string), decoded, in order.
pub fn form_decode(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

/// A JSON response (`Content-Type: application/json`).
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An HTML response (`Content-Type: text/html; charset=UTF-8`).
pub fn html_response(status: StatusCode, html: &str) -> Response {
    let mut resp = Response::new(Body::from(html.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    resp
}

/// A minimal HTML error page, like a framework's default one.
pub fn html_error_page(status: StatusCode) -> String {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{reason}</title>\n</head>\n<body>\n<div class=\"code\">{code}</div>\n<div class=\"message\">{reason}</div>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn client() -> reqwest::Client {
        crate::test_client_builder().no_proxy().build().unwrap()
    }

    async fn start() -> (ServerHandle, Arc<Harness>, Arc<AtomicU64>) {
        let hits = Arc::new(AtomicU64::new(0));
        let h = Harness::new("/__ctl", |s| json!({"error": s}));
        let hits2 = hits.clone();
        let router = Router::new()
            .route(
                "/items/{id}",
                post(move || {
                    let hits = hits2.clone();
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        "done"
                    }
                }),
            )
            .route(
                "/suicide",
                get(|axum::Extension(k): axum::Extension<ConnKill>| async move {
                    kill_connection(Some(k)).await
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                h.clone(),
                fault_middleware,
            ))
            .route("/__ctl/ping", get(|| async { "pong" }));
        let server = serve("127.0.0.1:0".parse().unwrap(), router).await.unwrap();
        (server, h, hits)
    }

    #[tokio::test]
    async fn faults_and_counters() {
        let (server, h, hits) = start().await;
        let base = format!("http://{}", server.addr());
        let c = client();
        let key = "POST /items/{id}";

        let r = c.post(format!("{base}/items/1")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        h.inject(
            key,
            Fault::Status {
                status: 503,
                retry_after: Some(7),
                html: false,
            },
            2,
        );
        h.inject("*", Fault::Drop, 1);
        for _ in 0..2 {
            let r = c.post(format!("{base}/items/2")).send().await.unwrap();
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers()["retry-after"], "7");
            assert_eq!(r.json::<Value>().await.unwrap(), json!({"error": 503}));
        }
        // exact key exhausted: the wildcard applies
        let e = c.post(format!("{base}/items/3")).send().await;
        assert!(e.is_err(), "expected a connection error, got {e:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        h.inject(key, Fault::DropAfter, 1);
        assert!(c.post(format!("{base}/items/4")).send().await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        h.inject(
            key,
            Fault::Status {
                status: 500,
                retry_after: None,
                html: true,
            },
            1,
        );
        let r = c.post(format!("{base}/items/5")).send().await.unwrap();
        assert_eq!(r.status(), 500);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(r.text().await.unwrap().contains("Internal Server Error"));

        // a handler can kill its own connection
        assert!(c.get(format!("{base}/suicide")).send().await.is_err());

        // control routes: not counted, never faulted
        h.inject("*", Fault::Drop, 5);
        let r = c.get(format!("{base}/__ctl/ping")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "pong");
        h.clear_faults();
        assert_eq!(h.pending_faults_json(), json!([]));

        assert_eq!(h.requests(key), 6);
        assert_eq!(h.responses(key, 200), 1);
        assert_eq!(h.responses(key, 503), 2);
        assert_eq!(h.responses(key, 500), 1);
        assert_eq!(h.unanswered(key), 2);
        assert_eq!(h.requests("GET /suicide"), 1);
        let j = h.counters_json();
        assert_eq!(j["routes"][key]["responses"]["503"], 2);
        assert_eq!(j["statuses"]["200"], 1);
        assert!(j["routes"].get("GET /__ctl/ping").is_none());
        h.reset_counters();
        assert_eq!(h.requests(key), 0);
        server.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn delay_uses_tokio_time() {
        let (server, h, hits) = start().await;
        let base = format!("http://{}", server.addr());
        h.inject("POST /items/{id}", Fault::Delay(Duration::from_secs(30)), 1);
        let before = tokio::time::Instant::now();
        let r = client()
            .post(format!("{base}/items/1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(before.elapsed() >= Duration::from_secs(30));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn shutdown_closes_the_port() {
        let (server, _h, _) = start().await;
        let addr = server.addr();
        drop(server);
        tokio::task::yield_now().await;
        let mut refused = false;
        for _ in 0..50 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(refused);
    }

    #[test]
    fn fault_spec_parsing() {
        let s = FaultSpec::from_json(
            &json!({"route": "POST /api/x", "kind": "status", "status": 429, "retry_after": 2}),
        )
        .unwrap();
        assert_eq!(
            s.fault,
            Fault::Status {
                status: 429,
                retry_after: Some(2),
                html: false
            }
        );
        assert_eq!(s.times, 1);
        let s = FaultSpec::from_json(
            &json!({"route": "*", "kind": "delay", "delay_ms": 5, "times": 3}),
        )
        .unwrap();
        assert_eq!(s.fault, Fault::Delay(Duration::from_millis(5)));
        assert_eq!(s.times, 3);
        for bad in [
            json!({"kind": "drop"}),
            json!({"route": "api/x", "kind": "drop"}),
            json!({"route": "*", "kind": "explode"}),
            json!({"route": "*", "kind": "status"}),
            json!({"route": "*", "kind": "status", "status": 1000}),
            json!({"route": "*", "kind": "delay"}),
            json!({"route": "*", "kind": "drop", "times": 0}),
            json!([1]),
        ] {
            assert!(FaultSpec::from_json(&bad).is_err(), "{bad}");
        }
        // hold_after: `hold_ms`, or `ms` for either duration
        for body in [
            json!({"route": "POST /api/invoices", "kind": "hold_after", "hold_ms": 5000}),
            json!({"route": "POST /api/invoices", "kind": "hold_after", "ms": 5000}),
        ] {
            let s = FaultSpec::from_json(&body).unwrap();
            assert_eq!(s.fault, Fault::HoldAfter(Duration::from_secs(5)));
            assert_eq!(s.fault.kind(), "hold_after");
            assert_eq!(
                s.fault.to_json(),
                json!({"kind": "hold_after", "hold_ms": 5000})
            );
            assert_eq!(Fault::from_json(&s.fault.to_json()).unwrap(), s.fault);
        }
        let s = FaultSpec::from_json(&json!({"route": "*", "kind": "delay", "ms": 7})).unwrap();
        assert_eq!(s.fault, Fault::Delay(Duration::from_millis(7)));
        assert!(FaultSpec::from_json(&json!({"route": "*", "kind": "hold_after"})).is_err());
        // every kind round-trips through its JSON
        for f in [
            Fault::Status {
                status: 429,
                retry_after: Some(3),
                html: true,
            },
            Fault::Drop,
            Fault::DropAfter,
            Fault::Delay(Duration::from_millis(12)),
            Fault::HoldAfter(Duration::from_millis(34)),
        ] {
            assert_eq!(Fault::from_json(&f.to_json()).unwrap(), f, "{f:?}");
        }
    }

    #[test]
    fn random_faults_parsing() {
        let r = RandomFaults::from_json(&json!({
            "rate": 0.25,
            "routes": ["POST /api/invoices", "*"],
            "kinds": [{"kind": "status", "status": 500}, {"kind": "drop"}],
            "seed": 7,
        }))
        .unwrap();
        assert_eq!(
            r,
            RandomFaults {
                rate: 0.25,
                routes: vec!["POST /api/invoices".into(), "*".into()],
                kinds: vec![
                    Fault::Status {
                        status: 500,
                        retry_after: None,
                        html: false
                    },
                    Fault::Drop
                ],
                seed: Some(7),
            }
        );
        assert_eq!(RandomFaults::from_json(&r.to_json()).unwrap(), r);
        // routes default to every route
        let r = RandomFaults::from_json(&json!({"rate": 1, "kinds": [{"kind": "drop"}]})).unwrap();
        assert_eq!((r.routes, r.seed), (vec!["*".to_string()], None));
        for bad in [
            json!({"rate": 1.5, "kinds": [{"kind": "drop"}]}),
            json!({"rate": -0.1, "kinds": [{"kind": "drop"}]}),
            json!({"kinds": [{"kind": "drop"}]}),
            json!({"rate": 0.5, "kinds": []}),
            json!({"rate": 0.5}),
            json!({"rate": 0.5, "kinds": [{"kind": "boom"}]}),
            json!({"rate": 0.5, "kinds": [{"kind": "drop"}], "routes": ["login"]}),
            json!({"rate": 0.5, "kinds": [{"kind": "drop"}], "routes": []}),
            json!({"rate": 0.5, "kinds": [{"kind": "drop"}], "seed": -1}),
            json!({"rate": 0.5, "kinds": [{"kind": "drop"}], "probability": 1}),
            json!("drop"),
        ] {
            assert!(RandomFaults::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_faults_in_the_harness() {
        let h = Harness::new("/__ctl", |s| json!({"error": s}));
        let kinds = vec![
            Fault::Drop,
            Fault::DropAfter,
            Fault::Delay(Duration::from_millis(1)),
        ];
        let spec = |rate: f64, seed: u64| RandomFaults {
            rate,
            routes: vec!["GET /a".into()],
            kinds: kinds.clone(),
            seed: Some(seed),
        };
        // rate 1: every matching request faults; other routes never
        h.inject_random(spec(1.0, 1)).unwrap();
        assert!((0..50).all(|_| h.take_fault("GET /a").is_some()));
        assert!(h.take_fault("GET /b").is_none());
        let injected = h.random_injected();
        assert_eq!(injected.values().sum::<u64>(), 50);
        assert_eq!(injected.len(), 3, "all kinds picked: {injected:?}");
        // queued faults come first and are counted apart
        h.inject(
            "GET /a",
            Fault::Status {
                status: 500,
                retry_after: None,
                html: false,
            },
            1,
        );
        assert_eq!(h.take_fault("GET /a").unwrap().kind(), "status");
        assert_eq!(h.injected_json()["planned"], json!({"status": 1}));
        assert_eq!(h.counters_json()["faults_injected"]["planned"]["status"], 1);
        // rate 0: never
        h.inject_random(spec(0.0, 1)).unwrap();
        assert!((0..50).all(|_| h.take_fault("GET /a").is_none()));
        // seeded: the same decisions again
        let run = |seed| {
            h.inject_random(spec(0.5, seed)).unwrap();
            (0..64).map(|_| h.take_fault("GET /a")).collect::<Vec<_>>()
        };
        let first = run(42);
        assert_eq!(run(42), first);
        assert_ne!(run(43), first);
        let hits = first.iter().filter(|f| f.is_some()).count();
        assert!((10..=54).contains(&hits), "{hits} of 64 at rate 0.5");
        assert!(h
            .inject_random(RandomFaults {
                rate: 2.0,
                ..spec(0.5, 1)
            })
            .is_err());
        assert_eq!(
            h.random_faults().unwrap().rate,
            0.5,
            "a bad spec changes nothing"
        );
        h.clear_random();
        assert!(h.random_faults().is_none());
        assert_eq!(h.random_faults_json(), Value::Null);
        assert!(h.take_fault("GET /a").is_none());
        h.reset_counters();
        assert!(h.random_injected().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn hold_after_runs_the_handler_then_waits() {
        let (server, h, hits) = start().await;
        let base = format!("http://{}", server.addr());
        h.inject(
            "POST /items/{id}",
            Fault::HoldAfter(Duration::from_secs(5)),
            1,
        );
        let before = tokio::time::Instant::now();
        let req = tokio::spawn(client().post(format!("{base}/items/1")).send());
        while hits.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(before.elapsed() < Duration::from_secs(5));
        assert!(!req.is_finished(), "the answer is held back");
        let r = req.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        assert!(before.elapsed() >= Duration::from_secs(5));
        assert_eq!(h.responses("POST /items/{id}", 200), 1);
        assert_eq!(h.injected_json()["planned"]["hold_after"], 1);
    }
}
