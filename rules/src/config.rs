//! The rules file: TOML parsing and validation into pre-parsed [`Rule`]s.
//!
//! Fields are read one by one from the TOML table rather than through a serde derive so that every
//! error names the file, the rule and the field, and so that one pass reports every problem in the
//! file (what `warden rules check FILE` prints) instead of stopping at the first.

use crate::iplist::{self, ListedNet};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::{Table, Value};

/// Default ban duration when a rule sets no `ban_ttl`.
pub const DEFAULT_BAN_TTL: Duration = Duration::from_secs(3600);
/// Default `escalation.factor`.
pub const DEFAULT_ESCALATION_FACTOR: f64 = 2.0;
/// Default `escalation.max_ttl`.
pub const DEFAULT_ESCALATION_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default `escalation.period`.
pub const DEFAULT_ESCALATION_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default IPv4 grouping: one key per address.
pub const DEFAULT_IPV4_PREFIX: u8 = 32;
/// Default IPv6 grouping: one key per /64, the usual allocation to a single subscriber, so an
/// attacker cannot dodge a per-address rule by rotating through the addresses of its own /64.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// Upper bound on `threshold` for windowed kinds: per-key memory is proportional to it.
pub const MAX_THRESHOLD: u32 = 10_000;
/// Longest accepted window or period; longer windows keep per-key state for too long.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

const KINDS: &str = "rate, auth_failures, status_flood, distinct_paths, ip_list";
const DURATION_HINT: &str = "(use 30s, 5m, 1h)";

/// Fields every rule may have.
const COMMON_FIELDS: &[&str] = &[
    "name",
    "kind",
    "action",
    "ban_ttl",
    "escalation",
    "dry_run",
    "description",
];
/// Request match conditions, for every kind but `ip_list`.
const MATCH_FIELDS: &[&str] = &[
    "hosts",
    "path_prefixes",
    "methods",
    "status_classes",
    "ipv4_prefix",
    "ipv6_prefix",
];
const RATE_FIELDS: &[&str] = &["limit", "period", "key"];
const WINDOW_FIELDS: &[&str] = &["threshold", "window"];
const FLOOD_FIELDS: &[&str] = &["threshold", "window", "status_class"];
const LIST_FIELDS: &[&str] = &["entries", "files"];
const ESCALATION_FIELDS: &[&str] = &["factor", "max_ttl", "period"];

/// One problem found in a rules file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The file could not be read.
    #[error("{file}: cannot read: {reason}")]
    Read {
        /// The rules file.
        file: String,
        /// The I/O error.
        reason: String,
    },
    /// The file is not valid TOML.
    #[error("{file}: {reason}")]
    Syntax {
        /// The rules file.
        file: String,
        /// The TOML parser's message (it shows the line).
        reason: String,
    },
    /// A problem with a top-level key (`rules` itself, or an unknown key in a standalone file).
    #[error("{file}: {key}: {reason}")]
    TopLevel {
        /// The rules file.
        file: String,
        /// The top-level key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A problem with one field of one rule.
    #[error("{file}: rule {rule}: {field}: {reason}")]
    Field {
        /// The rules file.
        file: String,
        /// The rule: its quoted name, or `#N` (1-based position) when it has no usable name.
        rule: String,
        /// The field, e.g. `window`, `escalation.max_ttl`, `entries[2]`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// Every problem found in a rules file; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesErrors(pub Vec<RuleError>);

impl fmt::Display for RulesErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RulesErrors {}

/// What a triggered rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Block the target (Envoy answers 403).
    Deny,
    /// Rate-limit the target (Envoy answers 429 with Retry-After).
    Throttle,
    /// Only notify; nothing is pushed to Envoy.
    Alert,
}

impl Action {
    /// The spelling used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Throttle => "throttle",
            Action::Alert => "alert",
        }
    }
}

/// The kind of a rule, without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    /// Request quota per key.
    Rate,
    /// Authentication/authorization failures per address and per principal.
    AuthFailures,
    /// 4xx or 5xx responses per address.
    StatusFlood,
    /// Distinct paths per address.
    DistinctPaths,
    /// Listed addresses and networks.
    IpList,
}

impl KindName {
    /// The spelling used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            KindName::Rate => "rate",
            KindName::AuthFailures => "auth_failures",
            KindName::StatusFlood => "status_flood",
            KindName::DistinctPaths => "distinct_paths",
            KindName::IpList => "ip_list",
        }
    }

    fn parse(s: &str) -> Option<KindName> {
        Some(match s {
            "rate" => KindName::Rate,
            "auth_failures" => KindName::AuthFailures,
            "status_flood" => KindName::StatusFlood,
            "distinct_paths" => KindName::DistinctPaths,
            "ip_list" => KindName::IpList,
            _ => return None,
        })
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            KindName::Rate => RATE_FIELDS,
            KindName::AuthFailures | KindName::DistinctPaths => WINDOW_FIELDS,
            KindName::StatusFlood => FLOOD_FIELDS,
            KindName::IpList => LIST_FIELDS,
        }
    }
}

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

/// A response status class, `1xx` to `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusClass(u8);

impl StatusClass {
    /// Parses `4xx` (any case); `None` for anything else.
    pub fn parse(s: &str) -> Option<StatusClass> {
        let b = s.as_bytes();
        if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1..].eq_ignore_ascii_case(b"xx") {
            Some(StatusClass(b[0] - b'0'))
        } else {
            None
        }
    }

    /// Whether `status` is in this class.
    pub fn contains(self, status: u32) -> bool {
        status / 100 == u32::from(self.0)
    }

    /// The class digit, 1 to 5.
    pub fn digit(self) -> u8 {
        self.0
    }

    fn bit(self) -> u8 {
        1 << self.0
    }
}

impl fmt::Display for StatusClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}xx", self.0)
    }
}

/// How a repeat offender's ban grows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Escalation {
    /// Each repeat offence within `period` multiplies the TTL by this (≥ 1).
    pub factor: f64,
    /// The TTL never exceeds this.
    pub max_ttl: Duration,
    /// Offences further apart than this start over.
    pub period: Duration,
}

/// One host condition: exact, or `*.example.com` (any subdomain, not the apex).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(Box<str>),
    /// Stored with its leading dot: `.example.com`.
    Suffix(Box<str>),
}

