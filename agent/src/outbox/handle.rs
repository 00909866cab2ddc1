//! The outbox on its own thread: SQLite calls block (fsync, busy waits), so they must never run
//! on the async runtime's workers.
//!
//! Invariants: commands run in the order they were sent; the thread drains every queued command
//! after the one it woke up for (at most [`MAX_BATCH`]). Acknowledgements only mark rows in
//! memory; their deletions are written with the next checkpoint, or on their own when they have
//! waited long enough (the thread wakes up for that). The thread ends when every handle is
//! dropped and the queue is empty.

use std::collections::HashSet;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::sync::{Durable, Syncer};
use super::{
    Checkpoint, ClassStats, InsertReport, NewMessage, Outbox, OutboxError, Row, StoredCheckpoint,
};

/// Commands waiting for the outbox thread; when full, callers wait (backpressure), nothing is
/// dropped.
const QUEUE_CAPACITY: usize = 64;

/// Most commands run per wake-up, so a flood of senders cannot starve the replies.
const MAX_BATCH: usize = QUEUE_CAPACITY;

type Reply<T> = oneshot::Sender<Result<T, OutboxError>>;

/// Messages and the checkpoint of the state that produced them: committed together, with the
/// rows staged before the batch's first attempt (see [`Batch::new`]).
#[derive(Debug, Default)]
pub struct Batch {
    /// The messages.
    pub msgs: Vec<NewMessage>,
    /// The checkpoint, if one is due with them.
    pub checkpoint: Option<Checkpoint>,
    /// Set by the outbox thread at the first attempt: the staged rows below this id go with the
    /// batch. A retry writes the same ones, whatever was staged after the first attempt (that
    /// belongs to the next checkpoint, the engine having moved on meanwhile).
    staged_below: Option<i64>,
}

impl Batch {
    /// A batch of `msgs` and `checkpoint`.
    pub fn new(msgs: Vec<NewMessage>, checkpoint: Option<Checkpoint>) -> Self {
        Batch {
            msgs,
            checkpoint,
            staged_below: None,
        }
    }
}

/// The outbox's answer to messages sent with [`OutboxHandle::send_stage`].
pub type StageAnswer = oneshot::Receiver<Result<InsertReport, OutboxError>>;

/// The outbox's answer to a commit sent with [`OutboxHandle::send_commit`].
pub type CommitAnswer = oneshot::Receiver<Result<(InsertReport, Durable), (OutboxError, Batch)>>;

pub(super) enum Command {
    Insert(Vec<NewMessage>, Reply<InsertReport>),
    Stage(Vec<NewMessage>, Reply<InsertReport>),
    Pending(HashSet<i64>, usize, Reply<Vec<Row>>),
    Ack(Vec<i64>, Reply<usize>),
    Stats(Reply<[ClassStats; 3]>),
    Commit(
        Batch,
        oneshot::Sender<Result<(InsertReport, Durable), (OutboxError, Batch)>>,
    ),
    LoadCheckpoint(Reply<Option<StoredCheckpoint>>),
    Expire([Option<i64>; 3], Reply<[u64; 3]>),
}

/// A cloneable async front to an [`Outbox`] running on the dedicated "weir-outbox" thread.
#[derive(Clone)]
pub struct OutboxHandle {
    tx: mpsc::Sender<Command>,
}

