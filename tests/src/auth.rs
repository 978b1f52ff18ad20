//! Authentication material made at test time, and a stack whose Envoy runs Envoy's own auth
//! filters behind the Warden filter (`envoy/auth.yaml.tmpl`).
//!
//! Nothing here is a fixture on disk: every key, certificate, token and password is generated per
//! run, so a value found in the collector's database can only have come from this run's requests.
//! - [`JwtSigner`]: an ES256 (P-256) key, its JWKS, and token signing.
//! - [`Pki`]: a test CA with a server certificate and a client certificate (`alice`), and a
//!   client certificate from an unrelated CA that Envoy must refuse.
//! - [`htpasswd`] / [`basic_authorization`]: basic-auth users in the `{SHA}` format Envoy reads.
//! - [`AuthStack`]: upstream + collector + Envoy, with the plain and the mTLS listener.

use crate::{Cli, Envoy, Stack, paths};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// The issuer the Envoy configuration trusts.
pub const ISSUER: &str = "https://issuer.warden.test";
/// The audience the Envoy configuration requires.
pub const AUDIENCE: &str = "warden-api";
/// The good client certificate's URI SAN (its principal name).
pub const ALICE_URI_SAN: &str = "spiffe://warden.test/ns/default/sa/alice";
/// The good client certificate's DNS SAN.
pub const ALICE_DNS_SAN: &str = "alice.warden.test";
/// The good client certificate's subject common name.
pub const ALICE_COMMON_NAME: &str = "alice";
/// The basic-auth user the stack's htpasswd knows.
pub const BASIC_USER: &str = "bob";

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// `bytes` random bytes as lower-case hex, for passwords and key values unique to this run.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // SystemRandom only fails when the OS has no entropy source; a zero value still works as a
    // test string, and uniqueness across runs is a convenience, not a requirement.
    let _ = SystemRandom::new().fill(&mut buf);
    hex(&buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of `bytes` (how Envoy and Warden fingerprint a certificate's DER).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

// ---------------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------------

/// An ES256 signing key with its key id.
pub struct JwtSigner {
    key: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    kid: String,
}

impl JwtSigner {
    /// A fresh P-256 key.
    pub fn generate(kid: &str) -> Result<Self, String> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| "cannot generate a P-256 key".to_string())?;
        Self::from_pkcs8(kid, pkcs8.as_ref())
    }

    /// A key saved earlier with [`JwtSigner::pkcs8`].
    pub fn from_pkcs8(kid: &str, pkcs8: &[u8]) -> Result<Self, String> {
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
        Ok(JwtSigner {
            key,
            pkcs8: pkcs8.to_vec(),
            kid: kid.to_string(),
        })
    }

    /// The private key as PKCS#8 DER, to save and reload.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then 32 bytes of x, then 32 bytes of y.
        let point = self.key.public_key().as_ref();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// A JWKS holding only this key, as JSON text for `local_jwks.filename`.
    pub fn jwks(&self) -> String {
        json!({ "keys": [self.jwk()] }).to_string()
    }

    /// A compact JWS (ES256) of `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| "ES256 signing failed".to_string())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// Claims of a token that Envoy accepts: [`ISSUER`], [`AUDIENCE`], issued now, valid for
/// `valid_for`; `role` only when given. Tests change fields to make bad tokens.
pub fn claims(sub: &str, role: Option<&str>, valid_for: Duration) -> Value {
    let now = now_secs();
    let mut claims = json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + valid_for.as_secs() as i64,
        "email": format!("{sub}@warden.test"),
        "client_id": format!("{sub}-cli"),
    });
    if let Some(role) = role {
        claims["role"] = json!(role);
    }
    claims
}

/// The last segment of a compact JWS: the part that proves it, and the part no store may keep.
pub fn jwt_signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

// ---------------------------------------------------------------------------------------------
// X.509
// ---------------------------------------------------------------------------------------------

/// A client certificate and its key.
pub struct ClientCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl ClientCert {
    /// Certificate and key in one PEM, as `reqwest::Identity::from_pem` wants them.
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// Hex SHA-256 of the certificate's DER.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.der)
    }
}

