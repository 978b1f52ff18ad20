//! `auth_failures`: `threshold` requests denied by authentication or authorization within
//! `window`, counted per address and, separately, per account.
//!
//! A failure is a 401 or 403, or a deny by JWT, RBAC, ext_authz or basic auth, but not Warden's
//! own blocks, which are a consequence of an earlier decision rather than new evidence. The
//! account is the principal or, for failed logins (which carry none), the user name the client
//! claimed, so one account attacked from many addresses is caught.

use super::{Kind, Trigger};
use crate::address::{group_key, group_net, net_label};
use crate::clock::RecordClock;
use crate::config::{Escalation, MAX_THRESHOLD, RuleParser};
use crate::decision::{AddressTrigger, Finding, KeyKind, Offences, count};
use crate::duration::{duration_ms, fmt_duration};
use crate::engine::{Observation, TAG_PRINCIPAL};
use crate::window::{EventWindow, Keyed};
use std::time::Duration;

/// The parameters of an `auth_failures` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthFailures {
    /// Failures that trigger.
    pub threshold: u32,
    /// The sliding window.
    pub window: Duration,
}

/// Failure windows per address and per account.
#[derive(Debug, Default)]
pub(crate) struct State {
    by_address: Keyed<EventWindow>,
    by_principal: Keyed<EventWindow>,
    /// Principal offences are kept apart: a principal trigger and an address trigger are
    /// different findings and are suppressed independently.
    principal_offences: Offences,
}

