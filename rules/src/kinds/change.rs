//! `change`: alerts on Kubernetes ingress-policy changes (Ingress, Gateway, HTTPRoute,
//! AuthorizationPolicy, TLS Secret, WasmPlugin …) that the collector reads from the API server's
//! audit log: who changed what, when, and whether the change weakened the ingress's protection.
//!
//! Change rules are evaluated on [`ChangeFacts`], which the collector builds from an audit event
//! and passes to [`RuleSet::evaluate_change`]; the record engine never observes them
//! (`OBSERVES_RECORDS = false`), so they produce no [`crate::RuleDecision`] and no ban: a change
//! has no client address to act on, and their `action` can only be `alert` (the default).
//!
//! Each condition of a rule that holds on a change is one [`ChangeFinding`]. The who/when
//! conditions (`allowed_users`, `allowed_hours`/`allowed_days`) judge every change, including
//! refused attempts and requests not yet answered: an attempt outside the rules is worth an alert
//! even when the API server refused it. The content conditions judge only applied changes,
//! because the content of a refused request never took effect.

use super::{Kind, RuleKind, Trigger};
use crate::civil::{local_day_and_minute, rfc3339};
use crate::clock::RecordClock;
use crate::config::{Escalation, Rule, RuleParser, RuleSet};
use crate::duration::{duration_ms, fmt_duration};
use crate::engine::Observation;
use std::fmt;
use std::time::Duration;

/// What the collector knows about one change to a Kubernetes object, owned and plain (the
/// rules crate does not depend on the collector or on the audit parser).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeFacts {
    /// When the API server received the request, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The effective user: the impersonated user when impersonating, else the authenticated one.
    pub user: String,
    /// The user who authenticated (differs from `user` when impersonating).
    pub authenticated_user: String,
    /// `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// The API group, `""` for the core group (Secrets).
    pub api_group: String,
    /// The resource, plural lower case: `ingresses`, `httproutes`, `secrets`.
    pub resource: String,
    /// The namespace, `""` for cluster-scoped objects.
    pub namespace: String,
    /// The object's name (`""` for a `deletecollection`).
    pub name: String,
    /// True when the API server applied the change; false for refused attempts (status >= 400)
    /// and for requests not yet answered (stage `RequestReceived`).
    pub applied: bool,
    /// Listeners or hosts the changed object serves without TLS, e.g. `http:80`, `shop.example`.
    pub listeners_without_tls: Vec<String>,
    /// Authentication or authorization that was removed or weakened, described in a few words.
    pub auth_removed: Option<String>,
    /// A Secret's type, e.g. `kubernetes.io/tls`; for a deleted Secret known to be TLS, that type.
    pub secret_type: Option<String>,
    /// The `notAfter` of the certificate a created or replaced TLS Secret holds, ms since the
    /// Unix epoch.
    pub certificate_not_after_ms: Option<i64>,
    /// The object is a WasmPlugin (or EnvoyFilter) that loads Warden's filter.
    pub plugin_is_warden: bool,
    /// That plugin was deleted.
    pub plugin_removed: bool,
    /// That plugin is now set to fail open (requests pass when the filter cannot run).
    pub plugin_fail_open: bool,
    /// Host names the change added (to an Ingress's rules, a Gateway's listeners, a route's
    /// hostnames).
    pub hosts_added: Vec<String>,
}

/// One condition of one change rule that held on a change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChangeFinding {
    /// The rule's name.
    pub rule: String,
    /// The condition, spelt as its field in the rules file: `allowed_users`, `allowed_hours`
    /// (also when only `allowed_days` is set), `listener_without_tls`, `auth_removed`,
    /// `tls_secret_deleted`, `certificate_expires_within`, `warden_plugin_weakened`,
    /// `wildcard_host_added`.
    pub condition: &'static str,
    /// The rule is in dry-run: record and report the finding as such, send no alert.
    pub dry_run: bool,
    /// One line that explains itself, e.g. `rule ingress-guard: bob updated ingresses shop/web
    /// at 2026-12-01T03:12:00Z, outside the allowed hours 08:00-18:00 mon-fri (+00:00)`; ends in
    /// ` [dry run]` for a dry-run rule.
    pub reason: String,
}

/// The parameters of a `change` rule: its scope and its conditions.
///
/// A rule needs at least one condition; each that holds on a change in scope is one finding.
/// See [`Change::conditions`] and [`RuleKind::summary`] for what a rule checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Empty: every resource.
    resources: Box<[ResourceScope]>,
    /// Empty: every namespace (and cluster-scoped objects).
    namespaces: Box<[Box<str>]>,
    allowed_users: Option<Box<[Box<str>]>>,
    schedule: Option<Schedule>,
    listener_without_tls: bool,
    auth_removed: bool,
    tls_secret_deleted: bool,
    certificate_expires_within: Option<Duration>,
    warden_plugin_weakened: bool,
    wildcard_host_added: bool,
}

/// A `resources` entry: `ingresses` (any group) or `httproutes.gateway.networking.k8s.io`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourceScope {
    resource: Box<str>,
    group: Option<Box<str>>,
}

impl ResourceScope {
    fn parse(s: &str) -> Option<ResourceScope> {
        let (resource, group) = match s.split_once('.') {
            Some((r, g)) => (r, Some(g)),
            None => (s, None),
        };
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !word(resource) || group.is_some_and(|g| !g.split('.').all(word)) {
            return None;
        }
        Some(ResourceScope {
            resource: resource.into(),
            group: group.map(Into::into),
        })
    }

    fn matches(&self, f: &ChangeFacts) -> bool {
        *self.resource == f.resource && self.group.as_deref().is_none_or(|g| g == f.api_group)
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}.{g}", self.resource),
            None => f.write_str(&self.resource),
        }
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const EVERY_DAY: u8 = 0b111_1111;

/// When changes are allowed: `allowed_hours` and/or `allowed_days` at `utc_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Schedule {
    /// Start (inclusive) and end (exclusive), minutes of the local day; start > end wraps
    /// midnight. `None`: the whole of every allowed day.
    hours: Option<(u32, u32)>,
    /// Bit `n` set: day `n` (0 = Monday) is allowed.
    days: u8,
    /// Minutes east of UTC.
    offset_minutes: i32,
}

impl Schedule {
    fn allows(&self, time_ms: i64) -> bool {
        let (day, minute) = local_day_and_minute(time_ms, self.offset_minutes);
        let day_allowed = |d: u8| self.days & (1 << d) != 0;
        match self.hours {
            None => day_allowed(day),
            Some((start, end)) if start < end => (start..end).contains(&minute) && day_allowed(day),
            // A range across midnight is a shift: its hours after midnight belong to the day it
            // started, so "22:00-06:00" on fri covers Saturday morning, not Monday's.
            Some((start, end)) => {
                (minute >= start && day_allowed(day))
                    || (minute < end && day_allowed((day + 6) % 7))
            }
        }
    }

    fn offset_text(&self) -> String {
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let m = self.offset_minutes.unsigned_abs();
        format!("{sign}{:02}:{:02}", m / 60, m % 60)
    }

