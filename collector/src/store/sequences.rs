//! Retry deduplication: for every filter identity (node, worker, instance), the set of record
//! sequence numbers already stored, as ranges.
//!
//! A filter numbers its records 1, 2, 3… per VM and resends a batch whose acknowledgement it did
//! not see, so the set is nearly always one range per identity and costs a few bytes. It lives in
//! memory for the writer thread and is persisted in `filter_sequences` inside the same
//! transaction as the blocks it describes, so after a crash the two agree.

use crate::error::Error;
use prost::Message;
use rangemap::RangeInclusiveSet;
use rusqlite::{Connection, params};
use std::collections::HashMap;
use warden_proto::pb::FilterIdentity;

/// Most separate ranges kept per identity. Gaps are normal only where a filter dropped records
/// (its buffer overflowed), which yields one gap per outage; past this bound the oldest gap is
/// closed (a record from it arriving later would count as a duplicate).
const MAX_RANGES: usize = 4096;

/// A filter identity, the dedup key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterKey {
    node: String,
    worker: u32,
    instance: String,
}

impl FilterKey {
    /// The key of a filter identity.
    pub fn of(f: &FilterIdentity) -> Self {
        FilterKey {
            node: f.node_id.clone(),
            worker: f.worker,
            instance: f.instance_id.clone(),
        }
    }
}

/// Persisted form of one identity's ranges: `[start, end, start, end, …]`.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredRanges {
    #[prost(uint64, repeated, tag = "1")]
    bounds: Vec<u64>,
}

/// The sequences stored per filter identity.
#[derive(Debug, Default)]
pub struct SequenceLog {
    filters: HashMap<FilterKey, RangeInclusiveSet<u64>>,
}

/// The state of some identities before a group commit, to restore if the commit fails.
pub struct Checkpoint(Vec<(FilterKey, Option<RangeInclusiveSet<u64>>)>);

impl SequenceLog {
    /// Loads every identity's ranges.
    pub fn load(conn: &Connection) -> Result<Self, Error> {
        let mut stmt = conn.prepare(
            "SELECT filter_node, filter_worker, filter_instance, ranges FROM filter_sequences",
        )?;
        let mut rows = stmt.query([])?;
        let mut filters = HashMap::new();
        while let Some(row) = rows.next()? {
            let key = FilterKey {
                node: row.get(0)?,
                worker: row.get(1)?,
                instance: row.get(2)?,
            };
            let bytes: Vec<u8> = row.get(3)?;
            let stored = StoredRanges::decode(bytes.as_slice())
                .map_err(|e| Error::Storage(format!("corrupt sequence ranges for {key:?}: {e}")))?;
            let mut set = RangeInclusiveSet::new();
            for pair in stored.bounds.chunks_exact(2) {
                if pair[0] <= pair[1] {
                    set.insert(pair[0]..=pair[1]);
                }
            }
            filters.insert(key, set);
        }
        Ok(SequenceLog { filters })
    }

