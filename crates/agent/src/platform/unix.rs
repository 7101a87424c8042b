//! Linux (and other Unixes): SIGTERM / SIGINT, the journal's stream check,
//! `/etc/pos-connector/config.json`, and systemd as the service manager
//! (the same unit the .deb ships, packaging/pos-connector.service).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{InstallOptions, ServiceError, ServiceState, Stream};

pub(super) fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        match (term, int) {
            (Some(mut term), Some(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// systemd runs the process as it is: nothing to dispatch.
pub(super) fn run_as_service(body: Box<dyn FnOnce() -> u8 + Send>) -> u8 {
    body()
}

/// The journal takes the console already: no other system log.
pub(super) fn system_log_layer<S>() -> Option<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    None
}

/// `JOURNAL_STREAM` is `<device>:<inode>` of the journal's socket; the
/// stream is the journal when its file has the same device and inode.
pub(super) fn stream_matches_journal(stream: Stream, journal: &str) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal.trim().split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let fd = match stream {
        Stream::Stdout => std::io::stdout().as_fd().try_clone_to_owned(),
        Stream::Stderr => std::io::stderr().as_fd().try_clone_to_owned(),
    };
    match fd.map(std::fs::File::from).and_then(|f| f.metadata()) {
        Ok(meta) => meta.dev() == dev && meta.ino() == ino,
        Err(_) => false,
    }
}

pub(super) fn system_config_path() -> Option<PathBuf> {
    Some(PathBuf::from("/etc/pos-connector/config.json"))
}

/// The unit as shipped; `service install` writes it with this machine's
/// executable, config and account when no package installed it.
pub(crate) const UNIT: &str = include_str!("../../../../packaging/pos-connector.service");
pub(crate) const UNIT_NAME: &str = "pos-connector.service";
/// Where packages put units (then `service install` only enables it).
const PACKAGED_UNIT_DIRS: [&str; 2] = ["/usr/lib/systemd/system", "/lib/systemd/system"];
/// The folders systemd creates for the unit (StateDirectory, LogsDirectory):
/// always writable, so they need no ReadWritePaths line.
const UNIT_FOLDERS: [&str; 2] = ["/var/lib/pos-connector", "/var/log/pos-connector"];

/// systemd through `systemctl`. The unit folder can be moved with
/// `POS_CONNECTOR_SYSTEMD_UNIT_DIR` (packaging and tests; default
/// /etc/systemd/system), `systemctl` is found on PATH.
pub(crate) struct ServiceManager {
    unit_dir: PathBuf,
}

impl Default for ServiceManager {
    fn default() -> Self {
        ServiceManager {
            unit_dir: std::env::var_os("POS_CONNECTOR_SYSTEMD_UNIT_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc/systemd/system")),
        }
    }
}

