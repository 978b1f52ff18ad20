//! Kubernetes audit events as the API server's webhook backend sends them to
//! `POST /api/v1/k8s-audit`: one `audit.k8s.io/v1` `Event` per request and stage, posted in
//! batches as an `EventList`; and the objects those events carry, as the API server returns them.
//!
//! The shapes follow the API server (k8s.io/apiserver `pkg/apis/audit/v1/types.go`, the audit
//! filter and the request handlers):
//! - `RequestReceived` is emitted before impersonation, authorization and decoding: no
//!   `impersonatedUser`, no annotations, no `responseStatus`, no objects, and for a create no
//!   name in `objectRef` (the name is in the body, not yet read).
//! - `Metadata` carries no objects; `Request` adds `requestObject`; `RequestResponse` adds
//!   `responseObject`. A patch's `requestObject` is the patch as sent.
//! - `responseStatus` is `{metadata: {}, code}` on success; for a response that is a `Status`
//!   (every error, and a delete's `Success`), its status, message, reason and details.
//! - A request refused by authorization (403) carries `authorization.k8s.io/decision: forbid`
//!   and no `requestObject` (the body was never decoded).
//! - Timestamps are RFC 3339 in UTC with six fractional digits (`metav1.MicroTime`).
//!
//! Object builders ([`ingress`], [`gateway`], [`tls_secret`] …) return the object as stored:
//! `metadata` with a `uid` derived from API group, kind, namespace and name (the same object gets
//! the same uid in every event), a fresh `resourceVersion`, `creationTimestamp`, `generation`
//! where the API server keeps one (not for Secrets, ConfigMaps and Pods), no `managedFields` (the
//! policy sets `omitManagedFields`), and the defaults the CRD schemas fill in. [`request_body`]
//! turns one into what a client sends, [`updated`] into the next stored version, and
//! [`apply_merge_patch`] applies a patch to it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The user of a new [`EventBuilder`].
pub const DEFAULT_USER: &str = "alice@example.com";
/// The source address of a new [`EventBuilder`].
pub const DEFAULT_SOURCE_IP: &str = "10.0.0.5";
/// The user agent of a new [`EventBuilder`], as kubectl sends it.
pub const DEFAULT_USER_AGENT: &str = "kubectl/v1.31.0 (linux/amd64) kubernetes/abc1234";
/// The Gateway that route and Envoy Gateway policy builders attach to (Envoy Gateway's
/// quickstart name, as in `envoy/kubernetes/envoy-gateway.yaml`).
pub const GATEWAY_NAME: &str = "eg";

/// Microseconds from `requestReceivedTimestamp` to `stageTimestamp` at `ResponseComplete`.
const HANDLING_MICROS: i64 = 4_271;
/// ... and at `RequestReceived` (the event is emitted as soon as the request is read).
const RECEIVED_MICROS: i64 = 37;
/// Sub-millisecond part of `requestReceivedTimestamp`, so the timestamp is not suspiciously
/// round while still flooring to the millisecond a test asked for.
const SUB_MILLI_MICROS: i64 = 412;

/// Builds one audit event. Every field has a default, so
/// `EventBuilder::new("patch", "networking.k8s.io", "v1", "ingresses", "shop", "web").build()`
/// is a complete, successful `ResponseComplete` event at `RequestResponse` level (without
/// objects until [`request_object`](Self::request_object) /
/// [`response_object`](Self::response_object) are given; a delete gets the `DeleteOptions` and
/// `Status` kubectl and the API server exchange).
///
/// The audit ID and the time are fixed when the builder is made, so building twice gives the
/// same event: what the API server sends again when it retries a batch.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    verb: String,
    api_group: String,
    api_version: String,
    resource: String,
    subresource: Option<String>,
    namespace: String,
    name: String,
    audit_id: String,
    stage: String,
    level: String,
    username: String,
    groups: Vec<String>,
    impersonated: Option<(String, Vec<String>)>,
    code: Option<i32>,
    time_ms: i64,
    source_ip: String,
    user_agent: String,
    query: Option<String>,
    request_object: Option<Value>,
    response_object: Option<Value>,
}

impl EventBuilder {
    /// An event for `verb` (`create`, `update`, `patch`, `delete`, `deletecollection`, or a read
    /// verb) on `resource` (plural, lower case) of `api_group` (`""` for the core group) at
    /// `api_version`, in `namespace` (`""` for cluster-scoped resources), named `name` (ignored
    /// for `deletecollection`, which names no object).
    pub fn new(
        verb: &str,
        api_group: &str,
        api_version: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        EventBuilder {
            verb: verb.to_string(),
            api_group: api_group.to_string(),
            api_version: api_version.to_string(),
            resource: resource.to_string(),
            subresource: None,
            namespace: namespace.to_string(),
            name: name.to_string(),
            audit_id: new_audit_id(),
            stage: "ResponseComplete".to_string(),
            level: "RequestResponse".to_string(),
            username: DEFAULT_USER.to_string(),
            groups: vec!["system:authenticated".to_string()],
            impersonated: None,
            code: None,
            time_ms: now_ms(),
            source_ip: DEFAULT_SOURCE_IP.to_string(),
            user_agent: DEFAULT_USER_AGENT.to_string(),
            query: None,
            request_object: None,
            response_object: None,
        }
    }

    /// The audit ID (default: a fresh UUID-shaped ID). Two events with the same ID and stage are
    /// the same event sent twice.
    pub fn audit_id(mut self, id: &str) -> Self {
        self.audit_id = id.to_string();
        self
    }

    /// The stage: `RequestReceived`, `ResponseStarted`, `ResponseComplete` (default) or `Panic`.
    pub fn stage(mut self, stage: &str) -> Self {
        self.stage = stage.to_string();
        self
    }

    /// The level: `Metadata` (no objects), `Request` (the request object only) or
    /// `RequestResponse` (default, both).
    pub fn level(mut self, level: &str) -> Self {
        self.level = level.to_string();
        self
    }

    /// The authenticated user and groups (default: `alice@example.com`,
    /// `["system:authenticated"]`).
    pub fn user(mut self, username: &str, groups: &[&str]) -> Self {
        self.username = username.to_string();
        self.groups = strings(groups);
        self
    }

    /// The user the authenticated user impersonates (`kubectl --as`); authorization, and so the
    /// `forbid` message, is about this user.
    pub fn impersonate(mut self, username: &str, groups: &[&str]) -> Self {
        self.impersonated = Some((username.to_string(), strings(groups)));
        self
    }

