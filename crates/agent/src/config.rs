//! config.json + environment -> a validated [`Config`].
//!
//! The file is read first with serde_json (so a typo is reported with the
//! file, line and column, and a UTF-8 BOM from Notepad does not matter),
//! then layered with `POS_CONNECTOR__<KEY>` environment overrides through the
//! `config` crate, then every key is checked by hand so that each problem
//! names the key and the fix. Keys of the original Python connector keep
//! their names and meaning; unknown keys are kept and ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use reqwest::Url;
use secrecy::SecretString;
use serde_json::{Map, Value};

pub mod paths;

/// Prefix of the environment overrides: `POS_CONNECTOR__BASE_URL`, ...
pub const ENV_PREFIX: &str = "POS_CONNECTOR";
pub const ENV_CONFIG_PATH: &str = "POS_CONNECTOR_CONFIG";

/// The validated configuration. Secrets it carries (the legacy plain-text
/// password and token) are wrapped so that `Debug` never shows them.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from.
    pub path: PathBuf,
    pub base_url: Url,
    pub email: String,
    /// `password` from config.json (plain text, discouraged; see
    /// `secret::resolve_password` for the precedence).
    pub password: Option<SecretString>,
    pub vendor_id: Option<u64>,
    /// Legacy token written by the old connector, used as the starting
    /// token so an upgrade does not force a login.
    pub legacy_token: Option<LegacyToken>,
    pub sync_interval: Duration,
    pub auto_submit_jofotara: bool,
    pub invoice_folder: PathBuf,
    pub log_level: LogLevel,
    pub token_lifetime: Duration,
    pub refresh_before: Duration,
    pub request_timeout: Duration,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub log_keep_files: usize,
    pub pdf_dir: PathBuf,
    pub allow_insecure_http: bool,
    /// `intake.*`: how POS exports are read.
    pub intake: IntakeSettings,
    /// `local_api.*`: the loopback HTTP server (`POST /v1/sales`, ...).
    pub local_api: LocalApiSettings,
    /// `pipeline.*`: the worker that sends the outbox to the backend.
    pub pipeline: PipelineConfig,
    /// `receipts.*`: provisional receipts printed locally.
    pub receipts: ReceiptSettings,
    /// `quickbooks.*`: pushing invoices on to QuickBooks Online.
    pub quickbooks: QuickbooksConfig,
    /// `api_key`, `heartbeat_minutes`, `pos_systems`: the backend's
    /// connector channel (the fleet heartbeat).
    pub connector: ConnectorSettings,
    /// Keys this version does not know, kept as they were.
    pub extra: Map<String, Value>,
    /// Things worth a warning that do not stop the agent.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// `intake.mapping`: canonical field -> the till's column or JSON path.
    pub mapping: crate::intake::sale::Mapping,
    /// `intake.default_customer`: the customer of a sale that names none.
    pub default_customer: String,
    /// `intake.settle_seconds`: a file's size and time must stay the same
    /// this long before it is taken (it may still be being written).
    pub settle: Duration,
    /// `intake.encoding`: the code page of exports without a byte order
    /// mark (a WHATWG label, e.g. `windows-1256`; default UTF-8).
    pub encoding: &'static encoding_rs::Encoding,
}

/// The backend's connector channel (contracts/laravel-api.md, "The
/// connector channel"): a per-shop key, not the vendor login.
#[derive(Debug, Clone)]
pub struct ConnectorSettings {
    /// `api_key` (`POS_CONNECTOR_API_KEY` wins): sent as `X-API-Key`.
    /// Unset: no heartbeat.
    pub api_key: Option<SecretString>,
    pub api_key_from_env: bool,
    /// `heartbeat_minutes` (default 5).
    pub heartbeat_interval: Duration,
    /// `pos_systems`: the tills' POS software, reported in the heartbeat.
    pub pos_systems: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LocalApiSettings {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
    /// `local_api.api_key`: callers send `Authorization: Bearer <key>`.
    pub api_key: Option<SecretString>,
    /// `local_api.allow_remote`: permit a non-loopback `bind`.
    pub allow_remote: bool,
    /// `local_api.max_connections` (default 64): connections served at
    /// once; more wait in the system's queue, costing no file handle.
    pub max_connections: usize,
    /// `local_api.header_timeout_seconds` (default 10): a connection that
    /// has not sent a whole request head by then (also between requests of
    /// a kept-alive one) is closed.
    pub header_timeout: Duration,
    /// `local_api.allowed_hosts`: more names this machine answers to in
    /// the `Host` header (lower case), besides its loopback names, its own
    /// address and the QuickBooks redirect URI's host.
    pub allowed_hosts: Vec<String>,
    /// How wrong keys are slowed down (not a file key: tests shorten it).
    pub wrong_key_delay: WrongKeyDelay,
}

/// The wait before answering a wrong local API key: `first` for the first
/// one in a minute, doubling with each further one, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongKeyDelay {
    pub first: Duration,
    pub max: Duration,
}

