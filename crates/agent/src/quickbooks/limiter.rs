//! A per-realm rate limiter that keeps the agent under QuickBooks' limits
//! (10 requests a second, 500 a minute, 40 batches a minute per company)
//! and learns, from the 429s it meets, how much of them is left for it
//! when other tills push to the same company.
//!
//! **The published limits** are sliding windows, not token buckets:
//! QuickBooks counts the requests that arrived in a window, so the limiter
//! remembers when each request went out and lets one more go only when it
//! fits under every window. Safety margins: the server measures *arrival*
//! times, and requests that left evenly can arrive bunched (a slow TLS
//! handshake, a retransmission, a proxy that queues). So the windows here
//! are longer than QuickBooks' (1.1 s instead of 1 s, 1.02 min instead of
//! 1 min) and the minute caps are lower (per_minute - 5, batch_per_minute
//! - 1). Alone on a company the agent never meets a 429.
//!
//! **The learned share** (a shop's tills share one company and app, so the
//! limits are the fleet's, not this agent's): this agent's own budgets,
//! requests a second, a minute and batches a minute, start at the limits
//! and follow AIMD, as TCP shares a link:
//! - *multiplicative decrease*: a 429 after a successful answer cuts each
//!   budget from what the company actually took from this agent (its
//!   requests in the last second, its rate over the last minute; not a
//!   budget it was not using), by a factor that is deeper the larger that
//!   is as a share of the limit ([`DECREASE_MIN`]..[`DECREASE_MAX`]): a
//!   till that had the company to itself halves, one of ten busy tills
//!   gives back a tenth;
//! - *additive increase*: every clean [`INCREASE_EVERY`] seconds (no 429)
//!   add [`INCREASE`] of each limit back, up to the limits, never above.
//!
//! Tills that cut in proportion to their rate (here even more than in
//! proportion) and grow back by the same amount converge on equal shares
//! without talking to each other (Chiu and Jain's argument for TCP).
//! Below the limits a budget is kept by pacing (one request every
//! `window / budget`, with a little seeded jitter), not by bursts, so the
//! tills' requests interleave instead of colliding at the start of each
//! second.
//!
//! **After a 429** every request to the company pauses: for `Retry-After`
//! when QuickBooks sends one, else briefly, 1 s doubling on each further
//! 429 that comes without a success in between, up to 60 s. The pause has a
//! seeded jitter so tills throttled together do not come back together.
//! 429s to requests that were already on their way when the pause began
//! are counted but do not cut or pause again.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Stretch of the per-second window (see the module's note on margins).
const SECOND_STRETCH: f64 = 1.1;
/// Stretch of the per-minute windows.
const MINUTE_STRETCH: f64 = 1.02;
/// Requests a minute kept in reserve under `per_minute`.
const MINUTE_RESERVE: u32 = 5;
/// Batches a minute kept in reserve under `batch_per_minute`.
const BATCH_RESERVE: u32 = 1;

/// On a 429 a budget falls to `1 - share` of what this agent was
/// sending, where `share` is that as a fraction of Intuit's limit, and
/// within these bounds: a till holding half the limit or more halves, one
/// holding a tenth keeps 90 %. Tills holding more than their share give
/// back more than their share (quadratically), which is what brings a
/// fleet to fair shares within a few 429s.
pub(crate) const DECREASE_MIN: f64 = 0.5;
pub(crate) const DECREASE_MAX: f64 = 0.9;
/// After each clean interval a budget grows by this fraction of its limit
/// (0.05 request a second, 2.5 a minute, 0.2 batches a minute every 2 s:
/// from half back to the limit in 3 minutes).
pub(crate) const INCREASE: f64 = 0.005;
/// The clean interval, in QuickBooks seconds (scaled by `time_scale`).
pub(crate) const INCREASE_EVERY: f64 = 2.0;
/// A budget never falls below this fraction of its limit (a company
/// shared by 20 busy tills).
pub(crate) const FLOOR: f64 = 0.05;
/// The first pause after a 429 without `Retry-After`, in seconds; it
/// doubles on consecutive 429s up to [`MAX_PAUSE`].
pub(crate) const FIRST_PAUSE: f64 = 1.0;
pub(crate) const MAX_PAUSE: f64 = 60.0;
/// Paced gaps vary by up to this fraction either way (seeded), so tills
/// pacing at the same rate do not stay in step.
const PACING_JITTER: f64 = 0.1;
/// A pause without `Retry-After` is stretched by up to this fraction.
const PAUSE_JITTER: f64 = 0.25;
/// A pause after `Retry-After` is stretched by up to this fraction.
const RETRY_AFTER_JITTER: f64 = 0.1;

