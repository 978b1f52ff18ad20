//! Who the client was ([`Principal`]) and what decided about it (`DecisionView`, encoded as
//! `AuthDecision`), from plain inputs: JWT claims from jwt_authn's dynamic metadata, the mTLS
//! peer certificate attributes, the basic-auth user name, a keyed API-key fingerprint, an
//! ext_authz identity header, and Envoy's response code details.
//!
//! Secrets never leave this module: a basic-auth password is never decoded past the colon, an API
//! key only leaves as an HMAC-SHA256 fingerprint.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use warden_proto::pb::{DenyKind, Mechanism, Principal, PrincipalSource, Verdict};

use crate::config::IdentityConfig;

/// Hex digits of the API-key fingerprint kept (64 bits: enough to tell keys apart, too short to
/// be worth brute-forcing back to a key).
const FINGERPRINT_HEX: usize = 16;

/// What the filter gathered about the client's identity, borrowed from Envoy's buffers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct IdentityFacts<'a> {
    /// jwt_authn's payload (a JSON object), when present.
    pub jwt_claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// `connection.uri_san_peer_certificate`.
    pub cert_uri_san: &'a str,
    /// `connection.dns_san_peer_certificate`.
    pub cert_dns_san: &'a str,
    /// `connection.subject_peer_certificate`.
    pub cert_subject: &'a str,
    /// `connection.sha256_peer_certificate_digest`.
    pub cert_fingerprint: &'a str,
    /// The `authorization` request header.
    pub authorization: Option<&'a [u8]>,
    /// The configured API-key header.
    pub api_key: Option<&'a [u8]>,
    /// The configured ext_authz identity header, when Envoy (not the client) set it.
    pub ext_authz_user: Option<&'a str>,
    /// The user Envoy's basic_auth filter checked the password of (its forwarded-user header),
    /// when Envoy (not the client) set it.
    pub basic_auth_user: Option<&'a str>,
    /// The client Envoy's api_key_auth filter checked the key of (its forwarded-client header),
    /// when Envoy (not the client) set it.
    pub api_key_client: Option<&'a str>,
}

/// How a request was decided, borrowing its reason and policy (no allocation per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecisionView<'a> {
    /// Allow or deny.
    pub verdict: Verdict,
    /// What decided.
    pub mechanism: Mechanism,
    /// Why a deny happened.
    pub deny_kind: DenyKind,
    /// Envoy's detail, or the Warden reason.
    pub reason: &'a str,
    /// The matched policy, or the Warden decision's origin.
    pub policy: &'a str,
    /// The Warden decision id, for Warden blocks.
    pub warden_decision_id: u64,
}

/// `envoy.config.core.v3.Metadata`, as far as the filter reads it.
#[derive(Clone, PartialEq, prost::Message)]
struct Metadata {
    #[prost(map = "string, message", tag = "1")]
    filter_metadata: std::collections::HashMap<String, prost_types::Struct>,
}

/// jwt_authn's payload from the serialised dynamic metadata. Envoy 1.40 returns the `metadata`
/// attribute as a serialised `envoy.config.core.v3.Metadata`; the claims are the struct under
/// `filter_metadata[namespace][key]`. `None` when absent or undecodable.
pub(crate) fn claims_from_metadata(
    bytes: &[u8],
    namespace: &str,
    key: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    use prost::Message;
    let mut metadata = Metadata::decode(bytes).ok()?;
    let mut ns = metadata.filter_metadata.remove(namespace)?;
    match ns.fields.remove(key)?.kind? {
        prost_types::value::Kind::StructValue(s) => Some(struct_to_json(s)),
        _ => None,
    }
}

fn struct_to_json(s: prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => {
            // Integral claims (exp, iat) read better without a fraction.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::Value::from(n as i64)
            } else {
                serde_json::Value::from(n)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.into_iter().map(value_to_json).collect())
        }
    }
}

