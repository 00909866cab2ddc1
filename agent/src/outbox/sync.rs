//! Making checkpoints durable off the outbox thread.
//!
//! A checkpoint is committed with `synchronous=NORMAL` (its frames are appended to the WAL, in
//! the page cache) and is durable once the WAL has been fsynced. That fsync runs here, on the
//! "weir-fsync" thread, so the outbox thread keeps serving the uplink (an alert, the next rows)
//! while the card flushes, and the engine keeps processing; only the acknowledgements to the
//! local broker wait for it. One fsync answers every request queued before it.
//!
//! Why that is enough: once `fsync(wal)` returns, every frame appended before it, the commit's
//! included, is on the card; SQLite replays committed frames at the next open and discards a
//! torn tail by its checksums. If a WAL checkpoint copied those frames into the database file in
//! between, SQLite (NORMAL) synced the WAL before copying and the database after; when the WAL
//! starts over it syncs the new header first. So nothing committed before the request is lost
//! once the answer is `Ok`.
//!
//! WAL checkpoints (copying the WAL into the database, two fsyncs) run here too, on a
//! connection of this thread, at SQLite's automatic cadence (every 256 KiB of WAL, counted by
//! the outbox thread's WAL hook, see `Outbox::hand_over_wal_checkpoints`): at the default
//! interval about one in ten Weir checkpoints. On the outbox thread they held it for tens of
//! milliseconds, with an alert to stage or rows for the uplink waiting behind. Running one
//! after every fsync instead was measured to write more (each moved the same few pages into
//! the database more often) and to fsync more. A PASSIVE checkpoint never blocks the writer
//! (SQLite copies only frames no reader needs); the writer still truncates the WAL to
//! `journal_size_limit` when it starts it over.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::OutboxError;

/// Answers `Ok` once everything committed before the request is on the card.
pub type Durable = oneshot::Receiver<Result<(), OutboxError>>;

enum Request {
    /// Answered once everything committed before it is on the card.
    Sync(oneshot::Sender<Result<(), OutboxError>>),
    /// A WAL checkpoint is due.
    Checkpoint,
}

/// The sending side, held by the outbox thread.
pub(super) struct Syncer {
    tx: mpsc::UnboundedSender<Request>,
}

impl Syncer {
    /// Starts the thread for the database at `db`; it ends when the `Syncer` is dropped, after
    /// answering what was queued.
    ///
    /// # Panics
    /// If the OS cannot create a thread, as [`std::thread::spawn`] does.
    pub fn spawn(db: &Path) -> (Syncer, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let db = db.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("weir-fsync".to_owned())
            .spawn(move || run(&db, rx));
        match spawned {
            Ok(join) => (Syncer { tx }, join),
            Err(e) => panic!("cannot start the weir-fsync thread: {e}"),
        }
    }

    /// Asks for everything committed so far to be made durable.
    pub fn request(&self) -> Durable {
        let (reply, answer) = oneshot::channel();
        // A send fails only once the thread is gone; the dropped `reply` then answers the
        // caller with a closed channel, which it treats as not durable.
        let _ = self.tx.send(Request::Sync(reply));
        answer
    }

    /// Asks for a WAL checkpoint, after the fsyncs requested before.
    pub fn checkpoint(&self) {
        let _ = self.tx.send(Request::Checkpoint);
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

fn run(db: &Path, mut rx: mpsc::UnboundedReceiver<Request>) {
    let wal = wal_path(db);
    let mut waiting = Vec::new();
    let mut conn = None;
    while let Some(first) = rx.blocking_recv() {
        let mut checkpoint = false;
        let mut take = |r| match r {
            Request::Sync(reply) => waiting.push(reply),
            Request::Checkpoint => checkpoint = true,
        };
        take(first);
        while let Ok(more) = rx.try_recv() {
            take(more);
        }
        if !waiting.is_empty() {
            let result = sync(&wal);
            for reply in waiting.drain(..) {
                let _ = reply.send(result.clone().map_err(|detail| OutboxError::Sync {
                    path: db.to_path_buf(),
                    detail,
                }));
            }
        }
        if checkpoint {
            wal_checkpoint(db, &mut conn);
        }
    }
}

/// A PASSIVE WAL checkpoint on this thread's connection (opened at the first). A failure
/// leaves the frames in the WAL for the next one, or for the next open.
fn wal_checkpoint(db: &Path, conn: &mut Option<rusqlite::Connection>) {
    if conn.is_none() {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let opened = rusqlite::Connection::open_with_flags(db, flags).and_then(|c| {
            // Syncs the WAL before copying and the database after, like the writer's would.
            c.pragma_update(None, "synchronous", super::store::synchronous("NORMAL"))?;
            c.pragma_update(None, "wal_autocheckpoint", 0)?;
            Ok(c)
        });
        match opened {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the outbox for its WAL checkpoint; the WAL grows until the next one");
                return;
            }
        }
    }
    if let Some(c) = conn {
        if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "WAL checkpoint failed; the next one takes its frames");
        }
    }
}

/// One fsync of the WAL: everything appended to it so far is on the card after it.
/// Skipped only under the power-cut test's `synchronous=OFF` override (`store::TEST_SYNCHRONOUS_ENV`).
fn sync(wal: &Path) -> Result<(), String> {
    if super::store::synchronous("NORMAL") == "OFF" {
        return Ok(());
    }
    let file =
        std::fs::File::open(wal).map_err(|e| format!("cannot open {}: {e}", wal.display()))?;
    file.sync_data()
        .map_err(|e| format!("fsync of {} failed: {e}", wal.display()))
}
