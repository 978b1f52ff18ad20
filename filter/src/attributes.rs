//! The stream attributes a record needs (client address, status, flags, duration, route,
//! upstream, TLS, dynamic metadata), read from Envoy in **one** host call.
//!
//! Each `proxy_get_property` call costs about 11,000 instructions in Envoy 1.40, nearly all of
//! it fixed (see `host.rs`), so reading a dozen attributes one by one cost more than proxying
//! the request. Envoy evaluates CEL expressions for Wasm filters (the `expr_create` and
//! `expr_evaluate` foreign functions): the filter compiles one expression at configuration time
//! that lists every attribute it needs, and evaluates it once per request, about 16,000
//! instructions plus 2,400 per attribute.
//!
//! A CEL list fails as a whole when one element is absent (`xds.cluster_name` on a direct
//! response, `upstream.address` on a local reply), and guarding every element with `has()`
//! doubles its cost. So the expression branches once on `has(upstream.address)`: a proxied
//! request, the common case, reads every attribute unguarded; a local reply reads the guarded
//! list. If even that fails (a reset before any response), a fully guarded expression is
//! evaluated, and an Envoy without CEL support gets one property read per attribute. All three
//! produce the same list, decoded here into `Attributes`.

use crate::host::{Host, Pairs, Status, property_path, serialize_pairs};

/// One attribute of the record, in the order of the evaluated list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attr {
    /// `source.address` (`ip:port`).
    SourceAddress,
    /// `request.duration`.
    Duration,
    /// `request.protocol`.
    Protocol,
    /// `response.code`.
    ResponseCode,
    /// `response.code_details`.
    CodeDetails,
    /// `response.flags`.
    ResponseFlags,
    /// `request.total_size`.
    RequestSize,
    /// `response.total_size`.
    ResponseSize,
    /// `xds.route_name`.
    RouteName,
    /// `xds.cluster_name`.
    ClusterName,
    /// `upstream.address`.
    UpstreamAddress,
    /// TLS version, SNI and, with a peer certificate, its SANs, subject and digest (a nested
    /// list, empty on plaintext).
    Tls,
    /// The dynamic metadata (`envoy.config.core.v3.Metadata`, serialised), for jwt_authn's claims.
    Metadata,
}

/// How an attribute is read.
struct Spec {
    /// The CEL expression (also the property path, dots for NULs, where `property` is set).
    cel: &'static str,
    /// CEL literal of the value used when the attribute is absent (same type).
    default: &'static str,
    /// Whether a local reply (no upstream) may lack it, so that branch guards it.
    guard_locally: bool,
}

impl Attr {
    fn spec(self) -> Spec {
        let s = |cel, default, guard_locally| Spec {
            cel,
            default,
            guard_locally,
        };
        match self {
            Attr::SourceAddress => s("source.address", "''", false),
            Attr::Duration => s("request.duration", "duration('0s')", true),
            Attr::Protocol => s("request.protocol", "''", true),
            Attr::ResponseCode => s("response.code", "0", true),
            Attr::CodeDetails => s("response.code_details", "''", true),
            Attr::ResponseFlags => s("response.flags", "0u", false),
            Attr::RequestSize => s("request.total_size", "0", false),
            Attr::ResponseSize => s("response.total_size", "0", false),
            Attr::RouteName => s("xds.route_name", "''", true),
            Attr::ClusterName => s("xds.cluster_name", "''", true),
            Attr::UpstreamAddress => s("upstream.address", "''", true),
            Attr::Tls => s(TLS_CEL, "[]", false),
            Attr::Metadata => s("metadata", "''", false),
        }
    }
}

