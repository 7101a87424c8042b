//! The retry policy for one logical backend operation: exponential backoff
//! with jitter (backon), capped, honouring the backend's `Retry-After`.
//! Which errors are worth retrying is the error type's call
//! ([`Retryable`]); the policy only decides how long to wait and when to
//! give up. One-shot CLI commands use a few attempts; the service's
//! pipeline retries jobs forever through its own schedule.

use std::future::Future;
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};

/// What an error says about trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryHint {
    /// Retrying cannot help (the server said no, bad input, needs a person).
    Never,
    /// Transient; wait at least this long if the backend said so.
    After(Option<Duration>),
}

pub(crate) trait Retryable {
    fn retry_hint(&self) -> RetryHint;
}

/// How often and how far apart a safe call is tried again.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub max_attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the operation
    /// fails with the backend's answer instead of hanging a CLI command.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (for callers that schedule their own).
    pub(crate) fn once() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The waits between attempts: the agent's one backoff
    /// ([`crate::backoff`]), from `min_delay` to `max_delay`, never sooner
    /// than the schedule.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.min_delay, self.max_delay, Jitter::Up)
    }

    /// How long to wait after the `failures`-th failure in a row (from 1).
    #[cfg(test)]
    pub(crate) fn delay_after(&self, failures: u32) -> Duration {
        self.backoff().after(failures)
    }

    /// Runs `op` (given the attempt number, from 1) until it succeeds, fails
    /// for good, or the attempts run out; `what` names it in the logs.
    pub(crate) async fn run<T, E, F, Fut>(&self, what: &str, mut op: F) -> Result<T, E>
    where
        E: Retryable + std::fmt::Display,
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let backoff = self.backoff();
        let mut attempt = 1;
        loop {
            let err = match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let RetryHint::After(asked) = err.retry_hint() else {
                return Err(err);
            };
            if attempt >= self.max_attempts {
                tracing::warn!(operation = what, attempts = attempt, error = %err, "giving up after {attempt} attempts");
                return Err(err);
            }
            if asked.is_some_and(|a| a > self.max_retry_after) {
                tracing::warn!(operation = what, error = %err, "the backend asked to wait longer than {}s; not waiting", self.max_retry_after.as_secs());
                return Err(err);
            }
            let step = backoff.after(u32::try_from(attempt).unwrap_or(u32::MAX));
            let wait = step.max(asked.unwrap_or_default());
            tracing::warn!(operation = what, attempt, error = %err, retry_in_ms = wait.as_millis() as u64, "transient failure; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(RetryHint);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl Retryable for E {
        fn retry_hint(&self) -> RetryHint {
            self.0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_and_gives_up() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let r: Result<(), E> = RetryPolicy::default()
            .run("t", |_| {
                calls += 1;
                async { Err(E(RetryHint::After(Some(Duration::from_secs(7))))) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 5);
        assert!(start.elapsed() >= Duration::from_secs(28));
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let p = RetryPolicy {
            min_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(900),
            ..RetryPolicy::default()
        };
        assert!(p.delay_after(1) >= Duration::from_secs(2));
        assert!(
            p.delay_after(1) <= Duration::from_secs(4),
            "jitter adds at most one delay"
        );
        assert!(p.delay_after(5) >= Duration::from_secs(32));
        assert_eq!(p.delay_after(40), Duration::from_secs(900));
    }

    #[tokio::test(start_paused = true)]
    async fn never_means_never() {
        let mut calls = 0;
        let r: Result<(), E> = RetryPolicy::default()
            .run("t", |_| {
                calls += 1;
                async { Err(E(RetryHint::Never)) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
