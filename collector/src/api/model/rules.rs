//! `/api/v1/rules` (the rules in force, reload), `/api/v1/rules/replay` (what a rules file would
//! have decided over stored records) and `/api/v1/rule-decisions` (what the rules decided).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The rules in force and the latest reload error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RulesStatus {
    /// Where the rules in force came from.
    pub source: String,
    /// When they were loaded (RFC 3339).
    pub loaded_at: String,
    /// The rules in force.
    pub rules: Vec<RuleSummary>,
    /// Why the latest reload was refused (the rules above stayed in force); null after a
    /// successful load.
    pub last_error: Option<String>,
    /// When that reload was refused.
    pub last_error_at: Option<String>,
}

impl From<crate::detection::RulesStatus> for RulesStatus {
    fn from(s: crate::detection::RulesStatus) -> Self {
        let crate::detection::RulesStatus {
            source,
            loaded_at,
            rules,
            last_error,
            last_error_at,
        } = s;
        RulesStatus {
            source,
            loaded_at,
            rules: rules.into_iter().map(RuleSummary::from).collect(),
            last_error,
            last_error_at,
        }
    }
}

/// One rule in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleSummary {
    /// Unique name.
    pub name: String,
    /// `rate`, `auth_failures`, `status_flood`, `distinct_paths` or `ip_list`.
    pub kind: String,
    /// `deny`, `throttle` or `alert`.
    pub action: String,
    /// Recorded but never enforced.
    pub dry_run: bool,
    /// One line: what triggers it and what it does.
    pub summary: String,
    /// The rule's description, if any.
    pub description: Option<String>,
}

impl From<crate::detection::RuleSummary> for RuleSummary {
    fn from(r: crate::detection::RuleSummary) -> Self {
        let crate::detection::RuleSummary {
            name,
            kind,
            action,
            dry_run,
            summary,
            description,
        } = r;
        RuleSummary {
            name,
            kind: kind.to_string(),
            action: action.to_string(),
            dry_run,
            summary,
            description,
        }
    }
}

/// `POST /api/v1/rules/replay`. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// The text of a standalone rules file (list files resolve against the collector's working
    /// directory).
    pub rules_toml: String,
    /// Window start: a duration ago or an RFC 3339 time (default `24h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Window end (default: now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// What a replay would have decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplayResult {
    /// Window start (RFC 3339).
    pub since: String,
    /// Window end (RFC 3339).
    pub until: String,
    /// Records evaluated.
    pub records: u64,
    /// What the rules would have decided, in time order.
    pub decisions: Vec<RuleDecision>,
    /// Set when more decisions were made than are returned.
    pub truncated: bool,
}

/// The kind of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Request quota per key.
    Rate,
    /// Authentication/authorization failures per address and per principal.
    AuthFailures,
    /// 4xx or 5xx responses per address.
    StatusFlood,
    /// Distinct paths per address.
    DistinctPaths,
    /// Listed addresses and networks.
    IpList,
    /// Kubernetes ingress-policy changes (alerts only).
    Change,
}

impl From<warden_rules::KindName> for RuleKind {
    fn from(k: warden_rules::KindName) -> Self {
        use warden_rules::KindName as K;
        match k {
            K::Rate => RuleKind::Rate,
            K::AuthFailures => RuleKind::AuthFailures,
            K::StatusFlood => RuleKind::StatusFlood,
            K::DistinctPaths => RuleKind::DistinctPaths,
            K::IpList => RuleKind::IpList,
            K::Change => RuleKind::Change,
        }
    }
}

/// What a triggered rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Block the target (403).
    Deny,
    /// Rate-limit the target (429).
    Throttle,
    /// Only notify.
    Alert,
}

impl RuleAction {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Deny => "deny",
            RuleAction::Throttle => "throttle",
            RuleAction::Alert => "alert",
        }
    }
}

impl From<warden_rules::Action> for RuleAction {
    fn from(a: warden_rules::Action) -> Self {
        match a {
            warden_rules::Action::Deny => RuleAction::Deny,
            warden_rules::Action::Throttle => RuleAction::Throttle,
            warden_rules::Action::Alert => RuleAction::Alert,
        }
    }
}

/// What a rule counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The grouped client address.
    Address,
    /// The authenticated principal.
    Principal,
    /// Grouped address and host.
    AddressHost,
    /// Grouped address and path prefix.
    AddressPathPrefix,
    /// A listed network (`ip_list`).
    List,
}

impl From<warden_rules::KeyKind> for KeyKind {
    fn from(k: warden_rules::KeyKind) -> Self {
        use warden_rules::KeyKind as K;
        match k {
            K::Address => KeyKind::Address,
            K::Principal => KeyKind::Principal,
            K::AddressHost => KeyKind::AddressHost,
            K::AddressPathPrefix => KeyKind::AddressPathPrefix,
            K::List => KeyKind::List,
        }
    }
}

