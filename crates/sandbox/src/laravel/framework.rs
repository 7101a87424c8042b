//! What Laravel itself does around the controllers: input cleaning and
//! parsing, the validation rules' PHP semantics and messages, bearer
//! tokens, exception rendering (JSON, redirects, HTML), unknown routes.

use super::*;

/// Which Laravel exception a response renders; the render middleware turns
/// it into a redirect or an HTML page for clients that do not expect JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Exception {
    Authentication,
    Validation,
    NotFound,
    MethodNotAllowed,
}

/// The `message` of an exception answer, for callers that are not HTTP
/// clients (the control API's "another till").
#[derive(Clone, Debug)]
pub(super) struct ErrorMessage(pub(super) String);

pub(super) fn exception_response(status: StatusCode, body: Value, kind: Exception) -> Response {
    let mut resp = json_response(status, &body);
    resp.extensions_mut().insert(kind);
    if let Some(m) = body.get("message").and_then(Value::as_str) {
        resp.extensions_mut().insert(ErrorMessage(m.to_string()));
    }
    resp
}

pub(super) fn unauthenticated() -> Response {
    exception_response(
        StatusCode::UNAUTHORIZED,
        json!({"message": "Unauthenticated."}),
        Exception::Authentication,
    )
}

/// Laravel's `ModelNotFoundException` answer: with the ids looked up
/// (`findOrFail`), or without (`where(...)->firstOrFail()`).
pub(super) fn model_not_found(id: Option<&str>) -> Response {
    let message = match id {
        // Laravel's message: the ids without a full stop, else a full stop.
        Some(id) => format!("No query results for model [{INVOICE_MODEL}] {id}"),
        None => format!("No query results for model [{INVOICE_MODEL}]."),
    };
    exception_response(
        StatusCode::NOT_FOUND,
        json!({ "message": message }),
        Exception::NotFound,
    )
}

pub(super) fn server_error() -> Response {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"message": "Server Error"}),
    )
}

/// The error body Laravel gives a status (used for injected faults).
pub fn laravel_error_body(status: u16) -> Value {
    let message = match status {
        401 => "Unauthenticated.".to_string(),
        429 => "Too Many Attempts.".to_string(),
        500 => "Server Error".to_string(),
        503 => "Service Unavailable".to_string(),
        s => StatusCode::from_u16(s)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("Error")
            .to_string(),
    };
    json!({ "message": message })
}

/// Ordered validation errors (field -> messages), Laravel style.
#[derive(Default, Debug)]
pub(super) struct Errors(Vec<(String, Vec<String>)>);

impl Errors {
    pub(super) fn add(&mut self, field: &str, message: String) {
        match self.0.iter_mut().find(|(f, _)| f == field) {
            Some((_, msgs)) => msgs.push(message),
            None => self.0.push((field.to_string(), vec![message])),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The 422 answer: first message, `(and N more error[s])`, all errors.
    pub(super) fn into_response(self) -> Response {
        let total: usize = self.0.iter().map(|(_, m)| m.len()).sum();
        let first = self
            .0
            .first()
            .and_then(|(_, m)| m.first().cloned())
            .unwrap_or_default();
        let message = match total.saturating_sub(1) {
            0 => first,
            1 => format!("{first} (and 1 more error)"),
            n => format!("{first} (and {n} more errors)"),
        };
        let mut errors = Map::new();
        for (field, msgs) in self.0 {
            errors.insert(field, json!(msgs));
        }
        exception_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": message, "errors": errors}),
            Exception::Validation,
        )
    }
}

/// How Laravel names an attribute in messages: underscores become spaces.
pub(super) fn display_attr(field: &str) -> String {
    field.replace('_', " ")
}

pub(super) fn msg_required(f: &str) -> String {
    format!("The {} field is required.", display_attr(f))
}

pub(super) fn msg_string(f: &str) -> String {
    format!("The {} field must be a string.", display_attr(f))
}

/// Laravel's `required`: present, not null, not an empty string (input is
/// already trimmed) and not an empty array.
pub(super) fn filled(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// PHP's `is_numeric` on a string (leading/trailing whitespace allowed).
pub(super) fn php_numeric_str(s: &str) -> bool {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{0B}');
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int)
        && frac.is_none_or(digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exp_ok
}

pub(super) fn is_numeric(v: &Value) -> bool {
    match v {
        Value::Number(_) => true,
        Value::String(s) => php_numeric_str(s),
        _ => false,
    }
}

/// PHP's `filter_var($v, FILTER_VALIDATE_INT)`, as Laravel's `integer` rule
/// uses it; returns the integer.
pub(super) fn php_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 1e15).then_some(f as i64)
        }),
        Value::String(s) => {
            let t = s.trim();
            let body = t.strip_prefix(['+', '-']).unwrap_or(t);
            let canonical = !body.is_empty()
                && body.bytes().all(|b| b.is_ascii_digit())
                && (body == "0" || !body.starts_with('0'));
            if canonical {
                t.parse().ok()
            } else {
                None
            }
        }
        Value::Bool(true) => Some(1),
        _ => None,
    }
}

