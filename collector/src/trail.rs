//! Tamper evidence for the stored trail: the record blocks and the decisions audit log are each
//! sealed into a SHA-256 hash chain, and `warden verify` walks both chains and names the first
//! block or entry that was modified, deleted, reordered or truncated.
//!
//! Record blocks are sealed once they are final (the compactor will not merge them again: see
//! `store::Writer::mark_final`), in block id order; each link hashes the previous link and the
//! whole stored row (times, record count, codec, compressed body). Retention deletes whole blocks
//! from the old end; their links go with them and the last one deleted stays as the chain's
//! anchor, so the chain verifies from there. A decisions audit entry is linked in the same
//! transaction that writes it.
//!
//! A chain by itself proves order and integrity against anyone who cannot recompute it: someone
//! with write access to the files could rewrite the rows and recompute every link. The head of
//! each chain is therefore also kept apart (`chain_head` in the database), which catches a
//! truncated tail; signed checkpoints of the heads, exported elsewhere, are what rules out a
//! rewrite (left for a follow-up: see the closing note).

use crate::error::Error;
use ring::digest::{Context, SHA256};
use rusqlite::{Connection, OptionalExtension, params};
use std::fmt::Write as _;
use std::path::Path;

/// Tables of the record-block chain, in `records.db`.
pub const BLOCK_CHAIN_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS block_chain (
    position INTEGER PRIMARY KEY,
    block_id INTEGER NOT NULL UNIQUE,
    hash BLOB NOT NULL,
    -- When retention deleted the block (NULL: the block is stored).
    pruned_ms INTEGER
);
CREATE TABLE IF NOT EXISTS chain_meta (key TEXT PRIMARY KEY, position INTEGER NOT NULL, hash BLOB NOT NULL) WITHOUT ROWID;
";

/// Table of the decisions-audit chain, in `warden.db`.
pub const AUDIT_CHAIN_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS admin_audit_chain (
    audit_id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_meta (key TEXT PRIMARY KEY, position INTEGER NOT NULL, hash BLOB NOT NULL) WITHOUT ROWID;
";

/// The link before the first: 32 zero bytes.
const GENESIS: [u8; 32] = [0; 32];

/// Builds one link: the previous link, then each field with its length, so that no two
/// different rows hash the same.
struct Link(Context);

impl Link {
    fn after(prev: &[u8]) -> Link {
        let mut c = Context::new(&SHA256);
        c.update(prev);
        Link(c)
    }

    fn int(mut self, v: i64) -> Self {
        self.0.update(&v.to_be_bytes());
        self
    }

    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.update(&(b.len() as u64).to_be_bytes());
        self.0.update(b);
        self
    }

    fn text(self, s: Option<&str>) -> Self {
        match s {
            Some(s) => self.int(1).bytes(s.as_bytes()),
            None => self.int(0),
        }
    }

    fn finish(self) -> Vec<u8> {
        self.0.finish().as_ref().to_vec()
    }
}

/// A stored block, as its link covers it.
struct BlockRow {
    id: i64,
    min_time_ms: i64,
    max_time_ms: i64,
    records: i64,
    codec: i64,
    body: Vec<u8>,
}

fn block_link(prev: &[u8], b: &BlockRow) -> Vec<u8> {
    Link::after(prev)
        .int(b.id)
        .int(b.min_time_ms)
        .int(b.max_time_ms)
        .int(b.records)
        .int(b.codec)
        .bytes(&b.body)
        .finish()
}

