//! `pos-connector demo`: the agent's main job end to end with no backend at
//! hand. It starts the sandbox as a separate process (as an integrator
//! would), writes a config for it, stores the password as
//! `--setup-password` does, runs one sale through create, submit, status
//! and the PDF/XML downloads, then shows a token refresh: the backend
//! revokes every token, the next call gets a 401, and the agent signs in
//! again once and replays the call. Then the service itself: POS export
//! files dropped into the inbox and a sale posted to the local API flow
//! through the outbox to the backend, with a provisional receipt for each;
//! a file that reuses another sale's numbers is set aside with the reason.
//! QuickBooks Online too: the demo connects to the simulator's company the
//! way a browser would (authorize page, redirect with code and state, one
//! code exchange), and the service pushes every invoice there.
//! Everything it made stays in one folder, printed at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::clock::SystemClock;
use crate::config;
use crate::laravel::auth::{self, PasswordStore};
use crate::laravel::error::first_chars;
use crate::laravel::{self, CreateOutcome, DocumentKind, NewInvoice};
use crate::retry::RetryPolicy;

/// Creates the demo folder: `dir`, or a new one under the temp folder.
pub(crate) fn prepare_dir(dir: Option<&Path>) -> std::io::Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!(
            "pos-connector-demo-{}-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S"),
            std::process::id()
        )),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The vendor, password and QuickBooks app the demo's simulators are
/// started with (`pos-sandbox --email --password --qbo-client-id
/// --qbo-client-secret`): the agent knows nothing of the simulators' code.
const DEMO_EMAIL: &str = "vendor@demo.test";
const DEMO_PASSWORD: &str = "demo-password";
const DEMO_QBO_CLIENT_ID: &str = "demo-client-id";
const DEMO_QBO_CLIENT_SECRET: &str = "demo-client-secret";

/// The key the demo's local API takes.
const DEMO_API_KEY: &str = "demo-local-api-key";

/// POS exports the demo drops into the inbox (the shapes of real tills).
const DEMO_EXPORTS: [(&str, &[u8]); 5] = [
    (
        "cafe_pos_sales.csv",
        include_bytes!("../tests/fixtures/intake/cafe_pos_sales.csv"),
    ),
    (
        "generic_pos.json",
        include_bytes!("../tests/fixtures/intake/generic_pos.json"),
    ),
    (
        "minimal_format.json",
        include_bytes!("../tests/fixtures/intake/minimal_format.json"),
    ),
    (
        "quickbooks_format.json",
        include_bytes!("../tests/fixtures/intake/quickbooks_format.json"),
    ),
    (
        "store_sales.csv",
        include_bytes!("../tests/fixtures/intake/store_sales.csv"),
    ),
];

