//! Warden guarding itself, end to end: filters over mTLS through a real Envoy, credentials bound
//! to node ids, the API's roles and audit trail, safe defaults, certificate rotation, and each
//! attack the issue found, replayed.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use warden_e2e::auth::{AUDIENCE, ISSUER, JwtSigner, claims, mtls_collector_config, warden_init};
use warden_e2e::secrets::assert_not_in_text;
use warden_e2e::{Cli, Client, Collector, CollectorTls, Envoy, EnvoyOptions, Stack, eventually};

fn p(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

fn collector_tls(trusted_ca: &Path, client: &Path) -> CollectorTls {
    CollectorTls {
        ca: trusted_ca.join("ca.pem"),
        cert: client.join("filter.pem"),
        key: client.join("filter-key.pem"),
        sni: "localhost".into(),
    }
}

#[tokio::test]
async fn a_filter_with_a_client_certificate_delivers_records_and_receives_bans_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = warden_init(&dir.path().join("pki"), &[]).unwrap();
    let stack =
        Stack::start_with_collector_config(&mtls_collector_config(&pki, r#""e2e-*""#), |o| {
            o.filter_token = None;
            o.collector_tls = Some(collector_tls(&pki, &pki));
        })
        .await;
    let filters = stack.collector.filters().await.unwrap();
    assert_eq!(filters["filters"][0]["credential"], "gateway-certs");
    let client = Client::from("127.0.0.41");
    assert_eq!(
        client.get(&stack.envoy.url("/anything/mtls")).await.status,
        200
    );
    stack
        .collector
        .cli()
        .ok(&["ban", "127.0.0.41", "--reason", "mtls push"]);
    // The ban reaches Envoy over mTLS.
    client
        .wait_for_status(&stack.envoy.url("/anything/mtls"), 403)
        .await;
    stack.wait_for_records("ip=127.0.0.41", 2).await;
}