/// The request conditions of a rule, parsed once so that matching allocates nothing.
///
/// An empty list means "any". All non-empty lists must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Matcher {
    hosts: Box<[HostPattern]>,
    path_prefixes: Box<[Box<str>]>,
    methods: Box<[Box<str>]>,
    /// Bit `n` set: class `n`xx matches. 0: any status.
    status_mask: u8,
}

impl Matcher {
    /// Whether a request with this host (lower-case, no port), method, path and status matches.
    pub fn matches(&self, host: &str, method: &str, path: &str, status: u32) -> bool {
        if self.status_mask != 0 {
            let class = status / 100;
            if class > 7 || self.status_mask & (1 << class) == 0 {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        {
            return false;
        }
        if !self.path_prefixes.is_empty() && self.matched_prefix(path).is_none() {
            return false;
        }
        if !self.hosts.is_empty()
            && !self.hosts.iter().any(|h| match h {
                HostPattern::Exact(e) => e.eq_ignore_ascii_case(host),
                HostPattern::Suffix(s) => {
                    host.len() > s.len()
                        && host.is_char_boundary(host.len() - s.len())
                        && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                }
            })
        {
            return false;
        }
        true
    }

    /// The longest configured path prefix `path` starts with.
    pub fn matched_prefix(&self, path: &str) -> Option<&str> {
        self.path_prefixes
            .iter()
            .filter(|p| path.starts_with(&***p))
            .max_by_key(|p| p.len())
            .map(|p| &**p)
    }

    /// Whether the rule has `path_prefixes`.
    pub fn has_path_prefixes(&self) -> bool {
        !self.path_prefixes.is_empty()
    }
}

/// How client addresses are grouped into keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// Prefix length for IPv4 clients.
    pub ipv4_prefix: u8,
    /// Prefix length for IPv6 clients.
    pub ipv6_prefix: u8,
}

impl Default for Grouping {
    fn default() -> Self {
        Grouping {
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

/// A kind with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// At most `limit` requests per `period` per key (GCRA: `limit` burst, refilled over
    /// `period`).
    Rate {
        /// Requests allowed per period.
        limit: NonZeroU32,
        /// The period.
        period: Duration,
        /// What requests are counted by.
        key: KeyBy,
    },
    /// `threshold` authentication/authorization failures within `window`.
    AuthFailures {
        /// Failures that trigger.
        threshold: u32,
        /// The sliding window.
        window: Duration,
    },
    /// `threshold` responses of `status_class` within `window`.
    StatusFlood {
        /// The counted class.
        status_class: StatusClass,
        /// Responses that trigger.
        threshold: u32,
        /// The sliding window.
        window: Duration,
    },
    /// `threshold` distinct paths within `window`.
    DistinctPaths {
        /// Distinct paths that trigger.
        threshold: u32,
        /// The sliding window.
        window: Duration,
    },
    /// Listed networks: inline `entries` and those read from `files`.
    IpList {
        /// Every listed network with where it came from.
        nets: Arc<[ListedNet]>,
        /// The list files, resolved, for the collector's file watcher.
        files: Vec<PathBuf>,
    },
}

impl RuleKind {
    /// The kind without parameters.
    pub fn name(&self) -> KindName {
        match self {
            RuleKind::Rate { .. } => KindName::Rate,
            RuleKind::AuthFailures { .. } => KindName::AuthFailures,
            RuleKind::StatusFlood { .. } => KindName::StatusFlood,
            RuleKind::DistinctPaths { .. } => KindName::DistinctPaths,
            RuleKind::IpList { .. } => KindName::IpList,
        }
    }
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique within the set; decisions carry origin `rule:<name>`.
    pub name: Arc<str>,
    /// Free text for operators.
    pub description: Option<String>,
    /// What a trigger asks for.
    pub action: Action,
    /// Ban (or alert suppression) duration of a first offence.
    pub ban_ttl: Duration,
    /// Longer bans for repeat offenders.
    pub escalation: Option<Escalation>,
    /// Decisions are flagged `dry_run` and must not be enforced.
    pub dry_run: bool,
    /// Request conditions (always empty for `ip_list`).
    pub matcher: Matcher,
    /// Address grouping into keys and targets.
    pub grouping: Grouping,
    /// Kind and parameters.
    pub kind: RuleKind,
}

/// A validated set of rules, ready for [`crate::Engine`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    source: String,
}

/// Where the rules came from, for error messages and for resolving list files.
struct Ctx<'a> {
    file: &'a str,
    base_dir: Option<&'a Path>,
    errors: Vec<RuleError>,
}

impl RuleSet {
    /// A set with no rules.
    pub fn empty() -> RuleSet {
        RuleSet::default()
    }

    /// Parses a standalone rules file: only a `[[rules]]` array at the top level. `source_name`
    /// prefixes every error; list `files` are resolved against the current directory.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<RuleSet, RulesErrors> {
        Self::parse(text, source_name, None, true)
    }

    /// Parses the `[[rules]]` array of a larger file (`warden.toml`), ignoring its other keys,
    /// which belong to the collector. List `files` are resolved against `base_dir` when given.
    pub fn from_embedded_toml_str(
        text: &str,
        source_name: &str,
        base_dir: Option<&Path>,
    ) -> Result<RuleSet, RulesErrors> {
        Self::parse(text, source_name, base_dir, false)
    }

    /// Builds a set from an already parsed `rules` value (the collector's `warden.toml` table).
    pub fn from_toml_value(
        rules: &Value,
        source_name: &str,
        base_dir: Option<&Path>,
    ) -> Result<RuleSet, RulesErrors> {
        let mut ctx = Ctx {
            file: source_name,
            base_dir,
            errors: Vec::new(),
        };
        let rules = parse_rules_value(&mut ctx, rules);
        finish(ctx, rules, source_name)
    }

