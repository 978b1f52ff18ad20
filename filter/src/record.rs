//! One request's record: redaction of the path and query string, the bounds on each value, and
//! the protobuf encoding of `warden.v1.AccessRecord` written **straight into the pending
//! batch's bytes**, from values borrowed from Envoy's buffers.
//!
//! Building a prost `AccessRecord` costs an allocation per string field, then encoding copies
//! every field again, and the old shipper cloned each record once more per dispatch. Here a
//! record is encoded once, when the request completes, and its bytes are what goes on the wire
//! (retries included). A record over `max_record_bytes` (rare: bounds on each value keep typical
//! records far below it) takes the slow path: an owned `AccessRecord`, truncated field by field.

use std::borrow::Cow;

use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};
use warden_proto::pb::{AccessRecord, Principal};

use crate::config::{QueryStringMode, RecordConfig};
use crate::identity::DecisionView;

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

/// Whether a query parameter name is a well-known secret, compared case-insensitively with
/// `%5F` read as `_` (without allocating: this runs for every parameter of every request).
fn is_secret_param(name: &str) -> bool {
    let decoded = || {
        let mut bytes = name.bytes();
        std::iter::from_fn(move || {
            let b = bytes.next()?;
            if b == b'%' {
                let mut ahead = bytes.clone();
                if ahead.next() == Some(b'5') && matches!(ahead.next(), Some(b'F' | b'f')) {
                    bytes = ahead;
                    return Some(b'_');
                }
            }
            Some(b.to_ascii_lowercase())
        })
    };
    SECRET_PARAMS.iter().any(|p| p.bytes().eq(decoded()))
}

/// Header values may hold any byte (HTTP allows obs-text 0x80-0xFF) but record fields are
/// protobuf strings: invalid UTF-8 is replaced, valid text is borrowed as is.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// `s` cut to at most `max` bytes on a character boundary (borrowed, no copy).
pub fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    let keep = bounded(s, max).len();
    s.truncate(keep);
}

/// The path with scrub patterns and the query-string mode applied. Borrowed when nothing
/// changes (no query string, no pattern matched); otherwise written into `scratch`, which the
/// caller reuses across requests.
pub fn redact_path<'a>(path: &'a str, config: &RecordConfig, scratch: &'a mut String) -> &'a str {
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut scrubbed = scrub_path(p, &config.path_scrub_patterns);
    if config.redact_token_segments {
        let base = scrubbed.as_deref().unwrap_or(p);
        if let Some(t) = redact_token_segments(base, &config.token_segment_prefixes) {
            scrubbed = Some(t);
        }
    }
    if scrubbed.is_none() && query.is_none() {
        return path;
    }
    scratch.clear();
    scratch.push_str(scrubbed.as_deref().unwrap_or(p));
    if let Some(query) = query {
        push_query(scratch, query, config);
    }
    scratch
}

/// Appends `?` and the query string as the configuration records it (nothing in `drop` mode).
fn push_query(out: &mut String, query: &str, config: &RecordConfig) {
    if config.query_string == QueryStringMode::Drop {
        return;
    }
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let Some((name, value)) = pair.split_once('=') else {
            // A parameter without `=` is all value (`?eyJhbGciOi...`, `?s3cret`): kept only
            // where values are kept and it does not look like a credential.
            let keep = match config.query_string {
                QueryStringMode::Keep => !looks_like_token(pair, &config.token_segment_prefixes),
                _ => pair.is_empty() || config.kept_query_params.iter().any(|k| k == pair),
            };
            out.push_str(if keep { pair } else { REDACTED });
            continue;
        };
        let keep = !is_secret_param(name)
            && match config.query_string {
                QueryStringMode::Keep => true,
                _ => config.kept_query_params.iter().any(|k| k == name),
            };
        out.push_str(name);
        out.push('=');
        out.push_str(if keep { value } else { REDACTED });
    }
}

