//! The per-VM record shipper: numbers records, keeps them in a pending buffer bounded in records
//! and bytes (dropping the oldest), cuts batches when full or when the flush interval elapsed,
//! tracks in-flight `Export` calls and puts a failed batch back at the front with backoff.
//!
//! Urgent records (authentication and authorization failures by default) do not wait for the
//! flush interval: they leave as soon as no other batch is in flight, so detection rules in the
//! collector see a brute force within one round trip. While a batch is in flight more records
//! gather, so under attack the calls stay far fewer than the requests.
//!
//! Time is passed in (`now_ms`) so every decision is tested on the host; the glue in
//! `root_context.rs` only dispatches the calls this module asks for.

use std::collections::{HashMap, VecDeque};

use prost::Message;
use warden_proto::pb::{AccessRecord, ExportRequest, FilterIdentity};

use crate::config::BatchConfig;
use warden_proto::pb::{DenyKind, Mechanism, Verdict};

/// Exponential backoff with a cap; `delay_ms` is 0 while healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    delay_ms: u64,
    not_before_ms: u64,
}

impl Backoff {
    /// A healthy backoff with the given bounds.
    pub fn new(initial_ms: u64, max_ms: u64) -> Self {
        Self {
            initial_ms,
            max_ms,
            delay_ms: 0,
            not_before_ms: 0,
        }
    }

    /// Records a failure at `now_ms`: the next attempt waits, twice as long as last time.
    pub fn fail(&mut self, now_ms: u64) {
        self.delay_ms = if self.delay_ms == 0 {
            self.initial_ms
        } else {
            self.delay_ms.saturating_mul(2).min(self.max_ms)
        };
        self.not_before_ms = now_ms.saturating_add(self.delay_ms);
    }

    /// Records a success: the next failure starts from the initial delay again.
    pub fn succeed(&mut self) {
        self.delay_ms = 0;
        self.not_before_ms = 0;
    }

    /// Whether an attempt may be made at `now_ms`.
    pub fn ready(&self, now_ms: u64) -> bool {
        now_ms >= self.not_before_ms
    }

    /// The current delay (0 when healthy).
    pub fn delay_ms(&self) -> u64 {
        self.delay_ms
    }
}

/// A numbered record with its encoded size, as kept in the buffer.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    record: AccessRecord,
    size: usize,
    urgent: bool,
}

/// Records cut for one `Export` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    records: Vec<Pending>,
}

impl Batch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The `ExportRequest` bytes for this batch.
    pub fn encode(&self, filter: &FilterIdentity, dropped_total: u64) -> Vec<u8> {
        ExportRequest {
            filter: Some(filter.clone()),
            records: self.records.iter().map(|p| p.record.clone()).collect(),
            dropped_total,
        }
        .encode_to_vec()
    }
}

/// What the shipper did with an `Export` outcome, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Records acknowledged by the collector.
    pub sent: u64,
    /// Records of a failed batch (they are retried).
    pub failed: u64,
    /// Records dropped because re-queueing overflowed the buffer.
    pub dropped: u64,
    /// Records of a batch the collector refused as invalid (dropped, not retried).
    pub rejected: u64,
}

/// The pending buffer, in-flight calls and retry state of one VM.
#[derive(Debug)]
pub struct Shipper {
    config: BatchConfig,
    max_record_bytes: usize,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    in_flight: HashMap<u32, Batch>,
    next_sequence: u64,
    dropped_total: u64,
    last_flush_ms: u64,
    backoff: Backoff,
    /// Urgent records among `pending`.
    urgent_pending: usize,
}

/// Whether `record` should be shipped without waiting for the flush interval: its status is one
/// of `urgent_statuses`, or an auth mechanism denied it. Warden's own blocks are not urgent: the
/// client is already stopped, and an attacker hammering a block must not turn into one call each.
pub fn is_urgent(config: &BatchConfig, record: &AccessRecord) -> bool {
    let decision = record.decision.as_ref();
    let own_block = decision.is_some_and(|d| {
        d.mechanism == Mechanism::WardenDenyList as i32
            || d.deny_kind == DenyKind::Blocked as i32
            || d.deny_kind == DenyKind::Throttled as i32
    });
    if own_block {
        return false;
    }
    config.urgent_statuses.contains(&record.status)
        || decision.is_some_and(|d| d.verdict == Verdict::Deny as i32)
}

