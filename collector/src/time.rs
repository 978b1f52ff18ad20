//! Time values at the boundary: `TimeBound` (`15m` ago or an RFC 3339 instant) for queries, `Ttl`
//! for decisions, and the one RFC 3339 formatting used in every JSON answer.

use chrono::{DateTime, SecondsFormat, Utc};
use std::str::FromStr;
use std::time::Duration;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Parses a duration like `15m`, `24h`, `30d`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    warden_rules::duration::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration (e.g. 90s, 15m, 24h, 30d)"))
}

/// A point in time given either relative to now (`15m` = fifteen minutes ago) or absolutely
/// (RFC 3339, e.g. `2025-01-02T03:04:05Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// This long before the moment the bound is resolved.
    Ago(Duration),
    /// Milliseconds since the Unix epoch.
    At(i64),
}

impl TimeBound {
    /// Resolves the bound to epoch milliseconds relative to `now_ms`.
    pub fn resolve(&self, now_ms: i64) -> i64 {
        match self {
            TimeBound::Ago(d) => {
                now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            TimeBound::At(ms) => *ms,
        }
    }
}

impl FromStr for TimeBound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(TimeBound::At(t.timestamp_millis()));
        }
        parse_duration(s).map(TimeBound::Ago).map_err(|_| {
            format!("{s:?} is not a duration like 15m or 24h, nor an RFC 3339 time like 2025-01-02T03:04:05Z")
        })
    }
}

/// How long a decision lasts: a positive duration, or forever (`none`, `0`, `forever`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

impl Ttl {
    /// The expiry instant for a decision created at `now_ms`, or `None` for never.
    pub fn expires_at(&self, now_ms: i64) -> Option<i64> {
        self.0
            .map(|d| now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
}

impl FromStr for Ttl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "0" | "none" | "never" | "forever" => Ok(Ttl(None)),
            other => parse_duration(other)
                .map(|d| Ttl(if d.is_zero() { None } else { Some(d) }))
                .map_err(|_| format!("{s:?} is not a TTL (e.g. 90s, 15m, 1h, 7d, or none)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_bounds_count_back_from_now() {
        let b: TimeBound = "15m".parse().unwrap();
        assert_eq!(b.resolve(1_000_000_000), 1_000_000_000 - 15 * 60 * 1000);
        let b: TimeBound = "24h".parse().unwrap();
        assert_eq!(b, TimeBound::Ago(Duration::from_secs(86_400)));
    }

    #[test]
    fn absolute_bounds_are_rfc3339() {
        let b: TimeBound = "2025-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(b, TimeBound::At(1_735_787_045_000));
        assert_eq!(rfc3339(1_735_787_045_000), "2025-01-02T03:04:05.000Z");
    }

    #[test]
    fn garbage_bounds_are_rejected() {
        let e = "yesterday".parse::<TimeBound>().unwrap_err();
        assert!(e.contains("\"yesterday\" is not a duration"), "{e}");
    }

    #[test]
    fn ttl_parses_durations_and_forever() {
        assert_eq!(
            "1h".parse::<Ttl>().unwrap(),
            Ttl(Some(Duration::from_secs(3600)))
        );
        assert_eq!("none".parse::<Ttl>().unwrap(), Ttl(None));
        assert_eq!(
            Ttl(Some(Duration::from_secs(1))).expires_at(1000),
            Some(2000)
        );
        let e = "1x".parse::<Ttl>().unwrap_err();
        assert!(e.contains("\"1x\" is not a TTL"), "{e}");
    }
}
