//! The figures that need the agent as a till runs it: the release binary
//! `pos-connector run` as a process of its own (its memory is its own),
//! against the simulators in this process.
//!
//! - `idle`: RSS (and what it is made of: anonymous memory, the binary's
//!   mapped pages, threads) and CPU of an idle agent with the local API,
//!   the inbox and the token refresher running; then with QuickBooks
//!   connected and its cache holding 5,000 customers.
//! - `catchup`: 2,000 sales queued while the backend is down, then the
//!   backend (realistic latency, a pool of 8 workers) comes back: the time
//!   to drain as a fraction of the pool's ceiling, the peak RSS while
//!   draining, backend requests per sale, and how long a new sale takes
//!   while the backlog drains.
//!
//! The agent binary is `target/release/pos-connector` beside this bench,
//! or `AGENT_BIN` (to measure another build the same way);
//! `BENCH_AGENT_STDERR=FILE` keeps its stderr.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pos_connector::store::Outbox;
use pos_sandbox::{LaravelSandbox, LaravelSandboxOptions, LatencyProfile, SANDBOX_PASSWORD};
use serde_json::{json, Value};

const KEY: &str = "bench-local-api-key";

/// The agent binary to measure.
fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AGENT_BIN") {
        return PathBuf::from(p);
    }
    let me = std::env::current_exe().expect("the bench knows where it is");
    // target/release/examples/bench -> target/release/pos-connector
    me.parent()
        .and_then(Path::parent)
        .map(|d| d.join("pos-connector"))
        .expect("the bench lives in target/<profile>/examples")
}

/// `pos-connector run` in `dir` with `config`; stopped (SIGTERM, then
/// kill) when dropped.
struct AgentProcess {
    child: Child,
    /// Its local API, on the port the system gave it (`local_api.bind`
    /// has port 0, see [`base_config`]).
    addr: SocketAddr,
    http: reqwest::Client,
}

