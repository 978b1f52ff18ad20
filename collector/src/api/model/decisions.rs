//! `/api/v1/decisions` (list, ban, unban), `/api/v1/decisions/bulk` and `/api/v1/allowlist`:
//! the deny list and the allowlist, and the answers of their changes.

use crate::decisions::DecisionAction;
use crate::time::rfc3339;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What a decision does to matching clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse (403).
    Deny,
    /// Rate-limit (429).
    Throttle,
    /// Allowlist: never blocked.
    Allow,
}

impl Action {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Throttle => "throttle",
            Action::Allow => "allow",
        }
    }
}

impl From<DecisionAction> for Action {
    fn from(a: DecisionAction) -> Self {
        match a {
            DecisionAction::Deny => Action::Deny,
            DecisionAction::Throttle => Action::Throttle,
            DecisionAction::Allow => Action::Allow,
        }
    }
}

/// One deny, throttle or allow decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    /// Decision id; a replaced decision gets a new one.
    pub id: u64,
    /// Network, e.g. `203.0.113.7/32`.
    pub target: String,
    /// What it does.
    pub action: Action,
    /// When it stops applying, RFC 3339; null for never.
    pub expires_at: Option<String>,
    /// The same, ms since the epoch; null for never.
    pub expires_at_ms: Option<i64>,
    /// Why.
    pub reason: String,
    /// `manual`, `rule:<name>` or `list:<file>`.
    pub origin: String,
    /// Who made it.
    pub actor: String,
    /// When it was made, RFC 3339.
    pub created_at: String,
    /// The same, ms since the epoch.
    pub created_ms: i64,
}

impl From<&crate::decisions::Decision> for Decision {
    fn from(d: &crate::decisions::Decision) -> Self {
        let crate::decisions::Decision {
            id,
            target,
            action,
            expires_at_ms,
            reason,
            origin,
            actor,
            created_ms,
        } = d;
        Decision {
            id: *id,
            target: target.to_string(),
            action: (*action).into(),
            expires_at: expires_at_ms.map(rfc3339),
            expires_at_ms: *expires_at_ms,
            reason: reason.to_string(),
            origin: origin.to_string(),
            actor: actor.to_string(),
            created_at: rfc3339(*created_ms),
            created_ms: *created_ms,
        }
    }
}

/// `limit` of a list; unknown parameters refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Entries listed at most (default 10000, at most 2000000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The deny list (`GET /api/v1/decisions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DecisionList {
    /// The deny-list version listed.
    pub version: u64,
    /// Decisions in force (the list may stop at `limit`).
    pub total: usize,
    /// The decisions listed.
    pub decisions: Vec<Decision>,
}

/// The allowlist (`GET /api/v1/allowlist`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AllowList {
    /// The deny-list version listed.
    pub version: u64,
    /// Entries in force (the list may stop at `limit`).
    pub total: usize,
    /// The entries listed.
    pub entries: Vec<Decision>,
}

/// `POST /api/v1/decisions`: ban one target. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    /// Address or CIDR.
    pub target: String,
    /// How long (`90s`, `15m`, `7d`); absent, `0`, `none` or `forever`: forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Why (at most 1024 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `deny` (default) or `throttle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Refused when present: the audit trail names the authenticated caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// `manual` (default) or `list:<file>`; `rule:` origins are the detection rules' own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// `POST /api/v1/decisions/bulk`: ban many targets as one change. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBanBody {
    /// Addresses or CIDRs.
    pub targets: Vec<String>,
    /// How long; absent: forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `deny` (default) or `throttle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Refused when present: the audit trail names the authenticated caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// `manual` (default) or `list:<file>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// `POST /api/v1/allowlist`: never block a target. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowBody {
    /// Address or CIDR.
    pub target: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Refused when present: the audit trail names the authenticated caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// `DELETE /api/v1/decisions` and `DELETE /api/v1/allowlist`: what to remove. `actor` and
/// unknown parameters are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemovalParams {
    /// Address or CIDR, exactly as banned or allowed (after normalization).
    pub target: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A decision made or removed, with the version its change produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DecisionChange {
    /// The decision added, or the one removed.
    #[serde(flatten)]
    pub decision: Decision,
    /// The deny-list version the change produced.
    pub version: u64,
    /// Whether every connected filter was handed that version before the answer (false when the
    /// propagation wait ran out).
    pub propagated: bool,
}

/// A target of a bulk ban left out because the allowlist covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Skipped {
    /// The target left out.
    pub target: String,
    /// The allowlist entry covering it.
    pub allow: String,
}

/// The answer of a bulk ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BulkBanResult {
    /// Targets banned.
    pub added: usize,
    /// Targets left out.
    pub skipped: Vec<Skipped>,
    /// The deny-list version the change produced.
    pub version: u64,
    /// Whether every connected filter was handed that version before the answer.
    pub propagated: bool,
}
