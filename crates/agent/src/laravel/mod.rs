//! The Laravel invoicing backend (contract: shared/contracts/laravel-api.md):
//! signing in ([`auth`]), the invoice calls ([`client`]), their data
//! ([`model`]) and errors ([`error`]); the connector channel, keyed by the
//! shop's API key ([`connector`]).

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod connector;
pub(crate) mod error;
pub(crate) mod model;

use std::sync::Arc;

pub(crate) use auth::{LaravelLogin, LaravelToken, PasswordProvider};
pub use client::{CreateOutcome, DocumentKind, Download, LaravelClient, SubmitOutcome};
pub use connector::{ConnectionTest, ConnectorClient, ConnectorError, HeartbeatAnswer};
pub use error::ApiError;
pub use model::{InvoiceStatus, NewInvoice};

use crate::clock::Clock;
use crate::config::Config;
use crate::retry::RetryPolicy;
use crate::secret::{self, Vault};
use crate::token::TokenKeeper;

/// The HTTP client for the backend: the configured timeout on every
/// request, and no redirects (Laravel redirects to an HTML login page when
/// it thinks it is talking to a browser; that must surface as an error,
/// not be followed).
pub(crate) fn http_client(cfg: &Config) -> reqwest::Client {
    let mut builder = crate::http_client::builder();
    // A backend on this machine is never reached through a proxy, even when
    // the till's environment sets HTTP_PROXY for the outside world.
    if cfg
        .base_url
        .host_str()
        .is_some_and(crate::config::is_loopback_host)
    {
        builder = builder.no_proxy();
    }
    builder
        .timeout(cfg.request_timeout)
        .connect_timeout(cfg.request_timeout.min(std::time::Duration::from_secs(15)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pos-connector/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's settings are valid")
}

/// The password provider the agent uses: asked anew at each sign-in, by the
/// precedence of `secret::resolve_password`.
pub(crate) fn configured_password(cfg: &Config, vault: &Vault) -> PasswordProvider {
    let cfg = cfg.clone();
    let vault = vault.clone();
    Arc::new(
        move || match secret::resolve_password(&cfg, &vault, secret::env_password()) {
            Ok(found) => found.map(|(p, _)| p),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the stored password");
                cfg.password.clone()
            }
        },
    )
}

/// Builds the client from the configuration: the keeper starts with the
/// token persisted by an earlier run, else the legacy `token` from
/// config.json while it is valid, so a restart or an upgrade does not
/// force a login.
pub fn connect(cfg: &Config, clock: Arc<dyn Clock>, retry: RetryPolicy) -> LaravelClient {
    let vault = Vault::new(&cfg.data_dir);
    let http = http_client(cfg);
    let stats = crate::call_stats::CallStats::new("laravel");
    let login = LaravelLogin::new(
        http.clone(),
        cfg.base_url.clone(),
        cfg.email.clone(),
        configured_password(cfg, &vault),
        cfg.token_lifetime,
        clock.clone(),
        Some(vault),
    )
    .with_stats(stats.clone());
    let now = clock.now();
    let initial = login
        .restore()
        .or_else(|| {
            cfg.legacy_token.as_ref().map(|t| LaravelToken {
                secret: t.token.clone(),
                expires_at: t.expires_at,
                // Unknown: the keeper then refreshes it a whole
                // `refresh_before_minutes` ahead of its expiry.
                obtained_at: None,
                vendor_id: cfg.vendor_id,
            })
        })
        .filter(|t| t.expires_at > now);
    if let Some(t) = &initial {
        tracing::debug!(expires_at = %t.expires_at.to_rfc3339(), "starting with a stored token");
    }
    let keeper = Arc::new(TokenKeeper::new(login, clock, cfg.refresh_before, initial));
    LaravelClient::new(http, cfg.base_url.clone(), keeper, retry).with_stats(stats)
}
