//! The technician's view of an outbox file: what is waiting (`weir outbox stats`), the rows in
//! the order the uplink sends them (`peek`, `export`), and the one write a technician may do by
//! hand, deleting old rows (`purge`), which leaves a record of itself in the file.
//!
//! Reads open the file read-only and never create it (see [`open_read_only`]), so they are safe
//! while the daemon writes (WAL: a reader sees the last commit). A purge opens it read-write,
//! still without creating it, and must only run while the daemon is stopped: the daemon keeps the
//! byte totals of the budget in memory (see the store's invariants) and would not see rows
//! vanish. The caller (`weir outbox purge`) checks that.
//!
//! # The purge record
//! ```sql
//! CREATE TABLE purge_log (
//!     purge     INTEGER NOT NULL,  -- one number per `weir outbox purge` run
//!     class     INTEGER NOT NULL,  -- Class as u8
//!     at_ms     INTEGER NOT NULL,  -- when it ran (ms since the epoch)
//!     cutoff_ms INTEGER NOT NULL,  -- rows produced before this were deleted
//!     rows      INTEGER NOT NULL,
//!     bytes     INTEGER NOT NULL,
//!     by        TEXT    NOT NULL,  -- the user who ran it
//!     PRIMARY KEY (purge, class)
//! );
//! ```
//! The table is created by the first purge, not by the daemon's schema, and `user_version` is
//! not raised: the daemon never reads or writes it, every Weir (older ones too) ignores a table
//! it does not know, so a file that was purged still opens after a downgrade. Raising the version
//! would make Weir 0.1 refuse the file (exit 65) for an informational table.
//!
//! Invariant: the purge deletes in chunks, each chunk one transaction that also adds its counts
//! to the purge's `purge_log` rows, so an interrupted purge (Ctrl-C, full disk) is recorded
//! exactly as far as it went.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::{Class, ClassStats, OutboxError, SCHEMA_VERSION};

/// Rows deleted per purge transaction: small enough that each WAL append fits on a nearly full
/// disk, large enough that a big purge is not dominated by commits.
const PURGE_CHUNK: usize = 1000;

const PURGE_LOG_SQL: &str = "
CREATE TABLE IF NOT EXISTS purge_log (
    purge     INTEGER NOT NULL,
    class     INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    cutoff_ms INTEGER NOT NULL,
    rows      INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    by        TEXT    NOT NULL,
    PRIMARY KEY (purge, class)
);
";

/// The rows `stats`, `peek` and `export` show, in send order: strict class priority, then id.
/// The uplink's own query (`PENDING_SQL`) orders the same way; rows in flight are included.
const ROWS_SQL: &str = "SELECT id, class, topic, payload, supersede_key, created_ms, bytes \
     FROM outbox WHERE (class, id) > (?1, ?2) AND (?3 IS NULL OR class = ?3) \
     ORDER BY class, id LIMIT ?4";

/// One stored row, as the technician sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRow {
    /// Row id (increasing in insertion order, never reused).
    pub id: i64,
    /// Delivery class.
    pub class: Class,
    /// MQTT topic.
    pub topic: String,
    /// Encoded payload (JSON or postcard).
    pub payload: Vec<u8>,
    /// The window's id for panes: a newer revision replaces this row while it is unsent.
    pub supersede_key: Option<String>,
    /// When it was produced, ms since the epoch.
    pub created_ms: i64,
    /// What it costs against the byte budget.
    pub bytes: u64,
}

/// Rows and bytes of one topic.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicStats {
    /// The topic.
    pub topic: String,
    /// Its class.
    pub class: Class,
    /// Rows waiting on it.
    pub rows: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What one purge deleted from one class.
#[derive(Clone, Debug, PartialEq)]
pub struct PurgeRecord {
    /// The purge's number in this file.
    pub purge: i64,
    /// The class.
    pub class: Class,
    /// When it ran, ms since the epoch.
    pub at_ms: i64,
    /// Rows produced before this were deleted.
    pub cutoff_ms: i64,
    /// Rows deleted.
    pub rows: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Who ran it.
    pub by: String,
}

