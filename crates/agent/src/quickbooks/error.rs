//! Errors of the QuickBooks Online API, in the same families as the Laravel
//! client's: QuickBooks said no (fix the data, the mapping or the
//! connection), the network failed or QuickBooks is busy (retry later), or
//! the answer could not be understood (look at the excerpt).
//!
//! QuickBooks reports errors in three body shapes (the API's `Fault`, the
//! gateway's lowercase `fault`, and XML for throttling even when JSON was
//! asked for) and sometimes inside an HTTP 200, so the classification reads
//! the fault codes first and the HTTP status second. Every message names the
//! code, QuickBooks' Detail and the `intuit_tid` that Intuit support asks for.

use std::time::Duration;

use serde_json::Value;

/// How much of an unparseable body goes into errors and logs.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// Runs of token-like characters at least this long are replaced in texts
/// taken from bodies: a gateway Detail can echo part of a bearer token, and
/// these texts end up in logs and on screens. Shorter runs (an `intuit_tid`,
/// a UUID `requestid`, a realm id) stay readable.
const TOKEN_RUN: usize = 40;

/// One error in a QuickBooks fault body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct FaultItem {
    /// As QuickBooks gave it ("6140", sometimes "003200"); taken from the
    /// message's `errorCode=...` (leading zeros stripped) when missing.
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
    pub(crate) element: Option<String>,
}

/// A QuickBooks fault: its type and its errors, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Fault {
    /// "ValidationFault", "AUTHENTICATION", "SERVICE", "SystemFault"...
    pub(crate) kind: Option<String>,
    pub(crate) errors: Vec<FaultItem>,
}

impl Fault {
    /// The first error's code, as given.
    #[cfg(test)]
    pub(crate) fn first_code(&self) -> Option<&str> {
        self.errors.first().map(|e| e.code.as_str())
    }

    /// Whether any error carries `code`. Leading zeros are ignored on both
    /// sides, because the same code appears as "3200" in one field and
    /// "003200" in another.
    pub(crate) fn has_code(&self, code: &str) -> bool {
        let want = strip_zeros(code);
        self.errors.iter().any(|e| strip_zeros(&e.code) == want)
    }

    /// A fault from parsed JSON: `{"Fault": {...}}`, the gateway's
    /// `{"fault": {...}}`, or the inner `{"Error": [...], "type": ...}`
    /// object (a batch item's `Fault` value). `None` when `v` is none of
    /// these.
    pub(crate) fn from_value(v: &Value) -> Option<Fault> {
        let obj = v.as_object()?;
        let inner = match obj.get("Fault").or_else(|| obj.get("fault")) {
            Some(inner) => inner.as_object()?,
            // Without a wrapper only an object with an error list counts,
            // so an ordinary answer is never mistaken for a fault.
            None if obj.contains_key("Error") || obj.contains_key("error") => obj,
            None => return None,
        };
        let kind = field(inner, "type", "Type").map(str::to_string);
        let errors = match inner.get("Error").or_else(|| inner.get("error")) {
            Some(Value::Array(list)) => list.iter().filter_map(json_item).collect(),
            // Some stacks send a single error as an object, not a list.
            Some(one @ Value::Object(_)) => json_item(one).into_iter().collect(),
            _ => Vec::new(),
        };
        Some(Fault { kind, errors })
    }

    /// "6000: message; Detail: detail" for the first error, or the fault's
    /// type when it lists no error.
    fn summary(&self) -> String {
        match self.errors.first() {
            Some(e) => e.summary(),
            None => format!(
                "fault {} with no error listed",
                self.kind.as_deref().unwrap_or("of unknown type")
            ),
        }
    }
}

impl FaultItem {
    fn summary(&self) -> String {
        let mut out = if self.code.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.code, self.message)
        };
        if let Some(d) = self.detail.as_deref().filter(|d| *d != self.message) {
            out.push_str("; Detail: ");
            out.push_str(d);
        }
        out
    }
}

/// A string field under either spelling (the API's and the gateway's).
fn field<'a>(obj: &'a serde_json::Map<String, Value>, a: &str, b: &str) -> Option<&'a str> {
    obj.get(a).or_else(|| obj.get(b)).and_then(Value::as_str)
}

