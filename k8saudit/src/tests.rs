//! Whole-crate behaviour, event in, decision and record out: one behaviour per test, with events
//! in the API server's own shape (see [`crate::fixtures`]).

use crate::certificate::tests::make_cert;
use crate::fixtures::{event, parse, with_object};
use crate::json::sha256_hex;
use crate::{
    ChangeRecord, DropReason, Event, KeepDecision, KeepList, MAX_SNAPSHOT_BYTES, Snapshot,
    change_record,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

fn decide(ev: &Event) -> KeepDecision {
    KeepList::default_list().decide(ev, &|_, _| false)
}

fn record(ev: &Event) -> ChangeRecord {
    change_record(ev, None).0
}

/// The record of `ev` after `before` was seen, and the snapshot it leaves.
fn after(before: &Event, ev: &Event) -> (ChangeRecord, Option<Snapshot>) {
    let (_, snap) = change_record(before, None);
    assert!(snap.is_some(), "the first event left no snapshot");
    change_record(ev, snap.as_ref())
}

fn ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "web", "namespace": "shop", "resourceVersion": "4711", "generation": 3,
            "annotations": {"nginx.ingress.kubernetes.io/auth-url": "https://auth.example.com/check"},
            "managedFields": [{"manager": "kubectl", "operation": "Update"}]
        },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
            "rules": [
                {"host": "shop.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
                ]}},
                {"host": "api.example.com", "http": {"paths": [
                    {"path": "/v1", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"name": "http"}}}}
                ]}}
            ]
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}
    })
}

// ---- keeping and dropping -------------------------------------------------------------------

#[test]
fn every_default_kind_is_kept_on_write() {
    let kinds = [
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "ingressclasses"),
        ("gateway.networking.k8s.io", "gateways"),
        ("gateway.networking.k8s.io", "httproutes"),
        ("gateway.networking.k8s.io", "grpcroutes"),
        ("gateway.networking.k8s.io", "tlsroutes"),
        ("gateway.networking.k8s.io", "referencegrants"),
        ("networking.istio.io", "gateways"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "envoyfilters"),
        ("security.istio.io", "authorizationpolicies"),
        ("security.istio.io", "requestauthentications"),
        ("security.istio.io", "peerauthentications"),
        ("extensions.istio.io", "wasmplugins"),
        ("gateway.envoyproxy.io", "securitypolicies"),
        ("gateway.envoyproxy.io", "envoyextensionpolicies"),
        ("gateway.envoyproxy.io", "clienttrafficpolicies"),
    ];
    for (group, resource) in kinds {
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            let ev = parse(event(verb, group, resource, "shop", "x"));
            assert_eq!(decide(&ev), KeepDecision::Keep, "{verb} {resource}.{group}");
        }
    }
}

#[test]
fn reads_are_dropped_as_read_only() {
    for verb in ["get", "list", "watch", "proxy", "impersonate"] {
        let ev = parse(event(verb, "networking.k8s.io", "ingresses", "shop", "web"));
        assert_eq!(
            decide(&ev),
            KeepDecision::Drop(DropReason::ReadOnly),
            "{verb}"
        );
    }
}

#[test]
fn status_updates_are_dropped_as_not_kept() {
    let mut ev = event("update", "networking.k8s.io", "ingresses", "shop", "web");
    ev["objectRef"]["subresource"] = json!("status");
    assert_eq!(decide(&parse(ev)), KeepDecision::Drop(DropReason::NotKept));
}

#[test]
fn non_resource_urls_are_dropped_as_no_object() {
    let mut ev = event("create", "", "", "", "");
    ev.as_object_mut().unwrap().remove("objectRef");
    ev["requestURI"] = json!("/api/v1/namespaces/x/tokenreviews-not-a-resource");
    assert_eq!(decide(&parse(ev)), KeepDecision::Drop(DropReason::NoObject));
}

#[test]
fn unlisted_kinds_are_dropped_and_warden_config_maps_kept() {
    let pods = parse(event("create", "", "pods", "shop", "web-0"));
    assert_eq!(decide(&pods), KeepDecision::Drop(DropReason::NotKept));
    let cm = parse(event("update", "", "configmaps", "shop", "shop-settings"));
    assert_eq!(decide(&cm), KeepDecision::Drop(DropReason::NotKept));
    let warden = parse(event("update", "", "configmaps", "warden", "warden-rules"));
    assert_eq!(decide(&warden), KeepDecision::Keep);
    let services = parse(event("patch", "", "services", "shop", "web"));
    assert_eq!(decide(&services), KeepDecision::Drop(DropReason::NotKept));
}

fn secret_event(level: &str, name: &str, object: Option<Value>) -> Event {
    let mut ev = event("update", "", "secrets", "shop", name);
    ev["level"] = json!(level);
    if let Some(o) = object {
        ev["requestObject"] = o.clone();
        ev["responseObject"] = o;
    }
    parse(ev)
}

#[test]
fn secrets_are_kept_only_when_known_or_likely_to_be_tls() {
    let keep = KeepList::default_list();
    let never = |_: &str, _: &str| false;
    let typed = |t: &str| Some(json!({"kind": "Secret", "type": t, "metadata": {"name": "x"}}));
    let d = |ev: &Event| keep.decide(ev, &never);

    assert_eq!(
        d(&secret_event(
            "RequestResponse",
            "x",
            typed("kubernetes.io/tls")
        )),
        KeepDecision::Keep
    );
    assert_eq!(
        d(&secret_event(
            "RequestResponse",
            "shop-tls",
            typed("Opaque")
        )),
        KeepDecision::Drop(DropReason::SecretNotTls),
        "a known type beats the name"
    );
    assert_eq!(
        d(&secret_event("Metadata", "shop-tls", None)),
        KeepDecision::Keep
    );
    assert_eq!(
        d(&secret_event("Metadata", "api-Cert", None)),
        KeepDecision::Keep
    );
    assert_eq!(
        d(&secret_event("Metadata", "db-password", None)),
        KeepDecision::Drop(DropReason::SecretNotTls)
    );
    let known = |ns: &str, name: &str| ns == "shop" && name == "istio-credential";
    assert_eq!(
        keep.decide(&secret_event("Metadata", "istio-credential", None), &known),
        KeepDecision::Keep
    );
    assert_eq!(
        keep.decide(
            &secret_event("RequestResponse", "istio-credential", typed("Opaque")),
            &known
        ),
        KeepDecision::Keep,
        "Istio takes Opaque Secrets as credentials"
    );
    assert_eq!(
        d(&secret_event("Metadata", "warden-token", None)),
        KeepDecision::Keep
    );
    let all = parse(event("deletecollection", "", "secrets", "shop", ""));
    assert_eq!(d(&all), KeepDecision::Keep);
    // A patch that does not set the type leaves the name rule.
    let mut patch = event("patch", "", "secrets", "shop", "db-password");
    patch["level"] = json!("Request");
    patch["requestObject"] = json!({"data": {"password": "eA=="}});
    assert_eq!(
        d(&parse(patch)),
        KeepDecision::Drop(DropReason::SecretNotTls)
    );
}

