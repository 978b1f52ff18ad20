//! "What changed right before denials on this host tripled?": finds the latest spike of denied
//! requests to a host in the stored records, so the changes that touched the host just before
//! it can be listed beside it (`warden changes --host H --before-spike`).
//!
//! Denials are counted per bucket (5 minutes by default). A bucket is a spike when it holds at
//! least `min_denials` and at least `factor` times the mean of the buckets in the hour before it
//! (a quiet hour counts as a mean of one, so ten denials after silence are a spike). The answer
//! is where the latest spike began: the first bucket of its run.

use crate::error::Error;
use crate::store::Store;
use crate::store::query::{DecisionFilter, RecordFilter, RecordQuery};
use crate::store::scan::Order;
use crate::store::scan_matching;
use crate::time::{TimeBound, rfc3339};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Duration;

/// How a spike is recognised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeRule {
    /// Bucket width.
    pub bucket: Duration,
    /// A spike bucket holds at least this many times the baseline's mean.
    pub factor: f64,
    /// And at least this many denials.
    pub min_denials: u64,
    /// The baseline: this long before the bucket.
    pub baseline: Duration,
}

impl Default for SpikeRule {
    fn default() -> Self {
        SpikeRule {
            bucket: Duration::from_secs(300),
            factor: 3.0,
            min_denials: 10,
            baseline: Duration::from_secs(3600),
        }
    }
}

/// A spike of denials on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Spike {
    /// The host.
    pub host: String,
    /// Start of the bucket where the spike began, RFC 3339.
    pub start: String,
    /// The same, ms since the epoch.
    pub start_ms: i64,
    /// Denials in that bucket.
    pub denials: u64,
    /// Mean denials per bucket in the baseline before it.
    pub baseline_mean: f64,
    /// Bucket width, seconds.
    pub bucket_seconds: u64,
}

/// Where the latest spike began in `counts` (denials per bucket, oldest first): its index, or
/// `None` without a spike. Only buckets with a whole baseline before them are candidates (the
/// caller counts from one baseline before the period asked about), so the start of the data
/// never looks like a spike.
pub fn latest_spike(counts: &[u64], rule: &SpikeRule) -> Option<(usize, f64)> {
    let bucket_ms = rule.bucket.as_millis().max(1);
    let window = usize::try_from(rule.baseline.as_millis() / bucket_ms)
        .unwrap_or(1)
        .max(1);
    let is_spike = |i: usize| -> Option<f64> {
        let before = &counts[i - window..i];
        let mean = before.iter().sum::<u64>() as f64 / window as f64;
        let c = counts[i];
        (c >= rule.min_denials && c as f64 >= rule.factor * mean.max(1.0)).then_some(mean)
    };
    let mut latest = None;
    let mut previous_was_spike = false;
    for i in window..counts.len() {
        match is_spike(i) {
            Some(mean) => {
                if !previous_was_spike {
                    latest = Some((i, mean));
                }
                previous_was_spike = true;
            }
            None => previous_was_spike = false,
        }
    }
    latest
}

/// The latest spike of denials on `host` between `since` and now, from the stored records.
pub async fn find(
    store: &Store,
    host: &str,
    since: TimeBound,
    rule: SpikeRule,
    now_ms: i64,
) -> Result<Option<Spike>, Error> {
    // Counted from one baseline earlier, so the period's first buckets have theirs.
    let since_ms = since
        .resolve(now_ms)
        .saturating_sub(i64::try_from(rule.baseline.as_millis()).unwrap_or(i64::MAX));
    let bucket_ms = i64::try_from(rule.bucket.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let buckets = usize::try_from((now_ms - since_ms).max(0) / bucket_ms + 1).unwrap_or(0);
    if buckets > 100_000 {
        return Err(Error::invalid(
            "bucket",
            format!("{buckets} buckets over the period: choose a wider bucket or a shorter since"),
        ));
    }
    let q = RecordQuery {
        since: Some(TimeBound::At(since_ms)),
        until: Some(TimeBound::At(now_ms.saturating_add(1))),
        host: Some(host.to_string()),
        decision: Some(DecisionFilter::Deny),
        limit: usize::MAX,
        ..Default::default()
    };
    let filter = RecordFilter::new(&q, now_ms);
    let counts = store
        .read(move |conn| {
            let mut counts = vec![0u64; buckets];
            scan_matching(conn, &filter, Order::OldestFirst, |_, r| {
                let i = usize::try_from((r.time_ms - since_ms) / bucket_ms).unwrap_or(0);
                if let Some(c) = counts.get_mut(i) {
                    *c += 1;
                }
                ControlFlow::Continue(())
            })?;
            Ok(counts)
        })
        .await?;
    Ok(latest_spike(&counts, &rule).map(|(i, mean)| {
        let start_ms = since_ms + i as i64 * bucket_ms;
        Spike {
            host: host.to_string(),
            start: rfc3339(start_ms),
            start_ms,
            denials: counts[i],
            baseline_mean: (mean * 100.0).round() / 100.0,
            bucket_seconds: rule.bucket.as_secs(),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> SpikeRule {
        SpikeRule {
            bucket: Duration::from_secs(60),
            factor: 3.0,
            min_denials: 10,
            baseline: Duration::from_secs(300),
        }
    }

    #[test]
    fn the_start_of_the_latest_run_is_the_spike() {
        let counts = [4, 5, 4, 6, 5, 30, 40, 35, 5, 4, 5, 5, 5, 60, 70];
        assert_eq!(latest_spike(&counts, &rule()).map(|s| s.0), Some(13));
        assert_eq!(latest_spike(&counts[..12], &rule()).map(|s| s.0), Some(5));
    }

    #[test]
    fn steady_traffic_and_small_counts_are_no_spike() {
        assert_eq!(latest_spike(&[20, 22, 19, 25, 21, 24], &rule()), None);
        assert_eq!(latest_spike(&[0, 0, 0, 0, 0, 9], &rule()), None);
        let (i, mean) = latest_spike(&[0, 0, 0, 0, 0, 10], &rule()).unwrap();
        assert_eq!((i, mean), (5, 0.0));
        // Too little history to judge.
        assert_eq!(latest_spike(&[0, 0, 10], &rule()), None);
        assert_eq!(latest_spike(&[], &rule()), None);
    }

    #[test]
    fn doubling_is_not_tripling() {
        assert_eq!(latest_spike(&[10, 10, 10, 10, 10, 20], &rule()), None);
        assert_eq!(
            latest_spike(&[10, 10, 10, 10, 10, 30], &rule()).map(|s| s.0),
            Some(5)
        );
    }
}
