//! Benchmark figures for `scripts/bench.sh` (run in release mode):
//! sales per second through create + submit + PDF against the in-process
//! sandbox (no latency: this measures the agent's own cost), backend calls
//! per sale, and the cost of one shared refresh under 200 concurrent callers.

use std::sync::Arc;
use std::time::Instant;

use pos_connector::clock::SystemClock;
use pos_connector::config;
use pos_connector::laravel::{self, CreateOutcome, DocumentKind, NewInvoice};
use pos_connector::retry::RetryPolicy;
use pos_connector::sandbox::{
    LaravelSandbox, LaravelSandboxOptions, SANDBOX_EMAIL, SANDBOX_PASSWORD,
};
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sales: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let sandbox = LaravelSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        LaravelSandboxOptions::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("config.json");
    std::fs::write(
        &cfg_path,
        json!({
            "base_url": sandbox.base_url(),
            "email": SANDBOX_EMAIL,
            "password": SANDBOX_PASSWORD,
            "data_dir": dir.path().join("data"),
            "pdf_dir": dir.path().join("pdfs"),
        })
        .to_string(),
    )
    .unwrap();
    let cfg = config::load_from(&cfg_path, &[]).unwrap();
    let client = laravel::connect(&cfg, Arc::new(SystemClock), RetryPolicy::default());

    for concurrency in [1usize, 4, 8] {
        let before_requests = sandbox.stats_json()["requests_total"].as_u64().unwrap_or(0);
        let start = Instant::now();
        let cpu0 = cpu_seconds();
        let per_task = sales / concurrency;
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let client = client.clone();
            let pdf_dir = cfg.pdf_dir.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let sale = NewInvoice::from_json(&json!({
                        "invoice_number": format!("B{concurrency}-{t}-{i}"),
                        "customer_name": "Bench",
                        "items": [{"description": "Item", "quantity": 1, "price": 9.99}]
                    }))
                    .unwrap();
                    let CreateOutcome::Created(c) = client.create_invoice(&sale).await.unwrap()
                    else {
                        panic!("duplicate")
                    };
                    client.submit(c.id).await.unwrap();
                    client
                        .download(c.id, DocumentKind::Pdf, None, &pdf_dir)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let done = per_task * concurrency;
        let requests =
            sandbox.stats_json()["requests_total"].as_u64().unwrap_or(0) - before_requests;
        println!(
            "no-latency sandbox, concurrency {concurrency}: {done} sales in {elapsed:.2} s = {:.0} sales/s; backend calls per sale {:.2}; process CPU {:.2} ms per sale (agent + in-process sandbox)",
            done as f64 / elapsed,
            requests as f64 / done as f64,
            cpu * 1000.0 / done as f64
        );
    }

    // 200 callers find the token expired at once: one login between them.
    let logins0 = sandbox.logins_ok();
    client.keeper().expire_locally();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.status(1).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "200 concurrent calls on an expired token: {} login(s), all answered in {:.1} ms",
        sandbox.logins_ok() - logins0,
        start.elapsed().as_secs_f64() * 1000.0
    );
    println!("logins over the whole run: {}", sandbox.logins_ok());
}

/// User + system CPU time of this process, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
