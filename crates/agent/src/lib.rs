//! pos-connector: the point-of-sale agent that turns every sale into a legal
//! e-invoice through the shop's Laravel invoicing backend and pushes it on
//! to QuickBooks Online. The binary is a thin shell over this library; see
//! ARCHITECTURE.md for the map and the invariants.

pub mod backoff;
pub mod call_stats;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod fsutil;
pub mod heartbeat;
pub mod http_client;
pub mod intake;
pub mod laravel;
pub mod log_format;
pub mod logging;
pub mod pipeline;
pub mod platform;
pub mod quickbooks;
pub mod receipt;
pub mod retry;
pub mod secret;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod sync_interval;
pub mod tax;
pub mod token;
pub mod token_check;

/// systemd's readiness protocol lives with the other per-OS code.
pub use platform::notify as systemd;
/// Giving memory back when idle (Linux; a no-op elsewhere), likewise.
pub use platform::trim;
