//! The QuickBooks fixture shared by the QuickBooks tests: the Laravel
//! fixture's config plus a QuickBooks simulator on 127.0.0.1:0, connected
//! without a browser; sales put in the outbox as due for QuickBooks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pos_connector::clock::SystemClock;
use pos_connector::config::Config;
use pos_connector::intake::sale::{Sale, SaleLine};
use pos_connector::quickbooks::limiter::RateLimits;
use pos_connector::quickbooks::oauth::{self, ConnectionStore, OAuthClient};
use pos_connector::quickbooks::{self, PushSettings, Pusher, QboClient};
use pos_connector::store::{Job, NewJob, Outbox, OutboxHandle, Stage, StepResult};
use pos_sandbox::quickbooks::{
    QuickbooksSandbox, QuickbooksSandboxOptions, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET,
};
use serde_json::{json, Value};

use super::{Fixture, Run};

pub const INVOICE_ROUTE: &str = "POST /v3/company/{realm}/invoice";
pub const QUERY_ROUTE: &str = "GET /v3/company/{realm}/query";
pub const TOKEN_ROUTE: &str = "POST /oauth2/v1/tokens/bearer";

/// The Laravel fixture plus a QuickBooks simulator.
pub struct Qbo {
    pub fx: Fixture,
    pub sim: QuickbooksSandbox,
    /// The redirect URI, on a loopback port this fixture holds (see
    /// [`Qbo::release_redirect_port`]).
    pub redirect: String,
    redirect_port: Option<std::net::TcpListener>,
}

impl Qbo {
    pub async fn start(opts: QuickbooksSandboxOptions) -> Qbo {
        let fx = Fixture::start().await;
        let sim = QuickbooksSandbox::start("127.0.0.1:0".parse().unwrap(), opts)
            .await
            .unwrap();
        // The redirect URI must name its port before anything starts. Most
        // tests only hand the URI to the simulator; holding the port keeps
        // any other program from serving it meanwhile.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let redirect = format!(
            "http://127.0.0.1:{}/callback",
            held.local_addr().unwrap().port()
        );
        Qbo {
            fx,
            sim,
            redirect,
            redirect_port: Some(held),
        }
    }

    /// Lets the redirect URI's port go, for a `qbo connect` child that
    /// listens there itself. Between this and the child's bind another
    /// program could take the port: that window cannot be closed from the
    /// test, since `qbo connect` binds the port of its configured redirect
    /// URI and cannot take an inherited socket (that would be systemd-style
    /// socket activation, Unix-only code for `platform/`, for the sake of
    /// one test). Called right before the spawn, it is a few system calls
    /// wide, and a lost race fails loudly (`cannot listen on ...`).
    pub fn release_redirect_port(&mut self) {
        self.redirect_port = None;
    }

    pub fn qb_section(&self, extra: Value) -> Value {
        let mut qb = json!({
            "enabled": true,
            "auth_base": self.sim.auth_base(),
            "api_base": self.sim.api_base(),
            "client_id": SANDBOX_CLIENT_ID,
            "client_secret": SANDBOX_CLIENT_SECRET,
            "redirect_uri": self.redirect,
            "income_account_id": "1",
            "tax_code": "3",
            "global_tax_calculation": "TaxExcluded",
        });
        for (k, v) in extra.as_object().unwrap() {
            qb[k] = v.clone();
        }
        qb
    }

    /// A running agent's config with the QuickBooks section.
    pub fn config(&self, qb_extra: Value) -> Config {
        self.fx
            .service_config(json!({"quickbooks": self.qb_section(qb_extra)}))
    }

    pub fn config_path(&self) -> PathBuf {
        self.fx.path("config.json")
    }

    /// The real binary with this fixture's config.
    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> Run {
        self.fx.cli(args, &[], stdin).await
    }

    /// Connects as `qbo exchange-code` would, without a browser.
    pub async fn connect(&self, cfg: &Config) {
        connect_to(&self.sim, cfg, &self.redirect).await;
    }
}

/// Connects `cfg` (whose QuickBooks section points at `sim`) to `sim`'s
/// company, as `qbo exchange-code` would.
pub async fn connect_to(sim: &QuickbooksSandbox, cfg: &Config, redirect: &str) {
    let oauth = OAuthClient::from_config(&cfg.quickbooks, quickbooks::http_client(cfg)).unwrap();
    let code = sim.issue_code(redirect);
    oauth::connect_with_code(
        &oauth,
        &ConnectionStore::new(&cfg.data_dir),
        &SystemClock,
        &code,
        &sim.realm_id(),
    )
    .await
    .unwrap();
}

pub fn sim_options() -> QuickbooksSandboxOptions {
    QuickbooksSandboxOptions {
        us_company: false,
        ..Default::default()
    }
}

pub fn unlimited(cfg: &mut Config) {
    cfg.quickbooks.limits = RateLimits {
        time_scale: 0.001,
        ..RateLimits::default()
    };
}

pub fn sale(number: &str, customer: &str, item: &str) -> Sale {
    Sale {
        invoice_number: number.into(),
        number_derived: false,
        customer_name: customer.into(),
        customer_email: None,
        customer_phone: None,
        date: Some("2026-11-20".into()),
        currency: None,
        notes: None,
        lines: vec![SaleLine {
            description: item.into(),
            quantity: 2,
            unit_price: "12.50".parse().unwrap(),
            sku: None,
            converted_from: None,
        }],
    }
}

/// Puts `sale` in the outbox as submitted at the backend (due for
/// QuickBooks).
pub fn submitted(o: &mut Outbox, s: &Sale, n: u64) -> Job {
    o.set_qbo_push_after(Some(Stage::Submitted));
    let now = chrono::Utc::now();
    let job = o
        .enqueue(
            &NewJob {
                invoice_number: s.invoice_number.clone(),
                sale_json: serde_json::to_string(s).unwrap(),
                content_hash: format!("hash-{}", s.invoice_number),
                source: "test".into(),
            },
            now,
        )
        .unwrap()
        .job()
        .clone();
    let result = StepResult {
        laravel_id: Some(1000 + n),
        uuid: Some(format!("uuid-{n}")),
        backend_status: Some("submitted".into()),
        pdf_path: None,
    };
    o.record_step(job.id, Stage::Submitted, &result, "submitted (test)", now)
        .unwrap()
}

/// `n` sales already submitted at the backend, due for QuickBooks.
pub fn submitted_jobs(cfg: &Config, n: usize, prefix: &str) -> Vec<Job> {
    let mut o = Outbox::open(&cfg.data_dir).unwrap();
    (0..n)
        .map(|i| {
            let number = format!("{prefix}{i:04}");
            let s = sale(
                &number,
                &format!("Customer {}", i % 7),
                &format!("Item {}", i % 5),
            );
            submitted(&mut o, &s, i as u64)
        })
        .collect()
}

pub fn pusher(cfg: &Config, client: QboClient) -> Pusher {
    Pusher::new(
        OutboxHandle::open(&cfg.data_dir).unwrap(),
        client,
        PushSettings::from_config(
            &cfg.quickbooks,
            Duration::from_secs(1),
            Duration::from_secs(1),
        ),
        Arc::new(SystemClock),
    )
}

pub fn qbo_counts(cfg: &Config) -> std::collections::BTreeMap<String, u64> {
    Outbox::open(&cfg.data_dir).unwrap().qbo_counts().unwrap()
}

pub fn doc_numbers(sim: &QuickbooksSandbox) -> Vec<String> {
    let mut v: Vec<String> = sim
        .invoices()
        .iter()
        .map(|i| i["DocNumber"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}
