//! Poll, never sleep: retries an asynchronous check until it passes or a deadline expires.
//!
//! Every wait in the suite goes through here, so each has a deadline and a message naming what it
//! waited for. The deadline is `WARDEN_TEST_PATIENCE_SECS` (default 20 s), so a slow machine can
//! be given more patience without touching the tests.
//! - [`eventually`]: the usual form, a check returning `Ok(value)` or `Err(what it saw)`.
//! - [`eventually_within`]: the same with a deadline of its own, for a wait that is longer by
//!   design (a TTL that must pass, a script that starts several processes).
//! - [`Wait`]: the deadline and back-off alone, for a wait whose check needs `&mut` state (a
//!   child process that may exit) or must report a timeout as `Err` instead of panicking.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a wait lasts before it gives up.
pub fn patience() -> Duration {
    let secs = std::env::var("WARDEN_TEST_PATIENCE_SECS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// Calls `check` until it returns `Ok`, and returns that value. Panics naming `what` and the
/// last error when [`patience`] runs out.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(what, patience(), check).await
}

/// [`eventually`] with a deadline of `patience` instead of the default.
pub async fn eventually_within<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut wait = Wait::within(what, patience);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => wait.retry(&last).await.unwrap_or_else(|e| panic!("{e}")),
        }
    }
}

/// A deadline and the pause between tries: the loop of [`eventually`], for callers that keep
/// the loop themselves.
pub struct Wait {
    what: String,
    patience: Duration,
    deadline: Instant,
    delay: Duration,
}

impl Wait {
    /// A wait for `what`, lasting [`patience`].
    pub fn new(what: &str) -> Wait {
        Wait::within(what, patience())
    }

    /// A wait for `what`, lasting `patience`.
    pub fn within(what: &str, patience: Duration) -> Wait {
        Wait {
            what: what.to_string(),
            patience,
            deadline: Instant::now() + patience,
            delay: Duration::from_millis(10),
        }
    }

    /// After a failed try that saw `last`: pauses before the next try (10 ms, doubling up to
    /// 200 ms), or, once the deadline has passed, returns `Err` naming what was awaited and
    /// `last`.
    pub async fn retry(&mut self, last: &str) -> Result<(), String> {
        if Instant::now() >= self.deadline {
            return Err(format!(
                "gave up waiting for {} after {:?}: {last}",
                self.what, self.patience
            ));
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_millis(200));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_success() {
        let mut tries = 0;
        let value = eventually("the third try", || {
            tries += 1;
            let result = if tries == 3 {
                Ok(tries)
            } else {
                Err(format!("try {tries}"))
            };
            async move { result }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "gave up waiting for nothing after 50ms: still no")]
    async fn eventually_names_what_it_waited_for_and_what_it_last_saw() {
        eventually_within("nothing", Duration::from_millis(50), || async {
            Err::<(), _>("still no".to_string())
        })
        .await;
    }

    #[tokio::test]
    async fn a_wait_reports_its_deadline_as_an_error() {
        let mut wait = Wait::within("the ready file", Duration::ZERO);
        let error = wait.retry("absent").await.unwrap_err();
        assert_eq!(
            error,
            "gave up waiting for the ready file after 0ns: absent"
        );
    }
}
