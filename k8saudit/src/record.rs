//! Change records: what one kept audit event says about a change to an ingress-policy object,
//! with a summary of what changed, and the sanitised snapshot of the object to compare the next
//! change with.
//!
//! Which state an event shows: the response object when it is the object (not a `Status`), else
//! for create and update the request object (the object as sent). For a patch the request object
//! is the patch itself, so the state comes from the response object; when only the patch is
//! logged (level Request) and a snapshot of the object is known, the state is the snapshot with
//! the patch applied (see [`crate::paths`]; not for Secrets and ConfigMaps, whose snapshots hold
//! no values to patch). A delete is described from the previous snapshot (or the deleted object
//! when the response carries it): what it removed.
//!
//! The summary describes what the request does or would do whatever its outcome; `outcome` says
//! whether it happened, so a refused attempt to remove authentication still reads as one.

use crate::bounds::{clean, clean_list};
use crate::event::Event;
use crate::kinds::{self, Ctx, Described, Kind};
use crate::paths;
use crate::sanitize;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// A sanitised state of one object kept between events: never a Secret's data (for Secrets only
/// type and the certificate summary), never the `kubectl.kubernetes.io/last-applied-configuration`
/// annotation (it carries the whole object, data included), bounded in size
/// ([`crate::MAX_SNAPSHOT_BYTES`] serialized).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot(pub Value);

/// One kept audit event as a change to an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeRecord {
    /// The request's audit id (with `stage`, unique per event).
    pub audit_id: String,
    /// `RequestReceived`, `ResponseStarted`, `ResponseComplete` or `Panic`.
    pub stage: String,
    /// The audit level the event was logged at (`Metadata` events show no object).
    pub level: String,
    /// `stageTimestamp` (else `requestReceivedTimestamp`), ms since the epoch.
    pub time_ms: i64,
    /// Kubernetes verb: create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group, "" for core.
    pub api_group: String,
    /// API version of the request.
    pub api_version: String,
    /// Plural, lowercase resource.
    pub resource: String,
    /// Subresource, "" for the object itself.
    pub subresource: String,
    /// Namespace, "" when cluster-scoped.
    pub namespace: String,
    /// Object name ("" for deletecollection).
    pub name: String,
    /// The authenticated user.
    pub user: String,
    /// The authenticated user's groups.
    pub groups: Vec<String>,
    /// The user impersonated, if any.
    pub impersonated_user: Option<String>,
    /// The impersonated user's groups.
    pub impersonated_groups: Vec<String>,
    /// "namespace/name" when the effective user is `system:serviceaccount:namespace:name`, else
    /// when the authenticated user (impersonating someone) is.
    pub service_account: Option<String>,
    /// Client addresses.
    pub source_ips: Vec<String>,
    /// The client's User-Agent.
    pub user_agent: String,
    /// The API server's response code, when the event has one.
    pub response_code: Option<i32>,
    /// "applied" (code < 400, or ResponseComplete without a code), "refused" (code >= 400: an
    /// attempt; also a `Panic` stage without a code), "pending" (RequestReceived: not yet
    /// answered), "dry_run" (accepted with `dryRun=All`, as `kubectl diff` and
    /// `--dry-run=server` do: validated, not persisted).
    pub outcome: String,
    /// What changed.
    pub summary: ChangeSummary,
}

impl ChangeRecord {
    /// The impersonated user if any, else the authenticated user.
    pub fn effective_user(&self) -> &str {
        self.impersonated_user.as_deref().unwrap_or(&self.user)
    }