    /// Reads and parses a standalone rules file; list `files` are relative to its directory.
    pub fn load(path: &Path) -> Result<RuleSet, RulesErrors> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            RulesErrors(vec![RuleError::Read {
                file: name.clone(),
                reason: e.to_string(),
            }])
        })?;
        Self::parse(&text, &name, path.parent(), true)
    }

    /// Every problem in the file at `path`, empty when it is valid (`warden rules check FILE`).
    pub fn check(path: &Path) -> Vec<RuleError> {
        match Self::load(path) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    fn parse(
        text: &str,
        file: &str,
        base_dir: Option<&Path>,
        standalone: bool,
    ) -> Result<RuleSet, RulesErrors> {
        let table: Table = toml::from_str(text).map_err(|e| {
            RulesErrors(vec![RuleError::Syntax {
                file: file.to_string(),
                reason: e.to_string().trim_end().to_string(),
            }])
        })?;
        let mut ctx = Ctx {
            file,
            base_dir,
            errors: Vec::new(),
        };
        if standalone {
            for key in table.keys().filter(|k| k.as_str() != "rules") {
                ctx.errors.push(RuleError::TopLevel {
                    file: file.to_string(),
                    key: key.clone(),
                    reason: "unknown key (a rules file holds only [[rules]])".to_string(),
                });
            }
        }
        let rules = match table.get("rules") {
            Some(v) => parse_rules_value(&mut ctx, v),
            None => Vec::new(),
        };
        finish(ctx, rules, file)
    }

    /// Joins sets loaded from different places (the `[[rules]]` of `warden.toml` and a
    /// `rules_file`) into one, in order. A name defined twice is an error naming both sources.
    pub fn merge(sets: Vec<RuleSet>) -> Result<RuleSet, RulesErrors> {
        let mut rules: Vec<Arc<Rule>> = Vec::new();
        let mut seen: HashMap<Arc<str>, String> = HashMap::new();
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        for set in sets {
            for rule in set.rules {
                if let Some(first) = seen.get(&rule.name) {
                    errors.push(RuleError::Field {
                        file: set.source.clone(),
                        rule: format!("{:?}", &*rule.name),
                        field: "name".to_string(),
                        reason: format!("duplicate: a rule of that name is already in {first}"),
                    });
                    continue;
                }
                seen.insert(rule.name.clone(), set.source.clone());
                rules.push(rule);
            }
            if !set.source.is_empty() {
                sources.push(set.source);
            }
        }
        if errors.is_empty() {
            Ok(RuleSet {
                rules,
                source: sources.join(" + "),
            })
        } else {
            Err(RulesErrors(errors))
        }
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// The rule named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| &*r.name == name)
    }

    /// Where the set came from (the `source_name` or path it was parsed with).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every list file the `ip_list` rules read, so the collector can watch them and reload.
    pub fn list_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for rule in &self.rules {
            if let RuleKind::IpList { files, .. } = &rule.kind {
                out.extend(files.iter().cloned());
            }
        }
        out
    }
}

fn finish(ctx: Ctx<'_>, rules: Vec<Rule>, file: &str) -> Result<RuleSet, RulesErrors> {
    if ctx.errors.is_empty() {
        Ok(RuleSet {
            rules: rules.into_iter().map(Arc::new).collect(),
            source: file.to_string(),
        })
    } else {
        Err(RulesErrors(ctx.errors))
    }
}

fn parse_rules_value(ctx: &mut Ctx<'_>, value: &Value) -> Vec<Rule> {
    let Some(items) = value.as_array() else {
        ctx.errors.push(RuleError::TopLevel {
            file: ctx.file.to_string(),
            key: "rules".to_string(),
            reason: format!(
                "expected an array of tables ([[rules]]), found {}",
                value.type_str()
            ),
        });
        return Vec::new();
    };
    let mut rules = Vec::with_capacity(items.len());
    let mut first_index: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let Some(table) = item.as_table() else {
            ctx.errors.push(RuleError::Field {
                file: ctx.file.to_string(),
                rule: format!("#{}", i + 1),
                field: "rules".to_string(),
                reason: format!("expected a table, found {}", item.type_str()),
            });
            continue;
        };
        let mut rp = RuleParser {
            ctx,
            table,
            label: format!("#{}", i + 1),
            failed: false,
        };
        let rule = rp.parse();
        if let Some(rule) = rule {
            if let Some(first) = first_index.get(&*rule.name) {
                ctx.errors.push(RuleError::Field {
                    file: ctx.file.to_string(),
                    rule: format!("\"{}\"", rule.name),
                    field: "name".to_string(),
                    reason: format!("duplicate rule name (first defined as rule #{})", first + 1),
                });
            } else {
                first_index.insert(rule.name.to_string(), i);
                rules.push(rule);
            }
        }
    }
    rules
}

/// Reads the fields of one `[[rules]]` table, recording every error it finds.
struct RuleParser<'c, 'a, 't> {
    ctx: &'c mut Ctx<'a>,
    table: &'t Table,
    /// `"name"` once the name is known, `#N` before (or if it is unusable).
    label: String,
    failed: bool,
}