    /// The HTTP status (default: 201 for a create, 200 otherwise). From 400 on, the event gets
    /// the `Failure` status the API server answers with (reason `Forbidden`, `NotFound`,
    /// `AlreadyExists`/`Conflict`, `Invalid` …). 403 is modelled as a refusal by authorization.
    pub fn code(mut self, code: i32) -> Self {
        self.code = Some(code);
        self
    }

    /// When the API server received the request, in ms since the Unix epoch (default: now).
    /// `stageTimestamp` follows a few ms later.
    pub fn time_ms(mut self, ms: i64) -> Self {
        self.time_ms = ms;
        self
    }

    /// The client's address (default `10.0.0.5`).
    pub fn source_ip(mut self, ip: &str) -> Self {
        self.source_ip = ip.to_string();
        self
    }

    /// The client's user agent (default: kubectl 1.31's).
    pub fn user_agent(mut self, ua: &str) -> Self {
        self.user_agent = ua.to_string();
        self
    }

    /// The request body as the API server logs it: the object for a create or an update, the
    /// patch for a patch ([`merge_patch`]), `DeleteOptions` for a delete.
    pub fn request_object(mut self, v: Value) -> Self {
        self.request_object = Some(v);
        self
    }

    /// The response body: the object as stored after the change (see [`updated`]).
    pub fn response_object(mut self, v: Value) -> Self {
        self.response_object = Some(v);
        self
    }

    /// A subresource (`status`, `scale` …): in the request URI and in `objectRef`.
    pub fn subresource(mut self, s: &str) -> Self {
        self.subresource = Some(s.to_string());
        self
    }

    /// A query string for the request URI, without the `?`: kubectl sends
    /// `fieldManager=kubectl-client-side-apply&fieldValidation=Strict`, and a server-side dry run
    /// (`kubectl diff`, `--dry-run=server`) `dryRun=All`, which the event shows nowhere else.
    pub fn query(mut self, q: &str) -> Self {
        self.query = Some(q.to_string());
        self
    }

    /// The event, as one item of an `EventList`.
    pub fn build(&self) -> Value {
        let received = self.stage == "RequestReceived";
        let code = self.effective_code();
        let forbidden = code == 403;
        let collection = self.is_collection_request();
        let (request_object, response_object) = self.objects(code);

        let mut event = Map::new();
        event.insert("kind".into(), json!("Event"));
        event.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
        event.insert("level".into(), json!(self.level));
        event.insert("auditID".into(), json!(self.audit_id));
        event.insert("stage".into(), json!(self.stage));
        event.insert("requestURI".into(), json!(self.request_uri()));
        event.insert("verb".into(), json!(self.verb));
        event.insert(
            "user".into(),
            json!({
                "username": self.username,
                "uid": uid_for("", "User", "", &self.username),
                "groups": self.groups,
            }),
        );
        // The impersonation filter runs after the audit filter has emitted RequestReceived.
        if let Some((username, groups)) = &self.impersonated
            && !received
        {
            event.insert(
                "impersonatedUser".into(),
                json!({ "username": username, "groups": groups }),
            );
        }
        event.insert("sourceIPs".into(), json!([self.source_ip]));
        event.insert("userAgent".into(), json!(self.user_agent));
        event.insert("objectRef".into(), self.object_ref(received, collection));
        if !received {
            event.insert("responseStatus".into(), self.response_status(code));
            if self.level_at_least("Request")
                && !forbidden
                && let Some(v) = request_object
            {
                event.insert("requestObject".into(), v);
            }
            if self.level_at_least("RequestResponse")
                && let Some(v) = response_object
            {
                event.insert("responseObject".into(), v);
            }
        }
        let received_micros = self.time_ms * 1000 + SUB_MILLI_MICROS;
        let stage_micros = received_micros
            + if received {
                RECEIVED_MICROS
            } else {
                HANDLING_MICROS
            };
        event.insert(
            "requestReceivedTimestamp".into(),
            json!(rfc3339_micros(received_micros)),
        );
        event.insert("stageTimestamp".into(), json!(rfc3339_micros(stage_micros)));
        if !received && code != 401 {
            event.insert(
                "annotations".into(),
                self.authorization_annotations(forbidden),
            );
        }
        Value::Object(event)
    }

    fn effective_code(&self) -> i32 {
        self.code
            .unwrap_or(if self.verb == "create" { 201 } else { 200 })
    }

    /// Create and deletecollection address the collection (a create of a subresource, such as a
    /// pod's eviction, addresses the object).
    fn is_collection_request(&self) -> bool {
        self.verb == "deletecollection"
            || self.verb == "list"
            || (self.verb == "create" && self.subresource.is_none())
    }

    fn level_at_least(&self, level: &str) -> bool {
        let rank = |l: &str| match l {
            "Metadata" => 1,
            "Request" => 2,
            "RequestResponse" => 3,
            _ => 0,
        };
        rank(&self.level) >= rank(level)
    }

    /// `/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web`;
    /// `/api/v1/namespaces/shop/secrets` (core group, a create);
    /// `/apis/networking.k8s.io/v1/ingressclasses/nginx` (cluster-scoped).
    fn request_uri(&self) -> String {
        let mut uri = if self.api_group.is_empty() {
            format!("/api/{}", self.api_version)
        } else {
            format!("/apis/{}/{}", self.api_group, self.api_version)
        };
        if !self.namespace.is_empty() {
            uri.push_str(&format!("/namespaces/{}", self.namespace));
        }
        uri.push('/');
        uri.push_str(&self.resource);
        if !self.is_collection_request() {
            if !self.name.is_empty() {
                uri.push('/');
                uri.push_str(&self.name);
            }
            if let Some(sub) = &self.subresource {
                uri.push('/');
                uri.push_str(sub);
            }
        }
        if let Some(q) = &self.query {
            uri.push('?');
            uri.push_str(q);
        }
        uri
    }

