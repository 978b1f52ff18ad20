//! Envoy Gateway (`gateway.envoyproxy.io`): SecurityPolicies (which authentication and
//! authorization they configure), EnvoyExtensionPolicies (Wasm and external-processing
//! extensions, Warden's among them) and ClientTrafficPolicies (TLS versions and client
//! certificate validation).
//!
//! Weakening, as reported in `auth_removed`:
//! - SecurityPolicy: deleted while configuring any of jwt, oidc, basicAuth, apiKeyAuth, extAuth,
//!   authorization; any of them removed; `extAuth.failOpen` turned on; `jwt.optional` turned on;
//!   `authorization.defaultAction` turned `Allow`; an authorization rule of action `Deny`
//!   removed or changed.
//! - ClientTrafficPolicy: client certificate validation removed or made optional, or the policy
//!   deleted while it had one.

use super::{Ctx, Described, mentions_warden, target_notes};
use crate::json::{at, canonical, list, scalar_at, str_at, strings};
use crate::record::PluginSummary;
use serde_json::Value;

const PROTECTIONS: [&str; 6] = [
    "jwt",
    "oidc",
    "basicAuth",
    "apiKeyAuth",
    "extAuth",
    "authorization",
];

fn present(obj: &Value, field: &str) -> bool {
    at(obj, &["spec", field]).is_some_and(|v| !v.is_null())
}

fn flag(obj: &Value, path: &[&str]) -> Option<String> {
    at(obj, path)
        .and_then(Value::as_bool)
        .map(|b| b.to_string())
}

pub(super) fn security_policy(obj: &Value, d: &mut Described) {
    let s = &mut d.summary;
    target_notes(obj, &mut s.notes);
    let configured: Vec<&str> = PROTECTIONS
        .iter()
        .copied()
        .filter(|f| present(obj, f))
        .collect();
    if configured.is_empty() {
        s.notes
            .push("no authentication or authorization configured".into());
    } else {
        s.notes
            .push(format!("protections: {}", configured.join(", ")));
    }
    for f in &configured {
        d.facts.insert(format!("has:{f}"), "true".into());
    }
    for p in list(obj, &["spec", "jwt", "providers"]) {
        if let Some(i) = str_at(p, &["issuer"]) {
            s.notes.push(format!("jwt issuer {i}"));
        }
    }
    if let Some(v) = flag(obj, &["spec", "jwt", "optional"]) {
        d.facts.insert("jwt.optional".into(), v);
    }
    if let Some(i) = str_at(obj, &["spec", "oidc", "provider", "issuer"]) {
        s.notes.push(format!("oidc issuer {i}"));
    }
    for proto in ["grpc", "http"] {
        if let Some(b) = at(obj, &["spec", "extAuth", proto]) {
            let names: Vec<String> = list(b, &["backendRefs"])
                .filter_map(|r| str_at(r, &["name"]))
                .map(str::to_string)
                .chain(str_at(b, &["backendRef", "name"]).map(str::to_string))
                .collect();
            s.notes
                .push(format!("extAuth {proto} backend {}", names.join(", ")));
        }
    }
    if let Some(v) = flag(obj, &["spec", "extAuth", "failOpen"]) {
        if v == "true" {
            s.notes.push("extAuth failOpen".into());
        }
        d.facts.insert("extAuth.failOpen".into(), v);
    }
    if present(obj, "authorization") {
        let action = str_at(obj, &["spec", "authorization", "defaultAction"]).unwrap_or("Deny");
        s.notes
            .push(format!("authorization defaultAction {action}"));
        d.facts
            .insert("authorization.defaultAction".into(), action.to_string());
        d.rules = list(obj, &["spec", "authorization", "rules"])
            .map(canonical)
            .collect();
    }
}

pub(super) fn compare_security_policy(
    prev: &Described,
    cur: Option<&Described>,
    ctx: &Ctx,
    out: &mut Vec<String>,
) {
    let had: Vec<&str> = PROTECTIONS
        .iter()
        .copied()
        .filter(|f| prev.fact(&format!("has:{f}")).is_some())
        .collect();
    let Some(cur) = cur else {
        if !had.is_empty() {
            out.push(format!("{} deleted ({})", ctx.label(), had.join(", ")));
        }
        return;
    };
    let removed: Vec<&str> = had
        .into_iter()
        .filter(|f| cur.fact(&format!("has:{f}")).is_none())
        .collect();
    if !removed.is_empty() {
        out.push(format!("{} removed", removed.join(", ")));
    }
    // Turning on fail-open or optional tokens weakens a protection that was there; a policy
    // created so adds protection, however weak, and is not flagged.
    if prev.fact("has:extAuth").is_some()
        && cur.fact("extAuth.failOpen") == Some("true")
        && prev.fact("extAuth.failOpen") != Some("true")
    {
        out.push("extAuth failOpen enabled: requests pass when the auth service fails".into());
    }
    if prev.fact("has:jwt").is_some()
        && cur.fact("jwt.optional") == Some("true")
        && prev.fact("jwt.optional") != Some("true")
    {
        out.push("jwt made optional: requests without a token pass".into());
    }
    let (before, after) = (
        prev.fact("authorization.defaultAction"),
        cur.fact("authorization.defaultAction"),
    );
    if after == Some("Allow") && before.is_some_and(|b| b != "Allow") {
        out.push(format!(
            "authorization defaultAction {} -> Allow",
            before.unwrap_or("Deny")
        ));
    }
    let deny_removed = prev
        .rules
        .iter()
        .filter(|r| r.contains("\"action\":\"Deny\"") && !cur.rules.contains(r))
        .count();
    if deny_removed > 0 && after.is_some() {
        out.push(format!(
            "{deny_removed} authorization Deny rule(s) removed or changed"
        ));
    }
}

