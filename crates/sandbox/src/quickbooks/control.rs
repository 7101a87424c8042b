//! The control API (`/__sandbox/...`).

use super::*;

pub(super) fn rotation_json(r: Rotation) -> Value {
    match r {
        Rotation::Strict => json!("strict"),
        Rotation::Grace(d) => json!({"grace_secs": d.as_secs_f64()}),
    }
}

pub(super) fn settings_json(db: &Db) -> Value {
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

pub(super) fn parse_rotation(v: &Value) -> Result<Rotation, (StatusCode, String)> {
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

pub(super) fn parse_limits(
    v: &Value,
    current: &QboLimits,
) -> Result<QboLimits, (StatusCode, String)> {
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

pub(super) fn settings(sh: &Shared, body: &[u8]) -> CtlResult {
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

pub(super) fn stats_json(sh: &Shared) -> Value {
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

pub(super) fn live_refresh(db: &Db, now: Instant) -> Vec<String> {
    let mut live: Vec<(&String, Instant)> = db
        .refresh
        .iter()
        .filter(|(t, _)| refresh_problem(db, t, now).is_none())
        .map(|(t, r)| (t, r.issued))
        .collect();
    live.sort_by_key(|(_, issued)| *issued);
    live.into_iter().map(|(t, _)| t.clone()).collect()
}

pub(super) async fn ctl_stats(State(sh): State<Sh>) -> Response {
    json_response(StatusCode::OK, &stats_json(&sh))
}

pub(super) async fn ctl_stats_reset(State(sh): State<Sh>) -> Response {
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

pub(super) async fn ctl_settings(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(settings(&sh, &body))
}

pub(super) async fn ctl_expire(State(sh): State<Sh>) -> Response {
    let n = expire_all(&mut sh.db());
    json_response(StatusCode::OK, &json!({"ok": true, "expired": n}))
}

pub(super) async fn ctl_revoke(State(sh): State<Sh>) -> Response {
    let n = revoke_all(&mut sh.db());
    json_response(StatusCode::OK, &json!({"ok": true, "revoked": n}))
}

pub(super) fn expire_all(db: &mut Db) -> usize {
    let mut n = 0;
    for a in db.access.values_mut().filter(|a| !a.killed) {
        a.killed = true;
        n += 1;
    }
    n
}

pub(super) fn revoke_all(db: &mut Db) -> usize {
    let mut n = 0;
    for g in db.grants.iter_mut().filter(|g| !g.revoked) {
        g.revoked = true;
        n += 1;
    }
    n
}

pub(super) fn ctl_string(
    body: &Map<String, Value>,
    name: &str,
) -> Result<String, (StatusCode, String)> {
    body.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| bad_request(format!("\"{name}\" (a non-empty string) is required")))
}

pub(super) fn ctl_customer(sh: &Shared, body: &[u8]) -> CtlResult {
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

pub(super) fn ctl_item(sh: &Shared, body: &[u8]) -> CtlResult {
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

pub(super) fn ctl_invoice(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["doc_number", "customer"])?;
    let doc = ctl_string(&body, "doc_number")?;
    let customer = ctl_string(&body, "customer")?;
    let id = seed_invoice(&mut sh.db(), &doc, &customer);
    Ok(json!({"ok": true, "Id": id}))
}

pub(super) fn ctl_code(sh: &Shared, body: &[u8]) -> CtlResult {
    let body = control_body(body, &["redirect_uri"])?;
    let uri = ctl_string(&body, "redirect_uri")?;
    let mut db = sh.db();
    let code = issue_code_locked(&mut db, &uri);
    Ok(json!({"ok": true, "code": code, "realmId": db.opts.realm_id}))
}

pub(super) async fn ctl_customers(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(ctl_customer(&sh, &body))
}

pub(super) async fn ctl_items(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(ctl_item(&sh, &body))
}

pub(super) async fn ctl_invoices(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(ctl_invoice(&sh, &body))
}

pub(super) async fn ctl_codes(State(sh): State<Sh>, body: Bytes) -> Response {
    ctl_answer(ctl_code(&sh, &body))
}
