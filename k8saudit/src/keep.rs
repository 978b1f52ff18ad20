//! Which audit events are ingress-policy changes worth keeping: the keep list.
//!
//! Only writes are kept (create, update, patch, delete, deletecollection). Writes to the `status`
//! subresource are dropped as not kept: controllers write status constantly, and status is what
//! they observed, not policy anyone set.
//!
//! Secrets need more than their resource name, because only certificates matter and the
//! recommended audit policy logs Secrets at Metadata level (no object, so no type). With the
//! `secrets:tls` entry a Secret event is kept when:
//! 1. an object in the event (the response, or the request of a create or update, or a patch
//!    that sets `type`) says `type: kubernetes.io/tls`;
//! 2. or `known_tls_secret(namespace, name)`: a kept Ingress, Gateway or Istio Gateway named it as
//!    its certificate (this also catches Opaque Secrets that Istio uses as credentials);
//! 3. or no object in the event tells the type (Metadata level, a patch without `type`) and the
//!    name contains `tls` or `cert` (case-insensitive), the usual naming of certificate Secrets
//!    (cert-manager's `*-tls`, `*-cert`).
//!
//! The name rule is a guess: a TLS Secret named otherwise, and not yet referred to by a kept
//! object when it is written, is dropped (its later writes are kept once a reference is seen);
//! an Opaque Secret named `db-cert-password` is kept as metadata (never its data). A
//! deletecollection of Secrets is kept, since it may delete certificates. Entries
//! `secrets/<pattern>` (Warden's own Secrets by default) keep matching Secrets whatever their
//! type, and a bare `secrets` entry keeps every Secret: still never their data.

use crate::event::Event;
use serde_json::Value;
use std::fmt;

const TLS_TYPE: &str = "kubernetes.io/tls";
const MUTATING: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Longest name pattern accepted, in bytes (a pattern longer than any name matches nothing).
const MAX_PATTERN_BYTES: usize = 253;

/// The entries kept when none are configured.
const DEFAULT_ENTRIES: [&str; 19] = [
    "ingresses.networking.k8s.io",
    "ingressclasses.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "grpcroutes.gateway.networking.k8s.io",
    "tlsroutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
    "secrets:tls",
    "gateways.networking.istio.io",
    "virtualservices.networking.istio.io",
    "envoyfilters.networking.istio.io",
    "authorizationpolicies.security.istio.io",
    "requestauthentications.security.istio.io",
    "peerauthentications.security.istio.io",
    "wasmplugins.extensions.istio.io",
    "securitypolicies.gateway.envoyproxy.io",
    "envoyextensionpolicies.gateway.envoyproxy.io",
    "clienttrafficpolicies.gateway.envoyproxy.io",
    "configmaps/warden*",
];

/// Warden's own Secrets, kept by default besides [`DEFAULT_ENTRIES`].
const DEFAULT_WARDEN_SECRETS: &str = "secrets/warden*";

/// Whether to keep an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepDecision {
    /// Keep it: build its change record.
    Keep,
    /// Drop it, for this reason.
    Drop(DropReason),
}

/// Why an event was dropped (a bounded label set for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// get, list, watch: anything but create, update, patch, delete, deletecollection.
    ReadOnly,
    /// A non-resource URL (`/healthz`, `/version`): no objectRef.
    NoObject,
    /// A resource not in the keep list, or a write to a `status` subresource.
    NotKept,
    /// A Secret not known to be TLS.
    SecretNotTls,
}

impl DropReason {
    /// Every reason, in a fixed order (metrics index by it).
    pub const ALL: [DropReason; 4] = [
        DropReason::ReadOnly,
        DropReason::NoObject,
        DropReason::NotKept,
        DropReason::SecretNotTls,
    ];

    /// `read_only`, `no_object`, `not_kept`, `secret_not_tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::ReadOnly => "read_only",
            DropReason::NoObject => "no_object",
            DropReason::NotKept => "not_kept",
            DropReason::SecretNotTls => "secret_not_tls",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    api_group: String,
    resource: String,
    /// `*` wildcards; `None` keeps every name.
    name: Option<String>,
    /// `secrets:tls`.
    tls_only: bool,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource)?;
        if !self.api_group.is_empty() {
            write!(f, ".{}", self.api_group)?;
        }
        if self.tls_only {
            f.write_str(":tls")?;
        }
        if let Some(n) = &self.name {
            write!(f, "/{n}")?;
        }
        Ok(())
    }
}

/// The resources (and names) whose changes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepList {
    entries: Vec<Entry>,
}

impl Default for KeepList {
    fn default() -> KeepList {
        KeepList::default_list()
    }
}