fn head(conn: &Connection, key: &str) -> Result<Option<(i64, Vec<u8>)>, rusqlite::Error> {
    conn.query_row(
        "SELECT position, hash FROM chain_meta WHERE key = ?1",
        [key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

fn set_meta(conn: &Connection, key: &str, position: i64, hash: &[u8]) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO chain_meta (key, position, hash) VALUES (?1, ?2, ?3)
         ON CONFLICT DO UPDATE SET position = excluded.position, hash = excluded.hash",
        params![key, position, hash],
    )?;
    Ok(())
}

/// Seals every final block (id at most `final_through`) not sealed yet, in id order. Runs in the
/// caller's transaction.
pub fn seal_blocks(conn: &Connection, final_through: i64) -> Result<usize, Error> {
    let (mut position, mut prev, last_block) = match conn
        .query_row(
            "SELECT position, hash, block_id FROM block_chain ORDER BY position DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?
    {
        Some(last) => last,
        // Empty chain: start after the anchor retention left, if any.
        None => match head(conn, "blocks_anchor")? {
            Some((position, hash)) => (position, hash, i64::MIN),
            None => (0, GENESIS.to_vec(), i64::MIN),
        },
    };
    let anchor_block = head(conn, "blocks_anchor_block")?.map_or(i64::MIN, |(p, _)| p);
    let mut stmt = conn.prepare_cached(
        "SELECT id, min_time_ms, max_time_ms, records, codec, body FROM record_blocks
         WHERE id > ?1 AND id <= ?2 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![last_block.max(anchor_block), final_through], |r| {
        Ok(BlockRow {
            id: r.get(0)?,
            min_time_ms: r.get(1)?,
            max_time_ms: r.get(2)?,
            records: r.get(3)?,
            codec: r.get(4)?,
            body: r.get(5)?,
        })
    })?;
    let mut insert = conn
        .prepare_cached("INSERT INTO block_chain (position, block_id, hash) VALUES (?1, ?2, ?3)")?;
    let mut sealed = 0;
    for row in rows {
        let row = row?;
        position += 1;
        prev = block_link(&prev, &row);
        insert.execute(params![position, row.id, prev])?;
        sealed += 1;
    }
    if sealed > 0 {
        set_meta(conn, "blocks_head", position, &prev)?;
    }
    Ok(sealed)
}

/// After retention deleted the blocks `ids`: marks their links as pruned (the chain still runs
/// through them), then drops the leading run of pruned links, keeping the last one dropped as
/// the anchor the chain verifies from. Runs in the caller's transaction.
pub fn prune_block_links(conn: &Connection, ids: &[i64], now_ms: i64) -> Result<(), Error> {
    let mut mark =
        conn.prepare_cached("UPDATE block_chain SET pruned_ms = ?2 WHERE block_id = ?1")?;
    for id in ids {
        mark.execute(params![id, now_ms])?;
    }
    let kept_from: Option<i64> = conn.query_row(
        "SELECT MIN(position) FROM block_chain WHERE pruned_ms IS NULL",
        [],
        |r| r.get(0),
    )?;
    let last_gone: Option<(i64, Vec<u8>, i64)> = conn
        .query_row(
            "SELECT position, hash, block_id FROM block_chain WHERE position < ?1
             ORDER BY position DESC LIMIT 1",
            [kept_from.unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((position, hash, block_id)) = last_gone {
        conn.execute("DELETE FROM block_chain WHERE position <= ?1", [position])?;
        set_meta(conn, "blocks_anchor", position, &hash)?;
        set_meta(conn, "blocks_anchor_block", block_id, &[])?;
    }
    Ok(())
}

/// Links the decisions audit entry `id` (just inserted, in the caller's transaction).
pub fn link_audit_entry(conn: &Connection, id: i64) -> Result<(), rusqlite::Error> {
    let prev: Vec<u8> = conn
        .query_row(
            "SELECT hash FROM admin_audit_chain WHERE audit_id < ?1 ORDER BY audit_id DESC LIMIT 1",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| GENESIS.to_vec());
    let link = audit_link(conn, &prev, id)?;
    conn.prepare_cached("INSERT INTO admin_audit_chain (audit_id, hash) VALUES (?1, ?2)")?
        .execute(params![id, link])?;
    conn.execute(
        "INSERT INTO chain_meta (key, position, hash) VALUES ('audit_head', ?1, ?2)
         ON CONFLICT DO UPDATE SET position = excluded.position, hash = excluded.hash",
        params![id, link],
    )?;
    Ok(())
}

/// The link of audit entry `id` after `prev`, from the row as stored; `None` fields hash apart
/// from empty ones.
fn audit_link(conn: &Connection, prev: &[u8], id: i64) -> Result<Vec<u8>, rusqlite::Error> {
    conn.query_row(
        "SELECT time_ms, actor, operation, target, action, expires_at_ms, reason, origin, decision_id, version, count
         FROM admin_audit WHERE id = ?1",
        [id],
        |r| {
            Ok(Link::after(prev)
                .int(id)
                .int(r.get(0)?)
                .text(r.get::<_, Option<String>>(1)?.as_deref())
                .text(r.get::<_, Option<String>>(2)?.as_deref())
                .text(r.get::<_, Option<String>>(3)?.as_deref())
                .text(r.get::<_, Option<String>>(4)?.as_deref())
                .int(r.get::<_, Option<i64>>(5)?.unwrap_or(i64::MIN))
                .text(r.get::<_, Option<String>>(6)?.as_deref())
                .text(r.get::<_, Option<String>>(7)?.as_deref())
                .int(r.get::<_, Option<i64>>(8)?.unwrap_or(i64::MIN))
                .int(r.get(9)?)
                .int(r.get(10)?)
                .finish())
        },
    )
}

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
    /// Decisions audit entries whose links verified.
    pub audit_entries: u64,
    /// Audit entries written before the chain existed (not covered).
    pub unchained_audit_entries: u64,
    /// Every problem, first found first.
    pub problems: Vec<String>,
}

impl Report {
    /// The report as text: a summary line, then one line per problem.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "record blocks: {} verified ({} records), {} recent not sealed yet, {} removed by retention; decisions audit: {} entries verified{}",
            self.blocks,
            self.records,
            self.unsealed_blocks,
            self.pruned_blocks,
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
        if self.problems.is_empty() {
            out.push_str("trail verified: nothing modified, deleted, reordered or truncated\n");
        }
        for p in &self.problems {
            let _ = writeln!(out, "TAMPERED: {p}");
        }
        out
    }
}

fn open_read_only(path: &Path) -> Result<Connection, Error> {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))
}

