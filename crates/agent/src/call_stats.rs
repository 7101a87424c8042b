//! What the agent has seen of a backend: calls by route and status (for
//! `/metrics`), and whether the backend is reachable and since when (for
//! the status page and `pos-connector status`).
//!
//! One [`CallStats`] per backend, shared by everything that calls it (the
//! Laravel client and its sign-in; the QuickBooks client and its token
//! endpoint). Written on every answer, read when someone looks; never
//! holds a secret (routes are templated, ids and queries are dropped).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The status label of a call that got no HTTP answer.
pub(crate) const NO_ANSWER: &str = "network_error";

#[derive(Debug)]
pub(crate) struct CallStats {
    backend: &'static str,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: BTreeMap<(String, String), u64>,
    reach: Option<Reachability>,
}

/// Whether the backend answers. A 502/503/504 counts as not reachable:
/// that is a proxy or PHP-FPM saying the application is not there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Reachability {
    pub(crate) reachable: bool,
    /// When it became (un)reachable, as far as this process has seen.
    pub(crate) since: DateTime<Utc>,
    /// The last call, answered or not.
    pub(crate) last_call_at: DateTime<Utc>,
    /// Why the last failed call failed, while unreachable.
    pub(crate) last_error: Option<String>,
}

/// One row of the call counters.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct CallCount {
    pub(crate) route: String,
    pub(crate) status: String,
    pub(crate) count: u64,
}

impl CallStats {
    pub(crate) fn new(backend: &'static str) -> Arc<CallStats> {
        Arc::new(CallStats {
            backend,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub(crate) fn backend(&self) -> &'static str {
        self.backend
    }

    /// Records the outcome of sending a request and hands it back as it
    /// was, so call sites stay one expression.
    pub(crate) fn observe(
        &self,
        method: &str,
        path: &str,
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        match &sent {
            Ok(resp) => self.answered(method, path, resp.status().as_u16()),
            Err(e) => self.not_answered(method, path, &describe_transport(e)),
        }
        sent
    }

    pub(crate) fn answered(&self, method: &str, path: &str, status: u16) {
        let gateway = matches!(status, 502..=504);
        let error = gateway.then(|| format!("HTTP {status} from {}", route_label(method, path)));
        self.record(method, path, status.to_string(), !gateway, error);
    }

    pub(crate) fn not_answered(&self, method: &str, path: &str, why: &str) {
        self.record(
            method,
            path,
            NO_ANSWER.to_string(),
            false,
            Some(why.to_string()),
        );
    }

    fn record(&self, method: &str, path: &str, status: String, ok: bool, error: Option<String>) {
        let now = Utc::now();
        let mut inner = self.inner.lock().expect("call stats lock");
        *inner
            .calls
            .entry((route_label(method, path), status))
            .or_default() += 1;
        let since = match &inner.reach {
            Some(r) if r.reachable == ok => r.since,
            Some(_) => {
                if ok {
                    tracing::info!(backend = self.backend, "backend reachable again");
                }
                now
            }
            None => now,
        };
        inner.reach = Some(Reachability {
            reachable: ok,
            since,
            last_call_at: now,
            last_error: if ok { None } else { error },
        });
    }

    pub(crate) fn calls(&self) -> Vec<CallCount> {
        let inner = self.inner.lock().expect("call stats lock");
        inner
            .calls
            .iter()
            .map(|((route, status), count)| CallCount {
                route: route.clone(),
                status: status.clone(),
                count: *count,
            })
            .collect()
    }

    /// `None` until the first call.
    pub(crate) fn reachability(&self) -> Option<Reachability> {
        self.inner.lock().expect("call stats lock").reach.clone()
    }
}

/// `POST /api/invoices/17/submit` -> `POST /api/invoices/{id}/submit`;
/// QuickBooks' `/v3/company/123/query?query=...` -> `GET
/// /v3/company/{id}/query`. Numeric segments become `{id}` and the query
/// string is dropped, so the label set stays small and carries no data.
pub(crate) fn route_label(method: &str, path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    // A full URL: keep only its path.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => path,
    };
    let segments: Vec<&str> = path
        .split('/')
        .map(|s| {
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
                "{id}"
            } else {
                s
            }
        })
        .collect();
    format!("{method} {}", segments.join("/"))
}

/// What went wrong on the wire, causes included (for any backend).
pub(crate) fn describe_transport(err: &reqwest::Error) -> String {
    let mut detail = if err.is_timeout() {
        "timed out (request_timeout_secs)".to_string()
    } else if err.is_connect() {
        "connection failed".to_string()
    } else {
        "connection lost".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templated_without_ids_or_queries() {
        assert_eq!(
            route_label("POST", "/api/invoices/17/submit"),
            "POST /api/invoices/{id}/submit"
        );
        assert_eq!(
            route_label("GET", "/api/invoices/status/9"),
            "GET /api/invoices/status/{id}"
        );
        assert_eq!(
            route_label(
                "GET",
                "https://q.example/v3/company/4620816365/query?query=select"
            ),
            "GET /v3/company/{id}/query"
        );
        assert_eq!(route_label("POST", "/api/invoices"), "POST /api/invoices");
    }

    #[test]
    fn counts_and_reachability_follow_the_answers() {
        let s = CallStats::new("laravel");
        assert_eq!(s.reachability(), None);
        s.answered("POST", "/api/invoices", 201);
        s.answered("POST", "/api/invoices", 201);
        s.answered("GET", "/api/invoices/status/3", 404);
        let r = s.reachability().unwrap();
        assert!(r.reachable);
        let first_since = r.since;

        s.not_answered("POST", "/api/invoices/3/submit", "connection refused");
        let r = s.reachability().unwrap();
        assert!(!r.reachable);
        assert!(r.since >= first_since);
        assert_eq!(r.last_error.as_deref(), Some("connection refused"));
        s.answered("GET", "/api/vendors/profile", 503);
        let r = s.reachability().unwrap();
        assert!(!r.reachable, "a 503 is the application missing");
        assert!(r.last_error.unwrap().contains("HTTP 503"));
        s.answered("GET", "/api/vendors/profile", 200);
        assert!(s.reachability().unwrap().reachable);

        let calls = s.calls();
        let created = calls
            .iter()
            .find(|c| c.route == "POST /api/invoices" && c.status == "201")
            .unwrap();
        assert_eq!(created.count, 2);
        assert!(calls
            .iter()
            .any(|c| c.route == "POST /api/invoices/{id}/submit" && c.status == NO_ANSWER));
    }
}
