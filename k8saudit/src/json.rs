//! Reading untrusted JSON objects without panicking, and writing JSON canonically (sorted keys,
//! compact) so that equal rules compare equal whatever order a client wrote them in.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Most entries of any one list a summary reads from an object. Summaries show at most
/// [`crate::bounds::MAX_LIST`] entries anyway; the cap keeps every pairwise check (TLS coverage
/// of hosts, rule diffs) bounded whatever an object holds.
pub(crate) const MAX_SCAN: usize = 1024;

/// Deepest nesting [`canonical`] writes; deeper values are written as `null`. Objects from the
/// parser are at most 128 deep; this guards values built elsewhere.
const MAX_DEPTH: usize = 256;

/// The value at `path` (object keys only).
pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// The string at `path`, when it is a non-empty string.
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The elements of the array at `path` (none when it is not an array), at most [`MAX_SCAN`].
pub(crate) fn list<'a>(v: &'a Value, path: &[&str]) -> impl Iterator<Item = &'a Value> + 'a {
    at(v, path)
        .and_then(Value::as_array)
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .take(MAX_SCAN)
}

/// The non-empty strings of the array at `path`.
pub(crate) fn strings<'a>(v: &'a Value, path: &[&str]) -> impl Iterator<Item = &'a str> + 'a {
    list(v, path)
        .filter_map(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A scalar as text: strings as they are, numbers and booleans written out.
pub(crate) fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The scalar at `path` as text.
pub(crate) fn scalar_at(v: &Value, path: &[&str]) -> Option<String> {
    at(v, path).and_then(scalar).filter(|s| !s.is_empty())
}

/// `k=v,k2=v2` of a string map (a label selector), sorted by key.
pub(crate) fn labels(v: Option<&Value>) -> Option<String> {
    let map = v?.as_object()?;
    let mut pairs: Vec<String> = map
        .iter()
        .take(MAX_SCAN)
        .map(|(k, v)| format!("{k}={}", scalar(v).unwrap_or_default()))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    pairs.sort();
    Some(pairs.join(","))
}

/// Compact JSON with object keys sorted, whatever serde_json's map order is.
pub(crate) fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out, 0);
    out
}

fn write_canonical(v: &Value, out: &mut String, depth: usize) {
    if depth > MAX_DEPTH {
        out.push_str("null");
        return;
    }
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = m.get(k) {
                    write_canonical(v, out, depth + 1);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out, depth + 1);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `sha256:<hex>` of a value: of a string's bytes, else of its canonical JSON. Stands in for a
/// value that must not be kept but whose changes should still show.
pub(crate) fn digest_of(v: &Value) -> Value {
    let hex = match v {
        Value::String(s) => sha256_hex(s.as_bytes()),
        other => sha256_hex(canonical(other).as_bytes()),
    };
    Value::String(format!("sha256:{hex}"))
}

/// Whether `s` is a digest as [`digest_of`] writes it.
pub(crate) fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every scalar leaf under `v` replaced by its digest, the structure kept. Leaves that already
/// are digests stay as they are, so a state built from a kept snapshot and a patch is not
/// digested twice (a value that happens to look like a digest is at worst kept as itself: a
/// digest reveals no more).
pub(crate) fn digest_leaves(v: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        *v = Value::Null;
        return;
    }
    match v {
        Value::Object(m) => m.values_mut().for_each(|v| digest_leaves(v, depth + 1)),
        Value::Array(a) => a.iter_mut().for_each(|v| digest_leaves(v, depth + 1)),
        Value::Null => {}
        Value::String(s) if is_digest(s) => {}
        leaf => *leaf = digest_of(leaf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_keys_at_every_level() {
        let a = json!({"to": [{"b": 1, "a": "x"}], "from": {"z": null, "y": true}});
        assert_eq!(
            canonical(&a),
            r#"{"from":{"y":true,"z":null},"to":[{"a":"x","b":1}]}"#
        );
        assert_eq!(canonical(&json!({})), "{}");
        assert_eq!(canonical(&json!("a\"b")), r#""a\"b""#);
    }

    #[test]
    fn accessors_tolerate_any_shape() {
        let v = json!({"spec": {"rules": "not a list", "host": 5}});
        assert_eq!(list(&v, &["spec", "rules"]).count(), 0);
        assert_eq!(str_at(&v, &["spec", "host"]), None);
        assert_eq!(scalar_at(&v, &["spec", "host"]).as_deref(), Some("5"));
        assert_eq!(at(&json!(3), &["a", "b"]), None);
    }

    #[test]
    fn digests_hide_values_but_keep_structure() {
        let mut v = json!({"token": "hunter2", "n": [1, null]});
        digest_leaves(&mut v, 0);
        assert_eq!(v["n"][1], Value::Null);
        let t = v["token"].as_str().unwrap();
        assert!(t.starts_with("sha256:") && !t.contains("hunter2"));
        assert_eq!(sha256_hex(b"").len(), 64);
    }
}
