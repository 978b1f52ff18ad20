//! The per-VM record shipper: numbers records and appends each, already encoded, to the open
//! batch; seals a batch when it holds `max_records` records or `max_batch_bytes` bytes, or when
//! its flush interval elapsed; keeps up to `max_in_flight` `Export` calls outstanding; puts a
//! failed batch back at the front with backoff; bounds everything it holds in records and
//! bytes, folding the oldest batches beyond the bounds into `summary` counts
//! (and counting what even those cannot hold).
//!
//! A batch's bytes are the `ExportRequest` itself: the filter identity (encoded once), then the
//! records as they were encoded when their requests completed (or, for a summary batch, the
//! summaries), then `dropped_total` and `dropped`, rewritten at each dispatch. Dispatch and retry send those bytes as they are: nothing is re-encoded or
//! copied, and a retried batch carries exactly the same records and sequence numbers.
//!
//! The batch size follows the request rate: at a low rate the flush interval cuts small batches;
//! at a high rate batches fill to `max_records` or `max_batch_bytes` and are sealed at once (the
//! HTTP context wakes the root context to send them), so a busy worker sends a few large calls
//! a second instead of falling behind one 50 ms tick at a time.
//!
//! Urgent records (authentication and authorization failures by default) do not wait for the
//! flush interval: their batch leaves as soon as no other urgent batch is in flight, so detection
//! rules in the collector see a brute force within one round trip, while records of an ongoing
//! attack still gather into few calls.
//!
//! Time is passed in (`now_ms`) so every decision is tested on the host.

use std::collections::VecDeque;

use prost::Message;
use prost::encoding::encode_varint;
use warden_proto::pb::{DropCounts, FilterIdentity};

use crate::backoff::Backoff;
use crate::config::BatchConfig;
use crate::identity::DecisionView;
use crate::summary::{Folded, SummaryTable};
use warden_proto::pb::{DenyKind, Mechanism, Verdict};

/// Whether a record should be shipped without waiting for the flush interval: its status is one
/// of `urgent_statuses`, or an auth mechanism denied it. Warden's own blocks are not urgent: the
/// client is already stopped, and an attacker hammering a block must not turn into one call each.
pub(crate) fn is_urgent(config: &BatchConfig, status: u32, decision: &DecisionView<'_>) -> bool {
    let own_block = decision.mechanism == Mechanism::WardenDenyList
        || matches!(decision.deny_kind, DenyKind::Blocked | DenyKind::Throttled);
    if own_block {
        return false;
    }
    config.urgent_statuses.contains(&status) || decision.verdict == Verdict::Deny
}

/// Records cut for one `Export` call: the encoded `ExportRequest`.
#[derive(Debug)]
pub struct Batch {
    bytes: Vec<u8>,
    /// End of the records (or summaries); `dropped_total` follows.
    records_end: usize,
    records: usize,
    /// Summaries (a summary batch holds no record) and the requests they count.
    summaries: usize,
    summarized_requests: u64,
    urgent: usize,
    /// Records that are shed last when the buffer overflows (auth failures, Warden's blocks).
    protected: usize,
    /// Dispatched at least once: the collector may have stored it even though the call failed
    /// (a timeout while it was stalled), so it is shed only when nothing else is left.
    attempted: bool,
    opened_ms: u64,
}

impl Batch {
    /// The encoded `ExportRequest`, as it goes on the wire.
    pub fn body(&self) -> &[u8] {
        &self.bytes
    }

    /// Records in the batch (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.records
    }

    /// Summaries in the batch (tests).
    #[cfg(test)]
    fn summaries(&self) -> usize {
        self.summaries
    }

    /// Sets `dropped_total` (field 3) and `dropped` (field 4) after the records.
    fn stamp(&mut self, dropped: &DropCounts) {
        self.bytes.truncate(self.records_end);
        let total = dropped.summarized + dropped.buffer_full + dropped.batch_refused;
        if total > 0 {
            encode_varint(3 << 3, &mut self.bytes);
            encode_varint(total, &mut self.bytes);
            encode_varint(4 << 3 | 2, &mut self.bytes);
            encode_varint(dropped.encoded_len() as u64, &mut self.bytes);
            dropped.encode_raw(&mut self.bytes);
        }
    }
}

