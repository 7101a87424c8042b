//! A till back from a day offline: its backlog drains oldest first, but a
//! sale rung up meanwhile is not queued behind it (issue 13's catch-up; the
//! rates are `scripts/bench.sh`'s `bench catchup`).

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use pos_connector::clock::SystemClock;
use pos_connector::service::Spawned;
use pos_connector::store::Outbox;
use pos_sandbox::{LaravelSandboxOptions, LatencyProfile};
use serde_json::{json, Value};

fn sale(n: &str) -> Value {
    json!({"invoice_number": n, "customer_name": "Walk-in",
           "items": [{"description": "Tea", "quantity": 1, "price": 2}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sale_is_not_queued_behind_the_backlog() {
    // The real stack's timing: about half a second of backend work per
    // sale, two PHP workers, two slots in the agent.
    let fx = Fixture::with_options(LaravelSandboxOptions {
        latency: LatencyProfile::realistic(),
        workers: Some(2),
        ..Default::default()
    })
    .await;
    let cfg = fx.config(json!({
        "intake": {"settle_seconds": 0},
        "pipeline": {"concurrency": 2, "max_backoff_seconds": 1},
    }));
    let agent = Spawned::start(&cfg, Arc::new(SystemClock)).await.unwrap();
    const BACKLOG: u64 = 40;
    for i in 0..BACKLOG {
        post(&agent, &sale(&format!("OLD-{i:03}"))).await;
    }
    wait_until(Duration::from_secs(60), "the drain under way", || async {
        count(&cfg, "done") >= 1
    })
    .await;
    post(&agent, &sale("NEW-1")).await;
    let done = |n: &str| {
        Outbox::open(&cfg.data_dir)
            .unwrap()
            .find(n)
            .unwrap()
            .is_some_and(|j| j.state.as_str() == "done")
    };
    wait_until(Duration::from_secs(120), "the new sale done", || async {
        done("NEW-1")
    })
    .await;
    let backlog_done = count(&cfg, "done") - 1;
    // The new sale took the next free slot: most of the backlog is still
    // there (waiting its turn behind 40 sales would leave none).
    assert!(
        backlog_done <= BACKLOG / 2,
        "the new sale was done after {backlog_done} of the {BACKLOG} older ones"
    );
    // The other slot still worked oldest first.
    assert!(done("OLD-000") && done("OLD-001"), "the oldest go first");
    wait_until(Duration::from_secs(300), "the backlog drained", || async {
        count(&cfg, "done") == BACKLOG + 1
    })
    .await;
    agent.stop().await.unwrap();
    assert_eq!(fx.sandbox.invoice_count(), (BACKLOG + 1) as usize);
}
