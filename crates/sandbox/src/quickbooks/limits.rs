//! The per-realm rate limits (sliding windows).

use super::*;

/// The requests a realm was allowed in the last (scaled) minute.
#[derive(Default)]
pub(super) struct Windows {
    pub(super) all: VecDeque<Instant>,
    pub(super) batch: VecDeque<Instant>,
}

impl Windows {
    /// Whether a request at `now` is within the limits; if so it is
    /// recorded. A refused request is not recorded: it does not count
    /// toward the windows (Intuit counts what it served).
    pub(super) fn admit(&mut self, now: Instant, is_batch: bool, l: &QboLimits) -> bool {
        if !l.enforce {
            return true;
        }
        let (second, minute) = (l.window(1.0), l.window(60.0));
        for q in [&mut self.all, &mut self.batch] {
            while q
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= minute)
            {
                q.pop_front();
            }
        }
        let in_second = self
            .all
            .iter()
            .rev()
            .take_while(|t| now.saturating_duration_since(**t) < second)
            .count();
        if in_second >= l.per_second as usize
            || self.all.len() >= l.per_minute as usize
            || (is_batch && self.batch.len() >= l.batch_per_minute as usize)
        {
            return false;
        }
        self.all.push_back(now);
        if is_batch {
            self.batch.push_back(now);
        }
        true
    }
}
