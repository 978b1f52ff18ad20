//! Counters for `GET /metrics` (Prometheus text format). Plain atomics: the hot path (ingest and
//! the writer thread) only ever adds.

use crate::security::conn::HandshakeCounters;
use crate::security::filter_auth::FilterAuth;
use crate::security::guard::Guard;
use crate::security::tls::ReloadingTls;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// The security pieces whose counters `/metrics` shows.
pub struct SecurityStats {
    /// Filter authentication.
    pub filters: Arc<FilterAuth>,
    /// The API gate.
    pub guard: Arc<Guard>,
    /// gRPC handshakes.
    pub grpc_handshakes: Arc<HandshakeCounters>,
    /// HTTP handshakes.
    pub http_handshakes: Arc<HandshakeCounters>,
    /// gRPC TLS, when configured.
    pub grpc_tls: Option<Arc<ReloadingTls>>,
    /// HTTP TLS, when configured.
    pub http_tls: Option<Arc<ReloadingTls>>,
}

impl std::fmt::Debug for SecurityStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecurityStats")
    }
}

/// Upper bounds (seconds) of the commit latency histogram buckets.
const COMMIT_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// What became of the events of audit webhook bodies: stored, already stored (a retry), or
/// dropped and why (the order of [`Metrics::k8s_audit_events`]).
pub const K8S_AUDIT_OUTCOMES: [&str; 7] = [
    "stored",
    "duplicate",
    "dropped_read_only",
    "dropped_no_object",
    "dropped_not_kept",
    "dropped_secret_not_tls",
    "rejected",
];

/// The index of `rejected` (an invalid item) in [`K8S_AUDIT_OUTCOMES`].
pub const K8S_AUDIT_REJECTED: usize = 6;

/// Audit webhook bodies by result (the order of [`Metrics::k8s_audit_bodies`]).
pub const K8S_AUDIT_BODIES: [&str; 4] = ["stored", "malformed", "too_large", "failed"];

/// Collector-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records in batches that passed validation.
    pub records_received: AtomicU64,
    /// Records newly stored.
    pub records_stored: AtomicU64,
    /// Records already stored by an earlier attempt.
    pub records_duplicate: AtomicU64,
    /// Records in batches rejected as invalid.
    pub records_rejected: AtomicU64,
    /// Export calls.
    pub batches_received: AtomicU64,
    /// Export calls rejected as invalid.
    pub batches_rejected: AtomicU64,
    /// Export calls that failed in storage.
    pub batches_failed: AtomicU64,
    /// Records the filters report having dropped (sum of the latest cumulative counts seen).
    pub filter_dropped_total: AtomicU64,
    /// The same by reason: summarized, buffer full, batch refused.
    pub filter_dropped_by_reason: [AtomicU64; 3],
    /// Record summaries newly stored.
    pub summaries_stored: AtomicU64,
    /// Record summaries refused one by one.
    pub summaries_rejected: AtomicU64,
    /// Open Subscribe streams.
    pub filters_connected: AtomicI64,
    /// Current deny-list version.
    pub decisions_version: AtomicU64,
    /// Current number of deny-list and allowlist entries.
    pub decisions_entries: AtomicU64,
    /// Records evaluated by the rules engine.
    pub rules_records_evaluated: AtomicU64,
    /// Records the engine had evaluated already (a retry, however re-cut): not evaluated again.
    pub rules_records_repeated: AtomicU64,
    /// Records not evaluated because the engine's queue was full (ingest never waits for it).
    pub rules_records_skipped: AtomicU64,
    /// Rule decisions made (every outcome).
    pub rule_decisions: AtomicU64,
    /// Rule reloads that failed (the previous rules stayed in force).
    pub rules_reload_failures: AtomicU64,
    /// Alerts delivered.
    pub alerts_sent: AtomicU64,
    /// Alerts that failed after every retry.
    pub alerts_failed: AtomicU64,
    /// Alerts dropped because the delivery queue was full.
    pub alerts_dropped: AtomicU64,
    /// Kubernetes audit events received in valid bodies, by outcome ([`K8S_AUDIT_OUTCOMES`]).
    pub k8s_audit_events: [AtomicU64; K8S_AUDIT_OUTCOMES.len()],
    /// Audit webhook bodies by result ([`K8S_AUDIT_BODIES`]).
    pub k8s_audit_bodies: [AtomicU64; K8S_AUDIT_BODIES.len()],
    /// Findings of `change` rules (dry-run ones included).
    pub change_findings: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    commit_count: AtomicU64,
    commit_micros: AtomicU64,
    security: OnceLock<SecurityStats>,
}

