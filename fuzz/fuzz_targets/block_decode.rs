//! Fuzz target: the collector's stored blocks (`warden_collector::store::block`) and the hash
//! chain over them (`warden_collector::trail`). The first input byte picks one of three checks:
//! - hostile bytes: `decode_body` and `decode_summary` answer with a value or an error, never a
//!   panic, and a summary's queries never panic whatever it holds;
//! - round trip: any decodable `BlockBody` re-encoded with `block::encode` decodes to exactly the
//!   same records and filters, and its summary answers each query as a scan of the records does;
//! - chain: blocks written to a fresh `records.db`, sealed (`trail::seal_blocks`), partly removed
//!   by retention (`trail::prune_block_links`) and sealed further verify clean
//!   (`trail::verify`); then one change to a sealed block, link or head is reported, and a change
//!   to a block not sealed yet is not (the chain does not cover it).

#![no_main]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rusqlite::{Connection, params};
use warden_collector::store::block::{
    BlockBody, BlockSummary, CODEC_PROTOBUF_LZ4, decode_body, decode_summary, encode, summarize,
};
use warden_collector::target::ip_key;
use warden_collector::trail;
use warden_proto::pb::{AccessRecord, FilterIdentity};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => hostile(rest),
        1 => {
            if let Ok(body) = BlockBody::decode(rest) {
                round_trip(&body);
            }
        }
        _ => {
            if let Ok(input) = ChainInput::arbitrary_take_rest(Unstructured::new(rest)) {
                chain(input);
            }
        }
    }
});

fn hostile(bytes: &[u8]) {
    if let Ok(body) = decode_body(CODEC_PROTOBUF_LZ4, bytes) {
        round_trip(&body);
    }
    for codec in [0, 2, -1, i64::MAX] {
        assert!(decode_body(codec, bytes).is_err(), "codec {codec} accepted");
    }
    if let Ok(s) = decode_summary(bytes) {
        // A stored summary may be anything: unsorted, duplicated, keys of odd length.
        let lo: [u8; 16] = std::array::from_fn(|i| bytes.get(i).copied().unwrap_or(0));
        let hi: [u8; 16] = std::array::from_fn(|i| bytes.get(i + 16).copied().unwrap_or(0xff));
        let _ = s.has_client_in(&lo, &hi);
        let text = String::from_utf8_lossy(bytes.get(..8).unwrap_or(bytes));
        let _ = s.has_host(&text);
        let _ = s.has_principal(&text);
        let _ = s.has_method(&text);
        let n = u32::from_le_bytes(lo[..4].try_into().unwrap_or_default());
        let _ = s.has_status_in(n, n.wrapping_add(u32::from(hi[0])));
        for v in [-1, 0, 1, 31, 32, i32::MAX, n as i32] {
            let _ = s.has_verdict(v);
        }
    }
}

/// `body` re-encoded as a block decodes to itself, and its summary agrees with the records.
fn round_trip(body: &BlockBody) {
    let entries: Vec<(u32, &AccessRecord)> = body
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| (body.record_filters.get(i).copied().unwrap_or(0), r))
        .collect();
    let filters: Vec<&FilterIdentity> = body.filters.iter().collect();
    let block = encode(&filters, &entries);
    let decoded = decode_body(CODEC_PROTOBUF_LZ4, &block.body);
    assert!(
        decoded.is_ok(),
        "an encoded block does not decode: {decoded:?}"
    );
    let expected = BlockBody {
        filters: body.filters.clone(),
        record_filters: entries.iter().map(|(f, _)| *f).collect(),
        records: body.records.clone(),
    };
    assert_eq!(decoded.ok(), Some(expected), "block round trip");
    let times = body.records.iter().map(|r| r.time_ms);
    assert_eq!(block.records, body.records.len() as i64);
    assert_eq!(block.min_time_ms, times.clone().min().unwrap_or(0));
    assert_eq!(block.max_time_ms, times.max().unwrap_or(0));
    let summary = decode_summary(&block.summary);
    assert!(summary.is_ok(), "an encoded summary does not decode");
    let summary = summary.unwrap_or_default();
    assert_eq!(
        summary,
        summarize(body.records.iter()),
        "summary round trip"
    );
    check_summary(&summary, &body.records);
}