    /// `mon-fri`, `sat,sun`, `mon,wed-fri`; empty for every day.
    fn days_text(&self) -> String {
        if self.days == EVERY_DAY {
            return String::new();
        }
        let mut parts = Vec::new();
        let mut d = 0;
        while d < 7 {
            if self.days & (1 << d) == 0 {
                d += 1;
                continue;
            }
            let start = d;
            while d + 1 < 7 && self.days & (1 << (d + 1)) != 0 {
                d += 1;
            }
            parts.push(match d - start {
                0 => DAY_NAMES[start].to_string(),
                1 => format!("{},{}", DAY_NAMES[start], DAY_NAMES[d]),
                _ => format!("{}-{}", DAY_NAMES[start], DAY_NAMES[d]),
            });
            d += 1;
        }
        parts.join(",")
    }

    /// `08:00-18:00 mon-fri (+00:00)`, or `sat,sun (+01:00)` without hours.
    fn range_text(&self) -> String {
        let days = self.days_text();
        let mut out = match self.hours {
            Some((start, end)) => format!("{}-{}", hhmm(start), hhmm(end)),
            None => String::new(),
        };
        if !days.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&days);
        }
        format!("{out} ({})", self.offset_text())
    }

    /// The field that carries the schedule's meaning: `allowed_hours`, or `allowed_days` alone.
    fn field(&self) -> &'static str {
        if self.hours.is_some() {
            "allowed_hours"
        } else {
            "allowed_days"
        }
    }
}

impl fmt::Display for Schedule {
    /// `allowed hours 08:00-18:00 mon-fri (+00:00)`, `allowed days sat,sun (+01:00)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.hours.is_some() {
            "hours"
        } else {
            "days"
        };
        write!(f, "allowed {what} {}", self.range_text())
    }
}

fn hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `08:00` → minutes of the day; exactly two digits each, 00:00 to 23:59.
fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `+01:00`, `-05:30` → minutes east of UTC; at most 14 hours either way, as real offsets are.
fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let minutes = i32::try_from(parse_hhmm(rest)?).ok()?;
    (minutes <= 14 * 60).then_some(sign * minutes)
}

/// Whether `text` matches `pattern` (`*` any run of characters, also none; `?` one character),
/// case-sensitively as Kubernetes compares user names.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(text)
}

/// Every condition field, in evaluation (and finding) order; `allowed_days` belongs to
/// `allowed_hours`.
const CONDITION_FIELDS: &[&str] = &[
    "allowed_users",
    "allowed_hours",
    "allowed_days",
    "listener_without_tls",
    "auth_removed",
    "tls_secret_deleted",
    "certificate_expires_within",
    "warden_plugin_weakened",
    "wildcard_host_added",
];

impl Change {
    /// The conditions the rule checks, spelt as in the rules file and in
    /// [`ChangeFinding::condition`], in evaluation order.
    pub fn conditions(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.allowed_users.is_some() {
            out.push("allowed_users");
        }
        if self.schedule.is_some() {
            out.push("allowed_hours");
        }
        for (on, name) in [
            (self.listener_without_tls, "listener_without_tls"),
            (self.auth_removed, "auth_removed"),
            (self.tls_secret_deleted, "tls_secret_deleted"),
            (
                self.certificate_expires_within.is_some(),
                "certificate_expires_within",
            ),
            (self.warden_plugin_weakened, "warden_plugin_weakened"),
            (self.wildcard_host_added, "wildcard_host_added"),
        ] {
            if on {
                out.push(name);
            }
        }
        out
    }

    /// Whether the change is to a resource and namespace the rule watches.
    fn in_scope(&self, f: &ChangeFacts) -> bool {
        (self.resources.is_empty() || self.resources.iter().any(|r| r.matches(f)))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| **n == f.namespace))
    }

    /// Appends one finding per condition of `rule` that holds on `f`.
    fn evaluate(&self, rule: &Rule, f: &ChangeFacts, out: &mut Vec<ChangeFinding>) {
        if !self.in_scope(f) {
            return;
        }
        let mut found = |condition: &'static str, clause: String| {
            out.push(ChangeFinding {
                rule: rule.name.to_string(),
                condition,
                dry_run: rule.dry_run,
                reason: format!(
                    "rule {}: {}, {clause}{}",
                    rule.name,
                    describe(f),
                    if rule.dry_run { " [dry run]" } else { "" }
                ),
            });
        };
        if let Some(patterns) = &self.allowed_users {
            // Both who the change was made as and who made it must be allowed: impersonating an
            // allowed account does not make a stranger one.
            let allowed = |user: &str| patterns.iter().any(|p| wildcard_match(p, user));
            let stranger = if !allowed(&f.user) {
                Some(effective_user(f).to_string())
            } else if !f.authenticated_user.is_empty() && !allowed(&f.authenticated_user) {
                Some(format!(
                    "{} (impersonating {})",
                    f.authenticated_user, f.user
                ))
            } else {
                None
            };
            if let Some(stranger) = stranger {
                found(
                    "allowed_users",
                    format!("{stranger} is not an allowed user"),
                );
            }
        }
        if let Some(schedule) = &self.schedule
            && !schedule.allows(f.time_ms)
        {
            found("allowed_hours", format!("outside the {schedule}"));
        }
        // What a refused or unanswered request asked for never took effect.
        if !f.applied {
            return;
        }
        if self.listener_without_tls && !f.listeners_without_tls.is_empty() {
            found(
                "listener_without_tls",
                format!("without TLS: {}", f.listeners_without_tls.join(", ")),
            );
        }
        if self.auth_removed
            && let Some(what) = &f.auth_removed
        {
            found(
                "auth_removed",
                format!("protection removed or weakened: {what}"),
            );
        }
        let deleting = matches!(f.verb.as_str(), "delete" | "deletecollection");
        if self.tls_secret_deleted
            && deleting
            && f.resource == "secrets"
            && f.api_group.is_empty()
            && f.secret_type.as_deref() == Some("kubernetes.io/tls")
        {
            found("tls_secret_deleted", "a TLS secret".to_string());
        }
        if let (Some(within), Some(not_after)) =
            (self.certificate_expires_within, f.certificate_not_after_ms)
            && !deleting
            // Measured from the change, not from when the collector got to it, so that a replay
            // of old audit events finds what live evaluation found.
            && not_after.saturating_sub(f.time_ms) <= duration_ms(within)
        {
            let when = if not_after <= f.time_ms {
                format!("certificate expired {}, already", rfc3339(not_after))
            } else {
                format!(
                    "certificate expires {}, within {}",
                    rfc3339(not_after),
                    fmt_duration(within)
                )
            };
            found("certificate_expires_within", when);
        }
        if self.warden_plugin_weakened && f.plugin_is_warden {
            if f.plugin_removed {
                found(
                    "warden_plugin_weakened",
                    "Warden plugin removed".to_string(),
                );
            } else if f.plugin_fail_open {
                found(
                    "warden_plugin_weakened",
                    "Warden plugin set to fail open".to_string(),
                );
            }
        }
        if self.wildcard_host_added {
            let wild: Vec<&str> = f
                .hosts_added
                .iter()
                .filter(|h| h.contains('*'))
                .map(String::as_str)
                .collect();
            if !wild.is_empty() {
                found(
                    "wildcard_host_added",
                    format!("wildcard hosts added: {}", wild.join(", ")),
                );
            }
        }
    }
}

/// The user the change was made as (the impersonated one when impersonating).
fn effective_user(f: &ChangeFacts) -> &str {
    if f.user.is_empty() {
        "an unknown user"
    } else {
        &f.user
    }
}

/// `alice`, or `alice as bob` when alice impersonated bob.
fn who(f: &ChangeFacts) -> String {
    let user = effective_user(f);
    if f.authenticated_user.is_empty() || f.authenticated_user == f.user {
        user.to_string()
    } else {
        format!("{} as {user}", f.authenticated_user)
    }
}

