//! `warden.v1.AuditService/Export`: validates each batch as a whole (a bad batch is refused with
//! `INVALID_ARGUMENT` naming the field and nothing of it is stored), then hands it to the store
//! and acknowledges only after the commit.

use crate::config::Limits;
use crate::detection::Detection;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::security::conn::ConnInfo;
use crate::security::filter_auth::{FilterAuth, SlotKind};
use crate::store::Store;
use prost::Message;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use warden_proto::pb::audit_service_server::AuditService;
use warden_proto::pb::{AccessRecord, ExportRequest, ExportResponse, FilterIdentity};

/// Longest accepted filter node id / instance id.
const MAX_IDENTITY_BYTES: usize = 256;
/// Longest accepted method (real methods are short; this bounds garbage).
const MAX_METHOD_BYTES: usize = 32;

/// Checks a batch against the limits; the first problem found is returned, naming its field.
pub fn validate(req: &ExportRequest, limits: &Limits) -> Result<(), Error> {
    let filter = req
        .filter
        .as_ref()
        .ok_or_else(|| Error::invalid("filter", "missing (the filter identity is required)"))?;
    for (field, value) in [
        ("filter.node_id", &filter.node_id),
        ("filter.instance_id", &filter.instance_id),
    ] {
        if value.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if value.len() > MAX_IDENTITY_BYTES {
            return Err(Error::invalid(
                field,
                format!("is longer than {MAX_IDENTITY_BYTES} bytes"),
            ));
        }
    }
    if req.records.len() > limits.max_batch_records {
        return Err(Error::invalid(
            "records",
            format!(
                "{} records exceed the maximum of {} per batch",
                req.records.len(),
                limits.max_batch_records
            ),
        ));
    }
    for (i, r) in req.records.iter().enumerate() {
        validate_record(i, r, limits)?;
    }
    Ok(())
}