impl Shipper {
    /// An empty shipper; `now_ms` starts the first flush interval.
    pub fn new(config: &BatchConfig, max_record_bytes: usize, now_ms: u64) -> Self {
        Self {
            config: config.clone(),
            max_record_bytes,
            pending: VecDeque::new(),
            pending_bytes: 0,
            in_flight: HashMap::new(),
            next_sequence: 1,
            dropped_total: 0,
            last_flush_ms: now_ms,
            backoff: Backoff::new(config.retry_initial_ms, config.retry_max_ms),
            urgent_pending: 0,
        }
    }

    /// Numbers, bounds and queues a record; returns how many old records were dropped for it.
    pub fn push(&mut self, record: AccessRecord) -> u64 {
        self.push_with(record, false)
    }

    /// Like [`Shipper::push`]; an `urgent` record makes a batch due as soon as no call is in
    /// flight (see [`is_urgent`]).
    pub fn push_with(&mut self, mut record: AccessRecord, urgent: bool) -> u64 {
        record.sequence = self.next_sequence;
        self.next_sequence += 1;
        crate::record::bound_record(&mut record, self.max_record_bytes);
        let size = record.encoded_len();
        self.pending_bytes += size;
        self.urgent_pending += usize::from(urgent);
        self.pending.push_back(Pending {
            record,
            size,
            urgent,
        });
        self.enforce_bounds()
    }

    /// Whether an urgent record is waiting.
    pub fn has_urgent(&self) -> bool {
        self.urgent_pending > 0
    }

    /// Drops the oldest records until both bounds hold.
    fn enforce_bounds(&mut self) -> u64 {
        let mut dropped = 0;
        while self.pending.len() > self.config.max_pending_records
            || self.pending_bytes > self.config.max_pending_bytes
        {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= old.size;
            self.urgent_pending -= usize::from(old.urgent);
            dropped += 1;
        }
        self.dropped_total += dropped;
        dropped
    }

    /// The next batch to send at `now_ms`, if one is due and a call slot and the backoff allow.
    /// Call repeatedly: a backlog yields several full batches in one tick.
    pub fn next_batch(&mut self, now_ms: u64) -> Option<Batch> {
        if self.pending.is_empty()
            || self.in_flight.len() >= self.config.max_in_flight
            || !self.backoff.ready(now_ms)
        {
            return None;
        }
        let full = self.pending.len() >= self.config.max_records;
        let due = now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_interval_ms;
        let urgent = self.urgent_pending > 0 && self.in_flight.is_empty();
        if !full && !due && !urgent {
            return None;
        }
        let n = self.pending.len().min(self.config.max_records);
        let records: Vec<Pending> = self.pending.drain(..n).collect();
        self.pending_bytes -= records.iter().map(|p| p.size).sum::<usize>();
        self.urgent_pending -= records.iter().filter(|p| p.urgent).count();
        self.last_flush_ms = now_ms;
        Some(Batch { records })
    }

    /// The batch was dispatched as call `token`.
    pub fn dispatched(&mut self, token: u32, batch: Batch) {
        self.in_flight.insert(token, batch);
    }

    /// Call `token` completed; `ok` only when the collector returned gRPC OK.
    pub fn completed(&mut self, token: u32, ok: bool, now_ms: u64) -> Outcome {
        let Some(batch) = self.in_flight.remove(&token) else {
            return Outcome::default();
        };
        if ok {
            self.backoff.succeed();
            return Outcome {
                sent: batch.len() as u64,
                ..Outcome::default()
            };
        }
        self.requeue(batch, now_ms)
    }

    /// Call `token` was refused as invalid (gRPC INVALID_ARGUMENT): the same records would be
    /// refused again, and retrying them at the front of the buffer would hold back every record
    /// behind them, so the batch is dropped and counted.
    pub fn rejected(&mut self, token: u32) -> Outcome {
        let Some(batch) = self.in_flight.remove(&token) else {
            return Outcome::default();
        };
        self.backoff.succeed();
        Outcome {
            rejected: batch.len() as u64,
            ..Outcome::default()
        }
    }

