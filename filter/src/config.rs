//! The filter's JSON plugin configuration: serde types with defaults, and validation that names
//! the offending field.
//!
//! The root context parses this once in `on_configure`; every later stage works with a validated
//! [`Config`], so no code downstream re-checks ranges.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A configuration error, naming the field (dotted path) and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The JSON did not parse or had an unknown or mistyped field.
    #[error("{0}")]
    Syntax(String),
    /// A field parsed but its value is out of range.
    #[error("{field}: {reason}")]
    FieldInvalid {
        /// Dotted path of the field, e.g. `batch.max_records`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::FieldInvalid {
        field,
        reason: reason.into(),
    }
}

/// The whole plugin configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where batches and the deny-list stream go.
    pub collector: CollectorConfig,
    /// Batching, buffering and retry.
    pub batch: BatchConfig,
    /// What goes into a record and how it is bounded.
    pub record: RecordConfig,
    /// Inline blocking.
    pub deny_list: DenyListConfig,
    /// Principal extraction.
    pub identity: IdentityConfig,
}

/// The collector's Envoy cluster and call options.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Envoy cluster name of the collector (must have HTTP/2 enabled).
    pub cluster: String,
    /// gRPC `:authority`; empty means the cluster name (Envoy's default for gRPC calls).
    pub authority: String,
    /// Timeout of one `Export` call.
    pub timeout_ms: u64,
    /// When set, sent as `authorization: Bearer <token>` on every call. Prefer `token_env`:
    /// a token here is written in Envoy's configuration.
    pub token: String,
    /// The name of an environment variable of the Wasm VM holding the token (Envoy's
    /// `vm_config.environment_variables`, fed from a Secret), so the token is never written in
    /// a plain configuration.
    pub token_env: String,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            cluster: "warden_collector".into(),
            authority: String::new(),
            timeout_ms: 5000,
            token: String::new(),
            token_env: String::new(),
        }
    }
}

/// Batching and the bounded pending buffer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is sealed and sent as soon as it holds this many records.
    pub max_records: usize,
    /// A batch is sealed and sent as soon as its encoding reaches this many bytes.
    pub max_batch_bytes: usize,
    /// A non-empty batch is sent at least this often.
    pub flush_interval_ms: u64,
    /// Pending buffer bound in records; beyond it the oldest are folded into summaries.
    pub max_pending_records: usize,
    /// Pending buffer bound in encoded bytes; beyond it the oldest are folded into summaries.
    pub max_pending_bytes: usize,
    /// Summaries (client address, host, status class, decision, minute) held for records the
    /// buffer could not keep; what does not fit even there is only counted. 0: none are kept.
    pub max_summaries: usize,
    /// Export calls outstanding at once.
    pub max_in_flight: usize,
    /// First retry delay after a failed batch.
    pub retry_initial_ms: u64,
    /// Retry delay cap.
    pub retry_max_ms: u64,
    /// Statuses whose records are shipped at once instead of waiting for the flush interval
    /// (records denied by an auth mechanism always are), so that rules see brute forces fast.
    pub urgent_statuses: Vec<u32>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_records: 1000,
            max_batch_bytes: 1024 * 1024,
            flush_interval_ms: 1000,
            max_pending_records: 10_000,
            max_pending_bytes: 8 * 1024 * 1024,
            max_summaries: 4096,
            max_in_flight: 4,
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
            urgent_statuses: vec![401, 403],
        }
    }
}

/// How the query string is recorded.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueryStringMode {
    /// The query string is removed.
    Drop,
    /// Parameter names are kept; values are replaced except for `kept_query_params`.
    #[default]
    Redact,
    /// Kept as is, except well-known secret parameters, whose values are always replaced.
    Keep,
}

/// Record content and bounds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Bound on each recorded header value (XFF, user agent, captured headers).
    pub max_header_bytes: usize,
    /// Bound on one encoded record; the longest strings are truncated until it fits.
    pub max_record_bytes: usize,
    /// Query string handling.
    pub query_string: QueryStringMode,
    /// Query parameters whose values survive `redact` mode (secret ones never do).
    pub kept_query_params: Vec<String>,
    /// Request headers copied into `captured_headers` (lower-case names; secrets never are).
    pub captured_headers: Vec<String>,
    /// Path segment patterns, e.g. `/users/{id}/reset/*`: segments written `{name}` are replaced
    /// by `{name}` in the recorded path, `*` matches any one segment, a final `**` any rest.
    pub path_scrub_patterns: Vec<String>,
    /// Path segments that look like credentials are replaced by `REDACTED`: a JWT, 32 or more
    /// hex digits, 24 or more base64url characters mixing letters and digits (a UUID is kept),
    /// or a segment starting with one of `token_segment_prefixes`.
    pub redact_token_segments: bool,
    /// Prefixes of well-known credentials (API keys, personal access tokens) whose path
    /// segments are always redacted when `redact_token_segments` is on.
    pub token_segment_prefixes: Vec<String>,
}