/// A captured header value with any query string in it (a `Referer`, an `Origin` with a URL)
/// recorded like the request's own; borrowed when it has none.
pub fn redact_header_value<'a>(value: Cow<'a, str>, config: &RecordConfig) -> Cow<'a, str> {
    let Some((base, query)) = value.split_once('?') else {
        return value;
    };
    let mut out = String::with_capacity(value.len());
    out.push_str(base);
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    push_query(&mut out, query, config);
    if fragment.is_some() {
        // A fragment can carry tokens too (OAuth implicit flow): never kept.
        out.push('#');
        out.push_str(REDACTED);
    }
    Cow::Owned(out)
}

/// Whether a path segment or valueless parameter looks like a credential: a JWT, 32 or more
/// hex digits, a long base64url run mixing letters and digits (UUIDs excepted), or a known
/// credential prefix.
pub fn looks_like_token(segment: &str, prefixes: &[String]) -> bool {
    if segment.len() < 16 {
        return prefixes
            .iter()
            .any(|p| segment.len() > p.len() && segment.starts_with(p.as_str()));
    }
    if prefixes.iter().any(|p| segment.starts_with(p.as_str())) {
        return true;
    }
    let b = segment.as_bytes();
    let base64url = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
    let jwt = segment.split('.').count() == 3
        && segment
            .split('.')
            .all(|part| part.len() >= 4 && part.bytes().all(|c| base64url(&c)));
    if jwt {
        return true;
    }
    if b.len() >= 32 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    let uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    b.len() >= 24
        && !uuid
        && b.iter().all(base64url)
        && b.iter().any(u8::is_ascii_digit)
        && b.iter().any(u8::is_ascii_lowercase)
        && b.iter().any(u8::is_ascii_uppercase)
}

/// The path with every segment that looks like a credential replaced by `REDACTED`; `None`
/// when there is none (the common case: no allocation).
fn redact_token_segments(path: &str, prefixes: &[String]) -> Option<String> {
    if !path.split('/').any(|s| looks_like_token(s, prefixes)) {
        return None;
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|s| {
            if looks_like_token(s, prefixes) {
                REDACTED
            } else {
                s
            }
        })
        .collect();
    Some(segments.join("/"))
}

/// The path with `{name}` segments of the first matching pattern replaced; `None` when no
/// pattern matches.
fn scrub_path(path: &str, patterns: &[String]) -> Option<String> {
    if patterns.is_empty() {
        return None;
    }
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
        return Some(out.join("/"));
    }
    None
}

/// A record's values, bounded and redacted, borrowed from Envoy's buffers.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordView<'a> {
    /// Request start, ms since the epoch.
    pub time_ms: i64,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// The client IP as Envoy resolved it.
    pub client_address: &'a str,
    /// The client port.
    pub client_port: u32,
    /// The raw `x-forwarded-for`, bounded.
    pub x_forwarded_for: &'a str,
    /// SNI.
    pub tls_sni: &'a str,
    /// TLS version (empty on plaintext).
    pub tls_version: &'a str,
    /// `:authority`.
    pub authority: &'a str,
    /// `:method`.
    pub method: &'a str,
    /// The redacted path.
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: &'a str,
    /// Response status (0: none).
    pub status: u32,
    /// `response.code_details`.
    pub response_code_details: &'a str,
    /// `response.flags` bitmask (written as short names).
    pub response_flags: u64,
    /// `xds.route_name`.
    pub route_name: &'a str,
    /// `xds.cluster_name`.
    pub upstream_cluster: &'a str,
    /// `upstream.address`.
    pub upstream_host: &'a str,
    /// Duration, µs.
    pub duration_us: u64,
    /// Request bytes.
    pub request_bytes: u64,
    /// Response bytes.
    pub response_bytes: u64,
    /// `user-agent`, bounded.
    pub user_agent: &'a str,
    /// Who the client was, when a mechanism established it.
    pub principal: Option<&'a Principal>,
    /// A user name the client claimed that no mechanism verified.
    pub claimed_user: &'a str,
    /// How the request was decided.
    pub decision: Option<DecisionView<'a>>,
    /// Captured headers (name, bounded value), secrets never among them.
    pub captured: &'a [(&'a str, Cow<'a, str>)],
}