#[test]
fn a_custom_list_keeps_only_its_entries() {
    let keep = KeepList::parse(&["httproutes.gateway.networking.k8s.io".to_string()]).unwrap();
    let never = |_: &str, _: &str| false;
    let route = parse(event(
        "create",
        "gateway.networking.k8s.io",
        "httproutes",
        "a",
        "r",
    ));
    let ing = parse(event("create", "networking.k8s.io", "ingresses", "a", "i"));
    let secret = parse(event("create", "", "secrets", "a", "shop-tls"));
    assert_eq!(keep.decide(&route, &never), KeepDecision::Keep);
    assert_eq!(
        keep.decide(&ing, &never),
        KeepDecision::Drop(DropReason::NotKept)
    );
    assert_eq!(
        keep.decide(&secret, &never),
        KeepDecision::Drop(DropReason::NotKept)
    );
}

#[test]
fn drop_reasons_have_stable_labels() {
    let labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        ["read_only", "no_object", "not_kept", "secret_not_tls"]
    );
}

// ---- records: who, when, outcome ------------------------------------------------------------

#[test]
fn a_create_is_recorded_with_who_when_and_outcome() {
    let (r, snap) = change_record(
        &with_object("create", "networking.k8s.io", "ingresses", ingress()),
        None,
    );
    assert_eq!(r.audit_id, "a1b2c3d4-0000-4000-8000-000000000001");
    assert_eq!(r.stage, "ResponseComplete");
    assert_eq!(r.level, "RequestResponse");
    assert_eq!(r.time_ms, 1_796_119_200_456);
    assert_eq!(r.verb, "create");
    assert_eq!(
        (
            r.api_group.as_str(),
            r.api_version.as_str(),
            r.resource.as_str()
        ),
        ("networking.k8s.io", "v1", "ingresses")
    );
    assert_eq!((r.namespace.as_str(), r.name.as_str()), ("shop", "web"));
    assert_eq!(r.user, "alice@example.com");
    assert_eq!(r.effective_user(), "alice@example.com");
    assert_eq!(r.groups, ["system:authenticated", "admins"]);
    assert_eq!(r.source_ips, ["10.0.0.7"]);
    assert!(r.user_agent.starts_with("kubectl/"));
    assert_eq!(r.response_code, Some(201));
    assert_eq!(r.outcome, "applied");
    assert_eq!(r.service_account, None);
    assert_eq!(r.object_key().name, "web");
    let snap = snap.unwrap();
    assert!(snap.0.get("status").is_none());
    assert!(snap.0["metadata"].get("managedFields").is_none());
    assert!(snap.0["metadata"].get("resourceVersion").is_none());
}

#[test]
fn the_time_falls_back_to_the_request_received_timestamp() {
    let mut ev = event("create", "networking.k8s.io", "ingresses", "shop", "web");
    ev.as_object_mut().unwrap().remove("stageTimestamp");
    assert_eq!(record(&parse(ev)).time_ms, 1_796_119_200_123);
}

#[test]
fn a_refused_change_is_an_attempt_and_leaves_no_snapshot() {
    let mut ev = event("create", "networking.k8s.io", "ingresses", "shop", "web");
    ev["requestObject"] = ingress();
    ev["responseStatus"] =
        json!({"metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403});
    ev["responseObject"] =
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403});
    let (r, snap) = change_record(&parse(ev), None);
    assert_eq!(r.outcome, "refused");
    assert_eq!(r.response_code, Some(403));
    assert_eq!(snap, None);
    // What was attempted still shows.
    assert_eq!(r.summary.hosts, ["shop.example.com", "api.example.com"]);
}

#[test]
fn request_received_is_pending() {
    let mut ev = event("update", "networking.k8s.io", "ingresses", "shop", "web");
    ev["stage"] = json!("RequestReceived");
    ev["level"] = json!("Request");
    ev["requestObject"] = ingress();
    let obj = ev.as_object_mut().unwrap();
    obj.remove("responseStatus");
    obj.remove("responseObject");
    let (r, snap) = change_record(&parse(ev), None);
    assert_eq!(r.outcome, "pending");
    assert_eq!(r.response_code, None);
    assert_eq!(snap, None);
}

#[test]
fn a_dry_run_is_not_applied() {
    let mut ev = event("patch", "networking.k8s.io", "ingresses", "shop", "web");
    ev["requestURI"] = json!(
        "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web?dryRun=All&fieldManager=kubectl-client-side-apply"
    );
    ev["requestObject"] = json!({"spec": {"ingressClassName": "other"}});
    ev["responseObject"] = ingress();
    let (r, snap) = change_record(&parse(ev), None);
    assert_eq!(r.outcome, "dry_run");
    assert_eq!(snap, None);
    assert!(r.summary.notes.iter().any(|n| n.starts_with("dry run")));
}

#[test]
fn only_what_the_api_server_reads_as_a_dry_run_is_one() {
    // The API server drops a query pair with a bad escape or a `;` and applies the change for
    // real: those must not be recorded as dry runs (which skip the content rules).
    for query in [
        "dryRun=%zz",
        "dryRun=All;x=1",
        "dryRun=all",
        "dryRun=",
        "dryrun=All",
    ] {
        let mut ev = event(
            "delete",
            "security.istio.io",
            "authorizationpolicies",
            "shop",
            "p",
        );
        ev["requestURI"] = json!(format!(
            "/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/p?{query}"
        ));
        let (r, _) = change_record(&parse(ev), None);
        assert_eq!(r.outcome, "applied", "{query}");
    }
    let mut ev = event(
        "delete",
        "security.istio.io",
        "authorizationpolicies",
        "shop",
        "p",
    );
    ev["requestURI"] =
        json!("/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/p?dry%52un=%41ll");
    assert_eq!(change_record(&parse(ev), None).0.outcome, "dry_run");
}

#[test]
fn impersonation_and_service_accounts_are_derived() {
    let mut ev = event("patch", "networking.k8s.io", "ingresses", "shop", "web");
    ev["user"] = json!({"username": "system:serviceaccount:argocd:argocd-server", "groups": ["system:serviceaccounts"]});
    let r = record(&parse(ev.clone()));
    assert_eq!(r.service_account.as_deref(), Some("argocd/argocd-server"));
    assert_eq!(r.impersonated_user, None);

    ev["user"] = json!({"username": "alice@example.com", "groups": ["admins"]});
    ev["impersonatedUser"] = json!({"username": "system:serviceaccount:ci:deployer", "groups": ["system:serviceaccounts", "system:serviceaccounts:ci"]});
    let r = record(&parse(ev));
    assert_eq!(r.user, "alice@example.com");
    assert_eq!(
        r.impersonated_user.as_deref(),
        Some("system:serviceaccount:ci:deployer")
    );
    assert_eq!(r.effective_user(), "system:serviceaccount:ci:deployer");
    assert_eq!(
        r.impersonated_groups,
        ["system:serviceaccounts", "system:serviceaccounts:ci"]
    );
    assert_eq!(r.service_account.as_deref(), Some("ci/deployer"));
}

