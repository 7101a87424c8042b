//! What differs by operating system, in one place: how a stop request
//! arrives (signals, console events, the service manager), whether the
//! console is the system journal, where the config lives by default, how
//! the agent registers itself as a service, and service readiness
//! notifications, the system's own log, key and folder protection. The rest of the agent calls these functions and carries
//! no `cfg(unix)` / `cfg(windows)` of its own.
//!
//! Each system's part is one file: `unix.rs` (Linux with systemd) and
//! `windows.rs` (the Service Control Manager, console control events,
//! %ProgramData%), with Windows' `win_security.rs` (DPAPI, the data
//! folder's ACL) and `win_eventlog.rs` (the Event Log). `notify.rs` is systemd's readiness protocol, which does
//! nothing where there is no systemd; `trim.rs` gives memory back when the
//! agent goes quiet (glibc's `malloc_trim`, `MADV_PAGEOUT`; a no-op
//! elsewhere).

pub(crate) mod notify;
pub(crate) mod trim;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as os;

#[cfg(windows)]
mod win_eventlog;
#[cfg(windows)]
mod win_security;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

use std::future::Future;
use std::path::PathBuf;

pub(crate) use os::ServiceManager;

/// Completes when the agent is asked to stop: SIGTERM / SIGINT on Unix;
/// Ctrl-C, Ctrl-Break, console close, logoff and shutdown on Windows. The
/// handlers are installed when this is called, not when the future is first
/// polled, so a stop that arrives while the agent is still starting is not
/// lost to the default action (an immediate kill).
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> {
    let os_signal = os::shutdown_signal();
    async move {
        os_signal.await;
        tracing::info!("stop requested; shutting down");
    }
}

/// Exit codes after which the service manager must not restart the agent:
/// 2 (usage or configuration) and 3 (a person must act) will not fix
/// themselves, and a restart every few minutes would only bury the reason in
/// the log. Every other failure is restarted. The systemd unit says it with
/// `RestartPreventExitStatus=`, the Windows service by ending without
/// reporting Stopped (which the SCM's recovery treats as a crash) for every
/// other code; tests hold both to this list.
pub(crate) const NO_RESTART_EXITS: [u8; 2] = [2, 3];

/// Whether a service that ended with `exit` should be restarted by its
/// service manager ([`NO_RESTART_EXITS`]; 0 is a clean stop). systemd
/// reads the rule from the unit; the Windows service asks here.
#[cfg(any(windows, test))]
pub(crate) fn restart_after_exit(exit: u8) -> bool {
    exit != 0 && !NO_RESTART_EXITS.contains(&exit)
}

/// Runs the agent (`body`, returning the exit code) as the service manager
/// expects: under the Windows SCM's dispatcher when it started the process
/// (`run --service`), reporting Running and Stopped and turning Stop,
/// Shutdown and Preshutdown into [`shutdown_signal`]; directly elsewhere
/// (systemd needs nothing more than the process and its signals).
pub(crate) fn run_as_service(body: impl FnOnce() -> u8 + Send + 'static) -> u8 {
    os::run_as_service(Box::new(body))
}

/// The secrets store's key as written to disk: wrapped with DPAPI (machine
/// scope) on Windows, so a copied data folder cannot be decrypted on
/// another machine; as it is on Unix, where the file's mode 0600 in a 0700
/// folder is the protection.
pub(crate) fn protect_key(key: &[u8]) -> std::io::Result<Vec<u8>> {
    #[cfg(windows)]
    return win_security::protect_key(key);
    #[cfg(not(windows))]
    Ok(key.to_vec())
}

/// The key from its stored form, and whether it should be written again in
/// the protected form (a key stored before the wrapping existed).
pub(crate) fn unprotect_key(stored: &[u8]) -> std::io::Result<(Vec<u8>, bool)> {
    #[cfg(windows)]
    return win_security::unprotect_key(stored);
    #[cfg(not(windows))]
    Ok((stored.to_vec(), false))
}

/// Restricts a folder to the agent: an ACL for SYSTEM, Administrators and
/// `account` only (inherited by everything in it). Windows only: on Unix
/// the unit's `StateDirectory` and the service user own the folders.
#[cfg(windows)]
pub(crate) fn restrict_folder(dir: &std::path::Path, account: Option<&str>) -> std::io::Result<()> {
    win_security::restrict_folder(dir, account)
}

/// The system's own log for the service's warnings and errors, beside the
/// console and the files: the Windows Event Log (source `pos-connector`);
/// none on Unix, where systemd's journal already takes the console.
pub(crate) fn system_log_layer<S>() -> Option<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    os::system_log_layer()
}

/// Which console stream a log layer writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// True when `stream` is connected to the systemd journal (systemd sets
/// `JOURNAL_STREAM=<device>:<inode>` for the stream it gave the service;
/// a pipe into something else, e.g. `| tee`, does not match).
pub(crate) fn stream_is_journal(stream: Stream) -> bool {
    match std::env::var("JOURNAL_STREAM") {
        Ok(value) => os::stream_matches_journal(stream, &value),
        Err(_) => false,
    }
}

/// Where the config file is looked for when neither `--config` nor
/// `POS_CONNECTOR_CONFIG` names one, in order: beside the working directory
/// first (a developer's checkout, an unpacked zip), then the system's place
/// (`/etc/pos-connector/config.json`, `%ProgramData%\pos-connector\config.json`).
pub(crate) fn default_config_paths() -> Vec<PathBuf> {
    let mut paths = vec![
        PathBuf::from("config/config.json"),
        PathBuf::from("config.json"),
    ];
    paths.extend(os::system_config_path());
    paths
}

/// What `pos-connector service status` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceState {
    NotInstalled,
    Stopped,
    Running,
    /// Starting, stopping, failed...: the manager's own word.
    Other(String),
}

/// Why a service operation failed. `Usage`: the operator must do something
/// first (run as root / Administrator, install it); `Failed`: the system
/// refused or is not there.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

/// How `service install` registers the agent.
#[derive(Debug, Clone)]
pub(crate) struct InstallOptions {
    /// The executable the service runs (this one, by default).
    pub(crate) exe: PathBuf,
    /// The config file the service reads (absolute).
    pub(crate) config: PathBuf,
    /// Windows: a named account (`.\\till`, `DOMAIN\\user`) instead of
    /// LocalSystem. Linux: the system user (default `pos-connector`).
    pub(crate) account: Option<String>,
    /// Windows: the named account's password.
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) password: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packaged unit (and the one `service install` writes from it)
    /// restarts on failure except on [`NO_RESTART_EXITS`], as Windows does.
    #[test]
    fn the_systemd_unit_restarts_exactly_what_windows_restarts() {
        let unit = include_str!("../../../../packaging/pos-connector.service");
        assert!(unit.lines().any(|l| l == "Restart=on-failure"), "{unit}");
        let prevent: Vec<u8> = unit
            .lines()
            .find_map(|l| l.strip_prefix("RestartPreventExitStatus="))
            .expect("RestartPreventExitStatus= in the unit")
            .split_whitespace()
            .map(|c| c.parse::<u8>().unwrap())
            .collect();
        assert_eq!(prevent, NO_RESTART_EXITS);
        assert!(!restart_after_exit(0));
        assert!(restart_after_exit(1));
        assert!(!restart_after_exit(2));
        assert!(!restart_after_exit(3));
        assert!(restart_after_exit(101), "a panic's exit code is restarted");
    }
}
