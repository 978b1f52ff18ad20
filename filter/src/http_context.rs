//! The per-request context: enforces the deny list on request headers and, in `on_log`, gathers
//! the request's attributes into [`RequestFacts`] and hands the built record to the shipper.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use warden_proto::pb::{AuthDecision, DenyKind, Mechanism, Verdict};

use crate::batch;
use crate::config::Config;
use crate::denylist::{self, Match};
use crate::host::{self, Counter};
use crate::identity::{self, IdentityFacts};
use crate::record::{self, RequestFacts};
use crate::root_context::State;

/// One HTTP request's context.
pub struct WardenHttp {
    config: Option<Rc<Config>>,
    state: Option<Rc<RefCell<State>>>,
    /// Set when Warden answered the request itself; becomes the record's decision.
    block: Option<Match>,
    /// `source.address`, read once for the deny-list check and reused by the record.
    source_address: Option<String>,
    /// The ext_authz identity header as the client sent it (see
    /// [`identity::authorizer_identity`]).
    sent_identity_header: Option<String>,
    /// When the request headers reached the filter (ns since the epoch): the record's time and,
    /// with the time at `on_log`, its duration, without two more attribute reads.
    started_ns: Option<u128>,
}

/// Parses `source.address` (`1.2.3.4:5`, `[::1]:5`, or a bare address).
fn parse_ip(address: &str) -> Option<IpAddr> {
    address
        .parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| address.parse::<IpAddr>())
        .ok()
        .map(denylist::canonical)
}

impl WardenHttp {
    /// A context sharing the root's configuration and state.
    pub fn new(config: Option<Rc<Config>>, state: Option<Rc<RefCell<State>>>) -> Self {
        Self {
            config,
            state,
            block: None,
            source_address: None,
            sent_identity_header: None,
            started_ns: None,
        }
    }

    /// Gathers the request's attributes. Host calls are the filter's main per-request cost, so
    /// the request headers come in one call (authority, method, path, user agent, request id
    /// are headers too) and `source.address` is reused from the deny-list check.
    fn facts(source_address: Option<String>, started_ns: Option<u128>) -> RequestFacts {
        let headers = host::request_headers();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let source = source_address.unwrap_or_else(|| host::string(&["source", "address"]));
        let (client_address, client_port) = match source.parse::<SocketAddr>() {
            Ok(s) => (s.ip().to_string(), u32::from(s.port())),
            Err(_) => (source, 0),
        };
        // Envoy's own attributes when the filter never saw the request headers.
        let (time_ns, duration_ns) = match started_ns {
            Some(start) => (
                i64::try_from(start).unwrap_or(0),
                i64::try_from(host::now_nanos().saturating_sub(start)).unwrap_or(0),
            ),
            None => (
                host::int(&["request", "time"]).unwrap_or(0),
                host::int(&["request", "duration"]).unwrap_or(0),
            ),
        };
        // SNI exists only on TLS connections: skip the read on plaintext.
        let tls_version = host::string(&["connection", "tls_version"]);
        let tls_sni = if tls_version.is_empty() {
            String::new()
        } else {
            host::string(&["connection", "requested_server_name"])
        };
        RequestFacts {
            time_ms: time_ns / 1_000_000,
            request_id: header("x-request-id"),
            client_address,
            client_port,
            tls_sni,
            tls_version,
            authority: header(":authority"),
            method: header(":method"),
            path: header(":path"),
            protocol: host::string(&["request", "protocol"]),
            status: host::int(&["response", "code"])
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
            response_code_details: host::string(&["response", "code_details"]),
            response_flags: host::uint(&["response", "flags"]).unwrap_or(0),
            route_name: host::string(&["xds", "route_name"]),
            upstream_cluster: host::string(&["xds", "cluster_name"]),
            upstream_host: host::string(&["upstream", "address"]),
            duration_us: u64::try_from(duration_ns / 1000).unwrap_or(0),
            request_bytes: host::uint(&["request", "total_size"]).unwrap_or(0),
            response_bytes: host::uint(&["response", "total_size"]).unwrap_or(0),
            user_agent: header("user-agent"),
            headers,
        }
    }

