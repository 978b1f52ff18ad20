//! The unit of storage: a block holds the records of one group commit (at most [`BLOCK_RECORDS`]),
//! sorted by request time, encoded as protobuf and compressed with LZ4, next to a summary of the
//! values queries filter on (client addresses, hosts, principals, statuses, methods, verdicts).
//!
//! Why blocks instead of a row per record: a row per record with the indexes queries need cost
//! about 11 µs per record in SQLite (six B-tree inserts and a 43-column row), which capped ingest
//! near 90k records/s on one core. A block costs one row and two small index entries however many
//! records it holds; queries skip blocks whose summary cannot match before decompressing them.

use crate::error::Error;
use crate::target::ip_key;
use prost::Message;
use std::collections::HashSet;
use std::net::IpAddr;
use warden_proto::pb::{AccessRecord, FilterIdentity};

/// Most records in one block; a larger group commit is split into several blocks.
pub const BLOCK_RECORDS: usize = 8192;

/// Body encoding: a [`BlockBody`] protobuf, LZ4 block format with a 4-byte little-endian length.
pub const CODEC_PROTOBUF_LZ4: i64 = 1;

/// Largest decompressed body accepted when reading (guards against a corrupt length prefix).
const MAX_BODY_BYTES: usize = 1 << 30;

/// The records of a block and the filter identities they came from.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockBody {
    /// Every filter identity the block's records name.
    #[prost(message, repeated, tag = "1")]
    pub filters: Vec<FilterIdentity>,
    /// For each record, the index of its filter in `filters`.
    #[prost(uint32, repeated, tag = "2")]
    pub record_filters: Vec<u32>,
    /// The records, oldest first.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<AccessRecord>,
}

impl BlockBody {
    /// The filter identity of record `i` (a default identity if the body is inconsistent).
    pub fn filter_of(&self, i: usize) -> &FilterIdentity {
        static UNKNOWN: FilterIdentity = FilterIdentity {
            node_id: String::new(),
            worker: 0,
            instance_id: String::new(),
            filter_version: String::new(),
        };
        self.record_filters
            .get(i)
            .and_then(|&f| self.filters.get(f as usize))
            .unwrap_or(&UNKNOWN)
    }
}

/// What a block contains, for skipping it without reading its body. Every list is sorted and
/// holds each value once.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockSummary {
    /// Client addresses as 16-byte keys ([`ip_key`]), concatenated.
    #[prost(bytes = "vec", tag = "1")]
    pub client_keys: Vec<u8>,
    /// Authorities, lower-cased.
    #[prost(string, repeated, tag = "2")]
    pub authorities: Vec<String>,
    /// Principal names (records without a principal add nothing).
    #[prost(string, repeated, tag = "3")]
    pub principals: Vec<String>,
    /// Response statuses.
    #[prost(uint32, repeated, tag = "4")]
    pub statuses: Vec<u32>,
    /// Request methods.
    #[prost(string, repeated, tag = "5")]
    pub methods: Vec<String>,
    /// Bit `1 << v` is set when some record's decision has verdict `v`.
    #[prost(uint32, tag = "6")]
    pub verdicts: u32,
}

impl BlockSummary {
    /// Whether some client key lies in `lo..=hi`.
    pub fn has_client_in(&self, lo: &[u8; 16], hi: &[u8; 16]) -> bool {
        let keys: Vec<&[u8]> = self.client_keys.chunks_exact(16).collect();
        let first_not_below = keys.partition_point(|k| *k < &lo[..]);
        keys.get(first_not_below).is_some_and(|k| *k <= &hi[..])
    }

    /// Whether some authority is `host` or `host:<port>` (`host` lower-case).
    pub fn has_host(&self, host: &str) -> bool {
        let start = self.authorities.partition_point(|a| a.as_str() < host);
        self.authorities[start..]
            .iter()
            .take_while(|a| a.starts_with(host))
            .any(|a| a.len() == host.len() || a.as_bytes().get(host.len()) == Some(&b':'))
    }

    /// Whether some status lies in `lo..=hi`.
    pub fn has_status_in(&self, lo: u32, hi: u32) -> bool {
        let i = self.statuses.partition_point(|s| *s < lo);
        self.statuses.get(i).is_some_and(|s| *s <= hi)
    }

    /// Whether some record has this principal.
    pub fn has_principal(&self, name: &str) -> bool {
        self.principals
            .binary_search_by(|p| p.as_str().cmp(name))
            .is_ok()
    }

