//! `pos-connector test-token-refresh`: the operator's check of the token
//! lifecycle against the configured backend. Each scenario prints one
//! PASS/FAIL line; the command succeeds only if all pass. Nothing is left
//! behind in the backend unless `--create-invoice` asks for a round trip.

use std::path::Path;

use reqwest::Method;
use serde::Serialize;

use crate::laravel::model::NewInvoice;
use crate::laravel::{ApiError, CreateOutcome, DocumentKind, LaravelClient};

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CheckResult {
    pub(crate) name: &'static str,
    pub(crate) passed: bool,
    pub(crate) detail: String,
    /// A failure that a person must fix (wrong password, disabled account).
    #[serde(skip)]
    pub(crate) needs_person: bool,
}

impl CheckResult {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        CheckResult {
            name,
            passed: true,
            detail: detail.into(),
            needs_person: false,
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        CheckResult {
            name,
            passed: false,
            detail: detail.into(),
            needs_person: false,
        }
    }
    fn from_error(name: &'static str, e: &ApiError) -> Self {
        CheckResult {
            name,
            passed: false,
            detail: e.to_string(),
            needs_person: e.needs_person(),
        }
    }
}

/// The scenario names, in order.
pub const SCENARIOS: [&str; 7] = [
    "initial authentication",
    "token validation",
    "API request with the valid token",
    "simulated expiry",
    "automatic refresh on the next request",
    "API request after refresh",
    "expiring-soon detection",
];

/// An authenticated read that changes nothing: the status of invoice 0,
/// which cannot exist (ids start at 1). A 404 proves the token was accepted
/// by the invoice routes; a 401 would have triggered a refresh.
async fn probe_invoice_routes(client: &LaravelClient) -> Result<String, ApiError> {
    const PROBE: &str = "/api/invoices/status/0";
    match client.call(Method::GET, PROBE, None).await {
        Ok(_) => Ok(format!("GET {PROBE} answered 200")),
        // Anything but a 401 proves the token was accepted (a 401 would
        // have been refreshed and replayed, and come back as an error).
        Err(ApiError::NotFound { .. }) => Ok(format!(
            "GET {PROBE} answered 404 (no such invoice): the token is accepted"
        )),
        Err(ApiError::Validation { .. }) => Ok(format!(
            "GET {PROBE} answered 422 (invalid id): the token is accepted"
        )),
        Err(e) => Err(e),
    }
}

