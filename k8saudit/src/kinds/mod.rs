//! What each kept kind of object means for ingress policy: the facts a summary shows (hosts,
//! paths, backends, TLS, rules, plugins) read from one state of the object, and how two states
//! compare (protection removed or weakened). One module per API family; this one dispatches.
//!
//! Every function here reads a sanitised state (see [`crate::sanitize`]), never a raw object, so
//! nothing a summary shows can come from a Secret's data.

mod core;
mod envoy_gateway;
mod gateway_api;
mod istio;
mod networking;

use crate::record::{ChangeSummary, PluginSummary};
use serde_json::Value;
use std::collections::BTreeMap;

/// The kinds with a summary of their own; everything else is [`Kind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ingress,
    IngressClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    ReferenceGrant,
    Secret,
    ConfigMap,
    IstioGateway,
    VirtualService,
    EnvoyFilter,
    AuthorizationPolicy,
    RequestAuthentication,
    PeerAuthentication,
    WasmPlugin,
    SecurityPolicy,
    EnvoyExtensionPolicy,
    ClientTrafficPolicy,
    Other,
}

impl Kind {
    /// The kind of the objects of `resource` in `api_group`.
    pub(crate) fn of(api_group: &str, resource: &str) -> Kind {
        match (api_group, resource) {
            ("networking.k8s.io", "ingresses") => Kind::Ingress,
            ("networking.k8s.io", "ingressclasses") => Kind::IngressClass,
            ("gateway.networking.k8s.io", "gateways") => Kind::Gateway,
            ("gateway.networking.k8s.io", "httproutes") => Kind::HttpRoute,
            ("gateway.networking.k8s.io", "grpcroutes") => Kind::GrpcRoute,
            ("gateway.networking.k8s.io", "tlsroutes") => Kind::TlsRoute,
            ("gateway.networking.k8s.io", "referencegrants") => Kind::ReferenceGrant,
            ("", "secrets") => Kind::Secret,
            ("", "configmaps") => Kind::ConfigMap,
            ("networking.istio.io", "gateways") => Kind::IstioGateway,
            ("networking.istio.io", "virtualservices") => Kind::VirtualService,
            ("networking.istio.io", "envoyfilters") => Kind::EnvoyFilter,
            ("security.istio.io", "authorizationpolicies") => Kind::AuthorizationPolicy,
            ("security.istio.io", "requestauthentications") => Kind::RequestAuthentication,
            ("security.istio.io", "peerauthentications") => Kind::PeerAuthentication,
            ("extensions.istio.io", "wasmplugins") => Kind::WasmPlugin,
            ("gateway.envoyproxy.io", "securitypolicies") => Kind::SecurityPolicy,
            ("gateway.envoyproxy.io", "envoyextensionpolicies") => Kind::EnvoyExtensionPolicy,
            ("gateway.envoyproxy.io", "clienttrafficpolicies") => Kind::ClientTrafficPolicy,
            _ => Kind::Other,
        }
    }

    /// The Kubernetes kind, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::IstioGateway => "Istio Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::EnvoyFilter => "EnvoyFilter",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::WasmPlugin => "WasmPlugin",
            Kind::SecurityPolicy => "SecurityPolicy",
            Kind::EnvoyExtensionPolicy => "EnvoyExtensionPolicy",
            Kind::ClientTrafficPolicy => "ClientTrafficPolicy",
            Kind::Other => "object",
        }
    }
}

/// One state of an object, described.
#[derive(Debug, Clone, Default)]
pub(crate) struct Described {
    /// The static part of the summary: hosts, paths, backends, TLS, notes, plugin, certificate.
    pub summary: ChangeSummary,
    /// Policy rules, each a canonical compact JSON line, compared between states.
    pub rules: Vec<String>,
    /// Kind-specific values the comparison reads (`action`, `mtls`, `ann:<annotation>`...).
    pub facts: BTreeMap<String, String>,
}

impl Described {
    fn fact(&self, key: &str) -> Option<&str> {
        self.facts.get(key).map(String::as_str)
    }
}

/// Where an object lives: defaults for references without a namespace, names for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl Ctx<'_> {
    /// `Kind ns/name`, for messages.
    pub(crate) fn label(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind.name(), self.name)
        } else {
            format!("{} {}/{}", self.kind.name(), self.namespace, self.name)
        }
    }
}

/// Describes one sanitised state.
pub(crate) fn describe(obj: &Value, ctx: &Ctx) -> Described {
    let mut d = Described::default();
    match ctx.kind {
        Kind::Ingress => networking::ingress(obj, ctx, &mut d),
        Kind::IngressClass => networking::ingress_class(obj, &mut d),
        Kind::Gateway => gateway_api::gateway(obj, ctx, &mut d),
        Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute => gateway_api::route(obj, ctx, &mut d),
        Kind::ReferenceGrant => gateway_api::reference_grant(obj, &mut d),
        Kind::Secret => core::secret(obj, &mut d),
        Kind::ConfigMap => core::config_map(obj, &mut d),
        Kind::IstioGateway => istio::gateway(obj, ctx, &mut d),
        Kind::VirtualService => istio::virtual_service(obj, &mut d),
        Kind::EnvoyFilter => istio::envoy_filter(obj, ctx, &mut d),
        Kind::AuthorizationPolicy => istio::authorization_policy(obj, &mut d),
        Kind::RequestAuthentication => istio::request_authentication(obj, &mut d),
        Kind::PeerAuthentication => istio::peer_authentication(obj, &mut d),
        Kind::WasmPlugin => istio::wasm_plugin(obj, ctx, &mut d),
        Kind::SecurityPolicy => envoy_gateway::security_policy(obj, &mut d),
        Kind::EnvoyExtensionPolicy => envoy_gateway::extension_policy(obj, ctx, &mut d),
        Kind::ClientTrafficPolicy => envoy_gateway::client_traffic_policy(obj, &mut d),
        Kind::Other => {}
    }
    d
}

