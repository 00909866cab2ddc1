//! The durable, prioritised, bounded queue between the detectors and the MQTT uplink.
//!
//! One SQLite database file (WAL) in the state directory. The detectors' checkpoint inserts
//! messages; the uplink reads [`Outbox::pending`] rows, publishes them with QoS 1 and calls
//! [`Outbox::ack`] when the broker's PUBACK for that very row arrives. Delivery is at least once:
//! a row that was published but not acknowledged before a crash or a reconnect is sent again.
//!
//! # Invariants
//! - A row leaves the table only by `ack` (PUBACK received), by supersession (a newer message with
//!   the same `supersede_key` was inserted) or by budget eviction; the last two are counted in the
//!   [`InsertReport`] of the insert that caused them.
//! - Ids are never reused (`AUTOINCREMENT`), even after the newest row is deleted, so a late
//!   PUBACK for an evicted or superseded row can never delete a different, newer row.
//! - Drain order is strict priority of [`Class`] (alerts, aggregates, diagnostics), then id
//!   (insertion order, i.e. oldest first) within a class.
//! - `total_bytes` (in memory) always equals `SUM(bytes)` of the table as of the last commit,
//!   where a row's bytes are `len(topic) + len(payload)`; and after every insert it is at most
//!   `max_bytes`. The in-memory figures only change after a transaction has committed.
//! - Every write (an insert, a checkpoint, deletions written on their own) is one transaction:
//!   a crash leaves either all or none of it. An ack writes nothing by itself: the row stops
//!   being pending at once and its deletion goes with the next write (see `memory`); a crash
//!   before that write makes it pending again (a resend, never a loss).
//! - Rows may be staged before they are written ([`Outbox::stage`]): pending at once under their
//!   final id, written by the next write unless acknowledged first, then never. Ids of staged
//!   rows that were acknowledged and never written may be given again after a restart; they were
//!   never in the file, and no PUBACK crosses a restart.
//!
//! # Schema (version 1, stored in `PRAGMA user_version`)
//! ```sql
//! CREATE TABLE outbox (
//!     id            INTEGER PRIMARY KEY AUTOINCREMENT,
//!     class         INTEGER NOT NULL CHECK (class IN (0, 1, 2)), -- Class as u8
//!     topic         TEXT    NOT NULL,
//!     payload       BLOB    NOT NULL,
//!     supersede_key TEXT,                                        -- NULL: never superseded
//!     created_ms    INTEGER NOT NULL,                            -- ms since the Unix epoch
//!     bytes         INTEGER NOT NULL                             -- len(topic) + len(payload)
//! );
//! -- `pending` walks this index in (class, id) order: no sort, stops after `limit` rows.
//! -- With `bytes` it also covers the eviction scan (oldest rows of one class) and the byte
//! -- sums at open, neither of which then reads the payload pages.
//! CREATE INDEX outbox_class_id ON outbox (class, id, bytes);
//! -- Supersede lookups by key; partial, so keyless rows (most alerts) cost nothing.
//! CREATE INDEX outbox_supersede_key ON outbox (supersede_key) WHERE supersede_key IS NOT NULL;
//! ```
//! `weir outbox purge` adds a `purge_log` table of its own (see [`inspect`]); the daemon ignores it.
//!
//! A file with a newer `user_version` is refused ([`OutboxError::NewerSchema`]) rather than
//! written by code that does not know its shape.
//!
//! # Durability
//! `journal_mode=WAL` with `synchronous=NORMAL`: a commit is appended to the WAL without an
//! fsync, the WAL is fsynced at WAL checkpoints. A Weir checkpoint that the daemon commits is
//! then made durable by an fsync of the WAL on the `weir-fsync` thread (`sync`), and the MQTT
//! acknowledgements it covers wait for that; [`Outbox::commit`] called directly with a
//! checkpoint runs with `FULL` instead. That survives a process crash (`kill -9`, panic,
//! OOM kill) with no loss, because committed frames are in the OS page cache and the next open
//! replays them. A power cut or kernel panic may lose the last few transactions committed since
//! the last WAL checkpoint, but never corrupts the database; the upstream then sees at most a
//! re-send of rows it may already have, never a damaged file. `synchronous=FULL` would close that
//! window at the price of an fsync per commit, which is what wears SD cards and stalls them.
//! `busy_timeout` lets the technician's CLI read the file while the daemon writes it.
//!
//! # A full disk
//! SQLite cannot even delete on a full disk: a deletion is first appended to the WAL. So the
//! last space is kept for deletions. The WAL is checkpointed every 256 KiB and truncated to
//! 256 KiB; inserts fail with `DiskFull` while less than 512 KiB is free on the filesystem (one
//! WAL plus the growth of the checkpoint that empties it), and the caller holds them (ingest
//! pauses). Acknowledged rows are still deleted, their pages are reused by later inserts, and
//! inserts resume. A 256 KiB reserve file (`outbox.db-reserve`) covers the case where another
//! program fills the disk to the last byte: a deletion that fails for space releases it and
//! tries again; it is taken back once 768 KiB are free. So a disk for the outbox needs at least
//! 1 MiB beyond the database itself.
//!
//! # A read-only disk
//! An SD card's ext4 (`errors=remount-ro`) turns read-only under the running daemon after an
//! error. SQLite then reports SQLITE_IOERR (EROFS on the WAL write) rather than
//! SQLITE_READONLY, and keeps the errno to itself, so an I/O or cannot-open error asks the
//! filesystem: creating `outbox.db-probe` beside the database fails with EROFS
//! ([`OutboxError::ReadOnly`]). Inserts fail and the caller holds them exactly as on a full disk;
//! reads still work, so rows stored before keep going upstream (their deletion fails and is
//! retried, they are not re-sent). At start-up, a read-only directory or file is refused with
//! [`OutboxError::ReadOnly`] (and `weir run` exits with its own code).
//!
//! # Byte budget and eviction policy
//! `max_bytes` bounds the sum of `len(topic) + len(payload)` over all rows (SQLite's own page
//! overhead, indexes and the WAL come on top). Messages of one insert are applied in order, each:
//! 1. If the message alone is bigger than `max_bytes`, nothing is stored for it, it supersedes
//!    nothing (the older revision is still the best data available), and it is counted as
//!    evicted in its own class.
//! 2. Every row with the same `supersede_key` is deleted (counted in `superseded`).
//! 3. If the budget would be exceeded, rows are evicted oldest first from Diagnostic, then
//!    Aggregate, then Alert (alerts are kept longest) until the message fits. A message only
//!    evicts rows of its own class or of lower priority: a diagnostic never pushes out an alert.
//!    If even that cannot make room, nothing is evicted and the new message is dropped instead
//!    (counted as evicted in its own class).
//!
//! Rows from earlier in the same batch are ordinary rows by then: being the newest of their
//! class, they go only after every older row of that class. Evictions are counted per class.
//! The budget is enforced on insert only; a file written under a larger budget is trimmed by
//! the next insert that needs room.

