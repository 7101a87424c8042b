//! The polling interval (`sync_interval`) as a live value shared by the
//! parts that poll (the inbox) and the part that may change it while the
//! agent runs (the heartbeat, applying the backend's `config_updates`).
//!
//! A `tokio::sync::watch` channel holds it, so a waiter learns of a change
//! at once instead of finishing a sleep of the old length: a shop whose
//! backend lowers the interval from an hour to a minute must not wait up to
//! an hour for it to apply, and nothing has to restart.
//!
//! It also remembers where the value in force comes from ([`Origin`]):
//! `sync_interval` in config.json, or the backend's heartbeat answer, so
//! `status` can say why the inbox is looked at as often as it is.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where the interval in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `sync_interval` in config.json (or its default).
    #[default]
    Config,
    /// `config_updates.sync_interval` of the backend's heartbeat answer.
    BackendHeartbeat,
}

impl Origin {
    /// For people: "sync_interval in config.json", ...
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Origin::Config => "sync_interval in config.json",
            Origin::BackendHeartbeat => "the backend's heartbeat answer",
        }
    }
}

/// A shared, changeable interval. Clones share the value.
#[derive(Clone)]
pub struct SyncInterval {
    // The sender is kept (in an Arc so clones share it) rather than a
    // receiver: `send_replace` works whether or not anyone is waiting, and
    // `subscribe` gives each waiter its own view of changes.
    tx: Arc<watch::Sender<(Duration, Origin)>>,
    /// The configured value, to go back to.
    #[cfg(test)]
    configured: Duration,
}

impl std::fmt::Debug for SyncInterval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SyncInterval").field(&self.get()).finish()
    }
}

impl SyncInterval {
    /// The configured interval (its origin is [`Origin::Config`]).
    pub fn new(every: Duration) -> SyncInterval {
        SyncInterval {
            tx: Arc::new(watch::Sender::new((every, Origin::Config))),
            #[cfg(test)]
            configured: every,
        }
    }

    /// The current interval.
    pub fn get(&self) -> Duration {
        self.tx.borrow().0
    }

    /// Where the current interval comes from.
    pub(crate) fn origin(&self) -> Origin {
        self.tx.borrow().1
    }

    /// The configured interval (config.json's `sync_interval`).
    #[cfg(test)]
    pub(crate) fn configured(&self) -> Duration {
        self.configured
    }

    /// Changes the interval for every holder, as the backend's heartbeat
    /// asks; waiters in [`sleep`] re-measure at once. Returns the previous
    /// value. Setting the same value wakes nobody (the origin becomes the
    /// backend's all the same: it is what the backend asks for now).
    ///
    /// [`sleep`]: SyncInterval::sleep
    pub(crate) fn set(&self, every: Duration) -> Duration {
        self.set_from(every, Origin::BackendHeartbeat)
    }

    fn set_from(&self, every: Duration, origin: Origin) -> Duration {
        let mut previous = every;
        self.tx.send_if_modified(|current| {
            previous = current.0;
            current.1 = origin;
            if current.0 == every {
                false
            } else {
                current.0 = every;
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
    pub(crate) async fn sleep(&self) {
        let start = Instant::now();
        let mut rx = self.tx.subscribe();
        loop {
            let every = rx.borrow_and_update().0;
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

    #[test]
    fn the_origin_follows_who_set_the_value() {
        let s = SyncInterval::new(secs(60));
        assert_eq!((s.get(), s.origin()), (secs(60), Origin::Config));
        // The backend asking for the configured value is still the backend.
        s.set(secs(60));
        assert_eq!(s.origin(), Origin::BackendHeartbeat);
        s.set(secs(300));
        assert_eq!((s.get(), s.origin()), (secs(300), Origin::BackendHeartbeat));
        assert_eq!(s.configured(), secs(60));
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