impl Default for WrongKeyDelay {
    fn default() -> Self {
        WrongKeyDelay {
            first: Duration::from_millis(250),
            max: Duration::from_secs(4),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub concurrency: usize,
    pub lookup_path: Option<String>,
    pub scan_limit: u32,
    pub max_backoff: Duration,
    pub shutdown_grace: Duration,
    /// `pipeline.submit_settle_seconds`: after a submit whose answer was
    /// lost, how long from its start the backend may still be working on
    /// it; its status is read (and it may be sent again) only after that.
    pub submit_settle: Duration,
    /// `pipeline.max_submit_errors`: submits answering `error` (or 5xx) in
    /// a row before the job is parked for a person.
    pub max_submit_errors: u32,
}

#[derive(Debug, Clone)]
pub struct ReceiptSettings {
    pub enabled: bool,
    pub dir: PathBuf,
    pub shop_name: Option<String>,
    /// `receipts.paper`: A4, or the width of the till's paper roll.
    pub paper: crate::receipt::Paper,
}

/// `quickbooks.*`. The OAuth endpoints come from `environment`, or from
/// `auth_base`/`api_base` (a simulator, a test double), which win.
#[derive(Debug, Clone)]
pub struct QuickbooksConfig {
    pub enabled: bool,
    /// `sandbox`, `production`, or `custom` when `auth_base`/`api_base` are set.
    pub environment: String,
    pub authorize_url: Url,
    pub token_url: Url,
    pub revoke_url: Url,
    /// The accounting API's base, ending in `/v3/`.
    pub api_base: Url,
    pub client_id: Option<String>,
    /// `POS_CONNECTOR_QB_CLIENT_SECRET` wins over the file.
    pub client_secret: Option<SecretString>,
    pub client_secret_from_env: bool,
    pub redirect_uri: Url,
    /// The company expected; the one `qbo connect` brings back is used, and
    /// a mismatch with this is refused.
    pub realm_id: Option<String>,
    pub push_after: PushAfter,
    /// `IncomeAccountRef` of the Service items created for new products.
    pub income_account_id: Option<String>,
    /// One generic item for every line (then no items are looked up).
    pub item_id: Option<String>,
    /// `TaxCodeRef` of every line: `TAX`/`NON` in the US, a TaxCode Id
    /// elsewhere. Unset: no tax code is sent (tax is never invented).
    pub tax_code: Option<String>,
    /// `GlobalTaxCalculation` (non-US companies): TaxExcluded, TaxInclusive
    /// or NotApplicable.
    pub global_tax_calculation: Option<String>,
    /// More waiting invoices than this go out in batch requests.
    pub batch_threshold: usize,
    /// `quickbooks.cache_refresh_minutes` (default 60): how often the
    /// local copy of customers, vendors, items and invoices catches up.
    pub cache_refresh: Duration,
    /// QuickBooks' request limits as the agent keeps them (not a file key:
    /// tests and benches scale the windows).
    pub limits: crate::quickbooks::limiter::RateLimits,
}

/// After which stage of the Laravel invoice it is pushed to QuickBooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAfter {
    Created,
    Submitted,
}

impl PushAfter {
    pub fn as_str(self) -> &'static str {
        match self {
            PushAfter::Created => "created",
            PushAfter::Submitted => "submitted",
        }
    }
}

/// The environment variable whose client secret wins over config.json.
pub const ENV_QB_CLIENT_SECRET: &str = "POS_CONNECTOR_QB_CLIENT_SECRET";
/// The environment variable that wins over `api_key`.
pub const ENV_CONNECTOR_API_KEY: &str = "POS_CONNECTOR_API_KEY";
/// The default `quickbooks.redirect_uri`: the local API's port, so the
/// status page can take the callback too.
pub const DEFAULT_QB_REDIRECT_URI: &str = "http://localhost:8765/callback";

/// The default `local_api.bind`.
pub const DEFAULT_LOCAL_API_BIND: &str = "127.0.0.1:8765";
/// The default `local_api.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// The default `local_api.header_timeout_seconds`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CUSTOMER: &str = "Walk-in customer";
/// Above PHP's 30 s execution limit and nginx's 60 s read timeout: after
/// that, a submit whose client left is certainly over at the backend.
pub const DEFAULT_SUBMIT_SETTLE_SECS: f64 = 90.0;

#[derive(Debug, Clone)]
pub struct LegacyToken {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// Accepts Rust and Python spellings (`WARNING`, `CRITICAL`), any case.
    pub fn parse(s: &str) -> Option<LogLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Some(LogLevel::Trace),
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "error" | "critical" | "fatal" => Some(LogLevel::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    pub key: String,
    pub problem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config file found (looked for {}); pass --config PATH, set {ENV_CONFIG_PATH}, or copy config/config.example.json to config/config.json", list_paths(.tried))]
    NotFound { tried: Vec<PathBuf> },
    #[error("cannot read config file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {} is not valid JSON: {message} at line {line}, column {column}; fix the file (a missing comma or quote is the usual cause)", .path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config file {} must hold a JSON object ({{ \"base_url\": ..., \"email\": ... }}), found {found}", .path.display())]
    NotAnObject { path: PathBuf, found: &'static str },
    #[error("environment overrides ({ENV_PREFIX}__*) could not be read: {0}")]
    Environment(String),
    #[error("config file {} has {} problem(s):\n{}", .path.display(), .problems.len(), list_problems(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<KeyProblem>,
    },
    #[error("cannot update config file {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_problems(problems: &[KeyProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {}: {}", p.key, p.problem))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Finds the config file: the explicit path (from `--config` or
/// `POS_CONNECTOR_CONFIG`, which clap merges), else the defaults in order.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        return Err(ConfigError::NotFound {
            tried: vec![path.to_path_buf()],
        });
    }
    // The working directory's config/ and config.json, then the system's
    // place (platform::default_config_paths).
    let tried = crate::platform::default_config_paths();
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(ConfigError::NotFound { tried })
}

/// Loads, layers and validates. `env` is the process environment as pairs
/// (passed in so tests do not depend on, or change, the real one).
pub fn load_from(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let file = read_json_object(path)?;
    let mut merged = layer_environment(&file, env)?;
    // The QuickBooks client secret from the environment wins (kept out of
    // config files and backups); a flat key is read before the section.
    let qb_secret = env
        .iter()
        .find(|(k, v)| k == ENV_QB_CLIENT_SECRET && !v.trim().is_empty());
    if let Some((_, secret)) = qb_secret {
        merged.insert(
            "quickbooks.client_secret".into(),
            Value::from(secret.clone()),
        );
    }
    let api_key = env
        .iter()
        .find(|(k, v)| k == ENV_CONNECTOR_API_KEY && !v.trim().is_empty());
    if let Some((_, key)) = api_key {
        merged.insert("api_key".into(), Value::from(key.clone()));
    }
    let mut cfg = validate(path, merged)?;
    cfg.quickbooks.client_secret_from_env = qb_secret.is_some();
    cfg.connector.api_key_from_env = api_key.is_some();
    Ok(cfg)
}

/// Loads with the real process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(path, &env)
}

/// Reads the file as a JSON object, with precise errors.
pub fn read_json_object(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: json_message(&e),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ConfigError::NotAnObject {
            path: path.to_path_buf(),
            found: json_type(&other),
        }),
    }
}