#[tokio::test]
async fn filters_without_a_trusted_certificate_are_refused_and_envoy_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let pki = warden_init(&dir.path().join("pki"), &[]).unwrap();
    let stranger = warden_init(&dir.path().join("stranger"), &[]).unwrap();
    let collector = Collector::start_with_config(&mtls_collector_config(&pki, r#""*""#)).await;
    let upstream = warden_e2e::upstream::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // One Envoy presents a certificate from another CA, one none at all.
    let mut other_ca = EnvoyOptions::new(&collector, upstream);
    other_ca.filter_token = None;
    other_ca.collector_tls = Some(collector_tls(&pki, &stranger));
    let envoy_other = Envoy::start(other_ca).await;
    let mut no_cert = EnvoyOptions::new(&collector, upstream);
    no_cert.filter_token = None;
    no_cert.collector_tls = Some(CollectorTls {
        cert: PathBuf::new(),
        ..collector_tls(&pki, &pki)
    });
    no_cert.template = without_client_cert(&dir, &no_cert.template);
    let envoy_none = Envoy::start(no_cert).await;
    for envoy in [&envoy_other, &envoy_none] {
        for _ in 0..3 {
            assert_eq!(
                Client::from("127.0.0.42")
                    .get(&envoy.url("/anything/refused"))
                    .await
                    .status,
                200,
                "Envoy keeps serving its clients"
            );
        }
    }
    // Both refused handshakes are counted.
    collector
        .wait_for_metric("warden_tls_handshake_failures_total{listener=\"grpc\"}", 2)
        .await;
    let filters = collector.filters().await.unwrap();
    assert_eq!(filters["filters"], json!([]), "no filter got the list");
    assert!(collector.records("ip=127.0.0.42").await.unwrap().is_empty());
}

/// The template with the collector-tls block's client certificate removed.
fn without_client_cert(dir: &tempfile::TempDir, template: &Path) -> PathBuf {
    let text = std::fs::read_to_string(template).unwrap();
    let text = text.replace(
        "          tls_certificates:\n          - certificate_chain: { filename: \"${FILTER_CERT}\" }\n            private_key: { filename: \"${FILTER_KEY}\" }\n",
        "",
    );
    assert!(!text.contains("certificate_chain"), "the template changed");
    let path = dir.path().join("no-client-cert.yaml.tmpl");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_credential_that_does_not_cover_the_node_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = warden_init(&dir.path().join("pki"), &[]).unwrap();
    let collector =
        Collector::start_with_config(&mtls_collector_config(&pki, r#""gateway-*""#)).await;
    let upstream = warden_e2e::upstream::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut options = EnvoyOptions::new(&collector, upstream);
    options.filter_token = None;
    options.collector_tls = Some(collector_tls(&pki, &pki));
    let envoy = Envoy::start(options).await;
    assert_eq!(
        Client::from("127.0.0.43")
            .get(&envoy.url("/anything/x"))
            .await
            .status,
        200
    );
    // The node id's refusal is counted.
    collector
        .wait_for_metric("warden_grpc_refused_total{reason=\"permission_denied\"}", 1)
        .await;
    assert!(
        collector.log().contains("gateway-certs"),
        "the refusal is logged with the credential's name"
    );
    assert!(collector.records("ip=127.0.0.43").await.unwrap().is_empty());
}

/// Who calls, in the role matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Nobody,
    Viewer,
    Operator,
    Admin,
    JwtOperator,
    ExpiredJwt,
    WrongIssuerJwt,
}

const EVERYONE: [Who; 7] = [
    Who::Nobody,
    Who::Viewer,
    Who::Operator,
    Who::Admin,
    Who::JwtOperator,
    Who::ExpiredJwt,
    Who::WrongIssuerJwt,
];

fn role_of(who: Who) -> u8 {
    match who {
        Who::Viewer => 1,
        Who::Operator | Who::JwtOperator => 2,
        Who::Admin => 3,
        _ => 0,
    }
}

#[tokio::test]
async fn every_endpoint_answers_each_role_as_the_access_table_says_and_every_call_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let signer = JwtSigner::generate("matrix").unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, signer.jwks()).unwrap();
    let token = |name: &str| format!("wdn_{name}_{}", warden_e2e::auth::random_hex(8));
    let (viewer, operator, admin) = (token("viewer"), token("operator"), token("admin"));
    let sha = |t: &str| warden_e2e::auth::sha256_hex(t.as_bytes());
    let config = format!(
        r#"
[http]
auth_failures_per_minute = 100000
[[http.credentials]]
name = "vera"
role = "viewer"
token_sha256 = "{}"
[[http.credentials]]
name = "otto"
role = "operator"
token_sha256 = "{}"
[[http.credentials]]
name = "ada"
role = "admin"
token_sha256 = "{}"
[http.oidc]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{}"
role_claim = "warden_role"
"#,
        sha(&viewer),
        sha(&operator),
        sha(&admin),
        jwks.display()
    );
    let collector = Collector::start_with_config(&config).await;
    let mut good = claims("jess", None, Duration::from_secs(600));
    good["warden_role"] = json!("operator");
    let jwt = signer.sign(&good).unwrap();
    let mut expired = good.clone();
    expired["exp"] = json!(warden_e2e::auth::now_secs() - 3600);
    let expired = signer.sign(&expired).unwrap();
    let mut wrong = good.clone();
    wrong["iss"] = json!("https://somebody.else");
    let wrong = signer.sign(&wrong).unwrap();
    let credential = |who: Who| -> Option<String> {
        match who {
            Who::Nobody => None,
            Who::Viewer => Some(viewer.clone()),
            Who::Operator => Some(operator.clone()),
            Who::Admin => Some(admin.clone()),
            Who::JwtOperator => Some(jwt.clone()),
            Who::ExpiredJwt => Some(expired.clone()),
            Who::WrongIssuerJwt => Some(wrong.clone()),
        }
    };
    // (method, path and query, body, role needed: 0 open, 1 viewer, 2 operator, 3 admin)
    let endpoints: Vec<(&str, &str, Option<Value>, u8)> = vec![
        ("GET", "/healthz", None, 0),
        ("GET", "/metrics", None, 0),
        ("GET", "/api/v1/records?since=1h", None, 1),
        ("GET", "/api/v1/report/access?since=1h", None, 1),
        ("GET", "/api/v1/explain?ip=192.0.2.1", None, 1),
        ("GET", "/api/v1/decisions", None, 1),
        ("GET", "/api/v1/allowlist", None, 1),
        ("GET", "/api/v1/filters", None, 1),
        ("GET", "/api/v1/rules", None, 1),
        ("GET", "/api/v1/rule-decisions", None, 1),
        (
            "POST",
            "/api/v1/decisions",
            Some(json!({"target": "192.0.2.10", "ttl": "1m"})),
            2,
        ),
        ("DELETE", "/api/v1/decisions?target=192.0.2.10", None, 2),
        (
            "POST",
            "/api/v1/decisions/bulk",
            Some(json!({"targets": ["192.0.2.11"], "ttl": "1m"})),
            2,
        ),
        (
            "POST",
            "/api/v1/allowlist",
            Some(json!({"target": "192.0.2.12"})),
            2,
        ),
        ("DELETE", "/api/v1/allowlist?target=192.0.2.12", None, 2),
        ("GET", "/api/v1/audit", None, 3),
        ("GET", "/api/v1/audit/api?limit=5", None, 3),
        ("POST", "/api/v1/rules/reload", None, 3),
        (
            "POST",
            "/api/v1/rules/replay",
            Some(json!({"rules_toml": "", "since": "1h"})),
            3,
        ),
    ];
    let mut calls = Vec::new();
    for who in EVERYONE {
        let http = collector.client(credential(who).as_deref());
        for (method, path, body, needed) in &endpoints {
            let url = format!("{}{path}", collector.base_url());
            let mut req = match *method {
                "GET" => http.get(&url),
                "POST" => http.post(&url),
                _ => http.delete(&url),
            };
            if let Some(b) = body {
                req = req.json(b);
            }
            let status = req.send().await.unwrap().status().as_u16();
            let expected_denial = if *needed == 0 {
                None
            } else if role_of(who) == 0 {
                Some(401)
            } else if role_of(who) < *needed {
                Some(403)
            } else {
                None
            };
            match expected_denial {
                Some(code) => assert_eq!(status, code, "{who:?} {method} {path}"),
                None => assert!(
                    !matches!(status, 401 | 403 | 415 | 429 | 500..),
                    "{who:?} {method} {path}: {status}"
                ),
            }
            if *needed > 0 {
                calls.push((
                    who,
                    *method,
                    path.split('?').next().unwrap().to_string(),
                    status,
                ));
            }
        }
    }
    let audit = collector
        .client(Some(&admin))
        .get(format!(
            "{}/api/v1/audit/api?limit=10000",
            collector.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    for (who, method, path, status) in &calls {
        let actor = match who {
            Who::Viewer => "vera",
            Who::Operator => "otto",
            Who::Admin => "ada",
            Who::JwtOperator => "jess",
            _ => "",
        };
        assert!(
            entries.iter().any(|e| e["method"] == *method
                && e["path"] == path.as_str()
                && e["actor"] == actor
                && e["status"] == *status),
            "no audit entry for {who:?} {method} {path} {status}"
        );
    }
    let refused_jwt = entries.iter().find(|e| {
        e["actor_kind"] == "none" && e["outcome"].as_str().unwrap_or("").contains("expired")
    });
    assert!(
        refused_jwt.is_some(),
        "failed authentications are audited with their reason"
    );
    // The CLI shows it too, filtered.
    let text = collector.cli().token(&admin).ok(&[
        "audit",
        "--api",
        "--actor",
        "otto",
        "--operation",
        "decisions.",
        "--json",
    ]);
    assert!(
        text.lines().count() >= 3 && text.lines().all(|l| l.contains("\"otto\"")),
        "{text}"
    );
}

#[tokio::test]
async fn a_non_loopback_listener_without_tls_refuses_to_start_saying_what_to_configure() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data").display().to_string();
    let out = Cli::new().run(&[
        "serve",
        "--http-listen",
        "0.0.0.0:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
    ]);
    assert!(!out.success());
    let err = &out.stderr;
    assert!(
        err.contains("http.listen") && err.contains("[http.tls]") && err.contains("insecure"),
        "{err}"
    );
}

/// A certificate for localhost from `pki`'s CA (a rotation keeps the CA).
fn reissue(pki: &Path) -> (String, String) {
    let cert = warden_e2e::auth::issue_from_warden_ca(
        pki,
        &["localhost"],
        &[],
        "warden-collector-rotated",
    )
    .unwrap();
    (cert.cert_pem, cert.key_pem)
}

async fn served_fingerprint(url: &str, ca: &Path) -> String {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .tls_info(true)
        .build()
        .unwrap();
    let response = client.get(url).send().await.unwrap();
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .cloned()
        .unwrap();
    warden_e2e::auth::sha256_hex(info.peer_certificate().unwrap())
}

#[tokio::test]
async fn rotated_certificates_are_picked_up_without_dropping_filter_streams() {
    let dir = tempfile::tempdir().unwrap();
    let pki = warden_init(&dir.path().join("pki"), &[]).unwrap();
    let config = mtls_collector_config(&pki, r#""e2e-*""#).replace(
        "require_client_cert = true\n",
        "require_client_cert = true\nreload_interval = \"200ms\"\n",
    ) + &format!(
        "[http.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nreload_interval = \"200ms\"\n",
        p(&pki, "collector.pem"),
        p(&pki, "collector-key.pem"),
        p(&pki, "ca.pem")
    );
    let stack = Stack::start_with_collector_config(&config, |o| {
        o.filter_token = None;
        o.collector_tls = Some(collector_tls(&pki, &pki));
    })
    .await;
    let api = stack.collector.base_url();
    assert!(api.starts_with("https://"), "{api}");
    let health = format!("{api}/healthz");
    let before = served_fingerprint(&health, &pki.join("ca.pem")).await;
    let admin = stack.collector.http();
    let streams = |v: &Value| -> Vec<u64> {
        v["filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["stream_id"].as_u64().unwrap())
            .collect()
    };
    let filters_url = format!("{api}/api/v1/filters");
    let list: Value = admin
        .get(&filters_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let streams_before = streams(&list);
    assert!(!streams_before.is_empty());
    // cert-manager rewrites the pair in place: a new certificate from the same CA.
    let (cert, key) = reissue(&pki);
    std::fs::write(pki.join("collector-key.pem"), key).unwrap();
    std::fs::write(pki.join("collector.pem"), cert).unwrap();
    eventually("the new certificate on new connections", || async {
        let now = served_fingerprint(&health, &pki.join("ca.pem")).await;
        if now != before {
            Ok(())
        } else {
            Err("still the old certificate".to_string())
        }
    })
    .await;
    let list: Value = admin
        .get(&filters_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        streams(&list),
        streams_before,
        "the Subscribe streams survived"
    );
    stack
        .collector
        .cli()
        .ok(&["ban", "127.0.0.44", "--reason", "after rotation"]);
    let client = Client::from("127.0.0.44");
    // The ban is pushed on the old stream.
    client
        .wait_for_status(&stack.envoy.url("/anything/rotated"), 403)
        .await;
    let metrics = admin
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for listener in ["grpc", "http"] {
        let line = format!("warden_tls_reloads_total{{listener=\"{listener}\"}} 1");
        assert!(metrics.contains(&line), "{metrics}");
    }
}

// ---------------------------------------------------------------------------------------------
// The attacks the issue found, replayed
// ---------------------------------------------------------------------------------------------

const BRUTE_FORCE: &str = r#"
[[rules]]
name = "login-brute-force"
kind = "auth_failures"
threshold = 5
window = "1m"
path_prefixes = ["/login"]
action = "deny"
ban_ttl = "10m"
"#;

fn failed_logins(client: &str, first_seq: u64, n: u64) -> Vec<warden_proto::pb::AccessRecord> {
    let now = warden_e2e::auth::now_secs() * 1000;
    (0..n)
        .map(|i| warden_proto::pb::AccessRecord {
            sequence: first_seq + i,
            time_ms: now + i as i64,
            client_address: client.into(),
            authority: "shop.example.com".into(),
            method: "POST".into(),
            path: "/login".into(),
            status: 401,
            ..Default::default()
        })
        .collect()
}

fn batch(
    node: &str,
    records: Vec<warden_proto::pb::AccessRecord>,
    dropped: u64,
) -> warden_proto::pb::ExportRequest {
    warden_proto::pb::ExportRequest {
        filter: Some(warden_proto::pb::FilterIdentity {
            node_id: node.into(),
            worker: 0,
            instance_id: format!("{node}-1"),
            filter_version: "test".into(),
        }),
        records,
        dropped_total: dropped,
        ..Default::default()
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

async fn audit_client(
    collector: &Collector,
) -> warden_proto::pb::audit_service_client::AuditServiceClient<tonic::transport::Channel> {
    warden_proto::pb::audit_service_client::AuditServiceClient::new(collector.grpc_channel().await)
}

async fn status_of(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn without_a_credential_nothing_is_read_or_changed() {
    let collector = Collector::start().await;
    let api = collector.base_url();
    let anonymous = collector.client(None);
    let attempts = [
        anonymous.get(format!("{api}/api/v1/records?since=1h")),
        anonymous
            .post(format!("{api}/api/v1/decisions"))
            .json(&json!({"target": "203.0.113.7", "reason": "x"})),
        anonymous.delete(format!("{api}/api/v1/decisions?target=203.0.113.7")),
        anonymous
            .post(format!("{api}/api/v1/allowlist"))
            .json(&json!({"target": "10.0.0.0/8"})),
        anonymous
            .post(format!("{api}/api/v1/decisions/bulk"))
            .json(&json!({"targets": ["198.51.100.0/24"]})),
    ];
    for req in attempts {
        let (status, body) = status_of(req).await;
        assert_eq!(status, 401, "{body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("credential"),
            "{body}"
        );
    }
    let decisions = collector
        .get_json(&format!("{api}/api/v1/decisions"))
        .await
        .unwrap();
    assert_eq!(decisions["total"], 0);
    let allow = collector
        .get_json(&format!("{api}/api/v1/allowlist"))
        .await
        .unwrap();
    assert_eq!(allow["total"], 0);
}

#[tokio::test]
async fn forged_actors_reserved_origins_and_internet_wide_targets_are_refused() {
    let collector = Collector::start().await;
    let api = collector.base_url();
    let admin = collector.http();
    let (status, body) = status_of(
        admin
            .post(format!("{api}/api/v1/decisions"))
            .json(&json!({"target": "203.0.113.7", "actor": "somebody-else"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("actor:"),
        "{body}"
    );
    let (status, body) = status_of(
        admin
            .post(format!("{api}/api/v1/decisions"))
            .json(&json!({"target": "203.0.113.7", "origin": "rule:login-brute-force"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = status_of(
        admin
            .post(format!("{api}/api/v1/allowlist"))
            .json(&json!({"target": "0.0.0.0/0"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = status_of(
        admin
            .post(format!("{api}/api/v1/decisions/bulk"))
            .json(&json!({"targets": ["0.0.0.0/1", "128.0.0.0/1"]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("covers more than a /8"),
        "{body}"
    );
    let (status, _) = status_of(
        admin
            .post(format!("{api}/api/v1/decisions"))
            .json(&json!({"target": "203.0.113.8", "reason": "real"})),
    )
    .await;
    assert_eq!(status, 201);
    let audit = collector
        .get_json(&format!("{api}/api/v1/audit"))
        .await
        .unwrap();
    assert_eq!(
        audit["entries"][0]["actor"], "local-admin",
        "the credential, not a name the caller chose"
    );
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        1,
        "nothing else changed"
    );
}

#[tokio::test]
async fn cross_site_requests_are_refused() {
    let collector = Collector::start().await;
    let api = collector.base_url();
    let admin = collector.http();
    let url = format!("{api}/api/v1/decisions");
    let (status, body) = status_of(
        admin
            .post(&url)
            .header("content-type", "text/plain")
            .body(r#"{"target": "203.0.113.9"}"#),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    let (status, body) = status_of(
        admin
            .post(&url)
            .header("origin", "https://evil.example")
            .json(&json!({"target": "203.0.113.9"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cross-site"),
        "{body}"
    );
    let (status, body) = status_of(
        admin
            .get(format!("{api}/api/v1/decisions"))
            .header("host", "evil.example"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let health = admin
        .get(format!("{api}/healthz"))
        .header("host", "10.1.2.3:9090")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "probes address the pod by IP");
    let same_origin = api.trim_end_matches('/').to_string();
    let (status, body) = status_of(
        admin
            .post(&url)
            .header("origin", same_origin)
            .json(&json!({"target": "203.0.113.9"})),
    )
    .await;
    assert_eq!(status, 201, "the API's own origin may call it: {body}");
}

#[tokio::test]
async fn repeated_failed_authentications_are_throttled_per_address() {
    let collector = Collector::start().await;
    let api = collector.base_url();
    let guesser = |token: &str, source: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        reqwest::Client::builder()
            .no_proxy()
            .local_address(source.parse::<std::net::IpAddr>().unwrap())
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let url = format!("{api}/api/v1/records");
    for i in 0..10 {
        let (status, _) =
            status_of(guesser(&format!("wdn_guess{i}"), "127.0.0.61").get(&url)).await;
        assert_eq!(status, 401, "guess {i}");
    }
    let r = guesser("wdn_guess10", "127.0.0.61")
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(
        r.headers().get("retry-after").is_some(),
        "{:?}",
        r.headers()
    );
    let admin = collector.admin_token();
    let (status, _) = status_of(guesser(&admin, "127.0.0.61").get(&url)).await;
    assert_eq!(
        status, 429,
        "the address waits out its block, right token or not"
    );
    let (status, _) = status_of(guesser(&admin, "127.0.0.62").get(&url)).await;
    assert_eq!(status, 200, "other addresses are not affected");
    let refused = collector
        .get_json(&format!("{api}/api/v1/audit/api?refused=true&limit=100"))
        .await
        .unwrap();
    assert!(refused["entries"].as_array().unwrap().len() >= 11);
}

#[tokio::test]
async fn a_shared_grpc_token_does_not_open_the_api() {
    let collector = Collector::start_with_config("[grpc]\ntoken = \"s3cret-shared\"\n").await;
    let api = collector.base_url();
    let (status, _) = status_of(
        collector
            .client(None)
            .post(format!("{api}/api/v1/decisions"))
            .json(&json!({"target": "203.0.113.10"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = status_of(
        collector
            .client(Some("s3cret-shared"))
            .post(format!("{api}/api/v1/decisions"))
            .json(&json!({"target": "203.0.113.10"})),
    )
    .await;
    assert_eq!(status, 401, "a filter token is not an API credential");
}

#[tokio::test]
async fn forged_records_and_subscriptions_need_a_credential_covering_the_node() {
    let scoped = "wdn_gateway_only";
    let config = format!(
        "{BRUTE_FORCE}\n[[grpc.credentials]]\nname = \"gateways\"\ntoken_sha256 = \"{}\"\nnode_ids = [\"gateway-*\"]\n",
        warden_e2e::auth::sha256_hex(scoped.as_bytes())
    );
    let collector = Collector::start_with_config(&config).await;
    let mut client = audit_client(&collector).await;
    // Twelve made-up failed logins "from" an innocent address, with no credential.
    let e = client
        .export(with_token(
            batch("gateway-1", failed_logins("198.51.100.77", 1, 12), 0),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // With a real credential, but posing as another node.
    let e = client
        .export(with_token(
            batch("ingress-1", failed_logins("198.51.100.77", 1, 12), 0),
            Some(scoped),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("gateways"), "{}", e.message());
    let mut push = warden_proto::pb::deny_list_service_client::DenyListServiceClient::new(
        collector.grpc_channel().await,
    );
    let hello = warden_proto::pb::FilterMessage {
        message: Some(warden_proto::pb::filter_message::Message::Subscribe(
            warden_proto::pb::SubscribeRequest {
                filter: batch("ingress-1", vec![], 0).filter,
                known_version: 0,
            },
        )),
    };
    let e = push
        .subscribe(with_token(tokio_stream::iter(vec![hello.clone()]), None))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::Unauthenticated,
        "no deny list without a credential"
    );
    let e = match push
        .subscribe(with_token(tokio_stream::iter(vec![hello]), Some(scoped)))
        .await
    {
        Ok(mut s) => s.get_mut().message().await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let api = collector.base_url();
    assert!(
        collector
            .records("ip=198.51.100.77")
            .await
            .unwrap()
            .is_empty()
    );
    let decisions = collector
        .get_json(&format!("{api}/api/v1/decisions"))
        .await
        .unwrap();
    assert_eq!(decisions["total"], 0, "nobody was banned on forged records");
}

#[tokio::test]
async fn a_reported_drop_count_cannot_exceed_what_the_filter_numbered() {
    let collector = Collector::start().await;
    let token = collector.filter_token();
    let mut client = audit_client(&collector).await;
    let ok = |seq| failed_logins("198.51.100.5", seq, 2);
    client
        .export(with_token(
            batch("node-a", ok(1), 4_000_000_000_000_000),
            Some(&token),
        ))
        .await
        .unwrap();
    assert_eq!(collector.metric("warden_filter_dropped_records").await, 0);
    client
        .export(with_token(batch("node-a", ok(3), 3), Some(&token)))
        .await
        .unwrap();
    assert_eq!(collector.metric("warden_filter_dropped_records").await, 3);
    client
        .export(with_token(batch("node-a", ok(5), 1), Some(&token)))
        .await
        .unwrap();
    assert_eq!(
        collector.metric("warden_filter_dropped_records").await,
        3,
        "never decreases"
    );
}

#[tokio::test]
async fn a_credential_cannot_invent_filter_identities_without_bound() {
    let collector =
        Collector::start_with_config("[grpc]\nmax_identities_per_credential = 3\n").await;
    let token = collector.filter_token();
    let mut client = audit_client(&collector).await;
    let mut seq = 1;
    for node in ["invented-1", "invented-2", "invented-3"] {
        client
            .export(with_token(
                batch(node, failed_logins("198.51.100.6", seq, 1), 0),
                Some(&token),
            ))
            .await
            .unwrap();
        seq += 1;
    }
    let e = client
        .export(with_token(
            batch("invented-4", failed_logins("198.51.100.6", seq, 1), 0),
            Some(&token),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(
        e.message().contains("max_identities_per_credential"),
        "{}",
        e.message()
    );
    client
        .export(with_token(
            batch("invented-1", failed_logins("198.51.100.6", seq, 1), 0),
            Some(&token),
        ))
        .await
        .expect("identities already in use keep delivering");
}

/// A webhook receiver: counts hits; answers `redirect_to` with a 302 when set.
async fn receiver(
    redirect_to: Option<String>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU32>,
) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&hits);
    let app = axum::Router::new().fallback(move || {
        let counter = std::sync::Arc::clone(&counter);
        let redirect_to = redirect_to.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match redirect_to {
                Some(to) => axum::response::Response::builder()
                    .status(302)
                    .header("location", to)
                    .body(axum::body::Body::empty())
                    .unwrap(),
                None => axum::response::Response::new(axum::body::Body::empty()),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

#[tokio::test]
async fn alert_webhooks_follow_no_redirect_reach_no_unlisted_loopback_and_never_log_secrets() {
    let (inner, inner_hits) = receiver(None).await;
    let (outer, outer_hits) = receiver(Some(format!("http://{inner}/stolen"))).await;
    let (unlisted, unlisted_hits) = receiver(None).await;
    let listed = format!("http://alice:pa55word@{outer}/hooks/s3cr3t-path?key=k3y");
    // 127.0.0.1 is listed for the redirecting receiver; the unlisted one is reached by its
    // IPv6-mapped name, which no entry covers.
    let config = format!(
        "{BRUTE_FORCE}\n[alerts]\nwebhooks = [\"{listed}\", \"http://[::ffff:127.0.0.2]:{}/hook\"]\non = [\"banned\"]\nmax_attempts = 2\ninitial_backoff = \"50ms\"\nallowed_destinations = [\"127.0.0.1\"]\n",
        unlisted.port()
    );
    let collector = Collector::start_with_config(&config).await;
    let mut client = audit_client(&collector).await;
    client
        .export(with_token(
            batch("node-b", failed_logins("203.0.113.50", 1, 6), 0),
            Some(&collector.filter_token()),
        ))
        .await
        .unwrap();
    // Both deliveries fail.
    collector
        .wait_for_metric("warden_alerts_failed_total", 2)
        .await;
    assert_eq!(
        outer_hits.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "tried, twice"
    );
    assert_eq!(
        inner_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
    assert_eq!(
        unlisted_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "an unlisted loopback address is refused"
    );
    let _ = unlisted;
    let log = collector.log();
    assert_not_in_text(
        "the log",
        &log,
        &["pa55word", "s3cr3t-path", "k3y", "alice:"],
    );
    assert!(
        log.contains(&format!("http://127.0.0.1:{}", outer.port())),
        "the destination is named by host and port"
    );
}
