//! The OAuth 2.0 server: its token store (codes, grants, rotating refresh
//! tokens, access tokens) and the authorize, token and revoke endpoints.

use super::*;

pub(super) struct AuthCode {
    pub(super) redirect_uri: String,
    pub(super) issued: Instant,
    /// The grant its first exchange created (a second exchange revokes it).
    pub(super) grant: Option<usize>,
}

/// One user authorization: its tokens live and die together.
pub(super) struct Grant {
    pub(super) realm: String,
    pub(super) hard_expiry: Instant,
    pub(super) revoked: bool,
}

pub(super) struct RefreshRec {
    pub(super) grant: usize,
    pub(super) issued: Instant,
    /// Rolling expiry: issue + the refresh lifetime.
    pub(super) expires: Instant,
    /// Set when a newer refresh token of the grant was issued.
    pub(super) dies_at: Option<Instant>,
}

pub(super) struct AccessRec {
    pub(super) grant: usize,
    pub(super) expires: Instant,
    /// `expire_access_tokens` was called after its issue.
    pub(super) killed: bool,
}

/// Why a token is refused (the text goes into error descriptions).
pub(super) fn refresh_problem(db: &Db, token: &str, now: Instant) -> Option<&'static str> {
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

pub(super) fn random_alnum(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// `AB11` + 46 characters: the shape of Intuit's refresh tokens (50 chars).
pub(super) fn new_refresh_token() -> String {
    format!("AB11{}", random_alnum(46))
}

/// Authorization codes look like refresh tokens at Intuit too.
pub(super) fn new_code() -> String {
    format!("AB11{}", random_alnum(38))
}

/// Intuit's access tokens are JWEs of about a thousand characters: long
/// enough to overflow a `VARCHAR(255)` column, which is the point.
pub(super) fn new_access_token() -> String {
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
pub(super) fn new_tid() -> HeaderValue {
    let secs = Utc::now().timestamp().max(0) as u64;
    let rnd = uuid::Uuid::new_v4().simple().to_string();
    let s = format!("1-{secs:08x}-{}", &rnd[..24]);
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("1-00000000-0"))
}

pub(super) fn authorize_error(problem: &str) -> Response {
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
pub(super) fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
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

pub(super) fn issue_code_locked(db: &mut Db, redirect_uri: &str) -> String {
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
pub(super) async fn authorize(State(sh): State<Sh>, req: Request) -> Response {
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
pub(super) fn client_ok(db: &Db, headers: &HeaderMap) -> bool {
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
pub(super) fn issue_pair(db: &mut Db, grant: usize, now: Instant, include_hard: bool) -> Value {
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

pub(super) fn invalid_grant(db: &mut Db, description: &str) -> Response {
    db.counts.invalid_grant += 1;
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", Some(description))
}

/// `POST /oauth2/v1/tokens/bearer`.
pub(super) async fn token_endpoint(
    State(sh): State<Sh>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
pub(super) async fn revoke_endpoint(
    State(sh): State<Sh>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