// ---- Ingress and diffs ----------------------------------------------------------------------

#[test]
fn an_ingress_create_summarises_hosts_paths_backends_and_tls() {
    let r = record(&with_object(
        "create",
        "networking.k8s.io",
        "ingresses",
        ingress(),
    ));
    let s = &r.summary;
    assert_eq!(s.hosts, ["shop.example.com", "api.example.com"]);
    assert_eq!(s.hosts_added, s.hosts);
    assert!(s.hosts_removed.is_empty());
    assert_eq!(s.paths, ["shop.example.com/", "api.example.com/v1"]);
    assert_eq!(s.backends, ["web:80", "api:http"]);
    assert_eq!(s.tls_hosts, ["shop.example.com"]);
    assert_eq!(s.tls_secrets, ["shop/shop-tls"]);
    assert_eq!(
        s.listeners_without_tls,
        ["Ingress host api.example.com has no tls entry"]
    );
    assert!(s.notes.contains(&"ingressClassName nginx".to_string()));
    assert!(s.notes.contains(&"auth annotations: auth-url".to_string()));
    assert_eq!(s.auth_removed, None);
    assert!(s.changed_fields.is_empty());
}

#[test]
fn an_update_is_diffed_against_the_previous_snapshot() {
    let create = with_object("create", "networking.k8s.io", "ingresses", ingress());
    let mut changed = ingress();
    changed["spec"]["rules"][1]["host"] = json!("api2.example.com");
    changed["metadata"]["resourceVersion"] = json!("4712");
    changed["metadata"]["annotations"] = json!({});
    let update = with_object("update", "networking.k8s.io", "ingresses", changed);
    let (r, snap) = after(&create, &update);
    let s = &r.summary;
    assert_eq!(s.hosts_added, ["api2.example.com"]);
    assert_eq!(s.hosts_removed, ["api.example.com"]);
    assert_eq!(
        s.changed_fields,
        [
            r#"metadata.annotations["nginx.ingress.kubernetes.io/auth-url"]"#,
            "spec.rules[1].host"
        ]
    );
    assert_eq!(
        s.auth_removed.as_deref(),
        Some("Ingress auth annotation nginx.ingress.kubernetes.io/auth-url removed")
    );
    assert!(snap.is_some());
}

#[test]
fn a_patch_lists_the_patched_fields_and_takes_state_from_the_response() {
    let create = with_object("create", "networking.k8s.io", "ingresses", ingress());
    let mut ev = event("patch", "networking.k8s.io", "ingresses", "shop", "web");
    ev["requestObject"] = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{}}"}},
        "spec": {"tls": [{"hosts": ["shop.example.com", "api.example.com"], "secretName": "shop-tls"}]}
    });
    let mut new_state = ingress();
    new_state["spec"]["tls"][0]["hosts"] = json!(["shop.example.com", "api.example.com"]);
    ev["responseObject"] = new_state;
    let (r, snap) = after(&create, &parse(ev));
    assert_eq!(
        r.summary.changed_fields,
        [
            "spec.tls[0].hosts[0]",
            "spec.tls[0].hosts[1]",
            "spec.tls[0].secretName"
        ]
    );
    assert!(r.summary.listeners_without_tls.is_empty());
    assert_eq!(r.summary.tls_hosts, ["shop.example.com", "api.example.com"]);
    assert!(r.summary.hosts_added.is_empty() && r.summary.hosts_removed.is_empty());
    assert_eq!(
        snap.unwrap().0["spec"]["tls"][0]["hosts"][1],
        "api.example.com"
    );
}

#[test]
fn a_request_level_patch_is_applied_to_the_previous_snapshot() {
    let create = with_object("create", "networking.k8s.io", "ingresses", ingress());
    let mut ev = event("patch", "networking.k8s.io", "ingresses", "shop", "web");
    ev["level"] = json!("Request");
    ev["requestObject"] = json!({"metadata": {"annotations": {"nginx.ingress.kubernetes.io/auth-url": null}},
                                 "spec": {"rules": [{"host": "new.example.com"}]}});
    let (r, snap) = after(&create, &parse(ev));
    assert_eq!(r.summary.hosts, ["new.example.com"]);
    assert_eq!(r.summary.hosts_added, ["new.example.com"]);
    assert_eq!(
        r.summary.hosts_removed,
        ["shop.example.com", "api.example.com"]
    );
    assert!(
        r.summary
            .auth_removed
            .as_deref()
            .unwrap()
            .contains("auth-url removed")
    );
    assert!(
        r.summary
            .notes
            .iter()
            .any(|n| n.starts_with("state derived"))
    );
    let snap = snap.unwrap();
    assert_eq!(snap.0["spec"]["rules"][0]["host"], "new.example.com");
}

#[test]
fn a_metadata_level_change_reveals_no_state() {
    let create = with_object("create", "networking.k8s.io", "ingresses", ingress());
    let mut ev = event("update", "networking.k8s.io", "ingresses", "shop", "web");
    ev["level"] = json!("Metadata");
    let (r, snap) = after(&create, &parse(ev));
    assert_eq!(snap, None);
    assert!(r.summary.hosts.is_empty());
    assert!(
        r.summary
            .notes
            .contains(&"the object's new state is not in the event (level Metadata)".to_string())
    );
}

#[test]
fn a_delete_reports_what_the_previous_snapshot_held() {
    let create = with_object("create", "networking.k8s.io", "ingresses", ingress());
    let mut ev = event("delete", "networking.k8s.io", "ingresses", "shop", "web");
    ev["requestObject"] = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background"});
    ev["responseObject"] = json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": "web"}});
    let (r, snap) = after(&create, &parse(ev));
    assert_eq!(snap, None);
    assert_eq!(
        r.summary.hosts_removed,
        ["shop.example.com", "api.example.com"]
    );
    assert_eq!(r.summary.tls_secrets, ["shop/shop-tls"]);
    assert_eq!(
        r.summary.auth_removed, None,
        "a deleted Ingress serves nothing"
    );
    // Without a snapshot it says so.
    let mut bare = event("delete", "networking.k8s.io", "ingresses", "shop", "web");
    bare["level"] = json!("Metadata");
    let r = record(&parse(bare));
    assert!(
        r.summary
            .notes
            .iter()
            .any(|n| n.starts_with("what was deleted is unknown"))
    );
}