    /// The object the record is about.
    pub fn object_key(&self) -> crate::ObjectKey {
        crate::ObjectKey {
            api_group: self.api_group.clone(),
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// What a change does, as far as the event (and the previous snapshot) tell. Empty lists and
/// unset options are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ChangeSummary {
    /// Hosts the object serves or routes (`*`: every host).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Hosts not in the previous state (create: all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts_added: Vec<String>,
    /// Hosts of the previous state no longer there (delete: all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts_removed: Vec<String>,
    /// Paths matched (`host/path` for Ingress, `PathPrefix /api` for routes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Backends routed to (`service:port`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// Hosts served with TLS.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_hosts: Vec<String>,
    /// Certificate Secrets referred to, as "namespace/name".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_secrets: Vec<String>,
    /// Listeners / hosts served without TLS, described ("Gateway listener http port 80 protocol
    /// HTTP", "Ingress host shop.example.com has no tls entry").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners_without_tls: Vec<String>,
    /// A Secret's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_type: Option<String>,
    /// A TLS Secret's certificate (the leaf of `tls.crt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateSummary>,
    /// Policy rules added, each one canonical compact JSON line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules_added: Vec<String>,
    /// Policy rules removed, each one canonical compact JSON line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules_removed: Vec<String>,
    /// Set when authentication or authorization protection was removed or weakened, saying
    /// what: an AuthorizationPolicy, RequestAuthentication or protecting SecurityPolicy deleted;
    /// jwt/oidc/basicAuth/apiKeyAuth/extAuth/authorization removed from a SecurityPolicy or made
    /// to fail open / optional / default-allow; a PeerAuthentication weakened (STRICT ->
    /// PERMISSIVE/DISABLE) or deleted while STRICT; Ingress auth annotations removed or
    /// weakened; an AuthorizationPolicy losing DENY/CUSTOM rules or action, or allowing every
    /// request; client certificate validation removed (ClientTrafficPolicy, Istio Gateway
    /// MUTUAL). Several are joined by "; ".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_removed: Option<String>,
    /// A Wasm (or Warden) plugin the object configures, or removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSummary>,
    /// For update and patch: the fields changed, as paths like `spec.rules[0].host` (a patch's
    /// own leaves; for an update, the difference from the previous snapshot).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
    /// Other facts worth a line: "action ALLOW", "mtls PERMISSIVE (was STRICT)",
    /// "ingressClassName nginx", "controller ...".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The leaf certificate of a TLS Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertificateSummary {
    /// Lowercase hex SHA-256 of the DER encoding (the usual certificate fingerprint).
    pub sha256: String,
    /// Subject, RFC 4514 style (`CN=shop.example.com, O=Shop`).
    pub subject: String,
    /// DNS names of the subject alternative names.
    pub dns_names: Vec<String>,
    /// Start of validity, RFC3339.
    pub not_before: String,
    /// End of validity, RFC3339.
    pub not_after: String,
    /// End of validity, ms since the epoch.
    pub not_after_ms: i64,
}

/// A Wasm plugin (or a Warden filter) configured by an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginSummary {
    /// "WasmPlugin", "EnvoyExtensionPolicy" or "EnvoyFilter".
    pub kind: String,
    /// Where the code comes from (OCI, HTTP or file URL), when the object says.
    pub url: Option<String>,
    /// The failure policy as configured (`FAIL_OPEN`, `failOpen: true`, `FAIL_CLOSED`...).
    pub failure_policy: Option<String>,
    /// Whether requests pass when the plugin fails.
    pub fail_open: bool,
    /// Whether the object's name, the plugin's name or its URL mentions "warden"
    /// (case-insensitive).
    pub is_warden: bool,
    /// The plugin was removed (the object deleted, or the plugin taken out of it).
    pub removed: bool,
    /// This change made it fail open (it failed closed before). A plugin created or kept fail
    /// open is not this: Warden's own manifests fail open on purpose.
    #[serde(default)]
    pub turned_fail_open: bool,
}

/// Builds the record of a kept event. `previous` is the last Snapshot of the same object the
/// collector kept (from an earlier event), used for diffs (hosts added/removed, policy rules
/// added/removed, fields changed on update, what a delete removed). Returns the record and the
/// new snapshot to remember (None when the object is gone: delete; or when this event does not
/// reveal the object's state, e.g. Metadata level or a refused change: then the collector keeps
/// the previous snapshot).
pub fn change_record(ev: &Event, previous: Option<&Snapshot>) -> (ChangeRecord, Option<Snapshot>) {
    let r = ev.object_ref.clone().unwrap_or_default();
    let kind = Kind::of(&r.api_group, &r.resource);
    let verb = ev.verb.as_str();
    let dry_run = is_dry_run(ev);
    let outcome = outcome(ev, dry_run);
    let prev = previous.map(|s| &s.0).filter(|v| v.is_object());
    let whole_object = r.subresource.is_empty();
    let request = ev.request_object.as_ref().filter(|v| is_state(v));
    let response = ev.response_object.as_ref().filter(|v| is_state(v));
    let patch = (verb == "patch")
        .then_some(ev.request_object.as_ref())
        .flatten();
    // A patch can be applied to a snapshot only where the snapshot keeps the values: Secret and
    // ConfigMap snapshots hold none (digests at most), so patching them would be wrong.
    let patchable = !matches!(kind, Kind::Secret | Kind::ConfigMap)
        && !patch.is_some_and(|p| {
            matches!(
                p.get("kind").and_then(Value::as_str),
                Some("Secret" | "ConfigMap")
            )
        });

    let mut notes: Vec<String> = Vec::new();
    let state: Option<Value> = if !whole_object {
        None
    } else {
        match verb {
            "create" | "update" => response.or(request).map(|o| sanitize::sanitize(kind, o)),
            "patch" => match response {
                Some(o) => Some(sanitize::sanitize(kind, o)),
                None if outcome == "applied" && patchable => prev
                    .zip(patch)
                    .and_then(|(p, patch)| paths::apply_patch(p, patch))
                    .map(|v| {
                        notes.push(
                            "state derived from the previous snapshot and the patch".to_string(),
                        );
                        sanitize::sanitize(kind, &v)
                    }),
                None => None,
            },
            _ => None,
        }
    };

    let (namespace, name) = match ev.name_from_object().filter(|_| r.name.is_empty()) {
        Some((ns, name)) => (
            if r.namespace.is_empty() {
                ns
            } else {
                r.namespace.clone()
            },
            name,
        ),
        None => (r.namespace.clone(), r.name.clone()),
    };
    let ctx = Ctx {
        kind,
        namespace: &namespace,
        name: &name,
    };

    let mut summary = ChangeSummary::default();
    match verb {
        "delete" => {
            let removed = prev
                .cloned()
                .or_else(|| response.map(|o| sanitize::sanitize(kind, o)));
            match removed {
                Some(obj) => {
                    let d = kinds::describe(&obj, &ctx);
                    summary = d.summary.clone();
                    summary.hosts_removed = summary.hosts.clone();
                    summary.rules_removed = d.rules.clone();
                    kinds::compare(&d, None, &ctx, &mut summary);
                }
                None => notes.push(
                    "what was deleted is unknown: not in the event and not seen before".into(),
                ),
            }
        }
        "deletecollection" => notes.push(
            "deletecollection: every object of this resource in the namespace matching the request was deleted"
                .into(),
        ),
        "create" | "update" | "patch" => {
            match &state {
                Some(st) => {
                    let cur = kinds::describe(st, &ctx);
                    summary = cur.summary.clone();
                    let before = if verb == "create" {
                        Some(Described::default())
                    } else {
                        prev.map(|p| kinds::describe(p, &ctx))
                    };
                    if let Some(b) = &before {
                        summary.hosts_added = missing_from(&cur.summary.hosts, &b.summary.hosts);
                        summary.hosts_removed = missing_from(&b.summary.hosts, &cur.summary.hosts);
                        summary.rules_added = missing_from(&cur.rules, &b.rules);
                        summary.rules_removed = missing_from(&b.rules, &cur.rules);
                        kinds::compare(b, Some(&cur), &ctx, &mut summary);
                    }
                }
                None => {
                    notes.push(format!(
                        "the object's new state is not in the event (level {})",
                        ev.level
                    ));
                    if kind == Kind::Secret {
                        // A patch carrying a new certificate still shows which one.
                        let from_patch = patch.map(|p| sanitize::sanitize(Kind::Secret, p));
                        summary.certificate = from_patch
                            .and_then(|p| kinds::describe(&p, &ctx).summary.certificate);
                    }
                }
            }
            summary.changed_fields = match (patch, verb) {
                (Some(p), _) => paths::patch_paths(p),
                (None, "update") => match (prev, &state) {
                    (Some(p), Some(s)) => paths::diff_paths(p, s),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
        }
        _ => {}
    }
    if !whole_object {
        notes.push(format!("subresource {}", r.subresource));
    }
    for left_out in &ev.objects_left_out {
        notes.push(format!(
            "{left_out} left out: nested deeper than {} levels",
            crate::MAX_OBJECT_DEPTH
        ));
    }
    if dry_run {
        notes.push("dry run: validated by the API server, not persisted".into());
    }
    summary.notes.extend(notes);

    let effective = ev.impersonated_user.as_ref().unwrap_or(&ev.user);
    let mut record = ChangeRecord {
        audit_id: ev.audit_id.clone(),
        stage: ev.stage.clone(),
        level: ev.level.clone(),
        time_ms: ev
            .stage_timestamp
            .or(ev.request_received_timestamp)
            .unwrap_or(0),
        verb: ev.verb.clone(),
        api_group: r.api_group.clone(),
        api_version: r.api_version.clone(),
        resource: r.resource.clone(),
        subresource: r.subresource.clone(),
        namespace,
        name,
        user: ev.user.username.clone(),
        groups: ev.user.groups.clone(),
        impersonated_user: ev.impersonated_user.as_ref().map(|u| u.username.clone()),
        impersonated_groups: ev
            .impersonated_user
            .as_ref()
            .map(|u| u.groups.clone())
            .unwrap_or_default(),
        // The impersonated account when it is one; else the account that made the call (a
        // controller such as Argo CD impersonating a person is still the actor to look at).
        service_account: service_account(&effective.username)
            .or_else(|| service_account(&ev.user.username)),
        source_ips: ev.source_ips.clone(),
        user_agent: ev.user_agent.clone(),
        response_code: ev.response_code,
        outcome: outcome.to_string(),
        summary,
    };
    bound(&mut record);

    let keeps_state = outcome == "applied" && matches!(verb, "create" | "update" | "patch");
    let snapshot = state
        .filter(|_| keeps_state)
        .map(|s| Snapshot(sanitize::bounded(s)));
    (record, snapshot)
}

/// Whether `v` is an object's state rather than a `Status`, options or a list.
fn is_state(v: &Value) -> bool {
    let Some(m) = v.as_object() else {
        return false;
    };
    match m.get("kind").and_then(Value::as_str) {
        Some(k) => !matches!(k, "Status" | "DeleteOptions") && !k.ends_with("List"),
        None => true,
    }
}

fn outcome(ev: &Event, dry_run: bool) -> &'static str {
    let o = if ev.stage == "RequestReceived" {
        "pending"
    } else {
        match ev.response_code {
            Some(c) if c >= 400 => "refused",
            Some(_) => "applied",
            // A panic is answered 500 when it is answered at all.
            None if ev.stage == "Panic" => "refused",
            None => "applied",
        }
    };
    if dry_run && o == "applied" {
        "dry_run"
    } else {
        o
    }
}

/// `dryRun` in the query (create, update, patch and delete all take it), or in a delete's
/// `DeleteOptions` body. The API server accepts only `All`; anything else is refused anyway.
fn is_dry_run(ev: &Event) -> bool {
    // As the API server reads its query (Go's `url.ParseQuery`): a pair with a `;` or a bad
    // escape is dropped, and only `dryRun=All` is a dry run. Anything looser would let a client
    // label a real change a dry run (`?dryRun=%zz` is applied for real) and skip the content
    // rules.
    let in_query = ev.request_uri.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            if pair.contains(';') {
                return false;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            strict_percent_decode(k).as_deref() == Some("dryRun")
                && strict_percent_decode(v).as_deref() == Some("All")
        })
    });
    let in_options = ev.request_object.as_ref().is_some_and(|o| {
        o.get("kind").and_then(Value::as_str) == Some("DeleteOptions")
            && o.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
    });
    in_query || in_options
}