/// Steps 8 and 9: the agent as it runs on a till. Returns the outbox's path.
async fn run_service(cfg: &config::Config, out: &mut impl Write) -> anyhow::Result<PathBuf> {
    use crate::store::Outbox;
    let inbox = &cfg.invoice_folder;
    std::fs::create_dir_all(inbox)?;
    // Files are taken in name order: the café's before the store's, which
    // reuses TXN001..3 and so is the one set aside.
    for (name, bytes) in DEMO_EXPORTS {
        std::fs::write(inbox.join(name), bytes)?;
    }
    let agent = crate::service::Spawned::start(cfg, Arc::new(SystemClock))
        .await
        .map_err(|e| anyhow!("the agent did not start: {e}"))?;
    let api = agent
        .running
        .local_api
        .ok_or_else(|| anyhow!("the local API is off"))?;
    let http = crate::http_client::builder().no_proxy().build()?;
    let posted: Value = http
        .post(format!("http://{api}/v1/sales"))
        .bearer_auth(DEMO_API_KEY)
        .json(&json!({
            "invoice_number": format!("WEB-{}", chrono::Local::now().format("%Y%m%d-%H%M%S")),
            "customer": {"name": "محمد الأحمد", "email": "m.ahmad@example.com"},
            "items": [{"description": "قهوة عربية", "quantity": 1.5, "price": "2.000"}]
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    writeln!(
        out,
        "[9/10] started the agent (`pos-connector run`): dropped {} POS exports into {} and POSTed a sale to http://{api}/v1/sales (202, job #{})",
        DEMO_EXPORTS.len(),
        inbox.display(),
        posted["id"]
    )?;
    let ob = Outbox::open(&cfg.data_dir)?;
    let expected = 12; // 8 café sales, 3 single-sale files, 1 posted
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut pushed;
    loop {
        let done = ob.counts()?["done"];
        pushed = ob.qbo_counts()?["pushed"];
        let receipts = ob.without_receipt(1)?.is_empty();
        let rejected = inbox.join("rejected/store_sales.csv.error.txt").exists();
        if done >= expected && pushed >= expected && receipts && rejected {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the agent did not finish within 60 s ({done} of {expected} sales done, {pushed} in QuickBooks); see the logs in {}", cfg.log_dir.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.stop().await?;
    let why = std::fs::read_to_string(inbox.join("rejected/store_sales.csv.error.txt"))?;
    let reason = why
        .lines()
        .find(|l| l.contains("TXN00"))
        .unwrap_or("")
        .trim()
        .to_string();
    writeln!(
        out,
        "[10/10] every sale went through create, submit and PDF ({expected} done in the outbox, each with a provisional receipt in {}) and on to QuickBooks ({pushed} invoices pushed, each once); store_sales.csv was set aside in rejected/ because its numbers collide with the café's: {}",
        cfg.receipts.dir.display(),
        first_chars(&reason, 160)
    )?;
    Ok(ob.path().to_path_buf())
}

/// The redirect URI the demo's QuickBooks app uses. The demo plays the
/// browser, so nothing listens there.
const DEMO_REDIRECT: &str = "http://127.0.0.1:9/callback";

/// What `qbo connect` and a person in a browser do together: open the
/// authorize URL, follow Intuit's redirect back with the code, check the
/// state, exchange the code once.
async fn connect_quickbooks(cfg: &config::Config) -> anyhow::Result<String> {
    use crate::quickbooks::{callback, oauth};
    let oauth_client =
        oauth::OAuthClient::from_config(&cfg.quickbooks, crate::quickbooks::http_client(cfg))
            .map_err(|e| anyhow!("{e}"))?;
    let state = oauth::new_state();
    let browser = crate::http_client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let answer = browser
        .get(oauth_client.authorize_url(&state))
        .send()
        .await?;
    let location = answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            anyhow!(
                "the authorize page did not redirect (HTTP {})",
                answer.status()
            )
        })?;
    let back = reqwest::Url::parse(location)?;
    let params = back.query_pairs().into_owned().collect();
    let cb = callback::check(&params, &state).map_err(|e| anyhow!("{e}"))?;
    oauth::connect_with_code(
        &oauth_client,
        &oauth::ConnectionStore::new(&cfg.data_dir),
        &SystemClock,
        &cb.code,
        &cb.realm_id,
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    Ok(cb.realm_id)
}

/// The sandbox child process; killed when dropped.
struct SandboxProcess {
    child: tokio::process::Child,
    base_url: String,
    qbo_url: String,
}

/// The `pos-sandbox` executable beside this one (cargo builds both into
/// one folder; the packages install both side by side).
pub(crate) fn sandbox_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe()
        .map_err(|e| format!("cannot find the pos-connector executable: {e}"))?;
    let exe = me.with_file_name(format!("pos-sandbox{}", std::env::consts::EXE_SUFFIX));
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "the simulators' binary {} is missing: build it with `cargo build -p pos-sandbox` (or `cargo build` in the source folder)",
            exe.display()
        ))
    }
}

async fn start_sandbox() -> anyhow::Result<SandboxProcess> {
    let exe = sandbox_binary().map_err(|e| anyhow!(e))?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--port",
            "0",
            "--email",
            DEMO_EMAIL,
            "--password",
            DEMO_PASSWORD,
        ])
        .args(["--qbo-client-id", DEMO_QBO_CLIENT_ID])
        .args(["--qbo-client-secret", DEMO_QBO_CLIENT_SECRET])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the sandbox process")?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut next = async || -> anyhow::Result<String> {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow!("the sandbox did not start within 30 s"))??
            .ok_or_else(|| anyhow!("the sandbox exited before listening"))
    };
    let first = next().await?;
    let base_url = first
        .strip_prefix("sandbox listening on ")
        .ok_or_else(|| anyhow!("unexpected sandbox output: {first}"))?
        .trim()
        .to_string();
    let second = next().await?;
    let qbo_url = second
        .strip_prefix("quickbooks simulator listening on ")
        .ok_or_else(|| anyhow!("unexpected sandbox output: {second}"))?
        .trim()
        .to_string();
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(SandboxProcess {
        child,
        base_url,
        qbo_url,
    })
}

