//! Record queries: the validated filter set (`RecordQuery`) shared by the HTTP API and the CLI, the
//! test it compiles to (`RecordFilter`: on a block's summary, then on each record), and the flat
//! JSON shape of a stored record (`StoredRecord`).

use crate::error::Error;
use crate::store::block::BlockSummary;
use crate::target::{Target, ip_key};
use crate::time::TimeBound;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::str::FromStr;
use warden_proto::pb::{
    AccessRecord, DenyKind, FilterIdentity, Mechanism, PrincipalSource, Verdict,
};

/// Default number of records a query returns.
pub const DEFAULT_LIMIT: usize = 100;

/// A response status filter: one code (`404`) or a class (`4xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Exactly this status.
    Code(u32),
    /// Any status in `class*100 ..= class*100+99`.
    Class(u32),
}

impl StatusFilter {
    /// The inclusive status range.
    pub fn range(&self) -> (u32, u32) {
        match self {
            StatusFilter::Code(c) => (*c, *c),
            StatusFilter::Class(c) => (c * 100, c * 100 + 99),
        }
    }
}

impl FromStr for StatusFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let err = || format!("{s:?} is not a status code or class like 4xx");
        if let Some(class) = t.strip_suffix("xx") {
            match class.parse::<u32>() {
                Ok(c) if (1..=5).contains(&c) && class.len() == 1 => Ok(StatusFilter::Class(c)),
                _ => Err(err()),
            }
        } else {
            match t.parse::<u32>() {
                Ok(c) if (100..=599).contains(&c) || c == 0 => Ok(StatusFilter::Code(c)),
                _ => Err(err()),
            }
        }
    }
}

/// The verdict recorded for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionFilter {
    /// `allow`
    Allow,
    /// `deny`
    Deny,
}

impl DecisionFilter {
    /// The API name.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecisionFilter::Allow => "allow",
            DecisionFilter::Deny => "deny",
        }
    }

    /// The proto verdict it selects.
    pub fn verdict(&self) -> i32 {
        match self {
            DecisionFilter::Allow => Verdict::Allow as i32,
            DecisionFilter::Deny => Verdict::Deny as i32,
        }
    }
}

impl FromStr for DecisionFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "allow" => Ok(DecisionFilter::Allow),
            "deny" => Ok(DecisionFilter::Deny),
            _ => Err(format!("{s:?} is not a decision (allow or deny)")),
        }
    }
}

/// A validated record query. Every filter is optional; results are newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordQuery {
    /// Only records at or after this time.
    pub since: Option<TimeBound>,
    /// Only records before this time.
    pub until: Option<TimeBound>,
    /// Client address inside this network.
    pub ip: Option<Target>,
    /// Authority equal to this host (with or without a port).
    pub host: Option<String>,
    /// Path starting with this prefix.
    pub path_prefix: Option<String>,
    /// Response status code or class.
    pub status: Option<StatusFilter>,
    /// Request method (upper-cased).
    pub method: Option<String>,
    /// Principal name.
    pub principal: Option<String>,
    /// Verdict.
    pub decision: Option<DecisionFilter>,
    /// Maximum number of records.
    pub limit: usize,
    /// Continue after the page that returned this cursor.
    pub cursor: Option<Cursor>,
}

/// Where a page of newest-first results ended: its last record's time and how many records
/// with exactly that time it (and the pages before it) returned. Written `TIME.COUNT`. Records
/// of equal time keep their storage order, also after blocks are merged, so the next page
/// starts exactly after the last record returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last record's time (ms).
    pub time_ms: i64,
    /// Records with that time already returned.
    pub skip: u64,
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("{s:?} is not a cursor (pass the next_cursor of a previous page)");
        let (time, skip) = s.trim().split_once('.').ok_or_else(err)?;
        Ok(Cursor {
            time_ms: time.parse().map_err(|_| err())?,
            skip: skip.parse().map_err(|_| err())?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.time_ms, self.skip)
    }
}

