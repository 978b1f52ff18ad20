//! What an Export batch must be before anything of it is stored: the envelope (filter identity,
//! batch size) checked whole, then each record and summary against the record contract and the
//! clock, sorted into those kept and those refused one by one with their sequence and reason.

use crate::config::Limits;
use crate::error::Error;
use warden_proto::contract::{self, MAX_IDENTITY_BYTES};
use warden_proto::pb::{AccessRecord, ExportRequest, RecordSummary, RefusedRecord};

/// The times a record may carry, ms since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct TimeBounds {
    /// Older records are past retention (they would be deleted at once).
    pub not_before_ms: Option<i64>,
    /// Newer records are further in the future than the allowed clock skew.
    pub not_after_ms: i64,
}

impl TimeBounds {
    /// The bounds at `now_ms` for `limits` and a retention (zero: kept forever).
    pub fn at(now_ms: i64, limits: &Limits, retention: std::time::Duration) -> TimeBounds {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        TimeBounds {
            not_before_ms: (!retention.is_zero()).then(|| now_ms.saturating_sub(ms(retention))),
            not_after_ms: now_ms.saturating_add(ms(limits.max_clock_skew.0)),
        }
    }
}

/// Checks the batch envelope; a problem refuses the whole batch, naming its field.
pub fn validate_envelope(req: &ExportRequest, limits: &Limits) -> Result<(), Error> {
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
    if req.summaries.len() > limits.max_batch_records {
        return Err(Error::invalid(
            "summaries",
            format!(
                "{} summaries exceed the maximum of {} per batch",
                req.summaries.len(),
                limits.max_batch_records
            ),
        ));
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
    Ok(())
}

/// Why record `i` is refused, if it is: the contract, then its time.
pub fn check_record(
    i: usize,
    r: &AccessRecord,
    limits: &Limits,
    time: TimeBounds,
) -> Result<(), String> {
    let contract_limits = contract::Limits {
        max_record_bytes: limits.max_record_bytes,
        max_field_bytes: limits.max_field_bytes,
    };
    if let Err(v) = contract::check_record(r, contract_limits) {
        return Err(if v.field.is_empty() {
            format!("records[{i}]: {}", v.message)
        } else {
            format!("records[{i}].{}: {}", v.field, v.message)
        });
    }
    if r.time_ms > time.not_after_ms {
        return Err(format!(
            "records[{i}].time_ms: {} is {} s ahead of the collector's clock (limits.max_clock_skew)",
            r.time_ms,
            (r.time_ms - time.not_after_ms) / 1000 + 1
        ));
    }
    if let Some(oldest) = time.not_before_ms
        && r.time_ms < oldest
    {
        return Err(format!(
            "records[{i}].time_ms: {} is older than storage.retention",
            r.time_ms
        ));
    }
    Ok(())
}

/// Splits a batch's record summaries into those to store (client addresses written
/// canonically) and those refused, with their summary sequence and why. A summary's minute is
/// checked like a record's time: not ahead of the clock beyond the skew, not past retention.
pub fn sort_summaries(
    summaries: Vec<RecordSummary>,
    limits: &Limits,
    time: TimeBounds,
) -> (Vec<RecordSummary>, Vec<RefusedRecord>) {
    let contract_limits = contract::Limits {
        max_record_bytes: limits.max_record_bytes,
        max_field_bytes: limits.max_field_bytes,
    };
    let mut kept = Vec::with_capacity(summaries.len());
    let mut refused = Vec::new();
    for (i, mut s) in summaries.into_iter().enumerate() {
        let problem = if let Err(v) = contract::check_summary(&s, contract_limits) {
            Some(format!("summaries[{i}].{}: {}", v.field, v.message))
        } else if s.minute_ms > time.not_after_ms {
            Some(format!(
                "summaries[{i}].minute_ms: {} is ahead of the collector's clock (limits.max_clock_skew)",
                s.minute_ms
            ))
        } else if time
            .not_before_ms
            .is_some_and(|oldest| s.minute_ms.saturating_add(60_000) < oldest)
        {
            Some(format!(
                "summaries[{i}].minute_ms: {} is older than storage.retention",
                s.minute_ms
            ))
        } else {
            None
        };
        match problem {
            None => {
                if let Ok(ip) = contract::parse_ip(&s.client_address) {
                    s.client_address = ip.to_string();
                }
                kept.push(s);
            }
            Some(reason) => refused.push(RefusedRecord {
                sequence: s.sequence,
                reason,
            }),
        }
    }
    (kept, refused)
}

/// Splits a batch's records into those to store (client addresses written canonically) and
/// those refused, with their sequence and why.
pub fn sort_records(
    records: Vec<AccessRecord>,
    limits: &Limits,
    time: TimeBounds,
) -> (Vec<AccessRecord>, Vec<RefusedRecord>) {
    let mut kept = Vec::with_capacity(records.len());
    let mut refused = Vec::new();
    for (i, mut r) in records.into_iter().enumerate() {
        match check_record(i, &r, limits, time) {
            Ok(()) => {
                // Dotted IPv4 that parsed is already canonical (no leading zeros, no mapping):
                // only IPv6 text is rewritten, and only when it differs.
                if r.client_address.contains(':')
                    && let Ok(ip) = contract::parse_ip(&r.client_address)
                {
                    let canonical = ip.to_string();
                    if canonical != r.client_address {
                        r.client_address = canonical;
                    }
                }
                kept.push(r);
            }
            Err(reason) => refused.push(RefusedRecord {
                sequence: r.sequence,
                reason,
            }),
        }
    }
    (kept, refused)
}
