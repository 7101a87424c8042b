//! Benchmark figures for `scripts/bench.sh` (run in release mode). Every
//! figure goes through the real agent (`service::run_with`: outbox,
//! pipeline, receipts) against the in-process sandbox:
//!
//! 1. end to end (create + submit + PDF) with the sandbox's realistic
//!    latency profile and its pool of 8 workers, at pipeline concurrency
//!    1, 4 and 8, as a fraction of the pool's ceiling;
//! 2. without latency, 1,000 sales: the agent's own CPU cost per sale;
//! 3. backend calls per sale;
//! 4. the inbox-to-outbox intake rate for 10,000 small files;
//! 5. one shared login for 200 concurrent callers on an expired token;
//! 6. QuickBooks pushes per minute against the simulator enforcing
//!    Intuit's limits (500 requests/min, 10/s, 40 batches/min; windows
//!    scaled 5-20x shorter so it takes a minute), with and without batches,
//!    as a ratio of the limits' ceiling;
//! 7. the QuickBooks cache against the simulator holding 50,000 customers
//!    and 20,000 items, with Intuit's limits in real time (not scaled): a
//!    full load, an incremental refresh after 100 changes, and search
//!    latency (p50/p99) over a few thousand realistic queries.
//!
//! 8. a QuickBooks company shared by several tills: the simulator's limits
//!    lowered to what other tills leave (8 requests a second, 400 a
//!    minute), one and then three agents pushing one invoice at a time:
//!    invoices a minute as a fraction of what is left, 429s per 100
//!    invoices.
//!
//! And with the release binary as its own process (`bench_parts/process.rs`):
//! `bench idle` (idle RSS, plain and with 5,000 QuickBooks customers
//! cached) and `bench catchup` (2,000 sales queued during an outage).
//!
//! Usage: bench [SALES_NO_LATENCY] [INBOX_FILES], or `bench qbo` / `bench
//! cache` / `bench shared` / `bench idle [SECS]` / `bench catchup [SALES]`
//! for one part alone.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pos_connector::clock::SystemClock;
use pos_connector::config::{self, Config};
use pos_connector::intake;
use pos_connector::intake::sale::{IntakeOptions, Sale};
use pos_connector::laravel;
use pos_connector::retry::RetryPolicy;
use pos_connector::service::Spawned;
use pos_connector::store::Outbox;
use pos_sandbox::{
    LaravelSandbox, LaravelSandboxOptions, LatencyProfile, SANDBOX_EMAIL, SANDBOX_PASSWORD,
};
use serde_json::{json, Value};

#[path = "bench_parts/process.rs"]
mod process;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arg = |n: usize| std::env::args().nth(n).and_then(|s| s.parse::<u64>().ok());
    match std::env::args().nth(1).as_deref() {
        // `bench qbo`: only the QuickBooks push figures.
        Some("qbo") => return qbo_section().await,
        // `bench cache`: only the QuickBooks cache figures.
        Some("cache") => return cache_section().await,
        // `bench shared`: a company shared by several tills.
        Some("shared") => return shared_section().await,
        // `bench idle [SECS]`: the release binary idling.
        Some("idle") => {
            return process::idle_section(Duration::from_secs(arg(2).unwrap_or(60))).await
        }
        // `bench catchup [SALES]`: draining a backlog after an outage.
        Some("catchup") => return process::catchup_section(arg(2).unwrap_or(2000) as usize).await,
        _ => {}
    }
    let mut args = std::env::args().skip(1);
    let sales: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let files: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);

    println!("== end to end with the realistic latency profile (pool of 8 workers)");
    let profile = LatencyProfile::realistic();
    let ceiling = profile.ceiling_per_sec(8).unwrap_or(f64::NAN);
    println!(
        "   service time per sale {} ms (create + submit + pdf): pool ceiling {ceiling:.1} sales/s",
        profile.per_sale().as_millis()
    );
    for concurrency in [1usize, 4, 8] {
        let n = 12 * concurrency;
        let r = run_pipeline(n, concurrency, profile, Some(8)).await;
        println!(
            "   concurrency {concurrency}: {n} sales in {:.2} s = {:.2} sales/s = {:.0}% of the ceiling; pool busy {:.0}%; calls/sale {:.2}",
            r.elapsed,
            r.rate(),
            100.0 * r.rate() / ceiling,
            100.0 * r.pool_utilisation,
            r.calls_per_sale
        );
    }

    println!("== without latency ({sales} sales): the agent's own cost");
    for concurrency in [4usize, 8] {
        let r = run_pipeline(sales, concurrency, LatencyProfile::none(), None).await;
        println!(
            "   concurrency {concurrency}: {:.0} sales/s; CPU {:.2} ms per sale (agent + in-process sandbox + receipts); backend calls per sale {:.2}; logins {}",
            r.rate(),
            r.cpu_ms_per_sale,
            r.calls_per_sale,
            r.logins
        );
    }

    println!("== intake: {files} small files, inbox to outbox");
    intake_rate(files).await;

    println!("== token refresh under load");
    shared_login().await;

    qbo_section().await;
    cache_section().await;
    shared_section().await;
}

