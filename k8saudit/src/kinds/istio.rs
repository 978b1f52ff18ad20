//! Istio: `networking.istio.io` Gateways (servers, TLS, credential names), VirtualServices
//! (hosts, matches, destinations) and EnvoyFilters (Wasm or Warden filters patched into Envoy);
//! `security.istio.io` AuthorizationPolicies, RequestAuthentications and PeerAuthentications
//! (rules and modes, and when a change weakens them); `extensions.istio.io` WasmPlugins.
//!
//! Weakening, as reported in `auth_removed`:
//! - AuthorizationPolicy: deleted (whatever its action: deleting an ALLOW policy can leave a
//!   workload with no ALLOW policy, which allows everything); action DENY or CUSTOM changed to
//!   another; DENY/CUSTOM rules removed or changed, or all of them (the policy then matches
//!   nothing); an ALLOW policy gaining a rule that matches everything (`{}`), created so too.
//! - RequestAuthentication: deleted, or all its JWT issuers removed.
//! - PeerAuthentication: deleted while STRICT anywhere; the workload or a port mode getting
//!   weaker (STRICT > UNSET, which inherits > PERMISSIVE > DISABLE); created with DISABLE.
//! - Gateway: a server's TLS mode leaving MUTUAL / ISTIO_MUTUAL (client certificates no longer
//!   required).

use super::{Ctx, Described, mentions_warden, selector_note, target_notes};
use crate::json::{MAX_SCAN, at, canonical, digest_of, list, scalar_at, str_at, strings};
use crate::record::PluginSummary;
use serde_json::Value;

pub(super) fn gateway(obj: &Value, ctx: &Ctx, d: &mut Described) {
    let s = &mut d.summary;
    selector_note(obj, &["spec", "selector"], &mut s.notes);
    for srv in list(obj, &["spec", "servers"]) {
        let port = scalar_at(srv, &["port", "number"]).unwrap_or_else(|| "?".into());
        let name = str_at(srv, &["port", "name"]).unwrap_or("?");
        let protocol = str_at(srv, &["port", "protocol"])
            .unwrap_or("?")
            .to_ascii_uppercase();
        // Server hosts may be `namespace/host`; the namespace scopes which VirtualServices may
        // bind, the host is what is served.
        let hosts: Vec<&str> = strings(srv, &["hosts"])
            .map(|h| h.split_once('/').map_or(h, |(_, host)| host))
            .collect();
        s.hosts.extend(hosts.iter().map(|h| h.to_string()));
        let tls = srv.get("tls").filter(|t| t.is_object());
        match protocol.as_str() {
            "HTTP" | "HTTP2" | "GRPC" => {
                if tls.and_then(|t| t.get("httpsRedirect")) == Some(&Value::Bool(true)) {
                    s.notes
                        .push(format!("server {name} port {port} redirects to HTTPS"));
                } else {
                    s.listeners_without_tls.push(format!(
                        "Istio Gateway server {name} port {port} protocol {protocol} hosts {}",
                        hosts.join(", ")
                    ));
                }
            }
            "HTTPS" | "TLS" => {
                s.tls_hosts.extend(hosts.iter().map(|h| h.to_string()));
                let mode = tls.and_then(|t| str_at(t, &["mode"])).unwrap_or("SIMPLE");
                s.notes
                    .push(format!("server {name} port {port} {protocol} tls {mode}"));
                d.facts.insert(format!("tls:{port}"), mode.to_string());
                if let Some(t) = tls {
                    let names = str_at(t, &["credentialName"])
                        .into_iter()
                        .chain(strings(t, &["credentialNames"]));
                    for cred in names {
                        s.tls_secrets.push(credential(cred, ctx.namespace));
                    }
                    if let Some(v) = str_at(t, &["minProtocolVersion"]) {
                        s.notes
                            .push(format!("server {name} minProtocolVersion {v}"));
                    }
                }
            }
            other => s
                .notes
                .push(format!("server {name} port {port} protocol {other}")),
        }
    }
}

/// A credential name as `namespace/name`. Istio looks the Secret up in the namespace of the
/// gateway workload, which is usually, not always, the Gateway resource's own: the resource's
/// namespace is the best the object tells.
fn credential(cred: &str, namespace: &str) -> String {
    let cred = cred.split_once("://").map_or(cred, |(_, rest)| rest);
    if cred.contains('/') {
        cred.to_string()
    } else {
        format!("{namespace}/{cred}")
    }
}

