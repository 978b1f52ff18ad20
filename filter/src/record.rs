//! Builds an [`AccessRecord`] from plain request facts: redaction of the path and query string,
//! header capture, and the size bounds (per header value, per encoded record).
//!
//! Nothing here talks to Envoy; the glue in `http_context.rs` gathers [`RequestFacts`] from
//! attributes and headers, so every rule below is tested on the host.

use prost::Message;
use warden_proto::pb::{AccessRecord, AuthDecision, Principal};

use crate::config::{QueryStringMode, RecordConfig};

/// The replacement for a redacted query value.
pub const REDACTED: &str = "REDACTED";

/// Headers whose values are never recorded, whatever the configuration.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
];

/// Query parameters whose values are never recorded, whatever the configuration (compared
/// case-insensitively).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "password",
    "passwd",
    "pwd",
    "api_key",
    "apikey",
    "key",
    "secret",
    "client_secret",
    "sig",
    "signature",
    "code",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "session",
    "sessionid",
    "auth",
];

/// Whether a header name (lower case) is a secret that is never recorded.
pub fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.contains(&name)
}

fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// What Envoy told the filter about one completed request, before any redaction or bounding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFacts {
    /// `request.time`, ms since the epoch.
    pub time_ms: i64,
    /// `request.id`.
    pub request_id: String,
    /// IP part of `source.address`.
    pub client_address: String,
    /// `source.port`.
    pub client_port: u32,
    /// `connection.requested_server_name`.
    pub tls_sni: String,
    /// `connection.tls_version`.
    pub tls_version: String,
    /// `request.host`.
    pub authority: String,
    /// `request.method`.
    pub method: String,
    /// `request.path`, with its query string.
    pub path: String,
    /// `request.protocol`.
    pub protocol: String,
    /// `response.code`, 0 when no response was sent.
    pub status: u32,
    /// `response.code_details`.
    pub response_code_details: String,
    /// `response.flags` bitmask.
    pub response_flags: u64,
    /// `xds.route_name`.
    pub route_name: String,
    /// `xds.cluster_name`.
    pub upstream_cluster: String,
    /// `upstream.address`.
    pub upstream_host: String,
    /// `request.duration`, µs.
    pub duration_us: u64,
    /// `request.total_size`.
    pub request_bytes: u64,
    /// `response.total_size`.
    pub response_bytes: u64,
    /// `request.useragent`.
    pub user_agent: String,
    /// Request headers, lower-case names (only those the record may use need be present).
    pub headers: Vec<(String, String)>,
}

impl RequestFacts {
    /// First value of a request header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

fn bounded(s: &str, max: usize) -> String {
    let mut s = s.to_string();
    truncate_utf8(&mut s, max);
    s
}

/// Builds the record (sequence 0: the shipper numbers it) and bounds each header-derived value.
pub fn build(
    facts: &RequestFacts,
    config: &RecordConfig,
    principal: Option<Principal>,
    decision: Option<AuthDecision>,
) -> AccessRecord {
    let max = config.max_header_bytes;
    let mut captured = std::collections::HashMap::new();
    for name in &config.captured_headers {
        if is_secret_header(name) {
            continue;
        }
        if let Some(v) = facts.header(name) {
            captured.insert(name.clone(), bounded(v, max));
        }
    }
    AccessRecord {
        sequence: 0,
        time_ms: facts.time_ms,
        request_id: bounded(&facts.request_id, max),
        client_address: facts.client_address.clone(),
        client_port: facts.client_port,
        x_forwarded_for: bounded(facts.header("x-forwarded-for").unwrap_or(""), max),
        tls_sni: bounded(&facts.tls_sni, max),
        tls_version: facts.tls_version.clone(),
        authority: bounded(&facts.authority, max),
        method: bounded(&facts.method, max),
        path: bounded(&redact_path(&facts.path, config), max),
        protocol: facts.protocol.clone(),
        status: facts.status,
        response_code_details: bounded(&facts.response_code_details, max),
        response_flags: crate::response_flags::short_names(facts.response_flags),
        route_name: facts.route_name.clone(),
        upstream_cluster: facts.upstream_cluster.clone(),
        upstream_host: facts.upstream_host.clone(),
        duration_us: facts.duration_us,
        request_bytes: facts.request_bytes,
        response_bytes: facts.response_bytes,
        user_agent: bounded(&facts.user_agent, max),
        principal,
        decision,
        captured_headers: captured,
    }
}

/// Applies the path scrub patterns and the query-string mode.
pub fn redact_path(path: &str, config: &RecordConfig) -> String {
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut out = scrub_path(p, &config.path_scrub_patterns);
    let Some(query) = query else {
        return out;
    };
    if config.query_string == QueryStringMode::Drop {
        return out;
    }
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let Some((name, value)) = pair.split_once('=') else {
            out.push_str(pair);
            continue;
        };
        let decoded = name.replace("%5F", "_").replace("%5f", "_");
        let keep = !is_secret_param(&decoded)
            && match config.query_string {
                QueryStringMode::Keep => true,
                _ => config.kept_query_params.iter().any(|k| k == name),
            };
        out.push_str(name);
        out.push('=');
        out.push_str(if keep { value } else { REDACTED });
    }
    out
}