#[test]
fn nginx_global_auth_opt_out_and_client_verification_are_weakening() {
    let mut base = ingress();
    base["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-tls-verify-client"] =
        json!("on");
    let create = with_object("create", "networking.k8s.io", "ingresses", base.clone());
    let mut weaker = base;
    weaker["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-tls-verify-client"] =
        json!("optional");
    weaker["metadata"]["annotations"]["nginx.ingress.kubernetes.io/enable-global-auth"] =
        json!("false");
    let (r, _) = after(
        &create,
        &with_object("update", "networking.k8s.io", "ingresses", weaker),
    );
    let a = r.summary.auth_removed.unwrap();
    assert!(a.contains("auth-tls-verify-client: on -> optional"), "{a}");
    assert!(a.contains("global external auth disabled"), "{a}");
}

#[test]
fn an_ingress_class_names_its_controller() {
    let ic = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "k8s.io/ingress-nginx"}});
    let r = record(&with_object(
        "create",
        "networking.k8s.io",
        "ingressclasses",
        ic,
    ));
    assert_eq!(
        r.summary.notes,
        ["controller k8s.io/ingress-nginx", "default IngressClass"]
    );
    assert_eq!(r.namespace, "");
}

// ---- Gateway API ----------------------------------------------------------------------------

#[test]
fn a_gateway_lists_listeners_with_and_without_tls() {
    let gw = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
    "metadata": {"name": "eg", "namespace": "infra"},
    "spec": {"gatewayClassName": "eg", "listeners": [
        {"name": "http", "protocol": "HTTP", "port": 80},
        {"name": "https", "protocol": "HTTPS", "port": 443, "hostname": "*.example.com",
         "tls": {"mode": "Terminate", "certificateRefs": [
            {"kind": "Secret", "name": "wildcard-tls"},
            {"name": "other-cert", "namespace": "certs"}]},
         "allowedRoutes": {"namespaces": {"from": "All"}}}
    ]}});
    let r = record(&with_object(
        "create",
        "gateway.networking.k8s.io",
        "gateways",
        gw,
    ));
    let s = &r.summary;
    assert_eq!(s.hosts, ["*", "*.example.com"]);
    assert_eq!(
        s.listeners_without_tls,
        ["Gateway listener http port 80 protocol HTTP"]
    );
    assert_eq!(s.tls_hosts, ["*.example.com"]);
    assert_eq!(s.tls_secrets, ["infra/wildcard-tls", "certs/other-cert"]);
    assert_eq!(
        s.notes,
        [
            "gatewayClassName eg",
            "listener http HTTP port 80",
            "listener https HTTPS port 443 hostname *.example.com",
            "listener https accepts routes from all namespaces",
        ]
    );
}

#[test]
fn routes_list_hostnames_matches_backends_and_parents() {
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "eg", "namespace": "infra", "sectionName": "https"}],
            "hostnames": ["shop.example.com"],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}, {"path": {"type": "Exact", "value": "/login"}}],
                       "filters": [{"type": "RequestHeaderModifier"}],
                       "backendRefs": [{"name": "api", "port": 8080}, {"name": "legacy", "namespace": "old", "port": 80, "weight": 0}]}]}});
    let s = record(&with_object(
        "create",
        "gateway.networking.k8s.io",
        "httproutes",
        route,
    ))
    .summary;
    assert_eq!(s.hosts, ["shop.example.com"]);
    assert_eq!(s.paths, ["PathPrefix /api", "Exact /login"]);
    assert_eq!(s.backends, ["api:8080", "old/legacy:80 (weight 0)"]);
    assert_eq!(
        s.notes,
        [
            "parent Gateway infra/eg section https",
            "filter RequestHeaderModifier"
        ]
    );

    let grpc = json!({"metadata": {"name": "g", "namespace": "shop"},
        "spec": {"rules": [{"matches": [{"method": {"service": "shop.Cart", "method": "Add"}}], "backendRefs": [{"name": "cart", "port": 9000}]}]}});
    let s = record(&with_object(
        "create",
        "gateway.networking.k8s.io",
        "grpcroutes",
        grpc,
    ))
    .summary;
    assert_eq!(s.hosts, ["*"], "no hostnames: every hostname of the parent");
    assert_eq!(s.paths, ["grpc shop.Cart/Add"]);

    let tls = json!({"metadata": {"name": "t", "namespace": "shop"},
        "spec": {"hostnames": ["db.example.com"], "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}]}});
    let s = record(&with_object(
        "create",
        "gateway.networking.k8s.io",
        "tlsroutes",
        tls,
    ))
    .summary;
    assert_eq!(
        (s.hosts, s.backends),
        (
            vec!["db.example.com".to_string()],
            vec!["db:5432".to_string()]
        )
    );
}

#[test]
fn a_reference_grant_says_what_it_allows() {
    let rg = json!({"metadata": {"name": "certs", "namespace": "certs"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra"}],
                 "to": [{"group": "", "kind": "Secret"}]}});
    let s = record(&with_object(
        "create",
        "gateway.networking.k8s.io",
        "referencegrants",
        rg,
    ))
    .summary;
    assert_eq!(
        s.notes,
        [
            "from gateway.networking.k8s.io/Gateway in namespace infra",
            "to core/Secret *"
        ]
    );
}

// ---- Istio ----------------------------------------------------------------------------------

#[test]
fn an_istio_gateway_lists_servers_tls_and_credentials() {
    let gw = json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
    "metadata": {"name": "public", "namespace": "istio-system"},
    "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["shop/shop.example.com"]},
        {"port": {"number": 8080, "name": "http-redirect", "protocol": "HTTP"}, "hosts": ["*"], "tls": {"httpsRedirect": true}},
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["shop.example.com"],
         "tls": {"mode": "SIMPLE", "credentialName": "shop-credential"}}
    ]}});
    let s = record(&with_object(
        "create",
        "networking.istio.io",
        "gateways",
        gw,
    ))
    .summary;
    assert_eq!(s.hosts, ["shop.example.com", "*"]);
    assert_eq!(
        s.listeners_without_tls,
        ["Istio Gateway server http port 80 protocol HTTP hosts shop.example.com"]
    );
    assert_eq!(s.tls_hosts, ["shop.example.com"]);
    assert_eq!(s.tls_secrets, ["istio-system/shop-credential"]);
    assert!(
        s.notes
            .contains(&"server http-redirect port 8080 redirects to HTTPS".to_string())
    );
    assert!(
        s.notes
            .contains(&"selector istio=ingressgateway".to_string())
    );
}

#[test]
fn an_istio_gateway_dropping_mutual_tls_is_weakening() {
    let gw = |mode: &str| {
        json!({"metadata": {"name": "public", "namespace": "istio-system"},
        "spec": {"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
                              "tls": {"mode": mode, "credentialName": "c"}}]}})
    };
    let (r, _) = after(
        &with_object("create", "networking.istio.io", "gateways", gw("MUTUAL")),
        &with_object("update", "networking.istio.io", "gateways", gw("SIMPLE")),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("server port 443 tls MUTUAL -> SIMPLE (client certificates no longer required)")
    );
}

