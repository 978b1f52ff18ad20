//! Turns what Envoy said about one request into its record, appended to the shipper: the
//! client address, the bounded and redacted values, the principal and the decision.
//!
//! Two kinds of request: one that completed (`Completed`, recorded in `on_log` from the
//! attribute list and the request headers), and one Warden answered itself ([`Blocked`],
//! recorded in `on_request_headers` from the client address it already read and the request
//! headers, so that refusing an attacker costs two host calls and allocates nothing).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use warden_proto::pb::{DenyKind, Mechanism, Verdict};

use crate::attributes::Attributes;
use crate::batch::{self, Appended, Shipper};
use crate::config::Config;
use crate::denylist::{self, Match};
use crate::headers::{RequestHeaders, Wanted};
use crate::identity::{self, DecisionView, IdentityFacts};
use crate::record::{RecordView, bounded, is_secret_header, redact_path, text};

/// The IP of `source.address` (`1.2.3.4:5`, `[::1]:5`, or a bare address), IPv4-mapped IPv6
/// unwrapped so that it matches IPv4 entries.
pub fn parse_ip(source: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(source).ok()?;
    s.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| s.parse::<IpAddr>())
        .ok()
        .map(denylist::canonical)
}

/// The client's IP text and port from `source.address`. The text is Envoy's own when it is
/// already canonical (no copy); an IPv4-mapped address is written as IPv4; anything that is not
/// an address (a pipe) is recorded as no address rather than as raw text.
pub(crate) fn client(source: &[u8]) -> (Cow<'_, str>, u32) {
    let Ok(s) = std::str::from_utf8(source) else {
        return (Cow::Borrowed(""), 0);
    };
    let (ip, port, host) = match s.parse::<SocketAddr>() {
        Ok(a) => {
            let host = s
                .rsplit_once(':')
                .map_or(s, |(h, _)| h.trim_start_matches('[').trim_end_matches(']'));
            (a.ip(), u32::from(a.port()), host)
        }
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => (ip, 0, s),
            Err(_) => return (Cow::Borrowed(""), 0),
        },
    };
    match denylist::canonical(ip) {
        // Envoy writes IPv4 in dotted decimal, the canonical form.
        IpAddr::V4(_) if ip.is_ipv4() => (Cow::Borrowed(host), port),
        // IPv6 text has several spellings; the record keeps one (RFC 5952).
        canonical => (Cow::Owned(canonical.to_string()), port),
    }
}

/// A request that completed (`on_log`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Completed<'a> {
    /// The attribute list.
    pub attrs: Attributes<'a>,
    /// The request headers.
    pub headers: RequestHeaders<'a>,
    /// Envoy's clock at `on_log`, ns.
    pub now_ns: u64,
    /// The ext_authz identity header as the client sent it (read at request headers).
    pub sent_identity: Option<&'a [u8]>,
    /// The basic_auth forwarded-user header as the client sent it.
    pub sent_basic_auth_user: Option<&'a [u8]>,
    /// The api_key_auth forwarded-client header as the client sent it.
    pub sent_api_key_client: Option<&'a [u8]>,
}

/// A request Warden refused (`on_request_headers`).
#[derive(Debug, Clone)]
pub struct Blocked<'a> {
    /// `source.address`.
    pub source: &'a [u8],
    /// The request headers.
    pub headers: RequestHeaders<'a>,
    /// Envoy's clock, ns.
    pub now_ns: u64,
    /// The status Warden answered with.
    pub status: u32,
    /// The entry that matched.
    pub matched: Match<'a>,
}