/// serde_json's message without its own " at line X column Y" suffix (we
/// print line and column ourselves).
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Applies `POS_CONNECTOR__KEY[__SUBKEY]` overrides on top of the file.
/// The `config` crate does the layering; `POS_CONNECTOR_PASSWORD` and
/// `POS_CONNECTOR_CONFIG` (single underscore) are not overrides and are not
/// picked up here.
fn layer_environment(
    file: &Map<String, Value>,
    env: &[(String, String)],
) -> Result<Map<String, Value>, ConfigError> {
    let overrides: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .cloned()
        .collect();
    if overrides.is_empty() {
        return Ok(file.clone());
    }
    let file_text = serde_json::to_string(file).expect("a JSON map serialises");
    let layered = config::Config::builder()
        .add_source(config::File::from_str(&file_text, config::FileFormat::Json))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::Environment(e.to_string()))?;
    let value: Value = layered
        .try_deserialize()
        .map_err(|e| ConfigError::Environment(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ConfigError::Environment(
            "the layered configuration is not an object".into(),
        )),
    }
}

/// Keys this version reads; anything else lands in `Config::extra`.
const KNOWN_KEYS: &[&str] = &[
    "base_url",
    "email",
    "password",
    "vendor_id",
    "token",
    "token_expiry",
    "sync_interval",
    "auto_submit_jofotara",
    "invoice_folder",
    "log_level",
    "token_lifetime_hours",
    "refresh_before_minutes",
    "request_timeout_secs",
    "data_dir",
    "log_dir",
    "log_keep_files",
    "pdf_dir",
    "allow_insecure_http",
    "intake",
    "local_api",
    "pipeline",
    "receipts",
    "quickbooks",
    "api_key",
    "heartbeat_minutes",
    "pos_systems",
];

/// The keys inside each section (also accepted flat: `"local_api.bind"`).
const SECTION_KEYS: &[(&str, &[&str])] = &[
    (
        "intake",
        &["mapping", "default_customer", "settle_seconds", "encoding"],
    ),
    (
        "local_api",
        &[
            "enabled",
            "bind",
            "api_key",
            "allow_remote",
            "max_connections",
            "header_timeout_seconds",
            "allowed_hosts",
        ],
    ),
    (
        "pipeline",
        &[
            "concurrency",
            "lookup_path",
            "scan_limit",
            "max_backoff_seconds",
            "shutdown_grace_seconds",
            "submit_settle_seconds",
            "max_submit_errors",
        ],
    ),
    ("receipts", &["enabled", "dir", "shop_name", "paper"]),
    (
        "quickbooks",
        &[
            "enabled",
            "environment",
            "auth_base",
            "api_base",
            "client_id",
            "client_secret",
            "redirect_uri",
            "realm_id",
            "push_after",
            "income_account_id",
            "item_id",
            "tax_code",
            "global_tax_calculation",
            "batch_threshold",
            "cache_refresh_minutes",
        ],
    ),
];

fn is_known_key(k: &str) -> bool {
    if KNOWN_KEYS.contains(&k) {
        return true;
    }
    match k.split_once('.') {
        Some((section, key)) => SECTION_KEYS
            .iter()
            .any(|(s, keys)| *s == section && keys.contains(&key)),
        None => false,
    }
}

/// Reads typed values out of the merged JSON map, collecting every problem
/// instead of stopping at the first, so a shop owner fixes the file once.
struct Reader<'a> {
    map: &'a Map<String, Value>,
    problems: Vec<KeyProblem>,
}

impl<'a> Reader<'a> {
    fn problem(&mut self, key: &str, problem: impl Into<String>) {
        self.problems.push(KeyProblem {
            key: key.to_string(),
            problem: problem.into(),
        });
    }

