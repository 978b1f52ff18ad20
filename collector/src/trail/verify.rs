//! `warden verify`: walks each chain from its anchor and names the first block, summary or audit
//! entry that was modified, deleted, inserted, reordered or truncated.

use super::chain::*;
use crate::db::open_read_only;
use crate::error::Error;
use rusqlite::{Connection, OptionalExtension};
use std::fmt::Write as _;
use std::path::Path;

/// What `warden verify` found.
#[derive(Debug, Default)]
pub struct Report {
    /// Blocks whose links verified.
    pub blocks: u64,
    /// Records in them.
    pub records: u64,
    /// Blocks not sealed yet (recent; the compactor may still merge them).
    pub unsealed_blocks: u64,
    /// Sealed blocks that retention deleted (their links still chain).
    pub pruned_blocks: u64,
    /// Record summaries whose links verified.
    pub summaries: u64,
    /// Chained summaries that retention deleted.
    pub pruned_summaries: u64,
    /// Decisions audit entries whose links verified.
    pub audit_entries: u64,
    /// Audit entries written before the chain existed (not covered).
    pub unchained_audit_entries: u64,
    /// Signed checkpoints that verified.
    pub checkpoints: u64,
    /// Every problem, first found first.
    pub problems: Vec<String>,
}

impl Report {
    /// The report as text: a summary line, then one line per problem.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "record blocks: {} verified ({} records), {} recent not sealed yet, {} removed by retention; record summaries: {} verified, {} removed by retention; decisions audit: {} entries verified{}",
            self.blocks,
            self.records,
            self.unsealed_blocks,
            self.pruned_blocks,
            self.summaries,
            self.pruned_summaries,
            self.audit_entries,
            if self.unchained_audit_entries > 0 {
                format!(
                    ", {} older entries predate the chain",
                    self.unchained_audit_entries
                )
            } else {
                String::new()
            }
        );
        if self.checkpoints > 0 {
            let _ = writeln!(out, "signed checkpoints: {} verified", self.checkpoints);
        }
        if self.problems.is_empty() {
            out.push_str("trail verified: nothing modified, deleted, reordered or truncated\n");
        }
        for p in &self.problems {
            let _ = writeln!(out, "TAMPERED: {p}");
        }
        out
    }
}

/// Walks every chain of the data directory (read-only; the collector may be running).
pub fn verify(data_dir: &Path) -> Result<Report, Error> {
    let mut report = Report::default();
    let records = data_dir.join(crate::store::RECORDS_DB_FILE);
    let conn = open_read_only(&records)?;
    verify_blocks(&conn, &mut report)?;
    verify_summaries(&conn, &mut report)?;
    let main = data_dir.join(crate::db::MAIN_DB_FILE);
    let conn = open_read_only(&main)?;
    verify_audit(&conn, &mut report)?;
    Ok(report)
}

/// A time for a message: RFC 3339, or the raw number when it is not a representable time (an
/// edited row can hold anything).
pub(super) fn when(ms: i64) -> String {
    let t = crate::time::rfc3339(ms);
    if t.is_empty() {
        format!("{ms} ms (not a representable time)")
    } else {
        t
    }
}

/// What is wrong when a chain's end and its head disagree.
pub(super) fn head_mismatch(chain: &str, unit: &str, end: i64, head: i64, removed: &str) -> String {
    if end == head {
        format!(
            "the {chain}'s head names {unit} {head} with another hash than the {unit} stored there: the head or the end of the chain was rewritten"
        )
    } else {
        format!("the {chain} ends at {unit} {end}, but its head says {head}: {removed}")
    }
}

pub(super) fn verify_blocks(conn: &Connection, report: &mut Report) -> Result<(), Error> {
    let (mut position, mut prev) = match head(conn, "blocks_anchor")? {
        Some(anchor) => anchor,
        None => (0, GENESIS.to_vec()),
    };
    let mut stmt = conn.prepare(
        "SELECT c.position, c.block_id, c.hash, b.id, b.min_time_ms, b.max_time_ms, b.records, b.codec, b.body,
                c.pruned_ms
         FROM block_chain c LEFT JOIN record_blocks b ON b.id = c.block_id ORDER BY c.position",
    )?;
    let mut rows = stmt.query([])?;
    let mut last_block = i64::MIN;
    while let Some(r) = rows.next()? {
        let link_position: i64 = r.get(0)?;
        let block_id: i64 = r.get(1)?;
        let stored: Vec<u8> = r.get(2)?;
        if link_position != position + 1 {
            report.problems.push(format!(
                "links {}..{} of the record chain are missing (blocks deleted with their links)",
                position + 1,
                link_position - 1
            ));
        }
        let Some(id) = r.get::<_, Option<i64>>(3)? else {
            if r.get::<_, Option<i64>>(9)?.is_some() {
                report.pruned_blocks += 1;
            } else {
                report
                    .problems
                    .push(format!("record block {block_id} was deleted"));
            }
            position = link_position;
            prev = stored;
            continue;
        };
        if id <= last_block {
            report
                .problems
                .push(format!("record block {id} is out of order"));
        }
        let row = BlockRow {
            id,
            min_time_ms: r.get(4)?,
            max_time_ms: r.get(5)?,
            records: r.get(6)?,
            codec: r.get(7)?,
            body: any_bytes(r.get_ref(8)?),
        };
        let expected = block_link(&prev, &row);
        if expected != stored {
            report.problems.push(format!(
                "record block {id} (records from {} to {}) was modified, or a block before it was",
                when(row.min_time_ms),
                when(row.max_time_ms)
            ));
        } else {
            report.blocks += 1;
            report.records += u64::try_from(row.records).unwrap_or(0);
        }
        last_block = id;
        position = link_position;
        prev = stored;
    }
    match head(conn, "blocks_head")? {
        Some((head_position, head_hash)) if head_position != position || head_hash != prev => {
            report.problems.push(head_mismatch(
                "record chain",
                "link",
                position,
                head_position,
                "blocks at the end were removed",
            ));
        }
        _ => {}
    }
    report.unsealed_blocks = conn.query_row(
        "SELECT COUNT(*) FROM record_blocks WHERE id > ?1",
        [last_block.max(head(conn, "blocks_anchor_block")?.map_or(i64::MIN, |(p, _)| p))],
        |r| r.get::<_, i64>(0),
    )? as u64;
    Ok(())
}

