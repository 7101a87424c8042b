//! Checks of single values: URLs (no credentials, https unless local),
//! host names, the local API key, email, the legacy token's expiry.

use std::net::IpAddr;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use reqwest::Url;

/// Checks the backend address: http(s), a host, no query; plain http only
/// to this machine unless the operator opts in.
pub(crate) fn parse_base_url(text: &str, allow_insecure_http: bool) -> Result<Url, String> {
    // Messages quote the text without any credentials it carries.
    let shown = without_userinfo(text);
    let parsed = Url::parse(text.trim());
    let text = shown.as_str();
    let mut url = parsed.map_err(|e| {
        format!("\"{text}\" is not a URL ({e}); use e.g. https://invoices.example.com")
    })?;
    check_no_userinfo(&url, text)?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "\"{text}\" must start with https:// (or http:// for a backend on this machine)"
        ));
    }
    let Some(host) = url.host_str().map(str::to_string) else {
        return Err(format!("\"{text}\" has no host name"));
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "\"{text}\" must not carry a query or fragment: give only the address of the backend"
        ));
    }
    if url.scheme() == "http" && !is_loopback_host(&host) && !allow_insecure_http {
        return Err(format!(
            "\"{text}\" uses plain http:// to another machine, so the password and tokens would \
             cross the network unencrypted; use https://, or set \"allow_insecure_http\": true \
             if this network is trusted"
        ));
    }
    // Paths are joined below the base: keep exactly one trailing slash.
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{path}/"));
    Ok(url)
}

/// A URL must not carry a user name or password (`https://user:pw@host`):
/// reqwest would send them, and the URL is printed by `check-config`, the
/// status page and the logs. Credentials have keys of their own.
pub(super) fn check_no_userinfo(url: &Url, shown: &str) -> Result<(), String> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    Err(format!(
        "\"{shown}\" carries a user name or password (the part before @): remove it; credentials \
         in a URL end up in logs and on screens. The backend is signed in with email and \
         `pos-connector --setup-password`, QuickBooks with quickbooks.client_id and \
         POS_CONNECTOR_QB_CLIENT_SECRET"
    ))
}

/// `text` with anything between `scheme://` and the host's `@` replaced
/// by `***`, for quoting a URL (even one that does not parse) in a message.
pub(crate) fn without_userinfo(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    let rest = &text[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &rest[at..]),
        None => text.to_string(),
    }
}

/// The shortest `local_api.api_key` accepted.
pub(crate) const MIN_LOCAL_API_KEY_CHARS: usize = 16;
/// The placeholder of config.example.json (published, so no key at all).
const EXAMPLE_LOCAL_API_KEY: &str = "change-me-to-a-long-random-key";

/// Why a local API key is not good enough, if it is not. Never repeats it.
pub(super) fn local_api_key_problem(key: &str) -> Option<String> {
    const HOW: &str = "set a long random key, e.g. the output of `openssl rand -hex 24` (Linux) \
                       or `[guid]::NewGuid().ToString(\"N\")` (PowerShell)";
    let chars = key.chars().count();
    if chars < MIN_LOCAL_API_KEY_CHARS {
        return Some(format!(
            "is {chars} characters long; it must have at least {MIN_LOCAL_API_KEY_CHARS} so that \
             it cannot be guessed (it guards the sales intake and the status page): {HOW}"
        ));
    }
    (key == EXAMPLE_LOCAL_API_KEY).then(|| {
        format!("is the placeholder from config.example.json, which anyone can read: {HOW}")
    })
}

/// A DNS name or an IP address, nothing more (no port, path or scheme).
pub(super) fn is_host_name(h: &str) -> bool {
    let h = h.trim_end_matches('.');
    !h.is_empty()
        && h.len() <= 253
        && (h.parse::<IpAddr>().is_ok()
            || h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

pub(super) fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !s.chars().any(char::is_whitespace)
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// The old connector wrote `datetime.now().isoformat()`: a naive local
/// time. An offset or `Z`, when present, is honoured.
pub(crate) fn parse_legacy_expiry(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Local
                .from_local_datetime(&naive)
                .earliest()
                .map(|dt| dt.with_timezone(&Utc));
        }
    }
    None
}
