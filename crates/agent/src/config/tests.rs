//! The config's unit tests: loading, layering, checks, the view.

mod main {
    use super::super::checks::parse_base_url;
    use super::super::keys::{self, Kind};
    use super::super::*;
    use secrecy::ExposeSecret;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_example_config_loads_and_uses_only_known_keys() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/config.example.json");
        let cfg = load_from(&p, &[]).unwrap();
        assert!(cfg.extra.is_empty(), "{:?}", cfg.extra);
        assert!(
            cfg.warnings.iter().all(|w| !w.contains("not a setting")),
            "{:?}",
            cfg.warnings
        );
        assert_eq!(cfg.local_api.bind.to_string(), DEFAULT_LOCAL_API_BIND);
        assert_eq!(cfg.pipeline.concurrency, 4);
        assert_eq!(cfg.pipeline.submit_settle, Duration::from_secs(90));
        assert_eq!(cfg.pipeline.max_submit_errors, 5);
    }

    #[test]
    fn receipts_paper_defaults_to_an_80mm_roll_and_names_the_key_when_wrong() {
        use super::super::Paper;
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), r#"{"email": "a@b.co"}"#);
        let cfg = load_from(&p, &[]).unwrap();
        assert_eq!(cfg.receipts.paper, Paper::Roll80);
        assert_eq!(redacted_view(&cfg, "x")["receipts"]["paper"], "80mm");
        for (text, paper) in [
            ("a4", Paper::A4),
            ("A4", Paper::A4),
            ("58mm", Paper::Roll58),
            (" 80MM ", Paper::Roll80),
        ] {
            let p = write(
                dir.path(),
                &format!(r#"{{"email": "a@b.co", "receipts": {{"paper": "{text}"}}}}"#),
            );
            assert_eq!(load_from(&p, &[]).unwrap().receipts.paper, paper, "{text}");
        }
        // The environment overrides it like any key.
        let env = [("POS_CONNECTOR__RECEIPTS__PAPER".into(), "a4".into())];
        assert_eq!(load_from(&p, &env).unwrap().receipts.paper, Paper::A4);
        for bad in [r#""letter""#, r#""80""#, "80"] {
            let p = write(
                dir.path(),
                &format!(r#"{{"email": "a@b.co", "receipts": {{"paper": {bad}}}}}"#),
            );
            let ConfigError::Invalid { problems, .. } = load_from(&p, &[]).unwrap_err() else {
                panic!("{bad} accepted")
            };
            let problem = problems
                .iter()
                .find(|p| p.key == "receipts.paper")
                .unwrap_or_else(|| panic!("{bad}: {problems:?}"));
            assert!(
                problem.problem.contains("80mm") && problem.problem.contains("a4"),
                "{bad}: {}",
                problem.problem
            );
        }
    }

    #[test]
    fn service_sections_nested_or_flat_with_defaults_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            r#"{"email": "a@b.co", "local_api.bind": "127.0.0.1:9999",
                "pipeline": {"concurrency": 8, "lookup_path": "/api/x/{invoice_number}", "colour": 1},
                "intake": {"mapping": {"invoice_number": "Ticket#"}}}"#,
        );
        let cfg = load_from(&p, &[]).unwrap();
        assert_eq!(cfg.local_api.bind.port(), 9999);
        assert_eq!(cfg.pipeline.concurrency, 8);
        assert_eq!(cfg.intake.default_customer, DEFAULT_CUSTOMER);
        assert_eq!(cfg.receipts.dir, dir.path().join("receipts"));
        assert_eq!(cfg.intake.mapping["invoice_number"], "Ticket#");
        assert!(cfg.warnings.iter().any(|w| w.contains("pipeline.colour")));
        assert!(cfg.warnings.iter().any(|w| w.contains("local_api.api_key")));
        assert!(!cfg
            .warnings
            .iter()
            .any(|w| w.contains("submit_settle_seconds is")));
        let short = write(
            dir.path(),
            r#"{"email": "a@b.co", "pipeline.submit_settle_seconds": 20,
                "pipeline": {"max_submit_errors": 3}}"#,
        );
        let c = load_from(&short, &[]).unwrap();
        assert_eq!(c.pipeline.submit_settle, Duration::from_secs(20));
        assert_eq!(c.pipeline.max_submit_errors, 3);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("pipeline.submit_settle_seconds is 20") && w.contains("twice")),
            "{:?}",
            c.warnings
        );
        // The API key comes from the environment too, and is redacted.
        let cfg = load_from(
            &p,
            &[(
                "POS_CONNECTOR__LOCAL_API__API_KEY".into(),
                "k3y-from-env-0123456".into(),
            )],
        )
        .unwrap();
        assert_eq!(
            cfg.local_api.api_key.as_ref().unwrap().expose_secret(),
            "k3y-from-env-0123456"
        );
        assert!(!redacted_view(&cfg, "x")
            .to_string()
            .contains("k3y-from-env"));
        assert!(!format!("{cfg:?}").contains("k3y-from-env"));

        let p = write(
            dir.path(),
            r#"{"email": "a@b.co", "local_api": {"bind": "0.0.0.0:8765"},
                "pipeline": {"concurrency": 0, "lookup_path": "by-number",
                             "submit_settle_seconds": 0, "max_submit_errors": "many"},
                "intake": {"mapping": {"colour": "x"}}, "receipts": "yes"}"#,
        );
        let ConfigError::Invalid { problems, .. } = load_from(&p, &[]).unwrap_err() else {
            panic!("invalid expected")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "local_api.bind",
            "pipeline.concurrency",
            "pipeline.lookup_path",
            "pipeline.submit_settle_seconds",
            "pipeline.max_submit_errors",
            "receipts",
        ] {
            assert!(keys.contains(&k), "{k} not reported: {problems:?}");
        }
        let p = write(
            dir.path(),
            r#"{"email": "a@b.co", "local_api": {"bind": "0.0.0.0:8765", "allow_remote": true}}"#,
        );
        assert!(load_from(&p, &[]).is_ok());
        // The inbox must not be a folder of the agent's own files.
        let p = write(
            dir.path(),
            // json! escapes a Windows path's backslashes.
            &serde_json::json!({
                "email": "a@b.co",
                "invoice_folder": format!("{}/.", dir.path().display()),
                "data_dir": format!("{}/data", dir.path().display()),
            })
            .to_string(),
        );
        let err = load_from(&p, &[]).unwrap_err().to_string();
        assert!(
            err.contains("invoice_folder") && err.contains("config file"),
            "{err}"
        );
    }

    /// The defaults named in the code (for messages and other modules) are
    /// the table's.
    #[test]
    fn the_named_defaults_are_the_tables() {
        let default = |k: &str| keys::find(k).unwrap().default_value().unwrap();
        assert_eq!(default("quickbooks.redirect_uri"), DEFAULT_QB_REDIRECT_URI);
        assert_eq!(default("local_api.bind"), DEFAULT_LOCAL_API_BIND);
        assert_eq!(default("intake.default_customer"), DEFAULT_CUSTOMER);
        let number = |k: &str| default(k).parse::<f64>().unwrap();
        assert_eq!(
            number("local_api.max_connections"),
            DEFAULT_MAX_CONNECTIONS as f64
        );
        assert_eq!(
            number("local_api.header_timeout_seconds"),
            DEFAULT_HEADER_TIMEOUT.as_secs_f64()
        );
        assert_eq!(
            number("pipeline.submit_settle_seconds"),
            DEFAULT_SUBMIT_SETTLE_SECS
        );
    }

    /// The defaults the reader applies are the table's (and so the README's).
    #[test]
    fn an_empty_file_gets_the_table_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), r#"{"email": "v@shop.jo"}"#);
        let view = redacted_view(&load_from(&p, &[]).unwrap(), "x");
        for key in keys::KEYS {
            let Some(default) = key.default_value() else {
                continue;
            };
            let shown = match key.section() {
                None => &view[key.name],
                Some((section, inner)) => &view[section][inner],
            };
            let name = key.name;
            match key.kind {
                Kind::Number { .. } => {
                    assert_eq!(shown.as_f64(), default.parse().ok(), "{name}")
                }
                Kind::Bool => assert_eq!(shown.as_bool(), Some(default == "true"), "{name}"),
                Kind::Folder => assert_eq!(
                    shown.as_str().map(PathBuf::from),
                    Some(d.path().join(default)),
                    "{name}"
                ),
                Kind::List => assert_eq!(shown, &serde_json::json!([]), "{name}"),
                Kind::Url => assert_eq!(
                    shown.as_str().map(|s| s.trim_end_matches('/')),
                    Some(default),
                    "{name}"
                ),
                _ => assert_eq!(shown.as_str(), Some(default), "{name}"),
            }
        }
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), r#"{"email": "v@shop.jo"}"#);
        let c = load_from(&p, &[]).unwrap();
        assert_eq!(c.base_url.as_str(), "http://127.0.0.1:8000/");
        assert_eq!(c.token_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(c.refresh_before, Duration::from_secs(30 * 60));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        // Relative defaults land beside the config file.
        assert_eq!(c.log_dir, d.path().join("logs"));
        assert_eq!(c.pdf_dir, d.path().join("data").join("pdfs"));
        assert_eq!(c.invoice_folder, d.path().join("invoices"));
        assert!(c.auto_submit_jofotara);
        assert!(!c.allow_insecure_http);
    }

    #[test]
    fn bom_crlf_and_unknown_keys_are_fine() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "\u{feff}{\r\n\"email\": \"v@shop.jo\",\r\n\"pos_type\": \"square\",\r\n\"log_level\": \"WARNING\"\r\n}\r\n",
        );
        let c = load_from(&p, &[]).unwrap();
        assert_eq!(c.log_level, LogLevel::Warn);
        assert_eq!(c.extra.get("pos_type").unwrap(), "square");
    }

    #[test]
    fn invalid_json_names_file_line_and_column() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "{\n  \"email\": \"v@shop.jo\"\n  \"base_url\": 1\n}",
        );
        let err = load_from(&p, &[]).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(err.contains("line 3, column 3"), "{err}");
    }

    #[test]
    fn every_problem_is_named_by_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            r#"{"email": "not-an-email", "base_url": "ftp://x", "sync_interval": "often", "log_level": "loud"}"#,
        );
        let err = load_from(&p, &[]).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["base_url", "email", "sync_interval", "log_level"]);
    }

    #[test]
    fn missing_email_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), r#"{"base_url": "https://inv.example.com"}"#);
        let err = load_from(&p, &[]).unwrap_err().to_string();
        assert!(err.contains("email: is missing"), "{err}");
    }

    #[test]
    fn plain_http_to_another_host_is_refused_unless_allowed() {
        assert!(parse_base_url("http://10.0.0.5:8000", false).is_err());
        assert!(parse_base_url("http://10.0.0.5:8000", true).is_ok());
        assert!(parse_base_url("http://localhost:8000", false).is_ok());
        assert!(parse_base_url("http://[::1]:8000", false).is_ok());
        assert_eq!(
            parse_base_url("https://inv.example.com/backend", false)
                .unwrap()
                .as_str(),
            "https://inv.example.com/backend/"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            r#"{"email": "v@shop.jo", "base_url": "http://127.0.0.1:8000"}"#,
        );
        let env = vec![
            (
                "POS_CONNECTOR__BASE_URL".to_string(),
                "https://inv.example.com".to_string(),
            ),
            (
                "POS_CONNECTOR__REQUEST_TIMEOUT_SECS".to_string(),
                "90".to_string(),
            ),
            // Not an override: single underscore.
            ("POS_CONNECTOR_PASSWORD".to_string(), "x".to_string()),
        ];
        let c = load_from(&p, &env).unwrap();
        assert_eq!(c.base_url.as_str(), "https://inv.example.com/");
        assert_eq!(c.request_timeout, Duration::from_secs(90));
        assert!(c.password.is_none());
    }

    /// Environment values are text: the key's type in the table decides
    /// whether one is read as a number or a boolean, so text keys keep
    /// leading zeros, plus signs and long digit strings.
    #[test]
    fn environment_overrides_keep_text_as_text_and_type_the_rest_by_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), r#"{"email": "v@shop.jo"}"#);
        let digits24 = "123456789012345678901234";
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = load_from(
            &p,
            &env(&[
                ("POS_CONNECTOR__RECEIPTS__SHOP_NAME", "0795551234"),
                ("POS_CONNECTOR__INTAKE__DEFAULT_CUSTOMER", "+962"),
                ("POS_CONNECTOR__LOCAL_API__API_KEY", digits24),
                (
                    "POS_CONNECTOR__QUICKBOOKS__REALM_ID",
                    "0012345678901234567890",
                ),
                ("POS_CONNECTOR__PIPELINE__CONCURRENCY", "8"),
                ("POS_CONNECTOR__RECEIPTS__ENABLED", "false"),
                ("POS_CONNECTOR__SYNC_INTERVAL", "2.5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.receipts.shop_name.as_deref(), Some("0795551234"));
        assert_eq!(c.intake.default_customer, "+962");
        assert_eq!(
            c.local_api.api_key.as_ref().unwrap().expose_secret(),
            digits24
        );
        assert_eq!(
            c.quickbooks.realm_id.as_deref(),
            Some("0012345678901234567890")
        );
        assert_eq!(c.pipeline.concurrency, 8);
        assert!(!c.receipts.enabled);
        assert_eq!(c.sync_interval, Duration::from_millis(2500));
        // A number key given text is a problem named by its key.
        let err = load_from(
            &p,
            &env(&[("POS_CONNECTOR__PIPELINE__CONCURRENCY", "many")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pipeline.concurrency"), "{err}");
    }

    #[test]
    fn legacy_token_with_naive_local_expiry() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            r#"{"email": "v@shop.jo", "token": "5|abc", "token_expiry": "2030-01-02T03:04:05.123456", "password": "pw"}"#,
        );
        let c = load_from(&p, &[]).unwrap();
        let t = c.legacy_token.unwrap();
        assert_eq!(t.token.expose_secret(), "5|abc");
        use chrono::{Local, TimeZone};
        let local = Local.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(t.expires_at.timestamp(), local.timestamp());
        assert!(c.warnings.iter().any(|w| w.contains("plain text")));
        // Debug never shows secrets.
        let dbg = format!("{:?}", c.password);
        assert!(!dbg.contains("pw\""), "{dbg}");
    }
}

mod connector {
    use super::super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn connector_channel_keys_defaults_env_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, r#"{"email": "a@b.co"}"#).unwrap();
        let cfg = load_from(&p, &[]).unwrap();
        assert!(cfg.connector.api_key.is_none());
        assert_eq!(cfg.connector.heartbeat_interval, Duration::from_secs(300));
        assert!(cfg.connector.pos_systems.is_empty());
        assert_eq!(cfg.quickbooks.cache_refresh, Duration::from_secs(3600));

        std::fs::write(
            &p,
            r#"{"email": "a@b.co", "api_key": "file-key", "heartbeat_minutes": 2,
                "pos_systems": "square, shopify", "quickbooks": {"cache_refresh_minutes": 15}}"#,
        )
        .unwrap();
        let env = [(ENV_CONNECTOR_API_KEY.to_string(), "env-key".to_string())];
        let cfg = load_from(&p, &env).unwrap();
        assert_eq!(
            cfg.connector.api_key.as_ref().unwrap().expose_secret(),
            "env-key"
        );
        assert_eq!(cfg.connector.heartbeat_interval, Duration::from_secs(120));
        assert_eq!(cfg.connector.pos_systems, ["square", "shopify"]);
        assert_eq!(cfg.quickbooks.cache_refresh, Duration::from_secs(900));
        let shown = redacted_view(&cfg, "config.json").to_string();
        assert!(
            !shown.contains("env-key") && !shown.contains("file-key"),
            "{shown}"
        );
        assert!(shown.contains(ENV_CONNECTOR_API_KEY));
        assert!(!format!("{cfg:?}").contains("env-key"));

        std::fs::write(
            &p,
            r#"{"email": "a@b.co", "heartbeat_minutes": 0, "pos_systems": 3}"#,
        )
        .unwrap();
        let err = load_from(&p, &[]).unwrap_err().to_string();
        assert!(
            err.contains("heartbeat_minutes") && err.contains("pos_systems"),
            "{err}"
        );
    }
}