impl KeepList {
    /// The default list: Ingress and IngressClass; the Gateway API's Gateways, HTTPRoutes,
    /// GRPCRoutes, TLSRoutes and ReferenceGrants; TLS Secrets (`secrets:tls`); Istio's Gateways,
    /// VirtualServices, EnvoyFilters, AuthorizationPolicies, RequestAuthentications,
    /// PeerAuthentications and WasmPlugins; Envoy Gateway's SecurityPolicies,
    /// EnvoyExtensionPolicies and ClientTrafficPolicies; Warden's own ConfigMaps and Secrets
    /// (`configmaps/warden*`, `secrets/warden*`).
    pub fn default_list() -> KeepList {
        let entries = DEFAULT_ENTRIES
            .iter()
            .chain([&DEFAULT_WARDEN_SECRETS])
            .filter_map(|e| parse_entry(e).ok())
            .collect();
        KeepList { entries }
    }

    /// Parses configured entries, each `resource.group` as kubectl spells it
    /// (`ingresses.networking.k8s.io`, `httproutes.gateway.networking.k8s.io`, core group without
    /// a dot: `configmaps`), optionally `/<name pattern>` with `*` wildcards
    /// (`configmaps/warden*`). The entry `secrets:tls` means "Secrets of type kubernetes.io/tls"
    /// (see the module doc). Errors name the entry and what is wrong. An empty list is refused:
    /// it would drop every event (leave the setting out for the default list).
    pub fn parse(entries: &[String]) -> Result<KeepList, String> {
        if entries.is_empty() {
            return Err(
                "the keep list is empty: it would drop every event (leave it out for the default list)"
                    .to_string(),
            );
        }
        let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
        for e in entries {
            let entry = parse_entry(e)?;
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        Ok(KeepList { entries: out })
    }

    /// The entries in their canonical spelling, for showing the configuration.
    pub fn entries(&self) -> Vec<String> {
        self.entries.iter().map(Entry::to_string).collect()
    }

    /// Whether to keep `ev`. `known_tls_secret(namespace, name)` says whether an earlier kept
    /// Ingress/Gateway/Istio Gateway referred to that Secret as its certificate (the collector
    /// remembers those names from ChangeSummary::tls_secrets).
    pub fn decide(
        &self,
        ev: &Event,
        known_tls_secret: &dyn Fn(&str, &str) -> bool,
    ) -> KeepDecision {
        use KeepDecision::{Drop, Keep};
        if !MUTATING.contains(&ev.verb.as_str()) {
            return Drop(DropReason::ReadOnly);
        }
        let Some(r) = ev.object_ref.as_ref().filter(|r| !r.resource.is_empty()) else {
            return Drop(DropReason::NoObject);
        };
        if r.subresource == "status" {
            return Drop(DropReason::NotKept);
        }
        let name = if r.name.is_empty() {
            ev.name_from_object().map(|(_, n)| n).unwrap_or_default()
        } else {
            r.name.clone()
        };
        let mut tls_entry = false;
        for e in self
            .entries
            .iter()
            .filter(|e| e.api_group == r.api_group && e.resource == r.resource)
        {
            if e.tls_only {
                tls_entry = true;
                continue;
            }
            match &e.name {
                None => return Keep,
                Some(p) if !name.is_empty() && glob(p, &name) => return Keep,
                Some(_) => {}
            }
        }
        // Only `secrets:tls` sets `tls_entry`: past this point the event is about a Secret.
        if !tls_entry {
            return Drop(DropReason::NotKept);
        }
        if ev.verb == "deletecollection" {
            return Keep;
        }
        match secret_type(ev) {
            Some(TLS_TYPE) => return Keep,
            Some(_) => {}
            None => {
                let lower = name.to_ascii_lowercase();
                if lower.contains("tls") || lower.contains("cert") {
                    return Keep;
                }
            }
        }
        if !name.is_empty() && known_tls_secret(&r.namespace, &name) {
            return Keep;
        }
        Drop(DropReason::SecretNotTls)
    }
}

/// The Secret type an event shows, if any object in it tells.
fn secret_type(ev: &Event) -> Option<&str> {
    let declared = |o: &&Value| {
        !matches!(
            o.get("kind").and_then(Value::as_str),
            Some("Status" | "DeleteOptions" | "SecretList")
        )
    };
    if let Some(o) = ev.response_object.as_ref().filter(declared) {
        // The stored object always has a type; Opaque is the API server's default.
        return Some(o.get("type").and_then(Value::as_str).unwrap_or("Opaque"));
    }
    let request = ev.request_object.as_ref().filter(declared)?;
    match ev.verb.as_str() {
        "create" | "update" => Some(
            request
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("Opaque"),
        ),
        // A patch names the type only if it sets it (types are immutable, so it is the type).
        "patch" => request.get("type").and_then(Value::as_str),
        _ => None,
    }
}

fn parse_entry(raw: &str) -> Result<Entry, String> {
    let fail = |what: &str| {
        let shown: String = raw.chars().take(80).flat_map(char::escape_debug).collect();
        Err(format!("keep list entry \"{shown}\": {what}"))
    };
    let e = raw.trim();
    if e.is_empty() {
        return fail("empty");
    }
    let (kind, name) = match e.split_once('/') {
        Some((k, n)) => (k, Some(n)),
        None => (e, None),
    };
    let (kind, qualifier) = match kind.split_once(':') {
        Some((k, q)) => (k, Some(q)),
        None => (kind, None),
    };
    let tls_only = match qualifier {
        None => false,
        Some("tls") if kind == "secrets" => true,
        Some(_) => return fail("only \"secrets:tls\" takes a qualifier"),
    };
    if tls_only && name.is_some() {
        return fail("\"secrets:tls\" takes no name pattern");
    }
    let (resource, group) = kind.split_once('.').unwrap_or((kind, ""));
    let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if resource.is_empty()
        || !resource.starts_with(|c: char| c.is_ascii_lowercase())
        || !resource.chars().all(|c| lower_alnum(c) || c == '-')
    {
        return fail(
            "the resource must be lowercase and plural as kubectl spells it, then the group: \
             ingresses.networking.k8s.io, configmaps",
        );
    }
    if group.len() > 253
        || (!group.is_empty()
            && !group
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| lower_alnum(c) || c == '-')))
    {
        return fail("the API group must be a lowercase DNS name (networking.k8s.io)");
    }
    if let Some(n) = name {
        if n.is_empty() {
            return fail("empty name pattern after '/'");
        }
        if n.len() > MAX_PATTERN_BYTES {
            return fail("name pattern longer than 253 bytes");
        }
        if !n
            .chars()
            .all(|c| lower_alnum(c) || matches!(c, '-' | '.' | '*'))
        {
            return fail(
                "a name pattern holds lowercase letters, digits, '-', '.' and '*' wildcards",
            );
        }
    }
    Ok(Entry {
        api_group: group.to_string(),
        resource: resource.to_string(),
        name: name.filter(|n| *n != "*").map(str::to_string),
        tls_only,
    })
}