pub(super) fn compare_gateway(prev: &Described, cur: Option<&Described>, out: &mut Vec<String>) {
    let Some(cur) = cur else {
        return;
    };
    for (key, before) in prev.facts.iter().filter(|(k, _)| k.starts_with("tls:")) {
        let mutual = matches!(before.as_str(), "MUTUAL" | "ISTIO_MUTUAL");
        let after = cur.fact(key).unwrap_or("none");
        if mutual && after != before {
            let port = key.trim_start_matches("tls:");
            out.push(format!(
                "server port {port} tls {before} -> {after} (client certificates no longer required)"
            ));
        }
    }
}

pub(super) fn virtual_service(obj: &Value, d: &mut Described) {
    let s = &mut d.summary;
    s.hosts
        .extend(strings(obj, &["spec", "hosts"]).map(str::to_string));
    let gateways: Vec<&str> = strings(obj, &["spec", "gateways"]).collect();
    if !gateways.is_empty() {
        s.notes.push(format!("gateways {}", gateways.join(", ")));
    }
    for http in list(obj, &["spec", "http"]) {
        for m in list(http, &["match"]) {
            for kind in ["exact", "prefix", "regex"] {
                if let Some(v) = str_at(m, &["uri", kind]) {
                    s.paths.push(format!("{kind} {v}"));
                }
            }
        }
        if let Some(r) = http.get("redirect") {
            let to = str_at(r, &["authority"]).unwrap_or("");
            let uri = str_at(r, &["uri"]).unwrap_or("");
            s.notes.push(format!("redirect to {to}{uri}"));
        }
    }
    for section in ["http", "tls", "tcp"] {
        for route in list(obj, &["spec", section]) {
            for dest in list(route, &["route"]) {
                let Some(host) = str_at(dest, &["destination", "host"]) else {
                    continue;
                };
                let mut b = host.to_string();
                if let Some(p) = scalar_at(dest, &["destination", "port", "number"]) {
                    b.push_str(&format!(":{p}"));
                }
                if let Some(subset) = str_at(dest, &["destination", "subset"]) {
                    b.push_str(&format!(" subset {subset}"));
                }
                s.backends.push(b);
            }
        }
    }
}

