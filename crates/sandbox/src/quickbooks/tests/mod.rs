use super::*;
use reqwest::header::HeaderMap as RHeaders;

const REDIRECT: &str = "http://localhost:8765/callback";
const TOKEN_PATH: &str = "/oauth2/v1/tokens/bearer";
const INVOICE_ROUTE: &str = "POST /v3/company/{realm}/invoice";

struct T {
    sb: QuickbooksSandbox,
    c: reqwest::Client,
    base: String,
    realm: String,
}

fn client() -> reqwest::Client {
    crate::test_client_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn start_with(opts: QuickbooksSandboxOptions) -> T {
    let sb = QuickbooksSandbox::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap();
    let base = sb.base_url();
    let realm = sb.realm_id();
    T {
        sb,
        c: client(),
        base,
        realm,
    }
}

/// Default options, but no rate limit: most tests send more than 10
/// requests a second (the limiter has its own tests).
fn unlimited() -> QuickbooksSandboxOptions {
    QuickbooksSandboxOptions {
        limits: QboLimits {
            enforce: false,
            ..QboLimits::default()
        },
        ..Default::default()
    }
}

async fn start() -> T {
    start_with(unlimited()).await
}

fn tid(h: &RHeaders) -> String {
    h.get("intuit_tid")
        .expect("every answer carries intuit_tid")
        .to_str()
        .unwrap()
        .to_string()
}

impl T {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/v3/company/{realm}/{rest}`, with `minorversion=75` added.
    fn api(&self, rest: &str) -> String {
        let sep = if rest.contains('?') { '&' } else { '?' };
        format!(
            "{}/v3/company/{}/{rest}{sep}minorversion=75",
            self.base, self.realm
        )
    }

    async fn token_req(&self, form: &[(&str, &str)], hard: bool) -> reqwest::Response {
        let mut r = self
            .c
            .post(self.url(TOKEN_PATH))
            .basic_auth(SANDBOX_CLIENT_ID, Some(SANDBOX_CLIENT_SECRET))
            .header("accept", "application/json")
            .form(form);
        if hard {
            r = r.header("x-include-refresh-token-hard-expires-in", "true");
        }
        r.send().await.unwrap()
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let r = self.token_req(form, false).await;
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn exchange(&self, code: &str, redirect: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
        ])
        .await
    }

    async fn refresh(&self, rt: &str) -> (u16, Value) {
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
            .await
    }

    /// A fresh grant: (access token, refresh token).
    async fn connect(&self) -> (String, String) {
        let code = self.sb.issue_code(REDIRECT);
        let (s, v) = self.exchange(&code, REDIRECT).await;
        assert_eq!(s, 200, "{v}");
        (
            v["access_token"].as_str().unwrap().to_string(),
            v["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    async fn get(&self, token: &str, rest: &str) -> (u16, Value) {
        let r = self
            .c
            .get(self.api(rest))
            .bearer_auth(token)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn post(&self, token: &str, rest: &str, body: &Value) -> (u16, Value) {
        let r = self
            .c
            .post(self.api(rest))
            .bearer_auth(token)
            .header("accept", "application/json")
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn query(&self, token: &str, q: &str) -> (u16, Value) {
        let r = self
            .c
            .get(self.api("query"))
            .query(&[("query", q)])
            .bearer_auth(token)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// A customer and an item to invoice: (customer Id, item Id).
    async fn basics(&self, token: &str) -> (String, String) {
        let (s, c) = self
            .post(token, "customer", &json!({"DisplayName": "Acme"}))
            .await;
        assert_eq!(s, 200, "{c}");
        let (s, i) = self
            .post(
                token,
                "item",
                &json!({"Name": "Coffee", "Type": "Service", "Sku": "SKU-1",
                            "IncomeAccountRef": {"value": "1"}}),
            )
            .await;
        assert_eq!(s, 200, "{i}");
        (
            c["Customer"]["Id"].as_str().unwrap().to_string(),
            i["Item"]["Id"].as_str().unwrap().to_string(),
        )
    }
}

fn fault_code(v: &Value) -> &str {
    v["Fault"]["Error"][0]["code"].as_str().unwrap_or("")
}

fn fault_detail(v: &Value) -> &str {
    v["Fault"]["Error"][0]["Detail"].as_str().unwrap_or("")
}

fn invoice_body(customer: &str, item: &str, doc: &str) -> Value {
    json!({"CustomerRef": {"value": customer}, "DocNumber": doc,
               "Line": [{"Amount": 100.0, "DetailType": "SalesItemLineDetail",
                         "SalesItemLineDetail": {"ItemRef": {"value": item},
                                                 "Qty": 2, "UnitPrice": 50.0}}]})
}

fn location_params(loc: &str) -> HashMap<String, String> {
    let query = loc.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_decode(query.as_bytes()).into_iter().collect()
}

mod batch_cdc;
mod control;
mod entities;
mod limits;
mod oauth;
mod query;
