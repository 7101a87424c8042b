//! QuickBooks Online end to end against the simulator on 127.0.0.1:0: the
//! connect flow through the real binary, the rotating tokens under
//! concurrency and SIGKILLs, exactly-once pushes, "reconnect needed", and
//! the rate limits.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::qbo::{
    doc_numbers, pusher, qbo_counts, sale, sim_options, submitted, submitted_jobs, unlimited, Qbo,
    INVOICE_ROUTE, TOKEN_ROUTE,
};
use crate::common::*;
use pos_connector::clock::SystemClock;
use pos_connector::config::{self, Config};
use pos_connector::quickbooks::limiter::RateLimits;
use pos_connector::quickbooks::model::{Entity, Invoice, Line, Ref};
use pos_connector::quickbooks::oauth::{self, OAuthClient};
use pos_connector::quickbooks::{self, PushOutcome, QboError};
use pos_connector::secret::Vault;
use pos_connector::store::Outbox;
use pos_sandbox::quickbooks::{QboLimits, QuickbooksSandboxOptions, Rotation, SANDBOX_CLIENT_ID};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

#[tokio::test]
async fn connect_flow_end_to_end_and_a_wrong_state_is_refused() {
    let mut q = Qbo::start(sim_options()).await;
    let cfg = q.config(json!({}));
    use tokio::io::AsyncBufReadExt;
    q.release_redirect_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pos-connector"))
        .args([
            "--config",
            q.config_path().to_str().unwrap(),
            "qbo",
            "connect",
            "--timeout",
            "60",
        ])
        .env_remove("POS_CONNECTOR_QB_CLIENT_SECRET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let authorize = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the URL is printed");
            if let Some(url) = line.trim().strip_prefix(&q.sim.auth_base()) {
                return format!("{}{url}", q.sim.auth_base());
            }
        }
    })
    .await
    .expect("authorize URL printed");
    let url = reqwest::Url::parse(&authorize).unwrap();
    let param = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    assert_eq!(param("client_id"), SANDBOX_CLIENT_ID);
    assert_eq!(param("response_type"), "code");
    assert_eq!(param("scope"), "com.intuit.quickbooks.accounting");
    assert_eq!(param("redirect_uri"), q.redirect);
    assert!(param("state").len() >= 32, "a random state");

    // A forged callback (CSRF): refused, and nothing is exchanged.
    let http = pos_connector::http_client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let forged = http
        .get(format!("{}?state=forged&code=evil&realmId=666", q.redirect))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert_eq!(q.sim.token_grants().codes_exchanged, 0);

    // The person approves: the browser follows Intuit's redirect back.
    let done = http.get(&authorize).send().await.unwrap();
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut out = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            out.push_str(&l);
            out.push('\n');
        }
        out
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("QuickBooks connected"), "{rest}");
    assert_eq!(
        q.sim.token_grants().codes_exchanged,
        1,
        "the code is exchanged once"
    );

    // Stored encrypted, realm included; `qbo status` says connected.
    let raw = std::fs::read(cfg.data_dir.join("secrets.bin")).unwrap();
    let live = q.sim.latest_refresh_token().unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains(&live),
        "tokens are encrypted at rest"
    );
    let st = q.cli(&["--json", "qbo", "status"], None).await;
    assert_eq!(st.code, 0, "{st:?}");
    let v: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["state"], "connected");
    assert_eq!(v["realm_id"], q.sim.realm_id());
    assert!(
        v["hard_expires_at"].is_string(),
        "the hard expiry is kept: {v}"
    );
    assert!(v["refresh_expires_at"].is_string());
    assert!(
        !st.stdout.contains(&live) && !st.stderr.contains(&live),
        "no token printed"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_pushes_at_token_expiry_refresh_once() {
    let q = Qbo::start(sim_options()).await;
    let mut cfg = q.config(json!({}));
    unlimited(&mut cfg);
    q.sim.set_limits(QboLimits {
        enforce: false,
        ..QboLimits::default()
    });
    q.connect(&cfg).await;
    let jobs = submitted_jobs(&cfg, 200, "CC-");
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let p = pusher(&cfg, client);
    // Every access token issued so far is now refused (3200).
    q.sim.expire_access_tokens();
    let before = q.sim.token_grants().refreshes_ok;
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            let p = p.clone();
            tokio::spawn(async move { p.push_one(&j).await })
        })
        .collect();
    for t in tasks {
        let o = t.await.unwrap();
        assert!(matches!(o, PushOutcome::Pushed { .. }), "{o:?}");
    }
    assert_eq!(
        q.sim.token_grants().refreshes_ok - before,
        1,
        "one refresh for 200 pushes"
    );
    assert_eq!(q.sim.token_grants().invalid_grant, 0);
    let numbers = doc_numbers(&q.sim);
    assert_eq!(numbers.len(), 200);
    let mut unique = numbers.clone();
    unique.dedup();
    assert_eq!(unique.len(), 200, "no invoice twice");
    // Created concurrently from many pushes, yet once each (requestid).
    assert_eq!(q.sim.customers().len(), 7);
    assert_eq!(q.sim.items().len(), 5);
    assert_eq!(qbo_counts(&cfg)["pushed"], 200);
    assert_eq!(q.sim.missing_minorversion(), 0);
    assert_eq!(q.sim.missing_accept_json(), 0);
    // The invoice as QuickBooks holds it.
    let inv = q
        .sim
        .invoices()
        .into_iter()
        .find(|i| i["DocNumber"] == "CC-0000")
        .unwrap();
    assert_eq!(inv["TxnDate"], "2026-11-20");
    assert_eq!(inv["GlobalTaxCalculation"], "TaxExcluded");
    let line = &inv["Line"][0];
    assert_eq!(line["SalesItemLineDetail"]["Qty"], json!(2));
    assert_eq!(line["SalesItemLineDetail"]["TaxCodeRef"]["value"], "3");
    assert!(
        inv["PrivateNote"].as_str().unwrap().contains("uuid-0"),
        "{inv}"
    );
    assert!(inv["PrivateNote"].as_str().unwrap().contains("submitted"));
}