    /// A batch that could not be sent (dispatch refused or call failed) goes back to the front.
    pub fn requeue(&mut self, batch: Batch, now_ms: u64) -> Outcome {
        self.backoff.fail(now_ms);
        let failed = batch.len() as u64;
        for p in batch.records.into_iter().rev() {
            self.pending_bytes += p.size;
            self.urgent_pending += usize::from(p.urgent);
            self.pending.push_front(p);
        }
        Outcome {
            failed,
            dropped: self.enforce_bounds(),
            ..Outcome::default()
        }
    }

    /// Records dropped so far (cumulative, sent in each batch).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Records waiting to be sent.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Encoded bytes waiting to be sent.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Export calls outstanding.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> AccessRecord {
        AccessRecord {
            path: path.into(),
            ..Default::default()
        }
    }

    fn cfg() -> BatchConfig {
        BatchConfig {
            max_records: 3,
            flush_interval_ms: 1000,
            max_pending_records: 5,
            max_pending_bytes: 1 << 20,
            max_in_flight: 2,
            retry_initial_ms: 100,
            retry_max_ms: 400,
            urgent_statuses: vec![401, 403],
        }
    }

    fn with_status(status: u32) -> AccessRecord {
        AccessRecord {
            status,
            ..Default::default()
        }
    }

    #[test]
    fn auth_failures_are_urgent_but_warden_blocks_and_successes_are_not() {
        let c = cfg();
        assert!(is_urgent(&c, &with_status(401)));
        assert!(is_urgent(&c, &with_status(403)));
        assert!(!is_urgent(&c, &with_status(200)));
        assert!(!is_urgent(&c, &with_status(404)));
        let mut blocked = with_status(403);
        blocked.decision = Some(warden_proto::pb::AuthDecision {
            verdict: Verdict::Deny as i32,
            mechanism: Mechanism::WardenDenyList as i32,
            deny_kind: DenyKind::Blocked as i32,
            ..Default::default()
        });
        assert!(!is_urgent(&c, &blocked), "the client is already stopped");
        let mut rbac_denied = with_status(418);
        rbac_denied.decision = Some(warden_proto::pb::AuthDecision {
            verdict: Verdict::Deny as i32,
            mechanism: Mechanism::Rbac as i32,
            ..Default::default()
        });
        assert!(is_urgent(&c, &rbac_denied));
    }

    #[test]
    fn an_urgent_record_is_due_at_once_but_only_when_nothing_is_in_flight() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        s.push(record("/ok"));
        assert!(s.next_batch(1).is_none());
        s.push_with(with_status(401), true);
        let first = s.next_batch(1).expect("urgent batch due at once");
        assert_eq!(seqs(&first), vec![1, 2], "earlier records ride along");
        assert!(!s.has_urgent());
        s.dispatched(7, first);
        s.push_with(with_status(401), true);
        assert!(
            s.next_batch(2).is_none(),
            "one call at a time for urgent records"
        );
        assert!(s.has_urgent());
        assert_eq!(s.completed(7, true, 3).sent, 2);
        assert_eq!(seqs(&s.next_batch(3).unwrap()), vec![3]);
    }

    #[test]
    fn a_failed_urgent_batch_stays_urgent_and_waits_for_the_backoff() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        s.push_with(with_status(403), true);
        let b = s.next_batch(0).unwrap();
        s.dispatched(1, b);
        s.completed(1, false, 10);
        assert!(s.has_urgent());
        assert!(s.next_batch(50).is_none(), "backoff first");
        assert_eq!(seqs(&s.next_batch(110).unwrap()), vec![1]);
    }

    #[test]
    fn a_rejected_batch_is_dropped_not_retried() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        for i in 0..3 {
            s.push(record(&format!("/{i}")));
        }
        let b = s.next_batch(0).unwrap();
        s.dispatched(9, b);
        s.push(record("/next"));
        let outcome = s.rejected(9);
        assert_eq!(outcome.rejected, 3);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(
            seqs(&s.next_batch(1000).unwrap()),
            vec![4],
            "the next records go on"
        );
    }

    #[test]
    fn dropping_an_urgent_record_forgets_its_urgency() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        s.push_with(with_status(401), true);
        for i in 0..5 {
            s.push(record(&format!("/{i}")));
        }
        assert!(!s.has_urgent());
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.records.iter().map(|p| p.record.sequence).collect()
    }

    #[test]
    fn numbers_records_from_one_and_flushes_when_full() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        s.push(record("/a"));
        s.push(record("/b"));
        assert!(s.next_batch(10).is_none(), "neither full nor due");
        s.push(record("/c"));
        s.push(record("/d"));
        let b = s.next_batch(10).unwrap();
        assert_eq!(seqs(&b), vec![1, 2, 3]);
        assert!(s.next_batch(10).is_none());
        assert_eq!(seqs(&s.next_batch(1010).unwrap()), vec![4]);
    }

    #[test]
    fn flushes_a_partial_batch_after_the_interval() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        s.push(record("/a"));
        assert!(s.next_batch(999).is_none());
        assert_eq!(s.next_batch(1000).unwrap().len(), 1);
    }

    #[test]
    fn drops_the_oldest_when_full_in_records_or_bytes() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        let mut dropped = 0;
        for i in 0..7 {
            dropped += s.push(record(&format!("/{i}")));
        }
        assert_eq!(dropped, 2);
        assert_eq!(s.dropped_total(), 2);
        assert_eq!(seqs(&s.next_batch(0).unwrap()), vec![3, 4, 5]);

        let c = BatchConfig {
            max_pending_bytes: 1024,
            max_pending_records: 1000,
            ..cfg()
        };
        let mut s = Shipper::new(&c, 16384, 0);
        for _ in 0..10 {
            s.push(record(&"x".repeat(200)));
        }
        assert!(s.pending_bytes() <= 1024);
        assert_eq!(s.pending_len(), 4);
        assert_eq!(s.dropped_total(), 6);
    }

    #[test]
    fn failed_batches_return_to_the_front_with_backoff() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        for i in 0..4 {
            s.push(record(&format!("/{i}")));
        }
        let b = s.next_batch(0).unwrap();
        s.dispatched(7, b);
        assert_eq!(s.in_flight(), 1);
        let out = s.completed(7, false, 50);
        assert_eq!(out.failed, 3);
        assert!(s.next_batch(100).is_none(), "backing off until 150");
        let b = s.next_batch(1150).unwrap();
        assert_eq!(seqs(&b), vec![1, 2, 3]);
        s.dispatched(8, b);
        s.completed(8, false, 1200);
        assert!(
            s.next_batch(1350).is_none(),
            "second failure doubles the delay"
        );
        let b = s.next_batch(1400).unwrap();
        s.dispatched(9, b);
        assert_eq!(s.completed(9, true, 1500).sent, 3);
        assert_eq!(seqs(&s.next_batch(2500).unwrap()), vec![4]);
    }

    #[test]
    fn caps_calls_in_flight_and_ignores_unknown_tokens() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        for i in 0..5 {
            s.push(record(&format!("/{i}")));
        }
        let b = s.next_batch(2000).unwrap();
        s.dispatched(1, b);
        let b = s.next_batch(3000).unwrap();
        s.dispatched(2, b);
        s.push(record("/more"));
        assert!(s.next_batch(5000).is_none(), "two calls in flight");
        assert_eq!(s.completed(99, true, 0), Outcome::default());
    }

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
    fn batch_encodes_identity_and_dropped_total() {
        let mut s = Shipper::new(&cfg(), 16384, 0);
        s.push(record("/a"));
        let b = s.next_batch(1000).unwrap();
        let id = FilterIdentity {
            node_id: "n".into(),
            ..Default::default()
        };
        let req = ExportRequest::decode(b.encode(&id, 4).as_slice()).unwrap();
        assert_eq!(req.filter.unwrap().node_id, "n");
        assert_eq!(req.dropped_total, 4);
        assert_eq!(req.records[0].sequence, 1);
    }
}
