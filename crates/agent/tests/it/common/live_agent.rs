//! A whole agent in this process, wired to the Laravel sandbox and the
//! QuickBooks simulator, with its local API on a known loopback port (the
//! QuickBooks redirect URI must name it): what the local API tests and the
//! browser test drive.
//!
//! The port is a listener this fixture binds and holds for its whole life,
//! handed to each start of the agent: known before the config is written,
//! never free for another program to take between a stop and a restart.

use std::sync::Arc;
use std::time::Duration;

use pos_connector::clock::SystemClock;
use pos_connector::config::Config;
use pos_connector::quickbooks::limiter::RateLimits;
use pos_connector::service::Spawned;
use pos_sandbox::quickbooks::{
    QuickbooksSandbox, QuickbooksSandboxOptions, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{wait_until, Fixture, API_KEY};

/// How a request presents the local API key.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    None,
    Bearer(&'a str),
    Header(&'a str),
}

pub struct LiveAgent {
    pub fx: Fixture,
    pub qbo: QuickbooksSandbox,
    pub cfg: Config,
    pub port: u16,
    /// The local API's socket; each start serves a clone of it. `None`
    /// once [`LiveAgent::close_port`] let it go.
    listener: Option<std::net::TcpListener>,
    agent: Option<Spawned>,
    http: reqwest::Client,
}

impl LiveAgent {
    /// The sandboxes and a config; `qbo_enabled` turns the QuickBooks side
    /// on. The agent itself is started by [`LiveAgent::start_agent`].
    pub async fn prepare(qbo_enabled: bool, extra: Value) -> LiveAgent {
        let fx = Fixture::start().await;
        let qbo = QuickbooksSandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            QuickbooksSandboxOptions {
                us_company: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // The agent's limiter runs 1,000 times faster in these tests (below),
        // so the simulator must not enforce Intuit's real-time limits: the
        // 429s it would send would depend on the machine's speed. Tests of
        // the limits inject their 429s or use `qbo_share`'s fixtures.
        qbo.set_limits(pos_sandbox::quickbooks::QboLimits {
            enforce: false,
            ..Default::default()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut base = json!({
            "local_api": {"bind": format!("127.0.0.1:{port}"), "api_key": API_KEY},
            "quickbooks": {
                "enabled": qbo_enabled,
                "auth_base": qbo.auth_base(),
                "api_base": qbo.api_base(),
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "redirect_uri": format!("http://127.0.0.1:{port}/callback"),
                "income_account_id": "1",
                "tax_code": "3",
                "global_tax_calculation": "TaxExcluded",
            },
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        let mut cfg = fx.service_config(base);
        // The simulator's limits are real; the tests need not wait on them.
        cfg.quickbooks.limits = RateLimits {
            time_scale: 0.001,
            ..RateLimits::default()
        };
        // Wrong keys are slowed down; the tests that send many need not wait.
        cfg.local_api.wrong_key_delay = pos_connector::config::WrongKeyDelay {
            first: Duration::from_millis(1),
            max: Duration::from_millis(5),
        };
        LiveAgent {
            fx,
            qbo,
            cfg,
            port,
            listener: Some(listener),
            agent: None,
            http: pos_connector::http_client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
        }
    }

    pub async fn start(qbo_enabled: bool, extra: Value) -> LiveAgent {
        let mut a = LiveAgent::prepare(qbo_enabled, extra).await;
        a.start_agent().await;
        a
    }

    pub async fn start_agent(&mut self) {
        let listener = self
            .listener
            .as_ref()
            .expect("the port was closed")
            .try_clone()
            .unwrap();
        let spawned = Spawned::start_with_listener(&self.cfg, Arc::new(SystemClock), listener)
            .await
            .expect("the agent starts");
        self.agent = Some(spawned);
    }

    pub async fn stop_agent(&mut self) {
        if let Some(a) = self.agent.take() {
            a.stop().await.unwrap();
        }
    }

    /// Closes the (stopped) agent's port: connections are refused, as with
    /// no agent at all, where a held port would take them and never answer.
    pub fn close_port(&mut self) {
        assert!(self.agent.is_none(), "stop the agent first");
        self.listener = None;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// One request; the answer's status and body (JSON, or the text as a
    /// JSON string).
    pub async fn call(&self, method: Method, path: &str, key: Key<'_>) -> (StatusCode, Value) {
        let resp = self.send(method, path, key).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn send(&self, method: Method, path: &str, key: Key<'_>) -> reqwest::Response {
        let mut req = self.http.request(method, self.url(path));
        match key {
            Key::None => {}
            Key::Bearer(k) => req = req.bearer_auth(k),
            Key::Header(k) => req = req.header("X-API-Key", k),
        }
        req.send().await.unwrap()
    }

    /// With the right key, expecting 200.
    pub async fn ok(&self, method: Method, path: &str) -> Value {
        let (status, body) = self.call(method.clone(), path, Key::Bearer(API_KEY)).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {body}");
        body
    }

    /// Connects QuickBooks as the page's button does, with this client in
    /// the browser's place: `/api/quickbooks/connect`, Intuit's authorize
    /// page, back to `/callback`.
    pub async fn connect_qbo(&self) {
        let flow = self.ok(Method::GET, "/api/quickbooks/connect").await;
        let at_intuit = self
            .http
            .get(flow["authorize_url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert!(at_intuit.status().is_redirection());
        let back = at_intuit.headers()["location"]
            .to_str()
            .unwrap()
            .to_string();
        let done = self.http.get(&back).send().await.unwrap();
        assert_eq!(done.status(), StatusCode::SEE_OTHER, "{back}");
    }

    /// `POST /v1/sales` of a one-line sale.
    pub async fn post_sale(&self, number: &str, customer: &str) {
        let resp = self
            .http
            .post(self.url("/v1/sales"))
            .bearer_auth(API_KEY)
            .json(&json!({
                "invoice_number": number,
                "customer_name": customer,
                "items": [{"description": "Espresso", "quantity": 2, "price": 1.5}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{number}");
    }

    /// Waits until the job is in `state`.
    pub async fn wait_job(&self, number: &str, state: &str) {
        wait_until(
            Duration::from_secs(30),
            &format!("{number} {state}"),
            || async {
                let (s, v) = self
                    .call(
                        Method::GET,
                        &format!("/api/jobs/{number}"),
                        Key::Bearer(API_KEY),
                    )
                    .await;
                s == StatusCode::OK && v["state"] == state
            },
        )
        .await;
    }
}
