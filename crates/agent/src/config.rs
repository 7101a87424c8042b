//! config.json + environment -> a validated [`Config`].
//!
//! The file is read first with serde_json (so a typo is reported with the
//! file, line and column, and a UTF-8 BOM from Notepad does not matter),
//! then layered with `POS_CONNECTOR__<KEY>` environment overrides through the
//! `config` crate, then every key is checked by hand so that each problem
//! names the key and the fix. Keys of the original Python connector keep
//! their names and meaning; unknown keys are kept and ignored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use secrecy::SecretString;
use serde_json::{Map, Value};

mod checks;
mod file;
/// The table of config keys is public: tools and docs can list the keys.
pub(crate) mod keys;
pub(crate) mod paths;
mod read;
#[cfg(test)]
mod tests;
mod view;

pub(crate) use checks::is_loopback_host;
pub(crate) use file::{json_type, read_json_object};
pub use view::redacted_view;

use file::layer_environment;
pub use keys::ENV_CONNECTOR_API_KEY;
pub(crate) use keys::{ENV_PREFIX, ENV_QB_CLIENT_SECRET};
use read::validate;

pub(crate) const ENV_CONFIG_PATH: &str = "POS_CONNECTOR_CONFIG";

/// The validated configuration. Secrets it carries (the legacy plain-text
/// password and token) are wrapped so that `Debug` never shows them.
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct Config {
    /// The file this came from.
    pub(crate) path: PathBuf,
    pub base_url: Url,
    pub email: String,
    /// `password` from config.json (plain text, discouraged; see
    /// `secret::resolve_password` for the precedence).
    pub(crate) password: Option<SecretString>,
    pub(crate) vendor_id: Option<u64>,
    /// Legacy token written by the old connector, used as the starting
    /// token so an upgrade does not force a login.
    pub(crate) legacy_token: Option<LegacyToken>,
    pub sync_interval: Duration,
    pub(crate) auto_submit_jofotara: bool,
    pub invoice_folder: PathBuf,
    pub(crate) log_level: LogLevel,
    pub(crate) token_lifetime: Duration,
    pub(crate) refresh_before: Duration,
    pub(crate) request_timeout: Duration,
    pub data_dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) log_keep_files: usize,
    pub pdf_dir: PathBuf,
    pub(crate) allow_insecure_http: bool,
    /// `intake.*`: how POS exports are read.
    pub intake: IntakeSettings,
    /// `local_api.*`: the loopback HTTP server (`POST /v1/sales`, ...).
    pub local_api: LocalApiSettings,
    /// `pipeline.*`: the worker that sends the outbox to the backend.
    pub(crate) pipeline: PipelineConfig,
    /// `receipts.*`: provisional receipts printed locally.
    pub(crate) receipts: ReceiptSettings,
    /// `quickbooks.*`: pushing invoices on to QuickBooks Online.
    pub quickbooks: QuickbooksConfig,
    /// `api_key`, `heartbeat_minutes`, `pos_systems`: the backend's
    /// connector channel (the fleet heartbeat).
    pub connector: ConnectorSettings,
    /// Keys this version does not know, kept as they were.
    pub(crate) extra: Map<String, Value>,
    /// Things worth a warning that do not stop the agent.
    pub(crate) warnings: Vec<String>,
}

/// The `intake` section: how sales are read (mapping, default customer, settling, encoding).
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// `intake.mapping` as written: canonical field -> the till's column
    /// or JSON path (null: none). The intake checks and reads it
    /// (`intake::check_config`, `intake::options_from_config`).
    pub(crate) mapping: Value,
    /// `intake.default_customer`: the customer of a sale that names none.
    pub(crate) default_customer: String,
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
    pub(crate) api_key_from_env: bool,
    /// `heartbeat_minutes` (default 5).
    pub(crate) heartbeat_interval: Duration,
    /// `pos_systems`: the tills' POS software, reported in the heartbeat.
    pub(crate) pos_systems: Vec<String>,
}

