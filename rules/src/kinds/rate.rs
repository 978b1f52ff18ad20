//! `rate`: at most `limit` requests per `period` per key, by a governor keyed GCRA limiter per
//! rule (bursts of `limit`, refilled evenly over `period`).
//!
//! The limiter's clock is the engine's record clock, not the wall clock (see
//! `crate::clock`), so replay gives the answers live evaluation gave. Keys are the grouped
//! address, the principal, or the grouped address with the host or path prefix.

use super::{Kind, Trigger};
use crate::address::{group_key, group_net, net_label};
use crate::clock::RecordClock;
use crate::config::{Escalation, RuleParser};
use crate::decision::{Finding, KeyKind};
use crate::duration::fmt_duration;
use crate::engine::{Observation, TAG_HOST, TAG_PATH_PREFIX, TAG_PRINCIPAL};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

/// What a `rate` rule counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyBy {
    /// The client address, grouped to `ipv4_prefix` / `ipv6_prefix`.
    Address,
    /// The authenticated principal's name; requests without a principal are not counted.
    Principal,
    /// The grouped address together with the request's host.
    AddressHost,
    /// The grouped address together with the matched `path_prefixes` entry (or, without
    /// `path_prefixes`, the first path segment).
    AddressPathPrefix,
}

impl KeyBy {
    const ALL: [KeyBy; 4] = [
        KeyBy::Address,
        KeyBy::Principal,
        KeyBy::AddressHost,
        KeyBy::AddressPathPrefix,
    ];

    /// The spelling used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyBy::Address => "address",
            KeyBy::Principal => "principal",
            KeyBy::AddressHost => "address_host",
            KeyBy::AddressPathPrefix => "address_path_prefix",
        }
    }
}

/// The parameters of a `rate` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// Requests allowed per period.
    pub limit: NonZeroU32,
    /// The period.
    pub period: Duration,
    /// What requests are counted by.
    pub key: KeyBy,
}

