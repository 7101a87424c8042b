//! pos-connector: the point-of-sale agent that turns every sale into a legal
//! e-invoice through the shop's Laravel invoicing backend and pushes it on
//! to QuickBooks Online. The binary is a thin shell over this library; see
//! ARCHITECTURE.md for the map and the invariants.

// The public API is what the binary, the tests and the bench use; the rest
// is pub(crate), and this lint keeps it so.
#![warn(unreachable_pub)]
#![warn(missing_docs)]

pub(crate) mod backoff;
pub(crate) mod call_stats;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod demo;
pub(crate) mod fsutil;
pub mod heartbeat;
pub mod http_client;
pub mod intake;
pub mod laravel;
pub(crate) mod log_format;
pub mod logging;
pub(crate) mod pipeline;
pub(crate) mod platform;
pub mod quickbooks;
pub mod receipt;
pub mod retry;
pub mod secret;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod sync_interval;
pub(crate) mod tax;
pub mod token;
pub mod token_check;

/// systemd's readiness protocol lives with the other per-OS code.
pub(crate) use platform::notify as systemd;
/// Giving memory back when idle (Linux; a no-op elsewhere), likewise.
pub(crate) use platform::trim;