/// Parses `value` as `T`, naming `field` in the error.
pub fn parse_field<T: FromStr<Err = E>, E: ToString>(field: &str, value: &str) -> Result<T, Error> {
    value
        .parse()
        .map_err(|e: E| Error::invalid(field, e.to_string()))
}

fn non_empty(field: &str, value: &str) -> Result<String, Error> {
    if value.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(value.to_string())
    }
}

impl RecordQuery {
    /// Builds a query from HTTP query parameters; unknown parameters are rejected so that a typo
    /// never silently widens a query.
    pub fn from_params(params: &HashMap<String, String>, max_limit: usize) -> Result<Self, Error> {
        let mut q = RecordQuery {
            limit: DEFAULT_LIMIT,
            ..Default::default()
        };
        for (key, value) in params {
            match key.as_str() {
                "since" => q.since = Some(parse_field(key, value)?),
                "until" => q.until = Some(parse_field(key, value)?),
                "ip" => q.ip = Some(parse_field(key, value)?),
                "host" => q.host = Some(non_empty(key, value)?.to_ascii_lowercase()),
                "path_prefix" => q.path_prefix = Some(non_empty(key, value)?),
                "status" => q.status = Some(parse_field(key, value)?),
                "method" => q.method = Some(non_empty(key, value)?.to_ascii_uppercase()),
                "principal" => q.principal = Some(non_empty(key, value)?),
                "decision" => q.decision = Some(parse_field(key, value)?),
                "limit" => q.limit = parse_limit(value, max_limit)?,
                "cursor" => q.cursor = Some(parse_field(key, value)?),
                other => return Err(Error::invalid(other, "unknown parameter")),
            }
        }
        Ok(q)
    }
}

/// A [`RecordQuery`] with its times resolved, ready to test blocks and records.
#[derive(Debug, Clone)]
pub struct RecordFilter {
    /// Records at or after this time (ms).
    pub since_ms: i64,
    /// Records before this time (ms).
    pub until_ms: i64,
    ip: Option<([u8; 16], [u8; 16])>,
    host: Option<String>,
    path_prefix: Option<String>,
    status: Option<(u32, u32)>,
    method: Option<String>,
    principal: Option<String>,
    verdict: Option<i32>,
}

impl RecordFilter {
    /// Resolves `q`'s relative times against `now_ms`.
    pub fn new(q: &RecordQuery, now_ms: i64) -> Self {
        let until_ms = q.until.map_or(i64::MAX, |b| b.resolve(now_ms));
        RecordFilter {
            since_ms: q.since.map_or(i64::MIN, |b| b.resolve(now_ms)),
            // A cursor's page ended at its time: nothing newer is left to return.
            until_ms: q
                .cursor
                .map_or(until_ms, |c| until_ms.min(c.time_ms.saturating_add(1))),
            ip: q.ip.map(|t| t.key_range()),
            host: q.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path_prefix: q.path_prefix.clone(),
            status: q.status.map(|s| s.range()),
            method: q.method.clone(),
            principal: q.principal.clone(),
            verdict: q.decision.map(|d| d.verdict()),
        }
    }

    /// False when no record of a block with this summary can match.
    pub fn may_match(&self, s: &BlockSummary) -> bool {
        self.ip.is_none_or(|(lo, hi)| s.has_client_in(&lo, &hi))
            && self.host.as_deref().is_none_or(|h| s.has_host(h))
            && self.status.is_none_or(|(lo, hi)| s.has_status_in(lo, hi))
            && self.method.as_deref().is_none_or(|m| s.has_method(m))
            && self.principal.as_deref().is_none_or(|p| s.has_principal(p))
            && self.verdict.is_none_or(|v| s.has_verdict(v))
    }

