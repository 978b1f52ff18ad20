//! Field paths (`spec.rules[0].host`): the leaves a patch touches, the leaves two states differ
//! in, and applying a patch to a known state when the event shows only the patch.

use crate::bounds::MAX_LIST;
use crate::json::MAX_SCAN;
use serde_json::{Map, Value};

/// Annotations that hold a whole serialized object (a Secret's data included): never copied,
/// and not worth a changed-field line either (they change on every apply).
pub(crate) const FULL_OBJECT_ANNOTATIONS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kapp.k14s.io/original",
];

/// Deepest path followed; deeper changes are reported at this depth.
const MAX_DEPTH: usize = 64;

/// Most nodes a JSON patch may copy; past it the patch is not applied (a sequence of `copy`
/// operations doubles a document each time).
const MAX_COPIED_NODES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
    /// A JSON pointer's `-` (append to an array).
    Append,
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if plain_key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Key(k) => {
                out.push('[');
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(']');
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            Seg::Append => out.push_str("[-]"),
        }
    }
    out
}

fn plain_key(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Paths that are bookkeeping, not changes: status (controllers' writes), server-set metadata,
/// the full-object annotations, identity fields a patch repeats, strategic-merge directives.
fn noise(path: &[Seg]) -> bool {
    let key = |i: usize| match path.get(i) {
        Some(Seg::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    if path
        .iter()
        .any(|s| matches!(s, Seg::Key(k) if k.starts_with('$')))
    {
        return true;
    }
    match (key(0), key(1)) {
        (Some("status" | "apiVersion" | "kind"), _) => true,
        (
            Some("metadata"),
            Some(
                "managedFields" | "resourceVersion" | "generation" | "uid" | "creationTimestamp"
                | "selfLink" | "name" | "namespace",
            ),
        ) => true,
        (Some("metadata"), Some("annotations")) => {
            key(2).is_some_and(|a| FULL_OBJECT_ANNOTATIONS.contains(&a))
        }
        _ => false,
    }
}

/// Collects rendered paths up to the list bound, counting the rest.
#[derive(Default)]
struct Paths {
    out: Vec<String>,
    total: usize,
}

impl Paths {
    fn push(&mut self, path: &[Seg]) {
        if noise(path) {
            return;
        }
        self.total += 1;
        if self.out.len() < MAX_LIST {
            self.out.push(render(path));
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.total > MAX_LIST {
            self.out.truncate(MAX_LIST - 1);
            self.out
                .push(format!("… {} more", self.total - (MAX_LIST - 1)));
        }
        self.out
    }
}

/// The leaves a patch touches: for a JSON patch (an array of operations) each operation's path
/// (and `from`); for a merge or strategic-merge patch (an object) each leaf, `null` (delete)
/// included.
pub(crate) fn patch_paths(patch: &Value) -> Vec<String> {
    let mut paths = Paths::default();
    match patch {
        Value::Array(ops) => {
            for op in ops.iter().take(MAX_SCAN) {
                for field in ["from", "path"] {
                    if let Some(p) = op.get(field).and_then(Value::as_str).and_then(pointer) {
                        paths.push(&p);
                    }
                }
            }
        }
        Value::Object(_) => leaves(patch, &mut Vec::new(), &mut paths),
        _ => {}
    }
    paths.finish()
}

fn leaves(v: &Value, path: &mut Vec<Seg>, out: &mut Paths) {
    if path.len() >= MAX_DEPTH {
        out.push(path);
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                path.push(Seg::Key(k.clone()));
                leaves(v, path, out);
                path.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate().take(MAX_SCAN) {
                path.push(Seg::Index(i));
                leaves(v, path, out);
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
}

/// The leaves in which `before` and `after` differ (present in one only, or different).
pub(crate) fn diff_paths(before: &Value, after: &Value) -> Vec<String> {
    let mut paths = Paths::default();
    diff(before, after, &mut Vec::new(), &mut paths);
    paths.finish()
}

fn diff(a: &Value, b: &Value, path: &mut Vec<Seg>, out: &mut Paths) {
    if a == b {
        return;
    }
    if path.len() >= MAX_DEPTH {
        out.push(path);
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x
                .keys()
                .chain(y.keys().filter(|k| !x.contains_key(*k)))
                .collect();
            keys.sort();
            for k in keys {
                path.push(Seg::Key(k.clone()));
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(p, q, path, out),
                    (Some(v), None) | (None, Some(v)) => leaves_or_self(v, path, out),
                    (None, None) => {}
                }
                path.pop();
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()).min(MAX_SCAN) {
                path.push(Seg::Index(i));
                match (x.get(i), y.get(i)) {
                    (Some(p), Some(q)) => diff(p, q, path, out),
                    (Some(v), None) | (None, Some(v)) => leaves_or_self(v, path, out),
                    (None, None) => {}
                }
                path.pop();
            }
        }
        _ => out.push(path),
    }
}

fn leaves_or_self(v: &Value, path: &mut Vec<Seg>, out: &mut Paths) {
    let before = out.total;
    leaves(v, path, out);
    if out.total == before && !noise(path) {
        out.push(path);
    }
}

/// A JSON pointer (RFC 6901) as segments; numbers are indices.
fn pointer(p: &str) -> Option<Vec<Seg>> {
    if p.is_empty() {
        return Some(Vec::new());
    }
    let rest = p.strip_prefix('/')?;
    Some(
        rest.split('/')
            .take(MAX_DEPTH)
            .map(|s| {
                let s = s.replace("~1", "/").replace("~0", "~");
                if s == "-" {
                    Seg::Append
                } else if let Ok(i) = s.parse::<usize>() {
                    Seg::Index(i)
                } else {
                    Seg::Key(s)
                }
            })
            .collect(),
    )
}

/// `state` with `patch` applied, when the patch's kind can be told from its shape and applied
/// faithfully enough: a JSON patch (array) exactly; a JSON merge patch (object) exactly; a
/// strategic merge patch as a merge patch, which is exact for maps and for the atomic lists of
/// the kinds kept here (Ingress rules and tls, Secret and ConfigMap data), and refused when it
/// carries `$patch`, `$retainKeys` or `$deleteFromPrimitiveList` directives. A server-side apply
/// patch is merged the same way, which misses fields its manager dropped: an approximation.
pub(crate) fn apply_patch(state: &Value, patch: &Value) -> Option<Value> {
    let mut doc = state.clone();
    match patch {
        Value::Object(_) => {
            merge(&mut doc, patch, 0)?;
            Some(doc)
        }
        Value::Array(ops) => {
            if ops.len() > MAX_SCAN {
                return None;
            }
            let mut budget = MAX_COPIED_NODES;
            for op in ops {
                apply_op(&mut doc, op, &mut budget)?;
            }
            Some(doc)
        }
        _ => None,
    }
}

fn merge(target: &mut Value, patch: &Value, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Some(());
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return None;
    };
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$deleteFromPrimitiveList/") {
            return None;
        }
        if k.starts_with('$') {
            // `$setElementOrder/...`: ordering only.
            continue;
        }
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v, depth + 1)?;
        }
    }
    Some(())
}