/// What the shipper did with an `Export` outcome or a new record, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Outcome {
    /// Records acknowledged by the collector.
    pub sent: u64,
    /// Records of a failed batch (they are retried).
    pub failed: u64,
    /// Records folded into summaries because the buffer was full.
    pub summarized: u64,
    /// Records dropped because the buffer was full and so was the summary table.
    pub dropped: u64,
    /// Records of a batch the collector refused as invalid (dropped, not retried).
    pub rejected: u64,
}

/// What appending a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended {
    /// Records folded into summaries to make room.
    pub summarized: u64,
    /// Records dropped to make room (the summary table was full too).
    pub dropped: u64,
    /// A batch is ready to leave now (sealed full, or urgent with no urgent call in flight):
    /// wake the root context rather than wait for its tick.
    pub send_now: bool,
}

/// How much a record matters when the buffer overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// A plain access record: shed first.
    Plain,
    /// A request Warden refused: kept before plain records.
    Blocked,
    /// An auth failure: leaves at once and is kept before plain records.
    Urgent,
}

/// Spare batch buffers kept for reuse (enough for the calls in flight to come back).
const MAX_SPARE_BUFFERS: usize = 8;

/// The batches and in-flight calls of one VM.
#[derive(Debug)]
pub struct Shipper {
    config: BatchConfig,
    max_record_bytes: usize,
    identity: Vec<u8>,
    open: Option<Batch>,
    queued: VecDeque<Batch>,
    in_flight: Vec<(u32, Batch)>,
    spare: Vec<Vec<u8>>,
    next_sequence: u64,
    records: usize,
    bytes: usize,
    dropped: DropCounts,
    summaries: SummaryTable,
    /// The summary batch cut and not yet acknowledged (at most one: with the table, this bounds
    /// the summaries held to twice `max_summaries`).
    summary_batch: Option<Batch>,
    backoff: Backoff,
}

impl Shipper {
    /// An empty shipper for `identity`.
    pub fn new(config: &BatchConfig, max_record_bytes: usize, identity: &FilterIdentity) -> Self {
        let mut encoded = Vec::new();
        encode_varint(1 << 3 | 2, &mut encoded);
        encode_varint(identity.encoded_len() as u64, &mut encoded);
        identity.encode_raw(&mut encoded);
        Self {
            config: config.clone(),
            max_record_bytes,
            identity: encoded,
            open: None,
            queued: VecDeque::new(),
            in_flight: Vec::new(),
            spare: Vec::new(),
            next_sequence: 1,
            records: 0,
            bytes: 0,
            dropped: DropCounts::default(),
            summaries: SummaryTable::new(config.max_summaries),
            summary_batch: None,
            backoff: Backoff::new(config.retry_initial_ms, config.retry_max_ms),
        }
    }

    /// Applies a new configuration: limits apply from the next batch on.
    pub(crate) fn reconfigure(&mut self, config: &BatchConfig, max_record_bytes: usize) {
        self.config = config.clone();
        self.max_record_bytes = max_record_bytes;
        self.summaries.set_max_keys(config.max_summaries);
        self.backoff = Backoff::new(config.retry_initial_ms, config.retry_max_ms);
    }

