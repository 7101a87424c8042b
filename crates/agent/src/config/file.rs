//! The file and the environment: config.json read as a JSON object (with
//! its line and column on a typo), and `POS_CONNECTOR__*` overrides
//! layered on it.

use std::path::Path;

use serde_json::{Map, Value};

use super::{ConfigError, ENV_PREFIX};

/// Reads the file as a JSON object, with precise errors.
pub(crate) fn read_json_object(path: &Path) -> Result<Map<String, Value>, ConfigError> {
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

/// What kind of JSON value `v` is, as an error message names it ("a string").
pub(crate) fn json_type(v: &Value) -> &'static str {
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
pub(super) fn layer_environment(
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
                // Every value stays text: the reader types it by its key
                // (a shop name "0795551234" keeps its zero).
                .try_parsing(false)
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
