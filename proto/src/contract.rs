//! The record contract shared by the filter and the collector: what a valid access record is,
//! the sizes its fields keep, and how a client address is written. The filter builds every
//! record within it, so it never ships one the collector would refuse; the collector checks
//! every record against it and refuses only the records that break it, one by one.
//!
//! Plain `core` code: it builds for wasm32 inside the filter and on the host for the collector.

use crate::pb::{AccessRecord, RecordSummary};
use core::net::IpAddr;
use std::borrow::Cow;

/// Longest filter node id or instance id.
pub const MAX_IDENTITY_BYTES: usize = 256;
/// Longest method. Real methods are short; a longer one is cut to this and still recorded.
pub const MAX_METHOD_BYTES: usize = 32;
/// Longest header-derived text field (authority, path, user agent, request id,
/// x-forwarded-for, a captured header): the most a filter may keep, the least a collector
/// accepts.
pub const MAX_FIELD_BYTES: usize = 8 * 1024;
/// Largest encoded record: the most a filter may build, the least a collector accepts.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Highest HTTP status.
pub const MAX_STATUS: u32 = 999;

/// Why a record breaks the contract: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The record field (`method`, `client_address`, ...), or empty for the record as a whole.
    pub field: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

fn violation(field: &'static str, message: impl Into<String>) -> Violation {
    Violation {
        field,
        message: message.into(),
    }
}

/// The address as the contract writes it: an IPv4-mapped IPv6 address is the IPv4 address it
/// carries (a dual-stack listener reports `::ffff:203.0.113.7` for an IPv4 client; a ban, a rule
/// and a query must all see `203.0.113.7`).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A network as the contract writes it: inside `::ffff:0:0/96` (IPv4-mapped), with a prefix
/// of at least 96, it is the IPv4 network it maps (`::ffff:203.0.113.0/120` is
/// `203.0.113.0/24`), so a ban on either spelling applies to the same clients.
pub fn canonical_prefix(ip: IpAddr, prefix_len: u8) -> (IpAddr, u8) {
    match (ip, canonical_ip(ip)) {
        (IpAddr::V6(_), v4 @ IpAddr::V4(_)) if prefix_len >= 96 => (v4, prefix_len - 96),
        _ => (ip, prefix_len),
    }
}

/// Parses a client address: a bare IPv4 or IPv6 address (no port, brackets or zone id),
/// returned in canonical form.
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    if text.contains('%') {
        return Err(format!(
            "{:?} has a zone id, which names an interface of one machine, not a client",
            shorten(text)
        ));
    }
    text.parse::<IpAddr>()
        .map(canonical_ip)
        .map_err(|_| format!("{:?} is not an IP address", shorten(text)))
}

/// Whether `method` is one the contract accepts: 1 to [`MAX_METHOD_BYTES`] visible ASCII
/// characters (empty means unknown and is accepted too).
pub fn method_is_valid(method: &str) -> bool {
    method.len() <= MAX_METHOD_BYTES && method.bytes().all(|b| b.is_ascii_graphic())
}

/// `method` within the contract: borrowed when it already is; otherwise cut to
/// [`MAX_METHOD_BYTES`] with every byte that is not visible ASCII replaced by `?`, so a request
/// with a strange method is recorded (as what it was, as far as it can be shown) instead of
/// making its record invalid.
pub fn bounded_method(method: &str) -> Cow<'_, str> {
    if method_is_valid(method) {
        return Cow::Borrowed(method);
    }
    Cow::Owned(
        method
            .bytes()
            .take(MAX_METHOD_BYTES)
            .map(|b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect(),
    )
}

/// Shortens a refused value for a message.
pub fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The limits a collector applies; never below the contract's (a filter builds up to those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded record.
    pub max_record_bytes: usize,
    /// Longest header-derived text field.
    pub max_field_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: MAX_RECORD_BYTES,
            max_field_bytes: MAX_FIELD_BYTES,
        }
    }
}

