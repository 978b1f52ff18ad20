//! What a triggered rule produces, and the per-key offence history behind suppression and
//! escalation.
//!
//! A [`RuleDecision`] carries everything needed to explain it without looking anything up: the
//! rule and its parameters, what was observed, sample request ids, and the resulting ban. The
//! collector stores it, pushes it to Envoy (unless `dry_run` or `alert`), and sends alerts from it.
//! Kinds say what they found (`Finding`); the decision and its reason are built here, the same
//! way for every kind.

use crate::action::Action;
use crate::address::{group_net, net_label};
use crate::config::{Escalation, Rule};
use crate::duration::{duration_ms, fmt_duration};
use crate::kinds::KindName;
use crate::window::KeyMap;
use ipnet::IpNet;
use std::net::IpAddr;
use std::time::Duration;

/// Without `escalation`, how long an offence is remembered for `repeat`.
pub(crate) const DEFAULT_REPEAT_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// What a rule counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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

/// One explainable decision.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleDecision {
    /// The rule's name.
    pub rule: String,
    /// The rule's kind.
    pub kind: KindName,
    /// `rule:<name>`, or `list:<file>` for entries read from a list file.
    pub origin: String,
    /// What to do with the target.
    pub action: Action,
    /// What was counted by.
    pub key_kind: KeyKind,
    /// The key, readable: `203.0.113.7`, `2001:db8:1:2::/64`, `alice`, `203.0.113.7 api.example.com`,
    /// `203.0.113.7 /login`.
    pub key: String,
    /// The network to act on: the grouped client address (a /64 for IPv6 by default) or the
    /// listed CIDR.
    pub target: IpNet,
    /// The rule's threshold (or rate limit).
    pub threshold: u32,
    /// The rule's window (or rate period), milliseconds; 0 for lists.
    pub window_ms: u64,
    /// Events counted in the window when it triggered. For `rate`, `threshold + 1`: the quota is
    /// a GCRA bucket, and the request that found it empty is the one over the limit.
    pub observed: u32,
    /// Up to five request ids of the events that triggered it, oldest first.
    pub samples: Vec<String>,
    /// When it was decided: the record time, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// How long the ban lasts after escalation, milliseconds; `None` for list entries, which last
    /// until the list changes.
    pub ttl_ms: Option<u64>,
    /// `at_ms + ttl_ms`; `None` when it does not expire.
    pub expires_at_ms: Option<i64>,
    /// The same rule will not decide again on this key before this time (record time).
    pub suppressed_until_ms: Option<i64>,
    /// 1 for a first offence, 2 for the second within the escalation period, and so on.
    pub repeat: u32,
    /// Set when the rule is in dry-run: record and report, never enforce.
    pub dry_run: bool,
    /// For humans, e.g. `rule login-brute-force: 10 auth failures in 1m (threshold 10) from
    /// 203.0.113.7; deny for 15m`.
    pub reason: String,
}

/// One key's offence history for one rule.
#[derive(Debug, Clone, Copy)]
struct Offence {
    repeat: u32,
    last_ms: i64,
    suppressed_until_ms: i64,
}

/// The ban a trigger results in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ban {
    /// The TTL after escalation.
    pub(crate) ttl: Duration,
    /// Offence number within the escalation period (1 = first).
    pub(crate) repeat: u32,
    /// No further decision for this key before this time.
    pub(crate) suppressed_until_ms: i64,
}

/// Offence history per key: suppresses repeat decisions during a ban and escalates repeat bans.
#[derive(Debug, Default)]
pub(crate) struct Offences {
    map: KeyMap<Offence>,
}

impl Offences {
    /// Whether `key` is still within the ban of its last offence.
    #[cfg(test)]
    pub(crate) fn is_suppressed(&self, key: u128, now_ms: i64) -> bool {
        self.map
            .get(&key)
            .is_some_and(|o| now_ms < o.suppressed_until_ms)
    }