impl OutboxHandle {
    /// Moves the outbox onto a dedicated thread named "weir-outbox". The thread ends when every
    /// handle is dropped, after finishing queued commands. Returns the join handle too.
    ///
    /// # Panics
    /// If the OS cannot create a thread, as [`std::thread::spawn`] does: there is no outbox to
    /// fall back to at startup.
    pub fn spawn(outbox: Outbox) -> (OutboxHandle, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        // The WAL checkpoints go to the fsync thread with the fsyncs; if they cannot, SQLite
        // keeps running them here.
        let checkpoints = match outbox.hand_over_wal_checkpoints() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoints stay on the outbox thread");
                false
            }
        };
        let syncer = Syncer::spawn(outbox.path());
        let spawned = std::thread::Builder::new()
            .name("weir-outbox".to_owned())
            .spawn(move || {
                let (syncer, sync_thread) = syncer;
                run(outbox, rx, &syncer, checkpoints);
                // Answers what is queued, then ends.
                drop(syncer);
                let _ = sync_thread.join();
            });
        match spawned {
            Ok(join) => (OutboxHandle { tx }, join),
            Err(e) => panic!("cannot start the weir-outbox thread: {e}"),
        }
    }

    /// See [`Outbox::insert`].
    pub async fn insert(&self, msgs: Vec<NewMessage>) -> Result<InsertReport, OutboxError> {
        self.call(|reply| Command::Insert(msgs, reply)).await
    }

    /// See [`Outbox::stage`].
    pub async fn stage(&self, msgs: Vec<NewMessage>) -> Result<InsertReport, OutboxError> {
        self.call(|reply| Command::Stage(msgs, reply)).await
    }

    /// [`OutboxHandle::stage`] in two steps, like [`OutboxHandle::send_commit`]: queues the
    /// messages and returns the answer to await while the caller goes on.
    pub async fn send_stage(&self, msgs: Vec<NewMessage>) -> Result<StageAnswer, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Stage(msgs, reply))
            .await
            .map_err(|_| OutboxError::Closed)?;
        Ok(answer)
    }

    /// See [`Outbox::commit`]. A failed commit hands the batch back, so the caller can hold it
    /// and retry. A checkpoint is committed (a process crash keeps it) when this returns, and
    /// durable against a power cut when the [`Durable`] answers `Ok`: acknowledge what it
    /// covers only then. The fsync runs on its own thread meanwhile (see `sync`).
    // The Err carries the batch by value on purpose: it is moved once per commit, never copied.
    #[allow(clippy::result_large_err)]
    pub async fn commit(
        &self,
        batch: Batch,
    ) -> Result<(InsertReport, Durable), (OutboxError, Batch)> {
        let answer = self.send_commit(batch).await?;
        commit_answer(answer).await
    }

    /// [`OutboxHandle::commit`] in two steps: this one queues the batch (waiting only for room
    /// in the queue) and returns the answer to await, with [`commit_answer`], while the caller
    /// goes on. Commands sent after this one run after it: rows staged from now on are not
    /// part of this batch.
    #[allow(clippy::result_large_err)]
    pub async fn send_commit(&self, batch: Batch) -> Result<CommitAnswer, (OutboxError, Batch)> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(cmd)) = self.tx.send(Command::Commit(batch, reply)).await
        {
            let batch = match cmd {
                Command::Commit(batch, _) => batch,
                _ => Batch::default(),
            };
            return Err((OutboxError::Closed, batch));
        }
        Ok(answer)
    }

    /// See [`Outbox::load_checkpoint`].
    pub async fn load_checkpoint(&self) -> Result<Option<StoredCheckpoint>, OutboxError> {
        self.call(Command::LoadCheckpoint).await
    }

    /// See [`Outbox::pending`].
    pub async fn pending(
        &self,
        exclude: HashSet<i64>,
        limit: usize,
    ) -> Result<Vec<Row>, OutboxError> {
        self.call(|reply| Command::Pending(exclude, limit, reply))
            .await
    }

    /// See [`Outbox::ack`]; acks queued back to back share one transaction.
    pub async fn ack(&self, ids: Vec<i64>) -> Result<usize, OutboxError> {
        self.call(|reply| Command::Ack(ids, reply)).await
    }

    /// See [`Outbox::stats`].
    pub async fn stats(&self) -> Result<[ClassStats; 3], OutboxError> {
        self.call(Command::Stats).await
    }

    /// See [`Outbox::expire`].
    pub async fn expire(&self, cutoffs: [Option<i64>; 3]) -> Result<[u64; 3], OutboxError> {
        self.call(|r| Command::Expire(cutoffs, r)).await
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| OutboxError::Closed)?;
        answer.await.map_err(|_| OutboxError::Closed)?
    }
}

/// The result of a commit sent with [`OutboxHandle::send_commit`]; a thread that is gone
/// answers [`OutboxError::Closed`].
// The Err carries the batch by value on purpose, see `OutboxHandle::commit`.
#[allow(clippy::result_large_err)]
pub async fn commit_answer(
    answer: CommitAnswer,
) -> Result<(InsertReport, Durable), (OutboxError, Batch)> {
    answer
        .await
        .unwrap_or_else(|_| Err((OutboxError::Closed, Batch::default())))
}