impl AgentProcess {
    async fn start(dir: &Path, config: &Value) -> AgentProcess {
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut child = Command::new(agent_bin())
            .args(["--config", path.to_str().unwrap(), "run"])
            .current_dir(dir)
            .env("POS_CONNECTOR_PASSWORD", SANDBOX_PASSWORD)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("BENCH_AGENT_STDERR") {
                // Where the agent's stderr goes (to look into a run).
                Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", agent_bin().display()));
        // Its port is in the log line `local API listening on ADDRESS` on
        // stdout; the rest of stdout is read (and dropped) by the same thread
        // so that the agent never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped");
        let (found, addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((_, rest)) = line.split_once("local API listening on ") {
                    let addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    if let (Some(tx), Some(addr)) = (found.take(), addr) {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr: SocketAddr =
            tokio::task::spawn_blocking(move || addr.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap()
                .expect("the agent logs its local API's address");
        let agent = AgentProcess {
            child,
            addr,
            http: pos_connector::http_client::builder()
                .no_proxy()
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.get("/api/health").await.is_none() {
            assert!(Instant::now() < deadline, "the agent did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(KEY)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.json().await.ok()
    }

    async fn post_sales(&self, sales: &Value) {
        let r = self
            .http
            .post(format!("http://{}/v1/sales", self.addr))
            .bearer_auth(KEY)
            .json(sales)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    }

    /// The job's state as the outbox has it, through the local API.
    async fn job_state(&self, number: &str) -> Option<String> {
        let v = self.get(&format!("/v1/sales/{number}")).await?;
        v["state"].as_str().map(str::to_string)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SIGTERM (graceful) first; the bench does not depend on it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of /proc/PID/status, in kB (or a count).
fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU of a process, in ms.
pub(super) fn cpu_ms(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks * 10
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// "RSS 11.2 MiB (anonymous 3.1, binary and libraries 8.1), 6 threads".
fn memory_line(pid: u32) -> String {
    format!(
        "RSS {} (anonymous {}, mapped files {}), peak {}, {} threads",
        mib(proc_status(pid, "VmRSS")),
        mib(proc_status(pid, "RssAnon")),
        mib(proc_status(pid, "RssFile")),
        mib(proc_status(pid, "VmHWM")),
        proc_status(pid, "Threads")
    )
}

fn base_config(dir: &Path, base_url: &str) -> Value {
    json!({
        "base_url": base_url,
        "email": pos_sandbox::SANDBOX_EMAIL,
        "data_dir": dir.join("data"),
        "log_dir": dir.join("logs"),
        "invoice_folder": dir.join("inbox"),
        "receipts": {"dir": dir.join("receipts"), "shop_name": "Bench Shop"},
        "local_api": {"bind": "127.0.0.1:0", "api_key": KEY},
    })
}

/// Idle RSS: plain, then with QuickBooks connected and 5,000 customers
/// cached. `idle`: how long each idles before it is measured.
pub async fn idle_section(idle: Duration) {
    println!(
        "== idle service ({} s each; `{}`)",
        idle.as_secs(),
        agent_bin().display()
    );
    let laravel = LaravelSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        LaravelSandboxOptions::default(),
    )
    .await
    .unwrap();

    // The local API, the inbox and the token refresher.
    let dir = tempfile::tempdir().unwrap();
    let agent =
        AgentProcess::start(dir.path(), &base_config(dir.path(), &laravel.base_url())).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = cpu_ms(agent.pid());
    tokio::time::sleep(idle).await;
    println!(
        "   local API, inbox, refresher: {}; CPU {} ms over {} s",
        memory_line(agent.pid()),
        cpu_ms(agent.pid()) - cpu0,
        idle.as_secs()
    );
    drop(agent);

    // QuickBooks connected, its cache holding 5,000 customers.
    use pos_connector::quickbooks::{self, oauth};
    use pos_sandbox::quickbooks::{
        QuickbooksSandbox, QuickbooksSandboxOptions, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET,
    };
    let sim = QuickbooksSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        QuickbooksSandboxOptions {
            us_company: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    sim.seed_customers(5000);
    sim.seed_items(500);
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), &laravel.base_url());
    // The default redirect URI: the code is exchanged here, not at the
    // agent's `/callback`, so it need not name the agent's port.
    config["quickbooks"] = json!({
        "enabled": true, "auth_base": sim.auth_base(), "api_base": sim.api_base(),
        "client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET,
        "income_account_id": "1", "tax_code": "3",
    });
    // Connected before it starts, as `qbo exchange-code` would.
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let cfg = pos_connector::config::load_from(&dir.path().join("config.json"), &[]).unwrap();
    let oauth_client =
        oauth::OAuthClient::from_config(&cfg.quickbooks, quickbooks::http_client(&cfg)).unwrap();
    oauth::connect_with_code(
        &oauth_client,
        &oauth::ConnectionStore::new(&cfg.data_dir),
        &pos_connector::clock::SystemClock,
        &sim.issue_code(cfg.quickbooks.redirect_uri.as_str()),
        &sim.realm_id(),
    )
    .await
    .unwrap();
    let agent = AgentProcess::start(dir.path(), &config).await;
    let start = Instant::now();
    loop {
        let st = agent.get("/api/cache/status").await.unwrap_or_default();
        if st["counts"]["customers"].as_u64().unwrap_or(0) >= 5000 && st["last_full_at"].is_string()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the cache did not load: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let loaded = start.elapsed();
    let peak = proc_status(agent.pid(), "VmHWM");
    let index_bytes: u64 = agent
        .get("/api/indexes/status")
        .await
        .and_then(|v| {
            let list = v.get("indexes").cloned().unwrap_or(v);
            list.as_array().map(|a| {
                a.iter()
                    .filter(|i| i["alias_of"].is_null())
                    .filter_map(|i| i["approx_bytes"].as_u64())
                    .sum()
            })
        })
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = cpu_ms(agent.pid());
    tokio::time::sleep(idle).await;
    println!(
        "   + QuickBooks connected, 5,000 customers and 500 items cached (loaded in {:.1} s, peak while loading {}, search indexes about {} KiB): {}; CPU {} ms over {} s",
        loaded.as_secs_f64(),
        mib(peak),
        index_bytes / 1024,
        memory_line(agent.pid()),
        cpu_ms(agent.pid()) - cpu0,
        idle.as_secs()
    );
}

/// The catch-up after an outage.
pub async fn catchup_section(sales: usize) {
    let profile = LatencyProfile::realistic();
    let workers = 8;
    let ceiling = profile.ceiling_per_sec(workers).unwrap_or(f64::NAN);
    println!(
        "== catch-up: {sales} sales queued while the backend is down, then it returns (realistic latency, pool of {workers}: ceiling {ceiling:.1} sales/s; `{}`)",
        agent_bin().display()
    );
    let dir = tempfile::tempdir().unwrap();
    // The backend's address, taken while it is down: bound but not
    // listening, so the agent's calls are refused as by a machine with
    // nothing on the port, and no other program can take it meanwhile.
    let backend_socket = tokio::net::TcpSocket::new_v4().unwrap();
    backend_socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let backend_addr = backend_socket.local_addr().unwrap();
    let mut config = base_config(dir.path(), &format!("http://{backend_addr}"));
    config["pipeline"] = json!({"concurrency": workers});
    let agent = AgentProcess::start(dir.path(), &config).await;
    let pid = agent.pid();

    // The backend is down: the sales are taken and queued.
    let t0 = Instant::now();
    for chunk in (0..sales).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"invoice_number": format!("C-{i:05}"), "customer_name": format!("Customer {}", i % 40),
                       "items": [{"description": "Coffee", "quantity": 1 + i % 3, "price": "2.50"},
                                 {"description": "Cake", "quantity": 1, "price": "3.75"}]})
            })
            .collect();
        agent.post_sales(&Value::Array(batch)).await;
    }
    let outbox = Outbox::open(&dir.path().join("data")).unwrap();
    let total = |o: &Outbox| o.counts().unwrap().values().sum::<u64>() as usize;
    assert_eq!(total(&outbox), sales);
    let queued_in = t0.elapsed();
    // Receipts are printed locally meanwhile; let them finish, as they
    // would during a day offline.
    while outbox.without_receipt(1).unwrap().len() == 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "   queued {sales} sales in {:.1} s (receipts printed after {:.1} s); {}",
        queued_in.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        memory_line(pid)
    );

    // The backend returns.
    let backend = LaravelSandbox::start_on(
        backend_socket.listen(1024).unwrap(),
        LaravelSandboxOptions {
            latency: profile,
            workers: Some(workers),
            ..Default::default()
        },
    )
    .unwrap();
    let back_at = Instant::now();
    let requests = || backend.stats_json()["requests_total"].as_u64().unwrap_or(0);
    let mut peak_rss = 0;
    let mut first_call = None;
    let mut new_sale: Option<Instant> = None;
    let mut new_latency = None;
    loop {
        peak_rss = peak_rss.max(proc_status(pid, "VmRSS"));
        if first_call.is_none() && requests() > 0 {
            first_call = Some(Instant::now());
        }
        let done = outbox.counts().unwrap()["done"] as usize;
        // A new sale once a tenth of the backlog is done.
        if new_sale.is_none() && done >= sales / 10 {
            agent
                .post_sales(&json!({"invoice_number": "NEW-1", "customer_name": "Walk-in",
                                    "items": [{"description": "Tea", "quantity": 1, "price": "1.50"}]}))
                .await;
            new_sale = Some(Instant::now());
        }
        if let (Some(at), None) = (new_sale, new_latency) {
            if agent.job_state("NEW-1").await.as_deref() == Some("done") {
                new_latency = Some(at.elapsed());
            }
        }
        if done >= sales + usize::from(new_sale.is_some()) && new_latency.is_some() {
            break;
        }
        assert!(
            back_at.elapsed() < Duration::from_secs(1800),
            "not drained after 30 minutes: {:?}",
            outbox.counts().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = Instant::now();
    let first = first_call.unwrap_or(back_at);
    let drain = end.duration_since(first).as_secs_f64();
    let rate = (sales + 1) as f64 / drain;
    let stats = backend.stats_json();
    let calls = stats["requests_total"].as_u64().unwrap_or(0) - backend.logins_ok();
    println!(
        "   the agent called the backend {:.1} s after it came back; drained {} sales in {drain:.1} s = {rate:.2} sales/s = {:.0}% of the ceiling",
        first.duration_since(back_at).as_secs_f64(),
        sales + 1,
        100.0 * rate / ceiling
    );
    println!(
        "   peak RSS while draining {} (lifetime peak {}); backend requests per sale {:.2} ({} logins); a new sale posted mid-drain was done in {:.2} s",
        mib(peak_rss),
        mib(proc_status(pid, "VmHWM")),
        calls as f64 / (sales + 1) as f64,
        backend.logins_ok(),
        new_latency.unwrap_or_default().as_secs_f64()
    );
}
