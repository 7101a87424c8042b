//! QuickBooks Online (contract: shared/contracts/quickbooks-online.md):
//! connecting and keeping the rotating tokens ([`oauth`], through the same
//! generic [`crate::token::TokenKeeper`] as the Laravel side), the
//! accounting API ([`client`]: typed [`model`], one [`error`] type, the
//! per-realm rate [`limiter`]), the browser [`callback`] of the connect
//! flow, the [`push`] of invoices, and the local [`cache`] of the company's
//! customers, vendors, items and invoices with its [`search`].

pub(crate) mod cache;
pub(crate) mod callback;
pub mod client;
pub(crate) mod error;
pub mod limiter;
pub mod model;
pub mod oauth;
pub(crate) mod push;
pub(crate) mod search;

use std::sync::Arc;

pub use cache::{
    CacheCounts, CacheError, CacheStatus, EntityRefresh, QboCache, RefreshKind, RefreshReport,
};
pub use client::QboClient;
pub use error::QboError;
pub(crate) use oauth::{ConnectionStore, OAuthClient};
pub use push::{PushOutcome, PushSettings, Pusher};
pub use search::{IndexStatus, SearchAnswer, SearchError, SearchHit};

use crate::call_stats::CallStats;
use crate::clock::Clock;
use crate::config::{is_loopback_host, Config};

/// The HTTP client for Intuit (or a simulator): the configured timeout,
/// no redirects, no proxy for a simulator on this machine.
pub fn http_client(cfg: &Config) -> reqwest::Client {
    let qb = &cfg.quickbooks;
    let mut builder = crate::http_client::builder();
    if qb.api_base.host_str().is_some_and(is_loopback_host)
        && qb.token_url.host_str().is_some_and(is_loopback_host)
    {
        builder = builder.no_proxy();
    }
    builder
        // Intuit cuts requests at 120 s; a batch may take a while.
        .timeout(cfg.request_timeout.max(std::time::Duration::from_secs(5)))
        .connect_timeout(cfg.request_timeout.min(std::time::Duration::from_secs(15)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pos-connector/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's settings are valid")
}

/// The accounting client for the configured app and stored connection
/// (which may be missing or need reconnecting: the keeper then says so).
pub fn connect(cfg: &Config, clock: Arc<dyn Clock>) -> Result<QboClient, String> {
    let http = http_client(cfg);
    let stats = CallStats::new("quickbooks");
    let keeper = oauth::keeper(
        &cfg.quickbooks,
        &cfg.data_dir,
        http.clone(),
        clock,
        stats.clone(),
    )?;
    Ok(QboClient::new(
        http,
        cfg.quickbooks.api_base.clone(),
        keeper,
        cfg.quickbooks.limits,
    )
    .with_stats(stats))
}
