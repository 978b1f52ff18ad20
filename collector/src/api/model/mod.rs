//! The HTTP API's wire model: the request and response types of every endpoint, one module per
//! resource. The handlers build their answers from these types and the CLI parses answers into
//! them, so a change to a shape on one side is a compile error on the other; the OpenAPI document
//! (`warden openapi`) is derived from them too.
//!
//! Where the collector has its own type for the same data (a stored record, a decision, a ledger
//! row, a rule decision), the wire type is defined here and converted from it with an exhaustive
//! destructuring: a field added to the inner type does not compile until the wire type says
//! whether it is shown. Query parameters are described by `*Params` types that the CLI
//! serializes into the query string; the handlers keep parsing the raw parameters themselves,
//! because their error messages name the parameter exactly as the caller spelled it.

pub mod audit;
pub mod changes;
pub mod decisions;
pub mod explain;
pub mod filters;
pub mod records;
pub mod report;
pub mod rules;
pub mod summaries;

pub use audit::{
    ApiAuditEntries, ApiAuditEntry, ApiAuditParams, AuditEntries, AuditEntry, AuditParams,
};
pub use changes::{
    CertificateSummary, ChangeRecord, ChangeSummary, ChangesPage, ChangesParams, Finding,
    IngestSummary, PluginSummary, Spike, StoredChange,
};
pub use decisions::{
    Action, AllowBody, AllowList, BanBody, BulkBanBody, BulkBanResult, Decision, DecisionChange,
    DecisionList, ListParams, RemovalParams, Skipped,
};
pub use explain::{ExplainParams, Explanation};
pub use filters::{
    ConnectedFilter, DroppedByReason, FilterAccounting, FiltersResponse, SummaryCounts,
};
pub use records::{Record, RecordsPage, RecordsParams};
pub use report::{ReportFormat, ReportParams, ReportResponse, ReportRow, to_csv};
pub use rules::{
    KeyKind, ReplayBody, ReplayResult, RuleAction, RuleDecision, RuleDecisionEntry,
    RuleDecisionHistory, RuleDecisionsParams, RuleKind, RuleOutcome, RuleSummary, RulesStatus,
};
pub use summaries::{SummariesPage, SummariesParams, Summary};

pub use crate::error::ErrorBody;

#[cfg(test)]
mod tests;