/// Prefixes of credentials that providers make recognisable on purpose.
pub const DEFAULT_TOKEN_PREFIXES: &[&str] = &[
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "pk_live_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "AKIA",
    "ASIA",
    "AIza",
    "eyJ",
    "wdn_",
];

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 1024,
            max_record_bytes: 16 * 1024,
            query_string: QueryStringMode::Redact,
            kept_query_params: Vec::new(),
            captured_headers: Vec::new(),
            path_scrub_patterns: Vec::new(),
            redact_token_segments: true,
            token_segment_prefixes: DEFAULT_TOKEN_PREFIXES
                .iter()
                .map(|p| p.to_string())
                .collect(),
        }
    }
}

/// Inline blocking.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DenyListConfig {
    /// Subscribe to the deny list and enforce it.
    pub enabled: bool,
    /// Status of a DENY local reply.
    pub deny_status: u32,
    /// Body of a DENY local reply.
    pub deny_body: String,
    /// Headers of DENY and THROTTLE local replies.
    pub deny_headers: BTreeMap<String, String>,
    /// Status of a THROTTLE local reply.
    pub throttle_status: u32,
    /// Body of a THROTTLE local reply.
    pub throttle_body: String,
    /// `Retry-After` for throttle entries that never expire.
    pub default_retry_after_s: u64,
    /// First reconnect delay of the Subscribe stream.
    pub reconnect_initial_ms: u64,
    /// Reconnect delay cap.
    pub reconnect_max_ms: u64,
}

impl Default for DenyListConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            deny_status: 403,
            deny_body: "Forbidden by Warden\n".into(),
            deny_headers: BTreeMap::from([("content-type".to_string(), "text/plain".to_string())]),
            throttle_status: 429,
            throttle_body: "Too Many Requests\n".into(),
            default_retry_after_s: 60,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 5000,
        }
    }
}

/// Where the principal comes from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Dynamic metadata namespace jwt_authn writes its payload to.
    pub jwt_metadata_namespace: String,
    /// jwt_authn's `payload_in_metadata` key.
    pub jwt_payload_key: String,
    /// Extra claims copied into `principal.claims`.
    pub jwt_extra_claims: Vec<String>,
    /// Header carrying an API key; recorded only as a keyed fingerprint, and only as a claim
    /// (`claimed_user` `api-key:FINGERPRINT`) unless Envoy verified the key.
    pub api_key_header: String,
    /// HMAC key of the API-key fingerprint; required when `api_key_header` is set.
    pub api_key_secret: String,
    /// Request header in which ext_authz puts the authenticated user.
    pub ext_authz_user_header: String,
    /// Request header in which Envoy's basic_auth filter puts the user whose password it
    /// checked (its `forward_username_header`). Without it, a basic-auth user name is only a
    /// claim: recorded as `claimed_user`, never as the principal.
    pub basic_auth_user_header: String,
    /// Request header in which Envoy's api_key_auth filter puts the client whose key it checked
    /// (its `forwarding.header`): that client becomes the principal (source `api_key`).
    pub api_key_client_header: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            jwt_metadata_namespace: "envoy.filters.http.jwt_authn".into(),
            jwt_payload_key: "jwt_payload".into(),
            jwt_extra_claims: Vec::new(),
            api_key_header: String::new(),
            api_key_secret: String::new(),
            ext_authz_user_header: String::new(),
            basic_auth_user_header: String::new(),
            api_key_client_header: String::new(),
        }
    }
}

fn range<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(field, format!("must be between {min} and {max}")));
    }
    Ok(())
}

fn header_names(field: &'static str, names: &mut [String]) -> Result<(), ConfigError> {
    for name in names.iter_mut() {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(invalid(field, format!("{name:?} is not a header name")));
        }
        *name = name.to_ascii_lowercase();
    }
    Ok(())
}