fn apply_op(doc: &mut Value, op: &Value, budget: &mut usize) -> Option<()> {
    let path = pointer(op.get("path")?.as_str()?)?;
    let from = || op.get("from").and_then(Value::as_str).and_then(pointer);
    match op.get("op")?.as_str()? {
        "add" => add(doc, &path, op.get("value")?.clone()),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            remove(doc, &path)?;
            add(doc, &path, op.get("value")?.clone())
        }
        "move" => {
            let v = remove(doc, &from()?)?;
            add(doc, &path, v)
        }
        "copy" => {
            let v = get(doc, &from()?)?.clone();
            *budget = budget.checked_sub(nodes(&v, *budget + 1))?;
            add(doc, &path, v)
        }
        "test" => (get(doc, &path)? == op.get("value")?).then_some(()),
        _ => None,
    }
}

/// Nodes in `v`, counting no further than `limit`.
fn nodes(v: &Value, limit: usize) -> usize {
    let mut n = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        n += 1;
        if n >= limit {
            return n;
        }
        match v {
            Value::Object(m) => stack.extend(m.values()),
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    n
}

fn get<'a>(doc: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, seg| match (v, seg) {
        (Value::Object(m), Seg::Key(k)) => m.get(k),
        (Value::Object(m), Seg::Index(i)) => m.get(&i.to_string()),
        (Value::Array(a), Seg::Index(i)) => a.get(*i),
        _ => None,
    })
}

fn get_mut<'a>(doc: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |v, seg| match (v, seg) {
        (Value::Object(m), Seg::Key(k)) => m.get_mut(k),
        (Value::Object(m), Seg::Index(i)) => m.get_mut(&i.to_string()),
        (Value::Array(a), Seg::Index(i)) => a.get_mut(*i),
        _ => None,
    })
}

fn add(doc: &mut Value, path: &[Seg], v: Value) -> Option<()> {
    let Some((last, parent)) = path.split_last() else {
        *doc = v;
        return Some(());
    };
    match (get_mut(doc, parent)?, last) {
        (Value::Object(m), Seg::Key(k)) => {
            m.insert(k.clone(), v);
        }
        (Value::Object(m), Seg::Index(i)) => {
            m.insert(i.to_string(), v);
        }
        (Value::Array(a), Seg::Append) => a.push(v),
        (Value::Array(a), Seg::Index(i)) if *i <= a.len() => a.insert(*i, v),
        _ => return None,
    }
    Some(())
}