pub(super) fn table_exists(conn: &Connection, name: &str) -> Result<bool, Error> {
    Ok(conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .is_some())
}

pub(super) fn verify_summaries(conn: &Connection, report: &mut Report) -> Result<(), Error> {
    if !table_exists(conn, "summary_chain")? {
        return Ok(());
    }
    let (mut position, mut prev) = match head(conn, "summaries_anchor")? {
        Some(anchor) => anchor,
        None => (0, GENESIS.to_vec()),
    };
    let mut stmt = conn.prepare(
        "SELECT position, filter_node, filter_worker, filter_instance, sequence, hash, pruned_ms
         FROM summary_chain ORDER BY position",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let link_position: i64 = r.get(0)?;
        let node: String = r.get(1)?;
        let worker: i64 = r.get(2)?;
        let instance: String = r.get(3)?;
        let sequence: i64 = r.get(4)?;
        let stored: Vec<u8> = r.get(5)?;
        let pruned = r.get::<_, Option<i64>>(6)?.is_some();
        let name = format!("record summary {sequence} of filter {node}/{worker}/{instance}");
        if link_position != position + 1 {
            report.problems.push(format!(
                "links {}..{} of the summary chain are missing (summaries deleted with their links)",
                position + 1,
                link_position - 1
            ));
        }
        match summary_link(conn, &prev, (&node, worker, &instance, sequence)) {
            Ok(Some(link)) if link == stored => report.summaries += 1,
            Ok(None) if pruned => report.pruned_summaries += 1,
            Ok(None) => report.problems.push(format!("{name} was deleted")),
            _ => report
                .problems
                .push(format!("{name} was modified, or one before it was")),
        }
        position = link_position;
        prev = stored;
    }
    if let Some((head_position, head_hash)) = head(conn, "summaries_head")?
        && (head_position != position || head_hash != prev)
    {
        report.problems.push(head_mismatch(
            "summary chain",
            "link",
            position,
            head_position,
            "summaries at the end were removed",
        ));
    }
    let outside: i64 = conn.query_row(
        "SELECT COUNT(*) FROM record_summaries s WHERE NOT EXISTS
            (SELECT 1 FROM summary_chain c WHERE c.filter_node = s.filter_node
               AND c.filter_worker = s.filter_worker AND c.filter_instance = s.filter_instance
               AND c.sequence = s.sequence)",
        [],
        |r| r.get(0),
    )?;
    if outside > 0 {
        report.problems.push(format!(
            "{outside} record summar(ies) were inserted outside the chain"
        ));
    }
    Ok(())
}

pub(super) fn verify_audit(conn: &Connection, report: &mut Report) -> Result<(), Error> {
    let chained = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'admin_audit_chain'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .is_some();
    if !chained {
        return Ok(());
    }
    let links: std::collections::BTreeMap<i64, Vec<u8>> = {
        let mut stmt = conn.prepare("SELECT audit_id, hash FROM admin_audit_chain")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let Some(first) = links.keys().next().copied() else {
        return Ok(());
    };
    report.unchained_audit_entries = conn.query_row(
        "SELECT COUNT(*) FROM admin_audit WHERE id < ?1",
        [first],
        |r| r.get::<_, i64>(0),
    )? as u64;
    let entries: std::collections::BTreeSet<i64> = {
        let mut stmt = conn.prepare("SELECT id FROM admin_audit WHERE id >= ?1")?;
        stmt.query_map([first], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    let mut all: Vec<i64> = links.keys().chain(entries.iter()).copied().collect();
    all.sort_unstable();
    all.dedup();
    let mut prev = GENESIS.to_vec();
    let mut last = 0;
    for id in all {
        match (entries.contains(&id), links.get(&id)) {
            (true, Some(hash)) => {
                // A row whose columns no longer read as written is a modified row.
                if audit_link(conn, &prev, id).is_ok_and(|link| &link == hash) {
                    report.audit_entries += 1;
                } else {
                    report.problems.push(format!(
                        "decisions audit entry {id} was modified, or one before it was"
                    ));
                }
                prev.clone_from(hash);
                last = id;
            }
            (false, Some(hash)) => {
                report
                    .problems
                    .push(format!("decisions audit entry {id} was deleted"));
                prev.clone_from(hash);
                last = id;
            }
            (true, None) => report.problems.push(format!(
                "decisions audit entry {id} was inserted outside the chain"
            )),
            (false, None) => {}
        }
    }
    if let Some((head_id, head_hash)) = head(conn, "audit_head")?
        && (head_id != last || head_hash != prev)
    {
        report.problems.push(head_mismatch(
            "decisions audit chain",
            "entry",
            last,
            head_id,
            "entries at the end were removed",
        ));
    }
    Ok(())
}