/// Each summary query answers as a scan of the records.
fn check_summary(s: &BlockSummary, records: &[AccessRecord]) {
    for r in records {
        assert!(s.has_status_in(r.status, r.status), "status {}", r.status);
        let other = r.status.wrapping_add(1);
        assert_eq!(
            s.has_status_in(other, other),
            records.iter().any(|x| x.status == other),
            "status {other}"
        );
        assert!(s.has_method(&r.method), "method {:?}", r.method);
        let other = format!("{}x", r.method);
        assert_eq!(
            s.has_method(&other),
            records.iter().any(|x| x.method == other),
            "method {other:?}"
        );
        let host = r.authority.to_ascii_lowercase();
        assert!(s.has_host(&host), "host {host:?}");
        if let Some(p) = r.principal.as_ref().filter(|p| !p.name.is_empty()) {
            assert!(s.has_principal(&p.name), "principal {:?}", p.name);
        }
        if let Ok(ip) = r.client_address.parse::<IpAddr>() {
            let key = ip_key(ip);
            assert!(s.has_client_in(&key, &key), "client {ip}");
        }
        if let Some(v) = r.decision.as_ref().map(|d| d.verdict)
            && (0..32).contains(&v)
        {
            assert!(s.has_verdict(v), "verdict {v}");
        }
    }
}

/// A record of a block in the chain check (the chain covers the stored bytes, not their
/// meaning, so a few fields suffice).
#[derive(Arbitrary, Debug)]
struct SmallRecord {
    sequence: u64,
    time_ms: i64,
    status: u32,
    path: String,
}

#[derive(Arbitrary, Debug)]
struct ChainInput {
    blocks: Vec<Vec<SmallRecord>>,
    /// Blocks sealed first, then removed by retention, then sealed in all (each clamped).
    sealed_first: u8,
    pruned: u8,
    sealed: u8,
    tamper: Tamper,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Tamper {
    Nothing,
    FlipBody { block: u8, at: u16, xor: u8 },
    Column { block: u8, column: u8, delta: i64 },
    DeleteBlock { block: u8 },
    DeleteLink { position: u8 },
    RewriteLink { position: u8, at: u8, xor: u8 },
    SwapBodies { a: u8, b: u8 },
    MoveHead { delta: i8 },
}

/// The `record_blocks` table as the store creates it (`store::SCHEMA` is crate-private); the
/// chain reads `id, min_time_ms, max_time_ms, records, codec, body`.
const RECORD_BLOCKS: &str = "
CREATE TABLE record_blocks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    min_time_ms INTEGER NOT NULL,
    max_time_ms INTEGER NOT NULL,
    records INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    summary BLOB NOT NULL,
    codec INTEGER NOT NULL,
    body BLOB NOT NULL
);";

/// A data directory of this process, with an empty `warden.db` (no audit chain to verify).
fn data_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("warden-fuzz-chain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let main = Connection::open(dir.join(warden_collector::db::MAIN_DB_FILE)).ok()?;
        main.execute_batch("PRAGMA user_version = 1;").ok()?;
        Some(dir)
    })
    .as_deref()
}

fn fresh_records_db(dir: &Path) -> rusqlite::Result<Connection> {
    let path = dir.join(warden_collector::store::RECORDS_DB_FILE);
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let conn = Connection::open(&path)?;
    conn.execute_batch("PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF;")?;
    conn.execute_batch(RECORD_BLOCKS)?;
    conn.execute_batch(trail::BLOCK_CHAIN_SCHEMA)?;
    Ok(conn)
}

