//! Bearer JWTs from an OpenID Connect issuer: the signature checked against the issuer's keys
//! (a JWKS file, or a URL fetched at start and every `jwks_refresh`), then `iss`, `aud`, `exp`
//! and `nbf`; the caller's role from a claim. Only asymmetric algorithms are accepted: a JWKS
//! holds public keys, and accepting `HS*` would let a public key sign.

use super::credentials::Role;
use crate::config::OidcConfig;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_S: u64 = 30;

/// The verifier.
pub struct Oidc {
    config: OidcConfig,
    keys: RwLock<JwkSet>,
}

/// A verified token's caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtCaller {
    /// `sub`.
    pub subject: String,
    /// The highest role the role claim grants.
    pub role: Role,
}

async fn load_keys(config: &OidcConfig) -> Result<JwkSet, String> {
    let text = match (&config.jwks_file, &config.jwks_url) {
        (Some(file), _) => std::fs::read_to_string(file)
            .map_err(|e| format!("http.oidc.jwks_file {}: {e}", file.display()))?,
        (None, Some(url)) => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            let response = client
                .get(url)
                .send()
                .await
                .map_err(|e| format!("http.oidc.jwks_url: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("http.oidc.jwks_url: {}", response.status()));
            }
            response.text().await.map_err(|e| e.to_string())?
        }
        (None, None) => return Err("http.oidc: no jwks_file or jwks_url".into()),
    };
    serde_json::from_str(&text).map_err(|e| format!("http.oidc: the JWKS is not valid: {e}"))
}

impl Oidc {
    /// Loads the keys; an unreadable or invalid JWKS stops start-up with the reason.
    pub async fn load(config: &OidcConfig) -> Result<Arc<Oidc>, String> {
        let keys = load_keys(config).await?;
        Ok(Arc::new(Oidc {
            config: config.clone(),
            keys: RwLock::new(keys),
        }))
    }

    /// Reloads the keys every `jwks_refresh` until `stop`; a failed reload keeps the old keys.
    pub async fn refresh(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.jwks_refresh.0.max(Duration::from_secs(1))) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match load_keys(&self.config).await {
                Ok(keys) => {
                    if let Ok(mut k) = self.keys.write() {
                        *k = keys;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "OIDC keys not refreshed; keeping the previous ones")
                }
            }
        }
    }

    /// Verifies `token`; the error says what failed (never the token).
    pub fn verify(&self, token: &str) -> Result<JwtCaller, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let key = {
            let keys = self
                .keys
                .read()
                .map_err(|_| "the OIDC keys are unavailable".to_string())?;
            let jwk = match &header.kid {
                Some(kid) => keys.find(kid).cloned(),
                None if keys.keys.len() == 1 => keys.keys.first().cloned(),
                None => None,
            }
            .ok_or_else(|| "signed by a key the issuer does not publish".to_string())?;
            DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&[self.config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the token has expired".to_string()
                }
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    format!("the issuer is not {}", self.config.issuer)
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    format!("the audience is not {}", self.config.audience)
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the signature does not verify".to_string()
                }
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    "the token is not valid yet".to_string()
                }
                other => format!("invalid token: {other:?}"),
            },
        )?;
        let claims = data.claims;
        let subject = claims["sub"].as_str().unwrap_or_default().to_string();
        let values: Vec<&str> = match &claims[self.config.role_claim.as_str()] {
            serde_json::Value::String(s) => vec![s.as_str()],
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        let role = values
            .iter()
            .filter_map(|v| {
                if self.config.roles.is_empty() {
                    v.parse::<Role>().ok()
                } else {
                    self.config.roles.get(*v).copied()
                }
            })
            // The audit webhook's role is only ever a configured credential of the API server:
            // an identity provider's claim cannot make anyone a writer of the change trail.
            .filter(|r| *r != Role::K8sAudit)
            .max()
            .ok_or_else(|| {
                format!(
                    "the token grants no Warden role (claim {:?})",
                    self.config.role_claim
                )
            })?;
        Ok(JwtCaller { subject, role })
    }
}
