//! `GET /api/v1/records`: stored access records, newest first, a page at a time.

use crate::store::query::StoredRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// The filters of a record query; every one optional, unknown parameters refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordsParams {
    /// Only records since: a duration ago (`15m`, `24h`) or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only records before: a duration ago or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Client address or CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Host (authority), with or without port; case-insensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Status code (`404`) or class (`4xx`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Request method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Principal name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// `allow` or `deny`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Records per page (default 100, at most `limits.max_query_records`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Continue after a previous page: its `next_cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One page of records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordsPage {
    /// The records, newest first.
    pub records: Vec<Record>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One stored record: flat, with the proto field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Record {
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
    /// Host/authority, lower-case.
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
    /// `none`, `jwt_authn`, `rbac`, `ext_authz`, `basic_auth`, `warden_deny_list`, `upstream`,
    /// or null.
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

impl From<StoredRecord> for Record {
    fn from(r: StoredRecord) -> Self {
        let StoredRecord {
            sequence,
            time_ms,
            time,
            request_id,
            client_address,
            client_port,
            x_forwarded_for,
            tls_sni,
            tls_version,
            authority,
            method,
            path,
            protocol,
            status,
            response_code_details,
            response_flags,
            route_name,
            upstream_cluster,
            upstream_host,
            duration_us,
            request_bytes,
            response_bytes,
            user_agent,
            principal,
            principal_source,
            claimed_user,
            principal_issuer,
            principal_audiences,
            principal_claims,
            cert_uri_san,
            cert_dns_san,
            cert_subject,
            cert_fingerprint,
            decision,
            mechanism,
            deny_kind,
            reason,
            policy,
            warden_decision_id,
            captured_headers,
            filter_node,
            filter_worker,
            filter_instance,
        } = r;
        Record {
            sequence,
            time_ms,
            time,
            request_id,
            client_address,
            client_port,
            x_forwarded_for,
            tls_sni,
            tls_version,
            authority,
            method,
            path,
            protocol,
            status,
            response_code_details,
            response_flags,
            route_name,
            upstream_cluster,
            upstream_host,
            duration_us,
            request_bytes,
            response_bytes,
            user_agent,
            principal,
            principal_source,
            claimed_user,
            principal_issuer,
            principal_audiences,
            principal_claims,
            cert_uri_san,
            cert_dns_san,
            cert_subject,
            cert_fingerprint,
            decision,
            mechanism,
            deny_kind,
            reason,
            policy,
            warden_decision_id,
            captured_headers,
            filter_node,
            filter_worker,
            filter_instance,
        }
    }
}