    /// Set from the request URL, then completed from the decoded body (the name of a created
    /// object; uid and resourceVersion when the body carries them). Empty fields are omitted, as
    /// the API server omits them.
    fn object_ref(&self, received: bool, collection: bool) -> Value {
        let mut r = Map::new();
        r.insert("resource".into(), json!(self.resource));
        if !self.namespace.is_empty() {
            r.insert("namespace".into(), json!(self.namespace));
        }
        let name_in_url = !collection;
        let name_from_body = !received && self.verb == "create";
        if !self.name.is_empty()
            && self.verb != "deletecollection"
            && (name_in_url || name_from_body)
        {
            r.insert("name".into(), json!(self.name));
        }
        let body_meta = if !received && matches!(self.verb.as_str(), "create" | "update") {
            self.request_object.as_ref().map(|o| &o["metadata"])
        } else {
            None
        };
        if let Some(uid) = body_meta.and_then(|m| m["uid"].as_str()) {
            r.insert("uid".into(), json!(uid));
        }
        if !self.api_group.is_empty() {
            r.insert("apiGroup".into(), json!(self.api_group));
        }
        r.insert("apiVersion".into(), json!(self.api_version));
        if let Some(rv) = body_meta.and_then(|m| m["resourceVersion"].as_str()) {
            r.insert("resourceVersion".into(), json!(rv));
        }
        if let Some(sub) = &self.subresource {
            r.insert("subresource".into(), json!(sub));
        }
        Value::Object(r)
    }

    /// `ingresses.networking.k8s.io`, or `secrets` in the core group.
    fn qualified_resource(&self) -> String {
        if self.api_group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.api_group)
        }
    }

    /// The object a delete or an error answers with, and the `DeleteOptions` kubectl sends,
    /// unless the test gave its own.
    fn objects(&self, code: i32) -> (Option<Value>, Option<Value>) {
        let request = self.request_object.clone().or_else(|| {
            (self.verb == "delete").then(|| {
                json!({
                    "kind": "DeleteOptions",
                    "apiVersion": "meta.k8s.io/v1",
                    "propagationPolicy": "Background",
                })
            })
        });
        let response = match &self.response_object {
            Some(v) => Some(v.clone()),
            None if code >= 400 => Some(self.status_object(code)),
            None if self.verb == "delete" => Some(self.status_object(code)),
            None if self.verb == "deletecollection" => Some(json!({
                "apiVersion": api_version_string(&self.api_group, &self.api_version),
                "kind": format!("{}List", kind_for(&self.resource)),
                "metadata": { "resourceVersion": next_resource_version() },
                "items": [],
            })),
            None => None,
        };
        (request, response)
    }

    /// The `Status` object the API server answers a delete or an error with.
    fn status_object(&self, code: i32) -> Value {
        let mut status = self.status_fields(code);
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        Value::Object(status)
    }

    /// `metadata`, `status`, `message`, `reason`, `details` and `code` of the response status.
    fn status_fields(&self, code: i32) -> Map<String, Value> {
        let mut s = Map::new();
        s.insert("metadata".into(), json!({}));
        let name = if self.verb == "deletecollection" {
            ""
        } else {
            self.name.as_str()
        };
        // Status details name the resource in `kind` (an API server quirk), except for Invalid,
        // which names the Kind.
        let details = |kind: &str, uid: Option<String>| {
            let mut d = Map::new();
            if !name.is_empty() {
                d.insert("name".into(), json!(name));
            }
            if !self.api_group.is_empty() {
                d.insert("group".into(), json!(self.api_group));
            }
            d.insert("kind".into(), json!(kind));
            if let Some(uid) = uid {
                d.insert("uid".into(), json!(uid));
            }
            Value::Object(d)
        };
        if code < 400 {
            if self.verb == "delete" {
                s.insert("status".into(), json!("Success"));
                let uid = uid_for(
                    &self.api_group,
                    kind_for(&self.resource),
                    &self.namespace,
                    name,
                );
                s.insert("details".into(), details(&self.resource, Some(uid)));
            }
            s.insert("code".into(), json!(code));
            return s;
        }
        let what = self.qualified_resource();
        let named = if name.is_empty() {
            what.clone()
        } else {
            format!("{what} {name:?}")
        };
        let (reason, message, details_kind) = match code {
            400 => (
                "BadRequest",
                "the server rejected our request for an unknown reason".to_string(),
                None,
            ),
            401 => ("Unauthorized", "Unauthorized".to_string(), None),
            403 => (
                "Forbidden",
                format!("{named} is forbidden: {}", self.forbidden_reason()),
                Some(self.resource.clone()),
            ),
            404 => (
                "NotFound",
                format!("{named} not found"),
                Some(self.resource.clone()),
            ),
            409 if self.verb == "create" => (
                "AlreadyExists",
                format!("{named} already exists"),
                Some(self.resource.clone()),
            ),
            409 => (
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {named}: the object has been modified; please apply your changes to the latest version and try again"
                ),
                Some(self.resource.clone()),
            ),
            422 => {
                let kind = kind_for(&self.resource);
                let qualified_kind = if self.api_group.is_empty() {
                    kind.to_string()
                } else {
                    format!("{kind}.{}", self.api_group)
                };
                (
                    "Invalid",
                    format!(
                        "{qualified_kind} {name:?} is invalid: spec: Invalid value: \"object\": spec is invalid"
                    ),
                    Some(kind.to_string()),
                )
            }
            429 => (
                "TooManyRequests",
                "Too many requests, please try again later.".to_string(),
                None,
            ),
            500 => (
                "InternalError",
                "Internal error occurred: the server could not complete the request".to_string(),
                None,
            ),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request".to_string(),
                None,
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted".to_string(),
                None,
            ),
            _ => (
                "",
                format!("the server responded with the status code {code}"),
                None,
            ),
        };
        s.insert("status".into(), json!("Failure"));
        s.insert("message".into(), json!(message));
        if !reason.is_empty() {
            s.insert("reason".into(), json!(reason));
        }
        if let Some(kind) = details_kind {
            s.insert("details".into(), details(&kind, None));
        }
        s.insert("code".into(), json!(code));
        s
    }

    /// RBAC's refusal: `User "bob" cannot patch resource "ingresses" in API group
    /// "networking.k8s.io" in the namespace "shop"`, about the impersonated user if any.
    fn forbidden_reason(&self) -> String {
        let user = self
            .impersonated
            .as_ref()
            .map_or(self.username.as_str(), |(u, _)| u.as_str());
        let resource = match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            self.verb, self.api_group
        )
    }

    /// The response status: only the code on success, the Status's fields otherwise (and for a
    /// delete, whose response is a Status too).
    fn response_status(&self, code: i32) -> Value {
        let response_is_status =
            code >= 400 || (self.verb == "delete" && self.response_object.is_none());
        if response_is_status {
            Value::Object(self.status_fields(code))
        } else {
            json!({ "metadata": {}, "code": code })
        }
    }

    fn authorization_annotations(&self, forbidden: bool) -> Value {
        if forbidden {
            return json!({
                "authorization.k8s.io/decision": "forbid",
                "authorization.k8s.io/reason": "",
            });
        }
        let user = self
            .impersonated
            .as_ref()
            .map_or(self.username.as_str(), |(u, _)| u.as_str());
        let reason = if self.namespace.is_empty() {
            format!(
                "RBAC: allowed by ClusterRoleBinding \"ingress-admins\" of ClusterRole \"cluster-admin\" to User {user:?}"
            )
        } else {
            format!(
                "RBAC: allowed by RoleBinding \"ingress-admins/{}\" of ClusterRole \"admin\" to User {user:?}",
                self.namespace
            )
        };
        json!({
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": reason,
        })
    }
}

