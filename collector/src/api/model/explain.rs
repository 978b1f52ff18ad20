//! `GET /api/v1/explain?ip=`: why an address is (or is not) blocked.

use super::{AuditEntry, Decision, RuleDecisionEntry};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The address to explain; other parameters refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExplainParams {
    /// The client address (no CIDR).
    pub ip: String,
}

/// Why an address is (or is not) blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Explanation {
    /// The address explained.
    pub ip: String,
    /// Some decision covers it and no allowlist entry does.
    pub blocked: bool,
    /// An allowlist entry covers it.
    pub allowlisted: bool,
    /// Deny and throttle decisions in force covering it (CIDRs included).
    pub decisions: Vec<Decision>,
    /// Allowlist entries covering it.
    pub allowlist: Vec<Decision>,
    /// Dry-run rule decisions that would block it now, were they enforced.
    pub would_block_dry_run: Vec<RuleDecisionEntry>,
    /// Its rule decisions, newest first.
    pub rule_decisions: Vec<RuleDecisionEntry>,
    /// Admin changes on targets covering it, newest first.
    pub audit: Vec<AuditEntry>,
}
