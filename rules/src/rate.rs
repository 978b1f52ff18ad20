//! `rate` rules: a governor keyed GCRA limiter per rule, driven by record time.
//!
//! The limiter's clock is the engine's record clock, not the wall clock, so a replay over stored
//! records gives the same answers as live evaluation did, and a backlog processed late is judged
//! by when the requests happened.

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The time of the newest record seen, shared by the engine and its limiters.
///
/// Monotonic: a record older than one already seen (records from several Envoy workers arrive
/// interleaved) does not move it back.
#[derive(Debug, Clone, Default)]
pub struct RecordClock(Arc<AtomicI64>);

impl RecordClock {
    /// Moves the clock to `ms` (milliseconds since the Unix epoch) unless it is already later;
    /// returns the clock's time.
    pub fn advance_to(&self, ms: i64) -> i64 {
        let prev = self.0.fetch_max(ms, Ordering::Relaxed);
        prev.max(ms)
    }

    /// The clock's time, milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Clock for RecordClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.now_ms()).unwrap_or(0))
    }
}

type Store = HashMapStateStore<u128, foldhash::fast::RandomState>;
type Limiter = RateLimiter<u128, Store, RecordClock, NoOpMiddleware<Duration>>;

/// The limiter of one `rate` rule.
#[derive(Debug)]
pub struct RateState {
    limiter: Limiter,
}

impl RateState {
    /// A limiter allowing `limit` requests per `period` per key; `None` if the quota cannot be
    /// expressed (rejected when the rules file is loaded, so not expected here).
    pub fn new(limit: NonZeroU32, period: Duration, clock: &RecordClock) -> Option<RateState> {
        let quota = Quota::with_period(period.checked_div(limit.get())?)?.allow_burst(limit);
        Some(RateState {
            limiter: RateLimiter::new(quota, Store::default(), clock.clone()),
        })
    }

    /// Counts one request for `key`; false when it exceeds the quota.
    pub fn check(&self, key: u128) -> bool {
        self.limiter.check_key(&key).is_ok()
    }

    /// Evicts keys whose state is the same as a fresh key's and returns memory to the allocator
    /// when many went.
    pub fn maintain(&self) {
        let before = self.limiter.len();
        self.limiter.retain_recent();
        let after = self.limiter.len();
        if before > 64 && after < before / 2 {
            self.limiter.shrink_to_fit();
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u32, period_s: u64) -> (RateState, RecordClock) {
        let clock = RecordClock::default();
        clock.advance_to(1_700_000_000_000);
        let state = RateState::new(
            NonZeroU32::new(limit).unwrap(),
            Duration::from_secs(period_s),
            &clock,
        )
        .unwrap();
        (state, clock)
    }

    #[test]
    fn the_request_after_the_limit_is_refused() {
        let (rate, _clock) = limiter(3, 60);
        assert!(rate.check(1));
        assert!(rate.check(1));
        assert!(rate.check(1));
        assert!(!rate.check(1));
        assert!(rate.check(2), "keys are independent");
    }

    #[test]
    fn quota_refills_with_record_time_not_wall_time() {
        let (rate, clock) = limiter(2, 60);
        let t = clock.now_ms();
        assert!(rate.check(1) && rate.check(1));
        assert!(!rate.check(1));
        clock.advance_to(t + 30_000);
        assert!(rate.check(1), "one request refilled after period/limit");
        assert!(!rate.check(1));
    }

    #[test]
    fn idle_keys_are_evicted() {
        let (rate, clock) = limiter(10, 60);
        for k in 0..1000 {
            rate.check(k);
        }
        assert_eq!(rate.len(), 1000);
        clock.advance_to(clock.now_ms() + 61_000);
        rate.maintain();
        assert_eq!(rate.len(), 0);
    }

    #[test]
    fn the_clock_never_goes_back() {
        let clock = RecordClock::default();
        assert_eq!(clock.advance_to(100), 100);
        assert_eq!(clock.advance_to(50), 100);
    }
}
