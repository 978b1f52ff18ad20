//! What a decision is: its action (deny, throttle, allow), its origin (manual, a list file, a
//! rule), the stored decision and its API view, and a ban request.

use crate::target::Target;
use crate::time::Ttl;
use serde::Serialize;
use std::str::FromStr;
use std::sync::Arc;
use warden_proto::pb::{Action, EntryKey, ListEntry};

/// What a decision does to matching clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionAction {
    /// Refuse (403).
    Deny,
    /// Rate-limit (429).
    Throttle,
    /// Allowlist: never blocked.
    Allow,
}

impl DecisionAction {
    /// The stored and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionAction::Deny => "deny",
            DecisionAction::Throttle => "throttle",
            DecisionAction::Allow => "allow",
        }
    }

    fn proto(self) -> Action {
        match self {
            DecisionAction::Deny => Action::Deny,
            DecisionAction::Throttle => Action::Throttle,
            DecisionAction::Allow => Action::Allow,
        }
    }

    pub(super) fn list(self) -> List {
        if self == DecisionAction::Allow {
            List::Allow
        } else {
            List::Deny
        }
    }
}

impl FromStr for DecisionAction {
    type Err = String;

    /// Parses a ban action; `allow` is not one (use the allowlist).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "deny" => Ok(DecisionAction::Deny),
            "throttle" => Ok(DecisionAction::Throttle),
            _ => Err(format!("{s:?} is not an action (deny or throttle)")),
        }
    }
}

/// Which table an entry lives in. One entry per (list, target): a new ban of the same target
/// replaces the old one, as the filter's deny list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum List {
    Deny,
    Allow,
}

impl List {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            List::Deny => "deny",
            List::Allow => "allow",
        }
    }
}

pub(super) type Key = (List, Target);

/// Where a decision came from: `manual`, `rule:<name>` or `list:<file>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    /// A decision made by hand (CLI or API).
    pub fn manual() -> Origin {
        Origin("manual".into())
    }

    /// A decision loaded from a list file.
    pub fn list(file: &str) -> Origin {
        Origin(format!("list:{file}"))
    }

    /// The origin text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Origin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s == "manual"
            || s.strip_prefix("rule:").is_some_and(|n| !n.is_empty())
            || s.strip_prefix("list:").is_some_and(|n| !n.is_empty());
        if ok && s.len() <= 256 {
            Ok(Origin(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not an origin (manual, rule:<name> or list:<file>)"
            ))
        }
    }
}

/// One deny, throttle or allow decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Unique id; a replaced decision gets a new one.
    pub id: u64,
    /// The normalized network.
    pub target: Target,
    /// What to do.
    pub action: DecisionAction,
    /// When it stops applying, ms since the epoch; `None` means never.
    pub expires_at_ms: Option<i64>,
    /// Why.
    pub reason: Arc<str>,
    /// Where it came from.
    pub origin: Arc<str>,
    /// Who made it.
    pub actor: Arc<str>,
    /// When it was made, ms since the epoch.
    pub created_ms: i64,
}

impl Decision {
    pub(super) fn key(&self) -> Key {
        (self.action.list(), self.target)
    }

    pub(super) fn list_entry(&self) -> ListEntry {
        ListEntry {
            address: self.target.address_bytes(),
            prefix_len: self.target.prefix_len(),
            action: self.action.proto() as i32,
            expires_at_ms: self.expires_at_ms.unwrap_or(0),
            decision_id: self.id,
            reason: self.reason.to_string(),
            origin: self.origin.to_string(),
        }
    }
}

pub(super) fn entry_key(key: &Key) -> EntryKey {
    EntryKey {
        address: key.1.address_bytes(),
        prefix_len: key.1.prefix_len(),
        action: if key.0 == List::Allow {
            Action::Allow
        } else {
            Action::Deny
        } as i32,
    }
}

/// A request to ban one target.
#[derive(Debug, Clone)]
pub struct BanRequest {
    /// The network.
    pub target: Target,
    /// `deny` or `throttle`.
    pub action: DecisionAction,
    /// Lifetime.
    pub ttl: Ttl,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// Where from.
    pub origin: Origin,
}

/// A bulk load's result: how many were added, which targets were skipped with the allowlist
/// entry covering each, and the new version.
pub type BulkOutcome = (usize, Vec<(Target, Target)>, u64);

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