impl Kind for AuthFailures {
    const NAME: &'static str = "auth_failures";
    const FIELDS: &'static [&'static str] = &["threshold", "window"];
    type State = State;

    fn parse(p: &mut RuleParser<'_, '_, '_>) -> Option<AuthFailures> {
        let threshold = p.req_u32("threshold", MAX_THRESHOLD);
        let window = p.req_window("window");
        Some(AuthFailures {
            threshold: threshold?,
            window: window?,
        })
    }

    fn new_state(&self, _: &RecordClock) -> State {
        State::default()
    }

    fn observe(&self, state: &mut State, cx: &mut Observation<'_, '_>) {
        let (v, rule) = (cx.view, cx.rule);
        if !v.auth_failure {
            return;
        }
        // Decisions act on addresses: without one there is nothing to target.
        let Some(addr) = v.addr else { return };
        let now = v.now_ms;
        let window_ms = duration_ms(self.window);
        let cap = self.threshold as usize;
        let group = group_key(addr, rule.grouping);
        let n = state
            .by_address
            .entry(group)
            .record(now, window_ms, cap, v.request_id);
        if n >= cap {
            let samples = state.by_address.take(group).map(|w| w.samples());
            let trigger = AddressTrigger { addr, group, n };
            cx.out
                .extend(trigger.decide(cx.offences, rule, samples, now));
        }
        // Per account: the principal, or the user a failed login claimed (failures carry no
        // principal), so one account attacked from many addresses is caught.
        let (principal, kind) = match (v.principal, v.claimed_user) {
            (Some(p), _) => (p, "principal"),
            (None, Some(c)) => (c, "claimed user"),
            (None, None) => return,
        };
        let pk = cx.keys.of(TAG_PRINCIPAL, 0, principal, false);
        let w = state.by_principal.entry(pk);
        let n = w.record(now, window_ms, cap, v.request_id);
        if n >= cap {
            let samples = w.samples();
            state.by_principal.remove(pk);
            if let Some(ban) =
                state
                    .principal_offences
                    .offend(pk, now, rule.ban_ttl, rule.escalation.as_ref())
            {
                let target = group_net(addr, rule.grouping);
                let finding = Finding {
                    key_kind: KeyKind::Principal,
                    key: principal.to_string(),
                    subject: format!("by {kind} {principal} (from {})", net_label(&target)),
                    target,
                    observed: count(n),
                    samples,
                };
                cx.decide(&finding, ban);
            }
        }
    }

    fn maintain(&self, state: &mut State, now_ms: i64, escalation: Option<&Escalation>) {
        let w = duration_ms(self.window);
        state.by_address.evict_idle(|x| x.is_idle(now_ms, w));
        state.by_principal.evict_idle(|x| x.is_idle(now_ms, w));
        state.principal_offences.evict(now_ms, escalation);
    }

    fn tracked_keys(state: &State) -> usize {
        state.by_address.len() + state.by_principal.len() + state.principal_offences.len()
    }

    fn trigger(&self, observed: u32) -> Trigger {
        Trigger::windowed(observed, "auth failures", self.threshold, self.window)
    }

    fn summary(&self) -> String {
        format!(
            "auth failures >= {} in {}",
            self.threshold,
            fmt_duration(self.window)
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::action::Action;
    use crate::decision::KeyKind;
    use crate::engine::Engine;
    use crate::testing::*;

    #[test]
    fn exactly_threshold_failures_within_the_window_trigger() {
        let mut engine = Engine::new(rules(BRUTE));
        assert!(failures(&mut engine, "203.0.113.7", T0, 1_000, 9).is_empty());
        let d = engine.observe(&rec(T0 + 9_000, "203.0.113.7", 403, "/login"));
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert_eq!(d.rule, "login-brute-force");
        assert_eq!(d.kind, crate::KindName::AuthFailures);
        assert_eq!(d.origin, "rule:login-brute-force");
        assert_eq!(d.key_kind, KeyKind::Address);
        assert_eq!(d.key, "203.0.113.7");
        assert_eq!(d.target.to_string(), "203.0.113.7/32");
        assert_eq!((d.threshold, d.window_ms, d.observed), (10, 60_000, 10));
        assert_eq!(d.samples.len(), 5);
        assert_eq!(d.samples[4], format!("203.0.113.7@{}/login", T0 + 9_000));
        assert_eq!(d.action, Action::Deny);
        assert_eq!((d.ttl_ms, d.repeat, d.dry_run), (Some(900_000), 1, false));
        assert_eq!(d.at_ms, T0 + 9_000);
        assert_eq!(d.suppressed_until_ms, Some(T0 + 9_000 + 900_000));
        assert_eq!(
            d.reason,
            "rule login-brute-force: 10 auth failures in 1m (threshold 10) from 203.0.113.7; deny 203.0.113.7/32 for 15m"
        );
    }

    #[test]
    fn failures_spread_over_exactly_one_window_do_not_trigger() {
        let mut engine = Engine::new(rules(BRUTE));
        // 10 failures, the first exactly 60s before the last: it has left the window.
        assert!(failures(&mut engine, "203.0.113.7", T0, 60_000 / 9, 9).is_empty());
        assert!(
            engine
                .observe(&rec(T0 + 60_000, "203.0.113.7", 401, "/login"))
                .is_empty()
        );
        // One more just inside: 10 in (now - 1m, now].
        assert_eq!(
            engine
                .observe(&rec(T0 + 60_001, "203.0.113.7", 401, "/login"))
                .len(),
            1
        );
    }

    #[test]
    fn warden_blocks_are_not_auth_failures() {
        let mut engine = Engine::new(rules(BRUTE));
        for i in 0..20 {
            assert!(
                engine
                    .observe(&warden_blocked(rec(T0 + i, "203.0.113.7", 403, "/")))
                    .is_empty()
            );
        }
    }

    #[test]
    fn a_principal_trigger_targets_the_address_and_names_the_principal() {
        let mut engine = Engine::new(rules(BRUTE));
        let mut out = Vec::new();
        // Ten addresses, one failure each, all for "alice": only the principal key reaches 10.
        for i in 0..10 {
            let addr = format!("198.51.100.{i}");
            out.extend(engine.observe(&with_principal(rec(T0 + i, &addr, 401, "/login"), "alice")));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key_kind, KeyKind::Principal);
        assert_eq!(out[0].key, "alice");
        assert_eq!(out[0].target.to_string(), "198.51.100.9/32");
        assert!(
            out[0]
                .reason
                .contains("by principal alice (from 198.51.100.9)"),
            "{}",
            out[0].reason
        );
    }

    #[test]
    fn one_claimed_account_failing_from_many_addresses_is_caught() {
        // Failed logins carry no principal; the account they tried is a claimed user.
        let mut engine = Engine::new(rules(BRUTE));
        let mut out = Vec::new();
        for i in 0..10 {
            let mut r = rec(T0 + i, &format!("198.51.100.{i}"), 401, "/login");
            r.claimed_user = "alice".into();
            out.extend(engine.observe(&r));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "alice");
        assert!(
            out[0]
                .reason
                .contains("by claimed user alice (from 198.51.100.9)"),
            "{}",
            out[0].reason
        );
    }
}