fn run(mut outbox: Outbox, mut rx: mpsc::Receiver<Command>, syncer: &Syncer, checkpoints: bool) {
    // Only to wait for a command with a timeout (deletions that are due); nothing else runs on it.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start the weir-outbox thread's timer: {e}"),
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let wait = outbox.flush_if_due(std::time::Instant::now());
        if checkpoints && outbox.wal_checkpoint_due() {
            syncer.checkpoint();
        }
        let first = match wait {
            None => rx.blocking_recv(),
            Some(d) => match rt.block_on(async { tokio::time::timeout(d, rx.recv()).await }) {
                Ok(cmd) => cmd,
                Err(_) => continue,
            },
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        execute(&mut outbox, batch.drain(..), Some(syncer));
        if checkpoints && outbox.wal_checkpoint_due() {
            syncer.checkpoint();
        }
    }
}

/// Runs commands in order, folding each run of consecutive acks into one transaction.
pub(super) fn execute(
    outbox: &mut Outbox,
    cmds: impl IntoIterator<Item = Command>,
    syncer: Option<&Syncer>,
) {
    let mut acks: Vec<(Vec<i64>, Reply<usize>)> = Vec::new();
    // A failed `send` means the caller stopped waiting (its future was dropped); the command
    // has still run, which is what the caller asked for, so there is nothing else to do.
    for cmd in cmds {
        match cmd {
            Command::Ack(ids, reply) => acks.push((ids, reply)),
            Command::Insert(msgs, reply) => {
                flush_acks(outbox, &mut acks);
                let _ = reply.send(outbox.insert(&msgs));
            }
            Command::Stage(msgs, reply) => {
                flush_acks(outbox, &mut acks);
                let _ = reply.send(outbox.stage(msgs));
            }
            Command::Pending(exclude, limit, reply) => {
                flush_acks(outbox, &mut acks);
                let _ = reply.send(outbox.pending(&exclude, limit));
            }
            Command::Stats(reply) => {
                flush_acks(outbox, &mut acks);
                let _ = reply.send(outbox.stats());
            }
            Command::Commit(mut batch, reply) => {
                flush_acks(outbox, &mut acks);
                let below = *batch.staged_below.get_or_insert(outbox.next_id());
                let cp = batch.checkpoint.as_ref();
                let result = match syncer {
                    Some(syncer) => outbox
                        .commit_unsynced(&batch.msgs, cp, below)
                        .map(|report| (report, syncer.request())),
                    // Synced here: already durable.
                    None => outbox
                        .commit_staged_below(&batch.msgs, cp, below)
                        .map(|report| {
                            let (done, durable) = oneshot::channel();
                            let _ = done.send(Ok(()));
                            (report, durable)
                        }),
                };
                let _ = reply.send(result.map_err(|e| (e, batch)));
            }
            Command::LoadCheckpoint(reply) => {
                flush_acks(outbox, &mut acks);
                let _ = reply.send(outbox.load_checkpoint());
            }
            Command::Expire(cutoffs, reply) => {
                flush_acks(outbox, &mut acks);
                let _ = reply.send(outbox.expire(cutoffs));
            }
        }
    }
    flush_acks(outbox, &mut acks);
}

