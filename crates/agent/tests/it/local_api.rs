//! The local API end to end: a whole agent in this process against the
//! Laravel sandbox and the QuickBooks simulator on 127.0.0.1, every route
//! called over real HTTP, with and without the key.

use std::time::Duration;

use crate::common::live_agent::{Key, LiveAgent};
use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A keyed route of each part the server joins (the API, metrics, the
/// sales intake). Every route, with every form of key, is checked against
/// the router itself in `server::tests`; here the running agent serves them
/// over real HTTP.
const KEYED: &[(&str, &str)] = &[
    ("GET", "/api/status"),
    ("POST", "/api/quickbooks/test"),
    ("GET", "/metrics"),
    ("POST", "/v1/sales"),
];

fn method(m: &str) -> Method {
    m.parse().unwrap()
}

#[tokio::test]
async fn every_route_but_health_page_and_callback_needs_the_key() {
    let a = LiveAgent::start(true, json!({})).await;
    for (m, path) in KEYED {
        for key in [Key::None, Key::Bearer("wrong"), Key::Header("wrong")] {
            let resp = a.send(method(m), path, key).await;
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "{m} {path} {key:?}"
            );
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let body: Value = resp.json().await.unwrap();
            assert!(
                body["message"].as_str().unwrap().contains("API key"),
                "{body}"
            );
        }
    }
    // Either way of sending the key is accepted.
    for key in [Key::Bearer(API_KEY), Key::Header(API_KEY)] {
        let (status, _) = a.call(Method::GET, "/api/status", key).await;
        assert_eq!(status, StatusCode::OK, "{key:?}");
    }

    // Open: health (for monitors), the page (no data in it), the callback
    // (guarded by its state).
    let (status, health) = a.call(Method::GET, "/api/health", Key::None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    for field in [
        "status",
        "authenticated",
        "queue_depth",
        "cache_age_seconds",
        "uptime_seconds",
    ] {
        assert!(health.get(field).is_some(), "{field} in {health}");
    }
    let page = a.send(Method::GET, "/", Key::None).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("Refresh token now") && html.contains("Connect to QuickBooks"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    assert!(!html.contains(API_KEY));
    let cb = a
        .send(
            Method::GET,
            "/callback?code=x&state=forged&realmId=1",
            Key::None,
        )
        .await;
    assert_eq!(cb.status(), StatusCode::BAD_REQUEST);

    let (status, body) = a.call(Method::GET, "/api/nope", Key::Bearer(API_KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["message"].as_str().unwrap().contains("no such route"));
}

#[tokio::test]
async fn config_is_redacted_and_the_status_report_is_whole() {
    let a = LiveAgent::start(true, json!({"api_key": "connector-secret-key-1"})).await;
    let (status, cfg) = a
        .call(Method::GET, "/api/config", Key::Header(API_KEY))
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = cfg.to_string();
    for secret in [
        API_KEY,
        "connector-secret-key-1",
        SANDBOX_PASSWORD,
        pos_sandbox::quickbooks::SANDBOX_CLIENT_SECRET,
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("[REDACTED]"));
    assert_eq!(
        cfg["quickbooks"]["client_id"],
        pos_sandbox::quickbooks::SANDBOX_CLIENT_ID
    );

    a.post_sale("ST-1", "Walk-in").await;
    a.wait_job("ST-1", "done").await;
    let st = a.ok(Method::GET, "/api/status").await;
    assert_eq!(st["agent"]["running"], true);
    assert_eq!(st["laravel"]["email"], SANDBOX_EMAIL);
    assert_eq!(st["laravel"]["token_valid"], true);
    assert!(st["laravel"]["vendor_id"].is_number(), "{st}");
    assert_eq!(st["quickbooks"]["state"], "not_connected");
    assert_eq!(st["queue"]["counts"]["done"], 1);
    assert_eq!(st["queue"]["recent"][0]["invoice_number"], "ST-1");
    assert_eq!(st["health"]["backend"]["reachable"], true);
    assert!(st["attention"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().contains("not connected")));
    assert!(!st.to_string().contains(SANDBOX_PASSWORD));
}

#[tokio::test]
async fn the_laravel_token_can_be_read_refreshed_and_forgotten() {
    let a = LiveAgent::start(false, json!({})).await;
    a.post_sale("TK-1", "Walk-in").await;
    a.wait_job("TK-1", "done").await;
    let before = a.ok(Method::GET, "/api/token").await;
    assert_eq!(before["has_token"], true);
    let logins = a.fx.sandbox.requests("POST /api/vendors/login");

    let after = a.ok(Method::POST, "/api/token").await;
    assert_eq!(a.fx.sandbox.requests("POST /api/vendors/login"), logins + 1);
    assert_ne!(after["expires_at"], before["expires_at"], "{after}");
    assert_eq!(after["last_refresh"]["ok"], true);
    assert!(after["seconds_left"].as_i64().unwrap() > 3600);

    let forgotten = a.ok(Method::DELETE, "/api/token").await;
    assert_eq!(forgotten["forgotten"], true);
    assert_eq!(forgotten["has_token"], false);
    // The next sale signs in again by itself.
    a.post_sale("TK-2", "Walk-in").await;
    a.wait_job("TK-2", "done").await;
    assert_eq!(a.fx.sandbox.requests("POST /api/vendors/login"), logins + 2);

    // A refresh that cannot reach the backend says so (502), and the
    // token in hand is kept.
    a.fx.sandbox.inject(
        "POST /api/vendors/login",
        Fault::Status {
            status: 503,
            retry_after: None,
            html: false,
        },
        1,
    );
    let (status, body) = a
        .call(Method::POST, "/api/token", Key::Bearer(API_KEY))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["needs_person"], false);
    assert!(body["message"].as_str().unwrap().contains("503"), "{body}");
    let still = a.ok(Method::GET, "/api/token").await;
    assert_eq!(still["token_valid"], true, "{still}");
}

#[tokio::test]
async fn jobs_are_listed_shown_and_retried() {
    let a = LiveAgent::start(false, json!({})).await;
    a.post_sale("OK-1", "Walk-in").await;
    a.wait_job("OK-1", "done").await;
    // A disabled vendor account parks sales until someone fixes it.
    a.fx.sandbox.set_user_active(SANDBOX_EMAIL, false);
    a.post_sale("PK-1", "Walk-in").await;
    a.post_sale("PK-2", "Walk-in").await;
    a.wait_job("PK-1", "parked").await;
    a.wait_job("PK-2", "parked").await;

    let all = a.ok(Method::GET, "/api/jobs").await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(all["counts"]["parked"], 2);
    let parked = a.ok(Method::GET, "/api/jobs?state=parked&limit=1").await;
    let list = parked["jobs"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "parked");
    let (status, bad) = a
        .call(Method::GET, "/api/jobs?state=lost", Key::Bearer(API_KEY))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["message"].as_str().unwrap().contains("parked"), "{bad}");
    let (status, _) = a
        .call(Method::GET, "/api/jobs?limit=zero", Key::Bearer(API_KEY))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let one = a.ok(Method::GET, "/api/jobs/PK-1").await;
    assert!(
        one["last_error"].as_str().unwrap().contains("disabled"),
        "{one}"
    );
    assert!(!one["events"].as_array().unwrap().is_empty());
    let (status, _) = a
        .call(Method::GET, "/api/jobs/NOPE-9", Key::Bearer(API_KEY))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = a
        .call(Method::POST, "/api/jobs/OK-1/retry", Key::Bearer(API_KEY))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "done has nothing to retry: {body}"
    );

    // Fixed; one retried by hand, then all the others.
    a.fx.sandbox.set_user_active(SANDBOX_EMAIL, true);
    let retried = a.ok(Method::POST, "/api/jobs/PK-1/retry").await;
    assert_ne!(retried["state"], "parked");
    a.wait_job("PK-1", "done").await;
    let all = a.ok(Method::POST, "/api/jobs/retry-parked").await;
    assert_eq!(all["retried"], 1);
    assert_eq!(all["invoice_numbers"], json!(["PK-2"]));
    a.wait_job("PK-2", "done").await;
}

