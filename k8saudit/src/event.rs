//! The API server's audit webhook body (`audit.k8s.io/v1` `EventList`): parsing, validating and
//! owning the fields of each `Event` that the keep list and the change records need.
//!
//! The body is read in two passes. The first checks that it is JSON at all and reads `kind` and
//! `apiVersion` only, so that a body of the wrong kind is named as such rather than by the first
//! field of an item that does not fit. The second reads the items into typed structs (fast, and
//! through `serde_path_to_error` so a wrong type names its field: `items[3].auditID: invalid
//! type: ...`). Request and response objects are captured unparsed and parsed afterwards with
//! their own nesting limit: a Kubernetes user can make the API server log an arbitrarily deep
//! patch, and that must cost that event its object, not the whole batch its acceptance.
//!
//! Two entry points: [`parse_event_list`] refuses the whole body for any invalid item (the
//! collector's contract: nothing half-stored); [`parse_event_batch`] keeps the valid items and
//! lists the invalid ones. The difference matters because some item fields are chosen by any
//! Kubernetes client, not by the API server: the `Audit-ID` request header becomes `auditID`, a
//! URL path segment becomes `objectRef.name`. With the strict parser one such request makes the
//! API server's whole batch (up to 400 other users' events) fail until it gives up on it.

use chrono::DateTime;
use serde::Deserialize;
use serde::de::{self, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;

/// Largest body accepted, in bytes. The API server's webhook batches are at most 400 events and,
/// with truncation on (its default), 10 MiB; this leaves room for batches sent without
/// truncation while still bounding what one body can make the parser allocate.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Most events accepted in one body (the API server sends at most 400 by default).
pub const MAX_EVENTS: usize = 10_000;

/// Longest `auditID` accepted, in bytes (the API server generates UUIDs, 36 bytes).
pub const MAX_AUDIT_ID_BYTES: usize = 128;

/// Longest `objectRef` field accepted, in bytes: a DNS subdomain, the longest Kubernetes name.
pub const MAX_NAME_BYTES: usize = 253;

/// Deepest request or response object kept (serde_json's own recursion limit, applied to the
/// object alone). A deeper object is left out of its event rather than failing the body.
pub const MAX_OBJECT_DEPTH: usize = 128;

const API_VERSION: &str = "audit.k8s.io/v1";
const LEVELS: [&str; 4] = ["None", "Metadata", "Request", "RequestResponse"];
const STAGES: [&str; 4] = [
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

/// Why a webhook body (or, in [`parse_event_batch`], one item) was refused. `Display` gives the
/// field and the problem, e.g. `items[3].auditID: missing`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON (or has trailing bytes after the JSON value).
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body: {size} bytes, more than the {max} accepted")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A field is missing, of the wrong type or out of bounds.
    #[error("{field}: {problem}")]
    Invalid {
        /// Where, as a JSON path from the body: `kind`, `items[7].objectRef.name`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ParseError {
    fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ParseError {
        ParseError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ParseError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// An authenticated (or impersonated) user as the API server saw it. `extra` is not kept: it can
/// carry anything an authenticator chooses, and nothing downstream needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name; empty when the API server sent none (a request that failed
    /// authentication is logged with `"user": {}`).
    pub username: String,
    /// The user's uid, when the authenticator gives one.
    pub uid: Option<String>,
    /// The user's groups.
    pub groups: Vec<String>,
}

/// What the request was about (`objectRef`). Fields the API server left out are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectReference {
    /// Plural, lowercase resource (`ingresses`).
    pub resource: String,
    /// Namespace; empty for cluster-scoped objects and collections across namespaces.
    pub namespace: String,
    /// Name; empty for collections (list, deletecollection) and some creates.
    pub name: String,
    /// API group; empty for the core group.
    pub api_group: String,
    /// API version of the request (`v1`).
    pub api_version: String,
    /// Subresource (`status`), empty for the object itself.
    pub subresource: String,
}

/// Identity of a Kubernetes object: api group ("" for core), resource (plural, lowercase),
/// namespace ("" when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// API group, "" for the core group.
    pub api_group: String,
    /// Plural, lowercase resource.
    pub resource: String,
    /// Namespace, "" when cluster-scoped.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// One validated `audit.k8s.io/v1` `Event`: the fields that matter, owned. Annotations and
/// `user.extra` are not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `None`, `Metadata`, `Request` or `RequestResponse`.
    pub level: String,
    /// Unique per request (retries of a batch repeat it); with `stage` the dedup key.
    pub audit_id: String,
    /// `RequestReceived`, `ResponseStarted`, `ResponseComplete` or `Panic`.
    pub stage: String,
    /// The request's URI, path and query as the client sent them.
    pub request_uri: String,
    /// Kubernetes verb (`create`, `patch`, `get`...).
    pub verb: String,
    /// The authenticated user.
    pub user: UserInfo,
    /// The user impersonated through the authenticated one, if any.
    pub impersonated_user: Option<UserInfo>,
    /// Client addresses, the proxies' first (as the API server lists them).
    pub source_ips: Vec<String>,
    /// The client's User-Agent.
    pub user_agent: String,
    /// The object the request was about; `None` for non-resource URLs (`/healthz`).
    pub object_ref: Option<ObjectReference>,
    /// `responseStatus.code`, when the API server gave one.
    pub response_code: Option<i32>,
    /// The request body as the API server logged it (level Request and above): the object for
    /// create and update, the patch itself for patch.
    pub request_object: Option<Value>,
    /// The response body (level RequestResponse): the object, or a `Status`.
    pub response_object: Option<Value>,
    /// Set when an object was in the event but left out for nesting deeper than
    /// [`MAX_OBJECT_DEPTH`]: `"requestObject"` or `"responseObject"`.
    pub objects_left_out: Vec<&'static str>,
    /// `requestReceivedTimestamp`, ms since the epoch.
    pub request_received_timestamp: Option<i64>,
    /// `stageTimestamp`, ms since the epoch.
    pub stage_timestamp: Option<i64>,
}

impl Event {
    /// The audit id.
    pub fn audit_id(&self) -> &str {
        &self.audit_id
    }

    /// The stage.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The object the event is about, or `None` when it is about no single object (non-resource
    /// URLs, collections). When `objectRef` has no name (a create with `generateName`), the name
    /// is taken from the object in the event, as [`crate::change_record`] does, so snapshots are
    /// kept under the same key the record shows.
    pub fn object_key(&self) -> Option<ObjectKey> {
        let r = self.object_ref.as_ref()?;
        if r.resource.is_empty() {
            return None;
        }
        let (mut namespace, mut name) = (r.namespace.clone(), r.name.clone());
        if name.is_empty() {
            let (ns, n) = self.name_from_object()?;
            name = n;
            if namespace.is_empty() {
                namespace = ns;
            }
        }
        Some(ObjectKey {
            api_group: r.api_group.clone(),
            resource: r.resource.clone(),
            namespace,
            name,
        })
    }

    /// Namespace and name from the object in the event, for creates whose `objectRef` has none.
    pub(crate) fn name_from_object(&self) -> Option<(String, String)> {
        if self.verb != "create" {
            return None;
        }
        [&self.response_object, &self.request_object]
            .into_iter()
            .flatten()
            .filter(|o| o.get("kind").and_then(Value::as_str) != Some("Status"))
            .find_map(|o| {
                let meta = o.get("metadata")?;
                let name = meta.get("name")?.as_str()?;
                if name.is_empty() || name.len() > MAX_NAME_BYTES {
                    return None;
                }
                let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
                Some((bounded_name(ns), name.to_string()))
            })
    }
}

/// A namespace from an object, or none when it is longer than any valid one.
fn bounded_name(s: &str) -> String {
    if s.len() > MAX_NAME_BYTES {
        String::new()
    } else {
        s.to_string()
    }
}

/// Parses an EventList body. Errors name the problem precisely, e.g.
/// `items[3].auditID: missing`, `kind: expected "EventList", got "Event"`,
/// `apiVersion: expected "audit.k8s.io/v1", got "audit.k8s.io/v1beta1"`,
/// `not JSON: expected value at line 1 column 1`,
/// `items[7].objectRef.name: longer than 253 bytes`. Display gives that text.
///
/// Any invalid item refuses the whole body; see [`parse_event_batch`] for the alternative.
pub fn parse_event_list(body: &[u8]) -> Result<Vec<Event>, ParseError> {
    let raw = parse_items(body)?;
    let mut events = Vec::with_capacity(raw.len());
    for (i, item) in raw.into_iter().enumerate() {
        events.push(validate(i, item)?);
    }
    Ok(events)
}

/// A body parsed leniently: the valid events and, for each invalid item, why.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    /// The valid events, in body order.
    pub events: Vec<Event>,
    /// One error per invalid item, naming the item (`items[3].auditID: ...`).
    pub rejected: Vec<ParseError>,
}

