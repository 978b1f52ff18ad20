//! SQLite plumbing shared by the record store and the decision tables.
//!
//! The data directory holds two databases, each with its own write-ahead log and write lock:
//! `warden.db` (decisions, rule decisions, the admin audit) and `records.db` (the record
//! store). Kept apart so a ban never waits behind record commits: measured under full ingest,
//! a ban's commit took p99 20–35 ms sharing one file and 5–6 ms with its own.

use crate::config::Synchronous;
use crate::error::Error;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The decisions database inside the data directory.
pub const MAIN_DB_FILE: &str = "warden.db";

/// Opens a write connection with the pragmas every connection needs.
pub fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, Error> {
    let open = || -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Reading the schema parses the header and the first page: a file that is not a
        // database, or whose header is damaged, fails here rather than on the first write.
        conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", sync.pragma())?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        Ok(conn)
    };
    open().map_err(|e| {
        Error::Storage(format!(
            "{}: {e} (if the file is damaged, restore it from a backup or move it away to start with an empty one)",
            path.display()
        ))
    })
}

/// Opens `path` read-only (a reader beside the writer, or a check of a collector's files while
/// it runs); an error names the file.
pub fn open_read_only(path: &Path) -> Result<Connection, Error> {
    let open = || -> Result<Connection, rusqlite::Error> {
        let c = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(c)
    };
    open().map_err(|e| Error::Storage(format!("{}: {e}", path.display())))
}

/// Read-only connections to one database, reused across queries. Cheap to share behind an
/// `Arc`; WAL lets them read beside the writer.
pub struct ReadPool {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl ReadPool {
    /// A pool over the database at `path` (connections are opened on first use).
    pub fn new(path: PathBuf) -> Self {
        ReadPool {
            path,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a read connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let idle = Arc::clone(&self.idle);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = idle.lock().ok().and_then(|mut v| v.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_read_only(&path)?,
            };
            let result = f(&conn);
            if let Ok(mut v) = idle.lock() {
                v.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Storage(format!("query task failed: {e}")))?
    }
}