mod checkpoint;
mod error;
mod handle;
pub mod inspect;
mod memory;
pub(crate) mod read_only;
mod store;
mod sync;
pub mod verify;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use checkpoint::{Checkpoint, StoredCheckpoint};
pub use error::OutboxError;
pub use handle::{Batch, CommitAnswer, OutboxHandle, StageAnswer, commit_answer};
pub use store::Outbox;
pub use sync::Durable;

/// Schema version written to `PRAGMA user_version`. Version 2 added the checkpoint tables,
/// version 3 `checkpoint_ingest` (QoS 2 and retained-message records) and `checkpoint_hold`
/// (readings held for the clock's synchronisation), version 4 `checkpoint_blob` (those QoS 2 and
/// retained-message records as one blob each, replacing `checkpoint_ingest`); an older file
/// simply gains the tables it lacks at the daemon's next start, and loses `checkpoint_ingest`
/// once its rows are blobs.
pub const SCHEMA_VERSION: i64 = 4;

/// Delivery class; the discriminant is the drain priority (lower goes first) and the value
/// stored in the `class` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Detector alerts: drained first, evicted last.
    Alert = 0,
    /// Window panes (aggregates).
    Aggregate = 1,
    /// Late readings, dead letters and other diagnostics: drained last, evicted first.
    Diagnostic = 2,
}

impl Class {
    /// Every class in drain-priority order.
    pub const ALL: [Class; 3] = [Class::Alert, Class::Aggregate, Class::Diagnostic];

    /// Stable lowercase name, for logs, `weir status` and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Alert => "alert",
            Class::Aggregate => "aggregate",
            Class::Diagnostic => "diagnostic",
        }
    }

    /// Index into per-class arrays such as [`InsertReport::evicted`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The class stored as `value` in the database, if it is one.
    pub fn from_db(value: i64) -> Option<Class> {
        match value {
            0 => Some(Class::Alert),
            1 => Some(Class::Aggregate),
            2 => Some(Class::Diagnostic),
            _ => None,
        }
    }
}

/// Where the outbox lives and how big it may grow.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// The database file; created (with its WAL and shared-memory siblings) if missing.
    pub path: PathBuf,
    /// Budget for `len(topic) + len(payload)` summed over all rows; see the module docs.
    pub max_bytes: u64,
}

/// A message to enqueue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    /// Drain priority and eviction class.
    pub class: Class,
    /// MQTT topic to publish on.
    pub topic: String,
    /// Encoded payload.
    pub payload: Vec<u8>,
    /// Messages with the same key supersede each other: inserting one deletes every older row
    /// with that key (a newer revision of a window replaces its unsent older revision).
    pub supersede_key: Option<String>,
    /// When the message was produced, ms since the Unix epoch (for "oldest unsent" ages).
    pub created_ms: i64,
}

impl NewMessage {
    /// What the message costs against the byte budget.
    pub fn bytes(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }
}

/// A stored message, as handed to the uplink.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Row id: unique for the life of the file, increasing in insertion order.
    pub id: i64,
    /// Delivery class.
    pub class: Class,
    /// MQTT topic.
    pub topic: String,
    /// Encoded payload.
    pub payload: Vec<u8>,
    /// When the message was produced, ms since the Unix epoch.
    pub created_ms: i64,
}

/// Backlog of one class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassStats {
    /// Rows waiting (including rows in flight, not yet acknowledged).
    pub rows: u64,
    /// Their `len(topic) + len(payload)`.
    pub bytes: u64,
    /// Smallest `created_ms` among them; `None` when the class is empty.
    pub oldest_created_ms: Option<i64>,
}

/// What one [`Outbox::insert`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InsertReport {
    /// Ids of the batch's messages still stored when the transaction committed, in input
    /// order. Dropped messages (oversized, or no room) and rows that a later message of the same
    /// batch superseded or evicted are not listed.
    pub ids: Vec<i64>,
    /// Rows deleted because a message with the same `supersede_key` was inserted.
    pub superseded: u64,
    /// Messages lost to the byte budget, indexed by [`Class::index`]: evicted rows plus new
    /// messages that could not be stored.
    pub evicted: [u64; 3],
    /// Set by [`Outbox::stage`] only: rows staged and neither written nor delivered after the
    /// call, and their bytes (what the next checkpoint would write).
    pub staged: (usize, u64),
}