/// Parses an EventList body like [`parse_event_list`], but an item that parses as JSON of the
/// right shape and fails only validation (a missing or oversized `auditID`, an unknown stage,
/// an oversized `objectRef.name`) is left out and listed instead of refusing the body: those
/// fields can come from any Kubernetes client, so one client must not be able to get other
/// users' events refused. The body itself (not JSON, wrong kind or apiVersion, wrong types)
/// is still refused whole.
pub fn parse_event_batch(body: &[u8]) -> Result<EventBatch, ParseError> {
    let raw = parse_items(body)?;
    let mut batch = EventBatch {
        events: Vec::with_capacity(raw.len()),
        rejected: Vec::new(),
    };
    for (i, item) in raw.into_iter().enumerate() {
        match validate(i, item) {
            Ok(ev) => batch.events.push(ev),
            Err(e) => batch.rejected.push(e),
        }
    }
    Ok(batch)
}

/// First pass: `kind` and `apiVersion` only (the items are skipped without recursion).
#[derive(Deserialize)]
#[serde(expecting = "an audit.k8s.io/v1 EventList object")]
struct Head {
    kind: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(expecting = "an audit.k8s.io/v1 EventList object")]
struct Body {
    items: Option<Items>,
}

/// The items, counted as they are read so that the bound holds before they are all allocated.
struct Items(Vec<RawEvent>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Items, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Items;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of audit events")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(512));
                while let Some(ev) = seq.next_element::<RawEvent>()? {
                    if out.len() == MAX_EVENTS {
                        return Err(de::Error::custom(format!("more than {MAX_EVENTS} events")));
                    }
                    out.push(ev);
                }
                Ok(Items(out))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
#[serde(expecting = "an audit event object")]
struct RawEvent {
    level: Option<String>,
    #[serde(rename = "auditID")]
    audit_id: Option<String>,
    stage: Option<String>,
    #[serde(rename = "requestURI")]
    request_uri: Option<String>,
    verb: Option<String>,
    user: Option<RawUser>,
    #[serde(rename = "impersonatedUser")]
    impersonated_user: Option<RawUser>,
    #[serde(rename = "sourceIPs")]
    source_ips: Option<Vec<String>>,
    #[serde(rename = "userAgent")]
    user_agent: Option<String>,
    #[serde(rename = "objectRef")]
    object_ref: Option<RawObjectRef>,
    #[serde(rename = "responseStatus")]
    response_status: Option<RawStatus>,
    #[serde(rename = "requestObject")]
    request_object: Option<Box<RawValue>>,
    #[serde(rename = "responseObject")]
    response_object: Option<Box<RawValue>>,
    #[serde(rename = "requestReceivedTimestamp")]
    request_received_timestamp: Option<String>,
    #[serde(rename = "stageTimestamp")]
    stage_timestamp: Option<String>,
}

#[derive(Deserialize)]
struct RawUser {
    username: Option<String>,
    uid: Option<String>,
    groups: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawObjectRef {
    resource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    #[serde(rename = "apiGroup")]
    api_group: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    code: Option<i32>,
}

/// Both passes; the items still to validate.
fn parse_items(body: &[u8]) -> Result<Vec<RawEvent>, ParseError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ParseError::TooLarge {
            size: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    // Serde's derived structs also accept arrays (fields by position): refuse anything but an
    // object first, once the body is known to be JSON at all.
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first != Some(b'{') {
        from_slice::<de::IgnoredAny>(body)?;
        let got = match first {
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        };
        return Err(ParseError::invalid(
            "body",
            format!("expected an {API_VERSION} EventList object, got {got}"),
        ));
    }
    let head: Head = from_slice(body)?;
    match head.kind.as_deref() {
        Some("EventList") => {}
        Some(other) => {
            return Err(ParseError::invalid(
                "kind",
                format!("expected \"EventList\", got {}", quote(other)),
            ));
        }
        None => return Err(ParseError::invalid("kind", "missing")),
    }
    match head.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(ParseError::invalid(
                "apiVersion",
                format!("expected \"{API_VERSION}\", got {}", quote(other)),
            ));
        }
        None => {
            return Err(ParseError::invalid(
                "apiVersion",
                format!("expected \"{API_VERSION}\", got nothing"),
            ));
        }
    }
    let parsed: Body = from_slice(body)?;
    match parsed.items {
        Some(items) => Ok(items.0),
        None => Err(ParseError::invalid("items", "missing")),
    }
}