pub(super) fn envoy_filter(obj: &Value, ctx: &Ctx, d: &mut Described) {
    let s = &mut d.summary;
    selector_note(obj, &["spec", "workloadSelector", "labels"], &mut s.notes);
    target_notes(obj, &mut s.notes);
    for p in list(obj, &["spec", "configPatches"]) {
        let apply_to = str_at(p, &["applyTo"]).unwrap_or("?");
        let op = str_at(p, &["patch", "operation"]).unwrap_or("?");
        let mut note = format!("configPatch {apply_to} {op}");
        if let Some(c) = str_at(p, &["match", "context"]) {
            note.push_str(&format!(" context {c}"));
        }
        s.notes.push(note);
    }
    let spec = obj.get("spec").map(canonical).unwrap_or_default();
    let lower = spec.to_ascii_lowercase();
    let warden = mentions_warden(ctx.name) || lower.contains("warden");
    if !(warden || lower.contains("wasm")) {
        return;
    }
    let vm = obj.get("spec").and_then(|s| find_key(s, "vm_config"));
    let url = vm
        .and_then(|v| find_key(v, "uri").or_else(|| find_key(v, "filename")))
        .and_then(Value::as_str)
        .map(str::to_string);
    let failure_policy = obj
        .get("spec")
        .and_then(|s| find_key(s, "failure_policy"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let fail_open = obj
        .get("spec")
        .and_then(|s| find_key(s, "fail_open"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || failure_policy.as_deref() == Some("FAIL_OPEN");
    s.plugin = Some(PluginSummary {
        kind: "EnvoyFilter".to_string(),
        url,
        failure_policy,
        fail_open,
        is_warden: warden,
        removed: false,
        turned_fail_open: false,
    });
}

/// The first value under `key` anywhere in `v` (breadth-first, bounded).
fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let mut queue = std::collections::VecDeque::from([v]);
    let mut visited = 0usize;
    while let Some(v) = queue.pop_front() {
        visited += 1;
        if visited > 16 * MAX_SCAN {
            return None;
        }
        match v {
            Value::Object(m) => {
                if let Some(found) = m.get(key) {
                    return Some(found);
                }
                queue.extend(m.values());
            }
            Value::Array(a) => queue.extend(a.iter()),
            _ => {}
        }
    }
    None
}

const ACTIONS_THAT_PROTECT: [&str; 2] = ["DENY", "CUSTOM"];

pub(super) fn authorization_policy(obj: &Value, d: &mut Described) {
    let s = &mut d.summary;
    let action = str_at(obj, &["spec", "action"]).unwrap_or("ALLOW");
    s.notes.push(format!("action {action}"));
    d.facts.insert("action".into(), action.to_string());
    if let Some(p) = str_at(obj, &["spec", "provider", "name"]) {
        s.notes.push(format!("provider {p}"));
    }
    scope_notes(obj, &mut s.notes);
    d.rules = list(obj, &["spec", "rules"]).map(canonical).collect();
    let matches_all = d.rules.iter().any(|r| r == "{}");
    match action {
        "ALLOW" if matches_all => s
            .notes
            .push("allows every request (a rule matching everything)".into()),
        "ALLOW" if d.rules.is_empty() => s.notes.push("allows no request (no rules)".into()),
        "DENY" if matches_all => s.notes.push("denies every request".into()),
        _ => s.notes.push(format!("{} rules", d.rules.len())),
    }
}

/// Where a workload policy applies: its selector or target, else the whole namespace.
fn scope_notes(obj: &Value, notes: &mut Vec<String>) {
    let before = notes.len();
    selector_note(obj, &["spec", "selector", "matchLabels"], notes);
    target_notes(obj, notes);
    if notes.len() == before {
        notes.push("applies to the whole namespace (no selector)".into());
    }
}

pub(super) fn compare_authorization(
    prev: &Described,
    cur: Option<&Described>,
    ctx: &Ctx,
    out: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let Some(cur) = cur else {
        out.push(format!(
            "{} deleted (action {}, {} rules)",
            ctx.label(),
            prev.fact("action").unwrap_or("ALLOW"),
            prev.rules.len()
        ));
        return;
    };
    let after = cur.fact("action").unwrap_or("ALLOW");
    if let Some(before) = prev.fact("action") {
        if before != after {
            notes.push(format!("action {after} (was {before})"));
            if ACTIONS_THAT_PROTECT.contains(&before) {
                out.push(format!("action {before} -> {after}"));
            }
        } else if ACTIONS_THAT_PROTECT.contains(&after) && !prev.rules.is_empty() {
            let removed = prev.rules.iter().filter(|r| !cur.rules.contains(r)).count();
            if cur.rules.is_empty() {
                out.push(format!(
                    "all {after} rules removed: the policy no longer matches any request"
                ));
            } else if removed > 0 {
                out.push(format!("{removed} {after} rule(s) removed or changed"));
            }
        }
    }
    let allow_all = |d: &Described| {
        d.fact("action").unwrap_or("ALLOW") == "ALLOW" && d.rules.iter().any(|r| r == "{}")
    };
    if after == "ALLOW" && allow_all(cur) && !(prev.fact("action").is_some() && allow_all(prev)) {
        out.push("ALLOW policy allows every request (a rule matching everything)".into());
    }
}

pub(super) fn request_authentication(obj: &Value, d: &mut Described) {
    let s = &mut d.summary;
    scope_notes(obj, &mut s.notes);
    let mut issuers = Vec::new();
    for rule in list(obj, &["spec", "jwtRules"]) {
        let mut rule = rule.clone();
        // An inline key set is long and says nothing a reader needs beyond whether it changed.
        if let Some(jwks) = rule.get_mut("jwks") {
            *jwks = digest_of(jwks);
        }
        if let Some(i) = str_at(&rule, &["issuer"]) {
            s.notes.push(format!("issuer {i}"));
            issuers.push(i.to_string());
        }
        d.rules.push(canonical(&rule));
    }
    d.facts.insert("issuers".into(), issuers.join(", "));
    d.facts.insert("rules".into(), d.rules.len().to_string());
}

pub(super) fn compare_request_authentication(
    prev: &Described,
    cur: Option<&Described>,
    ctx: &Ctx,
    out: &mut Vec<String>,
) {
    let issuers = prev.fact("issuers").filter(|i| !i.is_empty());
    match cur {
        None => out.push(match issuers {
            Some(i) => format!("{} deleted (issuers {i})", ctx.label()),
            None => format!("{} deleted", ctx.label()),
        }),
        Some(cur) if !prev.rules.is_empty() && cur.rules.is_empty() => out.push(format!(
            "all JWT rules removed (issuers {})",
            issuers.unwrap_or("?")
        )),
        Some(_) => {}
    }
}

pub(super) fn peer_authentication(obj: &Value, d: &mut Described) {
    let s = &mut d.summary;
    scope_notes(obj, &mut s.notes);
    let mode = str_at(obj, &["spec", "mtls", "mode"]).unwrap_or("UNSET");
    s.notes.push(format!("mtls {mode}"));
    d.facts.insert("mtls".into(), mode.to_string());
    if let Some(ports) = at(obj, &["spec", "portLevelMtls"]).and_then(Value::as_object) {
        for (port, cfg) in ports.iter().take(MAX_SCAN) {
            let m = str_at(cfg, &["mode"]).unwrap_or("UNSET");
            s.notes.push(format!("port {port} mtls {m}"));
            d.facts.insert(format!("port:{port}"), m.to_string());
        }
    }
}

/// Strength of an mTLS mode. UNSET inherits from the namespace or mesh policy, so it is weaker
/// than STRICT (it may be anything) and stronger than an explicit PERMISSIVE.
fn rank(mode: &str) -> u8 {
    match mode {
        "STRICT" => 3,
        "PERMISSIVE" => 1,
        "DISABLE" => 0,
        _ => 2,
    }
}

pub(super) fn compare_peer_authentication(
    prev: &Described,
    cur: Option<&Described>,
    ctx: &Ctx,
    out: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let Some(cur) = cur else {
        if prev.facts.values().any(|m| m == "STRICT") {
            out.push(format!("{} deleted (was STRICT)", ctx.label()));
        }
        return;
    };
    let after = cur.fact("mtls").unwrap_or("UNSET");
    let Some(before) = prev.fact("mtls") else {
        // Created: nothing to compare with but the mode itself.
        if after == "DISABLE"
            || cur
                .facts
                .iter()
                .any(|(k, m)| k.starts_with("port:") && m == "DISABLE")
        {
            out.push("created with mtls DISABLE".into());
        }
        return;
    };
    if before != after {
        notes.push(format!("mtls {after} (was {before})"));
        if rank(after) < rank(before) {
            out.push(format!("mtls {before} -> {after}"));
        }
    }
    let effective = |d: &Described, port: &str, workload: &str| -> String {
        d.fact(&format!("port:{port}"))
            .filter(|m| *m != "UNSET")
            .unwrap_or(workload)
            .to_string()
    };
    let ports = prev
        .facts
        .keys()
        .chain(cur.facts.keys())
        .filter_map(|k| k.strip_prefix("port:"))
        .collect::<std::collections::BTreeSet<_>>();
    for port in ports {
        let (b, a) = (effective(prev, port, before), effective(cur, port, after));
        if rank(&a) < rank(&b) {
            out.push(format!("port {port} mtls {b} -> {a}"));
        }
    }
}

pub(super) fn wasm_plugin(obj: &Value, ctx: &Ctx, d: &mut Described) {
    let s = &mut d.summary;
    scope_notes(obj, &mut s.notes);
    for (field, label) in [
        ("phase", "phase"),
        ("priority", "priority"),
        ("type", "type"),
        ("pluginName", "pluginName"),
        ("imagePullPolicy", "imagePullPolicy"),
    ] {
        if let Some(v) = scalar_at(obj, &["spec", field]) {
            s.notes.push(format!("{label} {v}"));
        }
    }
    if str_at(obj, &["spec", "sha256"]).is_some() {
        s.notes.push("code pinned by sha256".into());
    }
    let url = str_at(obj, &["spec", "url"]).map(str::to_string);
    let failure_policy = str_at(obj, &["spec", "failStrategy"]).map(str::to_string);
    let is_warden = mentions_warden(ctx.name)
        || url.as_deref().is_some_and(mentions_warden)
        || str_at(obj, &["spec", "pluginName"]).is_some_and(mentions_warden);
    s.plugin = Some(PluginSummary {
        kind: "WasmPlugin".to_string(),
        fail_open: failure_policy.as_deref() == Some("FAIL_OPEN"),
        url,
        failure_policy,
        is_warden,
        removed: false,
        turned_fail_open: false,
    });
}