impl Metrics {
    /// Adds the security counters to the exposition (once, at start).
    pub fn set_security(&self, stats: SecurityStats) {
        let _ = self.security.set(stats);
    }

    fn render_security(&self, out: &mut String) {
        let Some(s) = self.security.get() else {
            return;
        };
        let f = &s.filters.counters;
        let g = &s.guard.counters;
        let _ = writeln!(
            out,
            "# HELP warden_grpc_refused_total Filter calls refused, by reason.\n# TYPE warden_grpc_refused_total counter"
        );
        for (reason, v) in [
            ("unauthenticated", &f.unauthenticated),
            ("permission_denied", &f.permission_denied),
            ("over_limit", &f.over_limit),
        ] {
            let _ = writeln!(
                out,
                "warden_grpc_refused_total{{reason=\"{reason}\"}} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_http_refused_total API calls refused, by reason.\n# TYPE warden_http_refused_total counter"
        );
        for (reason, v) in [
            ("unauthenticated", &g.unauthenticated),
            ("forbidden", &g.forbidden),
            ("rate_limited", &g.rate_limited),
            ("cross_site", &g.cross_site),
            ("too_large", &g.too_large),
        ] {
            let _ = writeln!(
                out,
                "warden_http_refused_total{{reason=\"{reason}\"}} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_tls_handshake_failures_total TLS handshakes that failed or timed out, by listener.\n# TYPE warden_tls_handshake_failures_total counter"
        );
        for (listener, h) in [("grpc", &s.grpc_handshakes), ("http", &s.http_handshakes)] {
            let _ = writeln!(
                out,
                "warden_tls_handshake_failures_total{{listener=\"{listener}\"}} {}",
                h.failed.load(Relaxed) + h.timed_out.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_tls_reloads_total Certificate and key reloads, by listener.\n# TYPE warden_tls_reloads_total counter"
        );
        for (listener, t) in [("grpc", &s.grpc_tls), ("http", &s.http_tls)] {
            if let Some(t) = t {
                let _ = writeln!(
                    out,
                    "warden_tls_reloads_total{{listener=\"{listener}\"}} {}",
                    t.reloads()
                );
            }
        }
    }

    /// Records one group commit's latency.
    pub fn observe_commit(&self, seconds: f64) {
        for (bound, bucket) in COMMIT_BUCKETS.iter().zip(&self.commit_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.commit_count.fetch_add(1, Relaxed);
        // Truncation is fine: microsecond resolution is plenty for a latency sum.
        self.commit_micros
            .fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 18] = [
            (
                "warden_records_received_total",
                "Records in valid batches.",
                &self.records_received,
            ),
            (
                "warden_records_stored_total",
                "Records newly stored.",
                &self.records_stored,
            ),
            (
                "warden_records_duplicate_total",
                "Records already stored (retried batches).",
                &self.records_duplicate,
            ),
            (
                "warden_records_rejected_total",
                "Records in batches rejected as invalid.",
                &self.records_rejected,
            ),
            (
                "warden_batches_received_total",
                "Export calls.",
                &self.batches_received,
            ),
            (
                "warden_batches_rejected_total",
                "Export calls rejected as invalid.",
                &self.batches_rejected,
            ),
            (
                "warden_batches_failed_total",
                "Export calls that failed in storage.",
                &self.batches_failed,
            ),
            (
                "warden_filter_dropped_records",
                "Records filters report having dropped.",
                &self.filter_dropped_total,
            ),
            (
                "warden_record_summaries_stored_total",
                "Record summaries newly stored (what filters' buffers could not keep, counted).",
                &self.summaries_stored,
            ),
            (
                "warden_record_summaries_rejected_total",
                "Record summaries refused one by one.",
                &self.summaries_rejected,
            ),
            (
                "warden_rules_records_evaluated_total",
                "Records evaluated by the rules engine.",
                &self.rules_records_evaluated,
            ),
            (
                "warden_rules_records_repeated_total",
                "Records the rules engine had evaluated already (retries): not evaluated again.",
                &self.rules_records_repeated,
            ),
            (
                "warden_rules_records_skipped_total",
                "Records not evaluated because the rules engine stayed busy past the submit patience.",
                &self.rules_records_skipped,
            ),
            (
                "warden_rule_decisions_total",
                "Rule decisions made (all outcomes).",
                &self.rule_decisions,
            ),
            (
                "warden_rules_reload_failures_total",
                "Rule reloads refused as invalid.",
                &self.rules_reload_failures,
            ),
            (
                "warden_alerts_sent_total",
                "Alerts delivered.",
                &self.alerts_sent,
            ),
            (
                "warden_alerts_failed_total",
                "Alerts that failed after every retry.",
                &self.alerts_failed,
            ),
            (
                "warden_alerts_dropped_total",
                "Alerts dropped because the delivery queue was full.",
                &self.alerts_dropped,
            ),
        ];
        for (name, help, value) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Relaxed)
            );
        }
        for (name, help, labels, values) in [
            (
                "warden_k8s_audit_events_total",
                "Kubernetes audit events in valid webhook bodies, by outcome.",
                &K8S_AUDIT_OUTCOMES[..],
                &self.k8s_audit_events[..],
            ),
            (
                "warden_k8s_audit_bodies_total",
                "Kubernetes audit webhook bodies the handler answered, by result (stored; malformed: 400; too_large: 413 over max_events, a body over max_body_bytes is refused before, in warden_http_refused_total{reason=\"too_large\"}; failed: 503).",
                &K8S_AUDIT_BODIES[..],
                &self.k8s_audit_bodies[..],
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let label = if name.ends_with("events_total") {
                "outcome"
            } else {
                "result"
            };
            for (l, v) in labels.iter().zip(values) {
                let _ = writeln!(out, "{name}{{{label}=\"{l}\"}} {}", v.load(Relaxed));
            }
        }
        let _ = writeln!(
            out,
            "# HELP warden_change_findings_total Findings of change rules (dry-run included).\n# TYPE warden_change_findings_total counter\nwarden_change_findings_total {}",
            self.change_findings.load(Relaxed)
        );
        let name = "warden_filter_dropped_records_by_reason";
        let _ = writeln!(
            out,
            "# HELP {name} Records filters report not sending one by one, by reason: summarized (counted in a record summary), buffer_full (only counted), batch_refused.\n# TYPE {name} gauge"
        );
        for (reason, value) in ["summarized", "buffer_full", "batch_refused"]
            .iter()
            .zip(&self.filter_dropped_by_reason)
        {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", value.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP warden_filters_connected Open deny-list Subscribe streams.\n# TYPE warden_filters_connected gauge\nwarden_filters_connected {}",
            self.filters_connected.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP warden_decisions_version Current deny-list version.\n# TYPE warden_decisions_version gauge\nwarden_decisions_version {}",
            self.decisions_version.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP warden_decisions_entries Deny-list and allowlist entries.\n# TYPE warden_decisions_entries gauge\nwarden_decisions_entries {}",
            self.decisions_entries.load(Relaxed)
        );
        self.render_security(&mut out);
        let name = "warden_store_commit_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of record store group commits.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in COMMIT_BUCKETS.iter().zip(&self.commit_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.commit_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.commit_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.records_stored.fetch_add(3, Relaxed);
        m.observe_commit(0.003);
        let text = m.render();
        assert!(text.contains("warden_records_stored_total 3\n"), "{text}");
        assert!(
            text.contains("warden_store_commit_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("warden_store_commit_seconds_bucket{le=\"0.002\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("warden_store_commit_seconds_count 1\n"),
            "{text}"
        );
    }
}