fn json_item(v: &Value) -> Option<FaultItem> {
    let obj = v.as_object()?;
    let text = |a: &str, b: &str| field(obj, a, b).map(clean).filter(|s| !s.is_empty());
    let message = text("Message", "message").unwrap_or_default();
    // The code is normally a string, but tolerate a number.
    let code = match obj.get("code").or_else(|| obj.get("Code")) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    Some(FaultItem {
        code: if code.is_empty() {
            code_from_message(&message).unwrap_or_default()
        } else {
            code
        },
        message,
        detail: text("Detail", "detail"),
        element: text("element", "Element"),
    })
}

/// The code inside "message=AuthenticationFailed; errorCode=003200; ...",
/// without its leading zeros.
fn code_from_message(message: &str) -> Option<String> {
    let at = find_ci(message, "errorcode=")? + "errorcode=".len();
    let digits: String = message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| strip_zeros(&digits).to_string())
}

fn strip_zeros(code: &str) -> &str {
    let code = code.trim();
    let stripped = code.trim_start_matches('0');
    if stripped.is_empty() && !code.is_empty() {
        "0"
    } else {
        stripped
    }
}

/// Byte offset of `needle` (ASCII, lowercase) in `hay`, ignoring ASCII case.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Parses a fault out of a response body in any of QuickBooks' three
/// shapes (JSON `Fault`, gateway `fault`, XML), or `None` when the body
/// holds no fault.
pub(crate) fn parse_fault(body: &[u8]) -> Option<Fault> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text).ok()?;
        return Fault::from_value(&v);
    }
    if text.starts_with('<') {
        return xml::parse(text);
    }
    None
}

/// A minimal reader for the one XML document QuickBooks sends: the fault.
/// A full XML crate would be a dependency for a dozen tags; this reads
/// elements, attributes, text, entities and CDATA, skips declarations and
/// comments, and ignores namespace prefixes.
mod xml {
    use super::{clean, code_from_message, Fault, FaultItem};

    enum Event<'a> {
        Start {
            name: &'a str,
            attrs: &'a str,
            empty: bool,
        },
        End(&'a str),
        Text(String),
    }

    /// The element's name without a namespace prefix.
    fn local(name: &str) -> &str {
        name.rsplit(':').next().unwrap_or(name)
    }

