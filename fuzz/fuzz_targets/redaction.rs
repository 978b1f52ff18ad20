//! Fuzz target: the filter's redaction of the recorded path, query string and captured header
//! values (`warden_filter::record`), for any text and any record configuration. Never a panic,
//! and the invariants hold:
//! - the path keeps its shape (as many `/` segments), and a segment that looks like a credential
//!   never survives verbatim when `redact_token_segments` is on;
//! - every query parameter keeps its name and place, its value is kept or `REDACTED`, and the
//!   value of a well-known secret parameter, or of any parameter in `redact` mode that is not in
//!   `kept_query_params`, is always `REDACTED`; `drop` mode records no query string;
//! - a header value's fragment never survives;
//! - the output is bounded by the input plus one `REDACTED` per segment and parameter;
//! - `bounded` and `truncate_utf8` cut to at most `max` bytes on a character boundary;
//! - `bound_record` fits any record in `max` bytes, unless what it may not cut (numbers, map
//!   keys, the framing of each value) alone takes more.

#![no_main]

use std::borrow::Cow;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use warden_filter::config::{DEFAULT_TOKEN_PREFIXES, QueryStringMode, RecordConfig};
use warden_filter::record::{
    REDACTED, bound_record, bounded, looks_like_token, redact_header_value, redact_path, text,
    truncate_utf8,
};
use warden_proto::pb::AccessRecord;

/// Query parameters that must never be recorded with their value (a copy of the filter's list,
/// compared case-insensitively with `%5F` read as `_`). The filter may redact more; never less.
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

fn is_secret_param(name: &str) -> bool {
    let decoded = name.to_ascii_lowercase().replace("%5f", "_");
    SECRET_PARAMS.contains(&decoded.as_str())
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    path: &'a str,
    header_value: &'a str,
    raw: &'a [u8],
    mode: u8,
    kept: Vec<&'a str>,
    patterns: Vec<&'a str>,
    redact_token_segments: bool,
    default_prefixes: bool,
    prefixes: Vec<&'a str>,
    max: u16,
    /// Values of a record cut by `bound_record`: the path, the user agent, then captured headers.
    values: Vec<&'a str>,
}

impl Input<'_> {
    fn config(&self) -> RecordConfig {
        RecordConfig {
            query_string: match self.mode % 3 {
                0 => QueryStringMode::Drop,
                1 => QueryStringMode::Redact,
                _ => QueryStringMode::Keep,
            },
            kept_query_params: self.kept.iter().map(|s| s.to_string()).collect(),
            // A pattern is a path: with a `?` in it the recorded path could not be told from its
            // query string, so the harness leaves `?` out.
            path_scrub_patterns: self
                .patterns
                .iter()
                .map(|p| format!("/{}", p.replace('?', "")))
                .collect(),
            redact_token_segments: self.redact_token_segments,
            token_segment_prefixes: if self.default_prefixes {
                DEFAULT_TOKEN_PREFIXES
                    .iter()
                    .map(|p| p.to_string())
                    .collect()
            } else {
                self.prefixes.iter().map(|s| s.to_string()).collect()
            },
            ..RecordConfig::default()
        }
    }
}

/// Checks the recorded query string `out` against the original `query`.
fn check_query(query: &str, out: &str, config: &RecordConfig) {
    let pairs: Vec<&str> = query.split('&').collect();
    let recorded: Vec<&str> = out.split('&').collect();
    assert_eq!(
        recorded.len(),
        pairs.len(),
        "parameters of {query:?}: {out:?}"
    );
    for (pair, got) in pairs.iter().zip(&recorded) {
        match pair.split_once('=') {
            Some((name, value)) => {
                let got_value = got
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='));
                assert!(
                    got_value.is_some(),
                    "the name of {pair:?} was not kept: {got:?}"
                );
                let got_value = got_value.unwrap_or_default();
                assert!(
                    got_value == value || got_value == REDACTED,
                    "{pair:?} recorded as {got:?}"
                );
                let must_redact = is_secret_param(name)
                    || (config.query_string == QueryStringMode::Redact
                        && !config.kept_query_params.iter().any(|k| k == name));
                if must_redact {
                    assert_eq!(got_value, REDACTED, "{pair:?} leaked in {query:?}");
                }
            }
            None => {
                let keep = match config.query_string {
                    QueryStringMode::Keep => {
                        !looks_like_token(pair, &config.token_segment_prefixes)
                    }
                    _ => pair.is_empty() || config.kept_query_params.iter().any(|k| k == pair),
                };
                let want = if keep { *pair } else { REDACTED };
                assert_eq!(*got, want, "valueless {pair:?} in {query:?}");
            }
        }
    }
}

