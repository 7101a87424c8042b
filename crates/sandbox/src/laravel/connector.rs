//! The connector channel (`/api/pos-connector/...`, keyed by `X-API-Key`).

use super::*;

/// Laravel-style checks of a heartbeat (see the module doc: assumed rules).
pub(super) fn validate_heartbeat(input: &Map<String, Value>) -> Result<(), Errors> {
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

pub(super) async fn connector_heartbeat(
    State(sh): State<Sh>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    c.first_heartbeat.get_or_insert_with(Utc::now);
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "config_updates": c.config_updates_json(), "server_time": now}),
    )
}

pub(super) async fn connector_test(State(sh): State<Sh>, headers: HeaderMap) -> Response {
    let st = sh.state();
    if let Some(refused) = st.connector.refusal(&headers) {
        return refused;
    }
    json_response(
        StatusCode::OK,
        &json!({
            "status": "connection_ok",
            "customer": SANDBOX_CUSTOMER,
            "customer_id": SANDBOX_CUSTOMER_ID.to_string(),
            "server_time": now_timestamp(),
            "message": "POS Connector is successfully connected to JoFotara!",
        }),
    )
}

/// `GET /api/pos-connector/config`: flat, the key in clear, the interval
/// and debug flag the heartbeat would send.
pub(super) async fn connector_config(State(sh): State<Sh>, headers: HeaderMap) -> Response {
    let st = sh.state();
    let c = &st.connector;
    if let Some(refused) = c.refusal(&headers) {
        return refused;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let created_date = st.users_created_at.get(..10).unwrap_or_default();
    json_response(
        StatusCode::OK,
        &json!({
            "customer_id": SANDBOX_CUSTOMER_ID.to_string(),
            "customer_name": SANDBOX_CUSTOMER,
            "api_key": c.api_key,
            "api_url": format!("http://{host}/api"),
            "sync_interval": c.config_updates.get("sync_interval").cloned().unwrap_or(json!(300)),
            "debug_mode": c.config_updates.get("debug_mode").cloned().unwrap_or(json!(false)),
            "auto_start": true,
            "version": "1.0.0",
            "created_date": created_date,
            "contact_info": {
                "support_email": "support@sandbox.test",
                "support_phone": "+962 6 000 0000",
            },
        }),
    )
}

/// What the control API shows of the channel (not an answer of the
/// backend's).
pub(super) fn connector_stats_json(c: &ConnectorState) -> Value {
    json!({
        "customer_id": SANDBOX_CUSTOMER_ID,
        "heartbeats_received": c.heartbeats.len(),
        "last_heartbeat": c.last_heartbeat_at,
        "last_version": c.heartbeats.last().and_then(|h| h.get("version")).cloned(),
        "transactions_received": c.transactions.len(),
        "transactions_duplicate": c.transactions_duplicate,
    })
}

/// A transaction's amount, read from the usual POS field names.
fn transaction_amount(t: &Value) -> f64 {
    ["total_amount", "total", "amount"]
        .iter()
        .find_map(|k| t.get(*k).and_then(php_float))
        .unwrap_or(0.0)
}

/// `GET /api/pos-connector/stats`: the backend's own figures of the
/// transactions it received.
pub(super) async fn connector_stats(State(sh): State<Sh>, headers: HeaderMap) -> Response {
    let st = sh.state();
    let c = &st.connector;
    if let Some(refused) = c.refusal(&headers) {
        return refused;
    }
    let now = Utc::now();
    let since = |days: i64| {
        c.received_at
            .iter()
            .filter(|t| now.signed_duration_since(**t) < chrono::Duration::days(days))
            .count()
    };
    let today = c
        .received_at
        .iter()
        .filter(|t| t.date_naive() == now.date_naive())
        .count();
    let revenue: f64 = c.transactions.iter().map(transaction_amount).sum();
    let uptime = c.first_heartbeat.map_or_else(
        || "0 minutes".to_string(),
        |t| {
            let mins = now.signed_duration_since(t).num_minutes().max(0);
            format!("{} hours {} minutes", mins / 60, mins % 60)
        },
    );
    json_response(
        StatusCode::OK,
        &json!({
            "total_transactions": c.transactions.len(),
            "today_transactions": today,
            "weekly_transactions": since(7),
            "total_revenue": db_number(revenue),
            // The backend's automatic invoicing from transactions is broken.
            "invoices_created": 0,
            "last_transaction": c.received_at.last().map(|t| laravel_timestamp(*t)),
            "connector_uptime": uptime,
        }),
    )
}

/// `POST /api/pos-connector/transactions`: `{"transactions": [{...,
/// "transaction_id"}]}`. Stored once per `transaction_id`; a repeat (in
/// this request or an earlier one) is skipped; one without an id is an
/// error listed in `error_details`. An empty or missing list: 422 in the
/// channel's own shape.
pub(super) async fn connector_transactions(
    State(sh): State<Sh>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = sh.state();
    if let Some(refused) = st.connector.refusal(&headers) {
        return refused;
    }
    let input = request_input(&headers, &body);
    let list: Vec<Value> = match input.get("transactions") {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Object(o)) => o.values().cloned().collect(),
        _ => Vec::new(),
    };
    if list.is_empty() {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": "Validation failed",
                    "details": {"transactions": ["The transactions field is required."]}}),
        );
    }
    let id_of = |t: &Value| t.get("transaction_id").and_then(php_string);
    let c = &mut st.connector;
    let (mut processed, mut skipped) = (0u64, 0u64);
    let mut error_details = Vec::new();
    let now = Utc::now();
    for (i, t) in list.into_iter().enumerate() {
        match id_of(&t).filter(|id| !id.is_empty()) {
            None => error_details.push(json!({
                "index": i,
                "error": "The transaction_id field is required.",
            })),
            Some(id) if c.transaction_ids.insert(id.clone()) => {
                c.transactions.push(t);
                c.received_at.push(now);
                processed += 1;
            }
            Some(_) => {
                c.transactions_duplicate += 1;
                skipped += 1;
            }
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"status": "success", "processed": processed, "skipped": skipped,
                "errors": error_details.len(), "error_details": error_details}),
    )
}
