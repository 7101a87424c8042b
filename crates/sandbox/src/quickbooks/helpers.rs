//! Formats (times, amounts, references) and small request helpers.

use super::*;

/// The `time` of an answer: RFC 3339 with milliseconds and offset.
pub(super) fn time_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// `MetaData` times: RFC 3339 to the second, with offset.
pub(super) fn meta_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

pub(super) fn meta_now() -> String {
    meta_time(Utc::now())
}

/// A JSON amount as a decimal: numbers (through their shortest decimal
/// form, so 0.1 is 0.1) or numeric strings.
pub(super) fn dec(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => {
            let s = n.to_string();
            Decimal::from_str(&s)
                .or_else(|_| Decimal::from_scientific(&s))
                .ok()
        }
        Value::String(s) => Decimal::from_str(s.trim()).ok(),
        _ => None,
    }
}

/// A decimal as a JSON number (QuickBooks writes amounts as numbers).
pub(super) fn num(d: Decimal) -> Value {
    d.to_f64()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

pub(super) fn round2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// A reference's `value` (`{"value": "1"}`), as a string even when the
/// client sent a number.
pub(super) fn ref_value(v: Option<&Value>) -> Option<String> {
    match v?.get("value")? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn str_field<'a>(m: &'a Row, name: &str) -> Option<&'a str> {
    m.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub(super) fn header_str(h: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

pub(super) fn accepts_json(h: &HeaderMap) -> bool {
    header_str(h, header::ACCEPT)
        .to_ascii_lowercase()
        .contains("application/json")
}

/// Percent-encoding of a query parameter value (RFC 3986 unreserved kept).
pub(super) fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(super) fn query_params(uri: &axum::http::Uri) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}
