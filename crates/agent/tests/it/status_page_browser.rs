//! The status page in a real browser: headless Chromium (Debian's
//! `chromium`) driven through `chromedriver` over WebDriver, against a
//! whole agent wired to the Laravel sandbox and the QuickBooks simulator.
//!
//! A person's round: enter the key, see the token, press "Refresh token
//! now" and see the new expiry, retry a parked sale and see it move,
//! connect QuickBooks through the simulator's authorize page and see
//! "connected". The screenshot is kept as a test artifact
//! (`target/tmp/status-page.png`).
//!
//! `scripts/test.sh` installs chromium and chromedriver and sets
//! `POS_CONNECTOR_REQUIRE_BROWSER=1`, so CI cannot skip this. Elsewhere,
//! without them, the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::live_agent::LiveAgent;
use crate::common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

fn find_program(env_var: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env_var) {
        return Some(PathBuf::from(p));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// chromedriver on a port of its choosing, killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

/// `--port=0` makes chromedriver take a port the system picks and name it
/// on stdout ("ChromeDriver was started successfully on port N."): no port
/// is chosen for it beforehand that another program could take first.
async fn start_driver(driver: &Path) -> Driver {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(driver)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split_once("started successfully on port ") {
                return rest.1.trim_end_matches('.').trim().parse().unwrap();
            }
        }
        panic!("chromedriver ended without naming its port");
    })
    .await
    .expect("chromedriver names its port");
    // Its later output (one line per session) must not fill the pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("http://127.0.0.1:{port}");
    let http = pos_connector::http_client::builder()
        .no_proxy()
        .build()
        .unwrap();
    wait_until(Duration::from_secs(20), "chromedriver ready", || async {
        http.get(format!("{url}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    Driver { _child: child, url }
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // What this machine's Chromium needs headless as root, and no
            // calls out to Google's services (the network is closed).
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn attr(c: &Client, css: &str, name: &str) -> Option<String> {
    c.find(Locator::Css(css))
        .await
        .ok()?
        .attr(name)
        .await
        .ok()
        .flatten()
}

/// Polls the page until `check` holds (the page refreshes itself every
/// 5 s and after every button).
async fn wait_page<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until(Duration::from_secs(30), what, check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_status_page_in_chromium() {
    let chromium = find_program(
        "CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    );
    let chromedriver = find_program("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        assert!(
            std::env::var("POS_CONNECTOR_REQUIRE_BROWSER").is_err(),
            "chromium and chromedriver are required here (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: no chromium/chromedriver (apt-get install chromium chromium-driver)");
        return;
    };

    let a = LiveAgent::start(true, json!({})).await;
    a.post_sale("WEB-1", "Walk-in").await;
    a.wait_job("WEB-1", "done").await;
    let driver = start_driver(&chromedriver).await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, &chromium, profile.path()).await;
    let outcome = walk_through(&a, &c).await;
    let shot = c.screenshot().await;
    let _ = c.close().await;
    let png = shot.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
    outcome.unwrap_or_else(|e| panic!("{e}"));
}

/// The person's round; an error says which step failed.
async fn walk_through(a: &LiveAgent, c: &Client) -> Result<(), String> {
    c.goto(&a.url("/")).await.map_err(|e| e.to_string())?;
    // Without the key the page only shows health, and the buttons are off.
    wait_page("the health badge", || async {
        text(c, "#health-badge").await == "healthy"
    })
    .await;
    let disabled = attr(c, "#btn-laravel-refresh", "disabled").await;
    if disabled.is_none() {
        return Err("buttons must be disabled before the key is entered".into());
    }
    let input = c
        .find(Locator::Id("api-key"))
        .await
        .map_err(|e| e.to_string())?;
    input.send_keys(API_KEY).await.map_err(|e| e.to_string())?;
    c.find(Locator::Id("btn-key"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;

    // The token state.
    wait_page("the token shown as valid", || async {
        text(c, "#laravel-state").await == "valid"
    })
    .await;
    let user = text(c, "#laravel-user").await;
    if !user.contains(SANDBOX_EMAIL) {
        return Err(format!("signed in as: {user}"));
    }
    let before = attr(c, "#laravel-expires", "data-expires-at")
        .await
        .unwrap_or_default();

    // "Refresh token now": a new sign-in, a new expiry on the page.
    let logins = a.fx.sandbox.requests("POST /api/vendors/login");
    click(c, "#btn-laravel-refresh").await?;
    wait_page("a new expiry after the refresh", || async {
        attr(c, "#laravel-expires", "data-expires-at")
            .await
            .is_some_and(|now| !now.is_empty() && now != before)
    })
    .await;
    if a.fx.sandbox.requests("POST /api/vendors/login") != logins + 1 {
        return Err("the button must sign in once".into());
    }
    wait_page("the notice", || async {
        text(c, "#notice").await == "Token refreshed."
    })
    .await;

    // A parked sale, retried from the page once the cause is fixed.
    a.fx.sandbox.set_user_active(SANDBOX_EMAIL, false);
    a.post_sale("WEB-PARK", "Walk-in").await;
    a.wait_job("WEB-PARK", "parked").await;
    wait_page("the parked sale on the page", || async {
        c.find(Locator::Css(
            "#parked tr[data-invoice='WEB-PARK'] button.btn-retry",
        ))
        .await
        .is_ok()
    })
    .await;
    let reason = text(c, "#parked tr[data-invoice='WEB-PARK'] td.err").await;
    if !reason.contains("disabled") {
        return Err(format!("the parked reason shown: {reason}"));
    }
    a.fx.sandbox.set_user_active(SANDBOX_EMAIL, true);
    click(c, "#parked tr[data-invoice='WEB-PARK'] button.btn-retry").await?;
    wait_page("the retried sale done on the page", || async {
        attr(c, "#jobs tr[data-invoice='WEB-PARK']", "data-state")
            .await
            .as_deref()
            == Some("done")
    })
    .await;

    // Connect QuickBooks: the simulator's authorize page approves, Intuit's
    // redirect comes back to the agent, and the page says connected.
    if attr(c, "#qbo-state", "data-state").await.as_deref() != Some("not_connected") {
        return Err("QuickBooks starts not connected".into());
    }
    click(c, "#btn-qbo-connect").await?;
    wait_page("QuickBooks connected on the page", || async {
        attr(c, "#qbo-state", "data-state").await.as_deref() == Some("connected")
    })
    .await;
    let notice = text(c, "#notice").await;
    if notice != "QuickBooks connected." {
        return Err(format!("notice after connecting: {notice}"));
    }
    let realm = text(c, "#qbo-realm").await;
    if !realm.contains(&a.qbo.realm_id()) {
        return Err(format!("company shown: {realm}"));
    }
    if a.qbo.token_grants().codes_exchanged != 1 {
        return Err("exactly one code exchange".into());
    }
    // The rate budget: alone on the company, the full limits.
    wait_page("the rate budget on the page", || async {
        text(c, "#qbo-budget").await.contains("full limits")
    })
    .await;
    let budget = text(c, "#qbo-budget").await;
    if !budget.contains("no 429") {
        return Err(format!("rate budget shown: {budget}"));
    }
    let url = c.current_url().await.map_err(|e| e.to_string())?;
    if url.as_str() != a.url("/") {
        return Err(format!("back on the page without the query: {url}"));
    }
    // And the API agrees with what the page shows.
    let (_, link) = a
        .call(
            reqwest::Method::GET,
            "/api/quickbooks/token",
            crate::common::live_agent::Key::Bearer(API_KEY),
        )
        .await;
    if link["state"] != "connected" {
        return Err(format!("API: {link}"));
    }
    Ok(())
}

async fn click(c: &Client, css: &str) -> Result<(), String> {
    c.find(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .click()
        .await
        .map_err(|e| format!("click {css}: {e}"))
}