/// `bob updated ingresses shop/web at 2026-12-01T03:12:00Z`; `bob tried to update …` when the
/// change was not applied (refused, or not answered yet).
fn describe(f: &ChangeFacts) -> String {
    let did = match (f.verb.as_str(), f.applied) {
        ("create", true) => "created".to_string(),
        ("update", true) => "updated".to_string(),
        ("patch", true) => "patched".to_string(),
        ("delete", true) => "deleted".to_string(),
        ("deletecollection", true) => "deleted a collection of".to_string(),
        ("deletecollection", false) => "tried to delete a collection of".to_string(),
        (verb, true) => format!("ran {verb} on"),
        (verb, false) => format!("tried to {verb}"),
    };
    let object = match (f.namespace.is_empty(), f.name.is_empty()) {
        (false, false) => format!("{} {}/{}", f.resource, f.namespace, f.name),
        (false, true) => format!("{} in {}", f.resource, f.namespace),
        (true, false) => format!("{} {}", f.resource, f.name),
        (true, true) => f.resource.clone(),
    };
    format!("{} {did} {object} at {}", who(f), rfc3339(f.time_ms))
}

impl RuleSet {
    /// The `change` rules in the set, in file order (for listing and counting).
    pub fn change_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules()
            .iter()
            .map(|r| &**r)
            .filter(|r| matches!(r.kind, RuleKind::Change(_)))
    }

    /// Every finding of every `change` rule on one change, in rule order and, within a rule, in
    /// condition order (the order of [`ChangeFinding::condition`]'s list).
    ///
    /// Deterministic and stateless: `certificate_expires_within` is measured from the change's
    /// own time (`facts.time_ms`), not from the wall clock, so re-evaluating stored changes finds
    /// what live evaluation found. Changes with `applied == false` are judged only by
    /// `allowed_users` and `allowed_hours`.
    pub fn evaluate_change(&self, facts: &ChangeFacts) -> Vec<ChangeFinding> {
        let mut out = Vec::new();
        for rule in self.rules() {
            if let RuleKind::Change(change) = &rule.kind {
                change.evaluate(rule, facts, &mut out);
            }
        }
        out
    }
}

/// Reads a list that may be absent but, when given, must not be empty.
fn non_empty_list(
    p: &mut RuleParser<'_, '_, '_>,
    field: &str,
    why_empty: &str,
) -> Option<Vec<String>> {
    let list = p.opt_string_list(field)?;
    if list.is_empty() && p.get(field).is_some_and(|v| v.as_array().is_some()) {
        p.err(field, format!("empty ({why_empty})"));
    }
    Some(list)
}

fn parse_schedule(p: &mut RuleParser<'_, '_, '_>) -> Option<Schedule> {
    let hours_text = p.opt_string("allowed_hours");
    let days_list = non_empty_list(
        p,
        "allowed_days",
        "list the days changes are allowed on, or omit it for every day",
    );
    let offset_text = p.opt_string("utc_offset");
    let hours = hours_text.as_deref().and_then(|s| {
        let parsed = s
            .split_once('-')
            .and_then(|(a, b)| Some((parse_hhmm(a)?, parse_hhmm(b)?)));
        match parsed {
            Some((a, b)) if a == b => {
                p.err(
                    "allowed_hours",
                    format!("\"{s}\" is empty (it starts where it ends)"),
                );
                None
            }
            Some(range) => Some(range),
            None => {
                p.err(
                    "allowed_hours",
                    format!(
                        "\"{s}\" is not a range of times like \"08:00-18:00\" (HH:MM-HH:MM, 00:00 to 23:59; \"22:00-06:00\" wraps midnight)"
                    ),
                );
                None
            }
        }
    });
    let mut days = 0u8;
    for (i, d) in days_list.iter().flatten().enumerate() {
        match DAY_NAMES.iter().position(|n| n.eq_ignore_ascii_case(d)) {
            Some(n) => days |= 1 << n,
            None => p.err(
                &format!("allowed_days[{i}]"),
                format!("\"{d}\" is not a day ({})", DAY_NAMES.join(", ")),
            ),
        }
    }
    let offset_minutes = match offset_text.as_deref() {
        None => 0,
        Some(s) => parse_offset(s).unwrap_or_else(|| {
            p.err(
                "utc_offset",
                format!(
                    "\"{s}\" is not a UTC offset like \"+01:00\" or \"-05:30\" (at most 14:00)"
                ),
            );
            0
        }),
    };
    if p.get("allowed_hours").is_none() && p.get("allowed_days").is_none() {
        if p.get("utc_offset").is_some() {
            p.err("utc_offset", "only used with allowed_hours or allowed_days");
        }
        return None;
    }
    Some(Schedule {
        hours,
        days: if days_list.is_some() { days } else { EVERY_DAY },
        offset_minutes,
    })
}

