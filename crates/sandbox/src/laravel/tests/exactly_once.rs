//! What the real stack does that exactly-once delivery must survive: work
//! that finishes after its client left, slow work, lost answers, a broken
//! JoFotara integration, other tills.

use super::*;

const ITEMS: &str = r#"[{"description": "Tea", "quantity": 1, "price": 2.5}]"#;

fn invoice(number: &str) -> Value {
    json!({"invoice_number": number, "customer_name": "Walk-in",
           "items": serde_json::from_str::<Value>(ITEMS).unwrap()})
}

/// A submit of invoice `id` whose client gives up after `timeout`.
async fn submit_with_timeout(t: &T, token: &str, id: u64, timeout: Duration) -> reqwest::Error {
    t.c.post(t.url(&format!("/api/invoices/{id}/submit")))
        .bearer_auth(token)
        .timeout(timeout)
        .send()
        .await
        .unwrap_err()
}

fn status_of(t: &T, id: u64) -> Value {
    t.sb.invoice(id).unwrap()["status"].clone()
}

#[tokio::test(start_paused = true)]
async fn a_slow_submit_finishes_after_its_client_timed_out() {
    let t = start_with(LaravelSandboxOptions {
        finish_after_disconnect: true,
        ..Default::default()
    })
    .await;
    let token = t.login().await;
    let (s, v) = t.create(&token, "SLOW-1").await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    t.sb.inject(SUBMIT, Fault::SlowWork(Duration::from_secs(15)), 1);
    let started = Instant::now();
    let e = submit_with_timeout(&t, &token, id, Duration::from_secs(2)).await;
    assert!(e.is_timeout(), "{e:?}");
    // The backend is still in its JoFotara call: draft, nothing sent yet.
    assert_eq!(status_of(&t, id), "draft");
    assert_eq!(t.sb.jofotara_submissions(id), 0);
    let (s, v) = t
        .get_json(&token, &format!("/api/invoices/status/{id}"))
        .await;
    assert_eq!((s, v), (200, json!({"status": "draft"})));
    // It lands at the end of the work, long after the client left.
    tokio::time::sleep_until(started + Duration::from_secs(16)).await;
    assert_eq!(status_of(&t, id), "submitted");
    assert_eq!(t.sb.jofotara_submissions(id), 1);
    assert_eq!(t.sb.jofotara_submissions_by_number("SLOW-1"), 1);
    let stats = t.sb.stats_json();
    assert_eq!(stats["jofotara"]["submissions_total"], 1);
    assert_eq!(stats["jofotara"]["by_invoice"][id.to_string()]["count"], 1);
    assert_eq!(stats["settings"]["finish_after_disconnect"], true);
}

#[tokio::test(start_paused = true)]
async fn without_finish_after_disconnect_the_work_leaves_with_the_client() {
    let t = start().await;
    let token = t.login().await;
    let id = t.create(&token, "SLOW-2").await.1["id"].as_u64().unwrap();
    t.sb.inject(SUBMIT, Fault::SlowWork(Duration::from_secs(15)), 1);
    let e = submit_with_timeout(&t, &token, id, Duration::from_secs(2)).await;
    assert!(e.is_timeout());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(status_of(&t, id), "draft");
    assert_eq!(t.sb.jofotara_submissions(id), 0);
    // A slow submit the client waits for lands at its end.
    t.sb.inject(SUBMIT, Fault::SlowWork(Duration::from_secs(15)), 1);
    let started = Instant::now();
    let (s, v) = t
        .post_json(&token, &format!("/api/invoices/{id}/submit"), json!({}))
        .await;
    assert_eq!((s, v), (200, json!({"status": "submitted"})));
    assert!(started.elapsed() >= Duration::from_secs(15));
    assert_eq!(t.sb.jofotara_submissions(id), 1);
}

#[tokio::test(start_paused = true)]
async fn a_create_finishes_after_a_disconnect_and_the_retry_meets_422() {
    let t = start_with(LaravelSandboxOptions {
        finish_after_disconnect: true,
        ..Default::default()
    })
    .await;
    let token = t.login().await;
    t.sb.inject(CREATE, Fault::SlowWork(Duration::from_secs(10)), 1);
    let e =
        t.c.post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(1))
            .json(&invoice("SLOW-3"))
            .send()
            .await
            .unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(t.sb.invoices_with_number("SLOW-3"), 0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(t.sb.invoices_with_number("SLOW-3"), 1);
    let (s, v) = t
        .post_json(&token, "/api/invoices", invoice("SLOW-3"))
        .await;
    assert_eq!(s, 422, "{v}");
}

#[tokio::test(start_paused = true)]
async fn realistic_submit_changes_the_status_at_the_end_of_its_service_time() {
    let t = start_with(LaravelSandboxOptions {
        latency: LatencyProfile {
            submit: Duration::from_secs(5),
            ..LatencyProfile::none()
        },
        workers: Some(2),
        finish_after_disconnect: true,
        ..Default::default()
    })
    .await;
    let token = t.login().await;
    let id = t.create(&token, "REAL-1").await.1["id"].as_u64().unwrap();
    let started = Instant::now();
    let e = submit_with_timeout(&t, &token, id, Duration::from_secs(1)).await;
    assert!(e.is_timeout());
    assert_eq!(status_of(&t, id), "draft");
    tokio::time::sleep_until(started + Duration::from_secs(6)).await;
    assert_eq!(status_of(&t, id), "submitted");
    assert_eq!(t.sb.jofotara_submissions(id), 1);
}

