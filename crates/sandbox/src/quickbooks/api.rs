//! The Accounting API's entry: authentication, routing of `/v3/...`
//! requests to operations, `requestid` replays.

use super::*;

/// What an API call answers.
pub(super) enum Reply {
    Json(StatusCode, Value),
    /// The gateway's 401 (3200) with this detail.
    Unauthenticated(String),
    Throttled,
}

impl Reply {
    pub(super) fn err(e: ApiError) -> Reply {
        Reply::Json(e.status, e.body())
    }

    pub(super) fn into_response(self) -> Response {
        match self {
            Reply::Json(status, v) => json_response(status, &v),
            Reply::Unauthenticated(detail) => gateway_401(&detail),
            Reply::Throttled => throttled_response(),
        }
    }
}

/// The operation a path names (below `/v3/company/{realm}/`).
pub(super) enum Op {
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

pub(super) fn op_of(method: &Method, rest: &[&str]) -> Op {
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
pub(super) fn authenticate(
    db: &Db,
    headers: &HeaderMap,
    realm: &str,
    now: Instant,
) -> Result<(), Reply> {
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
pub(super) fn api_call(
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

pub(super) fn not_found_reply(path: &str) -> Reply {
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

pub(super) fn with_time(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("time".into(), json!(time_now()));
    }
    v
}

pub(super) fn run_op(
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
            super::run_race(db, kind, &v);
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

pub(super) fn parse_json_body(body: &[u8], kind: Kind) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(unsupported_property(format!(
            "{} (the body must be a JSON object)",
            kind.name()
        ))),
        Err(e) => Err(unsupported_property(format!("{} ({e})", kind.name()))),
    }
}

/// Every `/v3/...` request (and unknown paths, through the fallback).
pub(super) async fn api_entry(State(sh): State<Sh>, req: Request) -> Response {
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