#[test]
fn a_virtual_service_lists_hosts_matches_and_destinations() {
    let vs = json!({"metadata": {"name": "shop", "namespace": "shop"},
        "spec": {"hosts": ["shop.example.com"], "gateways": ["istio-system/public"],
            "http": [{"match": [{"uri": {"prefix": "/api"}}, {"uri": {"exact": "/login"}}],
                      "route": [{"destination": {"host": "api.shop.svc.cluster.local", "port": {"number": 8080}, "subset": "v2"}}]}],
            "tcp": [{"route": [{"destination": {"host": "db.shop.svc.cluster.local"}}]}]}});
    let s = record(&with_object(
        "create",
        "networking.istio.io",
        "virtualservices",
        vs,
    ))
    .summary;
    assert_eq!(s.hosts, ["shop.example.com"]);
    assert_eq!(s.paths, ["prefix /api", "exact /login"]);
    assert_eq!(
        s.backends,
        [
            "api.shop.svc.cluster.local:8080 subset v2",
            "db.shop.svc.cluster.local"
        ]
    );
    assert_eq!(s.notes, ["gateways istio-system/public"]);
}

fn authz(action: &str, rules: Value) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "guard", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "action": action, "rules": rules}})
}

#[test]
fn authorization_policy_rules_are_diffed_and_removal_of_deny_rules_flagged() {
    let rules = json!([
        {"from": [{"source": {"notNamespaces": ["shop"]}}], "to": [{"operation": {"paths": ["/admin*"]}}]},
        {"to": [{"operation": {"methods": ["DELETE"]}}]}
    ]);
    let create = with_object(
        "create",
        "security.istio.io",
        "authorizationpolicies",
        authz("DENY", rules),
    );
    let r = record(&create);
    assert_eq!(r.summary.rules_added.len(), 2);
    assert_eq!(
        r.summary.rules_added[0],
        r#"{"from":[{"source":{"notNamespaces":["shop"]}}],"to":[{"operation":{"paths":["/admin*"]}}]}"#
    );
    assert_eq!(
        r.summary.notes,
        ["action DENY", "selector app=api", "2 rules"]
    );
    assert_eq!(r.summary.auth_removed, None);

    let fewer = authz(
        "DENY",
        json!([{"to": [{"operation": {"methods": ["DELETE"]}}]}]),
    );
    let (r, _) = after(
        &create,
        &with_object(
            "update",
            "security.istio.io",
            "authorizationpolicies",
            fewer,
        ),
    );
    assert_eq!(r.summary.rules_removed.len(), 1);
    assert!(r.summary.rules_added.is_empty());
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("1 DENY rule(s) removed or changed")
    );

    let none = authz("DENY", json!([]));
    let (r, _) = after(
        &create,
        &with_object("update", "security.istio.io", "authorizationpolicies", none),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("all DENY rules removed: the policy no longer matches any request")
    );

    let allow = authz(
        "ALLOW",
        json!([{"to": [{"operation": {"methods": ["DELETE"]}}]}]),
    );
    let (r, _) = after(
        &create,
        &with_object(
            "update",
            "security.istio.io",
            "authorizationpolicies",
            allow,
        ),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("action DENY -> ALLOW")
    );
    assert!(
        r.summary
            .notes
            .contains(&"action ALLOW (was DENY)".to_string())
    );
}

#[test]
fn deleting_an_authorization_policy_removes_protection() {
    let create = with_object(
        "create",
        "security.istio.io",
        "authorizationpolicies",
        authz(
            "ALLOW",
            json!([{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}]}]),
        ),
    );
    let del = parse(event(
        "delete",
        "security.istio.io",
        "authorizationpolicies",
        "shop",
        "guard",
    ));
    let (r, snap) = after(&create, &del);
    assert_eq!(snap, None);
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("AuthorizationPolicy shop/guard deleted (action ALLOW, 1 rules)")
    );
    assert_eq!(r.summary.rules_removed.len(), 1);
}

#[test]
fn an_allow_all_policy_is_flagged_even_when_created() {
    let r = record(&with_object(
        "create",
        "security.istio.io",
        "authorizationpolicies",
        authz("ALLOW", json!([{}])),
    ));
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("ALLOW policy allows every request (a rule matching everything)")
    );
}

#[test]
fn request_authentication_issuers_are_rules_and_their_removal_flagged() {
    let ra = |rules: Value| {
        json!({"metadata": {"name": "jwt", "namespace": "shop"},
        "spec": {"jwtRules": rules}})
    };
    let create = with_object(
        "create",
        "security.istio.io",
        "requestauthentications",
        ra(
            json!([{"issuer": "https://accounts.example.com", "jwksUri": "https://accounts.example.com/jwks",
                   "jwks": "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"very-long\"}]}"}]),
        ),
    );
    let r = record(&create);
    assert_eq!(r.summary.rules_added.len(), 1);
    assert!(r.summary.rules_added[0].contains("\"jwks\":\"sha256:"));
    assert!(
        r.summary
            .notes
            .contains(&"issuer https://accounts.example.com".to_string())
    );

    let (r, _) = after(
        &create,
        &with_object(
            "update",
            "security.istio.io",
            "requestauthentications",
            ra(json!([])),
        ),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("all JWT rules removed (issuers https://accounts.example.com)")
    );
    let (r, _) = after(
        &create,
        &parse(event(
            "delete",
            "security.istio.io",
            "requestauthentications",
            "shop",
            "jwt",
        )),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("RequestAuthentication shop/jwt deleted (issuers https://accounts.example.com)")
    );
}

#[test]
fn peer_authentication_weakening_is_flagged() {
    let pa = |mode: &str| {
        json!({"metadata": {"name": "default", "namespace": "shop"},
        "spec": {"mtls": {"mode": mode}, "portLevelMtls": {"8080": {"mode": "STRICT"}}}})
    };
    let create = with_object(
        "create",
        "security.istio.io",
        "peerauthentications",
        pa("STRICT"),
    );
    assert_eq!(record(&create).summary.auth_removed, None);
    let (r, _) = after(
        &create,
        &with_object(
            "update",
            "security.istio.io",
            "peerauthentications",
            pa("PERMISSIVE"),
        ),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("mtls STRICT -> PERMISSIVE")
    );
    assert!(
        r.summary
            .notes
            .contains(&"mtls PERMISSIVE (was STRICT)".to_string())
    );

    let mut no_port = pa("STRICT");
    no_port["spec"]["portLevelMtls"] = json!({"8080": {"mode": "DISABLE"}});
    let (r, _) = after(
        &create,
        &with_object(
            "update",
            "security.istio.io",
            "peerauthentications",
            no_port,
        ),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("port 8080 mtls STRICT -> DISABLE")
    );

    let (r, _) = after(
        &create,
        &parse(event(
            "delete",
            "security.istio.io",
            "peerauthentications",
            "shop",
            "default",
        )),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("PeerAuthentication shop/default deleted (was STRICT)")
    );

    let disabled = record(&with_object(
        "create",
        "security.istio.io",
        "peerauthentications",
        pa("DISABLE"),
    ));
    assert_eq!(
        disabled.summary.auth_removed.as_deref(),
        Some("created with mtls DISABLE")
    );
}

