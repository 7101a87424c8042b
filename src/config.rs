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

/// Where the config file is looked for when neither `--config` nor
/// `POS_CONNECTOR_CONFIG` names one.
pub const DEFAULT_CONFIG_PATHS: [&str; 2] = ["config/config.json", "config.json"];
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
}

#[derive(Debug, Clone)]
pub struct LocalApiSettings {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
    /// `local_api.api_key`: callers send `Authorization: Bearer <key>`.
    pub api_key: Option<SecretString>,
    /// `local_api.allow_remote`: permit a non-loopback `bind`.
    pub allow_remote: bool,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub concurrency: usize,
    pub lookup_path: Option<String>,
    pub scan_limit: u32,
    pub max_backoff: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct ReceiptSettings {
    pub enabled: bool,
    pub dir: PathBuf,
    pub shop_name: Option<String>,
}

/// The default `local_api.bind`.
pub const DEFAULT_LOCAL_API_BIND: &str = "127.0.0.1:8765";
pub const DEFAULT_CUSTOMER: &str = "Walk-in customer";

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
    let tried: Vec<PathBuf> = DEFAULT_CONFIG_PATHS.iter().map(PathBuf::from).collect();
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
    let merged = layer_environment(&file, env)?;
    validate(path, merged)
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
];

/// The keys inside each section (also accepted flat: `"local_api.bind"`).
const SECTION_KEYS: &[(&str, &[&str])] = &[
    ("intake", &["mapping", "default_customer", "settle_seconds"]),
    ("local_api", &["enabled", "bind", "api_key", "allow_remote"]),
    (
        "pipeline",
        &[
            "concurrency",
            "lookup_path",
            "scan_limit",
            "max_backoff_seconds",
            "shutdown_grace_seconds",
        ],
    ),
    ("receipts", &["enabled", "dir", "shop_name"]),
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

    let data_dir = PathBuf::from(r.string("data_dir").unwrap_or_else(|| "data".into()));
    let log_dir = PathBuf::from(r.string("log_dir").unwrap_or_else(|| "logs".into()));
    let log_keep_files = r
        .number("log_keep_files", 1.0, 3650.0, "files")
        .unwrap_or(14.0) as usize;
    let pdf_dir = r
        .string("pdf_dir")
        .map(PathBuf::from)
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
    let local_api = LocalApiSettings {
        enabled: r.boolean("local_api.enabled").unwrap_or(true),
        bind: bind.unwrap_or_else(|| DEFAULT_LOCAL_API_BIND.parse().expect("valid default")),
        api_key: r.string("local_api.api_key").map(SecretString::from),
        allow_remote,
    };
    if local_api.enabled && local_api.api_key.is_none() {
        warnings.push(
            "local_api.api_key is not set: the local API (POST /v1/sales) is not started; set \
             a long random key to use it"
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
    };

    let receipts = ReceiptSettings {
        enabled: r.boolean("receipts.enabled").unwrap_or(true),
        dir: r
            .string("receipts.dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("receipts")),
        shop_name: r.string("receipts.shop_name"),
    };

    // The inbox takes every file dropped into it: it must not be a folder
    // holding the agent's own files, or it would "reject" them.
    let inbox = lexical(Path::new(&invoice_folder));
    let config_dir = lexical(path.parent().unwrap_or(Path::new(".")));
    for (key, other) in [
        ("the config file's folder", config_dir),
        ("data_dir", lexical(&data_dir)),
        ("log_dir", lexical(&log_dir)),
        ("pdf_dir", lexical(&pdf_dir)),
        ("receipts.dir", lexical(&receipts.dir)),
    ] {
        if inbox == other {
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
        invoice_folder: PathBuf::from(invoice_folder),
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
        extra,
        warnings,
    })
}

/// A path made absolute against the working directory, with `.` and `..`
/// resolved by name (the folders may not exist yet).
fn lexical(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Checks the backend address: http(s), a host, no query; plain http only
/// to this machine unless the operator opts in.
pub fn parse_base_url(text: &str, allow_insecure_http: bool) -> Result<Url, String> {
    let mut url = Url::parse(text.trim()).map_err(|e| {
        format!("\"{text}\" is not a URL ({e}); use e.g. https://invoices.example.com")
    })?;
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
    m.insert("config_file".into(), cfg.path.display().to_string().into());
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
        }),
    );
    m.insert(
        "local_api".into(),
        serde_json::json!({
            "enabled": cfg.local_api.enabled,
            "bind": cfg.local_api.bind.to_string(),
            "api_key": cfg.local_api.api_key.as_ref().map(|_| "[REDACTED]"),
            "allow_remote": cfg.local_api.allow_remote,
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
        }),
    );
    m.insert(
        "receipts".into(),
        serde_json::json!({
            "enabled": cfg.receipts.enabled,
            "dir": cfg.receipts.dir.display().to_string(),
            "shop_name": cfg.receipts.shop_name,
        }),
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
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.example.json");
        let cfg = load_from(&p, &[]).unwrap();
        assert!(cfg.extra.is_empty(), "{:?}", cfg.extra);
        assert!(
            cfg.warnings.iter().all(|w| !w.contains("not a setting")),
            "{:?}",
            cfg.warnings
        );
        assert_eq!(cfg.local_api.bind.to_string(), DEFAULT_LOCAL_API_BIND);
        assert_eq!(cfg.pipeline.concurrency, 4);
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
        assert_eq!(cfg.receipts.dir, PathBuf::from("receipts"));
        assert!(!cfg.intake.mapping.is_empty());
        assert!(cfg.warnings.iter().any(|w| w.contains("pipeline.colour")));
        assert!(cfg.warnings.iter().any(|w| w.contains("local_api.api_key")));
        // The API key comes from the environment too, and is redacted.
        let cfg = load_from(
            &p,
            &[(
                "POS_CONNECTOR__LOCAL_API__API_KEY".into(),
                "k3y-from-env".into(),
            )],
        )
        .unwrap();
        assert_eq!(
            cfg.local_api.api_key.as_ref().unwrap().expose_secret(),
            "k3y-from-env"
        );
        assert!(!redacted_view(&cfg, "x")
            .to_string()
            .contains("k3y-from-env"));
        assert!(!format!("{cfg:?}").contains("k3y-from-env"));

        let p = write(
            dir.path(),
            r#"{"email": "a@b.co", "local_api": {"bind": "0.0.0.0:8765"},
                "pipeline": {"concurrency": 0, "lookup_path": "by-number"},
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
        assert_eq!(c.log_dir, PathBuf::from("logs"));
        assert_eq!(c.pdf_dir, PathBuf::from("data/pdfs"));
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