#[tokio::test]
async fn a_replay_after_3200_reuses_the_requestid_and_makes_no_duplicate() {
    let q = Qbo::start(sim_options()).await;
    let mut cfg = q.config(json!({}));
    unlimited(&mut cfg);
    q.connect(&cfg).await;
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let customer = q.sim.seed_customer("Replay Customer", true);
    let item = q.sim.seed_item("Replay Item", None);
    let invoice = Invoice {
        doc_number: Some("RP-1".into()),
        customer_ref: Some(Ref::new(customer)),
        line: vec![Line::sales_item(
            None,
            "10".parse().unwrap(),
            Ref::new(item),
            "1".parse().unwrap(),
            "10".parse().unwrap(),
            Some(Ref::new("3")),
        )],
        ..Default::default()
    };
    // The create goes through but its answer is lost.
    q.sim.inject(INVOICE_ROUTE, Fault::DropAfter, 1);
    let lost = client
        .create::<Invoice>(Entity::Invoice, &invoice, "pc-test-replay")
        .await;
    assert!(matches!(lost, Err(QboError::Transport { .. })), "{lost:?}");
    assert_eq!(q.sim.invoices().len(), 1);
    // The retry meets an expired token: refresh, then the same request
    // (same requestid) is replayed and answered with the original.
    q.sim.expire_access_tokens();
    let got = client
        .create::<Invoice>(Entity::Invoice, &invoice, "pc-test-replay")
        .await
        .unwrap();
    assert_eq!(q.sim.invoices().len(), 1, "no duplicate");
    assert_eq!(got.id.as_deref(), q.sim.invoices()[0]["Id"].as_str());
    assert_eq!(q.sim.requests(INVOICE_ROUTE), 3, "lost, 3200, replay");
    assert_eq!(q.sim.responses(INVOICE_ROUTE, 401), 1);
    assert_eq!(q.sim.token_grants().refreshes_ok, 1);
}