/// Runs `warden init --dir DIR` (plus `args`) and returns DIR: a CA, the collector's and a
/// filter's certificates (SAN `spiffe://warden/filter`), tokens.
pub fn warden_init(dir: &Path, args: &[&str]) -> Result<PathBuf, String> {
    let dir_arg = dir.display().to_string();
    let out = Cli::new().run(&[&["init", "--dir", dir_arg.as_str()], args].concat());
    if !out.success() {
        return Err(format!("warden init: {}", out.stderr));
    }
    Ok(dir.to_path_buf())
}

/// A collector configuration with mTLS on the gRPC listener (the certificates `warden init`
/// wrote into `pki`) and one certificate credential, `gateway-certs`, for `spiffe://warden/filter`
/// covering `node_ids` (TOML list items, e.g. `"gateway-*"`).
pub fn mtls_collector_config(pki: &Path, node_ids: &str) -> String {
    let p = |file: &str| pki.join(file).display().to_string();
    format!(
        r#"
[grpc]
local_credential = false
[grpc.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
require_client_cert = true
[[grpc.credentials]]
name = "gateway-certs"
certificate = "spiffe://warden/filter"
node_ids = [{node_ids}]
"#,
        cert = p("collector.pem"),
        key = p("collector-key.pem"),
        ca = p("ca.pem"),
    )
}

/// A certificate signed by the CA `warden init` wrote into `pki_dir` (`ca.pem`, `ca-key.pem`),
/// with these DNS names and URI SANs: a rotated server certificate, or a client certificate
/// for a named identity.
pub fn issue_from_warden_ca(
    pki_dir: &Path,
    dns_names: &[&str],
    uris: &[&str],
    common_name: &str,
) -> Result<ClientCert, String> {
    let read = |f: &str| std::fs::read_to_string(pki_dir.join(f)).map_err(|e| format!("{f}: {e}"));
    let ca_key = rcgen::KeyPair::from_pem(&read("ca-key.pem")?).map_err(|e| e.to_string())?;
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key).map_err(|e| e.to_string())?;
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(dns_names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .map_err(|e| e.to_string())?;
    if dns_names.contains(&"localhost") {
        params.subject_alt_names.push(rcgen::SanType::IpAddress(
            std::net::Ipv4Addr::LOCALHOST.into(),
        ));
    }
    for uri in uris {
        let uri = rcgen::string::Ia5String::try_from(*uri).map_err(|e| e.to_string())?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    Ok(ClientCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    })
}

/// The test PKI.
pub struct Pki {
    /// The CA Envoy trusts for client certificates (and that signed its server certificate).
    pub ca_pem: String,
    /// Envoy's server certificate (SANs `localhost`, `127.0.0.1`), PEM.
    pub server_cert_pem: String,
    /// Envoy's server key, PEM.
    pub server_key_pem: String,
    /// A client certificate from the trusted CA: URI SAN [`ALICE_URI_SAN`], DNS SAN
    /// [`ALICE_DNS_SAN`], subject CN [`ALICE_COMMON_NAME`].
    pub alice: ClientCert,
    /// A client certificate with the same names from a CA Envoy does not trust.
    pub stranger: ClientCert,
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Warden Test");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn alice_params() -> Result<CertificateParams, String> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, ALICE_COMMON_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Warden Test");
    params.subject_alt_names = vec![
        SanType::URI(ALICE_URI_SAN.try_into().map_err(rcgen_error("URI SAN"))?),
        SanType::DnsName(ALICE_DNS_SAN.try_into().map_err(rcgen_error("DNS SAN"))?),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn client_cert(issuer: &Issuer<'_, KeyPair>) -> Result<ClientCert, String> {
    let key = KeyPair::generate().map_err(rcgen_error("client key"))?;
    let cert = alice_params()?
        .signed_by(&key, issuer)
        .map_err(rcgen_error("client certificate"))?;
    Ok(ClientCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    })
}

impl Pki {
    /// Generates a CA, a server certificate, a good client certificate and a stranger's.
    pub fn generate() -> Result<Self, String> {
        let ca_key = KeyPair::generate().map_err(rcgen_error("CA key"))?;
        let ca_template = ca_params("Warden Test CA");
        let ca_cert = ca_template
            .self_signed(&ca_key)
            .map_err(rcgen_error("CA certificate"))?;
        let ca = Issuer::new(ca_template, ca_key);

        let server_key = KeyPair::generate().map_err(rcgen_error("server key"))?;
        let mut server_params = CertificateParams::new(vec!["localhost".to_string()])
            .map_err(rcgen_error("server names"))?;
        server_params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        server_params
            .distinguished_name
            .push(DnType::CommonName, "envoy.warden.test");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .map_err(rcgen_error("server certificate"))?;

        let other_key = KeyPair::generate().map_err(rcgen_error("other CA key"))?;
        let other_ca = Issuer::new(ca_params("Somebody Else's CA"), other_key);

        Ok(Pki {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            alice: client_cert(&ca)?,
            stranger: client_cert(&other_ca)?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Basic auth
// ---------------------------------------------------------------------------------------------

/// htpasswd lines in the `{SHA}` format Envoy's basic_auth reads (base64 of SHA-1).
pub fn htpasswd(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(user, password)| {
            let digest =
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
            format!("{user}:{{SHA}}{}\n", STANDARD.encode(digest.as_ref()))
        })
        .collect()
}

/// An `Authorization` header value for basic auth.
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

// ---------------------------------------------------------------------------------------------
// Everything together, on disk for Envoy
// ---------------------------------------------------------------------------------------------

/// All the material of one run.
pub struct AuthMaterials {
    /// The key whose JWKS Envoy trusts.
    pub signer: JwtSigner,
    /// A key Envoy has never seen (for bad-signature tokens), with the trusted key's `kid`.
    pub impostor: JwtSigner,
    /// Certificates.
    pub pki: Pki,
    /// [`BASIC_USER`]'s password.
    pub basic_password: String,
}

impl AuthMaterials {
    /// Generates everything.
    pub fn generate() -> Result<Self, String> {
        Ok(AuthMaterials {
            signer: JwtSigner::generate("warden-test-1")?,
            impostor: JwtSigner::generate("warden-test-1")?,
            pki: Pki::generate()?,
            basic_password: format!("pw-{}", random_hex(12)),
        })
    }

    /// Writes the files `envoy/auth.yaml.tmpl` reads into `dir`, and returns its placeholders.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<(String, String)>, String> {
        let write = |name: &str, text: &str| -> Result<(String, String), String> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((name.to_string(), path.display().to_string()))
        };
        let files = [
            ("JWKS_PATH", write("jwks.json", &self.signer.jwks())?),
            (
                "HTPASSWD_PATH",
                write("htpasswd", &htpasswd(&[(BASIC_USER, &self.basic_password)]))?,
            ),
            ("CA_CERT", write("ca.pem", &self.pki.ca_pem)?),
            (
                "SERVER_CERT",
                write("server.pem", &self.pki.server_cert_pem)?,
            ),
            (
                "SERVER_KEY",
                write("server-key.pem", &self.pki.server_key_pem)?,
            ),
        ];
        Ok(files
            .into_iter()
            .map(|(placeholder, (_, path))| (placeholder.to_string(), path))
            .collect())
    }
}

/// The auth bootstrap template.
pub fn auth_template() -> PathBuf {
    paths::workspace_root().join("envoy/auth.yaml.tmpl")
}

/// The address of the listener called `name`, from the admin `/listeners` endpoint.
pub async fn listener_address(envoy: &Envoy, name: &str) -> Result<SocketAddr, String> {
    let (_, body) = envoy.admin_get("/listeners?format=json").await?;
    let listeners: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let socket = listeners["listener_statuses"]
        .as_array()
        .and_then(|all| all.iter().find(|l| l["name"] == name))
        .map(|status| &status["local_address"]["socket_address"])
        .ok_or_else(|| format!("no {name} listener in {body}"))?;
    format!(
        "{}:{}",
        socket["address"].as_str().unwrap_or("127.0.0.1"),
        socket["port_value"].as_u64().unwrap_or(0)
    )
    .parse()
    .map_err(|e| format!("{name} address in {body}: {e}"))
}

/// An upstream, a collector and an Envoy running `envoy/auth.yaml.tmpl` with fresh material.
pub struct AuthStack {
    /// Upstream, collector and Envoy; `stack.envoy.url(..)` is the plain listener.
    pub stack: Stack,
    /// The `ingress_mtls` listener's address.
    pub mtls: SocketAddr,
    /// The keys, certificates and passwords this Envoy trusts.
    pub materials: AuthMaterials,
    /// The secret of the filter's API-key fingerprints.
    pub api_key_secret: String,
    _files: TempDir,
}

/// The header the filter reads API keys from in these tests.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The one key `envoy/auth.yaml.tmpl`'s api_key_auth accepts on `/key/` (client `billing`).
pub const BILLING_API_KEY: &str = "ak-billing-test-0123456789abcdef";

impl AuthStack {
    /// Generates material, starts everything and finds the mTLS listener.
    pub async fn start() -> Self {
        let materials = AuthMaterials::generate().expect("generate auth material");
        let files = tempfile::Builder::new()
            .prefix("warden-auth-")
            .tempdir()
            .expect("temp dir");
        let mut extra = materials
            .write_to(files.path())
            .expect("write auth material");
        extra.push(("MTLS_LISTENER_PORT".into(), "0".into()));
        let api_key_secret = random_hex(16);
        let filter_config = json!({
            "batch": { "flush_interval_ms": 100 },
            "record": { "captured_headers": ["referer"] },
            "identity": {
                "jwt_extra_claims": ["email", "client_id", "role"],
                "api_key_header": API_KEY_HEADER,
                "api_key_secret": api_key_secret,
                "ext_authz_user_header": "x-auth-user",
                "basic_auth_user_header": "x-warden-basic-user",
                "api_key_client_header": "x-warden-api-client",
            },
        });
        let stack = Stack::start_with(|options| {
            options.template = auth_template();
            options.extra = extra;
            options.filter_config = filter_config;
        })
        .await;
        let mtls = listener_address(&stack.envoy, "ingress_mtls")
            .await
            .expect("find the mTLS listener");
        AuthStack {
            stack,
            mtls,
            materials,
            api_key_secret,
            _files: files,
        }
    }

    /// The URL of `path` on the plain listener.
    pub fn url(&self, path: &str) -> String {
        self.stack.envoy.url(path)
    }

    /// The URL of `path` on the mTLS listener.
    pub fn mtls_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.mtls)
    }

    /// A token for `claims` signed with the trusted key.
    pub fn token(&self, claims: &Value) -> String {
        self.materials.signer.sign(claims).expect("sign token")
    }

    /// An HTTPS client that trusts only the test CA and presents `cert`, if any.
    pub fn mtls_client(&self, cert: Option<&ClientCert>) -> reqwest::Client {
        let ca =
            reqwest::Certificate::from_pem(self.materials.pki.ca_pem.as_bytes()).expect("CA PEM");
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10));
        if let Some(cert) = cert {
            let identity = reqwest::Identity::from_pem(cert.identity_pem().as_bytes())
                .expect("client identity PEM");
            builder = builder.identity(identity);
        }
        builder.build().expect("mTLS client")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwk_carries_the_32_byte_coordinates_of_the_key() {
        let signer = JwtSigner::generate("k").unwrap();
        let jwk = signer.jwk();
        for coordinate in ["x", "y"] {
            let bytes = URL_SAFE_NO_PAD
                .decode(jwk[coordinate].as_str().unwrap())
                .unwrap();
            assert_eq!(bytes.len(), 32);
        }
    }

    #[test]
    fn a_token_verifies_with_its_own_key_and_not_with_another() {
        let signer = JwtSigner::generate("k").unwrap();
        let other = JwtSigner::generate("k").unwrap();
        let token = signer
            .sign(&claims("alice", Some("admin"), Duration::from_secs(60)))
            .unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let verify = |key: &JwtSigner| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                key.key.public_key().as_ref(),
            )
            .verify(input.as_bytes(), &signature)
        };
        assert!(verify(&signer).is_ok());
        assert!(verify(&other).is_err());
    }

    #[test]
    fn a_saved_key_reloads_to_the_same_public_key() {
        let signer = JwtSigner::generate("k").unwrap();
        let again = JwtSigner::from_pkcs8("k", signer.pkcs8()).unwrap();
        assert_eq!(signer.jwk(), again.jwk());
        assert!(JwtSigner::from_pkcs8("k", b"not a key").is_err());
    }

    #[test]
    fn htpasswd_uses_base64_sha1_like_apache() {
        // `htpasswd -nbs user password` prints this line.
        assert_eq!(
            htpasswd(&[("user", "password")]),
            "user:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"
        );
        assert_eq!(basic_authorization("demo", "demo"), "Basic ZGVtbzpkZW1v");
    }

    #[test]
    fn the_pki_issues_distinct_client_certificates() {
        let pki = Pki::generate().unwrap();
        assert_ne!(pki.alice.fingerprint(), pki.stranger.fingerprint());
        assert_eq!(pki.alice.fingerprint().len(), 64);
        assert!(pki.alice.identity_pem().contains("PRIVATE KEY"));
    }
}