    /// Records an offence by `key` at `now_ms`. `None` when the key is still suppressed (no new
    /// decision); otherwise the ban to apply, escalated for repeat offences.
    pub(crate) fn offend(
        &mut self,
        key: u128,
        now_ms: i64,
        ban_ttl: Duration,
        escalation: Option<&Escalation>,
    ) -> Option<Ban> {
        let memory = memory_ms(escalation);
        let previous = self.map.get(&key).copied();
        if previous.is_some_and(|o| now_ms < o.suppressed_until_ms) {
            return None;
        }
        let repeat = match previous {
            Some(o) if now_ms - o.last_ms < memory => o.repeat.saturating_add(1),
            _ => 1,
        };
        let ttl = escalated_ttl(ban_ttl, escalation, repeat);
        let suppressed_until_ms = now_ms.saturating_add(duration_ms(ttl));
        self.map.insert(
            key,
            Offence {
                repeat,
                last_ms: now_ms,
                suppressed_until_ms,
            },
        );
        Some(Ban {
            ttl,
            repeat,
            suppressed_until_ms,
        })
    }

    /// Forgets offences that no longer suppress and are too old to count as a repeat.
    pub(crate) fn evict(&mut self, now_ms: i64, escalation: Option<&Escalation>) {
        let memory = memory_ms(escalation);
        self.map
            .retain(|_, o| now_ms < o.suppressed_until_ms || now_ms - o.last_ms < memory);
        crate::window::shrink(&mut self.map);
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn memory_ms(escalation: Option<&Escalation>) -> i64 {
    duration_ms(escalation.map_or(DEFAULT_REPEAT_MEMORY, |e| e.period))
}

/// `ban_ttl × factor^(repeat-1)`, capped at `max_ttl`; without escalation, `ban_ttl`.
pub(crate) fn escalated_ttl(
    ban_ttl: Duration,
    escalation: Option<&Escalation>,
    repeat: u32,
) -> Duration {
    let Some(e) = escalation else { return ban_ttl };
    let exponent = i32::try_from(repeat.saturating_sub(1)).unwrap_or(i32::MAX);
    let secs = ban_ttl.as_secs_f64() * e.factor.powi(exponent);
    if !secs.is_finite() || secs >= e.max_ttl.as_secs_f64() {
        return e.max_ttl;
    }
    // Whole milliseconds, so that TTLs print and compare cleanly.
    Duration::from_millis((secs * 1000.0).round() as u64)
}

/// What a kind found when a rule triggered: the evidence behind a decision.
pub(crate) struct Finding {
    pub(crate) key_kind: KeyKind,
    pub(crate) key: String,
    pub(crate) target: IpNet,
    pub(crate) observed: u32,
    pub(crate) samples: Vec<String>,
    /// e.g. `from 203.0.113.7`, `by principal alice (from 203.0.113.7)`.
    pub(crate) subject: String,
}

/// A count as decisions carry it, saturating.
pub(crate) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A per-address count that reached its rule's threshold.
pub(crate) struct AddressTrigger {
    pub(crate) addr: IpAddr,
    /// The address's group key (its /64 etc.), which the count and the offences are kept by.
    pub(crate) group: u128,
    /// The count observed.
    pub(crate) n: usize,
}

impl AddressTrigger {
    /// The decision, with the window's `samples` as evidence, unless the group's last ban still
    /// runs (offences suppress repeats and escalate).
    pub(crate) fn decide(
        self,
        offences: &mut Offences,
        rule: &Rule,
        samples: Option<Vec<String>>,
        now_ms: i64,
    ) -> Option<RuleDecision> {
        let ban = offences.offend(self.group, now_ms, rule.ban_ttl, rule.escalation.as_ref())?;
        let target = group_net(self.addr, rule.grouping);
        let label = net_label(&target);
        let finding = Finding {
            key_kind: KeyKind::Address,
            subject: format!("from {label}"),
            key: label,
            target,
            observed: count(self.n),
            samples: samples.unwrap_or_default(),
        };
        Some(decide(rule, &finding, now_ms, ban))
    }
}

/// Builds the decision and its human reason.
pub(crate) fn decide(rule: &Rule, f: &Finding, now_ms: i64, ban: Ban) -> RuleDecision {
    let trigger = rule.kind.trigger(f.observed);
    let ttl_text = fmt_duration(ban.ttl);
    let consequence = match rule.action {
        Action::Alert => format!("alert, repeats quiet for {ttl_text}"),
        a => format!("{} {} for {ttl_text}", a.as_str(), f.target),
    };
    let repeat = if ban.repeat > 1 {
        format!(" (offence {})", ban.repeat)
    } else {
        String::new()
    };
    let dry = if rule.dry_run { " [dry run]" } else { "" };
    let ttl_ms = u64::try_from(ban.ttl.as_millis()).unwrap_or(u64::MAX);
    RuleDecision {
        rule: rule.name.to_string(),
        kind: rule.kind.name(),
        origin: format!("rule:{}", rule.name),
        action: rule.action,
        key_kind: f.key_kind,
        key: f.key.clone(),
        target: f.target,
        threshold: trigger.threshold,
        window_ms: u64::try_from(trigger.window.as_millis()).unwrap_or(u64::MAX),
        observed: f.observed,
        samples: f.samples.clone(),
        at_ms: now_ms,
        ttl_ms: Some(ttl_ms),
        expires_at_ms: Some(ban.suppressed_until_ms),
        suppressed_until_ms: Some(ban.suppressed_until_ms),
        repeat: ban.repeat,
        dry_run: rule.dry_run,
        reason: format!(
            "rule {}: {} {}; {consequence}{repeat}{dry}",
            rule.name, trigger.finding, f.subject
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn escalation() -> Escalation {
        Escalation {
            factor: 2.0,
            max_ttl: 50 * MIN,
            period: Duration::from_secs(7 * 24 * 3600),
        }
    }

    #[test]
    fn a_second_offence_gets_a_longer_ban() {
        let mut o = Offences::default();
        let e = escalation();
        let first = o.offend(1, 0, 15 * MIN, Some(&e)).unwrap();
        assert_eq!((first.ttl, first.repeat), (15 * MIN, 1));
        let second = o
            .offend(1, first.suppressed_until_ms, 15 * MIN, Some(&e))
            .unwrap();
        assert_eq!((second.ttl, second.repeat), (30 * MIN, 2));
    }

    #[test]
    fn escalation_is_capped_at_max_ttl() {
        let mut o = Offences::default();
        let e = escalation();
        let mut now = 0;
        let mut ttls = Vec::new();
        for _ in 0..4 {
            let ban = o.offend(1, now, 15 * MIN, Some(&e)).unwrap();
            ttls.push(ban.ttl);
            now = ban.suppressed_until_ms;
        }
        assert_eq!(ttls, [15 * MIN, 30 * MIN, 50 * MIN, 50 * MIN]);
    }

    #[test]
    fn offences_further_apart_than_the_period_start_over() {
        let mut o = Offences::default();
        let e = escalation();
        o.offend(1, 0, 15 * MIN, Some(&e)).unwrap();
        let later = duration_ms(e.period) + 1;
        let ban = o.offend(1, later, 15 * MIN, Some(&e)).unwrap();
        assert_eq!((ban.ttl, ban.repeat), (15 * MIN, 1));
    }

    #[test]
    fn no_new_decision_while_banned() {
        let mut o = Offences::default();
        let ban = o.offend(7, 1_000, MIN, None).unwrap();
        assert_eq!(ban.suppressed_until_ms, 61_000);
        assert!(o.offend(7, 60_999, MIN, None).is_none());
        assert!(o.is_suppressed(7, 60_999));
        let again = o.offend(7, 61_000, MIN, None).unwrap();
        assert_eq!(
            (again.ttl, again.repeat),
            (MIN, 2),
            "no escalation: same TTL, repeat still counted"
        );
    }

    #[test]
    fn old_offences_are_evicted() {
        let mut o = Offences::default();
        o.offend(1, 0, MIN, None).unwrap();
        o.evict(duration_ms(DEFAULT_REPEAT_MEMORY), None);
        assert!(o.is_empty());
    }
}
