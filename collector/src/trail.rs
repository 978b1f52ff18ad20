//! Tamper evidence for the stored trail: the record blocks, the record summaries and the
//! decisions audit log are each sealed into a SHA-256 hash chain, and `warden verify` walks the
//! chains and names the first block or entry that was modified, deleted, reordered or truncated.
//!
//! Record blocks are sealed once they are final (the compactor will not merge them again: see
//! `store::Writer::mark_final`), in block id order; each link hashes the previous link and the
//! whole stored row (times, record count, codec, compressed body). Retention deletes whole blocks
//! from the old end; their links go with them and the last one deleted stays as the chain's
//! anchor, so the chain verifies from there. A decisions audit entry, and a record summary (what
//! a filter's full buffer shed, counted), is linked in the same transaction that writes it;
//! summaries leave by retention the way blocks do.
//!
//! A chain by itself proves order and integrity against anyone who cannot recompute it: someone
//! with write access to the files could rewrite the rows and recompute every link. The head of
//! each chain is therefore also kept apart (`chain_meta`), which catches a truncated tail, and
//! the collector signs checkpoints of both heads with an Ed25519 key (`checkpoints.jsonl`): once
//! shipped elsewhere, a later rewrite contradicts them, and `warden verify --checkpoints` says
//! which checkpoint and link disagree.

use crate::db::open_read_only;
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