#[tokio::test]
async fn an_existing_doc_number_and_a_6140_record_the_existing_id() {
    let q = Qbo::start(sim_options()).await;
    let mut cfg = q.config(json!({}));
    unlimited(&mut cfg);
    q.connect(&cfg).await;
    let jobs = submitted_jobs(&cfg, 2, "EX-");
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let p = pusher(&cfg, client);

    // Already there (entered by hand, or by a push whose record was lost).
    let existing = q.sim.seed_invoice("EX-0000", "Someone");
    let o = p.push_one(&jobs[0]).await;
    assert_eq!(
        o,
        PushOutcome::Pushed {
            qbo_id: existing.clone(),
            existed: true
        }
    );
    assert_eq!(q.sim.requests(INVOICE_ROUTE), 0, "not created again");

    // Another till creates it between our check and our create: 6140. The
    // simulator puts the other till's invoice in when our create arrives,
    // after our check came back empty: the race, without a timing window.
    q.sim.race_next_create("EX-0001", "Someone Else");
    let o = p.push_one(&jobs[1]).await;
    let raced = q
        .sim
        .invoices()
        .iter()
        .find(|i| i["DocNumber"] == "EX-0001")
        .and_then(|i| i["Id"].as_str().map(String::from))
        .expect("the other till's invoice");
    assert_eq!(
        o,
        PushOutcome::Pushed {
            qbo_id: raced.clone(),
            existed: true
        }
    );
    assert_eq!(
        q.sim.responses(INVOICE_ROUTE, 400),
        1,
        "the create met 6140"
    );
    assert_eq!(doc_numbers(&q.sim), vec!["EX-0000", "EX-0001"]);
    let job = Outbox::open(&cfg.data_dir)
        .unwrap()
        .find("EX-0001")
        .unwrap()
        .unwrap();
    assert_eq!(job.qbo.unwrap().qbo_id.as_deref(), Some(raced.as_str()));
}

#[tokio::test]
async fn invalid_grant_parks_pushes_until_reconnected_and_is_reported_once() {
    let q = Qbo::start(sim_options()).await;
    let cfg = q.config(json!({}));
    q.connect(&cfg).await;
    // The grant dies at Intuit (revoked from the company's settings).
    q.sim.revoke_all();
    let agent = pos_connector::service::Spawned::start(&cfg, Arc::new(SystemClock))
        .await
        .unwrap();
    let inbox = q.fx.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        inbox.join("sales.json"),
        serde_json::to_string(&json!([
            {"invoice_number": "IG-1", "customer_name": "A", "items": [{"description": "X", "quantity": 1, "price": 5}]},
            {"invoice_number": "IG-2", "customer_name": "B", "items": [{"description": "Y", "quantity": 2, "price": 3}]}
        ]))
        .unwrap(),
    )
    .unwrap();
    // JoFotara is not held up: both reach done at the backend.
    wait_until(Duration::from_secs(30), "2 done", || async {
        count(&cfg, "done") == 2
    })
    .await;
    // The first push met the dead grant and waits; the pusher holds the
    // rest as they are.
    wait_until(Duration::from_secs(30), "a push waiting", || async {
        qbo_counts(&cfg)["waiting"] >= 1
    })
    .await;
    // Another sale makes the pusher ask for a token again: it waits too,
    // without a second refresh.
    sale_waits_for_quickbooks(&q, &cfg, "IG-3").await;
    assert_eq!(
        q.sim.token_grants().invalid_grant,
        1,
        "reported once, not retried"
    );
    let c = qbo_counts(&cfg);
    assert_eq!(
        (c["waiting"] + c["pending"], c["pushed"], c["parked"]),
        (3, 0, 0),
        "nothing dropped: {c:?}"
    );
    let job = Outbox::open(&cfg.data_dir)
        .unwrap()
        .find("IG-1")
        .unwrap()
        .unwrap();
    let why = job.qbo.unwrap().last_error.unwrap();
    assert!(
        why.starts_with("QuickBooks reconnect needed") && why.contains("qbo connect"),
        "{why}"
    );
    let st = q.cli(&["qbo", "status"], None).await;
    assert_eq!(st.code, 3, "{st:?}");
    assert!(st.stdout.contains("RECONNECT NEEDED"), "{}", st.stdout);
    assert!(st.stderr.contains("invalid_grant"), "{}", st.stderr);
    let push = q.cli(&["qbo", "push", "--all-pending"], None).await;
    assert_eq!(push.code, 3, "{push:?}");
    assert_eq!(
        q.sim.token_grants().invalid_grant,
        1,
        "the CLI does not spend it again"
    );

    // A person reconnects (code obtained in a browser elsewhere).
    let code = q.sim.issue_code(&q.redirect);
    let realm = q.sim.realm_id();
    let ex = q
        .cli(
            &["qbo", "exchange-code", "--code", &code, "--realm", &realm],
            None,
        )
        .await;
    assert_eq!(ex.code, 0, "{ex:?}");
    wait_until(
        Duration::from_secs(30),
        "pushed after reconnecting",
        || async { qbo_counts(&cfg)["pushed"] == 3 },
    )
    .await;
    assert_eq!(doc_numbers(&q.sim), vec!["IG-1", "IG-2", "IG-3"]);
    agent.stop().await.unwrap();
    let st = q.cli(&["qbo", "status"], None).await;
    assert_eq!(st.code, 0, "{st:?}");
    assert!(st.stdout.contains("pushed 3"), "{}", st.stdout);
}

