//! A per-realm rate limiter that keeps the agent under QuickBooks' limits
//! by itself (10 requests a second, 500 a minute, 40 batches a minute per
//! company), so that 429s stay rare: a 429 costs a minute's pause, which
//! is far more than pacing ever does.
//!
//! Sliding windows, not token buckets: QuickBooks counts the requests that
//! arrived in a window, so the limiter remembers when each request went out
//! and lets one more go only when it fits under every window.
//!
//! Safety margins: the server measures *arrival* times, and requests that
//! left evenly can arrive bunched (a slow TLS handshake, a retransmission,
//! a proxy that queues). So the windows here are longer than QuickBooks'
//! (1.1 s instead of 1 s, 1.02 min instead of 1 min) and the minute caps are
//! lower (per_minute - 5, batch_per_minute - 1): a burst of arrivals up to
//! 100 ms (1.2 s for the minute windows) closer than they were sent still
//! stays under the server's count.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Stretch of the per-second window (see the module's note on margins).
const SECOND_STRETCH: f64 = 1.1;
/// Stretch of the per-minute windows.
const MINUTE_STRETCH: f64 = 1.02;
/// Requests a minute kept in reserve under `per_minute`.
const MINUTE_RESERVE: u32 = 5;
/// Batches a minute kept in reserve under `batch_per_minute`.
const BATCH_RESERVE: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Requests a second per realm (QuickBooks: 10).
    pub per_second: u32,
    /// Requests a minute per realm (QuickBooks: 500).
    pub per_minute: u32,
    /// Batch requests a minute per realm (QuickBooks: 40).
    pub batch_per_minute: u32,
    /// Multiplies every window: 1.0 in production, 0.1 gives windows of
    /// 100 ms and 6 s for tests and benches. Zero, negative or non-finite
    /// values count as 1.0.
    pub time_scale: f64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_second: 10,
            per_minute: 500,
            batch_per_minute: 40,
            time_scale: 1.0,
        }
    }
}

impl RateLimits {
    fn scale(&self) -> f64 {
        if self.time_scale.is_finite() && self.time_scale > 0.0 {
            self.time_scale
        } else {
            1.0
        }
    }

    /// QuickBooks' second, scaled.
    pub fn second(&self) -> Duration {
        Duration::from_secs_f64(self.scale())
    }

    /// QuickBooks' minute, scaled.
    pub fn minute(&self) -> Duration {
        Duration::from_secs_f64(60.0 * self.scale())
    }

    /// The three windows the limiter enforces: (length, cap).
    fn second_window(&self) -> (Duration, usize) {
        (
            self.second().mul_f64(SECOND_STRETCH),
            self.per_second.max(1) as usize,
        )
    }

    fn minute_window(&self) -> (Duration, usize) {
        (
            self.minute().mul_f64(MINUTE_STRETCH),
            self.per_minute.saturating_sub(MINUTE_RESERVE).max(1) as usize,
        )
    }

    fn batch_window(&self) -> (Duration, usize) {
        (
            self.minute().mul_f64(MINUTE_STRETCH),
            self.batch_per_minute.saturating_sub(BATCH_RESERVE).max(1) as usize,
        )
    }
}

