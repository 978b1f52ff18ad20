//! The rule kinds, one file each, and the registry that makes them a [`RuleKind`].
//!
//! A kind's file holds everything particular to it: its parameters (read and validated from its
//! `[[rules]]` table), its state, and how it observes a record and what it finds. What every kind
//! shares stays outside: the common fields and the rule set ([`crate::config`]), the match
//! conditions ([`crate::matcher`]), address grouping ([`crate::address`]), suppression,
//! escalation and the decision itself ([`crate::decision`]), and the engine loop, reload, replay
//! and list decisions ([`crate::engine`]).
//!
//! Two kinds are not observed by the record engine: `ip_list` decides from its list
//! ([`crate::list_decisions`]) and `change` from the Kubernetes change facts the collector
//! passes to [`crate::RuleSet::evaluate_change`].
//!
//! Adding a kind is a file implementing `Kind` and one line in the `kinds!` registry below:
//! [`RuleKind`], [`KindName`] and the engine's per-rule state are generated from that line, so
//! there is no second list to keep in step.

pub mod auth_failures;
pub mod change;
pub mod distinct_paths;
pub mod ip_list;
pub mod rate;
pub mod status_flood;

pub use auth_failures::AuthFailures;
pub use change::{Change, ChangeFacts, ChangeFinding};
pub use distinct_paths::DistinctPaths;
pub use ip_list::IpList;
pub use rate::{KeyBy, Rate};
pub use status_flood::StatusFlood;

use crate::clock::RecordClock;
use crate::config::{Escalation, RuleParser};
use crate::duration::fmt_duration;
use crate::engine::Observation;
use std::fmt;
use std::time::Duration;

/// What each kind provides; implemented once per kind file.
pub(crate) trait Kind: Sized {
    /// The spelling in the rules file (`kind = "rate"`) and in decisions.
    const NAME: &'static str;
    /// The kind's own fields, besides those of every rule and the match conditions.
    const FIELDS: &'static [&'static str];
    /// False for a kind that decides from a list given in the rule rather than from records:
    /// it takes no match conditions, `ban_ttl` or `escalation`, and is never observed.
    const OBSERVES_RECORDS: bool = true;
    /// True for a kind whose findings have no client address to act on: its `action` may only
    /// be `alert`, which is also its default.
    const ALERTS_ONLY: bool = false;
    /// What the kind keeps per rule between records (counters, windows, limiters).
    type State: fmt::Debug;

    /// Reads the kind's fields (after the common ones), recording every error in `p`.
    fn parse(p: &mut RuleParser<'_, '_, '_>) -> Option<Self>;
    /// Empty state for a new or changed rule.
    fn new_state(&self, clock: &RecordClock) -> Self::State;
    /// Counts one record the rule's conditions matched; pushes a decision when it triggers.
    fn observe(&self, state: &mut Self::State, cx: &mut Observation<'_, '_>);
    /// Forgets keys whose state is the same as a fresh key's.
    fn maintain(&self, state: &mut Self::State, now_ms: i64, escalation: Option<&Escalation>);
    /// Keys held, for metrics.
    fn tracked_keys(state: &Self::State) -> usize;
    /// The threshold, window and finding a decision reports, `observed` being the count.
    fn trigger(&self, observed: u32) -> Trigger;
    /// What triggers the rule, in one line, e.g. `auth failures >= 10 in 1m`.
    fn summary(&self) -> String;
}

/// How a decision describes what triggered it.
pub(crate) struct Trigger {
    /// The rule's threshold (or rate limit).
    pub(crate) threshold: u32,
    /// The rule's window (or rate period).
    pub(crate) window: Duration,
    /// e.g. `10 auth failures in 1m (threshold 10)`.
    pub(crate) finding: String,
}

impl Trigger {
    /// The trigger of a windowed kind: `observed` events (`what`) within `window`.
    pub(crate) fn windowed(observed: u32, what: &str, threshold: u32, window: Duration) -> Trigger {
        Trigger {
            threshold,
            window,
            finding: format!(
                "{observed} {what} in {} (threshold {threshold})",
                fmt_duration(window)
            ),
        }
    }
}