fn check_path(path: &str, config: &RecordConfig) {
    let mut scratch = String::new();
    let out = redact_path(path, config, &mut scratch).to_string();
    let (base, query) = match path.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (path, None),
    };
    let (out_base, out_query) = match out.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (out.as_str(), None),
    };
    let segments: Vec<&str> = base.split('/').collect();
    let recorded: Vec<&str> = out_base.split('/').collect();
    assert_eq!(
        recorded.len(),
        segments.len(),
        "segments of {path:?}: {out:?}"
    );
    let longest_pattern_segment = config
        .path_scrub_patterns
        .iter()
        .flat_map(|p| p.split('/'))
        .map(str::len)
        .max()
        .unwrap_or(0);
    for (s, got) in segments.iter().zip(&recorded) {
        let scrubbed = got.starts_with('{') && got.ends_with('}');
        assert!(
            got == s || *got == REDACTED || scrubbed,
            "segment {s:?} recorded as {got:?}"
        );
        if config.redact_token_segments
            && *s != REDACTED
            && looks_like_token(s, &config.token_segment_prefixes)
        {
            assert_ne!(got, s, "credential segment survived in {path:?}");
        }
        if config.path_scrub_patterns.is_empty() && !config.redact_token_segments {
            assert_eq!(got, s, "nothing may change segment {s:?}");
        }
    }
    match (query, config.query_string) {
        (Some(_), QueryStringMode::Drop) | (None, _) => {
            assert_eq!(out_query, None, "no query string may be recorded: {out:?}")
        }
        (Some(q), _) => {
            assert!(
                out_query.is_some(),
                "query string of {path:?} lost: {out:?}"
            );
            check_query(q, out_query.unwrap_or_default(), config);
        }
    }
    let pairs = query.map_or(0, |q| q.split('&').count());
    let bound = path.len()
        + segments.len() * REDACTED.len().max(longest_pattern_segment)
        + pairs * REDACTED.len();
    assert!(
        out.len() <= bound,
        "{} bytes from {}",
        out.len(),
        path.len()
    );
}

fn check_header_value(value: &str, config: &RecordConfig) {
    let out = redact_header_value(Cow::Borrowed(value), config);
    let Some((base, rest)) = value.split_once('?') else {
        assert!(
            matches!(out, Cow::Borrowed(v) if v == value),
            "{value:?} changed"
        );
        return;
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let tail = out.strip_prefix(base);
    assert!(
        tail.is_some(),
        "the part of {value:?} before '?' was not kept: {out:?}"
    );
    let mut tail = tail.unwrap_or_default();
    if fragment.is_some() {
        let t = tail.strip_suffix("#REDACTED");
        assert!(t.is_some(), "the fragment of {value:?} survived: {out:?}");
        tail = t.unwrap_or_default();
    }
    if config.query_string == QueryStringMode::Drop {
        assert_eq!(
            tail, "",
            "the query string of {value:?} was recorded: {out:?}"
        );
    } else {
        let recorded = tail.strip_prefix('?');
        assert!(
            recorded.is_some(),
            "the query string of {value:?} was lost: {out:?}"
        );
        check_query(query, recorded.unwrap_or_default(), config);
    }
}

fn check_bounds(s: &str, max: usize) {
    let b = bounded(s, max);
    assert!(s.starts_with(b) && b.len() <= max, "bounded({s:?}, {max})");
    if s.len() > max {
        // Cut on the last character boundary at or below `max`: at most 3 bytes short of it.
        assert!(
            b.len() + 3 >= max,
            "bounded({s:?}, {max}) cut too much: {b:?}"
        );
    } else {
        assert_eq!(b, s);
    }
    let mut t = s.to_string();
    truncate_utf8(&mut t, max);
    assert_eq!(t, b, "truncate_utf8 and bounded disagree");
}

/// `bound_record` cuts a record with `values` to `max` bytes, or to what it cannot cut.
fn check_bound_record(values: &[&str], max: usize) {
    let mut r = AccessRecord {
        sequence: 1,
        time_ms: 1_700_000_000_000,
        status: 200,
        ..AccessRecord::default()
    };
    let mut values = values.iter().map(|v| v.to_string());
    r.path = values.next().unwrap_or_default();
    r.user_agent = values.next().unwrap_or_default();
    r.captured_headers = values
        .enumerate()
        .map(|(i, v)| (format!("x-{i}"), v))
        .collect();
    let mut floor = r.clone();
    floor.path.clear();
    floor.user_agent.clear();
    floor.captured_headers.values_mut().for_each(String::clear);
    let floor = floor.encoded_len();
    let before = r.encoded_len();
    bound_record(&mut r, max);
    assert!(
        r.encoded_len() <= max.max(floor),
        "bound_record({before} bytes, {} values, max {max}) left {} bytes",
        r.captured_headers.len() + 2,
        r.encoded_len()
    );
}

fuzz_target!(|input: Input<'_>| {
    let config = input.config();
    check_path(input.path, &config);
    check_header_value(input.header_value, &config);
    let raw = text(input.raw);
    if let Ok(s) = std::str::from_utf8(input.raw) {
        assert_eq!(raw, s);
    }
    check_path(&raw, &config);
    check_bounds(input.path, usize::from(input.max % 64));
    check_bounds(&raw, usize::from(input.max));
    // The filter's smallest record bound is 1024 bytes.
    check_bound_record(&input.values, 1024 + usize::from(input.max) % 1024);
});
