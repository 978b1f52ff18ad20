//! Objects made safe to describe and to keep as snapshots.
//!
//! - Secrets keep their identity (name, namespace, uid, labels, owners, timestamps), `type`,
//!   `immutable` and the certificate summary of `tls.crt`; never `data` or `stringData`, not even
//!   as digests (a digest of a short password can be searched for). Their annotation values are
//!   kept as digests only, since tools store whole objects in annotations.
//! - ConfigMaps keep their keys with a SHA-256 digest of each value (a change shows, the value
//!   does not); annotation values as digests too.
//! - Every object loses the annotations that hold a whole serialized object
//!   (`kubectl.kubernetes.io/last-applied-configuration`, `kapp.k14s.io/original`: with a Secret's
//!   data in them when the object is a Secret), other annotation values longer than 4 KiB (kept
//!   as digests: long values are serialized objects too), `status`, `managedFields` and the
//!   fields the server bumps on every write.
//! - Plugin configuration, which commonly carries credentials (Warden's own filter config holds a
//!   token), is kept as digests: WasmPlugin `spec.pluginConfig`, EnvoyExtensionPolicy
//!   `spec.wasm[].config`, and in EnvoyFilter patches any `configuration`, `inline_code` or
//!   `inlineCode`.
//!
//! Snapshots are then bounded to [`MAX_SNAPSHOT_BYTES`]: long strings become digests, then long
//! arrays are cut, and as a last resort only the object's identity is kept. A cut snapshot can
//! make the next change show hosts or rules as added that were there before; it never makes one
//! show protection as removed that was not.

use crate::certificate;
use crate::json::{at, digest_leaves, digest_of, is_digest};
use crate::kinds::Kind;
use crate::paths::FULL_OBJECT_ANNOTATIONS;
use serde_json::{Map, Value, json};

/// Largest snapshot kept, serialized, in bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024;

/// Deepest nesting walked when cutting a state; deeper values are dropped. Objects from the
/// parser are at most [`crate::MAX_OBJECT_DEPTH`] deep, so this only guards values built
/// elsewhere.
const MAX_DEPTH: usize = 256;

/// Longest annotation value kept as it is on objects other than Secrets and ConfigMaps.
const MAX_PLAIN_ANNOTATION: usize = 4096;

/// Metadata fields a Secret or ConfigMap keeps.
const IDENTITY: [&str; 8] = [
    "name",
    "namespace",
    "uid",
    "labels",
    "creationTimestamp",
    "deletionTimestamp",
    "ownerReferences",
    "finalizers",
];

/// The state of `obj` that may be described and kept.
pub(crate) fn sanitize(kind: Kind, obj: &Value) -> Value {
    let declared = obj.get("kind").and_then(Value::as_str);
    if kind == Kind::Secret || declared == Some("Secret") {
        secret(obj)
    } else if kind == Kind::ConfigMap || declared == Some("ConfigMap") {
        config_map(obj)
    } else {
        generic(kind, obj)
    }
}

fn copy(out: &mut Map<String, Value>, obj: &Value, fields: &[&str]) {
    for f in fields {
        if let Some(v) = obj.get(*f) {
            out.insert((*f).to_string(), v.clone());
        }
    }
}

