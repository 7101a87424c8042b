//! The effective configuration as `check-config` and `GET /api/config`
//! show it: every key of the table, secrets redacted.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::keys;
use super::{paths, Config, ENV_CONNECTOR_API_KEY, ENV_QB_CLIENT_SECRET};

/// The effective configuration as JSON with every secret replaced by
/// `[REDACTED]` (for `check-config` and the status page): every key of the
/// table, in its order, nested by section.
pub fn redacted_view(cfg: &Config, password_origin: &str) -> Value {
    let mut m = Map::new();
    m.insert(
        "config_file".into(),
        paths::absolute(&cfg.path).display().to_string().into(),
    );
    for key in keys::KEYS {
        let fields = match shown(cfg, key.name, password_origin) {
            // A secret is never shown, even if its view forgot that.
            Shown::Value(_) if key.secret => {
                debug_assert!(false, "{} is a secret: show its origin", key.name);
                vec![(key.name, "[REDACTED]".into())]
            }
            Shown::Value(value) => vec![(key.name, value)],
            Shown::Secret(origin) => {
                let value = match origin {
                    None => Value::Null,
                    Some(o) if o.is_empty() => "[REDACTED]".into(),
                    Some(o) => format!("[REDACTED] ({o})").into(),
                };
                vec![(key.name, value)]
            }
            Shown::Fields(fields) => fields,
        };
        for (name, value) in fields {
            match name.split_once('.') {
                None => {
                    m.insert(name.into(), value);
                }
                Some((section, inner)) => {
                    let entry = m
                        .entry(section)
                        .or_insert_with(|| Value::Object(Map::new()));
                    entry
                        .as_object_mut()
                        .expect("a section")
                        .insert(inner.into(), value);
                }
            }
        }
    }
    if !cfg.extra.is_empty() {
        let ignored: BTreeMap<&String, &str> =
            cfg.extra.keys().map(|k| (k, "(not used, kept)")).collect();
        m.insert(
            "ignored_keys".into(),
            serde_json::to_value(ignored).expect("serialises"),
        );
    }
    Value::Object(m)
}

