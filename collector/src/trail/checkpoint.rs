//! Signed checkpoints of the chains' heads (Ed25519, `checkpoints.jsonl`), written on a schedule,
//! and their verification: a rewrite after a checkpoint was shipped elsewhere contradicts it.

use super::{chain::*, verify::*};
use crate::db::open_read_only;
use crate::error::Error;
use rusqlite::OptionalExtension;
use std::path::Path;

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

pub(super) fn hex(bytes: &[u8]) -> String {
    crate::security::tls::hex(bytes)
}

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
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