/// Table of the record-summary chain, in `records.db` (after [`BLOCK_CHAIN_SCHEMA`], which
/// creates `chain_meta`).
pub const SUMMARY_CHAIN_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS summary_chain (
    position INTEGER PRIMARY KEY,
    filter_node TEXT NOT NULL,
    filter_worker INTEGER NOT NULL,
    filter_instance TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    hash BLOB NOT NULL,
    -- When retention deleted the summary (NULL: the summary is stored).
    pruned_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS summary_chain_key
    ON summary_chain (filter_node, filter_worker, filter_instance, sequence);
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

/// A record summary's key: filter node, worker, instance, summary sequence.
pub type SummaryKey<'a> = (&'a str, i64, &'a str, i64);

/// The link of the summary `key` after `prev`, from the row as stored (`None`: no such row; a
/// row whose columns no longer read as written is reported as modified by the caller).
fn summary_link(
    conn: &Connection,
    prev: &[u8],
    key: SummaryKey<'_>,
) -> Result<Option<Vec<u8>>, rusqlite::Error> {
    let (node, worker, instance, sequence) = key;
    conn.prepare_cached(
        "SELECT minute_ms, client_address, authority, status_class, verdict, mechanism, requests,
                request_bytes, response_bytes, received_ms
         FROM record_summaries
         WHERE filter_node = ?1 AND filter_worker = ?2 AND filter_instance = ?3 AND sequence = ?4",
    )?
    .query_row(params![node, worker, instance, sequence], |r| {
        let mut link = Link::after(prev)
            .bytes(node.as_bytes())
            .int(worker)
            .bytes(instance.as_bytes())
            .int(sequence)
            .int(r.get(0)?)
            .bytes(&any_bytes(r.get_ref(1)?))
            .bytes(&any_bytes(r.get_ref(2)?));
        for i in 3..10 {
            link = link.int(r.get(i)?);
        }
        Ok(link.finish())
    })
    .optional()
}

/// Links the record summary `key` (just inserted, in the caller's transaction).
pub fn link_summary(conn: &Connection, key: SummaryKey<'_>) -> Result<(), rusqlite::Error> {
    let (position, prev) = match head(conn, "summaries_head")? {
        Some(h) => h,
        None => (0, GENESIS.to_vec()),
    };
    let link = summary_link(conn, &prev, key)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    let (node, worker, instance, sequence) = key;
    conn.prepare_cached(
        "INSERT INTO summary_chain (position, filter_node, filter_worker, filter_instance, sequence, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![position + 1, node, worker, instance, sequence, link])?;
    conn.prepare_cached(
        "INSERT INTO chain_meta (key, position, hash) VALUES ('summaries_head', ?1, ?2)
         ON CONFLICT DO UPDATE SET position = excluded.position, hash = excluded.hash",
    )?
    .execute(params![position + 1, link])?;
    Ok(())
}

/// Before retention deletes the summaries of minutes before `before_minute_ms`: marks their
/// links as pruned, then drops the leading run of pruned links, keeping the last one dropped as
/// the anchor the chain verifies from. Runs in the caller's transaction.
pub fn prune_summary_links(
    conn: &Connection,
    before_minute_ms: i64,
    now_ms: i64,
) -> Result<(), Error> {
    conn.execute(
        "UPDATE summary_chain SET pruned_ms = ?2
         WHERE pruned_ms IS NULL
           AND (filter_node, filter_worker, filter_instance, sequence) IN
               (SELECT filter_node, filter_worker, filter_instance, sequence
                FROM record_summaries WHERE minute_ms < ?1)",
        params![before_minute_ms, now_ms],
    )?;
    let kept_from: Option<i64> = conn.query_row(
        "SELECT MIN(position) FROM summary_chain WHERE pruned_ms IS NULL",
        [],
        |r| r.get(0),
    )?;
    let last_gone: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT position, hash FROM summary_chain WHERE position < ?1
             ORDER BY position DESC LIMIT 1",
            [kept_from.unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((position, hash)) = last_gone {
        conn.execute("DELETE FROM summary_chain WHERE position <= ?1", [position])?;
        set_meta(conn, "summaries_anchor", position, &hash)?;
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

/// A time for a message: RFC 3339, or the raw number when it is not a representable time (an
/// edited row can hold anything).
fn when(ms: i64) -> String {
    let t = crate::time::rfc3339(ms);
    if t.is_empty() {
        format!("{ms} ms (not a representable time)")
    } else {
        t
    }
}

/// What is wrong when a chain's end and its head disagree.
fn head_mismatch(chain: &str, unit: &str, end: i64, head: i64, removed: &str) -> String {
    if end == head {
        format!(
            "the {chain}'s head names {unit} {head} with another hash than the {unit} stored there: the head or the end of the chain was rewritten"
        )
    } else {
        format!("the {chain} ends at {unit} {end}, but its head says {head}: {removed}")
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

fn table_exists(conn: &Connection, name: &str) -> Result<bool, Error> {
    Ok(conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .is_some())
}

fn verify_summaries(conn: &Connection, report: &mut Report) -> Result<(), Error> {
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

/// The checkpoint signing key (PKCS#8), created in the data directory on first use, readable
/// only by the collector's user.
pub const CHECKPOINT_KEY_FILE: &str = "checkpoint.key";
/// Its public half, hex, for `warden verify --public-key` (keep a copy elsewhere).
pub const CHECKPOINT_PUBLIC_FILE: &str = "checkpoint.pub";
/// Where checkpoints are appended, one JSON object per line (ship it elsewhere).
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

/// A signed statement of both chains' heads at a time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// RFC 3339.
    pub time: String,
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    /// Position of the record chain's head (0: empty).
    pub blocks_position: i64,
    /// Its link, hex.
    pub blocks_hash: String,
    /// Id of the decisions audit chain's head entry (0: empty).
    pub audit_id: i64,
    /// Its link, hex.
    pub audit_hash: String,
    /// Position of the record-summary chain's head (0: empty; absent in older checkpoints).
    #[serde(default)]
    pub summaries_position: i64,
    /// Its link, hex.
    #[serde(default)]
    pub summaries_hash: String,
    /// Ed25519 signature of [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// What is signed (v1, without summaries, while the summary chain is empty, so checkpoints
    /// written before it existed still verify).
    pub fn message(&self) -> String {
        let v1 = format!(
            "{} {} {} {} {}",
            self.time_ms, self.blocks_position, self.blocks_hash, self.audit_id, self.audit_hash
        );
        if self.summaries_position == 0 {
            format!("warden-checkpoint-v1 {v1}")
        } else {
            format!(
                "warden-checkpoint-v2 {v1} {} {}",
                self.summaries_position, self.summaries_hash
            )
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    crate::security::tls::hex(bytes)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The signing key of `data_dir`, created (with its public half) when missing.
pub fn checkpoint_key(data_dir: &Path) -> Result<ring::signature::Ed25519KeyPair, Error> {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    let path = data_dir.join(CHECKPOINT_KEY_FILE);
    let pkcs8 = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let rng = ring::rand::SystemRandom::new();
            let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| Error::Storage("cannot generate the checkpoint key".into()))?;
            crate::security::local::write_private(&path, doc.as_ref())
                .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
            doc.as_ref().to_vec()
        }
        Err(e) => return Err(Error::Storage(format!("{}: {e}", path.display()))),
    };
    let key = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| {
        Error::Storage(format!(
            "{}: not an Ed25519 PKCS#8 key: {e}",
            path.display()
        ))
    })?;
    let public = data_dir.join(CHECKPOINT_PUBLIC_FILE);
    if !public.exists() {
        std::fs::write(&public, format!("{}\n", hex(key.public_key().as_ref())))
            .map_err(|e| Error::Storage(format!("{}: {e}", public.display())))?;
    }
    Ok(key)
}

/// Signs the current heads of both chains and appends the checkpoint to `checkpoints.jsonl`.
pub fn write_checkpoint(
    data_dir: &Path,
    key: &ring::signature::Ed25519KeyPair,
) -> Result<Checkpoint, Error> {
    let records = open_read_only(&data_dir.join(crate::store::RECORDS_DB_FILE))?;
    let main = open_read_only(&data_dir.join(crate::db::MAIN_DB_FILE))?;
    let (blocks_position, blocks_hash) = head(&records, "blocks_head")?.unwrap_or((0, Vec::new()));
    let (audit_id, audit_hash) = head(&main, "audit_head")?.unwrap_or((0, Vec::new()));
    let (summaries_position, summaries_hash) =
        head(&records, "summaries_head")?.unwrap_or((0, Vec::new()));
    let time_ms = crate::time::now_ms();
    let mut c = Checkpoint {
        time: crate::time::rfc3339(time_ms),
        time_ms,
        blocks_position,
        blocks_hash: hex(&blocks_hash),
        audit_id,
        audit_hash: hex(&audit_hash),
        summaries_position,
        summaries_hash: hex(&summaries_hash),
        signature: String::new(),
    };
    c.signature = hex(key.sign(c.message().as_bytes()).as_ref());
    let line = serde_json::to_string(&c).map_err(|e| Error::Storage(e.to_string()))?;
    let path = data_dir.join(CHECKPOINTS_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
    Ok(c)
}

/// Writes a checkpoint every `interval` until `stop`, and a last one on the way out.
pub async fn checkpoint_task(
    data_dir: std::path::PathBuf,
    key: ring::signature::Ed25519KeyPair,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let key = std::sync::Arc::new(key);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.changed() => true,
        };
        let (dir, k) = (data_dir.clone(), std::sync::Arc::clone(&key));
        match tokio::task::spawn_blocking(move || write_checkpoint(&dir, &k)).await {
            Ok(Ok(c)) => tracing::debug!(
                blocks = c.blocks_position,
                audit = c.audit_id,
                "checkpoint written"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write a checkpoint"),
            Err(e) => tracing::warn!(error = %e, "checkpoint task failed"),
        }
        if stopping {
            return;
        }
    }
}

/// Checks each checkpoint of `checkpoints` (JSON lines) against `public_key` (hex) and the
/// chains of `data_dir`: a bad signature is a forged checkpoint; a link that differs from the
/// signed one is a rewritten chain; a head behind it is a truncated one.
pub fn verify_checkpoints(
    data_dir: &Path,
    checkpoints: &str,
    public_key: &str,
    report: &mut Report,
) -> Result<(), Error> {
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        unhex(public_key.trim()).unwrap_or_default(),
    );
    let records = open_read_only(&data_dir.join(crate::store::RECORDS_DB_FILE))?;
    let main = open_read_only(&data_dir.join(crate::db::MAIN_DB_FILE))?;
    let anchor = head(&records, "blocks_anchor")?;
    let blocks_head = head(&records, "blocks_head")?.map_or(0, |(p, _)| p);
    let summaries_anchor = head(&records, "summaries_anchor")?;
    for (n, line) in checkpoints
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("checkpoint {} ", n + 1);
        let Ok(c) = serde_json::from_str::<Checkpoint>(line) else {
            report.problems.push(format!("{at}is not a checkpoint"));
            continue;
        };
        let signed =
            unhex(&c.signature).is_some_and(|sig| key.verify(c.message().as_bytes(), &sig).is_ok());
        if !signed {
            report.problems.push(format!(
                "{at}({}) is not signed by this key: forged or altered",
                c.time
            ));
            continue;
        }
        report.checkpoints += 1;
        if c.blocks_position > 0 {
            let stored: Option<Vec<u8>> = records
                .query_row(
                    "SELECT hash FROM block_chain WHERE position = ?1",
                    [c.blocks_position],
                    |r| r.get(0),
                )
                .optional()?
                .or_else(|| {
                    anchor
                        .as_ref()
                        .filter(|(p, _)| *p == c.blocks_position)
                        .map(|(_, h)| h.clone())
                });
            match stored {
                Some(h) if hex(&h) == c.blocks_hash => {}
                Some(_) => report.problems.push(format!(
                    "{at}({}) signed record link {} differently: the record chain was rewritten",
                    c.time, c.blocks_position
                )),
                None if c.blocks_position > blocks_head => report.problems.push(format!(
                    "{at}({}) signed record link {}, but the chain ends at {blocks_head}: records were removed",
                    c.time, c.blocks_position
                )),
                // Before the anchor: removed by retention since.
                None => {}
            }
        }
        if c.summaries_position > 0 {
            let stored: Option<Vec<u8>> = records
                .query_row(
                    "SELECT hash FROM summary_chain WHERE position = ?1",
                    [c.summaries_position],
                    |r| r.get(0),
                )
                .optional()?
                .or_else(|| {
                    summaries_anchor
                        .as_ref()
                        .filter(|(p, _)| *p == c.summaries_position)
                        .map(|(_, h)| h.clone())
                });
            let chain_end = head(&records, "summaries_head")?.map_or(0, |(p, _)| p);
            let first_kept = summaries_anchor.as_ref().map_or(0, |(p, _)| *p);
            match stored {
                Some(h) if hex(&h) == c.summaries_hash => {}
                Some(_) => report.problems.push(format!(
                    "{at}({}) signed summary link {} differently: the summary chain was rewritten",
                    c.time, c.summaries_position
                )),
                None if c.summaries_position > first_kept => report.problems.push(format!(
                    "{at}({}) signed summary link {}, but the chain holds it no more (it ends at {chain_end}): summaries were removed",
                    c.time, c.summaries_position
                )),
                // Before the anchor: removed by retention since.
                None => {}
            }
        }
        if c.audit_id > 0 {
            let stored: Option<Vec<u8>> = main
                .query_row(
                    "SELECT hash FROM admin_audit_chain WHERE audit_id = ?1",
                    [c.audit_id],
                    |r| r.get(0),
                )
                .optional()?;
            if stored.as_deref().map(hex) != Some(c.audit_hash.clone()) {
                report.problems.push(format!(
                    "{at}({}) signed decisions audit entry {} differently: the audit chain was rewritten or truncated",
                    c.time, c.audit_id
                ));
            }
        }
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

    #[test]
    fn signed_checkpoints_catch_a_recomputed_chain_and_a_forged_checkpoint() {
        let dir = trail(4);
        let key = checkpoint_key(dir.path()).unwrap();
        let public = std::fs::read_to_string(dir.path().join(CHECKPOINT_PUBLIC_FILE)).unwrap();
        let c = write_checkpoint(dir.path(), &key).unwrap();
        assert_eq!((c.blocks_position, c.audit_id), (4, 3));
        let lines = std::fs::read_to_string(dir.path().join(CHECKPOINTS_FILE)).unwrap();
        let check = |lines: &str| {
            let mut r = verify(dir.path()).unwrap();
            verify_checkpoints(dir.path(), lines, &public, &mut r).unwrap();
            r
        };
        let r = check(&lines);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.checkpoints, 1);

        // A forged or edited checkpoint does not carry the key's signature.
        let forged = lines.replace("\"blocks_position\":4", "\"blocks_position\":3");
        let r = check(&forged);
        assert!(
            r.problems[0].contains("is not signed by this key"),
            "{:?}",
            r.problems
        );

        // Someone with the files edits a block and recomputes every link: the chain verifies
        // on its own, the signed checkpoint does not.
        let conn = Connection::open(dir.path().join(RECORDS)).unwrap();
        conn.execute_batch(
            "UPDATE record_blocks SET body = x'00' WHERE id = 2;
             DELETE FROM block_chain; DELETE FROM chain_meta;",
        )
        .unwrap();
        seal_blocks(&conn, 4).unwrap();
        assert!(
            verify(dir.path()).unwrap().problems.is_empty(),
            "recomputed"
        );
        let r = check(&lines);
        assert!(
            r.problems[0]
                .contains("signed record link 4 differently: the record chain was rewritten"),
            "{:?}",
            r.problems
        );
    }

    /// Adds summaries 1..=n (minute n, n requests) of one filter to the trail of `dir`.
    fn add_summaries(dir: &tempfile::TempDir, from: u64, to: u64) {
        use warden_proto::pb::{FilterIdentity, RecordSummary};
        let mut conn = Connection::open(dir.path().join(RECORDS)).unwrap();
        conn.execute_batch(crate::store::summaries::SCHEMA).unwrap();
        conn.execute_batch(SUMMARY_CHAIN_SCHEMA).unwrap();
        let filter = FilterIdentity {
            node_id: "envoy-1".into(),
            worker: 0,
            instance_id: "i1".into(),
            ..FilterIdentity::default()
        };
        let summaries: Vec<RecordSummary> = (from..=to)
            .map(|n| RecordSummary {
                sequence: n,
                minute_ms: 60_000 * n as i64,
                client_address: "203.0.113.7".into(),
                authority: "shop.example".into(),
                status_class: 2,
                requests: n,
                ..RecordSummary::default()
            })
            .collect();
        let tx = conn.transaction().unwrap();
        crate::store::summaries::insert(&tx, &filter, &summaries, 1).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn edited_deleted_inserted_or_truncated_summaries_are_found_and_retention_is_not_tampering() {
        let dir = trail(2);
        add_summaries(&dir, 1, 4);
        let report = verify(dir.path()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.summaries, 4);
        assert!(report.render().contains("record summaries: 4 verified"));
        let copy = |dir: &tempfile::TempDir| {
            let to = tempfile::tempdir().unwrap();
            for f in [RECORDS, MAIN] {
                std::fs::copy(dir.path().join(f), to.path().join(f)).unwrap();
            }
            to
        };
        let cases = [
            (
                "UPDATE record_summaries SET requests = 2000 WHERE sequence = 2",
                "record summary 2 of filter envoy-1/0/i1 was modified",
            ),
            (
                "UPDATE record_summaries SET authority = 'x' WHERE sequence = 4",
                "record summary 4 of filter envoy-1/0/i1 was modified",
            ),
            (
                "DELETE FROM record_summaries WHERE sequence = 3",
                "record summary 3 of filter envoy-1/0/i1 was deleted",
            ),
            (
                "DELETE FROM record_summaries WHERE sequence = 2;
                 DELETE FROM summary_chain WHERE sequence = 2",
                "links 2..2 of the summary chain are missing",
            ),
            (
                "DELETE FROM record_summaries WHERE sequence = 4;
                 DELETE FROM summary_chain WHERE sequence = 4",
                "the summary chain ends at link 3, but its head says 4",
            ),
            (
                "INSERT INTO record_summaries SELECT filter_node, filter_worker, filter_instance,
                    99, minute_ms, client_address, authority, status_class, verdict, mechanism,
                    requests, request_bytes, response_bytes, received_ms
                 FROM record_summaries WHERE sequence = 1",
                "1 record summar(ies) were inserted outside the chain",
            ),
        ];
        for (sql, expected) in cases {
            let edited = copy(&dir);
            let report = tamper(&edited, RECORDS, sql);
            assert!(
                report.problems.iter().any(|p| p.contains(expected)),
                "{sql}: {:?}",
                report.problems
            );
        }

        // Retention deletes the first two minutes' summaries: not tampering, and the chain goes
        // on from its anchor.
        let mut conn = Connection::open(dir.path().join(RECORDS)).unwrap();
        let tx = conn.transaction().unwrap();
        crate::store::summaries::prune(&tx, 4 * 60_000).unwrap();
        tx.commit().unwrap();
        drop(conn);
        add_summaries(&dir, 5, 5);
        let report = verify(dir.path()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.summaries, report.pruned_summaries), (3, 0));
    }

    #[test]
    fn a_head_rewritten_in_place_and_an_impossible_time_are_named_plainly() {
        assert!(head_mismatch("record chain", "link", 5, 5, "x").contains("another hash"));
        assert!(head_mismatch("record chain", "link", 4, 5, "x").contains("ends at link 4"));
        assert_eq!(
            when(i64::MAX),
            format!("{} ms (not a representable time)", i64::MAX)
        );
        let dir = trail(3);
        let report = tamper(
            &dir,
            RECORDS,
            "UPDATE chain_meta SET hash = x'00' WHERE key = 'blocks_head'",
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("head names link 3 with another hash")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn a_signed_checkpoint_catches_summaries_removed_with_their_links_and_head() {
        let dir = trail(1);
        add_summaries(&dir, 1, 3);
        let key = checkpoint_key(dir.path()).unwrap();
        let public = std::fs::read_to_string(dir.path().join(CHECKPOINT_PUBLIC_FILE)).unwrap();
        let c = write_checkpoint(dir.path(), &key).unwrap();
        assert_eq!(c.summaries_position, 3);
        let lines = std::fs::read_to_string(dir.path().join(CHECKPOINTS_FILE)).unwrap();
        // Whoever removes the last summary, its link and sets the head back leaves a chain that
        // verifies on its own; the signed checkpoint does not.
        Connection::open(dir.path().join(RECORDS))
            .unwrap()
            .execute_batch(
                "DELETE FROM record_summaries WHERE sequence = 3;
                 DELETE FROM summary_chain WHERE sequence = 3;
                 UPDATE chain_meta SET position = 2,
                    hash = (SELECT hash FROM summary_chain WHERE position = 2)
                 WHERE key = 'summaries_head';",
            )
            .unwrap();
        let mut report = verify(dir.path()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        verify_checkpoints(dir.path(), &lines, &public, &mut report).unwrap();
        assert!(
            report.problems[0].contains("signed summary link 3, but the chain holds it no more"),
            "{:?}",
            report.problems
        );
    }
}
