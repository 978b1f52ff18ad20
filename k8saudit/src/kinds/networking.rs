//! `networking.k8s.io`: Ingress (hosts, paths, backends, TLS coverage, the controllers' auth
//! annotations) and IngressClass (which controller serves it).
//!
//! Auth annotations watched, because removing them removes authentication or an address
//! allow-list from every host of the Ingress: ingress-nginx `auth-url`, `auth-type`,
//! `auth-secret`, `auth-signin`, `auth-tls-secret`, `auth-tls-verify-client`,
//! `whitelist-source-range`, `allowlist-source-range`, `denylist-source-range`; HAProxy
//! `haproxy.org/auth-type`, `auth-secret`, `allow-list`, `whitelist`; the older
//! `ingress.kubernetes.io/auth-*`; AWS Load Balancer Controller `alb.ingress.kubernetes.io/
//! auth-type`. Weakening also counts: `auth-tls-verify-client` leaving `on`, ALB `auth-type`
//! turning `none`, and ingress-nginx `enable-global-auth: "false"` (opting the Ingress out of
//! the controller-wide external auth). Deleting an Ingress is not counted: its hosts stop being
//! served at all.

use super::{Ctx, Described};
use crate::json::{at, list, scalar_at, str_at, strings};
use serde_json::Value;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// Annotations whose removal removes protection.
const AUTH_ANNOTATIONS: &[&str] = &[
    "nginx.ingress.kubernetes.io/auth-url",
    "nginx.ingress.kubernetes.io/auth-type",
    "nginx.ingress.kubernetes.io/auth-secret",
    "nginx.ingress.kubernetes.io/auth-signin",
    "nginx.ingress.kubernetes.io/auth-tls-secret",
    "nginx.ingress.kubernetes.io/auth-tls-verify-client",
    "nginx.ingress.kubernetes.io/whitelist-source-range",
    "nginx.ingress.kubernetes.io/allowlist-source-range",
    "nginx.ingress.kubernetes.io/denylist-source-range",
    "haproxy.org/auth-type",
    "haproxy.org/auth-secret",
    "haproxy.org/allow-list",
    "haproxy.org/whitelist",
    "ingress.kubernetes.io/auth-type",
    "ingress.kubernetes.io/auth-secret",
    "ingress.kubernetes.io/auth-url",
    "alb.ingress.kubernetes.io/auth-type",
];

const GLOBAL_AUTH: &str = "nginx.ingress.kubernetes.io/enable-global-auth";
const VERIFY_CLIENT: &str = "nginx.ingress.kubernetes.io/auth-tls-verify-client";
const ALB_AUTH: &str = "alb.ingress.kubernetes.io/auth-type";

pub(super) fn ingress(obj: &Value, ctx: &Ctx, d: &mut Described) {
    let s = &mut d.summary;
    if let Some(c) = str_at(obj, &["spec", "ingressClassName"]) {
        s.notes.push(format!("ingressClassName {c}"));
    } else if let Some(c) = str_at(
        obj,
        &["metadata", "annotations", "kubernetes.io/ingress.class"],
    ) {
        s.notes.push(format!("ingress class {c} (annotation)"));
    }
    let mut tls_hosts: Vec<&str> = Vec::new();
    let mut tls_without_hosts = false;
    for t in list(obj, &["spec", "tls"]) {
        let before = tls_hosts.len();
        tls_hosts.extend(strings(t, &["hosts"]));
        tls_without_hosts |= tls_hosts.len() == before;
        if let Some(secret) = str_at(t, &["secretName"]) {
            s.tls_secrets.push(format!("{}/{secret}", ctx.namespace));
        }
    }
    s.tls_hosts.extend(tls_hosts.iter().map(|h| h.to_string()));
    if let Some(b) = at(obj, &["spec", "defaultBackend"]).and_then(backend) {
        s.backends.push(format!("{b} (default backend)"));
    }
    for rule in list(obj, &["spec", "rules"]) {
        let host = str_at(rule, &["host"]).unwrap_or("*");
        s.hosts.push(host.to_string());
        let covered = if host == "*" {
            tls_without_hosts
        } else {
            tls_hosts.iter().any(|t| covers(t, host))
        };
        if !covered {
            s.listeners_without_tls.push(if host == "*" {
                "Ingress rule without host (every host) has no tls entry".to_string()
            } else {
                format!("Ingress host {host} has no tls entry")
            });
        }
        for p in list(rule, &["http", "paths"]) {
            let path = str_at(p, &["path"]).unwrap_or("/");
            s.paths.push(format!("{host}{path}"));
            if let Some(b) = p.get("backend").and_then(backend) {
                s.backends.push(b);
            }
        }
    }
    let mut present = Vec::new();
    for key in AUTH_ANNOTATIONS.iter().chain([&GLOBAL_AUTH]) {
        if let Some(v) = scalar_at(obj, &["metadata", "annotations", key]) {
            present.push(key.strip_prefix(NGINX).unwrap_or(key));
            d.facts.insert(format!("ann:{key}"), v);
        }
    }
    if !present.is_empty() {
        s.notes
            .push(format!("auth annotations: {}", present.join(", ")));
    }
}

