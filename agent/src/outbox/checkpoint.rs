//! Checkpoint storage: the engine's and detectors' state lives in the outbox database, so that
//! the state and the outbox rows it produced commit in one transaction (see
//! [`Outbox::commit`]). The bytes are opaque here; `crate::checkpoint` gives them meaning.
//!
//! Invariant: after any commit, `checkpoint_meta` and `checkpoint_key` together are the state
//! as of that commit: every key whose state changed since the previous checkpoint was
//! rewritten (or deleted) in the same transaction as the new meta row. Likewise each row of
//! `checkpoint_blob` is the whole of its record as of the last checkpoint that changed it.
//!
//! The QoS 2 packet ids held and the last message per topic (see `crate::checkpoint::Seen`) are
//! each one blob, written whole when changed: a sorted list of at most a few thousand ids and a
//! list of a few hundred topics fit in one or two pages, where a row per id (inserted at the
//! delivery, deleted at its PUBREL) and per topic rewrote b-tree pages for every reading. Until
//! schema version 4 they were rows of `checkpoint_ingest`, which [`migrate`] folds into blobs.

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
CREATE TABLE IF NOT EXISTS checkpoint_blob (
    name INTEGER PRIMARY KEY, -- BLOB_HELD or BLOB_TOPICS
    data BLOB    NOT NULL
);
";

/// `checkpoint_blob` row of the QoS 2 packet ids held.
const BLOB_HELD: i64 = 1;
/// `checkpoint_blob` row of the last message counted per topic.
const BLOB_TOPICS: i64 = 2;
/// Spaces of the version-3 `checkpoint_ingest` rows.
const OLD_HELD: u8 = 1;
const OLD_TOPIC: u8 = 2;

/// Held ids as little-endian u16s in ascending order.
const HELD_LIST: u8 = 1;
/// Held ids as a bitmap of 65,536 bits (bit `i % 8` of byte `i / 8`): smaller than the list
/// from 4,096 ids on.
const HELD_BITMAP: u8 = 2;
const BITMAP_BYTES: usize = 65_536 / 8;
/// Topics as (topic, fingerprint) pairs of little-endian u64s, ascending by topic.
const TOPICS_LIST: u8 = 1;