    fn events(doc: &str) -> Vec<Event<'_>> {
        let mut out = Vec::new();
        let mut rest = doc;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                out.push(Event::Text(decode(rest)));
                break;
            };
            if lt > 0 {
                out.push(Event::Text(decode(&rest[..lt])));
            }
            rest = &rest[lt..];
            if let Some(body) = rest.strip_prefix("<![CDATA[") {
                let end = body.find("]]>").unwrap_or(body.len());
                out.push(Event::Text(body[..end].to_string()));
                rest = body.get(end + 3..).unwrap_or("");
                continue;
            }
            let (close, skip) = if rest.starts_with("<!--") {
                ("-->", true)
            } else if rest.starts_with("<?") || rest.starts_with("<!") {
                (">", true)
            } else {
                (">", false)
            };
            let Some(end) = rest.find(close) else { break };
            let tag = &rest[1..end];
            rest = &rest[end + close.len()..];
            if skip {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                out.push(Event::End(local(name.trim())));
                continue;
            }
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let split = tag.find(char::is_whitespace).unwrap_or(tag.len());
            out.push(Event::Start {
                name: local(&tag[..split]),
                attrs: &tag[split..],
                empty,
            });
        }
        out
    }

    /// The value of attribute `want` in `attrs` (`a="x" b='y'`).
    fn attr(attrs: &str, want: &str) -> Option<String> {
        let mut rest = attrs;
        loop {
            rest = rest.trim_start();
            let eq = rest.find('=')?;
            let name = rest[..eq].trim();
            let after = rest[eq + 1..].trim_start();
            let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let value_end = after[1..].find(quote)? + 1;
            if local(name) == want {
                return Some(decode(&after[1..value_end]));
            }
            rest = &after[value_end + 1..];
        }
    }

    /// Replaces the five named entities and numeric references.
    pub(super) fn decode(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            rest = &rest[amp..];
            let semi = rest.find(';').filter(|s| *s <= 10);
            let decoded = semi.and_then(|s| {
                let name = &rest[1..s];
                let c = match name {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    _ => {
                        let n = if let Some(hex) =
                            name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
                        {
                            u32::from_str_radix(hex, 16).ok()?
                        } else {
                            name.strip_prefix('#')?.parse().ok()?
                        };
                        char::from_u32(n)?
                    }
                };
                Some((c, s))
            });
            match decoded {
                Some((c, s)) => {
                    out.push(c);
                    rest = &rest[s + 1..];
                }
                // A bare '&' is kept as it is rather than failing the fault.
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    pub(super) fn parse(doc: &str) -> Option<Fault> {
        let mut fault: Option<Fault> = None;
        let mut item: Option<FaultItem> = None;
        // The child of <Error> whose text is being read.
        let mut reading: Option<&str> = None;
        let mut text = String::new();
        for ev in events(doc) {
            match ev {
                Event::Start { name, attrs, empty } => match name {
                    "Fault" if fault.is_none() => {
                        fault = Some(Fault {
                            kind: attr(attrs, "type"),
                            errors: Vec::new(),
                        });
                        if empty {
                            break;
                        }
                    }
                    "Error" if fault.is_some() => {
                        let it = FaultItem {
                            code: attr(attrs, "code").unwrap_or_default().trim().to_string(),
                            message: String::new(),
                            detail: None,
                            element: attr(attrs, "element").filter(|e| !e.is_empty()),
                        };
                        if empty {
                            fault.as_mut()?.errors.push(it);
                        } else {
                            item = Some(it);
                        }
                    }
                    "Message" | "Detail" if item.is_some() && !empty => {
                        reading = Some(name);
                        text.clear();
                    }
                    _ => {}
                },
                Event::Text(t) => {
                    if reading.is_some() {
                        text.push_str(&t);
                    }
                }
                Event::End(name) => match name {
                    "Message" | "Detail" if reading == Some(name) => {
                        if let Some(it) = item.as_mut() {
                            let value = clean(&text);
                            if name == "Message" {
                                it.message = value;
                            } else if !value.is_empty() {
                                it.detail = Some(value);
                            }
                        }
                        reading = None;
                    }
                    "Error" => {
                        if let (Some(mut it), Some(f)) = (item.take(), fault.as_mut()) {
                            if it.code.is_empty() {
                                it.code = code_from_message(&it.message).unwrap_or_default();
                            }
                            f.errors.push(it);
                        }
                    }
                    "Fault" if fault.is_some() => break,
                    _ => {}
                },
            }
        }
        fault
    }
}

/// A text from a body made safe for one log line: whitespace folded and
/// anything that looks like a token replaced.
fn clean(text: &str) -> String {
    redact(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn redact(text: &str) -> String {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "-_+=~".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let mixed =
            run.chars().any(|c| c.is_ascii_digit()) && run.chars().any(|c| c.is_ascii_alphabetic());
        if run.len() >= TOKEN_RUN && mixed {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if is_token_char(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The start of a body, whitespace folded, capped and redacted: for an
/// answer that could not be understood.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_CHARS * 8)]);
    let folded = clean(&text);
    let mut out: String = folded.chars().take(EXCERPT_CHARS).collect();
    if folded.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    if out.is_empty() {
        "(empty body)".into()
    } else {
        out
    }
}

/// What went wrong talking to QuickBooks. Cheap to clone, so one failure
/// can be logged, stored with the job and returned.
#[derive(Debug, Clone, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum QboError {
    // ---- QuickBooks said no ----
    /// 401 or fault 3200: the access token was refused (the client
    /// refreshes once and replays).
    #[error("QuickBooks refused the access token ({message}){}: the agent refreshes it and retries once; if this keeps happening, reconnect QuickBooks", tid_text(.tid))]
    Auth {
        message: String,
        tid: Option<String>,
    },

    /// 403 or fault 3100: the app is not authorised for this company; do
    /// not retry.
    #[error("QuickBooks refused access to this company ({message}){}: the connection is not authorised for it; reconnect QuickBooks as an admin user of the company (retrying will not help)", tid_text(.tid))]
    Forbidden {
        message: String,
        tid: Option<String>,
    },

    /// 429, or fault 3001 (XML body, sometimes with HTTP 403 on older
    /// stacks).
    #[error("QuickBooks is throttling requests to this company (3001: ThrottleExceeded{}){}: the agent waits and retries; if it keeps happening, other apps or agents share the company's 500 requests a minute", retry_after_text(.retry_after), tid_text(.tid))]
    Throttled {
        retry_after: Option<Duration>,
        tid: Option<String>,
    },

    /// 6000, 2500, 610, 4000/4001 and any other fault the request caused:
    /// read `detail`.
    #[error("QuickBooks rejected the request ({}){}{}", validation_text(.code, .message, .detail, .element), code_hint(.code), tid_text(.tid))]
    Validation {
        code: String,
        message: String,
        detail: Option<String>,
        element: Option<String>,
        tid: Option<String>,
    },

    /// 6140: an invoice with this DocNumber is already there. `existing_id`
    /// from Detail's "TxnId=130" when present.
    #[error("QuickBooks already has an invoice with this number (6140; Detail: {detail}){}{}: the invoice was sent before; nothing new was created", existing_text(.existing_id), tid_text(.tid))]
    DuplicateDocument {
        detail: String,
        existing_id: Option<String>,
        tid: Option<String>,
    },

    /// 6240: a customer, vendor or employee already has this name.
    #[error("QuickBooks already has a customer, vendor or employee with this name (6240; Detail: {detail}){}: it may be inactive; look it up including inactive ones, or rename one of them", tid_text(.tid))]
    DuplicateName { detail: String, tid: Option<String> },

    /// 5010: stale SyncToken.
    #[error("QuickBooks refused an update made from an outdated copy (5010 stale object; Detail: {detail}){}: read the object again and reapply the change", tid_text(.tid))]
    StaleObject { detail: String, tid: Option<String> },

    // ---- QuickBooks is unwell or unreachable ----
    /// 500, 502, 503, 504 (and a fault of type SystemFault / code 10000
    /// with 5xx).
    #[error("QuickBooks server error {status} ({message}){}{}: retry later", retry_after_text(.retry_after), tid_text(.tid))]
    Server {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
        tid: Option<String>,
    },

    /// The request never got an answer (connect, timeout, reset).
    #[error(
        "could not reach QuickBooks: {message}; check the internet connection (the agent retries)"
    )]
    Transport { message: String },

    // ---- the answer could not be understood ----
    /// An answer came but could not be understood (not JSON, missing
    /// fields, unexpected status with no fault).
    #[error("could not understand QuickBooks' answer (HTTP {status}: {message}){}", tid_text(.tid))]
    Parse {
        status: u16,
        message: String,
        tid: Option<String>,
    },

    // ---- signing in ----
    /// Signing in to QuickBooks failed (token refresh); `needs_person` =
    /// reconnect needed (invalid_grant, invalid_client, not connected).
    #[error("{message}{}", sign_in_hint(*.needs_person, .retry_after))]
    SignIn {
        message: String,
        needs_person: bool,
        retry_after: Option<Duration>,
    },
}

/// " [intuit_tid X]" for messages, or nothing.
pub(crate) fn tid_text(tid: &Option<String>) -> String {
    match tid {
        Some(t) => format!(" [intuit_tid {t}]"),
        None => String::new(),
    }
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("; retry after {}s", d.as_secs()),
        None => String::new(),
    }
}

fn existing_text(existing: &Option<String>) -> String {
    match existing {
        Some(id) => format!(" (existing invoice Id {id})"),
        None => String::new(),
    }
}

fn sign_in_hint(needs_person: bool, retry_after: &Option<Duration>) -> String {
    if needs_person {
        // The message names the fix (reconnect, or the app's credentials).
        String::new()
    } else {
        format!(
            "; the stored connection is kept and the agent retries{}",
            retry_after_text(retry_after)
        )
    }
}

fn validation_text(
    code: &str,
    message: &str,
    detail: &Option<String>,
    element: &Option<String>,
) -> String {
    FaultItem {
        code: code.to_string(),
        message: message.to_string(),
        detail: detail.clone(),
        element: None,
    }
    .summary()
        + &element
            .as_ref()
            .map(|e| format!("; element {e}"))
            .unwrap_or_default()
}

/// What the codes that come up in practice usually mean.
fn code_hint(code: &str) -> &'static str {
    match strip_zeros(code) {
        "610" => ": the customer, item or account is probably inactive or deleted in QuickBooks",
        "2500" => ": a referenced customer, item, account or tax code does not exist in QuickBooks; check the mapping",
        "4000" | "4001" => ": the query was refused (a bug in the agent; report it with the intuit_tid)",
        _ => "",
    }
}