    /// Remembers the current state of `keys`.
    pub fn checkpoint<'a>(&self, keys: impl Iterator<Item = &'a FilterKey>) -> Checkpoint {
        Checkpoint(
            keys.map(|k| (k.clone(), self.filters.get(k).cloned()))
                .collect(),
        )
    }

    /// Puts back the state a [`Checkpoint`] saw.
    pub fn restore(&mut self, checkpoint: Checkpoint) {
        for (key, state) in checkpoint.0 {
            match state {
                Some(set) => self.filters.insert(key, set),
                None => self.filters.remove(&key),
            };
        }
    }

    /// Marks the sequences of one batch as stored and returns, for each, whether it is new
    /// (false: stored before, or repeated earlier in the batch).
    pub fn accept(&mut self, key: &FilterKey, sequences: &[u64]) -> Vec<bool> {
        let set = self.filters.entry(key.clone()).or_default();
        let mut fresh = vec![true; sequences.len()];
        let mut start = 0;
        // Batches are runs of consecutive sequences; a run that overlaps nothing stored is
        // accepted with one lookup and one insert.
        while start < sequences.len() {
            let mut end = start;
            while end + 1 < sequences.len()
                && sequences[end].checked_add(1) == Some(sequences[end + 1])
            {
                end += 1;
            }
            let run = sequences[start]..=sequences[end];
            if set.overlaps(&run) {
                for (i, seq) in sequences.iter().enumerate().take(end + 1).skip(start) {
                    fresh[i] = !set.contains(seq);
                    set.insert(*seq..=*seq);
                }
            } else {
                set.insert(run);
            }
            start = end + 1;
        }
        while set.len() > MAX_RANGES {
            let first = set.iter().next().cloned();
            let second = set.iter().nth(1).cloned();
            match (first, second) {
                (Some(a), Some(b)) => set.insert(*a.start()..=*b.start()),
                _ => break,
            }
        }
        fresh
    }

    /// Writes the ranges of `keys` (inside the caller's transaction).
    pub fn persist<'a>(
        &self,
        conn: &Connection,
        keys: impl Iterator<Item = &'a FilterKey>,
        now_ms: i64,
    ) -> Result<(), Error> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO filter_sequences (filter_node, filter_worker, filter_instance, ranges, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO UPDATE SET ranges = excluded.ranges, updated_ms = excluded.updated_ms",
        )?;
        for key in keys {
            let Some(set) = self.filters.get(key) else {
                continue;
            };
            let bounds = set.iter().flat_map(|r| [*r.start(), *r.end()]).collect();
            let bytes = StoredRanges { bounds }.encode_to_vec();
            stmt.execute(params![key.node, key.worker, key.instance, bytes, now_ms])?;
        }
        Ok(())
    }

    /// Forgets identities not written to since `before_ms` (their records have been pruned).
    pub fn forget_idle(&mut self, conn: &Connection, before_ms: i64) -> Result<usize, Error> {
        let mut stmt = conn.prepare(
            "DELETE FROM filter_sequences WHERE updated_ms < ?1
             RETURNING filter_node, filter_worker, filter_instance",
        )?;
        let keys = stmt
            .query_map([before_ms], |row| {
                Ok(FilterKey {
                    node: row.get(0)?,
                    worker: row.get(1)?,
                    instance: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for key in &keys {
            self.filters.remove(key);
        }
        Ok(keys.len())
    }

    /// Loads every identity's ranges from the record store at `path`, opened read-only (the
    /// rules engine starts from what was stored, so a batch retried across a restart is not
    /// evaluated again).
    pub fn load_from(path: &std::path::Path) -> Result<Self, Error> {
        Self::load(&crate::db::open_read_only(path)?)
    }

    /// Forgets one identity (in memory only).
    pub fn remove(&mut self, key: &FilterKey) {
        self.filters.remove(key);
    }

    /// Number of identities tracked.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether no identity is tracked.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(worker: u32) -> FilterKey {
        FilterKey::of(&FilterIdentity {
            node_id: "n".into(),
            worker,
            instance_id: "i".into(),
            filter_version: String::new(),
        })
    }

    #[test]
    fn retries_and_repeats_are_not_fresh() {
        let mut log = SequenceLog::default();
        assert_eq!(log.accept(&key(0), &[1, 2, 3]), vec![true; 3]);
        assert_eq!(
            log.accept(&key(0), &[2, 3, 4, 4]),
            vec![false, false, true, false]
        );
        assert_eq!(log.accept(&key(1), &[2]), vec![true], "another VM");
        assert_eq!(log.accept(&key(0), &[9, 7, 8]), vec![true; 3]);
        assert_eq!(log.accept(&key(0), &[5, 6, 7]), vec![true, true, false]);
        assert_eq!(log.filters[&key(0)].len(), 1, "coalesced into 1..=9");
    }

    #[test]
    fn ranges_survive_a_reload_and_a_failed_commit_restores() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(super::super::SCHEMA).unwrap();
        let mut log = SequenceLog::default();
        log.accept(&key(0), &[1, 2, 3, 10]);
        log.persist(&conn, [key(0)].iter(), 5).unwrap();
        let mut loaded = SequenceLog::load(&conn).unwrap();
        assert_eq!(
            loaded.accept(&key(0), &[3, 4, 10]),
            vec![false, true, false]
        );

        let checkpoint = loaded.checkpoint([key(0), key(1)].iter());
        loaded.accept(&key(0), &[5]);
        loaded.accept(&key(1), &[1]);
        loaded.restore(checkpoint);
        assert_eq!(loaded.accept(&key(0), &[5]), vec![true]);
        assert!(!loaded.filters.contains_key(&key(1)));

        assert_eq!(loaded.forget_idle(&conn, 6).unwrap(), 1);
        assert!(SequenceLog::load(&conn).unwrap().is_empty());
    }

    #[test]
    fn gaps_are_bounded() {
        let mut log = SequenceLog::default();
        let sparse: Vec<u64> = (0..(MAX_RANGES as u64 + 10)).map(|i| i * 2 + 1).collect();
        log.accept(&key(0), &sparse);
        let set = &log.filters[&key(0)];
        assert_eq!(set.len(), MAX_RANGES);
        assert!(set.contains(&2), "the oldest gaps were closed");
        assert!(
            !set.contains(&(sparse[sparse.len() - 1] - 1)),
            "recent gaps stay open"
        );
    }
}