/// Checks one record against the contract. Time is not checked here: whether a time is
/// plausible depends on the receiver's clock and retention.
pub fn check_record(r: &AccessRecord, limits: Limits) -> Result<(), Violation> {
    use prost::Message;
    let size = r.encoded_len();
    if size > limits.max_record_bytes {
        return Err(violation(
            "",
            format!(
                "encoded size {size} bytes exceeds the maximum of {} bytes",
                limits.max_record_bytes
            ),
        ));
    }
    if r.sequence == 0 {
        return Err(violation("sequence", "must be greater than 0"));
    }
    if r.time_ms <= 0 {
        return Err(violation(
            "time_ms",
            format!(
                "{} is not a time (must be ms since the epoch, > 0)",
                r.time_ms
            ),
        ));
    }
    if !r.client_address.is_empty() {
        parse_ip(&r.client_address).map_err(|e| violation("client_address", e))?;
    }
    if r.client_port > 65_535 {
        return Err(violation(
            "client_port",
            format!("{} is not a port", r.client_port),
        ));
    }
    if r.status > MAX_STATUS {
        return Err(violation(
            "status",
            format!("{} is not an HTTP status", r.status),
        ));
    }
    if r.method.len() > MAX_METHOD_BYTES {
        return Err(violation(
            "method",
            format!("is longer than {MAX_METHOD_BYTES} bytes"),
        ));
    }
    if !method_is_valid(&r.method) {
        return Err(violation(
            "method",
            format!("{:?} is not an HTTP method", shorten(&r.method)),
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
            return Err(violation(
                name,
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

/// Highest status class a summary carries (status / 100 of [`MAX_STATUS`]).
pub const MAX_STATUS_CLASS: u32 = MAX_STATUS / 100;

/// Start of the minute `time_ms` falls in: the time a summary counts requests by.
pub fn minute_of(time_ms: i64) -> i64 {
    time_ms - time_ms.rem_euclid(60_000)
}

/// Checks one record summary against the contract (time, as for records, is the receiver's to
/// judge).
pub fn check_summary(s: &RecordSummary, limits: Limits) -> Result<(), Violation> {
    if s.sequence == 0 {
        return Err(violation("sequence", "must be greater than 0"));
    }
    if s.minute_ms <= 0 || minute_of(s.minute_ms) != s.minute_ms {
        return Err(violation(
            "minute_ms",
            format!(
                "{} is not the start of a minute (ms since the epoch)",
                s.minute_ms
            ),
        ));
    }
    if !s.client_address.is_empty() {
        parse_ip(&s.client_address).map_err(|e| violation("client_address", e))?;
    }
    if s.authority.len() > limits.max_field_bytes {
        return Err(violation(
            "authority",
            format!(
                "{} bytes exceed the maximum of {} bytes",
                s.authority.len(),
                limits.max_field_bytes
            ),
        ));
    }
    if s.status_class > MAX_STATUS_CLASS {
        return Err(violation(
            "status_class",
            format!(
                "{} is not a status class (0 to {MAX_STATUS_CLASS})",
                s.status_class
            ),
        ));
    }
    if s.requests == 0 {
        return Err(violation(
            "requests",
            "a summary counts at least one request",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            sequence: 1,
            time_ms: 1_700_000_000_000,
            client_address: "203.0.113.7".into(),
            method: "GET".into(),
            status: 200,
            ..AccessRecord::default()
        }
    }

    #[test]
    fn summaries_are_checked_field_by_field() {
        let good = RecordSummary {
            sequence: 1,
            minute_ms: 1_700_000_040_000,
            client_address: "203.0.113.7".into(),
            authority: "shop.example".into(),
            status_class: 2,
            requests: 3,
            ..RecordSummary::default()
        };
        assert_eq!(check_summary(&good, Limits::default()), Ok(()));
        let field = |s: RecordSummary| check_summary(&s, Limits::default()).unwrap_err().field;
        assert_eq!(
            field(RecordSummary {
                sequence: 0,
                ..good.clone()
            }),
            "sequence"
        );
        assert_eq!(
            field(RecordSummary {
                minute_ms: good.minute_ms + 1,
                ..good.clone()
            }),
            "minute_ms"
        );
        assert_eq!(
            field(RecordSummary {
                client_address: "fe80::1%eth0".into(),
                ..good.clone()
            }),
            "client_address"
        );
        assert_eq!(
            field(RecordSummary {
                status_class: 10,
                ..good.clone()
            }),
            "status_class"
        );
        assert_eq!(
            field(RecordSummary {
                requests: 0,
                ..good.clone()
            }),
            "requests"
        );
        assert_eq!(
            field(RecordSummary {
                authority: "a".repeat(MAX_FIELD_BYTES + 1),
                ..good
            }),
            "authority"
        );
        assert_eq!(minute_of(1_700_000_059_999), 1_700_000_040_000);
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_address_and_zone_ids_are_refused() {
        assert_eq!(
            parse_ip("::ffff:203.0.113.7").unwrap().to_string(),
            "203.0.113.7"
        );
        assert_eq!(parse_ip("2001:db8::1").unwrap().to_string(), "2001:db8::1");
        assert!(parse_ip("fe80::1%eth0").unwrap_err().contains("zone id"));
        assert!(parse_ip("[::1]").is_err());
        assert!(parse_ip("1.2.3.4:80").is_err());
    }

    #[test]
    fn mapped_networks_are_their_ipv4_network() {
        let mapped: IpAddr = "::ffff:203.0.113.0".parse().unwrap();
        assert_eq!(
            canonical_prefix(mapped, 120),
            ("203.0.113.0".parse().unwrap(), 24)
        );
        assert_eq!(canonical_prefix(mapped, 64), (mapped, 64));
        let v6: IpAddr = "2001:db8::".parse().unwrap();
        assert_eq!(canonical_prefix(v6, 120), (v6, 120));
    }

    #[test]
    fn any_method_is_bounded_into_one_the_contract_accepts() {
        assert!(matches!(bounded_method("GET"), Cow::Borrowed("GET")));
        for method in [
            "A".repeat(40),
            "G\u{1b}[2J".into(),
            "GÉT".into(),
            " ".into(),
        ] {
            let bounded = bounded_method(&method);
            assert!(method_is_valid(&bounded), "{method:?} -> {bounded:?}");
            let mut r = record();
            r.method = bounded.into_owned();
            assert_eq!(check_record(&r, Limits::default()), Ok(()));
        }
    }

    #[test]
    fn violations_name_the_field() {
        let mut r = record();
        r.client_address = "abc".into();
        assert_eq!(
            check_record(&r, Limits::default()).unwrap_err().to_string(),
            "client_address: \"abc\" is not an IP address"
        );
        let mut r = record();
        r.method = "A".repeat(33);
        assert_eq!(
            check_record(&r, Limits::default()).unwrap_err().to_string(),
            "method: is longer than 32 bytes"
        );
        let mut r = record();
        r.path = "/".repeat(MAX_FIELD_BYTES + 1);
        assert!(
            check_record(&r, Limits::default())
                .unwrap_err()
                .to_string()
                .starts_with("path: 8193 bytes exceed")
        );
    }
}