/// How a key's effective value is shown.
enum Shown {
    Value(Value),
    /// A secret: unset, or where it came from (`""`: nothing to say).
    Secret(Option<String>),
    /// Shown as other, derived fields (or with another key: none).
    Fields(Vec<(&'static str, Value)>),
}

/// The effective value of `key` (a name of [`keys::KEYS`]).
fn shown(cfg: &Config, key: &str, password_origin: &str) -> Shown {
    use Shown::{Fields, Secret};
    fn v(value: impl Into<Value>) -> Shown {
        Shown::Value(value.into())
    }
    let path = |p: &Path| v(p.display().to_string());
    let origin = |from_env: bool, var: &str| {
        if from_env {
            format!("from {var}")
        } else {
            "config.json".to_string()
        }
    };
    let qb = &cfg.quickbooks;
    let api = &cfg.local_api;
    match key {
        "base_url" => v(cfg.base_url.as_str()),
        "email" => v(cfg.email.clone()),
        "password" => Secret(Some(password_origin.to_string())),
        "vendor_id" => v(cfg.vendor_id),
        "token" => Secret(
            cfg.legacy_token
                .as_ref()
                .map(|t| format!("legacy, expires {}", t.expires_at.to_rfc3339())),
        ),
        "token_expiry" => Fields(vec![]),
        "sync_interval" => v(cfg.sync_interval.as_secs_f64()),
        "auto_submit_jofotara" => v(cfg.auto_submit_jofotara),
        "invoice_folder" => path(&cfg.invoice_folder),
        "log_level" => v(cfg.log_level.as_str()),
        "token_lifetime_hours" => v(cfg.token_lifetime.as_secs_f64() / 3600.0),
        "refresh_before_minutes" => v(cfg.refresh_before.as_secs_f64() / 60.0),
        "request_timeout_secs" => v(cfg.request_timeout.as_secs_f64()),
        "data_dir" => path(&cfg.data_dir),
        "log_dir" => path(&cfg.log_dir),
        "log_keep_files" => v(cfg.log_keep_files),
        "pdf_dir" => path(&cfg.pdf_dir),
        "allow_insecure_http" => v(cfg.allow_insecure_http),
        "intake.mapping" => v(cfg.intake.mapping.clone()),
        "intake.default_customer" => v(cfg.intake.default_customer.clone()),
        "intake.settle_seconds" => v(cfg.intake.settle.as_secs_f64()),
        "intake.encoding" => v(cfg.intake.encoding.name().to_lowercase()),
        "local_api.enabled" => v(api.enabled),
        "local_api.bind" => v(api.bind.to_string()),
        "local_api.api_key" => Secret(api.api_key.as_ref().map(|_| String::new())),
        "local_api.allow_remote" => v(api.allow_remote),
        "local_api.max_connections" => v(api.max_connections),
        "local_api.header_timeout_seconds" => v(api.header_timeout.as_secs_f64()),
        "local_api.allowed_hosts" => v(api.allowed_hosts.clone()),
        "api_key" => Secret(
            cfg.connector
                .api_key
                .as_ref()
                .map(|_| origin(cfg.connector.api_key_from_env, ENV_CONNECTOR_API_KEY)),
        ),
        "heartbeat_minutes" => v(cfg.connector.heartbeat_interval.as_secs_f64() / 60.0),
        "pos_systems" => v(cfg.connector.pos_systems.clone()),
        "pipeline.concurrency" => v(cfg.pipeline.concurrency),
        "pipeline.lookup_path" => v(cfg.pipeline.lookup_path.clone()),
        "pipeline.scan_limit" => v(cfg.pipeline.scan_limit),
        "pipeline.max_backoff_seconds" => v(cfg.pipeline.max_backoff.as_secs_f64()),
        "pipeline.shutdown_grace_seconds" => v(cfg.pipeline.shutdown_grace.as_secs_f64()),
        "pipeline.submit_settle_seconds" => v(cfg.pipeline.submit_settle.as_secs_f64()),
        "pipeline.max_submit_errors" => v(cfg.pipeline.max_submit_errors),
        "receipts.enabled" => v(cfg.receipts.enabled),
        "receipts.dir" => path(&cfg.receipts.dir),
        "receipts.shop_name" => v(cfg.receipts.shop_name.clone()),
        "receipts.paper" => v(cfg.receipts.paper.name()),
        "quickbooks.enabled" => v(qb.enabled),
        "quickbooks.environment" => v(qb.environment.clone()),
        // The OAuth addresses in force, Intuit's or the simulator's.
        "quickbooks.auth_base" => Fields(vec![
            ("quickbooks.authorize_url", qb.authorize_url.as_str().into()),
            ("quickbooks.token_url", qb.token_url.as_str().into()),
            ("quickbooks.revoke_url", qb.revoke_url.as_str().into()),
        ]),
        "quickbooks.api_base" => v(qb.api_base.as_str()),
        "quickbooks.client_id" => v(qb.client_id.clone()),
        "quickbooks.client_secret" => Secret(
            qb.client_secret
                .as_ref()
                .map(|_| origin(qb.client_secret_from_env, ENV_QB_CLIENT_SECRET)),
        ),
        "quickbooks.redirect_uri" => v(qb.redirect_uri.as_str()),
        "quickbooks.realm_id" => v(qb.realm_id.clone()),
        "quickbooks.push_after" => v(qb.push_after.as_str()),
        "quickbooks.income_account_id" => v(qb.income_account_id.clone()),
        "quickbooks.item_id" => v(qb.item_id.clone()),
        "quickbooks.tax_code" => v(qb.tax_code.clone()),
        "quickbooks.global_tax_calculation" => v(qb.global_tax_calculation.clone()),
        "quickbooks.batch_threshold" => v(qb.batch_threshold),
        "quickbooks.cache_refresh_minutes" => v(qb.cache_refresh.as_secs_f64() / 60.0),
        other => panic!("config key {other} has no view in config::redacted_view"),
    }
}