async fn sandbox_stats(http: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{base}/__sandbox/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

fn logins(stats: &Value) -> u64 {
    stats.get("logins_ok").and_then(Value::as_u64).unwrap_or(0)
}

pub(crate) async fn run(dir: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "pos-connector demo: sales through the Laravel backend simulator and on to QuickBooks Online (simulated)\n"
    )?;
    let mut sandbox = start_sandbox().await?;
    let base = sandbox.base_url.clone();
    writeln!(
        out,
        "[1/10] started the sandbox backend at {base} and the QuickBooks simulator at {} (a separate process)",
        sandbox.qbo_url
    )?;

    let config_path = dir.join("config.json");
    let cfg_json = json!({
        "base_url": base,
        "email": DEMO_EMAIL,
        "sync_interval": 60,
        "auto_submit_jofotara": true,
        "invoice_folder": dir.join("inbox"),
        "intake": {"settle_seconds": 0.2},
        "local_api": {"bind": "127.0.0.1:0", "api_key": DEMO_API_KEY},
        "receipts": {"dir": dir.join("receipts"), "shop_name": "Demo Coffee Shop"},
        "log_level": "info",
        "data_dir": dir.join("data"),
        "log_dir": dir.join("logs"),
        "pdf_dir": dir.join("pdfs"),
        "quickbooks": {
            "enabled": true,
            "auth_base": sandbox.qbo_url,
            "api_base": sandbox.qbo_url,
            "client_id": DEMO_QBO_CLIENT_ID,
            "client_secret": DEMO_QBO_CLIENT_SECRET,
            "redirect_uri": DEMO_REDIRECT,
            "income_account_id": "1",
            "tax_code": "TAX",
        },
    });
    std::fs::write(&config_path, serde_json::to_string_pretty(&cfg_json)?)?;
    let cfg = config::load_from(&config_path, &[]).map_err(|e| anyhow!("{e}"))?;
    let saved = auth::verify_and_store_password(
        &cfg,
        &SecretString::from(DEMO_PASSWORD.to_string()),
        PasswordStore::Encrypted,
        Arc::new(SystemClock),
    )
    .await?;
    writeln!(
        out,
        "[2/10] wrote {} and stored the vendor password encrypted in {} (as --setup-password does)",
        config_path.display(),
        saved.location.display()
    )?;

    let client = laravel::connect(&cfg, Arc::new(SystemClock), RetryPolicy::default());
    let number = format!("DEMO-{}", chrono::Local::now().format("%Y%m%d-%H%M%S"));
    let sale = NewInvoice::from_json(&json!({
        "invoice_number": number,
        "customer_name": "Demo Customer",
        "customer_email": "customer@example.com",
        "items": [
            {"description": "Coffee - Large", "quantity": 2, "price": 4.50},
            {"description": "Sandwich - Turkey", "quantity": 1, "price": 8.99}
        ]
    }))
    .map_err(|p| anyhow!("demo sale invalid: {p:?}"))?;
    let created = match client.create_invoice(&sale).await? {
        CreateOutcome::Created(c) => c,
        CreateOutcome::AlreadyExists { .. } => bail!("{number} already exists in the sandbox"),
    };
    let show = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string()).unwrap_or_default();
    writeln!(
        out,
        "[3/10] created invoice {} for sale {number}: 2 x Coffee - Large at 4.50, 1 x Sandwich - Turkey at 8.99; tax {} (16%), total {}",
        created.id,
        show(created.tax_amount),
        show(created.total_amount)
    )?;

    let submitted = client.submit(created.id).await?;
    writeln!(
        out,
        "[4/10] submitted it to JoFotara (simulated): status {}",
        submitted.status
    )?;
    let (status, _) = client.status(created.id).await?;
    writeln!(
        out,
        "[5/10] status check (GET /api/invoices/status/{}): {status}",
        created.id
    )?;

    let pdf = client
        .download(created.id, None, DocumentKind::Pdf, None, &cfg.pdf_dir)
        .await?;
    let xml = client
        .download(created.id, None, DocumentKind::Xml, None, &cfg.pdf_dir)
        .await?;
    writeln!(
        out,
        "[6/10] downloaded the official PDF ({} bytes) and the UBL XML ({} bytes)",
        pdf.bytes, xml.bytes
    )?;

    let http = crate::http_client::builder().no_proxy().build().unwrap();
    let before = logins(&sandbox_stats(&http, &base).await?);
    http.post(format!("{base}/__sandbox/tokens/revoke"))
        .send()
        .await?
        .error_for_status()?;
    let (status, _) = client.status(created.id).await?;
    let after = logins(&sandbox_stats(&http, &base).await?);
    let st = client.keeper().status();
    writeln!(
        out,
        "[7/10] token refresh: the backend revoked every token; the next call got 401, the agent signed in again ({} login{}) and replayed it (status {status}). New token valid until {}, refreshed ahead of expiry at {}",
        after - before,
        if after - before == 1 { "" } else { "s" },
        st.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        st.refresh_due_at.map(|t| t.to_rfc3339()).unwrap_or_default()
    )?;
    if after - before != 1 {
        bail!(
            "expected exactly one login for the refresh, saw {}",
            after - before
        );
    }

    let realm = connect_quickbooks(&cfg).await?;
    writeln!(
        out,
        "[8/10] connected QuickBooks (simulated company {realm}): authorize page, redirect with code and a checked state, the code exchanged once; tokens stored encrypted"
    )?;

    let outbox = run_service(&cfg, out).await?;

    writeln!(out, "\nfiles:")?;
    writeln!(out, "  config:        {}", config_path.display())?;
    writeln!(
        out,
        "  secrets store: {} (encrypted)",
        saved.location.display()
    )?;
    writeln!(out, "  invoice PDF:   {}", pdf.path.display())?;
    writeln!(out, "  invoice XML:   {}", xml.path.display())?;
    writeln!(
        out,
        "  inbox:         {} (archive/, rejected/)",
        cfg.invoice_folder.display()
    )?;
    writeln!(out, "  receipts:      {}", cfg.receipts.dir.display())?;
    writeln!(out, "  outbox:        {}", outbox.display())?;
    writeln!(out, "  logs:          {}", cfg.log_dir.display())?;
    let _ = sandbox.child.kill().await;
    Ok(())
}
