//! Fuzz target: Export batches, from both ends. The first input byte picks one of two checks:
//! - hostile bytes (the collector's side): whatever protobuf arrives, decoding, the envelope
//!   check (`ingest::validate_envelope`), the record contract (`contract::check_record`) and the
//!   split into kept and refused records (`ingest::sort_records`) never panic; every record is
//!   kept or refused, in order, refused exactly when `ingest::check_record` says so (which
//!   refuses all the contract refuses), and a kept record is stored as it came but for its
//!   client address written canonically;
//! - filter-built batches (the contract between the two): any requests Warden refuses, with any
//!   headers and client address, under any record configuration the filter accepts, are
//!   recorded (`request::record_blocked`) into batches (`batch::Shipper`) that the collector
//!   accepts whole: no record refused, none over `record.max_record_bytes`, no secret header
//!   captured.

#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use warden_collector::config::Limits;
use warden_collector::ingest::{TimeBounds, check_record, sort_records, validate_envelope};
use warden_filter::batch::Shipper;
use warden_filter::config::Config;
use warden_filter::denylist::{Match, Verdict};
use warden_filter::headers::{RequestHeaders, Wanted};
use warden_filter::host::serialize_pairs;
use warden_filter::record::is_secret_header;
use warden_filter::request::{self, Blocked};
use warden_proto::contract;
use warden_proto::pb::{ExportRequest, FilterIdentity};

/// The collector's clock in both checks: 2023-11-14.
const NOW_MS: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        hostile(rest);
    } else if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(rest)) {
        filter_built(&input);
    }
});

fn hostile(bytes: &[u8]) {
    let Ok(req) = ExportRequest::decode(bytes) else {
        return;
    };
    let limits = Limits::default();
    let time = TimeBounds::at(NOW_MS, &limits, Duration::from_secs(30 * 86_400));
    let _ = validate_envelope(&req, &limits);
    let verdicts: Vec<bool> = req
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let by_contract = contract::check_record(r, contract::Limits::default());
            let by_collector = check_record(i, r, &limits, time);
            if let Err(v) = &by_contract {
                assert!(
                    by_collector.is_err(),
                    "record {i} breaks the contract ({v}) but is kept"
                );
            }
            by_collector.is_ok()
        })
        .collect();
    let (kept, refused) = sort_records(req.records.clone(), &limits, time);
    assert_eq!(kept.len() + refused.len(), req.records.len());
    let (mut kept_iter, mut refused_iter) = (kept.iter(), refused.iter());
    for (r, ok) in req.records.iter().zip(verdicts) {
        if ok {
            let k = kept_iter.next();
            assert!(k.is_some(), "a valid record went missing");
            let Some(k) = k else {
                return;
            };
            let mut same = r.clone();
            if !r.client_address.is_empty() {
                let ip = contract::parse_ip(&r.client_address);
                assert!(ip.is_ok(), "kept an unparsable client address");
                same.client_address = ip.map(|ip| ip.to_string()).unwrap_or_default();
            }
            assert_eq!(
                *k, same,
                "a kept record changed beyond its canonical address"
            );
            let again = contract::check_record(k, contract::Limits::default());
            assert!(
                again.is_ok(),
                "canonical form breaks the contract: {again:?}"
            );
        } else {
            let refusal = refused_iter.next();
            assert_eq!(refusal.map(|f| f.sequence), Some(r.sequence));
            assert!(refusal.is_some_and(|f| !f.reason.is_empty()));
        }
    }
}

/// A header of a request: the ones a record reads, the secrets, the captured ones, any other.
#[derive(Arbitrary, Debug)]
enum Name<'a> {
    Authority,
    Method,
    Path,
    UserAgent,
    RequestId,
    ForwardedFor,
    Authorization,
    Cookie,
    Captured(u8),
    Other(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
enum Source<'a> {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
    Mapped([u8; 4], u16),
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
struct Request<'a> {
    source: Source<'a>,
    headers: Vec<(Name<'a>, &'a [u8])>,
    /// Use `raw_map` as the header map Envoy returned, however malformed.
    raw: bool,
    raw_map: &'a [u8],
    throttle: bool,
    decision_id: u64,
    reason: &'a str,
    origin: &'a str,
    /// Ms after the collector's clock (within its allowed skew).
    after_ms: u16,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    max_header_bytes: u16,
    max_record_bytes: u16,
    max_records: u8,
    captured: Vec<&'a str>,
    /// Also ask to capture secret headers, which must never be captured.
    capture_secrets: bool,
    query_string: u8,
    kept: Vec<&'a str>,
    patterns: Vec<&'a str>,
    redact_token_segments: bool,
    requests: Vec<Request<'a>>,
}

