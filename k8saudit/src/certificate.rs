//! The certificate of a TLS Secret, summarised: fingerprint, subject, DNS names and validity of
//! the first certificate in `tls.crt` (the leaf; the rest of a chain are its issuers). Only
//! `tls.crt` is ever read, never `tls.key`, and only a certificate block of it: a private key
//! pasted into `tls.crt` by mistake is skipped, not summarised.

use crate::json::sha256_hex;
use crate::record::CertificateSummary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat};
use x509_parser::extensions::GeneralName;

/// Largest `tls.crt` read, in bytes (a Secret is at most 1 MiB).
const MAX_CRT_BYTES: usize = 1024 * 1024;

const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const END: &[u8] = b"-----END CERTIFICATE-----";

/// Summarises `data["tls.crt"]` as the API server shows it: base64 of PEM.
pub(crate) fn from_base64_pem(b64: &str) -> Option<CertificateSummary> {
    if b64.len() > MAX_CRT_BYTES * 4 / 3 + 4 {
        return None;
    }
    let compact: Vec<u8> = b64.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let pem = STANDARD.decode(compact).ok()?;
    from_pem(&pem)
}

/// Summarises PEM text (`stringData["tls.crt"]`), or DER when there is no PEM block.
pub(crate) fn from_pem(pem: &[u8]) -> Option<CertificateSummary> {
    if pem.len() > MAX_CRT_BYTES {
        return None;
    }
    let der = match find(pem, BEGIN) {
        Some(start) => {
            let body = pem.get(start + BEGIN.len()..)?;
            let end = find(body, END)?;
            let b64: Vec<u8> = body
                .get(..end)?
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            STANDARD.decode(b64).ok()?
        }
        None if pem.first() == Some(&0x30) => pem.to_vec(),
        None => return None,
    };
    from_der(&der)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn from_der(der: &[u8]) -> Option<CertificateSummary> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(d) = name {
                dns_names.push((*d).to_string());
            }
        }
    }
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    Some(CertificateSummary {
        sha256: sha256_hex(der),
        subject: cert.subject().to_string(),
        dns_names,
        not_before: rfc3339(not_before),
        not_after: rfc3339(not_after),
        not_after_ms: not_after.saturating_mul(1000),
    })
}

fn rfc3339(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, date_time_ymd};

    /// A self-signed certificate for `names`, valid 2026-01-01 to 2027-03-01: (PEM, DER, key PEM).
    pub fn make_cert(names: &[&str]) -> (String, Vec<u8>, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.not_before = date_time_ymd(2026, 1, 1);
        params.not_after = date_time_ymd(2027, 3, 1);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), cert.der().to_vec(), key.serialize_pem())
    }

    #[test]
    fn the_leaf_of_a_chain_is_summarised() {
        let (leaf, der, key) = make_cert(&["shop.example.com", "www.shop.example.com"]);
        let (issuer, _, _) = make_cert(&["ca.example.com"]);
        // A key pasted first, by mistake, is skipped; the issuer after the leaf is ignored.
        let chain = format!("{key}{leaf}{issuer}");
        let s = from_base64_pem(&STANDARD.encode(chain)).unwrap();
        assert_eq!(s.sha256, sha256_hex(&der));
        assert_eq!(s.dns_names, ["shop.example.com", "www.shop.example.com"]);
        assert_eq!(s.subject, "CN=shop.example.com");
        assert_eq!(s.not_before, "2026-01-01T00:00:00Z");
        assert_eq!(s.not_after, "2027-03-01T00:00:00Z");
        assert_eq!(s.not_after_ms, 1_803_859_200_000);
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(from_base64_pem("not base64!"), None);
        assert_eq!(from_base64_pem(&STANDARD.encode("hello")), None);
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(from_pem(broken.as_bytes()), None);
        assert_eq!(from_pem(b"-----BEGIN CERTIFICATE-----\nno end"), None);
    }
}
