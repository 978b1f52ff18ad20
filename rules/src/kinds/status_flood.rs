//! `status_flood`: `threshold` responses of one status class (`4xx` or `5xx`) within `window`
//! per address. Warden's own 403s and 429s do not count: they are the consequence of an earlier
//! decision, not new evidence.

use super::{Kind, Trigger};
use crate::address::group_key;
use crate::clock::RecordClock;
use crate::config::{Escalation, MAX_THRESHOLD, RuleParser};
use crate::decision::AddressTrigger;
use crate::duration::{duration_ms, fmt_duration};
use crate::engine::Observation;
use crate::matcher::StatusClass;
use crate::window::{EventWindow, Keyed};
use std::time::Duration;

/// The parameters of a `status_flood` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusFlood {
    /// The counted class.
    pub status_class: StatusClass,
    /// Responses that trigger.
    pub threshold: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Kind for StatusFlood {
    const NAME: &'static str = "status_flood";
    const FIELDS: &'static [&'static str] = &["threshold", "window", "status_class"];
    type State = Keyed<EventWindow>;

    fn parse(p: &mut RuleParser<'_, '_, '_>) -> Option<StatusFlood> {
        let threshold = p.req_u32("threshold", MAX_THRESHOLD);
        let window = p.req_window("window");
        let status_class = match p.get("status_class") {
            None => {
                p.err("status_class", "missing (\"4xx\" or \"5xx\")");
                None
            }
            Some(v) => match v.as_str().map(|s| (s, StatusClass::parse(s))) {
                Some((_, Some(c))) => Some(c),
                Some((s, None)) => {
                    p.err(
                        "status_class",
                        format!("\"{s}\" is not a status class (use \"4xx\" or \"5xx\")"),
                    );
                    None
                }
                None => {
                    p.err(
                        "status_class",
                        format!("expected a string, found {}", v.type_str()),
                    );
                    None
                }
            },
        };
        Some(StatusFlood {
            status_class: status_class?,
            threshold: threshold?,
            window: window?,
        })
    }

    fn new_state(&self, _: &RecordClock) -> Keyed<EventWindow> {
        Keyed::default()
    }

    fn observe(&self, windows: &mut Keyed<EventWindow>, cx: &mut Observation<'_, '_>) {
        let (v, rule) = (cx.view, cx.rule);
        if v.warden_blocked || !self.status_class.contains(v.status) {
            return;
        }
        let Some(addr) = v.addr else { return };
        let group = group_key(addr, rule.grouping);
        let cap = self.threshold as usize;
        let n = windows
            .entry(group)
            .record(v.now_ms, duration_ms(self.window), cap, v.request_id);
        if n >= cap {
            let samples = windows.take(group).map(|w| w.samples());
            let trigger = AddressTrigger { addr, group, n };
            cx.out
                .extend(trigger.decide(cx.offences, rule, samples, v.now_ms));
        }
    }

    fn maintain(&self, windows: &mut Keyed<EventWindow>, now_ms: i64, _: Option<&Escalation>) {
        let w = duration_ms(self.window);
        windows.evict_idle(|x| x.is_idle(now_ms, w));
    }

    fn tracked_keys(windows: &Keyed<EventWindow>) -> usize {
        windows.len()
    }

    fn trigger(&self, observed: u32) -> Trigger {
        let what = format!("{} responses", self.status_class);
        Trigger::windowed(observed, &what, self.threshold, self.window)
    }

    fn summary(&self) -> String {
        format!(
            "{} responses >= {} in {}",
            self.status_class,
            self.threshold,
            fmt_duration(self.window)
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::Engine;
    use crate::testing::*;

    rejects!(status_flood_needs_a_class, set [("kind", "\"status_flood\"")], drop [],
        "rules.toml: rule \"login-brute-force\": status_class: missing (\"4xx\" or \"5xx\")");

    rejects!(status_flood_class_must_be_a_class, set [("kind", "\"status_flood\""), ("status_class", "\"4\"")], drop [],
        "rules.toml: rule \"login-brute-force\": status_class: \"4\" is not a status class (use \"4xx\" or \"5xx\")");

    rejects!(status_flood_class_must_be_a_string, set [("kind", "\"status_flood\""), ("status_class", "4")], drop [],
        "rules.toml: rule \"login-brute-force\": status_class: expected a string, found integer");

    #[test]
    fn status_floods_count_only_their_class() {
        let mut engine = Engine::new(rules(
            "[[rules]]\nname = \"scanner\"\nkind = \"status_flood\"\nstatus_class = \"4xx\"\nthreshold = 3\nwindow = \"1m\"\naction = \"deny\"\n",
        ));
        assert!(engine.observe(&rec(T0, "192.0.2.1", 404, "/a")).is_empty());
        assert!(
            engine
                .observe(&rec(T0 + 1, "192.0.2.1", 500, "/a"))
                .is_empty()
        );
        assert!(
            engine
                .observe(&rec(T0 + 2, "192.0.2.1", 404, "/b"))
                .is_empty()
        );
        let d = engine.observe(&rec(T0 + 3, "192.0.2.1", 410, "/c"));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].reason,
            "rule scanner: 3 4xx responses in 1m (threshold 3) from 192.0.2.1; deny 192.0.2.1/32 for 1h"
        );
    }
}
