//! Config rules that keep secrets and the local API safe: no credentials
//! inside URLs (issue 10, point 10), a local API key long enough to resist
//! guessing (point 8), the local API's limits. Through `config::load_from`
//! (the agent's one reader) and the real binary's `check-config`.

use std::path::{Path, PathBuf};

use pos_connector::config::{self, ConfigError};
use serde_json::{json, Value};

use crate::common::{run_bin, Fixture};

fn write(dir: &Path, v: Value) -> PathBuf {
    let p = dir.join("config.json");
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    p
}

/// The problems `load_from` reports, as (key, text).
fn problems(dir: &Path, v: Value) -> Vec<(String, String)> {
    let p = write(dir, v);
    match config::load_from(&p, &[]) {
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.into_iter().map(|p| (p.key, p.problem)).collect()
        }
        Err(other) => panic!("expected key problems, got {other}"),
        Ok(_) => Vec::new(),
    }
}

#[test]
fn credentials_inside_a_url_are_refused_without_being_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "base_url",
            json!({"base_url": "https://shop:S3cretPw@inv.example.com"}),
        ),
        // Only a user name is a credential too (a token as the user).
        (
            "base_url",
            json!({"base_url": "https://T0kenAsUser@inv.example.com/api"}),
        ),
        // Not even a broken URL may repeat what it carries.
        (
            "base_url",
            json!({"base_url": "ftp://shop:S3cretPw@inv.example.com"}),
        ),
        (
            "base_url",
            json!({"base_url": "https://shop:S3cretPw@inv example.com"}),
        ),
        (
            "quickbooks.auth_base",
            json!({"quickbooks": {"auth_base": "http://u:S3cretPw@127.0.0.1:9000",
                                  "api_base": "http://127.0.0.1:9001"}}),
        ),
        (
            "quickbooks.api_base",
            json!({"quickbooks": {"auth_base": "http://127.0.0.1:9000",
                                  "api_base": "http://u:S3cretPw@127.0.0.1:9001"}}),
        ),
        (
            "quickbooks.redirect_uri",
            json!({"quickbooks": {"redirect_uri": "http://u:S3cretPw@localhost:8765/callback"}}),
        ),
    ];
    for (key, extra) in cases {
        let mut v = json!({"email": "v@shop.jo"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let found = problems(dir.path(), v.clone());
        let (_, text) = found
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key} not refused for {v}: {found:?}"));
        for secret in ["S3cretPw", "T0kenAsUser", "shop:"] {
            assert!(!text.contains(secret), "{key} repeats the secret: {text}");
        }
        if !text.contains("not a URL") && !text.contains("must start with") {
            assert!(
                text.contains("user name or password") && text.contains("remove"),
                "{key}: {text}"
            );
        }
    }
    // The same URL without them is fine.
    let p = write(
        dir.path(),
        json!({"email": "v@shop.jo", "base_url": "https://inv.example.com"}),
    );
    assert!(config::load_from(&p, &[]).is_ok());
    // An environment override is checked the same way.
    let env = [(
        "POS_CONNECTOR__BASE_URL".to_string(),
        "https://a:S3cretPw@inv.example.com".to_string(),
    )];
    let err = config::load_from(&p, &env).unwrap_err().to_string();
    assert!(
        err.contains("base_url") && !err.contains("S3cretPw"),
        "{err}"
    );
}

#[test]
fn a_short_or_published_local_api_key_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    for key in ["short", "fifteen-chars-k", "change-me-to-a-long-random-key"] {
        let found = problems(
            dir.path(),
            json!({"email": "v@shop.jo", "local_api": {"api_key": key}}),
        );
        let (_, text) = found
            .iter()
            .find(|(k, _)| k == "local_api.api_key")
            .unwrap_or_else(|| panic!("{key:?} accepted: {found:?}"));
        assert!(!text.contains(key), "the key is repeated: {text}");
        assert!(text.contains("random"), "says how to fix it: {text}");
    }
    // Disabled or not, a key that is set must be a good one; 16 is enough.
    let found = problems(
        dir.path(),
        json!({"email": "v@shop.jo", "local_api": {"enabled": false, "api_key": "short"}}),
    );
    assert!(
        found.iter().any(|(k, _)| k == "local_api.api_key"),
        "{found:?}"
    );
    let p = write(
        dir.path(),
        json!({"email": "v@shop.jo", "local_api": {"api_key": "sixteen-chars-k!"}}),
    );
    let cfg = config::load_from(&p, &[]).unwrap();
    assert!(cfg.local_api.api_key.is_some());
}

