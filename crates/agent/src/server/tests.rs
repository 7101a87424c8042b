//! The local API's routes as [`super::app`] wires them: the real router
//! over real state (a temp data folder, the SQLite outbox, a Laravel
//! sandbox on 127.0.0.1:0 behind the token routes), driven in-process
//! request by request; and the `Host` check, which is [`super::serve`]'s,
//! over a real listener on 127.0.0.1:0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use hyper_util::service::TowerToHyperService;
use pos_sandbox::{Fault, LaravelSandbox, LaravelSandboxOptions, SANDBOX_EMAIL, SANDBOX_PASSWORD};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::api::{LocalApi, PROMETHEUS_TEXT};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, WrongKeyDelay};
use crate::intake::{self, Intake};
use crate::retry::RetryPolicy;
use crate::store::{OutboxHandle, Stage, StepResult};

const KEY: &str = "server-unit-test-key";

/// How a request presents the key.
#[derive(Clone, Copy, Debug)]
enum Key<'a> {
    None,
    Bearer(&'a str),
    Header(&'a str),
    /// The whole `Authorization` value, as sent.
    Authorization(&'a str),
}

/// A `LocalApi` and an intake over a fresh data folder, behind the app.
struct Harness {
    dir: tempfile::TempDir,
    sandbox: LaravelSandbox,
    cfg: Config,
    outbox: OutboxHandle,
    app: Router,
    /// How often a retry woke the workers.
    woken: Arc<AtomicUsize>,
}

impl Harness {
    async fn start() -> Harness {
        let sandbox = LaravelSandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            LaravelSandboxOptions::default(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let file = json!({
            "base_url": sandbox.base_url(),
            "email": SANDBOX_EMAIL,
            "password": SANDBOX_PASSWORD,
            "data_dir": dir.path().join("data"),
            "log_dir": dir.path().join("logs"),
            "pdf_dir": dir.path().join("pdfs"),
            "invoice_folder": dir.path().join("inbox"),
            "local_api": {"bind": "127.0.0.1:0", "api_key": KEY},
        });
        std::fs::write(&path, file.to_string()).unwrap();
        let mut cfg = crate::config::load_from(&path, &[]).unwrap();
        // The penalty for a wrong key is the server's; these tests send many.
        cfg.local_api.wrong_key_delay = WrongKeyDelay {
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let outbox = OutboxHandle::open(&cfg.data_dir).unwrap();
        let laravel = crate::laravel::connect(&cfg, clock.clone(), RetryPolicy::once());
        let woken = Arc::new(AtomicUsize::new(0));
        let on_retry: Arc<dyn Fn() + Send + Sync> = {
            let woken = woken.clone();
            Arc::new(move || {
                woken.fetch_add(1, Ordering::SeqCst);
            })
        };
        let api = LocalApi::new(&cfg, clock.clone(), outbox.clone(), laravel, on_retry);
        let intake = Intake::new(
            outbox.clone(),
            intake::options_from_config(&cfg),
            clock,
            Arc::new(|_| {}),
        );
        let app = super::app(api, intake, &cfg.local_api);
        Harness {
            dir,
            sandbox,
            cfg,
            outbox,
            app,
            woken,
        }
    }

    /// One request through the app: status, headers and the body (JSON,
    /// else the text as a JSON string).
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Key<'_>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        req = match key {
            Key::None => req,
            Key::Bearer(k) => req.header(header::AUTHORIZATION, format!("Bearer {k}")),
            Key::Header(k) => req.header("x-api-key", k),
            Key::Authorization(v) => req.header(header::AUTHORIZATION, v),
        };
        let req = match body {
            Some(v) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let service = TowerToHyperService::new(self.app.clone());
        let resp = hyper::service::Service::call(&service, req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (parts.status, parts.headers, value)
    }

    /// With the key, expecting `want`; the body.
    async fn expect(&self, method: Method, path: &str, want: StatusCode) -> Value {
        self.expect_with(method, path, None, want).await
    }

    async fn expect_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: StatusCode,
    ) -> Value {
        let (status, _, v) = self
            .call(method.clone(), path, Key::Bearer(KEY), body)
            .await;
        assert_eq!(status, want, "{method} {path}: {v}");
        v
    }

    /// `POST /v1/sales` with the key, expecting `want`; the body.
    async fn post_sale(&self, sale: Value, want: StatusCode) -> Value {
        self.expect_with(Method::POST, "/v1/sales", Some(sale), want)
            .await
    }
}

fn sale(number: &str, customer: &str) -> Value {
    json!({
        "invoice_number": number,
        "customer_name": customer,
        "items": [{"description": "Tea", "quantity": 2, "price": "1.50"}],
    })
}

fn message(v: &Value) -> &str {
    v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {v}"))
}

/// Every route behind the key, with a path that reaches its handler.
const KEYED: &[(&str, &str)] = &[
    ("GET", "/api/status"),
    ("GET", "/api/config"),
    ("GET", "/api/token"),
    ("POST", "/api/token"),
    ("DELETE", "/api/token"),
    ("GET", "/api/quickbooks/token"),
    ("POST", "/api/quickbooks/token"),
    ("DELETE", "/api/quickbooks/token"),
    ("GET", "/api/quickbooks/connect"),
    ("POST", "/api/quickbooks/disconnect"),
    ("POST", "/api/quickbooks/test"),
    ("GET", "/api/jobs"),
    ("POST", "/api/jobs/retry-parked"),
    ("GET", "/api/jobs/NONE-1"),
    ("POST", "/api/jobs/NONE-1/retry"),
    ("GET", "/api/search/customers"),
    ("GET", "/api/cache/status"),
    ("POST", "/api/cache/refresh"),
    ("GET", "/api/indexes/status"),
    ("GET", "/api/data/customers"),
    ("GET", "/metrics"),
    ("POST", "/v1/sales"),
    ("GET", "/v1/sales/NONE-1"),
];

#[tokio::test]
async fn every_keyed_route_refuses_a_missing_or_wrong_key_and_takes_both_forms() {
    let h = Harness::start().await;
    for &(m, path) in KEYED {
        let method: Method = m.parse().unwrap();
        for key in [
            Key::None,
            // Another scheme is no key at all.
            Key::Authorization(&format!("Basic {KEY}")),
        ] {
            let (status, headers, v) = h.call(method.clone(), path, key, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{m} {path} {key:?}: {v}");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer", "{m} {path}");
            assert!(
                message(&v).starts_with("missing API key"),
                "{m} {path}: {v}"
            );
        }
        for key in [
            Key::Bearer("not-the-key-at-all"),
            Key::Header("not-the-key-at-all"),
            // A prefix of the key is wrong too.
            Key::Bearer(&KEY[..KEY.len() - 1]),
        ] {
            let (status, _, v) = h.call(method.clone(), path, key, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{m} {path} {key:?}: {v}");
            assert!(message(&v).starts_with("wrong API key"), "{m} {path}: {v}");
        }
        // The right key in each form reaches the handler, whatever it says
        // then (404 for the unknown job, 503 for QuickBooks off here...).
        for key in [
            Key::Bearer(KEY),
            Key::Header(KEY),
            Key::Authorization(&format!("bearer  {KEY} ")),
        ] {
            let (status, _, v) = h.call(method.clone(), path, key, None).await;
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{m} {path} {key:?}: {v}");
        }
    }
    // Nothing reached the outbox through a refused request.
    let counts = h.outbox.call(|o| o.counts()).await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), 0, "{counts:?}");
}

#[tokio::test]
async fn the_open_routes_answer_without_a_key_and_show_nothing() {
    let h = Harness::start().await;
    let (status, headers, page) = h.call(Method::GET, "/", Key::None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let page = page.as_str().unwrap();
    assert!(page.contains("<html"), "{page}");
    assert!(!page.contains(KEY));

    let (status, _, health) = h.call(Method::GET, "/api/health", Key::None, None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        (health["queue_depth"].as_u64(), health["parked"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(health["failing"], 0);
    // No call made yet, no pipeline gate, no QuickBooks here.
    for unknown in [
        "backend_reachable",
        "backend_gate",
        "quickbooks",
        "cache_age_seconds",
    ] {
        assert!(health[unknown].is_null(), "{unknown}: {health}");
    }
    assert_eq!(health["authenticated"], false);

    // The OAuth callback is open (Intuit's redirect carries no key), and
    // with QuickBooks off it says so, as a page for the browser.
    let (status, headers, page) = h
        .call(
            Method::GET,
            "/callback?state=s&code=c&realmId=1",
            Key::None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.as_str().unwrap().contains("QuickBooks is not enabled"));
}

#[tokio::test]
async fn unknown_routes_are_a_json_404_and_wrong_methods_a_405_behind_the_key() {
    let h = Harness::start().await;
    for key in [Key::None, Key::Bearer(KEY)] {
        let (status, _, v) = h.call(Method::GET, "/api/nothing-here", key, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{key:?}: {v}");
        assert!(
            message(&v).starts_with("no such route: GET /api/nothing-here"),
            "{v}"
        );
    }
    let (status, _, v) = h.call(Method::PUT, "/", Key::None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    let (status, headers, _) = h.call(Method::DELETE, "/api/health", Key::None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers[header::ALLOW].to_str().unwrap().contains("GET"));
    // A keyed path tells nothing, not even its methods, without the key.
    let (status, _, _) = h.call(Method::PUT, "/api/status", Key::None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, _) = h
        .call(Method::PUT, "/api/status", Key::Bearer(KEY), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers[header::ALLOW].to_str().unwrap().contains("GET"));
    let (status, headers, _) = h
        .call(Method::GET, "/api/jobs/X/retry", Key::Bearer(KEY), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers[header::ALLOW].to_str().unwrap().contains("POST"));
}

#[tokio::test]
async fn status_config_and_metrics_have_their_shapes_and_no_secret() {
    let h = Harness::start().await;
    let report = h.expect(Method::GET, "/api/status", StatusCode::OK).await;
    for part in [
        "generated_at",
        "agent",
        "laravel",
        "quickbooks",
        "queue",
        "inbox",
        "health",
        "attention",
    ] {
        assert!(report.get(part).is_some(), "{part} in {report}");
    }
    assert_eq!(
        report["inbox"]["folder"]
            .as_str()
            .map(std::path::PathBuf::from),
        Some(h.cfg.invoice_folder.clone())
    );

    let (status, headers, config) = h
        .call(Method::GET, "/api/config", Key::Header(KEY), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let text = config.to_string();
    assert!(
        !text.contains(KEY) && !text.contains(SANDBOX_PASSWORD),
        "{text}"
    );
    assert!(text.contains("[REDACTED]"), "{text}");
    assert!(text.contains(&h.sandbox.base_url()), "{text}");

    let (status, headers, metrics) = h
        .call(Method::GET, "/metrics", Key::Bearer(KEY), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], PROMETHEUS_TEXT);
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("pos_connector_sales"), "{metrics}");
    assert!(!metrics.contains(KEY));
}

#[tokio::test]
async fn the_token_routes_show_refresh_and_forget() {
    let h = Harness::start().await;
    let before = h.expect(Method::GET, "/api/token", StatusCode::OK).await;
    assert!(before.is_object(), "{before}");
    assert_eq!(h.sandbox.logins_ok(), 0, "looking signs in nobody");

    let refreshed = h.expect(Method::POST, "/api/token", StatusCode::OK).await;
    assert_eq!(h.sandbox.logins_ok(), 1);
    assert_ne!(refreshed, before, "the view shows the new token");
    let token_text = refreshed.to_string();
    assert!(!token_text.contains(SANDBOX_PASSWORD), "{token_text}");

    // The backend down: 502, and nobody is asked to act.
    h.sandbox.inject(
        "POST /api/vendors/login",
        Fault::Status {
            status: 503,
            retry_after: None,
            html: true,
        },
        1,
    );
    let failed = h
        .expect(Method::POST, "/api/token", StatusCode::BAD_GATEWAY)
        .await;
    assert_eq!(failed["needs_person"], false, "{failed}");
    assert!(
        message(&failed).starts_with("invoicing backend sign-in"),
        "{failed}"
    );

    let forgotten = h.expect(Method::DELETE, "/api/token", StatusCode::OK).await;
    assert_eq!(forgotten["forgotten"], true, "{forgotten}");
}

#[tokio::test]
async fn the_quickbooks_routes_say_it_is_not_enabled() {
    let h = Harness::start().await;
    for &(m, path) in KEYED.iter().filter(|(_, p)| {
        [
            "/api/quickbooks",
            "/api/search",
            "/api/cache",
            "/api/indexes",
            "/api/data",
        ]
        .iter()
        .any(|prefix| p.starts_with(prefix))
    }) {
        let v = h
            .expect(m.parse().unwrap(), path, StatusCode::SERVICE_UNAVAILABLE)
            .await;
        assert!(
            message(&v).contains("quickbooks.enabled"),
            "{m} {path}: {v}"
        );
    }
}

#[tokio::test]
async fn sales_are_taken_shown_and_refused_with_the_reason() {
    let h = Harness::start().await;
    let job = h.post_sale(sale("S-1", "Ann"), StatusCode::ACCEPTED).await;
    assert_eq!(
        (job["invoice_number"].as_str(), job["duplicate"].as_bool()),
        (Some("S-1"), Some(false))
    );
    let again = h.post_sale(sale("S-1", "Ann"), StatusCode::ACCEPTED).await;
    assert_eq!(again["duplicate"], true, "{again}");
    let taken = h.post_sale(sale("S-1", "Bob"), StatusCode::CONFLICT).await;
    assert!(
        taken["conflicts"].as_array().is_some_and(|c| c.len() == 1),
        "{taken}"
    );
    let bad = h
        .post_sale(
            json!({"customer_name": "X", "items": [{"description": "A", "quantity": 1, "price": "abc"}]}),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(
        bad["errors"].as_object().is_some_and(|e| !e.is_empty()),
        "{bad}"
    );

    let shown = h.expect(Method::GET, "/v1/sales/S-1", StatusCode::OK).await;
    assert_eq!(shown["invoice_number"], "S-1");
    let none = h
        .expect(Method::GET, "/v1/sales/S-2", StatusCode::NOT_FOUND)
        .await;
    assert!(none["message"].is_string(), "{none}");
    let counts = h.outbox.call(|o| o.counts()).await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), 1, "{counts:?}");
}

#[tokio::test]
async fn the_job_routes_list_show_and_retry() {
    let h = Harness::start().await;
    for (n, who) in [("J-1", "Ann"), ("J-2", "Bob"), ("J-3", "Cy")] {
        h.post_sale(sale(n, who), StatusCode::ACCEPTED).await;
    }
    let now = chrono::Utc::now();
    h.outbox
        .call(move |o| {
            let parked = o.find("J-2")?.unwrap();
            o.park(parked.id, "JoFotara rejected it (test)", now)?;
            let done = o.find("J-3")?.unwrap();
            let result = StepResult {
                laravel_id: Some(7),
                uuid: None,
                backend_status: Some("submitted".into()),
                pdf_path: None,
            };
            o.record_step(done.id, Stage::Done, &result, "done (test)", now)?;
            Ok(())
        })
        .await
        .unwrap();

    let all = h.expect(Method::GET, "/api/jobs", StatusCode::OK).await;
    assert_eq!(
        (all["limit"].as_u64(), all["state"].is_null()),
        (Some(50), true),
        "{all}"
    );
    let numbers: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["invoice_number"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["J-3", "J-2", "J-1"], "newest first");
    assert_eq!(
        (
            all["counts"]["parked"].as_u64(),
            all["counts"]["done"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let parked = h
        .expect(
            Method::GET,
            "/api/jobs?state=parked&limit=5",
            StatusCode::OK,
        )
        .await;
    assert_eq!(parked["jobs"].as_array().unwrap().len(), 1, "{parked}");
    assert_eq!(parked["jobs"][0]["invoice_number"], "J-2");
    let capped = h
        .expect(Method::GET, "/api/jobs?limit=999999", StatusCode::OK)
        .await;
    assert_eq!(capped["limit"], 1000);
    for bad in [
        "/api/jobs?state=lost",
        "/api/jobs?limit=0",
        "/api/jobs?limit=many",
    ] {
        let v = h.expect(Method::GET, bad, StatusCode::BAD_REQUEST).await;
        assert!(!message(&v).is_empty(), "{bad}");
    }

    let one = h.expect(Method::GET, "/api/jobs/J-2", StatusCode::OK).await;
    assert_eq!(one["state"], "parked");
    let events: Vec<&str> = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"parked"), "{events:?}");
    let none = h
        .expect(Method::GET, "/api/jobs/J-9", StatusCode::NOT_FOUND)
        .await;
    assert!(message(&none).contains("J-9"), "{none}");

    // Retrying: a parked job is due again and the workers are woken; a
    // done one has nothing to retry; an unknown one is not there.
    let retried = h
        .expect(Method::POST, "/api/jobs/J-2/retry", StatusCode::OK)
        .await;
    assert_ne!(retried["state"], "parked", "{retried}");
    assert_eq!(h.woken.load(Ordering::SeqCst), 1);
    let done = h
        .expect(Method::POST, "/api/jobs/J-3/retry", StatusCode::CONFLICT)
        .await;
    assert!(message(&done).contains("done"), "{done}");
    h.expect(Method::POST, "/api/jobs/J-9/retry", StatusCode::NOT_FOUND)
        .await;
    assert_eq!(h.woken.load(Ordering::SeqCst), 1, "only a retry wakes them");

    // Every parked job at once; none parked is not an error.
    h.outbox
        .call(move |o| {
            let j = o.find("J-1")?.unwrap();
            o.park(j.id, "test", now)?;
            Ok(())
        })
        .await
        .unwrap();
    let all = h
        .expect(Method::POST, "/api/jobs/retry-parked", StatusCode::OK)
        .await;
    assert_eq!(all, json!({"retried": 1, "invoice_numbers": ["J-1"]}));
    assert_eq!(h.woken.load(Ordering::SeqCst), 2);
    let none = h
        .expect(Method::POST, "/api/jobs/retry-parked", StatusCode::OK)
        .await;
    assert_eq!(none, json!({"retried": 0, "invoice_numbers": []}));
    assert_eq!(
        h.woken.load(Ordering::SeqCst),
        2,
        "nothing to wake them for"
    );
}

/// One request over TCP with these raw head lines; the status and body.
async fn raw(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn a_host_that_is_not_this_machine_is_a_421_before_any_route() {
    let h = Harness::start().await;
    let listener = super::bind(&h.cfg.local_api).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve(
        listener,
        h.app.clone(),
        super::ServeOptions::from_config(&h.cfg),
        async {
            let _ = stopped.await;
        },
    ));
    let port = addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
    ] {
        let (status, body) = raw(
            addr,
            &format!("GET /api/health HTTP/1.1\r\nHost: {host}\r\n"),
        )
        .await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    for path in ["/api/health", "/api/status", "/nowhere"] {
        let (status, body) = raw(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: evil.example:{port}\r\nX-API-Key: {KEY}\r\n"),
        )
        .await;
        assert_eq!(status, 421, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(message(&v).contains("is not this machine"), "{v}");
    }
    let (status, _) = raw(
        addr,
        "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n",
    )
    .await;
    assert_eq!(status, 400);
    let _ = stop.send(());
    server.await.unwrap();
    drop(h.dir);
}