#[test]
fn a_wasm_plugin_is_summarised_and_its_removal_reported() {
    let wp = json!({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
        "metadata": {"name": "audit", "namespace": "istio-system"},
        "spec": {"url": "oci://ghcr.io/example/Warden-filter:1.4", "phase": "AUTHN", "failStrategy": "FAIL_OPEN",
                 "pluginConfig": {"collector": "warden.warden.svc:9000", "token": "wt_4f8a9c7e2b1d"}}});
    let create = with_object("create", "extensions.istio.io", "wasmplugins", wp);
    let (r, snap) = change_record(&create, None);
    let p = r.summary.plugin.clone().unwrap();
    assert_eq!(p.kind, "WasmPlugin");
    assert_eq!(
        p.url.as_deref(),
        Some("oci://ghcr.io/example/Warden-filter:1.4")
    );
    assert_eq!(p.failure_policy.as_deref(), Some("FAIL_OPEN"));
    assert!(p.fail_open && p.is_warden && !p.removed);
    assert!(!snap.unwrap().0.to_string().contains("wt_4f8a9c7e2b1d"));

    let (r, _) = after(
        &create,
        &parse(event(
            "delete",
            "extensions.istio.io",
            "wasmplugins",
            "istio-system",
            "audit",
        )),
    );
    let p = r.summary.plugin.unwrap();
    assert!(p.removed && p.is_warden);
}

#[test]
fn an_envoy_filter_with_wasm_is_a_plugin() {
    let ef = json!({"metadata": {"name": "audit-filter", "namespace": "istio-system"},
        "spec": {"workloadSelector": {"labels": {"istio": "ingressgateway"}},
            "configPatches": [{"applyTo": "HTTP_FILTER", "match": {"context": "GATEWAY"},
                "patch": {"operation": "INSERT_BEFORE", "value": {"name": "envoy.filters.http.wasm",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": {"root_id": "warden", "fail_open": true,
                            "configuration": {"value": "{\"token\":\"t0ps3cret\"}"},
                            "vm_config": {"code": {"remote": {"http_uri": {"uri": "https://example.com/warden.wasm"}}}}}}}}}]}});
    let (r, snap) = change_record(
        &with_object("create", "networking.istio.io", "envoyfilters", ef),
        None,
    );
    let p = r.summary.plugin.unwrap();
    assert_eq!(p.kind, "EnvoyFilter");
    assert_eq!(p.url.as_deref(), Some("https://example.com/warden.wasm"));
    assert!(p.fail_open && p.is_warden);
    assert!(
        r.summary
            .notes
            .contains(&"configPatch HTTP_FILTER INSERT_BEFORE context GATEWAY".to_string())
    );
    assert!(!snap.unwrap().0.to_string().contains("t0ps3cret"));
}

// ---- Envoy Gateway --------------------------------------------------------------------------

fn security_policy(spec: Value) -> Value {
    json!({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "SecurityPolicy",
        "metadata": {"name": "shop-auth", "namespace": "shop"}, "spec": spec})
}

#[test]
fn security_policy_protections_are_listed_and_their_removal_flagged() {
    let full = security_policy(json!({
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "shop"}],
        "jwt": {"providers": [{"name": "acct", "issuer": "https://accounts.example.com", "remoteJWKS": {"uri": "https://accounts.example.com/jwks"}}]},
        "extAuth": {"http": {"backendRefs": [{"name": "authz", "port": 8080}]}, "failOpen": false},
        "authorization": {"defaultAction": "Deny", "rules": [{"name": "admins", "action": "Allow", "principal": {"clientCIDRs": ["10.0.0.0/8"]}}]}
    }));
    let create = with_object("create", "gateway.envoyproxy.io", "securitypolicies", full);
    let r = record(&create);
    assert_eq!(
        r.summary.notes,
        [
            "target HTTPRoute shop",
            "protections: jwt, extAuth, authorization",
            "jwt issuer https://accounts.example.com",
            "extAuth http backend authz",
            "authorization defaultAction Deny",
        ]
    );
    assert_eq!(r.summary.rules_added.len(), 1);

    let weaker = security_policy(json!({
        "extAuth": {"http": {"backendRefs": [{"name": "authz", "port": 8080}]}, "failOpen": true},
        "authorization": {"defaultAction": "Allow", "rules": []}
    }));
    let (r, _) = after(
        &create,
        &with_object(
            "update",
            "gateway.envoyproxy.io",
            "securitypolicies",
            weaker,
        ),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some(
            "jwt removed; extAuth failOpen enabled: requests pass when the auth service fails; authorization defaultAction Deny -> Allow"
        )
    );
    let (r, _) = after(
        &create,
        &parse(event(
            "delete",
            "gateway.envoyproxy.io",
            "securitypolicies",
            "shop",
            "shop-auth",
        )),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("SecurityPolicy shop/shop-auth deleted (jwt, extAuth, authorization)")
    );
    // Created failing open: protection added, however weak, not removed.
    let fail_open = security_policy(
        json!({"extAuth": {"grpc": {"backendRefs": [{"name": "a"}]}, "failOpen": true}}),
    );
    let r = record(&with_object(
        "create",
        "gateway.envoyproxy.io",
        "securitypolicies",
        fail_open,
    ));
    assert_eq!(r.summary.auth_removed, None);
    assert!(r.summary.notes.contains(&"extAuth failOpen".to_string()));
}

#[test]
fn an_extension_policy_reports_warden_wasm_and_its_removal() {
    let eep = |wasm: Value| {
        json!({"metadata": {"name": "ext", "namespace": "infra"},
        "spec": {"targetRefs": [{"kind": "Gateway", "name": "eg"}], "wasm": wasm}})
    };
    let with_warden = eep(json!([
        {"name": "other", "code": {"type": "HTTP", "http": {"url": "https://example.com/other.wasm"}}},
        {"name": "warden", "code": {"type": "Image", "image": {"url": "ghcr.io/example/warden-filter:1.4"}}, "failOpen": true,
         "config": {"token": "wt_4f8a9c7e2b1d"}}
    ]));
    let create = with_object(
        "create",
        "gateway.envoyproxy.io",
        "envoyextensionpolicies",
        with_warden,
    );
    let (r, snap) = change_record(&create, None);
    let p = r.summary.plugin.unwrap();
    assert_eq!(p.kind, "EnvoyExtensionPolicy");
    assert_eq!(p.url.as_deref(), Some("ghcr.io/example/warden-filter:1.4"));
    assert_eq!(p.failure_policy.as_deref(), Some("failOpen: true"));
    assert!(p.is_warden && p.fail_open);
    assert!(
        r.summary
            .notes
            .contains(&"wasm other HTTP https://example.com/other.wasm failOpen false".to_string())
    );
    assert!(!snap.unwrap().0.to_string().contains("wt_4f8a9c7e2b1d"));

    let without = eep(
        json!([{"name": "other", "code": {"type": "HTTP", "http": {"url": "https://example.com/other.wasm"}}}]),
    );
    let (r, _) = after(
        &create,
        &with_object(
            "update",
            "gateway.envoyproxy.io",
            "envoyextensionpolicies",
            without,
        ),
    );
    let p = r.summary.plugin.unwrap();
    assert!(p.removed && p.is_warden);
}