pub(super) fn extension_policy(obj: &Value, ctx: &Ctx, d: &mut Described) {
    let s = &mut d.summary;
    target_notes(obj, &mut s.notes);
    let mut plugins = Vec::new();
    for w in list(obj, &["spec", "wasm"]) {
        let name = str_at(w, &["name"]).unwrap_or("?");
        let code_type = str_at(w, &["code", "type"]).unwrap_or("?");
        let url = str_at(w, &["code", "http", "url"])
            .or_else(|| str_at(w, &["code", "image", "url"]))
            .map(str::to_string);
        let fail_open = w.get("failOpen").and_then(Value::as_bool);
        s.notes.push(format!(
            "wasm {name} {code_type} {} failOpen {}",
            url.as_deref().unwrap_or("(no url)"),
            fail_open.unwrap_or(false)
        ));
        plugins.push(PluginSummary {
            kind: "EnvoyExtensionPolicy".to_string(),
            is_warden: mentions_warden(ctx.name)
                || mentions_warden(name)
                || url.as_deref().is_some_and(mentions_warden),
            url,
            failure_policy: fail_open.map(|b| format!("failOpen: {b}")),
            fail_open: fail_open.unwrap_or(false),
            removed: false,
            turned_fail_open: false,
        });
    }
    // One plugin per summary: Warden's when the policy carries it, else the first.
    let pick = plugins.iter().position(|p| p.is_warden).unwrap_or(0);
    if pick < plugins.len() {
        s.plugin = Some(plugins.swap_remove(pick));
    }
    for e in list(obj, &["spec", "extProc"]) {
        let backends: Vec<&str> = list(e, &["backendRefs"])
            .filter_map(|r| str_at(r, &["name"]))
            .collect();
        s.notes.push(format!(
            "extProc {} failOpen {}",
            backends.join(", "),
            e.get("failOpen").and_then(Value::as_bool).unwrap_or(false)
        ));
    }
}

pub(super) fn client_traffic_policy(obj: &Value, d: &mut Described) {
    let s = &mut d.summary;
    target_notes(obj, &mut s.notes);
    for v in ["minVersion", "maxVersion"] {
        if let Some(x) = scalar_at(obj, &["spec", "tls", v]) {
            s.notes.push(format!("tls {v} {x}"));
            d.facts.insert(format!("tls.{v}"), x);
        }
    }
    let ciphers = list(obj, &["spec", "tls", "ciphers"]).count();
    if ciphers > 0 {
        s.notes.push(format!("tls {ciphers} ciphers configured"));
    }
    let alpn: Vec<&str> = strings(obj, &["spec", "tls", "alpnProtocols"]).collect();
    if !alpn.is_empty() {
        s.notes
            .push(format!("tls alpnProtocols {}", alpn.join(", ")));
    }
    if let Some(cv) = at(obj, &["spec", "tls", "clientValidation"]).filter(|v| !v.is_null()) {
        let cas: Vec<&str> = list(cv, &["caCertificateRefs"])
            .filter_map(|r| str_at(r, &["name"]))
            .collect();
        let optional = cv.get("optional").and_then(Value::as_bool).unwrap_or(false);
        s.notes.push(format!(
            "client certificate validation (CA {}){}",
            cas.join(", "),
            if optional { ", optional" } else { "" }
        ));
        d.facts.insert("clientValidation".into(), "true".into());
        d.facts
            .insert("clientValidation.optional".into(), optional.to_string());
    }
    for field in [
        "clientIPDetection",
        "http3",
        "headers",
        "timeout",
        "connection",
    ] {
        if present(obj, field) {
            s.notes.push(format!("{field} configured"));
        }
    }
}

pub(super) fn compare_client_traffic_policy(
    prev: &Described,
    cur: Option<&Described>,
    ctx: &Ctx,
    out: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let had = prev.fact("clientValidation").is_some();
    let Some(cur) = cur else {
        if had {
            out.push(format!(
                "{} deleted (client certificate validation)",
                ctx.label()
            ));
        }
        return;
    };
    if had && cur.fact("clientValidation").is_none() {
        out.push("client certificate validation removed".into());
    } else if had
        && cur.fact("clientValidation.optional") == Some("true")
        && prev.fact("clientValidation.optional") != Some("true")
    {
        out.push("client certificate validation made optional".into());
    }
    for v in ["tls.minVersion", "tls.maxVersion"] {
        if let (Some(b), a) = (prev.fact(v), cur.fact(v))
            && Some(b) != a
        {
            notes.push(format!("{v} {} (was {b})", a.unwrap_or("default")));
        }
    }
}