impl Kind for Rate {
    const NAME: &'static str = "rate";
    const FIELDS: &'static [&'static str] = &["limit", "period", "key"];
    /// `None` when the quota cannot be built: unreachable for a loaded rule set (the quota is
    /// checked on load), and a rule that cannot be built stays inert rather than taking the
    /// engine down.
    type State = Option<RateState>;

    fn parse(p: &mut RuleParser<'_, '_, '_>) -> Option<Rate> {
        let limit = p.req_u32("limit", u32::MAX);
        let period = p.req_window("period");
        let key = match p.get("key") {
            None => Some(KeyBy::Address),
            Some(v) => match v.as_str() {
                Some(s) => match KeyBy::ALL.into_iter().find(|k| k.as_str() == s) {
                    Some(k) => Some(k),
                    None => {
                        let choices = KeyBy::ALL.map(KeyBy::as_str).join(", ");
                        p.err("key", format!("\"{s}\" is not one of {choices}"));
                        None
                    }
                },
                None => {
                    p.err("key", format!("expected a string, found {}", v.type_str()));
                    None
                }
            },
        };
        let (limit, period, key) = (limit?, period?, key?);
        let limit = NonZeroU32::new(limit)?;
        // governor refills one request every period/limit; below a nanosecond that is 0 and the
        // quota cannot be built.
        if period.checked_div(limit.get()).is_none_or(|d| d.is_zero()) {
            p.err(
                "limit",
                format!(
                    "{limit} per {} is more than one per nanosecond",
                    fmt_duration(period)
                ),
            );
            return None;
        }
        Some(Rate { limit, period, key })
    }

    fn new_state(&self, clock: &RecordClock) -> Option<RateState> {
        RateState::new(self.limit, self.period, clock)
    }

    fn observe(&self, state: &mut Option<RateState>, cx: &mut Observation<'_, '_>) {
        let Some(rate) = state else { return };
        let (v, rule) = (cx.view, cx.rule);
        let Some(addr) = v.addr else { return };
        let group = group_key(addr, rule.grouping);
        let k = match self.key {
            KeyBy::Address => group,
            KeyBy::Principal => match v.principal {
                Some(p) => cx.keys.of(TAG_PRINCIPAL, 0, p, false),
                None => return,
            },
            KeyBy::AddressHost => cx.keys.of(TAG_HOST, group, v.host, true),
            KeyBy::AddressPathPrefix => {
                let prefix = rule
                    .matcher
                    .matched_prefix(v.path)
                    .unwrap_or_else(|| first_segment(v.path));
                cx.keys.of(TAG_PATH_PREFIX, group, prefix, false)
            }
        };
        if rate.check(k) {
            return;
        }
        let Some(ban) = cx
            .offences
            .offend(k, v.now_ms, rule.ban_ttl, rule.escalation.as_ref())
        else {
            return;
        };
        let target = group_net(addr, rule.grouping);
        let label = net_label(&target);
        let (key_kind, key_text) = match self.key {
            KeyBy::Address => (KeyKind::Address, label.clone()),
            KeyBy::Principal => (
                KeyKind::Principal,
                v.principal.unwrap_or_default().to_string(),
            ),
            KeyBy::AddressHost => (
                KeyKind::AddressHost,
                format!("{label} {}", v.host.to_ascii_lowercase()),
            ),
            KeyBy::AddressPathPrefix => {
                let prefix = rule
                    .matcher
                    .matched_prefix(v.path)
                    .unwrap_or_else(|| first_segment(v.path));
                (KeyKind::AddressPathPrefix, format!("{label} {prefix}"))
            }
        };
        let subject = match self.key {
            KeyBy::Address => format!("from {label}"),
            KeyBy::Principal => format!("by principal {key_text} (from {label})"),
            KeyBy::AddressHost | KeyBy::AddressPathPrefix => format!("from {key_text}"),
        };
        let finding = Finding {
            key_kind,
            key: key_text,
            target,
            observed: self.limit.get().saturating_add(1),
            samples: vec![v.request_id.to_string()],
            subject,
        };
        cx.decide(&finding, ban);
    }

    fn maintain(&self, state: &mut Option<RateState>, _now_ms: i64, _: Option<&Escalation>) {
        // The limiter reads the record clock itself.
        if let Some(rate) = state {
            rate.maintain();
        }
    }

    fn tracked_keys(state: &Option<RateState>) -> usize {
        state.as_ref().map_or(0, RateState::len)
    }

    fn trigger(&self, _observed: u32) -> Trigger {
        // The quota is a GCRA bucket: what triggered is the request that found it empty.
        let limit = self.limit.get();
        Trigger {
            threshold: limit,
            window: self.period,
            finding: format!(
                "more than {limit} requests in {} (limit {limit})",
                fmt_duration(self.period)
            ),
        }
    }

    fn summary(&self) -> String {
        format!(
            "rate > {} per {} by {}",
            self.limit,
            fmt_duration(self.period),
            self.key.as_str()
        )
    }
}

/// The first path segment, `/api` for `/api/v1/x`; `/` for `/`: the key of
/// `address_path_prefix` when the rule has no `path_prefixes`.
pub(crate) fn first_segment(path: &str) -> &str {
    match path.get(1..).and_then(|rest| rest.find('/')) {
        Some(i) => &path[..=i],
        None => path,
    }
}

type Store = HashMapStateStore<u128, foldhash::fast::RandomState>;
type Limiter = RateLimiter<u128, Store, RecordClock, NoOpMiddleware<Duration>>;

/// The limiter of one `rate` rule.
#[derive(Debug)]
pub(crate) struct RateState {
    limiter: Limiter,
}

impl RateState {
    /// A limiter allowing `limit` requests per `period` per key; `None` if the quota cannot be
    /// expressed (rejected when the rules file is loaded, so not expected here).
    pub(crate) fn new(
        limit: NonZeroU32,
        period: Duration,
        clock: &RecordClock,
    ) -> Option<RateState> {
        let quota = Quota::with_period(period.checked_div(limit.get())?)?.allow_burst(limit);
        Some(RateState {
            limiter: RateLimiter::new(quota, Store::default(), clock.clone()),
        })
    }

    /// Counts one request for `key`; false when it exceeds the quota.
    pub(crate) fn check(&self, key: u128) -> bool {
        self.limiter.check_key(&key).is_ok()
    }