/// QuickBooks' limits as the agent keeps them: plain data of the config
/// (tests and benches scale them), used here.
pub use crate::config::RateLimits;

impl RateLimits {
    fn scale(&self) -> f64 {
        if self.time_scale.is_finite() && self.time_scale > 0.0 {
            self.time_scale
        } else {
            1.0
        }
    }

    /// QuickBooks' second, scaled.
    pub(crate) fn second(&self) -> Duration {
        Duration::from_secs_f64(self.scale())
    }

    /// QuickBooks' minute, scaled.
    pub(crate) fn minute(&self) -> Duration {
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

    /// The budgets at the limits: what an agent alone on a company has.
    fn full_budget(&self) -> Budget {
        Budget {
            per_second: self.second_window().1 as f64,
            per_minute: self.minute_window().1 as f64,
            batch_per_minute: self.batch_window().1 as f64,
        }
    }
}

/// This agent's own budgets: requests per (stretched) second, per minute,
/// batches per minute. Each lies between [`FLOOR`] of its limit and the
/// limit.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Budget {
    per_second: f64,
    per_minute: f64,
    batch_per_minute: f64,
}

/// What a person (status page, `qbo status`, `/metrics`) sees of the
/// limiter: this agent's budgets against Intuit's limits and its 429s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimiterStatus {
    /// Requests a second this agent allows itself now (Intuit's limit for
    /// the whole company: `per_second_limit`).
    pub per_second: f64,
    pub(crate) per_second_limit: u32,
    /// Requests a minute this agent allows itself now (at most
    /// `per_minute_limit` - 5, a margin).
    pub per_minute: f64,
    pub(crate) per_minute_limit: u32,
    pub(crate) batch_per_minute: f64,
    pub(crate) batch_per_minute_limit: u32,
    /// The budget as a fraction of the limits (the tighter of the second
    /// and the minute): 1.0 alone on the company, about 1/3 with two
    /// other busy tills.
    pub share: f64,
    /// 429s met since the agent started.
    pub throttled: u64,
    /// 429s in a row without a successful answer between them.
    pub(crate) consecutive_throttled: u32,
    pub(crate) last_throttled_at: Option<DateTime<Utc>>,
    /// The pause in force: milliseconds left (0: none).
    pub(crate) paused_ms: u64,
    /// Requests sent in the last minute.
    pub(crate) sent_last_minute: usize,
}

/// When requests went out, per window, oldest first; the learned budgets.
#[derive(Debug)]
struct State {
    second: VecDeque<Instant>,
    minute: VecDeque<Instant>,
    batch: VecDeque<Instant>,
    last_sent: Option<Instant>,
    last_batch: Option<Instant>,
    paused_until: Option<Instant>,
    budget: Budget,
    /// The start of the current clean interval.
    clean_since: Instant,
    throttled: u64,
    consecutive: u32,
    last_throttled_at: Option<DateTime<Utc>>,
    rng: StdRng,
    /// This gap's share of the pacing interval (jitter, drawn per send).
    gap_factor: f64,
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

/// This agent's sending rate over a window, in sends per window: the sends
/// in it, extrapolated to the whole window when they began more recently
/// than the window (a till that has been pushing for 5 s has a minute's
/// rate of 12 times its 5 s). `shortest` bounds the extrapolation; the
/// `less` newest sends are not counted.
fn rate_in(
    sent: &VecDeque<Instant>,
    less: usize,
    window: Duration,
    shortest: Duration,
    now: Instant,
) -> f64 {
    let Some(oldest) = sent.front() else {
        return 0.0;
    };
    let span = now.saturating_duration_since(*oldest).max(shortest);
    let n = sent.len().saturating_sub(less) as f64;
    if span >= window {
        n
    } else {
        n * window.as_secs_f64() / span.as_secs_f64()
    }
}

/// Paces the requests to one company. Share it through an `Arc` among all
/// the tasks that talk to that company.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    #[cfg(test)]
    seed: u64,
    /// Held only for short, non-async bookkeeping.
    state: Mutex<State>,
    /// Held by the one waiter whose turn it is: tokio's mutex queues
    /// lockers in order, so waiters are served first come, first served
    /// and a stream of new requests cannot starve an old one.
    turn: tokio::sync::Mutex<()>,
}