fn from_slice<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ParseError::NotJson(inner.to_string())
        } else if path == "." {
            ParseError::invalid("body", inner.to_string())
        } else {
            ParseError::invalid(path, inner.to_string())
        }
    })?;
    de.end().map_err(|e| ParseError::NotJson(e.to_string()))?;
    Ok(value)
}

/// A hostile value quoted for an error message: escaped, and cut to a readable length.
fn quote(s: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

fn validate(i: usize, raw: RawEvent) -> Result<Event, ParseError> {
    let at = |field: &str| format!("items[{i}].{field}");
    let level = required(raw.level, || at("level"))?;
    if !LEVELS.contains(&level.as_str()) {
        return Err(ParseError::invalid(
            at("level"),
            format!(
                "expected one of {}, got {}",
                LEVELS.join(", "),
                quote(&level)
            ),
        ));
    }
    let audit_id = required(raw.audit_id, || at("auditID"))?;
    if audit_id.is_empty() {
        return Err(ParseError::invalid(at("auditID"), "empty"));
    }
    // The API server takes the ID from the client's `Audit-ID` header as it is: a client must
    // not be able to hide its change by sending a long one, so a long ID is kept as its digest.
    let audit_id = if audit_id.len() > MAX_AUDIT_ID_BYTES {
        format!("sha256:{}", crate::json::sha256_hex(audit_id.as_bytes()))
    } else {
        audit_id
    };
    let stage = required(raw.stage, || at("stage"))?;
    if !STAGES.contains(&stage.as_str()) {
        return Err(ParseError::invalid(
            at("stage"),
            format!(
                "expected one of {}, got {}",
                STAGES.join(", "),
                quote(&stage)
            ),
        ));
    }
    let verb = required(raw.verb, || at("verb"))?;
    if verb.is_empty() {
        return Err(ParseError::invalid(at("verb"), "empty"));
    }
    // `user` is always sent (no omitempty in the Go type); its `username` is omitted when empty,
    // which is how a request that failed authentication is logged: kept as "".
    let user = required(raw.user, || at("user"))?;
    let user = UserInfo {
        username: user.username.unwrap_or_default(),
        uid: user.uid,
        groups: user.groups.unwrap_or_default(),
    };
    let impersonated_user = raw.impersonated_user.map(|u| UserInfo {
        username: u.username.unwrap_or_default(),
        uid: u.uid,
        groups: u.groups.unwrap_or_default(),
    });
    let object_ref = match raw.object_ref {
        None => None,
        Some(r) => {
            let field = |name: &str, v: Option<String>| -> Result<String, ParseError> {
                let v = v.unwrap_or_default();
                if v.len() > MAX_NAME_BYTES {
                    return Err(ParseError::invalid(
                        format!("items[{i}].objectRef.{name}"),
                        format!("longer than {MAX_NAME_BYTES} bytes"),
                    ));
                }
                Ok(v)
            };
            Some(ObjectReference {
                resource: field("resource", r.resource)?,
                namespace: field("namespace", r.namespace)?,
                name: field("name", r.name)?,
                api_group: field("apiGroup", r.api_group)?,
                api_version: field("apiVersion", r.api_version)?,
                subresource: field("subresource", r.subresource)?,
            })
        }
    };
    let request_received_timestamp = raw
        .request_received_timestamp
        .map(|t| {
            timestamp_ms(&t).map_err(|p| ParseError::invalid(at("requestReceivedTimestamp"), p))
        })
        .transpose()?;
    let stage_timestamp = raw
        .stage_timestamp
        .map(|t| timestamp_ms(&t).map_err(|p| ParseError::invalid(at("stageTimestamp"), p)))
        .transpose()?;
    if request_received_timestamp.is_none() && stage_timestamp.is_none() {
        return Err(ParseError::invalid(
            at("stageTimestamp"),
            "missing (and no requestReceivedTimestamp)",
        ));
    }
    let mut objects_left_out = Vec::new();
    let request_object = object(raw.request_object, "requestObject", &mut objects_left_out);
    let response_object = object(raw.response_object, "responseObject", &mut objects_left_out);
    Ok(Event {
        level,
        audit_id,
        stage,
        request_uri: raw.request_uri.unwrap_or_default(),
        verb,
        user,
        impersonated_user,
        source_ips: raw.source_ips.unwrap_or_default(),
        user_agent: raw.user_agent.unwrap_or_default(),
        object_ref,
        response_code: raw.response_status.and_then(|s| s.code),
        request_object,
        response_object,
        objects_left_out,
        request_received_timestamp,
        stage_timestamp,
    })
}

fn required<T>(v: Option<T>, field: impl FnOnce() -> String) -> Result<T, ParseError> {
    v.ok_or_else(|| ParseError::invalid(field(), "missing"))
}

/// Parses an object captured raw; `null` is no object, too deep is left out (and said so).
fn object(
    raw: Option<Box<RawValue>>,
    name: &'static str,
    left_out: &mut Vec<&'static str>,
) -> Option<Value> {
    let raw = raw?;
    // serde_json's recursion limit is MAX_OBJECT_DEPTH; the raw text already is valid JSON, so
    // the only error left is depth.
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Null) => None,
        Ok(v) => Some(v),
        Err(_) => {
            left_out.push(name);
            None
        }
    }
}

