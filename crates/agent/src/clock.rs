//! Wall-clock time, behind a trait so that tests can drive token expiry with
//! tokio's paused clock instead of waiting for real hours to pass.

use std::fmt;

use chrono::{DateTime, Utc};

/// Wall time, behind a trait so that tests can run on tokio's paused clock.
pub trait Clock: Send + Sync + fmt::Debug {
    /// What time it is, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock: what the agent uses in production.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that moves with tokio's clock: starts at the real time of its
/// creation and advances by tokio's elapsed time, so under
/// `#[tokio::test(start_paused = true)]` a `tokio::time::advance(24h)` makes
/// tokens expire exactly as a day would.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the machine's time and then follows tokio's clock (paused in tests).
    pub fn new() -> TokioClock {
        TokioClock {
            base: Utc::now(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        self.base + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }
}
