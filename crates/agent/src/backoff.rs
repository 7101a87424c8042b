//! The agent's one backoff: how long to wait after the n-th failure in a
//! row. A capped exponential schedule (backon's `ExponentialBuilder`,
//! factor 2, from `first` up to `max`) with jitter, used by everything that
//! tries again later:
//!
//! - the pipeline's jobs and its global gate (`pipeline.max_backoff_seconds`),
//! - the QuickBooks pusher's pushes,
//! - the token keeper's sign-in cooldown (`token::Cooldown`),
//! - the QuickBooks cache's refresh loop,
//! - `retry::RetryPolicy::run`'s retries within one call.
//!
//! Two jitters, by what the wait is for:
//! - [`Jitter::Up`]: the step plus up to as much again (backon's jitter),
//!   capped at `max`: never sooner than the schedule, so a backend that
//!   asked for room gets it (retries of work: jobs, pushes, calls).
//! - [`Jitter::Around`]: the capped step times 0.8 to 1.2 (background loops:
//!   a fleet of tills that failed together must not come back in step).
//!
//! The QuickBooks rate limiter's 429 pause is not a backoff of failures but
//! Intuit's own rule with a seeded jitter: it stays in `quickbooks::limiter`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::{Rng, RngExt};

/// How a step is spread so that callers that failed together do not retry
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Jitter {
    /// The schedule itself.
    #[cfg(test)]
    None,
    /// The step plus a random share of it (0 to 100 %), capped at `max`.
    Up,
    /// The capped step times a random factor from 0.8 to 1.2.
    Around,
}

/// A capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The wait after the first failure (before jitter).
    pub(crate) first: Duration,
    /// No step grows beyond this.
    pub(crate) max: Duration,
    pub(crate) jitter: Jitter,
}

/// Steps past this many doublings are all `max` (2^64 times anything is).
const MAX_DOUBLINGS: u32 = 64;

impl Backoff {
    pub(crate) const fn new(first: Duration, max: Duration, jitter: Jitter) -> Backoff {
        Backoff { first, max, jitter }
    }

    /// The schedule without jitter after `failures` failures in a row
    /// (from 1; 0 counts as 1): `first * 2^(failures-1)`, at most `max`.
    pub(crate) fn step(&self, failures: u32) -> Duration {
        let n = failures.saturating_sub(1).min(MAX_DOUBLINGS) as usize;
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(n)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// How long to wait after `failures` failures in a row (from 1).
    pub(crate) fn after(&self, failures: u32) -> Duration {
        self.after_with(failures, &mut rand::rng())
    }

    /// [`Backoff::after`] with the caller's random numbers (a seeded RNG
    /// in tests).
    pub(crate) fn after_with<R: Rng + ?Sized>(&self, failures: u32, rng: &mut R) -> Duration {
        let step = self.step(failures);
        match self.jitter {
            #[cfg(test)]
            Jitter::None => step,
            Jitter::Up => step
                .saturating_add(step.mul_f64(rng.random_range(0.0..1.0)))
                .min(self.max),
            Jitter::Around => step.mul_f64(rng.random_range(0.8..1.2)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_schedule_doubles_from_first_and_stops_at_max() {
        let b = Backoff::new(secs(2), secs(60), Jitter::None);
        let steps: Vec<u64> = (1..=8).map(|n| b.step(n).as_secs()).collect();
        assert_eq!(steps, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.step(0), secs(2), "0 failures counts as the first");
        assert_eq!(b.step(u32::MAX), secs(60), "no overflow, no panic");
        assert_eq!(b.after(5), secs(32), "no jitter: the schedule itself");
        // A first step above the cap is the cap.
        assert_eq!(
            Backoff::new(secs(10), secs(3), Jitter::None).step(1),
            secs(3)
        );
        // Sub-second steps stay exact.
        let fast = Backoff::new(Duration::from_millis(500), secs(30), Jitter::None);
        assert_eq!(fast.step(3), Duration::from_secs(2));
    }

    #[test]
    fn up_jitter_is_never_sooner_than_the_schedule_nor_above_max() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let b = Backoff::new(secs(2), secs(900), Jitter::Up);
        let mut spread = std::collections::BTreeSet::new();
        for n in 1..=20 {
            for _ in 0..50 {
                let d = b.after_with(n, &mut rng);
                let step = b.step(n);
                assert!(
                    d >= step && d <= (step * 2).min(b.max),
                    "{n}: {d:?} (seed {seed})"
                );
                spread.insert(d);
            }
        }
        assert!(spread.len() > 100, "the waits differ (seed {seed})");
        // At the cap, the cap exactly.
        assert_eq!(b.after_with(30, &mut rng), secs(900));
    }

    #[test]
    fn around_jitter_stays_within_twenty_percent() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let b = Backoff::new(secs(30), secs(900), Jitter::Around);
        let (mut below, mut above) = (false, false);
        for n in [1, 2, 5, 30] {
            for _ in 0..200 {
                let d = b.after_with(n, &mut rng);
                let step = b.step(n);
                assert!(
                    d >= step.mul_f64(0.8) && d <= step.mul_f64(1.2),
                    "{n}: {d:?} (seed {seed})"
                );
                below |= d < step;
                above |= d > step;
            }
        }
        assert!(below && above, "both sides of the step (seed {seed})");
    }

    #[test]
    fn the_same_seed_gives_the_same_waits() {
        let b = Backoff::new(secs(1), secs(300), Jitter::Around);
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..10)
                .map(|n| b.after_with(n, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
