//! The three hash chains and how they are extended and pruned: record blocks sealed once final,
//! record summaries and decisions audit entries linked in the transaction that writes them; each
//! chain's head kept apart in `chain_meta`; retention removes links from the old end and keeps
//! the last one removed as the chain's anchor.

use crate::error::Error;
use ring::digest::{Context, SHA256};
use rusqlite::{Connection, OptionalExtension, params};

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
pub(super) const GENESIS: [u8; 32] = [0; 32];

/// Builds one link: the previous link, then each field with its length, so that no two
/// different rows hash the same.
pub(super) struct Link(Context);

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
pub(super) struct BlockRow {
    pub(super) id: i64,
    pub(super) min_time_ms: i64,
    pub(super) max_time_ms: i64,
    pub(super) records: i64,
    pub(super) codec: i64,
    pub(super) body: Vec<u8>,
}

pub(super) fn block_link(prev: &[u8], b: &BlockRow) -> Vec<u8> {
    Link::after(prev)
        .int(b.id)
        .int(b.min_time_ms)
        .int(b.max_time_ms)
        .int(b.records)
        .int(b.codec)
        .bytes(&b.body)
        .finish()
}

pub(super) fn head(
    conn: &Connection,
    key: &str,
) -> Result<Option<(i64, Vec<u8>)>, rusqlite::Error> {
    conn.query_row(
        "SELECT position, hash FROM chain_meta WHERE key = ?1",
        [key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

pub(super) fn set_meta(
    conn: &Connection,
    key: &str,
    position: i64,
    hash: &[u8],
) -> Result<(), Error> {
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
pub(super) fn summary_link(
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
pub(super) fn audit_link(
    conn: &Connection,
    prev: &[u8],
    id: i64,
) -> Result<Vec<u8>, rusqlite::Error> {
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

/// A column's bytes whatever its type (an edited row may hold text where a blob was): a
/// changed type is a changed row, reported as such, not an error.
pub(super) fn any_bytes(v: rusqlite::types::ValueRef<'_>) -> Vec<u8> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        ValueRef::Integer(i) => i.to_be_bytes().to_vec(),
        ValueRef::Real(f) => f.to_be_bytes().to_vec(),
        ValueRef::Null => Vec::new(),
    }
}