fn claim_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Derives the principal, or `None` when no mechanism identified the client. Precedence of
/// `name`: JWT `sub`, ext_authz identity, mTLS (URI SAN, DNS SAN, subject), basic-auth user,
/// API-key fingerprint. Certificate fields are filled whenever a peer certificate exists.
pub(crate) fn principal(facts: &IdentityFacts<'_>, config: &IdentityConfig) -> Option<Principal> {
    let no_certificate = facts.cert_uri_san.is_empty()
        && facts.cert_dns_san.is_empty()
        && facts.cert_subject.is_empty()
        && facts.cert_fingerprint.is_empty();
    if facts.jwt_claims.is_none()
        && facts.ext_authz_user.is_none()
        && facts.basic_auth_user.is_none()
        && no_certificate
        && facts.api_key_client.is_none()
    {
        // The plain request: nothing to look at, nothing allocated.
        return None;
    }
    let mut p = Principal {
        cert_uri_san: facts.cert_uri_san.to_string(),
        cert_dns_san: facts.cert_dns_san.to_string(),
        cert_subject: facts.cert_subject.to_string(),
        cert_fingerprint: facts.cert_fingerprint.to_string(),
        ..Default::default()
    };
    if let Some(claims) = &facts.jwt_claims {
        p.source = PrincipalSource::Jwt as i32;
        p.name = claims.get("sub").map(claim_string).unwrap_or_default();
        p.issuer = claims.get("iss").map(claim_string).unwrap_or_default();
        p.audiences = match claims.get("aud") {
            Some(serde_json::Value::Array(a)) => a.iter().map(claim_string).collect(),
            Some(v) => vec![claim_string(v)],
            None => Vec::new(),
        };
        for name in &config.jwt_extra_claims {
            if let Some(v) = claims.get(name) {
                p.claims.insert(name.clone(), claim_string(v));
            }
        }
        return Some(p);
    }
    if let Some(user) = facts.ext_authz_user.filter(|u| !u.is_empty()) {
        p.source = PrincipalSource::ExtAuthz as i32;
        p.name = user.to_string();
        return Some(p);
    }
    let cert_name = [&p.cert_uri_san, &p.cert_dns_san, &p.cert_subject]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned();
    if let Some(name) = cert_name {
        p.source = PrincipalSource::Mtls as i32;
        p.name = name;
        return Some(p);
    }
    // Only the user whose password Envoy's basic_auth checked: a user name in an
    // `Authorization: Basic` header on its own is a claim (see [`claimed_user`]).
    if let Some(user) = facts.basic_auth_user.filter(|u| !u.is_empty()) {
        p.source = PrincipalSource::BasicAuth as i32;
        p.name = user.to_string();
        return Some(p);
    }
    // Only the client whose key Envoy's api_key_auth checked: a key on its own is a claim
    // (see [`claimed_user`]), whatever it fingerprints to.
    if let Some(client) = facts.api_key_client.filter(|c| !c.is_empty()) {
        p.source = PrincipalSource::ApiKey as i32;
        p.name = client.to_string();
        if let Some(key) = facts.api_key.filter(|k| !k.is_empty()) {
            p.claims.insert(
                "key_fingerprint".into(),
                fingerprint(config.api_key_secret.as_bytes(), key),
            );
        }
        return Some(p);
    }
    None
}

/// What a client claimed to be that the record's principal does not already name (no mechanism
/// verified it, or its password was wrong): the user name of an `Authorization: Basic` header,
/// else `api-key:FINGERPRINT` for an API key nothing verified. Kept apart, so that it never reads
/// as an identity but failures can still be counted per account or key.
pub(crate) fn claimed_user(
    facts: &IdentityFacts<'_>,
    principal: Option<&Principal>,
    config: &IdentityConfig,
) -> Option<String> {
    let user = facts
        .authorization
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(basic_auth_user)
        .filter(|u| !u.is_empty());
    if let Some(user) = user {
        return match principal {
            Some(p) if p.name == user => None,
            _ => Some(user),
        };
    }
    let key = facts.api_key.filter(|k| !k.is_empty())?;
    let verified = principal.is_some_and(|p| p.source == PrincipalSource::ApiKey as i32);
    (!verified).then(|| {
        format!(
            "api-key:{}",
            fingerprint(config.api_key_secret.as_bytes(), key)
        )
    })
}

/// The identity an authorizer (ext_authz) put in a request header, given the header's value
/// when the request arrived (`sent`, before any other filter ran) and when it completed
/// (`completed`). Only a value Envoy set or changed counts: a client that sends the header
/// itself must not be able to write the audit trail's principal.
pub(crate) fn authorizer_identity<'a>(
    sent: Option<&str>,
    completed: Option<&'a str>,
) -> Option<&'a str> {
    let completed = completed.filter(|v| !v.is_empty())?;
    (sent != Some(completed)).then_some(completed)
}