fn flush_acks(outbox: &mut Outbox, acks: &mut Vec<(Vec<i64>, Reply<usize>)>) {
    if acks.len() <= 1 {
        for (ids, reply) in acks.drain(..) {
            let _ = reply.send(outbox.ack(&ids));
        }
        return;
    }
    let groups: Vec<&[i64]> = acks.iter().map(|(ids, _)| ids.as_slice()).collect();
    match outbox.ack_groups(&groups) {
        Ok(counts) => {
            for ((_, reply), n) in acks.drain(..).zip(counts) {
                let _ = reply.send(Ok(n));
            }
        }
        // The shared transaction rolled back. Errors cannot be cloned, and every caller deserves
        // its own answer: run each ack alone.
        Err(_) => {
            for (ids, reply) in acks.drain(..) {
                let _ = reply.send(outbox.ack(&ids));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::outbox::{Class, OutboxConfig};

    fn open(dir: &TempDir) -> Outbox {
        Outbox::open(&OutboxConfig {
            path: dir.path().join("outbox.db"),
            max_bytes: 1 << 20,
        })
        .unwrap()
    }

    fn msgs(n: i64) -> Vec<NewMessage> {
        (0..n)
            .map(|i| NewMessage {
                class: Class::Aggregate,
                topic: format!("weir/dev/agg/s{i}/m"),
                payload: vec![1, 2, 3],
                supersede_key: None,
                created_ms: i,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_handle_inserts_lists_acks_and_reports_stats_through_the_thread() {
        let dir = TempDir::new().unwrap();
        let (handle, join) = OutboxHandle::spawn(open(&dir));
        let report = handle.insert(msgs(3)).await.unwrap();
        assert_eq!(report.ids, vec![1, 2, 3]);
        let rows = handle.pending([2].into_iter().collect(), 10).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(handle.ack(vec![1, 2]).await.unwrap(), 2);
        assert_eq!(handle.ack(vec![1]).await.unwrap(), 0);
        let stats = handle.stats().await.unwrap();
        assert_eq!(stats[Class::Aggregate.index()].rows, 1);
        drop(handle);
        join.join().unwrap();
    }

    #[tokio::test]
    async fn the_thread_finishes_queued_commands_then_ends_when_the_last_handle_drops() {
        let dir = TempDir::new().unwrap();
        let (handle, join) = OutboxHandle::spawn(open(&dir));
        let other = handle.clone();
        let mut answers = Vec::new();
        for _ in 0..10 {
            let (reply, answer) = oneshot::channel();
            handle.tx.try_send(Command::Insert(msgs(1), reply)).unwrap();
            answers.push(answer);
        }
        drop(handle);
        drop(other);
        join.join().unwrap();
        for answer in answers {
            assert_eq!(answer.await.unwrap().unwrap().ids.len(), 1);
        }
        let reopened = open(&dir);
        assert_eq!(reopened.total_bytes(), 10 * (17 + 3));
    }

    #[tokio::test]
    async fn a_handle_whose_thread_is_gone_reports_closed() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let handle = OutboxHandle { tx };
        let err = handle.stats().await.err().unwrap();
        assert!(matches!(err, OutboxError::Closed), "{err:?}");
    }

    #[tokio::test]
    async fn acks_write_nothing_each_caller_gets_its_own_count_and_the_next_write_deletes_them() {
        let dir = TempDir::new().unwrap();
        let mut outbox = open(&dir);
        outbox.insert(&msgs(5)).unwrap();
        let before = outbox.commits;
        let (r1, a1) = oneshot::channel();
        let (r2, a2) = oneshot::channel();
        let (r3, a3) = oneshot::channel();
        execute(
            &mut outbox,
            vec![
                Command::Ack(vec![1, 2], r1),
                Command::Ack(vec![2, 3, 99], r2),
                Command::Ack(vec![5], r3),
            ],
            None,
        );
        assert_eq!(outbox.commits - before, 0);
        assert_eq!(a1.await.unwrap().unwrap(), 2);
        assert_eq!(a2.await.unwrap().unwrap(), 1);
        assert_eq!(a3.await.unwrap().unwrap(), 1);
        assert_eq!(outbox.total_bytes(), 17 + 3);
        // One transaction: the new row and the four deletions.
        outbox.insert(&msgs(1)).unwrap();
        assert_eq!(outbox.commits - before, 1);
        let ids: Vec<i64> = (outbox.pending(&HashSet::new(), 10).unwrap())
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![4, 6]);
        let rows: i64 = outbox
            .conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    #[tokio::test]
    async fn commands_keep_their_order_around_a_run_of_acks() {
        let dir = TempDir::new().unwrap();
        let mut outbox = open(&dir);
        outbox.insert(&msgs(3)).unwrap();
        let (r1, _a1) = oneshot::channel();
        let (r2, a2) = oneshot::channel();
        let (r3, _a3) = oneshot::channel();
        let (r4, a4) = oneshot::channel();
        execute(
            &mut outbox,
            vec![
                Command::Ack(vec![1], r1),
                Command::Pending(HashSet::new(), 10, r2),
                Command::Ack(vec![2], r3),
                Command::Stats(r4),
            ],
            None,
        );
        let seen: Vec<i64> = a2.await.unwrap().unwrap().iter().map(|r| r.id).collect();
        assert_eq!(seen, vec![2, 3]);
        assert_eq!(a4.await.unwrap().unwrap()[Class::Aggregate.index()].rows, 1);
    }
}
