//! The one table of config keys: name, type (with the range a number must
//! be in), default, whether it is a secret, its environment override, and
//! one line of doc.
//!
//! Everything else follows from it: the reader looks every key up here (its
//! type, range and default; reading a key that is not here is a bug, and so
//! is a key here that the reader never reads, both checked on every load in
//! debug builds), unknown keys are those not here, `check-config` redacts the
//! keys marked secret, environment values are typed by the key they
//! override, and README.md's configuration table is rendered from it (a test
//! fails when the two differ).

/// What a key holds: how environment text is read for it, what the README
/// says, and for numbers the range the reader enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// Free text.
    Text,
    /// One of a few words (the reader's check names them).
    Choice(&'static [&'static str]),
    /// An `http(s)://` address.
    Url,
    /// A folder; relative ones are beside the config file.
    Folder,
    /// `true` or `false` (also `yes`/`no`, `1`/`0`, `on`/`off`).
    Bool,
    /// A number from `min` to `max`, in `unit`.
    Number {
        min: f64,
        max: f64,
        unit: &'static str,
    },
    /// A list of names: a JSON array, or one string with commas.
    List,
    /// A JSON object.
    Object,
}

/// A key's default, as the code uses it and the README shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum KeyDefault {
    /// Unset unless configured.
    None,
    /// This value (text as config.json would hold it).
    Value(&'static str),
    /// Computed or required; the text says which.
    Described(&'static str),
}

/// One config key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    /// `base_url`, or `section.key` (written nested or flat in the file).
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) default: KeyDefault,
    /// Never shown: `check-config` and `GET /api/config` print `[REDACTED]`.
    pub(crate) secret: bool,
    /// An environment variable that wins over the file (besides the
    /// `POS_CONNECTOR__<KEY>` override every key has).
    pub(crate) env_wins: Option<&'static str>,
    // Read by the README table's test only; the table is its one source.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) doc: &'static str,
}

/// Prefix of the environment overrides: `POS_CONNECTOR__BASE_URL`, ...
pub(crate) const ENV_PREFIX: &str = "POS_CONNECTOR";
/// The environment variable whose client secret wins over config.json.
pub(crate) const ENV_QB_CLIENT_SECRET: &str = "POS_CONNECTOR_QB_CLIENT_SECRET";
/// The environment variable that wins over `api_key`.
pub const ENV_CONNECTOR_API_KEY: &str = "POS_CONNECTOR_API_KEY";

const fn key(name: &'static str, kind: Kind, default: KeyDefault, doc: &'static str) -> Key {
    Key {
        name,
        kind,
        default,
        secret: false,
        env_wins: None,
        doc,
    }
}

impl Key {
    const fn secret(mut self) -> Key {
        self.secret = true;
        self
    }

    const fn env_wins(mut self, var: &'static str) -> Key {
        self.env_wins = Some(var);
        self
    }

    /// The section (`local_api`) and the name inside it (`bind`), if any.
    pub(crate) fn section(&self) -> Option<(&'static str, &'static str)> {
        self.name.split_once('.')
    }

    /// `POS_CONNECTOR__LOCAL_API__BIND`.
    #[cfg(test)]
    pub(crate) fn env_override(&self) -> String {
        format!(
            "{ENV_PREFIX}__{}",
            self.name.replace('.', "__").to_ascii_uppercase()
        )
    }

    /// The default value (text as config.json would hold it), if it has one.
    pub(crate) fn default_value(&self) -> Option<&'static str> {
        match self.default {
            KeyDefault::Value(v) => Some(v),
            KeyDefault::None | KeyDefault::Described(_) => None,
        }
    }

    #[cfg(test)]
    fn type_name(&self) -> String {
        match self.kind {
            Kind::Text => "text".into(),
            Kind::Choice(words) => words
                .iter()
                .map(|w| format!("`{w}`"))
                .collect::<Vec<_>>()
                .join(" / "),
            Kind::Url => "URL".into(),
            Kind::Folder => "folder".into(),
            Kind::Bool => "boolean".into(),
            // A range as wide as the type says nothing.
            Kind::Number { max, .. } if max > 1e12 => "number".into(),
            Kind::Number { min, max, unit } => format!("number, {min}-{max} {unit}"),
            Kind::List => "list".into(),
            Kind::Object => "object".into(),
        }
    }
}

use KeyDefault::{Described, None as Unset, Value};
use Kind::*;

const fn number(min: f64, max: f64, unit: &'static str) -> Kind {
    Number { min, max, unit }
}