/// An `EventList` body, as the webhook backend posts it:
/// `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[...]}`.
pub fn event_list(events: &[Value]) -> Vec<u8> {
    let body = json!({
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "metadata": {},
        "items": events,
    });
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

/// A JSON merge patch (RFC 7386) body as kubectl sends it for `kubectl patch --type merge` (and
/// `kubectl annotate`/`label`): the value itself. The API server logs it as the event's
/// `requestObject` unchanged. [`apply_merge_patch`] computes the object it produces.
pub fn merge_patch(v: Value) -> Value {
    v
}

/// `target` with the merge patch `patch` applied (RFC 7386: objects merge, `null` removes a
/// member, anything else replaces).
pub fn apply_merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch_members) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch_members {
        if value.is_null() {
            out.remove(key);
        } else {
            let merged = apply_merge_patch(out.get(key).unwrap_or(&Value::Null), value);
            out.insert(key.clone(), merged);
        }
    }
    Value::Object(out)
}

/// The next stored version of `obj`: a new `resourceVersion`, and `generation` one higher when
/// the object has one. Use it for the response of an update or a patch.
pub fn updated(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(next_resource_version()));
        if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
            meta.insert("generation".into(), json!(g + 1));
        }
    }
    out
}

/// `obj` as a client sends it in a create: without what the server fills in (`uid`,
/// `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`) and without `status`.
/// For an update, send the stored object instead (it must carry its `resourceVersion`).
pub fn request_body(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(m) = out.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        for server_field in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
        ] {
            meta.remove(server_field);
        }
    }
    out
}

/// `obj` with the annotation `key: value` added to its metadata.
pub fn annotate(obj: &Value, key: &str, value: &str) -> Value {
    let mut out = obj.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(key.to_string(), json!(value));
        }
    }
    out
}

/// An Ingress of class `nginx`: one rule per host, path `/` (Prefix) to Service `web` port 80;
/// with `tls`, those hosts served with that Secret. No hosts: one rule for every host.
pub fn ingress(ns: &str, name: &str, hosts: &[&str], tls: Option<(&[&str], &str)>) -> Value {
    let http = json!({
        "paths": [{
            "path": "/",
            "pathType": "Prefix",
            "backend": { "service": { "name": "web", "port": { "number": 80 } } },
        }],
    });
    let rules: Vec<Value> = if hosts.is_empty() {
        vec![json!({ "http": http })]
    } else {
        hosts
            .iter()
            .map(|h| json!({ "host": h, "http": http }))
            .collect()
    };
    let mut spec = json!({ "ingressClassName": "nginx", "rules": rules });
    if let Some((tls_hosts, secret)) = tls {
        spec["tls"] = json!([{ "hosts": tls_hosts, "secretName": secret }]);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata("networking.k8s.io/v1", "Ingress", ns, name, true),
        "spec": spec,
        "status": { "loadBalancer": {} },
    })
}

/// A (cluster-scoped) IngressClass served by `controller`, e.g. `k8s.io/ingress-nginx`.
pub fn ingress_class(name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": metadata("networking.k8s.io/v1", "IngressClass", "", name, true),
        "spec": { "controller": controller },
    })
}

/// A Gateway listener for [`gateway`]: (name, protocol, port, hostname, certificate Secret),
/// e.g. `("https", "HTTPS", 443, Some("shop.example.com"), Some("shop-tls"))`.
pub type Listener<'a> = (&'a str, &'a str, u16, Option<&'a str>, Option<&'a str>);

/// A Gateway API Gateway of class `eg`. Each listener is (name, protocol, port, hostname,
/// certificate Secret); a Secret makes it terminate TLS with that certificate.
pub fn gateway(ns: &str, name: &str, listeners: &[Listener<'_>]) -> Value {
    let listeners: Vec<Value> = listeners
        .iter()
        .map(|(listener, protocol, port, hostname, secret)| {
            let mut l = json!({
                "name": listener,
                "protocol": protocol,
                "port": port,
                "allowedRoutes": { "namespaces": { "from": "Same" } },
            });
            if let Some(h) = hostname {
                l["hostname"] = json!(h);
            }
            if let Some(s) = secret {
                l["tls"] = json!({
                    "mode": "Terminate",
                    "certificateRefs": [{ "group": "", "kind": "Secret", "name": s }],
                });
            }
            l
        })
        .collect();
    // The CRD's default status until a controller reports.
    let pending = |kind: &str| {
        json!({
            "type": kind,
            "status": "Unknown",
            "reason": "Pending",
            "message": "Waiting for controller",
            "lastTransitionTime": "1970-01-01T00:00:00Z",
        })
    };
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": metadata("gateway.networking.k8s.io/v1", "Gateway", ns, name, true),
        "spec": { "gatewayClassName": "eg", "listeners": listeners },
        "status": { "conditions": [pending("Accepted"), pending("Programmed")] },
    })
}

/// The parent reference of routes and the target of Envoy Gateway policies: Gateway `eg`.
fn gateway_ref() -> Value {
    json!({ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME })
}

/// A backend reference with the defaults the CRD fills in.
fn backend_ref(service: &str, port: u16) -> Value {
    json!({ "group": "", "kind": "Service", "name": service, "port": port, "weight": 1 })
}

/// An HTTPRoute on Gateway `eg`: requests for `hostnames` under `path` (PathPrefix) to Service
/// `backend` port 80.
pub fn http_route(ns: &str, name: &str, hostnames: &[&str], path: &str, backend: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata("gateway.networking.k8s.io/v1", "HTTPRoute", ns, name, true),
        "spec": {
            "parentRefs": [gateway_ref()],
            "hostnames": hostnames,
            "rules": [{
                "matches": [{ "path": { "type": "PathPrefix", "value": path } }],
                "backendRefs": [backend_ref(backend, 80)],
            }],
        },
    })
}