impl RuleParser<'_, '_, '_> {
    fn err(&mut self, field: &str, reason: impl Into<String>) {
        self.failed = true;
        self.ctx.errors.push(RuleError::Field {
            file: self.ctx.file.to_string(),
            rule: self.label.clone(),
            field: field.to_string(),
            reason: reason.into(),
        });
    }

    fn parse(&mut self) -> Option<Rule> {
        let name = self.name();
        let kind = self.kind_name();
        self.check_fields(kind);

        let action = match self.table.get("action") {
            None => {
                self.err("action", "missing (one of deny, throttle, alert)");
                None
            }
            Some(v) => match v.as_str() {
                Some("deny") => Some(Action::Deny),
                Some("throttle") => Some(Action::Throttle),
                Some("alert") => Some(Action::Alert),
                Some(other) => {
                    self.err(
                        "action",
                        format!("\"{other}\" is not one of deny, throttle, alert"),
                    );
                    None
                }
                None => {
                    self.err(
                        "action",
                        format!("expected a string, found {}", v.type_str()),
                    );
                    None
                }
            },
        };
        let description = self.opt_string("description");
        let ban_ttl = self
            .opt_duration("ban_ttl", self.table.get("ban_ttl"))
            .unwrap_or(DEFAULT_BAN_TTL);
        let escalation = self.escalation(ban_ttl);
        let dry_run = self.opt_bool("dry_run").unwrap_or(false);
        let matcher = self.matcher();
        let grouping = Grouping {
            ipv4_prefix: self
                .opt_prefix("ipv4_prefix", 32)
                .unwrap_or(DEFAULT_IPV4_PREFIX),
            ipv6_prefix: self
                .opt_prefix("ipv6_prefix", 128)
                .unwrap_or(DEFAULT_IPV6_PREFIX),
        };
        let kind = match kind {
            Some(k) => self.kind_params(k),
            None => None,
        };
        if self.failed {
            return None;
        }
        Some(Rule {
            name: name?,
            description,
            action: action?,
            ban_ttl,
            escalation,
            dry_run,
            matcher,
            grouping,
            kind: kind?,
        })
    }

    fn name(&mut self) -> Option<Arc<str>> {
        let Some(v) = self.table.get("name") else {
            self.err("name", "missing");
            return None;
        };
        let Some(s) = v.as_str() else {
            self.err("name", format!("expected a string, found {}", v.type_str()));
            return None;
        };
        if s.is_empty()
            || s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.err(
                "name",
                format!("\"{s}\" must be 1 to 64 letters, digits, '-', '_' or '.'"),
            );
            return None;
        }
        self.label = format!("\"{s}\"");
        Some(Arc::from(s))
    }

    fn kind_name(&mut self) -> Option<KindName> {
        let Some(v) = self.table.get("kind") else {
            self.err("kind", format!("missing (one of {KINDS})"));
            return None;
        };
        let Some(s) = v.as_str() else {
            self.err("kind", format!("expected a string, found {}", v.type_str()));
            return None;
        };
        match KindName::parse(s) {
            Some(k) => Some(k),
            None => {
                self.err("kind", format!("\"{s}\" is not one of {KINDS}"));
                None
            }
        }
    }

    /// Unknown fields, and fields that exist but mean nothing for this kind, are errors: a
    /// misspelt `threshhold` must not silently leave the default in force.
    fn check_fields(&mut self, kind: Option<KindName>) {
        let all_kinds = [RATE_FIELDS, WINDOW_FIELDS, FLOOD_FIELDS, LIST_FIELDS];
        let keys: Vec<String> = self.table.keys().cloned().collect();
        for key in keys {
            let k = key.as_str();
            // List entries last until the list changes: a ban length would be silently ignored.
            if kind == Some(KindName::IpList) && (k == "ban_ttl" || k == "escalation") {
                self.err(
                    k,
                    "not used by kind \"ip_list\" (entries last until the list changes)",
                );
                continue;
            }
            if COMMON_FIELDS.contains(&k) {
                continue;
            }
            let is_match = MATCH_FIELDS.contains(&k);
            let known = is_match || all_kinds.iter().any(|f| f.contains(&k));
            if !known {
                self.err(k, "unknown field");
                continue;
            }
            let Some(kind) = kind else { continue };
            let allowed = if kind == KindName::IpList {
                LIST_FIELDS.contains(&k)
            } else {
                is_match || kind.fields().contains(&k)
            };
            if !allowed {
                self.err(k, format!("not used by kind \"{}\"", kind.as_str()));
            }
        }
    }

    fn kind_params(&mut self, kind: KindName) -> Option<RuleKind> {
        match kind {
            KindName::Rate => {
                let limit = self.req_u32("limit", u32::MAX);
                let period = self.req_window("period");
                let key = match self.table.get("key") {
                    None => Some(KeyBy::Address),
                    Some(v) => match v.as_str() {
                        Some("address") => Some(KeyBy::Address),
                        Some("principal") => Some(KeyBy::Principal),
                        Some("address_host") => Some(KeyBy::AddressHost),
                        Some("address_path_prefix") => Some(KeyBy::AddressPathPrefix),
                        Some(other) => {
                            self.err(
                                "key",
                                format!(
                                    "\"{other}\" is not one of address, principal, address_host, address_path_prefix"
                                ),
                            );
                            None
                        }
                        None => {
                            self.err("key", format!("expected a string, found {}", v.type_str()));
                            None
                        }
                    },
                };
                let (limit, period, key) = (limit?, period?, key?);
                let limit = NonZeroU32::new(limit)?;
                // governor refills one request every period/limit; below a nanosecond that is 0
                // and the quota cannot be built.
                if period.checked_div(limit.get()).is_none_or(|d| d.is_zero()) {
                    self.err(
                        "limit",
                        format!(
                            "{limit} per {} is more than one per nanosecond",
                            fmt_duration(period)
                        ),
                    );
                    return None;
                }
                Some(RuleKind::Rate { limit, period, key })
            }
            KindName::AuthFailures => {
                let threshold = self.req_u32("threshold", MAX_THRESHOLD);
                let window = self.req_window("window");
                Some(RuleKind::AuthFailures {
                    threshold: threshold?,
                    window: window?,
                })
            }
            KindName::StatusFlood => {
                let threshold = self.req_u32("threshold", MAX_THRESHOLD);
                let window = self.req_window("window");
                let status_class = match self.table.get("status_class") {
                    None => {
                        self.err("status_class", "missing (\"4xx\" or \"5xx\")");
                        None
                    }
                    Some(v) => match v.as_str().map(|s| (s, StatusClass::parse(s))) {
                        Some((_, Some(c))) => Some(c),
                        Some((s, None)) => {
                            self.err(
                                "status_class",
                                format!("\"{s}\" is not a status class (use \"4xx\" or \"5xx\")"),
                            );
                            None
                        }
                        None => {
                            self.err(
                                "status_class",
                                format!("expected a string, found {}", v.type_str()),
                            );
                            None
                        }
                    },
                };
                Some(RuleKind::StatusFlood {
                    status_class: status_class?,
                    threshold: threshold?,
                    window: window?,
                })
            }
            KindName::DistinctPaths => {
                let threshold = self.req_u32("threshold", MAX_THRESHOLD);
                let window = self.req_window("window");
                Some(RuleKind::DistinctPaths {
                    threshold: threshold?,
                    window: window?,
                })
            }
            KindName::IpList => self.ip_list(),
        }
    }

    fn ip_list(&mut self) -> Option<RuleKind> {
        let entries = self.opt_string_list("entries").unwrap_or_default();
        let file_names = self.opt_string_list("files").unwrap_or_default();
        if !self.table.contains_key("entries") && !self.table.contains_key("files") {
            self.err("entries", "an ip_list rule needs entries, files or both");
            return None;
        }
        let mut nets = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match iplist::parse_net(entry) {
                Some(net) => nets.push(ListedNet {
                    net,
                    origin: format!("rule:{}", self.label.trim_matches('"')),
                    note: None,
                }),
                None => self.err(
                    &format!("entries[{i}]"),
                    format!("\"{entry}\" is not an address or CIDR"),
                ),
            }
        }
        let mut files = Vec::new();
        for (i, name) in file_names.iter().enumerate() {
            let path = match self.ctx.base_dir {
                Some(dir) if Path::new(name).is_relative() => dir.join(name),
                _ => PathBuf::from(name),
            };
            match iplist::load_list(&path) {
                Ok(list) => nets.extend(list),
                Err(errs) => {
                    for e in errs {
                        self.err(&format!("files[{i}]"), e.to_string());
                    }
                }
            }
            files.push(path);
        }
        Some(RuleKind::IpList {
            nets: nets.into(),
            files,
        })
    }

    fn escalation(&mut self, ban_ttl: Duration) -> Option<Escalation> {
        let v = self.table.get("escalation")?;
        let Some(t) = v.as_table() else {
            self.err(
                "escalation",
                format!("expected a table like {{ factor = 2.0, max_ttl = \"24h\", period = \"7d\" }}, found {}", v.type_str()),
            );
            return None;
        };
        for key in t.keys() {
            if !ESCALATION_FIELDS.contains(&key.as_str()) {
                self.err(
                    &format!("escalation.{key}"),
                    "unknown field (expected factor, max_ttl, period)",
                );
            }
        }
        let factor = match t.get("factor") {
            None => DEFAULT_ESCALATION_FACTOR,
            Some(v) => match v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
                Some(f) if f.is_finite() && f >= 1.0 => f,
                Some(f) => {
                    self.err("escalation.factor", format!("{f} must be at least 1.0"));
                    return None;
                }
                None => {
                    self.err(
                        "escalation.factor",
                        format!("expected a number, found {}", v.type_str()),
                    );
                    return None;
                }
            },
        };
        let max_ttl = self
            .opt_duration("escalation.max_ttl", t.get("max_ttl"))
            .unwrap_or(DEFAULT_ESCALATION_MAX_TTL);
        let period = self
            .opt_duration("escalation.period", t.get("period"))
            .unwrap_or(DEFAULT_ESCALATION_PERIOD);
        if max_ttl < ban_ttl {
            self.err(
                "escalation.max_ttl",
                format!(
                    "{} is shorter than ban_ttl {}",
                    fmt_duration(max_ttl),
                    fmt_duration(ban_ttl)
                ),
            );
            return None;
        }
        Some(Escalation {
            factor,
            max_ttl,
            period,
        })
    }

    fn matcher(&mut self) -> Matcher {
        let mut hosts = Vec::new();
        for (i, h) in self
            .opt_string_list("hosts")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let lower = h.to_ascii_lowercase();
            let pattern = match lower.strip_prefix("*.") {
                Some(rest) if valid_host(rest) => HostPattern::Suffix(format!(".{rest}").into()),
                None if valid_host(&lower) => HostPattern::Exact(lower.into()),
                _ => {
                    self.err(
                        &format!("hosts[{i}]"),
                        format!("\"{h}\" is not a host name (or *.domain)"),
                    );
                    continue;
                }
            };
            hosts.push(pattern);
        }
        let mut path_prefixes = Vec::new();
        for (i, p) in self
            .opt_string_list("path_prefixes")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if p.starts_with('/') {
                path_prefixes.push(p.into_boxed_str());
            } else {
                self.err(
                    &format!("path_prefixes[{i}]"),
                    format!("\"{p}\" must start with '/'"),
                );
            }
        }
        let mut methods = Vec::new();
        for (i, m) in self
            .opt_string_list("methods")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) {
                methods.push(m.to_ascii_uppercase().into_boxed_str());
            } else {
                self.err(
                    &format!("methods[{i}]"),
                    format!("\"{m}\" is not an HTTP method"),
                );
            }
        }
        let mut status_mask = 0u8;
        for (i, c) in self
            .opt_string_list("status_classes")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match StatusClass::parse(&c) {
                Some(class) => status_mask |= class.bit(),
                None => self.err(
                    &format!("status_classes[{i}]"),
                    format!("\"{c}\" is not a status class (use 1xx to 5xx)"),
                ),
            }
        }
        Matcher {
            hosts: hosts.into(),
            path_prefixes: path_prefixes.into(),
            methods: methods.into(),
            status_mask,
        }
    }

    fn req_u32(&mut self, field: &str, max: u32) -> Option<u32> {
        let Some(v) = self.table.get(field) else {
            self.err(field, "missing");
            return None;
        };
        match v.as_integer() {
            Some(n) if n >= 1 && n <= i64::from(max) => u32::try_from(n).ok(),
            Some(n) => {
                self.err(field, format!("{n} is out of range (1 to {max})"));
                None
            }
            None => {
                self.err(
                    field,
                    format!("expected an integer, found {}", v.type_str()),
                );
                None
            }
        }
    }

    /// A required window or period: positive and at most [`MAX_WINDOW`].
    fn req_window(&mut self, field: &str) -> Option<Duration> {
        let Some(v) = self.table.get(field) else {
            self.err(field, format!("missing {DURATION_HINT}"));
            return None;
        };
        let d = self.opt_duration(field, Some(v))?;
        if d > MAX_WINDOW {
            self.err(
                field,
                format!(
                    "{} is longer than the maximum {}",
                    fmt_duration(d),
                    fmt_duration(MAX_WINDOW)
                ),
            );
            return None;
        }
        Some(d)
    }

    /// A positive duration written like `5m`.
    fn opt_duration(&mut self, field: &str, v: Option<&Value>) -> Option<Duration> {
        let v = v?;
        let Some(s) = v.as_str() else {
            self.err(
                field,
                format!(
                    "expected a duration string like \"5m\", found {}",
                    v.type_str()
                ),
            );
            return None;
        };
        match parse_duration(s) {
            Some(d) if d.is_zero() => {
                self.err(field, format!("\"{s}\" must be longer than zero"));
                None
            }
            Some(d) => Some(d),
            None => {
                self.err(field, format!("\"{s}\" is not a duration {DURATION_HINT}"));
                None
            }
        }
    }

    fn opt_bool(&mut self, field: &str) -> Option<bool> {
        let v = self.table.get(field)?;
        if let Some(b) = v.as_bool() {
            return Some(b);
        }
        self.err(
            field,
            format!("expected true or false, found {}", v.type_str()),
        );
        None
    }

    fn opt_string(&mut self, field: &str) -> Option<String> {
        let v = self.table.get(field)?;
        if let Some(s) = v.as_str() {
            return Some(s.to_string());
        }
        self.err(field, format!("expected a string, found {}", v.type_str()));
        None
    }

    fn opt_prefix(&mut self, field: &str, max: u8) -> Option<u8> {
        let v = self.table.get(field)?;
        match v.as_integer() {
            Some(n) if (0..=i64::from(max)).contains(&n) => u8::try_from(n).ok(),
            Some(n) => {
                self.err(field, format!("{n} is out of range (0 to {max})"));
                None
            }
            None => {
                self.err(
                    field,
                    format!("expected an integer, found {}", v.type_str()),
                );
                None
            }
        }
    }

    fn opt_string_list(&mut self, field: &str) -> Option<Vec<String>> {
        let v = self.table.get(field)?;
        let Some(items) = v.as_array() else {
            self.err(
                field,
                format!("expected an array of strings, found {}", v.type_str()),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_string()),
                None => self.err(
                    &format!("{field}[{i}]"),
                    format!("expected a string, found {}", item.type_str()),
                ),
            }
        }
        Some(out)
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && (h.parse::<IpAddr>().is_ok()
            || h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'))
}