/// Where encoded bytes go: a buffer, or a counter that measures a nested message's length.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn varint(&mut self, value: u64);
    /// The fields of an already-built prost message.
    fn message(&mut self, message: &impl Message);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn varint(&mut self, value: u64) {
        encode_varint(value, self);
    }
    fn message(&mut self, message: &impl Message) {
        message.encode_raw(self);
    }
}

/// Counts bytes instead of writing them.
struct Measure(usize);

impl Sink for Measure {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn varint(&mut self, value: u64) {
        self.0 += encoded_len_varint(value);
    }
    fn message(&mut self, message: &impl Message) {
        self.0 += message.encoded_len();
    }
}

const VARINT: u64 = 0;
const LEN: u64 = 2;

fn key(s: &mut impl Sink, tag: u64, wire_type: u64) {
    s.varint((tag << 3) | wire_type);
}

fn text_field(s: &mut impl Sink, tag: u64, value: &str) {
    if value.is_empty() {
        return;
    }
    key(s, tag, LEN);
    s.varint(value.len() as u64);
    s.put(value.as_bytes());
}

fn varint_field(s: &mut impl Sink, tag: u64, value: u64) {
    if value == 0 {
        return;
    }
    key(s, tag, VARINT);
    s.varint(value);
}

/// A message encoded field by field into any [`Sink`].
trait Encode {
    fn encode_to(&self, s: &mut impl Sink);

    fn len(&self) -> usize {
        let mut m = Measure(0);
        self.encode_to(&mut m);
        m.0
    }
}

fn message_field(s: &mut impl Sink, tag: u64, message: &impl Encode) {
    key(s, tag, LEN);
    s.varint(message.len() as u64);
    message.encode_to(s);
}

impl Encode for DecisionView<'_> {
    fn encode_to(&self, s: &mut impl Sink) {
        varint_field(s, 1, self.verdict as u64);
        varint_field(s, 2, self.mechanism as u64);
        varint_field(s, 3, self.deny_kind as u64);
        text_field(s, 4, self.reason);
        text_field(s, 5, self.policy);
        varint_field(s, 6, self.warden_decision_id);
    }
}

/// A `map<string, string>` entry.
struct Entry<'a>(&'a str, &'a str);

impl Encode for Entry<'_> {
    fn encode_to(&self, s: &mut impl Sink) {
        text_field(s, 1, self.0);
        text_field(s, 2, self.1);
    }
}

/// An already-built prost message (the principal).
struct Prost<'a, M>(&'a M);

impl<M: Message> Encode for Prost<'_, M> {
    fn encode_to(&self, s: &mut impl Sink) {
        s.message(self.0);
    }

    fn len(&self) -> usize {
        self.0.encoded_len()
    }
}

/// The record's fields in tag order, `sequence` included.
struct Numbered<'a, 'b>(&'b RecordView<'a>, u64);