impl Config {
    /// Parses and validates the plugin configuration. Empty input means all defaults.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let mut config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and normalises header names to lower case.
    fn validate(&mut self) -> Result<(), ConfigError> {
        let c = &self.collector;
        if c.cluster.is_empty() {
            return Err(invalid("collector.cluster", "must not be empty"));
        }
        range("collector.timeout_ms", c.timeout_ms, 1, 600_000)?;
        if !c.token.is_empty() && !c.token_env.is_empty() {
            return Err(invalid(
                "collector.token_env",
                "set collector.token or collector.token_env, not both",
            ));
        }
        if !c.token_env.is_empty()
            && !c
                .token_env
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(invalid(
                "collector.token_env",
                format!("{:?} is not an environment variable name", c.token_env),
            ));
        }
        let b = &self.batch;
        range("batch.max_records", b.max_records, 1, 10_000)?;
        range(
            "batch.max_batch_bytes",
            b.max_batch_bytes,
            1024,
            16 * 1024 * 1024,
        )?;
        range("batch.flush_interval_ms", b.flush_interval_ms, 10, 600_000)?;
        range(
            "batch.max_pending_records",
            b.max_pending_records,
            1,
            10_000_000,
        )?;
        range(
            "batch.max_pending_bytes",
            b.max_pending_bytes,
            1024,
            1 << 30,
        )?;
        range("batch.max_summaries", b.max_summaries, 0, 100_000)?;
        range("batch.max_in_flight", b.max_in_flight, 1, 64)?;
        range("batch.retry_initial_ms", b.retry_initial_ms, 1, 600_000)?;
        range(
            "batch.retry_max_ms",
            b.retry_max_ms,
            b.retry_initial_ms,
            3_600_000,
        )?;
        for status in &b.urgent_statuses {
            if !(100..=599).contains(status) {
                return Err(invalid(
                    "batch.urgent_statuses",
                    format!("{status} is not an HTTP status"),
                ));
            }
        }
        let r = &mut self.record;
        // The record contract's sizes: a collector accepts records up to these, never less.
        range(
            "record.max_header_bytes",
            r.max_header_bytes,
            16,
            warden_proto::contract::MAX_FIELD_BYTES,
        )?;
        range(
            "record.max_record_bytes",
            r.max_record_bytes,
            1024,
            warden_proto::contract::MAX_RECORD_BYTES,
        )?;
        if r.max_record_bytes > self.batch.max_batch_bytes {
            return Err(invalid(
                "record.max_record_bytes",
                "must not exceed batch.max_batch_bytes",
            ));
        }
        if self.batch.max_batch_bytes > self.batch.max_pending_bytes {
            return Err(invalid(
                "batch.max_batch_bytes",
                "must not exceed batch.max_pending_bytes",
            ));
        }
        header_names("record.captured_headers", &mut r.captured_headers)?;
        if let Some(p) = r.token_segment_prefixes.iter().find(|p| p.len() < 3) {
            return Err(invalid(
                "record.token_segment_prefixes",
                format!("{p:?} is too short to mark a credential (3 characters at least)"),
            ));
        }
        for p in &r.path_scrub_patterns {
            if !p.starts_with('/') {
                return Err(invalid(
                    "record.path_scrub_patterns",
                    format!("{p:?} must start with '/'"),
                ));
            }
        }
        let d = &self.deny_list;
        range("deny_list.deny_status", d.deny_status, 200, 599)?;
        range("deny_list.throttle_status", d.throttle_status, 200, 599)?;
        range(
            "deny_list.default_retry_after_s",
            d.default_retry_after_s,
            1,
            86_400,
        )?;
        range(
            "deny_list.reconnect_initial_ms",
            d.reconnect_initial_ms,
            1,
            600_000,
        )?;
        range(
            "deny_list.reconnect_max_ms",
            d.reconnect_max_ms,
            d.reconnect_initial_ms,
            3_600_000,
        )?;
        let mut names: Vec<String> = d.deny_headers.keys().cloned().collect();
        header_names("deny_list.deny_headers", &mut names)?;
        if names.iter().any(|n| n == "retry-after") {
            return Err(invalid(
                "deny_list.deny_headers",
                "\"retry-after\" is set per reply from the ban's expiry (default_retry_after_s when it has none)",
            ));
        }
        for (name, value) in &d.deny_headers {
            // A CR or LF would split the reply's headers (header injection); other controls
            // are not valid in a field value either (RFC 9110, 5.5).
            if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(invalid(
                    "deny_list.deny_headers",
                    format!(
                        "the value of {name:?} contains a control character (CR, LF, NUL, ...)"
                    ),
                ));
            }
        }
        let i = &mut self.identity;
        if !i.api_key_header.is_empty() {
            let mut h = [std::mem::take(&mut i.api_key_header)];
            header_names("identity.api_key_header", &mut h)?;
            let [h] = h;
            i.api_key_header = h;
            if i.api_key_secret.len() < 16 {
                return Err(invalid(
                    "identity.api_key_secret",
                    "must be at least 16 bytes when identity.api_key_header is set",
                ));
            }
        }
        for (field, header) in [
            (
                "identity.ext_authz_user_header",
                &mut i.ext_authz_user_header,
            ),
            (
                "identity.basic_auth_user_header",
                &mut i.basic_auth_user_header,
            ),
            (
                "identity.api_key_client_header",
                &mut i.api_key_client_header,
            ),
        ] {
            if !header.is_empty() {
                let mut h = [std::mem::take(header)];
                header_names(field, &mut h)?;
                let [h] = h;
                *header = h;
            }
        }
        Ok(())
    }

    /// The gRPC authority to send: the configured one, else the cluster name.
    pub fn authority(&self) -> &str {
        if self.collector.authority.is_empty() {
            &self.collector.cluster
        } else {
            &self.collector.authority
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_empty_object_give_defaults() {
        assert_eq!(Config::parse(b"").unwrap(), Config::default());
        assert_eq!(Config::parse(b"  {} ").unwrap(), Config::default());
        let c = Config::default();
        assert_eq!(c.batch.max_records, 1000);
        assert_eq!(c.deny_list.deny_status, 403);
        assert_eq!(c.authority(), "warden_collector");
    }

    #[test]
    fn full_configuration_parses() {
        let json = r#"{
          "collector": {"cluster": "c", "authority": "a", "timeout_ms": 100, "token": "t"},
          "batch": {"max_records": 5, "max_batch_bytes": 4096, "flush_interval_ms": 50,
                    "max_pending_records": 10,
                    "max_pending_bytes": 100000, "max_in_flight": 1, "retry_initial_ms": 10,
                    "retry_max_ms": 20},
          "record": {"max_header_bytes": 64, "max_record_bytes": 2048, "query_string": "keep",
                     "kept_query_params": ["page"], "captured_headers": ["X-Tenant"],
                     "path_scrub_patterns": ["/u/{id}"]},
          "deny_list": {"enabled": false, "deny_status": 451, "deny_body": "no",
                        "deny_headers": {"x-a": "b"}, "throttle_status": 503,
                        "throttle_body": "slow", "default_retry_after_s": 5,
                        "reconnect_initial_ms": 10, "reconnect_max_ms": 10},
          "identity": {"jwt_metadata_namespace": "n", "jwt_payload_key": "k",
                       "jwt_extra_claims": ["email"], "api_key_header": "X-Api-Key",
                       "api_key_secret": "0123456789abcdef", "ext_authz_user_header": "x-user"}
        }"#;
        let c = Config::parse(json.as_bytes()).unwrap();
        assert_eq!(c.authority(), "a");
        assert_eq!(c.record.query_string, QueryStringMode::Keep);
        assert_eq!(c.record.captured_headers, vec!["x-tenant"]);
        assert_eq!(c.identity.api_key_header, "x-api-key");
        assert!(!c.deny_list.enabled);
    }

    #[test]
    fn out_of_range_names_the_field() {
        let e = Config::parse(br#"{"batch": {"max_records": 0}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "batch.max_records: must be between 1 and 10000"
        );
        let e = Config::parse(br#"{"deny_list": {"deny_status": 99}}"#).unwrap_err();
        assert!(e.to_string().starts_with("deny_list.deny_status"));
    }

    #[test]
    fn record_sizes_stay_within_the_record_contract() {
        let e = Config::parse(br#"{"record": {"max_header_bytes": 8193}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "record.max_header_bytes: must be between 16 and 8192"
        );
        let e = Config::parse(br#"{"record": {"max_record_bytes": 16385}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "record.max_record_bytes: must be between 1024 and 16384"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = Config::parse(br#"{"batch": {"max_recrods": 3}}"#).unwrap_err();
        assert!(e.to_string().contains("max_recrods"), "{e}");
        assert!(Config::parse(br#"{"nope": 1}"#).is_err());
        assert!(Config::parse(br#"{"record": {"query_string": "maybe"}}"#).is_err());
    }

    #[test]
    fn api_key_header_needs_a_secret() {
        let e = Config::parse(br#"{"identity": {"api_key_header": "x-api-key"}}"#).unwrap_err();
        assert!(e.to_string().starts_with("identity.api_key_secret"));
    }

    #[test]
    fn deny_headers_refuse_control_characters_and_retry_after() {
        for (json, says) in [
            (
                r#"{"deny_list": {"deny_headers": {"x-a": "b\r\nset-cookie: x=1"}}}"#,
                "control character",
            ),
            (
                r#"{"deny_list": {"deny_headers": {"x-a": "b\u0000"}}}"#,
                "control character",
            ),
            (
                r#"{"deny_list": {"deny_headers": {"Retry-After": "5"}}}"#,
                "retry-after",
            ),
        ] {
            let e = Config::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(
                e.contains("deny_list.deny_headers") && e.contains(says),
                "{json}: {e}"
            );
        }
        let ok = Config::parse(br#"{"deny_list": {"deny_headers": {"x-a": "b\tc d"}}}"#).unwrap();
        assert_eq!(ok.deny_list.deny_headers["x-a"], "b\tc d");
    }
}