/// The TLS part: guarded throughout, because which fields exist depends on the connection.
const TLS_CEL: &str = "(has(connection.tls_version) ? [connection.tls_version, \
     (has(connection.requested_server_name) ? connection.requested_server_name : ''), \
     ((has(connection.mtls) && connection.mtls) ? [\
     (has(connection.uri_san_peer_certificate) ? connection.uri_san_peer_certificate : ''), \
     (has(connection.dns_san_peer_certificate) ? connection.dns_san_peer_certificate : ''), \
     (has(connection.subject_peer_certificate) ? connection.subject_peer_certificate : ''), \
     (has(connection.sha256_peer_certificate_digest) ? connection.sha256_peer_certificate_digest : '')\
     ] : [])] : [])";

/// TLS attributes read one by one when CEL is unavailable.
const TLS_PROPERTIES: [&[&str]; 6] = [
    &["connection", "tls_version"],
    &["connection", "requested_server_name"],
    &["connection", "uri_san_peer_certificate"],
    &["connection", "dns_san_peer_certificate"],
    &["connection", "subject_peer_certificate"],
    &["connection", "sha256_peer_certificate_digest"],
];

fn guarded(spec: &Spec) -> String {
    // The TLS part guards itself; a top-level identifier (`metadata`) always exists and `has()`
    // takes only a field selection.
    if spec.cel.starts_with('(') || !spec.cel.contains('.') {
        return spec.cel.to_string();
    }
    format!("(has({0}) ? {0} : {1})", spec.cel, spec.default)
}

/// Which attributes this configuration reads, and the expressions that read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    attrs: Vec<Attr>,
}

/// The expression tokens Envoy gave for a [`Plan`] (`None`: CEL unavailable, read properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Compiled {
    /// The branching expression (the common case).
    pub fast: Option<u32>,
    /// The fully guarded expression (when the fast one fails).
    pub guarded: Option<u32>,
}

impl Plan {
    /// The attributes every record uses, plus the dynamic metadata when JWT claims are read.
    pub fn new(read_metadata: bool) -> Self {
        let mut attrs = vec![
            Attr::SourceAddress,
            Attr::Duration,
            Attr::Protocol,
            Attr::ResponseCode,
            Attr::CodeDetails,
            Attr::ResponseFlags,
            Attr::RequestSize,
            Attr::ResponseSize,
            Attr::RouteName,
            Attr::ClusterName,
            Attr::UpstreamAddress,
            Attr::Tls,
        ];
        if read_metadata {
            attrs.push(Attr::Metadata);
        }
        Self { attrs }
    }

    /// The common-case expression: unguarded when the request reached an upstream, guarded
    /// where a local reply may lack the attribute otherwise.
    pub fn fast_expression(&self) -> String {
        let upstream: Vec<String> = self
            .attrs
            .iter()
            .map(|a| {
                let spec = a.spec();
                if *a == Attr::Tls {
                    guarded(&spec)
                } else {
                    spec.cel.to_string()
                }
            })
            .collect();
        let local: Vec<String> = self
            .attrs
            .iter()
            .map(|a| {
                let spec = a.spec();
                match a {
                    Attr::UpstreamAddress => spec.default.to_string(),
                    _ if spec.guard_locally => guarded(&spec),
                    _ => spec.cel.to_string(),
                }
            })
            .collect();
        format!(
            "has(upstream.address) ? [{}] : [{}]",
            upstream.join(", "),
            local.join(", ")
        )
    }

    /// Every attribute guarded: evaluates whatever Envoy lacks.
    pub(crate) fn guarded_expression(&self) -> String {
        let all: Vec<String> = self.attrs.iter().map(|a| guarded(&a.spec())).collect();
        format!("[{}]", all.join(", "))
    }

