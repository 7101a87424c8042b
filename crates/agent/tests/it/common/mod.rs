//! Fixtures shared by the integration tests: a sandbox backend on
//! 127.0.0.1:0, a config in a temp folder, the real binary, and a
//! wait-until helper (poll with a deadline, never a bare sleep).
#![allow(dead_code, unused_imports)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pos_connector::clock::Clock;
use pos_connector::config::{self, Config};
use pos_connector::laravel::{self, LaravelClient};
use pos_connector::retry::RetryPolicy;
pub use pos_sandbox::{Fault, SANDBOX_EMAIL, SANDBOX_PASSWORD};
use pos_sandbox::{LaravelSandbox, LaravelSandboxOptions};
use serde_json::{json, Value};

pub mod live_agent;
pub mod qbo;
pub mod slow_submits;

/// Where a `pos-connector run` child whose config binds `local_api.bind`
/// to port 0 serves its local API: read from its log line `local API
/// listening on ADDRESS` on stdout (the service's console; the child must
/// be spawned with stdout piped). The system picked a port nobody held, so
/// there is no window in which another program could take it first. The
/// rest of stdout is drained in the background so that the child never
/// blocks on a full pipe.
pub async fn local_api_addr(child: &mut tokio::process::Child) -> std::net::SocketAddr {
    use tokio::io::AsyncBufReadExt;
    const MARK: &str = "local API listening on ";
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, rest)) = line.split_once(MARK) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                return addr.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            }
        }
        panic!("the agent ended without a local API line");
    })
    .await
    .expect("the agent logs its local API's address within a minute");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}

/// The local API key the fixtures configure.
pub const API_KEY: &str = "test-local-api-key";

pub struct Fixture {
    pub sandbox: LaravelSandbox,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::with_options(LaravelSandboxOptions::default()).await
    }

    pub async fn with_options(opts: LaravelSandboxOptions) -> Fixture {
        let sandbox = LaravelSandbox::start("127.0.0.1:0".parse().unwrap(), opts)
            .await
            .expect("sandbox starts");
        Fixture {
            sandbox,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes config.json with the sandbox's address, the folders in the
    /// temp dir, and `extra` keys merged over that.
    pub fn write_config(&self, extra: Value) -> PathBuf {
        let mut cfg = json!({
            "base_url": self.sandbox.base_url(),
            "email": SANDBOX_EMAIL,
            "data_dir": self.path("data"),
            "log_dir": self.path("logs"),
            "pdf_dir": self.path("pdfs"),
            "invoice_folder": self.path("inbox"),
            "log_level": "debug",
            "local_api": {"bind": "127.0.0.1:0", "api_key": API_KEY},
            "receipts": {"dir": self.path("receipts"), "shop_name": "Test Shop"},
        });
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let p = self.path("config.json");
        std::fs::write(&p, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
        p
    }

    /// Runs the binary in the temp folder with the config.json that
    /// [`Fixture::write_config`] wrote (`--config` before `args`).
    pub async fn cli(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let config = self.path("config.json");
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        run_bin(self.dir.path(), &all, env, stdin).await
    }

    /// A config with the sandbox password in it (plain, for library tests).
    pub fn config(&self, extra: Value) -> Config {
        let mut extra = extra;
        if extra.get("password").is_none() {
            extra["password"] = json!(SANDBOX_PASSWORD);
        }
        let p = self.write_config(extra);
        config::load_from(&p, &[]).unwrap()
    }

    /// A config for a running agent (the service, or the binary's `run`):
    /// the inbox looked at every second and taken at once, backoffs of a
    /// second, short timeouts and shutdown grace; `extra`'s keys replace
    /// those of the same name.
    pub fn service_config(&self, extra: Value) -> Config {
        let mut base = json!({
            "sync_interval": 1,
            "intake": {"settle_seconds": 0},
            "pipeline": {"max_backoff_seconds": 1, "shutdown_grace_seconds": 5},
            "request_timeout_secs": 5,
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        self.config(base)
    }

    pub fn client(&self, cfg: &Config, clock: Arc<dyn Clock>) -> LaravelClient {
        laravel::connect(cfg, clock, fast_retry())
    }
}

/// Retries as in production, but with short waits so tests run quickly.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(300),
    }
}

pub fn sale(number: &str) -> pos_connector::laravel::NewInvoice {
    pos_connector::laravel::NewInvoice::from_json(&json!({
        "invoice_number": number,
        "customer_name": "Test Customer",
        "items": [{"description": "Widget", "quantity": 2, "price": 50}]
    }))
    .unwrap()
}

/// How many jobs of the outbox in `cfg.data_dir` are in `state` (read
/// through a connection of its own, beside the running agent).
pub fn count(cfg: &Config, state: &str) -> u64 {
    pos_connector::store::Outbox::open(&cfg.data_dir)
        .unwrap()
        .counts()
        .unwrap()[state]
}

/// Every file below `dir`, sorted (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Polls `check` until it holds or `deadline` passes.
///
/// The deadline is tokio's time (so a paused clock's test may wait out
/// simulated minutes) and also, up to two minutes, real time: on a paused
/// clock, tokio's time jumps ahead whenever the runtime waits on another
/// thread (the outbox's SQLite, a slow disk on a loaded machine), so
/// simulated time alone could run out before the work is done.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    let real_end = std::time::Instant::now() + deadline.min(Duration::from_secs(120));
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end || std::time::Instant::now() < real_end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The result of running the real binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `pos-connector` binary with a clean environment (none of the
/// developer's POS_CONNECTOR_* variables leak in), in `cwd`.
pub async fn run_bin(cwd: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pos-connector"));
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("POS_CONNECTOR") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("binary starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("binary finishes within 2 minutes")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Posts one sale to a running agent's `POST /v1/sales` and expects the
/// 202 of a committed sale.
pub async fn post(agent: &pos_connector::service::Spawned, sale: &Value) {
    let resp = pos_connector::http_client::builder()
        .build()
        .unwrap()
        .post(format!(
            "http://{}/v1/sales",
            agent.running.local_api.unwrap()
        ))
        .bearer_auth(API_KEY)
        .json(sale)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
}