/// Percent-decoding of a query key (Go's parser, which the API server uses, decodes keys).
/// Percent-decoding as Go's query parser does it: `None` on a `%` not followed by two hex digits.
fn strict_percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `namespace/name` of `system:serviceaccount:namespace:name`.
fn service_account(user: &str) -> Option<String> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then(|| format!("{ns}/{name}"))
}

/// The entries of `a` not in `b`, in `a`'s order.
fn missing_from(a: &[String], b: &[String]) -> Vec<String> {
    let b: HashSet<&String> = b.iter().collect();
    a.iter().filter(|x| !b.contains(x)).cloned().collect()
}

/// Every string of the record cleaned and cut, every list bounded.
fn bound(r: &mut ChangeRecord) {
    for s in [
        &mut r.audit_id,
        &mut r.stage,
        &mut r.level,
        &mut r.verb,
        &mut r.api_group,
        &mut r.api_version,
        &mut r.resource,
        &mut r.subresource,
        &mut r.namespace,
        &mut r.name,
        &mut r.user,
        &mut r.user_agent,
        &mut r.outcome,
    ] {
        *s = clean(s);
    }
    for s in [&mut r.impersonated_user, &mut r.service_account]
        .into_iter()
        .flatten()
    {
        *s = clean(s);
    }
    for l in [&mut r.groups, &mut r.impersonated_groups, &mut r.source_ips] {
        clean_list(l);
    }
    let s = &mut r.summary;
    for l in [
        &mut s.hosts,
        &mut s.hosts_added,
        &mut s.hosts_removed,
        &mut s.paths,
        &mut s.backends,
        &mut s.tls_hosts,
        &mut s.tls_secrets,
        &mut s.listeners_without_tls,
        &mut s.rules_added,
        &mut s.rules_removed,
        &mut s.changed_fields,
        &mut s.notes,
    ] {
        clean_list(l);
    }
    for o in [&mut s.secret_type, &mut s.auth_removed]
        .into_iter()
        .flatten()
    {
        *o = clean(o);
    }
    if let Some(c) = &mut s.certificate {
        c.sha256 = clean(&c.sha256);
        c.subject = clean(&c.subject);
        c.not_before = clean(&c.not_before);
        c.not_after = clean(&c.not_after);
        clean_list(&mut c.dns_names);
    }
    if let Some(p) = &mut s.plugin {
        p.kind = clean(&p.kind);
        for o in [&mut p.url, &mut p.failure_policy].into_iter().flatten() {
            *o = clean(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_accounts_are_derived_from_the_user_name() {
        assert_eq!(
            service_account("system:serviceaccount:argocd:argocd-application-controller")
                .as_deref(),
            Some("argocd/argocd-application-controller")
        );
        assert_eq!(service_account("system:serviceaccount:argocd"), None);
        assert_eq!(service_account("system:serviceaccount::x"), None);
        assert_eq!(service_account("system:serviceaccount:a:b:c"), None);
        assert_eq!(service_account("alice"), None);
    }

    #[test]
    fn percent_encoded_query_keys_are_decoded() {
        assert_eq!(strict_percent_decode("%64ryRun").as_deref(), Some("dryRun"));
        assert_eq!(strict_percent_decode("a%2"), None);
        assert_eq!(strict_percent_decode("%zz"), None);
    }
}
