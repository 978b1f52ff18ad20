//! Poll, never sleep: retries an asynchronous check until it passes or a deadline expires.
//!
//! The deadline is `WARDEN_TEST_PATIENCE_SECS` (default 20 s), so a slow machine can be given
//! more patience without touching the tests.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long `eventually` waits before giving up.
pub fn patience() -> Duration {
    let secs = std::env::var("WARDEN_TEST_PATIENCE_SECS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// Calls `check` until it returns `Ok`, and returns that value. Panics with the last error
/// (and `what`) when `patience()` runs out.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + patience();
    let mut delay = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("gave up waiting for {what} after {:?}: {last}", patience());
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}