impl ServiceManager {
    pub(crate) fn name(&self) -> &'static str {
        "systemd"
    }

    fn unit_path(&self) -> PathBuf {
        self.unit_dir.join(UNIT_NAME)
    }

    fn packaged_unit(&self) -> Option<PathBuf> {
        if std::env::var_os("POS_CONNECTOR_SYSTEMD_UNIT_DIR").is_some() {
            return None;
        }
        PACKAGED_UNIT_DIRS
            .iter()
            .map(|d| Path::new(d).join(UNIT_NAME))
            .find(|p| p.is_file())
    }

    /// Writes the unit (unless a package installed one), then
    /// `systemctl daemon-reload` and `systemctl enable`. Returns what was
    /// done, one line each.
    pub(crate) fn install(
        &self,
        opts: &InstallOptions,
        writable: &[PathBuf],
    ) -> Result<Vec<String>, ServiceError> {
        let mut done = Vec::new();
        match self.packaged_unit() {
            Some(packaged) => done.push(format!(
                "using the packaged unit {} (its config is /etc/pos-connector/config.json)",
                packaged.display()
            )),
            None => {
                let unit = render_unit(opts, writable);
                let path = self.unit_path();
                write_unit(&path, &unit).map_err(|e| {
                    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                        " (run it as root: sudo pos-connector service install)"
                    } else {
                        ""
                    };
                    ServiceError::Usage(format!("cannot write {}: {e}{hint}", path.display()))
                })?;
                done.push(format!("wrote {}", path.display()));
                let user = opts.account.as_deref().unwrap_or("pos-connector");
                if !user_exists(user) {
                    done.push(format!(
                        "warning: the user {user} does not exist yet; create it before starting: \
                         sudo useradd --system --user-group --home-dir /var/lib/pos-connector \
                         --shell /usr/sbin/nologin {user}"
                    ));
                }
            }
        }
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", UNIT_NAME])?;
        done.push(format!("enabled {UNIT_NAME} (starts at boot)"));
        Ok(done)
    }

    pub(crate) fn uninstall(&self) -> Result<Vec<String>, ServiceError> {
        let mut done = Vec::new();
        // Stopping a unit that is not running is fine; a missing one too.
        let _ = systemctl(&["stop", UNIT_NAME]);
        let _ = systemctl(&["disable", UNIT_NAME]);
        let path = self.unit_path();
        match std::fs::remove_file(&path) {
            Ok(()) => done.push(format!("removed {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ServiceError::Usage(format!(
                    "cannot remove {}: {e} (run it as root)",
                    path.display()
                )))
            }
        }
        if let Some(p) = self.packaged_unit() {
            done.push(format!(
                "{} belongs to the package: remove it with `apt remove pos-connector`",
                p.display()
            ));
        }
        systemctl(&["daemon-reload"])?;
        done.push(format!(
            "stopped and disabled {UNIT_NAME}; data, logs and config are kept"
        ));
        Ok(done)
    }

    pub(crate) fn start(&self) -> Result<(), ServiceError> {
        self.require_installed()?;
        systemctl(&["start", UNIT_NAME])
    }

    pub(crate) fn stop(&self) -> Result<(), ServiceError> {
        self.require_installed()?;
        systemctl(&["stop", UNIT_NAME])
    }

    fn require_installed(&self) -> Result<(), ServiceError> {
        match self.status()? {
            ServiceState::NotInstalled => Err(ServiceError::Usage(
                "the service is not installed: run `sudo pos-connector service install` first"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn status(&self) -> Result<ServiceState, ServiceError> {
        let out = run_systemctl(&[
            "show",
            "--property=LoadState,ActiveState,SubState",
            UNIT_NAME,
        ])?;
        if !out.status.success() {
            return Err(failure("show", &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let prop = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        Ok(
            match (prop("LoadState").as_str(), prop("ActiveState").as_str()) {
                ("not-found", _) => ServiceState::NotInstalled,
                (_, "active") => ServiceState::Running,
                (_, "inactive") => ServiceState::Stopped,
                (_, other) => ServiceState::Other(format!("{other} ({})", prop("SubState"))),
            },
        )
    }
}

/// The shipped unit with this install's executable, config, account and
/// the config's folders outside the unit's own (ProtectSystem=strict makes
/// everything else read-only; a leading `-` lets the unit start before a
/// folder exists).
pub(crate) fn render_unit(opts: &InstallOptions, writable: &[PathBuf]) -> String {
    let mut out = String::new();
    for line in UNIT.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str(&format!("ExecStart={} run\n", opts.exe.display()));
        } else if line.starts_with("Environment=POS_CONNECTOR_CONFIG=") {
            out.push_str(&format!(
                "Environment=POS_CONNECTOR_CONFIG={}\n",
                opts.config.display()
            ));
        } else if let (Some(account), true) = (&opts.account, line.starts_with("User=")) {
            out.push_str(&format!("User={account}\n"));
        } else if opts.account.is_some() && line.starts_with("Group=") {
            // The named account's own primary group.
        } else if line.starts_with("[Install]") {
            for dir in writable {
                if !UNIT_FOLDERS.iter().any(|f| dir.starts_with(f)) {
                    // Inserted before [Install], i.e. still in [Service].
                    out.push_str(&format!("ReadWritePaths=-{}\n", dir.display()));
                }
            }
            if !writable.is_empty() {
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Whether the system knows `user` (through NSS, as systemd will look it
/// up); when `getent` itself is missing, assume so.
fn user_exists(user: &str) -> bool {
    match Command::new("getent").args(["passwd", user]).output() {
        Ok(out) => out.status.success(),
        Err(_) => true,
    }
}

fn write_unit(path: &Path, unit: &str) -> std::io::Result<()> {
    let mut file = crate::fsutil::AtomicFile::create(path)?;
    file.write_all(unit.as_bytes())?;
    file.commit_with_mode(0o644)?;
    Ok(())
}

fn run_systemctl(args: &[&str]) -> Result<std::process::Output, ServiceError> {
    Command::new("systemctl").args(args).output().map_err(|e| {
        ServiceError::Failed(format!(
            "cannot run systemctl ({e}): this system does not use systemd; run `pos-connector run` \
             under its own service manager instead"
        ))
    })
}

fn systemctl(args: &[&str]) -> Result<(), ServiceError> {
    let out = run_systemctl(args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failure(args[0], &out))
    }
}

fn failure(verb: &str, out: &std::process::Output) -> ServiceError {
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let message = format!("systemctl {verb} failed: {said}");
    if said.contains("Access denied") || said.contains("authentication") {
        ServiceError::Usage(format!("{message} (run it as root)"))
    } else {
        ServiceError::Failed(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_unit_runs_this_exe_with_this_config_and_opens_outside_folders() {
        let opts = InstallOptions {
            exe: PathBuf::from("/opt/pos/bin/pos-connector"),
            config: PathBuf::from("/srv/pos/config.json"),
            account: Some("till".into()),
            password: None,
        };
        let unit = render_unit(
            &opts,
            &[
                PathBuf::from("/var/lib/pos-connector/pdfs"),
                PathBuf::from("/srv/pos/inbox"),
            ],
        );
        assert!(
            unit.contains("\nExecStart=/opt/pos/bin/pos-connector run\n"),
            "{unit}"
        );
        assert!(unit.contains("\nEnvironment=POS_CONNECTOR_CONFIG=/srv/pos/config.json\n"));
        assert!(unit.contains("\nUser=till\n") && !unit.contains("\nGroup="));
        assert!(unit.contains("\nReadWritePaths=-/srv/pos/inbox\n"));
        assert!(!unit.contains("ReadWritePaths=-/var/lib"));
        let service = unit.split("[Install]").next().unwrap();
        assert!(service.contains("ReadWritePaths=-/srv/pos/inbox"));
    }
}
