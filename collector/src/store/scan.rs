//! Reading records back in time order across blocks.
//!
//! Each block is sorted by time, but blocks overlap in time (filters ship with different delays),
//! so a scan is a k-way merge: blocks are opened in order of their time bound (newest `max_time`
//! first going backwards, oldest `min_time` first going forwards) and a heap of block cursors
//! yields records in exact order. A block is only opened once the merge reaches its bound, so a
//! `LIMIT 100` query reads the few newest blocks and stops. Blocks whose summary cannot match
//! are never decompressed.

use super::block::{self, BlockBody, BlockSummary};
use crate::error::Error;
use rusqlite::{Connection, OptionalExtension};
use std::collections::BinaryHeap;
use std::ops::ControlFlow;
use warden_proto::pb::{AccessRecord, FilterIdentity};

/// The direction of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first; equal times in reverse storage order.
    NewestFirst,
    /// Oldest first; equal times in storage order.
    OldestFirst,
}

impl Order {
    /// Maps a time so that the heap's greatest is the next to yield.
    fn key(self, t: i64) -> i64 {
        match self {
            Order::NewestFirst => t,
            Order::OldestFirst => t.saturating_neg(),
        }
    }
}

/// The records to read: a time range and a test on a block's summary.
pub struct ScanRange<'a> {
    /// Records at or after this time (ms).
    pub since_ms: i64,
    /// Records before this time (ms).
    pub until_ms: i64,
    /// False when the block cannot hold a wanted record.
    pub may_match: &'a dyn Fn(&BlockSummary) -> bool,
}

/// An open block and the position of its next record in scan order.
struct Cursor {
    /// Order key of the next record's time.
    key: i64,
    /// Block id, in scan order (negated going forwards).
    block_key: i64,
    /// Index of the next record.
    index: usize,
    /// One past the last record in range (forwards) or the first in range (backwards).
    stop: usize,
    body: BlockBody,
}

impl Cursor {
    fn rank(&self) -> (i64, i64, i64) {
        let index = i64::try_from(self.index).unwrap_or(i64::MAX);
        match self.block_key {
            k if k < 0 => (self.key, k, -index),
            k => (self.key, k, index),
        }
    }
}

impl PartialEq for Cursor {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}
impl Eq for Cursor {}
impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// A block's place in the merge, from the metadata row.
struct BlockMeta {
    id: i64,
    /// The order key of the block's first record in scan order (its bound).
    bound: i64,
}

/// Calls `visit` with every record in `range`, in `order`, until it breaks. Returns how many
/// blocks were decompressed.
pub fn scan(
    conn: &Connection,
    range: &ScanRange<'_>,
    order: Order,
    mut visit: impl FnMut(&FilterIdentity, &AccessRecord) -> ControlFlow<()>,
) -> Result<usize, Error> {
    if range.since_ms >= range.until_ms {
        return Ok(0);
    }
    let span = max_block_span(conn)?;
    let sql = match order {
        Order::NewestFirst => {
            "SELECT id, max_time_ms, summary FROM record_blocks
             WHERE max_time_ms >= ?1 AND max_time_ms <= ?3 AND min_time_ms < ?2
             ORDER BY max_time_ms DESC, id DESC"
        }
        Order::OldestFirst => {
            "SELECT id, min_time_ms, summary FROM record_blocks
             WHERE min_time_ms < ?2 AND min_time_ms >= ?3 AND max_time_ms >= ?1
             ORDER BY min_time_ms ASC, id ASC"
        }
    };
    // The third bound only narrows the index range: no block spans more than `span`, so a block
    // with a record before `until` has its newest at most `until - 1 + span`, and one with a
    // record at or after `since` has its oldest at least `since - span`.
    let outer = match order {
        Order::NewestFirst => range.until_ms.saturating_sub(1).saturating_add(span),
        Order::OldestFirst => range.since_ms.saturating_sub(span),
    };
    let mut meta_stmt = conn.prepare(sql)?;
    let mut metas = meta_stmt.query(rusqlite::params![range.since_ms, range.until_ms, outer])?;
    let mut body_stmt =
        conn.prepare_cached("SELECT codec, body FROM record_blocks WHERE id = ?1")?;
    let mut heap: BinaryHeap<Cursor> = BinaryHeap::new();
    let mut pending: Option<BlockMeta> = None;
    let mut metas_done = false;
    let mut opened = 0usize;
    loop {
        // Open every block that may hold a record at or before the heap's next one.
        loop {
            if pending.is_none() && !metas_done {
                pending = next_meta(&mut metas, range, order)?;
                metas_done = pending.is_none();
            }
            let Some(meta) = pending.as_ref() else {
                break;
            };
            if heap.peek().is_some_and(|top| meta.bound < top.key) {
                break;
            }
            let id = meta.id;
            pending = None;
            let row: Option<(i64, Vec<u8>)> = body_stmt
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            // Pruned since the metadata was read: nothing to yield.
            let Some((codec, bytes)) = row else { continue };
            opened += 1;
            let body = block::decode_body(codec, &bytes)?;
            if let Some(cursor) = open_cursor(body, id, range, order) {
                heap.push(cursor);
            }
        }
        let Some(mut cursor) = heap.pop() else {
            return Ok(opened);
        };
        let i = cursor.index;
        if let Some(record) = cursor.body.records.get(i)
            && visit(cursor.body.filter_of(i), record).is_break()
        {
            return Ok(opened);
        }
        if advance(&mut cursor, order) {
            heap.push(cursor);
        }
    }
}

fn next_meta(
    rows: &mut rusqlite::Rows<'_>,
    range: &ScanRange<'_>,
    order: Order,
) -> Result<Option<BlockMeta>, Error> {
    while let Some(row) = rows.next()? {
        let summary: Vec<u8> = row.get(2)?;
        if (range.may_match)(&block::decode_summary(&summary)?) {
            return Ok(Some(BlockMeta {
                id: row.get(0)?,
                bound: order.key(row.get(1)?),
            }));
        }
    }
    Ok(None)
}

/// Positions a cursor on the block's first record in range, in scan order.
fn open_cursor(body: BlockBody, id: i64, range: &ScanRange<'_>, order: Order) -> Option<Cursor> {
    let records = &body.records;
    let first_in = records.partition_point(|r| r.time_ms < range.since_ms);
    let end_in = records.partition_point(|r| r.time_ms < range.until_ms);
    if first_in >= end_in {
        return None;
    }
    let (index, stop, block_key) = match order {
        Order::NewestFirst => (end_in - 1, first_in, id),
        Order::OldestFirst => (first_in, end_in, id.saturating_neg()),
    };
    let key = order.key(records.get(index)?.time_ms);
    Some(Cursor {
        key,
        block_key,
        index,
        stop,
        body,
    })
}

/// Moves to the next record in scan order; false when the block is done.
fn advance(cursor: &mut Cursor, order: Order) -> bool {
    let next = match order {
        Order::NewestFirst if cursor.index > cursor.stop => cursor.index - 1,
        Order::OldestFirst if cursor.index + 1 < cursor.stop => cursor.index + 1,
        _ => return false,
    };
    let Some(record) = cursor.body.records.get(next) else {
        return false;
    };
    cursor.index = next;
    cursor.key = order.key(record.time_ms);
    true
}

/// The widest time span of any block (kept by the writer in `store_meta`).
fn max_block_span(conn: &Connection) -> Result<i64, Error> {
    Ok(conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'max_block_span_ms'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0))
}
