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

//!
//! Files: [`chain`] (extending and pruning the chains), [`verify`](mod@verify) (walking them),
//! [`checkpoint`] (signed heads).

pub mod chain;
pub mod checkpoint;
pub mod verify;

pub use chain::*;
pub use checkpoint::*;
pub use verify::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::tests::{ban, open as open_decisions};
    use rusqlite::{Connection, params};

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
