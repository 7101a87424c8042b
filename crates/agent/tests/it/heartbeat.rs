//! The fleet heartbeat over real HTTP: against the Laravel sandbox's
//! connector channel (and a purpose-built fake where the sandbox is too
//! well-behaved), with a real outbox in a temp folder, tokio's paused clock
//! for the intervals, and the logs captured to check what is said, how
//! often, and that the key is never in them.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use chrono::{DateTime, TimeZone, Utc};
use pos_connector::clock::{Clock, TokioClock};
use pos_connector::config::{self, Config, ENV_CONNECTOR_API_KEY};
use pos_connector::heartbeat::{Heartbeat, HeartbeatStatus, FIRST_BEAT_AFTER};
use pos_connector::intake::inbox::Inbox;
use pos_connector::intake::{self, Intake};
use pos_connector::laravel::{ConnectorClient, ConnectorError};
use pos_connector::store::{NewJob, Outbox, OutboxHandle, Stage, StepResult};
use pos_connector::sync_interval::SyncInterval;
use pos_sandbox::laravel::SANDBOX_API_KEY;
use serde_json::{json, Value};
use tokio::time::Instant;

const HEARTBEAT: &str = "POST /api/pos-connector/heartbeat";
const MINUTE: Duration = Duration::from_secs(60);
/// Deadline of the waits, on the paused clock: long, because that clock
/// jumps to the next timer whenever every task waits, also while one waits
/// for a real thread (the outbox's), so a busy machine can make minutes of
/// paused time pass while a sale is committed. A real failure still ends
/// the wait within seconds of real time. What is measured (when a beat
/// began, when a sale was taken in) is read from the agent's own clock, not
/// from when this test noticed it.
const PATIENCE: Duration = Duration::from_secs(6 * 3600);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Everything logged on this test's thread (the tests run on a
/// current-thread runtime, so the agent's tasks log here too), at every
/// level and from every crate. Every test of this file captures, even those
/// that do not read the logs: a thread logging with no subscriber while
/// another test starts one can make tracing cache "nobody listens" for a
/// log line, and a test reading the logs would then miss it.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Lines at `level` (`"WARN"`, `"INFO"`) that contain `needle`.
    fn lines(&self, level: &str, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(&format!(" {level} ")) && l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter(self.0.clone())
    }
}