/// Generates, from one line per kind, the enums and dispatch that tie the kinds together.
macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident($params:ty),)+) => {
        /// A kind with its parameters.
        #[derive(Debug, Clone, PartialEq)]
        pub enum RuleKind {
            $($(#[$doc])* $variant($params),)+
        }

        /// The kind of a rule, without its parameters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum KindName {
            $($(#[$doc])* $variant,)+
        }

        /// A rule's state, of its kind.
        #[derive(Debug)]
        pub(crate) enum KindState {
            $($variant(<$params as Kind>::State),)+
        }

        impl KindName {
            /// Every kind, in registry order (the order error messages list them in).
            pub(crate) const ALL: &'static [KindName] = &[$(KindName::$variant,)+];

            /// The spelling used in the rules file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(KindName::$variant => <$params as Kind>::NAME,)+
                }
            }

            /// The kind's own fields.
            pub(crate) fn fields(self) -> &'static [&'static str] {
                match self {
                    $(KindName::$variant => <$params as Kind>::FIELDS,)+
                }
            }

            /// Whether rules of this kind are evaluated against access records by the
            /// [`crate::Engine`]. Those that are not (`ip_list`, `change`) have no `ban_ttl`,
            /// `escalation` or match conditions.
            pub fn observes_records(self) -> bool {
                match self {
                    $(KindName::$variant => <$params as Kind>::OBSERVES_RECORDS,)+
                }
            }

            /// Whether rules of this kind can only alert (`change`): their `action` is always
            /// [`crate::Action::Alert`] and they never produce a ban.
            pub fn alerts_only(self) -> bool {
                match self {
                    $(KindName::$variant => <$params as Kind>::ALERTS_ONLY,)+
                }
            }

            /// Reads the kind's fields of one rule.
            pub(crate) fn parse_params(self, p: &mut RuleParser<'_, '_, '_>) -> Option<RuleKind> {
                match self {
                    $(KindName::$variant => <$params as Kind>::parse(p).map(RuleKind::$variant),)+
                }
            }
        }

        impl RuleKind {
            /// The kind without parameters.
            pub fn name(&self) -> KindName {
                match self {
                    $(RuleKind::$variant(_) => KindName::$variant,)+
                }
            }

            /// What triggers the rule, in one line: `auth failures >= 10 in 1m`,
            /// `rate > 600 per 1m by address`, `2 listed networks from 1 file(s)`.
            pub fn summary(&self) -> String {
                match self {
                    $(RuleKind::$variant(k) => k.summary(),)+
                }
            }

            pub(crate) fn trigger(&self, observed: u32) -> Trigger {
                match self {
                    $(RuleKind::$variant(k) => k.trigger(observed),)+
                }
            }

            pub(crate) fn new_state(&self, clock: &RecordClock) -> KindState {
                match self {
                    $(RuleKind::$variant(k) => KindState::$variant(k.new_state(clock)),)+
                }
            }

            pub(crate) fn observe(&self, state: &mut KindState, cx: &mut Observation<'_, '_>) {
                match (self, state) {
                    $((RuleKind::$variant(k), KindState::$variant(s)) => k.observe(s, cx),)+
                    // State and definition always agree (both built from the same rule).
                    _ => {}
                }
            }

            pub(crate) fn maintain(
                &self,
                state: &mut KindState,
                now_ms: i64,
                escalation: Option<&Escalation>,
            ) {
                match (self, state) {
                    $((RuleKind::$variant(k), KindState::$variant(s)) => {
                        k.maintain(s, now_ms, escalation)
                    })+
                    _ => {}
                }
            }
        }

        impl KindState {
            /// Keys held, for metrics.
            pub(crate) fn tracked_keys(&self) -> usize {
                match self {
                    $(KindState::$variant(s) => <$params as Kind>::tracked_keys(s),)+
                }
            }
        }
    };
}

kinds! {
    /// Request quota per key: at most `limit` requests per `period` (GCRA: `limit` burst,
    /// refilled over `period`).
    Rate(Rate),
    /// Authentication/authorization failures per address and per principal: `threshold` within
    /// `window`.
    AuthFailures(AuthFailures),
    /// 4xx or 5xx responses per address: `threshold` of `status_class` within `window`.
    StatusFlood(StatusFlood),
    /// Distinct paths per address: `threshold` within `window`.
    DistinctPaths(DistinctPaths),
    /// Listed addresses and networks: inline `entries` and those read from `files`.
    IpList(IpList),
    /// Kubernetes ingress-policy changes (Ingress, Gateway, HTTPRoute, AuthorizationPolicy, TLS
    /// Secret, WasmPlugin …): alerts on who changed what, when, and whether protection was
    /// weakened. Evaluated on the collector's change facts, never on access records.
    Change(Change),
}

impl KindName {
    /// Parses the rules file's spelling; `None` for an unknown kind.
    pub(crate) fn parse(s: &str) -> Option<KindName> {
        KindName::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// `rate, auth_failures, …`: every kind, for error messages.
    pub(crate) fn choices() -> String {
        let names: Vec<&str> = KindName::ALL.iter().map(|k| k.as_str()).collect();
        names.join(", ")
    }
}

impl serde::Serialize for KindName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // What `#[derive(Serialize)]` writes for a unit variant, with the rules file's spelling.
        serializer.serialize_unit_variant("KindName", *self as u32, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleSet;

    #[test]
    fn kind_names_are_the_rules_file_spellings_in_registry_order() {
        assert_eq!(
            KindName::choices(),
            "rate, auth_failures, status_flood, distinct_paths, ip_list, change"
        );
        for kind in KindName::ALL {
            assert_eq!(KindName::parse(kind.as_str()), Some(*kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
        }
    }

    #[test]
    fn every_kind_summarizes_its_trigger_in_one_line() {
        let set = RuleSet::from_toml_str(
            r#"
[[rules]]
name = "a"
kind = "rate"
limit = 600
period = "1m"
action = "throttle"

[[rules]]
name = "b"
kind = "auth_failures"
threshold = 10
window = "1m"
action = "deny"

[[rules]]
name = "c"
kind = "status_flood"
status_class = "5xx"
threshold = 50
window = "30s"
action = "alert"

[[rules]]
name = "d"
kind = "distinct_paths"
threshold = 20
window = "1m"
action = "deny"

[[rules]]
name = "e"
kind = "ip_list"
entries = ["192.0.2.0/24", "2001:db8:bad::/48"]
action = "deny"

[[rules]]
name = "f"
kind = "change"
allowed_users = ["alice@example.com", "system:serviceaccount:argocd:*"]
listener_without_tls = true
resources = ["ingresses", "gateways"]
namespaces = ["shop"]
"#,
            "rules.toml",
        )
        .unwrap();
        let summaries: Vec<String> = set.rules().iter().map(|r| r.kind.summary()).collect();
        assert_eq!(
            summaries,
            [
                "rate > 600 per 1m by address",
                "auth failures >= 10 in 1m",
                "5xx responses >= 50 in 30s",
                "distinct paths >= 20 in 1m",
                "2 listed networks from 0 file(s)",
                "change: allowed_users (2 patterns), listener_without_tls on ingresses, gateways in shop",
            ]
        );
    }
}
