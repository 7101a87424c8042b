//! Where the password and tokens come from and how they are kept at rest.
//! Nothing else in the agent touches a raw secret: everything outside this
//! module holds `SecretString`, whose `Debug` prints `[REDACTED]`.
//!
//! At rest, secrets live in `<data_dir>/secrets.bin`, encrypted with
//! XChaCha20-Poly1305 under a random key in `<data_dir>/secret.key` (both
//! mode 0600, the folder 0700). This keeps the password and tokens out of
//! config backups, support bundles and copied state folders; it does not
//! protect against someone who can read the agent's own files (no local
//! secret store can, without an OS keyring, which a headless till lacks).
//! Writes go through a lock file and a temp-file + fsync + rename, so two
//! agent processes (the service and a CLI command) never lose each other's
//! updates and a power cut never leaves a torn file.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};
use crate::fsutil;
use serde_json::Value;

/// The environment variable whose password wins over everything.
pub(crate) const ENV_PASSWORD: &str = "POS_CONNECTOR_PASSWORD";

const MAGIC: &[u8; 4] = b"PCV1";
const KEY_FILE: &str = "secret.key";
const VAULT_FILE: &str = "secrets.bin";
const LOCK_FILE: &str = "secrets.lock";

/// Why the secrets store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum SecretError {
    #[error("cannot use the secrets store in {}: {source}", .dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secrets store {} cannot be decrypted ({reason}); if secret.key was replaced or lost, run `pos-connector --setup-password` to store the password again (the unreadable file is kept aside)", .path.display())]
    Unreadable { path: PathBuf, reason: String },
}

/// Which source the password came from (shown by `check-config`, never the
/// password itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordOrigin {
    Environment,
    Stored,
    ConfigFile,
}

impl PasswordOrigin {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            PasswordOrigin::Environment => "from POS_CONNECTOR_PASSWORD",
            PasswordOrigin::Stored => "stored encrypted by --setup-password",
            PasswordOrigin::ConfigFile => "plain text in config.json",
        }
    }
}

