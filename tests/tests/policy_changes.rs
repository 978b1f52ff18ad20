//! Ingress policy-change auditing end to end: the real `warden serve` receives the Kubernetes API
//! server's audit webhook over TLS, authenticated by client certificate or token with the
//! `k8s-audit` role, from `EventList` bodies built in the exact shape the API server sends; the
//! change records, their summaries, retries, refusals, the `change` rules' findings and alerts,
//! and the `warden changes` CLI (with `--before-spike`) are asserted on what the collector
//! stored and answers.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use warden_e2e::auth::{issue_from_warden_ca, now_secs, sha256_hex, warden_init};
use warden_e2e::k8s_events::{self as k8s, EventBuilder, event_list};
use warden_e2e::{Collector, eventually};
use warden_proto::pb::audit_service_client::AuditServiceClient;
use warden_proto::pb::{AccessRecord, AuthDecision, ExportRequest, FilterIdentity};

const AUDIT_TOKEN: &str = "wdn_kube_apiserver_audit_token_0123456789abcdef";

/// A collector with TLS on its API, the API server's two credentials (a certificate for CN
/// `kube-apiserver-audit`, a token) and `extra` appended to its `warden.toml`.
struct Setup {
    collector: Collector,
    pki: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = warden_init(&dir.path().join("pki"), &[]).unwrap();
        let p = |f: &str| pki.join(f).display().to_string();
        let config = format!(
            r#"
[http.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[[http.credentials]]
name = "kube-apiserver"
role = "k8s-audit"
certificate = "kube-apiserver-audit"

[[http.credentials]]
name = "kube-apiserver-token"
role = "k8s-audit"
token_sha256 = "{hash}"

[k8s_audit]
enabled = true
max_body_bytes = 4194304
max_events = 1000
{extra}
"#,
            cert = p("collector.pem"),
            key = p("collector-key.pem"),
            ca = p("ca.pem"),
            hash = sha256_hex(AUDIT_TOKEN.as_bytes()),
        );
        let collector = Collector::start_with_config(&config).await;
        Setup {
            collector,
            pki,
            _dir: dir,
        }
    }

    fn webhook_url(&self) -> String {
        format!("{}/api/v1/k8s-audit", self.collector.base_url())
    }

    /// The API server's client: the webhook kubeconfig's client certificate.
    fn apiserver(&self) -> reqwest::Client {
        self.client_with_cert("kube-apiserver-audit")
    }

    fn client_with_cert(&self, common_name: &str) -> reqwest::Client {
        let cert = issue_from_warden_ca(&self.pki, &[], &[], common_name).unwrap();
        let identity = reqwest::Identity::from_pem(cert.identity_pem().as_bytes()).unwrap();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.pki.join("ca.pem")).unwrap())
            .unwrap();
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .identity(identity)
            .build()
            .unwrap()
    }

    async fn post(&self, client: &reqwest::Client, body: Vec<u8>) -> (u16, Value) {
        let response = client
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /api/v1/k8s-audit");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(json!(text)))
    }

    /// Posts `events` as the API server would and expects them accepted.
    async fn send(&self, events: &[Value]) -> Value {
        let (status, body) = self.post(&self.apiserver(), event_list(events)).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn changes(&self, query: &str) -> Vec<Value> {
        let page = self
            .collector
            .get_json(&format!(
                "{}/api/v1/changes?{query}",
                self.collector.base_url()
            ))
            .await
            .unwrap();
        page["changes"].as_array().cloned().unwrap_or_default()
    }
}

/// Today at `hour`:`minute` UTC, or yesterday when that is still ahead: a time within the
/// default query period with a known hour of day.
fn at_hour(hour: i64, minute: i64) -> i64 {
    let now = now_secs();
    let midnight = now - now.rem_euclid(86_400);
    let mut t = midnight + hour * 3600 + minute * 60;
    if t > now - 60 {
        t -= 86_400;
    }
    t * 1000
}

