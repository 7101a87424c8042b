//! The control API (`/__sandbox/...`) and the seeding of other vendors' invoices.

use super::*;

pub(super) async fn ctl_stats(State(sh): State<Sh>) -> Response {
    json_response(StatusCode::OK, &stats_json(&sh))
}

pub(super) async fn ctl_stats_reset(State(sh): State<Sh>) -> Response {
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

pub(super) fn foreign_invoices(sh: &Shared, body: &[u8]) -> CtlResult {
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

pub(super) async fn ctl_foreign_invoices(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(foreign_invoices(&sh, &body))
}

pub(super) async fn ctl_revoke(State(sh): State<Sh>) -> Response {
    let n = {
        let mut st = sh.state();
        let n = st.tokens.len();
        st.tokens.clear();
        n
    };
    json_response(StatusCode::OK, &json!({"ok": true, "revoked": n}))
}

pub(super) fn settings(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(
        body,
        &[
            "token_lifetime_secs",
            "advertise_expiry",
            "jofotara_configured",
            "jofotara_broken",
            "finish_after_disconnect",
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
    let broken = flag("jofotara_broken")?;
    if let Some(f) = flag("finish_after_disconnect")? {
        sh.pool.set_finish_after_disconnect(f);
    }
    let mut st = sh.state();
    if let Some(b) = broken {
        st.jofotara_broken = b;
    }
    if let Some(l) = lifetime {
        st.token_lifetime = l;
    }
    if let Some(a) = advertise {
        st.advertise_expiry = a;
    }
    if let Some(c) = configured {
        st.jofotara_configured = c;
    }
    Ok(settings_json(sh, &st))
}

pub(super) async fn ctl_settings(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(settings(&sh, &body))
}

pub(super) fn user_active(sh: &Shared, body: &[u8]) -> CtlResult {
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

pub(super) async fn ctl_user_active(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(user_active(&sh, &body))
}

pub(super) fn submit_outcomes(sh: &Shared, body: &[u8]) -> CtlResult {
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

pub(super) async fn ctl_submit_outcomes(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(submit_outcomes(&sh, &body))
}

pub(super) fn connector_control_json(c: &ConnectorState) -> Value {
    json!({
        "api_key": c.api_key,
        "config_updates": c.config_updates,
        "heartbeats": c.heartbeats,
        "transactions": c.transactions,
        "stats": connector_stats_json(c),
    })
}

pub(super) fn connector_settings(sh: &Shared, body: &[u8]) -> CtlResult {
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

pub(super) async fn ctl_connector(State(sh): State<Sh>) -> Response {
    json_response(
        StatusCode::OK,
        &connector_control_json(&sh.state().connector),
    )
}

pub(super) async fn ctl_connector_settings(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(connector_settings(&sh, &body))
}

pub(super) fn settings_json(sh: &Shared, st: &Db) -> Value {
    json!({
        "token_lifetime_secs": st.token_lifetime.map(|d| d.as_secs()),
        "advertise_expiry": st.advertise_expiry,
        "jofotara_configured": st.jofotara_configured,
        "jofotara_broken": st.jofotara_broken,
        "finish_after_disconnect": sh.pool.finish_after_disconnect(),
        "submit_outcomes": st.submit_outcomes,
    })
}

pub(super) fn stats_json(sh: &Shared) -> Value {
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
    v["settings"] = settings_json(sh, &st);
    v["jofotara"] = jofotara_json(&st);
    v["connector"] = connector_stats_json(&st.connector);
    drop(st);
    v["pool"] = pool_json(sh);
    v
}

/// How many times JoFotara received each invoice: `{"submissions_total",
/// "by_invoice": {"<id>": {"invoice_number", "count"}}` (invoices sent at
/// least once), "more_than_once": [ids]}`.
pub(super) fn jofotara_json(st: &Db) -> Value {
    let mut by_invoice = Map::new();
    let mut more = Vec::new();
    let mut total = 0;
    for inv in st.invoices.values().filter(|i| i.jofotara_submissions > 0) {
        total += inv.jofotara_submissions;
        by_invoice.insert(
            inv.id.to_string(),
            json!({"invoice_number": inv.invoice_number, "count": inv.jofotara_submissions}),
        );
        if inv.jofotara_submissions > 1 {
            more.push(inv.id);
        }
    }
    json!({"submissions_total": total, "by_invoice": by_invoice, "more_than_once": more})
}

/// The pool's statistics, latency profile and ceiling.
pub(super) fn pool_json(sh: &Shared) -> Value {
    let stats = sh.pool.stats();
    let latency = *lock(&sh.latency);
    let mut v = stats.to_json();
    v["latency"] = latency.to_json();
    v["per_sale_us"] = json!(micros(latency.per_sale()));
    v["ceiling_sales_per_sec"] = json!(stats.workers.and_then(|w| latency.ceiling_per_sec(w)));
    v
}

/// The vendor of another shop on the same backend (created on first use,
/// with its own organisation).
pub(super) fn foreign_vendor(st: &mut Db) -> SandboxUser {
    if let Some(u) = st.users.iter().find(|u| u.email == FOREIGN_VENDOR_EMAIL) {
        return u.clone();
    }
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

/// Adds `count` invoices owned by another vendor (created on first use,
/// organisation 2), as other shops sharing the backend would; returns
/// their ids.
pub(super) fn seed_foreign(sh: &Shared, count: usize) -> Vec<u64> {
    let mut st = sh.state();
    let vendor = foreign_vendor(&mut st);
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = st.next_invoice_id;
        let mut number = format!("OTHER-{}-{id:06}", vendor.id);
        while st.invoices.values().any(|i| i.invoice_number == number) {
            number.push('X');
        }
        let input = json!({
            "invoice_number": number,
            "customer_name": "Another shop's customer",
            "items": [{
                "description": "Other shop's article",
                "quantity": 1 + id % 3,
                "price": format!("{}", Decimal::new(250 + (id % 7) as i64 * 125, 2)),
            }],
        });
        let Value::Object(input) = input else {
            continue;
        };
        if let Ok(id) = store_invoice(&mut st, &vendor, &input) {
            if let Some(inv) = st.invoices.get_mut(&id) {
                inv.status = "submitted".into();
            }
            ids.push(id);
        }
    }
    ids
}

/// Whose till creates an invoice behind the agent's back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TillVendor {
    /// Another till of the same shop: the default vendor (the first user).
    Same,
    /// Another shop on the same backend: another vendor and organisation.
    Other,
}

/// Creates an invoice as another till would, through the create route's
/// own validation and arithmetic; `input` is a create request's body.
/// Returns its id, or the backend's error message (e.g. "The invoice
/// number has already been taken.").
pub(super) fn another_till_create(
    sh: &Shared,
    vendor: TillVendor,
    input: Value,
) -> Result<u64, String> {
    let Value::Object(input) = clean_input(input, None) else {
        return Err("the invoice must be a JSON object".into());
    };
    let mut st = sh.state();
    let user = match vendor {
        TillVendor::Same => st
            .users
            .first()
            .cloned()
            .ok_or("the sandbox has no vendor")?,
        TillVendor::Other => foreign_vendor(&mut st),
    };
    store_invoice(&mut st, &user, &input).map_err(|resp| {
        resp.extensions()
            .get::<ErrorMessage>()
            .map_or_else(|| "Server Error".to_string(), |m| m.0.clone())
    })
}

/// `POST /__sandbox/invoices` `{"vendor": "same" | "other", "invoice_number",
/// "customer_name", "customer_email", "customer_phone", "items": [...]}`.
pub(super) fn another_till(sh: &Shared, body: &[u8]) -> CtlResult {
    let mut body = control_body(
        body,
        &[
            "vendor",
            "invoice_number",
            "customer_name",
            "customer_email",
            "customer_phone",
            "items",
        ],
    )?;
    let vendor = match body.remove("vendor") {
        None => TillVendor::Same,
        Some(Value::String(v)) if v == "same" => TillVendor::Same,
        Some(Value::String(v)) if v == "other" => TillVendor::Other,
        Some(_) => return Err(bad_request("\"vendor\" must be \"same\" or \"other\"")),
    };
    let id = another_till_create(sh, vendor, Value::Object(body))
        .map_err(|m| (StatusCode::UNPROCESSABLE_ENTITY, m))?;
    Ok(json!({"ok": true, "id": id}))
}

pub(super) async fn ctl_another_till(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(another_till(&sh, &body))
}