/// A token as persisted: the secret, its expiry, and for OAuth backends the
/// refresh token and free-form metadata (realm, refresh expiries...).
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct StoredToken {
    pub secret: SecretString,
    pub expires_at: DateTime<Utc>,
    pub obtained_at: DateTime<Utc>,
    pub refresh: Option<SecretString>,
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// The on-disk plain text, only ever held inside this module.
#[derive(Default, Serialize, Deserialize)]
struct VaultData {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    tokens: BTreeMap<String, TokenData>,
}

#[derive(Serialize, Deserialize)]
struct TokenData {
    secret: String,
    expires_at: DateTime<Utc>,
    obtained_at: DateTime<Utc>,
    #[serde(default)]
    refresh: Option<String>,
    #[serde(default)]
    meta: BTreeMap<String, serde_json::Value>,
}

/// The encrypted secrets store in the data folder.
#[derive(Debug, Clone)]
pub struct Vault {
    dir: PathBuf,
}

impl Vault {
    /// A vault in `data_dir`; nothing is created until the first write.
    pub fn new(data_dir: &Path) -> Vault {
        Vault {
            dir: data_dir.to_path_buf(),
        }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(VAULT_FILE)
    }

    fn io(&self, source: std::io::Error) -> SecretError {
        SecretError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    /// The password stored by `--setup-password`, if any.
    pub fn password(&self) -> Result<Option<SecretString>, SecretError> {
        Ok(self.read()?.password.map(SecretString::from))
    }

    pub(crate) fn set_password(&self, password: Option<&SecretString>) -> Result<(), SecretError> {
        self.update(|d| d.password = password.map(|p| p.expose_secret().to_string()))
    }

    /// A stored token by its name in the store, if any.
    pub fn token(&self, name: &str) -> Result<Option<StoredToken>, SecretError> {
        Ok(self.read()?.tokens.remove(name).map(|t| StoredToken {
            secret: SecretString::from(t.secret),
            expires_at: t.expires_at,
            obtained_at: t.obtained_at,
            refresh: t.refresh.map(SecretString::from),
            meta: t.meta,
        }))
    }

    /// Persists a token durably (fsync + rename) before returning: callers
    /// rely on this to keep a rotated refresh token across a power cut.
    pub fn save_token(&self, name: &str, token: &StoredToken) -> Result<(), SecretError> {
        self.update(|d| {
            d.tokens.insert(
                name.to_string(),
                TokenData {
                    secret: token.secret.expose_secret().to_string(),
                    expires_at: token.expires_at,
                    obtained_at: token.obtained_at,
                    refresh: token
                        .refresh
                        .as_ref()
                        .map(|r| r.expose_secret().to_string()),
                    meta: token.meta.clone(),
                },
            );
        })
    }

    pub(crate) fn forget_token(&self, name: &str) -> Result<(), SecretError> {
        self.update(|d| {
            d.tokens.remove(name);
        })
    }

    /// Read-modify-write under an exclusive lock shared by every agent
    /// process using this data folder.
    fn update(&self, change: impl FnOnce(&mut VaultData)) -> Result<(), SecretError> {
        fsutil::create_private_dir(&self.dir).map_err(|e| self.io(e))?;
        let _lock = self.lock()?;
        let mut data = match self.read_unlocked() {
            Ok(d) => d,
            Err(SecretError::Unreadable { .. }) => {
                // Keep the unreadable file for forensics and start afresh:
                // the caller is writing a new secret, so nothing is lost
                // that a person could still recover from the old file.
                let aside = self.dir.join(format!(
                    "{VAULT_FILE}.unreadable-{}",
                    Utc::now().timestamp()
                ));
                std::fs::rename(self.path(), &aside).map_err(|e| self.io(e))?;
                tracing::warn!(file = %aside.display(), "secrets store could not be decrypted; kept it aside and started a new one");
                VaultData::default()
            }
            Err(e) => return Err(e),
        };
        change(&mut data);
        let plain = serde_json::to_vec(&data).expect("vault data serialises");
        let key = self.key(true)?.expect("created on demand");
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new((&key).into());
        let sealed = cipher
            .encrypt(&XNonce::from(nonce), plain.as_slice())
            .expect("encryption of a small buffer cannot fail");
        let mut out = Vec::with_capacity(4 + 24 + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        fsutil::write_private(&self.path(), &out).map_err(|e| self.io(e))
    }

    fn read(&self) -> Result<VaultData, SecretError> {
        if !self.path().exists() {
            return Ok(VaultData::default());
        }
        let _lock = self.lock()?;
        self.read_unlocked()
    }

    fn read_unlocked(&self) -> Result<VaultData, SecretError> {
        let bytes = match std::fs::read(self.path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(VaultData::default()),
            Err(e) => return Err(self.io(e)),
        };
        let unreadable = |reason: &str| SecretError::Unreadable {
            path: self.path(),
            reason: reason.to_string(),
        };
        if bytes.len() < 4 + 24 + 16 || &bytes[..4] != MAGIC {
            return Err(unreadable("not a pos-connector secrets file"));
        }
        let Some(key) = self.key(false)? else {
            return Err(unreadable("secret.key is missing"));
        };
        let cipher = XChaCha20Poly1305::new((&key).into());
        let nonce: [u8; 24] = bytes[4..28].try_into().expect("checked: 24 bytes");
        let plain = cipher
            .decrypt(&XNonce::from(nonce), &bytes[28..])
            .map_err(|_| unreadable("wrong key or damaged file"))?;
        serde_json::from_slice(&plain).map_err(|_| unreadable("damaged contents"))
    }

    /// The store's key; created (0600) on first write. On disk it is in
    /// the platform's protected form (DPAPI on Windows, see `platform`); a
    /// key stored bare by an older version is rewritten protected.
    fn key(&self, create: bool) -> Result<Option<[u8; 32]>, SecretError> {
        let path = self.dir.join(KEY_FILE);
        let unreadable = |reason: String| SecretError::Unreadable {
            path: path.clone(),
            reason,
        };
        match std::fs::read(&path) {
            Ok(stored) => {
                let (bytes, rewrite) = crate::platform::unprotect_key(&stored).map_err(|e| {
                    unreadable(format!("the key cannot be unwrapped on this machine: {e}"))
                })?;
                let key: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| unreadable(format!("{KEY_FILE} is damaged")))?;
                if rewrite {
                    self.write_key(&path, &key)?;
                }
                Ok(Some(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                self.write_key(&path, &key)?;
                Ok(Some(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    fn write_key(&self, path: &Path, key: &[u8; 32]) -> Result<(), SecretError> {
        let stored = crate::platform::protect_key(key).map_err(|e| self.io(e))?;
        fsutil::write_private(path, &stored).map_err(|e| self.io(e))
    }

    fn lock(&self) -> Result<File, SecretError> {
        let file = fsutil::open_lock_file(&self.dir.join(LOCK_FILE)).map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        Ok(file)
    }
}

/// Where the password would come from now (`None`: nowhere), for views
/// of the configuration; never the password itself.
pub(crate) fn password_origin(
    cfg: &crate::config::Config,
) -> Result<Option<&'static str>, SecretError> {
    let vault = Vault::new(&cfg.data_dir);
    Ok(resolve_password(cfg, &vault, env_password())?.map(|(_, origin)| origin.describe()))
}

/// The password to log in with, by precedence: `POS_CONNECTOR_PASSWORD`,
/// then the one stored by `--setup-password`, then `password` in
/// config.json (which `config` already warned about).
pub(crate) fn resolve_password(
    cfg: &Config,
    vault: &Vault,
    env_password: Option<String>,
) -> Result<Option<(SecretString, PasswordOrigin)>, SecretError> {
    if let Some(p) = env_password.filter(|p| !p.is_empty()) {
        return Ok(Some((SecretString::from(p), PasswordOrigin::Environment)));
    }
    if let Some(p) = vault.password()? {
        return Ok(Some((p, PasswordOrigin::Stored)));
    }
    Ok(cfg
        .password
        .clone()
        .map(|p| (p, PasswordOrigin::ConfigFile)))
}

/// Reads `POS_CONNECTOR_PASSWORD` from the process environment.
pub(crate) fn env_password() -> Option<String> {
    std::env::var(ENV_PASSWORD).ok()
}

/// Reads a password from the operator: without echo on a terminal, or one
/// line from standard input when it is not one (scripts, CI, installers).
pub(crate) fn prompt_password(prompt: &str) -> std::io::Result<SecretString> {
    use std::io::IsTerminal;
    let line = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line
    };
    let trimmed = line.trim_end_matches(['\r', '\n']).to_string();
    Ok(SecretString::from(trimmed))
}

/// Exposes a secret for the one place that must send it on the wire.
/// Keeping the call sites greppable (`secret::expose`) is the point.
pub(crate) fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

/// Compares a presented key with the configured secret in time that does
/// not depend on where they differ, nor on their lengths (no timing oracle
/// for the API key): both are hashed to 32 bytes (SHA-256), and the digests
/// are compared with `subtle`'s constant-time equality.
pub(crate) fn constant_time_eq(given: &str, expected: &SecretString) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Rewrites config.json with `password` set (or removed), keeping every
/// other key and its order, atomically and with mode 0600. Only
/// `--setup-password` calls this.
pub(crate) fn write_password_to_file(
    path: &Path,
    password: Option<&str>,
) -> Result<(), ConfigError> {
    let mut map = crate::config::read_json_object(path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rewrite_keeps_other_keys_in_order() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, r#"{"z": 1, "email": "v@shop.jo", "a": [1, 2]}"#).unwrap();
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

    #[test]
    fn key_comparison() {
        let k = SecretString::from("abc123");
        assert!(constant_time_eq("abc123", &k));
        assert!(!constant_time_eq("abc124", &k));
        assert!(!constant_time_eq("abc12", &k));
        assert!(!constant_time_eq("", &k));
        assert!(
            !constant_time_eq("abc1234", &k),
            "a longer key with the same start"
        );
        assert!(constant_time_eq("", &SecretString::from("")));
        let long = "k".repeat(4096);
        assert!(constant_time_eq(&long, &SecretString::from(long.clone())));
        assert!(!constant_time_eq(
            &long[1..],
            &SecretString::from(long.clone())
        ));
    }

    #[test]
    fn round_trip_encrypted_and_private() {
        let d = tempfile::tempdir().unwrap();
        let v = Vault::new(&d.path().join("data"));
        assert!(v.password().unwrap().is_none());
        v.set_password(Some(&SecretString::from("pa55-word".to_string())))
            .unwrap();
        let tok = StoredToken {
            secret: SecretString::from("7|tokentokentoken".to_string()),
            expires_at: Utc::now(),
            obtained_at: Utc::now(),
            refresh: None,
            meta: BTreeMap::new(),
        };
        v.save_token("laravel", &tok).unwrap();
        assert_eq!(v.password().unwrap().unwrap().expose_secret(), "pa55-word");
        assert_eq!(
            v.token("laravel").unwrap().unwrap().secret.expose_secret(),
            "7|tokentokentoken"
        );
        let raw = std::fs::read(v.path()).unwrap();
        let raw_text = String::from_utf8_lossy(&raw);
        assert!(!raw_text.contains("pa55-word"));
        assert!(!raw_text.contains("tokentoken"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["secrets.bin", "secret.key"] {
                let mode = std::fs::metadata(d.path().join("data").join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        v.forget_token("laravel").unwrap();
        assert!(v.token("laravel").unwrap().is_none());
        assert!(v.password().unwrap().is_some());
    }

    #[test]
    fn lost_key_is_a_clear_error_and_a_new_password_recovers() {
        let d = tempfile::tempdir().unwrap();
        let v = Vault::new(d.path());
        v.set_password(Some(&SecretString::from("one".to_string())))
            .unwrap();
        std::fs::write(d.path().join("secret.key"), [7u8; 32]).unwrap();
        let err = v.password().unwrap_err().to_string();
        assert!(err.contains("--setup-password"), "{err}");
        v.set_password(Some(&SecretString::from("two".to_string())))
            .unwrap();
        assert_eq!(v.password().unwrap().unwrap().expose_secret(), "two");
        let kept = std::fs::read_dir(d.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("unreadable")
            })
            .count();
        assert_eq!(kept, 1);
    }
}
