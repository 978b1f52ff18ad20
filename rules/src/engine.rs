//! The engine: evaluates access records one by one, in time order, against a [`RuleSet`].
//!
//! All time comes from the records (see [`RecordClock`]), so [`replay`] over stored records
//! produces exactly the decisions live evaluation produced for the same records in the same order.
//! Per-record work is kept small: conditions are pre-parsed, keys are integers (grouped addresses,
//! or 128-bit fingerprints of principal, host or path prefix) and nothing is allocated unless a
//! key is new or a rule triggers.

use crate::config::{Action, Grouping, KeyBy, Rule, RuleKind, RuleSet, fmt_duration};
use crate::decision::{Ban, KeyKind, Offences, RuleDecision, duration_ms};
use crate::rate::{RateState, RecordClock};
use crate::window::{EventWindow, Keyed, PathWindow};
use ipnet::IpNet;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use warden_proto::pb::{AccessRecord, DenyKind, Mechanism, Verdict};

/// Idle state is evicted whenever record time has moved on this much since the last pass, so
/// memory stays bounded in replay as well as live, without the caller doing anything.
pub const MAINTAIN_INTERVAL_MS: i64 = 10_000;

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
    /// [`MAINTAIN_INTERVAL_MS`] of record time, so calling it is optional.
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
        let RuleKind::IpList { nets, .. } = &rule.kind else {
            continue;
        };
        for listed in nets.iter() {
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
struct Fingerprints {
    a: RandomState,
    b: RandomState,
}

impl Fingerprints {
    /// A 128-bit fingerprint of (`tag`, `addr`, `text`), `text` compared case-insensitively when
    /// `fold_case`.
    fn of(&self, tag: u8, addr: u128, text: &str, fold_case: bool) -> u128 {
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

    fn path(&self, path: &str) -> u64 {
        let mut h = self.a.build_hasher();
        h.write(path.as_bytes());
        h.finish()
    }
}

const TAG_PRINCIPAL: u8 = 1;
const TAG_HOST: u8 = 2;
const TAG_PATH_PREFIX: u8 = 3;

/// What the rules look at in a record, extracted once per record.
struct View<'r> {
    now_ms: i64,
    addr: Option<IpAddr>,
    host: &'r str,
    method: &'r str,
    path: &'r str,
    status: u32,
    principal: Option<&'r str>,
    /// A user name the client claimed that no mechanism verified (the account a failed login
    /// tried).
    claimed_user: Option<&'r str>,
    request_id: &'r str,
    /// 401/403 or an auth mechanism's deny, not counting Warden's own blocks.
    auth_failure: bool,
    /// Answered by Warden's deny list: a consequence of an earlier decision, not new evidence
    /// of auth failures or error floods.
    warden_blocked: bool,
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

/// The client address; IPv4-mapped IPv6 (a dual-stack listener's view of an IPv4 client) is
/// treated as IPv4 so both spellings share a key.
fn parse_addr(s: &str) -> Option<IpAddr> {
    match warden_proto::contract::parse_ip(s) {
        Ok(ip) => Some(ip),
        // Tolerate `addr:port` in case a filter version sends it joined.
        Err(_) => Some(warden_proto::contract::canonical_ip(
            s.parse::<SocketAddr>().ok()?.ip(),
        )),
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// A grouped address as a key: IPv4 in the IPv4-mapped range, so it cannot meet an IPv6 key.
fn group_key(addr: IpAddr, g: Grouping) -> u128 {
    match addr {
        IpAddr::V4(v4) => (0xffff_u128 << 32) | u128::from(u32::from(v4) & mask32(g.ipv4_prefix)),
        IpAddr::V6(v6) => u128::from(v6) & mask128(g.ipv6_prefix),
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

/// The network a grouped address stands for.
fn group_net(addr: IpAddr, g: Grouping) -> IpNet {
    let net = match addr {
        IpAddr::V4(v4) => IpNet::new(
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask32(g.ipv4_prefix))),
            g.ipv4_prefix,
        ),
        IpAddr::V6(v6) => IpNet::new(
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(g.ipv6_prefix))),
            g.ipv6_prefix,
        ),
    };
    // The prefixes were range-checked on load; a full-length net is the safe fallback.
    net.unwrap_or_else(|_| IpNet::from(addr))
}

/// A grouped address as people write it: `203.0.113.7` for a single address, else the CIDR.
fn net_label(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The first path segment, `/api` for `/api/v1/x`; `/` for `/`.
fn first_segment(path: &str) -> &str {
    match path.get(1..).and_then(|rest| rest.find('/')) {
        Some(i) => &path[..=i],
        None => path,
    }
}

#[derive(Debug)]
struct RuleState {
    rule: Arc<Rule>,
    offences: Offences,
    kind: KindState,
}

#[derive(Debug)]
enum KindState {
    Rate(Box<RateState>),
    AuthFailures {
        by_address: Keyed<EventWindow>,
        by_principal: Keyed<EventWindow>,
        /// Principal offences are kept apart: a principal trigger and an address trigger are
        /// different findings and are suppressed independently.
        principal_offences: Offences,
    },
    StatusFlood(Keyed<EventWindow>),
    DistinctPaths(Keyed<PathWindow>),
    IpList,
}

/// What the evidence of a trigger was.
struct Finding {
    key_kind: KeyKind,
    key: String,
    target: IpNet,
    observed: u32,
    samples: Vec<String>,
    /// e.g. `from 203.0.113.7`, `by principal alice (from 203.0.113.7)`.
    subject: String,
}

impl RuleState {
    fn new(rule: Arc<Rule>, clock: &RecordClock) -> RuleState {
        let kind = match &rule.kind {
            RuleKind::Rate { limit, period, .. } => match RateState::new(*limit, *period, clock) {
                Some(rate) => KindState::Rate(Box::new(rate)),
                // Unreachable for a loaded rule set (the quota is checked on load); a rule that
                // cannot be built stays inert rather than taking the engine down.
                None => KindState::IpList,
            },
            RuleKind::AuthFailures { .. } => KindState::AuthFailures {
                by_address: Keyed::default(),
                by_principal: Keyed::default(),
                principal_offences: Offences::default(),
            },
            RuleKind::StatusFlood { .. } => KindState::StatusFlood(Keyed::default()),
            RuleKind::DistinctPaths { .. } => KindState::DistinctPaths(Keyed::default()),
            RuleKind::IpList { .. } => KindState::IpList,
        };
        RuleState {
            rule,
            offences: Offences::default(),
            kind,
        }
    }

    fn observe(&mut self, v: &View<'_>, keys: &Fingerprints, out: &mut Vec<RuleDecision>) {
        let rule = &*self.rule;
        if matches!(self.kind, KindState::IpList)
            || !rule.matcher.matches(v.host, v.method, v.path, v.status)
        {
            return;
        }
        let now = v.now_ms;
        match (&mut self.kind, &rule.kind) {
            (KindState::Rate(rate), RuleKind::Rate { limit, key, .. }) => {
                let Some(addr) = v.addr else { return };
                let group = group_key(addr, rule.grouping);
                let k = match key {
                    KeyBy::Address => group,
                    KeyBy::Principal => match v.principal {
                        Some(p) => keys.of(TAG_PRINCIPAL, 0, p, false),
                        None => return,
                    },
                    KeyBy::AddressHost => keys.of(TAG_HOST, group, v.host, true),
                    KeyBy::AddressPathPrefix => {
                        let prefix = rule
                            .matcher
                            .matched_prefix(v.path)
                            .unwrap_or_else(|| first_segment(v.path));
                        keys.of(TAG_PATH_PREFIX, group, prefix, false)
                    }
                };
                if rate.check(k) {
                    return;
                }
                let Some(ban) =
                    self.offences
                        .offend(k, now, rule.ban_ttl, rule.escalation.as_ref())
                else {
                    return;
                };
                let target = group_net(addr, rule.grouping);
                let label = net_label(&target);
                let (key_kind, key_text) = match key {
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
                let subject = match key {
                    KeyBy::Address => format!("from {label}"),
                    KeyBy::Principal => format!("by principal {key_text} (from {label})"),
                    KeyBy::AddressHost | KeyBy::AddressPathPrefix => format!("from {key_text}"),
                };
                let finding = Finding {
                    key_kind,
                    key: key_text,
                    target,
                    observed: limit.get().saturating_add(1),
                    samples: vec![v.request_id.to_string()],
                    subject,
                };
                out.push(decide(rule, &finding, now, ban));
            }
            (
                KindState::AuthFailures {
                    by_address,
                    by_principal,
                    principal_offences,
                },
                RuleKind::AuthFailures { threshold, window },
            ) => {
                if !v.auth_failure {
                    return;
                }
                // Decisions act on addresses: without one there is nothing to target.
                let Some(addr) = v.addr else { return };
                let window_ms = duration_ms(*window);
                let cap = *threshold as usize;
                let group = group_key(addr, rule.grouping);
                let n = by_address
                    .entry(group)
                    .record(now, window_ms, cap, v.request_id);
                if n >= cap {
                    let samples = by_address.take(group).map(|w| w.samples());
                    let trigger = AddressTrigger { addr, group, n };
                    out.extend(trigger.decide(&mut self.offences, rule, samples, now));
                }
                // Per account: the principal, or the user a failed login claimed (failures
                // carry no principal), so one account attacked from many addresses is caught.
                let (principal, kind) = match (v.principal, v.claimed_user) {
                    (Some(p), _) => (p, "principal"),
                    (None, Some(c)) => (c, "claimed user"),
                    (None, None) => return,
                };
                let pk = keys.of(TAG_PRINCIPAL, 0, principal, false);
                let w = by_principal.entry(pk);
                let n = w.record(now, window_ms, cap, v.request_id);
                if n >= cap {
                    let samples = w.samples();
                    by_principal.remove(pk);
                    if let Some(ban) =
                        principal_offences.offend(pk, now, rule.ban_ttl, rule.escalation.as_ref())
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
                        out.push(decide(rule, &finding, now, ban));
                    }
                }
            }
            (
                KindState::StatusFlood(windows),
                RuleKind::StatusFlood {
                    status_class,
                    threshold,
                    window,
                },
            ) => {
                if v.warden_blocked || !status_class.contains(v.status) {
                    return;
                }
                let Some(addr) = v.addr else { return };
                let group = group_key(addr, rule.grouping);
                let cap = *threshold as usize;
                let n = windows
                    .entry(group)
                    .record(now, duration_ms(*window), cap, v.request_id);
                if n >= cap {
                    let samples = windows.take(group).map(|w| w.samples());
                    let trigger = AddressTrigger { addr, group, n };
                    out.extend(trigger.decide(&mut self.offences, rule, samples, now));
                }
            }
            (KindState::DistinctPaths(windows), RuleKind::DistinctPaths { threshold, window }) => {
                let Some(addr) = v.addr else { return };
                let group = group_key(addr, rule.grouping);
                let cap = *threshold as usize;
                let n = windows.entry(group).record(
                    now,
                    duration_ms(*window),
                    cap,
                    keys.path(v.path),
                    v.request_id,
                );
                if n >= cap {
                    let samples = windows.take(group).map(|w| w.samples());
                    let trigger = AddressTrigger { addr, group, n };
                    out.extend(trigger.decide(&mut self.offences, rule, samples, now));
                }
            }
            // State and definition always agree (both built from the same rule).
            _ => {}
        }
    }

    fn maintain(&mut self, now_ms: i64) {
        let rule = &*self.rule;
        let escalation = rule.escalation.as_ref();
        self.offences.evict(now_ms, escalation);
        match (&mut self.kind, &rule.kind) {
            (KindState::Rate(rate), _) => rate.maintain(),
            (
                KindState::AuthFailures {
                    by_address,
                    by_principal,
                    principal_offences,
                },
                RuleKind::AuthFailures { window, .. },
            ) => {
                let w = duration_ms(*window);
                by_address.evict_idle(|x| x.is_idle(now_ms, w));
                by_principal.evict_idle(|x| x.is_idle(now_ms, w));
                principal_offences.evict(now_ms, escalation);
            }
            (KindState::StatusFlood(windows), RuleKind::StatusFlood { window, .. }) => {
                let w = duration_ms(*window);
                windows.evict_idle(|x| x.is_idle(now_ms, w));
            }
            (KindState::DistinctPaths(windows), RuleKind::DistinctPaths { window, .. }) => {
                let w = duration_ms(*window);
                windows.evict_idle(|x| x.is_idle(now_ms, w));
            }
            _ => {}
        }
    }

    fn tracked_keys(&self) -> usize {
        self.offences.len()
            + match &self.kind {
                KindState::Rate(rate) => rate.len(),
                KindState::AuthFailures {
                    by_address,
                    by_principal,
                    principal_offences,
                } => by_address.len() + by_principal.len() + principal_offences.len(),
                KindState::StatusFlood(w) => w.len(),
                KindState::DistinctPaths(w) => w.len(),
                KindState::IpList => 0,
            }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A per-address count that reached its rule's threshold.
struct AddressTrigger {
    addr: IpAddr,
    /// The address's group key (its /64 etc.), which the count and the offences are kept by.
    group: u128,
    /// The count observed.
    n: usize,
}

impl AddressTrigger {
    /// The decision, with the window's `samples` as evidence, unless the group's last ban still
    /// runs (offences suppress repeats and escalate).
    fn decide(
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
fn decide(rule: &Rule, f: &Finding, now_ms: i64, ban: Ban) -> RuleDecision {
    let (threshold, window, what) = match &rule.kind {
        RuleKind::Rate { limit, period, .. } => (limit.get(), *period, String::new()),
        RuleKind::AuthFailures { threshold, window } => {
            (*threshold, *window, "auth failures".to_string())
        }
        RuleKind::StatusFlood {
            status_class,
            threshold,
            window,
        } => (*threshold, *window, format!("{status_class} responses")),
        RuleKind::DistinctPaths { threshold, window } => {
            (*threshold, *window, "distinct paths".to_string())
        }
        RuleKind::IpList { .. } => (0, Duration::ZERO, String::new()),
    };
    let window_text = fmt_duration(window);
    let finding = match &rule.kind {
        RuleKind::Rate { .. } => {
            format!("more than {threshold} requests in {window_text} (limit {threshold})")
        }
        _ => format!(
            "{} {what} in {window_text} (threshold {threshold})",
            f.observed
        ),
    };
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
        threshold,
        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        observed: f.observed,
        samples: f.samples.clone(),
        at_ms: now_ms,
        ttl_ms: Some(ttl_ms),
        expires_at_ms: Some(ban.suppressed_until_ms),
        suppressed_until_ms: Some(ban.suppressed_until_ms),
        repeat: ban.repeat,
        dry_run: rule.dry_run,
        reason: format!(
            "rule {}: {finding} {}; {consequence}{repeat}{dry}",
            rule.name, f.subject
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_proto::pb::{AuthDecision, Principal};

    const T0: i64 = 1_700_000_000_000;

    fn rules(text: &str) -> RuleSet {
        RuleSet::from_toml_str(text, "rules.toml").unwrap()
    }

    fn rec(t: i64, addr: &str, status: u32, path: &str) -> AccessRecord {
        AccessRecord {
            time_ms: t,
            request_id: format!("{addr}@{t}{path}"),
            client_address: addr.to_string(),
            authority: "example.com".to_string(),
            method: "GET".to_string(),
            path: path.to_string(),
            status,
            ..Default::default()
        }
    }

    fn with_principal(mut r: AccessRecord, name: &str) -> AccessRecord {
        r.principal = Some(Principal {
            name: name.to_string(),
            ..Default::default()
        });
        r
    }

    fn warden_blocked(mut r: AccessRecord) -> AccessRecord {
        r.decision = Some(AuthDecision {
            verdict: Verdict::Deny as i32,
            mechanism: Mechanism::WardenDenyList as i32,
            deny_kind: DenyKind::Blocked as i32,
            ..Default::default()
        });
        r
    }

    const BRUTE: &str = r#"
[[rules]]
name = "login-brute-force"
kind = "auth_failures"
threshold = 10
window = "1m"
action = "deny"
ban_ttl = "15m"
escalation = { factor = 2.0, max_ttl = "40m", period = "7d" }
"#;

    /// Feeds `n` 401s from `addr`, one every `step_ms` from `start`; returns all decisions.
    fn failures(
        engine: &mut Engine,
        addr: &str,
        start: i64,
        step_ms: i64,
        n: i64,
    ) -> Vec<RuleDecision> {
        (0..n)
            .flat_map(|i| engine.observe(&rec(start + i * step_ms, addr, 401, "/login")))
            .collect()
    }

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

    #[test]
    fn distinct_paths_ignore_repeats_and_query_strings() {
        let mut engine = Engine::new(rules(
            "[[rules]]\nname = \"probe\"\nkind = \"distinct_paths\"\nthreshold = 3\nwindow = \"1m\"\naction = \"deny\"\n",
        ));
        for (i, path) in ["/a", "/a?x=1", "/a", "/b", "/b?y"].iter().enumerate() {
            assert!(
                engine
                    .observe(&rec(T0 + i as i64, "192.0.2.1", 200, path))
                    .is_empty()
            );
        }
        let d = engine.observe(&rec(T0 + 9, "192.0.2.1", 200, "/c"));
        assert_eq!(d[0].observed, 3);
        assert_eq!(d[0].samples.len(), 3, "one sample per new path");
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

    #[test]
    fn helpers_group_and_strip() {
        assert_eq!(strip_port("example.com:8443"), "example.com");
        assert_eq!(strip_port("[2001:db8::1]:443"), "[2001:db8::1]");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(first_segment("/api/v1/x"), "/api");
        assert_eq!(first_segment("/login"), "/login");
        assert_eq!(
            parse_addr("192.0.2.1:5000"),
            Some("192.0.2.1".parse().unwrap())
        );
        let g = Grouping {
            ipv4_prefix: 24,
            ipv6_prefix: 64,
        };
        let a: IpAddr = "192.0.2.77".parse().unwrap();
        let b: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(group_key(a, g), group_key(b, g));
        assert_eq!(group_net(a, g).to_string(), "192.0.2.0/24");
    }
}