fn validate_record(i: usize, r: &AccessRecord, limits: &Limits) -> Result<(), Error> {
    let field = |name: &str| format!("records[{i}].{name}");
    let size = r.encoded_len();
    if size > limits.max_record_bytes {
        return Err(Error::invalid(
            format!("records[{i}]"),
            format!(
                "encoded size {size} bytes exceeds the maximum of {} bytes",
                limits.max_record_bytes
            ),
        ));
    }
    if r.sequence == 0 {
        return Err(Error::invalid(field("sequence"), "must be greater than 0"));
    }
    if r.time_ms <= 0 {
        return Err(Error::invalid(
            field("time_ms"),
            format!(
                "{} is not a time (must be ms since the epoch, > 0)",
                r.time_ms
            ),
        ));
    }
    if !r.client_address.is_empty() && r.client_address.parse::<IpAddr>().is_err() {
        return Err(Error::invalid(
            field("client_address"),
            format!("{:?} is not an IP address", truncate(&r.client_address)),
        ));
    }
    if r.client_port > 65_535 {
        return Err(Error::invalid(
            field("client_port"),
            format!("{} is not a port", r.client_port),
        ));
    }
    if r.status > 999 {
        return Err(Error::invalid(
            field("status"),
            format!("{} is not an HTTP status", r.status),
        ));
    }
    if r.method.len() > MAX_METHOD_BYTES {
        return Err(Error::invalid(
            field("method"),
            format!("is longer than {MAX_METHOD_BYTES} bytes"),
        ));
    }
    if !r.method.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            field("method"),
            format!("{:?} is not an HTTP method", truncate(&r.method)),
        ));
    }
    let texts = [
        ("authority", &r.authority),
        ("path", &r.path),
        ("user_agent", &r.user_agent),
        ("x_forwarded_for", &r.x_forwarded_for),
        ("request_id", &r.request_id),
    ];
    for (name, value) in texts {
        if value.len() > limits.max_field_bytes {
            return Err(Error::invalid(
                field(name),
                format!(
                    "{} bytes exceed the maximum of {} bytes",
                    value.len(),
                    limits.max_field_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// Shortens a rejected value for an error message.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Filter instances whose reported drop counts are remembered at most; beyond it the ones
/// heard from least recently are forgotten (only authenticated filters get here, but a
/// credential covering `*` could still invent identities).
const MAX_DROP_COUNTERS: usize = 100_000;

/// What a filter instance last reported it dropped, and when it was heard from.
#[derive(Debug, Clone, Copy)]
struct DropCount {
    total: u64,
    seen_ms: i64,
}

/// The Export service.
pub struct Ingest {
    store: Arc<Store>,
    limits: Limits,
    auth: Arc<FilterAuth>,
    metrics: Arc<Metrics>,
    dropped: Mutex<HashMap<(String, u32, String), DropCount>>,
    detection: Option<Arc<Detection>>,
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
            dropped: Mutex::new(HashMap::new()),
            detection: None,
        }
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
        if let Err(e) = validate(&req, &self.limits) {
            self.metrics.batches_rejected.fetch_add(1, Relaxed);
            self.metrics.records_rejected.fetch_add(n, Relaxed);
            tracing::warn!(error = %e, "rejected an invalid batch");
            return Err(e);
        }
        self.metrics.records_received.fetch_add(n, Relaxed);
        let filter = req.filter.unwrap_or_default();
        let highest = req.records.iter().map(|r| r.sequence).max().unwrap_or(0);
        self.note_dropped(&filter, req.dropped_total, highest);
        let records = Arc::new(req.records);
        // Evaluation is queued in parallel with the commit: a ban does not wait for the fsync.
        // The acknowledgement waits for both, so an overloaded engine slows ingest down instead
        // of leaving records unevaluated.
        let evaluate = async {
            if let Some(d) = &self.detection {
                d.submit(&filter, &records).await;
            }
        };
        let store = self.store.write_batch(filter.clone(), Arc::clone(&records));
        let ((), stored) = tokio::join!(evaluate, store);
        match stored {
            Ok(outcome) => {
                self.metrics
                    .records_stored
                    .fetch_add(u64::from(outcome.accepted), Relaxed);
                self.metrics
                    .records_duplicate
                    .fetch_add(u64::from(outcome.duplicates), Relaxed);
                Ok(ExportResponse {
                    accepted: outcome.accepted,
                    duplicates: outcome.duplicates,
                })
            }
            Err(e) => {
                self.metrics.batches_failed.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// Adds what a filter instance newly reports dropped to `/metrics`. The count is checked
    /// first: it only grows, and it cannot exceed the highest sequence number the instance has
    /// sent (it cannot have dropped records it never numbered), so a caller cannot set the
    /// metric to anything it likes.
    fn note_dropped(&self, f: &FilterIdentity, dropped_total: u64, highest_sequence: u64) {
        if dropped_total == 0 {
            return;
        }
        if dropped_total > highest_sequence {
            tracing::warn!(node = %f.node_id, worker = f.worker, dropped_total, highest_sequence, "ignored a dropped count larger than the records the filter numbered");
            return;
        }
        let Ok(mut map) = self.dropped.lock() else {
            return;
        };
        let now = crate::time::now_ms();
        if map.len() >= MAX_DROP_COUNTERS {
            let mut ages: Vec<i64> = map.values().map(|d| d.seen_ms).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 10];
            map.retain(|_, d| d.seen_ms > cutoff);
        }
        let key = (f.node_id.clone(), f.worker, f.instance_id.clone());
        let entry = map.entry(key).or_insert(DropCount {
            total: 0,
            seen_ms: now,
        });
        entry.seen_ms = now;
        if dropped_total > entry.total {
            self.metrics
                .filter_dropped_total
                .fetch_add(dropped_total - entry.total, Relaxed);
            entry.total = dropped_total;
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

    fn batch(records: Vec<AccessRecord>) -> ExportRequest {
        ExportRequest {
            filter: Some(filter()),
            records,
            dropped_total: 0,
        }
    }

    fn message(req: &ExportRequest) -> String {
        validate(req, &Limits::default()).unwrap_err().to_string()
    }

    #[test]
    fn a_good_batch_passes() {
        assert!(validate(&batch(vec![record(1, 1), record(2, 2)]), &Limits::default()).is_ok());
    }

    #[test]
    fn messages_name_the_record_and_field() {
        let mut r = record(1, 1);
        r.client_address = "abc".into();
        assert_eq!(
            message(&batch(vec![record(1, 1), record(2, 1), record(3, 1), r])),
            "records[3].client_address: \"abc\" is not an IP address"
        );
        assert_eq!(
            message(&batch(vec![record(0, 1)])),
            "records[0].sequence: must be greater than 0"
        );
        assert!(
            message(&batch(vec![record(1, 0)])).starts_with("records[0].time_ms: 0 is not a time")
        );
        let mut r = record(1, 1);
        r.method = "G E T".into();
        assert_eq!(
            message(&batch(vec![r])),
            "records[0].method: \"G E T\" is not an HTTP method"
        );
    }

    #[test]
    fn the_filter_identity_is_required() {
        let mut req = batch(vec![]);
        req.filter.as_mut().unwrap().node_id.clear();
        assert_eq!(message(&req), "filter.node_id: must not be empty");
        req.filter = None;
        assert!(message(&req).starts_with("filter: missing"));
        let mut req = batch(vec![]);
        req.filter.as_mut().unwrap().instance_id.clear();
        assert_eq!(message(&req), "filter.instance_id: must not be empty");
    }

    #[test]
    fn size_and_count_limits_apply() {
        let limits = Limits {
            max_batch_records: 2,
            ..Limits::default()
        };
        let e = validate(
            &batch(vec![record(1, 1), record(2, 1), record(3, 1)]),
            &limits,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "records: 3 records exceed the maximum of 2 per batch"
        );
        let mut r = record(1, 1);
        r.captured_headers
            .insert("x-big".into(), "a".repeat(17_000));
        assert!(message(&batch(vec![r])).starts_with("records[0]: encoded size"));
        let mut r = record(1, 1);
        r.path = "/".repeat(9000);
        assert!(message(&batch(vec![r])).starts_with("records[0].path: 9000 bytes exceed"));
    }
}