    /// A key's value; `section.key` is looked up flat first, then inside
    /// the `section` object.
    fn present(&self, key: &str) -> Option<&'a Value> {
        let found = self.map.get(key).or_else(|| {
            let (section, inner) = key.split_once('.')?;
            self.map.get(section)?.as_object()?.get(inner)
        });
        match found {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.present(key)? {
            Value::String(s) => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                let found = json_type(other);
                self.problem(key, format!("must be a string, found {found}"));
                None
            }
        }
    }

    fn number(&mut self, key: &str, min: f64, max: f64, unit: &str) -> Option<f64> {
        let v = self.present(key)?;
        let parsed = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if n.is_finite() && n >= min && n <= max => Some(n),
            Some(n) => {
                self.problem(
                    key,
                    format!("{n} is out of range: use a value from {min} to {max} {unit}"),
                );
                None
            }
            None => {
                self.problem(key, format!("must be a number of {unit}, found {v}"));
                None
            }
        }
    }

    /// A list of strings: a JSON array, or one string with commas.
    fn string_list(&mut self, key: &str) -> Option<Vec<String>> {
        let v = self.present(key)?;
        let items: Option<Vec<String>> = match v {
            Value::String(s) => Some(s.split(',').map(|p| p.trim().to_string()).collect()),
            Value::Array(a) => a
                .iter()
                .map(|i| i.as_str().map(|s| s.trim().to_string()))
                .collect(),
            _ => None,
        };
        match items {
            Some(items) => Some(items.into_iter().filter(|s| !s.is_empty()).collect()),
            None => {
                self.problem(
                    key,
                    format!("must be a list of names like [\"square\", \"shopify\"], found {v}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        let v = self.present(key)?;
        match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Some(true),
                "false" | "no" | "0" | "off" => Some(false),
                _ => {
                    self.problem(key, format!("must be true or false, found \"{s}\""));
                    None
                }
            },
            Value::Number(n) if n.as_u64() == Some(0) => Some(false),
            Value::Number(n) if n.as_u64() == Some(1) => Some(true),
            other => {
                self.problem(key, format!("must be true or false, found {other}"));
                None
            }
        }
    }
}

fn validate(path: &Path, map: Map<String, Value>) -> Result<Config, ConfigError> {
    let mut r = Reader {
        map: &map,
        problems: Vec::new(),
    };
    let mut warnings = Vec::new();

    let allow_insecure_http = r.boolean("allow_insecure_http").unwrap_or(false);
    let base_url_text = r
        .string("base_url")
        .unwrap_or_else(|| "http://127.0.0.1:8000".to_string());
    let base_url = match parse_base_url(&base_url_text, allow_insecure_http) {
        Ok(url) => Some(url),
        Err(problem) => {
            r.problem("base_url", problem);
            None
        }
    };

    let email = match r.string("email") {
        Some(e) if looks_like_email(&e) => Some(e),
        Some(e) => {
            r.problem(
                "email",
                format!("\"{e}\" is not an email address: use the vendor account's login email"),
            );
            None
        }
        None => {
            r.problem(
                "email",
                "is missing: set it to the vendor account's login email",
            );
            None
        }
    };

    let password = r.string("password").map(SecretString::from);
    if password.is_some() {
        warnings.push(
            "config.json holds the password in plain text; run `pos-connector --setup-password` \
             to store it encrypted, then remove \"password\" from config.json"
                .to_string(),
        );
    }

    let vendor_id = r
        .number("vendor_id", 0.0, u64::MAX as f64, "(a vendor id)")
        .map(|n| n as u64);

    let legacy_token = match (r.string("token"), r.string("token_expiry")) {
        (Some(token), Some(expiry)) => match parse_legacy_expiry(&expiry) {
            Some(expires_at) => Some(LegacyToken {
                token: SecretString::from(token),
                expires_at,
            }),
            None => {
                warnings.push(format!(
                    "token_expiry \"{expiry}\" is not an ISO-8601 date-time; the stored legacy \
                     token is ignored and the agent will log in afresh"
                ));
                None
            }
        },
        (Some(_), None) => {
            warnings.push(
                "config.json has a token but no token_expiry; the legacy token is ignored and \
                 the agent will log in afresh"
                    .to_string(),
            );
            None
        }
        _ => None,
    };

    let sync_interval = r
        .number("sync_interval", 1.0, 86_400.0, "seconds")
        .unwrap_or(60.0);
    let auto_submit_jofotara = r.boolean("auto_submit_jofotara").unwrap_or(true);
    let invoice_folder = r
        .string("invoice_folder")
        .unwrap_or_else(|| "invoices".into());

    let log_level = match r.string("log_level") {
        None => LogLevel::Info,
        Some(s) => LogLevel::parse(&s).unwrap_or_else(|| {
            r.problem(
                "log_level",
                format!("\"{s}\" is not a level: use error, warn, info, debug or trace"),
            );
            LogLevel::Info
        }),
    };

    let token_lifetime_hours = r
        .number("token_lifetime_hours", 0.1, 24.0 * 366.0, "hours")
        .unwrap_or(24.0);
    let refresh_before_minutes = r
        .number("refresh_before_minutes", 0.0, 24.0 * 60.0, "minutes")
        .unwrap_or(30.0);
    if refresh_before_minutes >= token_lifetime_hours * 60.0 {
        r.problem(
            "refresh_before_minutes",
            format!(
                "{refresh_before_minutes} minutes is not shorter than the token lifetime \
                 ({token_lifetime_hours} hours): the agent would log in on every call; lower it"
            ),
        );
    }
    let request_timeout_secs = r
        .number("request_timeout_secs", 1.0, 3600.0, "seconds")
        .unwrap_or(30.0);

    // Relative paths are beside the config file, never the working
    // directory (a Windows service starts in System32): see config::paths.
    let base = paths::base_folder(path);
    let folder = |text: String| paths::resolve(&base, Path::new(&text));
    let data_dir = folder(r.string("data_dir").unwrap_or_else(|| "data".into()));
    let log_dir = folder(r.string("log_dir").unwrap_or_else(|| "logs".into()));
    let log_keep_files = r
        .number("log_keep_files", 1.0, 3650.0, "files")
        .unwrap_or(14.0) as usize;
    let pdf_dir = r
        .string("pdf_dir")
        .map(folder)
        .unwrap_or_else(|| data_dir.join("pdfs"));

    for (section, keys) in SECTION_KEYS {
        match map.get(*section) {
            None | Some(Value::Null) => {}
            Some(Value::Object(inner)) => {
                for k in inner.keys() {
                    if !keys.contains(&k.as_str()) {
                        warnings.push(format!(
                            "{section}.{k} is not a setting this version knows (ignored); known: {}",
                            keys.join(", ")
                        ));
                    }
                }
            }
            Some(other) => r.problem(
                section,
                format!(
                    "must be an object of settings ({}), found {}",
                    keys.join(", "),
                    json_type(other)
                ),
            ),
        }
    }

    let mapping = match r.present("intake.mapping") {
        None => crate::intake::sale::Mapping::default(),
        Some(v) => crate::intake::sale::Mapping::from_json(v).unwrap_or_else(|problem| {
            r.problem("intake.mapping", problem);
            crate::intake::sale::Mapping::default()
        }),
    };
    let intake = IntakeSettings {
        mapping,
        default_customer: r
            .string("intake.default_customer")
            .unwrap_or_else(|| DEFAULT_CUSTOMER.into()),
        settle: Duration::from_secs_f64(
            r.number("intake.settle_seconds", 0.0, 3600.0, "seconds")
                .unwrap_or(2.0),
        ),
        encoding: match r.string("intake.encoding") {
            None => encoding_rs::UTF_8,
            Some(label) => match encoding_rs::Encoding::for_label(label.as_bytes()) {
                Some(e) if e != encoding_rs::REPLACEMENT => e,
                _ => {
                    r.problem(
                        "intake.encoding",
                        format!(
                            "\"{label}\" is not a text encoding this agent knows; set it to the \
                             code page the tills export in, as a WHATWG label: \"windows-1256\" \
                             (Arabic Windows, what Excel saves CSV in), \"iso-8859-6\", \
                             \"utf-16le\", or \"utf-8\" (the default when left out)"
                        ),
                    );
                    encoding_rs::UTF_8
                }
            },
        },
    };

    let allow_remote = r.boolean("local_api.allow_remote").unwrap_or(false);
    let bind_text = r
        .string("local_api.bind")
        .unwrap_or_else(|| DEFAULT_LOCAL_API_BIND.into());
    let bind = match bind_text.parse::<std::net::SocketAddr>() {
        Ok(addr) if !addr.ip().is_loopback() && !allow_remote => {
            r.problem(
                "local_api.bind",
                format!(
                    "{addr} is not a loopback address: the local API would be reachable from \
                     the network; use 127.0.0.1:PORT, or set local_api.allow_remote to true if \
                     that is really wanted (the API key is then the only protection)"
                ),
            );
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            r.problem(
                "local_api.bind",
                format!(
                    "\"{bind_text}\" is not an address:port, e.g. \"{DEFAULT_LOCAL_API_BIND}\""
                ),
            );
            None
        }
    };
    let api_key = r.string("local_api.api_key");
    if let Some(problem) = api_key.as_deref().and_then(local_api_key_problem) {
        r.problem("local_api.api_key", problem);
    }
    let allowed_hosts: Vec<String> = r
        .string_list("local_api.allowed_hosts")
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for host in &allowed_hosts {
        if !is_host_name(host) {
            r.problem(
                "local_api.allowed_hosts",
                format!(
                    "\"{host}\" is not a host name: list names only (like \"till-3.shop.lan\"), \
                     without a scheme, port or path"
                ),
            );
        }
    }
    let local_api = LocalApiSettings {
        enabled: r.boolean("local_api.enabled").unwrap_or(true),
        bind: bind.unwrap_or_else(|| DEFAULT_LOCAL_API_BIND.parse().expect("valid default")),
        api_key: api_key.map(SecretString::from),
        allow_remote,
        max_connections: r
            .number("local_api.max_connections", 1.0, 4096.0, "connections")
            .unwrap_or(DEFAULT_MAX_CONNECTIONS as f64) as usize,
        header_timeout: Duration::from_secs_f64(
            r.number("local_api.header_timeout_seconds", 1.0, 300.0, "seconds")
                .unwrap_or(DEFAULT_HEADER_TIMEOUT.as_secs_f64()),
        ),
        allowed_hosts,
        wrong_key_delay: WrongKeyDelay::default(),
    };
    if local_api.enabled && local_api.api_key.is_none() {
        warnings.push(
            "local_api.api_key is not set: the local API and the status page (POST /v1/sales, \
             http://<local_api.bind>/) are not started; set a long random key to use them"
                .to_string(),
        );
    }

    let lookup_path = r.string("pipeline.lookup_path");
    if let Some(p) = &lookup_path {
        if !p.starts_with('/') || !p.contains("{invoice_number}") {
            r.problem(
                "pipeline.lookup_path",
                format!(
                    "\"{p}\" must be a path starting with / that contains {{invoice_number}}, \
                     e.g. \"/api/invoices/by-number/{{invoice_number}}\""
                ),
            );
        }
    }
    let pipeline = PipelineConfig {
        concurrency: r
            .number("pipeline.concurrency", 1.0, 64.0, "jobs at once")
            .unwrap_or(4.0) as usize,
        lookup_path,
        scan_limit: r
            .number("pipeline.scan_limit", 1.0, 100_000.0, "reads")
            .unwrap_or(500.0) as u32,
        max_backoff: Duration::from_secs_f64(
            r.number("pipeline.max_backoff_seconds", 1.0, 86_400.0, "seconds")
                .unwrap_or(900.0),
        ),
        shutdown_grace: Duration::from_secs_f64(
            r.number("pipeline.shutdown_grace_seconds", 0.0, 600.0, "seconds")
                .unwrap_or(10.0),
        ),
        submit_settle: Duration::from_secs_f64(
            r.number("pipeline.submit_settle_seconds", 1.0, 3600.0, "seconds")
                .unwrap_or(DEFAULT_SUBMIT_SETTLE_SECS),
        ),
        max_submit_errors: r
            .number("pipeline.max_submit_errors", 1.0, 1000.0, "submits")
            .unwrap_or(5.0) as u32,
    };
    if pipeline.submit_settle < Duration::from_secs(60) {
        warnings.push(format!(
            "pipeline.submit_settle_seconds is {}: shorter than the backend can keep working on a \
             submit whose client has gone (PHP's 30 s limit, nginx's 60 s read timeout), so after \
             a lost answer an invoice may reach JoFotara twice; the default {} is safe",
            pipeline.submit_settle.as_secs_f64(),
            DEFAULT_SUBMIT_SETTLE_SECS
        ));
    }

    let receipts = ReceiptSettings {
        enabled: r.boolean("receipts.enabled").unwrap_or(true),
        dir: r
            .string("receipts.dir")
            .map(folder)
            .unwrap_or_else(|| folder("receipts".into())),
        shop_name: r.string("receipts.shop_name"),
        paper: match r.string("receipts.paper") {
            None => crate::receipt::Paper::default(),
            Some(s) => crate::receipt::Paper::parse(&s).unwrap_or_else(|| {
                r.problem(
                    "receipts.paper",
                    format!(
                        "\"{s}\" is not a paper: use \"80mm\" or \"58mm\" (the width of the \
                         till's paper roll) or \"a4\""
                    ),
                );
                crate::receipt::Paper::default()
            }),
        },
    };

    let quickbooks = quickbooks_settings(
        &mut r,
        &mut warnings,
        auto_submit_jofotara,
        allow_insecure_http,
    );

    let connector = ConnectorSettings {
        api_key: r.string("api_key").map(SecretString::from),
        api_key_from_env: false,
        heartbeat_interval: Duration::from_secs_f64(
            r.number("heartbeat_minutes", 1.0, 1440.0, "minutes")
                .unwrap_or(5.0)
                * 60.0,
        ),
        pos_systems: r.string_list("pos_systems").unwrap_or_default(),
    };

    // The inbox takes every file dropped into it: it must not be a folder
    // holding the agent's own files, or it would "reject" them.
    let inbox = folder(invoice_folder.clone());
    for (key, other) in [
        ("the config file's folder", &base),
        ("data_dir", &data_dir),
        ("log_dir", &log_dir),
        ("pdf_dir", &pdf_dir),
        ("receipts.dir", &receipts.dir),
    ] {
        if &inbox == other {
            r.problem(
                "invoice_folder",
                format!(
                    "\"{}\" is also {key}: the agent takes every file in the inbox, so it must \
                     be a folder of its own (e.g. \"invoices\")",
                    invoice_folder
                ),
            );
        }
    }

    let extra: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| !is_known_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    if !r.problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: r.problems,
        });
    }
    Ok(Config {
        path: path.to_path_buf(),
        base_url: base_url.expect("checked above"),
        email: email.expect("checked above"),
        password,
        vendor_id,
        legacy_token,
        sync_interval: Duration::from_secs_f64(sync_interval),
        auto_submit_jofotara,
        invoice_folder: inbox,
        log_level,
        token_lifetime: Duration::from_secs_f64(token_lifetime_hours * 3600.0),
        refresh_before: Duration::from_secs_f64(refresh_before_minutes * 60.0),
        request_timeout: Duration::from_secs_f64(request_timeout_secs),
        data_dir,
        log_dir,
        log_keep_files,
        pdf_dir,
        allow_insecure_http,
        intake,
        local_api,
        pipeline,
        receipts,
        quickbooks,
        connector,
        extra,
        warnings,
    })
}

