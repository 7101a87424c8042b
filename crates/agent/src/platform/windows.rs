//! Windows: console control events, %ProgramData%\pos-connector, and the
//! Service Control Manager.

use std::future::Future;
use std::path::PathBuf;

use super::{InstallOptions, ServiceError, ServiceState, Stream};

/// Ctrl-C, Ctrl-Break, the console window closed, the user logging off and
/// the system shutting down all stop `run` cleanly (Windows gives a console
/// program a few seconds after close/logoff/shutdown before it kills it).
pub(super) fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::windows;
    let c = windows::ctrl_c().ok();
    let brk = windows::ctrl_break().ok();
    let close = windows::ctrl_close().ok();
    let logoff = windows::ctrl_logoff().ok();
    let shutdown = windows::ctrl_shutdown().ok();
    async move {
        async fn next<T: Recv>(s: Option<T>) {
            match s {
                Some(mut s) => s.recv_one().await,
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(c) => {}
            _ = next(brk) => {}
            _ = next(close) => {}
            _ = next(logoff) => {}
            _ = next(shutdown) => {}
        }
    }
}

/// One console event stream, whatever its type.
trait Recv {
    async fn recv_one(&mut self);
}

macro_rules! recv_impl {
    ($($t:ty),*) => {$(
        impl Recv for $t {
            async fn recv_one(&mut self) {
                let _ = self.recv().await;
            }
        }
    )*};
}
recv_impl!(
    tokio::signal::windows::CtrlC,
    tokio::signal::windows::CtrlBreak,
    tokio::signal::windows::CtrlClose,
    tokio::signal::windows::CtrlLogoff,
    tokio::signal::windows::CtrlShutdown
);

/// There is no journal on Windows (the Event Log is a separate sink).
pub(super) fn stream_matches_journal(_stream: Stream, _journal: &str) -> bool {
    false
}

/// `%ProgramData%\pos-connector\config.json` (C:\ProgramData on every
/// Windows since Vista).
pub(super) fn system_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
    Some(base.join("pos-connector").join("config.json"))
}

/// The Service Control Manager (not yet wired: see README, "Install on a
/// Windows till").
#[derive(Default)]
pub struct ServiceManager;

const NOT_YET: &str = "registering the Windows service is not available in this build yet; \
     run `pos-connector.exe run` in a console, or under a service wrapper (README, \"Install on a Windows till\")";

impl ServiceManager {
    pub fn name(&self) -> &'static str {
        "Windows Service Control Manager"
    }
    pub fn install(
        &self,
        _opts: &InstallOptions,
        _writable: &[PathBuf],
    ) -> Result<Vec<String>, ServiceError> {
        Err(ServiceError::Failed(NOT_YET.into()))
    }
    pub fn uninstall(&self) -> Result<Vec<String>, ServiceError> {
        Err(ServiceError::Failed(NOT_YET.into()))
    }
    pub fn start(&self) -> Result<(), ServiceError> {
        Err(ServiceError::Failed(NOT_YET.into()))
    }
    pub fn stop(&self) -> Result<(), ServiceError> {
        Err(ServiceError::Failed(NOT_YET.into()))
    }
    pub fn status(&self) -> Result<ServiceState, ServiceError> {
        Err(ServiceError::Failed(NOT_YET.into()))
    }
}
