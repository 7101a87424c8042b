//! `GET /metrics`: Prometheus' text format (version 0.0.4), written by
//! hand: a dozen families do not need a metrics library.
//!
//! Everything is read when scraped, from the parts that already keep it:
//! the outbox (sales by state, the oldest pending sale), each backend's
//! `CallStats` (calls by route and status) and token keeper (refreshes by
//! outcome). Nothing is counted twice.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::api::{error, text, LocalApi, PROMETHEUS_TEXT};
use crate::call_stats::CallStats;
use crate::quickbooks::limiter::LimiterStatus;
use crate::token::KeeperStatus;

/// One metric family: its header, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{name}");
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) async fn metrics(State(api): State<LocalApi>) -> Response {
    let now = api.now();
    let read = api
        .outbox()
        .call(|o| Ok((o.queue_stats()?, o.qbo_counts()?)))
        .await;
    let (stats, pushes) = match read {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the outbox cannot be read: {e}"),
            )
        }
    };
    let mut out = String::new();

    let mut f = Family::new(
        &mut out,
        "pos_connector_build_info",
        "gauge",
        "The agent's version (always 1).",
    );
    f.sample(
        "pos_connector_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    let mut f = Family::new(
        &mut out,
        "pos_connector_uptime_seconds",
        "gauge",
        "Seconds since the service started.",
    );
    f.sample(
        "pos_connector_uptime_seconds",
        &[],
        (now - api.started_at()).num_seconds().max(0),
    );

    let mut f = Family::new(
        &mut out,
        "pos_connector_sales",
        "gauge",
        "Sales in the outbox by state.",
    );
    for (state, n) in &stats.counts {
        f.sample("pos_connector_sales", &[("state", state)], n);
    }
    let mut f = Family::new(
        &mut out,
        "pos_connector_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest sale not yet done nor parked (0 when none).",
    );
    let age = stats
        .oldest_pending_since
        .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    f.sample("pos_connector_queue_oldest_age_seconds", &[], age);
    if let Some(t) = stats.last_success_at {
        let mut f = Family::new(
            &mut out,
            "pos_connector_last_success_timestamp_seconds",
            "gauge",
            "When a step last succeeded at the invoicing backend (Unix time).",
        );
        f.sample(
            "pos_connector_last_success_timestamp_seconds",
            &[],
            t.timestamp(),
        );
    }
    if api.qbo_client().is_some() {
        let mut f = Family::new(
            &mut out,
            "pos_connector_quickbooks_pushes",
            "gauge",
            "QuickBooks pushes by state.",
        );
        for (state, n) in &pushes {
            f.sample("pos_connector_quickbooks_pushes", &[("state", state)], n);
        }
    }
    if let Some(c) = api.qbo_client() {
        quickbooks_limiter(&mut out, &c.limiter().status());
    }

    let backends: Vec<(&CallStats, KeeperStatus)> = std::iter::once((
        api.laravel().stats().as_ref(),
        api.laravel().keeper().status(),
    ))
    .chain(
        api.qbo_client()
            .map(|c| (c.stats().as_ref(), c.keeper().status())),
    )
    .collect();

    let mut f = Family::new(
        &mut out,
        "pos_connector_backend_calls_total",
        "counter",
        "HTTP calls to the backends by route and status (network_error: no answer).",
    );
    for (stats, _) in &backends {
        for c in stats.calls() {
            f.sample(
                "pos_connector_backend_calls_total",
                &[
                    ("backend", stats.backend()),
                    ("route", &c.route),
                    ("status", &c.status),
                ],
                c.count,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "pos_connector_backend_up",
        "gauge",
        "1 when the backend answered the last call, 0 when not (absent before any call).",
    );
    for (stats, _) in &backends {
        if let Some(r) = stats.reachability() {
            f.sample(
                "pos_connector_backend_up",
                &[("backend", stats.backend())],
                u8::from(r.reachable),
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "pos_connector_token_refreshes_total",
        "counter",
        "Token refreshes by backend and outcome since the service started.",
    );
    for (stats, k) in &backends {
        for (outcome, n) in [("ok", k.refreshes_ok), ("failed", k.refreshes_failed)] {
            f.sample(
                "pos_connector_token_refreshes_total",
                &[("backend", stats.backend()), ("outcome", outcome)],
                n,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "pos_connector_token_expiry_timestamp_seconds",
        "gauge",
        "When the current token expires (Unix time).",
    );
    for (stats, k) in &backends {
        if let Some(exp) = k.expires_at {
            f.sample(
                "pos_connector_token_expiry_timestamp_seconds",
                &[("backend", stats.backend())],
                exp.timestamp(),
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "pos_connector_needs_person",
        "gauge",
        "1 when only a person can fix the backend's sign-in or connection.",
    );
    for (stats, k) in &backends {
        f.sample(
            "pos_connector_needs_person",
            &[("backend", stats.backend())],
            u8::from(k.needs_person.is_some()),
        );
    }
    text(PROMETHEUS_TEXT, out)
}

/// The QuickBooks limiter: this agent's learned share of the company's
/// limits and the 429s that taught it.
fn quickbooks_limiter(out: &mut String, st: &LimiterStatus) {
    let windows = [
        ("second", st.per_second, st.per_second_limit),
        ("minute", st.per_minute, st.per_minute_limit),
        (
            "batch_minute",
            st.batch_per_minute,
            st.batch_per_minute_limit,
        ),
    ];
    let mut f = Family::new(
        out,
        "pos_connector_quickbooks_rate_budget",
        "gauge",
        "Requests this agent allows itself per window now (learned from 429s when other tills share the company).",
    );
    for (window, budget, _) in windows {
        f.sample(
            "pos_connector_quickbooks_rate_budget",
            &[("window", window)],
            budget,
        );
    }
    let mut f = Family::new(
        out,
        "pos_connector_quickbooks_rate_limit",
        "gauge",
        "Intuit's published limit per company and window.",
    );
    for (window, _, limit) in windows {
        f.sample(
            "pos_connector_quickbooks_rate_limit",
            &[("window", window)],
            limit,
        );
    }
    let mut f = Family::new(
        out,
        "pos_connector_quickbooks_rate_share",
        "gauge",
        "This agent's budget as a fraction of the limits (1 alone on the company).",
    );
    f.sample("pos_connector_quickbooks_rate_share", &[], st.share);
    let mut f = Family::new(
        out,
        "pos_connector_quickbooks_throttled_total",
        "counter",
        "429 (throttled) answers from QuickBooks since the service started.",
    );
    f.sample(
        "pos_connector_quickbooks_throttled_total",
        &[],
        st.throttled,
    );
    let mut f = Family::new(
        out,
        "pos_connector_quickbooks_paused_seconds",
        "gauge",
        "Seconds left of the pause after a 429 (0 when none).",
    );
    f.sample(
        "pos_connector_quickbooks_paused_seconds",
        &[],
        st.paused_ms as f64 / 1000.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        let mut f = Family::new(&mut out, "m", "counter", "help");
        f.sample("m", &[("route", "GET /a\"b\\c\nd")], 3);
        assert!(
            out.contains("m{route=\"GET /a\\\"b\\\\c\\nd\"} 3\n"),
            "{out}"
        );
        assert!(out.starts_with("# HELP m help\n# TYPE m counter\n"));
    }
}