/// Intuit's production and sandbox addresses (contracts/quickbooks-online.md).
const QB_PRODUCTION: [&str; 4] = [
    "https://appcenter.intuit.com/connect/oauth2",
    "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
    "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
    "https://quickbooks.api.intuit.com/v3/",
];
const QB_SANDBOX_API: &str = "https://sandbox-quickbooks.api.intuit.com/v3/";

fn quickbooks_settings(
    r: &mut Reader<'_>,
    warnings: &mut Vec<String>,
    auto_submit: bool,
    allow_insecure_http: bool,
) -> QuickbooksConfig {
    let enabled = r.boolean("quickbooks.enabled").unwrap_or(false);
    let url = |r: &mut Reader<'_>, key: &str, text: &str| -> Option<Url> {
        match parse_base_url(text, allow_insecure_http) {
            Ok(u) => Some(u),
            Err(problem) => {
                r.problem(key, problem);
                None
            }
        }
    };
    let fixed = |s: &str| Url::parse(s).expect("valid built-in URL");
    let environment = r
        .string("quickbooks.environment")
        .map(|e| e.to_ascii_lowercase());
    let auth_base = r.string("quickbooks.auth_base");
    let api_base = r.string("quickbooks.api_base");
    let mut env_name = environment.clone().unwrap_or_else(|| "production".into());
    match env_name.as_str() {
        "production" | "sandbox" | "custom" => {}
        other => {
            r.problem(
                "quickbooks.environment",
                format!("\"{other}\" is not an environment: use \"production\" or \"sandbox\" (or set quickbooks.auth_base and quickbooks.api_base)"),
            );
        }
    }
    let (mut authorize_url, mut token_url, mut revoke_url) = (
        fixed(QB_PRODUCTION[0]),
        fixed(QB_PRODUCTION[1]),
        fixed(QB_PRODUCTION[2]),
    );
    let mut api = fixed(if env_name == "sandbox" {
        QB_SANDBOX_API
    } else {
        QB_PRODUCTION[3]
    });
    if let Some(text) = &auth_base {
        // A simulator or test double serving Intuit's three OAuth paths.
        if let Some(base) = url(r, "quickbooks.auth_base", text) {
            authorize_url = base.join("connect/oauth2").expect("relative path");
            token_url = base.join("oauth2/v1/tokens/bearer").expect("relative path");
            revoke_url = base.join("v2/oauth2/tokens/revoke").expect("relative path");
        }
    }
    if let Some(text) = &api_base {
        if let Some(mut base) = url(r, "quickbooks.api_base", text) {
            // The contract's base ends in /v3; accept it with or without.
            if !base.path().trim_end_matches('/').ends_with("/v3") {
                let p = base.path().trim_end_matches('/').to_string();
                base.set_path(&format!("{p}/v3/"));
            }
            api = base;
        }
    }
    if auth_base.is_some() || api_base.is_some() {
        if environment.is_none() {
            env_name = "custom".into();
        }
        if auth_base.is_none() || api_base.is_none() {
            r.problem(
                "quickbooks.auth_base",
                "auth_base and api_base go together: set both (a simulator serves both), or neither to use Intuit's",
            );
        }
    }
    let client_id = r.string("quickbooks.client_id");
    let client_secret = r.string("quickbooks.client_secret").map(SecretString::from);
    let redirect_text = r
        .string("quickbooks.redirect_uri")
        .unwrap_or_else(|| DEFAULT_QB_REDIRECT_URI.into());
    let shown = without_userinfo(&redirect_text);
    let redirect_uri = match Url::parse(&redirect_text) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            match check_no_userinfo(&u, &shown) {
                Ok(()) => u,
                Err(problem) => {
                    r.problem("quickbooks.redirect_uri", problem);
                    Url::parse(DEFAULT_QB_REDIRECT_URI).expect("valid default")
                }
            }
        }
        _ => {
            r.problem(
                "quickbooks.redirect_uri",
                format!("\"{shown}\" is not an http(s) URL: use the redirect URI registered for the app at developer.intuit.com, e.g. \"{DEFAULT_QB_REDIRECT_URI}\""),
            );
            Url::parse(DEFAULT_QB_REDIRECT_URI).expect("valid default")
        }
    };
    let push_after = match r
        .string("quickbooks.push_after")
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => PushAfter::Submitted,
        Some(s) if s == "created" => PushAfter::Created,
        Some(s) if s == "submitted" => PushAfter::Submitted,
        Some(other) => {
            r.problem(
                "quickbooks.push_after",
                format!("\"{other}\" is not a stage: use \"created\" (as soon as the invoice exists) or \"submitted\" (after JoFotara accepted it)"),
            );
            PushAfter::Submitted
        }
    };
    let global_tax_calculation = r.string("quickbooks.global_tax_calculation");
    if let Some(g) = &global_tax_calculation {
        if !["TaxExcluded", "TaxInclusive", "NotApplicable"].contains(&g.as_str()) {
            r.problem(
                "quickbooks.global_tax_calculation",
                format!("\"{g}\" is not one of TaxExcluded, TaxInclusive, NotApplicable"),
            );
        }
    }
    let realm_id = r.string("quickbooks.realm_id");
    if let Some(realm) = &realm_id {
        if !realm.chars().all(|c| c.is_ascii_digit()) {
            r.problem(
                "quickbooks.realm_id",
                format!("\"{realm}\" is not a company id (realmId is digits only); leave it out and `pos-connector qbo connect` brings it back"),
            );
        }
    }
    let cfg = QuickbooksConfig {
        enabled,
        environment: env_name,
        authorize_url,
        token_url,
        revoke_url,
        api_base: api,
        client_id,
        client_secret,
        client_secret_from_env: false,
        redirect_uri,
        realm_id,
        push_after,
        income_account_id: r.string("quickbooks.income_account_id"),
        item_id: r.string("quickbooks.item_id"),
        tax_code: r.string("quickbooks.tax_code"),
        global_tax_calculation,
        batch_threshold: r
            .number("quickbooks.batch_threshold", 1.0, 1000.0, "invoices")
            .unwrap_or(3.0) as usize,
        cache_refresh: Duration::from_secs_f64(
            r.number("quickbooks.cache_refresh_minutes", 1.0, 10_080.0, "minutes")
                .unwrap_or(60.0)
                * 60.0,
        ),
        limits: crate::quickbooks::limiter::RateLimits::default(),
    };
    if enabled {
        if cfg.client_id.is_none() {
            r.problem(
                "quickbooks.client_id",
                "is missing: copy the app's Client ID from developer.intuit.com (Keys & credentials)",
            );
        }
        if cfg.client_secret.is_none() {
            r.problem(
                "quickbooks.client_secret",
                format!("is missing: set {ENV_QB_CLIENT_SECRET} (preferred) or quickbooks.client_secret to the app's Client Secret"),
            );
        }
        if cfg.income_account_id.is_none() && cfg.item_id.is_none() {
            warnings.push(
                "quickbooks: neither income_account_id nor item_id is set: products not yet in QuickBooks cannot be created, and their invoices will wait; set quickbooks.income_account_id (an Income account Id) or quickbooks.item_id (one generic item)".into(),
            );
        }
        if cfg.tax_code.is_none() {
            warnings.push(
                "quickbooks.tax_code is not set: invoices go to QuickBooks without a tax code, so QuickBooks adds no tax; set it (TAX in the US, your 16% TaxCode Id elsewhere)".into(),
            );
        }
        if cfg.push_after == PushAfter::Submitted && !auto_submit {
            warnings.push(
                "quickbooks.push_after is \"submitted\" but auto_submit_jofotara is off: nothing will be pushed; set push_after to \"created\" or turn auto_submit_jofotara on".into(),
            );
        }
    }
    cfg
}

