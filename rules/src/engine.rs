//! The engine: evaluates access records one by one, in time order, against a [`RuleSet`].
//!
//! All time comes from the records (the record clock), so [`replay`] over stored records
//! produces exactly the decisions live evaluation produced for the same records in the same order.
//! Per-record work is kept small: conditions are pre-parsed, keys are integers (grouped addresses,
//! or 128-bit fingerprints of principal, host or path prefix) and nothing is allocated unless a
//! key is new or a rule triggers.

use crate::address::{parse_addr, strip_port};
use crate::clock::RecordClock;
use crate::config::{Rule, RuleSet};
use crate::decision::{Ban, Finding, KeyKind, Offences, RuleDecision, decide};
use crate::kinds::{KindState, RuleKind};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use warden_proto::pb::{AccessRecord, DenyKind, Mechanism, Verdict};

/// Idle state is evicted whenever record time has moved on this much since the last pass, so
/// memory stays bounded in replay as well as live, without the caller doing anything.
pub(crate) const MAINTAIN_INTERVAL_MS: i64 = 10_000;

/// Evaluates records against rules; owns all counters and limiter state.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
    states: Vec<RuleState>,
    clock: RecordClock,
    last_maintain_ms: Option<i64>,
    keys: Fingerprints,
}

/// What [`Engine::reload`] did with each rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Unchanged rules: their counters and limiters carried over.
    pub kept: Vec<String>,
    /// Rules whose definition changed: state dropped, they start empty.
    pub changed: Vec<String>,
    /// New rules, starting empty.
    pub added: Vec<String>,
    /// Rules no longer in the set; their state is gone.
    pub removed: Vec<String>,
}

