//! Detection rules at run time: loads and reloads the rules, evaluates every ingested batch on a
//! dedicated engine thread, turns rule decisions into deny-list decisions, records each one with
//! its explanation in the durable `rule_decisions` table, and keeps `ip_list` decisions in step
//! with their lists.
//!
//! Latency: ingest hands each validated batch to the engine *before* it is committed (the batch is
//! shared, not copied), so a ban is decided while the batch's fsync is still running. The queue
//! is bounded: when it is full, ingest waits (the acknowledgement waits for evaluation, so a busy
//! engine slows the filters down instead of leaving records unevaluated); only an engine stalled
//! for longer than the submit patience has a batch skipped and counted
//! (`warden_rules_records_skipped_total`).

//!
//! Files: [`source`] (rules file, lists, reload), [`runtime`] (the engine thread and acting on
//! decisions), [`history`] (rule decisions kept for explain and replay), [`reconcile`] (list
//! entries as decisions), [`alerts`] (webhook and Alertmanager delivery).

pub mod alerts;
pub mod history;
pub mod reconcile;
pub mod runtime;
pub mod source;

pub use history::{Outcome, query_rule_decisions};
pub use reconcile::{LIST_ACTOR_PREFIX, reconcile_lists};
pub use runtime::{Detection, RulesStatus};
pub use source::{RuleSummary, RulesSource, WATCH_INTERVAL, summarize};

#[cfg(test)]
mod tests;