/// Parses `30s`, `5m`, `1h`, `7d`, `1h 30m`; `None` when it is not a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

/// Formats a duration the way the rules file writes it: `1m`, `1h30m`, `1d`, `1500ms` → `1s500ms`.
pub fn fmt_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid rule; tests replace, add or drop fields to provoke one error each.
    const BASE: &[(&str, &str)] = &[
        ("name", "\"login-brute-force\""),
        ("kind", "\"auth_failures\""),
        ("action", "\"deny\""),
        ("threshold", "10"),
        ("window", "\"1m\""),
    ];

    fn rule_text(set: &[(&str, &str)], drop: &[&str]) -> String {
        let mut fields: Vec<(&str, &str)> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| !drop.contains(k))
            .collect();
        for &(k, v) in set {
            match fields.iter_mut().find(|(fk, _)| *fk == k) {
                Some(f) => f.1 = v,
                None => fields.push((k, v)),
            }
        }
        let mut text = String::from("[[rules]]\n");
        for (k, v) in fields {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text
    }

    fn errors(text: &str) -> Vec<String> {
        match RuleSet::from_toml_str(text, "rules.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn one_error(set: &[(&str, &str)], drop: &[&str]) -> String {
        let errs = errors(&rule_text(set, drop));
        assert_eq!(errs.len(), 1, "expected exactly one error, got {errs:#?}");
        errs[0].clone()
    }

    /// One test per message: `rejects!(test_name, set [(field, toml)], drop [field], "message")`.
    macro_rules! rejects {
        ($name:ident, set [$(($k:expr, $v:expr)),* $(,)?], drop [$($d:expr),*], $msg:expr) => {
            #[test]
            fn $name() {
                assert_eq!(one_error(&[$(($k, $v)),*], &[$($d),*]), $msg);
            }
        };
    }

    #[test]
    fn a_minimal_rule_gets_the_documented_defaults() {
        let set = RuleSet::from_toml_str(&rule_text(&[], &[]), "rules.toml").unwrap();
        let rule = set.get("login-brute-force").unwrap();
        assert_eq!(rule.ban_ttl, DEFAULT_BAN_TTL);
        assert_eq!(rule.escalation, None);
        assert!(!rule.dry_run);
        assert_eq!(rule.grouping, Grouping::default());
        assert_eq!(rule.matcher, Matcher::default());
        assert_eq!(
            rule.kind,
            RuleKind::AuthFailures {
                threshold: 10,
                window: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn the_shipped_default_rules_load() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/default-rules.toml");
        let set = RuleSet::load(&path).unwrap();
        assert!(set.rules().len() >= 4);
        assert!(set.rules().iter().all(|r| !r.dry_run));
    }

    #[test]
    fn the_readme_example_loads() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let set = RuleSet::from_embedded_toml_str(&readme[start..end], "README.md", None).unwrap();
        assert!(set.rules().len() >= 5);
    }

    #[test]
    fn durations_print_the_way_they_are_written() {
        for text in ["30s", "1m", "15m", "1h30m", "7d", "1s500ms"] {
            assert_eq!(fmt_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn an_empty_file_is_an_empty_set() {
        assert!(
            RuleSet::from_toml_str("", "rules.toml")
                .unwrap()
                .rules()
                .is_empty()
        );
    }

    #[test]
    fn every_error_in_the_file_is_reported() {
        let text = format!(
            "{}{}",
            rule_text(&[("window", "\"5x\""), ("threshhold", "3")], &[]),
            rule_text(&[("name", "\"other\""), ("action", "\"block\"")], &[])
        );
        assert_eq!(
            errors(&text),
            [
                "rules.toml: rule \"login-brute-force\": threshhold: unknown field",
                "rules.toml: rule \"login-brute-force\": window: \"5x\" is not a duration (use 30s, 5m, 1h)",
                "rules.toml: rule \"other\": action: \"block\" is not one of deny, throttle, alert",
            ]
        );
    }

    #[test]
    fn embedded_rules_ignore_the_collectors_keys() {
        let text = format!(
            "[grpc]\nlisten = \"127.0.0.1:0\"\n\n{}",
            rule_text(&[], &[])
        );
        let set = RuleSet::from_embedded_toml_str(&text, "warden.toml", None).unwrap();
        assert_eq!(set.rules().len(), 1);
    }

    #[test]
    fn match_conditions_are_parsed_once() {
        let text = rule_text(
            &[
                ("hosts", "[\"Login.Example.com\", \"*.example.org\"]"),
                ("path_prefixes", "[\"/login\", \"/login/api\"]"),
                ("methods", "[\"post\"]"),
                ("status_classes", "[\"4xx\"]"),
            ],
            &[],
        );
        let set = RuleSet::from_toml_str(&text, "rules.toml").unwrap();
        let m = &set.rules()[0].matcher;
        assert!(m.matches("login.example.com", "POST", "/login/api/x", 401));
        assert!(m.matches("a.example.org", "POST", "/login", 403));
        assert!(
            !m.matches("example.org", "POST", "/login", 403),
            "*. does not match the apex"
        );
        assert!(!m.matches("login.example.com", "GET", "/login", 401));
        assert!(!m.matches("login.example.com", "POST", "/logout", 401));
        assert!(!m.matches("login.example.com", "POST", "/login", 500));
        assert_eq!(m.matched_prefix("/login/api/x"), Some("/login/api"));
    }

    #[test]
    fn escalation_defaults_fill_missing_fields() {
        let set = RuleSet::from_toml_str(&rule_text(&[("escalation", "{ factor = 3 }")], &[]), "r")
            .unwrap();
        let e = set.rules()[0].escalation.unwrap();
        assert_eq!(e.factor, 3.0);
        assert_eq!(e.max_ttl, DEFAULT_ESCALATION_MAX_TTL);
        assert_eq!(e.period, DEFAULT_ESCALATION_PERIOD);
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let errs = errors("[[rules]\nname = 1");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("rules.toml: TOML parse error at line 1"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let errs = RuleSet::check(Path::new("/nonexistent/warden/rules.toml"));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .starts_with("/nonexistent/warden/rules.toml: cannot read: "),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn unknown_top_level_keys_are_rejected_in_a_rules_file() {
        assert_eq!(
            errors("[[rule]]\nname = \"x\"\n"),
            ["rules.toml: rule: unknown key (a rules file holds only [[rules]])"]
        );
    }

    #[test]
    fn rules_must_be_an_array_of_tables() {
        assert_eq!(
            errors("rules = \"x\"\n"),
            ["rules.toml: rules: expected an array of tables ([[rules]]), found string"]
        );
    }

    #[test]
    fn each_rule_must_be_a_table() {
        assert_eq!(
            errors("rules = [1]\n"),
            ["rules.toml: rule #1: rules: expected a table, found integer"]
        );
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let text = format!("{}{}", rule_text(&[], &[]), rule_text(&[], &[]));
        assert_eq!(
            errors(&text),
            [
                "rules.toml: rule \"login-brute-force\": name: duplicate rule name (first defined as rule #1)"
            ]
        );
    }

    rejects!(name_is_required, set [], drop ["name"], "rules.toml: rule #1: name: missing");
    rejects!(name_must_be_a_string, set [("name", "5")], drop [], "rules.toml: rule #1: name: expected a string, found integer");
    rejects!(name_must_be_a_simple_word, set [("name", "\"login brute\"")], drop [],
        "rules.toml: rule #1: name: \"login brute\" must be 1 to 64 letters, digits, '-', '_' or '.'");
    rejects!(kind_is_required, set [], drop ["kind"],
        "rules.toml: rule \"login-brute-force\": kind: missing (one of rate, auth_failures, status_flood, distinct_paths, ip_list)");
    rejects!(kind_must_be_known, set [("kind", "\"rates\"")], drop [],
        "rules.toml: rule \"login-brute-force\": kind: \"rates\" is not one of rate, auth_failures, status_flood, distinct_paths, ip_list");
    rejects!(kind_must_be_a_string, set [("kind", "true")], drop [],
        "rules.toml: rule \"login-brute-force\": kind: expected a string, found boolean");
    rejects!(unknown_fields_are_named, set [("treshold", "3")], drop [],
        "rules.toml: rule \"login-brute-force\": treshold: unknown field");
    rejects!(fields_of_another_kind_are_rejected, set [("limit", "3")], drop [],
        "rules.toml: rule \"login-brute-force\": limit: not used by kind \"auth_failures\"");
    rejects!(action_is_required, set [], drop ["action"],
        "rules.toml: rule \"login-brute-force\": action: missing (one of deny, throttle, alert)");
    rejects!(action_must_be_known, set [("action", "\"block\"")], drop [],
        "rules.toml: rule \"login-brute-force\": action: \"block\" is not one of deny, throttle, alert");
    rejects!(action_must_be_a_string, set [("action", "1")], drop [],
        "rules.toml: rule \"login-brute-force\": action: expected a string, found integer");
    rejects!(description_must_be_a_string, set [("description", "1")], drop [],
        "rules.toml: rule \"login-brute-force\": description: expected a string, found integer");
    rejects!(durations_must_parse, set [("window", "\"5x\"")], drop [],
        "rules.toml: rule \"login-brute-force\": window: \"5x\" is not a duration (use 30s, 5m, 1h)");
    rejects!(durations_must_be_positive, set [("ban_ttl", "\"0s\"")], drop [],
        "rules.toml: rule \"login-brute-force\": ban_ttl: \"0s\" must be longer than zero");
    rejects!(durations_must_be_strings, set [("window", "60")], drop [],
        "rules.toml: rule \"login-brute-force\": window: expected a duration string like \"5m\", found integer");
    rejects!(window_is_required, set [], drop ["window"],
        "rules.toml: rule \"login-brute-force\": window: missing (use 30s, 5m, 1h)");
    rejects!(window_is_bounded, set [("window", "\"2d\"")], drop [],
        "rules.toml: rule \"login-brute-force\": window: 2d is longer than the maximum 1d");
    rejects!(threshold_is_required, set [], drop ["threshold"],
        "rules.toml: rule \"login-brute-force\": threshold: missing");
    rejects!(threshold_is_bounded, set [("threshold", "0")], drop [],
        "rules.toml: rule \"login-brute-force\": threshold: 0 is out of range (1 to 10000)");
    rejects!(threshold_must_be_an_integer, set [("threshold", "\"10\"")], drop [],
        "rules.toml: rule \"login-brute-force\": threshold: expected an integer, found string");
    rejects!(dry_run_must_be_a_boolean, set [("dry_run", "\"yes\"")], drop [],
        "rules.toml: rule \"login-brute-force\": dry_run: expected true or false, found string");
    rejects!(escalation_must_be_a_table, set [("escalation", "2")], drop [],
        "rules.toml: rule \"login-brute-force\": escalation: expected a table like { factor = 2.0, max_ttl = \"24h\", period = \"7d\" }, found integer");
    rejects!(escalation_fields_must_be_known, set [("escalation", "{ factr = 2.0 }")], drop [],
        "rules.toml: rule \"login-brute-force\": escalation.factr: unknown field (expected factor, max_ttl, period)");
    rejects!(escalation_factor_is_at_least_one, set [("escalation", "{ factor = 0.5 }")], drop [],
        "rules.toml: rule \"login-brute-force\": escalation.factor: 0.5 must be at least 1.0");
    rejects!(escalation_factor_must_be_a_number, set [("escalation", "{ factor = \"2\" }")], drop [],
        "rules.toml: rule \"login-brute-force\": escalation.factor: expected a number, found string");
    rejects!(escalation_max_ttl_covers_ban_ttl, set [("ban_ttl", "\"2h\""), ("escalation", "{ max_ttl = \"1h\" }")], drop [],
        "rules.toml: rule \"login-brute-force\": escalation.max_ttl: 1h is shorter than ban_ttl 2h");
    rejects!(escalation_period_must_parse, set [("escalation", "{ period = \"week\" }")], drop [],
        "rules.toml: rule \"login-brute-force\": escalation.period: \"week\" is not a duration (use 30s, 5m, 1h)");
    rejects!(hosts_must_be_host_names, set [("hosts", "[\"exa mple.com\"]")], drop [],
        "rules.toml: rule \"login-brute-force\": hosts[0]: \"exa mple.com\" is not a host name (or *.domain)");
    rejects!(path_prefixes_start_with_a_slash, set [("path_prefixes", "[\"login\"]")], drop [],
        "rules.toml: rule \"login-brute-force\": path_prefixes[0]: \"login\" must start with '/'");
    rejects!(methods_must_be_methods, set [("methods", "[\"GET POST\"]")], drop [],
        "rules.toml: rule \"login-brute-force\": methods[0]: \"GET POST\" is not an HTTP method");
    rejects!(status_classes_must_be_classes, set [("status_classes", "[\"404\"]")], drop [],
        "rules.toml: rule \"login-brute-force\": status_classes[0]: \"404\" is not a status class (use 1xx to 5xx)");
    rejects!(lists_must_be_arrays, set [("hosts", "\"example.com\"")], drop [],
        "rules.toml: rule \"login-brute-force\": hosts: expected an array of strings, found string");
    rejects!(list_items_must_be_strings, set [("methods", "[\"GET\", 1]")], drop [],
        "rules.toml: rule \"login-brute-force\": methods[1]: expected a string, found integer");
    rejects!(prefixes_are_bounded, set [("ipv6_prefix", "129")], drop [],
        "rules.toml: rule \"login-brute-force\": ipv6_prefix: 129 is out of range (0 to 128)");
    rejects!(prefixes_must_be_integers, set [("ipv4_prefix", "\"24\"")], drop [],
        "rules.toml: rule \"login-brute-force\": ipv4_prefix: expected an integer, found string");
    rejects!(rate_needs_a_limit, set [("kind", "\"rate\""), ("period", "\"1m\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": limit: missing");
    rejects!(rate_limit_must_fit_the_period, set [("kind", "\"rate\""), ("limit", "4000000000"), ("period", "\"1s\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": limit: 4000000000 per 1s is more than one per nanosecond");
    rejects!(rate_key_must_be_known, set [("kind", "\"rate\""), ("limit", "5"), ("period", "\"1m\""), ("key", "\"ip\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": key: \"ip\" is not one of address, principal, address_host, address_path_prefix");
    rejects!(rate_key_must_be_a_string, set [("kind", "\"rate\""), ("limit", "5"), ("period", "\"1m\""), ("key", "1")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": key: expected a string, found integer");
    rejects!(status_flood_needs_a_class, set [("kind", "\"status_flood\"")], drop [],
        "rules.toml: rule \"login-brute-force\": status_class: missing (\"4xx\" or \"5xx\")");
    rejects!(status_flood_class_must_be_a_class, set [("kind", "\"status_flood\""), ("status_class", "\"4\"")], drop [],
        "rules.toml: rule \"login-brute-force\": status_class: \"4\" is not a status class (use \"4xx\" or \"5xx\")");
    rejects!(status_flood_class_must_be_a_string, set [("kind", "\"status_flood\""), ("status_class", "4")], drop [],
        "rules.toml: rule \"login-brute-force\": status_class: expected a string, found integer");
    rejects!(ip_list_needs_entries_or_files, set [("kind", "\"ip_list\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": entries: an ip_list rule needs entries, files or both");
    rejects!(ip_list_takes_no_match_conditions, set [("kind", "\"ip_list\""), ("entries", "[\"10.0.0.0/8\"]"), ("hosts", "[\"a\"]")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": hosts: not used by kind \"ip_list\"");
    rejects!(ip_list_takes_no_ban_ttl, set [("kind", "\"ip_list\""), ("entries", "[\"10.0.0.0/8\"]"), ("ban_ttl", "\"1h\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": ban_ttl: not used by kind \"ip_list\" (entries last until the list changes)");
    rejects!(ip_list_entries_must_be_cidrs, set [("kind", "\"ip_list\""), ("entries", "[\"10.0.0.0/8\", \"10.0.0.0/40\"]")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": entries[1]: \"10.0.0.0/40\" is not an address or CIDR");
    rejects!(ip_list_files_must_exist, set [("kind", "\"ip_list\""), ("files", "[\"/nonexistent/drop.txt\"]")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": files[0]: /nonexistent/drop.txt: cannot read: No such file or directory (os error 2)");

    #[test]
    fn ip_list_file_errors_carry_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("drop.txt"),
            "; Spamhaus DROP\n1.10.16.0/20 ; SBL1\nbogus ; SBL2\n",
        )
        .unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            "[[rules]]\nname = \"drop\"\nkind = \"ip_list\"\naction = \"deny\"\nfiles = [\"drop.txt\"]\n",
        )
        .unwrap();
        let errs: Vec<String> = RuleSet::check(&rules)
            .iter()
            .map(ToString::to_string)
            .collect();
        let list = dir.path().join("drop.txt");
        assert_eq!(
            errs,
            [format!(
                "{}: rule \"drop\": files[0]: {}:3: \"bogus\" is not an address or CIDR",
                rules.display(),
                list.display()
            )]
        );
    }

    #[test]
    fn ip_list_files_resolve_against_the_rules_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drop.txt"), "1.10.16.0/20 ; SBL1\n").unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            "[[rules]]\nname = \"drop\"\nkind = \"ip_list\"\naction = \"deny\"\nentries = [\"192.0.2.1\"]\nfiles = [\"drop.txt\"]\n",
        )
        .unwrap();
        let set = RuleSet::load(&rules).unwrap();
        assert_eq!(set.list_files(), [dir.path().join("drop.txt")]);
        let RuleKind::IpList { nets, .. } = &set.rules()[0].kind else {
            panic!("not a list")
        };
        assert_eq!(nets.len(), 2);
        assert_eq!(nets[0].origin, "rule:drop");
        assert_eq!(
            nets[1].origin,
            format!("list:{}", dir.path().join("drop.txt").display())
        );
    }
}