#[tokio::test]
async fn quickbooks_connects_through_the_api_and_the_callback() {
    let a = LiveAgent::start(true, json!({})).await;
    let (status, _) = a
        .call(Method::POST, "/api/quickbooks/test", Key::Bearer(API_KEY))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not connected yet");

    let flow = a.ok(Method::GET, "/api/quickbooks/connect").await;
    let authorize = flow["authorize_url"].as_str().unwrap();
    assert!(authorize.starts_with(&a.qbo.auth_base()), "{authorize}");
    // The browser at Intuit: approved, sent back to our /callback.
    let http = pos_connector::http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let at_intuit = http.get(authorize).send().await.unwrap();
    assert!(at_intuit.status().is_redirection());
    let back = at_intuit.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(back.starts_with(&a.url("/callback?")), "{back}");

    // A forged callback (another state) is refused and spends nothing.
    let forged = back.replace("state=", "state=0");
    let r = http.get(&forged).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(a.qbo.token_grants().codes_exchanged, 0);

    let r = http.get(&back).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    assert_eq!(r.headers()["location"], "/?quickbooks=connected");
    assert_eq!(a.qbo.token_grants().codes_exchanged, 1);
    // The same callback again: its state was taken.
    let again = http.get(&back).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(a.qbo.token_grants().codes_exchanged, 1);

    let link = a.ok(Method::GET, "/api/quickbooks/token").await;
    assert_eq!(link["state"], "connected");
    assert_eq!(link["realm_id"], a.qbo.realm_id());
    assert!(link["hard_expires_at"].is_string());
    let test = a.ok(Method::POST, "/api/quickbooks/test").await;
    assert_eq!(test["ok"], true, "{test}");
    let before = a.qbo.token_grants().refreshes_ok;
    let refreshed = a.ok(Method::POST, "/api/quickbooks/token").await;
    assert_eq!(refreshed["last_refresh"]["ok"], true, "{refreshed}");
    assert_eq!(a.qbo.token_grants().refreshes_ok, before + 1);

    // A sale now reaches QuickBooks too.
    a.post_sale("QB-1", "Nour Cafe").await;
    wait_until(Duration::from_secs(30), "QB-1 pushed", || async {
        let (_, j) = a
            .call(Method::GET, "/api/jobs/QB-1", Key::Bearer(API_KEY))
            .await;
        j["qbo"]["state"] == "pushed"
    })
    .await;

    let off = a.ok(Method::POST, "/api/quickbooks/disconnect").await;
    assert_eq!(off["disconnected"], true);
    assert_eq!(off["state"], "not_connected");
    assert_eq!(a.qbo.token_grants().revoked, 1);
    let (status, body) = a
        .call(Method::POST, "/api/quickbooks/token", Key::Bearer(API_KEY))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn quickbooks_routes_say_when_it_is_not_enabled() {
    let a = LiveAgent::start(false, json!({})).await;
    for (m, path) in [
        ("GET", "/api/quickbooks/token"),
        ("GET", "/api/quickbooks/connect"),
        ("POST", "/api/quickbooks/test"),
    ] {
        let (status, body) = a.call(method(m), path, Key::Bearer(API_KEY)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{m} {path}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("quickbooks.enabled"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_read_from_the_real_counters() {
    let a = LiveAgent::start(false, json!({})).await;
    a.post_sale("M-1", "Walk-in").await;
    a.wait_job("M-1", "done").await;
    let resp = a.send(Method::GET, "/metrics", Key::Bearer(API_KEY)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    for line in [
        "pos_connector_sales{state=\"done\"} 1",
        "pos_connector_sales{state=\"parked\"} 0",
        "pos_connector_backend_calls_total{backend=\"laravel\",route=\"POST /api/invoices\",status=\"201\"} 1",
        "pos_connector_backend_calls_total{backend=\"laravel\",route=\"POST /api/vendors/login\",status=\"200\"} 1",
        "pos_connector_backend_calls_total{backend=\"laravel\",route=\"POST /api/invoices/{id}/submit\",status=\"200\"} 1",
        "pos_connector_token_refreshes_total{backend=\"laravel\",outcome=\"ok\"} 1",
        "pos_connector_queue_oldest_age_seconds 0",
        "pos_connector_backend_up{backend=\"laravel\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = l.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample {l}");
    }

    // A sale that cannot go out shows as queue age.
    a.fx.sandbox.set_user_active(SANDBOX_EMAIL, false);
    a.fx.sandbox
        .queue_submit_outcomes(&["error", "error", "error", "error", "error"]);
    a.post_sale("M-2", "Walk-in").await;
    wait_until(
        Duration::from_secs(20),
        "an oldest age above zero",
        || async {
            let text = a
                .send(Method::GET, "/metrics", Key::Bearer(API_KEY))
                .await
                .text()
                .await
                .unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("pos_connector_queue_oldest_age_seconds "))
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
                || text.contains("pos_connector_sales{state=\"parked\"} 1")
        },
    )
    .await;
}

#[tokio::test]
async fn status_command_reads_the_running_service_or_the_disk() {
    let mut a = LiveAgent::start(false, json!({})).await;
    a.post_sale("CLI-1", "Walk-in").await;
    a.wait_job("CLI-1", "done").await;
    let config = a.fx.path("config.json");
    let c = config.to_str().unwrap();

    let live = run_bin(a.fx.dir.path(), &["--config", c, "status"], &[], None).await;
    assert_eq!(live.code, 0, "{live:?}");
    for want in [
        "running for",
        "signed in as",
        SANDBOX_EMAIL,
        "CLI-1",
        "backend reachable",
    ] {
        assert!(live.stdout.contains(want), "{want} in:\n{}", live.stdout);
    }
    let json_run = run_bin(
        a.fx.dir.path(),
        &["--config", c, "--json", "status"],
        &[],
        None,
    )
    .await;
    assert_eq!(json_run.code, 0, "{json_run:?}");
    let v: Value = serde_json::from_str(&json_run.stdout).unwrap();
    assert_eq!(v["agent"]["running"], true);
    assert_eq!(v["queue"]["counts"]["done"], 1);

    a.stop_agent().await;
    a.close_port();
    let offline = run_bin(
        a.fx.dir.path(),
        &["--config", c, "--json", "status"],
        &[],
        None,
    )
    .await;
    assert_eq!(offline.code, 0, "{offline:?}");
    let v: Value = serde_json::from_str(&offline.stdout).unwrap();
    assert_eq!(v["agent"]["running"], false);
    assert_eq!(v["queue"]["counts"]["done"], 1, "read from the outbox");
    assert_eq!(v["laravel"]["has_token"], true, "read from the vault");
    let text = run_bin(a.fx.dir.path(), &["--config", c, "status"], &[], None).await;
    assert!(text.stdout.contains("NOT RUNNING"), "{}", text.stdout);
}

#[tokio::test]
async fn the_heartbeat_reports_to_the_backend_and_shows_on_the_status() {
    use pos_sandbox::laravel::SANDBOX_API_KEY;
    let a = LiveAgent::start(
        false,
        json!({"api_key": SANDBOX_API_KEY, "pos_systems": ["cafe-pos"]}),
    )
    .await;
    a.fx.sandbox
        .set_config_updates(json!({"sync_interval": 45, "debug_mode": false}))
        .unwrap();
    a.post_sale("HB-1", "Walk-in").await;
    a.wait_job("HB-1", "done").await;
    wait_until(Duration::from_secs(20), "a heartbeat", || async {
        !a.fx.sandbox.heartbeats().is_empty()
    })
    .await;
    let beat = &a.fx.sandbox.heartbeats()[0];
    assert_eq!(beat["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(beat["pos_systems"], json!(["cafe-pos"]));
    assert!(beat["system_info"].is_object(), "{beat}");
    wait_until(
        Duration::from_secs(10),
        "the beat's answer applied",
        || async {
            let st = a.ok(Method::GET, "/api/status").await;
            st["health"]["heartbeat"]["last_ok_at"].is_string()
                && st["health"]["heartbeat"]["sync_interval_seconds"] == 45
        },
    )
    .await;
    let m = a
        .send(Method::GET, "/metrics", Key::Bearer(API_KEY))
        .await
        .text()
        .await
        .unwrap();
    assert!(!m.contains(SANDBOX_API_KEY));
}

#[tokio::test]
async fn the_quickbooks_cache_is_searched_and_shown_through_the_api() {
    let a = LiveAgent::start(true, json!({})).await;
    let sim = &a.qbo;
    sim.seed_customers(40);
    sim.seed_customer("Nour Cafe", true);
    sim.seed_customer("Cafe Nour Branch", true);
    sim.seed_customer("Le Petit Nour", false);
    sim.seed_vendor("Nour Supplies", true).unwrap();
    sim.seed_item("Espresso Double", Some("ESP-002"));
    sim.seed_item("Iced Espresso", Some("ICE-7"));
    let (status, _) = a
        .call(Method::GET, "/api/cache/status", Key::Bearer(API_KEY))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Connecting loads the company's lists.
    a.connect_qbo().await;
    wait_until(Duration::from_secs(30), "the full load", || async {
        let st = a.ok(Method::GET, "/api/cache/status").await;
        st["counts"]["customers"].as_u64().unwrap_or(0) >= 43 && st["last_full_at"].is_string()
    })
    .await;
    // The load's rows are committed a moment before the cache marks its
    // success in memory, which is what health reads: wait for that too.
    wait_until(
        Duration::from_secs(30),
        "the cache's age in health",
        || async { a.ok(Method::GET, "/api/health").await["cache_age_seconds"].is_u64() },
    )
    .await;

    let found = a.ok(Method::GET, "/api/search/client_names?q=nour").await;
    assert_eq!(found["query"], "nour");
    let names: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "Nour Cafe", "a prefix match first: {names:?}");
    assert!(names.contains(&"Cafe Nour Branch") && names.contains(&"Le Petit Nour"));
    assert_eq!(found["total"], 3);
    let hit = &found["results"][0];
    for field in ["id", "name", "type", "active", "sku", "unit_price"] {
        assert!(hit.get(field).is_some(), "{field} in {hit}");
    }
    assert_eq!(hit["type"], "Customer");

    let vendors = a.ok(Method::GET, "/api/search/vendor_names?q=SUPP").await;
    assert_eq!(vendors["results"][0]["name"], "Nour Supplies");
    let products = a
        .ok(Method::GET, "/api/search/product_names?q=espresso")
        .await;
    assert_eq!(products["results"][0]["name"], "Espresso Double");
    assert_eq!(products["total"], 2);
    let alias = a.ok(Method::GET, "/api/search/part_names?q=espresso").await;
    assert_eq!(alias["results"], products["results"]);
    let sku = a.ok(Method::GET, "/api/search/part_numbers?q=ice-").await;
    assert_eq!(sku["results"][0]["sku"], "ICE-7");

    // Limits: 15 by default, at most 100; bad values and indexes say so.
    let many = a.ok(Method::GET, "/api/search/client_names?q=e").await;
    assert_eq!(many["results"].as_array().unwrap().len(), 15);
    assert!(many["total"].as_u64().unwrap() > 15);
    let capped = a
        .ok(Method::GET, "/api/search/client_names?q=e&limit=500")
        .await;
    assert!(capped["results"].as_array().unwrap().len() <= 100);
    let (status, body) = a
        .call(
            Method::GET,
            "/api/search/client_names?q=e&limit=lots",
            Key::Bearer(API_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = a
        .call(Method::GET, "/api/search/colours?q=e", Key::Bearer(API_KEY))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["message"].as_str().unwrap().contains("client_names"),
        "{body}"
    );

    let idx = a.ok(Method::GET, "/api/indexes/status").await;
    assert!(idx["indexes"].as_array().unwrap().len() >= 6, "{idx}");
    let rows = a.ok(Method::GET, "/api/data/customers?limit=5").await;
    assert_eq!(rows["rows"].as_array().unwrap().len(), 5);
    assert!(rows["rows"][0]["DisplayName"].is_string(), "{rows}");
    let (status, _) = a
        .call(Method::GET, "/api/data/planets", Key::Bearer(API_KEY))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A change in QuickBooks arrives with the next (incremental) refresh.
    sim.seed_customer("Zaatar House", true);
    let report = a.ok(Method::POST, "/api/cache/refresh").await;
    assert_eq!(report["kind"], "incremental", "{report}");
    let z = a.ok(Method::GET, "/api/search/client_names?q=zaatar").await;
    assert_eq!(z["total"], 1);
    let st = a.ok(Method::GET, "/api/status").await;
    assert!(
        st["quickbooks"]["cache"]["counts"]["customers"]
            .as_u64()
            .unwrap()
            >= 44
    );
}