/// PHP's float of a numeric value (`(float)$v`: a numeric string through
/// `strtod`), for the backend's arithmetic.
pub(super) fn php_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if php_numeric_str(s) => s
            .trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{0B}')
            .parse()
            .ok(),
        _ => None,
    }
}

/// Laravel's size of a value for `min` on an attribute with a numeric rule:
/// the number if numeric, else an array's count, else the string length.
pub(super) fn numeric_size(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) if php_numeric_str(s) => s.trim().parse::<f64>().unwrap_or(0.0),
        Value::String(s) => s.chars().count() as f64,
        Value::Array(a) => a.len() as f64,
        Value::Object(o) => o.len() as f64,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Null => 0.0,
    }
}

/// PHP's string conversion of a scalar (for comparisons).
pub(super) fn php_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("1".into()),
        Value::Bool(false) => Some(String::new()),
        _ => None,
    }
}

/// A plausible e-mail address (Laravel's default `email` rule is RFC based
/// and lenient: no dot needed in the domain).
pub(super) fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !local.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && domain.chars().all(|c| {
            c.is_alphanumeric() || c == '-' || c == '.' || c == '[' || c == ']' || c == ':'
        })
}

/// Laravel's `TrimStrings` (not for passwords) then
/// `ConvertEmptyStringsToNull`, applied to the whole input.
pub(super) fn clean_input(v: Value, top_key: Option<&str>) -> Value {
    const NO_TRIM: [&str; 3] = ["password", "password_confirmation", "current_password"];
    match v {
        Value::String(s) => {
            let s = if top_key.is_some_and(|k| NO_TRIM.contains(&k)) {
                s
            } else {
                s.trim_matches(|c: char| {
                    c.is_ascii_whitespace() || c == '\u{0B}' || c == '\u{FEFF}' || c == '\u{200B}'
                })
                .to_string()
            };
            if s.is_empty() {
                Value::Null
            } else {
                Value::String(s)
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| clean_input(x, None)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| {
                    let cleaned = clean_input(x, if top_key.is_none() { Some(&k) } else { None });
                    (k, cleaned)
                })
                .collect(),
        ),
        other => other,
    }
}

/// The request input as Laravel sees it: the JSON body when the
/// `Content-Type` is JSON (an unparsable body is empty input), the form
/// fields when it is `application/x-www-form-urlencoded` (PHP's
/// `items[0][price]` nesting), else nothing; then cleaned
/// ([`clean_input`]).
pub(super) fn request_input(headers: &HeaderMap, body: &[u8]) -> Map<String, Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw = if ct.contains("/json") || ct.contains("+json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => o,
            _ => Map::new(),
        }
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        php_form(body)
    } else {
        Map::new()
    };
    match clean_input(Value::Object(raw), None) {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// PHP's `parse_str` of a form body: `a[b][0]=x` nests (objects keyed by
/// the bracketed names, `[]` appends), values are strings, a later
/// repeated name wins.
pub(super) fn php_form(body: &[u8]) -> Map<String, Value> {
    let mut root = Map::new();
    for (name, value) in form_decode(body) {
        let (head, mut rest) = match name.find('[') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name.as_str(), ""),
        };
        let mut path = vec![head.replace(['.', ' '], "_")];
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            path.push(inner[..end].to_string());
            rest = &inner[end + 1..];
        }
        insert_path(&mut root, &path, Value::String(value));
    }
    root
}

fn insert_path(map: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    // `[]`: the next integer key, as PHP appends.
    let key = if first.is_empty() {
        map.keys()
            .filter_map(|k| k.parse::<u64>().ok())
            .max()
            .map_or(0, |n| n + 1)
            .to_string()
    } else {
        first.clone()
    };
    if rest.is_empty() {
        map.insert(key, value);
        return;
    }
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    if let Value::Object(m) = child {
        insert_path(m, rest, value);
    }
}

