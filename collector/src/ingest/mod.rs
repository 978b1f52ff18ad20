//! `warden.v1.AuditService/Export`: refuses a batch whose envelope is wrong (no filter identity,
//! too many records) with `INVALID_ARGUMENT` naming the field; checks every record against the
//! record contract and the clock, refuses the records that break them one by one (answered with
//! their sequence and why, counted), hands the rest to the store and the rules engine, and
//! acknowledges only after the commit.

pub mod ledger;
pub mod validate;

pub use validate::{TimeBounds, check_record, sort_records, sort_summaries, validate_envelope};

use crate::config::Limits;
use crate::detection::Detection;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::security::conn::ConnInfo;
use crate::security::filter_auth::{FilterAuth, SlotKind};
use crate::store::Store;
use ledger::{BatchCounts, Ledger, SummaryCounts};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use warden_proto::pb::audit_service_server::AuditService;
use warden_proto::pb::{DropCounts, ExportRequest, ExportResponse, FilterIdentity};

/// The Export service.
pub struct Ingest {
    store: Arc<Store>,
    limits: Limits,
    auth: Arc<FilterAuth>,
    metrics: Arc<Metrics>,
    ledger: Arc<Ledger>,
    detection: Option<Arc<Detection>>,
    retention: std::time::Duration,
}

impl Ingest {
    /// Builds the service over `store`.
    pub fn new(
        store: Arc<Store>,
        limits: Limits,
        auth: Arc<FilterAuth>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Ingest {
            store,
            limits,
            auth,
            metrics,
            ledger: Arc::default(),
            detection: None,
            retention: std::time::Duration::ZERO,
        }
    }

    /// The accounting per filter identity this service keeps.
    pub fn ledger(&self) -> Arc<Ledger> {
        Arc::clone(&self.ledger)
    }

    /// Refuses records older than `retention` (zero: none are too old).
    pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Also hands every validated batch to the rules engine.
    pub fn with_detection(mut self, detection: Arc<Detection>) -> Self {
        self.detection = Some(detection);
        self
    }

