//! The token lifecycle and the invoice operations, through the library,
//! against the sandbox backend on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use pos_connector::clock::{SystemClock, TokioClock};
use pos_connector::laravel::{ApiError, CreateOutcome, DocumentKind, InvoiceStatus};
use pos_connector::secret::{StoredToken, Vault};
use pos_connector::token::TokenError;
use pos_sandbox::LaravelSandboxOptions;
use secrecy::SecretString;
use serde_json::json;

const LOGIN: &str = "POST /api/vendors/login";
const STATUS: &str = "GET /api/invoices/status/{id}";
const SUBMIT: &str = "POST /api/invoices/{id}/submit";
const CREATE: &str = "POST /api/invoices";
const PDF: &str = "GET /api/invoices/{id}/pdf";

/// Stores an already expired token for the sandbox account, as a previous
/// run would have left it.
fn store_expired_token(fx: &Fixture, cfg: &pos_connector::config::Config) {
    let mut meta = BTreeMap::new();
    meta.insert("base_url".into(), json!(cfg.base_url.as_str()));
    meta.insert("email".into(), json!(cfg.email));
    Vault::new(&cfg.data_dir)
        .save_token(
            "laravel",
            &StoredToken {
                secret: SecretString::from(
                    "1|expiredexpiredexpiredexpiredexpiredexpired12345678".to_string(),
                ),
                expires_at: chrono::Utc::now() - chrono::Duration::minutes(1),
                obtained_at: chrono::Utc::now() - chrono::Duration::hours(25),
                refresh: None,
                meta,
            },
        )
        .unwrap();
    let _ = fx;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_with_an_expired_token_log_in_once() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    store_expired_token(&fx, &cfg);
    let client = fx.client(&cfg, Arc::new(SystemClock));
    // One invoice to ask about.
    let CreateOutcome::Created(created) = client.create_invoice(&sale("C-1")).await.unwrap() else {
        panic!("not created")
    };
    assert_eq!(fx.sandbox.logins_ok(), 1);
    // Expire the (fresh) token locally, then fire 200 calls at once.
    client.keeper().expire_locally();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.status(created.id).await }));
    }
    for t in tasks {
        let (status, _) = t.await.unwrap().unwrap();
        assert_eq!(status, InvoiceStatus::Draft);
    }
    assert_eq!(
        fx.sandbox.logins_ok(),
        2,
        "exactly one login for 200 waiters"
    );
    assert_eq!(fx.sandbox.requests(LOGIN), 2);
    assert_eq!(
        fx.sandbox.requests(STATUS),
        200,
        "no validation probes, no replays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_mid_run_is_recovered_by_one_refresh() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    let CreateOutcome::Created(created) = client.create_invoice(&sale("R-1")).await.unwrap() else {
        panic!()
    };
    fx.sandbox.revoke_all_tokens();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.status(created.id).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fx.sandbox.logins_ok(), 2, "one refresh for the revocation");
    // 50 answered 401 at most once each, then each replayed once.
    let unauthorised = fx.sandbox.responses(STATUS, 401);
    assert!(unauthorised <= 50, "{unauthorised}");
    assert_eq!(fx.sandbox.responses(STATUS, 200), 50);
}

#[tokio::test]
async fn a_second_401_after_a_fresh_login_is_an_auth_error_not_a_loop() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    client.profile().await.unwrap();
    let unauthorised = Fault::Status {
        status: 401,
        retry_after: None,
        html: false,
    };
    fx.sandbox.inject(STATUS, unauthorised, 5);
    let err = client.status(1).await.unwrap_err();
    assert!(matches!(err, ApiError::Unauthenticated { .. }), "{err}");
    assert!(err.needs_person());
    assert_eq!(err.exit_code(), 3);
    assert_eq!(fx.sandbox.requests(STATUS), 2, "one call and one replay");
    assert_eq!(fx.sandbox.logins_ok(), 2, "one refresh");
}

#[tokio::test]
async fn wrong_password_stops_and_says_so() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({"password": "not-the-password"}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    let err = client.status(1).await.unwrap_err();
    assert!(err.needs_person(), "{err}");
    assert!(err.to_string().contains("--setup-password"), "{err}");
    // Further calls do not hammer the login route.
    for _ in 0..5 {
        assert!(client.status(1).await.is_err());
    }
    assert_eq!(fx.sandbox.requests(LOGIN), 1);
    assert!(matches!(
        client.keeper().get().await,
        Err(TokenError::NeedsPerson { .. })
    ));
}

