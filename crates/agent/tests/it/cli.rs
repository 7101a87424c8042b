//! The real `pos-connector` binary, as an integrator runs it: fresh config
//! files in temp folders, the sandbox backend on 127.0.0.1:0, exit codes and
//! output checked.

use crate::common::*;
use pos_connector::secret::Vault;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const PW: (&str, &str) = ("POS_CONNECTOR_PASSWORD", SANDBOX_PASSWORD);

fn sale_json(number: &str) -> String {
    json!({
        "invoice_number": number,
        "customer_name": "CLI Customer",
        "items": [{"description": "Tea", "quantity": 3, "price": "2.50"}]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_commands_end_to_end_with_json_output() {
    let fx = Fixture::start().await;
    fx.write_config(json!({}));
    std::fs::write(
        fx.path("sale.json"),
        format!("\u{feff}{}\r\n", sale_json("CLI-1")),
    )
    .unwrap();

    let r = fx
        .cli(&["--json", "invoice", "create", "sale.json"], &[PW], None)
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let created: Value = serde_json::from_str(&r.stdout).unwrap();
    let id = created["id"].as_u64().unwrap().to_string();
    assert_eq!(created["total_amount"], "8.70");

    let r = fx.cli(&["invoice", "submit", &id], &[PW], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("status submitted"), "{}", r.stdout);

    let r = fx
        .cli(&["--json", "invoice", "status", &id], &[PW], None)
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).unwrap()["status"],
        "submitted"
    );

    let r = fx.cli(&["invoice", "pdf", &id], &[PW], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let pdf = fx.path(&format!("pdfs/invoice_CLI-1_{id}.pdf"));
    assert_eq!(
        std::fs::read(&pdf).unwrap(),
        fx.sandbox.pdf_bytes(id.parse().unwrap()).unwrap()
    );

    let r = fx
        .cli(&["invoice", "xml", &id, "--out", "doc.xml"], &[PW], None)
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(std::fs::read_to_string(fx.path("doc.xml"))
        .unwrap()
        .contains("CLI-1"));

    let r = fx.cli(&["invoice", "show", &id], &[PW], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("3 x Tea"), "{}", r.stdout);

    // The token was persisted: five commands, one login.
    assert_eq!(fx.sandbox.logins_ok(), 1);

    // The same number again: "already exists", exit 1, or 0 when told.
    let r = fx
        .cli(
            &["invoice", "create", "-"],
            &[PW],
            Some(&sale_json("CLI-1")),
        )
        .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let r = fx
        .cli(
            &["invoice", "create", "-", "--if-exists", "ok"],
            &[PW],
            Some(&sale_json("CLI-1")),
        )
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(fx.sandbox.invoices_with_number("CLI-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_for_bad_input_wrong_password_and_disabled_account() {
    let fx = Fixture::start().await;
    fx.write_config(json!({}));

    // A sale with problems: exit 2, each field named, nothing sent.
    let bad = r#"{"customer_name": "X", "items": [{"description": "A", "quantity": -1, "price": "abc"}]}"#;
    let r = fx.cli(&["invoice", "create", "-"], &[PW], Some(bad)).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("items[0].quantity") && r.stderr.contains("items[0].price"),
        "{}",
        r.stderr
    );
    let r = fx
        .cli(&["invoice", "create", "-"], &[PW], Some("{not json"))
        .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(fx.sandbox.requests("POST /api/invoices"), 0);

    // Wrong password: exit 3 and the fix.
    let r = fx
        .cli(
            &["invoice", "status", "1"],
            &[("POS_CONNECTOR_PASSWORD", "wrong")],
            None,
        )
        .await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("refused the email/password") && r.stderr.contains("--setup-password"),
        "{}",
        r.stderr
    );

    // Not found: exit 1.
    let r = fx.cli(&["invoice", "status", "4242"], &[PW], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("404"), "{}", r.stderr);

    // Disabled account on submit: exit 3, not retried.
    std::fs::write(fx.path("s.json"), sale_json("DIS-1")).unwrap();
    let r = fx
        .cli(&["--json", "invoice", "create", "s.json"], &[PW], None)
        .await;
    let id = serde_json::from_str::<Value>(&r.stdout).unwrap()["id"].to_string();
    fx.sandbox.set_user_active(SANDBOX_EMAIL, false);
    let r = fx.cli(&["invoice", "submit", &id], &[PW], None).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("disabled"), "{}", r.stderr);
    assert_eq!(fx.sandbox.requests("POST /api/invoices/{id}/submit"), 1);

    // Rejected by JoFotara: exit 1 with the reason.
    fx.sandbox.set_user_active(SANDBOX_EMAIL, true);
    fx.sandbox.queue_submit_outcomes(&["rejected"]);
    let r = fx.cli(&["invoice", "submit", &id], &[PW], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("rejected"), "{}", r.stderr);

    // Usage errors: exit 2.
    let r = fx.cli(&["invoice", "status", "abc"], &[PW], None).await;
    assert_eq!(r.code, 2, "{r:?}");
    let r = fx.cli(&["--in-config", "check-config"], &[PW], None).await;
    assert_eq!(r.code, 2, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_validates_redacts_and_applies_environment() {
    let fx = Fixture::start().await;
    let dir = fx.dir.path();
    let cfg = fx.write_config(json!({"password": "plain-text-secret-1", "pos_type": "square"}));
    let c = cfg.to_str().unwrap();
    let r = fx.cli(&["check-config"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("plain-text-secret-1"), "{}", r.stdout);
    assert!(
        r.stdout.contains("[REDACTED] (plain text in config.json)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("plain text"), "{}", r.stdout);

    let r = run_bin(
        dir,
        &["--json", "check-config"],
        &[
            ("POS_CONNECTOR_CONFIG", c),
            ("POS_CONNECTOR__REQUEST_TIMEOUT_SECS", "75"),
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["config"]["request_timeout_secs"], json!(75.0));

    // Broken JSON: file, line and column; exit 2.
    std::fs::write(
        fx.path("broken.json"),
        "{\n  \"email\": \"a@b.c\",\n  \"base_url\" \"x\"\n}",
    )
    .unwrap();
    let r = run_bin(dir, &["--config", "broken.json", "check-config"], &[], None).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("broken.json") && r.stderr.contains("line 3, column 14"),
        "{}",
        r.stderr
    );

    // Plain http to another machine, missing email: keys named, exit 2.
    std::fs::write(
        fx.path("insecure.json"),
        r#"{"base_url": "http://192.0.2.10:8000"}"#,
    )
    .unwrap();
    let r = run_bin(
        dir,
        &["--config", "insecure.json", "check-config"],
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("base_url") && r.stderr.contains("allow_insecure_http"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("email: is missing"), "{}", r.stderr);

    // No config anywhere: exit 2 with where it looked.
    let empty = tempfile::tempdir().unwrap();
    let r = run_bin(empty.path(), &["check-config"], &[], None).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("config/config.json"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_password_verifies_before_storing() {
    let fx = Fixture::start().await;
    let dir = fx.dir.path();
    let cfg = fx.write_config(json!({"password": "old-plain-password"}));
    let vault = Vault::new(&fx.path("data"));

    // Wrong password: exit 3, nothing stored.
    let r = fx.cli(&["--setup-password"], &[], Some("nope\n")).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("nothing was stored"), "{}", r.stderr);
    assert!(vault.password().unwrap().is_none());

    // Right password: stored encrypted; the plain one leaves config.json,
    // whose other keys stay.
    let r = fx
        .cli(
            &["setup-password"],
            &[],
            Some(&format!("{SANDBOX_PASSWORD}\r\n")),
        )
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains(SANDBOX_PASSWORD), "{}", r.stdout);
    assert_eq!(
        vault.password().unwrap().unwrap().expose_secret(),
        SANDBOX_PASSWORD
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        !text.contains("old-plain-password") && text.contains("pdf_dir"),
        "{text}"
    );
    // The login's token was kept: the next command needs no login.
    let logins = fx.sandbox.logins_ok();
    let r = fx.cli(&["invoice", "status", "1"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}"); // 404: no invoice 1, but authenticated
    assert_eq!(fx.sandbox.logins_ok(), logins);

    // --in-config: plain text in config.json, mode 0600.
    let r = fx
        .cli(
            &["--setup-password", "--in-config"],
            &[],
            Some(SANDBOX_PASSWORD),
        )
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(std::fs::read_to_string(&cfg)
        .unwrap()
        .contains(SANDBOX_PASSWORD));
    assert!(vault.password().unwrap().is_none());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Unreachable backend: exit 1, the address named, nothing stored.
    let far =
        fx.write_config(json!({"base_url": "http://127.0.0.1:9", "data_dir": fx.path("data2")}));
    let r = run_bin(
        dir,
        &["--config", far.to_str().unwrap(), "--setup-password"],
        &[],
        Some("x\n"),
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("could not reach the backend at http://127.0.0.1:9"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_token_from_the_old_connector_is_used_without_a_login() {
    let fx = Fixture::start().await;
    // A token the old connector got and wrote into config.json.
    let http = pos_connector::http_client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let answer: Value = http
        .post(format!("{}/api/vendors/login", fx.sandbox.base_url()))
        .header("Accept", "application/json")
        .json(&json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expiry = (chrono::Local::now() + chrono::Duration::hours(20)).naive_local();
    fx.write_config(json!({
        "token": answer["token"],
        "token_expiry": expiry.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        "vendor_id": 2,
        "sync_interval": 300,
        "auto_submit_jofotara": true,
        "invoice_folder": "invoices",
    }));
    let before = fx.sandbox.logins_ok();
    let r = fx.cli(&["invoice", "status", "1"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("404"), "{}", r.stderr);
    assert_eq!(fx.sandbox.logins_ok(), before, "no login needed");
}

/// Issue 10, point 11: the old connector's token carries no issue time, so
/// the half-life rule (meant for tokens the backend says are short-lived)
/// must not shrink the 30-minute window: one expiring in 10 minutes is
/// refreshed before use, one expiring in 40 is used as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_token_near_expiry_is_refreshed_not_used() {
    let fx = Fixture::start().await;
    let http = pos_connector::http_client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let answer: Value = http
        .post(format!("{}/api/vendors/login", fx.sandbox.base_url()))
        .header("Accept", "application/json")
        .json(&json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (minutes_left, logins) in [(10, 1), (40, 0)] {
        let _ = std::fs::remove_dir_all(fx.path("data"));
        let expiry = chrono::Utc::now() + chrono::Duration::minutes(minutes_left);
        fx.write_config(json!({
            "token": answer["token"],
            "token_expiry": expiry.to_rfc3339(),
            "password": SANDBOX_PASSWORD,
        }));
        let before = fx.sandbox.logins_ok();
        let r = fx.cli(&["invoice", "status", "1"], &[], None).await;
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("404"), "{}", r.stderr);
        assert_eq!(
            fx.sandbox.logins_ok() - before,
            logins,
            "a legacy token with {minutes_left} minutes left: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refresh_harness_passes_and_leaves_nothing_behind() {
    let fx = Fixture::start().await;
    let cfg = fx.write_config(json!({}));
    let c = cfg.to_str().unwrap();
    let dir = fx.dir.path();
    let r = fx.cli(&["test-token-refresh"], &[PW], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.matches("PASS").count(), 7, "{}", r.stdout);
    for name in pos_connector::token_check::SCENARIOS {
        assert!(r.stdout.contains(name), "{name} missing: {}", r.stdout);
    }
    assert!(r.stdout.contains("7 passed, 0 failed"));
    assert_eq!(fx.sandbox.invoice_count(), 0);
    assert_eq!(
        fx.sandbox.logins_ok(),
        2,
        "initial login + one automatic refresh"
    );

    let r = fx
        .cli(&["test-token-refresh", "--create-invoice"], &[PW], None)
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.matches("PASS").count(), 11, "{}", r.stdout);
    assert_eq!(fx.sandbox.invoice_count(), 1);

    // The wrapper script passes --setup-password through.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/test_token_refresh.sh"
    );
    let mut cmd = tokio::process::Command::new("bash");
    cmd.args([script, "--config", c, "--setup-password"])
        .env("POS_CONNECTOR_BIN", env!("CARGO_BIN_EXE_pos-connector"))
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{SANDBOX_PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("password verified") && stdout.contains("7 passed, 0 failed"),
        "{stdout}"
    );

    // Wrong password: every scenario after the first is not run; exit 3.
    let r = fx
        .cli(
            &["test-token-refresh"],
            &[("POS_CONNECTOR_PASSWORD", "wrong")],
            None,
        )
        .await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stdout.contains("FAIL  1. initial authentication"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_reaches_the_log_files() {
    let fx = Fixture::start().await;
    let password = "Sup3r-Secret-Passw0rd!";
    let mut opts_user = pos_sandbox::SandboxUser::default_vendor();
    opts_user.password = password.into();
    drop(fx);
    let fx = Fixture::with_options(pos_sandbox::LaravelSandboxOptions {
        users: vec![opts_user],
        ..Default::default()
    })
    .await;
    fx.write_config(json!({"log_level": "trace"}));
    let env = [("POS_CONNECTOR_PASSWORD", password)];
    std::fs::write(fx.path("s.json"), sale_json("LOG-1")).unwrap();
    let r = fx
        .cli(
            &["--setup-password", "test-token-refresh", "--create-invoice"],
            &[],
            Some(password),
        )
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = fx
        .cli(&["--json", "invoice", "create", "s.json"], &env, None)
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    fx.sandbox.revoke_all_tokens();
    let r = fx
        .cli(
            &["--log-level", "trace", "invoice", "status", "1"],
            &env,
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    // A wrong password attempt logs the refusal, not the password.
    let r = fx
        .cli(
            &["invoice", "status", "1"],
            &[("POS_CONNECTOR_PASSWORD", "Wr0ng-Attempt-Pw")],
            None,
        )
        .await;
    assert_eq!(r.code, 0, "the stored token still works: {r:?}");

    let token = Vault::new(&fx.path("data"))
        .token("laravel")
        .unwrap()
        .unwrap();
    let token = token.secret.expose_secret().to_string();
    let secret_part = token.split('|').nth(1).unwrap().to_string();
    let mut logs = String::new();
    for entry in std::fs::read_dir(fx.path("logs")).unwrap() {
        logs.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(
        logs.contains("token refreshed"),
        "debug logs were written: {logs}"
    );
    assert!(logs.len() > 1000);
    for secret in [password, "Wr0ng-Attempt-Pw", &token, &secret_part] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    // No Sanctum-shaped token of any login either: `<id>|` + 48 characters.
    for (i, _) in logs.match_indices('|') {
        let tail: String = logs[i + 1..].chars().take(48).collect();
        assert!(
            !(tail.len() == 48 && tail.chars().all(|c| c.is_ascii_alphanumeric())),
            "token-like text in the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_end_to_end_and_says_where_the_files_are() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let r = run_bin(
        dir.path(),
        &["demo", "--dir", out.to_str().unwrap()],
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    for step in [
        "[1/10]",
        "[3/10]",
        "[4/10] submitted it to JoFotara (simulated): status submitted",
        "[7/10] token refresh",
        "1 login)",
        "[8/10] connected QuickBooks",
        "[10/10] every sale went through create, submit and PDF (12 done",
        "on to QuickBooks (12 invoices pushed, each once)",
    ] {
        assert!(r.stdout.contains(step), "{step} missing: {}", r.stdout);
    }
    let pdfs: Vec<_> = std::fs::read_dir(out.join("pdfs")).unwrap().collect();
    assert_eq!(
        pdfs.len(),
        2 + 12,
        "PDF and XML of the first sale, then a PDF per sale"
    );
    let receipts: Vec<_> = std::fs::read_dir(out.join("receipts")).unwrap().collect();
    assert_eq!(receipts.len(), 12);
    assert!(r.stdout.contains(&out.join("pdfs").display().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_command_serves_the_simulator_on_the_port_it_prints() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pos-connector"))
        .args(["sandbox", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let base = first
        .strip_prefix("sandbox listening on ")
        .unwrap()
        .to_string();
    let answer = pos_connector::http_client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/api/vendors/login"))
        .header("Accept", "application/json")
        .json(&json!({"email": SANDBOX_EMAIL, "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!({"message": "Invalid credentials"})
    );
    child.kill().await.unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_signs_in_at_start_and_stops_cleanly_on_sigterm() {
    let fx = Fixture::start().await;
    let cfg = fx.write_config(json!({"log_level": "info"}));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pos-connector"))
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .env("POS_CONNECTOR_PASSWORD", SANDBOX_PASSWORD)
        .current_dir(fx.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The first sale of the morning must not wait for a login: the service
    // signs in as soon as it starts, with nothing to do.
    wait_until(
        std::time::Duration::from_secs(20),
        "the service's first login",
        || async { fx.sandbox.logins_ok() == 1 },
    )
    .await;
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("stops within 20 s")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let logs: Vec<_> = std::fs::read_dir(fx.path("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let local_today = chrono::Local::now().format("%Y-%m-%d").to_string();
    assert!(
        logs.iter()
            .any(|n| *n == format!("pos-connector.log.{today}")
                || *n == format!("pos-connector.log.{local_today}")),
        "{logs:?}"
    );
    let text = std::fs::read_to_string(fx.path("logs").join(&logs[0])).unwrap();
    assert!(
        text.contains("pos-connector running")
            && text.contains("token refreshed")
            && text.contains("pos-connector stopped"),
        "{text}"
    );
}

#[tokio::test]
async fn queue_commands_list_show_and_release_jobs() {
    use pos_connector::intake::{new_job, sale};
    use pos_connector::store::Outbox;
    let fx = Fixture::start().await;
    let config = fx.write_config(json!({"password": SANDBOX_PASSWORD}));
    let cfg = pos_connector::config::load(&config).unwrap();
    {
        let mut ob = Outbox::open(&cfg.data_dir).unwrap();
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/intake/cafe_pos_sales.csv"),
        )
        .unwrap();
        let sales = sale::parse_file("cafe.csv", &bytes, &Default::default()).unwrap();
        let jobs: Vec<_> = sales.iter().map(|s| new_job(s, "inbox:cafe.csv")).collect();
        ob.enqueue_all(&jobs, chrono::Utc::now()).unwrap();
        let j = ob.find("TXN002").unwrap().unwrap();
        ob.park(
            j.id,
            "JoFotara rejected invoice TXN002 (test)",
            chrono::Utc::now(),
        )
        .unwrap();
    }
    let list = fx.cli(&["queue", "list"], &[], None).await;
    assert_eq!(list.code, 0, "{list:?}");
    assert!(
        list.stdout.contains("parked 1") && list.stdout.contains("queued 7"),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("TXN008"));

    let parked = fx
        .cli(&["--json", "queue", "list", "--state", "parked"], &[], None)
        .await;
    let v: Value = serde_json::from_str(&parked.stdout).unwrap();
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(v["jobs"][0]["invoice_number"], "TXN002");
    assert_eq!(v["jobs"][0]["sale"]["customer_name"], "Jane Doe");

    let show = fx.cli(&["queue", "show", "TXN002"], &[], None).await;
    assert_eq!(show.code, 0);
    assert!(
        show.stdout.contains("last error: JoFotara rejected"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("parked"));

    let retry = fx.cli(&["queue", "retry", "--all-parked"], &[], None).await;
    assert_eq!(retry.code, 0);
    assert!(
        retry.stdout.contains("TXN002") && retry.stdout.contains("released"),
        "{}",
        retry.stdout
    );

    let bad_state = fx
        .cli(&["queue", "list", "--state", "lost"], &[], None)
        .await;
    assert_eq!(bad_state.code, 2);
    assert!(bad_state.stderr.contains("parked"), "{}", bad_state.stderr);
    let missing = fx.cli(&["queue", "show", "NOPE"], &[], None).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("queue list"), "{}", missing.stderr);
    let neither = fx.cli(&["queue", "retry"], &[], None).await;
    assert_eq!(neither.code, 2, "N or --all-parked is required");
}

#[tokio::test]
async fn invoice_render_writes_a_receipt_without_a_backend() {
    let fx = Fixture::start().await;
    fx.write_config(json!({"password": SANDBOX_PASSWORD}));
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/intake/generic_pos.json");
    // A reference, so that the closure below can be called twice.
    let fx = &fx;
    let render = |src: std::path::PathBuf, out: std::path::PathBuf| async move {
        let (src, out) = (src.to_str().unwrap(), out.to_str().unwrap());
        fx.cli(&["invoice", "render", src, "--out", out], &[], None)
            .await
    };
    let out = fx.path("r.pdf");
    let r = render(src, out.clone()).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("INV-GEN-001"));
    let pdf = std::fs::read(&out).unwrap();
    assert!(pdf.starts_with(b"%PDF"));
    assert_eq!(fx.sandbox.requests("*"), 0, "no backend call");
    // Characters the font lacks are listed on the receipt and logged.
    let cjk = fx.path("cjk.json");
    std::fs::write(
        &cjk,
        json!({"invoice_number": "INV-CJK-1", "customer": {"name": "王小明"},
               "items": [{"description": "绿茶 Green tea", "quantity": 1, "unit_price": 2}]})
        .to_string(),
    )
    .unwrap();
    let out = fx.path("cjk.pdf");
    let r = render(cjk, out.clone()).await;
    assert_eq!(r.code, 0, "{r:?}");
    let logged = format!("{}{}", r.stdout, r.stderr);
    assert!(
        logged.contains("INV-CJK-1") && logged.contains("U+5C0F U+660E U+738B U+7EFF U+8336"),
        "{r:?}"
    );
    let text = pos_connector::receipt::extract_text(&std::fs::read(&out).unwrap()).unwrap();
    assert!(text.contains("U+738B"), "{text}");
    let bad = fx
        .cli(&["invoice", "render", "no-such-thing"], &[], None)
        .await;
    assert_eq!(bad.code, 2);
}