/// Checks the backend address: http(s), a host, no query; plain http only
/// to this machine unless the operator opts in.
pub fn parse_base_url(text: &str, allow_insecure_http: bool) -> Result<Url, String> {
    // Messages quote the text without any credentials it carries.
    let shown = without_userinfo(text);
    let parsed = Url::parse(text.trim());
    let text = shown.as_str();
    let mut url = parsed.map_err(|e| {
        format!("\"{text}\" is not a URL ({e}); use e.g. https://invoices.example.com")
    })?;
    check_no_userinfo(&url, text)?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "\"{text}\" must start with https:// (or http:// for a backend on this machine)"
        ));
    }
    let Some(host) = url.host_str().map(str::to_string) else {
        return Err(format!("\"{text}\" has no host name"));
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "\"{text}\" must not carry a query or fragment: give only the address of the backend"
        ));
    }
    if url.scheme() == "http" && !is_loopback_host(&host) && !allow_insecure_http {
        return Err(format!(
            "\"{text}\" uses plain http:// to another machine, so the password and tokens would \
             cross the network unencrypted; use https://, or set \"allow_insecure_http\": true \
             if this network is trusted"
        ));
    }
    // Paths are joined below the base: keep exactly one trailing slash.
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{path}/"));
    Ok(url)
}

