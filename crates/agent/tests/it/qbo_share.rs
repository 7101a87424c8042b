//! A QuickBooks company shared by several tills. Intuit's limits (10
//! requests a second, 500 a minute per company and app) are the fleet's:
//! each till's agent must learn the share left to it from the 429s it
//! meets, and several agents must settle on fair shares without talking.
//!
//! Each till here is an agent's QuickBooks client of its own (its own
//! connection and limiter, as on its own machine) pushing invoices the way
//! the pusher does (the DocNumber check, then the create with its
//! `requestid`) to one simulator whose limits are lowered to stand for the
//! other tills' traffic. On tokio's paused clock: the figures are simulated
//! seconds, the same on a loaded machine. (The pusher itself waits on its
//! outbox's thread, which a paused clock cannot account for; its handling
//! of a 429 is checked in `quickbooks.rs`, its rates in scripts/bench.sh.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::live_agent::{Key, LiveAgent};
use crate::common::qbo::{sim_options, Qbo, INVOICE_ROUTE};
use crate::common::{run_bin, wait_until, Fault, API_KEY};
use pos_connector::clock::SystemClock;
use pos_connector::config::Config;
use pos_connector::quickbooks::client::request_id;
use pos_connector::quickbooks::limiter::RateLimits;
use pos_connector::quickbooks::model::{Entity, Invoice, Line, Query, Ref};
use pos_connector::quickbooks::{self, QboClient, QboError};
use pos_sandbox::quickbooks::QboLimits;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

/// One till's agent.
struct Till {
    client: QboClient,
    pushed: AtomicUsize,
}

/// What every invoice refers to.
#[derive(Clone)]
struct Refs {
    customer: String,
    item: String,
}