/// Header-derived values, converted to text once (borrowed when valid UTF-8).
struct HeaderTexts<'a> {
    authority: Cow<'a, str>,
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    user_agent: Cow<'a, str>,
    request_id: Cow<'a, str>,
    x_forwarded_for: Cow<'a, str>,
    captured: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> HeaderTexts<'a> {
    fn new(
        h: &RequestHeaders<'a>,
        wanted: &'a Wanted,
        record: &crate::config::RecordConfig,
    ) -> Self {
        let max = record.max_header_bytes;
        let captured = h
            .captured
            .iter()
            .filter_map(|(i, v)| {
                let name = wanted.captured.get(*i)?.as_str();
                if is_secret_header(name) {
                    return None;
                }
                // A URL in a header (Referer) keeps its query string no more than the path.
                let value = match crate::record::redact_header_value(text(v), record) {
                    Cow::Borrowed(b) => Cow::Borrowed(bounded(b, max)),
                    Cow::Owned(o) => Cow::Owned(bounded(&o, max).to_string()),
                };
                Some((name, value))
            })
            .collect();
        Self {
            authority: text(h.authority),
            method: text(h.method),
            path: text(h.path),
            user_agent: text(h.user_agent),
            request_id: text(h.request_id),
            x_forwarded_for: text(h.x_forwarded_for),
            captured,
        }
    }
}

fn ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

/// Records a completed request; returns what appending did.
pub(crate) fn record_completed(
    c: &Completed<'_>,
    config: &Config,
    wanted: &Wanted,
    scratch: &mut String,
    shipper: &mut Shipper,
) -> Appended {
    let max = config.record.max_header_bytes;
    let a = &c.attrs;
    let h = HeaderTexts::new(&c.headers, wanted, &config.record);
    let (client_address, client_port) = client(a.source_address);
    let protocol = text(a.protocol);
    let details = text(a.code_details);
    let route = text(a.route_name);
    let cluster = text(a.cluster_name);
    let upstream = text(a.upstream_address);
    let tls_version = text(a.tls.version);
    let sni = text(a.tls.sni);
    let (uri_san, dns_san, subject, digest) = (
        text(a.tls.uri_san),
        text(a.tls.dns_san),
        text(a.tls.subject),
        text(a.tls.digest),
    );
    let id = &config.identity;
    let jwt_claims = if a.metadata.is_empty() {
        None
    } else {
        identity::claims_from_metadata(a.metadata, &id.jwt_metadata_namespace, &id.jwt_payload_key)
    };
    let completed_identity = c.headers.ext_authz_user.map(text);
    let sent_identity = c.sent_identity.map(text);
    let completed_basic = c.headers.basic_auth_user.map(text);
    let sent_basic = c.sent_basic_auth_user.map(text);
    let completed_key_client = c.headers.api_key_client.map(text);
    let sent_key_client = c.sent_api_key_client.map(text);
    let facts = IdentityFacts {
        jwt_claims,
        cert_uri_san: &uri_san,
        cert_dns_san: &dns_san,
        cert_subject: &subject,
        cert_fingerprint: &digest,
        authorization: c.headers.authorization,
        api_key: c.headers.api_key,
        ext_authz_user: identity::authorizer_identity(
            sent_identity.as_deref(),
            completed_identity.as_deref(),
        ),
        basic_auth_user: identity::authorizer_identity(
            sent_basic.as_deref(),
            completed_basic.as_deref(),
        ),
        api_key_client: identity::authorizer_identity(
            sent_key_client.as_deref(),
            completed_key_client.as_deref(),
        ),
    };
    let principal = identity::principal(&facts, id);
    let decision = identity::decision(a.status, bounded(&details, max), principal.as_ref());
    let principal = identity::attributable(principal, &decision);
    let claimed = identity::claimed_user(&facts, principal.as_ref(), id).unwrap_or_default();
    let path = redact_path(&h.path, &config.record, scratch);
    // Within the record contract, so the collector never refuses the record for its method.
    let method = warden_proto::contract::bounded_method(&h.method);
    let start_ns = c
        .now_ns
        .saturating_sub(u64::try_from(a.duration_ns).unwrap_or(0));
    let view = RecordView {
        time_ms: ms(start_ns),
        request_id: bounded(&h.request_id, max),
        client_address: &client_address,
        client_port,
        x_forwarded_for: bounded(&h.x_forwarded_for, max),
        tls_sni: bounded(&sni, max),
        tls_version: &tls_version,
        authority: bounded(&h.authority, max),
        method: &method,
        path: bounded(path, max),
        protocol: &protocol,
        status: a.status,
        response_code_details: bounded(&details, max),
        response_flags: a.response_flags,
        route_name: &route,
        upstream_cluster: &cluster,
        upstream_host: &upstream,
        duration_us: u64::try_from(a.duration_ns / 1000).unwrap_or(0),
        request_bytes: a.request_bytes,
        response_bytes: a.response_bytes,
        user_agent: bounded(&h.user_agent, max),
        principal: principal.as_ref(),
        claimed_user: bounded(&claimed, max),
        decision: Some(decision),
        captured: &h.captured,
    };
    let urgent = batch::is_urgent(&config.batch, a.status, &decision);
    let max_record = shipper.max_record_bytes();
    let priority = if urgent {
        crate::batch::Priority::Urgent
    } else {
        crate::batch::Priority::Plain
    };
    shipper.append(ms(c.now_ns).max(0) as u64, priority, |sequence, out| {
        view.encode_into(sequence, max_record, out);
    })
}

