//! The change log and snapshots the Subscribe streams are fed from: a bounded log of versioned
//! changes, merged deltas for a filter that knows a recent version, and chunked snapshots
//! (cached per version) for one that does not.

use super::store::*;
use crate::error::Error;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;
use warden_proto::pb::{Action, EntryKey, ListEntry, SnapshotChunk};

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

impl Decisions {
    /// What a filter that has `known_version` needs, plus a receiver for every later change.
    /// Taken under the lock so nothing falls between the two.
    pub fn catch_up(
        &self,
        known_version: u64,
    ) -> Result<(Catchup, broadcast::Receiver<Arc<Change>>), Error> {
        let mut state = self.lock()?;
        let rx = self.changes.subscribe();
        let current = state.version;
        if known_version == current && known_version != 0 {
            return Ok((Catchup::UpToDate(current), rx));
        }
        if known_version != 0
            && known_version < current
            && let Some(delta) = self.merged_since(&state, known_version)
        {
            return Ok((Catchup::Delta(delta), rx));
        }
        Ok((Catchup::Snapshot(self.snapshot(&mut state)), rx))
    }

    /// The changes after `known` merged into one delta, if the log still holds them all and
    /// they are small enough to send as one message.
    fn merged_since(&self, state: &State, known: u64) -> Option<Change> {
        let first = state.log.front()?;
        if first.from_version > known {
            return None;
        }
        let mut merged: HashMap<(Vec<u8>, u32, i32), Option<ListEntry>> = HashMap::new();
        for change in state.log.iter().filter(|c| c.from_version >= known) {
            if change.oversized {
                return None;
            }
            for k in &change.removals {
                merged.insert((k.address.clone(), k.prefix_len, k.action), None);
            }
            for e in &change.upserts {
                let table = if e.action == Action::Allow as i32 {
                    Action::Allow
                } else {
                    Action::Deny
                } as i32;
                merged.insert((e.address.clone(), e.prefix_len, table), Some(e.clone()));
            }
            if merged.len() > self.chunk_entries {
                return None;
            }
        }
        let mut delta = Change {
            from_version: known,
            version: state.version,
            upserts: Vec::new(),
            removals: Vec::new(),
            oversized: false,
        };
        for ((address, prefix_len, action), entry) in merged {
            match entry {
                Some(e) => delta.upserts.push(e),
                None => delta.removals.push(EntryKey {
                    address,
                    prefix_len,
                    action,
                }),
            }
        }
        Some(delta)
    }

    fn snapshot(&self, state: &mut State) -> Arc<Snapshot> {
        if let Some(s) = &state.snapshot {
            return Arc::clone(s);
        }
        let started = std::time::Instant::now();
        let version = state.version;
        let mut chunks = Vec::new();
        let mut current = Vec::with_capacity(self.chunk_entries.min(state.entries.len()));
        for d in state.entries.values() {
            current.push(d.list_entry());
            if current.len() == self.chunk_entries {
                chunks.push(SnapshotChunk {
                    version,
                    first: chunks.is_empty(),
                    last: false,
                    entries: std::mem::take(&mut current),
                });
            }
        }
        if !current.is_empty() || chunks.is_empty() {
            chunks.push(SnapshotChunk {
                version,
                first: chunks.is_empty(),
                last: false,
                entries: current,
            });
        }
        if let Some(last) = chunks.last_mut() {
            last.last = true;
        }
        let snapshot = Arc::new(Snapshot {
            version,
            chunks,
            entries: state.entries.len(),
        });
        tracing::info!(
            version,
            entries = snapshot.entries,
            chunks = snapshot.chunks.len(),
            millis = started.elapsed().as_millis() as u64,
            "built deny-list snapshot"
        );
        state.snapshot = Some(Arc::clone(&snapshot));
        snapshot
    }
}
