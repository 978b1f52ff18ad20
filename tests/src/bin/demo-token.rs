//! Mints a JWT that the demo's Envoy (`envoy/auth.yaml.tmpl`) accepts, and keeps the files that
//! Envoy reads in one directory.
//!
//! Usage: `demo-token DIR [--sub NAME] [--role ROLE] [--ttl-secs N]`
//! (defaults: `alice`, `admin`, 3600).
//!
//! The first call creates in DIR: `jwt-key.pk8` (the signing key, mode 0600), `jwks.json`,
//! `htpasswd` (user `demo`, password `demo`), `ca.pem`, `server.pem`, `server-key.pem`,
//! `client.pem` and `client-key.pem` (a client certificate for the mTLS listener). Later calls
//! reuse them, so every token printed verifies against the JWKS Envoy loaded. The token is the
//! only thing written to stdout: `TOKEN=$(demo-token DIR)`.

use anyhow::{Context, bail};
use std::path::Path;
use std::time::Duration;
use warden_e2e::auth::{JwtSigner, Pki, claims, htpasswd};

const KID: &str = "warden-demo-1";

struct Args {
    dir: String,
    sub: String,
    role: Option<String>,
    ttl: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        dir: String::new(),
        sub: "alice".into(),
        role: Some("admin".into()),
        ttl: Duration::from_secs(3600),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--sub" => parsed.sub = value()?,
            // An empty role mints a token without the claim (RBAC denies it on /admin/).
            "--role" => parsed.role = Some(value()?).filter(|role| !role.is_empty()),
            "--ttl-secs" => {
                parsed.ttl = Duration::from_secs(value()?.parse().context("--ttl-secs")?)
            }
            flag if flag.starts_with("--") => bail!("unknown option {flag}"),
            dir if parsed.dir.is_empty() => parsed.dir = dir.to_string(),
            extra => bail!("unexpected argument {extra}"),
        }
    }
    if parsed.dir.is_empty() {
        bail!("usage: demo-token DIR [--sub NAME] [--role ROLE] [--ttl-secs N]");
    }
    Ok(parsed)
}

fn write_new(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

fn signer(dir: &Path) -> anyhow::Result<JwtSigner> {
    let key_path = dir.join("jwt-key.pk8");
    if key_path.exists() {
        let pkcs8 =
            std::fs::read(&key_path).with_context(|| format!("read {}", key_path.display()))?;
        return JwtSigner::from_pkcs8(KID, &pkcs8).map_err(anyhow::Error::msg);
    }
    let signer = JwtSigner::generate(KID).map_err(anyhow::Error::msg)?;
    write_new(&key_path, signer.pkcs8())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
    write_new(&dir.join("jwks.json"), signer.jwks().as_bytes())?;
    Ok(signer)
}

fn certificates_and_users(dir: &Path) -> anyhow::Result<()> {
    if !dir.join("htpasswd").exists() {
        write_new(
            &dir.join("htpasswd"),
            htpasswd(&[("demo", "demo")]).as_bytes(),
        )?;
    }
    if !dir.join("ca.pem").exists() {
        let pki = Pki::generate().map_err(anyhow::Error::msg)?;
        write_new(&dir.join("server.pem"), pki.server_cert_pem.as_bytes())?;
        write_new(&dir.join("server-key.pem"), pki.server_key_pem.as_bytes())?;
        write_new(&dir.join("client.pem"), pki.alice.cert_pem.as_bytes())?;
        write_new(&dir.join("client-key.pem"), pki.alice.key_pem.as_bytes())?;
        // Last: its presence means the set is complete.
        write_new(&dir.join("ca.pem"), pki.ca_pem.as_bytes())?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = Path::new(&args.dir);
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let signer = signer(dir)?;
    certificates_and_users(dir)?;
    let token = signer
        .sign(&claims(&args.sub, args.role.as_deref(), args.ttl))
        .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}