/// A GRPCRoute on Gateway `eg`: calls to gRPC `service` (e.g. `shop.v1.Cart`) for `hostnames`
/// to Service `backend` port 50051.
pub fn grpc_route(ns: &str, name: &str, hostnames: &[&str], service: &str, backend: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": metadata("gateway.networking.k8s.io/v1", "GRPCRoute", ns, name, true),
        "spec": {
            "parentRefs": [gateway_ref()],
            "hostnames": hostnames,
            "rules": [{
                "matches": [{ "method": { "type": "Exact", "service": service } }],
                "backendRefs": [backend_ref(backend, 50051)],
            }],
        },
    })
}

/// A TLSRoute (experimental channel, `v1alpha2`) on Gateway `eg`: TLS passthrough for
/// `hostnames` (by SNI) to Service `backend` port 443.
pub fn tls_route(ns: &str, name: &str, hostnames: &[&str], backend: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1alpha2",
        "kind": "TLSRoute",
        "metadata": metadata("gateway.networking.k8s.io/v1alpha2", "TLSRoute", ns, name, true),
        "spec": {
            "parentRefs": [gateway_ref()],
            "hostnames": hostnames,
            "rules": [{ "backendRefs": [backend_ref(backend, 443)] }],
        },
    })
}

/// A ReferenceGrant in `ns` letting objects `from` (group, kind, namespace) refer to kinds `to`
/// (group, kind) in `ns`, e.g. `from: [("gateway.networking.k8s.io", "Gateway", "infra")]`,
/// `to: [("", "Secret")]`.
pub fn reference_grant(
    ns: &str,
    name: &str,
    from: &[(&str, &str, &str)],
    to: &[(&str, &str)],
) -> Value {
    let from: Vec<Value> = from
        .iter()
        .map(|(group, kind, namespace)| json!({ "group": group, "kind": kind, "namespace": namespace }))
        .collect();
    let to: Vec<Value> = to
        .iter()
        .map(|(group, kind)| json!({ "group": group, "kind": kind }))
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": metadata("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", ns, name, true),
        "spec": { "from": from, "to": to },
    })
}

/// The `selector` of Istio objects that apply to the ingress gateway.
fn ingressgateway_selector() -> Value {
    json!({ "matchLabels": { "istio": "ingressgateway" } })
}

/// An Istio Gateway on `istio: ingressgateway`: port 443 HTTPS, TLS mode SIMPLE with
/// `tls_credential` (a Secret's name); without one, port 80 HTTP.
pub fn istio_gateway(ns: &str, name: &str, hosts: &[&str], tls_credential: Option<&str>) -> Value {
    let server = match tls_credential {
        Some(credential) => json!({
            "port": { "number": 443, "name": "https", "protocol": "HTTPS" },
            "hosts": hosts,
            "tls": { "mode": "SIMPLE", "credentialName": credential },
        }),
        None => json!({
            "port": { "number": 80, "name": "http", "protocol": "HTTP" },
            "hosts": hosts,
        }),
    };
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": metadata("networking.istio.io/v1", "Gateway", ns, name, true),
        "spec": { "selector": { "istio": "ingressgateway" }, "servers": [server] },
    })
}

/// An Istio VirtualService: `hosts` through `gateways`, URI prefix `prefix` to host `dest`
/// port 80.
pub fn virtual_service(
    ns: &str,
    name: &str,
    hosts: &[&str],
    gateways: &[&str],
    prefix: &str,
    dest: &str,
) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata("networking.istio.io/v1", "VirtualService", ns, name, true),
        "spec": {
            "hosts": hosts,
            "gateways": gateways,
            "http": [{
                "match": [{ "uri": { "prefix": prefix } }],
                "route": [{ "destination": { "host": dest, "port": { "number": 80 } } }],
            }],
        },
    })
}

/// An Istio AuthorizationPolicy on the ingress gateway: `action` (`ALLOW`, `DENY`, `CUSTOM`,
/// `AUDIT`) with `rules` (each `{"from": …, "to": …, "when": …}`; none: no `rules` field, which
/// for ALLOW allows nothing).
pub fn authorization_policy(ns: &str, name: &str, action: &str, rules: Vec<Value>) -> Value {
    let mut spec = json!({ "selector": ingressgateway_selector(), "action": action });
    if !rules.is_empty() {
        spec["rules"] = Value::Array(rules);
    }
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata("security.istio.io/v1", "AuthorizationPolicy", ns, name, true),
        "spec": spec,
    })
}

/// An Istio RequestAuthentication on the ingress gateway accepting JWTs from `issuers` (keys
/// at `<issuer>/.well-known/jwks.json`).
pub fn request_authentication(ns: &str, name: &str, issuers: &[&str]) -> Value {
    let rules: Vec<Value> = issuers
        .iter()
        .map(|issuer| {
            json!({
                "issuer": issuer,
                "jwksUri": format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
            })
        })
        .collect();
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": metadata("security.istio.io/v1", "RequestAuthentication", ns, name, true),
        "spec": { "selector": ingressgateway_selector(), "jwtRules": rules },
    })
}

/// An Istio PeerAuthentication with mTLS `mode` (`STRICT`, `PERMISSIVE`, `DISABLE`).
pub fn peer_authentication(ns: &str, name: &str, mode: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": metadata("security.istio.io/v1", "PeerAuthentication", ns, name, true),
        "spec": { "mtls": { "mode": mode } },
    })
}

/// An Istio WasmPlugin (`extensions.istio.io/v1alpha1`) on the ingress gateway, in phase AUTHN
/// like Warden's (`envoy/kubernetes/istio-wasmplugin.yaml`), loading `url` (`oci://…` or
/// `https://…`), with `fail_strategy` `FAIL_CLOSE` or `FAIL_OPEN`.
pub fn wasm_plugin(ns: &str, name: &str, url: &str, fail_strategy: &str) -> Value {
    json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": metadata("extensions.istio.io/v1alpha1", "WasmPlugin", ns, name, true),
        "spec": {
            "selector": ingressgateway_selector(),
            "url": url,
            "imagePullPolicy": "IfNotPresent",
            "phase": "AUTHN",
            "failStrategy": fail_strategy,
            "pluginName": name,
        },
    })
}