/// A URL must not carry a user name or password (`https://user:pw@host`):
/// reqwest would send them, and the URL is printed by `check-config`, the
/// status page and the logs. Credentials have keys of their own.
fn check_no_userinfo(url: &Url, shown: &str) -> Result<(), String> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    Err(format!(
        "\"{shown}\" carries a user name or password (the part before @): remove it; credentials \
         in a URL end up in logs and on screens. The backend is signed in with email and \
         `pos-connector --setup-password`, QuickBooks with quickbooks.client_id and \
         POS_CONNECTOR_QB_CLIENT_SECRET"
    ))
}

/// `text` with anything between `scheme://` and the host's `@` replaced
/// by `***`, for quoting a URL (even one that does not parse) in a message.
pub fn without_userinfo(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    let rest = &text[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &rest[at..]),
        None => text.to_string(),
    }
}

/// The shortest `local_api.api_key` accepted.
pub const MIN_LOCAL_API_KEY_CHARS: usize = 16;
/// The placeholder of config.example.json (published, so no key at all).
const EXAMPLE_LOCAL_API_KEY: &str = "change-me-to-a-long-random-key";

/// Why a local API key is not good enough, if it is not. Never repeats it.
fn local_api_key_problem(key: &str) -> Option<String> {
    const HOW: &str = "set a long random key, e.g. the output of `openssl rand -hex 24` (Linux) \
                       or `[guid]::NewGuid().ToString(\"N\")` (PowerShell)";
    let chars = key.chars().count();
    if chars < MIN_LOCAL_API_KEY_CHARS {
        return Some(format!(
            "is {chars} characters long; it must have at least {MIN_LOCAL_API_KEY_CHARS} so that \
             it cannot be guessed (it guards the sales intake and the status page): {HOW}"
        ));
    }
    (key == EXAMPLE_LOCAL_API_KEY).then(|| {
        format!("is the placeholder from config.example.json, which anyone can read: {HOW}")
    })
}

/// A DNS name or an IP address, nothing more (no port, path or scheme).
fn is_host_name(h: &str) -> bool {
    let h = h.trim_end_matches('.');
    !h.is_empty()
        && h.len() <= 253
        && (h.parse::<IpAddr>().is_ok()
            || h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !s.chars().any(char::is_whitespace)
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// The old connector wrote `datetime.now().isoformat()`: a naive local
/// time. An offset or `Z`, when present, is honoured.
pub fn parse_legacy_expiry(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Local
                .from_local_datetime(&naive)
                .earliest()
                .map(|dt| dt.with_timezone(&Utc));
        }
    }
    None
}

