//! The filter's counters and gauges in Envoy's stats (`wasmcustom.warden.*`).
//!
//! A counter update is a host call (about 1,200 instructions), so per-request events (a record
//! queued, a request blocked) are counted in the VM and added to Envoy's counters in bulk on the
//! next tick (every 50 ms): the stats lag by at most a tick and a request costs no call.

use crate::host::{Host, LogLevel, MetricType};

/// A counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// Records acknowledged by the collector.
    RecordsSent,
    /// Records in failed batches (each retry counts again).
    RecordsFailed,
    /// Records folded into summaries because the buffer was full.
    RecordsSummarized,
    /// Records dropped because the buffer was full and so was the summary table.
    RecordsDropped,
    /// Records of batches the collector refused as invalid (dropped, not retried).
    RecordsRejected,
    /// Export calls acknowledged.
    BatchesSent,
    /// Export calls failed or refused.
    BatchesFailed,
    /// Requests answered with the deny status.
    RequestsBlocked,
    /// Requests answered with the throttle status.
    RequestsThrottled,
    /// Deny-list updates that could not be applied (the filter resubscribed).
    DenylistUpdatesRejected,
    /// Deny-list stream (re)connections.
    DenylistReconnects,
}

const COUNTERS: [(Counter, &str); COUNTER_COUNT] = [
    (Counter::RecordsSent, "warden.records_sent"),
    (Counter::RecordsFailed, "warden.records_failed"),
    (Counter::RecordsSummarized, "warden.records_summarized"),
    (Counter::RecordsDropped, "warden.records_dropped"),
    (Counter::RecordsRejected, "warden.records_rejected"),
    (Counter::BatchesSent, "warden.batches_sent"),
    (Counter::BatchesFailed, "warden.batches_failed"),
    (Counter::RequestsBlocked, "warden.requests_blocked"),
    (Counter::RequestsThrottled, "warden.requests_throttled"),
    (
        Counter::DenylistUpdatesRejected,
        "warden.denylist_updates_rejected",
    ),
    (Counter::DenylistReconnects, "warden.denylist_reconnects"),
];

/// A gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gauge {
    /// Entries of the applied deny list (allow entries included).
    DenylistEntries,
    /// Applied deny-list version.
    DenylistVersion,
}

const GAUGES: [(Gauge, &str); 2] = [
    (Gauge::DenylistEntries, "warden.denylist_entries"),
    (Gauge::DenylistVersion, "warden.denylist_version"),
];

/// What every VM holds, summed over the VMs: each adds the change of its own value since it last
/// reported (a gauge set by one VM would hide the others').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// Records waiting or in flight.
    PendingRecords,
    /// Their encoded bytes.
    PendingBytes,
    /// Record summaries waiting to leave.
    Summaries,
}

const HELD: [(Held, &str); 3] = [
    (Held::PendingRecords, "warden.pending_records"),
    (Held::PendingBytes, "warden.pending_bytes"),
    (Held::Summaries, "warden.summaries_held"),
];

const COUNTER_COUNT: usize = 11;

/// Metric ids and the counts not yet added to Envoy's counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    counter_ids: [Option<u32>; COUNTER_COUNT],
    gauge_ids: [Option<u32>; 2],
    held_ids: [Option<u32>; 3],
    held_reported: [u64; 3],
    pending: [u64; COUNTER_COUNT],
}

impl Metrics {
    /// Defines the metrics (idempotent in Envoy: every VM gets the same stats).
    pub(crate) fn define(host: &impl Host) -> Self {
        let define = |kind, name: &str| match host.define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(e) => {
                host.log(LogLevel::Warn, &format!("cannot define metric {name}: {e}"));
                None
            }
        };
        let mut m = Metrics::default();
        for (i, (_, name)) in COUNTERS.iter().enumerate() {
            m.counter_ids[i] = define(MetricType::Counter, name);
        }
        for (i, (_, name)) in GAUGES.iter().enumerate() {
            m.gauge_ids[i] = define(MetricType::Gauge, name);
        }
        for (i, (_, name)) in HELD.iter().enumerate() {
            m.held_ids[i] = define(MetricType::Gauge, name);
        }
        m
    }

    /// Counts `n` events (added to Envoy's counter at the next [`Metrics::flush`]).
    pub(crate) fn add(&mut self, counter: Counter, n: u64) {
        if let Some(i) = COUNTERS.iter().position(|(c, _)| *c == counter) {
            self.pending[i] = self.pending[i].saturating_add(n);
        }
    }

    /// Adds the counted events to Envoy's counters: one host call per counter that changed.
    pub(crate) fn flush(&mut self, host: &impl Host) {
        for (i, n) in self.pending.iter_mut().enumerate() {
            if *n == 0 {
                continue;
            }
            if let Some(id) = self.counter_ids[i] {
                host.increment_metric(id, i64::try_from(*n).unwrap_or(i64::MAX));
            }
            *n = 0;
        }
    }

    /// Reports what this VM holds now (on the tick: one host call per value that changed).
    pub(crate) fn hold(&mut self, host: &impl Host, held: Held, value: u64) {
        let Some(i) = HELD.iter().position(|(h, _)| *h == held) else {
            return;
        };
        let before = self.held_reported[i];
        if value == before {
            return;
        }
        if let Some(id) = self.held_ids[i] {
            let delta = i128::from(value) - i128::from(before);
            host.increment_metric(id, i64::try_from(delta).unwrap_or(0));
            self.held_reported[i] = value;
        }
    }

    /// Sets a gauge at once (gauges change rarely).
    pub(crate) fn set(&self, host: &impl Host, gauge: Gauge, value: u64) {
        let i = GAUGES.iter().position(|(g, _)| *g == gauge);
        if let Some(id) = i.and_then(|i| self.gauge_ids[i]) {
            host.record_metric(id, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_host::FakeHost;

    #[test]
    fn counts_reach_envoy_in_bulk_on_flush() {
        let host = FakeHost::new();
        let mut m = Metrics::define(&host);
        host.reset_counts();
        for _ in 0..100 {
            m.add(Counter::RequestsBlocked, 1);
        }
        assert_eq!(host.counts().calls, 0, "no host call per event");
        m.flush(&host);
        assert_eq!(host.metric("warden.requests_blocked"), 100);
        assert_eq!(host.counts().calls, 1);
        m.flush(&host);
        assert_eq!(host.counts().calls, 1, "nothing new, nothing sent");
        m.set(&host, Gauge::DenylistVersion, 7);
        assert_eq!(host.metric("warden.denylist_version"), 7);
    }
}
