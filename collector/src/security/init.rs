//! `warden init`: everything a first deployment needs to run with TLS and least privilege: a CA,
//! the collector's server certificate, the filters' client certificate, an admin token and a
//! filter token, and a `warden.toml` that uses them. Keys and tokens are written owner-only;
//! nothing that exists is overwritten.

use super::credentials::{TokenHash, new_token};
use super::local::write_private;
use crate::cli::InitArgs;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::Path;

fn rcgen_error(what: &'static str) -> impl Fn(rcgen::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// Runs `warden init`; returns what it did, for the terminal.
pub fn run(args: &InitArgs) -> Result<String, String> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create: {e}"))?;
    let files = [
        "ca.pem",
        "ca-key.pem",
        "collector.pem",
        "collector-key.pem",
        "filter.pem",
        "filter-key.pem",
        "admin.token",
        "filter.token",
        "warden.toml",
    ];
    for f in files {
        if dir.join(f).exists() {
            return Err(format!(
                "{f} exists already; nothing was written (remove the directory's files or choose another --dir)"
            ));
        }
    }
    let ca_key = KeyPair::generate().map_err(rcgen_error("CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Warden CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "Warden");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca_params, args.days.saturating_mul(5));
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(rcgen_error("CA certificate"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = Issuer::new(ca_params, ca_key);

    let mut names = vec!["localhost".to_string()];
    let mut ips: Vec<std::net::IpAddr> = vec![
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ];
    for h in &args.hosts {
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => names.push(h.clone()),
        }
    }
    let server_key = KeyPair::generate().map_err(rcgen_error("collector key"))?;
    let mut server =
        CertificateParams::new(names.clone()).map_err(rcgen_error("collector names"))?;
    server
        .subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    server
        .distinguished_name
        .push(DnType::CommonName, "warden-collector");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut server, args.days);
    let server_cert = server
        .signed_by(&server_key, &ca)
        .map_err(rcgen_error("collector certificate"))?;

    let filter_key = KeyPair::generate().map_err(rcgen_error("filter key"))?;
    let mut filter = CertificateParams::default();
    filter
        .distinguished_name
        .push(DnType::CommonName, "warden-filter");
    filter.subject_alt_names = vec![SanType::URI(
        args.filter_identity
            .as_str()
            .try_into()
            .map_err(rcgen_error("--filter-identity"))?,
    )];
    filter.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    filter.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut filter, args.days);
    let filter_cert = filter
        .signed_by(&filter_key, &ca)
        .map_err(rcgen_error("filter certificate"))?;

    let admin_token = new_token()?;
    let filter_token = new_token()?;
    let write = |name: &str, text: &str, private: bool| -> Result<(), String> {
        let path = dir.join(name);
        let result = if private {
            write_private(&path, text.as_bytes())
        } else {
            std::fs::write(&path, text)
        };
        result.map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("ca.pem", &ca_cert.pem(), false)?;
    write("ca-key.pem", &ca_key_pem, true)?;
    write("collector.pem", &server_cert.pem(), false)?;
    write("collector-key.pem", &server_key.serialize_pem(), true)?;
    write("filter.pem", &filter_cert.pem(), false)?;
    write("filter-key.pem", &filter_key.serialize_pem(), true)?;
    write("admin.token", &format!("{admin_token}\n"), true)?;
    write("filter.token", &format!("{filter_token}\n"), true)?;
    write(
        "warden.toml",
        &config(
            args,
            &TokenHash::of(&admin_token),
            &TokenHash::of(&filter_token),
        ),
        false,
    )?;
    Ok(summary(dir, &names, args))
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = std::time::SystemTime::now();
    let before = now - std::time::Duration::from_secs(300);
    let after = now + std::time::Duration::from_secs(u64::from(days.max(1)) * 86_400);
    params.not_before = before.into();
    params.not_after = after.into();
}

fn config(args: &InitArgs, admin: &TokenHash, filter: &TokenHash) -> String {
    format!(
        r#"# Written by `warden init`: TLS on both listeners, filters authenticated by certificate or
# token, API callers by token. Paths are relative to this file. Add [[http.credentials]] for
# each person or system (`warden token new` makes a token and prints its hash).

[grpc]
listen = "0.0.0.0:50051"

[grpc.tls]
cert = "collector.pem"
key = "collector-key.pem"
client_ca = "ca.pem"

# Filters presenting the client certificate filter.pem (Envoy's transport socket)...
[[grpc.credentials]]
name = "filters-by-certificate"
certificate = "{identity}"
node_ids = ["*"]

# ...or the token in filter.token (Envoy's vm_config.environment_variables).
[[grpc.credentials]]
name = "filters-by-token"
token_sha256 = "{filter}"
node_ids = ["*"]

[http]
listen = "0.0.0.0:9090"

[http.tls]
cert = "collector.pem"
key = "collector-key.pem"
client_ca = "ca.pem"

[[http.credentials]]
name = "admin"
role = "admin"
token_sha256 = "{admin}"
"#,
        identity = args.filter_identity,
        filter = filter.to_hex(),
        admin = admin.to_hex(),
    )
}

fn summary(dir: &Path, names: &[String], args: &InitArgs) -> String {
    format!(
        "wrote to {dir}:
  ca.pem                 the CA (trust it in Envoy's collector cluster and in the CLI: --ca)
  collector.pem, -key    the collector's certificate ({names}, 127.0.0.1, ::1; {days} days)
  filter.pem, -key       the filters' client certificate (SAN {identity})
  admin.token            an admin API token (the CLI: --token-file)
  filter.token           a filter token (Envoy: vm_config.environment_variables)
  warden.toml            a configuration using them: warden serve --config {dir}/warden.toml
  ca-key.pem             the CA's key: keep it offline; it signs new certificates
keys and tokens are readable by their owner only
",
        dir = dir.display(),
        names = names.join(", "),
        days = args.days,
        identity = args.filter_identity,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn init_writes_a_working_configuration_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let args = InitArgs {
            dir: dir.path().join("pki"),
            hosts: vec!["warden.example".into(), "10.0.0.5".into()],
            filter_identity: "spiffe://warden/filter".into(),
            days: 30,
        };
        let out = run(&args).unwrap();
        assert!(out.contains("warden.example"), "{out}");
        let config_path = args.dir.join("warden.toml");
        let config = Config::load(Some(&config_path)).unwrap();
        let tls = config.grpc.tls.as_ref().unwrap();
        assert!(tls.cert.is_absolute() && tls.cert.exists());
        assert!(
            crate::security::tls::server_config(tls, crate::security::tls::Protocols::Http2)
                .is_ok()
        );
        assert!(config.check_exposure().is_ok(), "TLS on both listeners");
        let token = std::fs::read_to_string(args.dir.join("admin.token")).unwrap();
        let hash = config.http.credentials[0].token_sha256.clone().unwrap();
        assert!(hash.parse::<TokenHash>().unwrap().matches(token.trim()));
        let filter_pem = std::fs::read(args.dir.join("filter.pem")).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&filter_pem)
            .map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())
            .unwrap();
        let peer = crate::security::tls::PeerCertificate::from_der(&der).unwrap();
        assert_eq!(peer.uris, vec!["spiffe://warden/filter".to_string()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [
                "ca-key.pem",
                "collector-key.pem",
                "filter-key.pem",
                "admin.token",
            ] {
                let mode = std::fs::metadata(args.dir.join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o077, 0, "{f} is owner-only");
            }
        }
        let again = run(&args).unwrap_err();
        assert!(again.contains("exists already"), "{again}");
    }
}
