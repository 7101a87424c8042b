use super::*;
use reqwest::header::HeaderMap as RHeaders;

const LOGIN: &str = "POST /api/vendors/login";
const CREATE: &str = "POST /api/invoices";
const SUBMIT: &str = "POST /api/invoices/{id}/submit";

struct T {
    sb: LaravelSandbox,
    c: reqwest::Client,
    base: String,
}

fn json_client() -> reqwest::Client {
    let mut h = RHeaders::new();
    h.insert("accept", "application/json".parse().unwrap());
    crate::test_client_builder()
        .no_proxy()
        .default_headers(h)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn start_with(opts: LaravelSandboxOptions) -> T {
    let sb = LaravelSandbox::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap();
    let base = sb.base_url();
    T {
        sb,
        c: json_client(),
        base,
    }
}

async fn start() -> T {
    start_with(LaravelSandboxOptions::default()).await
}

impl T {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn login_raw(&self, body: Value) -> (u16, Value) {
        let r = self
            .c
            .post(self.url("/api/vendors/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn login(&self) -> String {
        let (s, v) = self
            .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
            .await;
        assert_eq!(s, 200, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.c
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self.get(token, path).await;
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn post_json(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .c
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn create(&self, token: &str, number: &str) -> (u16, Value) {
        self.post_json(
            token,
            "/api/invoices",
            json!({
                "invoice_number": number,
                "customer_name": "Walk-in customer",
                "items": [{"description": "Coffee beans 1kg", "quantity": 2, "price": 50}],
            }),
        )
        .await
    }
}

const PROFILE: &str = "GET /api/vendors/profile";
const LOOKUP: &str = "GET /api/invoices/by-number/{invoice_number}";

// ---- the connector channel ----

const HEARTBEAT: &str = "POST /api/pos-connector/heartbeat";

impl T {
    /// A connector-channel request with `key` (none: no header).
    async fn connector(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.c.request(method, self.url(path));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn beat_body() -> Value {
    json!({
        "version": "0.1.0",
        "pos_systems": ["square"],
        "transactions_pending": 3,
        "transactions_parked": 1,
        "last_sync": null,
        "system_info": {"os": "linux", "hostname": "till-1"},
    })
}

mod auth;
mod connector;
mod control;
mod exactly_once;
mod faults;
mod fidelity;
mod invoices;
mod pool;