impl RateLimiter {
    pub(crate) fn new(limits: RateLimits) -> RateLimiter {
        let seed = limits.jitter_seed.unwrap_or_else(rand::random);
        tracing::debug!(backend = "quickbooks", seed, "rate limiter's jitter seed");
        RateLimiter {
            limits,
            #[cfg(test)]
            seed,
            state: Mutex::new(State {
                second: VecDeque::new(),
                minute: VecDeque::new(),
                batch: VecDeque::new(),
                last_sent: None,
                last_batch: None,
                paused_until: None,
                budget: limits.full_budget(),
                clean_since: Instant::now(),
                throttled: 0,
                consecutive: 0,
                last_throttled_at: None,
                rng: StdRng::seed_from_u64(seed),
                gap_factor: 1.0,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The jitter's seed (print it in tests to replay a run).
    #[cfg(test)]
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every
        // change is a few assignments that cannot panic halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Additive increase: one step per whole clean interval since the last
    /// 429 or step.
    fn grow(&self, st: &mut State, now: Instant) {
        let every = self.limits.second().mul_f64(INCREASE_EVERY);
        let elapsed = now.saturating_duration_since(st.clean_since);
        let steps = (elapsed.as_secs_f64() / every.as_secs_f64()).floor();
        if steps < 1.0 {
            return;
        }
        st.clean_since += every.mul_f64(steps);
        let full = self.limits.full_budget();
        let b = &mut st.budget;
        b.per_second = (b.per_second + steps * INCREASE * full.per_second).min(full.per_second);
        b.per_minute = (b.per_minute + steps * INCREASE * full.per_minute).min(full.per_minute);
        b.batch_per_minute = (b.batch_per_minute + steps * INCREASE * full.batch_per_minute)
            .min(full.batch_per_minute);
    }

    /// The earliest next send the learned budgets allow (pacing); none at
    /// the limits, where the sliding windows alone keep the count.
    fn paced_at(&self, st: &State, batch: bool) -> Option<Instant> {
        let full = self.limits.full_budget();
        let b = st.budget;
        let mut gap: Option<Duration> = None;
        let mut slower = |window: Duration, budget: f64, limit: f64| {
            if budget < limit {
                let g = window.div_f64(budget).mul_f64(st.gap_factor);
                gap = Some(gap.map_or(g, |x| x.max(g)));
            }
        };
        slower(self.limits.second_window().0, b.per_second, full.per_second);
        slower(self.limits.minute_window().0, b.per_minute, full.per_minute);
        let mut at = gap.zip(st.last_sent).map(|(g, t)| t + g);
        if batch && b.batch_per_minute < full.batch_per_minute {
            let g = self.limits.batch_window().0.div_f64(b.batch_per_minute);
            if let Some(t) = st.last_batch.map(|t| t + g) {
                at = Some(at.map_or(t, |a| a.max(t)));
            }
        }
        at
    }

    /// Waits (on tokio's clock, so paused test clocks work) until one more
    /// request fits under every window and budget and no pause is in
    /// force, then records it. `batch` also counts it against the batch
    /// limit. Cancel-safe: a waiter dropped before its turn records
    /// nothing. Strict FIFO means a batch waiting for the batch window
    /// also holds back the plain requests queued behind it; with 39
    /// batches a minute against 495 requests that wait is rare, and
    /// fairness is worth it.
    pub(crate) async fn acquire(&self, batch: bool) {
        let _turn = self.turn.lock().await;
        loop {
            let now = Instant::now();
            let wait_until = {
                let mut st = self.state();
                self.grow(&mut st, now);
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
                    self.paced_at(&st, batch).filter(|t| *t > now),
                ]
                .into_iter()
                .flatten()
                {
                    until = Some(until.map_or(t, |u| u.max(t)));
                }
                if until.is_none() {
                    st.second.push_back(now);
                    st.minute.push_back(now);
                    st.last_sent = Some(now);
                    // Paced tills drift apart instead of colliding
                    // in step, second after second.
                    st.gap_factor = st
                        .rng
                        .random_range(1.0 - PACING_JITTER..=1.0 + PACING_JITTER);
                    if batch {
                        st.batch.push_back(now);
                        st.last_batch = Some(now);
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

    /// QuickBooks answered a request with anything but a 429: the company
    /// took it, so the next 429 starts a new episode (1 s pause again).
    pub(crate) fn admitted(&self) {
        self.state().consecutive = 0;
    }

    /// QuickBooks answered a request with a 429 (`batch`: a batch
    /// request). Counts it; unless a pause is already in force (the request
    /// left before it began), cuts the budgets (the first 429 after a
    /// success) and pauses every request to the company: `retry_after`
    /// when given, else 1 s doubling per consecutive 429 up to 60 s, with
    /// jitter. Returns the pause.
    pub(crate) fn throttled(&self, retry_after: Option<Duration>, batch: bool) -> Duration {
        let now = Instant::now();
        let mut st = self.state();
        st.throttled += 1;
        st.last_throttled_at = Some(Utc::now());
        let asked =
            retry_after.map(|a| a.mul_f64(1.0 + st.rng.random_range(0.0..=RETRY_AFTER_JITTER)));
        if let Some(until) = st.paused_until.filter(|p| *p > now) {
            // The same episode: a longer Retry-After still extends it.
            if let Some(a) = asked {
                st.paused_until = Some(until.max(now + a));
            }
            return st.paused_until.map_or(Duration::ZERO, |p| p - now);
        }
        self.grow(&mut st, now);
        st.clean_since = now;
        if st.consecutive == 0 {
            self.cut(&mut st, now, batch);
        }
        st.consecutive = st.consecutive.saturating_add(1);
        let pause = asked.unwrap_or_else(|| {
            let doubled = FIRST_PAUSE * 2f64.powi(st.consecutive.min(16) as i32 - 1);
            let jittered = doubled * (1.0 + st.rng.random_range(0.0..=PAUSE_JITTER));
            self.limits.second().mul_f64(jittered.min(MAX_PAUSE))
        });
        st.paused_until = Some(now + pause);
        pause
    }

    /// Multiplicative decrease, from what this agent was sending (not from
    /// a budget it was not using).
    fn cut(&self, st: &mut State, now: Instant, batch: bool) {
        let full = self.limits.full_budget();
        let (second, minute) = (self.limits.second_window().0, self.limits.minute_window().0);
        prune(&mut st.second, second, now);
        prune(&mut st.minute, minute, now);
        prune(&mut st.batch, minute, now);
        // What the company took from this agent: its sends less the one
        // just refused.
        let sent_second = st.second.len().saturating_sub(1) as f64;
        let sent_minute = rate_in(&st.minute, 1, minute, second, now);
        let cut = |budget: f64, sent: f64, limit: f64| {
            let base = budget.min(sent.max(1.0));
            let decrease = (1.0 - base / limit).clamp(DECREASE_MIN, DECREASE_MAX);
            (decrease * base).clamp(FLOOR * limit, limit)
        };
        let b = &mut st.budget;
        b.per_second = cut(b.per_second, sent_second, full.per_second);
        b.per_minute = cut(b.per_minute, sent_minute, full.per_minute);
        if batch {
            let sent_batches = rate_in(&st.batch, 1, minute, second, now);
            b.batch_per_minute = cut(b.batch_per_minute, sent_batches, full.batch_per_minute);
        }
    }

    /// After a 429: no request goes out before `until`. Extends a pause in
    /// force, never shortens it.
    #[cfg(test)]
    pub(crate) fn pause_until(&self, until: Instant) {
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
    pub(crate) fn recent(&self) -> usize {
        let now = Instant::now();
        let minute = self.limits.minute();
        self.state()
            .minute
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < minute)
            .count()
    }

    /// 429s met so far.
    pub fn throttled_count(&self) -> u64 {
        self.state().throttled
    }

    /// The budgets and 429s as a person sees them.
    pub fn status(&self) -> LimiterStatus {
        let now = Instant::now();
        let recent = self.recent();
        let mut st = self.state();
        self.grow(&mut st, now);
        let full = self.limits.full_budget();
        let b = st.budget;
        let share = (b.per_second / full.per_second).min(b.per_minute / full.per_minute);
        LimiterStatus {
            per_second: round1(b.per_second),
            per_second_limit: self.limits.per_second,
            per_minute: round1(b.per_minute),
            per_minute_limit: self.limits.per_minute,
            batch_per_minute: round1(b.batch_per_minute),
            batch_per_minute_limit: self.limits.batch_per_minute,
            share: (share * 1000.0).round() / 1000.0,
            throttled: st.throttled,
            consecutive_throttled: st.consecutive,
            last_throttled_at: st.last_throttled_at,
            paused_ms: st
                .paused_until
                .map_or(0, |p| p.saturating_duration_since(now).as_millis() as u64),
            sent_last_minute: recent,
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
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

    fn seeded(limits: RateLimits) -> RateLimiter {
        let seed = 20_260_101;
        println!("jitter seed {seed}");
        RateLimiter::new(RateLimits {
            jitter_seed: Some(seed),
            ..limits
        })
    }

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_a_second_doubling_to_a_minute_and_a_success_resets() {
        let limiter = seeded(RateLimits::default());
        let mut expected = 1.0;
        for n in 1..=9 {
            limiter.acquire(false).await;
            let pause = limiter.throttled(None, false);
            let (lo, hi) = if expected >= MAX_PAUSE {
                (MAX_PAUSE, MAX_PAUSE)
            } else {
                (expected, (expected * 1.25).min(MAX_PAUSE))
            };
            assert!(
                secs(pause) >= lo - 1e-9 && secs(pause) <= hi + 1e-9,
                "429 number {n}: {pause:?}, expected {lo}..{hi} s"
            );
            assert_eq!(limiter.paused_until(), Some(Instant::now() + pause));
            assert_eq!(limiter.status().consecutive_throttled, n);
            expected = (expected * 2.0).min(MAX_PAUSE);
        }
        // A success in between: the next 429 is a new episode.
        limiter.acquire(false).await;
        limiter.admitted();
        limiter.acquire(false).await;
        let pause = limiter.throttled(None, false);
        assert!(secs(pause) >= 1.0 && secs(pause) <= 1.25, "{pause:?}");
        assert_eq!(limiter.status().throttled, 10);

        // Scaled like every window.
        let scaled = seeded(RateLimits {
            time_scale: 0.1,
            ..RateLimits::default()
        });
        let pause = scaled.throttled(None, false);
        assert!(secs(pause) >= 0.1 && secs(pause) <= 0.125, "{pause:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_429s_already_on_their_way_do_not_pause_again() {
        let limiter = seeded(RateLimits::default());
        limiter.acquire(false).await;
        let pause = limiter.throttled(Some(Duration::from_secs(7)), false);
        assert!(secs(pause) >= 7.0 && secs(pause) <= 7.7, "{pause:?}");
        let budget = limiter.status();
        // Another request that left before the pause: counted, nothing
        // more is cut, the pause is not doubled.
        tokio::time::advance(Duration::from_secs(1)).await;
        let left = limiter.throttled(None, false);
        assert!(left < pause, "{left:?}");
        let st = limiter.status();
        assert_eq!(st.throttled, 2);
        assert_eq!(st.consecutive_throttled, 1);
        assert_eq!(st.per_second, budget.per_second);
        // A longer Retry-After still extends the pause.
        let longer = limiter.throttled(Some(Duration::from_secs(20)), false);
        assert!(secs(longer) >= 20.0, "{longer:?}");
        let before = Instant::now();
        limiter.acquire(false).await;
        assert!(Instant::now() - before >= Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_fall_from_what_was_taken_and_grow_back_to_the_limits_only() {
        let limiter = seeded(RateLimits::default());
        let full = limiter.status();
        assert_eq!(
            (
                full.per_second,
                full.per_minute,
                full.batch_per_minute,
                full.share
            ),
            (10.0, 495.0, 39.0, 1.0)
        );
        // Three requests taken in the last second, the fourth refused:
        // other tills use the rest. The budget falls from 3 (not 10), by
        // 1 - 3/10.
        for _ in 0..4 {
            limiter.acquire(false).await;
        }
        limiter.throttled(None, false);
        let cut = limiter.status();
        assert!((cut.per_second - 2.1).abs() < 0.05, "{cut:?}");
        // The minute's rate is extrapolated from the 1.1 s it has been
        // sending: 3 x 61.2 / 1.1 = 166.9 (a third of 495), times 0.663.
        assert!((cut.per_minute - 110.6).abs() < 0.5, "{cut:?}");
        assert_eq!(cut.batch_per_minute, 39.0, "not a batch: unchanged");
        assert!((cut.share - 0.21).abs() < 0.01, "{cut:?}");

        // Additive increase: 0.5 % of each limit per clean 2 s.
        tokio::time::advance(Duration::from_secs(10)).await;
        let grown = limiter.status();
        assert!((grown.per_second - 2.35).abs() < 0.06, "{grown:?}");
        assert!(
            (grown.per_minute - (110.6 + 5.0 * 2.475)).abs() < 0.5,
            "{grown:?}"
        );
        // ... to the limits and never above.
        tokio::time::advance(Duration::from_secs(1200)).await;
        let back = limiter.status();
        assert_eq!(
            (back.per_second, back.per_minute, back.share),
            (10.0, 495.0, 1.0)
        );

        // A till that had the company to itself halves (the last of its
        // 10 in the window refused: 9 taken, 4.5).
        limiter.admitted();
        for _ in 0..20 {
            limiter.acquire(false).await;
        }
        limiter.throttled(None, false);
        let halved = limiter.status();
        assert_eq!(halved.per_second, 4.5, "{halved:?}");

        // A floor: never below 5 % of the limits, however often it is cut.
        for _ in 0..60 {
            limiter.acquire(true).await;
            limiter.admitted();
            limiter.throttled(None, true);
            tokio::time::advance(Duration::from_millis(1500)).await;
        }
        let floor = limiter.status();
        assert!((0.5..=0.9).contains(&floor.per_second), "{floor:?}");
        assert!(floor.per_minute >= 24.7, "{floor:?}");
        assert!(floor.batch_per_minute >= 1.9, "{floor:?}");
        assert!(
            floor.per_minute <= 50.0 && floor.batch_per_minute <= 4.0,
            "{floor:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn below_the_limits_requests_are_paced_evenly() {
        let limiter = Arc::new(seeded(RateLimits::default()));
        for _ in 0..5 {
            limiter.acquire(false).await;
        }
        limiter.throttled(None, false);
        // Four taken: 0.6 x 4 = 2.4 requests a (stretched) second; the
        // minute's budget (4 x 61.2 / 1.1 = 222.5, times 0.55: 122.6 a
        // minute, 2.0 a second) is tighter.
        let gap = |st: &LimiterStatus| {
            (60.0 * MINUTE_STRETCH / st.per_minute).max(SECOND_STRETCH / st.per_second)
        };
        let at_cut = limiter.status();
        assert!((gap(&at_cut) - 0.499).abs() < 0.002, "{at_cut:?}");
        let times = run(limiter.clone(), 4, 5, false).await;
        let grown = limiter.status();
        assert!(grown.per_minute > at_cut.per_minute, "it grew meanwhile");
        // Each gap within the pacing jitter (and tokio's 1 ms timers).
        for w in times.windows(2) {
            let d = secs(w[1] - w[0]);
            assert!(
                d >= gap(&grown) * 0.9 * 0.999 && d <= gap(&at_cut) * 1.1 * 1.001 + 0.001,
                "gap {d} s between {at_cut:?} and {grown:?}"
            );
        }
        // On average the budget's rate.
        let mean = secs(times[19] - times[0]) / 19.0;
        assert!(
            mean >= gap(&grown) * 0.95 && mean <= gap(&at_cut) * 1.05,
            "{mean}"
        );
        assert!(max_in_window(&times, Duration::from_secs(1)) <= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_seed_gives_the_same_pauses() {
        async fn pauses(seed: u64) -> Vec<Duration> {
            let limiter = RateLimiter::new(RateLimits {
                jitter_seed: Some(seed),
                ..RateLimits::default()
            });
            assert_eq!(limiter.seed(), seed);
            let mut out = Vec::new();
            for _ in 0..6 {
                let p = limiter.throttled(None, false);
                tokio::time::advance(p).await;
                out.push(p);
            }
            out
        }
        let seed = 7;
        println!("jitter seed {seed}");
        assert_eq!(pauses(seed).await, pauses(seed).await);
        assert_ne!(pauses(seed).await, pauses(seed + 1).await);
    }
}