    /// Evicts keys whose state is the same as a fresh key's and returns memory to the allocator
    /// when many went.
    pub(crate) fn maintain(&self) {
        let before = self.limiter.len();
        self.limiter.retain_recent();
        let after = self.limiter.len();
        if before > 64 && after < before / 2 {
            self.limiter.shrink_to_fit();
        }
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::testing::*;

    fn limiter(limit: u32, period_s: u64) -> (RateState, RecordClock) {
        let clock = RecordClock::default();
        clock.advance_to(1_700_000_000_000);
        let state = RateState::new(
            NonZeroU32::new(limit).unwrap(),
            Duration::from_secs(period_s),
            &clock,
        )
        .unwrap();
        (state, clock)
    }

    #[test]
    fn the_request_after_the_limit_is_refused() {
        let (rate, _clock) = limiter(3, 60);
        assert!(rate.check(1));
        assert!(rate.check(1));
        assert!(rate.check(1));
        assert!(!rate.check(1));
        assert!(rate.check(2), "keys are independent");
    }

    #[test]
    fn quota_refills_with_record_time_not_wall_time() {
        let (rate, clock) = limiter(2, 60);
        let t = clock.now_ms();
        assert!(rate.check(1) && rate.check(1));
        assert!(!rate.check(1));
        clock.advance_to(t + 30_000);
        assert!(rate.check(1), "one request refilled after period/limit");
        assert!(!rate.check(1));
    }

    #[test]
    fn idle_keys_are_evicted() {
        let (rate, clock) = limiter(10, 60);
        for k in 0..1000 {
            rate.check(k);
        }
        assert_eq!(rate.len(), 1000);
        clock.advance_to(clock.now_ms() + 61_000);
        rate.maintain();
        assert_eq!(rate.len(), 0);
    }

    rejects!(rate_needs_a_limit, set [("kind", "\"rate\""), ("period", "\"1m\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": limit: missing");

    rejects!(rate_limit_must_fit_the_period, set [("kind", "\"rate\""), ("limit", "4000000000"), ("period", "\"1s\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": limit: 4000000000 per 1s is more than one per nanosecond");

    rejects!(rate_key_must_be_known, set [("kind", "\"rate\""), ("limit", "5"), ("period", "\"1m\""), ("key", "\"ip\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": key: \"ip\" is not one of address, principal, address_host, address_path_prefix");

    rejects!(rate_key_must_be_a_string, set [("kind", "\"rate\""), ("limit", "5"), ("period", "\"1m\""), ("key", "1")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": key: expected a string, found integer");

    #[test]
    fn rate_limits_per_address_and_names_the_ipv6_prefix() {
        let mut engine = Engine::new(rules(
            "[[rules]]\nname = \"api-rate\"\nkind = \"rate\"\nlimit = 5\nperiod = \"1m\"\naction = \"throttle\"\nban_ttl = \"5m\"\n",
        ));
        let mut out = Vec::new();
        for i in 0..20 {
            out.extend(engine.observe(&rec(T0 + i, &format!("2001:db8::{i:x}"), 200, "/")));
        }
        assert_eq!(
            out.len(),
            1,
            "the 6th request triggers, the rest are suppressed"
        );
        let d = &out[0];
        assert_eq!(d.target.to_string(), "2001:db8::/64");
        assert_eq!((d.threshold, d.observed, d.window_ms), (5, 6, 60_000));
        assert_eq!(d.samples, [format!("2001:db8::5@{}/", T0 + 5)]);
        assert_eq!(
            d.reason,
            "rule api-rate: more than 5 requests in 1m (limit 5) from 2001:db8::/64; throttle 2001:db8::/64 for 5m"
        );
    }

    #[test]
    fn rate_by_address_and_path_prefix_keys_each_prefix_apart() {
        let mut engine = Engine::new(rules(
            "[[rules]]\nname = \"r\"\nkind = \"rate\"\nlimit = 3\nperiod = \"1m\"\nkey = \"address_path_prefix\"\naction = \"alert\"\n",
        ));
        let mut out = Vec::new();
        for i in 0..3 {
            out.extend(engine.observe(&rec(T0 + i, "192.0.2.1", 200, "/a/x")));
            out.extend(engine.observe(&rec(T0 + i, "192.0.2.1", 200, "/b/y")));
        }
        assert!(out.is_empty());
        let d = engine.observe(&rec(T0 + 5, "192.0.2.1", 200, "/a/z"));
        assert_eq!(d[0].key, "192.0.2.1 /a");
        assert_eq!(d[0].key_kind, KeyKind::AddressPathPrefix);
        assert!(
            d[0].reason.ends_with("alert, repeats quiet for 1h"),
            "{}",
            d[0].reason
        );
    }
}
