//! `pos-connector run`: the long-running agent. For now it keeps the
//! Laravel token fresh ahead of expiry even when no sale is flowing, so the
//! first sale of the morning never waits for a login; the outbox, intake
//! and pipeline join it here. Shutdown is passed in as a future so tests
//! (and the signal handler) decide when it stops.

use std::future::Future;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::laravel;
use crate::retry::RetryPolicy;

pub async fn run(cfg: &Config, clock: Arc<dyn Clock>, shutdown: impl Future<Output = ()>) {
    let client = laravel::connect(cfg, clock, RetryPolicy::default());
    let keeper = client.keeper().clone();
    let st = keeper.status();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        backend = %cfg.base_url,
        email = %cfg.email,
        has_token = st.has_token,
        expires_at = ?st.expires_at.map(|t| t.to_rfc3339()),
        "pos-connector running"
    );
    keeper.keep_fresh(shutdown).await;
    tracing::info!("pos-connector stopped");
}

/// Completes on Ctrl-C, or SIGTERM on Unix (systemd's stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested; shutting down");
}