#[test]
fn local_api_limits_have_defaults_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), json!({"email": "v@shop.jo"}));
    let cfg = config::load_from(&p, &[]).unwrap();
    assert_eq!(cfg.local_api.max_connections, 64);
    assert_eq!(cfg.local_api.header_timeout.as_secs(), 10);
    assert!(cfg.local_api.allowed_hosts.is_empty());
    let p = write(
        dir.path(),
        json!({"email": "v@shop.jo", "local_api": {"max_connections": 8,
               "header_timeout_seconds": 2, "allowed_hosts": ["till-3.shop.lan", "Till-3"]}}),
    );
    let cfg = config::load_from(&p, &[]).unwrap();
    assert_eq!(cfg.local_api.max_connections, 8);
    assert_eq!(cfg.local_api.header_timeout.as_secs(), 2);
    assert_eq!(cfg.local_api.allowed_hosts, ["till-3.shop.lan", "till-3"]);
    let found = problems(
        dir.path(),
        json!({"email": "v@shop.jo", "local_api": {"max_connections": 0,
               "header_timeout_seconds": 0, "allowed_hosts": ["evil.example:80/x"]}}),
    );
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "local_api.max_connections",
        "local_api.header_timeout_seconds",
        "local_api.allowed_hosts",
    ] {
        assert!(keys.contains(&k), "{k}: {found:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_never_prints_a_url_credential() {
    let fx = Fixture::start().await;
    let base = fx
        .sandbox
        .base_url()
        .replace("://", "://vendor:Hunter2Secret@");
    let cfg = fx.write_config(json!({"base_url": base}));
    let r = run_bin(
        fx.dir.path(),
        &["--config", cfg.to_str().unwrap(), "check-config"],
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("base_url"), "{}", r.stderr);
    let everything = format!("{}{}", r.stdout, r.stderr);
    assert!(!everything.contains("Hunter2Secret"), "{everything}");
    // Nor does `run`, which stops before signing in (nothing reached the backend).
    let r = run_bin(
        fx.dir.path(),
        &["--config", cfg.to_str().unwrap(), "run"],
        &[("POS_CONNECTOR_PASSWORD", "x")],
        None,
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!format!("{}{}", r.stdout, r.stderr).contains("Hunter2Secret"));
    assert_eq!(fx.sandbox.logins_ok(), 0);
}

/// `intake.encoding` (issue 12): a WHATWG label, read case-insensitively;
/// an unknown one is an error on that key that says what to write.
#[test]
fn intake_encoding_takes_a_known_label_and_names_the_fix_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    for (label, name) in [
        ("windows-1256", "windows-1256"),
        (" CP1256 ", "windows-1256"),
        ("iso-8859-6", "ISO-8859-6"),
        ("utf-16le", "UTF-16LE"),
    ] {
        let p = write(
            dir.path(),
            json!({"email": "v@shop.jo", "intake": {"encoding": label}}),
        );
        let cfg = config::load_from(&p, &[]).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(cfg.intake.encoding.name(), name, "{label}");
    }
    let p = write(dir.path(), json!({"email": "v@shop.jo"}));
    let cfg = config::load_from(&p, &[]).unwrap();
    assert_eq!(cfg.intake.encoding, encoding_rs::UTF_8, "the default");

    for bad in [json!("utf8mb4"), json!("iso-2022-kr"), json!(1256)] {
        let found = problems(
            dir.path(),
            json!({"email": "v@shop.jo", "intake": {"encoding": bad}}),
        );
        let (_, text) = found
            .iter()
            .find(|(k, _)| k == "intake.encoding")
            .unwrap_or_else(|| panic!("{bad} accepted: {found:?}"));
        assert!(text.contains("windows-1256"), "{text}");
    }
}

/// A library caller (the demo, the bench, an embedding program) that starts
/// the service with a mapping the intake cannot use hears it as a config
/// error (exit 2), as the binary's loading does; the agent does not read
/// every file with the default mapping instead.
#[tokio::test]
async fn the_service_refuses_an_intake_mapping_it_cannot_use() {
    let fx = Fixture::start().await;
    let cfg = fx.config(json!({"intake": {"mapping": {"colour": "x"}}}));
    let err = pos_connector::service::run(
        &cfg,
        std::sync::Arc::new(pos_connector::clock::SystemClock),
        std::future::pending(),
    )
    .await
    .expect_err("a bad mapping must stop the start");
    assert_eq!(err.exit_code(), 2);
    let text = err.to_string();
    assert!(text.contains("intake.mapping"), "{text}");
    assert_eq!(
        fx.sandbox.requests("POST /api/vendors/login"),
        0,
        "nothing was sent before the check"
    );
}
