//! What a rules file would have decided over stored records, changing nothing
//! (`POST /api/v1/rules/replay`, [`super::rules`]).
//!
//! Records are streamed from the store in time order (a merge over blocks) straight into a fresh
//! [`Engine`] on a read connection, so memory holds the engine's state, the decisions and the few
//! blocks the merge has open, never the whole window. The engine sees the full stored records,
//! exactly what it saw live.

use super::model::{ReplayResult, RuleDecision};
use crate::error::Error;
use crate::store::query::{RecordFilter, RecordQuery};
use crate::store::scan::Order;
use crate::store::{Store, scan_matching};
use crate::time::{TimeBound, now_ms, rfc3339};
use std::ops::ControlFlow;
use warden_rules::{Engine, RuleSet};

/// Decisions returned at most; a replay producing more is truncated (and says so).
pub const MAX_REPLAY_DECISIONS: usize = 100_000;

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
    let filter = RecordFilter::new(
        &RecordQuery {
            since: Some(TimeBound::At(since_ms)),
            until: Some(TimeBound::At(until_ms)),
            ..Default::default()
        },
        now,
    );
    store
        .read(move |conn| {
            let mut engine = Engine::new(rules);
            let mut decisions = Vec::new();
            let mut records = 0u64;
            let mut truncated = false;
            scan_matching(conn, &filter, Order::OldestFirst, |_, record| {
                records += 1;
                engine.observe_into(record, &mut decisions);
                if decisions.len() > MAX_REPLAY_DECISIONS {
                    decisions.truncate(MAX_REPLAY_DECISIONS);
                    truncated = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })?;
            Ok(ReplayResult {
                since: rfc3339(since_ms),
                until: rfc3339(until_ms.min(now)),
                records,
                decisions: decisions.into_iter().map(RuleDecision::from).collect(),
                truncated,
            })
        })
        .await
}