/// One explainable rule decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleDecision {
    /// The rule's name.
    pub rule: String,
    /// The rule's kind.
    pub kind: RuleKind,
    /// `rule:<name>`, or `list:<file>` for entries read from a list file.
    pub origin: String,
    /// What to do with the target.
    pub action: RuleAction,
    /// What was counted by.
    pub key_kind: KeyKind,
    /// The key, readable: `203.0.113.7`, `alice`, `203.0.113.7 api.example.com`, ...
    pub key: String,
    /// The network to act on, e.g. `203.0.113.7/32`.
    pub target: String,
    /// The rule's threshold (or rate limit).
    pub threshold: u32,
    /// The rule's window (or rate period), milliseconds; 0 for lists.
    pub window_ms: u64,
    /// Events counted in the window when it triggered.
    pub observed: u32,
    /// Up to five request ids of the events that triggered it, oldest first.
    pub samples: Vec<String>,
    /// When it was decided: the record time, ms since the epoch.
    pub at_ms: i64,
    /// How long the ban lasts after escalation, ms; null for list entries.
    pub ttl_ms: Option<u64>,
    /// `at_ms + ttl_ms`; null when it does not expire.
    pub expires_at_ms: Option<i64>,
    /// The same rule will not decide again on this key before this time (record time).
    pub suppressed_until_ms: Option<i64>,
    /// 1 for a first offence, 2 for the second within the escalation period, and so on.
    pub repeat: u32,
    /// Set when the rule is in dry-run: recorded and reported, never enforced.
    pub dry_run: bool,
    /// For humans.
    pub reason: String,
}

impl From<warden_rules::RuleDecision> for RuleDecision {
    fn from(d: warden_rules::RuleDecision) -> Self {
        let warden_rules::RuleDecision {
            rule,
            kind,
            origin,
            action,
            key_kind,
            key,
            target,
            threshold,
            window_ms,
            observed,
            samples,
            at_ms,
            ttl_ms,
            expires_at_ms,
            suppressed_until_ms,
            repeat,
            dry_run,
            reason,
        } = d;
        RuleDecision {
            rule,
            kind: kind.into(),
            origin,
            action: action.into(),
            key_kind: key_kind.into(),
            key,
            target: target.to_string(),
            threshold,
            window_ms,
            observed,
            samples,
            at_ms,
            ttl_ms,
            expires_at_ms,
            suppressed_until_ms,
            repeat,
            dry_run,
            reason,
        }
    }
}

/// The rule-decision history's parameters; unknown parameters refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RuleDecisionsParams {
    /// Only decisions whose target covers this address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Only decisions since: a duration ago or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Entries at most (default 100, at most 100000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Rule decisions, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleDecisionHistory {
    /// The decisions.
    pub rule_decisions: Vec<RuleDecisionEntry>,
}

/// A recorded rule decision and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleDecisionEntry {
    /// The decision as the rule made it.
    #[serde(flatten)]
    pub decision: RuleDecision,
    /// Row id.
    pub id: i64,
    /// When it was recorded, RFC 3339.
    pub time: String,
    /// The same, ms since the epoch.
    pub time_ms: i64,
    /// What the collector did with it.
    pub outcome: RuleOutcome,
    /// The deny-list decision it made, or null.
    pub decision_id: Option<i64>,
    /// Why it made none (e.g. the allowlist entry covering the target), or null.
    pub detail: Option<String>,
}

/// What the collector did with a rule decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    /// A deny/throttle decision was made and pushed to the filters.
    Banned,
    /// The rule is in dry run: recorded, not enforced.
    DryRun,
    /// The rule's action is `alert`: recorded and notified, not enforced.
    Alert,
    /// The target is covered by the allowlist: no decision was made.
    Allowlisted,
    /// An equal or stronger decision on the target was already in force and was kept.
    Existing,
    /// Making the decision failed (storage); see `detail`.
    Error,
}

impl RuleOutcome {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleOutcome::Banned => "banned",
            RuleOutcome::DryRun => "dry_run",
            RuleOutcome::Alert => "alert",
            RuleOutcome::Allowlisted => "allowlisted",
            RuleOutcome::Existing => "existing",
            RuleOutcome::Error => "error",
        }
    }
}

impl From<crate::detection::Outcome> for RuleOutcome {
    fn from(o: crate::detection::Outcome) -> Self {
        use crate::detection::Outcome as O;
        match o {
            O::Banned => RuleOutcome::Banned,
            O::DryRun => RuleOutcome::DryRun,
            O::Alert => RuleOutcome::Alert,
            O::Allowlisted => RuleOutcome::Allowlisted,
            O::Existing => RuleOutcome::Existing,
            O::Error => RuleOutcome::Error,
        }
    }
}

impl RuleDecisionEntry {
    /// Reads one row of the rule-decision history (the engine's decision as stored, plus the
    /// row's columns) into the wire type.
    pub fn from_stored(row: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(row)
    }
}