    /// Validates and stores one batch (the transport-independent part of Export).
    pub async fn export(&self, req: ExportRequest) -> Result<ExportResponse, Error> {
        self.metrics.batches_received.fetch_add(1, Relaxed);
        let n = req.records.len() as u64;
        if let Err(e) = validate_envelope(&req, &self.limits) {
            self.metrics.batches_rejected.fetch_add(1, Relaxed);
            self.metrics.records_rejected.fetch_add(n, Relaxed);
            tracing::warn!(error = %e, "rejected an invalid batch");
            return Err(e);
        }
        let filter = req.filter.unwrap_or_default();
        let highest = req.records.iter().map(|r| r.sequence).max().unwrap_or(0);
        let time = TimeBounds::at(crate::time::now_ms(), &self.limits, self.retention);
        let (records, refused) = sort_records(req.records, &self.limits, time);
        self.metrics
            .records_received
            .fetch_add(records.len() as u64, Relaxed);
        if let Some(first) = refused.first() {
            self.metrics
                .records_rejected
                .fetch_add(refused.len() as u64, Relaxed);
            tracing::warn!(node = %filter.node_id, worker = filter.worker, refused = refused.len(), of = n, first = %first.reason, "refused records one by one; stored the rest of the batch");
        }
        let (summaries, refused_summaries) = sort_summaries(req.summaries, &self.limits, time);
        if let Some(first) = refused_summaries.first() {
            self.metrics
                .summaries_rejected
                .fetch_add(refused_summaries.len() as u64, Relaxed);
            tracing::warn!(node = %filter.node_id, worker = filter.worker, refused = refused_summaries.len(), first = %first.reason, "refused record summaries one by one");
        }
        self.note_dropped(&filter, req.dropped_total, req.dropped, highest);
        let records = Arc::new(records);
        let (store, ledger, metrics, detection) = (
            Arc::clone(&self.store),
            Arc::clone(&self.ledger),
            Arc::clone(&self.metrics),
            self.detection.clone(),
        );
        // The commit and its accounting run in a task of their own: a filter whose call timed
        // out drops this future, but a batch the writer commits anyway must still be counted
        // as stored (else its retry reads as a duplicate and the ledger shows a false gap).
        let committed = tokio::spawn(async move {
            // Evaluation is queued in parallel with the commit: a ban does not wait for the
            // fsync. The acknowledgement waits for both, so an overloaded engine slows ingest
            // down instead of leaving records unevaluated.
            let evaluate = async {
                if let Some(d) = &detection {
                    d.submit(&filter, &records).await;
                }
            };
            let summaries_received = summaries.len() as u64;
            let write = store.write_export(filter.clone(), Arc::clone(&records), summaries);
            let ((), stored) = tokio::join!(evaluate, write);
            let outcome = match stored {
                Ok(outcome) => outcome,
                Err(e) => {
                    metrics.batches_failed.fetch_add(1, Relaxed);
                    return Err(e);
                }
            };
            ledger.record(
                &filter,
                BatchCounts {
                    received: n,
                    stored: u64::from(outcome.accepted),
                    duplicates: u64::from(outcome.duplicates),
                    refused: refused.len() as u64,
                    highest_sequence: highest,
                    summaries: SummaryCounts {
                        received: summaries_received,
                        stored: u64::from(outcome.summaries.accepted),
                        duplicates: u64::from(outcome.summaries.duplicates),
                        refused: refused_summaries.len() as u64,
                        requests: outcome.summaries.requests,
                    },
                },
                crate::time::now_ms(),
            );
            metrics
                .summaries_stored
                .fetch_add(u64::from(outcome.summaries.accepted), Relaxed);
            metrics
                .records_stored
                .fetch_add(u64::from(outcome.accepted), Relaxed);
            metrics
                .records_duplicate
                .fetch_add(u64::from(outcome.duplicates), Relaxed);
            Ok(ExportResponse {
                accepted: outcome.accepted,
                duplicates: outcome.duplicates,
                refused,
                summaries_accepted: outcome.summaries.accepted,
                summaries_duplicates: outcome.summaries.duplicates,
                refused_summaries,
            })
        });
        committed
            .await
            .map_err(|e| Error::Storage(format!("the commit task failed: {e}")))?
    }

    /// Adds what a filter instance newly reports dropped to `/metrics`. The count is checked
    /// first: it only grows, and it cannot exceed the highest sequence number the instance has
    /// sent (it cannot have dropped records it never numbered), so a caller cannot set the
    /// metric to anything it likes.
    fn note_dropped(
        &self,
        f: &FilterIdentity,
        dropped_total: u64,
        by_reason: Option<DropCounts>,
        highest_sequence: u64,
    ) {
        if dropped_total == 0 {
            return;
        }
        if dropped_total > highest_sequence {
            tracing::warn!(node = %f.node_id, worker = f.worker, dropped_total, highest_sequence, "ignored a dropped count larger than the records the filter numbered");
            return;
        }
        // The reasons must add up to the total (an older filter sends only the total: all of it
        // was its buffer being full).
        let by_reason = by_reason
            .filter(|d| {
                d.summarized
                    .checked_add(d.buffer_full)
                    .and_then(|n| n.checked_add(d.batch_refused))
                    == Some(dropped_total)
            })
            .unwrap_or(DropCounts {
                buffer_full: dropped_total,
                ..DropCounts::default()
            });
        let grew = self
            .ledger
            .report_dropped(f, dropped_total, by_reason, crate::time::now_ms());
        let (grew, grew_by_reason) = grew;
        if grew > 0 {
            self.metrics.filter_dropped_total.fetch_add(grew, Relaxed);
            let by_reason = &self.metrics.filter_dropped_by_reason;
            by_reason[0].fetch_add(grew_by_reason.summarized, Relaxed);
            by_reason[1].fetch_add(grew_by_reason.buffer_full, Relaxed);
            by_reason[2].fetch_add(grew_by_reason.batch_refused, Relaxed);
            tracing::warn!(node = %f.node_id, worker = f.worker, dropped_total, "filter reports dropped records");
        }
    }
}