/// Rewrites config.json with `password` set (or removed), keeping every
/// other key and its order, atomically and with mode 0600. Only
/// `--setup-password` calls this.
pub fn write_password_to_file(path: &Path, password: Option<&str>) -> Result<(), ConfigError> {
    let mut map = read_json_object(path)?;
    match password {
        Some(p) => {
            map.insert("password".into(), Value::String(p.to_string()));
        }
        None => {
            map.remove("password");
        }
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(map)).expect("serialises");
    text.push('\n');
    crate::fsutil::write_private(path, text.as_bytes()).map_err(|source| ConfigError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The effective configuration as JSON with every secret replaced by
/// `[REDACTED]` (for `check-config` and the status page).
pub fn redacted_view(cfg: &Config, password_origin: &str) -> Value {
    let mut m = Map::new();
    m.insert(
        "config_file".into(),
        paths::absolute(&cfg.path).display().to_string().into(),
    );
    m.insert("base_url".into(), cfg.base_url.as_str().into());
    m.insert("email".into(), cfg.email.clone().into());
    m.insert(
        "password".into(),
        format!("[REDACTED] ({password_origin})").into(),
    );
    m.insert(
        "vendor_id".into(),
        cfg.vendor_id.map(Value::from).unwrap_or(Value::Null),
    );
    m.insert(
        "token".into(),
        match &cfg.legacy_token {
            Some(t) => format!("[REDACTED] (legacy, expires {})", t.expires_at.to_rfc3339()).into(),
            None => Value::Null,
        },
    );
    m.insert(
        "sync_interval".into(),
        cfg.sync_interval.as_secs_f64().into(),
    );
    m.insert(
        "auto_submit_jofotara".into(),
        cfg.auto_submit_jofotara.into(),
    );
    m.insert(
        "invoice_folder".into(),
        cfg.invoice_folder.display().to_string().into(),
    );
    m.insert("log_level".into(), cfg.log_level.as_str().into());
    m.insert(
        "token_lifetime_hours".into(),
        (cfg.token_lifetime.as_secs_f64() / 3600.0).into(),
    );
    m.insert(
        "refresh_before_minutes".into(),
        (cfg.refresh_before.as_secs_f64() / 60.0).into(),
    );
    m.insert(
        "request_timeout_secs".into(),
        cfg.request_timeout.as_secs_f64().into(),
    );
    m.insert("data_dir".into(), cfg.data_dir.display().to_string().into());
    m.insert("log_dir".into(), cfg.log_dir.display().to_string().into());
    m.insert("log_keep_files".into(), cfg.log_keep_files.into());
    m.insert("pdf_dir".into(), cfg.pdf_dir.display().to_string().into());
    m.insert("allow_insecure_http".into(), cfg.allow_insecure_http.into());
    m.insert(
        "intake".into(),
        serde_json::json!({
            "mapping": cfg.intake.mapping.to_json(),
            "default_customer": cfg.intake.default_customer,
            "settle_seconds": cfg.intake.settle.as_secs_f64(),
            "encoding": cfg.intake.encoding.name(),
        }),
    );
    m.insert(
        "local_api".into(),
        serde_json::json!({
            "enabled": cfg.local_api.enabled,
            "bind": cfg.local_api.bind.to_string(),
            "api_key": cfg.local_api.api_key.as_ref().map(|_| "[REDACTED]"),
            "allow_remote": cfg.local_api.allow_remote,
            "max_connections": cfg.local_api.max_connections,
            "header_timeout_seconds": cfg.local_api.header_timeout.as_secs_f64(),
            "allowed_hosts": cfg.local_api.allowed_hosts,
        }),
    );
    m.insert(
        "pipeline".into(),
        serde_json::json!({
            "concurrency": cfg.pipeline.concurrency,
            "lookup_path": cfg.pipeline.lookup_path,
            "scan_limit": cfg.pipeline.scan_limit,
            "max_backoff_seconds": cfg.pipeline.max_backoff.as_secs_f64(),
            "shutdown_grace_seconds": cfg.pipeline.shutdown_grace.as_secs_f64(),
            "submit_settle_seconds": cfg.pipeline.submit_settle.as_secs_f64(),
            "max_submit_errors": cfg.pipeline.max_submit_errors,
        }),
    );
    m.insert(
        "receipts".into(),
        serde_json::json!({
            "enabled": cfg.receipts.enabled,
            "dir": cfg.receipts.dir.display().to_string(),
            "shop_name": cfg.receipts.shop_name,
            "paper": cfg.receipts.paper.name(),
        }),
    );
    let qb = &cfg.quickbooks;
    m.insert(
        "quickbooks".into(),
        serde_json::json!({
            "enabled": qb.enabled,
            "environment": qb.environment,
            "authorize_url": qb.authorize_url.as_str(),
            "token_url": qb.token_url.as_str(),
            "revoke_url": qb.revoke_url.as_str(),
            "api_base": qb.api_base.as_str(),
            "client_id": qb.client_id,
            "client_secret": qb.client_secret.as_ref().map(|_| if qb.client_secret_from_env {
                format!("[REDACTED] (from {ENV_QB_CLIENT_SECRET})")
            } else {
                "[REDACTED] (config.json)".to_string()
            }),
            "redirect_uri": qb.redirect_uri.as_str(),
            "realm_id": qb.realm_id,
            "push_after": qb.push_after.as_str(),
            "income_account_id": qb.income_account_id,
            "item_id": qb.item_id,
            "tax_code": qb.tax_code,
            "global_tax_calculation": qb.global_tax_calculation,
            "batch_threshold": qb.batch_threshold,
            "cache_refresh_minutes": qb.cache_refresh.as_secs_f64() / 60.0,
        }),
    );
    m.insert(
        "api_key".into(),
        match (&cfg.connector.api_key, cfg.connector.api_key_from_env) {
            (None, _) => Value::Null,
            (Some(_), true) => format!("[REDACTED] (from {ENV_CONNECTOR_API_KEY})").into(),
            (Some(_), false) => "[REDACTED] (config.json)".into(),
        },
    );
    m.insert(
        "heartbeat_minutes".into(),
        (cfg.connector.heartbeat_interval.as_secs_f64() / 60.0).into(),
    );
    m.insert(
        "pos_systems".into(),
        cfg.connector.pos_systems.clone().into(),
    );
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

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        use crate::receipt::Paper;
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
        assert!(!cfg.intake.mapping.is_empty());
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
            "intake.mapping",
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
            &format!(
                r#"{{"email": "a@b.co", "invoice_folder": "{}/.", "data_dir": "{}/data"}}"#,
                dir.path().display(),
                dir.path().display()
            ),
        );
        let err = load_from(&p, &[]).unwrap_err().to_string();
        assert!(
            err.contains("invoice_folder") && err.contains("config file"),
            "{err}"
        );
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
        let local = Local.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(t.expires_at.timestamp(), local.timestamp());
        assert!(c.warnings.iter().any(|w| w.contains("plain text")));
        // Debug never shows secrets.
        let dbg = format!("{:?}", c.password);
        assert!(!dbg.contains("pw\""), "{dbg}");
    }

    #[test]
    fn password_rewrite_keeps_other_keys_in_order() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), r#"{"z": 1, "email": "v@shop.jo", "a": [1, 2]}"#);
        write_password_to_file(&p, Some("s3cret")).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let z = text.find("\"z\"").unwrap();
        let a = text.find("\"a\"").unwrap();
        assert!(z < a);
        assert!(text.contains("s3cret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}

#[cfg(test)]
mod connector_tests {
    use super::*;
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
