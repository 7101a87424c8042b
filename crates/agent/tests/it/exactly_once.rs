//! "No sale lost, nothing sent twice" at the edges (issue 10): submits
//! slower than the client's timeout, agents stopped mid-submit, another
//! till using our invoice number, a sale the backend chokes on, a backend
//! whose JoFotara link is broken, `invoice submit` by hand.

use std::sync::Arc;
use std::time::Duration;

use crate::common::slow_submits::SlowSubmits;
use crate::common::*;
use pos_connector::clock::{Clock, SystemClock, TokioClock};
use pos_connector::config::Config;
use pos_connector::intake::sale::{Sale, SaleLine};
use pos_connector::service::Spawned;
use pos_connector::store::{Job, Outbox};
use pos_sandbox::LaravelSandboxOptions;
use serde_json::{json, Value};

const SUBMIT: &str = "POST /api/invoices/{id}/submit";

fn job(cfg: &Config, number: &str) -> Job {
    Outbox::open(&cfg.data_dir)
        .unwrap()
        .find(number)
        .unwrap()
        .unwrap()
}

fn log_of(cfg: &Config, number: &str) -> Vec<String> {
    let ob = Outbox::open(&cfg.data_dir).unwrap();
    let j = ob.find(number).unwrap().unwrap();
    ob.events(j.id)
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.event, e.detail.unwrap_or_default()))
        .collect()
}