fn metadata(obj: &Value, identity_only: bool) -> Value {
    let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, v) in meta {
        match k.as_str() {
            "managedFields" | "resourceVersion" | "generation" | "selfLink" => {}
            "annotations" => {
                let mut kept = Map::new();
                for (ak, av) in v.as_object().into_iter().flatten() {
                    if FULL_OBJECT_ANNOTATIONS.contains(&ak.as_str()) {
                        continue;
                    }
                    let plain = av
                        .as_str()
                        .is_some_and(|s| s.len() <= MAX_PLAIN_ANNOTATION || is_digest(s));
                    let keep_value = plain && !identity_only;
                    kept.insert(
                        ak.clone(),
                        if keep_value {
                            av.clone()
                        } else {
                            digest_of(av)
                        },
                    );
                }
                out.insert("annotations".into(), Value::Object(kept));
            }
            field if identity_only && !IDENTITY.contains(&field) => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn secret(obj: &Value) -> Value {
    let mut out = Map::new();
    copy(&mut out, obj, &["apiVersion", "kind"]);
    out.insert("metadata".into(), metadata(obj, true));
    if let Some(t) = obj.get("type").filter(|t| t.is_string()) {
        out.insert("type".into(), t.clone());
    }
    if let Some(b) = obj.get("immutable").filter(|b| b.is_boolean()) {
        out.insert("immutable".into(), b.clone());
    }
    let cert = at(obj, &["data", "tls.crt"])
        .and_then(Value::as_str)
        .and_then(certificate::from_base64_pem)
        .or_else(|| {
            at(obj, &["stringData", "tls.crt"])
                .and_then(Value::as_str)
                .and_then(|pem| certificate::from_pem(pem.as_bytes()))
        });
    if let Some(c) = cert.and_then(|c| serde_json::to_value(c).ok()) {
        out.insert("certificate".into(), c);
    }
    Value::Object(out)
}

fn config_map(obj: &Value) -> Value {
    let mut out = Map::new();
    copy(&mut out, obj, &["apiVersion", "kind"]);
    out.insert("metadata".into(), metadata(obj, true));
    for field in ["data", "binaryData"] {
        if let Some(m) = obj.get(field).and_then(Value::as_object) {
            let digests: Map<String, Value> =
                m.iter().map(|(k, v)| (k.clone(), digest_of(v))).collect();
            out.insert(field.into(), Value::Object(digests));
        }
    }
    if let Some(b) = obj.get("immutable").filter(|b| b.is_boolean()) {
        out.insert("immutable".into(), b.clone());
    }
    Value::Object(out)
}

fn generic(kind: Kind, obj: &Value) -> Value {
    let Some(m) = obj.as_object() else {
        return Value::Null;
    };
    let mut out = Map::new();
    for (k, v) in m {
        match k.as_str() {
            "status" => {}
            "metadata" => {
                out.insert(k.clone(), metadata(obj, false));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let mut v = Value::Object(out);
    match kind {
        Kind::WasmPlugin => {
            if let Some(c) = v.get_mut("spec").and_then(|s| s.get_mut("pluginConfig")) {
                digest_leaves(c, 0);
            }
        }
        Kind::EnvoyExtensionPolicy => {
            if let Some(Value::Array(wasm)) = v.get_mut("spec").and_then(|s| s.get_mut("wasm")) {
                for w in wasm {
                    if let Some(c) = w.get_mut("config") {
                        digest_leaves(c, 0);
                    }
                }
            }
        }
        Kind::EnvoyFilter => {
            if let Some(spec) = v.get_mut("spec") {
                digest_named(spec, &["configuration", "inline_code", "inlineCode"], 0);
            }
        }
        _ => {}
    }
    v
}

/// Digests the values of the fields named `names` anywhere under `v`.
fn digest_named(v: &mut Value, names: &[&str], depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if names.contains(&k.as_str()) {
                    digest_leaves(v, 0);
                } else {
                    digest_named(v, names, depth + 1);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| digest_named(v, names, depth + 1)),
        _ => {}
    }
}

fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// `state` cut to [`MAX_SNAPSHOT_BYTES`] (see the module doc for how).
pub(crate) fn bounded(mut state: Value) -> Value {
    if size(&state) <= MAX_SNAPSHOT_BYTES {
        return state;
    }
    digest_long_strings(&mut state, 256, 0);
    for cap in [64, 16, 4, 1] {
        if size(&state) <= MAX_SNAPSHOT_BYTES {
            return state;
        }
        cap_arrays(&mut state, cap, 0);
    }
    if size(&state) <= MAX_SNAPSHOT_BYTES {
        return state;
    }
    let ident = |field: &str| {
        at(&state, &["metadata", field])
            .filter(|v| v.is_string())
            .cloned()
    };
    let mut meta = Map::new();
    for f in ["name", "namespace"] {
        if let Some(v) = ident(f) {
            meta.insert(f.into(), v);
        }
    }
    let mut out = Map::new();
    for f in ["apiVersion", "kind"] {
        if let Some(v) = state.get(f).filter(|v| v.is_string()) {
            out.insert(f.into(), v.clone());
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    let reduced = Value::Object(out);
    if size(&reduced) <= MAX_SNAPSHOT_BYTES {
        reduced
    } else {
        json!({})
    }
}

fn digest_long_strings(v: &mut Value, max: usize, depth: usize) {
    if depth > MAX_DEPTH {
        *v = Value::Null;
        return;
    }
    match v {
        Value::String(s) if s.len() > max => *v = digest_of(v),
        Value::Object(m) => {
            // Keys are bounded too: a map with one huge key is as large as a huge value.
            let long: Vec<String> = m.keys().filter(|k| k.len() > max).cloned().collect();
            for k in long {
                if let Some(val) = m.remove(&k) {
                    let key = crate::json::sha256_hex(k.as_bytes());
                    m.insert(format!("sha256:{key}"), val);
                }
            }
            m.values_mut()
                .for_each(|v| digest_long_strings(v, max, depth + 1));
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|v| digest_long_strings(v, max, depth + 1)),
        _ => {}
    }
}

fn cap_arrays(v: &mut Value, cap: usize, depth: usize) {
    if depth > MAX_DEPTH {
        *v = Value::Null;
        return;
    }
    match v {
        Value::Array(a) => {
            a.truncate(cap);
            a.iter_mut().for_each(|v| cap_arrays(v, cap, depth + 1));
        }
        Value::Object(m) => {
            if m.len() > cap * 16 {
                let drop: Vec<String> = m.keys().skip(cap * 16).cloned().collect();
                for k in drop {
                    m.remove(&k);
                }
            }
            m.values_mut().for_each(|v| cap_arrays(v, cap, depth + 1));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_states_are_bounded() {
        let hosts: Vec<String> = (0..20_000).map(|i| format!("h{i}.example.com")).collect();
        let state = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"rules": hosts.iter().map(|h| json!({"host": h})).collect::<Vec<_>>()}
        });
        let b = bounded(state);
        assert!(size(&b) <= MAX_SNAPSHOT_BYTES);
        assert_eq!(b["spec"]["rules"][0]["host"], "h0.example.com");
        assert_eq!(b["metadata"]["name"], "web");

        let wide: Map<String, Value> = (0..100_000).map(|i| (format!("k{i}"), json!(i))).collect();
        let b = bounded(json!({"kind": "Thing", "metadata": {"name": "x"}, "spec": wide}));
        assert!(size(&b) <= MAX_SNAPSHOT_BYTES);

        let long = "x".repeat(200_000);
        let b = bounded(json!({"metadata": {"name": long}}));
        assert!(size(&b) <= MAX_SNAPSHOT_BYTES);
    }

    #[test]
    fn config_maps_keep_keys_and_digests_only() {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "warden-rules", "namespace": "warden",
                          "annotations": {"note": "token=abc"}},
            "data": {"rules.toml": "secret-ish value"}
        });
        let s = sanitize(Kind::ConfigMap, &cm).to_string();
        assert!(s.contains("rules.toml"));
        assert!(!s.contains("secret-ish value"));
        assert!(!s.contains("token=abc"));
    }

    #[test]
    fn plugin_configuration_is_kept_as_digests() {
        let wp = json!({"metadata": {"name": "warden"},
            "spec": {"url": "oci://ghcr.io/warden/filter:1", "pluginConfig": {"token": "t0ps3cret", "n": [1]}}});
        let s = sanitize(Kind::WasmPlugin, &wp);
        assert!(!s.to_string().contains("t0ps3cret"));
        assert_eq!(s["spec"]["url"], "oci://ghcr.io/warden/filter:1");
        let ef = json!({"spec": {"configPatches": [{"patch": {"value": {"typed_config": {"config": {
            "root_id": "warden", "configuration": {"value": "{\"token\":\"t0ps3cret\"}"}}}}}}]}});
        let s = sanitize(Kind::EnvoyFilter, &ef).to_string();
        assert!(!s.contains("t0ps3cret") && s.contains("root_id"));
    }
}
