//! The merged JSON -> a validated [`Config`]: each key read by its entry
//! in the key table, every problem collected and named by its key.

use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;
use serde_json::{Map, Value};

use super::checks::{
    check_no_userinfo, is_host_name, local_api_key_problem, looks_like_email, parse_base_url,
    parse_legacy_expiry, without_userinfo,
};
use super::file::json_type;
use super::keys::{self, Key, Kind};
use super::*;

/// Reads typed values out of the merged JSON map, collecting every problem
/// instead of stopping at the first, so a shop owner fixes the file once.
struct Reader<'a> {
    map: &'a Map<String, Value>,
    problems: Vec<KeyProblem>,
    /// The keys read, to check that the table and the reader agree.
    read: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    /// The table's entry for `key`; reading a key that is not in the table
    /// is a bug.
    fn key(&mut self, key: &str) -> &'static Key {
        let Some(found) = keys::find(key) else {
            panic!("config key {key} is read but not in config::keys::KEYS")
        };
        if !self.read.contains(&found.name) {
            self.read.push(found.name);
        }
        found
    }

    /// The table's default of `key`, which must have one.
    fn default_of(&mut self, key: &str) -> &'static str {
        let k = self.key(key);
        k.default_value()
            .unwrap_or_else(|| panic!("config key {key} has no default in config::keys::KEYS"))
    }

    fn problem(&mut self, key: &str, problem: impl Into<String>) {
        self.problems.push(KeyProblem {
            key: key.to_string(),
            problem: problem.into(),
        });
    }

    /// A key's value; `section.key` is looked up flat first, then inside
    /// the `section` object.
    fn present(&mut self, key: &str) -> Option<&'a Value> {
        self.key(key);
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

    /// A number within the table's range for `key`.
    fn number(&mut self, key: &str) -> Option<f64> {
        let Kind::Number { min, max, unit } = self.key(key).kind else {
            panic!("config key {key} is not a number in config::keys::KEYS")
        };
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

    fn number_or_default(&mut self, key: &str) -> f64 {
        let default = self.default_of(key);
        self.number(key)
            .unwrap_or_else(|| default.parse().expect("the table's defaults are numbers"))
    }

    fn string_or_default(&mut self, key: &str) -> String {
        let default = self.default_of(key);
        self.string(key).unwrap_or_else(|| default.to_string())
    }

    /// A boolean, or the table's default.
    fn flag(&mut self, key: &str) -> bool {
        let default = self.default_of(key) == "true";
        self.boolean(key).unwrap_or(default)
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

pub(super) fn validate(path: &Path, map: Map<String, Value>) -> Result<Config, ConfigError> {
    let mut r = Reader {
        map: &map,
        problems: Vec::new(),
        read: Vec::new(),
    };
    let mut warnings = Vec::new();

    let allow_insecure_http = r.flag("allow_insecure_http");
    let base_url_text = r.string_or_default("base_url");
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

    let vendor_id = r.number("vendor_id").map(|n| n as u64);

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

    let sync_interval = r.number_or_default("sync_interval");
    let auto_submit_jofotara = r.flag("auto_submit_jofotara");
    let invoice_folder = r.string_or_default("invoice_folder");

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

    let token_lifetime_hours = r.number_or_default("token_lifetime_hours");
    let refresh_before_minutes = r.number_or_default("refresh_before_minutes");
    if refresh_before_minutes >= token_lifetime_hours * 60.0 {
        r.problem(
            "refresh_before_minutes",
            format!(
                "{refresh_before_minutes} minutes is not shorter than the token lifetime \
                 ({token_lifetime_hours} hours): the agent would log in on every call; lower it"
            ),
        );
    }
    let request_timeout_secs = r.number_or_default("request_timeout_secs");

    // Relative paths are beside the config file, never the working
    // directory (a Windows service starts in System32): see config::paths.
    let base = paths::base_folder(path);
    let folder = |text: String| paths::resolve(&base, Path::new(&text));
    let data_dir = folder(r.string_or_default("data_dir"));
    let log_dir = folder(r.string_or_default("log_dir"));
    let log_keep_files = r.number_or_default("log_keep_files") as usize;
    let pdf_dir = r
        .string("pdf_dir")
        .map(folder)
        .unwrap_or_else(|| data_dir.join("pdfs"));

    for section in keys::sections() {
        let keys = keys::keys_of(section);
        match map.get(section) {
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

    let intake = IntakeSettings {
        // Its fields are the intake's to check (`intake::check_config`).
        mapping: r.present("intake.mapping").cloned().unwrap_or(Value::Null),
        default_customer: r.string_or_default("intake.default_customer"),
        settle: Duration::from_secs_f64(r.number_or_default("intake.settle_seconds")),
        encoding: {
            let label = r.string_or_default("intake.encoding");
            match encoding_rs::Encoding::for_label(label.trim().as_bytes()) {
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
            }
        },
    };

    let allow_remote = r.flag("local_api.allow_remote");
    let bind_text = r.string_or_default("local_api.bind");
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
        enabled: r.flag("local_api.enabled"),
        bind: bind.unwrap_or_else(|| DEFAULT_LOCAL_API_BIND.parse().expect("valid default")),
        api_key: api_key.map(SecretString::from),
        allow_remote,
        max_connections: r.number_or_default("local_api.max_connections") as usize,
        header_timeout: Duration::from_secs_f64(
            r.number_or_default("local_api.header_timeout_seconds"),
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
        concurrency: r.number_or_default("pipeline.concurrency") as usize,
        lookup_path,
        scan_limit: r.number_or_default("pipeline.scan_limit") as u32,
        max_backoff: Duration::from_secs_f64(r.number_or_default("pipeline.max_backoff_seconds")),
        shutdown_grace: Duration::from_secs_f64(
            r.number_or_default("pipeline.shutdown_grace_seconds"),
        ),
        submit_settle: Duration::from_secs_f64(
            r.number_or_default("pipeline.submit_settle_seconds"),
        ),
        max_submit_errors: r.number_or_default("pipeline.max_submit_errors") as u32,
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
        enabled: r.flag("receipts.enabled"),
        dir: folder(r.string_or_default("receipts.dir")),
        shop_name: r.string("receipts.shop_name"),
        paper: match r.string("receipts.paper") {
            None => Paper::default(),
            Some(s) => Paper::parse(&s).unwrap_or_else(|| {
                r.problem(
                    "receipts.paper",
                    format!(
                        "\"{s}\" is not a paper: use \"80mm\" or \"58mm\" (the width of the \
                         till's paper roll) or \"a4\""
                    ),
                );
                Paper::default()
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
            r.number_or_default("heartbeat_minutes") * 60.0,
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
        .filter(|(k, _)| !keys::is_known(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    debug_assert!(
        keys::KEYS.iter().all(|k| r.read.contains(&k.name)),
        "config keys in config::keys::KEYS that validate never reads: {:?}",
        keys::KEYS
            .iter()
            .filter(|k| !r.read.contains(&k.name))
            .map(|k| k.name)
            .collect::<Vec<_>>()
    );
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
    let enabled = r.flag("quickbooks.enabled");
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
    let default_environment = r.default_of("quickbooks.environment");
    let mut env_name = environment
        .clone()
        .unwrap_or_else(|| default_environment.into());
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
    let redirect_text = r.string_or_default("quickbooks.redirect_uri");
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
        batch_threshold: r.number_or_default("quickbooks.batch_threshold") as usize,
        cache_refresh: Duration::from_secs_f64(
            r.number_or_default("quickbooks.cache_refresh_minutes") * 60.0,
        ),
        limits: RateLimits::default(),
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
