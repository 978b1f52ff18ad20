//! Record time: the engine's only clock.
//!
//! Windows, bans and the `rate` limiters all read the time of the newest record seen rather than
//! the wall clock, so a replay over stored records gives the same answers as live evaluation did,
//! and a backlog processed late is judged by when the requests happened.

use governor::clock::Clock;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The time of the newest record seen, shared by the engine and its limiters.
///
/// Monotonic: a record older than one already seen (records from several Envoy workers arrive
/// interleaved) does not move it back.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordClock(Arc<AtomicI64>);

impl RecordClock {
    /// Moves the clock to `ms` (milliseconds since the Unix epoch) unless it is already later;
    /// returns the clock's time.
    pub(crate) fn advance_to(&self, ms: i64) -> i64 {
        let prev = self.0.fetch_max(ms, Ordering::Relaxed);
        prev.max(ms)
    }

    /// The clock's time, milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Clock for RecordClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.now_ms()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_goes_back() {
        let clock = RecordClock::default();
        assert_eq!(clock.advance_to(100), 100);
        assert_eq!(clock.advance_to(50), 100);
    }
}