/// Records a request Warden refused. It names no principal: no authentication ran, and a
/// claimed user name or key was never checked.
pub fn record_blocked(
    b: &Blocked<'_>,
    config: &Config,
    wanted: &Wanted,
    scratch: &mut String,
    shipper: &mut Shipper,
) -> Appended {
    let max = config.record.max_header_bytes;
    let h = HeaderTexts::new(&b.headers, wanted, &config.record);
    let (client_address, client_port) = client(b.source);
    let m = &b.matched;
    let decision = DecisionView {
        verdict: Verdict::Deny,
        mechanism: Mechanism::WardenDenyList,
        deny_kind: match m.verdict {
            denylist::Verdict::Deny => DenyKind::Blocked,
            denylist::Verdict::Throttle => DenyKind::Throttled,
        },
        reason: m.reason,
        policy: m.origin,
        warden_decision_id: m.decision_id,
    };
    let path = redact_path(&h.path, &config.record, scratch);
    let method = warden_proto::contract::bounded_method(&h.method);
    let view = RecordView {
        time_ms: ms(b.now_ns),
        request_id: bounded(&h.request_id, max),
        client_address: &client_address,
        client_port,
        x_forwarded_for: bounded(&h.x_forwarded_for, max),
        authority: bounded(&h.authority, max),
        method: &method,
        path: bounded(path, max),
        status: b.status,
        response_code_details: "warden_denied",
        user_agent: bounded(&h.user_agent, max),
        decision: Some(decision),
        captured: &h.captured,
        ..RecordView::default()
    };
    let max_record = shipper.max_record_bytes();
    shipper.append(
        ms(b.now_ns).max(0) as u64,
        crate::batch::Priority::Blocked,
        |sequence, out| {
            view.encode_into(sequence, max_record, out);
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_parse_with_and_without_ports() {
        assert_eq!(
            parse_ip(b"127.0.0.9:5000"),
            Some("127.0.0.9".parse().unwrap())
        );
        assert_eq!(parse_ip(b"[::1]:5000"), Some("::1".parse().unwrap()));
        assert_eq!(
            parse_ip(b"[::ffff:10.0.0.1]:1"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_ip(b"10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(parse_ip(b"pipe"), None);
        assert_eq!(parse_ip(b"\xff"), None);
    }

    #[test]
    fn the_client_text_is_borrowed_when_canonical_and_normalised_otherwise() {
        let (ip, port) = client(b"127.0.0.9:5000");
        assert!(matches!(ip, Cow::Borrowed("127.0.0.9")));
        assert_eq!(port, 5000);
        let (ip, port) = client(b"[2001:db8::1]:443");
        assert_eq!((ip.as_ref(), port), ("2001:db8::1", 443));
        assert_eq!(client(b"[::ffff:10.0.0.1]:1").0, "10.0.0.1");
        assert_eq!(client(b"[2001:DB8::0:1]:1").0, "2001:db8::1");
        assert_eq!(client(b"/var/run/pipe").0, "");
        assert_eq!(client(b"10.1.2.3").0, "10.1.2.3");
    }
}
