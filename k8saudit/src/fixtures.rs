//! Test events in the exact shape the API server's webhook backend sends them.

use crate::{Event, parse_event_list};
use serde_json::{Value, json};

/// The API version the API server reports for a group's objects in `objectRef`.
fn version_of(group: &str) -> &'static str {
    match group {
        "extensions.istio.io" | "gateway.envoyproxy.io" => "v1alpha1",
        _ => "v1",
    }
}

/// One `ResponseComplete` event at level RequestResponse, answered 200 (201 for create), by
/// `alice@example.com` through kubectl. Tests adjust fields from there.
pub fn event(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Value {
    let code = if verb == "create" { 201 } else { 200 };
    let path_group = if group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group}/{}", version_of(group))
    };
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": "a1b2c3d4-0000-4000-8000-000000000001",
        "stage": "ResponseComplete",
        "requestURI": format!("{path_group}/namespaces/{namespace}/{resource}/{name}"),
        "verb": verb,
        "user": {
            "username": "alice@example.com",
            "uid": "u-1",
            "groups": ["system:authenticated", "admins"],
            "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=ab12"]}
        },
        "sourceIPs": ["10.0.0.7"],
        "userAgent": "kubectl/v1.34.1 (linux/amd64) kubernetes/abcdef0",
        "objectRef": {
            "resource": resource,
            "namespace": namespace,
            "name": name,
            "apiGroup": group,
            "apiVersion": version_of(group)
        },
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": "2026-12-01T10:00:00.123456Z",
        "stageTimestamp": "2026-12-01T10:00:00.456789Z",
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"admins\""
        }
    })
}

/// An `EventList` body holding `items`.
pub fn body(items: &[Value]) -> Vec<u8> {
    json!({
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "metadata": {},
        "items": items
    })
    .to_string()
    .into_bytes()
}

/// Parses one event through the real parser.
pub fn parse(ev: Value) -> Event {
    match parse_event_list(&body(&[ev])) {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        other => panic!("fixture did not parse: {other:?}"),
    }
}

/// An event with `object` as both request and response object (create, update).
pub fn with_object(verb: &str, group: &str, resource: &str, object: Value) -> Event {
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut ev = event(verb, group, resource, &ns, &name);
    ev["requestObject"] = object.clone();
    ev["responseObject"] = object;
    parse(ev)
}