    /// The record size bound encoders must keep.
    pub(crate) fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Numbers a record and appends it to the open batch: `encode(sequence, buffer)` writes it
    /// as an `ExportRequest.records` element.
    pub(crate) fn append(
        &mut self,
        now_ms: u64,
        priority: Priority,
        encode: impl FnOnce(u64, &mut Vec<u8>),
    ) -> Appended {
        let urgent = priority == Priority::Urgent;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let batch = match self.open.as_mut() {
            Some(b) => b,
            None => {
                let mut bytes = self.spare.pop().unwrap_or_default();
                bytes.clear();
                bytes.extend_from_slice(&self.identity);
                self.bytes += bytes.len();
                self.open.insert(Batch {
                    records_end: bytes.len(),
                    bytes,
                    records: 0,
                    summaries: 0,
                    summarized_requests: 0,
                    urgent: 0,
                    protected: 0,
                    attempted: false,
                    opened_ms: now_ms,
                })
            }
        };
        let before = batch.bytes.len();
        encode(sequence, &mut batch.bytes);
        batch.records_end = batch.bytes.len();
        batch.records += 1;
        batch.urgent += usize::from(urgent);
        batch.protected += usize::from(priority != Priority::Plain);
        self.records += 1;
        self.bytes += batch.bytes.len() - before;
        let full = batch.records >= self.config.max_records
            || batch.bytes.len() >= self.config.max_batch_bytes;
        let urgent_due = urgent && !self.urgent_in_flight();
        if full {
            self.seal();
        }
        let shed = self.enforce_bounds();
        Appended {
            summarized: shed.summarized,
            dropped: shed.lost,
            send_now: (full || urgent_due) && self.in_flight.len() < self.config.max_in_flight,
        }
    }

    fn seal(&mut self) {
        if let Some(b) = self.open.take() {
            self.queued.push_back(b);
        }
    }

    fn urgent_in_flight(&self) -> bool {
        self.in_flight.iter().any(|(_, b)| b.urgent > 0)
    }

    /// Whether an urgent record is waiting (tests).
    #[cfg(test)]
    fn has_urgent(&self) -> bool {
        self.open.as_ref().is_some_and(|b| b.urgent > 0) || self.queued.iter().any(|b| b.urgent > 0)
    }

    fn forget(&mut self, batch: &Batch) {
        self.records -= batch.records;
        self.bytes -= batch.records_end;
    }

    /// Sheds waiting batches until both bounds hold, folding their records into summaries:
    /// first the oldest holding only plain access records, then the open one if it holds only
    /// those, then batches holding auth failures or Warden's blocks, oldest first (the evidence
    /// detection and auditors need most), and only then batches already sent once (a call that
    /// timed out may still be stored by a stalled collector: summarizing it too would count
    /// its records twice). Batches in flight are never shed; their number and size are bounded
    /// by the configuration.
    fn enforce_bounds(&mut self) -> Folded {
        let mut shed = Folded::default();
        while self.records > self.config.max_pending_records
            || self.bytes > self.config.max_pending_bytes
        {
            let plain_queued = self
                .queued
                .iter()
                .position(|b| b.protected == 0 && !b.attempted);
            let unsent_queued = || self.queued.iter().position(|b| !b.attempted);
            let victim = match plain_queued {
                Some(i) => self.queued.remove(i),
                None if self.open.as_ref().is_some_and(|b| b.protected == 0) => self.open.take(),
                None => match unsent_queued() {
                    Some(i) => self.queued.remove(i),
                    None => self.open.take().or_else(|| self.queued.pop_front()),
                },
            };
            let Some(old) = victim else {
                break;
            };
            self.forget(&old);
            let folded = self
                .summaries
                .fold(&old.bytes[..old.records_end], old.records);
            shed.summarized += folded.summarized;
            shed.lost += folded.lost;
            self.recycle(old);
        }
        self.dropped.summarized += shed.summarized;
        self.dropped.buffer_full += shed.lost;
        shed
    }

    /// Cuts the next summary batch when none is waiting or in flight.
    fn cut_summaries(&mut self) {
        let in_flight = self.in_flight.iter().any(|(_, b)| b.summaries > 0);
        if self.summary_batch.is_some() || in_flight || self.summaries.is_empty() {
            return;
        }
        let mut bytes = self.spare.pop().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(&self.identity);
        let (summaries, requests) = self.summaries.cut(&mut bytes, self.config.max_batch_bytes);
        self.summary_batch = Some(Batch {
            records_end: bytes.len(),
            bytes,
            records: 0,
            summaries,
            summarized_requests: requests,
            urgent: 0,
            protected: 0,
            attempted: false,
            opened_ms: 0,
        });
    }