/// `$request->bearerToken()`.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let lower = h.to_ascii_lowercase();
    let pos = lower.rfind("bearer ")?;
    let rest = &h[pos + 7..];
    let token = rest.split(',').next().unwrap_or("");
    (!token.is_empty()).then(|| token.to_string())
}

/// `$request->expectsJson()`: ajax accepting anything, or the preferred
/// `Accept` type is JSON.
pub(super) fn expects_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    // Acceptable types, best quality first (stable for equal quality).
    let mut types: Vec<(f32, String)> = accept
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let ty = it.next()?.trim().to_ascii_lowercase();
            if ty.is_empty() {
                return None;
            }
            let q = it
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((q, ty))
        })
        .collect();
    types.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let first = types.first().map(|(_, t)| t.as_str());
    let wants_json = first.is_some_and(|t| t.contains("/json") || t.contains("+json"));
    let ajax = headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes() == b"XMLHttpRequest");
    let pjax = headers.contains_key("x-pjax");
    let accepts_any = matches!(first, None | Some("*/*") | Some("*"));
    wants_json || (ajax && !pjax && accepts_any)
}

pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#039;")
}

/// Symfony's `RedirectResponse`.
pub(super) fn redirect(to: &str) -> Response {
    let esc = html_escape(to);
    let body = format!(
        "<!DOCTYPE html>\n<html>\n    <head>\n        <meta charset=\"UTF-8\" />\n        <meta http-equiv=\"refresh\" content=\"0;url='{esc}'\" />\n\n        <title>Redirecting to {esc}</title>\n    </head>\n    <body>\n        Redirecting to <a href=\"{esc}\">{esc}</a>.\n    </body>\n</html>"
    );
    let mut resp = html_response(StatusCode::FOUND, &body);
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Laravel's exception rendering for clients that do not expect JSON, and
/// its 405 message (axum answers 405 with an empty body and `Allow`).
pub(super) async fn laravel_render(mut req: Request, next: Next) -> Response {
    // Laravel matches routes on the trimmed path: `/api/invoices/5/` is
    // `/api/invoices/5`.
    if let Some(uri) = without_trailing_slash(req.uri()) {
        *req.uri_mut() = uri;
    }
    let json = expects_json(req.headers());
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let referer = req
        .headers()
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method().clone();
    let mut resp = next.run(req).await;

    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && resp.extensions().get::<Exception>().is_none()
        && !resp.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = resp.headers().get(header::ALLOW).cloned();
        let supported = allow
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let message = format!(
            "The {method} method is not supported for this route. Supported methods: {supported}."
        );
        resp = exception_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "message": message }),
            Exception::MethodNotAllowed,
        );
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    if json {
        return resp;
    }
    let base = format!("http://{host}");
    match resp.extensions().get::<Exception>().copied() {
        None => resp,
        Some(Exception::Authentication) => redirect(&format!("{base}/login")),
        Some(Exception::Validation) => redirect(&referer.unwrap_or(base)),
        Some(Exception::NotFound | Exception::MethodNotAllowed) => {
            let allow = resp.headers().get(header::ALLOW).cloned();
            let mut html = html_response(resp.status(), &html_error_page(resp.status()));
            if let Some(a) = allow {
                html.headers_mut().insert(header::ALLOW, a);
            }
            html
        }
    }
}

/// The URI without the trailing slashes of its path (`None`: nothing to
/// strip, or the root).
pub(super) fn without_trailing_slash(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() == path.len() || trimmed.is_empty() {
        return None;
    }
    let pq = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Uri::from_parts(parts).ok()
}

/// `$request->path()`: the path without its leading slash, `/` for the root.
pub(super) fn laravel_path(uri: &Uri) -> String {
    let p = uri.path().trim_matches('/');
    if p.is_empty() {
        "/".into()
    } else {
        p.to_string()
    }
}

pub(super) async fn route_not_found(uri: Uri) -> Response {
    exception_response(
        StatusCode::NOT_FOUND,
        json!({"message": format!("The route {} could not be found.", laravel_path(&uri))}),
        Exception::NotFound,
    )
}

pub(super) async fn health() -> Response {
    html_response(
        StatusCode::OK,
        "<!DOCTYPE html>\n<html><head><title>Sandbox</title></head><body>Application up</body></html>\n",
    )
}