/// The `local_api` section: the loopback HTTP server's address, key and limits.
#[derive(Debug, Clone)]
pub struct LocalApiSettings {
    pub(crate) enabled: bool,
    pub(crate) bind: std::net::SocketAddr,
    /// `local_api.api_key`: callers send `Authorization: Bearer <key>`.
    pub api_key: Option<SecretString>,
    /// `local_api.allow_remote`: permit a non-loopback `bind`.
    pub(crate) allow_remote: bool,
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
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
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
pub(crate) struct PipelineConfig {
    pub(crate) concurrency: usize,
    pub(crate) lookup_path: Option<String>,
    pub(crate) scan_limit: u32,
    pub(crate) max_backoff: Duration,
    pub(crate) shutdown_grace: Duration,
    /// `pipeline.submit_settle_seconds`: after a submit whose answer was
    /// lost, how long from its start the backend may still be working on
    /// it; its status is read (and it may be sent again) only after that.
    pub(crate) submit_settle: Duration,
    /// `pipeline.max_submit_errors`: submits answering `error` (or 5xx) in
    /// a row before the job is parked for a person.
    pub(crate) max_submit_errors: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct ReceiptSettings {
    pub(crate) enabled: bool,
    pub(crate) dir: PathBuf,
    pub(crate) shop_name: Option<String>,
    /// `receipts.paper`: A4, or the width of the till's paper roll.
    pub(crate) paper: Paper,
}

/// `quickbooks.*`. The OAuth endpoints come from `environment`, or from
/// `auth_base`/`api_base` (a simulator, a test double), which win.
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct QuickbooksConfig {
    pub(crate) enabled: bool,
    /// `sandbox`, `production`, or `custom` when `auth_base`/`api_base` are set.
    pub(crate) environment: String,
    pub(crate) authorize_url: Url,
    pub token_url: Url,
    pub(crate) revoke_url: Url,
    /// The accounting API's base, ending in `/v3/`.
    pub(crate) api_base: Url,
    pub(crate) client_id: Option<String>,
    /// `POS_CONNECTOR_QB_CLIENT_SECRET` wins over the file.
    pub client_secret: Option<SecretString>,
    pub(crate) client_secret_from_env: bool,
    pub redirect_uri: Url,
    /// The company expected; the one `qbo connect` brings back is used, and
    /// a mismatch with this is refused.
    pub(crate) realm_id: Option<String>,
    pub push_after: PushAfter,
    /// `IncomeAccountRef` of the Service items created for new products.
    pub(crate) income_account_id: Option<String>,
    /// One generic item for every line (then no items are looked up).
    pub(crate) item_id: Option<String>,
    /// `TaxCodeRef` of every line: `TAX`/`NON` in the US, a TaxCode Id
    /// elsewhere. Unset: no tax code is sent (tax is never invented).
    pub(crate) tax_code: Option<String>,
    /// `GlobalTaxCalculation` (non-US companies): TaxExcluded, TaxInclusive
    /// or NotApplicable.
    pub(crate) global_tax_calculation: Option<String>,
    /// More waiting invoices than this go out in batch requests.
    pub(crate) batch_threshold: usize,
    /// `quickbooks.cache_refresh_minutes` (default 60): how often the
    /// local copy of customers, vendors, items and invoices catches up.
    pub cache_refresh: Duration,
    /// QuickBooks' request limits as the agent keeps them (not a file key:
    /// tests and benches scale the windows).
    pub limits: RateLimits,
}

/// QuickBooks' request limits per company (the limiter in
/// `quickbooks::limiter` keeps them; not a file key).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Requests a second per realm (QuickBooks: 10).
    pub per_second: u32,
    /// Requests a minute per realm (QuickBooks: 500).
    pub per_minute: u32,
    /// Batch requests a minute per realm (QuickBooks: 40).
    pub batch_per_minute: u32,
    /// Multiplies every window and pause: 1.0 in production, 0.1 gives
    /// windows of 100 ms and 6 s for tests and benches. Zero, negative or
    /// non-finite values count as 1.0.
    pub time_scale: f64,
    /// Seeds the pauses' jitter (tests and benches print it); `None`: a
    /// random seed, logged at debug level.
    pub jitter_seed: Option<u64>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_second: 10,
            per_minute: 500,
            batch_per_minute: 40,
            time_scale: 1.0,
            jitter_seed: None,
        }
    }
}

