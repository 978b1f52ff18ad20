//! Where the rules come from: the rules file and its inline rules, the `ip_list` files they name,
//! one-line summaries for `warden rules`, and the file fingerprints the watcher compares (the
//! reload itself, which swaps the engine's rules or keeps them and reports why, is in `runtime`).

use crate::config::Config;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use warden_rules::{Rule, RuleSet, RulesErrors};

/// How often rule and list files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the rules come from: `[[rules]]` in `warden.toml` and/or `rules_file`.
#[derive(Debug, Clone, Default)]
pub struct RulesSource {
    config_path: Option<PathBuf>,
    inline: Option<toml::Value>,
    rules_file: Option<PathBuf>,
}

pub(super) fn read_error(file: &Path, reason: impl ToString) -> RulesErrors {
    RulesErrors(vec![warden_rules::RuleError::Read {
        file: file.display().to_string(),
        reason: reason.to_string(),
    }])
}

impl RulesSource {
    /// The rules named by a loaded configuration.
    pub fn from_config(config: &Config) -> RulesSource {
        RulesSource {
            config_path: config.source_path.clone(),
            inline: config.rules.clone(),
            rules_file: config.rules_file.clone(),
        }
    }

    fn base_dir(&self) -> Option<&Path> {
        self.config_path.as_deref().and_then(Path::parent)
    }

    fn resolved_rules_file(&self) -> Option<PathBuf> {
        let f = self.rules_file.as_ref()?;
        Some(match self.base_dir() {
            Some(dir) if f.is_relative() => dir.join(f),
            _ => f.clone(),
        })
    }

    /// Re-reads `warden.toml` (if there is one) for its `rules` and `rules_file`, so a reload
    /// sees edits to either.
    pub(super) fn refresh(&mut self) -> Result<(), RulesErrors> {
        let Some(path) = self.config_path.clone() else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            RulesErrors(vec![warden_rules::RuleError::Syntax {
                file: path.display().to_string(),
                reason: e.to_string().trim_end().to_string(),
            }])
        })?;
        self.inline = table.get("rules").cloned();
        self.rules_file = table
            .get("rules_file")
            .and_then(|v| v.as_str())
            .map(PathBuf::from);
        Ok(())
    }

    /// Loads and validates every rule; all problems are reported at once.
    pub fn load(&self) -> Result<RuleSet, RulesErrors> {
        let mut sets = Vec::new();
        let mut errors = Vec::new();
        if let Some(inline) = &self.inline {
            let name = self
                .config_path
                .as_ref()
                .map_or_else(|| "warden.toml".to_string(), |p| p.display().to_string());
            match RuleSet::from_toml_value(inline, &name, self.base_dir()) {
                Ok(s) => sets.push(s),
                Err(e) => errors.extend(e.0),
            }
        }
        if let Some(file) = self.resolved_rules_file() {
            match RuleSet::load(&file) {
                Ok(s) => sets.push(s),
                Err(e) => errors.extend(e.0),
            }
        }
        if !errors.is_empty() {
            return Err(RulesErrors(errors));
        }
        RuleSet::merge(sets)
    }

    /// What `GET /api/v1/rules` reports as the source.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.inline.is_some() {
            parts.push(
                self.config_path
                    .as_ref()
                    .map_or_else(|| "warden.toml".into(), |p| p.display().to_string()),
            );
        }
        if let Some(f) = self.resolved_rules_file() {
            parts.push(f.display().to_string());
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" + ")
        }
    }

    /// Files whose change triggers a reload: the config file, the rules file and every list.
    pub(super) fn watched(&self, rules: &RuleSet) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.config_path.iter().cloned().collect();
        out.extend(self.resolved_rules_file());
        out.extend(rules.list_files());
        out.sort();
        out.dedup();
        out
    }
}

/// A rule as `GET /api/v1/rules` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSummary {
    /// Unique name.
    pub name: String,
    /// `rate`, `auth_failures`, ...
    pub kind: &'static str,
    /// `deny`, `throttle` or `alert`.
    pub action: &'static str,
    /// Recorded but never enforced.
    pub dry_run: bool,
    /// One line: what triggers it and what it does.
    pub summary: String,
    /// The rule's description, if any.
    pub description: Option<String>,
}

/// One line describing a rule, e.g. `auth_failures >= 10 in 1m -> deny for 15m (x2 up to 24h)`.
pub fn summarize(rule: &Rule) -> String {
    use warden_rules::config::fmt_duration;
    let trigger = rule.kind.summary();
    let mut out = format!("{trigger} -> {}", rule.action.as_str());
    // Lists last as long as their files; change rules alert and ban nothing.
    if rule.kind.name().observes_records() {
        out.push_str(&format!(" for {}", fmt_duration(rule.ban_ttl)));
        if let Some(e) = &rule.escalation {
            out.push_str(&format!(
                " (x{} per repeat within {}, up to {})",
                e.factor,
                fmt_duration(e.period),
                fmt_duration(e.max_ttl)
            ));
        }
    }
    if rule.dry_run {
        out.push_str(" [dry run]");
    }
    out
}

pub(super) fn summaries(rules: &RuleSet) -> Vec<RuleSummary> {
    rules
        .rules()
        .iter()
        .map(|r| RuleSummary {
            name: r.name.to_string(),
            kind: r.kind.name().as_str(),
            action: r.action.as_str(),
            dry_run: r.dry_run,
            summary: summarize(r),
            description: r.description.clone(),
        })
        .collect()
}

pub(super) type Fingerprint = Option<(SystemTime, u64)>;

pub(super) fn fingerprints(paths: &[PathBuf]) -> Vec<Fingerprint> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}