async fn health(agent: &Spawned) -> Value {
    reqwest::get(format!(
        "http://{}/api/health",
        agent.running.local_api.unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

fn sale(n: &str, customer: &str, items: Value) -> Value {
    json!({"invoice_number": n, "customer_name": customer, "items": items})
}

// ------------------------------------------------------------ point 1

/// A backend that, like PHP-FPM behind nginx, finishes a request whose
/// client has gone.
async fn finishing_backend() -> Fixture {
    Fixture::with_options(LaravelSandboxOptions {
        finish_after_disconnect: true,
        ..Default::default()
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn submits_slower_than_the_client_timeout_reach_jofotara_once() {
    let fx = finishing_backend().await;
    // Each submit takes 15 s at the backend (the status stays draft until
    // JoFotara answers); the agent gives up after 2 s.
    fx.sandbox
        .inject(SUBMIT, Fault::SlowWork(Duration::from_secs(15)), 8);
    let cfg = fx.service_config(json!({"request_timeout_secs": 2,
               "pipeline": {"max_backoff_seconds": 4, "concurrency": 4}}));
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let agent = Spawned::start(&cfg, clock).await.unwrap();
    for i in 0..8 {
        post(
            &agent,
            &sale(
                &format!("SLOW-{i}"),
                "C",
                json!([{"description": "Tea", "quantity": 1, "price": 2}]),
            ),
        )
        .await;
    }
    wait_until(Duration::from_secs(1800), "8 sales done", || async {
        count(&cfg, "done") == 8
    })
    .await;
    agent.stop().await.unwrap();
    for i in 0..8 {
        let n = format!("SLOW-{i}");
        assert_eq!(
            fx.sandbox.invoice_by_number(&n).unwrap()["status"],
            "submitted"
        );
        assert_eq!(
            fx.sandbox.jofotara_submissions_by_number(&n),
            1,
            "{n}: JoFotara received it exactly once; log: {:#?}",
            log_of(&cfg, &n)
        );
    }
    let log = log_of(&cfg, "SLOW-0");
    assert!(
        log.iter()
            .any(|l| l.contains("the submit started at") && l.contains("went through")),
        "{log:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_waits_out_the_settle_window_of_a_submit_in_flight() {
    let fx = Fixture::start().await;
    let slow = SlowSubmits::start(&fx.sandbox.base_url(), Duration::from_secs(20)).await;
    let cfg = fx.service_config(json!({"base_url": slow.base_url,
               "pipeline": {"max_backoff_seconds": 1, "shutdown_grace_seconds": 0}}));
    // One clock across both runs: wall time goes on while the agent is down.
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let agent = Spawned::start(&cfg, clock.clone()).await.unwrap();
    post(
        &agent,
        &sale(
            "STOP-1",
            "C",
            json!([{"description": "Tea", "quantity": 1, "price": 2}]),
        ),
    )
    .await;
    wait_until(Duration::from_secs(60), "the submit in flight", || async {
        !slow.times_of("/submit").is_empty()
    })
    .await;
    agent.stop().await.unwrap();
    let j = job(&cfg, "STOP-1");
    assert_eq!(j.stage.as_str(), "created");
    assert_eq!(j.in_flight.as_deref(), Some("submit"));
    // Its start was recorded before it was sent, with the window.
    let attempt = Outbox::open(&cfg.data_dir)
        .unwrap()
        .unsettled_submit(j.laravel_id.unwrap())
        .unwrap()
        .expect("the attempt is on record");
    assert_eq!(
        attempt.check_after - attempt.started_at,
        chrono::Duration::seconds(90)
    );
    let wall_at = |i: tokio::time::Instant| clock.now() - (tokio::time::Instant::now() - i);
    assert!(attempt.started_at <= wall_at(slow.times_of("/submit")[0]));
    // Restarted at once: the backend is still working on the first submit
    // (its status says draft), so nothing may be sent before the window.
    let agent = Spawned::start(&cfg, clock.clone()).await.unwrap();
    wait_until(Duration::from_secs(600), "done", || async {
        count(&cfg, "done") == 1
    })
    .await;
    agent.stop().await.unwrap();
    assert_eq!(fx.sandbox.requests(SUBMIT), 1, "submitted once");
    let reads = slow.times_of("/api/invoices/status/");
    assert!(!reads.is_empty());
    for r in reads {
        assert!(
            wall_at(r) >= attempt.check_after,
            "status read at {} before {}",
            wall_at(r),
            attempt.check_after
        );
    }
    let log = log_of(&cfg, "STOP-1");
    assert!(
        log.iter()
            .any(|l| l.starts_with("postponed") && l.contains("may still be working")),
        "{log:#?}"
    );
}

// ------------------------------------------------------------ point 2

#[tokio::test]
async fn another_tills_sale_with_our_number_is_never_adopted() {
    let fx = Fixture::start().await;
    let cfg = fx.service_config(json!({}));
    let till = fx.client(&cfg, Arc::new(SystemClock));
    let new = |v: Value| pos_connector::laravel::NewInvoice::from_json(&v).unwrap();
    // Another till: same number, same customer, same total (100.00 net),
    // other lines.
    till.create_invoice(&new(sale(
        "TILL-1",
        "Walk-in customer",
        json!([{"description": "Widget", "quantity": 1, "price": 100}]),
    )))
    .await
    .unwrap();
    // And one with exactly our content, which this agent never sent.
    till.create_invoice(&new(sale(
        "TILL-2",
        "Walk-in customer",
        json!([{"description": "Widget", "quantity": 2, "price": 50}]),
    )))
    .await
    .unwrap();
    let agent = Spawned::start(&cfg, Arc::new(SystemClock)).await.unwrap();
    let ours = json!([{"description": "Widget", "quantity": 2, "price": 50}]);
    post(&agent, &sale("TILL-1", "Walk-in customer", ours.clone())).await;
    post(&agent, &sale("TILL-2", "Walk-in customer", ours)).await;
    wait_until(Duration::from_secs(30), "both parked", || async {
        count(&cfg, "parked") == 2
    })
    .await;
    agent.stop().await.unwrap();
    for n in ["TILL-1", "TILL-2"] {
        let j = job(&cfg, n);
        let theirs = fx.sandbox.invoice_by_number(n).unwrap()["id"]
            .as_u64()
            .unwrap();
        let why = j.last_error.unwrap();
        assert!(
            why.contains("used by another sale (another till or the old connector?)")
                && why.contains(&format!("invoice id {theirs}")),
            "{n}: {why}"
        );
        assert_eq!(j.laravel_id, None, "{n}: not adopted");
        assert_eq!(fx.sandbox.invoice_by_number(n).unwrap()["status"], "draft");
    }
    assert_eq!(
        fx.sandbox.requests(SUBMIT),
        0,
        "nothing of theirs submitted"
    );
}

#[tokio::test]
async fn our_own_lost_multi_line_create_is_found_and_adopted() {
    let fx = Fixture::start().await;
    let cfg = fx.service_config(json!({}));
    let agent = Spawned::start(&cfg, Arc::new(SystemClock)).await.unwrap();
    // Three lines of 1.03: the backend's tax is 0.49 (rounded once), not
    // the 0.48 of per-line rounding; lines are compared, not totals.
    fx.sandbox.inject("POST /api/invoices", Fault::DropAfter, 1);
    post(
        &agent,
        &sale(
            "MULTI-1",
            "Amal",
            json!([{"description": "A", "quantity": 1, "price": "1.03"},
                   {"description": "B", "quantity": 1, "price": "1.03"},
                   {"description": "C", "quantity": 1, "price": "1.03"}]),
        ),
    )
    .await;
    wait_until(Duration::from_secs(30), "done", || async {
        count(&cfg, "done") == 1
    })
    .await;
    agent.stop().await.unwrap();
    assert_eq!(fx.sandbox.invoices_with_number("MULTI-1"), 1);
    let log = log_of(&cfg, "MULTI-1");
    assert!(
        log.iter()
            .any(|l| l.contains("earlier create had gone through")),
        "{log:#?}"
    );
}

// ------------------------------------------------------------ point 4

#[tokio::test]
async fn official_pdfs_of_look_alike_numbers_never_overwrite_each_other() {
    let fx = Fixture::start().await;
    let cfg = fx.service_config(json!({}));
    let agent = Spawned::start(&cfg, Arc::new(SystemClock)).await.unwrap();
    let numbers = ["COLL 1", "COLL_1", "A/X", "B/X"];
    for n in numbers {
        post(
            &agent,
            &sale(
                n,
                "C",
                json!([{"description": "Tea", "quantity": 1, "price": 2}]),
            ),
        )
        .await;
    }
    wait_until(Duration::from_secs(30), "4 done", || async {
        count(&cfg, "done") == 4
    })
    .await;
    agent.stop().await.unwrap();
    let mut paths = std::collections::HashSet::new();
    for n in numbers {
        let j = job(&cfg, n);
        let path = j.pdf_path.clone().unwrap();
        assert!(paths.insert(path.clone()), "{n}: {path} shared");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            fx.sandbox.pdf_bytes(j.laravel_id.unwrap()).unwrap(),
            "{n}: its own PDF"
        );
    }
    assert_eq!(files_under(&cfg.pdf_dir).len(), 4);
}

// ------------------------------------------------------------ point 5

/// A job whose amounts overflow the backend's arithmetic (it answers 500
/// to its create every time), as an outbox written before intake refused
/// such sales may hold.
fn poisoned_sale() -> Sale {
    Sale {
        invoice_number: "POISON-1".into(),
        number_derived: false,
        customer_name: "C".into(),
        customer_email: None,
        customer_phone: None,
        date: None,
        currency: None,
        notes: None,
        lines: vec![SaleLine {
            description: "Absurd".into(),
            quantity: 3,
            unit_price: "30000000000000000000000000000".parse().unwrap(),
            sku: None,
            converted_from: None,
        }],
    }
}

#[tokio::test(start_paused = true)]
async fn one_poisoned_sale_backs_off_alone_while_the_others_flow() {
    let fx = Fixture::start().await;
    let cfg =
        fx.service_config(json!({"pipeline": {"max_backoff_seconds": 900, "concurrency": 4}}));
    Outbox::open(&cfg.data_dir)
        .unwrap()
        .enqueue(
            &pos_connector::intake::new_job(&poisoned_sale(), "test"),
            chrono::Utc::now(),
        )
        .unwrap();
    let agent = Spawned::start(&cfg, Arc::new(TokioClock::new()))
        .await
        .unwrap();
    wait_until(Duration::from_secs(3600), "5 failed attempts", || async {
        job(&cfg, "POISON-1").attempts >= 5
    })
    .await;
    // The backend answers a probe each time: the gate stays open (no
    // "backend unavailable" for everyone), and the health says degraded.
    let h = health(&agent).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["failing"], 1, "{h}");
    assert!(h["backend_gate"].is_null(), "the backend works: {h}");
    assert!(fx.sandbox.requests("GET /api/vendors/profile") >= 1);
    // A healthy sale goes through while the poisoned one backs off.
    post(
        &agent,
        &sale(
            "OK-1",
            "C",
            json!([{"description": "Tea", "quantity": 1, "price": 2}]),
        ),
    )
    .await;
    wait_until(
        Duration::from_secs(3600),
        "the healthy sale done",
        || async { count(&cfg, "done") == 1 },
    )
    .await;
    assert!(health(&agent).await["backend_gate"].is_null());
    agent.stop().await.unwrap();
    let poisoned = job(&cfg, "POISON-1");
    assert_eq!(poisoned.state, "retrying");
    assert!(poisoned.last_error.unwrap().contains("500"));
}

// ------------------------------------------------------------ point 12

#[tokio::test]
async fn a_broken_jofotara_link_parks_the_sale_after_max_submit_errors() {
    let fx = Fixture::start().await;
    let cfg =
        fx.service_config(json!({"pipeline": {"max_backoff_seconds": 1, "max_submit_errors": 3}}));
    fx.sandbox
        .queue_submit_outcomes(&["error", "error", "error"]);
    let agent = Spawned::start(&cfg, Arc::new(SystemClock)).await.unwrap();
    post(
        &agent,
        &sale(
            "JOF-1",
            "C",
            json!([{"description": "Tea", "quantity": 1, "price": 2}]),
        ),
    )
    .await;
    wait_until(Duration::from_secs(60), "parked", || async {
        count(&cfg, "parked") == 1
    })
    .await;
    assert_eq!(fx.sandbox.requests(SUBMIT), 3);
    let why = job(&cfg, "JOF-1").last_error.unwrap();
    assert!(
        why.contains("failed 3 times in a row") && why.contains("JoFotara integration"),
        "{why}"
    );
    let status: Value = pos_connector::http_client::builder()
        .build()
        .unwrap()
        .get(format!(
            "http://{}/api/status",
            agent.running.local_api.unwrap()
        ))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let attention = status["attention"].to_string();
    assert!(
        attention.contains("JoFotara integration is probably misconfigured"),
        "{attention}"
    );
    // Fixed at the backend; `queue retry` resumes it.
    fx.sandbox.set_jofotara_broken(false);
    Outbox::open(&cfg.data_dir)
        .unwrap()
        .retry_now(job(&cfg, "JOF-1").id, chrono::Utc::now())
        .unwrap()
        .unwrap();
    post(
        &agent,
        &sale(
            "JOF-2",
            "C",
            json!([{"description": "Tea", "quantity": 1, "price": 2}]),
        ),
    )
    .await;
    wait_until(Duration::from_secs(60), "both done", || async {
        count(&cfg, "done") == 2
    })
    .await;
    agent.stop().await.unwrap();
    assert_eq!(fx.sandbox.requests(SUBMIT), 5);
}

// ------------------------------------------------------------ invoice submit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_submit_reads_the_status_first() {
    let fx = Fixture::start().await;
    let path = fx.write_config(json!({}));
    let c = path.to_str().unwrap();
    let cfg = pos_connector::config::load(&path).unwrap();
    let client = fx.client(&fx.service_config(json!({})), Arc::new(SystemClock));
    let dir = fx.dir.path();
    let pw = [("POS_CONNECTOR_PASSWORD", SANDBOX_PASSWORD)];
    let mk = |n: &str| {
        pos_connector::laravel::NewInvoice::from_json(&sale(
            n,
            "C",
            json!([{"description": "Tea", "quantity": 1, "price": 2}]),
        ))
        .unwrap()
    };
    let id = |o| match o {
        pos_connector::laravel::CreateOutcome::Created(c) => c.id.to_string(),
        other => panic!("{other:?}"),
    };
    let a = id(client.create_invoice(&mk("CLI-S1")).await.unwrap());
    let r = run_bin(dir, &["--config", c, "invoice", "submit", &a], &pw, None).await;
    assert_eq!(r.code, 0, "{r:?}");
    // Already submitted: said so, exit 0, not sent to JoFotara again.
    let r = run_bin(dir, &["--config", c, "invoice", "submit", &a], &pw, None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("already submitted"), "{r:?}");
    assert_eq!(fx.sandbox.requests(SUBMIT), 1);

    // Rejected: only with --resubmit.
    let b = id(client.create_invoice(&mk("CLI-S2")).await.unwrap());
    fx.sandbox.queue_submit_outcomes(&["rejected"]);
    let r = run_bin(dir, &["--config", c, "invoice", "submit", &b], &pw, None).await;
    assert_eq!(r.code, 1, "{r:?}");
    let r = run_bin(dir, &["--config", c, "invoice", "submit", &b], &pw, None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("--resubmit"), "{r:?}");
    assert_eq!(fx.sandbox.requests(SUBMIT), 2, "not sent again");
    let r = run_bin(
        dir,
        &["--config", c, "invoice", "submit", &b, "--resubmit"],
        &pw,
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(fx.sandbox.requests(SUBMIT), 3);

    // A submit of the service's still within its settle window: refused.
    let d = id(client.create_invoice(&mk("CLI-S3")).await.unwrap());
    let now = chrono::Utc::now();
    Outbox::open(&cfg.data_dir)
        .unwrap()
        .begin_submit(
            None,
            d.parse().unwrap(),
            "service",
            now,
            now + chrono::Duration::seconds(90),
        )
        .unwrap();
    let r = run_bin(dir, &["--config", c, "invoice", "submit", &d], &pw, None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("may still be working on it"), "{r:?}");
    assert_eq!(fx.sandbox.requests(SUBMIT), 3);
}
