//! The synchronous store: one rusqlite connection, one transaction per write (a checkpoint, an
//! insert, or deletions that waited too long); acknowledgements and new rows wait in memory for
//! it (see `memory`).
//!
//! Invariant (see the module docs for the rest): `class_bytes[c]` equals `SUM(bytes)` of the
//! rows of class `c` on disk as of the last commit; it is only assigned after a commit succeeded,
//! so a failed transaction (disk full, I/O error) leaves memory and file in agreement.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::memory::{self, Memory, Staged};
use super::{
    Checkpoint, Class, ClassStats, InsertReport, NewMessage, OutboxConfig, OutboxError, Row,
    SCHEMA_VERSION,
};

/// How long a statement waits for another connection's lock (e.g. `weir outbox inspect`)
/// before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on the WAL file kept after a checkpoint, so a burst does not leave a large WAL
/// behind on a small SD card.
/// The WAL is truncated to this after a checkpoint, and checkpointed every
/// [`WAL_AUTOCHECKPOINT_PAGES`]: together they keep the WAL smaller than the
/// reserve file, which is what lets a full disk recover (see `ensure_reserve`).
const JOURNAL_SIZE_LIMIT: i64 = 256 * 1024;
/// SQLite's page cache, in KiB when negative: 512 KiB instead of the default 2 MiB.
/// The hot pages (the outbox's tail, the checkpoint rows) fit, and on a Pi the
/// kernel's page cache holds the rest of the file anyway.
const CACHE_SIZE: i64 = -512;
/// 64 pages of 4 KiB: a checkpoint every 256 KiB of WAL.
pub(super) const WAL_AUTOCHECKPOINT_PAGES: i64 = 64;

/// Frames in the WAL after the last commit of an outbox whose WAL checkpoints run on the
/// "weir-fsync" thread (see [`Outbox::hand_over_wal_checkpoints`]). SQLite's hook is a plain
/// function, so the count is process-wide: one outbox per process writes it (tests with more
/// only move a checkpoint earlier or later).
static WAL_FRAMES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn count_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.store(i64::from(frames), std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Test only: `WEIR_TEST_SQLITE_SYNCHRONOUS=OFF` (or `NORMAL`, `FULL`, `EXTRA`) replaces
/// every `synchronous` level the outbox sets (with `OFF` the checkpoints' own fsync on
/// the `weir-fsync` thread is skipped too), so the power-cut test (`cross/powercut.sh`,
/// docs/storage.md) can show that it fails without the fsyncs. Any other value is ignored.
/// Never set it on a device: with `OFF` a power cut loses what was acknowledged.
pub const TEST_SYNCHRONOUS_ENV: &str = "WEIR_TEST_SQLITE_SYNCHRONOUS";

/// The `synchronous` level to set for `wanted`: `wanted` itself unless
/// [`TEST_SYNCHRONOUS_ENV`] overrides it (warned once per process).
pub(super) fn synchronous(wanted: &str) -> &str {
    static OVERRIDE: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    let forced = *OVERRIDE.get_or_init(|| {
        let forced = synchronous_override(std::env::var(TEST_SYNCHRONOUS_ENV).ok().as_deref());
        if let Some(level) = forced {
            tracing::warn!(
                level,
                "{TEST_SYNCHRONOUS_ENV} is set: every outbox commit runs with synchronous={level} (test only)"
            );
        }
        forced
    });
    forced.unwrap_or(wanted)
}

/// The level named by the value of [`TEST_SYNCHRONOUS_ENV`], if it names one.
fn synchronous_override(value: Option<&str>) -> Option<&'static str> {
    let value = value?.trim();
    ["OFF", "NORMAL", "FULL", "EXTRA"]
        .into_iter()
        .find(|l| l.eq_ignore_ascii_case(value))
}

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    class         INTEGER NOT NULL CHECK (class IN (0, 1, 2)),
    topic         TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    supersede_key TEXT,
    created_ms    INTEGER NOT NULL,
    bytes         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_class_id ON outbox (class, id, bytes);
CREATE INDEX IF NOT EXISTS outbox_supersede_key ON outbox (supersede_key)
    WHERE supersede_key IS NOT NULL;
";

pub(super) const PENDING_SQL: &str =
    "SELECT id, class, topic, payload, created_ms FROM outbox ORDER BY class, id";
pub(super) const EVICT_SCAN_SQL: &str = "SELECT id, bytes FROM outbox WHERE class = ?1 ORDER BY id";
pub(super) const CLASS_BYTES_SQL: &str = "SELECT class, SUM(bytes) FROM outbox GROUP BY class";

