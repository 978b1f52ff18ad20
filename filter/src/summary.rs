//! Summaries of the records the buffer could not keep. When the pending buffer overflows (the
//! collector down or slow for longer than the buffer lasts), the batch shed is not simply
//! dropped: each of its records is folded into a count per client address, host, status class,
//! decision and minute, with byte totals. An outage then loses detail, but the trail still says
//! who made how many requests to what and how they were answered.
//!
//! The table is bounded (`batch.max_summaries` keys); a record whose key is new when the table
//! is full is only counted as lost. Summaries leave in batches of their own, numbered in a
//! sequence space of their own so that a retried summary batch is stored once.
//!
//! Shedding is rare, so a shed batch is decoded here (only the fields a summary needs; prost
//! skips the rest) rather than keeping a key beside every buffered record, which would cost
//! every request.

use std::collections::BTreeMap;

use prost::Message;
use prost::encoding::encode_varint;
use warden_proto::contract::minute_of;
use warden_proto::pb::RecordSummary;

/// The fields of an `AccessRecord` a summary needs (same tags; the others are skipped).
#[derive(Clone, PartialEq, Message)]
struct SummaryFields {
    #[prost(int64, tag = "2")]
    time_ms: i64,
    #[prost(string, tag = "4")]
    client_address: String,
    #[prost(string, tag = "9")]
    authority: String,
    #[prost(uint32, tag = "13")]
    status: u32,
    #[prost(uint64, tag = "20")]
    request_bytes: u64,
    #[prost(uint64, tag = "21")]
    response_bytes: u64,
    #[prost(message, optional, tag = "24")]
    decision: Option<DecisionFields>,
}

/// The fields of an `AuthDecision` a summary needs.
#[derive(Clone, PartialEq, Message)]
struct DecisionFields {
    #[prost(int32, tag = "1")]
    verdict: i32,
    #[prost(int32, tag = "2")]
    mechanism: i32,
}

/// An `ExportRequest` seen only for its records' summary fields.
#[derive(Clone, PartialEq, Message)]
struct ShedBatch {
    #[prost(message, repeated, tag = "2")]
    records: Vec<SummaryFields>,
}

/// What one summary counts requests by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    minute_ms: i64,
    client_address: String,
    authority: String,
    status_class: u32,
    verdict: i32,
    mechanism: i32,
}

/// What one summary counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    requests: u64,
    request_bytes: u64,
    response_bytes: u64,
}

/// What folding a shed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Folded {
    /// Records counted in a summary.
    pub summarized: u64,
    /// Records only counted: the table was full (or the batch could not be read).
    pub lost: u64,
}

/// The summaries waiting to leave.
#[derive(Debug)]
pub(crate) struct SummaryTable {
    max_keys: usize,
    entries: BTreeMap<Key, Totals>,
    next_sequence: u64,
}

