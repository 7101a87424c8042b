//! Errors of the Laravel backend, in three families that call for different
//! actions: the server said no (fix the data, the account or the backend),
//! the network failed (retry later), or the answer could not be understood
//! (a proxy or a misconfigured server; retry, and look at the excerpt).
//! Every message names the problem and the fix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use crate::retry::{RetryHint, Retryable};
use crate::token::TokenError;

/// How much of a response body goes into errors and logs.
pub(crate) const EXCERPT_CHARS: usize = 300;

/// Why a call to the Laravel backend failed (refused, unreachable, unreadable), with the fix in each message.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum ApiError {
    // ---- the server said no ----
    #[error("the backend refused the email/password for {email} (401 Invalid credentials): check \"email\" in config.json and store the right password with `pos-connector --setup-password`")]
    InvalidCredentials { email: String },

    #[error("the backend answered 401 to {method} {path} again right after a fresh sign-in: the vendor's tokens are being revoked or the backend's auth is misconfigured; ask the backend administrator")]
    Unauthenticated { method: String, path: String },

    #[error("the vendor account is disabled (403 on {method} {path}: \"{message}\"): ask the backend administrator to re-enable it; retrying will not help")]
    AccountDisabled {
        method: String,
        path: String,
        message: String,
    },

    #[error("the backend refused {method} {path} (403: \"{message}\")")]
    Forbidden {
        method: String,
        path: String,
        message: String,
    },

    #[error("not found (404 on {method} {path}): {message}")]
    NotFound {
        method: String,
        path: String,
        message: String,
    },

    #[error("invoice number {number} already exists in the backend (422 \"The invoice number has already been taken.\")")]
    DuplicateInvoiceNumber { number: String },

    #[error("the backend refused the data (422): {}", validation_summary(.message, .errors))]
    Validation {
        message: String,
        errors: BTreeMap<String, Vec<String>>,
    },

    #[error("the backend could not submit the invoice to JoFotara (500: \"{message}\"); this usually means the organisation has no JoFotara integration configured in the backend: ask the backend administrator (retrying will not fix it soon)")]
    SubmitUnavailable { message: String },

    #[error("the backend is throttling requests (429 Too Many Attempts){}", retry_after_text(.retry_after))]
    RateLimited { retry_after: Option<Duration> },

    #[error("server error {status} on {method} {path}: {excerpt}")]
    Server {
        method: String,
        path: String,
        status: u16,
        /// The JSON `message`, when the body was JSON.
        message: Option<String>,
        excerpt: String,
        /// A 503's `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },

    #[error("unexpected answer {status} to {method} {path}{}: {excerpt}", location_hint(.location))]
    Unexpected {
        method: String,
        path: String,
        status: u16,
        location: Option<String>,
        excerpt: String,
    },

    // ---- the network failed ----
    #[error("could not reach the backend ({method} {path}): {detail}")]
    Transport {
        method: String,
        path: String,
        detail: String,
        /// The request may have reached the backend (a timeout or a
        /// connection dropped mid-answer), so its effect is unknown.
        maybe_sent: bool,
    },

    // ---- the answer could not be understood ----
    #[error(
        "could not understand the answer to {method} {path}: {detail} (body starts: {excerpt})"
    )]
    Parse {
        method: String,
        path: String,
        detail: String,
        excerpt: String,
    },

    #[error("{method} {path} did not return a {expected} (Content-Type {content_type}; body starts: {excerpt}); nothing was saved")]
    NotADocument {
        method: String,
        path: String,
        expected: &'static str,
        content_type: String,
        excerpt: String,
    },

    // ---- signing in ----
    #[error(transparent)]
    Token(#[from] TokenError),

    // ---- local files ----
    #[error("cannot write {}: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn validation_summary(message: &str, errors: &BTreeMap<String, Vec<String>>) -> String {
    if errors.is_empty() {
        return message.to_string();
    }
    errors
        .iter()
        .map(|(field, texts)| format!("{field}: {}", texts.join(" ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("; retry after {}s", d.as_secs()),
        None => String::new(),
    }
}

fn location_hint(location: &Option<String>) -> String {
    match location {
        Some(l) => format!(
            " (redirect to {l}: base_url probably points at the web site rather than the API, or a proxy drops the Accept: application/json header)"
        ),
        None => String::new(),
    }
}

impl ApiError {
    /// True when a person must act before this can succeed.
    pub fn needs_person(&self) -> bool {
        matches!(
            self,
            ApiError::InvalidCredentials { .. }
                | ApiError::Unauthenticated { .. }
                | ApiError::AccountDisabled { .. }
                | ApiError::Token(TokenError::NeedsPerson { .. })
        )
    }

    /// True when the request may have taken effect although we saw no
    /// success (the answer was lost): the next attempt must check first.
    pub(crate) fn outcome_unknown(&self) -> bool {
        match self {
            ApiError::Transport { maybe_sent, .. } => *maybe_sent,
            ApiError::Server { .. } | ApiError::Parse { .. } => true,
            _ => false,
        }
    }

    /// True when the request may still be running at the backend: the
    /// client gave up or lost the connection (timeout, reset), or a proxy
    /// answered for the application (502, 504: PHP-FPM behind nginx goes on
    /// working after nginx has given up). A status read now cannot tell
    /// "not done" from "not finished". Other failed answers came from the
    /// application itself, so its request is over.
    pub fn may_still_be_running(&self) -> bool {
        match self {
            ApiError::Transport { maybe_sent, .. } => *maybe_sent,
            ApiError::Server { status, .. } => matches!(status, 502 | 504),
            _ => false,
        }
    }

    /// The CLI's exit code: 3 needs a person, 1 any other failure.
    pub fn exit_code(&self) -> u8 {
        if self.needs_person() {
            3
        } else {
            1
        }
    }
}

impl Retryable for ApiError {
    fn retry_hint(&self) -> RetryHint {
        match self {
            ApiError::Transport { .. } => RetryHint::After(None),
            ApiError::Server { retry_after, .. } => RetryHint::After(*retry_after),
            ApiError::RateLimited { retry_after } => RetryHint::After(*retry_after),
            ApiError::Token(TokenError::Unavailable { retry_after, .. }) => {
                RetryHint::After(*retry_after)
            }
            _ => RetryHint::Never,
        }
    }
}

/// Text of a body, whitespace folded and capped, safe to log.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_CHARS * 4)]);
    let folded: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = folded.chars().take(EXCERPT_CHARS).collect();
    if folded.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    if out.is_empty() {
        "(empty)".into()
    } else {
        out
    }
}

/// The first `max` characters of `text`, with "..." when cut: for quoting
/// a value or an error in a one-line message.
pub(crate) fn first_chars(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// A reqwest failure, with the chain of causes ("connection refused") that
/// reqwest's own message leaves out.
pub(crate) fn transport(method: &str, path: &str, err: &reqwest::Error) -> ApiError {
    let detail = describe_transport(err);
    tracing::warn!(method, path, error = %detail, "backend not reached");
    ApiError::Transport {
        method: method.to_string(),
        path: path.to_string(),
        detail,
        maybe_sent: !err.is_connect(),
    }
}

pub(crate) use crate::call_stats::describe_transport;

/// Turns a non-success answer into the matching error. `status` is not
/// 2xx; `body` is the (capped) body already read.
pub(crate) fn classify(
    method: &str,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let message = json
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (m, p) = (method.to_string(), path.to_string());
    let err = match status.as_u16() {
        401 => ApiError::Unauthenticated { method: m, path: p },
        403 => {
            let message = message.unwrap_or_else(|| excerpt(body));
            if message.to_ascii_lowercase().contains("disabled") {
                ApiError::AccountDisabled {
                    method: m,
                    path: p,
                    message,
                }
            } else {
                ApiError::Forbidden {
                    method: m,
                    path: p,
                    message,
                }
            }
        }
        404 => ApiError::NotFound {
            method: m,
            path: p,
            message: message.unwrap_or_else(|| excerpt(body)),
        },
        422 => {
            let errors: BTreeMap<String, Vec<String>> = json
                .as_ref()
                .and_then(|v| v.get("errors"))
                .and_then(|e| serde_json::from_value(e.clone()).ok())
                .unwrap_or_default();
            let taken = errors
                .get("invoice_number")
                .is_some_and(|t| t.iter().any(|s| s.contains("already been taken")));
            if taken {
                ApiError::DuplicateInvoiceNumber {
                    number: String::new(),
                }
            } else {
                ApiError::Validation {
                    message: message.unwrap_or_else(|| excerpt(body)),
                    errors,
                }
            }
        }
        429 => ApiError::RateLimited {
            retry_after: parse_retry_after(headers),
        },
        s if s >= 500 => ApiError::Server {
            method: m,
            path: p,
            status: s,
            message,
            excerpt: excerpt(body),
            retry_after: parse_retry_after(headers),
        },
        s => ApiError::Unexpected {
            method: m,
            path: p,
            status: s,
            location: headers
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string),
            excerpt: excerpt(body),
        },
    };
    tracing::warn!(method, path, status = status.as_u16(), body = %excerpt(body), "backend answered an error");
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_capped_and_folded() {
        let html = format!("<html>\n  <body>{}</body></html>", "x".repeat(5000));
        let e = excerpt(html.as_bytes());
        assert!(e.chars().count() <= EXCERPT_CHARS + 1);
        assert!(e.starts_with("<html> <body>"));
    }

    #[test]
    fn duplicate_number_is_recognised() {
        let body = br#"{"message":"The invoice number has already been taken.","errors":{"invoice_number":["The invoice number has already been taken."]}}"#;
        let e = classify(
            "POST",
            "/api/invoices",
            StatusCode::UNPROCESSABLE_ENTITY,
            &HeaderMap::new(),
            body,
        );
        assert!(matches!(e, ApiError::DuplicateInvoiceNumber { .. }));
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        let e = classify("GET", "/x", StatusCode::TOO_MANY_REQUESTS, &h, b"{}");
        assert_eq!(
            e.retry_hint(),
            RetryHint::After(Some(Duration::from_secs(7)))
        );
    }
}