async fn qbo_section() {
    println!(
        "== QuickBooks pushes under Intuit's limits (500 requests/min, 10/s, 40 batches/min; time scaled so a minute takes seconds)"
    );
    // Without batches each invoice costs 2 requests (the DocNumber check
    // and the create; customers and items are remembered): 500/2 a
    // minute. With batches of 30, one IN query and one batch request per
    // 30 invoices: the 40 batches a minute bind, 40 x 30. About five
    // simulated minutes each, so the first window's burst weighs little.
    // Batches run at 1/5 of real time (not 1/20): 200 batches of 30
    // outbox records each must fit the shortened minutes.
    qbo_push_rate(1200, false, 250.0, 0.05).await;
    qbo_push_rate(6000, true, 1200.0, 0.2).await;
}

/// Pushes `n` pending invoices through the real pusher; prints invoices per
/// (simulated) minute and the ratio to `ceiling`.
async fn qbo_push_rate(n: usize, batch: bool, ceiling: f64, scale: f64) {
    use pos_connector::quickbooks::limiter::RateLimits;
    use pos_sandbox::quickbooks::{QboLimits, QuickbooksSandbox, QuickbooksSandboxOptions};
    let sim = QuickbooksSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        QuickbooksSandboxOptions {
            us_company: false,
            limits: QboLimits {
                time_scale: scale,
                ..QboLimits::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let limits = RateLimits {
        time_scale: scale,
        ..RateLimits::default()
    };
    let threshold = if batch { 3 } else { 1000 };
    let (pusher, cfg) = qbo_pusher(dir.path(), &sim, threshold, limits, n, |i| {
        sale(i).invoice_number
    })
    .await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let p = pusher.clone();
        tokio::spawn(async move {
            p.run(async {
                let _ = rx.await;
            })
            .await
        })
    };
    let start = Instant::now();
    loop {
        let pushed = Outbox::open(&cfg.data_dir).unwrap().qbo_counts().unwrap()["pushed"];
        if pushed as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = tx.send(());
    task.await.unwrap();
    let minutes = elapsed / (60.0 * scale);
    let per_minute = n as f64 / minutes;
    let api_requests: u64 = [
        "GET /v3/company/{realm}/query",
        "POST /v3/company/{realm}/invoice",
        "POST /v3/company/{realm}/batch",
        "POST /v3/company/{realm}/customer",
        "POST /v3/company/{realm}/item",
    ]
    .iter()
    .map(|r| sim.requests(r))
    .sum();
    println!(
        "   {} (time x{scale}): {n} invoices in {:.2} simulated min = {per_minute:.0} invoices/min = {:.0}% of the {ceiling:.0}/min ceiling; {:.2} requests per invoice; 429s {}",
        if batch { "batches of 30" } else { "one at a time" },
        minutes,
        100.0 * per_minute / ceiling,
        api_requests as f64 / n as f64,
        sim.throttled()
    );
}

/// A company shared by several tills: the simulator's limits lowered to
/// what other tills leave, one and then three agents (each its own outbox,
/// connection and limiter, as on its own till) pushing one invoice at a
/// time for a few simulated minutes.
async fn shared_section() {
    // A fifth of the company's budget used by other tills.
    let (per_second, per_minute) = (8, 400);
    let scale = 0.2;
    let minutes = 5.0;
    println!(
        "== QuickBooks company shared by several tills: {per_second}/s and {per_minute}/min left by other tills (time x{scale}), one invoice at a time (2 requests each: {} invoices/min at most)",
        per_minute / 2
    );
    for agents in [1usize, 3] {
        let r = shared_run(agents, per_second, per_minute, scale, minutes).await;
        let total: u64 = r.iter().map(|a| a.0).sum();
        let throttled: u64 = r.iter().map(|a| a.1).sum();
        let per_min = total as f64 / minutes;
        let shares: Vec<String> = r
            .iter()
            .map(|(n, t)| {
                format!(
                    "{:.0}% ({} 429s per 100)",
                    100.0 * *n as f64 / total.max(1) as f64,
                    if *n == 0 {
                        0.0
                    } else {
                        100.0 * *t as f64 / *n as f64
                    }
                    .round()
                )
            })
            .collect();
        println!(
            "   {agents} agent(s): {per_min:.0} invoices/min = {:.0}% of what is left; {:.1} 429s per 100 invoices; shares {}",
            100.0 * per_min / (per_minute as f64 / 2.0),
            100.0 * throttled as f64 / total.max(1) as f64,
            shares.join(", ")
        );
    }
}

/// `agents` pushers on one simulated company for `minutes` simulated
/// minutes: (invoices pushed, 429s met) per agent.
async fn shared_run(
    agents: usize,
    per_second: u32,
    per_minute: u32,
    scale: f64,
    minutes: f64,
) -> Vec<(u64, u64)> {
    use pos_connector::quickbooks::limiter::RateLimits;
    use pos_sandbox::quickbooks::{QboLimits, QuickbooksSandbox, QuickbooksSandboxOptions};
    let sim = QuickbooksSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        QuickbooksSandboxOptions {
            us_company: false,
            limits: QboLimits {
                per_second,
                per_minute,
                batch_per_minute: 32,
                time_scale: scale,
                ..QboLimits::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dirs: Vec<_> = (0..agents).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut pushers = Vec::new();
    for (a, dir) in dirs.iter().enumerate() {
        let seed = 4200 + a as u64;
        let limits = RateLimits {
            time_scale: scale,
            jitter_seed: Some(seed),
            ..RateLimits::default()
        };
        println!("   (agent {a}: jitter seed {seed})");
        // More than it can push in the time: always busy.
        let numbers = move |i| format!("S{a}-{i:05}");
        pushers.push(qbo_pusher(dir.path(), &sim, 1000, limits, 1500, numbers).await);
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = pushers
        .iter()
        .map(|(p, _)| {
            let p = p.clone();
            let mut rx = rx.clone();
            tokio::spawn(async move {
                p.run(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(60.0 * minutes * scale)).await;
    // What was pushed in the time (the pushers then finish what they hold).
    let counts: Vec<(u64, u64)> = pushers
        .iter()
        .map(|(p, cfg)| {
            let pushed = Outbox::open(&cfg.data_dir).unwrap().qbo_counts().unwrap()["pushed"];
            (pushed, p.client().limiter().throttled_count())
        })
        .collect();
    let _ = tx.send(true);
    for t in tasks {
        t.await.unwrap();
    }
    counts
}

/// The QuickBooks cache: a full load and an incremental refresh against
/// the simulator enforcing Intuit's limits in real time (10 requests a
/// second, 500 a minute; the agent's own limiter keeps under them), then
/// search latency in memory.
async fn cache_section() {
    use pos_connector::quickbooks::{self, QboCache};
    use pos_connector::store::OutboxHandle;
    use pos_sandbox::quickbooks::{QuickbooksSandbox, QuickbooksSandboxOptions};
    use rand::{RngExt, SeedableRng};

    const CUSTOMERS: usize = 50_000;
    const ITEMS: usize = 20_000;
    println!(
        "== QuickBooks cache: {CUSTOMERS} customers, {ITEMS} items, 200 vendors; Intuit's limits in real time (10/s, 500/min)"
    );
    let sim = QuickbooksSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        QuickbooksSandboxOptions {
            us_company: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let customers = sim.seed_customers(CUSTOMERS);
    let items = sim.seed_items(ITEMS);
    sim.seed_vendors(200);
    let dir = tempfile::tempdir().unwrap();
    let cfg = qbo_connected(dir.path(), &sim, 3, None).await;
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let cache = QboCache::open(
        OutboxHandle::open(&cfg.data_dir).unwrap(),
        client,
        cfg.quickbooks.cache_refresh,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();

    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let full = cache.refresh(true).await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let builds: u64 = cache
        .indexes_status()
        .iter()
        .filter(|i| i.alias_of.is_none())
        .map(|i| i.build_ms)
        .sum();
    println!(
        "   full load: {} customers, {} items, {} vendors in {elapsed:.2} s; {} requests ({:.1}/s, the limit is 10/s); CPU {:.2} s (agent + in-process simulator), of which index builds {:.2} s; 429s {}",
        full.customers.rows,
        full.items.rows,
        full.vendors.rows,
        full.requests,
        full.requests as f64 / elapsed,
        cpu_seconds() - cpu0,
        builds as f64 / 1000.0,
        sim.throttled()
    );

    // 100 changes in QuickBooks: 40 customers renamed, 20 created, 10
    // deleted; 25 items repriced, 5 deleted.
    for (n, id) in customers.iter().step_by(997).take(40).enumerate() {
        sim.update_entity(
            "Customer",
            id,
            json!({"DisplayName": format!("Renamed Customer {n}")}),
        )
        .unwrap();
    }
    for n in 0..20 {
        sim.seed_customer(&format!("New Walk-in {n}"), true);
    }
    for id in customers.iter().skip(500).step_by(1009).take(10) {
        sim.delete_entity("Customer", id);
    }
    for id in items.iter().step_by(499).take(25) {
        sim.update_entity("Item", id, json!({"UnitPrice": 4.75}))
            .unwrap();
    }
    for id in items.iter().skip(100).step_by(1013).take(5) {
        sim.delete_entity("Item", id);
    }
    let start = Instant::now();
    let inc = cache.refresh(false).await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "   incremental after 100 changes: {:?} in {:.0} ms, {} request(s); customers +{} -{}, items +{} -{}",
        inc.kind,
        elapsed * 1000.0,
        inc.requests,
        inc.customers.upserted,
        inc.customers.deleted,
        inc.items.upserted,
        inc.items.deleted
    );

    // Queries as people type them: 1 to 6 characters, prefixes of real
    // names (half) or pieces from inside them, in both scripts.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut queries = |names: &[String], n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let name: Vec<char> = names[rng.random_range(0..names.len())].chars().collect();
                let len = rng.random_range(1..=6usize).min(name.len());
                let at = if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random_range(0..=name.len() - len)
                };
                name[at..at + len].iter().collect()
            })
            .collect()
    };
    let customer_names: Vec<String> = sim
        .customers()
        .iter()
        .filter_map(|c| c["DisplayName"].as_str().map(str::to_string))
        .collect();
    let item_names: Vec<String> = sim
        .items()
        .iter()
        .filter_map(|i| i["Name"].as_str().map(str::to_string))
        .collect();
    for (index, names) in [
        ("client_names", &customer_names),
        ("product_names", &item_names),
    ] {
        let qs = queries(names, 4000);
        for q in qs.iter().take(200) {
            cache.search(index, q, None).unwrap();
        }
        let mut times = Vec::with_capacity(qs.len());
        let mut totals = 0usize;
        for q in &qs {
            let t = Instant::now();
            let a = cache.search(index, q, None).unwrap();
            times.push(t.elapsed());
            totals += a.total;
        }
        times.sort();
        let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        println!(
            "   search {index}: {} queries (1-6 chars): p50 {:.0} us, p99 {:.0} us, max {:.0} us; {:.0} matches per query on average",
            qs.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0),
            totals as f64 / qs.len() as f64
        );
    }
    let bytes: usize = cache
        .indexes_status()
        .iter()
        .filter(|i| i.alias_of.is_none())
        .map(|i| i.approx_bytes)
        .sum();
    println!(
        "   index postings: about {:.0} MiB",
        bytes as f64 / (1024.0 * 1024.0)
    );
}

struct RunResult {
    elapsed: f64,
    sales: usize,
    calls_per_sale: f64,
    cpu_ms_per_sale: f64,
    pool_utilisation: f64,
    logins: u64,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.sales as f64 / self.elapsed
    }
}

fn write_config(dir: &Path, base_url: &str, extra: Value) -> Config {
    let mut cfg = json!({
        "base_url": base_url,
        "email": SANDBOX_EMAIL,
        "password": SANDBOX_PASSWORD,
        "data_dir": dir.join("data"),
        "log_dir": dir.join("logs"),
        "pdf_dir": dir.join("pdfs"),
        "invoice_folder": dir.join("inbox"),
        "sync_interval": 1,
        "intake": {"settle_seconds": 0},
        "local_api": {"enabled": false},
        "receipts": {"dir": dir.join("receipts"), "shop_name": "Bench Shop"},
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    config::load_from(&path, &[]).unwrap()
}

/// An agent's config in `dir` with QuickBooks on the simulator `sim`
/// (`batch_threshold`, the limiter at `limits` or its default), connected to
/// the simulated company by the OAuth code flow.
async fn qbo_connected(
    dir: &Path,
    sim: &pos_sandbox::quickbooks::QuickbooksSandbox,
    batch_threshold: u32,
    limits: Option<pos_connector::quickbooks::limiter::RateLimits>,
) -> Config {
    use pos_connector::quickbooks::{self, oauth};
    use pos_sandbox::quickbooks::{SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET};
    let redirect = "http://127.0.0.1:9/callback";
    let mut cfg = write_config(
        dir,
        "http://127.0.0.1:9",
        json!({"quickbooks": {
            "enabled": true, "auth_base": sim.auth_base(), "api_base": sim.api_base(),
            "client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET,
            "redirect_uri": redirect, "income_account_id": "1", "tax_code": "3",
            "batch_threshold": batch_threshold,
        }}),
    );
    if let Some(limits) = limits {
        cfg.quickbooks.limits = limits;
    }
    let oauth_client =
        oauth::OAuthClient::from_config(&cfg.quickbooks, quickbooks::http_client(&cfg)).unwrap();
    oauth::connect_with_code(
        &oauth_client,
        &oauth::ConnectionStore::new(&cfg.data_dir),
        &SystemClock,
        &sim.issue_code(redirect),
        &sim.realm_id(),
    )
    .await
    .unwrap();
    cfg
}

/// One agent's QuickBooks side on the simulator `sim`: its config in `dir`
/// (the limiter at `limits`), connected by OAuth, `n` sales numbered by
/// `number` queued as submitted to JoFotara, and a pusher over them, not yet
/// running.
async fn qbo_pusher(
    dir: &Path,
    sim: &pos_sandbox::quickbooks::QuickbooksSandbox,
    batch_threshold: u32,
    limits: pos_connector::quickbooks::limiter::RateLimits,
    n: usize,
    number: impl Fn(usize) -> String,
) -> (pos_connector::quickbooks::Pusher, Config) {
    use pos_connector::quickbooks::{self, PushSettings, Pusher};
    use pos_connector::store::{NewJob, OutboxHandle, Stage, StepResult};
    let cfg = qbo_connected(dir, sim, batch_threshold, Some(limits)).await;
    {
        let mut o = Outbox::open(&cfg.data_dir).unwrap();
        o.set_qbo_push_after(Some(Stage::Submitted));
        let now = chrono::Utc::now();
        for i in 0..n {
            let mut s = sale(i);
            s.invoice_number = number(i);
            s.customer_name = format!("Customer {}", i % 5);
            let job = o
                .enqueue(
                    &NewJob {
                        invoice_number: s.invoice_number.clone(),
                        sale_json: serde_json::to_string(&s).unwrap(),
                        content_hash: format!("h-{}", s.invoice_number),
                        source: "bench".into(),
                    },
                    now,
                )
                .unwrap()
                .job()
                .clone();
            o.record_step(
                job.id,
                Stage::Submitted,
                &StepResult::default(),
                "bench",
                now,
            )
            .unwrap();
        }
    }
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let pusher = Pusher::new(
        OutboxHandle::open(&cfg.data_dir).unwrap(),
        client,
        PushSettings::from_config(
            &cfg.quickbooks,
            Duration::from_secs(1),
            Duration::from_secs(1),
        ),
        Arc::new(SystemClock),
    );
    (pusher, cfg)
}

fn sale(n: usize) -> Sale {
    let v = json!({"invoice_number": format!("B-{n:06}"), "customer_name": "Bench",
                   "items": [{"description": "Item", "quantity": 1, "price": "9.99"}]});
    intake::sale::parse_json(&v, &IntakeOptions::default())
        .unwrap()
        .remove(0)
}

/// Puts `n` sales in the outbox, runs the agent until all are done.
async fn run_pipeline(
    n: usize,
    concurrency: usize,
    latency: LatencyProfile,
    workers: Option<usize>,
) -> RunResult {
    let sandbox = LaravelSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        LaravelSandboxOptions {
            latency,
            workers,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &sandbox.base_url().to_string(),
        json!({"pipeline": {"concurrency": concurrency}}),
    );
    {
        let mut ob = Outbox::open(&cfg.data_dir).unwrap();
        let jobs: Vec<_> = (0..n).map(|i| intake::new_job(&sale(i), "bench")).collect();
        ob.enqueue_all(&jobs, chrono::Utc::now()).unwrap();
    }
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let agent = Spawned::start(&cfg, Arc::new(SystemClock)).await.unwrap();
    let ob = Outbox::open(&cfg.data_dir).unwrap();
    loop {
        if ob.counts().unwrap()["done"] as usize == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Receipts are printed in the background; count their cost too.
    while ob.without_receipt(1).unwrap().len() == 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = cpu_seconds() - cpu0;
    agent.stop().await.unwrap();
    let stats = sandbox.stats_json();
    let requests = stats["requests_total"].as_u64().unwrap_or(0);
    let logins = sandbox.logins_ok();
    let pool = sandbox.pool_stats();
    RunResult {
        elapsed,
        sales: n,
        calls_per_sale: (requests - logins) as f64 / n as f64,
        cpu_ms_per_sale: cpu * 1000.0 / n as f64,
        pool_utilisation: pool
            .utilisation(Duration::from_secs_f64(elapsed))
            .unwrap_or(0.0),
        logins,
    }
}

async fn intake_rate(files: usize) {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9: the pipeline backs off globally and costs
    // nothing, so the figure is the intake's (receipts included).
    let cfg = write_config(dir.path(), "http://127.0.0.1:9", json!({}));
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    for i in 0..files {
        let body = json!({"invoice_number": format!("F-{i:06}"), "customer_name": "Walk-in",
                          "items": [{"description": "Coffee", "quantity": 1, "price": "2.50"}]});
        std::fs::write(inbox.join(format!("sale-{i:06}.json")), body.to_string()).unwrap();
    }
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let agent = Spawned::start(&cfg, Arc::new(SystemClock)).await.unwrap();
    let ob = Outbox::open(&cfg.data_dir).unwrap();
    let total = |ob: &Outbox| ob.counts().unwrap().values().sum::<u64>() as usize;
    while total(&ob) < files {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let committed = start.elapsed().as_secs_f64();
    while ob.without_receipt(1).unwrap().len() == 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let printed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    agent.stop().await.unwrap();
    let archived = count_files(&inbox.join("archive"));
    println!(
        "   {files} files committed in {committed:.2} s = {:.0} files/s (each committed with fsync before it is archived; {archived} archived); all receipts printed after {printed:.2} s; CPU {:.2} ms per file",
        files as f64 / committed,
        cpu * 1000.0 / files as f64
    );
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                n += count_files(&e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

async fn shared_login() {
    let sandbox = LaravelSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        LaravelSandboxOptions::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sandbox.base_url().to_string(), json!({}));
    let client = laravel::connect(&cfg, Arc::new(SystemClock), RetryPolicy::default());
    client.profile().await.unwrap();
    let logins0 = sandbox.logins_ok();
    client.keeper().expire_locally();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.profile().await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "   200 concurrent calls on an expired token: {} login(s), all answered in {:.1} ms",
        sandbox.logins_ok() - logins0,
        start.elapsed().as_secs_f64() * 1000.0
    );
}

/// User + system CPU time of this process, from /proc (Linux).
fn cpu_seconds() -> f64 {
    process::cpu_ms(std::process::id()) as f64 / 1000.0
}
