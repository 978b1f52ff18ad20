//! What the Subscribe streams are fed: a versioned change, a chunked snapshot, and the catch-up a
//! stream starts with (merged deltas for a filter that knows a recent version, a snapshot for one
//! that does not). The store keeps the bounded log and the per-version snapshot cache
//! (`store.rs`, under its one lock).

use std::sync::Arc;
use warden_proto::pb::{EntryKey, ListEntry, SnapshotChunk};

/// One committed version's changes, as broadcast to the Subscribe streams.
#[derive(Debug)]
pub struct Change {
    /// The version before.
    pub from_version: u64,
    /// The version after.
    pub version: u64,
    /// Added or replaced entries.
    pub upserts: Vec<ListEntry>,
    /// Removed entries.
    pub removals: Vec<EntryKey>,
    /// Set when the change was too large to keep or send as a delta (a bulk load): streams send
    /// a chunked snapshot instead, and the entry lists are empty.
    pub oversized: bool,
}

/// A full deny-list state, chunked for sending.
#[derive(Debug)]
pub struct Snapshot {
    /// The version it represents.
    pub version: u64,
    /// Chunks with `first`/`last` set; at least one, even when empty.
    pub chunks: Vec<SnapshotChunk>,
    /// Total entries.
    pub entries: usize,
}

/// What a (re)subscribing filter needs first.
#[derive(Debug)]
pub enum Catchup {
    /// Already current; the version is repeated in an empty delta.
    UpToDate(u64),
    /// The merged changes since the filter's version.
    Delta(Change),
    /// Everything.
    Snapshot(Arc<Snapshot>),
}
