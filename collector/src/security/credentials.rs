//! The pieces credentials are made of: bearer tokens (kept only as SHA-256 hashes and compared
//! in constant time), name patterns (`ingress-*`, `spiffe://cluster.local/ns/gw/sa/*`) for node
//! ids and certificate names, and the roles of API callers.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// What an API caller may do. Each of viewer, operator and admin may do what the roles below it
/// may; `k8s-audit` stands apart, below them all: it may only post the Kubernetes API server's
/// audit events, and nothing else may (a caller that could, could forge the change trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The Kubernetes API server's audit webhook: `POST /api/v1/k8s-audit` only. Declared first
    /// so that it orders below every other role and passes no `Role(..)` check.
    #[serde(rename = "k8s-audit")]
    K8sAudit,
    /// Records, reports, explain, the decision, allowlist, filter and rule lists.
    Viewer,
    /// Ban, unban, allowlist changes.
    Operator,
    /// Everything else: rules reload and replay, the audit trails.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::K8sAudit => "k8s-audit",
        }
    }

    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::K8sAudit, Role::Viewer, Role::Operator, Role::Admin];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role (viewer, operator, admin, k8s-audit)"))
    }
}

/// A token's SHA-256, as configured (`token_sha256 = "<64 hex digits>"`).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but there is no reason to spread it through logs either.
        f.write_str("TokenHash(..)")
    }
}

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.trim().as_bytes()).into())
    }

    /// Whether `token` hashes to this. The comparison of the digests does not stop at the first
    /// difference.
    pub fn matches(&self, token: &str) -> bool {
        let presented = TokenHash::of(token);
        presented
            .0
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        super::tls::hex(&self.0)
    }
}

impl FromStr for TokenHash {
    type Err = String;

    fn from_str(s: &str) -> Result<TokenHash, String> {
        let s = s.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                "is not a SHA-256 in hex (64 digits; `warden token hash` prints one)".into(),
            );
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(chunk).map_err(|e| e.to_string())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|e| e.to_string())?;
        }
        Ok(TokenHash(out))
    }
}

/// A new random token: 32 bytes from the system's secure generator, URL-safe base64, with a
/// `wdn_` prefix so that secret scanners and people recognise it.
pub fn new_token() -> Result<String, String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random generator failed".to_string())?;
    Ok(format!(
        "wdn_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The token of an `authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A name pattern: `*` matches any run of characters (none included), `?` one character,
/// everything else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(&self.0, name)
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Pattern, String> {
        if s.is_empty() {
            return Err("must not be empty (\"*\" matches everything)".into());
        }
        if s.len() > 512 || s.chars().any(char::is_control) {
            return Err(format!("{s:?} is not a name pattern"));
        }
        Ok(Pattern(s.to_string()))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` matches `pattern` (`*` any run of characters, `?` one).
fn glob(pattern: &str, name: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_stars_only() {
        let p = |s: &str| s.parse::<Pattern>().unwrap();
        assert!(p("ingress-*").matches("ingress-a"));
        assert!(p("ingress-*").matches("ingress-"));
        assert!(!p("ingress-*").matches("egress-a"));
        assert!(p("*").matches(""));
        assert!(p("spiffe://x/ns/*/sa/gw").matches("spiffe://x/ns/istio/sa/gw"));
        assert!(!p("spiffe://x/ns/*/sa/gw").matches("spiffe://x/ns/istio/sa/other"));
        assert!(p("a*b*c").matches("axxbyyc"));
        assert!(!p("a*b*c").matches("axxbyy"));
        assert!(p("exact").matches("exact"));
        assert!(!p("exact").matches("exactly"));
        assert!("".parse::<Pattern>().is_err());
    }

    #[test]
    fn tokens_are_kept_as_hashes_and_compared_whole() {
        let token = new_token().unwrap();
        assert!(token.starts_with("wdn_") && token.len() > 40);
        let hash = TokenHash::of(&token);
        assert!(hash.matches(&token));
        assert!(!hash.matches("wdn_other"));
        let parsed: TokenHash = hash.to_hex().parse().unwrap();
        assert_eq!(parsed, hash);
        assert!("abc".parse::<TokenHash>().is_err());
        assert!(!format!("{hash:?}").contains(&hash.to_hex()));
        assert_ne!(new_token().unwrap(), token);
    }

    #[test]
    fn bearer_values_parse() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
        assert_eq!("k8s-audit".parse::<Role>().unwrap(), Role::K8sAudit);
        assert!(
            Role::K8sAudit < Role::Viewer,
            "the webhook role passes no viewer check"
        );
    }
}