/// Every key this version reads, in the README's order.
#[rustfmt::skip]
pub(crate) const KEYS: &[Key] = &[
    key("base_url", Url, Value("http://127.0.0.1:8000"),
        "the invoicing backend. `https://` required unless the host is this machine (see `allow_insecure_http`). No user name or password in it (`https://user:pw@host` is refused, and never printed: the agent signs in with `email` and the stored password); the same holds for every URL key"),
    key("email", Text, Described("(required)"),
        "the vendor account's login email"),
    key("password", Text, Unset,
        "the vendor password in plain text (discouraged: use `--setup-password`; a warning is logged). `POS_CONNECTOR_PASSWORD`, then the stored one, win over it").secret(),
    key("vendor_id", number(0.0, u64::MAX as f64, "(a vendor id)"), Unset,
        "the vendor id (informative; the login answer tells it too)"),
    key("token", Text, Unset,
        "a token written by the old connector, with `token_expiry`. Used as the starting token so an upgrade needs no login; refreshed `refresh_before_minutes` before `token_expiry` like any other (one expiring within the window is replaced before its first use)").secret(),
    key("token_expiry", Text, Unset,
        "when `token` expires, ISO-8601; without an offset it is local time"),
    key("sync_interval", number(1.0, 86_400.0, "seconds"), Value("60"),
        "seconds between looks at the inbox folder (service)"),
    key("auto_submit_jofotara", Bool, Value("true"),
        "submit created invoices to JoFotara (service)"),
    key("invoice_folder", Folder, Value("invoices"),
        "the inbox folder the till's exports are dropped into (service)"),
    key("log_level", Choice(&["error", "warn", "info", "debug", "trace"]), Value("info"),
        "how much is logged; `warning`, `critical` and any case are accepted too"),
    key("token_lifetime_hours", number(0.1, 24.0 * 366.0, "hours"), Value("24"),
        "assumed token lifetime when the backend does not say (it does not today)"),
    key("refresh_before_minutes", number(0.0, 24.0 * 60.0, "minutes"), Value("30"),
        "refresh the token this long before it expires (less than the token lifetime)"),
    key("request_timeout_secs", number(1.0, 3600.0, "seconds"), Value("30"),
        "per-request timeout (submit calls JoFotara synchronously and can take seconds)"),
    key("data_dir", Folder, Value("data"),
        "the agent's state: the outbox and the encrypted secrets store"),
    key("log_dir", Folder, Value("logs"),
        "daily log files `pos-connector.log.YYYY-MM-DD`"),
    key("log_keep_files", number(1.0, 3650.0, "files"), Value("14"),
        "how many daily log files to keep"),
    key("pdf_dir", Folder, Described("`<data_dir>/pdfs`"),
        "where downloaded PDFs and XML go"),
    key("allow_insecure_http", Bool, Value("false"),
        "allow `http://` to another machine (the password and tokens then cross the network unencrypted)"),
    key("intake.mapping", Object, Described("(detect)"),
        "explicit field mapping for tills whose names are not recognised: canonical field -> CSV column or dotted JSON path (below)"),
    key("intake.default_customer", Text, Value("Walk-in customer"),
        "the customer of a sale that names none"),
    key("intake.settle_seconds", number(0.0, 3600.0, "seconds"), Value("2"),
        "a file is taken once its size and time are unchanged this long (it may still be being written)"),
    key("intake.encoding", Text, Value("utf-8"),
        "the code page of CSV and text exports without a byte order mark, as a WHATWG label: `windows-1256` (Arabic Windows, what Excel saves CSV in), `iso-8859-6`, `utf-16le`; a UTF-8 or UTF-16 byte order mark wins"),
    key("local_api.enabled", Bool, Value("true"),
        "serve the loopback HTTP API"),
    key("local_api.bind", Text, Value("127.0.0.1:8765"),
        "its address:port; a non-loopback address is refused unless `local_api.allow_remote` is `true`; port 0 takes a free one, named in the log line `local API listening on ADDRESS` (tests)"),
    key("local_api.api_key", Text, Unset,
        "the key of the local API and the status page: callers send `Authorization: Bearer <key>` or `X-API-Key: <key>`; without a key the local API is not started (a warning says so). At least 16 characters, and not the example file's placeholder (else exit 2): e.g. `openssl rand -hex 24`").secret(),
    key("local_api.allow_remote", Bool, Value("false"),
        "permit binding a non-loopback address"),
    key("local_api.max_connections", number(1.0, 4096.0, "connections"), Value("64"),
        "connections served at once; more wait in the system's queue without costing the agent a file handle"),
    key("local_api.header_timeout_seconds", number(1.0, 300.0, "seconds"), Value("10"),
        "a connection that has not sent a whole request head by then (also an idle kept-alive one) is closed"),
    key("local_api.allowed_hosts", List, Value("[]"),
        "more names the local API answers to in the `Host` header, e.g. `[\"till-3.shop.lan\"]` for a back-office browser; `localhost`, loopback addresses, the address a connection came in on and the host of `quickbooks.redirect_uri` always work"),
    key("api_key", Text, Unset,
        "the shop's key for the backend's connector channel (`X-API-Key`); set, the service sends the fleet heartbeat").secret().env_wins(ENV_CONNECTOR_API_KEY),
    key("heartbeat_minutes", number(1.0, 1440.0, "minutes"), Value("5"),
        "minutes between heartbeats"),
    key("pos_systems", List, Value("[]"),
        "the till's POS software, reported in the heartbeat (a list, or one string with commas)"),
    key("pipeline.concurrency", number(1.0, 64.0, "jobs at once"), Value("4"),
        "sales worked on at once"),
    key("pipeline.lookup_path", Text, Unset,
        "a backend route that answers an invoice by number, e.g. `/api/invoices/by-number/{invoice_number}`; replaces the id scan (below)"),
    key("pipeline.scan_limit", number(1.0, 100_000.0, "reads"), Value("500"),
        "at most this many ids are read when looking for a lost create"),
    key("pipeline.max_backoff_seconds", number(1.0, 86_400.0, "seconds"), Value("900"),
        "retries back off exponentially (from 2 s, with jitter) up to this, forever"),
    key("pipeline.shutdown_grace_seconds", number(0.0, 600.0, "seconds"), Value("10"),
        "on SIGTERM, in-flight calls get this long to finish"),
    key("pipeline.submit_settle_seconds", number(1.0, 3600.0, "seconds"), Value("90"),
        "after a submit whose answer was lost (timeout, dropped connection, agent killed), its status is read (and the invoice possibly submitted again) only this long after that submit started, across restarts: the backend may still be working on it until then (PHP's 30 s limit, nginx's 60 s). Below 60 a warning says an invoice may reach JoFotara twice"),
    key("pipeline.max_submit_errors", number(1.0, 1000.0, "submits"), Value("5"),
        "submits answering `error` (or 5xx while the backend answers otherwise) in a row before the sale is parked: the backend's JoFotara integration is then probably broken"),
    key("receipts.enabled", Bool, Value("true"),
        "print a provisional receipt PDF for each sale"),
    key("receipts.dir", Folder, Value("receipts"),
        "where they go (`<invoice number>.pdf`)"),
    key("receipts.shop_name", Text, Described("(the login email)"),
        "the shop name printed on them"),
    key("receipts.paper", Choice(&["80mm", "58mm", "a4"]), Value("80mm"),
        "`80mm` or `58mm`: the width of the till's paper roll, one page as long as the receipt; `a4`: A4 pages for an office printer"),
    key("quickbooks.enabled", Bool, Value("false"),
        "push every invoice on to QuickBooks Online (below)"),
    key("quickbooks.environment", Choice(&["production", "sandbox"]), Value("production"),
        "Intuit's production, or its sandbox companies"),
    key("quickbooks.auth_base", Url, Described("(Intuit's)"),
        "a simulator or test double instead of Intuit's OAuth, with `quickbooks.api_base`: OAuth at `{auth_base}/connect/oauth2`, `/oauth2/v1/tokens/bearer`, `/v2/oauth2/tokens/revoke`"),
    key("quickbooks.api_base", Url, Described("(Intuit's)"),
        "the accounting API of that simulator or test double (with or without the trailing `/v3`), with `quickbooks.auth_base`"),
    key("quickbooks.client_id", Text, Described("(required when enabled)"),
        "the app's Client ID (developer.intuit.com, Keys & credentials)"),
    key("quickbooks.client_secret", Text, Described("(required when enabled)"),
        "the app's Client Secret (keep it out of the file: set the variable)").secret().env_wins(ENV_QB_CLIENT_SECRET),
    key("quickbooks.redirect_uri", Url, Value("http://localhost:8765/callback"),
        "the redirect URI registered for the app: the agent's own `/callback` on `local_api.bind` (the status page's Connect button), where `qbo connect` also listens when the service is not running"),
    key("quickbooks.realm_id", Text, Unset,
        "the company expected (digits); a connection to another company is refused"),
    key("quickbooks.push_after", Choice(&["created", "submitted"]), Value("submitted"),
        "`created` (as soon as the invoice exists at the backend) or `submitted` (after JoFotara accepted it)"),
    key("quickbooks.income_account_id", Text, Unset,
        "the Income account Id given to Service items created for products not yet in QuickBooks"),
    key("quickbooks.item_id", Text, Unset,
        "one generic item for every line instead (no items are looked up or created)"),
    key("quickbooks.tax_code", Text, Unset,
        "`TaxCodeRef` of every line: `TAX` (US) or your 16% TaxCode Id (elsewhere). Unset: no tax code is sent; tax is never invented"),
    key("quickbooks.global_tax_calculation", Choice(&["TaxExcluded", "TaxInclusive", "NotApplicable"]), Unset,
        "how QuickBooks treats the lines' tax (non-US companies)"),
    key("quickbooks.batch_threshold", number(1.0, 1000.0, "invoices"), Value("3"),
        "more waiting invoices than this go out in batch requests of up to 30"),
    key("quickbooks.cache_refresh_minutes", number(1.0, 10_080.0, "minutes"), Value("60"),
        "how often the local copy of the company's customers, vendors, items and invoices catches up"),
];

