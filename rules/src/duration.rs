//! Durations as the rules file writes them (`500ms`, `30s`, `5m`, `1h30m`, `7d`): parsing them,
//! printing them back the same way, and converting them to the milliseconds of record time.

use std::time::Duration;

/// Appended to "is not a duration" errors: how to write one.
pub(crate) const DURATION_HINT: &str = "(use 30s, 5m, 1h)";

/// Parses `30s`, `5m`, `1h`, `7d`, `1h 30m`; `None` when it is not a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

/// Formats a duration the way the rules file writes it: `1m`, `1h30m`, `1d`, `1500ms` → `1s500ms`.
pub fn fmt_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Milliseconds, saturating: record times are `i64` milliseconds since the Unix epoch.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_the_way_they_are_written() {
        for text in ["30s", "1m", "15m", "1h30m", "7d", "1s500ms"] {
            assert_eq!(fmt_duration(parse_duration(text).unwrap()), text);
        }
    }
}