/// The paper a receipt is laid out for (`receipts.paper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Paper {
    /// A4 portrait, for an office printer; long receipts take several pages.
    A4,
    /// An 80 mm till roll (72 mm printed): one page as long as the receipt.
    #[default]
    Roll80,
    /// A 58 mm till roll (48 mm printed).
    Roll58,
}

impl Paper {
    /// `a4`, `80mm` or `58mm`, in any case.
    pub(crate) fn parse(s: &str) -> Option<Paper> {
        match s.trim().to_ascii_lowercase().as_str() {
            "a4" => Some(Paper::A4),
            "80mm" => Some(Paper::Roll80),
            "58mm" => Some(Paper::Roll58),
            _ => None,
        }
    }

    /// The name `receipts.paper` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Paper::A4 => "a4",
            Paper::Roll80 => "80mm",
            Paper::Roll58 => "58mm",
        }
    }
}

/// After which stage of the Laravel invoice it is pushed to QuickBooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs, reason = "the variant names say what they are")]
pub enum PushAfter {
    Created,
    Submitted,
}

impl PushAfter {
    /// The value as written in config.json.
    pub fn as_str(self) -> &'static str {
        match self {
            PushAfter::Created => "created",
            PushAfter::Submitted => "submitted",
        }
    }
}

/// The default `quickbooks.redirect_uri`: the local API's port, so the
/// status page can take the callback too.
pub(crate) const DEFAULT_QB_REDIRECT_URI: &str = "http://localhost:8765/callback";

/// The default `local_api.bind`.
pub(crate) const DEFAULT_LOCAL_API_BIND: &str = "127.0.0.1:8765";
/// The default `local_api.max_connections`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// The default `local_api.header_timeout_seconds`.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
#[cfg(test)]
pub(crate) const DEFAULT_CUSTOMER: &str = "Walk-in customer";
/// Above PHP's 30 s execution limit and nginx's 60 s read timeout: after
/// that, a submit whose client left is certainly over at the backend.
pub(crate) const DEFAULT_SUBMIT_SETTLE_SECS: f64 = 90.0;

#[derive(Debug, Clone)]
pub(crate) struct LegacyToken {
    pub(crate) token: SecretString,
    pub(crate) expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// Accepts Rust and Python spellings (`WARNING`, `CRITICAL`), any case.
    pub(crate) fn parse(s: &str) -> Option<LogLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Some(LogLevel::Trace),
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "error" | "critical" | "fatal" => Some(LogLevel::Error),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
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
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct KeyProblem {
    pub key: String,
    pub problem: String,
}

/// Why the config could not be found, read or accepted; each message names the fix.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
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
/// `POS_CONNECTOR_CONFIG`, which clap merges), else the first of
/// `defaults` that exists (the working directory's config/ and config.json,
/// then the system's place: `platform::default_config_paths`).
pub(crate) fn locate(
    explicit: Option<&Path>,
    defaults: Vec<PathBuf>,
) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        return Err(ConfigError::NotFound {
            tried: vec![path.to_path_buf()],
        });
    }
    let tried = defaults;
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
    // A key's own variable (the QuickBooks client secret, the connector
    // key: kept out of config files and backups) wins; a flat key is read
    // before the section.
    let mut from_env = Vec::new();
    for key in keys::KEYS {
        let Some(var) = key.env_wins else { continue };
        if let Some((_, value)) = env.iter().find(|(k, v)| k == var && !v.trim().is_empty()) {
            merged.insert(key.name.into(), Value::from(value.clone()));
            from_env.push(key.name);
        }
    }
    let mut cfg = validate(path, merged)?;
    cfg.quickbooks.client_secret_from_env = from_env.contains(&"quickbooks.client_secret");
    cfg.connector.api_key_from_env = from_env.contains(&"api_key");
    Ok(cfg)
}

/// Loads with the real process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(path, &env)
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}
