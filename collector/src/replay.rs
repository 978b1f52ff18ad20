//! `POST /api/v1/rules/replay`: what a rules file would have decided over stored records,
//! changing nothing.
//!
//! Records are streamed from SQLite in time order straight into a fresh [`Engine`] on a read
//! connection, so memory holds the engine's state and the decisions, never the records.

use crate::error::Error;
use crate::store::Store;
use crate::time::{TimeBound, now_ms, rfc3339};
use serde::Serialize;
use warden_proto::pb::{AccessRecord, AuthDecision, DenyKind, Mechanism, Principal, Verdict};
use warden_rules::{Engine, RuleDecision, RuleSet};

/// Decisions returned at most; a replay producing more is truncated (and says so).
pub const MAX_REPLAY_DECISIONS: usize = 100_000;

/// The answer of a replay.
#[derive(Debug, Serialize)]
pub struct ReplayResult {
    /// Window start (RFC 3339).
    pub since: String,
    /// Window end (RFC 3339).
    pub until: String,
    /// Records evaluated.
    pub records: u64,
    /// What the rules would have decided, in time order.
    pub decisions: Vec<RuleDecision>,
    /// Set when more than [`MAX_REPLAY_DECISIONS`] decisions were made.
    pub truncated: bool,
}

/// Parses `rules_toml` (a standalone rules file's text; list files resolve against the
/// collector's working directory) and replays the stored records in `[since, until)`.
pub async fn replay(
    store: &Store,
    rules_toml: &str,
    since: TimeBound,
    until: Option<TimeBound>,
) -> Result<ReplayResult, Error> {
    let rules = RuleSet::from_toml_str(rules_toml, "rules_toml")
        .map_err(|e| Error::invalid("rules_toml", format!("\n{e}")))?;
    let now = now_ms();
    let since_ms = since.resolve(now);
    let until_ms = until.map_or(i64::MAX, |u| u.resolve(now));
    store
        .read(move |conn| {
            let mut engine = Engine::new(rules);
            let mut stmt = conn.prepare(
                "SELECT time_ms, request_id, client_address, authority, method, path, status,
                        principal, decision, mechanism, deny_kind
                 FROM records WHERE time_ms >= ?1 AND time_ms < ?2 ORDER BY time_ms, id",
            )?;
            let mut rows = stmt.query([since_ms, until_ms])?;
            let mut decisions = Vec::new();
            let mut records = 0u64;
            let mut truncated = false;
            while let Some(row) = rows.next()? {
                let record = AccessRecord {
                    time_ms: row.get(0)?,
                    request_id: row.get(1)?,
                    client_address: row.get(2)?,
                    authority: row.get(3)?,
                    method: row.get(4)?,
                    path: row.get(5)?,
                    status: row.get(6)?,
                    principal: row.get::<_, Option<String>>(7)?.map(|name| Principal {
                        name,
                        ..Default::default()
                    }),
                    decision: decision_of(
                        row.get::<_, Option<String>>(8)?.as_deref(),
                        row.get::<_, Option<String>>(9)?.as_deref(),
                        row.get::<_, Option<String>>(10)?.as_deref(),
                    ),
                    ..Default::default()
                };
                records += 1;
                engine.observe_into(&record, &mut decisions);
                if decisions.len() > MAX_REPLAY_DECISIONS {
                    decisions.truncate(MAX_REPLAY_DECISIONS);
                    truncated = true;
                    break;
                }
            }
            Ok(ReplayResult {
                since: rfc3339(since_ms),
                until: rfc3339(until_ms.min(now)),
                records,
                decisions,
                truncated,
            })
        })
        .await
}

/// Rebuilds the stored decision columns into the proto message the engine reads.
fn decision_of(
    verdict: Option<&str>,
    mechanism: Option<&str>,
    deny_kind: Option<&str>,
) -> Option<AuthDecision> {
    if verdict.is_none() && mechanism.is_none() && deny_kind.is_none() {
        return None;
    }
    let verdict = match verdict {
        Some("allow") => Verdict::Allow,
        Some("deny") => Verdict::Deny,
        _ => Verdict::Unspecified,
    };
    let mechanism = match mechanism {
        Some("none") => Mechanism::None,
        Some("jwt_authn") => Mechanism::JwtAuthn,
        Some("rbac") => Mechanism::Rbac,
        Some("ext_authz") => Mechanism::ExtAuthz,
        Some("basic_auth") => Mechanism::BasicAuth,
        Some("warden_deny_list") => Mechanism::WardenDenyList,
        Some("upstream") => Mechanism::Upstream,
        _ => Mechanism::Unspecified,
    };
    let deny_kind = match deny_kind {
        Some("authentication") => DenyKind::Authentication,
        Some("authorization") => DenyKind::Authorization,
        Some("blocked") => DenyKind::Blocked,
        Some("throttled") => DenyKind::Throttled,
        _ => DenyKind::Unspecified,
    };
    Some(AuthDecision {
        verdict: verdict as i32,
        mechanism: mechanism as i32,
        deny_kind: deny_kind as i32,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_map_back_to_the_proto() {
        let d = decision_of(Some("deny"), Some("basic_auth"), Some("authentication")).unwrap();
        assert_eq!(d.verdict, Verdict::Deny as i32);
        assert_eq!(d.mechanism, Mechanism::BasicAuth as i32);
        assert_eq!(d.deny_kind, DenyKind::Authentication as i32);
        assert!(decision_of(None, None, None).is_none());
    }
}
