//! Keeps `ip_list` decisions in step with their lists: after a (re)load, entries added to a list
//! are banned and entries removed from it are unbanned, under the list's own actor.

use crate::decisions::{Decision, DecisionAction, Decisions, Origin};
use crate::target::Target;
use crate::time::{Ttl, now_ms};
use std::collections::HashMap;
use warden_rules::{Action, RuleSet};

/// Actor prefix of decisions made by `ip_list` rules; the reconciler owns exactly these.
pub const LIST_ACTOR_PREFIX: &str = "ip_list:";
/// Brings the `ip_list` decisions (actor `ip_list:<rule>`) in line with the lists: adds what is
/// missing (one bulk version per origin and action), removes what is no longer listed (one
/// version). Dry-run and `alert` list rules enforce nothing.
pub fn reconcile_lists(decisions: &Decisions, rules: &RuleSet) {
    let wanted_list = warden_rules::list_decisions(rules, now_ms());
    let mut wanted: HashMap<Target, (DecisionAction, String, String, String)> = HashMap::new();
    for d in wanted_list {
        let action = match d.action {
            Action::Deny => DecisionAction::Deny,
            Action::Throttle => DecisionAction::Throttle,
            Action::Alert => continue,
        };
        if d.dry_run {
            continue;
        }
        wanted.entry(Target::from(d.target)).or_insert((
            action,
            d.origin,
            format!("{LIST_ACTOR_PREFIX}{}", d.rule),
            d.reason,
        ));
    }
    let existing = match decisions.by_actor_prefix(LIST_ACTOR_PREFIX) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reconcile list decisions");
            return;
        }
    };
    let existing: HashMap<Target, Decision> = existing.into_iter().map(|d| (d.target, d)).collect();
    let stale: Vec<Target> = existing
        .iter()
        .filter(|(t, d)| {
            wanted.get(t).is_none_or(|(action, origin, actor, _)| {
                d.action != *action || &*d.origin != origin || &*d.actor != actor
            })
        })
        .map(|(t, _)| *t)
        .collect();
    let mut missing: HashMap<(DecisionAction, String, String), (Vec<Target>, String)> =
        HashMap::new();
    for (t, (action, origin, actor, reason)) in &wanted {
        let present = existing
            .get(t)
            .is_some_and(|d| d.action == *action && &*d.origin == origin && &*d.actor == actor);
        if !present {
            missing
                .entry((*action, origin.clone(), actor.clone()))
                .or_insert_with(|| (Vec::new(), reason.clone()))
                .0
                .push(*t);
        }
    }
    // Removals first: a target whose action or list changed is removed, then added again.
    if !stale.is_empty() {
        match decisions.unban_many(&stale, "no longer listed", "warden") {
            Ok(n) => tracing::info!(removed = n, "list decisions no longer listed removed"),
            Err(e) => tracing::warn!(error = %e, "cannot remove stale list decisions"),
        }
    }
    for ((action, origin, actor), (targets, reason)) in missing {
        let Ok(origin_parsed) = origin.parse::<Origin>() else {
            continue;
        };
        let n = targets.len();
        // One reason for the whole bulk load: the per-entry notes stay in the list file.
        let reason = reason
            .split(';')
            .next()
            .map_or_else(String::new, |r| r.trim().to_string());
        match decisions.ban_many(targets, action, Ttl(None), &reason, &actor, &origin_parsed) {
            Ok((added, skipped, version)) => tracing::info!(
                %origin, wanted = n, added, allowlisted = skipped.len(), version,
                "list decisions loaded"
            ),
            Err(e) => tracing::warn!(error = %e, %origin, "cannot load list decisions"),
        }
    }
}