    /// Whether some record has this method.
    pub fn has_method(&self, method: &str) -> bool {
        self.methods
            .binary_search_by(|m| m.as_str().cmp(method))
            .is_ok()
    }

    /// Whether some record's decision has this verdict.
    pub fn has_verdict(&self, verdict: i32) -> bool {
        u32::try_from(verdict)
            .ok()
            .and_then(|v| 1u32.checked_shl(v))
            .is_some_and(|bit| self.verdicts & bit != 0)
    }
}

/// A block ready to insert.
pub struct EncodedBlock {
    /// Oldest record time.
    pub min_time_ms: i64,
    /// Newest record time.
    pub max_time_ms: i64,
    /// Number of records.
    pub records: i64,
    /// Encoded [`BlockSummary`].
    pub summary: Vec<u8>,
    /// Compressed [`BlockBody`] in [`CODEC_PROTOBUF_LZ4`].
    pub body: Vec<u8>,
}

/// One record to store and the index of its filter identity in the block's filter list.
pub type Entry<'a> = (u32, &'a AccessRecord);

/// Encodes `entries` (already sorted by time) as one block. `filters` is the identity list the
/// entries' indexes point into.
pub fn encode(filters: &[&FilterIdentity], entries: &[Entry<'_>]) -> EncodedBlock {
    let mut body = Vec::with_capacity(entries.len() * 256);
    for f in filters {
        prost::encoding::message::encode(1, *f, &mut body);
    }
    let record_filters: Vec<u32> = entries.iter().map(|(f, _)| *f).collect();
    prost::encoding::uint32::encode_packed(2, &record_filters, &mut body);
    for (_, r) in entries {
        prost::encoding::message::encode(3, *r, &mut body);
    }
    let times = entries.iter().map(|(_, r)| r.time_ms);
    EncodedBlock {
        min_time_ms: times.clone().min().unwrap_or(0),
        max_time_ms: times.max().unwrap_or(0),
        records: i64::try_from(entries.len()).unwrap_or(i64::MAX),
        summary: summarize(entries.iter().map(|(_, r)| *r)).encode_to_vec(),
        body: lz4_flex::block::compress_prepend_size(&body),
    }
}

/// Builds the summary of `records`.
pub fn summarize<'a>(records: impl Iterator<Item = &'a AccessRecord>) -> BlockSummary {
    let mut keys: Vec<[u8; 16]> = Vec::new();
    let mut authorities: HashSet<&str> = HashSet::new();
    let mut principals: HashSet<&str> = HashSet::new();
    let mut statuses: Vec<u32> = Vec::new();
    let mut methods: HashSet<&str> = HashSet::new();
    let mut verdicts = 0u32;
    for r in records {
        if let Ok(ip) = r.client_address.parse::<IpAddr>() {
            keys.push(ip_key(ip));
        }
        authorities.insert(&r.authority);
        if let Some(p) = r.principal.as_ref().filter(|p| !p.name.is_empty()) {
            principals.insert(&p.name);
        }
        statuses.push(r.status);
        methods.insert(&r.method);
        if let Some(bit) = r
            .decision
            .as_ref()
            .and_then(|d| u32::try_from(d.verdict).ok())
            .and_then(|v| 1u32.checked_shl(v))
        {
            verdicts |= bit;
        }
    }
    keys.sort_unstable();
    keys.dedup();
    statuses.sort_unstable();
    statuses.dedup();
    let mut authorities: Vec<String> = authorities
        .into_iter()
        .map(str::to_ascii_lowercase)
        .collect();
    authorities.sort_unstable();
    authorities.dedup();
    BlockSummary {
        client_keys: keys.concat(),
        authorities,
        principals: sorted(principals),
        statuses,
        methods: sorted(methods),
        verdicts,
    }
}

fn sorted(set: HashSet<&str>) -> Vec<String> {
    let mut v: Vec<String> = set.into_iter().map(str::to_string).collect();
    v.sort_unstable();
    v
}

/// Decodes a stored summary.
pub fn decode_summary(bytes: &[u8]) -> Result<BlockSummary, Error> {
    BlockSummary::decode(bytes).map_err(|e| Error::Storage(format!("corrupt block summary: {e}")))
}