    /// Compiles both expressions with Envoy (`expr_create`). `Err` says why CEL is unavailable;
    /// the filter then reads properties one by one.
    pub(crate) fn compile(&self, host: &impl Host) -> Result<Compiled, String> {
        let create = |text: String| -> Result<u32, String> {
            let token = host
                .call_foreign("expr_create", text.as_bytes())
                .map_err(|s| format!("expr_create: {s}"))?;
            let bytes: [u8; 4] = token
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("expr_create returned {} bytes", token.len()))?;
            Ok(u32::from_le_bytes(bytes))
        };
        Ok(Compiled {
            fast: Some(create(self.fast_expression())?),
            guarded: Some(create(self.guarded_expression())?),
        })
    }

    /// Reads the attributes: one expression evaluation in the common case.
    pub(crate) fn read(&self, host: &impl Host, compiled: Compiled) -> Vec<u8> {
        for token in [compiled.fast, compiled.guarded].into_iter().flatten() {
            match host.call_foreign("expr_evaluate", &token.to_le_bytes()) {
                Ok(bytes) => return bytes,
                // An absent attribute: the next expression guards more.
                Err(Status::INTERNAL_FAILURE) => continue,
                Err(_) => break,
            }
        }
        self.read_properties(host)
    }

    /// One property read per attribute, serialised like an evaluated list.
    fn read_properties(&self, host: &impl Host) -> Vec<u8> {
        let values: Vec<Vec<u8>> = self
            .attrs
            .iter()
            .map(|a| match a {
                Attr::Tls => {
                    let parts: Vec<Vec<u8>> = TLS_PROPERTIES
                        .iter()
                        .map(|p| host.property(&property_path(p)).unwrap_or_default())
                        .collect();
                    tls_list(&parts)
                }
                other => {
                    let path: Vec<&str> = other.spec().cel.split('.').collect();
                    host.property(&property_path(&path))
                        .unwrap_or_else(|| default_bytes(*other))
                }
            })
            .collect();
        list(values.iter().map(Vec::as_slice))
    }

    /// Decodes an evaluated list. Positions follow [`Plan::attrs`]; a missing or malformed
    /// element reads as absent.
    pub(crate) fn decode<'a>(&self, list: &'a [u8]) -> Attributes<'a> {
        let mut out = Attributes::default();
        for (attr, (value, _)) in self.attrs.iter().zip(Pairs::new(list)) {
            match attr {
                Attr::SourceAddress => out.source_address = value,
                Attr::Duration => out.duration_ns = int(value).max(0),
                Attr::Protocol => out.protocol = value,
                Attr::ResponseCode => out.status = u32::try_from(int(value)).unwrap_or(0),
                Attr::CodeDetails => out.code_details = value,
                Attr::ResponseFlags => out.response_flags = int(value) as u64,
                Attr::RequestSize => out.request_bytes = int(value).max(0) as u64,
                Attr::ResponseSize => out.response_bytes = int(value).max(0) as u64,
                Attr::RouteName => out.route_name = value,
                Attr::ClusterName => out.cluster_name = value,
                Attr::UpstreamAddress => out.upstream_address = value,
                Attr::Tls => out.tls = Tls::decode(value),
                Attr::Metadata => out.metadata = value,
            }
        }
        out
    }
}

/// A CEL list's serialisation: the elements as the names of pairs with empty values.
pub(crate) fn list<'a>(elements: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut out = Vec::new();
    serialize_pairs(elements.map(|e| (e, &b""[..])), &mut out);
    out
}

/// The nested TLS list from its six property values (version first; empty version: plaintext).
fn tls_list(parts: &[Vec<u8>]) -> Vec<u8> {
    let Some((version, rest)) = parts.split_first() else {
        return list(std::iter::empty());
    };
    if version.is_empty() {
        return list(std::iter::empty());
    }
    let (sni, certs) = rest
        .split_first()
        .map_or((&[][..], rest), |(s, c)| (s.as_slice(), c));
    let mtls = if certs.iter().any(|c| !c.is_empty()) {
        list(certs.iter().map(Vec::as_slice))
    } else {
        list(std::iter::empty())
    };
    list([version.as_slice(), sni, mtls.as_slice()].into_iter())
}