/// When requests went out, per window, oldest first.
#[derive(Debug, Default)]
struct State {
    second: VecDeque<Instant>,
    minute: VecDeque<Instant>,
    batch: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

/// Drops the sends that left the window before `now`.
fn prune(sent: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while sent.front().is_some_and(|t| *t + window <= now) {
        sent.pop_front();
    }
}

/// When one more send fits under `cap` in `window`, if not now.
fn free_at(sent: &VecDeque<Instant>, (window, cap): (Duration, usize)) -> Option<Instant> {
    // After pruning, the window holds `len` sends; one more fits once the
    // (len - cap + 1)-th oldest has left it.
    (sent.len() >= cap).then(|| sent[sent.len() - cap] + window)
}

/// Paces the requests to one company. Share it through an `Arc` among all
/// the tasks that talk to that company.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    /// Held only for short, non-async bookkeeping.
    state: Mutex<State>,
    /// Held by the one waiter whose turn it is: tokio's mutex queues
    /// lockers in order, so waiters are served first come, first served
    /// and a stream of new requests cannot starve an old one.
    turn: tokio::sync::Mutex<()>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter {
            limits,
            state: Mutex::new(State::default()),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every
        // change is a single push, pop or assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (on tokio's clock, so paused test clocks work) until one more
    /// request fits under every window and no pause is in force, then
    /// records it. `batch` also counts it against the batch limit.
    /// Cancel-safe: a waiter dropped before its turn records nothing.
    /// Strict FIFO means a batch waiting for the batch window also holds
    /// back the plain requests queued behind it; with 39 batches a minute
    /// against 495 requests that wait is rare, and fairness is worth it.
    pub async fn acquire(&self, batch: bool) {
        let _turn = self.turn.lock().await;
        loop {
            let now = Instant::now();
            let wait_until = {
                let mut st = self.state();
                let second = self.limits.second_window();
                let minute = self.limits.minute_window();
                let batches = self.limits.batch_window();
                prune(&mut st.second, second.0, now);
                prune(&mut st.minute, minute.0, now);
                prune(&mut st.batch, batches.0, now);
                let mut until = st.paused_until.filter(|p| *p > now);
                for t in [
                    free_at(&st.second, second),
                    free_at(&st.minute, minute),
                    if batch {
                        free_at(&st.batch, batches)
                    } else {
                        None
                    },
                ]
                .into_iter()
                .flatten()
                {
                    until = Some(until.map_or(t, |u| u.max(t)));
                }
                if until.is_none() {
                    st.second.push_back(now);
                    st.minute.push_back(now);
                    if batch {
                        st.batch.push_back(now);
                    }
                }
                until
            };
            match wait_until {
                None => return,
                // Check again after the sleep: a 429 elsewhere may have
                // extended the pause meanwhile.
                Some(t) => tokio::time::sleep_until(t).await,
            }
        }
    }

    /// After a 429: no request goes out before `until`. Extends a pause in
    /// force, never shortens it.
    pub fn pause_until(&self, until: Instant) {
        let mut st = self.state();
        if st.paused_until.is_none_or(|p| p < until) {
            st.paused_until = Some(until);
        }
    }

    /// The end of the pause in force, if any.
    pub fn paused_until(&self) -> Option<Instant> {
        let now = Instant::now();
        self.state().paused_until.filter(|p| *p > now)
    }

    /// Requests sent in the last `minute()` (for status and benches).
    pub fn recent(&self) -> usize {
        let now = Instant::now();
        let minute = self.limits.minute();
        self.state()
            .minute
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < minute)
            .count()
    }
}