/// The backlog of an outbox file.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// The database file.
    pub path: PathBuf,
    /// Rows, bytes and oldest per class, indexed by [`Class::index`].
    pub classes: [ClassStats; 3],
    /// Newest `created_ms` per class.
    pub newest_ms: [Option<i64>; 3],
    /// The topics with the most rows (at most `top` of them), most first.
    pub top_topics: Vec<TopicStats>,
    /// Every purge recorded in the file, oldest first.
    pub purges: Vec<PurgeRecord>,
}

/// Per-class totals of a purge (or of what one would delete).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PurgeCounts {
    /// Rows per class, indexed by [`Class::index`].
    pub rows: [u64; 3],
    /// Bytes per class.
    pub bytes: [u64; 3],
}

impl PurgeCounts {
    /// Rows over all classes.
    pub fn total_rows(&self) -> u64 {
        self.rows.iter().sum()
    }

    /// Bytes over all classes.
    pub fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }
}

/// Opens an existing outbox read-only and checks that it is one this Weir can read (schema
/// version, the `outbox` table). Never creates the file; the `-shm` file beside it may be.
pub fn open_read_only(path: &Path) -> Result<Connection, OutboxError> {
    open_existing(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

fn open_existing(path: &Path, mode: OpenFlags) -> Result<Connection, OutboxError> {
    let at_open = |e| OutboxError::from_sqlite_at_open(path, e);
    // Without this SQLite reports a missing file as "unable to open database file".
    if let Err(e) = std::fs::metadata(path) {
        return Err(OutboxError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(e.to_string()),
            ),
        });
    }
    let conn = if mode == OpenFlags::SQLITE_OPEN_READ_ONLY {
        super::read_only::open(path)?
    } else {
        Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(at_open)?
    };
    // The daemon may be committing; wait for it rather than fail.
    conn.busy_timeout(Duration::from_secs(5)).map_err(at_open)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(at_open)?;
    if version > SCHEMA_VERSION {
        return Err(OutboxError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 || !has_table(&conn, "outbox").map_err(at_open)? {
        return Err(OutboxError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("a SQLite database but not a Weir outbox (schema version {version})"),
        });
    }
    Ok(conn)
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

fn class_of(v: i64, path: &Path) -> Result<Class, OutboxError> {
    Class::from_db(v).ok_or_else(|| OutboxError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("row with unknown class {v}"),
    })
}

/// The backlog per class, the `top` busiest topics and the purge history.
pub fn stats(conn: &Connection, path: &Path, top: usize) -> Result<Stats, OutboxError> {
    let err = |e| OutboxError::from_sqlite(path, e);
    let mut classes: [ClassStats; 3] = Default::default();
    let mut newest_ms = [None; 3];
    {
        let mut stmt = conn
            .prepare(
                "SELECT class, COUNT(*), SUM(bytes), MIN(created_ms), MAX(created_ms) \
                 FROM outbox GROUP BY class",
            )
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let class = class_of(r.get(0).map_err(err)?, path)?;
            classes[class.index()] = ClassStats {
                rows: r.get::<_, i64>(1).map_err(err)?.unsigned_abs(),
                bytes: r
                    .get::<_, Option<i64>>(2)
                    .map_err(err)?
                    .unwrap_or(0)
                    .unsigned_abs(),
                oldest_created_ms: r.get(3).map_err(err)?,
            };
            newest_ms[class.index()] = r.get(4).map_err(err)?;
        }
    }
    let mut top_topics = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT topic, class, COUNT(*) AS n, SUM(bytes) FROM outbox \
                 GROUP BY topic, class ORDER BY n DESC, class, topic LIMIT ?1",
            )
            .map_err(err)?;
        let mut rows = stmt
            .query([i64::try_from(top).unwrap_or(i64::MAX)])
            .map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            top_topics.push(TopicStats {
                topic: r.get(0).map_err(err)?,
                class: class_of(r.get(1).map_err(err)?, path)?,
                rows: r.get::<_, i64>(2).map_err(err)?.unsigned_abs(),
                bytes: r.get::<_, i64>(3).map_err(err)?.unsigned_abs(),
            });
        }
    }
    Ok(Stats {
        path: path.to_path_buf(),
        classes,
        newest_ms,
        top_topics,
        purges: purge_history(conn, path)?,
    })
}