/// Waits until `check` holds for the heartbeat's status. Like
/// `wait_until`, but while a beat is under way it only yields instead of
/// sleeping, so the paused clock stands still until the beat is over: the
/// beats keep their schedule however long the outbox's thread takes.
async fn wait_beats(hb: &Heartbeat, what: &str, check: impl Fn(&HeartbeatStatus) -> bool) {
    let end = Instant::now() + PATIENCE;
    loop {
        let st = hb.status();
        if check(&st) {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}: {st:?}");
        if st.in_flight {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A config for the sandbox with the connector channel on.
fn hb_config(fx: &Fixture, extra: Value) -> Config {
    let mut base = json!({
        "api_key": SANDBOX_API_KEY,
        "heartbeat_minutes": 1,
        "pos_systems": ["square", "shopify"],
        "sync_interval": 30,
        "request_timeout_secs": 5,
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    fx.config(base)
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_750_000_000 + secs, 0).unwrap()
}

fn new_job(n: &str) -> NewJob {
    NewJob {
        invoice_number: n.into(),
        sale_json: format!("{{\"invoice_number\":\"{n}\"}}"),
        content_hash: format!("hash-{n}"),
        source: "test".into(),
    }
}

/// An outbox in `cfg.data_dir` holding A (created at the backend at
/// `at(30)`), B (parked) and C (queued): 2 pending, 1 parked.
fn seeded_outbox(cfg: &Config) -> OutboxHandle {
    let mut o = Outbox::open(&cfg.data_dir).unwrap();
    let a = o.enqueue(&new_job("A"), at(0)).unwrap().job().id;
    let b = o.enqueue(&new_job("B"), at(10)).unwrap().job().id;
    o.enqueue(&new_job("C"), at(20)).unwrap();
    o.record_step(a, Stage::Created, &StepResult::default(), "id 1", at(30))
        .unwrap();
    o.park(b, "rejected by JoFotara", at(40)).unwrap();
    OutboxHandle::start(o).unwrap()
}

fn heartbeat(cfg: &Config, outbox: OutboxHandle, sync: &SyncInterval) -> Heartbeat {
    Heartbeat::from_config(cfg, outbox, sync.clone(), Arc::new(TokioClock::new()))
        .expect("api_key is configured")
}

/// Runs `hb` on a task until the returned sender is dropped or fires.
fn spawn_run(hb: &Heartbeat) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let hb = hb.clone();
    tokio::spawn(async move {
        hb.run(async {
            let _ = stopped.await;
        })
        .await
    });
    stop
}

// ---------------------------------------------------------------------------
// The beat and its body
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn heartbeats_carry_the_key_and_every_field_at_the_interval() {
    let (logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let cfg = hb_config(&fx, json!({}));
    let outbox = seeded_outbox(&cfg);
    let sync = SyncInterval::new(cfg.sync_interval);
    let clock = Arc::new(TokioClock::new());
    let t0 = clock.now();
    let hb = Heartbeat::from_config(&cfg, outbox, sync.clone(), clock).unwrap();
    let _stop = spawn_run(&hb);

    wait_beats(&hb, "the first heartbeat", |st| st.beats_ok == 1).await;
    // Times on the agent's (paused) clock when each beat began: observing
    // them from here would add the time the paused clock skips while the
    // outbox's thread works.
    let first_at = hb.status().last_attempt_at.unwrap();
    assert_eq!(
        (first_at - t0).to_std().unwrap(),
        FIRST_BEAT_AFTER,
        "DEBUG {:?} requests {} logs {}",
        hb.status(),
        fx.sandbox.requests(HEARTBEAT),
        logs.text()
    );
    // The sandbox records only beats whose X-API-Key it accepts.
    assert_eq!(fx.sandbox.responses(HEARTBEAT, 200), 1);
    assert_eq!(fx.sandbox.responses(HEARTBEAT, 401), 0);
    let body = &fx.sandbox.heartbeats()[0];
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["pos_systems"], json!(["square", "shopify"]));
    assert_eq!(body["transactions_pending"], 2);
    assert_eq!(body["transactions_parked"], 1);
    assert_eq!(
        body["last_sync"],
        json!(at(30).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    let info = &body["system_info"];
    assert_eq!(info["os"], std::env::consts::OS);
    assert_eq!(info["arch"], std::env::consts::ARCH);
    assert!(
        info["hostname"].as_str().is_some_and(|h| !h.is_empty()),
        "{info}"
    );
    assert_eq!(info["pid"], std::process::id());
    assert_eq!(info["uptime_seconds"], FIRST_BEAT_AFTER.as_secs());
    assert_eq!(info["heartbeat_interval_seconds"], 60);
    assert_eq!(info["sync_interval_seconds"], 30);
    assert_eq!(info["queue"]["parked"], 1);
    assert_eq!(info["queue"]["created"], 1);
    assert_eq!(
        info["oldest_pending_since"],
        json!(at(0).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    assert!(info.get("outbox_error").is_none(), "{info}");

    // The answer: the sandbox's sync_interval (300) replaced the config's 30.
    let st = hb.status();
    assert!(st.enabled);
    assert_eq!(st.sync_interval_seconds, Some(300));
    assert_eq!(sync.get(), Duration::from_secs(300));
    assert_eq!(st.config_updates["debug_mode"], json!(false));
    assert!(st.server_time.is_some());
    assert!(st.last_ok_at.is_some() && st.last_attempt_at.is_some());
    assert_eq!((st.beats_ok, st.consecutive_failures), (1, 0));
    assert!(!st.in_flight);

    // The next beat one interval later, and it reports the new interval.
    wait_beats(&hb, "the second heartbeat", |st| st.beats_ok == 2).await;
    let second_at = hb.status().last_attempt_at.unwrap();
    assert_eq!((second_at - first_at).to_std().unwrap(), MINUTE);
    let second = &fx.sandbox.heartbeats()[1];
    assert_eq!(second["system_info"]["sync_interval_seconds"], 300);
    assert_eq!(second["system_info"]["uptime_seconds"], 65);

    // Said once, and the key nowhere: not in logs (every level, every
    // crate), not in Debug output.
    assert_eq!(
        logs.lines("INFO", "heartbeat accepted by the backend")
            .len(),
        1
    );
    assert_eq!(
        logs.lines("INFO", "sync interval changed by the backend")
            .len(),
        1
    );
    assert_eq!(logs.lines("INFO", "debug_mode").len(), 1);
    assert_eq!(logs.lines("DEBUG", "heartbeat accepted").len(), 1);
    let text = logs.text();
    assert!(!text.contains(SANDBOX_API_KEY), "the key is in the logs");
    for shown in [format!("{hb:?}"), format!("{cfg:?}"), format!("{st:?}")] {
        assert!(!shown.contains(SANDBOX_API_KEY), "{shown}");
    }
}

/// One scripted answer: status, Content-Type, body.
type Answer = (u16, &'static str, String);
/// What a request brought: its headers and body.
type Seen = (axum::http::HeaderMap, String);

/// A backend stand-in that answers from a script and records what it got.
struct Fake {
    base: String,
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start() -> Fake {
        use axum::response::IntoResponse;
        let script: Arc<Mutex<VecDeque<Answer>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (s, r) = (script.clone(), seen.clone());
        let app =
            axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
                let (r, s) = (r.clone(), s.clone());
                async move {
                    r.lock().unwrap().push((headers, body));
                    let (status, content_type, body) = s.lock().unwrap().pop_front().unwrap_or((
                        500,
                        "text/plain",
                        "script exhausted".into(),
                    ));
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [(axum::http::header::CONTENT_TYPE, content_type)],
                        body,
                    )
                        .into_response()
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { base, script, seen }
    }

    fn answer(&self, status: u16, content_type: &'static str, body: &str) {
        self.script
            .lock()
            .unwrap()
            .push_back((status, content_type, body.to_string()));
    }
}

#[tokio::test]
async fn headers_garbage_server_errors_and_generous_answers() {
    let (logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let fake = Fake::start().await;
    let cfg = hb_config(&fx, json!({"base_url": fake.base}));
    let sync = SyncInterval::new(cfg.sync_interval);
    let hb = heartbeat(&cfg, seeded_outbox(&cfg), &sync);

    fake.answer(
        200,
        "text/html",
        "<html><body>Welcome to nginx!</body></html>",
    );
    fake.answer(500, "text/html", "<html>Whoops</html>");
    // PHP: numbers as strings, unknown fields, updates in a string.
    fake.answer(
        200,
        "application/json",
        r#"{"status":"ok","config_updates":{"sync_interval":"45","debug_mode":"1"},"server_time":"2025-07-12T10:00:00+03:00","fleet":"blue"}"#,
    );
    // PHP's empty array for "no updates", and no server_time at all.
    fake.answer(
        200,
        "application/json",
        r#"{"status":"ok","config_updates":[]}"#,
    );

    let e = hb.beat().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Api(_)), "{e:?}");
    assert!(e.to_string().contains("could not understand"), "{e}");
    assert_eq!(hb.status().consecutive_failures, 1);
    let e = hb.beat().await.unwrap_err();
    assert!(e.to_string().contains("server error 500"), "{e}");
    let st = hb.status();
    assert_eq!(st.consecutive_failures, 2);
    assert!(!st.needs_person);

    let answer = hb.beat().await.unwrap();
    assert_eq!(answer.extra["fleet"], json!("blue"));
    assert_eq!(sync.get(), Duration::from_secs(45));
    let st = hb.status();
    assert_eq!(
        (st.consecutive_failures, st.last_error.as_deref()),
        (0, None)
    );
    assert_eq!(st.server_time.as_deref(), Some("2025-07-12T10:00:00+03:00"));

    let answer = hb.beat().await.unwrap();
    assert!(answer.config_updates.is_empty());
    assert_eq!(sync.get(), Duration::from_secs(45), "kept when not sent");
    assert!(hb.status().config_updates.is_empty());

    // Every request: the key in X-API-Key, JSON asked for, JSON sent.
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for (headers, body) in &seen {
        assert_eq!(headers["x-api-key"], SANDBOX_API_KEY);
        assert_eq!(headers["accept"], "application/json");
        assert_eq!(headers["content-type"], "application/json");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["transactions_pending"], 2);
    }
    // Garbage, then a 500: two kinds of failure, two warnings; then one
    // recovery.
    assert_eq!(logs.lines("WARN", "heartbeat failed").len(), 2);
    assert_eq!(logs.lines("INFO", "heartbeat recovered").len(), 1);
    assert!(!logs.text().contains(SANDBOX_API_KEY));
}

#[tokio::test]
async fn the_connection_test_names_the_shop() {
    let (_logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let cfg = hb_config(&fx, json!({}));
    let client = ConnectorClient::from_config(&cfg).unwrap();
    let t = client.test().await.unwrap();
    assert!(t.is_ok());
    assert_eq!(t.customer.as_deref(), Some("Sandbox Shop"));
    assert_eq!(t.customer_id.as_deref(), Some("1"));
    assert_eq!(
        t.message.as_deref(),
        Some("POS Connector is successfully connected to JoFotara!")
    );

    fx.sandbox.set_api_key("another-key");
    let e = client.test().await.unwrap_err();
    assert!(matches!(e, ConnectorError::KeyRefused { .. }), "{e:?}");
    assert!(e.to_string().contains("Invalid API key"), "{e}");
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_refused_key_is_reported_once_and_beats_go_on() {
    let (logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let wrong = "not-the-shop-key-42";
    let cfg = hb_config(&fx, json!({"api_key": wrong}));
    let sync = SyncInterval::new(cfg.sync_interval);
    let hb = heartbeat(&cfg, seeded_outbox(&cfg), &sync);
    let _stop = spawn_run(&hb);

    wait_beats(&hb, "the first refusal", |st| st.consecutive_failures == 1).await;
    let st = hb.status();
    let first_at = st.last_attempt_at.unwrap();
    let err = st.last_error.clone().unwrap();
    assert!(err.contains("refused the connector API key"), "{err}");
    assert!(
        err.contains("\"api_key\"") && err.contains(ENV_CONNECTOR_API_KEY),
        "{err}"
    );
    assert!(st.needs_person);
    assert_eq!(st.sync_interval_seconds, Some(30), "nothing applied");

    // The next beats still come, each one interval later.
    wait_beats(&hb, "the second refusal", |st| st.consecutive_failures == 2).await;
    let gap = (hb.status().last_attempt_at.unwrap() - first_at)
        .to_std()
        .unwrap();
    assert_eq!(gap, MINUTE);
    assert_eq!(fx.sandbox.responses(HEARTBEAT, 401), 2);
    wait_beats(&hb, "a third refusal", |st| st.consecutive_failures == 3).await;
    assert!(fx.sandbox.heartbeats().is_empty());
    let warns = logs.lines("WARN", "heartbeat failed");
    assert_eq!(warns.len(), 1, "{warns:?}");
    assert!(warns[0].contains("POS_CONNECTOR_API_KEY"), "{}", warns[0]);
    assert!(!logs.text().contains(wrong), "the key is in the logs");

    // The shop's key is fixed at the backend: the heartbeat recovers by
    // itself at the next beat.
    fx.sandbox.set_api_key(wrong);
    wait_beats(&hb, "recovery", |st| st.beats_ok == 1).await;
    assert_eq!(hb.status().last_error, None);
    assert_eq!(logs.lines("INFO", "heartbeat recovered").len(), 1);
}

#[tokio::test]
async fn a_key_from_the_environment_is_named_as_such() {
    let (_logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let p = fx.write_config(json!({"password": SANDBOX_PASSWORD, "api_key": SANDBOX_API_KEY}));
    let env = [(
        ENV_CONNECTOR_API_KEY.to_string(),
        "stale-env-key".to_string(),
    )];
    let cfg = config::load_from(&p, &env).unwrap();
    let sync = SyncInterval::new(cfg.sync_interval);
    let hb = heartbeat(&cfg, seeded_outbox(&cfg), &sync);
    let e = hb.beat().await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("comes from the POS_CONNECTOR_API_KEY environment variable"),
        "{text}"
    );
    assert!(!text.contains("stale-env-key"));
    assert!(!format!("{hb:?}").contains("stale-env-key"));
}

#[tokio::test(start_paused = true)]
async fn a_backend_down_counts_failures_warns_once_and_recovers() {
    let (logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let cfg = hb_config(&fx, json!({}));
    let sync = SyncInterval::new(cfg.sync_interval);
    let hb = heartbeat(&cfg, seeded_outbox(&cfg), &sync);
    // Three beats find the connection cut before the backend answers.
    fx.sandbox.inject(HEARTBEAT, Fault::Drop, 3);
    let _stop = spawn_run(&hb);

    wait_beats(&hb, "three failed beats", |st| st.consecutive_failures == 3).await;
    let st = hb.status();
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("could not reach the backend"),
        "{st:?}"
    );
    assert_eq!((st.beats_ok, st.beats_failed), (0, 3));
    assert!(!st.needs_person);
    assert_eq!(logs.lines("WARN", "heartbeat failed").len(), 1);
    assert_eq!(
        logs.lines("WARN", "").len(),
        1,
        "no other warning: {}",
        logs.text()
    );

    wait_beats(&hb, "recovery", |st| st.beats_ok == 1).await;
    let st = hb.status();
    assert_eq!((st.consecutive_failures, st.last_error), (0, None));
    assert_eq!(fx.sandbox.requests(HEARTBEAT), 4);
    assert_eq!(fx.sandbox.heartbeats().len(), 1);
    assert_eq!(logs.lines("INFO", "heartbeat recovered").len(), 1);
    assert_eq!(logs.lines("WARN", "").len(), 1);
}

#[tokio::test]
async fn an_unreachable_backend_is_a_network_failure() {
    let (logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cfg = hb_config(&fx, json!({"base_url": url}));
    let sync = SyncInterval::new(cfg.sync_interval);
    let hb = heartbeat(&cfg, seeded_outbox(&cfg), &sync);
    for _ in 0..3 {
        let e = hb.beat().await.unwrap_err();
        assert!(e.to_string().contains("connection failed"), "{e}");
    }
    assert_eq!(hb.status().consecutive_failures, 3);
    assert_eq!(sync.get(), Duration::from_secs(30));
    assert_eq!(logs.lines("WARN", "").len(), 1, "{}", logs.text());
}

// ---------------------------------------------------------------------------
// config_updates
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_backends_sync_interval_is_applied_within_bounds() {
    let (logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let cfg = hb_config(&fx, json!({}));
    let sync = SyncInterval::new(cfg.sync_interval);
    let hb = heartbeat(&cfg, seeded_outbox(&cfg), &sync);
    let secs = Duration::from_secs;

    let cases: [(Value, u64); 6] = [
        (json!(1), 10),
        (json!("999999"), 3600),
        (json!(120), 120),
        (json!("45"), 45),
        (json!("soon"), 45),
        (json!(-3), 45),
    ];
    for (value, expected) in cases {
        fx.sandbox
            .set_config_updates(json!({"sync_interval": value, "debug_mode": false}))
            .unwrap();
        hb.beat().await.unwrap();
        assert_eq!(sync.get(), secs(expected), "after {value}");
        assert_eq!(hb.status().sync_interval_seconds, Some(expected));
    }
    let clamped = logs.lines("INFO", "outside the allowed 10 to 3600 s");
    assert_eq!(clamped.len(), 2, "{clamped:?}");
    assert!(clamped[0].contains("asked for 1 s") && clamped[0].contains("every 10 s"));
    assert!(clamped[1].contains("asked for 999999 s") && clamped[1].contains("every 3600 s"));
    assert_eq!(
        logs.lines("INFO", "sync interval changed by the backend")
            .len(),
        4
    );
    assert_eq!(logs.lines("WARN", "sync_interval is not a number").len(), 2);

    // The same answer again changes nothing and says nothing.
    let before = logs.text().len();
    hb.beat().await.unwrap();
    assert_eq!(sync.get(), secs(45));
    let after = logs.text()[before..].to_string();
    assert!(
        !after.contains(" INFO ") && !after.contains(" WARN "),
        "{after}"
    );

    // Other settings: logged when their value changes, never applied.
    assert_eq!(logs.lines("INFO", "debug_mode").len(), 1);
    fx.sandbox
        .set_config_updates(json!({"sync_interval": "45", "debug_mode": true}))
        .unwrap();
    hb.beat().await.unwrap();
    hb.beat().await.unwrap();
    let debug = logs.lines("INFO", "debug_mode");
    assert_eq!(debug.len(), 2, "{debug:?}");
    assert!(debug[1].contains("debug_mode = true") && debug[1].contains("does not use it"));
    assert_eq!(hb.status().config_updates["debug_mode"], json!(true));
    assert_eq!(sync.get(), secs(45));
}

/// Issue 10, point 14: a change by the backend's answer is logged once with
/// the old and the new value, and `status` (the report the page, the API
/// and `pos-connector status` show) says where the interval in force comes
/// from.
#[tokio::test]
async fn the_interval_in_force_and_its_origin_are_in_the_status() {
    use pos_connector::status::{self, Live};
    use pos_connector::sync_interval::Origin;
    let (logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let cfg = hb_config(&fx, json!({}));
    let sync = SyncInterval::new(cfg.sync_interval);
    let outbox = seeded_outbox(&cfg);
    let hb = heartbeat(&cfg, outbox.clone(), &sync);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let client = fx.client(&cfg, clock.clone());
    let report = || async {
        let live = Live {
            sync: Some(sync.clone()),
            ..Live::default()
        };
        status::collect(&cfg, clock.now(), &outbox, &client, None, Some(live))
            .await
            .unwrap()
    };
    let r = report().await;
    assert_eq!(r.inbox.interval_seconds, 30);
    assert_eq!(r.inbox.interval_origin, Origin::Config);
    assert!(r
        .render_text()
        .contains("every 30 s (sync_interval in config.json)"));

    fx.sandbox
        .set_config_updates(json!({"sync_interval": 45}))
        .unwrap();
    for _ in 0..3 {
        hb.beat().await.unwrap();
    }
    let r = report().await;
    assert_eq!(
        (
            r.inbox.interval_seconds,
            r.inbox.interval_origin,
            r.inbox.configured_interval_seconds
        ),
        (45, Origin::BackendHeartbeat, 30)
    );
    let shown = serde_json::to_value(&r).unwrap();
    assert_eq!(shown["inbox"]["interval_origin"], "backend_heartbeat");
    let text = r.render_text();
    assert!(
        text.contains("every 45 s (the backend's heartbeat answer; config.json says 30 s)"),
        "{text}"
    );
    assert_eq!(
        hb.status().sync_interval_origin,
        Some(Origin::BackendHeartbeat)
    );
    let changed = logs.lines("INFO", "sync interval changed by the backend");
    assert_eq!(changed.len(), 1, "once for three answers: {changed:?}");
    assert!(
        changed[0].contains("every 45 s (was 30 s)"),
        "{}",
        changed[0]
    );

    // An answer without it keeps it (PHP's `[]`): still the backend's.
    fx.sandbox.set_config_updates(json!({})).unwrap();
    hb.beat().await.unwrap();
    let r = report().await;
    assert_eq!(
        (r.inbox.interval_seconds, r.inbox.interval_origin),
        (45, Origin::BackendHeartbeat)
    );
}

#[tokio::test(start_paused = true)]
async fn the_inbox_polls_on_the_interval_the_backend_sets() {
    let (_logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let cfg = hb_config(&fx, json!({"intake": {"settle_seconds": 0}}));
    fx.sandbox
        .set_config_updates(json!({"sync_interval": 1}))
        .unwrap();
    let clock = Arc::new(TokioClock::new());
    let outbox = OutboxHandle::open(&cfg.data_dir).unwrap();
    // An hour between looks, as configured before the backend speaks.
    let sync = SyncInterval::new(Duration::from_secs(3600));
    let intake = Intake::new(
        outbox.clone(),
        intake::options_from_config(&cfg),
        clock.clone(),
        Arc::new(|_| {}),
    );
    let inbox = Inbox::new(
        cfg.invoice_folder.clone(),
        intake,
        sync.clone(),
        cfg.intake.settle,
        clock.clone(),
    );
    let first_look = clock.now();
    let (stop_inbox, inbox_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        inbox
            .run(async {
                let _ = inbox_stopped.await;
            })
            .await
    });
    // The inbox's first look (empty, at once) is done; a till drops a file.
    // The look starts by creating the inbox's folders and, with nothing to
    // read, never waits until it sleeps for the interval: on this
    // single-threaded runtime, once the folders are seen the look is over.
    wait_until(PATIENCE, "the inbox's first look", || async {
        cfg.invoice_folder.join("archive").is_dir()
    })
    .await;
    let file = cfg.invoice_folder.join("sale.json");
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/intake/minimal_format.json");
    std::fs::write(&file, std::fs::read(sample).unwrap()).unwrap();

    // One beat only while this test waits (the next would be a day on),
    // so the status's last answer is the one that changed the interval.
    let hb = Heartbeat::new(
        ConnectorClient::from_config(&cfg).unwrap(),
        outbox.clone(),
        sync.clone(),
        clock,
        Duration::from_secs(24 * 3600),
        vec![],
    );
    let _stop = spawn_run(&hb);
    wait_beats(&hb, "the backend's answer", |st| st.beats_ok == 1).await;
    wait_until(PATIENCE, "the file taken in", || async {
        files_under(&cfg.invoice_folder.join("archive")).len() == 1
    })
    .await;
    assert!(!file.exists());
    assert_eq!(sync.get(), Duration::from_secs(10), "1 s is held at 10 s");

    // When it was taken in, on the agent's clock: after the backend's
    // answer (not before: the hour was not over), and at the latest when
    // the new interval since the first look was over (or at once, if that
    // was already past when the answer came).
    let st = hb.status();
    assert_eq!(st.beats_ok, 1);
    let changed_at = st.last_ok_at.unwrap();
    let taken_at = outbox
        .call(|o| o.queue_stats())
        .await
        .unwrap()
        .oldest_pending_since
        .unwrap();
    assert!(
        taken_at >= changed_at,
        "taken {taken_at}, changed {changed_at}"
    );
    let due = changed_at.max(first_look + chrono::Duration::seconds(10));
    assert!(
        taken_at <= due + chrono::Duration::seconds(1),
        "taken {taken_at}, due {due}"
    );
    let _ = stop_inbox.send(());
}

#[tokio::test]
async fn no_heartbeat_without_an_api_key() {
    let (_logs, _guard) = Logs::capture();
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({}));
    assert!(cfg.connector.api_key.is_none());
    let outbox = OutboxHandle::open(&cfg.data_dir).unwrap();
    let sync = SyncInterval::new(cfg.sync_interval);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    assert!(Heartbeat::from_config(&cfg, outbox.clone(), sync.clone(), clock.clone()).is_none());
    assert!(ConnectorClient::from_config(&cfg).is_none());
    // The same config with a key does get one.
    let keyed = hb_config(&fx, json!({}));
    assert!(Heartbeat::from_config(&keyed, outbox, sync, clock).is_some());
    assert_eq!(fx.sandbox.requests(HEARTBEAT), 0);
}

#[tokio::test]
async fn the_sandbox_command_takes_and_prints_the_api_key() {
    use tokio::io::AsyncBufReadExt;
    let (_logs, _guard) = Logs::capture();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pos-connector"))
        .args([
            "sandbox",
            "--port",
            "0",
            "--qbo-port",
            "0",
            "--api-key",
            "shop-key-77",
        ])
        .env_remove(ENV_CONNECTOR_API_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut key_line) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("sandbox listening on ") {
                base = Some(url.trim().to_string());
            }
            if line.contains("stop with Ctrl-C") {
                break;
            }
            if line.contains("X-API-Key") {
                key_line = Some(line);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the sandbox prints its startup lines");
    let key_line = key_line.expect("the key is printed");
    assert!(
        key_line.contains("shop-key-77") && key_line.contains("api_key"),
        "{key_line}"
    );

    let url = format!(
        "{}/api/pos-connector/test",
        base.expect("the address is printed")
    );
    let http = pos_connector::http_client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let ok = http
        .get(&url)
        .header("X-API-Key", "shop-key-77")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let default_key = http
        .get(&url)
        .header("X-API-Key", SANDBOX_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(default_key.status(), 401);
    child.kill().await.unwrap();
}