impl Input<'_> {
    /// The record configuration as JSON, through the filter's own parser: only a configuration
    /// the filter accepts is used.
    fn config(&self) -> Option<Config> {
        // Header names the configuration accepts (visible ASCII, no ':'), mostly.
        let mut captured: Vec<String> = self
            .captured
            .iter()
            .map(|c| {
                c.chars()
                    .filter(|c| c.is_ascii_graphic() && *c != ':')
                    .collect()
            })
            .filter(|c: &String| !c.is_empty())
            .collect();
        if self.capture_secrets {
            captured.extend(["authorization", "Cookie", "x-api-key"].map(String::from));
        }
        let query_string = ["drop", "redact", "keep"][usize::from(self.query_string % 3)];
        let json = serde_json::json!({
            "batch": { "max_records": 1 + usize::from(self.max_records % 50) },
            "record": {
                "max_header_bytes": 16 + usize::from(self.max_header_bytes) % (contract::MAX_FIELD_BYTES - 15),
                "max_record_bytes": 1024 + usize::from(self.max_record_bytes) % (contract::MAX_RECORD_BYTES - 1023),
                "captured_headers": captured,
                "query_string": query_string,
                "kept_query_params": self.kept,
                "path_scrub_patterns": self.patterns.iter().map(|p| format!("/{p}")).collect::<Vec<_>>(),
                "redact_token_segments": self.redact_token_segments,
            }
        });
        Config::parse(json.to_string().as_bytes()).ok()
    }
}

fn source_bytes(s: &Source<'_>) -> Vec<u8> {
    match s {
        Source::V4(a, port) => format!("{}:{port}", std::net::Ipv4Addr::from(*a)).into_bytes(),
        Source::V6(a, port) => format!("[{}]:{port}", std::net::Ipv6Addr::from(*a)).into_bytes(),
        Source::Mapped(a, port) => {
            format!("[{}]:{port}", std::net::Ipv4Addr::from(*a).to_ipv6_mapped()).into_bytes()
        }
        Source::Raw(b) => b.to_vec(),
    }
}

fn header_map(r: &Request<'_>, wanted: &Wanted) -> Vec<u8> {
    if r.raw {
        return r.raw_map.to_vec();
    }
    let names: Vec<&[u8]> = r
        .headers
        .iter()
        .map(|(n, _)| match n {
            Name::Authority => &b":authority"[..],
            Name::Method => b":method",
            Name::Path => b":path",
            Name::UserAgent => b"user-agent",
            Name::RequestId => b"x-request-id",
            Name::ForwardedFor => b"x-forwarded-for",
            Name::Authorization => b"authorization",
            Name::Cookie => b"cookie",
            Name::Captured(i) => wanted
                .captured
                .get(usize::from(*i) % wanted.captured.len().max(1))
                .map_or(&b"x-captured"[..], |c| c.as_bytes()),
            Name::Other(b) => b,
        })
        .collect();
    let mut out = Vec::new();
    serialize_pairs(
        names.into_iter().zip(r.headers.iter().map(|(_, v)| *v)),
        &mut out,
    );
    out
}

fn filter_built(input: &Input<'_>) {
    let Some(config) = input.config() else {
        return;
    };
    let wanted = Wanted {
        captured: config.record.captured_headers.clone(),
        ..Wanted::default()
    };
    let identity = FilterIdentity {
        node_id: "node".into(),
        instance_id: "instance".into(),
        ..Default::default()
    };
    let mut shipper = Shipper::new(&config.batch, config.record.max_record_bytes, &identity);
    let mut scratch = String::new();
    let mut sent = 0usize;
    for r in input.requests.iter().take(64) {
        let source = source_bytes(&r.source);
        let _ = request::parse_ip(&source);
        let map = header_map(r, &wanted);
        let headers = RequestHeaders::scan(&map, &wanted);
        if let Some(a) = headers.authorization {
            // Only ever read for a user name, never recorded.
            let _ = warden_filter::identity::basic_auth_user(&String::from_utf8_lossy(a));
        }
        let blocked = Blocked {
            source: &source,
            headers,
            now_ns: (NOW_MS as u64 + u64::from(r.after_ms)) * 1_000_000,
            status: if r.throttle {
                config.deny_list.throttle_status
            } else {
                config.deny_list.deny_status
            },
            matched: Match {
                verdict: if r.throttle {
                    Verdict::Throttle
                } else {
                    Verdict::Deny
                },
                decision_id: r.decision_id,
                reason: r.reason,
                origin: r.origin,
                expires_at_ms: 0,
            },
        };
        request::record_blocked(&blocked, &config, &wanted, &mut scratch, &mut shipper);
        sent += 1;
    }
    let limits = Limits::default();
    let time = TimeBounds::at(NOW_MS, &limits, Duration::ZERO);
    let mut received = 0usize;
    // Every batch is due long after it opened; nothing is in flight.
    while let Some(batch) = shipper.next_batch(u64::MAX / 2) {
        let req = ExportRequest::decode(batch.body());
        assert!(
            req.is_ok(),
            "the filter built an undecodable batch: {:?}",
            req.err()
        );
        let Ok(req) = req else {
            return;
        };
        let envelope = validate_envelope(&req, &limits);
        assert!(envelope.is_ok(), "envelope refused: {envelope:?}");
        for r in &req.records {
            assert!(
                r.encoded_len() <= config.record.max_record_bytes,
                "a record of {} bytes, over record.max_record_bytes = {}",
                r.encoded_len(),
                config.record.max_record_bytes
            );
            for name in r.captured_headers.keys() {
                assert!(!is_secret_header(name), "secret header {name:?} captured");
            }
        }
        received += req.records.len();
        let (_, refused) = sort_records(req.records, &limits, time);
        assert!(
            refused.is_empty(),
            "the collector refuses what the filter built: {refused:?}"
        );
    }
    // 64 records at most, far below the buffer's default bounds: none may be shed.
    assert_eq!(
        received, sent,
        "records lost between the filter and the collector"
    );
}