/// The key named `name`, if this version has it.
pub(crate) fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The sections (`intake`, `local_api`, ...) in the table's order.
pub(crate) fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (section, _) in KEYS.iter().filter_map(Key::section) {
        if !out.contains(&section) {
            out.push(section);
        }
    }
    out
}

/// The names inside `section` (`bind`, `api_key`, ...).
pub(crate) fn keys_of(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter_map(Key::section)
        .filter(|(s, _)| *s == section)
        .map(|(_, k)| k)
        .collect()
}

/// Whether `k`, a top-level name of the file or a flat `section.key`, is
/// something this version reads (a section's name is).
pub(crate) fn is_known(k: &str) -> bool {
    find(k).is_some() || sections().contains(&k)
}

/// README.md's configuration table, rendered from [`KEYS`].
#[cfg(test)]
pub(crate) fn readme_table() -> String {
    let mut out = String::from(
        "| key | type | default | environment | meaning |\n| --- | --- | --- | --- | --- |\n",
    );
    for k in KEYS {
        let default = match k.default {
            KeyDefault::None => String::new(),
            KeyDefault::Value(v) => format!("`{v}`"),
            KeyDefault::Described(d) => d.to_string(),
        };
        let mut env = format!("`{}`", k.env_override());
        if let Some(var) = k.env_wins {
            env = format!("**`{var}`** wins; {env}");
        }
        let secret = if k.secret {
            " (secret: never shown)"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}` | {} | {default} | {env} | {}{secret} |\n",
            k.name,
            k.type_name(),
            k.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The markers around the table in README.md.
    const README_START: &str =
        "<!-- config-keys: generated from crates/agent/src/config/keys.rs; edit there -->";
    const README_END: &str = "<!-- config-keys: end -->";

    #[test]
    fn names_are_unique_and_defaults_fit_their_kind() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                KEYS[..i].iter().all(|o| o.name != k.name),
                "{} twice",
                k.name
            );
            let Some(v) = k.default_value() else { continue };
            match k.kind {
                Kind::Bool => assert!(v == "true" || v == "false", "{}", k.name),
                Kind::Number { min, max, .. } => {
                    let n: f64 = v.parse().unwrap_or_else(|_| panic!("{}", k.name));
                    assert!(n >= min && n <= max, "{}", k.name);
                }
                Kind::Choice(words) => assert!(words.contains(&v), "{}", k.name),
                Kind::List => assert_eq!(v, "[]", "{}", k.name),
                _ => {}
            }
        }
    }

    /// README.md's table is this table: edit keys.rs, then run this test
    /// with `UPDATE_README=1` to write it.
    #[test]
    fn the_readme_configuration_table_is_the_key_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let start = readme
            .find(README_START)
            .expect("README has the start marker")
            + README_START.len();
        let end = readme.find(README_END).expect("README has the end marker");
        let expected = format!("\n{}", readme_table());
        if readme[start..end] != expected {
            if std::env::var_os("UPDATE_README").is_some() {
                let updated = format!("{}{expected}{}", &readme[..start], &readme[end..]);
                std::fs::write(&path, updated).unwrap();
                return;
            }
            panic!(
                "README.md's configuration table differs from config/keys.rs; run \
                 `UPDATE_README=1 cargo test -p pos-connector --lib config::keys` to write:\n{expected}"
            );
        }
    }

    #[test]
    fn environment_override_names() {
        assert_eq!(
            find("local_api.bind").unwrap().env_override(),
            "POS_CONNECTOR__LOCAL_API__BIND"
        );
        assert_eq!(
            find("base_url").unwrap().env_override(),
            "POS_CONNECTOR__BASE_URL"
        );
        assert!(is_known("quickbooks") && is_known("quickbooks.tax_code"));
        assert!(!is_known("quickbooks.colour") && !is_known("pos_type"));
    }
}