impl Engine {
    /// An engine with empty state.
    pub fn new(rules: RuleSet) -> Engine {
        let clock = RecordClock::default();
        let states = rules
            .rules()
            .iter()
            .map(|r| RuleState::new(r.clone(), &clock))
            .collect();
        Engine {
            rules,
            states,
            clock,
            last_maintain_ms: None,
            keys: Fingerprints::default(),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The record clock: the time of the newest record seen, ms since the Unix epoch (0 before
    /// the first).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Evaluates one record; returns the decisions it triggered (usually none, which does not
    /// allocate).
    pub fn observe(&mut self, record: &AccessRecord) -> Vec<RuleDecision> {
        let mut out = Vec::new();
        self.observe_into(record, &mut out);
        out
    }

    /// Like [`Engine::observe`], appending to `out`.
    pub fn observe_into(&mut self, record: &AccessRecord, out: &mut Vec<RuleDecision>) {
        let now_ms = self.clock.advance_to(record.time_ms);
        match self.last_maintain_ms {
            None => self.last_maintain_ms = Some(now_ms),
            Some(last) if now_ms - last >= MAINTAIN_INTERVAL_MS => self.maintain(),
            Some(_) => {}
        }
        let view = View::new(record, now_ms);
        for state in &mut self.states {
            state.observe(&view, &self.keys, out);
        }
    }

    /// Evicts idle keys (all their events out of the window, limiter state equal to a fresh
    /// key's, offences no longer suppressing or escalating). Eviction never changes a decision,
    /// only memory; it is measured on the record clock, and [`Engine::observe`] runs it every
    /// 10 s of record time, so calling it is optional.
    pub fn maintain(&mut self) {
        let now_ms = self.clock.now_ms();
        self.last_maintain_ms = Some(now_ms);
        for state in &mut self.states {
            state.maintain(now_ms);
        }
    }

    /// Swaps in a new rule set. Rules whose definition is unchanged keep their counters,
    /// limiters and offence history; changed and new rules start empty; removed rules' state is
    /// dropped. Validation happened when `rules` was loaded: an invalid file never gets here.
    pub fn reload(&mut self, rules: RuleSet) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let mut old: HashMap<Arc<str>, RuleState> = self
            .states
            .drain(..)
            .map(|s| (s.rule.name.clone(), s))
            .collect();
        for rule in rules.rules() {
            let name = rule.name.to_string();
            let state = match old.remove(&rule.name) {
                Some(mut s) if *s.rule == **rule => {
                    summary.kept.push(name);
                    s.rule = rule.clone();
                    s
                }
                Some(_) => {
                    summary.changed.push(name);
                    RuleState::new(rule.clone(), &self.clock)
                }
                None => {
                    summary.added.push(name);
                    RuleState::new(rule.clone(), &self.clock)
                }
            };
            self.states.push(state);
        }
        summary.removed = old.into_keys().map(|k| k.to_string()).collect();
        summary.removed.sort();
        self.rules = rules;
        summary
    }

    /// One decision per entry of every `ip_list` rule, stamped with the record clock.
    pub fn list_decisions(&self) -> Vec<RuleDecision> {
        list_decisions(&self.rules, self.clock.now_ms())
    }

    /// Keys held across all rules (windows, limiters and offence histories), for metrics.
    pub fn tracked_keys(&self) -> usize {
        self.states.iter().map(RuleState::tracked_keys).sum()
    }
}

/// Evaluates `records` (in time order) with a fresh engine: what the rules would have decided.
/// List decisions are not included; see [`list_decisions`].
pub fn replay<I>(rules: &RuleSet, records: I) -> Vec<RuleDecision>
where
    I: IntoIterator,
    I::Item: Borrow<AccessRecord>,
{
    let mut engine = Engine::new(rules.clone());
    let mut out = Vec::new();
    for record in records {
        engine.observe_into(record.borrow(), &mut out);
    }
    out
}

/// One decision per listed network of every `ip_list` rule. They do not expire: the collector
/// replaces the set of `list:`/`ip_list` decisions when the rules or list files are reloaded.
pub fn list_decisions(rules: &RuleSet, now_ms: i64) -> Vec<RuleDecision> {
    let mut out = Vec::new();
    for rule in rules.rules() {
        let RuleKind::IpList(list) = &rule.kind else {
            continue;
        };
        for listed in list.nets.iter() {
            let source = listed.origin.strip_prefix("list:").unwrap_or("the rule");
            let note = listed
                .note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            out.push(RuleDecision {
                rule: rule.name.to_string(),
                kind: rule.kind.name(),
                origin: listed.origin.clone(),
                action: rule.action,
                key_kind: KeyKind::List,
                key: listed.net.to_string(),
                target: listed.net,
                threshold: 0,
                window_ms: 0,
                observed: 0,
                samples: Vec::new(),
                at_ms: now_ms,
                ttl_ms: None,
                expires_at_ms: None,
                suppressed_until_ms: None,
                repeat: 1,
                dry_run: rule.dry_run,
                reason: format!(
                    "rule {}: {} listed in {source}{note}; {}{}",
                    rule.name,
                    listed.net,
                    rule.action.as_str(),
                    if rule.dry_run { " [dry run]" } else { "" }
                ),
            });
        }
    }
    out
}

/// Per-engine random keys for fingerprints, so crafted principal names or paths cannot be made
/// to collide.
#[derive(Debug, Default)]
pub(crate) struct Fingerprints {
    a: RandomState,
    b: RandomState,
}

impl Fingerprints {
    /// A 128-bit fingerprint of (`tag`, `addr`, `text`), `text` compared case-insensitively when
    /// `fold_case`.
    pub(crate) fn of(&self, tag: u8, addr: u128, text: &str, fold_case: bool) -> u128 {
        let mut a = self.a.build_hasher();
        let mut b = self.b.build_hasher();
        for h in [&mut a, &mut b] {
            h.write_u8(tag);
            h.write_u128(addr);
            if fold_case && text.bytes().any(|c| c.is_ascii_uppercase()) {
                for c in text.bytes() {
                    h.write_u8(c.to_ascii_lowercase());
                }
            } else {
                h.write(text.as_bytes());
            }
        }
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    /// A 64-bit fingerprint of a path (`distinct_paths` counts paths by it).
    pub(crate) fn path(&self, path: &str) -> u64 {
        let mut h = self.a.build_hasher();
        h.write(path.as_bytes());
        h.finish()
    }
}

// Fingerprint tags, one list for every kind, so that keys of different meaning never meet.
/// Tag of a principal (or claimed user) key.
pub(crate) const TAG_PRINCIPAL: u8 = 1;
/// Tag of an address-and-host key.
pub(crate) const TAG_HOST: u8 = 2;
/// Tag of an address-and-path-prefix key.
pub(crate) const TAG_PATH_PREFIX: u8 = 3;

/// What the rules look at in a record, extracted once per record.
pub(crate) struct View<'r> {
    /// The record clock after this record.
    pub(crate) now_ms: i64,
    /// The client address, canonical.
    pub(crate) addr: Option<IpAddr>,
    /// The request host, without port.
    pub(crate) host: &'r str,
    pub(crate) method: &'r str,
    /// The path without the query string.
    pub(crate) path: &'r str,
    pub(crate) status: u32,
    /// The authenticated principal, if any.
    pub(crate) principal: Option<&'r str>,
    /// A user name the client claimed that no mechanism verified (the account a failed login
    /// tried).
    pub(crate) claimed_user: Option<&'r str>,
    pub(crate) request_id: &'r str,
    /// 401/403 or an auth mechanism's deny, not counting Warden's own blocks.
    pub(crate) auth_failure: bool,
    /// Answered by Warden's deny list: a consequence of an earlier decision, not new evidence
    /// of auth failures or error floods.
    pub(crate) warden_blocked: bool,
}

impl<'r> View<'r> {
    fn new(r: &'r AccessRecord, now_ms: i64) -> View<'r> {
        let decision = r.decision.as_ref();
        let warden_blocked = decision.is_some_and(|d| {
            d.mechanism == Mechanism::WardenDenyList as i32
                || d.deny_kind == DenyKind::Blocked as i32
                || d.deny_kind == DenyKind::Throttled as i32
        });
        let auth_failure = !warden_blocked
            && (r.status == 401
                || r.status == 403
                || decision.is_some_and(|d| d.verdict == Verdict::Deny as i32));
        View {
            now_ms,
            addr: parse_addr(&r.client_address),
            host: strip_port(&r.authority),
            method: &r.method,
            path: r.path.split_once('?').map_or(r.path.as_str(), |(p, _)| p),
            status: r.status,
            principal: r
                .principal
                .as_ref()
                .map(|p| p.name.as_str())
                .filter(|n| !n.is_empty()),
            claimed_user: Some(r.claimed_user.as_str()).filter(|n| !n.is_empty()),
            request_id: &r.request_id,
            auth_failure,
            warden_blocked,
        }
    }
}

/// One rule and its state.
#[derive(Debug)]
struct RuleState {
    rule: Arc<Rule>,
    /// Offences per key, behind suppression and escalation (a kind may keep more of its own).
    offences: Offences,
    kind: KindState,
}

/// What a kind sees of one record it observes, and where its decisions go.
pub(crate) struct Observation<'a, 'r> {
    /// The rule being evaluated.
    pub(crate) rule: &'a Rule,
    /// The record.
    pub(crate) view: &'a View<'r>,
    /// The engine's fingerprint keys.
    pub(crate) keys: &'a Fingerprints,
    /// The rule's offences per key.
    pub(crate) offences: &'a mut Offences,
    /// Decisions made so far for this record.
    pub(crate) out: &'a mut Vec<RuleDecision>,
}

impl Observation<'_, '_> {
    /// Adds the decision for `finding`, with the ban its key earned.
    pub(crate) fn decide(&mut self, finding: &Finding, ban: Ban) {
        self.out
            .push(decide(self.rule, finding, self.view.now_ms, ban));
    }
}

impl RuleState {
    fn new(rule: Arc<Rule>, clock: &RecordClock) -> RuleState {
        let kind = rule.kind.new_state(clock);
        RuleState {
            rule,
            offences: Offences::default(),
            kind,
        }
    }

    fn observe(&mut self, v: &View<'_>, keys: &Fingerprints, out: &mut Vec<RuleDecision>) {
        let rule = &*self.rule;
        if !rule.kind.name().observes_records()
            || !rule.matcher.matches(v.host, v.method, v.path, v.status)
        {
            return;
        }
        let mut cx = Observation {
            rule,
            view: v,
            keys,
            offences: &mut self.offences,
            out,
        };
        rule.kind.observe(&mut self.kind, &mut cx);
    }

    fn maintain(&mut self, now_ms: i64) {
        let escalation = self.rule.escalation.as_ref();
        self.offences.evict(now_ms, escalation);
        self.rule.kind.maintain(&mut self.kind, now_ms, escalation);
    }

    fn tracked_keys(&self) -> usize {
        self.offences.len() + self.kind.tracked_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn the_default_rules_stop_a_guesser_that_stays_under_the_per_minute_threshold() {
        // About 13,000 guesses a day got through the shipped rules at nine a minute.
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/default-rules.toml");
        let mut engine = Engine::new(RuleSet::load(&path).unwrap());
        let mut out = Vec::new();
        for i in 0..60 {
            out.extend(engine.observe(&rec(T0 + i * 7_000, "203.0.113.60", 401, "/login")));
        }
        let rules: Vec<&str> = out.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, ["slow-guessing"], "{out:?}");
    }

    #[test]
    fn no_repeat_decision_while_banned_then_an_escalated_one() {
        let mut engine = Engine::new(rules(BRUTE));
        let first = failures(&mut engine, "203.0.113.7", T0, 100, 10);
        assert_eq!(first.len(), 1);
        // Still attacking during the 15m ban: nothing new.
        assert!(failures(&mut engine, "203.0.113.7", T0 + 10_000, 100, 50).is_empty());
        let after = first[0].suppressed_until_ms.unwrap();
        let second = failures(&mut engine, "203.0.113.7", after, 100, 10);
        assert_eq!(second.len(), 1);
        assert_eq!((second[0].repeat, second[0].ttl_ms), (2, Some(30 * 60_000)));
        assert!(
            second[0]
                .reason
                .ends_with("deny 203.0.113.7/32 for 30m (offence 2)"),
            "{}",
            second[0].reason
        );
        let third_at = second[0].suppressed_until_ms.unwrap();
        let third = failures(&mut engine, "203.0.113.7", third_at, 100, 10);
        assert_eq!(
            (third[0].repeat, third[0].ttl_ms),
            (3, Some(40 * 60_000)),
            "capped at max_ttl"
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_per_64_by_default() {
        let mut engine = Engine::new(rules(BRUTE));
        let mut out = Vec::new();
        for i in 0..10 {
            // Ten addresses of one /64.
            out.extend(engine.observe(&rec(
                T0 + i,
                &format!("2001:db8:1:2::{:x}", i + 1),
                401,
                "/login",
            )));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].target.to_string(), "2001:db8:1:2::/64");
        assert_eq!(out[0].key, "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv6_grouping_follows_ipv6_prefix() {
        let mut engine = Engine::new(rules(&BRUTE.replace("action", "ipv6_prefix = 128\naction")));
        let mut out = Vec::new();
        for i in 0..10 {
            out.extend(engine.observe(&rec(
                T0 + i,
                &format!("2001:db8:1:2::{:x}", i + 1),
                401,
                "/login",
            )));
        }
        assert!(out.is_empty(), "each address is its own key");
        let mut engine = Engine::new(rules(&BRUTE.replace("action", "ipv6_prefix = 48\naction")));
        let out: Vec<_> = (0..10)
            .flat_map(|i| {
                engine.observe(&rec(T0 + i, &format!("2001:db8:1:{i:x}::1"), 401, "/login"))
            })
            .collect();
        assert_eq!(out[0].target.to_string(), "2001:db8:1::/48");
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let mut engine = Engine::new(rules(BRUTE));
        failures(&mut engine, "::ffff:203.0.113.7", T0, 1, 5);
        let out = failures(&mut engine, "203.0.113.7", T0 + 10, 1, 5);
        assert_eq!(out[0].target.to_string(), "203.0.113.7/32");
    }

    #[test]
    fn match_conditions_restrict_what_is_counted() {
        let text = BRUTE.replace(
            "action",
            "hosts = [\"login.example.com\"]\npath_prefixes = [\"/login\"]\naction",
        );
        let mut engine = Engine::new(rules(&text));
        let mut r = rec(T0, "192.0.2.1", 401, "/login");
        for i in 0..20 {
            r.time_ms = T0 + i;
            assert!(
                engine.observe(&r).is_empty(),
                "host example.com does not match"
            );
        }
        r.authority = "Login.Example.com:443".to_string();
        let out: Vec<_> = (0..10)
            .flat_map(|i| {
                r.time_ms = T0 + 100 + i;
                engine.observe(&r)
            })
            .collect();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn dry_run_decisions_are_flagged() {
        let mut engine = Engine::new(rules(&BRUTE.replace("action", "dry_run = true\naction")));
        let d = failures(&mut engine, "203.0.113.7", T0, 1, 10);
        assert!(d[0].dry_run);
        assert!(d[0].reason.ends_with("[dry run]"), "{}", d[0].reason);
    }

    #[test]
    fn list_entries_become_decisions_with_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("drop.txt"),
            "; DROP\n1.10.16.0/20 ; SBL256894\n",
        )
        .unwrap();
        let path = dir.path().join("rules.toml");
        std::fs::write(
            &path,
            "[[rules]]\nname = \"drop\"\nkind = \"ip_list\"\naction = \"deny\"\nentries = [\"192.0.2.0/24\"]\nfiles = [\"drop.txt\"]\n",
        )
        .unwrap();
        let engine = Engine::new(RuleSet::load(&path).unwrap());
        let d = engine.list_decisions();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].origin.as_str(), d[0].target.to_string()),
            ("rule:drop", "192.0.2.0/24".to_string())
        );
        let file = dir.path().join("drop.txt").display().to_string();
        assert_eq!(d[1].origin, format!("list:{file}"));
        assert_eq!(d[1].ttl_ms, None);
        assert_eq!(
            d[1].reason,
            format!("rule drop: 1.10.16.0/20 listed in {file} (SBL256894); deny")
        );
    }

    /// A deterministic mixed stream: auth failures, 404 bursts, path probes, rate abuse, IPv6.
    fn mixed_stream(n: usize) -> Vec<AccessRecord> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|i| {
                let r = next();
                let addr = if r % 3 == 0 {
                    format!("2001:db8:{:x}::{:x}", r % 7, r % 1000)
                } else {
                    format!("198.51.100.{}", r % 40)
                };
                let status = [200, 200, 401, 403, 404, 500][(r >> 8) as usize % 6];
                let path = format!("/p{}", (r >> 16) % 50);
                let mut rec = rec(T0 + i as i64 * 37, &addr, status, &path);
                if r % 5 == 0 {
                    rec = with_principal(rec, &format!("user{}", r % 4));
                }
                rec
            })
            .collect()
    }

    const MIXED: &str = r#"