#[tokio::test]
async fn login_failures_that_pass_are_retried() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    fx.sandbox.inject(
        LOGIN,
        Fault::Status {
            status: 503,
            retry_after: None,
            html: true,
        },
        1,
    );
    client.profile().await.unwrap();
    assert_eq!(fx.sandbox.requests(LOGIN), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_429_is_honoured() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(TokioClock::new()));
    let CreateOutcome::Created(c) = client.create_invoice(&sale("T-1")).await.unwrap() else {
        panic!()
    };
    fx.sandbox.inject(
        STATUS,
        Fault::Status {
            status: 429,
            retry_after: Some(42),
            html: false,
        },
        1,
    );
    let start = tokio::time::Instant::now();
    let (status, _) = client.status(c.id).await.unwrap();
    assert_eq!(status, InvoiceStatus::Draft);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(42), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(60), "waited {waited:?}");
    assert_eq!(fx.sandbox.requests(STATUS), 2);
}

#[tokio::test(start_paused = true)]
async fn run_mode_refreshes_ahead_of_expiry_while_idle() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({"token_lifetime_hours": 2}));
    // The backend really expires tokens after 2 hours too.
    fx.sandbox
        .set_token_lifetime(Some(Duration::from_secs(2 * 3600)));
    let clock = Arc::new(TokioClock::new());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = {
        let cfg = cfg.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            pos_connector::service::run(&cfg, clock, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    wait_until(Duration::from_secs(5), "first login", || async {
        fx.sandbox.logins_ok() == 1
    })
    .await;
    // Ten idle hours: a login every 1.5 h (2 h lifetime, 30 min early).
    // The paused clock auto-advances only while every task is idle, so
    // time never jumps under a request in flight.
    tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
    wait_until(Duration::from_secs(5), "background refreshes", || async {
        fx.sandbox.logins_ok() >= 7
    })
    .await;
    let logins = fx.sandbox.logins_ok();
    assert!((7..=8).contains(&logins), "logins {logins}");
    // The token the service persisted is accepted right now, with no login.
    let client = fx.client(&cfg, clock.clone());
    client.profile().await.unwrap();
    assert_eq!(
        fx.sandbox.logins_ok(),
        logins,
        "the persisted token was reused"
    );
    stop_tx.send(()).unwrap();
    service.await.unwrap().unwrap();
}

#[tokio::test]
async fn backend_expiry_in_the_login_answer_is_used() {
    let opts = LaravelSandboxOptions {
        token_lifetime: Some(Duration::from_secs(3600)),
        advertise_expiry: true,
        ..Default::default()
    };
    let fx = Fixture::with_options(opts).await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    client.profile().await.unwrap();
    let expires = client.keeper().status().expires_at.unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left <= chrono::Duration::minutes(60) && left > chrono::Duration::minutes(58),
        "{left}"
    );
}

#[tokio::test]
async fn create_submit_status_pdf_xml_round_trip() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    let CreateOutcome::Created(c) = client.create_invoice(&sale("INV-100")).await.unwrap() else {
        panic!()
    };
    assert_eq!(c.total_amount.unwrap().to_string(), "116.00");
    assert_eq!(c.tax_amount.unwrap().to_string(), "16.00");
    assert_eq!(client.status(c.id).await.unwrap().0, InvoiceStatus::Draft);
    let s = client.submit(c.id).await.unwrap();
    assert_eq!(s.status, InvoiceStatus::Submitted);
    assert_eq!(
        client.status(c.id).await.unwrap().0,
        InvoiceStatus::Submitted
    );
    let inv = client.invoice(c.id).await.unwrap();
    assert_eq!(inv.items.len(), 1);
    // Item amounts come back as JSON numbers (contract): compare values.
    assert_eq!(
        inv.items[0].total.unwrap(),
        rust_decimal::Decimal::from(116)
    );

    let pdf = client
        .download(c.id, None, DocumentKind::Pdf, None, &cfg.pdf_dir)
        .await
        .unwrap();
    assert_eq!(
        pdf.path,
        cfg.pdf_dir.join(format!("invoice_INV-100_{}.pdf", c.id))
    );
    let saved = std::fs::read(&pdf.path).unwrap();
    assert_eq!(saved, fx.sandbox.pdf_bytes(c.id).unwrap(), "PDF intact");
    assert!(saved.len() > 2000);
    let xml = client
        .download(
            c.id,
            None,
            DocumentKind::Xml,
            Some(&fx.path("out.xml")),
            &cfg.pdf_dir,
        )
        .await
        .unwrap();
    let text = std::fs::read_to_string(&xml.path).unwrap();
    assert!(text.contains("INV-100"));
    // Exactly the calls needed: one login, no probes.
    assert_eq!(fx.sandbox.logins_ok(), 1);
    assert_eq!(fx.sandbox.requests("GET /api/vendors/profile"), 0);
}