/// Whether `name` matches `pattern` (`*` any run of characters, `?` one).
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: &[&str]) -> Result<KeepList, String> {
        KeepList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_default_list_parses_whole() {
        let d = KeepList::default_list();
        assert_eq!(d.entries.len(), DEFAULT_ENTRIES.len() + 1);
        assert!(d.entries().contains(&"secrets:tls".to_string()));
        assert!(d.entries().contains(&"configmaps/warden*".to_string()));
        assert!(d.entries().contains(&"secrets/warden*".to_string()));
        assert_eq!(
            parse(&DEFAULT_ENTRIES).unwrap().entries.len(),
            DEFAULT_ENTRIES.len()
        );
    }

    #[test]
    fn entries_parse_into_group_resource_and_pattern() {
        let k = parse(&[
            "ingresses.networking.k8s.io",
            " configmaps/warden* ",
            "secrets:tls",
            "pods/*",
        ])
        .unwrap();
        assert_eq!(
            k.entries(),
            [
                "ingresses.networking.k8s.io",
                "configmaps/warden*",
                "secrets:tls",
                "pods"
            ]
        );
        assert_eq!(k.entries[0].api_group, "networking.k8s.io");
        assert_eq!(k.entries[0].resource, "ingresses");
        assert_eq!(k.entries[1].api_group, "");
    }

    #[test]
    fn bad_entries_are_named_with_the_problem() {
        let cases = [
            (vec![], "the keep list is empty"),
            (vec![""], "keep list entry \"\": empty"),
            (
                vec!["Ingress"],
                "keep list entry \"Ingress\": the resource must be lowercase",
            ),
            (
                vec!["ingresses.Networking.k8s.io"],
                "the API group must be a lowercase DNS name",
            ),
            (
                vec!["ingresses..k8s.io"],
                "the API group must be a lowercase DNS name",
            ),
            (vec!["configmaps/"], "empty name pattern after '/'"),
            (
                vec!["configmaps/Warden*"],
                "a name pattern holds lowercase letters",
            ),
            (
                vec!["configmaps:tls"],
                "only \"secrets:tls\" takes a qualifier",
            ),
            (
                vec!["secrets:opaque"],
                "only \"secrets:tls\" takes a qualifier",
            ),
            (
                vec!["secrets:tls/x*"],
                "\"secrets:tls\" takes no name pattern",
            ),
        ];
        for (entries, want) in cases {
            let e = parse(&entries).unwrap_err();
            assert!(e.contains(want), "{entries:?}: {e}");
        }
        let e = parse(&["x\u{1b}[2J/y"]).unwrap_err();
        assert!(!e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn globs_match_like_shells() {
        assert!(glob("warden*", "warden"));
        assert!(glob("warden*", "warden-config"));
        assert!(!glob("warden*", "my-warden"));
        assert!(glob("*warden*", "my-warden-x"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("*", ""));
        assert!(!glob("a", ""));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        let long = "a".repeat(253);
        assert!(!glob("*a*a*a*a*a*b", &long));
    }
}