/// Compares the previous state with the new one (`None`: the object was deleted), writing
/// weakened protection to `auth_removed` (joined by "; "), transitions to `notes` and a removed
/// plugin to `plugin`. `prev` is an empty description for a create, so that a new object that
/// opens access by itself (an allow-all AuthorizationPolicy, a PeerAuthentication disabling
/// mTLS) is flagged too.
pub(crate) fn compare(
    prev: &Described,
    cur: Option<&Described>,
    ctx: &Ctx,
    out: &mut ChangeSummary,
) {
    let mut weakened = Vec::new();
    match ctx.kind {
        Kind::Ingress => networking::compare_ingress(prev, cur, &mut weakened),
        Kind::IstioGateway => istio::compare_gateway(prev, cur, &mut weakened),
        Kind::AuthorizationPolicy => {
            istio::compare_authorization(prev, cur, ctx, &mut weakened, &mut out.notes)
        }
        Kind::RequestAuthentication => {
            istio::compare_request_authentication(prev, cur, ctx, &mut weakened)
        }
        Kind::PeerAuthentication => {
            istio::compare_peer_authentication(prev, cur, ctx, &mut weakened, &mut out.notes)
        }
        Kind::SecurityPolicy => {
            envoy_gateway::compare_security_policy(prev, cur, ctx, &mut weakened)
        }
        Kind::ClientTrafficPolicy => envoy_gateway::compare_client_traffic_policy(
            prev,
            cur,
            ctx,
            &mut weakened,
            &mut out.notes,
        ),
        Kind::WasmPlugin | Kind::EnvoyExtensionPolicy | Kind::EnvoyFilter => {
            compare_plugin(prev, cur, out)
        }
        _ => {}
    }
    if !weakened.is_empty() {
        out.auth_removed = Some(weakened.join("; "));
    }
}

/// A plugin removed (the object deleted, or Warden's plugin gone from it) is reported as the
/// previous plugin with `removed`; turning fail-open and changing the code are noted.
fn compare_plugin(prev: &Described, cur: Option<&Described>, out: &mut ChangeSummary) {
    let Some(before) = prev.summary.plugin.as_ref() else {
        return;
    };
    let after = cur.and_then(|c| c.summary.plugin.as_ref());
    let gone = match after {
        None => true,
        Some(a) => before.is_warden && !a.is_warden,
    };
    if gone {
        if cur.is_some() {
            out.notes.push(format!(
                "plugin {} no longer in this object",
                before.url.as_deref().unwrap_or("(no url)")
            ));
        }
        out.plugin = Some(PluginSummary {
            removed: true,
            ..before.clone()
        });
        return;
    }
    if let Some(a) = after {
        if a.fail_open && !before.fail_open {
            if let Some(p) = out.plugin.as_mut() {
                p.turned_fail_open = true;
            }
            out.notes.push(format!(
                "now fails open (was {})",
                before.failure_policy.as_deref().unwrap_or("fail closed")
            ));
        }
        if a.url != before.url {
            out.notes.push(format!(
                "code url changed (was {})",
                before.url.as_deref().unwrap_or("none")
            ));
        }
    }
}

/// Whether `name` mentions Warden (case-insensitive).
pub(crate) fn mentions_warden(s: &str) -> bool {
    s.to_ascii_lowercase().contains("warden")
}

/// `targetRef` / `targetRefs` (policy attachment) as notes: `target Gateway eg`.
pub(crate) fn target_notes(obj: &Value, notes: &mut Vec<String>) {
    use crate::json::{list, str_at};
    let one = crate::json::at(obj, &["spec", "targetRef"]).into_iter();
    for t in one.chain(list(obj, &["spec", "targetRefs"])) {
        let kind = str_at(t, &["kind"]).unwrap_or("?");
        let name = str_at(t, &["name"]).unwrap_or("?");
        match str_at(t, &["sectionName"]) {
            Some(section) => notes.push(format!("target {kind} {name} section {section}")),
            None => notes.push(format!("target {kind} {name}")),
        }
    }
}

/// `selector` (Istio `matchLabels`) as a note; a policy without one applies namespace-wide.
pub(crate) fn selector_note(obj: &Value, path: &[&str], notes: &mut Vec<String>) {
    if let Some(l) = crate::json::labels(crate::json::at(obj, path)) {
        notes.push(format!("selector {l}"));
    }
}