/// How long to wait after a 429: the server's `Retry-After` plus up to 10 %
/// (so a fleet of agents sharing the company does not come back in the
/// same instant), or without one about a minute, +-20 % (scaled by
/// `time_scale`), which is the window QuickBooks counts in.
pub fn throttle_wait(retry_after: Option<Duration>, limits: &RateLimits) -> Duration {
    let mut rng = rand::rng();
    match retry_after {
        Some(asked) => asked.mul_f64(1.0 + rng.random_range(0.0..=0.1)),
        None => limits.minute().mul_f64(rng.random_range(0.8..=1.2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The most sends in any window of `len`, given sorted send times.
    fn max_in_window(times: &[Instant], len: Duration) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= len {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    /// Runs `tasks` tasks that each acquire `each` times and returns the
    /// sorted send times.
    async fn run(
        limiter: Arc<RateLimiter>,
        tasks: usize,
        each: usize,
        batch: bool,
    ) -> Vec<Instant> {
        let times = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (limiter, times) = (limiter.clone(), times.clone());
                tokio::spawn(async move {
                    for _ in 0..each {
                        limiter.acquire(batch).await;
                        times.lock().unwrap().push(Instant::now());
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let mut times = Arc::try_unwrap(times).unwrap().into_inner().unwrap();
        times.sort();
        times
    }

    #[test]
    fn windows_scale() {
        let limits = RateLimits {
            time_scale: 0.1,
            ..RateLimits::default()
        };
        assert_eq!(limits.second(), Duration::from_millis(100));
        assert_eq!(limits.minute(), Duration::from_secs(6));
        assert_eq!(RateLimits::default().minute(), Duration::from_secs(60));
        let broken = RateLimits {
            time_scale: 0.0,
            ..RateLimits::default()
        };
        assert_eq!(broken.second(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_a_second() {
        let limiter = Arc::new(RateLimiter::new(RateLimits::default()));
        let start = Instant::now();
        let times = run(limiter.clone(), 5, 5, false).await;
        assert_eq!(times.len(), 25);
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(max_in_window(&times, Duration::from_secs(1)) <= 10);
        // The margin: not even 11 within 1.1 s.
        assert!(max_in_window(&times, Duration::from_millis(1100)) <= 10);
        assert_eq!(limiter.recent(), 25);
    }

    #[tokio::test(start_paused = true)]
    async fn five_hundred_a_minute() {
        let limiter = Arc::new(RateLimiter::new(RateLimits::default()));
        let times = run(limiter.clone(), 20, 30, false).await;
        assert_eq!(times.len(), 600);
        let most = max_in_window(&times, Duration::from_secs(60));
        assert!(most <= 500, "{most} in one minute");
        assert!(most <= 495, "the reserve of 5 is kept: {most}");
        assert!(limiter.recent() <= 500);
        // Pacing is not wasteful either: the first 495 go out at 10 a
        // second (about 55 s), not slower.
        assert!(times[494] - times[0] < Duration::from_secs(56));
    }

    #[tokio::test(start_paused = true)]
    async fn batches_per_minute() {
        let limits = RateLimits {
            per_second: 100,
            per_minute: 10_000,
            ..RateLimits::default()
        };
        let limiter = Arc::new(RateLimiter::new(limits));
        let start = Instant::now();
        let batches = run(limiter.clone(), 3, 15, true).await;
        assert_eq!(batches.len(), 45);
        assert!(max_in_window(&batches, Duration::from_secs(60)) <= 39);
        assert!(batches[39] - batches[0] >= Duration::from_secs(61));
        // Plain requests do not wait for the batch window.
        let before = Instant::now();
        limiter.acquire(false).await;
        assert_eq!(Instant::now(), before);
        assert!(start.elapsed() >= Duration::from_secs(61));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_delays_everyone_and_never_shortens() {
        let limiter = Arc::new(RateLimiter::new(RateLimits::default()));
        let start = Instant::now();
        limiter.pause_until(start + Duration::from_secs(10));
        limiter.pause_until(start + Duration::from_secs(5));
        assert_eq!(
            limiter.paused_until(),
            Some(start + Duration::from_secs(10))
        );
        let times = run(limiter.clone(), 4, 1, false).await;
        assert!(times.iter().all(|t| *t >= start + Duration::from_secs(10)));
        assert_eq!(limiter.paused_until(), None);

        // A pause extended while a waiter sleeps still holds it back.
        limiter.pause_until(start + Duration::from_secs(15));
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter.acquire(false).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiter.is_finished());
        limiter.pause_until(start + Duration::from_secs(40));
        let sent = waiter.await.unwrap();
        assert!(
            sent >= start + Duration::from_secs(40),
            "{:?}",
            sent - start
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order() {
        let limits = RateLimits {
            per_second: 1,
            ..RateLimits::default()
        };
        let limiter = Arc::new(RateLimiter::new(limits));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..5 {
            let (limiter, order) = (limiter.clone(), order.clone());
            handles.push(tokio::spawn(async move {
                limiter.acquire(false).await;
                order.lock().unwrap().push(i);
            }));
            // Let task i queue before task i + 1 starts.
            tokio::task::yield_now().await;
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn scaled_windows_are_enforced() {
        let limits = RateLimits {
            time_scale: 0.1,
            ..RateLimits::default()
        };
        let limiter = Arc::new(RateLimiter::new(limits));
        let times = run(limiter, 4, 10, false).await;
        assert!(max_in_window(&times, Duration::from_millis(100)) <= 10);
        assert!(times[39] - times[0] >= Duration::from_millis(330));
    }

    #[test]
    fn throttle_wait_jitters_and_honours_retry_after() {
        let limits = RateLimits::default();
        let waits: Vec<Duration> = (0..2000).map(|_| throttle_wait(None, &limits)).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_secs(48) && *w <= Duration::from_secs(72)));
        let min = waits.iter().min().unwrap();
        let max = waits.iter().max().unwrap();
        assert!(
            *max - *min > Duration::from_secs(10),
            "jitter spreads: {min:?}..{max:?}"
        );

        let scaled = RateLimits {
            time_scale: 0.1,
            ..limits
        };
        let w = throttle_wait(None, &scaled);
        assert!(w >= Duration::from_millis(4800) && w <= Duration::from_millis(7200));

        for _ in 0..100 {
            let w = throttle_wait(Some(Duration::from_secs(7)), &limits);
            assert!(
                w >= Duration::from_secs(7) && w <= Duration::from_millis(7700),
                "{w:?}"
            );
        }
        assert_eq!(throttle_wait(Some(Duration::ZERO), &limits), Duration::ZERO);
    }
}