    /// Whether `r` matches every filter (the time range included).
    pub fn matches(&self, r: &AccessRecord) -> bool {
        (self.since_ms..self.until_ms).contains(&r.time_ms)
            && self.ip.is_none_or(|(lo, hi)| {
                r.client_address
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| (lo..=hi).contains(&ip_key(ip)))
            })
            && self
                .host
                .as_deref()
                .is_none_or(|h| host_matches(&r.authority, h))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| r.path.starts_with(p))
            && self
                .status
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&r.status))
            && self.method.as_deref().is_none_or(|m| r.method == m)
            && self
                .principal
                .as_deref()
                .is_none_or(|p| r.principal.as_ref().is_some_and(|rp| rp.name == p))
            && self
                .verdict
                .is_none_or(|v| r.decision.as_ref().is_some_and(|d| d.verdict == v))
    }
}

/// Whether `authority` is `host` or `host:<port>`, ignoring ASCII case (`host` lower-case).
pub(crate) fn host_matches(authority: &str, host: &str) -> bool {
    let Some(head) = authority.get(..host.len()) else {
        return false;
    };
    head.eq_ignore_ascii_case(host)
        && (authority.len() == host.len() || authority.as_bytes().get(host.len()) == Some(&b':'))
}

/// Parses a `limit` parameter: 1..=max.
pub fn parse_limit(value: &str, max: usize) -> Result<usize, Error> {
    match value.trim().parse::<usize>() {
        Ok(0) => Err(Error::invalid("limit", "must be at least 1")),
        Ok(n) if n > max => Err(Error::invalid(
            "limit",
            format!("{n} exceeds the maximum of {max}"),
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(Error::invalid(
            "limit",
            format!("{value:?} is not a number"),
        )),
    }
}

/// One stored record as the API returns it: flat, with the proto field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Record)]
pub struct StoredRecord {
    /// Per-VM sequence number.
    pub sequence: u64,
    /// Request start, ms since the epoch.
    pub time_ms: i64,
    /// Request start, RFC 3339.
    pub time: String,
    /// Envoy's x-request-id.
    pub request_id: String,
    /// Downstream client address.
    pub client_address: String,
    /// Downstream client port.
    pub client_port: u32,
    /// Raw X-Forwarded-For.
    pub x_forwarded_for: String,
    /// TLS SNI.
    pub tls_sni: String,
    /// TLS version.
    pub tls_version: String,
    /// Host/authority.
    pub authority: String,
    /// Method.
    pub method: String,
    /// Path (query dropped or redacted by the filter).
    pub path: String,
    /// HTTP protocol.
    pub protocol: String,
    /// Response status, 0 when none was sent.
    pub status: u32,
    /// Envoy response code details.
    pub response_code_details: String,
    /// Envoy response flags.
    pub response_flags: String,
    /// Route name.
    pub route_name: String,
    /// Upstream cluster.
    pub upstream_cluster: String,
    /// Upstream host.
    pub upstream_host: String,
    /// Duration, microseconds.
    pub duration_us: u64,
    /// Request bytes.
    pub request_bytes: u64,
    /// Response bytes.
    pub response_bytes: u64,
    /// User agent.
    pub user_agent: String,
    /// Principal name, or null when nobody was identified.
    pub principal: Option<String>,
    /// `jwt`, `mtls`, `basic_auth`, `api_key`, `ext_authz`, or null.
    pub principal_source: Option<String>,
    /// A user name the client claimed that no mechanism verified (never a principal), or null.
    pub claimed_user: Option<String>,
    /// JWT issuer.
    pub principal_issuer: String,
    /// JWT audiences.
    pub principal_audiences: Vec<String>,
    /// Configured extra claims.
    pub principal_claims: BTreeMap<String, String>,
    /// Peer certificate URI SAN.
    pub cert_uri_san: String,
    /// Peer certificate DNS SAN.
    pub cert_dns_san: String,
    /// Peer certificate subject.
    pub cert_subject: String,
    /// Peer certificate SHA-256, hex.
    pub cert_fingerprint: String,
    /// `allow`, `deny`, or null.
    pub decision: Option<String>,
    /// `none`, `jwt_authn`, `rbac`, `ext_authz`, `basic_auth`, `warden_deny_list`, `upstream`, or null.
    pub mechanism: Option<String>,
    /// `authentication`, `authorization`, `blocked`, `throttled`, or null.
    pub deny_kind: Option<String>,
    /// Decision reason.
    pub reason: String,
    /// Matched policy / decision origin.
    pub policy: String,
    /// Warden decision id for deny-list blocks, 0 otherwise.
    pub warden_decision_id: u64,
    /// Captured request headers.
    pub captured_headers: BTreeMap<String, String>,
    /// Filter node id.
    pub filter_node: String,
    /// Filter worker index.
    pub filter_worker: u32,
    /// Filter instance id.
    pub filter_instance: String,
}

impl StoredRecord {
    /// The API shape of a stored record.
    pub fn new(f: &FilterIdentity, r: &AccessRecord) -> Self {
        let p = r.principal.as_ref();
        let d = r.decision.as_ref();
        let text = |v: Option<&String>| v.cloned().unwrap_or_default();
        StoredRecord {
            sequence: r.sequence,
            time_ms: r.time_ms,
            time: crate::time::rfc3339(r.time_ms),
            request_id: r.request_id.clone(),
            client_address: r.client_address.clone(),
            client_port: r.client_port,
            x_forwarded_for: r.x_forwarded_for.clone(),
            tls_sni: r.tls_sni.clone(),
            tls_version: r.tls_version.clone(),
            authority: r.authority.to_ascii_lowercase(),
            method: r.method.clone(),
            path: r.path.clone(),
            protocol: r.protocol.clone(),
            status: r.status,
            response_code_details: r.response_code_details.clone(),
            response_flags: r.response_flags.clone(),
            route_name: r.route_name.clone(),
            upstream_cluster: r.upstream_cluster.clone(),
            upstream_host: r.upstream_host.clone(),
            duration_us: r.duration_us,
            request_bytes: r.request_bytes,
            response_bytes: r.response_bytes,
            user_agent: r.user_agent.clone(),
            principal: p.map(|p| p.name.clone()).filter(|n| !n.is_empty()),
            principal_source: p
                .and_then(|p| principal_source_name(p.source))
                .map(Into::into),
            claimed_user: Some(r.claimed_user.clone()).filter(|c| !c.is_empty()),
            principal_issuer: text(p.map(|p| &p.issuer)),
            principal_audiences: p.map(|p| p.audiences.clone()).unwrap_or_default(),
            principal_claims: p
                .map(|p| {
                    p.claims
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            cert_uri_san: text(p.map(|p| &p.cert_uri_san)),
            cert_dns_san: text(p.map(|p| &p.cert_dns_san)),
            cert_subject: text(p.map(|p| &p.cert_subject)),
            cert_fingerprint: text(p.map(|p| &p.cert_fingerprint)),
            decision: d.and_then(|d| verdict_name(d.verdict)).map(Into::into),
            mechanism: d.and_then(|d| mechanism_name(d.mechanism)).map(Into::into),
            deny_kind: d.and_then(|d| deny_kind_name(d.deny_kind)).map(Into::into),
            reason: text(d.map(|d| &d.reason)),
            policy: text(d.map(|d| &d.policy)),
            warden_decision_id: d.map_or(0, |d| d.warden_decision_id),
            captured_headers: r
                .captured_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            filter_node: f.node_id.clone(),
            filter_worker: f.worker,
            filter_instance: f.instance_id.clone(),
        }
    }
}

/// The API name of a principal source.
pub fn principal_source_name(v: i32) -> Option<&'static str> {
    match PrincipalSource::try_from(v).ok()? {
        PrincipalSource::Unspecified => None,
        PrincipalSource::Jwt => Some("jwt"),
        PrincipalSource::Mtls => Some("mtls"),
        PrincipalSource::BasicAuth => Some("basic_auth"),
        PrincipalSource::ApiKey => Some("api_key"),
        PrincipalSource::ExtAuthz => Some("ext_authz"),
    }
}

/// The API name of a verdict.
pub fn verdict_name(v: i32) -> Option<&'static str> {
    match Verdict::try_from(v).ok()? {
        Verdict::Unspecified => None,
        Verdict::Allow => Some("allow"),
        Verdict::Deny => Some("deny"),
    }
}

/// The API name of a mechanism.
pub fn mechanism_name(v: i32) -> Option<&'static str> {
    match Mechanism::try_from(v).ok()? {
        Mechanism::Unspecified => None,
        Mechanism::None => Some("none"),
        Mechanism::JwtAuthn => Some("jwt_authn"),
        Mechanism::Rbac => Some("rbac"),
        Mechanism::ExtAuthz => Some("ext_authz"),
        Mechanism::BasicAuth => Some("basic_auth"),
        Mechanism::WardenDenyList => Some("warden_deny_list"),
        Mechanism::Upstream => Some("upstream"),
    }
}

/// The API name of a deny kind.
pub fn deny_kind_name(v: i32) -> Option<&'static str> {
    match DenyKind::try_from(v).ok()? {
        DenyKind::Unspecified => None,
        DenyKind::Authentication => Some("authentication"),
        DenyKind::Authorization => Some("authorization"),
        DenyKind::Blocked => Some("blocked"),
        DenyKind::Throttled => Some("throttled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn status_codes_and_classes() {
        assert_eq!("404".parse::<StatusFilter>().unwrap().range(), (404, 404));
        assert_eq!("4xx".parse::<StatusFilter>().unwrap().range(), (400, 499));
        assert_eq!("5XX".parse::<StatusFilter>().unwrap().range(), (500, 599));
        let e = "4yy".parse::<StatusFilter>().unwrap_err();
        assert_eq!(e, "\"4yy\" is not a status code or class like 4xx");
        assert!("700".parse::<StatusFilter>().is_err());
        assert!("44xx".parse::<StatusFilter>().is_err());
    }

    #[test]
    fn params_parse_into_a_query() {
        let q = RecordQuery::from_params(
            &params(&[
                ("ip", "10.0.0.0/8"),
                ("method", "get"),
                ("status", "4xx"),
                ("limit", "5"),
            ]),
            1000,
        )
        .unwrap();
        assert_eq!(q.method.as_deref(), Some("GET"));
        assert_eq!(q.limit, 5);
        assert_eq!(q.ip.unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_named() {
        let c: Cursor = "1700000000123.4".parse().unwrap();
        assert_eq!((c.time_ms, c.skip), (1_700_000_000_123, 4));
        assert_eq!(c.to_string(), "1700000000123.4");
        let e = RecordQuery::from_params(&params(&[("cursor", "yesterday")]), 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cursor: \"yesterday\" is not a cursor (pass the next_cursor of a previous page)"
        );
    }

    #[test]
    fn bad_params_name_the_parameter() {
        let e = RecordQuery::from_params(&params(&[("ip", "abc")]), 10).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ip: \"abc\" is not an IP address"),
            "{e}"
        );
        let e = RecordQuery::from_params(&params(&[("limit", "11")]), 10).unwrap_err();
        assert_eq!(e.to_string(), "limit: 11 exceeds the maximum of 10");
        let e = RecordQuery::from_params(&params(&[("colour", "red")]), 10).unwrap_err();
        assert_eq!(e.to_string(), "colour: unknown parameter");
        let e = RecordQuery::from_params(&params(&[("decision", "maybe")]), 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "decision: \"maybe\" is not a decision (allow or deny)"
        );
    }
}