fn verify(dir: &Path) -> trail::Report {
    let report = trail::verify(dir);
    assert!(report.is_ok(), "verify failed: {:?}", report.err());
    report.unwrap_or_default()
}

fn chain(input: ChainInput) {
    let dir = data_dir();
    assert!(
        dir.is_some(),
        "no data directory under {:?}",
        std::env::temp_dir()
    );
    let Some(dir) = dir else {
        return;
    };
    let conn = fresh_records_db(dir);
    assert!(conn.is_ok(), "cannot create records.db: {:?}", conn.err());
    let Ok(conn) = conn else {
        return;
    };
    let filter = FilterIdentity {
        node_id: "n".into(),
        instance_id: "i".into(),
        ..Default::default()
    };
    let mut counts = Vec::new();
    for block in input.blocks.iter().take(8) {
        let records: Vec<AccessRecord> = block
            .iter()
            .take(4)
            .map(|r| AccessRecord {
                sequence: r.sequence,
                time_ms: r.time_ms,
                status: r.status,
                path: r.path.clone(),
                ..Default::default()
            })
            .collect();
        let entries: Vec<(u32, &AccessRecord)> = records.iter().map(|r| (0, r)).collect();
        let b = encode(&[&filter], &entries);
        let inserted = conn.execute(
            "INSERT INTO record_blocks (min_time_ms, max_time_ms, records, received_ms, summary, codec, body)
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
            params![b.min_time_ms, b.max_time_ms, b.records, b.summary, CODEC_PROTOBUF_LZ4, b.body],
        );
        assert_eq!(inserted.ok(), Some(1));
        counts.push(b.records);
    }
    // Block ids are 1..=n in write order; the first `sealed_first` are final, retention removes
    // the oldest `pruned` of those, then the first `sealed` in all are final.
    let n = counts.len() as i64;
    let sealed_first = i64::from(input.sealed_first).min(n);
    let pruned = i64::from(input.pruned).min(sealed_first);
    let sealed = i64::from(input.sealed).clamp(sealed_first, n);
    let first = trail::seal_blocks(&conn, sealed_first);
    assert_eq!(first.ok(), Some(sealed_first as usize), "sealed first");
    if pruned > 0 {
        let ids: Vec<i64> = (1..=pruned).collect();
        let deleted = conn.execute("DELETE FROM record_blocks WHERE id <= ?1", [pruned]);
        assert_eq!(deleted.ok(), Some(pruned as usize));
        let pruned_links = trail::prune_block_links(&conn, &ids, 1);
        assert!(pruned_links.is_ok(), "prune: {pruned_links:?}");
    }
    let then = trail::seal_blocks(&conn, sealed);
    assert_eq!(
        then.ok(),
        Some((sealed - sealed_first) as usize),
        "sealed then"
    );

    let report = verify(dir);
    assert!(
        report.problems.is_empty(),
        "untouched trail: {:?}",
        report.problems
    );
    let stored = |from: i64, to: i64| (from..=to).map(|id| counts[id as usize - 1] as u64);
    assert_eq!(report.blocks, (sealed - pruned) as u64, "verified blocks");
    assert_eq!(report.records, stored(pruned + 1, sealed).sum::<u64>());
    assert_eq!(
        report.unsealed_blocks,
        (n - sealed) as u64,
        "unsealed blocks"
    );
    assert_eq!(report.pruned_blocks, 0);

    // Stored blocks are ids pruned+1..=n; sealed ones and their links are pruned+1..=sealed.
    let stored_ids = pruned + 1..=n;
    let is_sealed = |id: i64| id > pruned && id <= sealed;
    let pick = |x: u8| pruned + 1 + i64::from(x) % (n - pruned).max(1);
    let (changed, should_report) = match input.tamper {
        Tamper::Nothing => (0, false),
        Tamper::FlipBody { block, at, xor } => {
            let id = pick(block);
            let body: Option<Vec<u8>> = conn
                .query_row("SELECT body FROM record_blocks WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .ok();
            match body {
                Some(mut body) if !body.is_empty() && xor != 0 => {
                    let i = usize::from(at) % body.len();
                    body[i] ^= xor;
                    let c = conn
                        .execute(
                            "UPDATE record_blocks SET body = ?2 WHERE id = ?1",
                            params![id, body],
                        )
                        .unwrap_or(0);
                    (c, is_sealed(id))
                }
                _ => (0, false),
            }
        }
        Tamper::Column {
            block,
            column,
            delta,
        } => {
            let id = pick(block);
            let column =
                ["min_time_ms", "max_time_ms", "records", "codec"][usize::from(column % 4)];
            if delta == 0 {
                (0, false)
            } else {
                // Wrapping addition in SQL would overflow to a float: read, change, write.
                let old: Option<i64> = conn
                    .query_row(
                        &format!("SELECT {column} FROM record_blocks WHERE id = ?1"),
                        [id],
                        |r| r.get(0),
                    )
                    .ok();
                let c = old.map_or(0, |v| {
                    conn.execute(
                        &format!("UPDATE record_blocks SET {column} = ?2 WHERE id = ?1"),
                        params![id, v.wrapping_add(delta)],
                    )
                    .unwrap_or(0)
                });
                (c, is_sealed(id))
            }
        }
        Tamper::DeleteBlock { block } => {
            let id = pick(block);
            let c = conn
                .execute("DELETE FROM record_blocks WHERE id = ?1", [id])
                .unwrap_or(0);
            (c, is_sealed(id))
        }
        Tamper::DeleteLink { position } => {
            let c = conn
                .execute(
                    "DELETE FROM block_chain WHERE position = ?1",
                    [pick(position)],
                )
                .unwrap_or(0);
            (c, true)
        }
        Tamper::RewriteLink { position, at, xor } => {
            let p = pick(position);
            let hash: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT hash FROM block_chain WHERE position = ?1",
                    [p],
                    |r| r.get(0),
                )
                .ok();
            match hash {
                Some(mut hash) if !hash.is_empty() && xor != 0 => {
                    let i = usize::from(at) % hash.len();
                    hash[i] ^= xor;
                    let c = conn
                        .execute(
                            "UPDATE block_chain SET hash = ?2 WHERE position = ?1",
                            params![p, hash],
                        )
                        .unwrap_or(0);
                    (c, true)
                }
                _ => (0, false),
            }
        }
        Tamper::SwapBodies { a, b } => {
            let (a, b) = (pick(a), pick(b));
            let body = |id: i64| -> Option<Vec<u8>> {
                conn.query_row("SELECT body FROM record_blocks WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .ok()
            };
            match (body(a), body(b)) {
                (Some(x), Some(y)) if x != y => {
                    let set = "UPDATE record_blocks SET body = ?2 WHERE id = ?1";
                    let c = conn.execute(set, params![a, y]).unwrap_or(0)
                        + conn.execute(set, params![b, x]).unwrap_or(0);
                    (c, is_sealed(a) || is_sealed(b))
                }
                _ => (0, false),
            }
        }
        Tamper::MoveHead { delta } => {
            let c = if delta == 0 {
                0
            } else {
                conn.execute(
                    "UPDATE chain_meta SET position = position + ?1 WHERE key = 'blocks_head'",
                    [i64::from(delta)],
                )
                .unwrap_or(0)
            };
            (c, true)
        }
    };
    drop(conn);
    if changed == 0 {
        return;
    }
    let report = verify(dir);
    if should_report {
        assert!(
            !report.problems.is_empty(),
            "{:?} went unnoticed (stored blocks {stored_ids:?}, sealed through {sealed})",
            input.tamper
        );
    } else {
        assert!(
            report.problems.is_empty(),
            "{:?} of a block not sealed yet reported as tampering: {:?}",
            input.tamper,
            report.problems
        );
    }
}
