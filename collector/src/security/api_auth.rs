//! Who is calling the HTTP API: a bearer token (a configured one, stored hashed, or the local
//! admin token), a JWT from the configured OIDC issuer, or a verified client certificate; and
//! the role each grants.

use super::conn::ConnInfo;
use super::credentials::{Pattern, Role, TokenHash, bearer};
use super::oidc::Oidc;
use crate::config::ApiCredentialConfig;
use crate::error::Error;
use axum::http::HeaderMap;
use std::sync::Arc;

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// A bearer token.
    Token,
    /// A client certificate.
    Certificate,
    /// A JWT from the OIDC issuer.
    Jwt,
}

impl CallerKind {
    /// The kind's name in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            CallerKind::Token => "token",
            CallerKind::Certificate => "certificate",
            CallerKind::Jwt => "jwt",
        }
    }
}

/// An authenticated API caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The credential's name, the JWT's subject, or the certificate credential's name.
    pub name: String,
    /// How it authenticated.
    pub kind: CallerKind,
    /// What it may do.
    pub role: Role,
}

#[derive(Debug, Clone)]
enum Secret {
    Token(TokenHash),
    Certificate(Pattern),
}

/// One API credential.
#[derive(Debug, Clone)]
pub struct ApiCredential {
    name: String,
    role: Role,
    secret: Secret,
}

impl ApiCredential {
    /// A token credential (the local admin token).
    pub fn token(name: &str, role: Role, hash: TokenHash) -> Self {
        ApiCredential {
            name: name.into(),
            role,
            secret: Secret::Token(hash),
        }
    }
}

/// The API's credentials.
pub struct ApiAuth {
    credentials: Vec<ApiCredential>,
    oidc: Option<Arc<Oidc>>,
}

impl ApiAuth {
    /// Builds the credential list; `extra` holds the local admin token.
    pub fn new(
        configured: &[ApiCredentialConfig],
        extra: Vec<ApiCredential>,
        oidc: Option<Arc<Oidc>>,
    ) -> Result<ApiAuth, String> {
        let mut credentials = Vec::new();
        for c in configured {
            let secret = match (&c.token_sha256, &c.certificate) {
                (Some(t), None) => Secret::Token(t.parse()?),
                (None, Some(p)) => Secret::Certificate(p.parse()?),
                _ => {
                    return Err(format!(
                        "http.credentials {:?}: set exactly one of token_sha256 and certificate",
                        c.name
                    ));
                }
            };
            credentials.push(ApiCredential {
                name: c.name.clone(),
                role: c.role,
                secret,
            });
        }
        credentials.extend(extra);
        Ok(ApiAuth { credentials, oidc })
    }

    /// Who is calling. A bearer credential, when sent, must be valid (a wrong token is not
    /// silently replaced by a certificate); otherwise the client certificate decides.
    pub fn authenticate(&self, headers: &HeaderMap, conn: &ConnInfo) -> Result<Caller, Error> {
        if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
            let token = value.to_str().ok().and_then(bearer).ok_or_else(|| {
                Error::Unauthenticated("the Authorization header is not `Bearer <token>`".into())
            })?;
            if let Some(c) = self
                .credentials
                .iter()
                .find(|c| matches!(&c.secret, Secret::Token(h) if h.matches(token)))
            {
                return Ok(Caller {
                    name: c.name.clone(),
                    kind: CallerKind::Token,
                    role: c.role,
                });
            }
            if token.matches('.').count() == 2
                && let Some(oidc) = &self.oidc
            {
                let jwt = oidc
                    .verify(token)
                    .map_err(|e| Error::Unauthenticated(format!("JWT refused: {e}")))?;
                return Ok(Caller {
                    name: jwt.subject,
                    kind: CallerKind::Jwt,
                    role: jwt.role,
                });
            }
            return Err(Error::Unauthenticated("invalid bearer token".into()));
        }
        if let Some(peer) = &conn.peer {
            return self
                .credentials
                .iter()
                .find(|c| {
                    matches!(&c.secret, Secret::Certificate(p) if peer.names().any(|n| p.matches(n)))
                })
                .map(|c| Caller {
                    name: c.name.clone(),
                    kind: CallerKind::Certificate,
                    role: c.role,
                })
                .ok_or_else(|| {
                    Error::Unauthenticated(format!(
                        "client certificate {:?} is not an API credential",
                        peer.display_name()
                    ))
                });
        }
        Err(Error::Unauthenticated(
            "no credential: send `Authorization: Bearer <token>` (the CLI reads --token-file, WARDEN_TOKEN or the local admin token) or a client certificate".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tls::PeerCertificate;

    fn conn(peer: Option<&str>) -> ConnInfo {
        ConnInfo {
            remote: "127.0.0.1:1".parse().unwrap(),
            tls: peer.is_some(),
            peer: peer.map(|n| {
                Arc::new(PeerCertificate {
                    subject: format!("CN={n}"),
                    common_name: Some(n.into()),
                    dns_names: vec![],
                    uris: vec![],
                    fingerprint: "00".into(),
                })
            }),
        }
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    fn auth() -> ApiAuth {
        ApiAuth::new(
            &[
                ApiCredentialConfig {
                    name: "alice".into(),
                    role: Role::Operator,
                    token_sha256: Some(TokenHash::of("wdn_alice").to_hex()),
                    certificate: None,
                },
                ApiCredentialConfig {
                    name: "ops-laptops".into(),
                    role: Role::Viewer,
                    certificate: Some("*.ops.example".into()),
                    token_sha256: None,
                },
            ],
            vec![ApiCredential::token(
                "local-admin",
                Role::Admin,
                TokenHash::of("wdn_root"),
            )],
            None,
        )
        .unwrap()
    }

    #[test]
    fn tokens_and_certificates_map_to_roles() {
        let a = auth();
        let c = a
            .authenticate(&headers("Bearer wdn_alice"), &conn(None))
            .unwrap();
        assert_eq!(
            (c.name.as_str(), c.role, c.kind),
            ("alice", Role::Operator, CallerKind::Token)
        );
        let c = a
            .authenticate(&headers("Bearer wdn_root"), &conn(None))
            .unwrap();
        assert_eq!(c.role, Role::Admin);
        let c = a
            .authenticate(&HeaderMap::new(), &conn(Some("laptop1.ops.example")))
            .unwrap();
        assert_eq!((c.name.as_str(), c.role), ("ops-laptops", Role::Viewer));
    }

    #[test]
    fn a_wrong_token_is_refused_even_with_a_good_certificate() {
        let a = auth();
        let e = a
            .authenticate(
                &headers("Bearer wdn_wrong"),
                &conn(Some("laptop1.ops.example")),
            )
            .unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(_)));
        assert!(a.authenticate(&HeaderMap::new(), &conn(None)).is_err());
        assert!(
            a.authenticate(&HeaderMap::new(), &conn(Some("evil.example")))
                .is_err()
        );
        assert!(a.authenticate(&headers("Basic abc"), &conn(None)).is_err());
    }
}