[[rules]]
name = "brute"
kind = "auth_failures"
threshold = 8
window = "30s"
action = "deny"
ban_ttl = "1m"
escalation = { factor = 2.0, max_ttl = "10m", period = "1h" }

[[rules]]
name = "scanner"
kind = "status_flood"
status_class = "4xx"
threshold = 12
window = "20s"
action = "deny"
ban_ttl = "2m"

[[rules]]
name = "probe"
kind = "distinct_paths"
threshold = 15
window = "1m"
action = "alert"
ban_ttl = "5m"

[[rules]]
name = "rate"
kind = "rate"
limit = 4
period = "10s"
action = "throttle"
ban_ttl = "30s"

[[rules]]
name = "rate-principal"
kind = "rate"
limit = 10
period = "10s"
key = "principal"
action = "throttle"
ban_ttl = "30s"
dry_run = true
"#;

    #[test]
    fn replay_decides_exactly_what_live_evaluation_decided() {
        let records = mixed_stream(50_000);
        // Live: one engine, records one by one, maintenance at arbitrary points and a reload of
        // the same rules (whose state must carry over) half way.
        let mut live = Engine::new(rules(MIXED));
        let mut live_decisions = Vec::new();
        for (i, r) in records.iter().enumerate() {
            live_decisions.extend(live.observe(r));
            if i % 777 == 0 {
                live.maintain();
            }
            if i == 25_000 {
                assert_eq!(live.reload(rules(MIXED)).kept.len(), 5);
            }
        }
        assert!(
            live_decisions.len() > 100,
            "the stream must exercise the rules"
        );
        for kind in ["brute", "scanner", "probe", "rate", "rate-principal"] {
            assert!(
                live_decisions.iter().any(|d| d.rule == kind),
                "no {kind} decision"
            );
        }
        assert!(
            live_decisions.iter().any(|d| d.repeat > 1),
            "no escalation exercised"
        );
        assert_eq!(replay(&rules(MIXED), &records), live_decisions);
    }

    #[test]
    fn reload_keeps_the_state_of_unchanged_rules() {
        let mut engine = Engine::new(rules(BRUTE));
        failures(&mut engine, "203.0.113.7", T0, 1, 9);
        let extra = "\n[[rules]]\nname = \"probe\"\nkind = \"distinct_paths\"\nthreshold = 3\nwindow = \"1m\"\naction = \"alert\"\n";
        let summary = engine.reload(rules(&format!("{BRUTE}{extra}")));
        assert_eq!(summary.kept, ["login-brute-force"]);
        assert_eq!(summary.added, ["probe"]);
        assert_eq!(
            failures(&mut engine, "203.0.113.7", T0 + 100, 1, 1).len(),
            1,
            "9 + 1 carried over"
        );
    }

    #[test]
    fn reload_resets_changed_rules_and_drops_removed_ones() {
        let mut engine = Engine::new(rules(BRUTE));
        failures(&mut engine, "203.0.113.7", T0, 1, 9);
        let summary = engine.reload(rules(&BRUTE.replace("window = \"1m\"", "window = \"2m\"")));
        assert_eq!(summary.changed, ["login-brute-force"]);
        assert!(
            failures(&mut engine, "203.0.113.7", T0 + 100, 1, 1).is_empty(),
            "counter started over"
        );
        assert_eq!(
            failures(&mut engine, "203.0.113.7", T0 + 200, 1, 9).len(),
            1
        );

        let summary = engine.reload(RuleSet::empty());
        assert_eq!(summary.removed, ["login-brute-force"]);
        assert_eq!(engine.tracked_keys(), 0);
    }

    #[test]
    fn reload_keeps_ban_suppression_of_unchanged_rules() {
        let mut engine = Engine::new(rules(BRUTE));
        assert_eq!(failures(&mut engine, "203.0.113.7", T0, 1, 10).len(), 1);
        engine.reload(rules(BRUTE));
        assert!(
            failures(&mut engine, "203.0.113.7", T0 + 100, 1, 10).is_empty(),
            "still banned"
        );
    }

    #[test]
    fn an_invalid_file_never_reaches_the_engine() {
        let mut engine = Engine::new(rules(BRUTE));
        failures(&mut engine, "203.0.113.7", T0, 1, 9);
        let bad = RuleSet::from_toml_str(&BRUTE.replace("\"1m\"", "\"5x\""), "rules.toml");
        assert!(bad.is_err());
        // The caller keeps the old set: the engine is untouched and still counting.
        assert_eq!(
            failures(&mut engine, "203.0.113.7", T0 + 100, 1, 1).len(),
            1
        );
    }

    #[test]
    fn idle_keys_are_evicted_as_record_time_passes() {
        let mut engine = Engine::new(rules(MIXED));
        for r in mixed_stream(5_000) {
            engine.observe(&r);
        }
        assert!(engine.tracked_keys() > 0);
        // A day and an hour later (past every window, ban, escalation period and the repeat
        // memory of rules without escalation)...
        engine.observe(&rec(T0 + 25 * 3_600_000, "192.0.2.200", 200, "/"));
        engine.maintain();
        // ...only the newest client is left (in the rate limiters).
        assert!(
            engine.tracked_keys() <= 2,
            "{} keys left",
            engine.tracked_keys()
        );
    }

    #[test]
    fn decisions_serialize_for_alerts() {
        let mut engine = Engine::new(rules(BRUTE));
        let d = failures(&mut engine, "203.0.113.7", T0, 1, 10);
        let json = serde_json::to_value(&d[0]).unwrap();
        assert_eq!(json["rule"], "login-brute-force");
        assert_eq!(json["kind"], "auth_failures");
        assert_eq!(json["action"], "deny");
        assert_eq!(json["key_kind"], "address");
        assert_eq!(json["target"], "203.0.113.7/32");
        assert_eq!(json["ttl_ms"], 900_000);
    }

    #[test]
    fn the_engine_can_move_to_another_thread() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Engine>();
        send_sync::<RuleSet>();
    }
}