fn purge_history(conn: &Connection, path: &Path) -> Result<Vec<PurgeRecord>, OutboxError> {
    let err = |e| OutboxError::from_sqlite(path, e);
    if !has_table(conn, "purge_log").map_err(err)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare(
            "SELECT purge, class, at_ms, cutoff_ms, rows, bytes, by FROM purge_log \
             ORDER BY purge, class",
        )
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        out.push(PurgeRecord {
            purge: r.get(0).map_err(err)?,
            class: class_of(r.get(1).map_err(err)?, path)?,
            at_ms: r.get(2).map_err(err)?,
            cutoff_ms: r.get(3).map_err(err)?,
            rows: r.get::<_, i64>(4).map_err(err)?.unsigned_abs(),
            bytes: r.get::<_, i64>(5).map_err(err)?.unsigned_abs(),
            by: r.get(6).map_err(err)?,
        });
    }
    Ok(out)
}

/// Where a walk in send order stands: the last `(class, id)` returned.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cursor {
    class: i64,
    id: i64,
}

impl Cursor {
    /// Before the first row.
    pub fn start() -> Self {
        Self { class: -1, id: 0 }
    }
}

/// Up to `limit` rows after `cursor` in send order (of `class` only, if given), and the cursor
/// after them. Paging keeps an export of a large backlog in bounded memory.
pub fn rows_after(
    conn: &Connection,
    path: &Path,
    class: Option<Class>,
    cursor: Cursor,
    limit: usize,
) -> Result<(Vec<StoredRow>, Cursor), OutboxError> {
    let err = |e| OutboxError::from_sqlite(path, e);
    let mut stmt = conn.prepare_cached(ROWS_SQL).map_err(err)?;
    let mut rows = stmt
        .query(params![
            cursor.class,
            cursor.id,
            class.map(|c| c as i64),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])
        .map_err(err)?;
    let mut out = Vec::new();
    let mut next = cursor;
    while let Some(r) = rows.next().map_err(err)? {
        let row = StoredRow {
            id: r.get(0).map_err(err)?,
            class: class_of(r.get(1).map_err(err)?, path)?,
            topic: r.get(2).map_err(err)?,
            payload: r.get(3).map_err(err)?,
            supersede_key: r.get(4).map_err(err)?,
            created_ms: r.get(5).map_err(err)?,
            bytes: r.get::<_, i64>(6).map_err(err)?.unsigned_abs(),
        };
        next = Cursor {
            class: row.class as i64,
            id: row.id,
        };
        out.push(row);
    }
    Ok((out, next))
}

/// Rows (of `class` only, if given) in the file: the total a progress bar counts to.
pub fn count(conn: &Connection, path: &Path, class: Option<Class>) -> Result<u64, OutboxError> {
    conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE ?1 IS NULL OR class = ?1",
        [class.map(|c| c as i64)],
        |r| r.get::<_, i64>(0),
    )
    .map(i64::unsigned_abs)
    .map_err(|e| OutboxError::from_sqlite(path, e))
}

/// What a purge of rows produced before `cutoff_ms` (of `class` only, if given) would delete.
pub fn purge_preview(
    conn: &Connection,
    path: &Path,
    cutoff_ms: i64,
    class: Option<Class>,
) -> Result<PurgeCounts, OutboxError> {
    let err = |e| OutboxError::from_sqlite(path, e);
    let mut stmt = conn
        .prepare(
            "SELECT class, COUNT(*), SUM(bytes) FROM outbox \
             WHERE created_ms < ?1 AND (?2 IS NULL OR class = ?2) GROUP BY class",
        )
        .map_err(err)?;
    let mut rows = stmt
        .query(params![cutoff_ms, class.map(|c| c as i64)])
        .map_err(err)?;
    let mut out = PurgeCounts::default();
    while let Some(r) = rows.next().map_err(err)? {
        let c = class_of(r.get(0).map_err(err)?, path)?;
        out.rows[c.index()] = r.get::<_, i64>(1).map_err(err)?.unsigned_abs();
        out.bytes[c.index()] = r
            .get::<_, Option<i64>>(2)
            .map_err(err)?
            .unwrap_or(0)
            .unsigned_abs();
    }
    Ok(out)
}

