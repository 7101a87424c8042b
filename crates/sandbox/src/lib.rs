//! Simulators of the backends the agent talks to.
//!
//! They exist for three audiences: the demo (`pos-connector demo` /
//! `sandbox` run a full pipeline with no backend at hand), the tests (every
//! integration test talks to a real HTTP server on 127.0.0.1:0, not to a
//! mock of our own client), and integrators who want to try the agent on a
//! till before the shop's backend is reachable.
//!
//! A simulator is only useful if it behaves like the real thing: what
//! passes here must pass in the field. So the Laravel simulator follows
//! `contracts/laravel-api.md` to the letter (paths, status codes, JSON and
//! error shapes, Sanctum token format, Laravel's validation messages and its
//! redirects for clients that do not ask for JSON), and adds what the real
//! backend does only on a bad day, on demand: errors, 429s with
//! `Retry-After`, dropped connections before or after the work is done,
//! answers held back after the work is done, slow answers, faults at random,
//! revoked or expired tokens, disabled accounts. It can also serve with the
//! real stack's capacity: per-route service times and a bounded worker
//! pool.
//!
//! * [`http`]: the generic server machinery (serve loop with per-connection
//!   kill switch, fault injection, per-route counters), reused by every
//!   simulator.
//! * [`laravel`]: the Laravel invoicing backend.
//! * [`pool`]: a bounded worker pool with per-route service times (PHP-FPM
//!   behind nginx), for benchmarks against realistic backend capacity.
//! * [`quickbooks`]: QuickBooks Online (OAuth with rotating refresh tokens,
//!   the accounting API's subset the agent uses, its rate limits).
//! * [`pdf`]: a tiny PDF writer for the documents the simulators serve.

pub mod http;
pub mod laravel;
pub mod pdf;
pub mod pool;
pub mod quickbooks;
pub mod tax;

pub use http::{ConnKill, ExtraWork, Fault, FaultSpec, Harness, RandomFaults, ServerHandle};
pub use laravel::{
    options_from_profile, LaravelSandbox, LaravelSandboxOptions, LatencyProfile, SandboxUser,
    TillVendor, REALISTIC_WORKERS, SANDBOX_EMAIL, SANDBOX_PASSWORD,
};
pub use pdf::render_text_pdf;
pub use pool::{PoolStats, WorkerPool};
pub use quickbooks::{QuickbooksSandbox, QuickbooksSandboxOptions};

/// A client builder for the sandbox's own tests. They speak plain HTTP to
/// 127.0.0.1, but the workspace's reqwest has rustls without a crypto
/// provider (the agent installs ring), and building any client needs one.
#[cfg(test)]
pub(crate) fn test_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
