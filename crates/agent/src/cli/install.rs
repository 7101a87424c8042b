//! `pos-connector service install|uninstall|start|stop|status` (the
//! system's service manager, through `platform`), `completions SHELL` and
//! `man` (the page the packages install).

use clap::{CommandFactory, Subcommand};
use serde_json::json;

use super::{print_json, Cli, Failure, Outcome};
use crate::config;
use crate::platform::{InstallOptions, ServiceError, ServiceManager, ServiceState};

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Register the agent with the system's service manager (systemd, or
    /// the Windows Service Control Manager): starts at boot, restarts on
    /// failure, runs `pos-connector run` with this config
    Install {
        /// The account the service runs as [default: Linux: the
        /// `pos-connector` user; Windows: LocalSystem]
        #[arg(long, value_name = "ACCOUNT")]
        account: Option<String>,
        /// Windows: the password of --account (prompted when not given)
        #[arg(long, value_name = "PASSWORD", requires = "account")]
        password: Option<String>,
        /// Start it now as well
        #[arg(long)]
        start: bool,
    },
    /// Stop the service and remove its registration (data, logs and config are kept)
    Uninstall,
    /// Start the installed service
    Start,
    /// Stop the service (in-flight work finishes first)
    Stop,
    /// Is the service installed and running? (exit 0 running, 1 not)
    Status,
}

fn service_failure(e: ServiceError) -> Failure {
    match e {
        ServiceError::Usage(m) => Failure::usage(m),
        ServiceError::Failed(m) => Failure::failed(m),
    }
}

pub(crate) fn service(cli: &Cli, cmd: &ServiceCommand) -> Outcome {
    let manager = ServiceManager::default();
    let report = |done: Vec<String>| {
        if cli.json {
            print_json(&json!({"ok": true, "manager": manager.name(), "done": done}));
        } else {
            for line in done {
                println!("{line}");
            }
        }
    };
    match cmd {
        ServiceCommand::Install {
            account,
            password,
            start,
        } => {
            // The service reads the config the operator is using now, so
            // a broken one is refused here rather than at the next boot.
            let path = config::locate(
                cli.config.as_deref(),
                crate::platform::default_config_paths(),
            )?;
            let cfg = super::load_checked(&path)?;
            let exe = std::env::current_exe()
                .map_err(|e| Failure::failed(format!("cannot find this executable: {e}")))?;
            let opts = InstallOptions {
                exe,
                config: config::paths::absolute(&cfg.path),
                account: account.clone(),
                password: password.clone(),
            };
            let writable = vec![
                cfg.data_dir.clone(),
                cfg.log_dir.clone(),
                cfg.pdf_dir.clone(),
                cfg.invoice_folder.clone(),
                cfg.receipts.dir.clone(),
            ];
            let mut done = manager.install(&opts, &writable).map_err(service_failure)?;
            if *start {
                manager.start().map_err(service_failure)?;
                done.push("started".into());
            }
            report(done);
            Ok(())
        }
        ServiceCommand::Uninstall => {
            report(manager.uninstall().map_err(service_failure)?);
            Ok(())
        }
        ServiceCommand::Start => {
            manager.start().map_err(service_failure)?;
            report(vec!["started".into()]);
            Ok(())
        }
        ServiceCommand::Stop => {
            manager.stop().map_err(service_failure)?;
            report(vec!["stopped".into()]);
            Ok(())
        }
        ServiceCommand::Status => {
            let state = manager.status().map_err(service_failure)?;
            let (word, running) = match &state {
                ServiceState::NotInstalled => ("not installed".to_string(), false),
                ServiceState::Stopped => ("stopped".to_string(), false),
                ServiceState::Running => ("running".to_string(), true),
                ServiceState::Other(s) => (s.clone(), false),
            };
            if cli.json {
                print_json(&json!({"ok": running, "manager": manager.name(), "state": word}));
            } else {
                println!("pos-connector service ({}): {word}", manager.name());
            }
            if running {
                Ok(())
            } else {
                // Already said on stdout; the exit code carries it.
                Err(Failure::failed(format!("the service is {word}")))
            }
        }
    }
}

/// `pos-connector completions SHELL`: the script for that shell on stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pos-connector", &mut script);
    write_stdout(&script)
}

/// `pos-connector man`: the man page (roff) on stdout.
pub(crate) fn man() -> Outcome {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| Failure::failed(format!("cannot render the man page: {e}")))?;
    write_stdout(&page)
}

/// Writes generated text; a reader that stops early (`| head`) is fine.
fn write_stdout(bytes: &[u8]) -> Outcome {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::failed(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}