/// "TxnId=130" (or "TxnId = 130") in a 6140 Detail.
fn txn_id(detail: &str) -> Option<String> {
    let at = find_ci(detail, "txnid")? + "txnid".len();
    let rest = detail[at..].trim_start().strip_prefix('=')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

impl QboError {
    /// From an HTTP answer: status, `Retry-After` (already parsed by the
    /// caller), the `intuit_tid` header and the body. Fault codes decide
    /// first (QuickBooks answers some faults with 200 and throttling with
    /// 403), then the status.
    pub(crate) fn from_response(
        status: u16,
        retry_after: Option<Duration>,
        tid: Option<String>,
        body: &[u8],
    ) -> QboError {
        let fault = parse_fault(body);
        if let Some(err) = fault
            .as_ref()
            .and_then(|f| by_code(f, retry_after, tid.clone()))
        {
            return err;
        }
        let fault_text = fault.as_ref().map(Fault::summary);
        match status {
            429 => QboError::Throttled { retry_after, tid },
            401 => QboError::Auth {
                message: fault_text.unwrap_or_else(|| "HTTP 401".into()),
                tid,
            },
            403 => QboError::Forbidden {
                message: fault_text.unwrap_or_else(|| "HTTP 403".into()),
                tid,
            },
            500..=599 => QboError::Server {
                status,
                message: fault_text.unwrap_or_else(|| excerpt(body)),
                retry_after,
                tid,
            },
            _ => match fault {
                Some(f) => validation(&f, tid),
                None if (200..300).contains(&status) => QboError::Parse {
                    status,
                    message: format!(
                        "an error was expected but the body holds no fault: {}",
                        excerpt(body)
                    ),
                    tid,
                },
                None => QboError::Parse {
                    status,
                    message: format!("no QuickBooks fault in the body: {}", excerpt(body)),
                    tid,
                },
            },
        }
    }

    /// From a batch item's Fault value (no HTTP status of its own).
    pub(crate) fn from_fault(fault: &Fault, tid: Option<String>) -> QboError {
        by_code(fault, None, tid.clone()).unwrap_or_else(|| validation(fault, tid))
    }

    pub(crate) fn intuit_tid(&self) -> Option<&str> {
        match self {
            QboError::Auth { tid, .. }
            | QboError::Forbidden { tid, .. }
            | QboError::Throttled { tid, .. }
            | QboError::Validation { tid, .. }
            | QboError::DuplicateDocument { tid, .. }
            | QboError::DuplicateName { tid, .. }
            | QboError::StaleObject { tid, .. }
            | QboError::Server { tid, .. }
            | QboError::Parse { tid, .. } => tid.as_deref(),
            QboError::Transport { .. } | QboError::SignIn { .. } => None,
        }
    }

    /// True when the same request may succeed later without anyone acting:
    /// throttling, server errors, network failures and a sign-in that
    /// failed for a passing reason.
    pub fn is_transient(&self) -> bool {
        match self {
            QboError::Throttled { .. } | QboError::Server { .. } | QboError::Transport { .. } => {
                true
            }
            QboError::SignIn { needs_person, .. } => !needs_person,
            _ => false,
        }
    }

    /// The wait QuickBooks (or the token endpoint) asked for, if any.
    #[cfg(test)]
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            QboError::Throttled { retry_after, .. }
            | QboError::Server { retry_after, .. }
            | QboError::SignIn { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A stable short name for logs and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            QboError::Auth { .. } => "auth",
            QboError::Forbidden { .. } => "forbidden",
            QboError::Throttled { .. } => "throttled",
            QboError::Validation { .. } => "validation",
            QboError::DuplicateDocument { .. } => "duplicate_document",
            QboError::DuplicateName { .. } => "duplicate_name",
            QboError::StaleObject { .. } => "stale_object",
            QboError::Server { .. } => "server",
            QboError::Transport { .. } => "transport",
            QboError::Parse { .. } => "parse",
            QboError::SignIn { .. } => "sign_in",
        }
    }
}