/// Replaces `{name}` segments of the first matching pattern.
fn scrub_path(path: &str, patterns: &[String]) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    'patterns: for pattern in patterns {
        let pat: Vec<&str> = pattern.split('/').collect();
        let rest = pat.last() == Some(&"**");
        let fixed = if rest { pat.len() - 1 } else { pat.len() };
        if segments.len() < fixed || (!rest && segments.len() != fixed) {
            continue;
        }
        for (s, p) in segments.iter().zip(&pat[..fixed]) {
            let wildcard = *p == "*" || (p.starts_with('{') && p.ends_with('}'));
            if !wildcard && s != p {
                continue 'patterns;
            }
        }
        let out: Vec<&str> = segments
            .iter()
            .enumerate()
            .map(|(i, s)| match pat.get(i) {
                Some(p) if i < fixed && p.starts_with('{') && p.ends_with('}') => *p,
                _ => *s,
            })
            .collect();
        return out.join("/");
    }
    path.to_string()
}

/// Truncates the longest strings of the record until its encoding fits in `max` bytes.
pub fn bound_record(record: &mut AccessRecord, max: usize) {
    // Each pass cuts the longest string by the excess (plus a little for shrinking length
    // prefixes); a pathological record converges in a few passes.
    for _ in 0..64 {
        let len = record.encoded_len();
        if len <= max {
            return;
        }
        let excess = len - max + 8;
        let Some(longest) = longest_string(record) else {
            return;
        };
        let target = longest
            .len()
            .saturating_sub(excess)
            .min(longest.len() / 2 + 1);
        let target = if longest.len() <= 1 { 0 } else { target };
        truncate_utf8(longest, target);
    }
}