/// Walks both chains of the data directory (read-only; the collector may be running).
pub fn verify(data_dir: &Path) -> Result<Report, Error> {
    let mut report = Report::default();
    let records = data_dir.join(crate::store::RECORDS_DB_FILE);
    let conn = open_read_only(&records)?;
    verify_blocks(&conn, &mut report)?;
    let main = data_dir.join(crate::db::MAIN_DB_FILE);
    let conn = open_read_only(&main)?;
    verify_audit(&conn, &mut report)?;
    Ok(report)
}

/// A column's bytes whatever its type (an edited row may hold text where a blob was): a
/// changed type is a changed row, reported as such, not an error.
fn any_bytes(v: rusqlite::types::ValueRef<'_>) -> Vec<u8> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        ValueRef::Integer(i) => i.to_be_bytes().to_vec(),
        ValueRef::Real(f) => f.to_be_bytes().to_vec(),
        ValueRef::Null => Vec::new(),
    }
}

fn verify_blocks(conn: &Connection, report: &mut Report) -> Result<(), Error> {
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
                crate::time::rfc3339(row.min_time_ms),
                crate::time::rfc3339(row.max_time_ms)
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
            report.problems.push(format!(
                "the record chain ends at link {position}, but its head says {head_position}: blocks at the end were removed"
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

fn verify_audit(conn: &Connection, report: &mut Report) -> Result<(), Error> {
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
        report.problems.push(format!(
            "the decisions audit chain ends at entry {last}, but its head says {head_id}: entries at the end were removed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::tests::{ban, open as open_decisions};

    /// A data directory with `blocks` record blocks, all sealed, and three decisions audit
    /// entries.
    fn trail(blocks: i64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(crate::store::RECORDS_DB_FILE)).unwrap();
        conn.execute_batch(crate::store::SCHEMA).unwrap();
        conn.execute_batch(BLOCK_CHAIN_SCHEMA).unwrap();
        for id in 1..=blocks {
            conn.execute(
                "INSERT INTO record_blocks (id, min_time_ms, max_time_ms, records, received_ms, summary, codec, body)
                 VALUES (?1, ?2, ?3, 10, ?3, x'', 1, ?4)",
                params![id, id * 1000, id * 1000 + 999, vec![id as u8; 64]],
            )
            .unwrap();
        }
        assert_eq!(seal_blocks(&conn, blocks).unwrap(), blocks as usize);
        let decisions = open_decisions(dir.path());
        for target in ["203.0.113.7", "203.0.113.8", "203.0.113.9"] {
            decisions.ban(ban(target, None)).unwrap();
        }
        dir
    }

    fn tamper(dir: &tempfile::TempDir, db: &str, sql: &str) -> Report {
        Connection::open(dir.path().join(db))
            .unwrap()
            .execute_batch(sql)
            .unwrap();
        verify(dir.path()).unwrap()
    }

    const RECORDS: &str = crate::store::RECORDS_DB_FILE;
    const MAIN: &str = crate::db::MAIN_DB_FILE;

    #[test]
    fn an_untouched_trail_verifies() {
        let dir = trail(5);
        let report = verify(dir.path()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.blocks, report.records), (5, 50));
        assert_eq!(report.audit_entries, 3);
        assert!(report.render().contains("trail verified"));
    }

    #[test]
    fn a_flipped_byte_is_found() {
        let dir = trail(5);
        let r = tamper(
            &dir,
            RECORDS,
            "UPDATE record_blocks SET body = CAST(x'00' || substr(body, 2) AS BLOB) WHERE id = 3",
        );
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].starts_with("record block 3 "),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn a_deleted_block_is_found_even_with_its_link() {
        let dir = trail(5);
        let r = tamper(&dir, RECORDS, "DELETE FROM record_blocks WHERE id = 2");
        assert_eq!(r.problems, ["record block 2 was deleted"]);
        let r = tamper(&dir, RECORDS, "DELETE FROM block_chain WHERE block_id = 2");
        assert!(
            r.problems.iter().any(|p| p.contains("links 2..2")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn swapped_blocks_are_found() {
        let dir = trail(5);
        let r = tamper(
            &dir,
            RECORDS,
            "UPDATE record_blocks SET body = (SELECT body FROM record_blocks WHERE id = 4) WHERE id = 2;
             UPDATE record_blocks SET body = x'0202020202' WHERE id = 4;",
        );
        assert!(
            r.problems.iter().any(|p| p.starts_with("record block 2 ")),
            "{:?}",
            r.problems
        );
        assert!(
            r.problems.iter().any(|p| p.starts_with("record block 4 ")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn a_truncated_tail_is_found() {
        let dir = trail(5);
        let r = tamper(
            &dir,
            RECORDS,
            "DELETE FROM record_blocks WHERE id >= 4; DELETE FROM block_chain WHERE block_id >= 4;",
        );
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].contains("blocks at the end were removed"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn an_edited_or_deleted_audit_entry_is_found() {
        let dir = trail(2);
        let r = tamper(
            &dir,
            MAIN,
            "UPDATE admin_audit SET actor = 'mallory' WHERE id = 2",
        );
        assert_eq!(
            r.problems,
            ["decisions audit entry 2 was modified, or one before it was"]
        );
        let dir = trail(2);
        let r = tamper(
            &dir,
            MAIN,
            "DELETE FROM admin_audit WHERE id = 3; DELETE FROM admin_audit_chain WHERE audit_id = 3",
        );
        assert!(
            r.problems[0].contains("entries at the end were removed"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn retention_is_not_tampering() {
        let dir = trail(5);
        let conn = Connection::open(dir.path().join(RECORDS)).unwrap();
        // Retention deletes the two oldest blocks and one from the middle (a late old record).
        conn.execute_batch("DELETE FROM record_blocks WHERE id IN (1, 2, 4)")
            .unwrap();
        prune_block_links(&conn, &[1, 2, 4], 42).unwrap();
        let r = verify(dir.path()).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!((r.blocks, r.pruned_blocks), (2, 1));
        // New blocks keep chaining after the anchor.
        conn.execute(
            "INSERT INTO record_blocks (id, min_time_ms, max_time_ms, records, received_ms, summary, codec, body)
             VALUES (6, 6000, 6999, 10, 6999, x'', 1, x'06')",
            [],
        )
        .unwrap();
        seal_blocks(&conn, 6).unwrap();
        let r = verify(dir.path()).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.blocks, 3);
    }
}