/// The classification that a fault's codes decide whatever the status.
fn by_code(fault: &Fault, retry_after: Option<Duration>, tid: Option<String>) -> Option<QboError> {
    let item = |code: &str| {
        fault
            .errors
            .iter()
            .find(|e| strip_zeros(&e.code) == code)
            .expect("has_code checked")
    };
    // Detail carries the useful text; fall back to the message.
    let detail_of = |e: &FaultItem| e.detail.clone().unwrap_or_else(|| e.message.clone());
    // Throttling first: older stacks send 3001 with a 403, which must not
    // read as "forbidden".
    if fault.has_code("3001") {
        return Some(QboError::Throttled { retry_after, tid });
    }
    if fault.has_code("3200") {
        return Some(QboError::Auth {
            message: item("3200").summary(),
            tid,
        });
    }
    if fault.has_code("3100") {
        return Some(QboError::Forbidden {
            message: item("3100").summary(),
            tid,
        });
    }
    if fault.has_code("6140") {
        let detail = detail_of(item("6140"));
        return Some(QboError::DuplicateDocument {
            existing_id: txn_id(&detail),
            detail,
            tid,
        });
    }
    if fault.has_code("6240") {
        return Some(QboError::DuplicateName {
            detail: detail_of(item("6240")),
            tid,
        });
    }
    if fault.has_code("5010") {
        return Some(QboError::StaleObject {
            detail: detail_of(item("5010")),
            tid,
        });
    }
    None
}