#[tonic::async_trait]
impl AuditService for Ingest {
    async fn export(
        &self,
        request: tonic::Request<ExportRequest>,
    ) -> Result<tonic::Response<ExportResponse>, tonic::Status> {
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let caller = self.auth.authenticate(request.metadata(), conn.as_ref())?;
        let _slot = self.auth.acquire(&caller, SlotKind::Call)?;
        let req = request.into_inner();
        if let Some(f) = &req.filter {
            self.auth.check_node(&caller, &f.node_id)?;
            self.auth
                .admit_identity(&caller, f, crate::time::now_ms())?;
        }
        Ok(tonic::Response::new(Ingest::export(self, req).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{filter, record};
    use warden_proto::pb::AccessRecord;

    const NOW: i64 = 1_700_000_000_000;

    fn batch(records: Vec<AccessRecord>) -> ExportRequest {
        ExportRequest {
            filter: Some(filter()),
            records,
            dropped_total: 0,
            ..Default::default()
        }
    }

    fn envelope(req: &ExportRequest) -> String {
        validate_envelope(req, &Limits::default())
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn a_commit_whose_caller_gave_up_is_still_accounted_as_stored() {
        use crate::security::filter_auth::{FilterAuth, FilterCaps};
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let store = Arc::new(
            Store::open(
                dir.path(),
                crate::config::Synchronous::Normal,
                100_000,
                Arc::clone(&metrics),
            )
            .unwrap(),
        );
        let caps = FilterCaps {
            calls: 1,
            streams: 1,
            identities: 1,
            identity_window_ms: 1_000,
        };
        let auth = Arc::new(FilterAuth::new(&[], Vec::new(), caps).unwrap());
        let ingest = Ingest::new(Arc::clone(&store), Limits::default(), auth, metrics);
        let now = crate::time::now_ms();
        let req = batch((1..=5).map(|s| at(s, now)).collect());
        // The filter's call times out: its future is dropped after exactly one poll, while the
        // commit is under way. (A zero `timeout` is not enough: tokio rounds its deadline up to
        // the next millisecond, and a fast disk commits within it.)
        let mut call = Box::pin(ingest.export(req.clone()));
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
        assert!(
            first.is_pending(),
            "the call finished on its first poll: {first:?}"
        );
        drop(call);
        let ledger = ingest.ledger();
        for _ in 0..500 {
            if ledger.rows().first().is_some_and(|r| r.stored == 5) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Its retry finds the records stored: duplicates, and no gap.
        let retry = ingest.export(req).await.unwrap();
        assert_eq!((retry.accepted, retry.duplicates), (0, 5));
        let row = &ledger.rows()[0];
        assert_eq!((row.stored, row.duplicates, row.gaps), (5, 5, 0), "{row:?}");
        store.close().await;
    }

    fn time() -> TimeBounds {
        TimeBounds::at(
            NOW,
            &Limits::default(),
            std::time::Duration::from_secs(86_400),
        )
    }

    /// Why record `r`, placed at `i`, is refused.
    fn refusal(i: usize, r: &AccessRecord) -> String {
        check_record(i, r, &Limits::default(), time()).unwrap_err()
    }

    fn at(sequence: u64, time_ms: i64) -> AccessRecord {
        let mut r = record(sequence, 1);
        r.time_ms = time_ms;
        r
    }

    #[test]
    fn a_good_batch_passes() {
        let req = batch(vec![at(1, NOW), at(2, NOW)]);
        assert!(validate_envelope(&req, &Limits::default()).is_ok());
        let (kept, refused) = sort_records(req.records, &Limits::default(), time());
        assert_eq!((kept.len(), refused.len()), (2, 0));
    }

    #[test]
    fn refusals_name_the_record_and_field() {
        let mut r = at(4, NOW);
        r.client_address = "abc".into();
        assert_eq!(
            refusal(3, &r),
            "records[3].client_address: \"abc\" is not an IP address"
        );
        assert_eq!(
            refusal(0, &at(0, NOW)),
            "records[0].sequence: must be greater than 0"
        );
        assert!(refusal(0, &at(1, 0)).starts_with("records[0].time_ms: 0 is not a time"));
        let mut r = at(1, NOW);
        r.method = "G E T".into();
        assert_eq!(
            refusal(0, &r),
            "records[0].method: \"G E T\" is not an HTTP method"
        );
    }

    #[test]
    fn one_bad_record_is_refused_alone_and_the_rest_of_the_batch_is_kept() {
        // The blinding attack: a 40-byte method used to make the whole batch invalid.
        let mut bad = at(2, NOW);
        bad.method = "A".repeat(40);
        let (kept, refused) = sort_records(
            vec![at(1, NOW), bad, at(3, NOW)],
            &Limits::default(),
            time(),
        );
        assert_eq!(kept.iter().map(|r| r.sequence).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].sequence, 2);
        assert_eq!(
            refused[0].reason,
            "records[1].method: is longer than 32 bytes"
        );
    }

    #[test]
    fn records_from_the_future_or_past_retention_are_refused() {
        // Clock poisoning: a record dated 2100 must not reach the store or the rules engine.
        let year_2100 = 4_102_444_800_000;
        assert!(refusal(0, &at(1, year_2100)).contains("ahead of the collector's clock"));
        assert!(check_record(0, &at(1, NOW + 299_000), &Limits::default(), time()).is_ok());
        assert!(refusal(0, &at(1, NOW + 301_000)).contains("limits.max_clock_skew"));
        assert!(refusal(0, &at(1, NOW - 86_401_000)).contains("older than storage.retention"));
        let forever = TimeBounds::at(NOW, &Limits::default(), std::time::Duration::ZERO);
        assert!(check_record(0, &at(1, 1), &Limits::default(), forever).is_ok());
    }

    #[test]
    fn client_addresses_are_stored_canonically() {
        let mut r = at(1, NOW);
        r.client_address = "::ffff:203.0.113.7".into();
        let (kept, _) = sort_records(vec![r], &Limits::default(), time());
        assert_eq!(kept[0].client_address, "203.0.113.7");
    }

    #[test]
    fn the_filter_identity_is_required() {
        let mut req = batch(vec![]);
        req.filter.as_mut().unwrap().node_id.clear();
        assert_eq!(envelope(&req), "filter.node_id: must not be empty");
        req.filter = None;
        assert!(envelope(&req).starts_with("filter: missing"));
        let mut req = batch(vec![]);
        req.filter.as_mut().unwrap().instance_id.clear();
        assert_eq!(envelope(&req), "filter.instance_id: must not be empty");
    }

    #[test]
    fn size_and_count_limits_apply() {
        let limits = Limits {
            max_batch_records: 2,
            ..Limits::default()
        };
        let e = validate_envelope(&batch(vec![at(1, NOW), at(2, NOW), at(3, NOW)]), &limits)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "records: 3 records exceed the maximum of 2 per batch"
        );
        let mut r = at(1, NOW);
        r.captured_headers
            .insert("x-big".into(), "a".repeat(17_000));
        assert!(refusal(0, &r).starts_with("records[0]: encoded size"));
        let mut r = at(1, NOW);
        r.path = "/".repeat(9000);
        assert!(refusal(0, &r).starts_with("records[0].path: 9000 bytes exceed"));
    }
}
