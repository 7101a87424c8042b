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

pub(super) fn settings_json(st: &Db) -> Value {
    json!({
        "token_lifetime_secs": st.token_lifetime.map(|d| d.as_secs()),
        "advertise_expiry": st.advertise_expiry,
        "jofotara_configured": st.jofotara_configured,
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
    v["settings"] = settings_json(&st);
    v["connector"] = connector_stats_json(&st.connector);
    drop(st);
    v["pool"] = pool_json(sh);
    v
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

/// Adds `count` invoices owned by another vendor (created on first use,
/// organisation 2), as other shops sharing the backend would; returns
/// their ids.
pub(super) fn seed_foreign(sh: &Shared, count: usize) -> Vec<u64> {
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