fn validation(fault: &Fault, tid: Option<String>) -> QboError {
    match fault.errors.first() {
        Some(e) => QboError::Validation {
            code: e.code.clone(),
            message: e.message.clone(),
            detail: e.detail.clone(),
            element: e.element.clone(),
            tid,
        },
        None => QboError::Validation {
            code: String::new(),
            message: fault.summary(),
            detail: None,
            element: None,
            tid,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tid() -> Option<String> {
        Some("1-abc".into())
    }

    #[test]
    fn reads_the_api_fault() {
        let body = br#"{"Fault":{"Error":[{"Message":"A business validation error has occurred while processing your request","Detail":"Business Validation Error: Amount is not equal to UnitPrice * Qty","code":"6000","element":"Line.Amount"}],"type":"ValidationFault"},"time":"2024-01-15T10:00:00.000-08:00"}"#;
        let f = parse_fault(body).unwrap();
        assert_eq!(f.kind.as_deref(), Some("ValidationFault"));
        assert_eq!(f.first_code(), Some("6000"));
        assert_eq!(f.errors[0].element.as_deref(), Some("Line.Amount"));
        let e = QboError::from_response(400, None, tid(), body);
        assert_eq!(e.kind(), "validation");
        assert_eq!(
            e.to_string(),
            "QuickBooks rejected the request (6000: A business validation error has occurred while processing your request; Detail: Business Validation Error: Amount is not equal to UnitPrice * Qty; element Line.Amount) [intuit_tid 1-abc]"
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn reads_the_gateway_fault_and_its_code_from_the_message() {
        let body = br#"{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message=AuthenticationFailed; errorCode=003200; statusCode=401","detail":"Token expired: AB11700000000000000000000000000000000000000000xyz","code":"3200","element":null}],"type":"AUTHENTICATION"},"report":null,"queryResponse":null,"batchItemResponse":[],"attachableResponse":[],"syncErrorResponse":null,"requestId":null,"time":1700000000000,"status":null,"cdcresponse":[]}"#;
        let f = parse_fault(body).unwrap();
        assert_eq!(f.kind.as_deref(), Some("AUTHENTICATION"));
        assert!(f.has_code("3200") && f.has_code("003200"));
        let e = QboError::from_response(401, None, tid(), body);
        assert!(matches!(e, QboError::Auth { .. }), "{e:?}");
        let text = e.to_string();
        assert!(!text.contains("AB1170000"), "token leaked: {text}");
        assert!(
            text.contains("[redacted]") && text.contains("3200"),
            "{text}"
        );

        // No code field: taken from the message, leading zeros stripped.
        let body = br#"{"fault":{"error":[{"message":"message=AuthorizationFailed; errorCode=003100; statusCode=403","detail":"Authorization failed"}],"type":"AUTHORIZATION"}}"#;
        let f = parse_fault(body).unwrap();
        assert_eq!(f.first_code(), Some("3100"));
        let e = QboError::from_response(403, None, None, body);
        assert_eq!(e.kind(), "forbidden");
    }

    #[test]
    fn reads_xml_faults() {
        let body = br#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="2024-01-15T10:00:00.000-08:00">
  <Fault type="SERVICE">
    <Error code="3001">
      <Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>
      <Detail>The request limit was reached &amp; more &lt;than&gt; &quot;10&quot; &apos;per&apos; second&#33;</Detail>
    </Error>
  </Fault>
</IntuitResponse>"#;
        let f = parse_fault(body).unwrap();
        assert_eq!(f.kind.as_deref(), Some("SERVICE"));
        assert_eq!(f.first_code(), Some("3001"));
        assert_eq!(
            f.errors[0].detail.as_deref(),
            Some("The request limit was reached & more <than> \"10\" 'per' second!")
        );
        for status in [429, 403, 200] {
            let e = QboError::from_response(status, None, tid(), body);
            assert!(matches!(e, QboError::Throttled { .. }), "{status}: {e:?}");
            assert!(e.is_transient());
        }

        // No wrapper, no code attribute, a prefixed tag and CDATA.
        let body = b"  <ns2:Fault type='SystemFault'><ns2:Error><Message><![CDATA[message=Boom; errorCode=0010000]]></Message></ns2:Error></ns2:Fault>";
        let f = parse_fault(body).unwrap();
        assert_eq!(f.kind.as_deref(), Some("SystemFault"));
        assert_eq!(f.first_code(), Some("10000"));
        assert_eq!(f.errors[0].message, "message=Boom; errorCode=0010000");
        assert_eq!(f.errors[0].detail, None);
        let e = QboError::from_response(503, Some(Duration::from_secs(9)), tid(), body);
        assert!(matches!(e, QboError::Server { status: 503, .. }), "{e:?}");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(9)));

        assert_eq!(parse_fault(b"<html><body>Bad gateway</body></html>"), None);
    }

    #[test]
    fn from_value_accepts_the_inner_object() {
        let inner = json!({"Error": [{"Message": "Duplicate Document Number Error", "Detail": "Duplicate Document Number Error : You must specify a different number. This number has already been used. DocNumber=1001 is assigned to TxnType=Invoice with TxnId=130", "code": "6140", "element": ""}], "type": "ValidationFault"});
        let f = Fault::from_value(&inner).unwrap();
        assert_eq!(f.first_code(), Some("6140"));
        assert_eq!(f.errors[0].element, None);
        let e = QboError::from_fault(&f, tid());
        match &e {
            QboError::DuplicateDocument { existing_id, .. } => {
                assert_eq!(existing_id.as_deref(), Some("130"))
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("existing invoice Id 130"));
        assert_eq!(e.intuit_tid(), Some("1-abc"));
        assert_eq!(Fault::from_value(&json!({"Invoice": {"Id": "1"}})), None);
        assert_eq!(Fault::from_value(&json!([1])), None);
    }

    #[test]
    fn codes_decide_over_status() {
        let fault = |code: &str, detail: &str| {
            format!(
                r#"{{"Fault":{{"Error":[{{"Message":"m","Detail":"{detail}","code":"{code}"}}],"type":"ValidationFault"}}}}"#
            )
        };
        let cases = [
            ("6240", 400, "duplicate_name"),
            ("5010", 400, "stale_object"),
            ("6140", 200, "duplicate_document"),
            ("3200", 200, "auth"),
            ("3100", 400, "forbidden"),
            ("610", 400, "validation"),
            ("2500", 200, "validation"),
            ("4001", 400, "validation"),
        ];
        for (code, status, kind) in cases {
            let e = QboError::from_response(status, None, None, fault(code, "d").as_bytes());
            assert_eq!(e.kind(), kind, "{code} with {status}");
        }
        let e = QboError::from_response(400, None, None, fault("6140", "no id here").as_bytes());
        assert!(matches!(
            e,
            QboError::DuplicateDocument {
                existing_id: None,
                ..
            }
        ));
        let e = QboError::from_response(
            400,
            None,
            None,
            fault("610", "Customer 5 inactive").as_bytes(),
        );
        assert!(e.to_string().contains("inactive or deleted"), "{e}");
    }

    #[test]
    fn status_decides_without_a_fault() {
        let e = QboError::from_response(429, Some(Duration::from_secs(3)), tid(), b"");
        assert!(matches!(
            e,
            QboError::Throttled {
                retry_after: Some(_),
                ..
            }
        ));
        assert_eq!(QboError::from_response(401, None, None, b"").kind(), "auth");
        assert_eq!(
            QboError::from_response(403, None, None, b"nope").kind(),
            "forbidden"
        );
        let e = QboError::from_response(502, None, tid(), b"<html>Bad Gateway</html>");
        assert!(matches!(e, QboError::Server { status: 502, .. }));
        assert!(e.is_transient());
        assert!(e.to_string().contains("Bad Gateway"));

        let html = format!("<html>{}</html>", "x".repeat(5000));
        let e = QboError::from_response(404, None, tid(), html.as_bytes());
        match &e {
            QboError::Parse {
                status, message, ..
            } => {
                assert_eq!(*status, 404);
                assert!(message.chars().count() <= EXCERPT_CHARS + 60, "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.is_transient());
        let e = QboError::from_response(200, None, None, br#"{"Invoice":{}}"#);
        assert_eq!(e.kind(), "parse");
    }

    #[test]
    fn a_fault_with_no_errors_still_classifies() {
        let e =
            QboError::from_response(400, None, None, br#"{"Fault":{"type":"ValidationFault"}}"#);
        assert_eq!(e.kind(), "validation");
        assert!(e.to_string().contains("ValidationFault"), "{e}");
    }

    #[test]
    fn transience_and_names() {
        let sign_in = |needs_person| QboError::SignIn {
            message: "invalid_grant".into(),
            needs_person,
            retry_after: None,
        };
        assert!(!sign_in(true).is_transient());
        assert!(sign_in(false).is_transient());
        // The message itself names the fix; nothing is bolted on.
        assert_eq!(sign_in(true).to_string(), "invalid_grant");
        assert!(sign_in(false).to_string().contains("retries"));
        let t = QboError::Transport {
            message: "connection refused".into(),
        };
        assert!(t.is_transient());
        assert_eq!(t.kind(), "transport");
        assert_eq!(t.intuit_tid(), None);
    }

    #[test]
    fn messages_are_one_line() {
        let body = b"<Fault type=\"SERVICE\"><Error code=\"3001\"><Message>line one\n   line two</Message></Error></Fault>";
        let f = parse_fault(body).unwrap();
        assert_eq!(f.errors[0].message, "line one line two");
        let e = QboError::from_response(500, None, None, b"a\nb\r\nc");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn redaction_keeps_ids() {
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(redact(uuid), uuid);
        assert_eq!(
            redact("realm 9130354757139296 ok"),
            "realm 9130354757139296 ok"
        );
        let jwt = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0..abc";
        assert!(redact(&format!("Bearer {jwt}")).starts_with("Bearer [redacted]"));
    }
}