fn remove(doc: &mut Value, path: &[Seg]) -> Option<Value> {
    let (last, parent) = path.split_last()?;
    match (get_mut(doc, parent)?, last) {
        (Value::Object(m), Seg::Key(k)) => m.remove(k),
        (Value::Object(m), Seg::Index(i)) => m.remove(&i.to_string()),
        (Value::Array(a), Seg::Index(i)) if *i < a.len() => Some(a.remove(*i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_leaves_are_rendered_as_paths() {
        let patch = json!({
            "metadata": {"annotations": {
                "nginx.ingress.kubernetes.io/auth-url": null,
                "kubectl.kubernetes.io/last-applied-configuration": "{...}"
            }, "resourceVersion": "7"},
            "spec": {"rules": [{"host": "a.example.com"}], "ingressClassName": "nginx"},
            "$setElementOrder/spec.rules": [{"host": "a"}]
        });
        assert_eq!(
            patch_paths(&patch),
            [
                r#"metadata.annotations["nginx.ingress.kubernetes.io/auth-url"]"#,
                "spec.ingressClassName",
                "spec.rules[0].host",
            ]
        );
    }

    #[test]
    fn json_patch_paths_come_from_the_operations() {
        let patch = json!([
            {"op": "replace", "path": "/spec/rules/0/host", "value": "b.example.com"},
            {"op": "remove", "path": "/metadata/annotations/nginx.ingress.kubernetes.io~1auth-url"},
            {"op": "add", "path": "/spec/tls/-", "value": {}}
        ]);
        assert_eq!(
            patch_paths(&patch),
            [
                "spec.rules[0].host",
                r#"metadata.annotations["nginx.ingress.kubernetes.io/auth-url"]"#,
                "spec.tls[-]",
            ]
        );
    }

    #[test]
    fn diffs_name_changed_added_and_removed_leaves() {
        let a =
            json!({"spec": {"rules": [{"host": "a"}, {"host": "b"}], "x": 1}, "status": {"a": 1}});
        let b = json!({"spec": {"rules": [{"host": "a2"}], "y": {"z": true}}, "status": {"a": 2}});
        assert_eq!(
            diff_paths(&a, &b),
            [
                "spec.rules[0].host",
                "spec.rules[1].host",
                "spec.x",
                "spec.y.z"
            ]
        );
        assert_eq!(diff_paths(&a, &a), Vec::<String>::new());
    }

    #[test]
    fn many_changed_paths_are_bounded() {
        let a = json!({});
        let b = json!({"data": (0..500).map(|i| (format!("k{i}"), json!(i))).collect::<Map<String, Value>>()});
        let paths = diff_paths(&a, &b);
        assert_eq!(paths.len(), MAX_LIST);
        assert_eq!(paths[MAX_LIST - 1], "… 437 more");
    }

    #[test]
    fn merge_patches_apply_with_null_as_delete() {
        let state =
            json!({"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"rules": [1, 2]}});
        let patch =
            json!({"metadata": {"annotations": {"a": null, "c": "3"}}, "spec": {"rules": [3]}});
        assert_eq!(
            apply_patch(&state, &patch),
            Some(
                json!({"metadata": {"annotations": {"b": "2", "c": "3"}}, "spec": {"rules": [3]}})
            )
        );
        assert_eq!(
            apply_patch(&state, &json!({"spec": {"$patch": "replace"}})),
            None
        );
    }

    #[test]
    fn json_patches_apply_every_operation() {
        let state = json!({"spec": {"rules": [{"host": "a"}], "tls": []}});
        let patch = json!([
            {"op": "test", "path": "/spec/rules/0/host", "value": "a"},
            {"op": "replace", "path": "/spec/rules/0/host", "value": "b"},
            {"op": "add", "path": "/spec/tls/-", "value": {"hosts": ["b"]}},
            {"op": "copy", "from": "/spec/rules/0", "path": "/spec/rules/1"},
            {"op": "move", "from": "/spec/tls", "path": "/spec/tls2"},
            {"op": "remove", "path": "/spec/rules/0"}
        ]);
        assert_eq!(
            apply_patch(&state, &patch),
            Some(json!({"spec": {"rules": [{"host": "b"}], "tls2": [{"hosts": ["b"]}]}}))
        );
        let failing = json!([{"op": "test", "path": "/spec/rules/0/host", "value": "z"}]);
        assert_eq!(apply_patch(&state, &failing), None);
        assert_eq!(
            apply_patch(&state, &json!([{"op": "remove", "path": "/nope"}])),
            None
        );
    }

    #[test]
    fn a_copy_bomb_is_not_applied() {
        let mut ops = vec![json!({"op": "add", "path": "/a", "value": [1, 2, 3, 4, 5, 6, 7, 8]})];
        for _ in 0..40 {
            ops.push(json!({"op": "copy", "from": "/a", "path": "/b"}));
            ops.push(json!({"op": "add", "path": "/a/-", "value": 0}));
            ops.push(json!({"op": "copy", "from": "", "path": "/a/-"}));
        }
        assert_eq!(apply_patch(&json!({}), &Value::Array(ops)), None);
    }
}