fn default_bytes(attr: Attr) -> Vec<u8> {
    match attr {
        Attr::Duration
        | Attr::ResponseCode
        | Attr::ResponseFlags
        | Attr::RequestSize
        | Attr::ResponseSize => 0i64.to_le_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// CEL integers, durations and timestamps: 8 little-endian bytes (0 otherwise).
fn int(value: &[u8]) -> i64 {
    value
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, i64::from_le_bytes)
}

/// The TLS facts of the downstream connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tls<'a> {
    /// `connection.tls_version` (empty: plaintext).
    pub version: &'a [u8],
    /// `connection.requested_server_name`.
    pub sni: &'a [u8],
    /// `connection.uri_san_peer_certificate`.
    pub uri_san: &'a [u8],
    /// `connection.dns_san_peer_certificate`.
    pub dns_san: &'a [u8],
    /// `connection.subject_peer_certificate`.
    pub subject: &'a [u8],
    /// `connection.sha256_peer_certificate_digest`.
    pub digest: &'a [u8],
}

impl<'a> Tls<'a> {
    fn decode(list: &'a [u8]) -> Self {
        let mut parts = Pairs::new(list).map(|(v, _)| v);
        let version = parts.next().unwrap_or_default();
        let sni = parts.next().unwrap_or_default();
        let mut certs = Pairs::new(parts.next().unwrap_or_default()).map(|(v, _)| v);
        let mut next = || certs.next().unwrap_or_default();
        Tls {
            version,
            sni,
            uri_san: next(),
            dns_san: next(),
            subject: next(),
            digest: next(),
        }
    }
}

/// The stream attributes of one request, borrowed from the evaluated list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Attributes<'a> {
    /// `source.address`, `ip:port`.
    pub source_address: &'a [u8],
    /// Request start to stream end, ns.
    pub duration_ns: i64,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: &'a [u8],
    /// Response status; 0 when none was sent.
    pub status: u32,
    /// `response.code_details`.
    pub code_details: &'a [u8],
    /// `response.flags` bitmask.
    pub response_flags: u64,
    /// `request.total_size`.
    pub request_bytes: u64,
    /// `response.total_size`.
    pub response_bytes: u64,
    /// `xds.route_name`.
    pub route_name: &'a [u8],
    /// `xds.cluster_name`.
    pub cluster_name: &'a [u8],
    /// `upstream.address`.
    pub upstream_address: &'a [u8],
    /// TLS facts.
    pub tls: Tls<'a>,
    /// Serialised dynamic metadata (empty when not read).
    pub metadata: &'a [u8],
}