/// Kubernetes `MicroTime` / `Time` (RFC3339, optional fractional seconds) as ms since the epoch.
fn timestamp_ms(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("not an RFC3339 time ({e}): {}", quote(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{body, event};
    use serde_json::json;

    fn err(b: &[u8]) -> String {
        match parse_event_list(b) {
            Ok(_) => panic!("accepted: {}", String::from_utf8_lossy(b)),
            Err(e) => e.to_string(),
        }
    }

    fn one_item(mutate: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
        let mut ev = event("create", "networking.k8s.io", "ingresses", "shop", "web");
        if let Value::Object(m) = &mut ev {
            mutate(m);
        }
        body(&[ev])
    }

    #[test]
    fn a_realistic_batch_parses_into_owned_events() {
        let mut ev = event("patch", "networking.k8s.io", "ingresses", "shop", "web");
        ev["impersonatedUser"] = json!({"username": "bob", "groups": ["devs"]});
        ev["requestObject"] = json!({"spec": {"rules": []}});
        let events = parse_event_list(&body(&[ev])).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.audit_id(), "a1b2c3d4-0000-4000-8000-000000000001");
        assert_eq!(e.stage(), "ResponseComplete");
        assert_eq!(e.verb, "patch");
        assert_eq!(e.level, "RequestResponse");
        assert_eq!(e.user.username, "alice@example.com");
        assert_eq!(e.user.uid.as_deref(), Some("u-1"));
        assert_eq!(e.user.groups, ["system:authenticated", "admins"]);
        assert_eq!(e.impersonated_user.as_ref().unwrap().username, "bob");
        assert_eq!(e.source_ips, ["10.0.0.7"]);
        assert_eq!(e.response_code, Some(200));
        let r = e.object_ref.as_ref().unwrap();
        assert_eq!(
            (
                r.api_group.as_str(),
                r.resource.as_str(),
                r.namespace.as_str()
            ),
            ("networking.k8s.io", "ingresses", "shop")
        );
        // 2026-12-01T10:00:00.123456Z, micro-time truncated to ms.
        assert_eq!(e.request_received_timestamp, Some(1_796_119_200_123));
        assert_eq!(e.stage_timestamp, Some(1_796_119_200_456));
        assert_eq!(
            e.object_key(),
            Some(ObjectKey {
                api_group: "networking.k8s.io".into(),
                resource: "ingresses".into(),
                namespace: "shop".into(),
                name: "web".into(),
            })
        );
    }

    #[test]
    fn an_empty_list_is_valid() {
        let b = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[]}"#;
        assert_eq!(parse_event_list(b).unwrap(), vec![]);
    }

    #[test]
    fn bodies_that_are_not_event_lists_are_named() {
        assert_eq!(
            err(b""),
            "not JSON: EOF while parsing a value at line 1 column 0"
        );
        assert_eq!(err(b"nope"), "not JSON: expected ident at line 1 column 2");
        assert_eq!(
            err(b"<html>"),
            "not JSON: expected value at line 1 column 1"
        );
        assert!(err(b"{\"kind\":\"EventList\"} x").starts_with("not JSON: trailing characters"));
        assert_eq!(
            err(b" [\"EventList\", \"audit.k8s.io/v1\", []]"),
            "body: expected an audit.k8s.io/v1 EventList object, got an array"
        );
        assert_eq!(
            err(b"null"),
            "body: expected an audit.k8s.io/v1 EventList object, got null"
        );
        assert_eq!(
            err(b"[1,"),
            "not JSON: EOF while parsing a value at line 1 column 3"
        );
        assert_eq!(err(b"{}"), "kind: missing");
        assert_eq!(
            err(br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1"}"#),
            "kind: expected \"EventList\", got \"Event\""
        );
        assert_eq!(
            err(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":[]}"#),
            "apiVersion: expected \"audit.k8s.io/v1\", got \"audit.k8s.io/v1beta1\""
        );
        assert_eq!(
            err(br#"{"kind":"EventList","items":[]}"#),
            "apiVersion: expected \"audit.k8s.io/v1\", got nothing"
        );
        assert_eq!(
            err(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1"}"#),
            "items: missing"
        );
        assert!(
            err(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}"#)
                .starts_with("items: invalid type: map, expected an array of audit events")
        );
        assert!(err(br#"{"kind":7}"#).starts_with("kind: invalid type: integer `7`"));
    }

    #[test]
    fn a_hostile_kind_is_quoted_escaped_and_cut() {
        let long = format!(
            r#"{{"kind":"\u001b[31m{}","apiVersion":"audit.k8s.io/v1"}}"#,
            "x".repeat(500)
        );
        let e = err(long.as_bytes());
        assert!(
            e.starts_with("kind: expected \"EventList\", got \"\\u{1b}[31mxxx"),
            "{e}"
        );
        assert!(e.len() < 120, "{e}");
    }

    #[test]
    fn each_missing_or_invalid_item_field_is_named() {
        type Mutation = Box<dyn Fn(&mut serde_json::Map<String, Value>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "items[0].auditID: missing",
                Box::new(|m| drop(m.remove("auditID"))),
            ),
            (
                "items[0].auditID: empty",
                Box::new(|m| drop(m.insert("auditID".into(), json!("")))),
            ),
            (
                "items[0].stage: missing",
                Box::new(|m| drop(m.remove("stage"))),
            ),
            (
                "items[0].stage: expected one of RequestReceived, ResponseStarted, ResponseComplete, Panic, got \"Done\"",
                Box::new(|m| drop(m.insert("stage".into(), json!("Done")))),
            ),
            (
                "items[0].level: missing",
                Box::new(|m| drop(m.remove("level"))),
            ),
            (
                "items[0].level: expected one of None, Metadata, Request, RequestResponse, got \"All\"",
                Box::new(|m| drop(m.insert("level".into(), json!("All")))),
            ),
            (
                "items[0].verb: missing",
                Box::new(|m| drop(m.remove("verb"))),
            ),
            (
                "items[0].user: missing",
                Box::new(|m| drop(m.remove("user"))),
            ),
            (
                "items[0].stageTimestamp: missing (and no requestReceivedTimestamp)",
                Box::new(|m| {
                    m.remove("stageTimestamp");
                    m.remove("requestReceivedTimestamp");
                }),
            ),
            (
                "items[0].objectRef.name: longer than 253 bytes",
                Box::new(|m| {
                    m.insert(
                        "objectRef".into(),
                        json!({"resource": "ingresses", "name": "n".repeat(254)}),
                    );
                }),
            ),
        ];
        for (want, mutate) in cases {
            assert_eq!(err(&one_item(mutate)), want);
        }
        let e = err(&one_item(|m| {
            drop(m.insert("stageTimestamp".into(), json!("yesterday")))
        }));
        assert!(
            e.starts_with("items[0].stageTimestamp: not an RFC3339 time"),
            "{e}"
        );
        let e = err(&one_item(|m| drop(m.insert("auditID".into(), json!(5)))));
        assert!(
            e.starts_with("items[0].auditID: invalid type: integer `5`, expected a string"),
            "{e}"
        );
        let e = err(&one_item(|m| {
            drop(m.insert("user".into(), json!({"username": ["x"]})))
        }));
        assert!(
            e.starts_with("items[0].user.username: invalid type: sequence"),
            "{e}"
        );
        let e = err(&one_item(|m| {
            m.insert("responseStatus".into(), json!({"code": 5_000_000_000_i64}));
        }));
        assert!(
            e.starts_with("items[0].responseStatus.code: invalid value"),
            "{e}"
        );
    }

    #[test]
    fn the_failing_item_is_named_by_its_index() {
        let good = event("create", "networking.k8s.io", "ingresses", "shop", "web");
        let mut bad = good.clone();
        bad.as_object_mut().unwrap().remove("auditID");
        let b = body(&[good.clone(), good.clone(), good.clone(), bad]);
        assert_eq!(err(&b), "items[3].auditID: missing");
    }

    #[test]
    fn the_lenient_parser_keeps_valid_items_and_lists_the_others() {
        let good = event("create", "networking.k8s.io", "ingresses", "shop", "web");
        let mut bad = good.clone();
        bad["stage"] = json!("Sideways");
        // A long ID comes from the client's Audit-ID header: kept, as its digest, so a client
        // cannot hide its change behind one.
        let mut long = good.clone();
        long["auditID"] = json!("x".repeat(5000));
        let batch = parse_event_batch(&body(&[good.clone(), bad, good, long])).unwrap();
        assert_eq!(batch.events.len(), 3);
        assert_eq!(batch.rejected.len(), 1, "{:?}", batch.rejected);
        assert_eq!(batch.rejected[0].field(), Some("items[1].stage"));
        let digest = batch.events[2].audit_id();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );
        assert!(parse_event_batch(b"{").is_err());
    }

    #[test]
    fn a_failed_authentication_event_without_username_parses() {
        let b = one_item(|m| drop(m.insert("user".into(), json!({}))));
        let events = parse_event_list(&b).unwrap();
        assert_eq!(events[0].user, UserInfo::default());
    }

    #[test]
    fn unknown_fields_and_nulls_are_accepted() {
        let b = one_item(|m| {
            m.insert("somethingNew".into(), json!({"a": [1, 2]}));
            m.insert("impersonatedUser".into(), Value::Null);
            m.insert("responseObject".into(), Value::Null);
            m.insert("objectRef".into(), Value::Null);
        });
        let e = &parse_event_list(&b).unwrap()[0];
        assert!(e.impersonated_user.is_none());
        assert!(e.response_object.is_none());
        assert!(e.object_ref.is_none());
        assert_eq!(e.object_key(), None);
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let b = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a","auditID":"b"}]}"#;
        assert!(
            err(b).starts_with("items[0]: duplicate field `auditID`"),
            "{}",
            err(b)
        );
    }

    #[test]
    fn an_object_nested_too_deep_costs_its_event_the_object_only() {
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        let ev = event("patch", "networking.k8s.io", "ingresses", "shop", "web").to_string();
        let ev = ev.replacen(
            "\"requestURI\"",
            &format!("\"requestObject\":{deep},\"requestURI\""),
            1,
        );
        let b = format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{ev}]}}"#);
        let events = parse_event_list(b.as_bytes()).unwrap();
        assert_eq!(events[0].request_object, None);
        assert_eq!(events[0].objects_left_out, ["requestObject"]);
    }

    #[test]
    fn too_many_items_or_bytes_are_refused() {
        let item = r#"{}"#;
        let items = vec![item; MAX_EVENTS + 1].join(",");
        let b =
            format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{items}]}}"#);
        let e = err(b.as_bytes());
        assert!(e.starts_with("items: more than 10000 events"), "{e}");
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            err(&big),
            format!(
                "body: {} bytes, more than the {MAX_BODY_BYTES} accepted",
                MAX_BODY_BYTES + 1
            )
        );
    }

    #[test]
    fn generate_name_creates_take_the_name_from_the_object() {
        let b = one_item(|m| {
            m.insert(
                "objectRef".into(),
                json!({"resource": "ingresses", "namespace": "shop", "apiGroup": "networking.k8s.io", "apiVersion": "v1"}),
            );
            m.insert(
                "responseObject".into(),
                json!({"kind": "Ingress", "metadata": {"name": "web-x7k2p", "namespace": "shop"}}),
            );
        });
        let e = &parse_event_list(&b).unwrap()[0];
        assert_eq!(e.object_key().unwrap().name, "web-x7k2p");
    }
}
