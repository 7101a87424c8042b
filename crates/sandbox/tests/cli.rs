//! The `pos-sandbox` binary as the demo and integrators start it: it prints
//! where it listens, serves a login there, and refuses bad arguments with
//! exit 2. (Building this test also builds the binary the agent's tests and
//! demo start from beside `pos-connector`.)

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn serves_the_backend_on_the_port_it_prints() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pos-sandbox"))
        .args(["--port", "0", "--qbo-port", "0", "--email", "a@b.test"])
        .args(["--password", "pw-123"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("pos-sandbox prints its address within 30 s")
            .unwrap()
            .expect("a line")
    };
    let first = next().await;
    let base = first
        .strip_prefix("sandbox listening on ")
        .expect(&first)
        .to_string();
    let second = next().await;
    assert!(
        second.starts_with("quickbooks simulator listening on http://127.0.0.1:"),
        "{second}"
    );
    let http = client_builder().no_proxy().build().unwrap();
    let login = |password: &'static str| {
        http.post(format!("{base}/api/vendors/login"))
            .header("Accept", "application/json")
            .json(&serde_json::json!({"email": "a@b.test", "password": password}))
            .send()
    };
    assert_eq!(login("pw-123").await.unwrap().status(), 200);
    assert_eq!(login("wrong").await.unwrap().status(), 401);
    child.kill().await.unwrap();
}

/// Starts `pos-sandbox` with `args` on free ports; its Laravel base URL.
async fn start(args: &[&str]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pos-sandbox"))
        .args(["--port", "0", "--qbo-port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("pos-sandbox prints its address within 30 s")
        .unwrap()
        .expect("a line");
    let base = first
        .strip_prefix("sandbox listening on ")
        .expect(&first)
        .to_string();
    (child, base)
}

#[tokio::test]
async fn finish_after_disconnect_is_the_default_with_realistic_latency() {
    let http = client_builder().no_proxy().build().unwrap();
    for (args, expected) in [
        (&[][..], false),
        (&["--latency", "realistic"][..], true),
        (
            &["--latency", "realistic", "--finish-after-disconnect=false"][..],
            false,
        ),
        (&["--finish-after-disconnect"][..], true),
    ] {
        let (mut child, base) = start(args).await;
        let stats: serde_json::Value = http
            .get(format!("{base}/__sandbox/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            stats["settings"]["finish_after_disconnect"], expected,
            "{args:?}"
        );
        child.kill().await.unwrap();
    }
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    for args in [
        &["--finish-after-disconnect=maybe"][..],
        &["--workers", "0"][..],
        &["--latency", "sluggish"][..],
        &["--qbo-rotation", "sometimes"][..],
        &["--no-such-flag"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pos-sandbox"))
            .args(["--port", "0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

/// reqwest's rustls has no crypto provider in this workspace (the agent
/// installs ring): these plain-HTTP clients need one installed too.
fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