impl Kind for Change {
    const NAME: &'static str = "change";
    const FIELDS: &'static [&'static str] = &[
        "resources",
        "namespaces",
        "allowed_users",
        "allowed_hours",
        "allowed_days",
        "utc_offset",
        "listener_without_tls",
        "auth_removed",
        "tls_secret_deleted",
        "certificate_expires_within",
        "warden_plugin_weakened",
        "wildcard_host_added",
    ];
    const OBSERVES_RECORDS: bool = false;
    const ALERTS_ONLY: bool = true;
    type State = ();

    fn parse(p: &mut RuleParser<'_, '_, '_>) -> Option<Change> {
        let mut resources = Vec::new();
        let list = non_empty_list(p, "resources", "omit it to watch every resource");
        for (i, r) in list.iter().flatten().enumerate() {
            match ResourceScope::parse(r) {
                Some(scope) => resources.push(scope),
                None if r.is_empty() => p.err(&format!("resources[{i}]"), "empty"),
                None => p.err(
                    &format!("resources[{i}]"),
                    format!(
                        "\"{r}\" is not a resource: plural, lower case, optionally with its group (\"ingresses\", \"httproutes.gateway.networking.k8s.io\")"
                    ),
                ),
            }
        }
        let mut namespaces = Vec::new();
        let list = non_empty_list(p, "namespaces", "omit it to watch every namespace");
        for (i, n) in list.iter().flatten().enumerate() {
            let valid = !n.is_empty()
                && n.len() <= 63
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !n.starts_with('-')
                && !n.ends_with('-');
            if valid {
                namespaces.push(n.as_str().into());
            } else if n.is_empty() {
                p.err(&format!("namespaces[{i}]"), "empty");
            } else {
                p.err(
                    &format!("namespaces[{i}]"),
                    format!("\"{n}\" is not a namespace name (lower-case letters, digits and '-')"),
                );
            }
        }
        let allowed_users = non_empty_list(p, "allowed_users", "list who may make these changes")
            .map(|list| {
                let mut patterns = Vec::with_capacity(list.len());
                for (i, u) in list.iter().enumerate() {
                    let field = format!("allowed_users[{i}]");
                    if u.is_empty() {
                        p.err(&field, "empty");
                    } else if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        p.err(
                            &field,
                            format!("\"{u}\" is not a user name pattern (no spaces or control characters; * matches any characters)"),
                        );
                    } else if u.bytes().all(|b| b == b'*') {
                        p.err(
                            &field,
                            format!("\"{u}\" allows every user: the condition could never hold"),
                        );
                    } else {
                        patterns.push(u.as_str().into());
                    }
                }
                patterns.into_boxed_slice()
            });
        let schedule = parse_schedule(p);
        let mut flag = |field: &str| p.opt_bool(field).unwrap_or(false);
        let listener_without_tls = flag("listener_without_tls");
        let auth_removed = flag("auth_removed");
        let tls_secret_deleted = flag("tls_secret_deleted");
        let warden_plugin_weakened = flag("warden_plugin_weakened");
        let wildcard_host_added = flag("wildcard_host_added");
        let certificate_expires_within = p.opt_duration(
            "certificate_expires_within",
            p.get("certificate_expires_within"),
        );
        // A condition that is given counts even when it is invalid: its own error says what is
        // wrong, and "no condition" on top of it would mislead.
        let any_condition = CONDITION_FIELDS
            .iter()
            .any(|f| p.get(f).is_some_and(|v| v.as_bool() != Some(false)));
        if !any_condition {
            p.err(
                "kind",
                format!(
                    "a change rule needs at least one condition ({})",
                    CONDITION_FIELDS.join(", ")
                ),
            );
            return None;
        }
        Some(Change {
            resources: resources.into(),
            namespaces: namespaces.into(),
            allowed_users,
            schedule,
            listener_without_tls,
            auth_removed,
            tls_secret_deleted,
            certificate_expires_within,
            warden_plugin_weakened,
            wildcard_host_added,
        })
    }

    fn new_state(&self, _: &RecordClock) {}

    fn observe(&self, _: &mut (), _: &mut Observation<'_, '_>) {}

    fn maintain(&self, _: &mut (), _: i64, _: Option<&Escalation>) {}

    fn tracked_keys(_: &()) -> usize {
        0
    }

    fn trigger(&self, _observed: u32) -> Trigger {
        // Never asked: change rules make findings (`RuleSet::evaluate_change`), not decisions.
        Trigger {
            threshold: 0,
            window: Duration::ZERO,
            finding: String::new(),
        }
    }

    /// `change: allowed_users (2 patterns), listener_without_tls on ingresses, gateways in shop`.
    fn summary(&self) -> String {
        let conditions: Vec<String> = self
            .conditions()
            .into_iter()
            .map(|name| match name {
                "allowed_users" => {
                    let n = self.allowed_users.as_ref().map_or(0, |u| u.len());
                    let s = if n == 1 { "" } else { "s" };
                    format!("{name} ({n} pattern{s})")
                }
                "allowed_hours" => self
                    .schedule
                    .as_ref()
                    .map_or_else(String::new, |s| format!("{} {}", s.field(), s.range_text())),
                "certificate_expires_within" => self
                    .certificate_expires_within
                    .map_or_else(String::new, |d| format!("{name} {}", fmt_duration(d))),
                _ => name.to_string(),
            })
            .collect();
        let mut out = format!("change: {}", conditions.join(", "));
        if !self.resources.is_empty() {
            let r: Vec<String> = self.resources.iter().map(ToString::to_string).collect();
            out.push_str(&format!(" on {}", r.join(", ")));
        }
        if !self.namespaces.is_empty() {
            let n: Vec<&str> = self.namespaces.iter().map(|n| &**n).collect();
            out.push_str(&format!(" in {}", n.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, list_decisions, replay};
    use crate::testing::*;

    /// 2026-12-01T03:12:00Z, a Tuesday.
    const TUE_0312: i64 = 1_796_094_720_000;
    const HOUR: i64 = 3_600_000;

    const GUARD: &str = r#"
[[rules]]
name = "ingress-guard"
kind = "change"
action = "alert"
description = "Who may change the shop's ingress, and when"
resources = ["ingresses", "gateways", "httproutes.gateway.networking.k8s.io"]
namespaces = ["shop", "edge"]
allowed_users = ["alice@example.com", "system:serviceaccount:argocd:*"]
allowed_hours = "08:00-18:00"
allowed_days = ["mon", "tue", "wed", "thu", "fri"]
"#;

    /// One rule per content condition, so each finding can be checked alone.
    fn one_condition(field: &str, value: &str) -> RuleSet {
        rules(&format!(
            "[[rules]]\nname = \"guard\"\nkind = \"change\"\n{field} = {value}\n"
        ))
    }

    /// An applied update by bob of ingress shop/web at [`TUE_0312`].
    fn update() -> ChangeFacts {
        ChangeFacts {
            time_ms: TUE_0312,
            user: "bob".to_string(),
            authenticated_user: "bob".to_string(),
            verb: "update".to_string(),
            api_group: "networking.k8s.io".to_string(),
            resource: "ingresses".to_string(),
            namespace: "shop".to_string(),
            name: "web".to_string(),
            applied: true,
            ..ChangeFacts::default()
        }
    }

    fn tls_secret(verb: &str) -> ChangeFacts {
        ChangeFacts {
            verb: verb.to_string(),
            api_group: String::new(),
            resource: "secrets".to_string(),
            name: "web-tls".to_string(),
            user: "alice".to_string(),
            authenticated_user: "alice".to_string(),
            secret_type: Some("kubernetes.io/tls".to_string()),
            ..update()
        }
    }

    fn reasons(set: &RuleSet, f: &ChangeFacts) -> Vec<String> {
        set.evaluate_change(f)
            .into_iter()
            .map(|x| x.reason)
            .collect()
    }

    fn conditions(set: &RuleSet, f: &ChangeFacts) -> Vec<&'static str> {
        set.evaluate_change(f)
            .into_iter()
            .map(|x| x.condition)
            .collect()
    }

    // --- Parsing ---

    #[test]
    fn a_change_rule_parses_with_its_scope_and_conditions() {
        let set = rules(GUARD);
        let rule = set.get("ingress-guard").unwrap();
        assert_eq!(rule.action, crate::Action::Alert);
        let RuleKind::Change(change) = &rule.kind else {
            panic!("not a change rule: {:?}", rule.kind)
        };
        assert_eq!(change.conditions(), ["allowed_users", "allowed_hours"]);
        assert_eq!(
            rule.kind.summary(),
            "change: allowed_users (2 patterns), allowed_hours 08:00-18:00 mon-fri (+00:00) on ingresses, gateways, httproutes.gateway.networking.k8s.io in shop, edge"
        );
        assert_eq!(set.change_rules().count(), 1);
    }

    #[test]
    fn a_change_rule_alerts_without_saying_so() {
        let set = one_condition("auth_removed", "true");
        assert_eq!(set.rules()[0].action, crate::Action::Alert);
    }

    #[test]
    fn every_condition_is_summarized() {
        let set = rules(
            r#"
[[rules]]
name = "all"
kind = "change"
allowed_users = ["alice"]
allowed_days = ["sat", "sun"]
utc_offset = "-05:30"
listener_without_tls = true
auth_removed = true
tls_secret_deleted = true
certificate_expires_within = "14d"
warden_plugin_weakened = true
wildcard_host_added = true
"#,
        );
        assert_eq!(
            set.rules()[0].kind.summary(),
            "change: allowed_users (1 pattern), allowed_days sat,sun (-05:30), listener_without_tls, auth_removed, tls_secret_deleted, certificate_expires_within 14d, warden_plugin_weakened, wildcard_host_added"
        );
    }

    /// A change rule with `fields` on top of name and kind; the one error it provokes.
    fn change_error(fields: &[(&str, &str)]) -> String {
        let mut set = vec![("kind", "\"change\"")];
        set.extend_from_slice(fields);
        one_error(&set, &["threshold", "window", "action"])
    }

    macro_rules! refuses {
        ($name:ident, [$(($k:expr, $v:expr)),* $(,)?], $msg:expr) => {
            #[test]
            fn $name() {
                assert_eq!(
                    change_error(&[$(($k, $v)),*]),
                    concat!("rules.toml: rule \"login-brute-force\": ", $msg)
                );
            }
        };
    }

    refuses!(
        unknown_fields_are_refused,
        [("auth_removed", "true"), ("allowed_user", "[\"bob\"]")],
        "allowed_user: unknown field"
    );

    refuses!(
        a_condition_is_required,
        [("resources", "[\"ingresses\"]")],
        "kind: a change rule needs at least one condition (allowed_users, allowed_hours, allowed_days, listener_without_tls, auth_removed, tls_secret_deleted, certificate_expires_within, warden_plugin_weakened, wildcard_host_added)"
    );

    refuses!(
        a_condition_set_to_false_is_no_condition,
        [("listener_without_tls", "false")],
        "kind: a change rule needs at least one condition (allowed_users, allowed_hours, allowed_days, listener_without_tls, auth_removed, tls_secret_deleted, certificate_expires_within, warden_plugin_weakened, wildcard_host_added)"
    );

    refuses!(
        deny_is_refused,
        [("auth_removed", "true"), ("action", "\"deny\"")],
        "action: \"deny\" is not possible for kind \"change\": it has no client address to act on (use \"alert\", the default)"
    );

    refuses!(
        throttle_is_refused,
        [("auth_removed", "true"), ("action", "\"throttle\"")],
        "action: \"throttle\" is not possible for kind \"change\": it has no client address to act on (use \"alert\", the default)"
    );

    refuses!(
        unknown_actions_are_still_named,
        [("auth_removed", "true"), ("action", "\"page\"")],
        "action: \"page\" is not one of deny, throttle, alert"
    );

    refuses!(
        match_conditions_do_not_apply,
        [("auth_removed", "true"), ("hosts", "[\"shop.example\"]")],
        "hosts: not used by kind \"change\""
    );

    refuses!(
        address_grouping_does_not_apply,
        [("auth_removed", "true"), ("ipv4_prefix", "24")],
        "ipv4_prefix: not used by kind \"change\""
    );

    refuses!(
        ban_ttl_does_not_apply,
        [("auth_removed", "true"), ("ban_ttl", "\"1h\"")],
        "ban_ttl: not used by kind \"change\" (it only alerts, once per change, and bans nothing)"
    );

    refuses!(
        escalation_does_not_apply,
        [("auth_removed", "true"), ("escalation", "{ factor = 2.0 }")],
        "escalation: not used by kind \"change\" (it only alerts, once per change, and bans nothing)"
    );

    refuses!(
        fields_of_change_are_refused_elsewhere,
        [
            ("kind", "\"auth_failures\""),
            ("threshold", "3"),
            ("window", "\"1m\""),
            ("action", "\"deny\""),
            ("auth_removed", "true")
        ],
        "auth_removed: not used by kind \"auth_failures\""
    );

    refuses!(
        user_patterns_have_no_spaces,
        [("allowed_users", "[\"alice\", \"bob smith\"]")],
        "allowed_users[1]: \"bob smith\" is not a user name pattern (no spaces or control characters; * matches any characters)"
    );

    refuses!(
        user_patterns_must_not_allow_everyone,
        [("allowed_users", "[\"*\"]")],
        "allowed_users[0]: \"*\" allows every user: the condition could never hold"
    );

    refuses!(
        user_patterns_are_not_empty,
        [("allowed_users", "[\"\"]")],
        "allowed_users[0]: empty"
    );

    refuses!(
        allowed_users_is_not_empty,
        [("allowed_users", "[]")],
        "allowed_users: empty (list who may make these changes)"
    );

    refuses!(
        hours_are_in_range,
        [("allowed_hours", "\"25:00-18:00\"")],
        "allowed_hours: \"25:00-18:00\" is not a range of times like \"08:00-18:00\" (HH:MM-HH:MM, 00:00 to 23:59; \"22:00-06:00\" wraps midnight)"
    );

    refuses!(
        hours_are_written_with_minutes,
        [("allowed_hours", "\"8-18\"")],
        "allowed_hours: \"8-18\" is not a range of times like \"08:00-18:00\" (HH:MM-HH:MM, 00:00 to 23:59; \"22:00-06:00\" wraps midnight)"
    );

    refuses!(
        hours_are_not_empty,
        [("allowed_hours", "\"08:00-08:00\"")],
        "allowed_hours: \"08:00-08:00\" is empty (it starts where it ends)"
    );

    refuses!(
        hours_are_a_string,
        [("allowed_hours", "8")],
        "allowed_hours: expected a string, found integer"
    );

    refuses!(
        days_are_named_by_three_letters,
        [
            ("allowed_hours", "\"08:00-18:00\""),
            ("allowed_days", "[\"mon\", \"monday\"]")
        ],
        "allowed_days[1]: \"monday\" is not a day (mon, tue, wed, thu, fri, sat, sun)"
    );

    refuses!(
        days_are_not_empty,
        [("allowed_hours", "\"08:00-18:00\""), ("allowed_days", "[]")],
        "allowed_days: empty (list the days changes are allowed on, or omit it for every day)"
    );

    refuses!(
        offsets_have_hours_and_minutes,
        [
            ("allowed_hours", "\"08:00-18:00\""),
            ("utc_offset", "\"+1\"")
        ],
        "utc_offset: \"+1\" is not a UTC offset like \"+01:00\" or \"-05:30\" (at most 14:00)"
    );

    refuses!(
        offsets_are_real,
        [
            ("allowed_hours", "\"08:00-18:00\""),
            ("utc_offset", "\"+15:00\"")
        ],
        "utc_offset: \"+15:00\" is not a UTC offset like \"+01:00\" or \"-05:30\" (at most 14:00)"
    );

    refuses!(
        offsets_need_a_schedule,
        [("auth_removed", "true"), ("utc_offset", "\"+01:00\"")],
        "utc_offset: only used with allowed_hours or allowed_days"
    );

    refuses!(
        resource_entries_are_not_empty,
        [
            ("auth_removed", "true"),
            ("resources", "[\"ingresses\", \"\"]")
        ],
        "resources[1]: empty"
    );

    refuses!(
        resources_are_plural_lower_case,
        [("auth_removed", "true"), ("resources", "[\"Ingress\"]")],
        "resources[0]: \"Ingress\" is not a resource: plural, lower case, optionally with its group (\"ingresses\", \"httproutes.gateway.networking.k8s.io\")"
    );

    refuses!(
        resource_groups_have_no_empty_labels,
        [
            ("auth_removed", "true"),
            ("resources", "[\"httproutes.gateway..k8s.io\"]")
        ],
        "resources[0]: \"httproutes.gateway..k8s.io\" is not a resource: plural, lower case, optionally with its group (\"ingresses\", \"httproutes.gateway.networking.k8s.io\")"
    );

    refuses!(
        resources_is_not_empty,
        [("auth_removed", "true"), ("resources", "[]")],
        "resources: empty (omit it to watch every resource)"
    );

    refuses!(
        namespace_entries_are_not_empty,
        [("auth_removed", "true"), ("namespaces", "[\"\"]")],
        "namespaces[0]: empty"
    );

    refuses!(
        namespaces_are_names,
        [("auth_removed", "true"), ("namespaces", "[\"Shop\"]")],
        "namespaces[0]: \"Shop\" is not a namespace name (lower-case letters, digits and '-')"
    );

    refuses!(
        certificate_windows_are_durations,
        [("certificate_expires_within", "\"two weeks\"")],
        "certificate_expires_within: \"two weeks\" is not a duration (use 30s, 5m, 1h)"
    );

    refuses!(
        flags_are_booleans,
        [("wildcard_host_added", "\"yes\"")],
        "wildcard_host_added: expected true or false, found string"
    );

    #[test]
    fn every_error_of_a_change_rule_is_reported() {
        let text = "[[rules]]\nname = \"g\"\nkind = \"change\"\naction = \"deny\"\nallowed_hours = \"8-18\"\nallowed_days = [\"funday\"]\nban_ttl = \"1h\"\n";
        assert_eq!(
            errors(text),
            [
                "rules.toml: rule \"g\": ban_ttl: not used by kind \"change\" (it only alerts, once per change, and bans nothing)",
                "rules.toml: rule \"g\": action: \"deny\" is not possible for kind \"change\": it has no client address to act on (use \"alert\", the default)",
                "rules.toml: rule \"g\": allowed_hours: \"8-18\" is not a range of times like \"08:00-18:00\" (HH:MM-HH:MM, 00:00 to 23:59; \"22:00-06:00\" wraps midnight)",
                "rules.toml: rule \"g\": allowed_days[0]: \"funday\" is not a day (mon, tue, wed, thu, fri, sat, sun)",
            ]
        );
    }

    #[test]
    fn the_readme_change_example_loads_and_finds_what_it_shows() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Change rules").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + section[start..].find("```").unwrap();
        let set = RuleSet::from_toml_str(&section[start..end], "README.md").unwrap();
        let RuleKind::Change(change) = &set.rules()[0].kind else {
            panic!("not a change rule")
        };
        assert_eq!(change.conditions().len(), 8, "every condition");
        let shown = "\"reason\": \"rule ingress-guard: bob updated ingresses shop/web at 2026-12-01T03:12:00Z, outside the allowed hours 08:00-18:00 mon-fri (+01:00)\"";
        assert!(section.contains(shown));
        let found = set.evaluate_change(&update());
        assert_eq!(
            found[1].reason,
            shown["\"reason\": \"".len()..shown.len() - 1]
        );
    }

    // --- Who and when ---

    #[test]
    fn a_user_not_allowed_is_a_finding() {
        let set = rules(GUARD.replace("allowed_hours = \"08:00-18:00\"\nallowed_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\n", "").as_str());
        let found = set.evaluate_change(&update());
        assert_eq!(
            found,
            [ChangeFinding {
                rule: "ingress-guard".to_string(),
                condition: "allowed_users",
                dry_run: false,
                reason: "rule ingress-guard: bob updated ingresses shop/web at 2026-12-01T03:12:00Z, bob is not an allowed user".to_string(),
            }]
        );
    }

    #[test]
    fn allowed_users_match_exactly_or_by_wildcard() {
        let set = rules(GUARD);
        let daytime = TUE_0312 + 7 * HOUR;
        for user in [
            "alice@example.com",
            "system:serviceaccount:argocd:argocd-server",
        ] {
            let f = ChangeFacts {
                user: user.to_string(),
                authenticated_user: user.to_string(),
                time_ms: daytime,
                ..update()
            };
            assert!(set.evaluate_change(&f).is_empty(), "{user}");
        }
        for user in [
            "Alice@example.com",
            "alice@example.com.evil",
            "system:serviceaccount:argo:x",
        ] {
            let f = ChangeFacts {
                user: user.to_string(),
                time_ms: daytime,
                ..update()
            };
            assert_eq!(conditions(&set, &f), ["allowed_users"], "{user}");
        }
    }

    #[test]
    fn both_the_effective_and_the_impersonating_user_are_judged() {
        let set = one_condition("allowed_users", "[\"alice\"]");
        let f = ChangeFacts {
            authenticated_user: "alice".to_string(),
            user: "bob".to_string(),
            ..update()
        };
        assert_eq!(
            reasons(&set, &f),
            [
                "rule guard: alice as bob updated ingresses shop/web at 2026-12-01T03:12:00Z, bob is not an allowed user"
            ]
        );
        let f = ChangeFacts {
            authenticated_user: "bob".to_string(),
            user: "alice".to_string(),
            ..update()
        };
        // Impersonating an allowed account does not make bob one.
        assert_eq!(
            reasons(&set, &f),
            [
                "rule guard: bob as alice updated ingresses shop/web at 2026-12-01T03:12:00Z, bob (impersonating alice) is not an allowed user"
            ]
        );
        let f = ChangeFacts {
            authenticated_user: "alice".to_string(),
            user: "alice".to_string(),
            ..update()
        };
        assert!(reasons(&set, &f).is_empty());
    }

    #[test]
    fn a_change_outside_the_allowed_hours_is_a_finding() {
        let set = one_condition(
            "allowed_hours",
            "\"08:00-18:00\"\nallowed_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
        );
        assert_eq!(
            set.evaluate_change(&update()),
            [ChangeFinding {
                rule: "guard".to_string(),
                condition: "allowed_hours",
                dry_run: false,
                reason: "rule guard: bob updated ingresses shop/web at 2026-12-01T03:12:00Z, outside the allowed hours 08:00-18:00 mon-fri (+00:00)".to_string(),
            }]
        );
    }

    #[test]
    fn a_change_inside_the_allowed_hours_is_not() {
        let set = one_condition(
            "allowed_hours",
            "\"08:00-18:00\"\nallowed_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
        );
        // Tuesday 08:00 (inclusive) and 17:59 are inside; 18:00 (exclusive) is not.
        let at = |t: i64| ChangeFacts {
            time_ms: t,
            ..update()
        };
        let tue_0800 = TUE_0312 - 3 * HOUR - 12 * 60_000 + 8 * HOUR;
        assert!(set.evaluate_change(&at(tue_0800)).is_empty());
        assert!(
            set.evaluate_change(&at(tue_0800 + 10 * HOUR - 60_000))
                .is_empty()
        );
        assert_eq!(
            conditions(&set, &at(tue_0800 + 10 * HOUR)),
            ["allowed_hours"]
        );
        // Saturday at noon: the right hour, the wrong day.
        assert_eq!(
            conditions(&set, &at(tue_0800 + 4 * 24 * HOUR + 4 * HOUR)),
            ["allowed_hours"]
        );
    }

    #[test]
    fn allowed_hours_follow_the_utc_offset() {
        // 03:12Z is 09:12 at +06:00: inside.
        let set = one_condition("allowed_hours", "\"08:00-18:00\"\nutc_offset = \"+06:00\"");
        assert!(set.evaluate_change(&update()).is_empty());
        let set = one_condition("allowed_hours", "\"08:00-18:00\"\nutc_offset = \"-01:00\"");
        assert_eq!(
            reasons(&set, &update()),
            [
                "rule guard: bob updated ingresses shop/web at 2026-12-01T03:12:00Z, outside the allowed hours 08:00-18:00 (-01:00)"
            ]
        );
    }

    #[test]
    fn allowed_hours_may_wrap_midnight() {
        let set = one_condition("allowed_hours", "\"22:00-06:00\"");
        let at = |t: i64| ChangeFacts {
            time_ms: t,
            ..update()
        };
        let tue_0000 = TUE_0312 - 3 * HOUR - 12 * 60_000;
        assert!(set.evaluate_change(&at(tue_0000 + 3 * HOUR)).is_empty());
        assert!(set.evaluate_change(&at(tue_0000 + 23 * HOUR)).is_empty());
        assert!(set.evaluate_change(&at(tue_0000 + 22 * HOUR)).is_empty());
        assert_eq!(
            conditions(&set, &at(tue_0000 + 6 * HOUR)),
            ["allowed_hours"]
        );
        assert_eq!(
            conditions(&set, &at(tue_0000 + 12 * HOUR)),
            ["allowed_hours"]
        );
    }

    #[test]
    fn the_hours_after_midnight_belong_to_the_day_the_shift_started() {
        let set = one_condition(
            "allowed_hours",
            "\"22:00-06:00\"\nallowed_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
        );
        let at = |t: i64| ChangeFacts {
            time_ms: t,
            ..update()
        };
        let mon_0000 = TUE_0312 - 3 * HOUR - 12 * 60_000 - 24 * HOUR;
        let sat_0200 = mon_0000 + 5 * 24 * HOUR + 2 * HOUR;
        assert!(
            set.evaluate_change(&at(sat_0200)).is_empty(),
            "Friday night's shift"
        );
        assert_eq!(
            conditions(&set, &at(mon_0000 + 2 * HOUR)),
            ["allowed_hours"],
            "Sunday night's shift"
        );
        assert_eq!(
            conditions(&set, &at(sat_0200 + 22 * HOUR)),
            ["allowed_hours"],
            "Saturday 00:00 onwards"
        );
    }

    #[test]
    fn allowed_days_alone_allow_those_whole_days() {
        let set = one_condition("allowed_days", "[\"sat\", \"sun\"]");
        assert_eq!(
            reasons(&set, &update()),
            [
                "rule guard: bob updated ingresses shop/web at 2026-12-01T03:12:00Z, outside the allowed days sat,sun (+00:00)"
            ]
        );
        let sun_2359 = TUE_0312 - 3 * HOUR - 12 * 60_000 - 24 * HOUR - 60_000;
        let f = ChangeFacts {
            time_ms: sun_2359,
            ..update()
        };
        assert!(set.evaluate_change(&f).is_empty());
    }

    #[test]
    fn days_are_listed_compactly() {
        let schedule = |days: u8| Schedule {
            hours: None,
            days,
            offset_minutes: 0,
        };
        assert_eq!(schedule(0b001_1111).days_text(), "mon-fri");
        assert_eq!(schedule(0b110_0000).days_text(), "sat,sun");
        assert_eq!(schedule(0b001_1101).days_text(), "mon,wed-fri");
        assert_eq!(schedule(0b000_0100).days_text(), "wed");
        assert_eq!(schedule(EVERY_DAY).days_text(), "");
    }

    #[test]
    fn refused_and_pending_changes_are_judged_by_who_and_when_only() {
        let set = rules(
            r#"
[[rules]]
name = "guard"
kind = "change"
allowed_users = ["alice"]
allowed_hours = "08:00-18:00"
listener_without_tls = true
wildcard_host_added = true
"#,
        );
        let attempt = ChangeFacts {
            applied: false,
            listeners_without_tls: vec!["http:80".to_string()],
            hosts_added: vec!["*.shop.example".to_string()],
            ..update()
        };
        assert_eq!(
            reasons(&set, &attempt),
            [
                "rule guard: bob tried to update ingresses shop/web at 2026-12-01T03:12:00Z, bob is not an allowed user",
                "rule guard: bob tried to update ingresses shop/web at 2026-12-01T03:12:00Z, outside the allowed hours 08:00-18:00 (+00:00)",
            ]
        );
        let applied = ChangeFacts {
            applied: true,
            ..attempt
        };
        assert_eq!(
            conditions(&set, &applied),
            [
                "allowed_users",
                "allowed_hours",
                "listener_without_tls",
                "wildcard_host_added"
            ]
        );
    }

    // --- What changed ---

    #[test]
    fn a_listener_without_tls_is_a_finding() {
        let set = one_condition("listener_without_tls", "true");
        let f = ChangeFacts {
            resource: "gateways".to_string(),
            verb: "patch".to_string(),
            listeners_without_tls: vec!["http:80".to_string(), "shop.example".to_string()],
            ..update()
        };
        assert_eq!(
            reasons(&set, &f),
            [
                "rule guard: bob patched gateways shop/web at 2026-12-01T03:12:00Z, without TLS: http:80, shop.example"
            ]
        );
        assert!(set.evaluate_change(&update()).is_empty());
    }

    #[test]
    fn removed_protection_is_a_finding() {
        let set = one_condition("auth_removed", "true");
        let f = ChangeFacts {
            resource: "authorizationpolicies".to_string(),
            verb: "delete".to_string(),
            auth_removed: Some("ALLOW policy deleted".to_string()),
            ..update()
        };
        assert_eq!(
            reasons(&set, &f),
            [
                "rule guard: bob deleted authorizationpolicies shop/web at 2026-12-01T03:12:00Z, protection removed or weakened: ALLOW policy deleted"
            ]
        );
        assert!(set.evaluate_change(&update()).is_empty());
    }

    #[test]
    fn a_deleted_tls_secret_is_a_finding() {
        let set = one_condition("tls_secret_deleted", "true");
        assert_eq!(
            reasons(&set, &tls_secret("delete")),
            [
                "rule guard: alice deleted secrets shop/web-tls at 2026-12-01T03:12:00Z, a TLS secret"
            ]
        );
        let collection = ChangeFacts {
            name: String::new(),
            ..tls_secret("deletecollection")
        };
        assert_eq!(
            reasons(&set, &collection),
            [
                "rule guard: alice deleted a collection of secrets in shop at 2026-12-01T03:12:00Z, a TLS secret"
            ]
        );
        let opaque = ChangeFacts {
            secret_type: Some("Opaque".to_string()),
            ..tls_secret("delete")
        };
        assert!(set.evaluate_change(&opaque).is_empty(), "not TLS");
        assert!(
            set.evaluate_change(&tls_secret("update")).is_empty(),
            "not deleted"
        );
    }

    #[test]
    fn a_certificate_near_expiry_is_a_finding() {
        let set = one_condition("certificate_expires_within", "\"14d\"");
        let day = 24 * HOUR;
        let f = ChangeFacts {
            certificate_not_after_ms: Some(TUE_0312 + 4 * day - 3 * HOUR - 12 * 60_000),
            ..tls_secret("create")
        };
        assert_eq!(
            reasons(&set, &f),
            [
                "rule guard: alice created secrets shop/web-tls at 2026-12-01T03:12:00Z, certificate expires 2026-12-05T00:00:00Z, within 14d"
            ]
        );
        let exactly = ChangeFacts {
            certificate_not_after_ms: Some(TUE_0312 + 14 * day),
            ..f.clone()
        };
        assert_eq!(conditions(&set, &exactly), ["certificate_expires_within"]);
        let later = ChangeFacts {
            certificate_not_after_ms: Some(TUE_0312 + 14 * day + 1),
            ..f.clone()
        };
        assert!(set.evaluate_change(&later).is_empty());
        let expired = ChangeFacts {
            certificate_not_after_ms: Some(TUE_0312 - day),
            ..f.clone()
        };
        assert_eq!(
            reasons(&set, &expired),
            [
                "rule guard: alice created secrets shop/web-tls at 2026-12-01T03:12:00Z, certificate expired 2026-11-30T03:12:00Z, already"
            ]
        );
        let deleted = ChangeFacts {
            verb: "delete".to_string(),
            ..f
        };
        assert!(
            set.evaluate_change(&deleted).is_empty(),
            "a deleted certificate expires nothing"
        );
    }

    #[test]
    fn a_weakened_warden_plugin_is_a_finding() {
        let set = one_condition("warden_plugin_weakened", "true");
        let plugin = ChangeFacts {
            resource: "wasmplugins".to_string(),
            api_group: "extensions.istio.io".to_string(),
            namespace: "edge".to_string(),
            name: "warden".to_string(),
            plugin_is_warden: true,
            ..update()
        };
        let removed = ChangeFacts {
            verb: "delete".to_string(),
            plugin_removed: true,
            ..plugin.clone()
        };
        assert_eq!(
            reasons(&set, &removed),
            [
                "rule guard: bob deleted wasmplugins edge/warden at 2026-12-01T03:12:00Z, Warden plugin removed"
            ]
        );
        let fail_open = ChangeFacts {
            plugin_fail_open: true,
            ..plugin.clone()
        };
        assert_eq!(
            reasons(&set, &fail_open),
            [
                "rule guard: bob updated wasmplugins edge/warden at 2026-12-01T03:12:00Z, Warden plugin set to fail open"
            ]
        );
        assert!(set.evaluate_change(&plugin).is_empty(), "still enforcing");
        let other = ChangeFacts {
            plugin_is_warden: false,
            ..removed
        };
        assert!(set.evaluate_change(&other).is_empty(), "another plugin");
    }

    #[test]
    fn an_added_wildcard_host_is_a_finding() {
        let set = one_condition("wildcard_host_added", "true");
        let f = ChangeFacts {
            resource: "httproutes".to_string(),
            api_group: "gateway.networking.k8s.io".to_string(),
            hosts_added: vec!["shop.example".to_string(), "*.shop.example".to_string()],
            ..update()
        };
        assert_eq!(
            reasons(&set, &f),
            [
                "rule guard: bob updated httproutes shop/web at 2026-12-01T03:12:00Z, wildcard hosts added: *.shop.example"
            ]
        );
        let plain = ChangeFacts {
            hosts_added: vec!["shop.example".to_string()],
            ..f
        };
        assert!(set.evaluate_change(&plain).is_empty());
    }

    // --- Scope, order, dry run ---

    #[test]
    fn only_changes_in_scope_are_judged() {
        let set = rules(&format!("{GUARD}listener_without_tls = true\n"));
        let daytime = |f: ChangeFacts| ChangeFacts {
            time_ms: TUE_0312 + 7 * HOUR,
            user: "alice@example.com".to_string(),
            authenticated_user: "alice@example.com".to_string(),
            listeners_without_tls: vec!["http:80".to_string()],
            ..f
        };
        assert_eq!(
            conditions(&set, &daytime(update())),
            ["listener_without_tls"]
        );
        let other_namespace = ChangeFacts {
            namespace: "billing".to_string(),
            ..daytime(update())
        };
        assert!(set.evaluate_change(&other_namespace).is_empty());
        let other_resource = ChangeFacts {
            resource: "services".to_string(),
            api_group: String::new(),
            ..daytime(update())
        };
        assert!(set.evaluate_change(&other_resource).is_empty());
        let route = |group: &str| ChangeFacts {
            resource: "httproutes".to_string(),
            api_group: group.to_string(),
            ..daytime(update())
        };
        assert_eq!(
            conditions(&set, &route("gateway.networking.k8s.io")),
            ["listener_without_tls"]
        );
        assert!(
            set.evaluate_change(&route("example.com")).is_empty(),
            "the group named in the rule must match"
        );
        let gateway_any_group = ChangeFacts {
            resource: "gateways".to_string(),
            api_group: "networking.istio.io".to_string(),
            ..daytime(update())
        };
        assert_eq!(
            conditions(&set, &gateway_any_group),
            ["listener_without_tls"],
            "a resource named without a group matches any group"
        );
    }

    #[test]
    fn findings_come_in_rule_order_and_other_kinds_are_ignored() {
        let set = rules(&format!(
            "{BRUTE}\n[[rules]]\nname = \"first\"\nkind = \"change\"\nallowed_users = [\"alice\"]\n\n[[rules]]\nname = \"second\"\nkind = \"change\"\nallowed_hours = \"08:00-18:00\"\nallowed_users = [\"carol\"]\n"
        ));
        let found: Vec<(String, &str)> = set
            .evaluate_change(&update())
            .into_iter()
            .map(|f| (f.rule, f.condition))
            .collect();
        assert_eq!(
            found,
            [
                ("first".to_string(), "allowed_users"),
                ("second".to_string(), "allowed_users"),
                ("second".to_string(), "allowed_hours"),
            ]
        );
        let names: Vec<&str> = set.change_rules().map(|r| &*r.name).collect();
        assert_eq!(names, ["first", "second"]);
    }

    #[test]
    fn dry_run_findings_are_flagged() {
        let set = rules(
            "[[rules]]\nname = \"guard\"\nkind = \"change\"\ndry_run = true\nallowed_users = [\"alice\"]\n",
        );
        let found = set.evaluate_change(&update());
        assert_eq!(found.len(), 1);
        assert!(found[0].dry_run);
        assert_eq!(
            found[0].reason,
            "rule guard: bob updated ingresses shop/web at 2026-12-01T03:12:00Z, bob is not an allowed user [dry run]"
        );
    }

    #[test]
    fn findings_serialize_for_alerts() {
        let set = one_condition("allowed_users", "[\"alice\"]");
        let json = serde_json::to_value(&set.evaluate_change(&update())[0]).unwrap();
        assert_eq!(json["rule"], "guard");
        assert_eq!(json["condition"], "allowed_users");
        assert_eq!(json["dry_run"], false);
    }

    // --- Beside the record engine ---

    #[test]
    fn change_rules_never_decide_on_records() {
        let set = rules(&format!("{BRUTE}{GUARD}"));
        let mut engine = Engine::new(set.clone());
        let decisions = failures(&mut engine, "203.0.113.7", T0, 100, 30);
        let by_rule: Vec<&str> = decisions.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(by_rule, ["login-brute-force"]);
        assert!(engine.list_decisions().is_empty());
        assert!(list_decisions(&set, T0).is_empty());
        assert_eq!(
            engine.tracked_keys(),
            1,
            "only the brute-force rule's offender"
        );
        let records: Vec<_> = (0..30)
            .map(|i| rec(T0 + i * 100, "203.0.113.7", 401, "/login"))
            .collect();
        assert_eq!(replay(&set, &records), decisions);
        let summary = engine.reload(set);
        assert_eq!(summary.kept, ["login-brute-force", "ingress-guard"]);
    }

    // --- Patterns ---

    #[test]
    fn wildcards_match_like_a_naive_model() {
        fn naive(p: &[u8], t: &[u8]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some((b'*', rest)) => (0..=t.len()).any(|i| naive(rest, &t[i..])),
                Some((c, rest)) => t.first() == Some(c) && naive(rest, &t[1..]),
            }
        }
        // Every pattern over {a, b, *} and every text over {a, b}, up to five characters.
        fn all(alphabet: &[u8], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|s| alphabet.iter().map(move |&c| format!("{s}{}", c as char)))
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let texts = all(b"ab", 5);
        for p in all(b"ab*", 5) {
            for t in &texts {
                assert_eq!(
                    wildcard_match(&p, t),
                    naive(p.as_bytes(), t.as_bytes()),
                    "{p:?} on {t:?}"
                );
            }
        }
    }
}