#[tokio::test]
async fn duplicate_invoice_number_is_already_exists_not_a_failure() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    client.create_invoice(&sale("D-1")).await.unwrap();
    match client.create_invoice(&sale("D-1")).await.unwrap() {
        CreateOutcome::AlreadyExists { after_lost_answer } => assert!(!after_lost_answer),
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.sandbox.invoices_with_number("D-1"), 1);
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_not_duplicated() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    client.profile().await.unwrap();
    fx.sandbox.inject(CREATE, Fault::DropAfter, 1);
    match client.create_invoice(&sale("L-1")).await.unwrap() {
        CreateOutcome::AlreadyExists { after_lost_answer } => assert!(after_lost_answer),
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.sandbox.invoices_with_number("L-1"), 1);
}

#[tokio::test]
async fn a_submit_whose_answer_is_lost_is_never_sent_again_by_the_client() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    let CreateOutcome::Created(a) = client.create_invoice(&sale("S-1")).await.unwrap() else {
        panic!()
    };
    let CreateOutcome::Created(b) = client.create_invoice(&sale("S-2")).await.unwrap() else {
        panic!()
    };
    // The connection drops with no answer: the backend may have acted (or
    // may still be acting), so the client does not submit again; the
    // caller decides after a settle window (the pipeline, the CLI).
    fx.sandbox.inject(SUBMIT, Fault::Drop, 1);
    let err = client.submit(a.id).await.unwrap_err();
    assert!(err.may_still_be_running(), "{err}");
    assert_eq!(fx.sandbox.requests(SUBMIT), 1);
    fx.sandbox.inject(SUBMIT, Fault::DropAfter, 1);
    let err = client.submit(b.id).await.unwrap_err();
    assert!(err.may_still_be_running(), "{err}");
    assert_eq!(fx.sandbox.requests(SUBMIT), 2, "not submitted twice");
    // A request that certainly never reached the backend is repeated.
    fx.sandbox.inject(
        SUBMIT,
        Fault::Status {
            status: 429,
            retry_after: Some(0),
            html: false,
        },
        1,
    );
    let s = client.submit(a.id).await.unwrap();
    assert_eq!(s.status, InvoiceStatus::Submitted);
    assert_eq!(fx.sandbox.requests(SUBMIT), 4);
}

#[tokio::test]
async fn submit_outcomes_and_backend_refusals_are_told_apart() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    let CreateOutcome::Created(c) = client.create_invoice(&sale("O-1")).await.unwrap() else {
        panic!()
    };
    fx.sandbox.queue_submit_outcomes(&["rejected"]);
    assert_eq!(
        client.submit(c.id).await.unwrap().status,
        InvoiceStatus::Rejected
    );

    fx.sandbox.set_jofotara_configured(false);
    let err = client.submit(c.id).await.unwrap_err();
    assert!(matches!(err, ApiError::SubmitUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("JoFotara integration"), "{err}");
    fx.sandbox.set_jofotara_configured(true);

    fx.sandbox.set_user_active(SANDBOX_EMAIL, false);
    let err = client.submit(c.id).await.unwrap_err();
    assert!(matches!(err, ApiError::AccountDisabled { .. }), "{err}");
    assert_eq!(err.exit_code(), 3);
    // Not retried: a person must act.
    let submits = fx.sandbox.requests(SUBMIT);
    assert_eq!(submits, 3);

    let err = client.status(99_999).await.unwrap_err();
    assert!(matches!(err, ApiError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn an_html_error_page_never_lands_as_a_pdf_and_a_cut_download_is_retried() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    let CreateOutcome::Created(c) = client.create_invoice(&sale("P-1")).await.unwrap() else {
        panic!()
    };
    // A 500 HTML page five times in a row: the operation fails, no file.
    fx.sandbox.inject(
        PDF,
        Fault::Status {
            status: 500,
            retry_after: None,
            html: true,
        },
        5,
    );
    let err = client
        .download(c.id, None, DocumentKind::Pdf, None, &cfg.pdf_dir)
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Server { status: 500, .. }), "{err}");
    let leftovers = std::fs::read_dir(&cfg.pdf_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "nothing written");
    // A connection dropped mid-way is retried and the file is whole.
    fx.sandbox.inject(PDF, Fault::Drop, 2);
    let d = client
        .download(c.id, None, DocumentKind::Pdf, None, &cfg.pdf_dir)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&d.path).unwrap(),
        fx.sandbox.pdf_bytes(c.id).unwrap()
    );
    assert_eq!(std::fs::read_dir(&cfg.pdf_dir).unwrap().count(), 1);
}

#[tokio::test]
async fn validation_errors_name_the_fields() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    let client = fx.client(&cfg, Arc::new(SystemClock));
    let mut bad = sale("V-1");
    bad.customer_email = Some("x@".into());
    let err = client.create_invoice(&bad).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ApiError::Validation { .. }), "{text}");
    assert!(text.contains("customer_email"), "{text}");
    assert_eq!(err.exit_code(), 1);
}