/// An Istio EnvoyFilter (`networking.istio.io/v1alpha3`) inserting a Lua filter before the
/// router on the ingress gateway.
pub fn envoy_filter(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("networking.istio.io/v1alpha3", "EnvoyFilter", ns, name, true),
        "spec": {
            "workloadSelector": { "labels": { "istio": "ingressgateway" } },
            "configPatches": [{
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "listener": {
                        "filterChain": {
                            "filter": {
                                "name": "envoy.filters.network.http_connection_manager",
                                "subFilter": { "name": "envoy.filters.http.router" },
                            },
                        },
                    },
                },
                "patch": {
                    "operation": "INSERT_BEFORE",
                    "value": {
                        "name": "envoy.filters.http.lua",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                            "default_source_code": {
                                "inline_string": "function envoy_on_request(handle) end",
                            },
                        },
                    },
                },
            }],
        },
    })
}

/// An Envoy Gateway SecurityPolicy (`gateway.envoyproxy.io/v1alpha1`) on Gateway `eg`: JWT
/// authentication from `jwt_issuer` and/or basic auth with the htpasswd Secret
/// `basic_auth_secret`. Neither: a policy that authenticates nothing.
pub fn security_policy(
    ns: &str,
    name: &str,
    jwt_issuer: Option<&str>,
    basic_auth_secret: Option<&str>,
) -> Value {
    let mut spec = json!({ "targetRefs": [gateway_ref()] });
    if let Some(issuer) = jwt_issuer {
        spec["jwt"] = json!({
            "providers": [{
                "name": "issuer",
                "issuer": issuer,
                "remoteJWKS": {
                    "uri": format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
                },
            }],
        });
    }
    if let Some(secret) = basic_auth_secret {
        spec["basicAuth"] = json!({ "users": { "group": "", "kind": "Secret", "name": secret } });
    }
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "SecurityPolicy",
        "metadata": metadata("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy", ns, name, true),
        "spec": spec,
    })
}

/// An Envoy Gateway EnvoyExtensionPolicy on Gateway `eg` loading one Wasm extension named like
/// the policy, as Warden's (`envoy/kubernetes/envoy-gateway.yaml`): from `wasm_url` over HTTP
/// when it is an `http(s)://` URL, else as an OCI image; `fail_open` lets requests through when
/// the extension cannot run.
pub fn envoy_extension_policy(ns: &str, name: &str, wasm_url: &str, fail_open: bool) -> Value {
    let code = if wasm_url.starts_with("https://") || wasm_url.starts_with("http://") {
        json!({ "type": "HTTP", "http": { "url": wasm_url } })
    } else {
        json!({ "type": "Image", "image": { "url": wasm_url.trim_start_matches("oci://") } })
    };
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": metadata("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy", ns, name, true),
        "spec": {
            "targetRefs": [gateway_ref()],
            "wasm": [{ "name": name, "rootID": name, "failOpen": fail_open, "code": code }],
        },
    })
}

/// An Envoy Gateway ClientTrafficPolicy on Gateway `eg` requiring TLS `min_tls` (`"1.2"`,
/// `"1.3"`) from clients.
pub fn client_traffic_policy(ns: &str, name: &str, min_tls: &str) -> Value {
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "ClientTrafficPolicy",
        "metadata": metadata("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy", ns, name, true),
        "spec": { "targetRefs": [gateway_ref()], "tls": { "minVersion": min_tls } },
    })
}

/// A Secret of type `kubernetes.io/tls` as `kubectl apply` leaves it: `data.tls.crt` and
/// `data.tls.key` in base64, and the whole applied manifest (the data included) in the
/// `kubectl.kubernetes.io/last-applied-configuration` annotation. Everything a test must never
/// find in what Warden stores.
pub fn tls_secret(ns: &str, name: &str, cert_pem: &str, key_pem: &str) -> Value {
    let data = json!({
        "tls.crt": STANDARD.encode(cert_pem),
        "tls.key": STANDARD.encode(key_pem),
    });
    // kubectl writes the manifest as applied: keys sorted (Go marshals maps sorted), an empty
    // annotations map, a trailing newline.
    let applied = json!({
        "apiVersion": "v1",
        "data": data,
        "kind": "Secret",
        "metadata": { "annotations": {}, "name": name, "namespace": ns },
        "type": "kubernetes.io/tls",
    });
    let applied = format!(
        "{}\n",
        serde_json::to_string(&sorted(&applied)).expect("a JSON value serializes")
    );
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata("v1", "Secret", ns, name, false),
        "type": "kubernetes.io/tls",
        "data": data,
    });
    annotate(
        &secret,
        "kubectl.kubernetes.io/last-applied-configuration",
        &applied,
    )
}

/// A Secret of type `Opaque` with one entry, `value` in base64.
pub fn opaque_secret(ns: &str, name: &str, key: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata("v1", "Secret", ns, name, false),
        "type": "Opaque",
        "data": { key: STANDARD.encode(value) },
    })
}

/// A ConfigMap with `data`.
pub fn config_map(ns: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata("v1", "ConfigMap", ns, name, false),
        "data": data,
    })
}

/// A Pod with one container, as the API server returns it right after the create (defaults
/// filled in, not yet scheduled). Not an ingress-policy kind: Warden must drop its events.
pub fn pod(ns: &str, name: &str) -> Value {
    let mut meta = metadata("v1", "Pod", ns, name, false);
    meta["labels"] = json!({ "app": name });
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.example.com/app:1.0",
                "ports": [{ "containerPort": 8080, "protocol": "TCP" }],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
        },
        "status": { "phase": "Pending", "qosClass": "BestEffort" },
    })
}

/// `metadata` as stored: namespace (unless cluster-scoped), name, a uid stable for (API group,
/// kind, namespace, name), a fresh resourceVersion, creationTimestamp, and generation 1 for kinds
/// that have one.
fn metadata(api_version: &str, kind: &str, ns: &str, name: &str, has_generation: bool) -> Value {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let mut meta = Map::new();
    meta.insert("name".into(), json!(name));
    if !ns.is_empty() {
        meta.insert("namespace".into(), json!(ns));
    }
    meta.insert("uid".into(), json!(uid_for(group, kind, ns, name)));
    meta.insert("resourceVersion".into(), json!(next_resource_version()));
    if has_generation {
        meta.insert("generation".into(), json!(1));
    }
    meta.insert(
        "creationTimestamp".into(),
        json!(rfc3339_seconds(now_ms() / 1000)),
    );
    Value::Object(meta)
}

