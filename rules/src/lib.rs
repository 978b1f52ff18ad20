//! Warden's detection rules: turn access records into explainable deny, throttle and alert
//! decisions.
//!
//! Load a [`RuleSet`] (every error names the file, the rule and the field), feed records to an
//! [`Engine`] in time order, and act on the [`RuleDecision`]s it returns. All time comes from the
//! records, so [`replay`] over stored records decides exactly what live evaluation decided.
//!
//! `change` rules judge Kubernetes ingress-policy changes rather than access records: the
//! collector passes each change as [`ChangeFacts`] to [`RuleSet::evaluate_change`] and alerts on
//! the [`ChangeFinding`]s; the engine never evaluates them and they never ban.
//!
//! ```no_run
//! # fn records() -> Vec<warden_proto::pb::AccessRecord> { Vec::new() }
//! let rules = warden_rules::RuleSet::load(std::path::Path::new("rules.toml"))?;
//! let mut engine = warden_rules::Engine::new(rules);
//! for record in records() {
//!     for decision in engine.observe(&record) {
//!         println!("{}", decision.reason);
//!     }
//! }
//! # Ok::<(), warden_rules::RulesErrors>(())
//! ```

pub mod action;
pub mod address;
mod civil;
mod clock;
pub mod config;
pub mod decision;
pub mod duration;
pub mod engine;
pub mod iplist;
pub mod kinds;
pub mod matcher;
#[cfg(test)]
mod testing;
mod window;

pub use action::Action;
pub use config::{Rule, RuleError, RuleSet, RulesErrors};
pub use decision::{KeyKind, RuleDecision};
pub use engine::{Engine, ReloadSummary, list_decisions, replay};
pub use iplist::{ListError, ListedNet, load_list, parse_list};
pub use kinds::{ChangeFacts, ChangeFinding, KindName, RuleKind};
