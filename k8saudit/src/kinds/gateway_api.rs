//! `gateway.networking.k8s.io`: Gateways (listeners: what is served, with or without TLS, with
//! which certificate), routes (HTTPRoute, GRPCRoute, TLSRoute: hostnames, matches, backends,
//! parents) and ReferenceGrants (which cross-namespace references they allow: a grant to Secrets
//! lets another namespace's Gateway use a certificate).

use super::{Ctx, Described, Kind};
use crate::json::{list, scalar_at, str_at, strings};
use serde_json::Value;

pub(super) fn gateway(obj: &Value, ctx: &Ctx, d: &mut Described) {
    let s = &mut d.summary;
    if let Some(c) = str_at(obj, &["spec", "gatewayClassName"]) {
        s.notes.push(format!("gatewayClassName {c}"));
    }
    for l in list(obj, &["spec", "listeners"]) {
        let name = str_at(l, &["name"]).unwrap_or("?");
        let port = scalar_at(l, &["port"]).unwrap_or_else(|| "?".into());
        let protocol = str_at(l, &["protocol"]).unwrap_or("?");
        let hostname = str_at(l, &["hostname"]);
        let host_desc = hostname
            .map(|h| format!(" hostname {h}"))
            .unwrap_or_default();
        s.hosts.push(hostname.unwrap_or("*").to_string());
        s.notes
            .push(format!("listener {name} {protocol} port {port}{host_desc}"));
        match protocol {
            "HTTP" => s.listeners_without_tls.push(format!(
                "Gateway listener {name} port {port} protocol HTTP{host_desc}"
            )),
            "HTTPS" | "TLS" => {
                s.tls_hosts.push(hostname.unwrap_or("*").to_string());
                for r in list(l, &["tls", "certificateRefs"]) {
                    let kind = str_at(r, &["kind"]).unwrap_or("Secret");
                    let group = str_at(r, &["group"]).unwrap_or("");
                    let ns = str_at(r, &["namespace"]).unwrap_or(ctx.namespace);
                    let Some(cert) = str_at(r, &["name"]) else {
                        continue;
                    };
                    if kind == "Secret" && group.is_empty() {
                        s.tls_secrets.push(format!("{ns}/{cert}"));
                    } else {
                        s.notes
                            .push(format!("listener {name} certificate {kind} {ns}/{cert}"));
                    }
                }
                if str_at(l, &["tls", "mode"]) == Some("Passthrough") {
                    s.notes.push(format!("listener {name} TLS passthrough"));
                }
            }
            _ => {}
        }
        if str_at(l, &["allowedRoutes", "namespaces", "from"]) == Some("All") {
            s.notes.push(format!(
                "listener {name} accepts routes from all namespaces"
            ));
        }
    }
}

pub(super) fn route(obj: &Value, ctx: &Ctx, d: &mut Described) {
    let s = &mut d.summary;
    let before = s.hosts.len();
    s.hosts
        .extend(strings(obj, &["spec", "hostnames"]).map(str::to_string));
    if s.hosts.len() == before {
        // A route without hostnames serves every hostname of the listeners it attaches to.
        s.hosts.push("*".to_string());
    }
    for p in list(obj, &["spec", "parentRefs"]) {
        let kind = str_at(p, &["kind"]).unwrap_or("Gateway");
        let ns = str_at(p, &["namespace"]).unwrap_or(ctx.namespace);
        let name = str_at(p, &["name"]).unwrap_or("?");
        let mut note = format!("parent {kind} {ns}/{name}");
        if let Some(section) = str_at(p, &["sectionName"]) {
            note.push_str(&format!(" section {section}"));
        }
        if let Some(port) = scalar_at(p, &["port"]) {
            note.push_str(&format!(" port {port}"));
        }
        s.notes.push(note);
    }
    for rule in list(obj, &["spec", "rules"]) {
        for m in list(rule, &["matches"]) {
            if ctx.kind == Kind::GrpcRoute {
                let service = str_at(m, &["method", "service"]).unwrap_or("*");
                let method = str_at(m, &["method", "method"]).unwrap_or("*");
                s.paths.push(format!("grpc {service}/{method}"));
            } else {
                let kind = str_at(m, &["path", "type"]).unwrap_or("PathPrefix");
                let value = str_at(m, &["path", "value"]).unwrap_or("/");
                s.paths.push(format!("{kind} {value}"));
            }
        }
        for b in list(rule, &["backendRefs"]) {
            let Some(name) = str_at(b, &["name"]) else {
                continue;
            };
            let mut desc = String::new();
            match str_at(b, &["kind"]) {
                Some(k) if k != "Service" => desc.push_str(&format!("{k} ")),
                _ => {}
            }
            if let Some(ns) = str_at(b, &["namespace"]).filter(|ns| *ns != ctx.namespace) {
                desc.push_str(&format!("{ns}/"));
            }
            desc.push_str(name);
            if let Some(port) = scalar_at(b, &["port"]) {
                desc.push_str(&format!(":{port}"));
            }
            if scalar_at(b, &["weight"]).as_deref() == Some("0") {
                desc.push_str(" (weight 0)");
            }
            s.backends.push(desc);
        }
        for f in list(rule, &["filters"]) {
            let Some(t) = str_at(f, &["type"]) else {
                continue;
            };
            if t == "ExtensionRef" {
                let kind = str_at(f, &["extensionRef", "kind"]).unwrap_or("?");
                let name = str_at(f, &["extensionRef", "name"]).unwrap_or("?");
                s.notes.push(format!("filter ExtensionRef {kind} {name}"));
            } else {
                s.notes.push(format!("filter {t}"));
            }
        }
    }
}

pub(super) fn reference_grant(obj: &Value, d: &mut Described) {
    let notes = &mut d.summary.notes;
    for f in list(obj, &["spec", "from"]) {
        let group = str_at(f, &["group"]).unwrap_or("core");
        let kind = str_at(f, &["kind"]).unwrap_or("?");
        let ns = str_at(f, &["namespace"]).unwrap_or("?");
        notes.push(format!("from {group}/{kind} in namespace {ns}"));
    }
    for t in list(obj, &["spec", "to"]) {
        let group = str_at(t, &["group"]).unwrap_or("core");
        let kind = str_at(t, &["kind"]).unwrap_or("?");
        let name = str_at(t, &["name"]).unwrap_or("*");
        notes.push(format!("to {group}/{kind} {name}"));
    }
}
