//! Record queries: the validated filter set (`RecordQuery`) shared by the HTTP API and the CLI, the
//! SQL it compiles to, and the flat JSON shape of a stored record (`StoredRecord`).

use crate::error::Error;
use crate::target::Target;
use crate::time::TimeBound;
use rusqlite::types::Value;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

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
    /// The stored column value.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecisionFilter::Allow => "allow",
            DecisionFilter::Deny => "deny",
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
                other => return Err(Error::invalid(other, "unknown parameter")),
            }
        }
        Ok(q)
    }

    /// The `WHERE` clause (without the keyword, `1` when empty) and its parameters.
    pub fn where_clause(&self, now_ms: i64) -> (String, Vec<Value>) {
        let mut conds: Vec<&str> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if let Some(b) = self.since {
            conds.push("time_ms >= ?");
            params.push(Value::Integer(b.resolve(now_ms)));
        }
        if let Some(b) = self.until {
            conds.push("time_ms < ?");
            params.push(Value::Integer(b.resolve(now_ms)));
        }
        if let Some(ip) = self.ip {
            let (lo, hi) = ip.key_range();
            conds.push("client_ip BETWEEN ? AND ?");
            params.push(Value::Blob(lo.to_vec()));
            params.push(Value::Blob(hi.to_vec()));
        }
        if let Some(host) = &self.host {
            // `host:` .. `host;` is every `host:<port>`, as an index range (';' follows ':').
            conds.push("(authority = ? OR (authority >= ? AND authority < ?))");
            params.push(Value::Text(host.clone()));
            params.push(Value::Text(format!("{host}:")));
            params.push(Value::Text(format!("{host};")));
        }
        if let Some(prefix) = &self.path_prefix {
            conds.push("substr(path, 1, ?) = ?");
            params.push(Value::Integer(
                i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX),
            ));
            params.push(Value::Text(prefix.clone()));
        }
        if let Some(status) = self.status {
            let (lo, hi) = status.range();
            conds.push("status BETWEEN ? AND ?");
            params.push(Value::Integer(i64::from(lo)));
            params.push(Value::Integer(i64::from(hi)));
        }
        if let Some(method) = &self.method {
            conds.push("method = ?");
            params.push(Value::Text(method.clone()));
        }
        if let Some(principal) = &self.principal {
            conds.push("principal = ?");
            params.push(Value::Text(principal.clone()));
        }
        if let Some(decision) = self.decision {
            conds.push("decision = ?");
            params.push(Value::Text(decision.as_str().to_string()));
        }
        let clause = if conds.is_empty() {
            "1".to_string()
        } else {
            conds.join(" AND ")
        };
        (clause, params)
    }
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