pub(crate) async fn run_checks(
    client: &LaravelClient,
    expected_email: &str,
    create_invoice: bool,
    pdf_dir: &Path,
) -> Vec<CheckResult> {
    let keeper = client.keeper();
    let mut out = Vec::new();

    // 1. initial authentication: a fresh login with the configured password.
    match keeper.force_refresh().await {
        Ok(lease) => out.push(CheckResult::pass(
            SCENARIOS[0],
            format!(
                "signed in as {expected_email}{}; token valid until {}",
                lease
                    .token
                    .vendor_id
                    .map(|id| format!(" (vendor {id})"))
                    .unwrap_or_default(),
                lease.token.expires_at.to_rfc3339()
            ),
        )),
        Err(e) => {
            let e = ApiError::from(e);
            out.push(CheckResult::from_error(SCENARIOS[0], &e));
            for name in &SCENARIOS[1..] {
                out.push(CheckResult::fail(
                    name,
                    "not run: initial authentication failed",
                ));
            }
            return out;
        }
    }

    // 2. token validation: the profile route accepts it and names our
    //    account (a backend without that route is probed on its invoice
    //    routes instead).
    out.push(match client.profile().await {
        Ok(v)
            if v.email
                .as_deref()
                .map(|e| e.eq_ignore_ascii_case(expected_email))
                != Some(false) =>
        {
            CheckResult::pass(
                SCENARIOS[1],
                format!(
                    "GET /api/vendors/profile accepted the token ({})",
                    v.name.unwrap_or_else(|| expected_email.to_string())
                ),
            )
        }
        Ok(v) => CheckResult::fail(
            SCENARIOS[1],
            format!(
                "the token belongs to {}, not {expected_email}",
                v.email.unwrap_or_default()
            ),
        ),
        Err(ApiError::NotFound { .. }) => match probe_invoice_routes(client).await {
            Ok(d) => CheckResult::pass(SCENARIOS[1], format!("no profile route; {d}")),
            Err(e) => CheckResult::from_error(SCENARIOS[1], &e),
        },
        Err(e) => CheckResult::from_error(SCENARIOS[1], &e),
    });

    // 3. an API request with the valid token, without any new login.
    let before = keeper.status().refreshes_ok;
    out.push(match probe_invoice_routes(client).await {
        Ok(d) if keeper.status().refreshes_ok == before => CheckResult::pass(SCENARIOS[2], d),
        Ok(_) => CheckResult::fail(SCENARIOS[2], "the request needed a new login"),
        Err(e) => CheckResult::from_error(SCENARIOS[2], &e),
    });

    // 4. simulated expiry: mark the token expired locally.
    keeper.expire_locally();
    out.push(if keeper.status().token_valid {
        CheckResult::fail(SCENARIOS[3], "the token still counts as valid")
    } else {
        CheckResult::pass(
            SCENARIOS[3],
            "the token is marked expired; the next request must refresh it",
        )
    });

    // 5. automatic refresh on the next request: exactly one login.
    let before = keeper.status();
    out.push(match probe_invoice_routes(client).await {
        Ok(d) => {
            let after = keeper.status();
            let logins = after.refreshes_ok - before.refreshes_ok;
            if logins == 1 && after.token_valid {
                CheckResult::pass(
                    SCENARIOS[4],
                    format!(
                        "the request refreshed the token once and went through ({d}); new token valid until {}",
                        after
                            .expires_at
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default()
                    ),
                )
            } else {
                CheckResult::fail(
                    SCENARIOS[4],
                    format!("expected exactly one refresh, saw {logins}"),
                )
            }
        }
        Err(e) => CheckResult::from_error(SCENARIOS[4], &e),
    });

    // 6. an API request after the refresh, again without a login.
    let before = keeper.status().refreshes_ok;
    out.push(match probe_invoice_routes(client).await {
        Ok(d) if keeper.status().refreshes_ok == before => CheckResult::pass(SCENARIOS[5], d),
        Ok(_) => CheckResult::fail(SCENARIOS[5], "the request needed yet another login"),
        Err(e) => CheckResult::from_error(SCENARIOS[5], &e),
    });

    // 7. expiring-soon detection around the configured window (30 minutes
    //    by default: 20 minutes left is due, 40 minutes left is not).
    let window = chrono::Duration::from_std(keeper.window()).unwrap_or_default();
    let ten = chrono::Duration::minutes(10);
    let now = chrono::Utc::now();
    let soon = keeper.is_expiring_soon(now + window - ten);
    let later = keeper.is_expiring_soon(now + window + ten);
    let mins = |d: chrono::Duration| d.num_minutes();
    out.push(if soon && !later {
        CheckResult::pass(
            SCENARIOS[6],
            format!(
                "a token {} minutes from expiry is due for refresh, one {} minutes away is not",
                mins(window - ten),
                mins(window + ten)
            ),
        )
    } else {
        CheckResult::fail(
            SCENARIOS[6],
            format!(
                "detected {} minutes: {soon}, {} minutes: {later}",
                mins(window - ten),
                mins(window + ten)
            ),
        )
    });

    if create_invoice {
        out.extend(round_trip(client, pdf_dir).await);
    }
    out
}

/// `--create-invoice`: a real create, submit, status and PDF download.
async fn round_trip(client: &LaravelClient, pdf_dir: &Path) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let number = format!(
        "TOKEN-TEST-{}-{:04}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        rand::random::<u16>() % 10_000
    );
    let sale = serde_json::json!({
        "invoice_number": number,
        "customer_name": "pos-connector token test",
        "items": [{"description": "Token refresh test item", "quantity": 1, "price": 1.0}]
    });
    let sale = NewInvoice::from_json(&sale).expect("the test sale is valid");
    let id = match client.create_invoice(&sale).await {
        Ok(CreateOutcome::Created(c)) => {
            out.push(CheckResult::pass(
                "create invoice",
                format!("invoice {number} created with id {}", c.id),
            ));
            c.id
        }
        Ok(CreateOutcome::AlreadyExists { .. }) => {
            out.push(CheckResult::fail(
                "create invoice",
                format!("{number} already exists"),
            ));
            return out;
        }
        Err(e) => {
            out.push(CheckResult::from_error("create invoice", &e));
            return out;
        }
    };
    out.push(match client.submit(id).await {
        Ok(s) => CheckResult::pass("submit invoice", format!("status {}", s.status)),
        Err(e) => CheckResult::from_error("submit invoice", &e),
    });
    out.push(match client.status(id).await {
        Ok((s, _)) => CheckResult::pass("invoice status", format!("status {s}")),
        Err(e) => CheckResult::from_error("invoice status", &e),
    });
    out.push(
        match client
            .download(id, None, DocumentKind::Pdf, None, pdf_dir)
            .await
        {
            Ok(d) => CheckResult::pass(
                "download PDF",
                format!("{} bytes saved to {}", d.bytes, d.path.display()),
            ),
            Err(e) => CheckResult::from_error("download PDF", &e),
        },
    );
    out
}