/// The blob of `held` (ascending, no duplicates).
fn encode_held(held: &[u16]) -> Vec<u8> {
    if held.len() * 2 < BITMAP_BYTES {
        let mut out = Vec::with_capacity(1 + held.len() * 2);
        out.push(HELD_LIST);
        for id in held {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    } else {
        let mut out = vec![0u8; 1 + BITMAP_BYTES];
        out[0] = HELD_BITMAP;
        for &id in held {
            out[1 + usize::from(id / 8)] |= 1 << (id % 8);
        }
        out
    }
}

/// The ids of a blob of [`encode_held`], ascending; `None` if it is not one.
fn decode_held(blob: &[u8]) -> Option<Vec<u16>> {
    match blob.split_first()? {
        (&HELD_LIST, body) if body.len() % 2 == 0 => Some(
            body.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        (&HELD_BITMAP, body) if body.len() == BITMAP_BYTES => Some(
            (0..=u16::MAX)
                .filter(|&id| body[usize::from(id / 8)] & (1 << (id % 8)) != 0)
                .collect(),
        ),
        _ => None,
    }
}

/// The blob of `topics` (ascending by topic).
fn encode_topics(topics: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + topics.len() * 16);
    out.push(TOPICS_LIST);
    for (topic, fingerprint) in topics {
        out.extend_from_slice(&topic.to_le_bytes());
        out.extend_from_slice(&fingerprint.to_le_bytes());
    }
    out
}

/// The pairs of a blob of [`encode_topics`]; `None` if it is not one.
fn decode_topics(blob: &[u8]) -> Option<Vec<(u64, u64)>> {
    let u64_at = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    match blob.split_first()? {
        (&TOPICS_LIST, body) if body.len() % 16 == 0 => Some(
            body.chunks_exact(16)
                .map(|c| (u64_at(&c[..8]), u64_at(&c[8..])))
                .collect(),
        ),
        _ => None,
    }
}

/// The held ids and topics of version-3 `checkpoint_ingest` rows `(space, id, value)`, each
/// ascending. Ids were stored from a u16 and values from a u64, bit for bit.
fn from_old_rows(rows: &[(u8, i64, i64)]) -> (Vec<u16>, Vec<(u64, u64)>) {
    let mut held: Vec<u16> = Vec::new();
    let mut topics: Vec<(u64, u64)> = Vec::new();
    for &(space, id, value) in rows {
        match space {
            OLD_HELD => held.push(id as u16),
            OLD_TOPIC => topics.push((id as u64, value as u64)),
            _ => {}
        }
    }
    held.sort_unstable();
    held.dedup();
    topics.sort_unstable();
    (held, topics)
}

fn has_table(conn: &rusqlite::Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
}

fn old_rows(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<(u8, i64, i64)>> {
    conn.prepare("SELECT space, id, value FROM checkpoint_ingest ORDER BY space, id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

/// Folds the rows of a version-3 `checkpoint_ingest` into the blobs and drops the table, inside
/// the caller's transaction (the one that creates `checkpoint_blob` and raises the version), so
/// that a crash leaves either the old rows or the blobs, never neither.
pub(super) fn migrate(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    if !has_table(tx, "checkpoint_ingest")? {
        return Ok(());
    }
    let (held, topics) = from_old_rows(&old_rows(tx)?);
    write_blob(tx, BLOB_HELD, &encode_held(&held))?;
    write_blob(tx, BLOB_TOPICS, &encode_topics(&topics))?;
    tx.execute_batch("DROP TABLE checkpoint_ingest")
}

fn write_blob(tx: &Transaction<'_>, name: i64, data: &[u8]) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO checkpoint_blob (name, data) VALUES (?1, ?2)")?
        .execute(rusqlite::params![name, data])?;
    Ok(())
}

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
    /// Every QoS 2 packet id held, ascending, when the set changed since the previous
    /// checkpoint (`None`: unchanged, not written; see `crate::checkpoint::Seen`).
    pub held: Option<Vec<u16>>,
    /// Every topic's (topic fingerprint, last message fingerprint), ascending, when any changed
    /// since the previous checkpoint (`None`: unchanged, not written).
    pub topics: Option<Vec<(u64, u64)>>,
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
    /// Every QoS 2 packet id held, ascending.
    pub held: Vec<u16>,
    /// Every topic's (topic fingerprint, last message fingerprint), ascending by topic.
    pub topics: Vec<(u64, u64)>,
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
    if let Some(held) = &cp.held {
        write_blob(tx, BLOB_HELD, &encode_held(held))?;
    }
    if let Some(topics) = &cp.topics {
        write_blob(tx, BLOB_TOPICS, &encode_topics(topics))?;
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
        // A file opened read-only (`weir status` with the daemon down, before a newer daemon
        // upgraded it) may be of version 2 (no `checkpoint_hold`, no ingest records) or 3
        // (the ingest records as rows of `checkpoint_ingest`, read as `migrate` would).
        let has = |name| has_table(&self.conn, name).map_err(err);
        let hold = if has("checkpoint_hold")? {
            self.all(
                "SELECT seq, reading FROM checkpoint_hold ORDER BY seq",
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err)?
        } else {
            Vec::new()
        };
        let (held, topics) = if has("checkpoint_blob")? {
            let blobs: Vec<(i64, Vec<u8>)> = self
                .all("SELECT name, data FROM checkpoint_blob", |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(err)?;
            let (mut held, mut topics) = (Vec::new(), Vec::new());
            for (name, data) in blobs {
                let corrupt = || OutboxError::Corrupt {
                    path: self.path().to_path_buf(),
                    detail: format!("checkpoint_blob row {name} does not decode"),
                };
                match name {
                    BLOB_HELD => held = decode_held(&data).ok_or_else(corrupt)?,
                    BLOB_TOPICS => topics = decode_topics(&data).ok_or_else(corrupt)?,
                    _ => {}
                }
            }
            (held, topics)
        } else if has("checkpoint_ingest")? {
            from_old_rows(&old_rows(&self.conn).map_err(err)?)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Some(StoredCheckpoint {
            taken_ms,
            meta,
            keys,
            seen,
            held,
            topics,
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