/// The Kind of the resources this module builds, for statuses and lists.
fn kind_for(resource: &str) -> &'static str {
    match resource {
        "ingresses" => "Ingress",
        "ingressclasses" => "IngressClass",
        "gateways" => "Gateway",
        "httproutes" => "HTTPRoute",
        "grpcroutes" => "GRPCRoute",
        "tlsroutes" => "TLSRoute",
        "referencegrants" => "ReferenceGrant",
        "virtualservices" => "VirtualService",
        "envoyfilters" => "EnvoyFilter",
        "authorizationpolicies" => "AuthorizationPolicy",
        "requestauthentications" => "RequestAuthentication",
        "peerauthentications" => "PeerAuthentication",
        "wasmplugins" => "WasmPlugin",
        "securitypolicies" => "SecurityPolicy",
        "envoyextensionpolicies" => "EnvoyExtensionPolicy",
        "clienttrafficpolicies" => "ClientTrafficPolicy",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "pods" => "Pod",
        _ => "Object",
    }
}

/// `networking.k8s.io/v1`, or `v1` for the core group.
fn api_version_string(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `v` with every object's members in sorted order, whatever serde_json's map keeps.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Resource versions are etcd revisions: increasing numbers, as strings.
fn next_resource_version() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(48_213);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

/// SplitMix64's finaliser: spreads a counter into well-mixed bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 128 bits as a version-4 UUID string (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`).
fn uuid_from(hi: u64, lo: u64) -> String {
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0xc << 60)) | (0x8 << 60);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// A fresh audit ID: unique within the process (a counter) and across runs (time, process id).
fn new_audit_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = nanos ^ (u64::from(std::process::id()) << 40);
    uuid_from(mix(seed ^ mix(n)), mix(seed.rotate_left(17) ^ n))
}