fn find<'a>(changes: &'a [Value], resource: &str, name: &str) -> &'a Value {
    changes
        .iter()
        .find(|c| c["change"]["resource"] == resource && c["change"]["name"] == name)
        .unwrap_or_else(|| panic!("no change of {resource} {name} in {changes:#?}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn each_ingress_policy_kind_is_recorded_with_its_summary_and_everything_else_is_dropped() {
    let s = Setup::start("").await;
    let t = at_hour(10, 0);
    let create = |group: &str, version: &str, resource: &str, ns: &str, name: &str, obj: Value| {
        EventBuilder::new("create", group, version, resource, ns, name)
            .time_ms(t)
            .request_object(obj.clone())
            .response_object(obj)
            .build()
    };
    let kept = vec![
        create(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            "web",
            k8s::ingress(
                "shop",
                "web",
                &["shop.example.com", "api.example.com"],
                Some((&["shop.example.com"][..], "web-tls")),
            ),
        ),
        create(
            "networking.k8s.io",
            "v1",
            "ingressclasses",
            "",
            "nginx",
            k8s::ingress_class("nginx", "k8s.io/ingress-nginx"),
        ),
        create(
            "gateway.networking.k8s.io",
            "v1",
            "gateways",
            "edge",
            "public",
            k8s::gateway(
                "edge",
                "public",
                &[
                    ("http", "HTTP", 80, Some("shop.example.com"), None),
                    (
                        "https",
                        "HTTPS",
                        443,
                        Some("shop.example.com"),
                        Some("shop-cert"),
                    ),
                ],
            ),
        ),
        create(
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            "shop",
            "web",
            k8s::http_route("shop", "web", &["shop.example.com"], "/cart", "cart"),
        ),
        create(
            "networking.istio.io",
            "v1",
            "virtualservices",
            "shop",
            "web",
            k8s::virtual_service(
                "shop",
                "web",
                &["shop.example.com"],
                &["istio-system/public"],
                "/api",
                "api.shop.svc.cluster.local",
            ),
        ),
        create(
            "security.istio.io",
            "v1",
            "authorizationpolicies",
            "shop",
            "require-jwt",
            k8s::authorization_policy(
                "shop",
                "require-jwt",
                "DENY",
                vec![json!({"from": [{"source": {"notRequestPrincipals": ["*"]}}]})],
            ),
        ),
        create(
            "extensions.istio.io",
            "v1alpha1",
            "wasmplugins",
            "istio-system",
            "warden",
            k8s::wasm_plugin(
                "istio-system",
                "warden",
                "oci://registry.example/warden-filter:1.0",
                "FAIL_CLOSE",
            ),
        ),
        create(
            "gateway.envoyproxy.io",
            "v1alpha1",
            "securitypolicies",
            "shop",
            "jwt",
            k8s::security_policy("shop", "jwt", Some("https://idp.example.com"), None),
        ),
        create(
            "gateway.networking.k8s.io",
            "v1",
            "grpcroutes",
            "shop",
            "orders",
            k8s::grpc_route(
                "shop",
                "orders",
                &["grpc.example.com"],
                "shop.Orders",
                "orders",
            ),
        ),
        create(
            "gateway.networking.k8s.io",
            "v1alpha2",
            "tlsroutes",
            "shop",
            "passthrough",
            k8s::tls_route("shop", "passthrough", &["tls.example.com"], "legacy"),
        ),
        create(
            "gateway.networking.k8s.io",
            "v1beta1",
            "referencegrants",
            "shop",
            "from-edge",
            k8s::reference_grant(
                "shop",
                "from-edge",
                &[("gateway.networking.k8s.io", "HTTPRoute", "edge")],
                &[("", "Service")],
            ),
        ),
        create(
            "networking.istio.io",
            "v1",
            "gateways",
            "istio-system",
            "ingress-public",
            k8s::istio_gateway(
                "istio-system",
                "ingress-public",
                &["shop.example.com"],
                Some("shop-cert"),
            ),
        ),
        create(
            "security.istio.io",
            "v1",
            "requestauthentications",
            "shop",
            "jwt",
            k8s::request_authentication("shop", "jwt", &["https://idp.example.com"]),
        ),
        create(
            "security.istio.io",
            "v1",
            "peerauthentications",
            "shop",
            "strict",
            k8s::peer_authentication("shop", "strict", "STRICT"),
        ),
        create(
            "networking.istio.io",
            "v1alpha3",
            "envoyfilters",
            "istio-system",
            "warden-wasm",
            k8s::envoy_filter("istio-system", "warden-wasm"),
        ),
        create(
            "gateway.envoyproxy.io",
            "v1alpha1",
            "envoyextensionpolicies",
            "shop",
            "warden",
            k8s::envoy_extension_policy(
                "shop",
                "warden",
                "https://registry.example/warden_filter.wasm",
                true,
            ),
        ),
        create(
            "gateway.envoyproxy.io",
            "v1alpha1",
            "clienttrafficpolicies",
            "edge",
            "tls",
            k8s::client_traffic_policy("edge", "tls", "1.2"),
        ),
        // A TLS Secret, at Metadata level as the shipped policy sends it: kept by its name.
        EventBuilder::new("create", "", "v1", "secrets", "shop", "shop-cert")
            .level("Metadata")
            .time_ms(t)
            .build(),
        // Warden's own configuration.
        create(
            "",
            "v1",
            "configmaps",
            "warden-system",
            "warden-config",
            k8s::config_map(
                "warden-system",
                "warden-config",
                &[("warden.toml", "[k8s_audit]\n")],
            ),
        ),
    ];
    let dropped = vec![
        // A read.
        EventBuilder::new("get", "networking.k8s.io", "v1", "ingresses", "shop", "web")
            .time_ms(t)
            .build(),
        // A kind nobody asked for.
        create("", "v1", "pods", "shop", "web-1", k8s::pod("shop", "web-1")),
        // A ConfigMap that is not Warden's.
        create(
            "",
            "v1",
            "configmaps",
            "shop",
            "settings",
            k8s::config_map("shop", "settings", &[("a", "b")]),
        ),
        // A controller writing status.
        EventBuilder::new(
            "update",
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            "web",
        )
        .subresource("status")
        .time_ms(t)
        .build(),
        // An opaque Secret at Metadata level.
        EventBuilder::new("create", "", "v1", "secrets", "shop", "db-password")
            .level("Metadata")
            .time_ms(t)
            .build(),
    ];
    let answer = s.send(&[kept.clone(), dropped.clone()].concat()).await;
    assert_eq!(answer["received"], kept.len() + dropped.len(), "{answer}");
    assert_eq!(answer["stored"], kept.len(), "{answer}");
    assert_eq!(answer["dropped"], dropped.len(), "{answer}");

    let changes = s.changes("limit=100").await;
    assert_eq!(changes.len(), kept.len(), "{changes:#?}");
    let ingress = find(&changes, "ingresses", "web");
    let c = &ingress["change"];
    assert_eq!(c["verb"], "create");
    assert_eq!(c["user"], "alice@example.com");
    assert_eq!(c["outcome"], "applied");
    assert_eq!(c["response_code"], 201);
    assert_eq!(c["stage"], "ResponseComplete");
    assert_eq!(strings(&c["source_ips"]), ["10.0.0.5"]);
    assert!(c["user_agent"].as_str().unwrap().starts_with("kubectl/"));
    let summary = &c["summary"];
    assert_eq!(
        {
            let mut h = strings(&summary["hosts"]);
            h.sort();
            h
        },
        ["api.example.com", "shop.example.com"]
    );
    assert!(
        strings(&summary["tls_secrets"])
            .iter()
            .any(|s| s.ends_with("web-tls"))
    );
    // api.example.com is served without a TLS entry.
    assert!(
        strings(&summary["listeners_without_tls"])
            .iter()
            .any(|l| l.contains("api.example.com")),
        "{summary}"
    );
    let gateway = &find(&changes, "gateways", "public")["change"]["summary"];
    assert!(
        strings(&gateway["listeners_without_tls"])
            .iter()
            .any(|l| l.contains("80")),
        "{gateway}"
    );
    assert!(
        strings(&gateway["tls_secrets"])
            .iter()
            .any(|s| s.ends_with("shop-cert"))
    );
    let route = &find(&changes, "httproutes", "web")["change"]["summary"];
    assert!(
        strings(&route["paths"]).iter().any(|p| p.contains("/cart")),
        "{route}"
    );
    assert!(
        strings(&route["backends"])
            .iter()
            .any(|b| b.contains("cart")),
        "{route}"
    );
    let policy = &find(&changes, "authorizationpolicies", "require-jwt")["change"]["summary"];
    assert_eq!(strings(&policy["rules_added"]).len(), 1, "{policy}");
    let plugin = &find(&changes, "wasmplugins", "warden")["change"]["summary"]["plugin"];
    assert_eq!(plugin["is_warden"], true, "{plugin}");
    assert_eq!(plugin["fail_open"], false, "{plugin}");
    assert!(
        plugin["url"]
            .as_str()
            .unwrap()
            .contains("warden-filter:1.0")
    );
    find(&changes, "virtualservices", "web");
    find(&changes, "securitypolicies", "jwt");
    find(&changes, "ingressclasses", "nginx");
    find(&changes, "configmaps", "warden-config");
    find(&changes, "secrets", "shop-cert");
    find(&changes, "referencegrants", "from-edge");
    find(&changes, "peerauthentications", "strict");
    find(&changes, "clienttrafficpolicies", "tls");
    let grpc = &find(&changes, "grpcroutes", "orders")["change"]["summary"];
    assert_eq!(strings(&grpc["hosts"]), ["grpc.example.com"], "{grpc}");
    let tls_route = &find(&changes, "tlsroutes", "passthrough")["change"]["summary"];
    assert_eq!(
        strings(&tls_route["hosts"]),
        ["tls.example.com"],
        "{tls_route}"
    );
    let istio = find(&changes, "gateways", "ingress-public");
    assert_eq!(istio["change"]["api_group"], "networking.istio.io");
    assert!(
        strings(&istio["change"]["summary"]["tls_secrets"])
            .iter()
            .any(|s| s.ends_with("shop-cert")),
        "{istio}"
    );
    let jwt = &find(&changes, "requestauthentications", "jwt")["change"]["summary"];
    assert_eq!(strings(&jwt["rules_added"]).len(), 1, "{jwt}");
    let filter = &find(&changes, "envoyfilters", "warden-wasm")["change"]["summary"]["plugin"];
    assert_eq!(filter["is_warden"], true, "{filter}");
    let eep = &find(&changes, "envoyextensionpolicies", "warden")["change"]["summary"]["plugin"];
    assert_eq!(
        (eep["is_warden"].clone(), eep["fail_open"].clone()),
        (json!(true), json!(true)),
        "{eep}"
    );

    // Filters of the query.
    let only = s.changes("resource=ingress").await;
    assert_eq!(only.len(), 1, "{only:#?}");
    let by_host = s.changes("host=shop.example.com").await;
    let kinds: Vec<&str> = by_host
        .iter()
        .map(|c| c["change"]["resource"].as_str().unwrap())
        .collect();
    for k in ["ingresses", "gateways", "httproutes", "virtualservices"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert!(!kinds.contains(&"wasmplugins"), "{kinds:?}");
    assert_eq!(
        s.changes("namespace=edge").await.len(),
        2,
        "the Gateway and the ClientTrafficPolicy"
    );
    assert_eq!(s.changes("user=bob*").await.len(), 0);
    assert_eq!(s.changes("user=alice*").await.len(), kept.len());

    let m = |o: &str| format!("warden_k8s_audit_events_total{{outcome=\"{o}\"}}");
    assert_eq!(s.collector.metric(&m("stored")).await, kept.len() as u64);
    assert_eq!(s.collector.metric(&m("dropped_read_only")).await, 1);
    assert_eq!(s.collector.metric(&m("dropped_not_kept")).await, 3);
    assert_eq!(s.collector.metric(&m("dropped_secret_not_tls")).await, 1);
}

#[tokio::test]
async fn retries_are_stored_once_and_both_stages_of_a_change_are_kept() {
    let s = Setup::start("").await;
    let t = at_hour(11, 0);
    let obj = k8s::ingress("shop", "web", &["shop.example.com"], None);
    let request = EventBuilder::new(
        "update",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "shop",
        "web",
    )
    .audit_id("5d9e0d51-2b0a-4a7c-9c55-000000000001")
    .time_ms(t)
    .request_object(obj.clone());
    let received = request.clone().stage("RequestReceived").build();
    let complete = request.response_object(obj).build();
    let first = s.send(&[received.clone(), complete.clone()]).await;
    assert_eq!(first["stored"], 2, "{first}");
    // The API server retries the whole batch after a timeout.
    let retry = s.send(&[received, complete]).await;
    assert_eq!(retry["stored"], 0, "{retry}");
    assert_eq!(retry["duplicates"], 2, "{retry}");
    let shown = s.changes("").await;
    assert_eq!(shown.len(), 1, "one change, at its final stage: {shown:#?}");
    assert_eq!(shown[0]["change"]["stage"], "ResponseComplete");
    assert_eq!(s.changes("all_stages=true").await.len(), 2);
    assert_eq!(
        s.collector
            .metric("warden_k8s_audit_events_total{outcome=\"duplicate\"}")
            .await,
        2
    );
    // A change whose answer was not logged (yet) shows at the stage it was.
    let pending = EventBuilder::new(
        "delete",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "shop",
        "old",
    )
    .stage("RequestReceived")
    .time_ms(t)
    .build();
    s.send(&[pending]).await;
    let old = s.changes("resource=ingresses").await;
    let old = find(&old, "ingresses", "old");
    assert_eq!(old["change"]["outcome"], "pending");
}

#[tokio::test]
async fn impersonation_refusals_and_updates_are_recorded_as_what_they_are() {
    let s = Setup::start("").await;
    let t = at_hour(12, 0);
    let before = k8s::ingress("shop", "web", &["shop.example.com"], None);
    let after = k8s::ingress("shop", "web", &["shop.example.com", "*.example.com"], None);
    s.send(&[EventBuilder::new(
        "create",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "shop",
        "web",
    )
    .time_ms(t)
    .request_object(before.clone())
    .response_object(before)
    .build()])
        .await;
    let update = EventBuilder::new(
        "update",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "shop",
        "web",
    )
    .time_ms(t + 60_000)
    .user(
        "system:serviceaccount:argocd:argocd-application-controller",
        &["system:serviceaccounts", "system:serviceaccounts:argocd"],
    )
    .impersonate("carol@example.com", &["ops"])
    .request_object(after.clone())
    .response_object(after)
    .build();
    let refused = EventBuilder::new(
        "delete",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "shop",
        "web",
    )
    .time_ms(t + 120_000)
    .user("mallory@example.com", &["system:authenticated"])
    .code(403)
    .build();
    s.send(&[update, refused]).await;
    let changes = s.changes("resource=ingress").await;
    assert_eq!(changes.len(), 3, "{changes:#?}");
    // Newest first.
    let attempt = &changes[0]["change"];
    assert_eq!(attempt["verb"], "delete");
    assert_eq!(attempt["outcome"], "refused");
    assert_eq!(attempt["response_code"], 403);
    assert_eq!(attempt["user"], "mallory@example.com");
    let update = &changes[1]["change"];
    assert_eq!(update["impersonated_user"], "carol@example.com");
    assert_eq!(
        update["user"],
        "system:serviceaccount:argocd:argocd-application-controller"
    );
    assert_eq!(
        update["service_account"],
        "argocd/argocd-application-controller"
    );
    assert_eq!(
        strings(&update["summary"]["hosts_added"]),
        ["*.example.com"]
    );
    assert!(
        !strings(&update["summary"]["changed_fields"]).is_empty(),
        "{update}"
    );
    // Who: the impersonated user is who the change was made as.
    assert_eq!(s.changes("user=carol@example.com").await.len(), 1);
}

#[tokio::test]
async fn no_secret_data_is_stored_anywhere_whatever_the_audit_level() {
    let s = Setup::start("").await;
    let t = at_hour(9, 30);
    let cert =
        issue_from_warden_ca(&s.pki, &["shop.example.com"], &[], "shop.example.com").unwrap();
    let tls = k8s::tls_secret("shop", "web-tls", &cert.cert_pem, &cert.key_pem);
    let opaque = k8s::opaque_secret(
        "warden-system",
        "warden-tokens",
        "admin.token",
        "wdn_secret_admin_token_value_9f8e7d",
    );
    // RequestResponse on Secrets is the misconfiguration this must survive.
    let events = vec![
        EventBuilder::new("create", "", "v1", "secrets", "shop", "web-tls")
            .time_ms(t)
            .request_object(tls.clone())
            .response_object(tls)
            .build(),
        EventBuilder::new(
            "create",
            "",
            "v1",
            "secrets",
            "warden-system",
            "warden-tokens",
        )
        .time_ms(t)
        .request_object(opaque.clone())
        .response_object(opaque)
        .build(),
    ];
    let answer = s.send(&events).await;
    assert_eq!(answer["stored"], 2, "{answer}");
    let changes = s.changes("resource=secrets").await;
    let web = &find(&changes, "secrets", "web-tls")["change"]["summary"];
    assert_eq!(web["secret_type"], "kubernetes.io/tls");
    assert_eq!(web["certificate"]["sha256"], cert.fingerprint(), "{web}");
    assert!(web["certificate"]["not_after"].is_string());
    // One access record too, so the record store's blocks are searched decoded as well.
    export_denials(&s.collector, "shop.example.com", &[now_secs() * 1000]).await;
    let key_body: String = cert
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let secrets = [
        key_body.as_str(),
        &key_body[..40],
        "wdn_secret_admin_token_value_9f8e7d",
        &b64("wdn_secret_admin_token_value_9f8e7d"),
        &b64(&cert.key_pem)[..60],
        &b64(&cert.cert_pem)[..60],
    ];
    let api = serde_json::to_string(&changes).unwrap();
    warden_e2e::secrets::assert_not_in_text("the change API", &api, &secrets);
    let audit = s
        .collector
        .get_json(&format!("{}/api/v1/audit/api", s.collector.base_url()))
        .await
        .unwrap();
    warden_e2e::secrets::assert_not_in_text("the API audit trail", &audit.to_string(), &secrets);
    let mut collector = s.collector;
    collector.stop();
    warden_e2e::secrets::assert_not_in_files(&collector.data_dir(), &secrets);
    warden_e2e::secrets::assert_not_in_text("the collector's log", &collector.log(), &secrets);
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused_whole_naming_the_problem() {
    let s = Setup::start("").await;
    let client = s.apiserver();
    let good = EventBuilder::new(
        "create",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "shop",
        "web",
    )
    .build();
    let mut missing_id = good.clone();
    missing_id.as_object_mut().unwrap().remove("auditID");
    for (body, expect) in [
        (b"{not json".to_vec(), "body: not JSON"),
        (
            serde_json::to_vec(&json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1"})).unwrap(),
            "kind",
        ),
        (
            serde_json::to_vec(
                &json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": []}),
            )
            .unwrap(),
            "apiVersion",
        ),
    ] {
        let (status, answer) = s.post(&client, body).await;
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(expect), "{error:?} should name {expect:?}");
    }
    assert!(s.changes("").await.is_empty());
    // An invalid item is refused alone, named: its fields can come from any Kubernetes client,
    // who must not get the other events of the batch refused with it.
    let (status, answer) = s
        .post(&client, event_list(&[good.clone(), missing_id]))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stored"], 1, "{answer}");
    assert_eq!(answer["rejected"], 1, "{answer}");
    assert!(
        answer["problems"][0]
            .as_str()
            .unwrap()
            .contains("items[1].auditID"),
        "{answer}"
    );
    assert_eq!(s.changes("").await.len(), 1);
    // Over max_events (1000).
    let many: Vec<Value> = (0..1001)
        .map(|i| {
            EventBuilder::new("get", "", "v1", "pods", "shop", &format!("p{i}"))
                .level("Metadata")
                .build()
        })
        .collect();
    let (status, answer) = s.post(&client, event_list(&many)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("max_events"),
        "{answer}"
    );
    // Over max_body_bytes (4 MiB).
    let big = k8s::config_map(
        "warden-system",
        "warden-big",
        &[("blob", &"x".repeat(5 << 20))],
    );
    let huge = EventBuilder::new(
        "create",
        "",
        "v1",
        "configmaps",
        "warden-system",
        "warden-big",
    )
    .request_object(big)
    .build();
    // The gate answers 413 as soon as it reads the length, without reading the body: the
    // client may see the answer or, still writing, a closed connection.
    let sent = client
        .post(s.webhook_url())
        .header("content-type", "application/json")
        .body(event_list(&[huge]))
        .send()
        .await;
    if let Ok(response) = sent {
        assert_eq!(response.status().as_u16(), 413);
    }
    let refused = s
        .collector
        .get_json(&format!(
            "{}/api/v1/audit/api?operation=k8s_audit.",
            s.collector.base_url()
        ))
        .await
        .unwrap();
    let too_large: Vec<&Value> = refused["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == 413)
        .collect();
    assert_eq!(too_large.len(), 2, "{refused}");
    assert!(
        too_large
            .iter()
            .any(|e| e["outcome"].as_str().unwrap().contains("max_body_bytes")),
        "{refused}"
    );
    assert_eq!(
        s.changes("").await.len(),
        1,
        "nothing of the refused bodies stored"
    );
    assert_eq!(
        s.collector
            .metric("warden_k8s_audit_bodies_total{result=\"malformed\"}")
            .await,
        3
    );
    assert_eq!(
        s.collector
            .metric("warden_k8s_audit_events_total{outcome=\"rejected\"}")
            .await,
        1
    );
    assert_eq!(
        s.collector
            .metric("warden_http_refused_total{reason=\"too_large\"}")
            .await,
        1
    );
    // A retry of a stored event is still recognised.
    assert_eq!(s.send(&[good]).await["duplicates"], 1);
}

#[tokio::test]
async fn only_the_audit_role_may_post_events_and_it_may_do_nothing_else() {
    let s = Setup::start("").await;
    let body = || {
        event_list(&[EventBuilder::new(
            "create",
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            "web",
        )
        .build()])
    };
    // No credential, a wrong token, a certificate that is not the API server's.
    let (status, _) = s.post(&s.collector.client(None), body()).await;
    assert_eq!(status, 401);
    let (status, _) = s.post(&s.collector.client(Some("wdn_wrong")), body()).await;
    assert_eq!(status, 401);
    let (status, answer) = s.post(&s.client_with_cert("someone-else"), body()).await;
    assert_eq!(status, 401, "{answer}");
    // The admin may do everything else, but not forge the change trail.
    let (status, answer) = s.post(&s.collector.http(), body()).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("k8s-audit"),
        "{answer}"
    );
    // The API server's token works, and its role reads nothing.
    let (status, answer) = s.post(&s.collector.client(Some(AUDIT_TOKEN)), body()).await;
    assert_eq!(status, 200, "{answer}");
    for path in ["/api/v1/records", "/api/v1/changes", "/api/v1/decisions"] {
        let status = s
            .apiserver()
            .get(format!("{}{path}", s.collector.base_url()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 403, "{path}");
    }
    let (status, answer) = s.post(&s.apiserver(), body()).await;
    assert_eq!(status, 200, "{answer}");
    // Every call is in the API audit trail, with the body's size, not its events.
    let audit = s
        .collector
        .get_json(&format!(
            "{}/api/v1/audit/api?operation=k8s_audit.",
            s.collector.base_url()
        ))
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries.len() >= 6, "{audit}");
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "kube-apiserver" && e["status"] == 200),
        "{audit}"
    );
    assert!(!audit.to_string().contains("shop.example.com"), "{audit}");
}

/// A webhook receiver that keeps every body it is sent.
async fn alert_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let keep = Arc::clone(&keep);
            async move {
                keep.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

const CHANGE_RULES: &str = r#"
[[rules]]
name = "strangers"
kind = "change"
action = "alert"
allowed_users = ["alice@example.com", "system:serviceaccount:argocd:*"]

[[rules]]
name = "office-hours"
kind = "change"
action = "alert"
allowed_hours = "08:00-18:00"

[[rules]]
name = "plaintext"
kind = "change"
action = "alert"
listener_without_tls = true

[[rules]]
name = "auth-dropped"
kind = "change"
action = "alert"
auth_removed = true

[[rules]]
name = "cert-deleted"
kind = "change"
action = "alert"
tls_secret_deleted = true

[[rules]]
name = "cert-expiring"
kind = "change"
action = "alert"
certificate_expires_within = "14d"

[[rules]]
name = "plugin-weakened"
kind = "change"
action = "alert"
warden_plugin_weakened = true

[[rules]]
name = "wildcards"
kind = "change"
action = "alert"
dry_run = true
wildcard_host_added = true
"#;

#[tokio::test]
async fn each_change_rule_condition_fires_once_explains_itself_and_is_delivered() {
    let (hook, seen) = alert_receiver().await;
    let s = Setup::start(&format!(
        "{CHANGE_RULES}\n[alerts]\nwebhooks = [\"{hook}\"]\non = [\"alert\", \"dry_run\"]\nallowed_destinations = [\"127.0.0.1\"]\n"
    ))
    .await;
    let t = at_hour(10, 0);
    let tls_ingress = k8s::ingress(
        "shop",
        "web",
        &["shop.example.com"],
        Some((&["shop.example.com"][..], "web-tls")),
    );
    let policy = k8s::authorization_policy(
        "shop",
        "require-jwt",
        "DENY",
        vec![json!({"from": [{"source": {"notRequestPrincipals": ["*"]}}]})],
    );
    let soon =
        issue_from_warden_ca(&s.pki, &["soon.example.com"], &[], "soon.example.com").unwrap();
    // Each change below trips exactly one rule; each is logged at both stages, as an API
    // server without `omitStages` does, and must still alert once.
    let both = |b: EventBuilder| vec![b.clone().stage("RequestReceived").build(), b.build()];
    let mut events = Vec::new();
    // Setup changes that trip nothing: a TLS ingress and a policy, by alice in office hours.
    events.extend(both(
        EventBuilder::new(
            "create",
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            "web",
        )
        .time_ms(t)
        .request_object(tls_ingress.clone())
        .response_object(tls_ingress.clone()),
    ));
    events.extend(both(
        EventBuilder::new(
            "create",
            "security.istio.io",
            "v1",
            "authorizationpolicies",
            "shop",
            "require-jwt",
        )
        .time_ms(t)
        .request_object(policy.clone())
        .response_object(policy),
    ));
    // strangers: bob is not an allowed user.
    events.extend(both(
        EventBuilder::new(
            "update",
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            "web",
        )
        .time_ms(t + 1000)
        .user("bob@example.com", &["system:authenticated"])
        .request_object(tls_ingress.clone())
        .response_object(tls_ingress.clone()),
    ));
    // office-hours: alice at 03:00 UTC.
    events.extend(both(
        EventBuilder::new(
            "patch",
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            "web",
        )
        .time_ms(at_hour(3, 0))
        .request_object(k8s::merge_patch(
            json!({"metadata": {"labels": {"team": "shop"}}}),
        ))
        .response_object(tls_ingress),
    ));
    // plaintext: a Gateway with an HTTP listener.
    let gw = k8s::gateway(
        "edge",
        "public",
        &[("http", "HTTP", 80, Some("edge.example.com"), None)],
    );
    events.extend(both(
        EventBuilder::new(
            "create",
            "gateway.networking.k8s.io",
            "v1",
            "gateways",
            "edge",
            "public",
        )
        .time_ms(t + 2000)
        .request_object(gw.clone())
        .response_object(gw),
    ));
    // auth-dropped: the policy deleted.
    events.extend(both(
        EventBuilder::new(
            "delete",
            "security.istio.io",
            "v1",
            "authorizationpolicies",
            "shop",
            "require-jwt",
        )
        .time_ms(t + 3000),
    ));
    // cert-deleted: the ingress's certificate Secret deleted (Metadata level: its type is known
    // only from the ingress naming it).
    events.extend(both(
        EventBuilder::new("delete", "", "v1", "secrets", "shop", "web-tls")
            .level("Metadata")
            .time_ms(t + 4000),
    ));
    // cert-expiring: a certificate that expires within days (rcgen's default validity is far
    // longer, so it is reissued with a short one below).
    let short = short_lived_secret(&s.pki, "soon-tls", &soon);
    events.extend(both(
        EventBuilder::new("create", "", "v1", "secrets", "shop", "soon-tls")
            .time_ms(t + 5000)
            .request_object(short.clone())
            .response_object(short),
    ));
    // plugin-weakened: Warden's WasmPlugin, created failing closed, set to fail open.
    let closed = k8s::wasm_plugin(
        "istio-system",
        "warden",
        "oci://registry.example/warden-filter:1.0",
        "FAIL_CLOSE",
    );
    events.extend(both(
        EventBuilder::new(
            "create",
            "extensions.istio.io",
            "v1alpha1",
            "wasmplugins",
            "istio-system",
            "warden",
        )
        .time_ms(t + 5500)
        .request_object(closed.clone())
        .response_object(closed),
    ));
    let open = k8s::wasm_plugin(
        "istio-system",
        "warden",
        "oci://registry.example/warden-filter:1.0",
        "FAIL_OPEN",
    );
    events.extend(both(
        EventBuilder::new(
            "update",
            "extensions.istio.io",
            "v1alpha1",
            "wasmplugins",
            "istio-system",
            "warden",
        )
        .time_ms(t + 6000)
        .request_object(open.clone())
        .response_object(open),
    ));
    // wildcards (dry run): a route gains a wildcard host.
    let wild = k8s::http_route("shop", "web", &["*.example.com"], "/", "web");
    events.extend(both(
        EventBuilder::new(
            "create",
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            "shop",
            "web",
        )
        .time_ms(t + 7000)
        .request_object(wild.clone())
        .response_object(wild),
    ));
    // A refused attempt by a stranger to drop the policy: who-rules fire, content rules do not.
    events.extend(both(
        EventBuilder::new(
            "delete",
            "security.istio.io",
            "v1",
            "authorizationpolicies",
            "shop",
            "require-jwt",
        )
        .time_ms(t + 8000)
        .user("mallory@example.com", &["system:authenticated"])
        .code(403),
    ));
    let answer = s.send(&events).await;
    let all = s.changes("findings=true&limit=100").await;
    let found: Vec<String> = all
        .iter()
        .flat_map(|c| c["findings"].as_array().unwrap().clone())
        .map(|f| f["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(answer["findings"], 9, "{answer} {found:#?}");

    let changes = s.changes("findings=true").await;
    let mut fired: Vec<(String, String, String)> = changes
        .iter()
        .flat_map(|c| {
            let who = format!(
                "{} {}",
                c["change"]["resource"].as_str().unwrap(),
                c["change"]["name"].as_str().unwrap()
            );
            c["findings"].as_array().unwrap().iter().map(move |f| {
                (
                    f["rule"].as_str().unwrap().to_string(),
                    f["condition"].as_str().unwrap().to_string(),
                    who.clone(),
                )
            })
        })
        .collect();
    fired.sort();
    let expected = [
        (
            "auth-dropped",
            "auth_removed",
            "authorizationpolicies require-jwt",
        ),
        ("cert-deleted", "tls_secret_deleted", "secrets web-tls"),
        (
            "cert-expiring",
            "certificate_expires_within",
            "secrets soon-tls",
        ),
        ("office-hours", "allowed_hours", "ingresses web"),
        ("plaintext", "listener_without_tls", "gateways public"),
        (
            "plugin-weakened",
            "warden_plugin_weakened",
            "wasmplugins warden",
        ),
        (
            "strangers",
            "allowed_users",
            "authorizationpolicies require-jwt",
        ),
        ("strangers", "allowed_users", "ingresses web"),
        ("wildcards", "wildcard_host_added", "httproutes web"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(fired, expected);
    // Each explains itself.
    let reasons: Vec<String> = changes
        .iter()
        .flat_map(|c| c["findings"].as_array().unwrap().clone())
        .map(|f| f["reason"].as_str().unwrap().to_string())
        .collect();
    let has = |needle: &str| {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no reason mentions {needle:?}: {reasons:#?}"
        )
    };
    has("bob@example.com");
    has("mallory@example.com");
    has("08:00-18:00");
    has("14d");
    for f in changes
        .iter()
        .flat_map(|c| c["findings"].as_array().unwrap())
    {
        assert_eq!(f["dry_run"], f["rule"] == "wildcards", "{f}");
    }
    // Delivered to the webhook, once each.
    let delivered = eventually("nine alerts at the webhook", || async {
        let n = seen.lock().unwrap().len();
        if n >= 9 {
            Ok(n)
        } else {
            Err(format!("{n} so far"))
        }
    })
    .await;
    assert_eq!(delivered, 9);
    let bodies = seen.lock().unwrap().clone();
    assert!(bodies.iter().all(|b| b["type"] == "change"), "{bodies:#?}");
    let dry: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["outcome"] == "dry_run")
        .collect();
    assert_eq!(dry.len(), 1, "{bodies:#?}");
    assert_eq!(dry[0]["change"]["resource"], "httproutes");
    assert_eq!(s.collector.metric("warden_change_findings_total").await, 9);
}

/// A TLS Secret whose certificate expires in five days.
fn short_lived_secret(pki: &Path, name: &str, _template: &warden_e2e::auth::ClientCert) -> Value {
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&read("ca-key.pem")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("ca.pem"), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["soon.example.com".to_string()]).unwrap();
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(5 * 86_400)).into();
    let cert = params.signed_by(&key, &issuer).unwrap();
    k8s::tls_secret("shop", name, &cert.pem(), &key.serialize_pem())
}

/// Exports denied requests to `host` at `times` (ms) as one batch.
async fn export_denials(collector: &Collector, host: &str, times: &[i64]) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let first = NEXT.fetch_add(times.len() as u64, std::sync::atomic::Ordering::SeqCst);
    let records = times
        .iter()
        .enumerate()
        .map(|(i, t)| AccessRecord {
            sequence: first + i as u64,
            time_ms: *t,
            request_id: format!("spike-{first}-{i}"),
            client_address: format!("198.51.100.{}", i % 200 + 1),
            method: "GET".into(),
            authority: host.into(),
            path: "/checkout".into(),
            status: 403,
            decision: Some(AuthDecision {
                verdict: 2,
                mechanism: 2,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let mut request = tonic::Request::new(ExportRequest {
        filter: Some(FilterIdentity {
            node_id: "changes-test".into(),
            worker: 0,
            instance_id: "changes-test-1".into(),
            filter_version: "test".into(),
        }),
        records,
        dropped_total: 0,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", collector.filter_token())
            .parse()
            .unwrap(),
    );
    let answer = AuditServiceClient::new(collector.grpc_channel().await)
        .export(request)
        .await
        .expect("Export")
        .into_inner();
    assert!(answer.refused.is_empty(), "{answer:?}");
    assert_eq!(answer.accepted as usize, times.len(), "{answer:?}");
}

#[tokio::test]
async fn the_cli_answers_what_changed_right_before_denials_on_a_host_tripled() {
    let s = Setup::start("").await;
    let now = now_secs() * 1000;
    let minute = 60_000;
    // A quiet baseline (2 denials every 5 minutes for 2 hours), then a spike 20 minutes ago.
    let mut times: Vec<i64> = (0..24)
        .flat_map(|b| {
            let start = now - 140 * minute + b * 5 * minute;
            [start + 1000, start + 2000]
        })
        .collect();
    let spike_at = now - 20 * minute;
    times.extend((0..40).map(|i| spike_at + i * 1000));
    times.retain(|t| *t < now);
    export_denials(&s.collector, "shop.example.com", &times).await;
    let ingress = |name: &str, hosts: &[&str], at: i64| {
        let obj = k8s::ingress("shop", name, hosts, None);
        EventBuilder::new(
            "update",
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            name,
        )
        .time_ms(at)
        .request_object(obj.clone())
        .response_object(obj)
        .build()
    };
    let policy = EventBuilder::new(
        "delete",
        "security.istio.io",
        "v1",
        "authorizationpolicies",
        "shop",
        "require-jwt",
    )
    .time_ms(spike_at - 3 * minute)
    .build();
    s.send(&[
        policy,
        // The culprit: ten minutes before the spike.
        ingress("checkout", &["shop.example.com"], spike_at - 10 * minute),
        // Too early to matter, and another host.
        ingress("old", &["shop.example.com"], now - 5 * 60 * minute),
        ingress("blog", &["blog.example.com"], spike_at - 5 * minute),
    ])
    .await;
    let cli = s.collector.cli();
    let out = cli.ok(&[
        "changes",
        "--host",
        "shop.example.com",
        "--before-spike",
        "--since",
        "6h",
    ]);
    assert!(out.contains("spiked at"), "{out}");
    assert!(out.contains("checkout"), "{out}");
    // A policy names no host but may be what changed the answers: listed too.
    assert!(out.contains("shop/require-jwt"), "{out}");
    assert!(
        !out.contains("shop/old") && !out.contains("shop/blog"),
        "{out}"
    );
    let json = cli.ok(&[
        "changes",
        "--host",
        "shop.example.com",
        "--before-spike",
        "--since",
        "6h",
        "--json",
    ]);
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines[0]["spike"]["denials"].as_u64().unwrap() >= 10,
        "{json}"
    );
    assert_eq!(lines.len(), 3, "{json}");
    assert_eq!(lines[1]["change"]["name"], "require-jwt");
    assert_eq!(lines[2]["change"]["name"], "checkout");
    // Without a spike there is nothing to answer but that.
    let quiet = cli.ok(&[
        "changes",
        "--host",
        "blog.example.com",
        "--before-spike",
        "--since",
        "6h",
    ]);
    assert!(quiet.contains("no spike"), "{quiet}");
    // The plain listing, filtered, as a table.
    let table = cli.ok(&["changes", "--resource", "ingress", "--since", "3h"]);
    assert!(
        table.contains("shop/checkout") && table.contains("shop/blog"),
        "{table}"
    );
    assert!(!table.contains("shop/old"), "five hours old: {table}");
    // A bad flag is named.
    let bad = cli.run(&["changes", "--since", "yesterday"]);
    assert!(!bad.success());
    assert!(bad.stderr.contains("--since"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_kubernetes_client_can_neither_blind_nor_hide_its_changes_through_the_audit_id() {
    let s = Setup::start(
        "[[rules]]\nname = \"auth-dropped\"\nkind = \"change\"\nauth_removed = true\n",
    )
    .await;
    let t = at_hour(10, 0);
    let policy = k8s::authorization_policy(
        "shop",
        "require-jwt",
        "DENY",
        vec![json!({"from": [{"source": {"notRequestPrincipals": ["*"]}}]})],
    );
    let create = EventBuilder::new(
        "create",
        "security.istio.io",
        "v1",
        "authorizationpolicies",
        "shop",
        "require-jwt",
    )
    .audit_id("shared-id")
    .time_ms(t)
    .request_object(policy.clone())
    .response_object(policy)
    .build();
    // The client chooses the Audit-ID header: a tab (cleaned when stored), an id another event
    // already has, an id of 5,000 bytes. Each is stored, none fails the batch around it.
    let tabbed = |at: i64| {
        EventBuilder::new(
            "patch",
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            "web",
        )
        .audit_id("a\tb")
        .time_ms(at)
        .user("mallory@example.com", &["system:authenticated"])
        .code(403)
        .build()
    };
    let reused = EventBuilder::new(
        "delete",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "shop",
        "web",
    )
    .audit_id("shared-id")
    .time_ms(t + 1000)
    .build();
    let long = EventBuilder::new(
        "patch",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "shop",
        "api",
    )
    .audit_id(&"x".repeat(5000))
    .time_ms(t + 2000)
    .build();
    // `dryRun=%zz` is dropped by the API server's query parser: the delete was applied.
    let sneaky = EventBuilder::new(
        "delete",
        "security.istio.io",
        "v1",
        "authorizationpolicies",
        "shop",
        "require-jwt",
    )
    .query("dryRun=%zz")
    .time_ms(t + 3000)
    .build();
    let answer = s
        .send(&[
            create,
            tabbed(t + 500),
            tabbed(t + 600),
            reused,
            long,
            sneaky,
        ])
        .await;
    assert_eq!(answer["stored"], 6, "{answer}");
    assert_eq!(answer["rejected"], 0, "{answer}");
    let changes = s.changes("limit=100").await;
    assert_eq!(changes.len(), 6, "{changes:#?}");
    let deleted = changes
        .iter()
        .find(|c| {
            c["change"]["verb"] == "delete" && c["change"]["resource"] == "authorizationpolicies"
        })
        .unwrap();
    assert_eq!(deleted["change"]["outcome"], "applied", "{deleted}");
    assert_eq!(
        deleted["findings"][0]["condition"], "auth_removed",
        "{deleted}"
    );
    assert!(
        changes.iter().any(|c| c["change"]["audit_id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")),
        "{changes:#?}"
    );
}