/// Builds what Envoy would return for `plan` from `values` (tests and the fake host).
#[cfg(test)]
pub(crate) fn encode_for_test(plan: &Plan, values: &Attributes<'_>) -> Vec<u8> {
    let tls = if values.tls.version.is_empty() {
        list(std::iter::empty())
    } else {
        tls_list(&[
            values.tls.version.to_vec(),
            values.tls.sni.to_vec(),
            values.tls.uri_san.to_vec(),
            values.tls.dns_san.to_vec(),
            values.tls.subject.to_vec(),
            values.tls.digest.to_vec(),
        ])
    };
    let elements: Vec<Vec<u8>> = plan
        .attrs
        .iter()
        .map(|a| match a {
            Attr::SourceAddress => values.source_address.to_vec(),
            Attr::Duration => values.duration_ns.to_le_bytes().to_vec(),
            Attr::Protocol => values.protocol.to_vec(),
            Attr::ResponseCode => i64::from(values.status).to_le_bytes().to_vec(),
            Attr::CodeDetails => values.code_details.to_vec(),
            Attr::ResponseFlags => values.response_flags.to_le_bytes().to_vec(),
            Attr::RequestSize => values.request_bytes.to_le_bytes().to_vec(),
            Attr::ResponseSize => values.response_bytes.to_le_bytes().to_vec(),
            Attr::RouteName => values.route_name.to_vec(),
            Attr::ClusterName => values.cluster_name.to_vec(),
            Attr::UpstreamAddress => values.upstream_address.to_vec(),
            Attr::Tls => tls.clone(),
            Attr::Metadata => values.metadata.to_vec(),
        })
        .collect();
    list(elements.iter().map(Vec::as_slice))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Attributes<'static> {
        Attributes {
            source_address: b"127.0.0.9:5000",
            duration_ns: 1_234_000,
            protocol: b"HTTP/1.1",
            status: 200,
            code_details: b"via_upstream",
            response_flags: 0,
            request_bytes: 80,
            response_bytes: 300,
            route_name: b"app",
            cluster_name: b"upstream",
            upstream_address: b"127.0.0.1:8080",
            tls: Tls::default(),
            metadata: b"",
        }
    }

    #[test]
    fn an_evaluated_list_decodes_in_plan_order() {
        let plan = Plan::new(true);
        let mut values = sample();
        values.metadata = b"\x0a\x00";
        values.tls = Tls {
            version: b"TLSv1.3",
            sni: b"shop.test",
            uri_san: b"spiffe://a",
            dns_san: b"",
            subject: b"CN=a",
            digest: b"abcd",
        };
        let bytes = encode_for_test(&plan, &values);
        assert_eq!(plan.decode(&bytes), values);
    }

    #[test]
    fn plaintext_and_tls_without_a_peer_certificate_decode() {
        let plan = Plan::new(false);
        let mut values = sample();
        let bytes = encode_for_test(&plan, &values);
        assert_eq!(plan.decode(&bytes).tls, Tls::default());
        values.tls = Tls {
            version: b"TLSv1.2",
            sni: b"x",
            ..Tls::default()
        };
        let bytes = encode_for_test(&plan, &values);
        assert_eq!(plan.decode(&bytes), values);
    }

    #[test]
    fn truncated_or_garbage_lists_decode_as_absent_without_panicking() {
        let plan = Plan::new(true);
        let bytes = encode_for_test(&plan, &sample());
        for cut in 0..bytes.len() {
            let _ = plan.decode(&bytes[..cut]);
        }
        assert_eq!(plan.decode(b"\xff\xff\xff\xff"), Attributes::default());
    }

    #[test]
    fn expressions_branch_on_the_upstream_and_guard_local_replies() {
        let plan = Plan::new(false);
        let fast = plan.fast_expression();
        assert!(fast.starts_with("has(upstream.address) ? [source.address, request.duration,"));
        let (upstream, local) = fast.split_once(" : [").unwrap();
        assert!(upstream.contains(", xds.cluster_name, upstream.address,"));
        assert!(local.contains("(has(xds.cluster_name) ? xds.cluster_name : '')"));
        assert!(!local.contains("upstream.address"), "{local}");
        assert!(!fast.contains("metadata"));
        let guarded = plan.guarded_expression();
        assert!(guarded.contains("(has(response.code) ? response.code : 0)"));
        assert!(
            Plan::new(true)
                .guarded_expression()
                .ends_with(", metadata]")
        );
    }

    #[test]
    fn property_fallback_serialises_like_an_evaluation() {
        use crate::fake_host::FakeHost;
        let plan = Plan::new(false);
        let host = FakeHost::new();
        host.set_property("source.address", b"10.0.0.1:1");
        host.set_property("response.code", &404i64.to_le_bytes());
        host.set_property("connection.tls_version", b"TLSv1.3");
        host.set_property("connection.dns_san_peer_certificate", b"client.test");
        let bytes = plan.read(&host, Compiled::default());
        let a = plan.decode(&bytes);
        assert_eq!(a.source_address, b"10.0.0.1:1");
        assert_eq!(a.status, 404);
        assert_eq!(a.tls.version, b"TLSv1.3");
        assert_eq!(a.tls.dns_san, b"client.test");
        assert_eq!(a.route_name, b"");
    }
}
