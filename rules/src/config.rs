//! The rules file: TOML parsing and validation into pre-parsed [`Rule`]s.
//!
//! Fields are read one by one from the TOML table rather than through a serde derive so that every
//! error names the file, the rule and the field, and so that one pass reports every problem in the
//! file (what `warden rules check FILE` prints) instead of stopping at the first.

use crate::action::Action;
use crate::address::{DEFAULT_IPV4_PREFIX, DEFAULT_IPV6_PREFIX, Grouping};
use crate::duration::{DURATION_HINT, parse_duration};
use crate::kinds::{KindName, RuleKind};
use crate::matcher::{MATCH_FIELDS, Matcher};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::{Table, Value};

// `warden_rules::config::fmt_duration` is how the collector prints durations the rules' way.
pub use crate::duration::fmt_duration;

/// Default ban duration when a rule sets no `ban_ttl`.
pub(crate) const DEFAULT_BAN_TTL: Duration = Duration::from_secs(3600);
/// Default `escalation.factor`.
pub(crate) const DEFAULT_ESCALATION_FACTOR: f64 = 2.0;
/// Default `escalation.max_ttl`.
pub(crate) const DEFAULT_ESCALATION_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default `escalation.period`.
pub(crate) const DEFAULT_ESCALATION_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);
/// Upper bound on `threshold` for windowed kinds: per-key memory is proportional to it.
pub(crate) const MAX_THRESHOLD: u32 = 10_000;
/// Longest accepted window or period; longer windows keep per-key state for too long.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

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

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique within the set; decisions carry origin `rule:<name>`.
    pub name: Arc<str>,
    /// Free text for operators.
    pub description: Option<String>,
    /// What a trigger asks for.
    pub action: Action,
    /// Ban (or alert suppression) duration of a first offence; unused by `ip_list` and `change`.
    pub ban_ttl: Duration,
    /// Longer bans for repeat offenders.
    pub escalation: Option<Escalation>,
    /// Decisions are flagged `dry_run` and must not be enforced.
    pub dry_run: bool,
    /// Request conditions (always empty for `ip_list` and `change`).
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
            if let RuleKind::IpList(list) = &rule.kind {
                out.extend(list.files.iter().cloned());
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
///
/// The common fields are read here; each kind reads its own (see [`crate::kinds`]) with the
/// field readers below, so every kind's errors read the same.
pub(crate) struct RuleParser<'c, 'a, 't> {
    ctx: &'c mut Ctx<'a>,
    table: &'t Table,
    /// `"name"` once the name is known, `#N` before (or if it is unusable).
    label: String,
    failed: bool,
}

impl<'t> RuleParser<'_, '_, 't> {
    /// Records a problem with `field` of this rule; the rule will not be built.
    pub(crate) fn err(&mut self, field: &str, reason: impl Into<String>) {
        self.failed = true;
        self.ctx.errors.push(RuleError::Field {
            file: self.ctx.file.to_string(),
            rule: self.label.clone(),
            field: field.to_string(),
            reason: reason.into(),
        });
    }

