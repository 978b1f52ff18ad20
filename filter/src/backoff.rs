//! Exponential backoff with a cap, shared by the shipper (retrying a failed `Export`) and the
//! deny-list stream (reconnecting `Subscribe`). Time is passed in so it is tested on the host.

/// Exponential backoff with a cap; `delay_ms` is 0 while healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    delay_ms: u64,
    not_before_ms: u64,
}

impl Backoff {
    /// A healthy backoff with the given bounds.
    pub(crate) fn new(initial_ms: u64, max_ms: u64) -> Self {
        Self {
            initial_ms,
            max_ms,
            delay_ms: 0,
            not_before_ms: 0,
        }
    }

    /// Records a failure at `now_ms`: the next attempt waits, twice as long as last time.
    pub(crate) fn fail(&mut self, now_ms: u64) {
        self.delay_ms = if self.delay_ms == 0 {
            self.initial_ms
        } else {
            self.delay_ms.saturating_mul(2).min(self.max_ms)
        };
        self.not_before_ms = now_ms.saturating_add(self.delay_ms);
    }

    /// Records a success: the next failure starts from the initial delay again.
    pub(crate) fn succeed(&mut self) {
        self.delay_ms = 0;
        self.not_before_ms = 0;
    }

    /// Whether an attempt may be made at `now_ms`.
    pub(crate) fn ready(&self, now_ms: u64) -> bool {
        now_ms >= self.not_before_ms
    }

    /// The current delay (0 when healthy).
    pub(crate) fn delay_ms(&self) -> u64 {
        self.delay_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        let mut b = Backoff::new(100, 250);
        b.fail(0);
        b.fail(0);
        b.fail(0);
        assert_eq!(b.delay_ms(), 250);
        b.succeed();
        assert!(b.ready(0));
    }

    #[test]
    fn each_failure_waits_twice_as_long_as_the_last() {
        let mut b = Backoff::new(100, 1000);
        assert!(b.ready(0), "healthy");
        b.fail(1000);
        assert!(!b.ready(1099));
        assert!(b.ready(1100));
        b.fail(1100);
        assert_eq!(b.delay_ms(), 200);
        assert!(!b.ready(1299));
        assert!(b.ready(1300));
    }
}