/// Whether a TLS host entry covers a rule host: equal, or a wildcard one label deep.
fn covers(tls: &str, host: &str) -> bool {
    if tls.eq_ignore_ascii_case(host) {
        return true;
    }
    match (tls.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

/// `service:port`, or `Kind name` for a resource backend.
fn backend(b: &Value) -> Option<String> {
    if let Some(svc) = b.get("service") {
        let name = str_at(svc, &["name"])?;
        let port =
            scalar_at(svc, &["port", "number"]).or_else(|| scalar_at(svc, &["port", "name"]));
        return Some(match port {
            Some(p) => format!("{name}:{p}"),
            None => name.to_string(),
        });
    }
    if let Some(r) = b.get("resource") {
        let kind = str_at(r, &["kind"]).unwrap_or("?");
        let name = str_at(r, &["name"]).unwrap_or("?");
        return Some(format!("{kind} {name}"));
    }
    None
}

pub(super) fn compare_ingress(prev: &Described, cur: Option<&Described>, out: &mut Vec<String>) {
    let Some(cur) = cur else {
        return;
    };
    for key in AUTH_ANNOTATIONS {
        let fact = format!("ann:{key}");
        let (before, after) = (prev.fact(&fact), cur.fact(&fact));
        match (before, after) {
            (Some(_), None) => out.push(format!("Ingress auth annotation {key} removed")),
            (Some("on"), Some(v)) if *key == VERIFY_CLIENT && v != "on" => {
                out.push(format!("client certificate verification {key}: on -> {v}"))
            }
            (Some(b), Some("none")) if *key == ALB_AUTH && b != "none" => {
                out.push(format!("{key}: {b} -> none"))
            }
            _ => {}
        }
    }
    let fact = format!("ann:{GLOBAL_AUTH}");
    if cur.fact(&fact) == Some("false") && prev.fact(&fact) != Some("false") {
        out.push(format!(
            "global external auth disabled for this Ingress ({GLOBAL_AUTH}: \"false\")"
        ));
    }
}

pub(super) fn ingress_class(obj: &Value, d: &mut Described) {
    let notes = &mut d.summary.notes;
    if let Some(c) = str_at(obj, &["spec", "controller"]) {
        notes.push(format!("controller {c}"));
    }
    if str_at(
        obj,
        &[
            "metadata",
            "annotations",
            "ingressclass.kubernetes.io/is-default-class",
        ],
    ) == Some("true")
    {
        notes.push("default IngressClass".to_string());
    }
    if let Some(p) = at(obj, &["spec", "parameters"]) {
        let kind = str_at(p, &["kind"]).unwrap_or("?");
        let name = str_at(p, &["name"]).unwrap_or("?");
        notes.push(format!("parameters {kind} {name}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_tls_hosts_cover_one_label() {
        assert!(covers("*.example.com", "shop.example.com"));
        assert!(covers("shop.example.com", "SHOP.example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("example.com", "shop.example.com"));
    }
}
