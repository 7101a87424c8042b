//! The service end to end in-process: intake (inbox folder and local
//! HTTP), outbox, pipeline and receipts against the sandbox on
//! 127.0.0.1:0, with real files in temp folders and a real SQLite outbox.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use pos_connector::clock::{Clock, SystemClock, TokioClock};
use pos_connector::config::Config;
use pos_connector::service::{self, ServiceError};
use pos_connector::store::{Job, ListFilter, Outbox};
use pos_sandbox::LaravelSandboxOptions;
use serde_json::{json, Value};

/// The service running in this process, and its local API.
struct Agent(service::Spawned);

impl Agent {
    async fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Agent {
        Agent(
            service::Spawned::start(cfg, clock)
                .await
                .expect("the agent starts"),
        )
    }

    async fn stop(self) {
        self.0.stop().await.unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.0.running.local_api.expect("local API on")
        )
    }

    /// `POST /v1/sales` with `key` (none: no Authorization header).
    async fn post(&self, key: Option<&str>, body: &Value) -> reqwest::Response {
        let mut req = pos_connector::http_client::builder()
            .build()
            .unwrap()
            .post(self.url("/v1/sales"))
            .json(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        pos_connector::http_client::builder()
            .build()
            .unwrap()
            .get(self.url(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }
}

fn outbox(cfg: &Config) -> Outbox {
    Outbox::open(&cfg.data_dir).unwrap()
}

fn jobs(cfg: &Config) -> Vec<Job> {
    outbox(cfg).list(&ListFilter::default()).unwrap()
}

fn fixture_file(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/intake")
            .join(name),
    )
    .unwrap()
}

async fn wait_state(cfg: &Config, state: &str, n: u64, secs: u64) {
    wait_until(
        Duration::from_secs(secs),
        &format!("{n} job(s) {state}"),
        || async { count(cfg, state) >= n },
    )
    .await;
}

#[tokio::test]
async fn sample_exports_flow_from_inbox_to_done() {
    let fx = Fixture::start().await;
    let cfg = fx.service_config(json!({}));
    let inbox = fx.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    for f in [
        "cafe_pos_sales.csv",
        "generic_pos.json",
        "minimal_format.json",
        "quickbooks_format.json",
    ] {
        std::fs::write(inbox.join(f), fixture_file(f)).unwrap();
    }
    // Still being written: must be left alone.
    std::fs::write(inbox.join("next.csv.part"), "transaction_id,item").unwrap();
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    // 8 cafe sales + 3 single-sale JSON files.
    wait_state(&cfg, "done", 11, 30).await;
    assert_eq!(fx.sandbox.invoice_count(), 11);
    for n in ["TXN001", "TXN008", "INV-GEN-001"] {
        assert_eq!(fx.sandbox.invoices_with_number(n), 1, "{n}");
    }
    // Every file archived under today's date; the partial one untouched.
    let archived = files_under(&inbox.join("archive"));
    assert_eq!(archived.len(), 4, "{archived:?}");
    assert!(inbox.join("next.csv.part").exists());
    assert!(files_under(&inbox.join("processing")).is_empty());
    // Official PDFs and provisional receipts for each.
    for j in jobs(&cfg) {
        let pdf = std::fs::read(j.pdf_path.as_ref().unwrap()).unwrap();
        assert!(
            pdf.starts_with(b"%PDF") && pdf.len() > 500,
            "{}",
            j.invoice_number
        );
        assert_eq!(j.backend_status.as_deref(), Some("submitted"));
    }
    wait_until(Duration::from_secs(10), "receipts", || async {
        jobs(&cfg).iter().all(|j| j.receipt_path.is_some())
    })
    .await;
    assert_eq!(files_under(&fx.path("receipts")).len(), 11);
    // The generic sample: 2 x 15.50 + 1 x 30.00 = 61.00, tax 9.76, total 70.76.
    let job = outbox(&cfg).find("INV-GEN-001").unwrap().unwrap();
    let receipt = std::fs::read(job.receipt_path.unwrap()).unwrap();
    let text = pos_connector::receipt::extract_text(&receipt).unwrap();
    for want in [
        "INV-GEN-001",
        "Generic Customer",
        "61.00",
        "9.76",
        "70.76",
        "PROVISIONAL",
    ] {
        assert!(
            text.contains(want),
            "{want} missing from the receipt: {text}"
        );
    }
    // Calls per sale: create, submit, pdf; one login.
    assert_eq!(fx.sandbox.requests("POST /api/invoices"), 11);
    assert_eq!(fx.sandbox.requests("GET /api/invoices/status/{id}"), 0);
    assert_eq!(fx.sandbox.logins_ok(), 1);

    // The same file dropped again is the same invoices: nothing new.
    std::fs::write(
        inbox.join("cafe_again.csv"),
        fixture_file("cafe_pos_sales.csv"),
    )
    .unwrap();
    // Another till's file reusing TXN001..3 for different sales: rejected.
    std::fs::write(
        inbox.join("store_sales.csv"),
        fixture_file("store_sales.csv"),
    )
    .unwrap();
    wait_until(Duration::from_secs(15), "both files handled", || async {
        files_under(&inbox.join("archive")).len() == 5
            && inbox.join("rejected/store_sales.csv.error.txt").exists()
    })
    .await;
    let why = std::fs::read_to_string(inbox.join("rejected/store_sales.csv.error.txt")).unwrap();
    assert!(why.contains("TXN001") && why.contains("different"), "{why}");
    assert_eq!(jobs(&cfg).len(), 11);
    agent.stop().await;
    assert_eq!(fx.sandbox.invoice_count(), 11);
}

#[tokio::test]
async fn local_http_intake_answers_as_documented() {
    let fx = Fixture::start().await;
    let cfg = fx.service_config(json!({"auto_submit_jofotara": false}));
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    let sale = json!({
        "invoice_number": "WEB-1",
        "customer_name": "Web Customer",
        "items": [{"description": "Tea", "quantity": 2, "price": "1.250"}]
    });
    assert_eq!(agent.post(None, &sale).await.status(), 401);
    assert_eq!(agent.post(Some("nope"), &sale).await.status(), 401);
    assert_eq!(count(&cfg, "queued") + count(&cfg, "created"), 0);

    let ok = agent.post(Some(API_KEY), &sale).await;
    assert_eq!(ok.status(), 202);
    assert_eq!(ok.headers()["location"], "/v1/sales/WEB-1");
    let job: Value = ok.json().await.unwrap();
    assert_eq!(job["invoice_number"], "WEB-1");
    assert_eq!(job["duplicate"], false);
    // Committed before the answer: the outbox holds it now.
    assert!(outbox(&cfg).find("WEB-1").unwrap().is_some());

    let again: Value = agent.post(Some(API_KEY), &sale).await.json().await.unwrap();
    assert_eq!(
        (again["id"].clone(), again["duplicate"].clone()),
        (job["id"].clone(), json!(true))
    );

    let mut changed = sale.clone();
    changed["items"][0]["quantity"] = json!(3);
    assert_eq!(agent.post(Some(API_KEY), &changed).await.status(), 409);

    // A number with a space and a slash is one path segment in Location,
    // and that Location finds the job.
    let odd = json!({"invoice_number": "WEB 3/فاتورة", "customer_name": "Web Customer",
                     "items": [{"description": "Tea", "quantity": 1, "price": 1}]});
    let ok = agent.post(Some(API_KEY), &odd).await;
    assert_eq!(ok.status(), 202);
    let location = ok.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/v1/sales/WEB%203%2F"), "{location}");
    let found = agent.get(&location).await;
    assert_eq!(found.status(), 200);
    let found: Value = found.json().await.unwrap();
    assert_eq!(found["invoice_number"], "WEB 3/فاتورة");

    let bad = agent
        .post(
            Some(API_KEY),
            &json!({"invoice_number": "WEB-2", "items": [{"description": "X", "quantity": -1, "price": 1}]}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    let errors = body["errors"].as_object().unwrap();
    assert!(errors.keys().any(|k| k.contains("quantity")), "{body}");

    // The backend's shape in an array, and a QuickBooks-shaped one.
    let many = agent
        .post(
            Some(API_KEY),
            &json!([
                {"invoice_number": "WEB-3", "customer_name": "A", "items": [{"description": "X", "quantity": 1, "price": 5}]},
                {"DocNumber": "WEB-4", "CustomerRef": {"name": "B"}, "Line": [{"Description": "Y", "Amount": 9, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"Qty": 3}}]}
            ]),
        )
        .await;
    assert_eq!(many.status(), 202);
    let body: Value = many.json().await.unwrap();
    assert_eq!(body["jobs"].as_array().unwrap().len(), 2);

    // Auto-submit off: the pipeline stops at created.
    wait_state(&cfg, "created", 3, 20).await;
    let shown: Value = agent.get("/v1/sales/WEB-1").await.json().await.unwrap();
    assert_eq!(shown["state"], "created");
    assert!(shown["laravel_id"].as_u64().is_some());
    assert!(shown["events"].as_array().unwrap().len() >= 2);
    assert_eq!(agent.get("/v1/sales/NOPE").await.status(), 404);
    assert_eq!(fx.sandbox.requests("POST /api/invoices/{id}/submit"), 0);
    agent.stop().await;
}

async fn post_sale(agent: &Agent, sale: &Value) {
    let resp = agent.post(Some(API_KEY), sale).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
}

fn simple_sale(n: &str) -> Value {
    json!({"invoice_number": n, "customer_name": "Test Customer",
           "items": [{"description": "Widget", "quantity": 2, "price": 50}]})
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_by_the_id_scan() {
    let fx = Fixture::start().await;
    // Other vendors' invoices sit among ours in the id sequence.
    fx.sandbox.seed_foreign_invoices(5);
    let cfg = fx.service_config(json!({}));
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    post_sale(&agent, &simple_sale("EARLY-1")).await;
    wait_state(&cfg, "done", 1, 20).await;
    fx.sandbox.seed_foreign_invoices(3);
    // The backend commits the create, then the connection drops.
    fx.sandbox.inject("POST /api/invoices", Fault::DropAfter, 1);
    post_sale(&agent, &simple_sale("LOST-1")).await;
    wait_state(&cfg, "done", 2, 30).await;
    assert_eq!(fx.sandbox.invoices_with_number("LOST-1"), 1);
    let ob = outbox(&cfg);
    let job = ob.find("LOST-1").unwrap().unwrap();
    let log: Vec<String> = ob
        .events(job.id)
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.event, e.detail.unwrap_or_default()))
        .collect();
    assert!(
        log.iter()
            .any(|l| l.contains("earlier create had gone through")),
        "{log:#?}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_fresh_agents_lost_create_is_found_among_many_foreign_invoices() {
    let fx = Fixture::start().await;
    // A busy shared backend: more invoices than the scan may read, and an
    // agent that has never seen an id (its floor is 0).
    fx.sandbox.seed_foreign_invoices(800);
    let cfg = fx.service_config(json!({}));
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    fx.sandbox.inject("POST /api/invoices", Fault::DropAfter, 1);
    post_sale(&agent, &simple_sale("FIRST-1")).await;
    wait_state(&cfg, "done", 1, 30).await;
    assert_eq!(fx.sandbox.invoices_with_number("FIRST-1"), 1);
    let reads = fx.sandbox.requests("GET /api/invoices/{id}");
    assert!(
        reads < 40,
        "{reads} reads: galloping, then down from the end"
    );
    // The highest id seen is remembered for the next time.
    assert!(outbox(&cfg).max_seen_id().unwrap() >= 800);
    agent.stop().await;
}

#[tokio::test]
async fn a_configured_lookup_path_replaces_the_scan() {
    let fx = Fixture::with_options(LaravelSandboxOptions {
        lookup_route: true,
        ..Default::default()
    })
    .await;
    let cfg = fx.service_config(json!({"pipeline": {"max_backoff_seconds": 1, "lookup_path": "/api/invoices/by-number/{invoice_number}"}}),
    );
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    fx.sandbox.inject("POST /api/invoices", Fault::DropAfter, 1);
    post_sale(&agent, &simple_sale("LOOK-1")).await;
    wait_state(&cfg, "done", 1, 30).await;
    assert_eq!(fx.sandbox.invoices_with_number("LOOK-1"), 1);
    assert_eq!(fx.sandbox.requests("GET /api/invoices/{id}"), 0, "no scan");
    agent.stop().await;
}

#[tokio::test]
async fn a_number_taken_by_another_sale_parks_the_job_with_the_reason() {
    let fx = Fixture::start().await;
    let cfg = fx.service_config(json!({}));
    // Someone else already used the number for a different sale.
    let client = fx.client(&cfg, Arc::new(SystemClock));
    let mut other = sale("TAKEN-1");
    other.customer_name = "Somebody Else".into();
    client.create_invoice(&other).await.unwrap();
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    post_sale(&agent, &simple_sale("TAKEN-1")).await;
    wait_state(&cfg, "parked", 1, 20).await;
    let job = outbox(&cfg).find("TAKEN-1").unwrap().unwrap();
    let why = job.last_error.unwrap();
    assert!(
        why.contains("used by another sale") && why.contains("Somebody Else"),
        "{why}"
    );
    assert_eq!(fx.sandbox.invoices_with_number("TAKEN-1"), 1);
    agent.stop().await;
}

#[tokio::test]
async fn rejected_and_disabled_park_and_queue_retry_releases() {
    let fx = Fixture::start().await;
    let cfg = fx.service_config(json!({}));
    fx.sandbox.queue_submit_outcomes(&["rejected"]);
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    post_sale(&agent, &simple_sale("REJ-1")).await;
    wait_state(&cfg, "parked", 1, 20).await;
    let job = outbox(&cfg).find("REJ-1").unwrap().unwrap();
    assert!(
        job.last_error
            .as_deref()
            .unwrap()
            .contains("JoFotara rejected"),
        "{job:?}"
    );
    assert_eq!(job.stage.as_str(), "created");

    // A disabled vendor: submit answers 403; parked, not retried in a loop.
    fx.sandbox.set_user_active(SANDBOX_EMAIL, false);
    post_sale(&agent, &simple_sale("DIS-1")).await;
    wait_state(&cfg, "parked", 2, 20).await;
    let job = outbox(&cfg).find("DIS-1").unwrap().unwrap();
    assert!(
        job.last_error.as_deref().unwrap().contains("disabled"),
        "{job:?}"
    );
    // Parked means not submitted again. A sale taken now wakes the pipeline
    // for a pass over every due job, oldest first: were DIS-1 still due, it
    // would be submitted ahead of the new sale. Once the new sale is parked
    // too (its own submit met the same 403), the only new submit is its own.
    let submits = fx.sandbox.requests("POST /api/invoices/{id}/submit");
    post_sale(&agent, &simple_sale("DIS-2")).await;
    wait_state(&cfg, "parked", 3, 20).await;
    assert_eq!(
        fx.sandbox.requests("POST /api/invoices/{id}/submit"),
        submits + 1,
        "a parked sale was submitted again"
    );

    // The admin re-enables the account; the operator releases the jobs.
    fx.sandbox.set_user_active(SANDBOX_EMAIL, true);
    let released = outbox(&cfg).retry_all_parked(chrono::Utc::now()).unwrap();
    assert_eq!(released.len(), 3);
    // (The running agent re-reads the outbox at least every 30 s; a sale
    // arriving wakes it at once.)
    post_sale(&agent, &simple_sale("WAKE-1")).await;
    wait_state(&cfg, "done", 3, 40).await;
    // The rejected invoice stays rejected: checked, parked again, not resubmitted.
    wait_state(&cfg, "parked", 1, 20).await;
    let rej = outbox(&cfg).find("REJ-1").unwrap().unwrap();
    assert_eq!(rej.state, "parked");
    assert_eq!(fx.sandbox.invoices_with_number("DIS-1"), 1);
    assert_eq!(fx.sandbox.invoices_with_number("DIS-2"), 1);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_waited_out_with_one_global_backoff() {
    let fx = Fixture::start().await;
    let cfg =
        fx.service_config(json!({"pipeline": {"max_backoff_seconds": 900, "concurrency": 4}}));
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let agent = Agent::start(&cfg, clock).await;
    // Sign in first, then the backend goes down for an hour.
    wait_until(Duration::from_secs(5), "login", || async {
        fx.sandbox.logins_ok() == 1
    })
    .await;
    fx.sandbox.inject(
        "*",
        Fault::Status {
            status: 503,
            retry_after: None,
            html: true,
        },
        u32::MAX,
    );
    for i in 0..20 {
        post_sale(&agent, &simple_sale(&format!("OUT-{i}"))).await;
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let during = fx.sandbox.requests("POST /api/invoices");
    // Per-job retries would be 20 jobs x dozens of attempts; one global
    // backoff (2 s doubling to 15 min) is a handful of probes.
    assert!(during <= 16, "{during} create attempts during the outage");
    fx.sandbox.clear_faults();
    tokio::time::sleep(Duration::from_secs(1800)).await;
    wait_state(&cfg, "done", 20, 60).await;
    for i in 0..20 {
        assert_eq!(fx.sandbox.invoices_with_number(&format!("OUT-{i}")), 1);
    }
    let job = outbox(&cfg).find("OUT-0").unwrap().unwrap();
    let retries = outbox(&cfg)
        .events(job.id)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "retry")
        .count();
    assert!(retries >= 1);
    agent.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_submit_finish_and_a_restart_never_submits_twice() {
    let fx = Fixture::start().await;
    let cfg = fx.service_config(
        json!({"pipeline": {"max_backoff_seconds": 1, "shutdown_grace_seconds": 0,
                            "submit_settle_seconds": 4}}),
    );
    // The backend submits to JoFotara, then takes 3 s to answer; the agent
    // is stopped during that wait with no grace.
    fx.sandbox.inject(
        "POST /api/invoices/{id}/submit",
        Fault::HoldAfter(Duration::from_secs(3)),
        1,
    );
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    post_sale(&agent, &simple_sale("STOP-1")).await;
    wait_until(Duration::from_secs(10), "submit in flight", || async {
        fx.sandbox.requests("POST /api/invoices/{id}/submit") == 1
    })
    .await;
    agent.stop().await;
    let job = outbox(&cfg).find("STOP-1").unwrap().unwrap();
    assert_eq!(job.stage.as_str(), "created", "the submit was abandoned");
    assert_eq!(job.in_flight.as_deref(), Some("submit"));
    // Restart: once the settle window has passed since the submit began,
    // the agent reads the status and does not submit again.
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    wait_state(&cfg, "done", 1, 20).await;
    assert_eq!(fx.sandbox.requests("POST /api/invoices/{id}/submit"), 1);
    assert_eq!(fx.sandbox.requests("GET /api/invoices/status/{id}"), 1);
    agent.stop().await;
}

#[tokio::test]
async fn a_second_agent_on_the_same_data_folder_is_refused() {
    let fx = Fixture::start().await;
    let cfg = fx.service_config(json!({}));
    let agent = Agent::start(&cfg, Arc::new(SystemClock)).await;
    let second = service::run(&cfg, Arc::new(SystemClock), async {}).await;
    let err = second.unwrap_err();
    assert!(matches!(err, ServiceError::AlreadyRunning { .. }), "{err}");
    assert_eq!(err.exit_code(), 2);
    agent.stop().await;
}
