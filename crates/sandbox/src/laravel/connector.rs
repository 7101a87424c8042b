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
            "customer_id": SANDBOX_CUSTOMER_ID,
            "server_time": now_timestamp(),
            "message": "Connection successful",
        }),
    )
}

pub(super) async fn connector_config(State(sh): State<Sh>, headers: HeaderMap) -> Response {
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

pub(super) async fn connector_stats(State(sh): State<Sh>, headers: HeaderMap) -> Response {
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
