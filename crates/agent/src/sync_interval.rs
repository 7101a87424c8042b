//! The polling interval (`sync_interval`) as a live value shared by the
//! parts that poll (the inbox) and the part that may change it while the
//! agent runs (the heartbeat, applying the backend's `config_updates`).
//!
//! A `tokio::sync::watch` channel holds it, so a waiter learns of a change
//! at once instead of finishing a sleep of the old length: a shop whose
//! backend lowers the interval from an hour to a minute must not wait up to
//! an hour for it to apply, and nothing has to restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A shared, changeable interval. Clones share the value.
#[derive(Clone)]
pub struct SyncInterval {
    // The sender is kept (in an Arc so clones share it) rather than a
    // receiver: `send_replace` works whether or not anyone is waiting, and
    // `subscribe` gives each waiter its own view of changes.
    tx: Arc<watch::Sender<Duration>>,
}

impl std::fmt::Debug for SyncInterval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SyncInterval").field(&self.get()).finish()
    }
}

impl SyncInterval {
    pub fn new(every: Duration) -> SyncInterval {
        SyncInterval {
            tx: Arc::new(watch::Sender::new(every)),
        }
    }

    /// The current interval.
    pub fn get(&self) -> Duration {
        *self.tx.borrow()
    }

    /// Changes the interval for every holder; waiters in [`sleep`]
    /// re-measure at once. Returns the previous value. Setting the same
    /// value wakes nobody.
    ///
    /// [`sleep`]: SyncInterval::sleep
    pub fn set(&self, every: Duration) -> Duration {
        let mut previous = every;
        self.tx.send_if_modified(|current| {
            previous = *current;
            if *current == every {
                false
            } else {
                *current = every;
                true
            }
        });
        previous
    }

    /// Sleeps for the current interval, measured from the call. When the
    /// interval changes meanwhile, the wait is re-measured from that same
    /// start with the new value: a shorter interval that is already over
    /// ends the sleep at once, a longer one extends it. Tokio time, so a
    /// paused clock applies.
    pub async fn sleep(&self) {
        let start = Instant::now();
        let mut rx = self.tx.subscribe();
        loop {
            let every = *rx.borrow_and_update();
            let deadline = start.checked_add(every).unwrap_or_else(far_future);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                changed = rx.changed() => {
                    if changed.is_err() {
                        // Cannot happen while `self` holds the sender; if
                        // it did, finishing the current wait is right.
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                }
            }
        }
    }
}

/// A fixed interval, for callers that never change it (and so that
/// `Inbox::new(.., cfg.sync_interval, ..)` keeps compiling).
impl From<Duration> for SyncInterval {
    fn from(every: Duration) -> SyncInterval {
        SyncInterval::new(every)
    }
}

/// About thirty years on: "never" for a deadline that overflowed.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn get_set_and_clones_share_the_value() {
        let a = SyncInterval::new(secs(60));
        let b = a.clone();
        assert_eq!(a.set(secs(10)), secs(60));
        assert_eq!(b.get(), secs(10));
        assert_eq!(b.set(secs(10)), secs(10));
        let c: SyncInterval = secs(5).into();
        assert_eq!(c.get(), secs(5));
        assert_eq!(format!("{c:?}"), "SyncInterval(5s)");
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_for_the_interval() {
        let s = SyncInterval::new(secs(30));
        let start = Instant::now();
        s.sleep().await;
        assert_eq!(start.elapsed(), secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_interval_wakes_the_sleeper_early() {
        let s = SyncInterval::new(secs(3600));
        let setter = s.clone();
        let start = Instant::now();
        let sleeper = tokio::spawn(async move {
            s.sleep().await;
            Instant::now()
        });
        // Already past the new interval when it changes: wakes at once.
        tokio::time::sleep(secs(100)).await;
        setter.set(secs(10));
        let woke = sleeper.await.unwrap();
        assert_eq!(woke - start, secs(100));

        // Not yet past it: wakes when the new interval is over.
        let s = setter.clone();
        let start = Instant::now();
        let sleeper = tokio::spawn(async move {
            s.sleep().await;
            Instant::now()
        });
        tokio::time::sleep(secs(3)).await;
        setter.set(secs(7));
        assert_eq!(sleeper.await.unwrap() - start, secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_interval_extends_the_sleep() {
        let s = SyncInterval::new(secs(10));
        let setter = s.clone();
        let start = Instant::now();
        let sleeper = tokio::spawn(async move {
            s.sleep().await;
            Instant::now()
        });
        tokio::time::sleep(secs(5)).await;
        setter.set(secs(60));
        assert_eq!(sleeper.await.unwrap() - start, secs(60));
    }
}