#[tokio::test]
async fn a_thousand_pending_invoices_pushed_with_zero_429s() {
    let q = Qbo::start(sim_options()).await;
    let mut cfg = q.config(json!({}));
    // QuickBooks' limits on both sides, their windows 10x shorter so the
    // test takes seconds (1 s -> 100 ms, 60 s -> 6 s). Not shorter: the
    // limiter's margin (a tenth of a window) must stay above what a loaded
    // 2-core machine adds between a send and its arrival; at 50x it was
    // 2 ms and a busy CI run met a 429.
    let scale = 0.1;
    q.sim.set_limits(QboLimits {
        time_scale: scale,
        ..QboLimits::default()
    });
    cfg.quickbooks.limits = RateLimits {
        time_scale: scale,
        ..RateLimits::default()
    };
    q.connect(&cfg).await;
    submitted_jobs(&cfg, 1000, "TH-");
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let p = pusher(&cfg, client);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = {
        let p = p.clone();
        tokio::spawn(async move {
            p.run(async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    wait_until(Duration::from_secs(120), "1000 pushed", || async {
        qbo_counts(&cfg)["pushed"] == 1000
    })
    .await;
    let _ = stop_tx.send(());
    run.await.unwrap();
    assert_eq!(
        q.sim.throttled(),
        0,
        "the agent kept under the limits by itself"
    );
    let numbers = doc_numbers(&q.sim);
    assert_eq!(numbers.len(), 1000);
    let batches = q.sim.requests("POST /v3/company/{realm}/batch");
    assert!((34..=40).contains(&batches), "batches of 30: {batches}");
}

// ------------------------------------------------------- SIGKILL and tokens

/// Drops a sale in the running agent's inbox and waits until JoFotara has
/// it and its QuickBooks push waits for a reconnect: the pusher asked the
/// token keeper for a token and was held.
async fn sale_waits_for_quickbooks(q: &Qbo, cfg: &Config, number: &str) {
    let inbox = q.fx.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let sale = json!({"invoice_number": number, "customer_name": "C",
                      "items": [{"description": "Z", "quantity": 1, "price": 4}]});
    std::fs::write(inbox.join(format!("{number}.json")), sale.to_string()).unwrap();
    wait_until(
        Duration::from_secs(30),
        &format!("{number}'s push waiting"),
        || async {
            let job = Outbox::open(&cfg.data_dir).unwrap().find(number).unwrap();
            job.and_then(|j| j.qbo).is_some_and(|p| {
                p.state == "waiting"
                    && p.last_error
                        .is_some_and(|e| e.starts_with("QuickBooks reconnect needed"))
            })
        },
    )
    .await;
}

fn spawn_agent(dir: &Path, config: &Path) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pos-connector"));
    for (k, _) in std::env::vars() {
        if k.starts_with("POS_CONNECTOR") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["--config", config.to_str().unwrap(), "run"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn sigkill(mut child: tokio::process::Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

fn stored_refresh_token(cfg: &Config) -> String {
    let stored = Vault::new(&cfg.data_dir)
        .token(oauth::VAULT_NAME)
        .unwrap()
        .unwrap();
    stored.refresh.unwrap().expose_secret().to_string()
}

/// Keeps the agent refreshing about once a second.
fn refreshing_options(rotation: Rotation) -> QuickbooksSandboxOptions {
    QuickbooksSandboxOptions {
        access_token_lifetime: Duration::from_secs(2),
        rotation,
        ..sim_options()
    }
}

async fn kill_while_refreshing(q: &Qbo, cfg: &Config, kills: usize) -> (usize, usize) {
    let (mut kept, mut lost) = (0, 0);
    for round in 0..kills {
        let before = q.sim.token_grants().refreshes_ok;
        let agent = spawn_agent(q.fx.dir.path(), &q.config_path());
        wait_until(Duration::from_secs(20), "a refresh by this run", || async {
            q.sim.token_grants().refreshes_ok > before
        })
        .await;
        let pause = 150 + (round as u64 * 337) % 1300;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        sigkill(agent).await;
        if q.sim
            .live_refresh_tokens()
            .contains(&stored_refresh_token(cfg))
        {
            kept += 1;
        } else {
            lost += 1;
            break;
        }
    }
    (kept, lost)
}

#[tokio::test]
async fn sigkilled_while_refreshing_it_comes_back_connected_with_a_grace_period() {
    let q = Qbo::start(refreshing_options(Rotation::Grace(Duration::from_secs(
        86_400,
    ))))
    .await;
    let cfg = q.config(json!({}));
    q.connect(&cfg).await;
    let (kept, lost) = kill_while_refreshing(&q, &cfg, 8).await;
    assert_eq!((kept, lost), (8, 0), "the stored token always works");
    // And the ninth run is connected and refreshing.
    let before = q.sim.token_grants().refreshes_ok;
    let agent = spawn_agent(q.fx.dir.path(), &q.config_path());
    wait_until(Duration::from_secs(20), "refreshing again", || async {
        q.sim.token_grants().refreshes_ok > before + 1
    })
    .await;
    sigkill(agent).await;
    assert_eq!(q.sim.token_grants().invalid_grant, 0);
}

#[tokio::test]
async fn strict_rotation_loses_a_token_only_if_killed_before_it_is_on_disk() {
    let q = Qbo::start(refreshing_options(Rotation::Strict)).await;
    let cfg = q.config(json!({}));
    q.connect(&cfg).await;
    // Kills at random moments: every one leaves a live token on disk
    // (a rotated token is written before anything else happens).
    let (kept, lost) = kill_while_refreshing(&q, &cfg, 6).await;
    assert_eq!((kept, lost), (6, 0));
    assert_eq!(q.sim.token_grants().invalid_grant, 0);

    // Killed while Intuit's answer carrying the rotated token is still on
    // the wire: that token never reached the agent, the stored one is dead.
    let agent = spawn_agent(q.fx.dir.path(), &q.config_path());
    let before = q.sim.requests(TOKEN_ROUTE);
    q.sim
        .inject(TOKEN_ROUTE, Fault::HoldAfter(Duration::from_secs(30)), 1);
    wait_until(Duration::from_secs(20), "a refresh in flight", || async {
        q.sim.requests(TOKEN_ROUTE) > before
    })
    .await;
    sigkill(agent).await;
    assert!(!q
        .sim
        .live_refresh_tokens()
        .contains(&stored_refresh_token(&cfg)));
    q.sim.clear_faults();
    // The next run finds out once and says so; it does not loop.
    let agent = spawn_agent(q.fx.dir.path(), &q.config_path());
    wait_until(Duration::from_secs(20), "invalid_grant seen", || async {
        q.sim.token_grants().invalid_grant == 1
    })
    .await;
    // A sale makes the pusher ask for a token: it waits, and the dead
    // grant is not tried again.
    sale_waits_for_quickbooks(&q, &cfg, "SR-1").await;
    assert_eq!(q.sim.token_grants().invalid_grant, 1, "reported once");
    let st = q.cli(&["qbo", "status"], None).await;
    assert_eq!(st.code, 3, "{st:?}");
    assert!(st.stdout.contains("RECONNECT NEEDED"), "{}", st.stdout);
    sigkill(agent).await;
    // A restart does not spend the dead grant again either, with work for
    // QuickBooks waiting.
    let agent = spawn_agent(q.fx.dir.path(), &q.config_path());
    sale_waits_for_quickbooks(&q, &cfg, "SR-2").await;
    sigkill(agent).await;
    assert_eq!(q.sim.token_grants().invalid_grant, 1);
}

#[test]
fn env_client_secret_wins_and_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    std::fs::write(
        &p,
        serde_json::to_string(&json!({
            "base_url": "http://127.0.0.1:9",
            "email": "a@b.c",
            "data_dir": dir.path().join("data"),
            "invoice_folder": dir.path().join("in"),
            "quickbooks": {"enabled": true, "client_id": "id", "client_secret": "file-secret",
                           "income_account_id": "1", "tax_code": "TAX"}
        }))
        .unwrap(),
    )
    .unwrap();
    let env = vec![(
        "POS_CONNECTOR_QB_CLIENT_SECRET".to_string(),
        "env-secret".to_string(),
    )];
    let cfg = config::load_from(&p, &env).unwrap();
    assert_eq!(
        cfg.quickbooks
            .client_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        "env-secret"
    );
    let view = config::redacted_view(&cfg, "x").to_string();
    assert!(
        !view.contains("env-secret") && !view.contains("file-secret"),
        "{view}"
    );
    assert!(view.contains("POS_CONNECTOR_QB_CLIENT_SECRET"));
    assert!(!format!("{cfg:?}").contains("env-secret"));
    assert_eq!(
        cfg.quickbooks.token_url.as_str(),
        "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
    );
    assert_eq!(cfg.quickbooks.push_after.as_str(), "submitted");
    // Enabled without an app: named, with the fix.
    std::fs::write(
        &p,
        serde_json::to_string(&json!({
            "base_url": "http://127.0.0.1:9", "email": "a@b.c",
            "data_dir": dir.path().join("data"), "invoice_folder": dir.path().join("in"),
            "quickbooks": {"enabled": true, "push_after": "paid", "environment": "staging"}
        }))
        .unwrap(),
    )
    .unwrap();
    let err = config::load_from(&p, &[]).unwrap_err().to_string();
    for key in [
        "quickbooks.client_id",
        "quickbooks.client_secret",
        "quickbooks.push_after",
        "quickbooks.environment",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[tokio::test]
async fn set_tokens_refresh_status_and_disconnect_from_the_command_line() {
    let q = Qbo::start(sim_options()).await;
    let cfg = q.config(json!({}));
    let st = q.cli(&["qbo", "status"], None).await;
    assert_eq!(st.code, 3, "not connected yet: {st:?}");
    assert!(st.stderr.contains("qbo connect"), "{}", st.stderr);

    // Tokens obtained elsewhere (another tool, a previous install).
    let oauth = OAuthClient::from_config(&cfg.quickbooks, quickbooks::http_client(&cfg)).unwrap();
    let answer = oauth
        .exchange_code(&q.sim.issue_code(&q.redirect))
        .await
        .unwrap();
    let tokens = json!({
        "refresh_token": answer.refresh_token.expose_secret(),
        "access_token": answer.access_token.expose_secret(),
        "expires_in": 3600,
        "realmId": q.sim.realm_id(),
    });
    let set = q
        .cli(&["qbo", "set-tokens"], Some(&tokens.to_string()))
        .await;
    assert_eq!(set.code, 0, "{set:?}");
    let refresh = q.cli(&["qbo", "refresh"], None).await;
    assert_eq!(refresh.code, 0, "{refresh:?}");
    assert_eq!(q.sim.token_grants().refreshes_ok, 1);
    // The rotated token is the stored one, and it is live.
    assert!(q
        .sim
        .live_refresh_tokens()
        .contains(&stored_refresh_token(&cfg)));
    let st = q.cli(&["--json", "qbo", "status"], None).await;
    assert_eq!(st.code, 0, "{st:?}");
    let v: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["last_refresh"]["ok"], true, "{v}");
    assert_eq!(v["realm_id"], q.sim.realm_id());

    let off = q.cli(&["qbo", "disconnect"], None).await;
    assert_eq!(off.code, 0, "{off:?}");
    assert_eq!(q.sim.token_grants().revoked, 1, "revoked at Intuit");
    assert!(q.sim.live_refresh_tokens().is_empty());
    let st = q.cli(&["qbo", "status"], None).await;
    assert_eq!(st.code, 3, "forgotten here: {st:?}");
    let bad = q
        .cli(&["qbo", "set-tokens"], Some("{\"access_token\": \"x\"}"))
        .await;
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("refresh_token"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_failing_token_endpoint_keeps_the_stored_token_and_recovers() {
    let q = Qbo::start(sim_options()).await;
    let mut cfg = q.config(json!({}));
    unlimited(&mut cfg);
    q.connect(&cfg).await;
    let stored = stored_refresh_token(&cfg);
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    q.sim.expire_access_tokens();
    q.sim.inject(
        TOKEN_ROUTE,
        Fault::Status {
            status: 503,
            retry_after: None,
            html: false,
        },
        1,
    );
    let q1 = pos_connector::quickbooks::model::Query::select(Entity::Customer).build();
    let err = client
        .query::<pos_connector::quickbooks::model::Customer>(Entity::Customer, &q1)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        matches!(
            err,
            QboError::SignIn {
                needs_person: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        stored_refresh_token(&cfg),
        stored,
        "the stored token is kept"
    );
    assert!(q.sim.live_refresh_tokens().contains(&stored));
    // After the cooldown the refresh goes through.
    wait_until(Duration::from_secs(10), "a successful call", || async {
        client
            .query::<pos_connector::quickbooks::model::Customer>(Entity::Customer, &q1)
            .await
            .is_ok()
    })
    .await;
    assert_eq!(q.sim.token_grants().refreshes_ok, 1);
    assert_ne!(stored_refresh_token(&cfg), stored, "rotated and stored");
}

#[tokio::test]
async fn throttling_holds_pushes_without_charging_them_and_clashes_are_parked() {
    let q = Qbo::start(sim_options()).await;
    let mut cfg = q.config(json!({}));
    // Scaled: the 1 s pause after a 429 without Retry-After is 10 ms.
    cfg.quickbooks.limits = RateLimits {
        time_scale: 0.01,
        ..RateLimits::default()
    };
    q.sim.set_limits(QboLimits {
        enforce: false,
        ..QboLimits::default()
    });
    q.connect(&cfg).await;
    let jobs = submitted_jobs(&cfg, 1, "TR-");
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let p = pusher(&cfg, client);
    // QuickBooks' throttle answer (429 with the XML 3001 body).
    q.sim.inject(
        INVOICE_ROUTE,
        Fault::Status {
            status: 429,
            retry_after: None,
            html: false,
        },
        1,
    );
    let o = p.push_one(&jobs[0]).await;
    assert!(
        matches!(&o, PushOutcome::Waiting(why) if why.contains("3001") || why.to_lowercase().contains("throttl")),
        "{o:?}"
    );
    let push = Outbox::open(&cfg.data_dir)
        .unwrap()
        .find("TR-0000")
        .unwrap()
        .unwrap()
        .qbo
        .unwrap();
    assert_eq!(
        (push.state.as_str(), push.attempts),
        ("waiting", 0),
        "not charged"
    );
    // The company's one limiter took it (every push pauses; the pause
    // itself, 10 ms at this scale, is checked on a paused clock in
    // `qbo_share`).
    assert_eq!(
        p.client().limiter().throttled_count(),
        1,
        "the shared limiter counted the 429"
    );
    let job = Outbox::open(&cfg.data_dir)
        .unwrap()
        .find("TR-0000")
        .unwrap()
        .unwrap();
    let o = p.push_one(&job).await;
    assert!(
        matches!(o, PushOutcome::Pushed { existed: false, .. }),
        "{o:?}"
    );
    assert_eq!(q.sim.invoices().len(), 1);

    // A customer that exists but is inactive: 6240 on create, found among
    // the inactive ones, parked with what to do.
    q.sim.seed_customer("Dormant Ltd", false);
    let mut o = Outbox::open(&cfg.data_dir).unwrap();
    let job = submitted(&mut o, &sale("TR-DORMANT", "Dormant Ltd", "Item 0"), 1);
    let out = p.push_one(&job).await;
    let PushOutcome::Parked(why) = out else {
        panic!("{out:?}")
    };
    assert!(
        why.contains("Dormant Ltd") && why.contains("inactive") && why.contains("queue retry"),
        "{why}"
    );
    assert_eq!(q.sim.invoices().len(), 1, "nothing created for it");
}