/// The user name of a `Basic` authorization header; the password is never returned.
pub fn basic_auth_user(authorization: &str) -> Option<String> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(token.trim())?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = decoded.get(..colon)?;
    let user = String::from_utf8(user.to_vec()).ok()?;
    (!user.is_empty()).then_some(user)
}

/// Standard or URL-safe base64, padding optional; `None` on any other byte.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Keyed fingerprint of an API key: hex HMAC-SHA256, truncated.
pub(crate) fn fingerprint(secret: &[u8], key: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC accepts keys of any length, so this cannot happen; an empty name is the safe
        // fallback (the key itself is never a fallback).
        return String::new();
    };
    mac.update(key);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(FINGERPRINT_HEX);
    for b in digest.iter().take(FINGERPRINT_HEX / 2) {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Infers the decision from the response (status and code details) and the principal found.
/// Warden's own blocks are decided by the glue, not here.
pub(crate) fn decision<'a>(
    status: u32,
    details: &'a str,
    principal: Option<&Principal>,
) -> DecisionView<'a> {
    let deny_kind = match status {
        401 => DenyKind::Authentication,
        _ => DenyKind::Authorization,
    };
    let deny = |mechanism: Mechanism, policy: &'a str| DecisionView {
        verdict: Verdict::Deny,
        mechanism,
        deny_kind,
        reason: details,
        policy,
        warden_decision_id: 0,
    };
    if details.starts_with("jwt_authn_access_denied") {
        return deny(Mechanism::JwtAuthn, "");
    }
    if let Some(rest) = details.strip_prefix("rbac_access_denied") {
        // "rbac_access_denied_matched_policy[name]"; "[none]" means no policy matched.
        let policy = rest
            .strip_prefix("_matched_policy[")
            .and_then(|r| r.strip_suffix(']'))
            .filter(|p| *p != "none")
            .unwrap_or_default();
        return deny(Mechanism::Rbac, policy);
    }
    if details.starts_with("ext_authz_") {
        return deny(Mechanism::ExtAuthz, "");
    }
    if details.ends_with("_basic_auth") {
        return deny(Mechanism::BasicAuth, "");
    }
    if matches!(status, 401 | 403) {
        // No gateway filter refused it, so the application did: still a denial worth auditing
        // (and what brute-force rules count), attributed to the upstream.
        return deny(Mechanism::Upstream, "");
    }
    let mechanism = match principal.map(|p| p.source) {
        Some(s) if s == PrincipalSource::Jwt as i32 => Mechanism::JwtAuthn,
        Some(s) if s == PrincipalSource::ExtAuthz as i32 => Mechanism::ExtAuthz,
        // Credentials that were not refused: Envoy's basic_auth filter (or the upstream behind
        // it) accepted them.
        Some(s) if s == PrincipalSource::BasicAuth as i32 => Mechanism::BasicAuth,
        _ => Mechanism::None,
    };
    DecisionView {
        verdict: Verdict::Allow,
        mechanism,
        deny_kind: DenyKind::Unspecified,
        reason: "",
        policy: "",
        warden_decision_id: 0,
    }
}

