//! The Kubernetes manifests (`envoy/kubernetes/`) as a cluster would get them: rendered with
//! kustomize and checked for least privilege (non-root, read-only root filesystem, read-only
//! secret mounts, network policies that admit only the gateways and the operators), and then run
//! for real: the collector with the ConfigMap's `warden.toml` and certificates like
//! cert-manager's, one Envoy named as Istio names its gateway, and one Envoy whose collector
//! cluster is Envoy Gateway's bootstrap merge with its file-based SDS, each with its own client
//! certificate. No cluster exists here, so the Kubernetes objects themselves are not applied.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use warden_e2e::auth::{issue_from_warden_ca, warden_init};
use warden_e2e::secrets::assert_not_in_text;
use warden_e2e::{Cli, Client, Collector, CollectorTls, Envoy, EnvoyOptions, eventually, paths};

const COLLECTOR_NAME: &str = "warden-collector.warden.svc";

fn manifests_dir() -> PathBuf {
    paths::workspace_root().join("envoy/kubernetes")
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubectl kustomize envoy/kubernetes`: what `kubectl apply -k` would send.
fn rendered() -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(manifests_dir())
        .output()
        .expect("run kubectl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8_lossy(&out.stdout))
}

fn file(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(manifests_dir().join(name)).expect("manifest");
    documents(&text)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The `secretName` of the cert-manager Certificate in `namespace` whose URI SANs include `uri`.
fn certificate_secret<'a>(docs: &'a [Value], namespace: &str, uri: &str) -> &'a str {
    docs.iter()
        .find(|d| {
            d["kind"] == "Certificate"
                && d["metadata"]["namespace"] == namespace
                && strings(&d["spec"]["uris"]).contains(&uri)
        })
        .and_then(|d| d["spec"]["secretName"].as_str())
        .unwrap_or_else(|| panic!("no Certificate for {uri} in {namespace}"))
}

#[test]
fn the_collector_runs_unprivileged_and_writes_only_its_volumes() {
    let docs = rendered();
    let namespace = find(&docs, "Namespace", "warden");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let deployment = find(&docs, "Deployment", "warden-collector");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false, "{pod}");
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{security}");
    assert!(
        security["runAsUser"].as_u64().unwrap_or(0) > 0,
        "{security}"
    );
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{security}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{security}");
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["scheme"], "HTTPS",
            "{probe} speaks TLS"
        );
    }
    // Only the data volume and a scratch directory are writable; the certificates and the
    // configuration are mounted read-only.
    let volumes = pod["volumes"].as_array().unwrap();
    let mut tls_mounted = false;
    for mount in container["volumeMounts"].as_array().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let volume = volumes.iter().find(|v| v["name"] == name).unwrap();
        if mount["readOnly"] != true {
            assert!(
                volume.get("persistentVolumeClaim").is_some() || volume.get("emptyDir").is_some(),
                "{name} is writable but is not the data volume or a scratch directory"
            );
        }
        if volume["secret"]["secretName"] == "warden-collector-tls" {
            tls_mounted = true;
            assert_eq!(mount["mountPath"], "/etc/warden/tls");
        }
    }
    assert!(tls_mounted, "the collector's certificate is mounted");
    assert_eq!(
        certificate_secret(
            &docs,
            "istio-system",
            "spiffe://warden/filter/istio-ingressgateway"
        ),
        "warden-filter-istio"
    );
    let service = find(&docs, "Service", "warden-collector");
    assert!(
        service["spec"].get("type").is_none() || service["spec"]["type"] == "ClusterIP",
        "the collector is not published outside the cluster"
    );
}

#[test]
fn network_policies_admit_grpc_only_from_gateways_and_the_api_only_from_operators() {
    let docs = rendered();
    let policies: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["namespace"] == "warden")
        .collect();
    assert!(
        policies.iter().any(|p| {
            p["spec"]["podSelector"] == serde_json::json!({})
                && strings(&p["spec"]["policyTypes"]).contains(&"Ingress")
                && p["spec"].get("ingress").is_none()
        }),
        "a default-deny ingress policy for the namespace"
    );
    let mut grpc_peers = 0;
    let mut api_peers = 0;
    for policy in &policies {
        for rule in policy["spec"]["ingress"].as_array().into_iter().flatten() {
            let ports: Vec<u64> = rule["ports"]
                .as_array()
                .expect("every ingress rule names its ports")
                .iter()
                .map(|p| p["port"].as_u64().unwrap())
                .collect();
            let peers = rule["from"]
                .as_array()
                .expect("every ingress rule names who may connect");
            assert!(!peers.is_empty());
            for peer in peers {
                assert!(peer.get("ipBlock").is_none(), "no address ranges: {peer}");
                let namespace = &peer["namespaceSelector"]["matchLabels"];
                assert!(
                    namespace.is_object(),
                    "every peer names its namespaces: {peer}"
                );
                if ports == [50051] {
                    grpc_peers += 1;
                    let ns = namespace["kubernetes.io/metadata.name"].as_str().unwrap();
                    assert!(
                        ["istio-system", "envoy-gateway-system"].contains(&ns),
                        "gRPC from {ns}"
                    );
                    assert!(
                        peer["podSelector"]["matchLabels"].is_object(),
                        "gRPC only from the gateway pods, not their whole namespace: {peer}"
                    );
                } else if ports == [9090] {
                    api_peers += 1;
                    let operators = namespace["warden.io/operators"] == "true";
                    let prometheus = namespace["kubernetes.io/metadata.name"] == "monitoring"
                        && peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                            == "prometheus";
                    assert!(operators || prometheus, "API from {peer}");
                } else {
                    panic!("unexpected ports {ports:?} in {policy}");
                }
            }
        }
    }
    assert_eq!(grpc_peers, 2, "Istio's and Envoy Gateway's proxies");
    assert_eq!(api_peers, 2, "operators and Prometheus");
}

/// Envoy Gateway's collector cluster, from the EnvoyProxy bootstrap merge.
fn envoy_gateway_cluster(docs: &[Value]) -> Value {
    let bootstrap = find(docs, "EnvoyProxy", "warden")["spec"]["bootstrap"]["value"]
        .as_str()
        .expect("bootstrap value");
    let bootstrap = documents(bootstrap).remove(0);
    bootstrap["static_resources"]["clusters"][0].clone()
}

#[test]
fn the_gateways_dial_the_collector_over_mtls_and_no_secret_sits_in_a_manifest() {
    let pki_docs = file("pki.yaml");
    let istio = file("istio-wasmplugin.yaml");
    let rule = find(&istio, "DestinationRule", "warden-collector");
    let tls = &rule["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"];
    assert_eq!(tls["mode"], "MUTUAL", "{rule}");
    assert_eq!(
        tls["credentialName"],
        certificate_secret(
            &pki_docs,
            "istio-system",
            "spiffe://warden/filter/istio-ingressgateway"
        )
    );
    assert_eq!(tls["sni"], COLLECTOR_NAME);

    let gateway = file("envoy-gateway.yaml");
    let cluster = envoy_gateway_cluster(&gateway);
    let context = &cluster["transport_socket"]["typed_config"];
    assert!(
        context["@type"]
            .as_str()
            .unwrap()
            .ends_with("UpstreamTlsContext")
    );
    assert!(context["common_tls_context"]["tls_certificate_sds_secret_configs"].is_array());
    let proxy = find(&gateway, "EnvoyProxy", "warden");
    let volumes = &proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"]
                == certificate_secret(
                    &pki_docs,
                    "envoy-gateway-system",
                    "spiffe://warden/filter/envoy-gateway"
                )),
        "the proxies mount their certificate: {volumes}"
    );

    // Hashes only: no token, key or certificate body in any manifest.
    for name in [
        "collector.yaml",
        "pki.yaml",
        "network-policy.yaml",
        "istio-wasmplugin.yaml",
        "envoy-gateway.yaml",
    ] {
        let text = std::fs::read_to_string(manifests_dir().join(name)).unwrap();
        assert_not_in_text(name, &text, &["wdn_", "BEGIN", "PRIVATE KEY"]);
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                !line.trim_start().starts_with("token ="),
                "{name}: a shared token in a ConfigMap: {line}"
            );
        }
    }
}

/// The ConfigMap's `warden.toml` and `rules.toml`, with the Secret's mount paths pointed at
/// files like those cert-manager writes (`tls.crt`, `tls.key`, `ca.crt`).
fn collector_config(dir: &Path, pki: &Path) -> PathBuf {
    let docs = rendered();
    let config_map = find(&docs, "ConfigMap", "warden-collector");
    let tls = dir.join("collector-tls");
    std::fs::create_dir_all(&tls).unwrap();
    for (from, to) in [
        ("collector.pem", "tls.crt"),
        ("collector-key.pem", "tls.key"),
        ("ca.pem", "ca.crt"),
    ] {
        std::fs::copy(pki.join(from), tls.join(to)).unwrap();
    }
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, config_map["data"]["rules.toml"].as_str().unwrap()).unwrap();
    let config = config_map["data"]["warden.toml"]
        .as_str()
        .unwrap()
        .replace("/etc/warden/tls/", &format!("{}/", tls.display()))
        .replace("/etc/warden/rules.toml", &rules.display().to_string());
    let path = dir.join("warden.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn write_cert(dir: &Path, cert: &warden_e2e::auth::ClientCert, ca: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &cert.key_pem).unwrap();
    std::fs::copy(ca, dir.join("ca.crt")).unwrap();
}

/// The standard Envoy template with its collector TLS block replaced by Envoy Gateway's
/// transport socket, its `/etc/warden-filter/` paths pointed at `mount` (where the test put the
/// Secret's files and the SDS ConfigMap's), as the EnvoyProxy's volumes would.
fn envoy_gateway_template(dir: &Path, mount: &Path) -> PathBuf {
    let gateway = file("envoy-gateway.yaml");
    let relocate = |s: &str| s.replace("/etc/warden-filter/", &format!("{}/", mount.display()));
    let sds = find(&gateway, "ConfigMap", "warden-filter-sds");
    std::fs::create_dir_all(mount.join("sds")).unwrap();
    for (name, content) in sds["data"].as_object().unwrap() {
        std::fs::write(
            mount.join("sds").join(name),
            relocate(content.as_str().unwrap()),
        )
        .unwrap();
    }
    let socket = relocate(&envoy_gateway_cluster(&gateway)["transport_socket"].to_string());
    let template = std::fs::read_to_string(paths::envoy_template()).unwrap();
    let mut out = String::new();
    let mut inside = false;
    for line in template.lines() {
        if line.trim_start().starts_with("# BEGIN collector-tls") {
            inside = true;
            out.push_str(&format!("    transport_socket: {socket}\n"));
        } else if line.trim_start().starts_with("# END collector-tls") {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!inside && out.contains("tls_certificate_sds_secret_configs"));
    let path = dir.join("envoy-gateway.yaml.tmpl");
    std::fs::write(&path, out).unwrap();
    path
}

#[tokio::test]
async fn the_kubernetes_configuration_serves_istio_and_envoy_gateway_filters_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = warden_init(&dir.path().join("pki"), &["--host", COLLECTOR_NAME]).unwrap();
    let config = collector_config(dir.path(), &pki);

    // `warden serve --check` accepts the shipped configuration and names what is wrong in a
    // broken one.
    let check = |config: &Path| {
        let config = config.display().to_string();
        Cli::new().run(&["serve", "--check", "--config", &config])
    };
    let out = check(&config);
    let stdout = &out.stdout;
    assert!(out.success(), "{out:?}");
    assert!(
        stdout.contains("configuration OK")
            && stdout.contains("TLS, client certificate required")
            && !stdout.contains("warning"),
        "{stdout}"
    );
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("tls.key", "missing.key"),
    )
    .unwrap();
    let out = check(&broken);
    assert!(!out.success());
    assert!(out.stderr.contains("missing.key"), "{out:?}");

    let collector = Collector::start_with_config(&std::fs::read_to_string(&config).unwrap()).await;
    let ca = pki.join("ca.pem");
    let admin_cert = issue_from_warden_ca(
        &pki,
        &[],
        &["spiffe://warden/operator/admin"],
        "warden-admin",
    )
    .unwrap();
    let admin = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .identity(reqwest::Identity::from_pem(admin_cert.identity_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let api = collector.base_url();
    assert!(api.starts_with("https://"), "{api}");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            collector
                .http()
                .get(format!("{api}/api/v1/decisions"))
                .send()
                .await
                .unwrap()
        ),
        401,
        "no local admin token in Kubernetes"
    );
    assert_eq!(
        status(
            admin
                .get(format!("{api}/api/v1/decisions"))
                .send()
                .await
                .unwrap()
        ),
        200,
        "the admin certificate from pki.yaml"
    );

    let upstream = warden_e2e::upstream::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // Istio: the gateway's certificate, and a node id as Istio names gateway proxies.
    let istio_cert = issue_from_warden_ca(
        &pki,
        &[],
        &["spiffe://warden/filter/istio-ingressgateway"],
        "istio-ingressgateway",
    )
    .unwrap();
    let istio_files = dir.path().join("istio");
    write_cert(&istio_files, &istio_cert, &ca);
    let mut options = EnvoyOptions::new(&collector, upstream);
    options.filter_token = None;
    options.node_id = "router~10.1.2.3~istio-ingressgateway-5d9f8-x2x7k.istio-system~istio-system.svc.cluster.local".into();
    options.collector_tls = Some(CollectorTls {
        ca: ca.clone(),
        cert: istio_files.join("tls.crt"),
        key: istio_files.join("tls.key"),
        sni: COLLECTOR_NAME.into(),
    });
    let istio = Envoy::start(options.clone()).await;

    // Envoy Gateway: its certificate through the bootstrap's file-based SDS, its node id.
    let gateway_cert = issue_from_warden_ca(
        &pki,
        &[],
        &["spiffe://warden/filter/envoy-gateway"],
        "envoy-gateway",
    )
    .unwrap();
    let mount = dir.path().join("warden-filter");
    write_cert(&mount.join("tls"), &gateway_cert, &ca);
    options.template = envoy_gateway_template(dir.path(), &mount);
    options.collector_tls = None;
    options.node_id = "envoy-default-eg-e41e7b31-7d9c8b5f4-abcde".into();
    let envoy_gateway = Envoy::start(options.clone()).await;

    // The Envoy Gateway certificate claiming an Istio node id: refused.
    options.node_id = "router~10.9.9.9~istio-ingressgateway-1-2.istio-system~x".into();
    let impostor = Envoy::start(options).await;

    for (envoy, client) in [
        (&istio, "127.0.0.61"),
        (&envoy_gateway, "127.0.0.62"),
        (&impostor, "127.0.0.63"),
    ] {
        assert_eq!(
            Client::from(client)
                .get(&envoy.url("/anything/k8s"))
                .await
                .status,
            200
        );
    }
    for client in ["127.0.0.61", "127.0.0.62"] {
        eventually(&format!("the record of {client}"), || async {
            let body: Value = admin
                .get(format!("{api}/api/v1/records?ip={client}"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match body["records"].as_array() {
                Some(r) if !r.is_empty() => Ok(()),
                _ => Err(body.to_string()),
            }
        })
        .await;
    }
    // The impostor's node id is refused.
    collector
        .wait_for_metric("warden_grpc_refused_total{reason=\"permission_denied\"}", 1)
        .await;
    assert!(collector.log().contains("envoy-gateway"));
    let body: Value = admin
        .get(format!("{api}/api/v1/records?ip=127.0.0.63"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["records"], serde_json::json!([]), "{body}");
}

/// The shipped audit policy (`envoy/kubernetes/audit/audit-policy.yaml`) sends what Warden keeps
/// by default, at the level each needs: Secrets and ConfigMaps at Metadata first (so no rule
/// after them can send a Secret's data), every other kept kind at RequestResponse, only
/// mutations, and nothing else (a last `level: None`).
#[test]
fn the_audit_policy_sends_exactly_what_warden_keeps_and_never_a_secrets_data() {
    let docs = file("audit/audit-policy.yaml");
    assert_eq!(docs.len(), 1);
    let policy = &docs[0];
    assert_eq!(policy["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(policy["kind"], "Policy");
    let rules = policy["rules"].as_array().expect("rules");
    let last = rules.last().expect("a last rule");
    assert_eq!(last["level"], "None", "{last}");
    assert!(
        last.get("resources").is_none(),
        "the last rule must catch everything: {last}"
    );
    // (group, resource) → level of the first rule naming it.
    let mut level_of = std::collections::HashMap::new();
    for rule in &rules[..rules.len() - 1] {
        let level = rule["level"].as_str().expect("level");
        let verbs = strings(&rule["verbs"]);
        assert_eq!(
            verbs,
            ["create", "update", "patch", "delete", "deletecollection"],
            "mutations only: {rule}"
        );
        for r in rule["resources"].as_array().expect("resources") {
            let group = r["group"].as_str().expect("group");
            for resource in strings(&r["resources"]) {
                level_of
                    .entry((group.to_string(), resource.to_string()))
                    .or_insert(level);
            }
        }
    }
    assert_eq!(
        level_of[&("".to_string(), "secrets".to_string())],
        "Metadata"
    );
    assert_eq!(
        level_of[&("".to_string(), "configmaps".to_string())],
        "Metadata"
    );
    let keep = warden_k8s_audit::KeepList::default_list().entries();
    for entry in &keep {
        // `resource.group[/pattern]` or `secrets:tls`.
        let entry = entry.split(['/', ':']).next().unwrap_or_default();
        let (resource, group) = entry.split_once('.').unwrap_or((entry, ""));
        let level = level_of
            .get(&(group.to_string(), resource.to_string()))
            .unwrap_or_else(|| panic!("{resource}.{group} is kept by Warden but not audited"));
        let expected = if group.is_empty() {
            "Metadata"
        } else {
            "RequestResponse"
        };
        assert_eq!(*level, expected, "{resource}.{group}");
    }
    assert_eq!(
        level_of.len(),
        keep.iter()
            .map(|e| e.split(['/', ':']).next().unwrap_or_default().to_string())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        "the policy audits something Warden drops: {level_of:?}"
    );
    // The webhook kubeconfig points at the collector's API path with a client certificate.
    let kubeconfig = file("audit/webhook-kubeconfig.yaml");
    let cluster = &kubeconfig[0]["clusters"][0]["cluster"];
    assert!(
        cluster["server"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/k8s-audit"),
        "{cluster}"
    );
    assert!(cluster["certificate-authority"].is_string(), "{cluster}");
    let user = &kubeconfig[0]["users"][0]["user"];
    assert!(
        user["client-certificate"].is_string() && user["client-key"].is_string(),
        "{user}"
    );
    // The warden.toml snippet parses and enables the webhook with its own role.
    let snippet = std::fs::read_to_string(manifests_dir().join("audit/warden-audit.toml")).unwrap();
    let config: toml::Table = snippet.parse().expect("warden-audit.toml is TOML");
    assert_eq!(config["k8s_audit"]["enabled"].as_bool(), Some(true));
    assert!(
        config["http"]["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["role"].as_str() == Some("k8s-audit")),
        "{snippet}"
    );
}