/// A purge to run.
#[derive(Clone, Debug)]
pub struct PurgeRequest<'a> {
    /// Rows produced before this (ms since the epoch) are deleted.
    pub cutoff_ms: i64,
    /// Only this class, if given.
    pub class: Option<Class>,
    /// When the purge runs, for the record.
    pub now_ms: i64,
    /// Who runs it, for the record.
    pub by: &'a str,
}

/// Opens an existing outbox read-write (never creating it) for [`purge`].
pub fn open_for_purge(path: &Path) -> Result<Connection, OutboxError> {
    open_existing(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
}

/// Deletes the rows `req` names, oldest first in chunks, each chunk recorded in `purge_log` in
/// its own transaction (see the module docs); `progress` is told the rows deleted so far. The
/// daemon must not be running. On a full disk the daemon's reserve file is given up once, as
/// the daemon itself would.
pub fn purge(
    conn: &mut Connection,
    path: &Path,
    req: &PurgeRequest<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<PurgeCounts, OutboxError> {
    let err = |e| OutboxError::from_sqlite(path, e);
    conn.execute_batch(PURGE_LOG_SQL).map_err(err)?;
    let number: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(purge), 0) + 1 FROM purge_log",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    let mut done = PurgeCounts::default();
    let mut reserve_given_up = false;
    loop {
        let chunk = match purge_chunk(conn, req, number) {
            Ok(c) => c,
            Err(e) => match OutboxError::from_sqlite(path, e) {
                OutboxError::DiskFull { .. } if !reserve_given_up => {
                    reserve_given_up = true;
                    let mut reserve = path.as_os_str().to_owned();
                    reserve.push("-reserve");
                    let _ = std::fs::remove_file(PathBuf::from(reserve));
                    continue;
                }
                other => return Err(other),
            },
        };
        if chunk.total_rows() == 0 {
            break;
        }
        for c in Class::ALL {
            done.rows[c.index()] += chunk.rows[c.index()];
            done.bytes[c.index()] += chunk.bytes[c.index()];
        }
        progress(done.total_rows());
    }
    // Hand the WAL's pages back to the file (and the disk) now, not at the daemon's next start.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    Ok(done)
}

fn purge_chunk(
    conn: &mut Connection,
    req: &PurgeRequest<'_>,
    number: i64,
) -> rusqlite::Result<PurgeCounts> {
    let tx = conn.transaction()?;
    let mut counts = PurgeCounts::default();
    {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
             WHERE created_ms < ?1 AND (?2 IS NULL OR class = ?2) ORDER BY created_ms, id \
             LIMIT ?3) RETURNING class, bytes",
        )?;
        let mut rows = stmt.query(params![
            req.cutoff_ms,
            req.class.map(|c| c as i64),
            i64::try_from(PURGE_CHUNK).unwrap_or(i64::MAX)
        ])?;
        while let Some(r) = rows.next()? {
            // The CHECK constraint keeps the class in range; anything else is skipped, not
            // counted against a class it is not.
            if let Some(c) = Class::from_db(r.get(0)?) {
                counts.rows[c.index()] += 1;
                counts.bytes[c.index()] += r.get::<_, i64>(1)?.unsigned_abs();
            }
        }
    }
    for c in Class::ALL {
        if counts.rows[c.index()] == 0 {
            continue;
        }
        tx.execute(
            "INSERT INTO purge_log (purge, class, at_ms, cutoff_ms, rows, bytes, by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (purge, class) DO UPDATE \
             SET rows = rows + excluded.rows, bytes = bytes + excluded.bytes",
            params![
                number,
                c as i64,
                req.now_ms,
                req.cutoff_ms,
                i64::try_from(counts.rows[c.index()]).unwrap_or(i64::MAX),
                i64::try_from(counts.bytes[c.index()]).unwrap_or(i64::MAX),
                req.by
            ],
        )?;
    }
    tx.commit()?;
    Ok(counts)
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