#[test]
fn client_traffic_policy_tls_is_noted_and_losing_client_validation_flagged() {
    let ctp = |cv: Value| {
        json!({"metadata": {"name": "tls", "namespace": "infra"},
        "spec": {"targetRefs": [{"kind": "Gateway", "name": "eg"}],
                 "tls": {"minVersion": "1.3", "clientValidation": cv}}})
    };
    let create = with_object(
        "create",
        "gateway.envoyproxy.io",
        "clienttrafficpolicies",
        ctp(json!({"caCertificateRefs": [{"name": "client-ca"}]})),
    );
    let r = record(&create);
    assert!(r.summary.notes.contains(&"tls minVersion 1.3".to_string()));
    assert!(
        r.summary
            .notes
            .contains(&"client certificate validation (CA client-ca)".to_string())
    );
    let (r, _) = after(
        &create,
        &with_object(
            "update",
            "gateway.envoyproxy.io",
            "clienttrafficpolicies",
            ctp(Value::Null),
        ),
    );
    assert_eq!(
        r.summary.auth_removed.as_deref(),
        Some("client certificate validation removed")
    );
}

// ---- Secrets and ConfigMaps -----------------------------------------------------------------

#[test]
fn a_tls_secret_shows_its_type_and_certificate() {
    let (pem, der, key) = make_cert(&["shop.example.com"]);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "shop-tls", "namespace": "shop"},
        "data": {"tls.crt": STANDARD.encode(&pem), "tls.key": STANDARD.encode(&key)}});
    let (r, snap) = change_record(&with_object("create", "", "secrets", secret), None);
    assert_eq!(r.summary.secret_type.as_deref(), Some("kubernetes.io/tls"));
    let c = r.summary.certificate.unwrap();
    assert_eq!(c.sha256, sha256_hex(&der));
    assert_eq!(c.dns_names, ["shop.example.com"]);
    assert_eq!(c.not_after, "2027-03-01T00:00:00Z");
    assert_eq!(c.not_after_ms, 1_803_859_200_000);
    let snap = snap.unwrap();
    assert_eq!(snap.0["certificate"]["sha256"], sha256_hex(&der));
    assert!(snap.0.get("data").is_none());
}

/// Every 16-byte window of `secret` (and of its base64), for a "no byte of it appears" check
/// that also catches a value copied in part.
fn windows(secret: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in [secret.to_string(), STANDARD.encode(secret)] {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() <= 16 {
            out.push(s.clone());
            continue;
        }
        for w in chars.windows(16).step_by(4) {
            out.push(w.iter().collect());
        }
    }
    out
}

#[test]
fn no_secret_value_reaches_a_record_or_snapshot() {
    let (pem, _, key) = make_cert(&["shop.example.com"]);
    let password = "hunter2-correct-horse-battery";
    let token = "sk_live_51HxQ2bC3dE4fG5hI6jK";
    let secret_values = [key.as_str(), password, token];
    let object = |with_string_data: bool| {
        let mut data = json!({
            "tls.crt": STANDARD.encode(&pem),
            "tls.key": STANDARD.encode(&key),
            "password": STANDARD.encode(password),
        });
        let last_applied =
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "shop-tls", "namespace": "shop"}, "data": data.clone(),
            "stringData": {"token": token}})
            .to_string();
        let mut o = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "shop-tls", "namespace": "shop",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied,
                                "kapp.k14s.io/original": STANDARD.encode(password),
                                "note": format!("rotated {token}")},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {"f:password": {}}}}]},
            "data": data.take()});
        if with_string_data {
            o["stringData"] = json!({"token": token, "tls.key": key});
        }
        o
    };
    let create = with_object("create", "", "secrets", object(true));
    let (created, snap) = change_record(&create, None);
    let update = with_object("update", "", "secrets", object(false));
    let (updated, snap2) = change_record(&update, snap.as_ref());

    let mut patch = event("patch", "", "secrets", "shop", "shop-tls");
    patch["requestObject"] = json!({"data": {"password": STANDARD.encode(password), "tls.key": STANDARD.encode(&key)},
                                    "stringData": {"token": token}});
    patch["responseObject"] = object(false);
    let (patched, snap3) = change_record(&parse(patch.clone()), snap2.as_ref());
    patch["level"] = json!("Request");
    patch.as_object_mut().unwrap().remove("responseObject");
    let (request_level, snap4) = change_record(&parse(patch), snap2.as_ref());

    let mut delete = event("delete", "", "secrets", "shop", "shop-tls");
    delete["responseObject"] = object(true);
    let (deleted, _) = change_record(&parse(delete.clone()), None);
    let (deleted_known, _) = change_record(&parse(delete), snap2.as_ref());

    let mut everything = String::new();
    for r in [
        &created,
        &updated,
        &patched,
        &request_level,
        &deleted,
        &deleted_known,
    ] {
        everything.push_str(&serde_json::to_string(r).unwrap());
        everything.push_str(&format!("{r:?}"));
    }
    for s in [&snap, &snap2, &snap3, &snap4] {
        everything.push_str(&serde_json::to_string(s).unwrap());
    }
    for value in secret_values {
        for w in windows(value) {
            assert!(!everything.contains(&w), "secret bytes {w:?} leaked");
        }
    }
    // What is kept instead.
    assert!(created.summary.certificate.is_some());
    assert!(deleted.summary.certificate.is_some());
    assert_eq!(snap4, None, "no state is derived for Secrets");
    assert!(
        patched
            .summary
            .changed_fields
            .contains(&"data.password".to_string())
    );
}