/// The principal a record may name, given how the request was decided. Credentials that failed
/// authentication name nobody: a claimed user name or key is not an identity, and recording it
/// would attribute the attempt to its victim. A request Warden refused before any authentication
/// ran can only name a peer certificate, which the TLS handshake verified; a basic-auth user or
/// API key on it was never checked.
pub(crate) fn attributable(
    principal: Option<Principal>,
    decision: &DecisionView<'_>,
) -> Option<Principal> {
    let p = principal?;
    let unverified_block =
        decision.mechanism == Mechanism::WardenDenyList && p.source != PrincipalSource::Mtls as i32;
    if decision.deny_kind == DenyKind::Authentication || unverified_block {
        return None;
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IdentityConfig {
        IdentityConfig {
            jwt_extra_claims: vec!["email".into(), "scope".into()],
            api_key_secret: "0123456789abcdef".into(),
            ..Default::default()
        }
    }

    #[test]
    fn jwt_claims_make_the_principal() {
        let claims = serde_json::json!({
            "sub": "alice", "iss": "https://idp", "aud": ["a", "b"], "email": "a@x", "scope": 3
        });
        let facts = IdentityFacts {
            jwt_claims: claims.as_object().cloned(),
            cert_uri_san: "spiffe://x",
            ..Default::default()
        };
        let p = principal(&facts, &cfg()).unwrap();
        assert_eq!(p.source, PrincipalSource::Jwt as i32);
        assert_eq!(p.name, "alice");
        assert_eq!(p.issuer, "https://idp");
        assert_eq!(p.audiences, vec!["a", "b"]);
        assert_eq!(p.claims["email"], "a@x");
        assert_eq!(p.claims["scope"], "3");
        assert_eq!(p.cert_uri_san, "spiffe://x");
    }

    #[test]
    fn mtls_prefers_uri_san_then_dns_then_subject() {
        let facts = IdentityFacts {
            cert_dns_san: "client.test",
            cert_subject: "CN=client",
            ..Default::default()
        };
        let p = principal(&facts, &cfg()).unwrap();
        assert_eq!(p.source, PrincipalSource::Mtls as i32);
        assert_eq!(p.name, "client.test");
    }

    #[test]
    fn a_basic_auth_user_is_only_a_claim_until_envoy_checked_the_password() {
        // "bob:s3cret", sent by anyone on any route: not an identity.
        let claimed = IdentityFacts {
            authorization: Some(b"Basic Ym9iOnMzY3JldA=="),
            ..Default::default()
        };
        assert_eq!(principal(&claimed, &cfg()), None);
        assert_eq!(claimed_user(&claimed, None, &cfg()).as_deref(), Some("bob"));
        // Envoy's basic_auth checked it and forwarded the user.
        let verified = IdentityFacts {
            basic_auth_user: Some("bob"),
            ..claimed.clone()
        };
        let p = principal(&verified, &cfg()).unwrap();
        assert_eq!(p.source, PrincipalSource::BasicAuth as i32);
        assert_eq!(p.name, "bob");
        assert_eq!(claimed_user(&verified, Some(&p), &cfg()), None, "not twice");
        assert!(!format!("{p:?}").contains("s3cret"));
        // Another principal (a JWT) with a different basic user: the basic user stays a claim.
        let jwt = Principal {
            name: "alice".into(),
            ..Principal::default()
        };
        assert_eq!(
            claimed_user(&claimed, Some(&jwt), &cfg()).as_deref(),
            Some("bob")
        );
        assert_eq!(basic_auth_user("Bearer abc"), None);
        assert_eq!(basic_auth_user("Basic !!!"), None);
    }

    #[test]
    fn an_api_key_is_a_fingerprinted_claim_until_envoy_checked_it() {
        // Any key, sent by anyone: not an identity, only a claim named by its fingerprint.
        let claimed = IdentityFacts {
            api_key: Some(b"sk_live_123"),
            ..Default::default()
        };
        assert_eq!(principal(&claimed, &cfg()), None);
        let claim = claimed_user(&claimed, None, &cfg()).unwrap();
        let fp = fingerprint(b"0123456789abcdef", b"sk_live_123");
        assert_eq!(fp.len(), FINGERPRINT_HEX);
        assert_eq!(claim, format!("api-key:{fp}"));
        assert!(!claim.contains("sk_live"));
        assert_ne!(fp, fingerprint(b"another-secret-16", b"sk_live_123"));
        // Envoy's api_key_auth checked it and forwarded its client.
        let verified = IdentityFacts {
            api_key_client: Some("billing"),
            ..claimed.clone()
        };
        let p = principal(&verified, &cfg()).unwrap();
        assert_eq!(p.source, PrincipalSource::ApiKey as i32);
        assert_eq!(p.name, "billing");
        assert_eq!(p.claims.get("key_fingerprint"), Some(&fp));
        assert_eq!(claimed_user(&verified, Some(&p), &cfg()), None, "not twice");
    }

    #[test]
    fn claims_decode_from_serialized_metadata() {
        use prost::Message;
        use prost_types::{ListValue, Struct, Value, value::Kind};
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.into())),
        };
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("sub".to_string(), s("alice"));
        fields.insert(
            "aud".to_string(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![s("a"), s("b")],
                })),
            },
        );
        fields.insert(
            "exp".to_string(),
            Value {
                kind: Some(Kind::NumberValue(1.7e9)),
            },
        );
        let payload = Value {
            kind: Some(Kind::StructValue(Struct { fields })),
        };
        let ns = Struct {
            fields: [("jwt_payload".to_string(), payload)].into_iter().collect(),
        };
        let bytes = Metadata {
            filter_metadata: [("envoy.filters.http.jwt_authn".to_string(), ns)]
                .into_iter()
                .collect(),
        }
        .encode_to_vec();
        let claims =
            claims_from_metadata(&bytes, "envoy.filters.http.jwt_authn", "jwt_payload").unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], serde_json::json!(["a", "b"]));
        assert_eq!(claims["exp"], serde_json::json!(1_700_000_000));
        assert!(claims_from_metadata(&bytes, "other", "jwt_payload").is_none());
        assert!(claims_from_metadata(&[0xff, 0xff], "a", "b").is_none());
    }

    #[test]
    fn an_authorizer_identity_counts_only_when_envoy_set_it() {
        assert_eq!(authorizer_identity(None, Some("alice")), Some("alice"));
        assert_eq!(authorizer_identity(Some("admin"), Some("bob")), Some("bob"));
        assert_eq!(
            authorizer_identity(Some("admin"), Some("admin")),
            None,
            "client-sent"
        );
        assert_eq!(authorizer_identity(None, None), None);
        assert_eq!(authorizer_identity(None, Some("")), None);
    }

    #[test]
    fn no_identity_is_none() {
        assert_eq!(principal(&IdentityFacts::default(), &cfg()), None);
    }

    #[test]
    fn decisions_are_inferred_from_details() {
        let d = decision(401, "jwt_authn_access_denied{Jwt is expired}", None);
        assert_eq!(d.mechanism, Mechanism::JwtAuthn);
        assert_eq!(d.deny_kind, DenyKind::Authentication);
        assert_eq!(d.verdict, Verdict::Deny);
        let d = decision(403, "rbac_access_denied_matched_policy[deny-admin]", None);
        assert_eq!(d.mechanism, Mechanism::Rbac);
        assert_eq!(d.policy, "deny-admin");
        assert_eq!(d.deny_kind, DenyKind::Authorization);
        let d = decision(403, "rbac_access_denied_matched_policy[none]", None);
        assert_eq!(d.policy, "");
        assert_eq!(
            decision(403, "ext_authz_denied", None).mechanism,
            Mechanism::ExtAuthz
        );
        let d = decision(401, "no_credential_for_basic_auth", None);
        assert_eq!(d.mechanism, Mechanism::BasicAuth);
        let d = decision(200, "via_upstream", None);
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.mechanism, Mechanism::None);
    }

    #[test]
    fn an_upstream_401_is_an_authentication_denial_by_the_upstream() {
        let d = decision(401, "via_upstream", None);
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.mechanism, Mechanism::Upstream);
        assert_eq!(d.deny_kind, DenyKind::Authentication);
        let d = decision(403, "via_upstream", None);
        assert_eq!(d.deny_kind, DenyKind::Authorization);
    }

    #[test]
    fn accepted_basic_credentials_are_a_basic_auth_allow() {
        let p = Principal {
            source: PrincipalSource::BasicAuth as i32,
            name: "bob".into(),
            ..Default::default()
        };
        let d = decision(200, "via_upstream", Some(&p));
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.mechanism, Mechanism::BasicAuth);
    }

    #[test]
    fn only_verified_identities_are_attributed() {
        let named = |source: PrincipalSource| {
            Some(Principal {
                source: source as i32,
                name: "demo".into(),
                ..Default::default()
            })
        };
        let failed_login = decision(401, "via_upstream", None);
        assert_eq!(
            attributable(named(PrincipalSource::BasicAuth), &failed_login),
            None
        );
        let blocked = DecisionView {
            verdict: Verdict::Deny,
            mechanism: Mechanism::WardenDenyList,
            deny_kind: DenyKind::Blocked,
            reason: "",
            policy: "",
            warden_decision_id: 1,
        };
        assert_eq!(
            attributable(named(PrincipalSource::BasicAuth), &blocked),
            None
        );
        assert_eq!(attributable(named(PrincipalSource::ApiKey), &blocked), None);
        assert!(attributable(named(PrincipalSource::Mtls), &blocked).is_some());
        let forbidden = decision(403, "rbac_access_denied_matched_policy[none]", None);
        assert!(attributable(named(PrincipalSource::Jwt), &forbidden).is_some());
        let allowed = decision(200, "via_upstream", None);
        assert!(attributable(named(PrincipalSource::BasicAuth), &allowed).is_some());
    }
}
