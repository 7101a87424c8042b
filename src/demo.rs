//! `pos-connector demo`: the agent's main job end to end with no backend at
//! hand. It starts the sandbox as a separate process (as an integrator
//! would), writes a config for it, stores the password as
//! `--setup-password` does, runs one sale through create, submit, status
//! and the PDF/XML downloads, then shows a token refresh: the backend
//! revokes every token, the next call gets a 401, and the agent signs in
//! again once and replays the call. Everything it made stays in one folder,
//! printed at the end.

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
use crate::laravel::{self, CreateOutcome, DocumentKind, NewInvoice};
use crate::retry::RetryPolicy;
use crate::sandbox::{SANDBOX_EMAIL, SANDBOX_PASSWORD};

/// Creates the demo folder: `dir`, or a new one under the temp folder.
pub fn prepare_dir(dir: Option<&Path>) -> std::io::Result<PathBuf> {
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

/// The sandbox child process; killed when dropped.
struct SandboxProcess {
    child: tokio::process::Child,
    base_url: String,
}

async fn start_sandbox() -> anyhow::Result<SandboxProcess> {
    let exe = std::env::current_exe().context("cannot find the pos-connector executable")?;
    let mut child = tokio::process::Command::new(exe)
        .args(["sandbox", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the sandbox process")?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| anyhow!("the sandbox did not start within 30 s"))??
        .ok_or_else(|| anyhow!("the sandbox exited before listening"))?;
    let base_url = first
        .strip_prefix("sandbox listening on ")
        .ok_or_else(|| anyhow!("unexpected sandbox output: {first}"))?
        .trim()
        .to_string();
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(SandboxProcess { child, base_url })
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

pub async fn run(dir: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "pos-connector demo: one sale through the Laravel backend simulator\n"
    )?;
    let mut sandbox = start_sandbox().await?;
    let base = sandbox.base_url.clone();
    writeln!(
        out,
        "[1/7] started the sandbox backend at {base} (a separate process)"
    )?;

    let config_path = dir.join("config.json");
    let cfg_json = json!({
        "base_url": base,
        "email": SANDBOX_EMAIL,
        "sync_interval": 60,
        "auto_submit_jofotara": true,
        "invoice_folder": dir.join("inbox"),
        "log_level": "info",
        "data_dir": dir.join("data"),
        "log_dir": dir.join("logs"),
        "pdf_dir": dir.join("pdfs"),
    });
    std::fs::write(&config_path, serde_json::to_string_pretty(&cfg_json)?)?;
    let cfg = config::load_from(&config_path, &[]).map_err(|e| anyhow!("{e}"))?;
    let saved = auth::verify_and_store_password(
        &cfg,
        &SecretString::from(SANDBOX_PASSWORD.to_string()),
        PasswordStore::Encrypted,
        Arc::new(SystemClock),
    )
    .await?;
    writeln!(
        out,
        "[2/7] wrote {} and stored the vendor password encrypted in {} (as --setup-password does)",
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
        "[3/7] created invoice {} for sale {number}: 2 x Coffee - Large at 4.50, 1 x Sandwich - Turkey at 8.99; tax {} (16%), total {}",
        created.id,
        show(created.tax_amount),
        show(created.total_amount)
    )?;

    let submitted = client.submit(created.id).await?;
    writeln!(
        out,
        "[4/7] submitted it to JoFotara (simulated): status {}",
        submitted.status
    )?;
    let (status, _) = client.status(created.id).await?;
    writeln!(
        out,
        "[5/7] status check (GET /api/invoices/status/{}): {status}",
        created.id
    )?;

    let pdf = client
        .download(created.id, DocumentKind::Pdf, None, &cfg.pdf_dir)
        .await?;
    let xml = client
        .download(created.id, DocumentKind::Xml, None, &cfg.pdf_dir)
        .await?;
    writeln!(
        out,
        "[6/7] downloaded the official PDF ({} bytes) and the UBL XML ({} bytes)",
        pdf.bytes, xml.bytes
    )?;

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
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
        "[7/7] token refresh: the backend revoked every token; the next call got 401, the agent signed in again ({} login{}) and replayed it (status {status}). New token valid until {}, refreshed ahead of expiry at {}",
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

    writeln!(out, "\nfiles:")?;
    writeln!(out, "  config:        {}", config_path.display())?;
    writeln!(
        out,
        "  secrets store: {} (encrypted)",
        saved.location.display()
    )?;
    writeln!(out, "  invoice PDF:   {}", pdf.path.display())?;
    writeln!(out, "  invoice XML:   {}", xml.path.display())?;
    writeln!(out, "  logs:          {}", cfg.log_dir.display())?;
    let _ = sandbox.child.kill().await;
    Ok(())
}