#[test]
fn a_warden_config_map_keeps_keys_and_digests_never_values() {
    let cm = |v: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "warden-rules", "namespace": "warden"},
        "data": {"rules.toml": v, "tokens": "sha256:0f1e2d..."}})
    };
    let create = with_object("create", "", "configmaps", cm("deny = [\"10.0.0.0/8\"]"));
    let (r, snap) = change_record(&create, None);
    assert_eq!(r.summary.notes, ["data keys: rules.toml, tokens"]);
    let snap = snap.unwrap();
    assert_eq!(
        snap.0["data"]["rules.toml"],
        format!("sha256:{}", sha256_hex(b"deny = [\"10.0.0.0/8\"]"))
    );
    let (r, snap2) = after(
        &create,
        &with_object("update", "", "configmaps", cm("deny = []")),
    );
    assert_eq!(r.summary.changed_fields, [r#"data["rules.toml"]"#]);
    let all = format!("{}{}", serde_json::to_string(&r).unwrap(), snap2.unwrap().0);
    assert!(!all.contains("deny = ") && !all.contains("0f1e2d"));
}

// ---- bounds and hostile input ---------------------------------------------------------------

#[test]
fn huge_lists_and_long_strings_are_bounded() {
    let rules: Vec<Value> = (0..10_000)
        .map(|i| json!({"host": format!("h{i}.example.com"), "http": {"paths": [{"path": "/", "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}))
        .collect();
    let mut ing = ingress();
    ing["spec"]["rules"] = Value::Array(rules);
    ing["spec"]["ingressClassName"] = json!("x".repeat(5000));
    let mut ev = event("create", "networking.k8s.io", "ingresses", "shop", "web");
    ev["requestObject"] = ing.clone();
    ev["responseObject"] = ing;
    ev["user"]["groups"] = Value::Array((0..1000).map(|i| json!(format!("g{i}"))).collect());
    ev["sourceIPs"] = Value::Array(
        (0..200)
            .map(|i| json!(format!("10.0.{}.{}", i / 250, i % 250)))
            .collect(),
    );
    let (r, snap) = change_record(&parse(ev), None);
    let s = &r.summary;
    assert_eq!(s.hosts.len(), 64);
    assert_eq!(
        s.hosts[63],
        format!("… {} more", 1024 - 63),
        "summaries read at most 1024 entries"
    );
    assert_eq!(r.groups.len(), 64);
    assert_eq!(r.groups[63], "… 937 more");
    assert_eq!(r.source_ips.len(), 64);
    let note = s
        .notes
        .iter()
        .find(|n| n.starts_with("ingressClassName"))
        .unwrap();
    assert!(note.len() <= 512 && note.ends_with('…'));
    let snap = snap.unwrap();
    assert!(serde_json::to_vec(&snap.0).unwrap().len() <= MAX_SNAPSHOT_BYTES);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.len() < 256 * 1024, "{}", json.len());
}

#[test]
fn control_characters_never_reach_a_record() {
    let mut ev = event("patch", "networking.k8s.io", "ingresses", "shop", "web");
    ev["user"]["username"] = json!("mallory\u{1b}]0;pwned\u{7}");
    ev["userAgent"] = json!("curl/8\r\nX-Injected: 1\u{202e}");
    let mut ing = ingress();
    ing["spec"]["rules"][0]["host"] = json!("evil\u{1b}[2J.example.com");
    ev["responseObject"] = ing;
    ev["requestObject"] = json!({"spec": {"ingressClassName": "a\u{0}b"}});
    let r = record(&parse(ev));
    let strings = [&r.user, &r.user_agent]
        .into_iter()
        .chain(&r.summary.hosts)
        .chain(&r.summary.notes)
        .chain(&r.summary.changed_fields);
    for s in strings {
        for bad in ['\u{1b}', '\u{7}', '\r', '\n', '\u{0}', '\u{202e}'] {
            assert!(!s.contains(bad), "{s:?}");
        }
    }
    assert_eq!(r.user, "mallory\u{fffd}]0;pwned\u{fffd}");
    assert_eq!(r.summary.hosts[0], "evil\u{fffd}[2J.example.com");
}

#[test]
fn an_event_whose_object_was_too_deep_says_so() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let ev = event("patch", "networking.k8s.io", "ingresses", "shop", "web").to_string();
    let ev = ev.replacen(
        "\"requestURI\"",
        &format!("\"requestObject\":{deep},\"requestURI\""),
        1,
    );
    let b = format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{ev}]}}"#);
    let events = crate::parse_event_list(b.as_bytes()).unwrap();
    let r = record(&events[0]);
    assert!(
        r.summary
            .notes
            .contains(&"requestObject left out: nested deeper than 128 levels".to_string())
    );
}

#[test]
fn hostile_previous_snapshots_do_not_panic() {
    let ev = with_object(
        "update",
        "security.istio.io",
        "authorizationpolicies",
        authz("DENY", json!([{}])),
    );
    for junk in [
        json!(null),
        json!([1, 2]),
        json!({"spec": "x"}),
        json!({"spec": {"rules": {"a": 1}, "action": 7}}),
        json!({"certificate": {"sha256": 5}}),
        json!({"metadata": {"annotations": [1]}}),
    ] {
        let _ = change_record(&ev, Some(&Snapshot(junk)));
    }
    for kind in [
        ("", "secrets"),
        ("networking.k8s.io", "ingresses"),
        ("gateway.envoyproxy.io", "securitypolicies"),
    ] {
        let mut e = event("update", kind.0, kind.1, "a", "b");
        e["requestObject"] = json!({"spec": [1, {"x": null}], "metadata": "no", "data": 5});
        e["responseObject"] = json!("a string");
        let _ = change_record(&parse(e), Some(&Snapshot(json!({"spec": null}))));
    }
}

#[test]
fn summaries_serialize_without_empty_fields_and_round_trip() {
    let r = record(&with_object(
        "create",
        "networking.k8s.io",
        "ingressclasses",
        json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
    ));
    let v = serde_json::to_value(&r.summary).unwrap();
    assert_eq!(v, json!({"notes": ["controller k8s.io/ingress-nginx"]}));
    let back: ChangeRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

/// The collector must keep up with ~2,000 events/s on one core; this measures parse, decide and
/// record for RequestResponse Ingress patches with a previous snapshot, in batches of 400.
/// Ignored by default: timings on a shared machine or a debug build say little. Run with
/// `cargo test --release -p warden-k8s-audit -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput_is_far_above_two_thousand_events_per_second() {
    let keep = KeepList::default_list();
    let create = with_object("create", "networking.k8s.io", "ingresses", ingress());
    let (_, snap) = change_record(&create, None);
    let mut ev = event("patch", "networking.k8s.io", "ingresses", "shop", "web");
    ev["requestObject"] = json!({"metadata": {"annotations": {"a": "b"}}, "spec": {"rules": ingress()["spec"]["rules"]}});
    ev["responseObject"] = ingress();
    let body = crate::fixtures::body(&vec![ev; 400]);
    let start = std::time::Instant::now();
    let rounds = 25;
    for _ in 0..rounds {
        for e in crate::parse_event_list(&body).unwrap() {
            assert_eq!(keep.decide(&e, &|_, _| false), KeepDecision::Keep);
            let _ = change_record(&e, snap.as_ref());
        }
    }
    let per_second = (rounds * 400) as f64 / start.elapsed().as_secs_f64();
    println!("{per_second:.0} events/s ({} bytes per body)", body.len());
    assert!(per_second > 2_000.0, "{per_second:.0} events/s");
}