/// `n` tills connected to `q`'s company, each with its own data folder and
/// connection; their jitter seeds are `seed`, `seed + 1`, ... (or from
/// `QBO_SHARE_SEED`, to replay or explore a run).
async fn tills(q: &Qbo, n: usize, seed: u64) -> Vec<Arc<Till>> {
    let seed = std::env::var("QBO_SHARE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seed);
    println!("jitter seeds {seed}..{}", seed + n as u64 - 1);
    let base = q.config(json!({}));
    let mut out = Vec::new();
    for i in 0..n {
        let mut cfg: Config = base.clone();
        cfg.data_dir = q.fx.path(&format!("till-{i}"));
        cfg.quickbooks.limits = RateLimits {
            jitter_seed: Some(seed + i as u64),
            ..RateLimits::default()
        };
        q.connect(&cfg).await;
        let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
        out.push(Arc::new(Till {
            client,
            pushed: AtomicUsize::new(0),
        }));
    }
    out
}

fn refs(q: &Qbo) -> Refs {
    Refs {
        customer: q.sim.seed_customer("Walk-in customer", true),
        item: q.sim.seed_item("Coffee", None),
    }
}

/// One invoice as the pusher sends it: is its DocNumber there already?
/// If not, create it with a `requestid` derived from it.
async fn push_invoice(client: &QboClient, number: &str, refs: &Refs) -> Result<(), QboError> {
    let q = Query::select(Entity::Invoice)
        .where_eq("DocNumber", number)
        .build();
    if !client
        .query::<Invoice>(Entity::Invoice, &q)
        .await?
        .items
        .is_empty()
    {
        return Ok(());
    }
    let invoice = Invoice {
        doc_number: Some(number.into()),
        customer_ref: Some(Ref::new(refs.customer.clone())),
        line: vec![Line::sales_item(
            None,
            "25".parse().unwrap(),
            Ref::new(refs.item.clone()),
            "2".parse().unwrap(),
            "12.50".parse().unwrap(),
            Some(Ref::new("3")),
        )],
        ..Default::default()
    };
    client
        .create::<Invoice>(Entity::Invoice, &invoice, &request_id("inv", number))
        .await
        .map(|_| ())
}

/// Pushes this till's invoices one after another until the fleet has
/// pushed `target` in all. A throttled push waits as the pusher's does
/// (the limiter holds the next request until its pause ends) and is sent
/// again.
async fn run_till(
    till: Arc<Till>,
    prefix: String,
    refs: Refs,
    fleet: Arc<AtomicUsize>,
    target: usize,
) {
    for i in 0.. {
        if fleet.load(Ordering::SeqCst) >= target {
            return;
        }
        let number = format!("{prefix}{i:05}");
        loop {
            match push_invoice(&till.client, &number, &refs).await {
                Ok(()) => break,
                Err(QboError::Throttled { .. }) => continue,
                Err(e) => panic!("{number}: {e}"),
            }
        }
        till.pushed.fetch_add(1, Ordering::SeqCst);
        fleet.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `tills` until they have pushed `target` invoices in all; returns
/// the simulated time it took.
async fn push_together(tills: &[Arc<Till>], refs: &Refs, target: usize) -> Duration {
    let fleet = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = tills
        .iter()
        .enumerate()
        .map(|(i, t)| {
            tokio::spawn(run_till(
                t.clone(),
                format!("T{i}-"),
                refs.clone(),
                fleet.clone(),
                target,
            ))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// The pause in force after a 429.
fn paused_for(client: &QboClient) -> Duration {
    client
        .limiter()
        .paused_until()
        .expect("a pause after a 429")
        .saturating_duration_since(Instant::now())
}

fn limits(per_second: u32, per_minute: u32, batch_per_minute: u32) -> QboLimits {
    QboLimits {
        per_second,
        per_minute,
        batch_per_minute,
        ..QboLimits::default()
    }
}

#[tokio::test(start_paused = true)]
async fn with_eight_a_second_left_32_invoices_go_out_in_under_30_seconds() {
    let q = Qbo::start(sim_options()).await;
    // Other tills use a fifth of the company's budget.
    q.sim.set_limits(limits(8, 400, 32));
    let refs = refs(&q);
    let till = tills(&q, 1, 1301).await.remove(0);
    let took = push_together(std::slice::from_ref(&till), &refs, 32).await;
    let st = till.client.limiter().status();
    println!("32 invoices in {took:?}; limiter {st:?}");
    assert_eq!(q.sim.invoices().len(), 32);
    assert!(
        took < Duration::from_secs(30),
        "32 invoices took {took:?} (a 429 must cost a pause of a second, not a minute)"
    );
    // It learned: some 429s at first, then a budget under what is left.
    assert!(st.throttled >= 1, "{st:?}");
    assert!(st.throttled <= 4, "{st:?}");
    assert_eq!(st.throttled, q.sim.throttled());
    assert!(st.per_second < 10.0, "{st:?}");
}

#[tokio::test(start_paused = true)]
async fn three_tills_on_one_company_settle_on_fair_shares() {
    let q = Qbo::start(sim_options()).await;
    let refs = refs(&q);
    let fleet = tills(&q, 3, 3301).await;
    let took = push_together(&fleet, &refs, 300).await;
    let pushed: Vec<usize> = fleet
        .iter()
        .map(|t| t.pushed.load(Ordering::SeqCst))
        .collect();
    let throttled: Vec<u64> = fleet
        .iter()
        .map(|t| t.client.limiter().throttled_count())
        .collect();
    let total: usize = pushed.iter().sum();
    let per_minute = total as f64 / (took.as_secs_f64() / 60.0);
    println!(
        "300 invoices in {took:?} = {per_minute:.0}/min (ceiling 250); shares {pushed:?}; 429s {throttled:?}; budgets {:?}",
        fleet
            .iter()
            .map(|t| t.client.limiter().status())
            .collect::<Vec<_>>()
    );
    assert_eq!(q.sim.invoices().len(), total);
    assert!((300..=302).contains(&total), "{total}");
    for (i, (&n, &t)) in pushed.iter().zip(&throttled).enumerate() {
        let share = n as f64 / total as f64;
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.3 / 3.0,
            "till {i} pushed {n} of {total}: {pushed:?}"
        );
        assert!(
            t as f64 * 100.0 / n as f64 <= 5.0,
            "till {i}: {t} 429s for {n} invoices: {throttled:?}"
        );
    }
    assert_eq!(throttled.iter().sum::<u64>(), q.sim.throttled());
}

#[tokio::test(start_paused = true)]
async fn alone_on_the_company_it_uses_the_whole_budget_without_a_429() {
    let q = Qbo::start(sim_options()).await;
    let refs = refs(&q);
    let till = tills(&q, 1, 501).await.remove(0);
    let took = push_together(std::slice::from_ref(&till), &refs, 600).await;
    // Two requests an invoice: 500 a minute is 250 invoices a minute.
    let per_minute = 600.0 / (took.as_secs_f64() / 60.0);
    println!(
        "600 invoices in {took:?} = {per_minute:.0}/min of 250; {:?}",
        till.client.limiter().status()
    );
    assert_eq!(q.sim.throttled(), 0, "no 429 alone on the company");
    assert!(per_minute >= 0.95 * 250.0, "{per_minute:.0} invoices/min");
    let st = till.client.limiter().status();
    assert_eq!((st.per_second, st.per_minute, st.share), (10.0, 495.0, 1.0));
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_for_its_retry_after_or_about_a_second_not_a_minute() {
    let q = Qbo::start(sim_options()).await;
    let refs = refs(&q);
    let till = tills(&q, 1, 77).await.remove(0);
    let client = &till.client;

    // QuickBooks' own throttle answer: XML 3001, no Retry-After.
    q.sim.inject(
        INVOICE_ROUTE,
        Fault::Status {
            status: 429,
            retry_after: None,
            html: false,
        },
        1,
    );
    let err = push_invoice(client, "RA-1", &refs).await.unwrap_err();
    assert!(
        matches!(
            err,
            QboError::Throttled {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    let pause = paused_for(client);
    assert!(
        pause >= Duration::from_secs(1) && pause <= Duration::from_millis(1250),
        "{pause:?}"
    );
    let at = Instant::now();
    push_invoice(client, "RA-1", &refs).await.unwrap();
    // The pause, then the request paced at the smaller budget.
    let waited = at.elapsed();
    assert!(
        waited >= pause && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // With Retry-After: exactly that (plus at most 10 %).
    q.sim.inject(
        INVOICE_ROUTE,
        Fault::Status {
            status: 429,
            retry_after: Some(5),
            html: false,
        },
        1,
    );
    let err = push_invoice(client, "RA-2", &refs).await.unwrap_err();
    assert!(
        matches!(err, QboError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(5)),
        "{err:?}"
    );
    let pause = paused_for(client);
    assert!(
        pause >= Duration::from_secs(5) && pause <= Duration::from_millis(5500),
        "{pause:?}"
    );
    let at = Instant::now();
    push_invoice(client, "RA-2", &refs).await.unwrap();
    assert!(at.elapsed() >= pause, "{:?}", at.elapsed());

    // Consecutive 429s (no answer in between) double the pause: 1, 2, 4 s.
    q.sim.inject(
        "*",
        Fault::Status {
            status: 429,
            retry_after: None,
            html: false,
        },
        3,
    );
    let mut pauses = Vec::new();
    for _ in 0..3 {
        let err = push_invoice(client, "RA-3", &refs).await.unwrap_err();
        assert!(matches!(err, QboError::Throttled { .. }), "{err:?}");
        pauses.push(paused_for(client));
    }
    println!("consecutive pauses {pauses:?}");
    for (pause, base) in pauses.iter().zip([1.0, 2.0, 4.0]) {
        let s = pause.as_secs_f64();
        assert!(s >= base && s <= base * 1.25 + 0.001, "{pauses:?}");
    }
    push_invoice(client, "RA-3", &refs).await.unwrap();
    let st = client.limiter().status();
    assert_eq!(st.throttled, 5);
    assert_eq!(q.sim.invoices().len(), 3);
}

/// What a person sees: the budget and the 429s in `/api/status` (the
/// status page's data), `/metrics` and `qbo status` (asked of the running
/// service, the only one that knows them).
#[tokio::test]
async fn the_budget_and_the_429s_show_in_status_metrics_and_qbo_status() {
    let mut a = LiveAgent::prepare(true, json!({})).await;
    // Intuit's windows and pauses in real time: a 429 pauses a second.
    a.cfg.quickbooks.limits = RateLimits::default();
    a.start_agent().await;
    a.connect_qbo().await;
    // QuickBooks throttles the first two creates (the XML 3001 answer).
    a.qbo.inject(
        INVOICE_ROUTE,
        Fault::Status {
            status: 429,
            retry_after: None,
            html: false,
        },
        2,
    );
    a.post_sale("SH-1", "Nour Cafe").await;
    wait_until(Duration::from_secs(30), "SH-1 pushed", || async {
        let (_, j) = a
            .call(Method::GET, "/api/jobs/SH-1", Key::Bearer(API_KEY))
            .await;
        j["qbo"]["state"] == "pushed"
    })
    .await;

    let st = a.ok(Method::GET, "/api/status").await;
    let l = &st["quickbooks"]["limiter"];
    assert_eq!(l["throttled"], 2, "{l}");
    assert_eq!(l["per_second_limit"], 10, "{l}");
    assert!(l["per_second"].as_f64().unwrap() < 10.0, "{l}");
    assert!(l["share"].as_f64().unwrap() < 1.0, "{l}");
    assert!(l["last_throttled_at"].is_string(), "{l}");

    let metrics = a
        .send(Method::GET, "/metrics", Key::Bearer(API_KEY))
        .await
        .text()
        .await
        .unwrap();
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in:\n{metrics}"))
    };
    assert_eq!(sample("pos_connector_quickbooks_throttled_total"), 2.0);
    assert_eq!(
        sample("pos_connector_quickbooks_rate_limit{window=\"second\"}"),
        10.0
    );
    assert_eq!(
        sample("pos_connector_quickbooks_rate_limit{window=\"minute\"}"),
        500.0
    );
    assert!(sample("pos_connector_quickbooks_rate_budget{window=\"second\"}") < 10.0);
    assert!(sample("pos_connector_quickbooks_rate_share") < 1.0);
    sample("pos_connector_quickbooks_paused_seconds");

    let c = a.fx.path("config.json");
    let c = c.to_str().unwrap();
    let text = run_bin(
        a.fx.dir.path(),
        &["--config", c, "qbo", "status"],
        &[],
        None,
    )
    .await;
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.contains("rate budget:") && text.stdout.contains("429s 2"),
        "{}",
        text.stdout
    );
    let js = run_bin(
        a.fx.dir.path(),
        &["--config", c, "--json", "qbo", "status"],
        &[],
        None,
    )
    .await;
    let v: Value = serde_json::from_str(&js.stdout).unwrap();
    assert_eq!(v["limiter"]["throttled"], 2, "{v}");
    let all = run_bin(a.fx.dir.path(), &["--config", c, "status"], &[], None).await;
    assert!(all.stdout.contains("rate budget:"), "{}", all.stdout);

    // Without the service nobody knows the budget: `qbo status` says so.
    a.stop_agent().await;
    let off = run_bin(
        a.fx.dir.path(),
        &["--config", c, "qbo", "status"],
        &[],
        None,
    )
    .await;
    assert_eq!(off.code, 0, "{off:?}");
    assert!(
        off.stdout.contains("learned by the running service"),
        "{}",
        off.stdout
    );
}

/// With a small share of the company, the 30 pushes the pusher holds can
/// take minutes: a stop (SIGTERM) lets the one in hand finish and starts
/// no other.
#[tokio::test]
async fn a_stop_does_not_wait_for_every_due_push() {
    let q = Qbo::start(sim_options()).await;
    let mut cfg = q.config(json!({"batch_threshold": 1000}));
    crate::common::qbo::unlimited(&mut cfg);
    q.sim.set_limits(QboLimits {
        enforce: false,
        ..QboLimits::default()
    });
    q.connect(&cfg).await;
    crate::common::qbo::submitted_jobs(&cfg, 30, "STOP-");
    // Each create takes a second: 30 of them, half a minute.
    q.sim
        .inject(INVOICE_ROUTE, Fault::Delay(Duration::from_secs(1)), 30);
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let p = crate::common::qbo::pusher(&cfg, client);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = {
        let p = p.clone();
        tokio::spawn(async move {
            p.run(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    wait_until(Duration::from_secs(20), "the first create", || async {
        q.sim.requests(INVOICE_ROUTE) >= 1
    })
    .await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("the pusher stops without pushing all 30")
        .unwrap();
    let pushed = crate::common::qbo::qbo_counts(&cfg)["pushed"];
    assert!((1..=2).contains(&pushed), "{pushed} pushed before stopping");
    assert!(q.sim.requests(INVOICE_ROUTE) <= 2);
}