/// Decompresses and decodes a stored body.
pub fn decode_body(codec: i64, bytes: &[u8]) -> Result<BlockBody, Error> {
    if codec != CODEC_PROTOBUF_LZ4 {
        return Err(Error::Storage(format!(
            "block codec {codec} is unknown to this version of warden"
        )));
    }
    let (size, compressed) = lz4_flex::block::uncompressed_size(bytes)
        .map_err(|e| Error::Storage(format!("corrupt block body: {e}")))?;
    if size > MAX_BODY_BYTES {
        return Err(Error::Storage(format!(
            "corrupt block body: claims {size} bytes"
        )));
    }
    let raw = lz4_flex::block::decompress(compressed, size)
        .map_err(|e| Error::Storage(format!("corrupt block body: {e}")))?;
    BlockBody::decode(raw.as_slice())
        .map_err(|e| Error::Storage(format!("corrupt block body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_proto::pb::{AuthDecision, Principal, Verdict};

    fn record(client: &str, authority: &str, status: u32, time_ms: i64) -> AccessRecord {
        AccessRecord {
            sequence: 1,
            time_ms,
            client_address: client.into(),
            authority: authority.into(),
            method: "GET".into(),
            status,
            ..Default::default()
        }
    }

    #[test]
    fn a_block_round_trips_with_its_filters() {
        let a = FilterIdentity {
            node_id: "a".into(),
            ..Default::default()
        };
        let b = FilterIdentity {
            node_id: "b".into(),
            worker: 3,
            ..Default::default()
        };
        let r1 = record("10.0.0.1", "x", 200, 5);
        let r2 = record("10.0.0.2", "y", 404, 9);
        let block = encode(&[&a, &b], &[(0, &r1), (1, &r2)]);
        assert_eq!((block.min_time_ms, block.max_time_ms), (5, 9));
        assert_eq!(block.records, 2);
        let body = decode_body(CODEC_PROTOBUF_LZ4, &block.body).unwrap();
        assert_eq!(body.records, vec![r1, r2]);
        assert_eq!(body.filter_of(0).node_id, "a");
        assert_eq!(body.filter_of(1).worker, 3);
        assert_eq!(body.filter_of(7).node_id, "", "out of range is not a panic");
    }

    #[test]
    fn corrupt_bodies_are_storage_errors() {
        let e = decode_body(CODEC_PROTOBUF_LZ4, &[1, 2]).unwrap_err();
        assert!(e.to_string().contains("corrupt block body"), "{e}");
        let e = decode_body(CODEC_PROTOBUF_LZ4, &[0xff, 0xff, 0xff, 0x7f, 0]).unwrap_err();
        assert!(e.to_string().contains("claims"), "{e}");
        let e = decode_body(9, &[]).unwrap_err();
        assert!(e.to_string().contains("codec 9"), "{e}");
    }

    #[test]
    fn the_summary_answers_what_a_block_may_hold() {
        let mut r1 = record("10.0.0.1", "App.Example.com:8443", 200, 1);
        r1.principal = Some(Principal {
            name: "alice".into(),
            ..Default::default()
        });
        r1.decision = Some(AuthDecision {
            verdict: Verdict::Deny as i32,
            ..Default::default()
        });
        let r2 = record("2001:db8::5", "other.example.com", 404, 2);
        let r3 = record("not-an-ip", "app.example.com", 404, 3);
        let s = decode_summary(&summarize([&r1, &r2, &r3].into_iter()).encode_to_vec()).unwrap();
        let net = |t: &str| t.parse::<crate::target::Target>().unwrap().key_range();
        let (lo, hi) = net("10.0.0.0/8");
        assert!(s.has_client_in(&lo, &hi));
        let (lo, hi) = net("10.0.0.2");
        assert!(!s.has_client_in(&lo, &hi));
        let (lo, hi) = net("2001:db8::/32");
        assert!(s.has_client_in(&lo, &hi));
        let (lo, hi) = net("192.168.0.0/16");
        assert!(!s.has_client_in(&lo, &hi));
        assert!(s.has_host("app.example.com"), "bare host and host:port");
        assert!(s.has_host("other.example.com"));
        assert!(
            !s.has_host("app.example"),
            "a prefix of a host is not the host"
        );
        assert!(!s.has_host("example.com"));
        assert!(s.has_status_in(400, 499));
        assert!(s.has_status_in(200, 200));
        assert!(!s.has_status_in(500, 599));
        assert!(s.has_principal("alice"));
        assert!(!s.has_principal("bob"));
        assert!(s.has_method("GET"));
        assert!(!s.has_method("POST"));
        assert!(s.has_verdict(Verdict::Deny as i32));
        assert!(!s.has_verdict(Verdict::Allow as i32));
        assert!(!s.has_verdict(-1));
    }
}