impl Encode for Numbered<'_, '_> {
    fn encode_to(&self, s: &mut impl Sink) {
        let (r, sequence) = (self.0, self.1);
        varint_field(s, 1, sequence);
        varint_field(s, 2, r.time_ms as u64);
        text_field(s, 3, r.request_id);
        text_field(s, 4, r.client_address);
        varint_field(s, 5, u64::from(r.client_port));
        text_field(s, 6, r.x_forwarded_for);
        text_field(s, 7, r.tls_sni);
        text_field(s, 8, r.tls_version);
        text_field(s, 9, r.authority);
        text_field(s, 10, r.method);
        text_field(s, 11, r.path);
        text_field(s, 12, r.protocol);
        varint_field(s, 13, u64::from(r.status));
        text_field(s, 14, r.response_code_details);
        if r.response_flags != 0 {
            text_field(s, 15, &crate::response_flags::short_names(r.response_flags));
        }
        text_field(s, 16, r.route_name);
        text_field(s, 17, r.upstream_cluster);
        text_field(s, 18, r.upstream_host);
        varint_field(s, 19, r.duration_us);
        varint_field(s, 20, r.request_bytes);
        varint_field(s, 21, r.response_bytes);
        text_field(s, 22, r.user_agent);
        if let Some(p) = r.principal {
            message_field(s, 23, &Prost(p));
        }
        if let Some(d) = &r.decision {
            message_field(s, 24, d);
        }
        for (name, value) in r.captured {
            message_field(s, 25, &Entry(name, value));
        }
        text_field(s, 26, r.claimed_user);
    }
}

/// The `records` field number of `ExportRequest`.
pub(crate) const EXPORT_RECORDS_TAG: u64 = 2;

impl RecordView<'_> {
    /// The encoded size of the record with `sequence` (tests).
    #[cfg(test)]
    fn encoded_len(&self, sequence: u64) -> usize {
        Numbered(self, sequence).len()
    }

    /// Appends the record as one `ExportRequest.records` element (tag, length, message) to
    /// `out`; returns the bytes written. A record over `max_record_bytes` is truncated first
    /// (see the module docs).
    pub(crate) fn encode_into(
        &self,
        sequence: u64,
        max_record_bytes: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        let start = out.len();
        let numbered = Numbered(self, sequence);
        let len = numbered.len();
        if len <= max_record_bytes {
            key(out, EXPORT_RECORDS_TAG, LEN);
            out.varint(len as u64);
            numbered.encode_to(out);
        } else {
            let mut record = self.to_owned_record(sequence);
            bound_record(&mut record, max_record_bytes);
            key(out, EXPORT_RECORDS_TAG, LEN);
            out.varint(record.encoded_len() as u64);
            record.encode_raw(out);
        }
        out.len() - start
    }

    /// The same record as an owned prost message.
    pub(crate) fn to_owned_record(&self, sequence: u64) -> AccessRecord {
        let mut bytes = Vec::new();
        Numbered(self, sequence).encode_to(&mut bytes);
        AccessRecord::decode(bytes.as_slice()).unwrap_or_default()
    }
}