fn longest_string(r: &mut AccessRecord) -> Option<&mut String> {
    let mut all: Vec<&mut String> = vec![
        &mut r.request_id,
        &mut r.client_address,
        &mut r.x_forwarded_for,
        &mut r.tls_sni,
        &mut r.tls_version,
        &mut r.authority,
        &mut r.method,
        &mut r.path,
        &mut r.protocol,
        &mut r.response_code_details,
        &mut r.response_flags,
        &mut r.route_name,
        &mut r.upstream_cluster,
        &mut r.upstream_host,
        &mut r.user_agent,
    ];
    all.extend(r.captured_headers.values_mut());
    if let Some(p) = r.principal.as_mut() {
        all.extend([
            &mut p.name,
            &mut p.issuer,
            &mut p.cert_uri_san,
            &mut p.cert_dns_san,
            &mut p.cert_subject,
            &mut p.cert_fingerprint,
        ]);
        all.extend(p.audiences.iter_mut());
        all.extend(p.claims.values_mut());
    }
    if let Some(d) = r.decision.as_mut() {
        all.extend([&mut d.reason, &mut d.policy]);
    }
    all.into_iter()
        .filter(|s| !s.is_empty())
        .max_by_key(|s| s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RequestFacts {
        RequestFacts {
            time_ms: 1_700_000_000_000,
            request_id: "rid".into(),
            client_address: "127.0.0.9".into(),
            client_port: 5555,
            authority: "example.test".into(),
            method: "GET".into(),
            path: "/a/b?x=1&token=abc&page=2&flag".into(),
            protocol: "HTTP/1.1".into(),
            status: 503,
            response_flags: (1 << 5) | (1 << 15),
            headers: vec![
                ("x-forwarded-for".into(), "1.2.3.4".into()),
                ("authorization".into(), "Bearer secret".into()),
                ("cookie".into(), "s=1".into()),
                ("x-tenant".into(), "acme".into()),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn builds_a_record_with_redacted_query_and_flags() {
        let r = build(&facts(), &RecordConfig::default(), None, None);
        assert_eq!(r.client_address, "127.0.0.9");
        assert_eq!(r.x_forwarded_for, "1.2.3.4");
        assert_eq!(r.response_flags, "UF,URX");
        assert_eq!(r.path, "/a/b?x=REDACTED&token=REDACTED&page=REDACTED&flag");
        assert!(r.captured_headers.is_empty());
    }

    #[test]
    fn kept_params_survive_but_secrets_never_do() {
        let cfg = RecordConfig {
            kept_query_params: vec!["page".into(), "token".into()],
            ..Default::default()
        };
        assert_eq!(
            redact_path("/p?page=2&token=t&TOKEN=u", &cfg),
            "/p?page=2&token=REDACTED&TOKEN=REDACTED"
        );
        let keep = RecordConfig {
            query_string: QueryStringMode::Keep,
            ..Default::default()
        };
        assert_eq!(
            redact_path("/p?q=x&api%5Fkey=k&sig=s", &keep),
            "/p?q=x&api%5Fkey=REDACTED&sig=REDACTED"
        );
        let drop = RecordConfig {
            query_string: QueryStringMode::Drop,
            ..Default::default()
        };
        assert_eq!(redact_path("/p?q=x", &drop), "/p");
        assert_eq!(redact_path("/p", &drop), "/p");
    }

    #[test]
    fn captured_headers_never_include_secrets() {
        let cfg = RecordConfig {
            captured_headers: vec!["x-tenant".into(), "authorization".into(), "cookie".into()],
            ..Default::default()
        };
        let r = build(&facts(), &cfg, None, None);
        assert_eq!(r.captured_headers.len(), 1);
        assert_eq!(r.captured_headers["x-tenant"], "acme");
    }

    #[test]
    fn path_scrub_patterns_replace_named_segments() {
        let cfg = RecordConfig {
            path_scrub_patterns: vec!["/reset/{token}".into(), "/users/{id}/**".into()],
            ..Default::default()
        };
        assert_eq!(redact_path("/reset/abcdef", &cfg), "/reset/{token}");
        assert_eq!(
            redact_path("/users/42/orders/7", &cfg),
            "/users/{id}/orders/7"
        );
        assert_eq!(redact_path("/other/42", &cfg), "/other/42");
        assert_eq!(redact_path("/reset/a/b", &cfg), "/reset/a/b");
    }

    #[test]
    fn header_values_are_bounded_on_char_boundaries() {
        let mut f = facts();
        f.user_agent = "é".repeat(100);
        let cfg = RecordConfig {
            max_header_bytes: 17,
            ..Default::default()
        };
        let r = build(&f, &cfg, None, None);
        assert_eq!(r.user_agent.len(), 16);
    }

    #[test]
    fn records_are_bounded_in_encoded_size() {
        let mut r = build(&facts(), &RecordConfig::default(), None, None);
        r.user_agent = "u".repeat(40_000);
        r.path = "p".repeat(30_000);
        r.captured_headers.insert("x".into(), "v".repeat(20_000));
        bound_record(&mut r, 16 * 1024);
        assert!(r.encoded_len() <= 16 * 1024, "{}", r.encoded_len());
        assert_eq!(r.client_address, "127.0.0.9");
        let mut small = build(&facts(), &RecordConfig::default(), None, None);
        let before = small.clone();
        bound_record(&mut small, 16 * 1024);
        assert_eq!(small, before);
    }
}
