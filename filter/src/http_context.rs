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

/// The address part of `source.address`, as text.
fn address_only(address: &str) -> String {
    match address.parse::<SocketAddr>() {
        Ok(s) => s.ip().to_string(),
        Err(_) => address.to_string(),
    }
}

impl WardenHttp {
    /// A context sharing the root's configuration and state.
    pub fn new(config: Option<Rc<Config>>, state: Option<Rc<RefCell<State>>>) -> Self {
        Self {
            config,
            state,
            block: None,
        }
    }

    fn facts(config: &Config) -> RequestFacts {
        let mut headers = Vec::new();
        let mut wanted: Vec<&str> = vec!["x-forwarded-for", "authorization"];
        wanted.extend(config.record.captured_headers.iter().map(String::as_str));
        if !config.identity.api_key_header.is_empty() {
            wanted.push(&config.identity.api_key_header);
        }
        if !config.identity.ext_authz_user_header.is_empty() {
            wanted.push(&config.identity.ext_authz_user_header);
        }
        for name in wanted {
            if let Some(v) = host::request_header(name) {
                headers.push((name.to_string(), v));
            }
        }
        let time_ns = host::int(&["request", "time"]).unwrap_or(0);
        let duration_ns = host::int(&["request", "duration"]).unwrap_or(0);
        RequestFacts {
            time_ms: time_ns / 1_000_000,
            request_id: host::string(&["request", "id"]),
            client_address: address_only(&host::string(&["source", "address"])),
            client_port: host::int(&["source", "port"])
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0),
            tls_sni: host::string(&["connection", "requested_server_name"]),
            tls_version: host::string(&["connection", "tls_version"]),
            authority: host::string(&["request", "host"]),
            method: host::string(&["request", "method"]),
            path: host::string(&["request", "path"]),
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
            user_agent: host::string(&["request", "useragent"]),
            headers,
        }
    }

    fn identity_facts(config: &Config, facts: &RequestFacts) -> IdentityFacts {
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
        IdentityFacts {
            jwt_claims,
            cert_uri_san: host::string(&["connection", "uri_san_peer_certificate"]),
            cert_dns_san: host::string(&["connection", "dns_san_peer_certificate"]),
            cert_subject: host::string(&["connection", "subject_peer_certificate"]),
            cert_fingerprint: host::string(&["connection", "sha256_peer_certificate_digest"]),
            authorization: facts.header("authorization").map(str::to_string),
            api_key: header(&id.api_key_header),
            ext_authz_user: header(&id.ext_authz_user_header),
        }
    }
}

impl Context for WardenHttp {}

impl HttpContext for WardenHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(config), Some(state)) = (&self.config, &self.state) else {
            return Action::Continue;
        };
        if !config.deny_list.enabled {
            return Action::Continue;
        }
        let Some(ip) = parse_ip(&host::string(&["source", "address"])) else {
            return Action::Continue;
        };
        let now = host::now_ms();
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
        let facts = Self::facts(config);
        let id_facts = Self::identity_facts(config, &facts);
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
        // Credentials that failed authentication name nobody: a claimed user name or key is
        // not an identity, and recording it would attribute the attempt to its victim.
        let principal = principal.filter(|_| decision.deny_kind != DenyKind::Authentication as i32);
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
        assert_eq!(address_only("[::1]:80"), "::1");
    }
}