impl SummaryTable {
    /// An empty table holding at most `max_keys` summaries.
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            max_keys,
            entries: BTreeMap::new(),
            next_sequence: 1,
        }
    }

    /// Applies a new bound; summaries already held stay.
    pub(crate) fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }

    /// Summaries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no summary is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Folds the `records` records of the encoded `ExportRequest` `body` into the table.
    pub(crate) fn fold(&mut self, body: &[u8], records: usize) -> Folded {
        let Ok(batch) = ShedBatch::decode(body) else {
            return Folded {
                summarized: 0,
                lost: records as u64,
            };
        };
        let mut folded = Folded::default();
        for r in batch.records {
            let decision = r.decision.unwrap_or_default();
            let key = Key {
                minute_ms: minute_of(r.time_ms),
                status_class: r.status / 100,
                verdict: decision.verdict,
                mechanism: decision.mechanism,
                client_address: r.client_address,
                authority: r.authority,
            };
            let known = self.entries.contains_key(&key);
            if !known && self.entries.len() >= self.max_keys {
                folded.lost += 1;
                continue;
            }
            let totals = self.entries.entry(key).or_default();
            totals.requests += 1;
            totals.request_bytes = totals.request_bytes.saturating_add(r.request_bytes);
            totals.response_bytes = totals.response_bytes.saturating_add(r.response_bytes);
            folded.summarized += 1;
        }
        folded
    }

    /// Moves summaries into `out` (an `ExportRequest` holding the filter identity already) as
    /// numbered `summaries` elements until `max_bytes` is reached; returns how many summaries
    /// and how many requests they count.
    pub(crate) fn cut(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> (usize, u64) {
        let mut summaries = 0;
        let mut requests = 0;
        while out.len() < max_bytes {
            let Some((key, totals)) = self.entries.pop_first() else {
                break;
            };
            let summary = RecordSummary {
                sequence: self.next_sequence,
                minute_ms: key.minute_ms,
                client_address: key.client_address,
                authority: key.authority,
                status_class: key.status_class,
                verdict: key.verdict,
                mechanism: key.mechanism,
                requests: totals.requests,
                request_bytes: totals.request_bytes,
                response_bytes: totals.response_bytes,
            };
            self.next_sequence += 1;
            encode_varint(5 << 3 | 2, out);
            encode_varint(summary.encoded_len() as u64, out);
            summary.encode_raw(out);
            summaries += 1;
            requests += totals.requests;
        }
        (summaries, requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_proto::pb::{AccessRecord, AuthDecision, ExportRequest, Mechanism, Verdict};

    /// Decodes a batch's summaries.
    fn decode_summaries(body: &[u8]) -> Vec<RecordSummary> {
        ExportRequest::decode(body)
            .map(|r| r.summaries)
            .unwrap_or_default()
    }

    fn record(client: &str, host: &str, status: u32, time_ms: i64, bytes: u64) -> AccessRecord {
        AccessRecord {
            sequence: 1,
            time_ms,
            client_address: client.into(),
            authority: host.into(),
            method: "GET".into(),
            path: "/secret/path?token=x".into(),
            status,
            request_bytes: bytes,
            response_bytes: 2 * bytes,
            decision: Some(AuthDecision {
                verdict: if status == 403 {
                    Verdict::Deny as i32
                } else {
                    Verdict::Allow as i32
                },
                mechanism: if status == 403 {
                    Mechanism::Rbac as i32
                } else {
                    Mechanism::None as i32
                },
                reason: "some reason".into(),
                ..AuthDecision::default()
            }),
            ..AccessRecord::default()
        }
    }

    fn body(records: Vec<AccessRecord>) -> Vec<u8> {
        ExportRequest {
            records,
            ..ExportRequest::default()
        }
        .encode_to_vec()
    }

    const MINUTE: i64 = 1_700_000_040_000;

    fn cut_all(t: &mut SummaryTable) -> Vec<RecordSummary> {
        let mut out = Vec::new();
        t.cut(&mut out, usize::MAX);
        decode_summaries(&out)
    }

    #[test]
    fn records_fold_into_counts_per_client_host_status_class_decision_and_minute() {
        let mut t = SummaryTable::new(100);
        let folded = t.fold(
            &body(vec![
                record("10.0.0.1", "a.example", 200, MINUTE + 1, 10),
                record("10.0.0.1", "a.example", 204, MINUTE + 59_999, 5),
                record("10.0.0.1", "a.example", 200, MINUTE + 60_000, 1),
                record("10.0.0.1", "a.example", 403, MINUTE + 2, 1),
                record("10.0.0.2", "a.example", 200, MINUTE + 3, 1),
            ]),
            5,
        );
        assert_eq!(
            folded,
            Folded {
                summarized: 5,
                lost: 0
            }
        );
        let summaries = cut_all(&mut t);
        assert_eq!(summaries.len(), 4);
        let first = &summaries[0];
        assert_eq!(
            (
                first.minute_ms,
                first.client_address.as_str(),
                first.status_class,
                first.requests,
                first.request_bytes,
                first.response_bytes
            ),
            (MINUTE, "10.0.0.1", 2, 2, 15, 30)
        );
        let denied = summaries.iter().find(|s| s.status_class == 4).unwrap();
        assert_eq!(denied.verdict, Verdict::Deny as i32);
        assert_eq!(denied.mechanism, Mechanism::Rbac as i32);
        let sequences: Vec<u64> = summaries.iter().map(|s| s.sequence).collect();
        assert_eq!(sequences, [1, 2, 3, 4]);
        assert!(t.is_empty());
        // The next cut continues the numbering: a summary is never numbered twice.
        t.fold(&body(vec![record("10.0.0.3", "b", 500, MINUTE, 1)]), 1);
        assert_eq!(cut_all(&mut t)[0].sequence, 5);
    }

    #[test]
    fn a_full_table_counts_what_it_cannot_summarize_and_keeps_adding_to_known_keys() {
        let mut t = SummaryTable::new(2);
        let folded = t.fold(
            &body(vec![
                record("10.0.0.1", "a", 200, MINUTE, 1),
                record("10.0.0.2", "a", 200, MINUTE, 1),
                record("10.0.0.3", "a", 200, MINUTE, 1),
                record("10.0.0.1", "a", 200, MINUTE, 1),
            ]),
            4,
        );
        assert_eq!(
            folded,
            Folded {
                summarized: 3,
                lost: 1
            }
        );
        assert_eq!(t.len(), 2);
        let none =
            SummaryTable::new(0).fold(&body(vec![record("10.0.0.1", "a", 200, MINUTE, 1)]), 1);
        assert_eq!(
            none,
            Folded {
                summarized: 0,
                lost: 1
            }
        );
        assert_eq!(
            t.fold(b"\xff\xff", 7),
            Folded {
                summarized: 0,
                lost: 7
            }
        );
    }

    #[test]
    fn a_cut_stops_at_its_byte_bound_and_leaves_the_rest_for_the_next() {
        let mut t = SummaryTable::new(100);
        let records = (0..10)
            .map(|i| record(&format!("10.0.0.{i}"), "a", 200, MINUTE, 1))
            .collect();
        t.fold(&body(records), 10);
        let mut out = Vec::new();
        let (n, requests) = t.cut(&mut out, 50);
        assert!((1..10).contains(&n), "{n}");
        assert_eq!(requests, n as u64);
        assert_eq!(t.len(), 10 - n);
        // Nothing of the record but the summary's fields is kept.
        assert!(!out.windows(6).any(|w| w == b"secret"));
    }
}