/// Size of the reserve file kept beside the database (see [`Outbox::reserve_path`]).
/// The reserve file: room for deletions when something else has filled the disk.
const RESERVE_BYTES: u64 = 256 * 1024;
/// Inserts stop while less than this is free on the outbox's filesystem: one
/// full WAL plus the growth of the checkpoint that empties it, so deletions
/// (which free space) always fit.
const INSERT_FLOOR_BYTES: u64 = 512 * 1024;

/// The durable outbox. Synchronous: run it on its own thread ([`super::OutboxHandle`]).
pub struct Outbox {
    pub(super) conn: Connection,
    path: PathBuf,
    reserve: PathBuf,
    max_bytes: u64,
    class_bytes: [u64; 3],
    /// Staged rows and deferred deletions (see `memory`).
    memory: Memory,
    /// The id of the next row staged.
    next_id: i64,
    /// The last write failed for space or a read-only disk: deletions are written at once, since
    /// they are what frees room.
    blocked: bool,
    /// Write transactions committed by `insert` and `ack`, so tests can see batching.
    #[cfg(test)]
    pub(super) commits: u64,
}

impl Outbox {
    /// Opens (creating if needed) the database at `cfg.path`, sets WAL mode, checks the schema
    /// version and loads the byte totals.
    pub fn open(cfg: &OutboxConfig) -> Result<Self, OutboxError> {
        Self::open_with_flags(
            cfg,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }

    /// [`Outbox::open`] with explicit flags, so tests can reproduce a read-only file even when
    /// they run as root (for whom file permissions do not apply).
    pub(super) fn open_with_flags(
        cfg: &OutboxConfig,
        flags: OpenFlags,
    ) -> Result<Self, OutboxError> {
        let path = cfg.path.clone();
        let at_open = |e| OutboxError::from_sqlite_at_open(&path, e);
        let mut conn = Connection::open_with_flags(&path, flags).map_err(at_open)?;
        // SQLite silently falls back to read-only when the OS refuses write access (file mode,
        // read-only mount); find out now rather than at the first insert.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(at_open)? {
            return Err(OutboxError::ReadOnly { path });
        }
        conn.busy_timeout(BUSY_TIMEOUT).map_err(at_open)?;
        // Reading the header and parsing the schema is the cheap probe that catches "file is
        // not a database" and a damaged first page; `PRAGMA quick_check` reads every page and
        // is left to `verify` (see its docs for the measured cost).
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(at_open)?;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(at_open)?;
        if version > SCHEMA_VERSION {
            return Err(OutboxError::NewerSchema {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(at_open)?;
        conn.pragma_update(None, "synchronous", synchronous("NORMAL"))
            .map_err(at_open)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(at_open)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(at_open)?;
        conn.pragma_update(None, "cache_size", CACHE_SIZE)
            .map_err(at_open)?;
        if version < SCHEMA_VERSION {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(at_open)?;
            tx.execute_batch(SCHEMA_SQL).map_err(at_open)?;
            // Versions 2 to 4 added checkpoint tables; an older file simply gains them, and
            // version 3's ingest rows become version 4's blobs in the same transaction.
            tx.execute_batch(super::checkpoint::SCHEMA_SQL)
                .map_err(at_open)?;
            super::checkpoint::migrate(&tx).map_err(at_open)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(at_open)?;
            tx.commit().map_err(at_open)?;
        }
        let mut class_bytes = [0u64; 3];
        {
            let mut stmt = conn.prepare(CLASS_BYTES_SQL).map_err(at_open)?;
            let mut rows = stmt.query([]).map_err(at_open)?;
            while let Some(r) = rows.next().map_err(at_open)? {
                let class = class_at(r, 0, &path)?;
                class_bytes[class.index()] = u64_at(r, 1).map_err(at_open)?;
            }
        }
        // Ids continue after every id the file ever held (AUTOINCREMENT keeps the highest in
        // `sqlite_sequence`), so a staged row's id is never one already used on disk.
        let last_id: i64 = conn
            .query_row(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0),
                            COALESCE((SELECT MAX(id) FROM outbox), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(at_open)?;
        let mut reserve = path.as_os_str().to_owned();
        reserve.push("-reserve");
        let outbox = Self {
            conn,
            reserve: PathBuf::from(reserve),
            path,
            max_bytes: cfg.max_bytes,
            class_bytes,
            memory: Memory::default(),
            next_id: last_id + 1,
            blocked: false,
            #[cfg(test)]
            commits: 0,
        };
        outbox.ensure_reserve();
        Ok(outbox)
    }

    /// A file of zeros beside the database, given up when the disk is full.
    ///
    /// On a full disk SQLite cannot even delete: a deletion is appended to the
    /// WAL first. So acknowledged rows could never be removed and the space never
    /// freed. Giving up the reserve leaves room for those deletions (and the
    /// held inserts after them); it is recreated once space is back.
    pub fn reserve_path(&self) -> &Path {
        &self.reserve
    }

    /// Bytes available to us on the outbox's filesystem, if the OS says.
    fn free_bytes(&self) -> Option<u64> {
        super::error::free_bytes(&self.path)
    }

    fn ensure_reserve(&self) {
        if self.reserve.exists() {
            return;
        }
        let size = usize::try_from(RESERVE_BYTES).unwrap_or(usize::MAX);
        if std::fs::write(&self.reserve, vec![0u8; size]).is_err() {
            // No room yet: a partial file would only hide the problem.
            let _ = std::fs::remove_file(&self.reserve);
        }
    }

    /// After a write succeeded with the reserve gone: move the WAL into the
    /// database and truncate it (deleted rows free pages inside the database
    /// file, but the WAL only shrinks at a checkpoint, and on a small disk the
    /// automatic one never comes), then take the reserve back if there is room.
    fn restore_reserve(&self) {
        if self.reserve.exists() {
            return;
        }
        self.checkpoint_truncate();
        if self
            .free_bytes()
            .is_none_or(|free| free >= INSERT_FLOOR_BYTES + RESERVE_BYTES)
        {
            self.ensure_reserve();
        }
    }

    /// Stops SQLite's automatic WAL checkpoints on this connection: the caller runs them
    /// (`sync`, off the outbox thread) when [`Outbox::wal_checkpoint_due`] says so, at the
    /// same cadence. A checkpoint copies the WAL into the database and syncs both, tens of
    /// milliseconds on a card, during which the outbox thread would serve nobody.
    pub(super) fn hand_over_wal_checkpoints(&self) -> Result<(), OutboxError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| OutboxError::from_sqlite(&self.path, e))?;
        self.conn.wal_hook(Some(count_wal_frames));
        Ok(())
    }

    /// Whether the WAL has grown to [`WAL_AUTOCHECKPOINT_PAGES`] since the last call that said so
    /// (where SQLite's automatic checkpoint would have run).
    pub(super) fn wal_checkpoint_due(&self) -> bool {
        let frames = WAL_FRAMES.load(std::sync::atomic::Ordering::Relaxed);
        frames >= WAL_AUTOCHECKPOINT_PAGES
            && WAL_FRAMES
                .compare_exchange(
                    frames,
                    0,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
    }

    fn checkpoint_truncate(&self) {
        let done = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        if let Err(e) = done {
            tracing::debug!(error = %e, "checkpoint while short of space failed");
        }
    }

    /// Whether an insert may go ahead: with the database's own free pages (deleted
    /// rows, reused by inserts) at least the floor is available.
    fn room_for_inserts(&self, need: u64) -> bool {
        let Some(free) = self.free_bytes() else {
            return true;
        };
        let reusable = self
            .conn
            .query_row(
                "SELECT f.freelist_count * p.page_size FROM pragma_freelist_count f, pragma_page_size p",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_or(0, i64::unsigned_abs);
        // Not `free >= WAL limit` as well: once the file has grown, the free space
        // inside it is what inserts use, and the WAL is reset at each checkpoint. If an
        // insert still finds no room, SQLite says so and the caller holds the batch.
        // `need` twice: the rows and their index entries, each first appended to the WAL.
        free.saturating_add(reusable) >= INSERT_FLOOR_BYTES.saturating_add(2 * need)
    }

    /// Runs `op`; on a full disk, gives up the reserve (if still there) and tries once more.
    fn using_reserve<T>(
        &mut self,
        mut op: impl FnMut(&mut Self) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        match op(self) {
            Err(OutboxError::DiskFull { .. }) if std::fs::remove_file(&self.reserve).is_ok() => {
                tracing::warn!(reserve = %self.reserve.display(), "disk full: released the reserve file to keep the outbox working");
                op(self)
            }
            other => other,
        }
    }

    /// Inserts all messages in ONE transaction (supersede + budget eviction inside it), with the
    /// rows staged before them and the deletions waiting; see the module docs for the policy.
    pub fn insert(&mut self, msgs: &[NewMessage]) -> Result<InsertReport, OutboxError> {
        self.commit(msgs, None)
    }

    /// [`Outbox::insert`], with a checkpoint of the state that produced `msgs` (and the staged
    /// rows) written in the same transaction: all are stored, or none is and memory is unchanged.
    pub fn commit(
        &mut self,
        msgs: &[NewMessage],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<InsertReport, OutboxError> {
        self.write(msgs, checkpoint, checkpoint.is_some(), i64::MAX)
    }

    /// [`Outbox::commit`] of the rows staged below id `below` only: those staged later stay
    /// staged, for the next write (they came from a state newer than `checkpoint`).
    pub(super) fn commit_staged_below(
        &mut self,
        msgs: &[NewMessage],
        checkpoint: Option<&Checkpoint>,
        below: i64,
    ) -> Result<InsertReport, OutboxError> {
        self.write(msgs, checkpoint, checkpoint.is_some(), below)
    }

    /// The id the next staged or stored row gets: every row staged so far is below it.
    pub(super) fn next_id(&self) -> i64 {
        self.next_id
    }

    /// [`Outbox::commit`] without its fsync: the transaction is committed (a process crash
    /// keeps it) but durable against a power cut only once the WAL is synced, which the caller
    /// arranges (`sync`: off this thread) before it acknowledges anything the checkpoint covers.
    pub(super) fn commit_unsynced(
        &mut self,
        msgs: &[NewMessage],
        checkpoint: Option<&Checkpoint>,
        below: i64,
    ) -> Result<InsertReport, OutboxError> {
        self.write(msgs, checkpoint, false, below)
    }

    fn write(
        &mut self,
        msgs: &[NewMessage],
        checkpoint: Option<&Checkpoint>,
        full: bool,
        below: i64,
    ) -> Result<InsertReport, OutboxError> {
        // Stop short of a full disk: the last space belongs to deletions. Inserts never
        // use the reserve either.
        let staged: u64 = self.memory.staged.iter().map(|s| s.msg.bytes()).sum();
        let need = msgs.iter().map(NewMessage::bytes).sum::<u64>()
            + staged
            + checkpoint.map_or(0, |c| {
                let keys: usize = c
                    .keys
                    .iter()
                    .map(|k| k.2.as_ref().map_or(0, Vec::len))
                    .sum();
                (c.meta.len() + keys) as u64
            });
        if !self.room_for_inserts(need) {
            // Deletions waiting free pages; the WAL may hold space that a checkpoint gives back.
            self.blocked = true;
            self.flush_deletes();
            self.checkpoint_truncate();
            if !self.room_for_inserts(need) {
                return Err(OutboxError::DiskFull {
                    path: self.path.clone(),
                    free_bytes: self.free_bytes(),
                });
            }
        }
        // A checkpoint is followed by acknowledgements to the local broker, which then
        // forgets those readings: it must survive a power cut, not just a crash. In WAL
        // mode NORMAL syncs only at WAL checkpoints, FULL syncs the WAL at each commit.
        // Other writes (acks, plain inserts) keep NORMAL: a power cut can only undo them
        // into a resend or an eviction of something already delivered.
        if full {
            self.set_synchronous("FULL")?;
        }
        let result = self.insert_once(msgs, checkpoint, below);
        if full {
            self.set_synchronous("NORMAL")?;
        }
        self.blocked = result.is_err();
        let report = result?;
        self.restore_reserve();
        Ok(report)
    }

    /// Adds messages to the memory tier (see `memory`): pending at once, written by the next
    /// [`Outbox::commit`] or [`Outbox::insert`] unless acknowledged before. Supersession applies
    /// now (a staged row with the same key is dropped, a stored one is marked for deletion); the
    /// byte budget applies when the rows are written. Returns the ids given (rows superseded by a
    /// later message of the same call left out), the rows superseded, and the messages too big
    /// for the budget (dropped, counted as evicted).
    pub fn stage(&mut self, msgs: Vec<NewMessage>) -> Result<InsertReport, OutboxError> {
        let mut report = InsertReport::default();
        let now = Instant::now();
        for msg in msgs {
            if msg.bytes() > self.max_bytes {
                report.evicted[msg.class.index()] += 1;
                continue;
            }
            if let Some(key) = &msg.supersede_key {
                report.superseded += self.memory.supersede_staged(key);
                for (id, class, bytes) in rows_with_key(&self.conn, key, &self.path)? {
                    if !self.memory.delivered.contains_key(&id) {
                        self.memory.deliver(id, class, bytes, now);
                        report.superseded += 1;
                    }
                }
            }
            let id = self.next_id;
            self.next_id += 1;
            report.ids.push(id);
            self.memory.staged.push(Staged { id, msg });
        }
        let staged = &self.memory.staged;
        report
            .ids
            .retain(|id| staged.binary_search_by_key(id, |s| s.id).is_ok());
        report.staged = (staged.len(), staged.iter().map(|s| s.msg.bytes()).sum());
        Ok(report)
    }

    /// Rows staged and not yet written or acknowledged.
    pub fn staged_rows(&self) -> usize {
        self.memory.staged.len()
    }

    /// Writes the deletions waiting in memory if they are due (see `memory`); how long until they
    /// will be, if any wait.
    pub fn flush_if_due(&mut self, now: Instant) -> Option<Duration> {
        if self.memory.flush_due(now) {
            self.flush_deletes();
        }
        self.memory.flush_in(now)
    }

    /// Deletes the acknowledged rows waiting in memory, in one transaction (no fsync: a power
    /// cut that undoes it means a resend). A failure keeps them waiting, still not pending.
    pub fn flush_deletes(&mut self) {
        if self.memory.delivered.is_empty() {
            return;
        }
        match self.using_reserve(|o| o.delete_delivered()) {
            Ok(()) => self.restore_reserve(),
            Err(e) => {
                tracing::warn!(error = %e, rows = self.memory.delivered.len(), "cannot delete acknowledged rows yet; they are not sent again, and the deletion is retried")
            }
        }
    }

    fn delete_delivered(&mut self) -> Result<(), OutboxError> {
        let err = |e| OutboxError::from_sqlite(&self.path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut class_bytes = self.class_bytes;
        for &id in self.memory.delivered.keys() {
            if let Some((class, bytes)) = delete_row(&tx, id).map_err(err)? {
                class_bytes[class.index()] = class_bytes[class.index()].saturating_sub(bytes);
            }
        }
        tx.commit().map_err(err)?;
        self.class_bytes = class_bytes;
        self.memory.deleted();
        #[cfg(test)]
        {
            self.commits += 1;
        }
        Ok(())
    }

    fn set_synchronous(&self, level: &str) -> Result<(), OutboxError> {
        self.conn
            .pragma_update(None, "synchronous", synchronous(level))
            .map_err(|e| OutboxError::from_sqlite(&self.path, e))
    }

    fn insert_once(
        &mut self,
        msgs: &[NewMessage],
        checkpoint: Option<&Checkpoint>,
        below: i64,
    ) -> Result<InsertReport, OutboxError> {
        let mut report = InsertReport::default();
        if msgs.is_empty() && checkpoint.is_none() && self.memory.staged.is_empty() {
            return Ok(report);
        }
        let err = |e| OutboxError::from_sqlite(&self.path, e);
        let mut class_bytes = self.class_bytes;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        // Acknowledged rows first: their room is what the budget may use.
        for &id in self.memory.delivered.keys() {
            if let Some((class, bytes)) = delete_row(&tx, id).map_err(err)? {
                class_bytes[class.index()] = class_bytes[class.index()].saturating_sub(bytes);
            }
        }
        // Rows of this batch deleted again by a later message of the same batch.
        let mut gone: HashSet<i64> = HashSet::new();
        let mut batch_ids: Vec<i64> = Vec::with_capacity(msgs.len());
        // A staged row keeps the id it was delivered under; a new one takes the next id when it
        // is stored (a dropped message takes none).
        let mut next_id = self.next_id;
        let staged = (self.memory.staged.iter())
            .take_while(|s| s.id < below)
            .map(|s| (Some(s.id), &s.msg));
        for (given, msg) in staged.chain(msgs.iter().map(|m| (None, m))) {
            let bytes = msg.bytes();
            let ci = msg.class.index();
            if bytes > self.max_bytes {
                report.evicted[ci] += 1;
                continue;
            }
            let older = match &msg.supersede_key {
                Some(key) => rows_with_key(&tx, key, &self.path)?,
                None => Vec::new(),
            };
            let mut after = class_bytes;
            for &(_, class, b) in &older {
                after[class.index()] = after[class.index()].saturating_sub(b);
            }
            let total: u64 = after.iter().sum();
            let need = (total + bytes).saturating_sub(self.max_bytes);
            // Only the message's own class and lower priorities may make room for it.
            let evictable: u64 = after[ci..].iter().sum();
            if need > evictable {
                report.evicted[ci] += 1;
                continue;
            }
            for &(id, _, _) in &older {
                delete_row(&tx, id).map_err(err)?;
                gone.insert(id);
            }
            report.superseded += older.len() as u64;
            class_bytes = after;
            if need > 0 {
                evict(
                    &tx,
                    msg.class,
                    need,
                    &mut class_bytes,
                    &mut report,
                    &mut gone,
                )
                .map_err(err)?;
            }
            tx.prepare_cached(
                "INSERT INTO outbox (id, class, topic, payload, supersede_key, created_ms, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut stmt| {
                let id = given.unwrap_or(next_id);
                stmt.execute(rusqlite::params![
                    id,
                    ci as i64,
                    msg.topic,
                    msg.payload,
                    msg.supersede_key,
                    msg.created_ms,
                    bytes as i64,
                ])
            })
            .map_err(err)?;
            let id = given.unwrap_or(next_id);
            if given.is_none() {
                next_id += 1;
            }
            batch_ids.push(id);
            class_bytes[ci] += bytes;
        }
        if let Some(cp) = checkpoint {
            super::checkpoint::write(&tx, cp).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.class_bytes = class_bytes;
        self.next_id = next_id;
        self.memory.staged.retain(|s| s.id >= below);
        self.memory.deleted();
        #[cfg(test)]
        {
            self.commits += 1;
        }
        batch_ids.retain(|id| !gone.contains(id));
        report.ids = batch_ids;
        Ok(report)
    }

    /// Up to `limit` rows not in `exclude` (the uplink's in-flight set), ordered by class then id:
    /// stored rows not acknowledged, and staged ones.
    pub fn pending(&self, exclude: &HashSet<i64>, limit: usize) -> Result<Vec<Row>, OutboxError> {
        let stored = self.pending_stored(exclude, limit)?;
        let mut staged: Vec<Row> = (self.memory.staged.iter())
            .filter(|s| !exclude.contains(&s.id))
            .map(Staged::row)
            .collect();
        if staged.is_empty() {
            return Ok(stored);
        }
        staged.sort_by_key(|r| (r.class, r.id));
        Ok(memory::merge(stored, staged, limit))
    }

    fn pending_stored(
        &self,
        exclude: &HashSet<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, OutboxError> {
        let err = |e| OutboxError::from_sqlite(&self.path, e);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut stmt = self.conn.prepare_cached(PENDING_SQL).map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            // Columns are read lazily: an excluded row's payload is never copied.
            let id: i64 = r.get(0).map_err(err)?;
            if exclude.contains(&id) || self.memory.delivered.contains_key(&id) {
                continue;
            }
            out.push(Row {
                id,
                class: class_at(r, 1, &self.path)?,
                topic: r.get(2).map_err(err)?,
                payload: r.get(3).map_err(err)?,
                created_ms: r.get(4).map_err(err)?,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// These rows were acknowledged (PUBACK): they are no longer pending, and their deletion is
    /// written with the next write, or on its own when due (see `memory`); a staged row is
    /// simply dropped, never written. Returns how many were pending.
    pub fn ack(&mut self, ids: &[i64]) -> Result<usize, OutboxError> {
        let counts = self.ack_groups(&[ids])?;
        Ok(counts.into_iter().sum())
    }

    /// [`Outbox::ack`] for several callers; returns how many rows of each group were pending.
    pub(super) fn ack_groups(&mut self, groups: &[&[i64]]) -> Result<Vec<usize>, OutboxError> {
        let now = Instant::now();
        let mut found = Vec::new();
        let mut counts = Vec::with_capacity(groups.len());
        // Read everything first, so that an error leaves nothing half marked.
        for ids in groups {
            let mut n = 0;
            for &id in *ids {
                if self.memory.delivered.contains_key(&id)
                    || found.iter().any(|f: &(i64, _, _)| f.0 == id)
                {
                    continue;
                }
                if self
                    .memory
                    .staged
                    .binary_search_by_key(&id, |s| s.id)
                    .is_ok()
                {
                    found.push((id, None, 0));
                    n += 1;
                } else if let Some((class, bytes)) = self.stored_row(id)? {
                    found.push((id, Some(class), bytes));
                    n += 1;
                }
            }
            counts.push(n);
        }
        for (id, class, bytes) in found {
            match class {
                Some(class) => self.memory.deliver(id, class, bytes, now),
                None => {
                    self.memory.take_staged(id);
                }
            }
        }
        // On a full or read-only disk the deletions are what frees room: no waiting then.
        if self.blocked || self.memory.flush_due(now) {
            self.flush_deletes();
        }
        Ok(counts)
    }

    /// A stored row's (class, bytes), if it exists.
    fn stored_row(&self, id: i64) -> Result<Option<(Class, u64)>, OutboxError> {
        let err = |e| OutboxError::from_sqlite(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT class, bytes FROM outbox WHERE id = ?1")
            .map_err(err)?;
        let mut rows = stmt.query([id]).map_err(err)?;
        match rows.next().map_err(err)? {
            Some(r) => Ok(Some((
                class_at(r, 0, &self.path)?,
                u64_at(r, 1).map_err(err)?,
            ))),
            None => Ok(None),
        }
    }

    /// Deletes, in ONE transaction, every row older than its class's cutoff
    /// (`created_ms < cutoff`; `None`: the class never expires). Returns how many
    /// rows expired per class, for the counters.
    pub fn expire(&mut self, cutoffs: [Option<i64>; 3]) -> Result<[u64; 3], OutboxError> {
        // Delivered rows are not expired ones: delete them first.
        self.flush_deletes();
        let expired = self.using_reserve(|o| o.expire_once(cutoffs))?;
        self.restore_reserve();
        Ok(expired)
    }

    fn expire_once(&mut self, cutoffs: [Option<i64>; 3]) -> Result<[u64; 3], OutboxError> {
        let err = |e| OutboxError::from_sqlite(&self.path, e);
        let mut expired = [0u64; 3];
        if cutoffs.iter().all(Option::is_none) {
            return Ok(expired);
        }
        let mut class_bytes = self.class_bytes;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        for class in Class::ALL {
            let Some(cutoff) = cutoffs[class.index()] else {
                continue;
            };
            let (n, bytes): (i64, Option<i64>) = tx
                .query_row(
                    "SELECT COUNT(*), SUM(bytes) FROM outbox WHERE class = ?1 AND created_ms < ?2",
                    rusqlite::params![class as i64, cutoff],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(err)?;
            if n == 0 {
                continue;
            }
            tx.execute(
                "DELETE FROM outbox WHERE class = ?1 AND created_ms < ?2",
                rusqlite::params![class as i64, cutoff],
            )
            .map_err(err)?;
            expired[class.index()] = n.unsigned_abs();
            let freed = bytes.unwrap_or(0).unsigned_abs();
            class_bytes[class.index()] = class_bytes[class.index()].saturating_sub(freed);
        }
        tx.commit().map_err(err)?;
        self.class_bytes = class_bytes;
        Ok(expired)
    }

    /// Backlog per class, indexed by [`Class::index`].
    pub fn stats(&self) -> Result<[ClassStats; 3], OutboxError> {
        let err = |e| OutboxError::from_sqlite(&self.path, e);
        let mut out: [ClassStats; 3] = Default::default();
        const ALL: &str =
            "SELECT class, COUNT(*), SUM(bytes), MIN(created_ms) FROM outbox GROUP BY class";
        // Rows waiting for their deletion are not backlog. At most `MAX_DELIVERED` integers,
        // written into the statement (no user input).
        let mut stmt = if self.memory.delivered.is_empty() {
            self.conn.prepare(ALL).map_err(err)?
        } else {
            let ids: Vec<String> = self.memory.delivered.keys().map(i64::to_string).collect();
            let sql = format!(
                "SELECT class, COUNT(*), SUM(bytes), MIN(created_ms) FROM outbox \
                 WHERE id NOT IN ({}) GROUP BY class",
                ids.join(",")
            );
            self.conn.prepare(&sql).map_err(err)?
        };
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let class = class_at(r, 0, &self.path)?;
            out[class.index()] = ClassStats {
                rows: u64_at(r, 1).map_err(err)?,
                bytes: u64_at(r, 2).map_err(err)?,
                oldest_created_ms: r.get(3).map_err(err)?,
            };
        }
        drop(rows);
        drop(stmt);
        for s in &self.memory.staged {
            let c = &mut out[s.msg.class.index()];
            c.rows += 1;
            c.bytes += s.msg.bytes();
            c.oldest_created_ms = Some(
                c.oldest_created_ms
                    .map_or(s.msg.created_ms, |o| o.min(s.msg.created_ms)),
            );
        }
        Ok(out)
    }

    /// Bytes (`len(topic) + len(payload)`) stored and not acknowledged, without touching the disk
    /// (staged rows are not counted: the budget applies when they are written).
    pub fn total_bytes(&self) -> u64 {
        let delivered: u64 = self.memory.delivered_bytes().iter().sum();
        self.class_bytes
            .iter()
            .sum::<u64>()
            .saturating_sub(delivered)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Full structural check of the file (`PRAGMA quick_check`), for `weir outbox verify`.
    ///
    /// Not run at open because it reads every page: on a 49 MiB file it took 760 ms with a cold
    /// page cache on a VM disk (36 ms warm), so seconds on an SD card, in the way of every
    /// restart. Open instead reads the header and schema (catches "not a database") and sums
    /// bytes from the covering `(class, id, bytes)` index (3 ms warm on the same file); damage
    /// elsewhere surfaces as [`OutboxError::Corrupt`] from the operation that meets it.
    pub fn verify(&self) -> Result<(), OutboxError> {
        let err = |e| OutboxError::from_sqlite(&self.path, e);
        let mut stmt = self.conn.prepare("PRAGMA quick_check").map_err(err)?;
        let problems: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if problems.len() == 1 && problems[0] == "ok" {
            return Ok(());
        }
        Err(OutboxError::Corrupt {
            path: self.path.clone(),
            detail: problems.join("; "),
        })
    }
}

/// Rows carrying `key`, as (id, class, bytes).
fn rows_with_key(
    tx: &Connection,
    key: &str,
    path: &Path,
) -> Result<Vec<(i64, Class, u64)>, OutboxError> {
    let err = |e| OutboxError::from_sqlite(path, e);
    let mut stmt = tx
        .prepare_cached("SELECT id, class, bytes FROM outbox WHERE supersede_key = ?1")
        .map_err(err)?;
    let mut rows = stmt.query([key]).map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        out.push((
            r.get(0).map_err(err)?,
            class_at(r, 1, path)?,
            u64_at(r, 2).map_err(err)?,
        ));
    }
    Ok(out)
}

/// Deletes one row; its (class, bytes) if it existed. A class the schema forbids cannot come
/// back (the CHECK constraint), so it is folded into Diagnostic rather than failing an ack.
fn delete_row(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<Option<(Class, u64)>> {
    let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING class, bytes")?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => {
            let class = Class::from_db(r.get(0)?).unwrap_or(Class::Diagnostic);
            Ok(Some((class, u64_at(r, 1)?)))
        }
        None => Ok(None),
    }
}

/// Frees at least `need` bytes from the oldest rows of the lowest-priority classes, down to
/// (and including) `floor`; the caller has checked that those classes hold enough.
fn evict(
    tx: &Transaction<'_>,
    floor: Class,
    mut need: u64,
    class_bytes: &mut [u64; 3],
    report: &mut InsertReport,
    gone: &mut HashSet<i64>,
) -> rusqlite::Result<()> {
    for class in Class::ALL.iter().rev().filter(|c| **c >= floor) {
        if need == 0 {
            break;
        }
        let mut victims = Vec::new();
        let mut freed = 0u64;
        {
            let mut stmt = tx.prepare_cached(EVICT_SCAN_SQL)?;
            let mut rows = stmt.query([class.index() as i64])?;
            while freed < need {
                let Some(r) = rows.next()? else { break };
                victims.push(r.get::<_, i64>(0)?);
                freed += u64_at(r, 1)?;
            }
        }
        for id in victims {
            delete_row(tx, id)?;
            gone.insert(id);
            report.evicted[class.index()] += 1;
        }
        class_bytes[class.index()] = class_bytes[class.index()].saturating_sub(freed);
        need = need.saturating_sub(freed);
    }
    Ok(())
}

fn class_at(r: &rusqlite::Row<'_>, idx: usize, path: &Path) -> Result<Class, OutboxError> {
    let v: i64 = r.get(idx).map_err(|e| OutboxError::from_sqlite(path, e))?;
    Class::from_db(v).ok_or_else(|| OutboxError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("row with unknown class {v}"),
    })
}

/// A non-negative integer column (counts, byte sums); NULL (SUM of nothing) reads as 0.
fn u64_at(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: Option<i64> = r.get(idx)?;
    // Negative values cannot be written by this module; clamp rather than fail an ack.
    Ok(v.unwrap_or(0).max(0) as u64)
}

impl Drop for Outbox {
    /// A clean close writes the deletions waiting; staged rows still unwritten are lost, and
    /// said so (the pipeline commits them with its last checkpoint before it lets go).
    fn drop(&mut self) {
        self.flush_deletes();
        if !self.memory.staged.is_empty() {
            tracing::error!(
                rows = self.memory.staged.len(),
                "outbox closed with results never written; they are lost"
            );
        }
    }
}

#[cfg(test)]
mod synchronous_tests {
    use super::synchronous_override;

    #[test]
    fn the_test_override_names_a_level_or_nothing() {
        assert_eq!(synchronous_override(None), None);
        assert_eq!(synchronous_override(Some("off")), Some("OFF"));
        assert_eq!(synchronous_override(Some(" FULL ")), Some("FULL"));
        assert_eq!(synchronous_override(Some("")), None);
        assert_eq!(synchronous_override(Some("0")), None);
        assert_eq!(synchronous_override(Some("sometimes")), None);
    }
}
