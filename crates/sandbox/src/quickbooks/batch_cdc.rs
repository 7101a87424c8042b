//! `POST /batch` and `GET /cdc` (change data capture).

use super::*;

/// `POST /batch`: items run in order, each against the state the earlier
/// items left (so two items with one `DocNumber` give a 6140 for the
/// second); no item can refer to another's result.
pub(super) fn batch(db: &mut Db, body: &[u8]) -> Result<Value, ApiError> {
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

pub(super) fn batch_item(db: &mut Db, item: &Value) -> Result<(String, Value), ApiError> {
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
    super::run_race(db, kind, &entity);
    let row = upsert(db, kind, entity, None)?;
    Ok((kind.name().into(), Value::Object(row)))
}

/// `GET /cdc?entities=...&changedSince=...`.
pub(super) fn cdc(db: &Db, params: &[(String, String)]) -> Result<Value, ApiError> {
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