/// A UUID-shaped uid that is the same for the same (API group, kind, namespace, name) in every
/// run.
fn uid_for(group: &str, kind: &str, ns: &str, name: &str) -> String {
    // FNV-1a over the parts, with separators so ("a", "bc") and ("ab", "c") differ.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group
        .bytes()
        .chain([0])
        .chain(kind.bytes())
        .chain([0])
        .chain(ns.bytes())
        .chain([0])
        .chain(name.bytes())
    {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    uuid_from(mix(h), mix(h ^ 0x5bd1_e995))
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-12-02T10:15:02Z`.
fn rfc3339_seconds(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// `2026-12-02T10:15:02.123412Z`, as `metav1.MicroTime` marshals.
fn rfc3339_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let whole = rfc3339_seconds(secs);
    format!("{}.{frac:06}Z", whole.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress_patch() -> EventBuilder {
        EventBuilder::new(
            "patch",
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            "web",
        )
    }

    #[test]
    fn request_uris_name_the_object_or_its_collection() {
        let uri = |b: &EventBuilder| b.build()["requestURI"].as_str().unwrap().to_string();
        assert_eq!(
            uri(&ingress_patch()),
            "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web"
        );
        assert_eq!(
            uri(&EventBuilder::new(
                "create",
                "networking.k8s.io",
                "v1",
                "ingresses",
                "shop",
                "web"
            )),
            "/apis/networking.k8s.io/v1/namespaces/shop/ingresses"
        );
        assert_eq!(
            uri(&EventBuilder::new(
                "delete", "", "v1", "secrets", "shop", "web-tls"
            )),
            "/api/v1/namespaces/shop/secrets/web-tls"
        );
        assert_eq!(
            uri(&EventBuilder::new(
                "update",
                "networking.k8s.io",
                "v1",
                "ingressclasses",
                "",
                "nginx"
            )),
            "/apis/networking.k8s.io/v1/ingressclasses/nginx"
        );
        assert_eq!(
            uri(&ingress_patch().subresource("status")),
            "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web/status"
        );
        assert_eq!(
            uri(&EventBuilder::new(
                "deletecollection",
                "gateway.networking.k8s.io",
                "v1",
                "httproutes",
                "shop",
                ""
            )),
            "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes"
        );
        assert_eq!(
            uri(&ingress_patch().query("dryRun=All&fieldManager=kubectl-client-side-apply")),
            "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web?dryRun=All&fieldManager=kubectl-client-side-apply"
        );
    }

    #[test]
    fn a_complete_event_has_the_api_servers_fields() {
        let before = ingress("shop", "web", &["shop.example.com"], None);
        let patch = merge_patch(json!({ "metadata": { "annotations": { "x": "y" } } }));
        let after = updated(&apply_merge_patch(&before, &patch));
        let e = ingress_patch()
            .time_ms(1_764_670_502_123)
            .request_object(patch.clone())
            .response_object(after.clone())
            .build();
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(e["level"], "RequestResponse");
        assert_eq!(e["stage"], "ResponseComplete");
        assert_eq!(e["verb"], "patch");
        assert_eq!(e["user"]["username"], DEFAULT_USER);
        assert_eq!(e["user"]["groups"], json!(["system:authenticated"]));
        assert!(e["user"]["uid"].is_string());
        assert!(e.get("impersonatedUser").is_none());
        assert_eq!(e["sourceIPs"], json!([DEFAULT_SOURCE_IP]));
        assert_eq!(e["userAgent"], DEFAULT_USER_AGENT);
        assert_eq!(
            e["objectRef"],
            json!({
                "resource": "ingresses",
                "namespace": "shop",
                "name": "web",
                "apiGroup": "networking.k8s.io",
                "apiVersion": "v1",
            })
        );
        assert_eq!(e["responseStatus"], json!({ "metadata": {}, "code": 200 }));
        assert_eq!(e["requestObject"], patch);
        assert_eq!(e["responseObject"], after);
        assert_eq!(e["responseObject"]["metadata"]["annotations"]["x"], "y");
        assert_eq!(e["responseObject"]["metadata"]["generation"], 2);
        assert_eq!(e["requestReceivedTimestamp"], "2025-12-02T10:15:02.123412Z");
        assert_eq!(e["stageTimestamp"], "2025-12-02T10:15:02.127683Z");
        assert_eq!(e["annotations"]["authorization.k8s.io/decision"], "allow");
        let id = e["auditID"].as_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4', "a version-4 UUID: {id}");
    }

    #[test]
    fn request_received_has_no_response_objects_or_authorization() {
        let e = EventBuilder::new(
            "create",
            "networking.k8s.io",
            "v1",
            "ingresses",
            "shop",
            "web",
        )
        .stage("RequestReceived")
        .impersonate("bob@example.com", &["system:authenticated"])
        .request_object(request_body(&ingress("shop", "web", &["a.example"], None)))
        .build();
        for absent in [
            "responseStatus",
            "responseObject",
            "requestObject",
            "annotations",
            "impersonatedUser",
        ] {
            assert!(e.get(absent).is_none(), "{absent} in {e}");
        }
        assert!(
            e["objectRef"].get("name").is_none(),
            "a create's name is not known yet: {e}"
        );
        assert_eq!(e["stage"], "RequestReceived");
    }

    #[test]
    fn metadata_level_carries_no_objects() {
        let secret = tls_secret("shop", "web-tls", "CERT", "KEY");
        let e = EventBuilder::new("update", "", "v1", "secrets", "shop", "web-tls")
            .level("Metadata")
            .request_object(secret.clone())
            .response_object(updated(&secret))
            .build();
        assert!(e.get("requestObject").is_none());
        assert!(e.get("responseObject").is_none());
        assert_eq!(e["responseStatus"]["code"], 200);
        assert!(e["objectRef"].get("apiGroup").is_none(), "core group: {e}");
        // The API server still completes objectRef from the decoded body.
        assert_eq!(
            e["objectRef"]["resourceVersion"],
            secret["metadata"]["resourceVersion"]
        );
        let text = e.to_string();
        assert!(!text.contains(&STANDARD.encode("KEY")), "{text}");

        let request_only = EventBuilder::new("update", "", "v1", "configmaps", "warden", "w")
            .level("Request")
            .request_object(config_map("warden", "w", &[("a", "b")]))
            .response_object(config_map("warden", "w", &[("a", "c")]))
            .build();
        assert_eq!(request_only["requestObject"]["data"]["a"], "b");
        assert!(request_only.get("responseObject").is_none());
    }

    #[test]
    fn a_refusal_carries_the_failure_status_and_no_request_body() {
        let e = ingress_patch()
            .user("carol@example.com", &["system:authenticated"])
            .impersonate("bob@example.com", &["devs"])
            .code(403)
            .request_object(merge_patch(json!({ "spec": {} })))
            .build();
        let status = &e["responseStatus"];
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(status["code"], 403);
        assert_eq!(
            status["message"],
            "ingresses.networking.k8s.io \"web\" is forbidden: User \"bob@example.com\" cannot patch resource \"ingresses\" in API group \"networking.k8s.io\" in the namespace \"shop\""
        );
        assert_eq!(
            status["details"],
            json!({ "name": "web", "group": "networking.k8s.io", "kind": "ingresses" })
        );
        assert_eq!(e["annotations"]["authorization.k8s.io/decision"], "forbid");
        assert!(e.get("requestObject").is_none());
        assert_eq!(e["responseObject"]["kind"], "Status");
        assert_eq!(e["impersonatedUser"]["username"], "bob@example.com");

        let exists = EventBuilder::new("create", "", "v1", "secrets", "shop", "web-tls")
            .code(409)
            .build();
        assert_eq!(exists["responseStatus"]["reason"], "AlreadyExists");
        assert_eq!(
            exists["responseStatus"]["message"],
            "secrets \"web-tls\" already exists"
        );
    }

    #[test]
    fn a_delete_exchanges_delete_options_and_a_success_status() {
        let e = EventBuilder::new(
            "delete",
            "security.istio.io",
            "v1",
            "authorizationpolicies",
            "istio-system",
            "require-jwt",
        )
        .build();
        assert_eq!(e["requestObject"]["kind"], "DeleteOptions");
        assert_eq!(e["responseObject"]["status"], "Success");
        assert_eq!(e["responseStatus"]["status"], "Success");
        let policy = authorization_policy("istio-system", "require-jwt", "DENY", vec![]);
        assert_eq!(
            e["responseStatus"]["details"]["uid"], policy["metadata"]["uid"],
            "the deleted object's uid"
        );
    }

    #[test]
    fn building_twice_gives_the_same_event_and_new_builders_new_ids() {
        let b = ingress_patch();
        assert_eq!(b.build(), b.build());
        assert_ne!(b.build()["auditID"], ingress_patch().build()["auditID"]);
        assert_eq!(
            ingress_patch().audit_id("fixed").build()["auditID"],
            "fixed"
        );
    }

    #[test]
    fn event_lists_are_what_the_webhook_posts() {
        let body = event_list(&[ingress_patch().build(), ingress_patch().build()]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "EventList");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["metadata"], json!({}));
        assert_eq!(v["items"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_tls_secret_hides_its_key_in_data_and_in_the_last_applied_annotation() {
        let s = tls_secret(
            "shop",
            "web-tls",
            "-----BEGIN CERTIFICATE-----\nMII\n",
            "PRIVATE",
        );
        assert_eq!(s["type"], "kubernetes.io/tls");
        assert_eq!(s["data"]["tls.key"], STANDARD.encode("PRIVATE"));
        assert!(s["metadata"].get("generation").is_none());
        let applied =
            s["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .as_str()
                .unwrap();
        assert!(
            applied.starts_with("{\"apiVersion\":\"v1\",\"data\":{"),
            "{applied}"
        );
        assert!(applied.ends_with("}\n"));
        assert!(applied.contains(&STANDARD.encode("PRIVATE")));
        let parsed: Value = serde_json::from_str(applied).unwrap();
        assert_eq!(parsed["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn objects_keep_their_uid_and_get_new_versions() {
        let a = ingress(
            "shop",
            "web",
            &["a.example"],
            Some((&["a.example"], "web-tls")),
        );
        let b = ingress("shop", "web", &["b.example"], None);
        assert_eq!(a["metadata"]["uid"], b["metadata"]["uid"]);
        assert_ne!(
            a["metadata"]["resourceVersion"],
            b["metadata"]["resourceVersion"]
        );
        assert_eq!(a["spec"]["tls"][0]["secretName"], "web-tls");
        assert_ne!(
            gateway("shop", "web", &[])["metadata"]["uid"],
            a["metadata"]["uid"]
        );
        let sent = request_body(&a);
        assert!(sent["metadata"].get("uid").is_none());
        assert!(sent.get("status").is_none());
        assert!(
            ingress_class("nginx", "k8s.io/ingress-nginx")["metadata"]
                .get("namespace")
                .is_none()
        );
    }

    #[test]
    fn merge_patches_merge_replace_and_remove() {
        let target = json!({ "a": { "b": 1, "c": 2 }, "d": [1, 2] });
        let patch = json!({ "a": { "b": null, "e": 3 }, "d": [3] });
        assert_eq!(
            apply_merge_patch(&target, &patch),
            json!({ "a": { "c": 2, "e": 3 }, "d": [3] })
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(rfc3339_seconds(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
