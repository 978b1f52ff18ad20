//! `POST /api/v1/k8s-audit` (the Kubernetes API server's audit webhook) and
//! `GET /api/v1/changes` (who changed which ingress object, when, and what the change did).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use crate::policy_changes::IngestSummary;
pub use crate::policy_changes::spike::Spike;
pub use crate::policy_changes::store::{Finding, StoredChange};
pub use warden_k8s_audit::{CertificateSummary, ChangeRecord, ChangeSummary, PluginSummary};

/// The change query's parameters; unknown parameters refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesParams {
    /// Only changes since: a duration ago (`7d`, the default) or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only changes before: a duration ago or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// A resource as kubectl names it: `ingress`, `ingresses`, `HTTPRoute`,
    /// `gateways.networking.istio.io`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Only this namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only changes by this user (effective or authenticated; `*` wildcards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Only changes that touched this host (a wildcard host of a change covers it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The changes that touched `host` (or name no host: policies, plugins) before the latest
    /// spike of its denials within `since` (`true`/`false`): the window is `lookback` before the
    /// spike's first bucket to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_spike: Option<bool>,
    /// Bucket width of the spike search (default `5m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// How far before the spike to list changes (default `1h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookback: Option<String>,
    /// Only changes a `change` rule found something in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<bool>,
    /// Also the `RequestReceived` rows of changes whose answer was logged too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_stages: Option<bool>,
    /// Changes at most (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Stored changes, newest first, and the spike they preceded when one was asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChangesPage {
    /// The changes.
    pub changes: Vec<StoredChange>,
    /// With `before_spike`: the spike found (null when there was none, and then no changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spike: Option<Spike>,
}