    fn recycle(&mut self, batch: Batch) {
        if self.spare.len() < MAX_SPARE_BUFFERS {
            self.spare.push(batch.bytes);
        }
    }

    /// The next batch to send at `now_ms`, if one is due and a call slot and the backoff allow.
    /// Call repeatedly: a backlog yields several batches at once.
    pub fn next_batch(&mut self, now_ms: u64) -> Option<Batch> {
        if self.in_flight.len() >= self.config.max_in_flight || !self.backoff.ready(now_ms) {
            return None;
        }
        self.cut_summaries();
        if let Some(mut batch) = self.summary_batch.take() {
            batch.stamp(&self.dropped);
            return Some(batch);
        }
        if self.queued.is_empty() {
            let open = self.open.as_ref()?;
            let due = now_ms.saturating_sub(open.opened_ms) >= self.config.flush_interval_ms;
            let urgent = open.urgent > 0 && !self.urgent_in_flight();
            if !due && !urgent {
                return None;
            }
            self.seal();
        }
        let mut batch = self.queued.pop_front()?;
        batch.stamp(&self.dropped);
        Some(batch)
    }

    /// The batch was dispatched as call `token`.
    pub(crate) fn dispatched(&mut self, token: u32, mut batch: Batch) {
        batch.attempted = true;
        self.in_flight.push((token, batch));
    }

    fn take_in_flight(&mut self, token: u32) -> Option<Batch> {
        let i = self.in_flight.iter().position(|(t, _)| *t == token)?;
        Some(self.in_flight.swap_remove(i).1)
    }

    /// Call `token` completed; `ok` only when the collector returned gRPC OK.
    pub(crate) fn completed(&mut self, token: u32, ok: bool, now_ms: u64) -> Outcome {
        let Some(batch) = self.take_in_flight(token) else {
            return Outcome::default();
        };
        if !ok {
            return self.requeue(batch, now_ms);
        }
        self.backoff.succeed();
        if batch.summaries == 0 {
            self.forget(&batch);
        }
        let sent = batch.records as u64;
        self.recycle(batch);
        Outcome {
            sent,
            ..Outcome::default()
        }
    }

    /// Call `token` was refused as invalid (gRPC INVALID_ARGUMENT): the same records would be
    /// refused again, and retrying them at the front of the buffer would hold back every record
    /// behind them, so the batch is dropped and counted.
    pub(crate) fn rejected(&mut self, token: u32) -> Outcome {
        let Some(batch) = self.take_in_flight(token) else {
            return Outcome::default();
        };
        self.backoff.succeed();
        let rejected = if batch.summaries > 0 {
            // The requests these summaries count stay counted as summarized: only the
            // collector's log and this counter say the summaries themselves were refused.
            batch.summarized_requests
        } else {
            self.forget(&batch);
            self.dropped.batch_refused += batch.records as u64;
            batch.records as u64
        };
        self.recycle(batch);
        Outcome {
            rejected,
            ..Outcome::default()
        }
    }

    /// A batch that could not be sent (dispatch refused or call failed) goes back to the front,
    /// unchanged, and the shipper backs off.
    pub(crate) fn requeue(&mut self, batch: Batch, now_ms: u64) -> Outcome {
        self.backoff.fail(now_ms);
        if batch.summaries > 0 {
            self.summary_batch = Some(batch);
            return Outcome::default();
        }
        let failed = batch.records as u64;
        self.queued.push_front(batch);
        let shed = self.enforce_bounds();
        Outcome {
            failed,
            summarized: shed.summarized,
            dropped: shed.lost,
            ..Outcome::default()
        }
    }