#[tokio::test(start_paused = true)]
async fn answers_lost_after_the_work_still_commit_with_finish_after_disconnect() {
    let t = start_with(LaravelSandboxOptions::realistic_pool()).await;
    let token = t.login().await;
    // DropAfter: created, the answer never comes.
    t.sb.inject(CREATE, Fault::DropAfter, 1);
    let e =
        t.c.post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .json(&invoice("LOST-1"))
            .send()
            .await;
    assert!(e.is_err());
    assert_eq!(t.sb.invoices_with_number("LOST-1"), 1);
    let id = t.sb.highest_invoice_id().unwrap();
    // HoldAfter: submitted, the client gives up while the answer is held.
    t.sb.inject(SUBMIT, Fault::HoldAfter(Duration::from_secs(60)), 1);
    let e = submit_with_timeout(&t, &token, id, Duration::from_secs(5)).await;
    assert!(e.is_timeout());
    assert_eq!(status_of(&t, id), "submitted");
    assert_eq!(t.sb.jofotara_submissions(id), 1);
    // DropAfter on a submit: submitted, the answer never comes.
    let id2 = t.create(&token, "LOST-2").await.1["id"].as_u64().unwrap();
    t.sb.inject(SUBMIT, Fault::DropAfter, 1);
    assert!(t
        .c
        .post(t.url(&format!("/api/invoices/{id2}/submit")))
        .bearer_auth(&token)
        .send()
        .await
        .is_err());
    assert_eq!(status_of(&t, id2), "submitted");
}

#[tokio::test]
async fn a_broken_jofotara_integration_answers_error_to_every_submit() {
    let t = start().await;
    let token = t.login().await;
    let a = t.create(&token, "BRK-1").await.1["id"].as_u64().unwrap();
    let b = t.create(&token, "BRK-2").await.1["id"].as_u64().unwrap();
    t.sb.set_jofotara_broken(true);
    t.sb.queue_submit_outcomes(&["rejected"]);
    for id in [a, b, a] {
        let (s, v) = t
            .post_json(&token, &format!("/api/invoices/{id}/submit"), json!({}))
            .await;
        assert_eq!((s, v), (200, json!({"status": "error"})));
    }
    assert_eq!(status_of(&t, a), "error");
    assert_eq!(t.sb.jofotara_submissions(a), 2);
    assert_eq!(t.sb.stats_json()["jofotara"]["more_than_once"], json!([a]));
    // Mended over the control API: the scripted outcome comes back.
    let r =
        t.c.post(t.url("/__sandbox/settings"))
            .json(&json!({"jofotara_broken": false}))
            .send()
            .await
            .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["jofotara_broken"], false);
    let (_, v) = t
        .post_json(&token, &format!("/api/invoices/{b}/submit"), json!({}))
        .await;
    assert_eq!(v, json!({"status": "rejected"}));
    // Distinct from an organisation without any integration: 500.
    t.sb.set_jofotara_configured(false);
    let (s, _) = t
        .post_json(&token, &format!("/api/invoices/{b}/submit"), json!({}))
        .await;
    assert_eq!(s, 500);
    assert_eq!(t.sb.jofotara_submissions(b), 2);
}

#[tokio::test]
async fn another_till_creates_invoices_with_a_given_number_and_content() {
    let t = start().await;
    let token = t.login().await;
    let id =
        t.sb.create_as_another_till(
            TillVendor::Same,
            json!({"invoice_number": "TILL2-1", "customer_name": "Rana",
                   "items": [{"description": "Milk", "quantity": 2, "price": "1.03"}]}),
        )
        .unwrap();
    let inv = t.sb.invoice(id).unwrap();
    assert_eq!(inv["vendor_id"], 2);
    assert_eq!(inv["customer_name"], "Rana");
    assert_eq!(inv["items"][0]["item_name"], "Milk");
    assert_eq!(inv["status"], "draft");
    // The agent's create of the same number meets the backend's 422.
    let (s, v) = t.create(&token, "TILL2-1").await;
    assert_eq!(s, 422);
    assert_eq!(
        v["errors"]["invoice_number"][0],
        "The invoice number has already been taken."
    );
    // Another shop, over the control API.
    let r =
        t.c.post(t.url("/__sandbox/invoices"))
            .json(
                &json!({"vendor": "other", "invoice_number": " SHOP2-7 ", "customer_name": "Omar",
                          "items": [{"description": "Bread", "quantity": 1, "price": 0.5}]}),
            )
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let other = t.sb.invoice(v["id"].as_u64().unwrap()).unwrap();
    assert_eq!(other["invoice_number"], "SHOP2-7", "trimmed like the API");
    assert_ne!(other["vendor_id"], 2);
    // Its errors are the backend's own messages.
    let e =
        t.sb.create_as_another_till(TillVendor::Other, json!({"invoice_number": "SHOP2-7"}))
            .unwrap_err();
    assert!(
        e.starts_with("The invoice number has already been taken."),
        "{e}"
    );
    let r =
        t.c.post(t.url("/__sandbox/invoices"))
            .json(&json!({"vendor": "mine"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn slow_work_faults_parse_and_print() {
    let f = Fault::from_json(&json!({"kind": "slow_work", "work_ms": 15000})).unwrap();
    assert_eq!(f, Fault::SlowWork(Duration::from_secs(15)));
    assert_eq!(f.to_json(), json!({"kind": "slow_work", "work_ms": 15000}));
    assert!(Fault::from_json(&json!({"kind": "slow_work"})).is_err());
}