    fn identity_facts(
        config: &Config,
        facts: &RequestFacts,
        sent_identity_header: Option<&str>,
    ) -> IdentityFacts {
        let id = &config.identity;
        // The whole `metadata` attribute is the typed `Metadata` message; deeper paths come back
        // in the untyped pairs encoding (numbers and strings indistinguishable), so read it whole.
        let jwt_claims = host::property(&["metadata"]).and_then(|b| {
            identity::claims_from_metadata(&b, &id.jwt_metadata_namespace, &id.jwt_payload_key)
        });
        let header = |name: &str| {
            (!name.is_empty())
                .then(|| facts.header(name).map(str::to_string))
                .flatten()
        };
        // A peer certificate needs TLS: on plaintext connections skip four host calls.
        let tls = !facts.tls_version.is_empty();
        let cert = |field: &str| {
            if tls {
                host::string(&["connection", field])
            } else {
                String::new()
            }
        };
        IdentityFacts {
            jwt_claims,
            cert_uri_san: cert("uri_san_peer_certificate"),
            cert_dns_san: cert("dns_san_peer_certificate"),
            cert_subject: cert("subject_peer_certificate"),
            cert_fingerprint: cert("sha256_peer_certificate_digest"),
            authorization: facts.header("authorization").map(str::to_string),
            api_key: header(&id.api_key_header),
            ext_authz_user: identity::authorizer_identity(
                sent_identity_header,
                header(&id.ext_authz_user_header).as_deref(),
            ),
        }
    }
}

impl Context for WardenHttp {}

impl HttpContext for WardenHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(config), Some(state)) = (&self.config, &self.state) else {
            return Action::Continue;
        };
        let started_ns = host::now_nanos();
        // 0 means Envoy's clock was unavailable: fall back to its attributes at `on_log`.
        self.started_ns = Some(started_ns).filter(|t| *t > 0);
        let identity_header = &config.identity.ext_authz_user_header;
        if !identity_header.is_empty() {
            self.sent_identity_header = host::request_header(identity_header);
        }
        if !config.deny_list.enabled {
            return Action::Continue;
        }
        let source = host::string(&["source", "address"]);
        let ip = parse_ip(&source);
        self.source_address = Some(source);
        let Some(ip) = ip else {
            return Action::Continue;
        };
        let now = u64::try_from(started_ns / 1_000_000).unwrap_or(u64::MAX);
        let found = {
            let state = state.borrow();
            if state.denylist.is_empty() {
                return Action::Continue;
            }
            state
                .denylist
                .lookup(ip, i64::try_from(now).unwrap_or(i64::MAX))
        };
        let Some(m) = found else {
            return Action::Continue;
        };
        let d = &config.deny_list;
        let mut headers: Vec<(&str, String)> = d
            .deny_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let (status, body, counter) = match m.verdict {
            denylist::Verdict::Deny => (
                d.deny_status,
                d.deny_body.as_str(),
                Counter::RequestsBlocked,
            ),
            denylist::Verdict::Throttle => {
                let retry_after = if m.expires_at_ms > 0 {
                    let left = u64::try_from(m.expires_at_ms)
                        .unwrap_or(0)
                        .saturating_sub(now);
                    left.div_ceil(1000).max(1)
                } else {
                    d.default_retry_after_s
                };
                headers.push(("retry-after", retry_after.to_string()));
                (
                    d.throttle_status,
                    d.throttle_body.as_str(),
                    Counter::RequestsThrottled,
                )
            }
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Err(e) = hostcalls::send_http_response(status, headers, Some(body.as_bytes())) {
            // Fail open: an unsendable reply must not stall the request.
            host::log(LogLevel::Warn, &format!("cannot send local reply: {e:?}"));
            return Action::Continue;
        }
        state.borrow().metrics.add(counter, 1);
        self.block = Some(m);
        Action::Pause
    }

    fn on_log(&mut self) {
        let (Some(config), Some(state)) = (&self.config, &self.state) else {
            return;
        };
        let facts = Self::facts(self.source_address.take(), self.started_ns);
        let id_facts = Self::identity_facts(config, &facts, self.sent_identity_header.as_deref());
        let principal = identity::principal(&id_facts, &config.identity);
        let decision = match &self.block {
            Some(m) => AuthDecision {
                verdict: Verdict::Deny as i32,
                mechanism: Mechanism::WardenDenyList as i32,
                deny_kind: match m.verdict {
                    denylist::Verdict::Deny => DenyKind::Blocked,
                    denylist::Verdict::Throttle => DenyKind::Throttled,
                } as i32,
                reason: m.reason.clone(),
                policy: m.origin.clone(),
                warden_decision_id: m.decision_id,
            },
            None => identity::decision(
                facts.status,
                &facts.response_code_details,
                principal.as_ref(),
            ),
        };
        let principal = identity::attributable(principal, &decision);
        let rec = record::build(&facts, &config.record, principal, Some(decision));
        let urgent = batch::is_urgent(&config.batch, &rec);
        let mut state = state.borrow_mut();
        let dropped = state.shipper.push_with(rec, urgent);
        state.metrics.add(Counter::RecordsDropped, dropped);
        if urgent {
            state.wake.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_parse_with_and_without_ports() {
        assert_eq!(
            parse_ip("127.0.0.9:5000"),
            Some("127.0.0.9".parse().unwrap())
        );
        assert_eq!(parse_ip("[::1]:5000"), Some("::1".parse().unwrap()));
        assert_eq!(
            parse_ip("[::ffff:10.0.0.1]:1"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_ip("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(parse_ip("pipe"), None);
    }
}
