//! Checkpoint storage: the engine's and detectors' state lives in the outbox database, so that
//! the state and the outbox rows it produced commit in one transaction (see
//! [`Outbox::commit`]). The bytes are opaque here; `crate::checkpoint` gives them meaning.
//!
//! Invariant: after any commit, `checkpoint_meta` and `checkpoint_key` together are the state
//! as of that commit: every key whose state changed since the previous checkpoint was
//! rewritten (or deleted) in the same transaction as the new meta row.

use rusqlite::{OptionalExtension, Transaction};

use super::{Outbox, OutboxError};

pub(super) const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS checkpoint_meta (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    taken_ms INTEGER NOT NULL,
    meta     BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint_key (
    sensor TEXT NOT NULL,
    metric TEXT NOT NULL,
    state  BLOB NOT NULL,
    PRIMARY KEY (sensor, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoint_seen (
    pkid        INTEGER PRIMARY KEY,
    fingerprint INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint_hold (
    seq     INTEGER PRIMARY KEY,
    reading BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint_ingest (
    space INTEGER NOT NULL,
    id    INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (space, id)
) WITHOUT ROWID;
";

/// What one checkpoint writes: the part of the state that belongs to no key, and the keys
/// whose state changed since the previous checkpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Wall-clock time the checkpoint was taken (ms since the epoch).
    pub taken_ms: i64,
    /// The state that belongs to no key (encoded).
    pub meta: Vec<u8>,
    /// `(sensor, metric, state)`: the key's new state, or `None` to delete its row.
    pub keys: Vec<(String, String, Option<Vec<u8>>)>,
    /// Ingest deliveries recorded since the previous checkpoint: (packet id, fingerprint),
    /// each replacing the entry of its packet id.
    pub seen: Vec<(u16, u64)>,
    /// Other ingest records changed since the previous checkpoint: (space, id, value),
    /// `None` deleting the record (see `crate::checkpoint::Seen`).
    pub ingest: Vec<(u8, i64, Option<i64>)>,
    /// Readings held for the clock's synchronisation: added since the previous
    /// checkpoint `(seq, encoded)`, and the number below which stored ones go
    /// (see `crate::clock::Hold`).
    pub hold: Vec<(i64, Vec<u8>)>,
    /// See [`Checkpoint::hold`].
    pub hold_delete_below: Option<i64>,
}

/// The last committed checkpoint, whole.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredCheckpoint {
    /// When it was taken.
    pub taken_ms: i64,
    /// See [`Checkpoint::meta`].
    pub meta: Vec<u8>,
    /// Every key's state, ordered by sensor then metric.
    pub keys: Vec<(String, String, Vec<u8>)>,
    /// The last delivery recorded for each packet id.
    pub seen: Vec<(u16, u64)>,
    /// Every ingest record: (space, id, value).
    pub ingest: Vec<(u8, i64, i64)>,
    /// Every reading held for the clock: (seq, encoded), in order.
    pub hold: Vec<(i64, Vec<u8>)>,
}

/// Writes `cp` inside the caller's transaction.
pub(super) fn write(tx: &Transaction<'_>, cp: &Checkpoint) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO checkpoint_meta (id, taken_ms, meta) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET taken_ms = excluded.taken_ms, meta = excluded.meta",
    )?
    .execute(rusqlite::params![cp.taken_ms, cp.meta])?;
    for (sensor, metric, state) in &cp.keys {
        match state {
            Some(state) => tx
                .prepare_cached(
                    "INSERT INTO checkpoint_key (sensor, metric, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT (sensor, metric) DO UPDATE SET state = excluded.state",
                )?
                .execute(rusqlite::params![sensor, metric, state])?,
            None => tx
                .prepare_cached("DELETE FROM checkpoint_key WHERE sensor = ?1 AND metric = ?2")?
                .execute(rusqlite::params![sensor, metric])?,
        };
    }
    for (pkid, fingerprint) in &cp.seen {
        tx.prepare_cached(
            "INSERT INTO checkpoint_seen (pkid, fingerprint) VALUES (?1, ?2)
             ON CONFLICT (pkid) DO UPDATE SET fingerprint = excluded.fingerprint",
        )?
        // Stored as SQLite's signed integer, bit for bit.
        .execute(rusqlite::params![pkid, *fingerprint as i64])?;
    }
    if let Some(below) = cp.hold_delete_below {
        tx.prepare_cached("DELETE FROM checkpoint_hold WHERE seq < ?1")?
            .execute([below])?;
    }
    for (seq, reading) in &cp.hold {
        tx.prepare_cached("INSERT OR REPLACE INTO checkpoint_hold (seq, reading) VALUES (?1, ?2)")?
            .execute(rusqlite::params![seq, reading])?;
    }
    for (space, id, value) in &cp.ingest {
        match value {
            Some(v) => tx
                .prepare_cached(
                    "INSERT INTO checkpoint_ingest (space, id, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (space, id) DO UPDATE SET value = excluded.value",
                )?
                .execute(rusqlite::params![space, id, v])?,
            None => tx
                .prepare_cached("DELETE FROM checkpoint_ingest WHERE space = ?1 AND id = ?2")?
                .execute(rusqlite::params![space, id])?,
        };
    }
    Ok(())
}

impl Outbox {
    /// The last committed checkpoint, or `None` when none was ever written (a new database).
    pub fn load_checkpoint(&self) -> Result<Option<StoredCheckpoint>, OutboxError> {
        let err = |e| OutboxError::from_sqlite(self.path(), e);
        let meta: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT taken_ms, meta FROM checkpoint_meta WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        let Some((taken_ms, meta)) = meta else {
            return Ok(None);
        };
        let keys = self
            .all(
                "SELECT sensor, metric, state FROM checkpoint_key ORDER BY sensor, metric",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(err)?;
        let seen = self
            .all(
                "SELECT pkid, fingerprint FROM checkpoint_seen ORDER BY pkid",
                |r| Ok((r.get::<_, u16>(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(err)?;
        // A version-2 file opened read-only (`weir status` with the daemon down, before a
        // newer daemon upgraded it) has no such tables (both came with version 3), and no
        // such records.
        let has_v3: bool = self
            .conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'checkpoint_ingest'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let (hold, ingest) = if has_v3 {
            let hold = self
                .all(
                    "SELECT seq, reading FROM checkpoint_hold ORDER BY seq",
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(err)?;
            let ingest = self
                .all(
                    "SELECT space, id, value FROM checkpoint_ingest ORDER BY space, id",
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(err)?;
            (hold, ingest)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Some(StoredCheckpoint {
            taken_ms,
            meta,
            keys,
            seen,
            ingest,
            hold,
        }))
    }

    /// Every row of `sql` (no parameters), mapped by `f`.
    fn all<T>(
        &self,
        sql: &str,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<T>> {
        self.conn.prepare(sql)?.query_map([], f)?.collect()
    }
}