    /// The value of `field`, for the fields a kind reads in a shape of its own.
    pub(crate) fn get(&self, field: &str) -> Option<&'t Value> {
        self.table.get(field)
    }

    /// The rule as errors and inline list entries name it: its name once known, else `#N`.
    pub(crate) fn rule_label(&self) -> &str {
        self.label.trim_matches('"')
    }

    /// The directory relative paths in this rule (list `files`) are resolved against.
    pub(crate) fn base_dir(&self) -> Option<&Path> {
        self.ctx.base_dir
    }

    fn parse(&mut self) -> Option<Rule> {
        let name = self.name();
        let kind = self.kind_name();
        self.check_fields(kind);

        let alerts_only = kind.is_some_and(KindName::alerts_only);
        let action = match self.table.get("action") {
            // A kind that can only alert has nothing to choose, so it need not be spelt out.
            None if alerts_only => Some(Action::Alert),
            None => {
                self.err("action", format!("missing (one of {})", Action::choices()));
                None
            }
            Some(v) => match v.as_str() {
                Some(s) => match Action::parse(s) {
                    Some(a) if alerts_only && a != Action::Alert => {
                        let kind = kind.map_or("", KindName::as_str);
                        self.err(
                            "action",
                            format!(
                                "\"{s}\" is not possible for kind \"{kind}\": it has no client address to act on (use \"alert\", the default)"
                            ),
                        );
                        None
                    }
                    Some(a) => Some(a),
                    None => {
                        self.err(
                            "action",
                            format!("\"{s}\" is not one of {}", Action::choices()),
                        );
                        None
                    }
                },
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
        let matcher = Matcher::parse(self);
        let grouping = Grouping {
            ipv4_prefix: self
                .opt_prefix("ipv4_prefix", 32)
                .unwrap_or(DEFAULT_IPV4_PREFIX),
            ipv6_prefix: self
                .opt_prefix("ipv6_prefix", 128)
                .unwrap_or(DEFAULT_IPV6_PREFIX),
        };
        // Last, so that a kind's errors follow those of the fields every rule has.
        let kind = match kind {
            Some(k) => k.parse_params(self),
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
            self.err("kind", format!("missing (one of {})", KindName::choices()));
            return None;
        };
        let Some(s) = v.as_str() else {
            self.err("kind", format!("expected a string, found {}", v.type_str()));
            return None;
        };
        match KindName::parse(s) {
            Some(k) => Some(k),
            None => {
                self.err(
                    "kind",
                    format!("\"{s}\" is not one of {}", KindName::choices()),
                );
                None
            }
        }
    }

    /// Unknown fields, and fields that exist but mean nothing for this kind, are errors: a
    /// misspelt `threshhold` must not silently leave the default in force.
    fn check_fields(&mut self, kind: Option<KindName>) {
        let keys: Vec<String> = self.table.keys().cloned().collect();
        for key in keys {
            let k = key.as_str();
            // List entries last until the list changes, and a change alert bans nothing: a ban
            // length would be silently ignored.
            if let Some(kind) = kind.filter(|kind| !kind.observes_records())
                && (k == "ban_ttl" || k == "escalation")
            {
                let why = if kind.alerts_only() {
                    "it only alerts, once per change, and bans nothing"
                } else {
                    "entries last until the list changes"
                };
                self.err(k, format!("not used by kind \"{}\" ({why})", kind.as_str()));
                continue;
            }
            if COMMON_FIELDS.contains(&k) {
                continue;
            }
            let is_match = MATCH_FIELDS.contains(&k);
            let known = is_match || KindName::ALL.iter().any(|kind| kind.fields().contains(&k));
            if !known {
                self.err(k, "unknown field");
                continue;
            }
            let Some(kind) = kind else { continue };
            let allowed = kind.fields().contains(&k) || (is_match && kind.observes_records());
            if !allowed {
                self.err(k, format!("not used by kind \"{}\"", kind.as_str()));
            }
        }
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

    /// A required integer from 1 to `max`.
    pub(crate) fn req_u32(&mut self, field: &str, max: u32) -> Option<u32> {
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
    pub(crate) fn req_window(&mut self, field: &str) -> Option<Duration> {
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
    pub(crate) fn opt_duration(&mut self, field: &str, v: Option<&Value>) -> Option<Duration> {
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

    /// An optional boolean.
    pub(crate) fn opt_bool(&mut self, field: &str) -> Option<bool> {
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

    /// An optional string.
    pub(crate) fn opt_string(&mut self, field: &str) -> Option<String> {
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

    /// An optional array of strings; each item that is not a string is an error of its own.
    pub(crate) fn opt_string_list(&mut self, field: &str) -> Option<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::AuthFailures;
    use crate::testing::*;

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
            RuleKind::AuthFailures(AuthFailures {
                threshold: 10,
                window: Duration::from_secs(60)
            })
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
        "rules.toml: rule \"login-brute-force\": kind: missing (one of rate, auth_failures, status_flood, distinct_paths, ip_list, change)");

    rejects!(kind_must_be_known, set [("kind", "\"rates\"")], drop [],
        "rules.toml: rule \"login-brute-force\": kind: \"rates\" is not one of rate, auth_failures, status_flood, distinct_paths, ip_list, change");

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

    rejects!(lists_must_be_arrays, set [("hosts", "\"example.com\"")], drop [],
        "rules.toml: rule \"login-brute-force\": hosts: expected an array of strings, found string");

    rejects!(list_items_must_be_strings, set [("methods", "[\"GET\", 1]")], drop [],
        "rules.toml: rule \"login-brute-force\": methods[1]: expected a string, found integer");

    rejects!(prefixes_are_bounded, set [("ipv6_prefix", "129")], drop [],
        "rules.toml: rule \"login-brute-force\": ipv6_prefix: 129 is out of range (0 to 128)");

    rejects!(prefixes_must_be_integers, set [("ipv4_prefix", "\"24\"")], drop [],
        "rules.toml: rule \"login-brute-force\": ipv4_prefix: expected an integer, found string");
}