/// Truncates the longest strings of the record until its encoding fits in `max` bytes.
pub fn bound_record(record: &mut AccessRecord, max: usize) {
    // Each pass cuts the longest string by the excess (plus a little for shrinking length
    // prefixes), or by half: at least 8 bytes or to empty, so the loop ends. A record of a few
    // long values converges in a few passes; one of many short values (many captured headers)
    // needs a pass per value, which a fixed number of passes cut short (found by fuzzing).
    loop {
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
        &mut r.claimed_user,
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

    #[test]
    fn a_record_of_many_short_values_is_bounded_too() {
        // Found by fuzzing: 84 captured headers of ~20 bytes each outlasted a fixed number of
        // passes and stayed 3 bytes over.
        let mut r = AccessRecord {
            sequence: 1,
            time_ms: 1_700_000_000_000,
            path: "/p".repeat(40),
            ..AccessRecord::default()
        };
        for i in 0..100 {
            r.captured_headers
                .insert(format!("x-h{i}"), format!("value-{i}-").repeat(3));
        }
        assert!(r.encoded_len() > 3000);
        bound_record(&mut r, 1024);
        assert!(r.encoded_len() <= 1024, "{}", r.encoded_len());
    }
    use warden_proto::pb::{
        AuthDecision, DenyKind, ExportRequest, Mechanism, PrincipalSource, Verdict,
    };

    fn redact(path: &str, config: &RecordConfig) -> String {
        let mut scratch = String::new();
        redact_path(path, config, &mut scratch).to_string()
    }

    #[test]
    fn the_query_string_is_redacted_by_default_valueless_parameters_too() {
        // A parameter without `=` is all value: `?<token>` used to be stored verbatim.
        assert_eq!(
            redact("/a/b?x=1&token=abc&page=2&flag", &RecordConfig::default()),
            "/a/b?x=REDACTED&token=REDACTED&page=REDACTED&REDACTED"
        );
        assert_eq!(
            redact(
                "/cb?eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl",
                &RecordConfig::default()
            ),
            "/cb?REDACTED"
        );
        let kept = RecordConfig {
            kept_query_params: vec!["debug".into()],
            ..Default::default()
        };
        assert_eq!(redact("/p?debug&x", &kept), "/p?debug&REDACTED");
        let keep = RecordConfig {
            query_string: QueryStringMode::Keep,
            ..Default::default()
        };
        assert_eq!(
            redact("/p?debug&AbCdEfGh1234567890XyZwQ_-9", &keep),
            "/p?debug&REDACTED"
        );
    }

    #[test]
    fn path_segments_that_look_like_credentials_are_redacted() {
        let cfg = RecordConfig::default();
        for (path, recorded) in [
            (
                "/reset/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
                "/reset/REDACTED",
            ),
            ("/hook/sk_live_51Habc/run", "/hook/REDACTED/run"),
            (
                "/t/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl",
                "/t/REDACTED",
            ),
            ("/s/AbCdEfGh1234567890XyZwQ_-9/x", "/s/REDACTED/x"),
            (
                "/v/wdn_6-tTQ24LV8uo0Tg19VX9pZJlbHQyjnecvK49m67GCU4",
                "/v/REDACTED",
            ),
        ] {
            assert_eq!(redact(path, &cfg), recorded, "{path}");
        }
        for kept in [
            "/orders/123e4567-e89b-12d3-a456-426614174000",
            "/users/42/profile",
            "/static/app.3f2a9c.js",
            "/docs/getting-started-with-warden-today",
            "/ghp",
        ] {
            assert_eq!(redact(kept, &cfg), kept);
        }
        let off = RecordConfig {
            redact_token_segments: false,
            ..Default::default()
        };
        assert_eq!(
            redact("/reset/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", &off),
            "/reset/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
        );
    }

    #[test]
    fn a_url_in_a_captured_header_keeps_its_query_no_more_than_the_path() {
        let cfg = RecordConfig::default();
        let referer = |v: &str| redact_header_value(Cow::Borrowed(v), &cfg).into_owned();
        assert_eq!(
            referer("https://shop.example/reset?token=abc&step=2#access_token=xyz"),
            "https://shop.example/reset?token=REDACTED&step=REDACTED#REDACTED"
        );
        assert!(matches!(
            redact_header_value(Cow::Borrowed("https://shop.example/"), &cfg),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn kept_params_survive_but_secrets_never_do() {
        let cfg = RecordConfig {
            kept_query_params: vec!["page".into(), "token".into()],
            ..Default::default()
        };
        assert_eq!(
            redact("/p?page=2&token=t&TOKEN=u", &cfg),
            "/p?page=2&token=REDACTED&TOKEN=REDACTED"
        );
        let keep = RecordConfig {
            query_string: QueryStringMode::Keep,
            ..Default::default()
        };
        assert_eq!(
            redact("/p?q=x&api%5Fkey=k&sig=s", &keep),
            "/p?q=x&api%5Fkey=REDACTED&sig=REDACTED"
        );
        let drop = RecordConfig {
            query_string: QueryStringMode::Drop,
            ..Default::default()
        };
        assert_eq!(redact("/p?q=x", &drop), "/p");
        assert_eq!(redact("/p", &drop), "/p");
    }

    #[test]
    fn a_path_without_query_or_pattern_is_borrowed() {
        let mut scratch = String::new();
        let path = "/plain/path";
        let out = redact_path(path, &RecordConfig::default(), &mut scratch);
        assert!(std::ptr::eq(out, path));
    }

    #[test]
    fn path_scrub_patterns_replace_named_segments() {
        let cfg = RecordConfig {
            path_scrub_patterns: vec!["/reset/{token}".into(), "/users/{id}/**".into()],
            ..Default::default()
        };
        assert_eq!(redact("/reset/abcdef", &cfg), "/reset/{token}");
        assert_eq!(redact("/users/42/orders/7", &cfg), "/users/{id}/orders/7");
        assert_eq!(redact("/other/42", &cfg), "/other/42");
        assert_eq!(redact("/reset/a/b", &cfg), "/reset/a/b");
        assert_eq!(redact("/reset/abc?x=1", &cfg), "/reset/{token}?x=REDACTED");
    }

    #[test]
    fn secret_parameters_match_case_insensitively_and_through_percent_5f() {
        assert!(is_secret_param("TOKEN"));
        assert!(is_secret_param("api%5Fkey"));
        assert!(is_secret_param("Client%5fSecret"));
        assert!(!is_secret_param("api%5key"));
        assert!(!is_secret_param("page"));
        assert!(!is_secret_param("tokens"));
    }

    #[test]
    fn values_are_bounded_on_char_boundaries() {
        let s = "é".repeat(100);
        assert_eq!(bounded(&s, 17).len(), 16);
        assert_eq!(bounded("abc", 10), "abc");
        assert_eq!(text(b"a\xffb"), "a\u{fffd}b");
    }

    fn principal() -> Principal {
        Principal {
            source: PrincipalSource::Jwt as i32,
            name: "alice".into(),
            issuer: "https://idp".into(),
            audiences: vec!["a".into()],
            claims: [("email".to_string(), "a@x".to_string())].into(),
            ..Default::default()
        }
    }

    fn view<'a>(p: &'a Principal, captured: &'a [(&'a str, Cow<'a, str>)]) -> RecordView<'a> {
        RecordView {
            time_ms: 1_700_000_000_123,
            request_id: "rid",
            client_address: "127.0.0.9",
            client_port: 5555,
            x_forwarded_for: "1.2.3.4",
            tls_sni: "shop.test",
            tls_version: "TLSv1.3",
            authority: "shop.test",
            method: "GET",
            path: "/a?x=REDACTED",
            protocol: "HTTP/1.1",
            status: 503,
            response_code_details: "upstream_reset",
            response_flags: (1 << 5) | (1 << 15),
            route_name: "app",
            upstream_cluster: "upstream",
            upstream_host: "127.0.0.1:8080",
            duration_us: 1234,
            request_bytes: 80,
            response_bytes: 300,
            user_agent: "curl",
            principal: Some(p),
            claimed_user: "mallory",
            decision: Some(DecisionView {
                verdict: Verdict::Deny,
                mechanism: Mechanism::Rbac,
                deny_kind: DenyKind::Authorization,
                reason: "rbac_access_denied_matched_policy[p]",
                policy: "p",
                warden_decision_id: 0,
            }),
            captured,
        }
    }

    #[test]
    fn the_direct_encoding_is_the_protobuf_encoding() {
        let p = principal();
        let captured = [("x-tenant", Cow::Borrowed("acme"))];
        let v = view(&p, &captured);
        let mut out = Vec::new();
        let written = v.encode_into(7, 16 * 1024, &mut out);
        assert_eq!(written, out.len());
        let batch = ExportRequest::decode(out.as_slice()).unwrap();
        let r = &batch.records[0];
        let expected = AccessRecord {
            sequence: 7,
            time_ms: 1_700_000_000_123,
            request_id: "rid".into(),
            client_address: "127.0.0.9".into(),
            client_port: 5555,
            x_forwarded_for: "1.2.3.4".into(),
            tls_sni: "shop.test".into(),
            tls_version: "TLSv1.3".into(),
            authority: "shop.test".into(),
            method: "GET".into(),
            path: "/a?x=REDACTED".into(),
            protocol: "HTTP/1.1".into(),
            status: 503,
            response_code_details: "upstream_reset".into(),
            response_flags: "UF,URX".into(),
            route_name: "app".into(),
            upstream_cluster: "upstream".into(),
            upstream_host: "127.0.0.1:8080".into(),
            duration_us: 1234,
            request_bytes: 80,
            response_bytes: 300,
            user_agent: "curl".into(),
            principal: Some(p.clone()),
            claimed_user: "mallory".into(),
            decision: Some(AuthDecision {
                verdict: Verdict::Deny as i32,
                mechanism: Mechanism::Rbac as i32,
                deny_kind: DenyKind::Authorization as i32,
                reason: "rbac_access_denied_matched_policy[p]".into(),
                policy: "p".into(),
                warden_decision_id: 0,
            }),
            captured_headers: [("x-tenant".to_string(), "acme".to_string())].into(),
        };
        assert_eq!(r, &expected);
        assert_eq!(v.encoded_len(7), expected.encoded_len());
    }

    #[test]
    fn an_oversized_record_is_truncated_to_fit() {
        let p = principal();
        let long = "u".repeat(40_000);
        let path = "p".repeat(30_000);
        let captured = [("x", Cow::Owned("v".repeat(20_000)))];
        let mut v = view(&p, &captured);
        v.user_agent = &long;
        v.path = &path;
        let mut out = Vec::new();
        v.encode_into(1, 16 * 1024, &mut out);
        let r = &ExportRequest::decode(out.as_slice()).unwrap().records[0];
        assert!(r.encoded_len() <= 16 * 1024, "{}", r.encoded_len());
        assert_eq!(r.client_address, "127.0.0.9");
        assert_eq!(r.sequence, 1);
    }

    #[test]
    fn an_empty_view_encodes_only_its_sequence() {
        let mut out = Vec::new();
        RecordView::default().encode_into(3, 1024, &mut out);
        let r = &ExportRequest::decode(out.as_slice()).unwrap().records[0];
        assert_eq!(
            r,
            &AccessRecord {
                sequence: 3,
                ..Default::default()
            }
        );
    }

    mod properties {
        //! Redaction invariants for any path and query string.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn no_query_value_survives_redact_mode_and_the_path_keeps_its_shape(
                segments in proptest::collection::vec("[a-z0-9._~-]{1,12}", 0..6),
                params in proptest::collection::vec(("[a-z_]{1,8}", proptest::option::of("[A-Za-z0-9%+._~-]{6,24}")), 0..6),
            ) {
                let base = format!("/{}", segments.join("/"));
                let query: Vec<String> = params
                    .iter()
                    .map(|(n, v)| match v {
                        Some(v) => format!("{n}={v}"),
                        None => format!("{n}XYZsecret"),
                    })
                    .collect();
                let path = if query.is_empty() { base.clone() } else { format!("{base}?{}", query.join("&")) };
                let out = redact(&path, &RecordConfig::default());
                let (out_base, out_query) = out.split_once('?').map_or((out.as_str(), None), |(b, q)| (b, Some(q)));
                // Segments are only ever replaced whole (never cut or joined).
                prop_assert_eq!(out_base.split('/').count(), base.split('/').count());
                if let Some(q) = out_query {
                    for pair in q.split('&') {
                        let value = pair.split_once('=').map_or(pair, |(_, v)| v);
                        prop_assert_eq!(value, REDACTED, "{} from {}", pair, path);
                    }
                }
                for (_, v) in &params {
                    if let Some(v) = v {
                        prop_assert!(!out.contains(v.as_str()) || base.contains(v.as_str()), "{} leaked from {}", v, path);
                    }
                }
            }
        }
    }
}