    /// Records not sent one by one so far (tests; the batches carry it).
    #[cfg(test)]
    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped.summarized + self.dropped.buffer_full + self.dropped.batch_refused
    }

    /// The same, by reason (tests).
    #[cfg(test)]
    fn dropped(&self) -> &DropCounts {
        &self.dropped
    }

    /// Summaries waiting in the table (not yet cut into a batch).
    pub(crate) fn summaries_held(&self) -> usize {
        self.summaries.len()
    }

    /// Records held (waiting or in flight).
    pub(crate) fn pending_len(&self) -> usize {
        self.records
    }

    /// Encoded bytes held (waiting or in flight).
    pub(crate) fn pending_bytes(&self) -> usize {
        self.bytes
    }

    /// Export calls outstanding (tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_proto::pb::{AccessRecord, ExportRequest};

    fn cfg() -> BatchConfig {
        BatchConfig {
            max_records: 3,
            max_batch_bytes: 1 << 20,
            flush_interval_ms: 1000,
            max_pending_records: 5,
            max_pending_bytes: 1 << 20,
            // Shedding drops whole unless a test asks for summaries.
            max_summaries: 0,
            max_in_flight: 2,
            retry_initial_ms: 100,
            retry_max_ms: 400,
            urgent_statuses: vec![401, 403],
        }
    }

    fn identity() -> FilterIdentity {
        FilterIdentity {
            node_id: "n".into(),
            instance_id: "i".into(),
            ..Default::default()
        }
    }

    fn shipper(config: &BatchConfig) -> Shipper {
        Shipper::new(config, 16 * 1024, &identity())
    }

    fn push(s: &mut Shipper, now: u64, path: &str, urgent: bool) -> Appended {
        let priority = if urgent {
            Priority::Urgent
        } else {
            Priority::Plain
        };
        s.append(now, priority, |sequence, out| {
            let r = AccessRecord {
                sequence,
                path: path.into(),
                ..Default::default()
            };
            encode_varint(2 << 3 | 2, out);
            encode_varint(r.encoded_len() as u64, out);
            r.encode_raw(out);
        })
    }

    /// Decodes a batch's records.
    fn decode_records(body: &[u8]) -> Vec<AccessRecord> {
        ExportRequest::decode(body)
            .map(|r| r.records)
            .unwrap_or_default()
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        decode_records(b.body())
            .iter()
            .map(|r| r.sequence)
            .collect()
    }

    fn decision(
        verdict: Verdict,
        mechanism: Mechanism,
        deny_kind: DenyKind,
    ) -> DecisionView<'static> {
        DecisionView {
            verdict,
            mechanism,
            deny_kind,
            reason: "",
            policy: "",
            warden_decision_id: 0,
        }
    }

    #[test]
    fn auth_failures_are_urgent_but_warden_blocks_and_successes_are_not() {
        let c = cfg();
        let allow = decision(Verdict::Allow, Mechanism::None, DenyKind::Unspecified);
        assert!(is_urgent(&c, 401, &allow));
        assert!(is_urgent(&c, 403, &allow));
        assert!(!is_urgent(&c, 200, &allow));
        assert!(!is_urgent(&c, 404, &allow));
        let blocked = decision(Verdict::Deny, Mechanism::WardenDenyList, DenyKind::Blocked);
        assert!(
            !is_urgent(&c, 403, &blocked),
            "the client is already stopped"
        );
        let rbac = decision(Verdict::Deny, Mechanism::Rbac, DenyKind::Authorization);
        assert!(is_urgent(&c, 418, &rbac));
    }

    #[test]
    fn a_batch_is_the_export_request_with_identity_records_and_dropped_total() {
        let mut s = shipper(&cfg());
        push(&mut s, 0, "/a", false);
        let b = s.next_batch(1000).unwrap();
        let req = ExportRequest::decode(b.body()).unwrap();
        assert_eq!(req.filter.unwrap().node_id, "n");
        assert_eq!(req.records[0].sequence, 1);
        assert_eq!(req.records[0].path, "/a");
        assert_eq!(req.dropped_total, 0);
    }

    #[test]
    fn numbers_records_from_one_and_seals_full_batches_at_once() {
        let mut s = shipper(&cfg());
        assert!(!push(&mut s, 0, "/a", false).send_now);
        assert!(!push(&mut s, 0, "/b", false).send_now);
        assert!(s.next_batch(10).is_none(), "neither full nor due");
        assert!(push(&mut s, 0, "/c", false).send_now, "full: wake the root");
        push(&mut s, 0, "/d", false);
        let b = s.next_batch(10).unwrap();
        assert_eq!(seqs(&b), vec![1, 2, 3]);
        assert!(s.next_batch(10).is_none());
        assert_eq!(seqs(&s.next_batch(1000).unwrap()), vec![4]);
    }

    #[test]
    fn a_batch_is_sealed_by_bytes_too() {
        let c = BatchConfig {
            max_records: 1000,
            max_batch_bytes: 500,
            ..cfg()
        };
        let mut s = shipper(&c);
        let mut sealed = 0;
        for i in 0..4 {
            sealed += u32::from(push(&mut s, 0, &"x".repeat(200 + i), false).send_now);
        }
        assert_eq!(sealed, 1);
        assert_eq!(s.next_batch(0).unwrap().len(), 3);
    }

    #[test]
    fn flushes_a_partial_batch_after_the_interval() {
        let mut s = shipper(&cfg());
        push(&mut s, 5, "/a", false);
        assert!(s.next_batch(1004).is_none());
        assert_eq!(s.next_batch(1005).unwrap().len(), 1);
    }

    #[test]
    fn an_urgent_record_is_due_at_once_but_only_when_no_urgent_call_is_in_flight() {
        let mut s = shipper(&cfg());
        push(&mut s, 0, "/ok", false);
        assert!(s.next_batch(1).is_none());
        assert!(push(&mut s, 0, "/login", true).send_now);
        let first = s.next_batch(1).expect("urgent batch due at once");
        assert_eq!(seqs(&first), vec![1, 2], "earlier records ride along");
        assert!(!s.has_urgent());
        s.dispatched(7, first);
        assert!(!push(&mut s, 1, "/login", true).send_now);
        assert!(
            s.next_batch(2).is_none(),
            "one urgent call at a time: attack records gather"
        );
        assert!(s.has_urgent());
        assert_eq!(s.completed(7, true, 3).sent, 2);
        assert_eq!(seqs(&s.next_batch(3).unwrap()), vec![3]);
    }

    #[test]
    fn a_failed_urgent_batch_stays_urgent_and_waits_for_the_backoff() {
        let mut s = shipper(&cfg());
        push(&mut s, 0, "/login", true);
        let b = s.next_batch(0).unwrap();
        s.dispatched(1, b);
        assert_eq!(s.completed(1, false, 10).failed, 1);
        assert!(s.has_urgent());
        assert!(s.next_batch(50).is_none(), "backoff first");
        assert_eq!(seqs(&s.next_batch(110).unwrap()), vec![1]);
    }

    #[test]
    fn a_retried_batch_is_the_same_bytes_with_the_current_dropped_total() {
        let c = BatchConfig {
            max_pending_records: 7,
            max_in_flight: 1,
            ..cfg()
        };
        let mut s = shipper(&c);
        for i in 0..3 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        let b = s.next_batch(0).unwrap();
        let before = b.body().to_vec();
        s.dispatched(1, b);
        // Newer records overflow the buffer while the call is out: a later batch is dropped.
        for i in 3..9 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        assert_eq!(s.dropped_total(), 3);
        s.completed(1, false, 0);
        let again = s.next_batch(10_000).unwrap();
        let after = ExportRequest::decode(again.body()).unwrap();
        assert_eq!(
            &again.body()[..before.len()],
            &before[..],
            "the same bytes, not re-encoded"
        );
        assert_eq!(
            after.records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(after.dropped_total, 3);
    }

    #[test]
    fn a_rejected_batch_is_dropped_not_retried() {
        let mut s = shipper(&cfg());
        for i in 0..3 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        let b = s.next_batch(0).unwrap();
        s.dispatched(9, b);
        push(&mut s, 0, "/next", false);
        assert_eq!(s.rejected(9).rejected, 3);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(
            seqs(&s.next_batch(1000).unwrap()),
            vec![4],
            "the next records go on"
        );
    }

    #[test]
    fn drops_the_oldest_batches_when_full_in_records_or_bytes_and_counts_them() {
        let mut s = shipper(&cfg());
        let mut dropped = 0;
        for i in 0..7 {
            dropped += push(&mut s, 0, &format!("/{i}"), false).dropped;
        }
        assert_eq!(dropped, 3, "the first sealed batch of three");
        assert_eq!(s.dropped_total(), 3);
        assert_eq!(s.pending_len(), 4);
        let req = ExportRequest::decode(s.next_batch(0).unwrap().body()).unwrap();
        assert_eq!(
            req.records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        assert_eq!(req.dropped_total, 3, "the collector learns of the drop");

        let c = BatchConfig {
            max_pending_bytes: 1024,
            max_pending_records: 1000,
            max_records: 2,
            ..cfg()
        };
        let mut s = shipper(&c);
        for _ in 0..10 {
            push(&mut s, 0, &"x".repeat(200), false);
        }
        assert!(s.pending_bytes() <= 1024, "{}", s.pending_bytes());
        assert_eq!(s.pending_len() as u64 + s.dropped_total(), 10);
    }

    #[test]
    fn plain_records_are_shed_before_auth_failures_and_blocks() {
        let mut s = shipper(&cfg());
        // 1..=3 (an auth failure among them) sealed, then 4..=6 plain: the sixth record
        // overflows the bound of five, and the plain batch goes, not the older one.
        push(&mut s, 0, "/login", true);
        for i in 2..=5 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        assert_eq!(push(&mut s, 0, "/6", false).dropped, 3);
        let req = ExportRequest::decode(s.next_batch(0).unwrap().body()).unwrap();
        assert_eq!(
            req.records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3],
            "the batch holding the auth failure survives; 4..=6 went"
        );
        // A blocked request protects its batch the same way.
        let mut s = shipper(&cfg());
        s.append(0, Priority::Blocked, |sequence, out| {
            let r = AccessRecord {
                sequence,
                ..Default::default()
            };
            encode_varint(2 << 3 | 2, out);
            encode_varint(r.encoded_len() as u64, out);
            r.encode_raw(out);
        });
        for i in 2..=7 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        let req = ExportRequest::decode(s.next_batch(0).unwrap().body()).unwrap();
        assert_eq!(req.records[0].sequence, 1);
    }

    #[test]
    fn shed_records_leave_as_summaries_retried_as_the_same_bytes_and_counted_by_reason() {
        let c = BatchConfig {
            max_summaries: 2,
            max_in_flight: 1,
            ..cfg()
        };
        let mut s = shipper(&c);
        let mut summarized = 0;
        // Three clients' records; the bound of five sheds 1..=3 and 4..=6 (max_records 3).
        for i in 0..9u64 {
            let client = format!("10.0.0.{}", i % 3);
            summarized += s
                .append(0, Priority::Plain, |sequence, out| {
                    let r = AccessRecord {
                        sequence,
                        time_ms: 1_700_000_040_000,
                        client_address: client,
                        authority: "a.example".into(),
                        status: 200,
                        ..Default::default()
                    };
                    encode_varint(2 << 3 | 2, out);
                    encode_varint(r.encoded_len() as u64, out);
                    r.encode_raw(out);
                })
                .summarized;
        }
        // Six shed, two keys (the bound) hold four of them, two are only counted.
        assert_eq!(summarized, 4);
        assert_eq!(s.dropped().summarized, 4);
        assert_eq!(s.dropped().buffer_full, 2);
        assert_eq!(s.dropped_total(), 6);
        let first = s.next_batch(0).unwrap();
        assert_eq!((first.len(), first.summaries()), (0, 2), "summaries first");
        let req = ExportRequest::decode(first.body()).unwrap();
        assert!(req.records.is_empty());
        assert_eq!(req.summaries.iter().map(|x| x.requests).sum::<u64>(), 4);
        assert_eq!(
            req.summaries.iter().map(|x| x.sequence).collect::<Vec<_>>(),
            [1, 2]
        );
        let dropped = req.dropped.unwrap();
        assert_eq!((dropped.summarized, dropped.buffer_full), (4, 2));
        assert_eq!(req.dropped_total, 6);
        let bytes = first.body().to_vec();
        s.dispatched(1, first);
        // The collector is down: the summary batch comes back, whole, never shed.
        assert_eq!(s.completed(1, false, 0), Outcome::default());
        for i in 0..20 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        let again = s.next_batch(10_000).unwrap();
        assert_eq!(again.summaries(), 2);
        // The same summaries, up to the drop counts stamped after them (which grew).
        let summaries_end = bytes.len() - req.dropped.map_or(0, |d| 2 + d.encoded_len()) - 2;
        assert_eq!(&again.body()[..summaries_end], &bytes[..summaries_end]);
        let again_req = ExportRequest::decode(again.body()).unwrap();
        assert_eq!(
            again_req.summaries, req.summaries,
            "same summaries, same numbers"
        );
        s.dispatched(2, again);
        assert_eq!(s.completed(2, true, 10_000).sent, 0);
        // The next cut continues the numbering.
        let next = s.next_batch(10_000).unwrap();
        let next_req = ExportRequest::decode(next.body()).unwrap();
        assert!(
            next_req.summaries.iter().all(|x| x.sequence > 2),
            "{next_req:?}"
        );
        assert!(s.pending_len() <= c.max_pending_records);
    }

    #[test]
    fn a_batch_sent_once_is_shed_last_since_a_stalled_collector_may_still_store_it() {
        let c = BatchConfig {
            max_pending_records: 6,
            max_in_flight: 1,
            ..cfg()
        };
        let mut s = shipper(&c);
        for i in 0..3 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        let b = s.next_batch(0).unwrap();
        s.dispatched(1, b);
        // The call times out: the batch is back at the front, and newer records overflow.
        s.completed(1, false, 0);
        for i in 3..12 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        let retried = s.next_batch(10_000).unwrap();
        assert_eq!(seqs(&retried), vec![1, 2, 3], "the batch sent once is kept");
        assert_eq!(
            s.dropped_total(),
            6,
            "newer, never-sent batches went instead"
        );
    }

    #[test]
    fn batches_in_flight_are_never_dropped() {
        let c = BatchConfig {
            max_pending_records: 3,
            ..cfg()
        };
        let mut s = shipper(&c);
        for i in 0..3 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        let b = s.next_batch(0).unwrap();
        s.dispatched(1, b);
        push(&mut s, 0, "/new", false);
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.completed(1, true, 0).sent, 3);
    }

    #[test]
    fn caps_calls_in_flight_and_ignores_unknown_tokens() {
        let c = BatchConfig {
            max_pending_records: 100,
            ..cfg()
        };
        let mut s = shipper(&c);
        for i in 0..7 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        let b = s.next_batch(0).unwrap();
        s.dispatched(1, b);
        let b = s.next_batch(0).unwrap();
        s.dispatched(2, b);
        assert!(s.next_batch(5000).is_none(), "two calls in flight");
        assert_eq!(s.completed(99, true, 0), Outcome::default());
        s.completed(1, true, 0);
        assert!(s.next_batch(5000).is_some());
    }

    #[test]
    fn several_batches_leave_in_one_go_when_backlogged() {
        let c = BatchConfig {
            max_in_flight: 4,
            max_pending_records: 100,
            ..cfg()
        };
        let mut s = shipper(&c);
        for i in 0..10 {
            push(&mut s, 0, &format!("/{i}"), false);
        }
        let mut token = 0;
        while let Some(b) = s.next_batch(0) {
            token += 1;
            s.dispatched(token, b);
        }
        assert_eq!(
            s.in_flight(),
            3,
            "three full batches; the fourth is still open"
        );
    }

    #[test]
    fn buffers_are_reused() {
        let mut s = shipper(&cfg());
        for round in 0..3 {
            for i in 0..3 {
                push(&mut s, 0, &format!("/{round}/{i}"), false);
            }
            let b = s.next_batch(0).unwrap();
            s.dispatched(round, b);
            s.completed(round, true, 0);
        }
        assert!(!s.spare.is_empty());
        assert_eq!(s.pending_len(), 0);
        assert_eq!(s.pending_bytes(), 0);
    }
}
