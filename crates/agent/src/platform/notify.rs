//! Talking to systemd when run as a `Type=notify` service: "ready" once
//! the agent is taking sales, watchdog pings while it is healthy,
//! "stopping" on shutdown. Without `NOTIFY_SOCKET` (a terminal, Windows,
//! tests) every call does nothing.

use std::time::Duration;

/// Tells systemd the service is up (and what it is doing).
pub(crate) fn ready(status: &str) {
    #[cfg(unix)]
    {
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
    }
    #[cfg(not(unix))]
    let _ = status;
}

pub(crate) fn stopping() {
    #[cfg(unix)]
    {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

/// One watchdog ping.
pub(crate) fn watchdog_ping() {
    #[cfg(unix)]
    {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

/// How often to ping, when systemd's watchdog is on (`WatchdogSec=`):
/// half its timeout, as sd_watchdog_enabled(3) advises.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    #[cfg(unix)]
    {
        sd_notify::watchdog_enabled().map(|d| d / 2)
    }
    #[cfg(not(unix))]
    {
        None
    }
}
