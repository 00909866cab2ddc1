//! The outbox's memory tier: rows produced since the last write, and rows on disk that were
//! acknowledged (or superseded) since then. Both exist so that an SD card sees one transaction
//! per checkpoint instead of one per insert and one per group of PUBACKs (`docs/storage.md`).
//!
//! Invariants:
//! - A staged row has an id above every earlier staged id and above every id on disk (except
//!   the messages of a held batch retried after more rows were staged, see `Batch`); it is
//!   pending exactly like a stored row. It reaches the disk with the next write
//!   ([`super::Outbox::commit`] or [`super::Outbox::insert`]; a commit takes the rows staged
//!   before its first attempt) unless it was acknowledged first: then it never does.
//! - A row in `delivered` is on disk but no longer pending: `pending` and `stats` leave it out
//!   and the next write transaction deletes it first. Losing this set (a crash, a power cut)
//!   only makes those rows pending again: a resend, which consumers drop by `msg_id`.
//! - The set is bounded: it is written out at [`MAX_DELIVERED`] rows and after
//!   [`DELETE_DELAY`], whichever comes first, if no other write took it along before.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Class, NewMessage, Row};

/// Acknowledged rows kept before their deletion is written on its own.
pub(super) const MAX_DELIVERED: usize = 4096;
/// Longest an acknowledged row waits for its deletion when no checkpoint takes it along
/// (an idle engine while a backlog drains). What a power cut may resend, at most.
pub(super) const DELETE_DELAY: Duration = Duration::from_secs(10);

/// A row produced and not yet written.
#[derive(Debug)]
pub(super) struct Staged {
    pub id: i64,
    pub msg: NewMessage,
}

impl Staged {
    pub fn row(&self) -> Row {
        Row {
            id: self.id,
            class: self.msg.class,
            topic: self.msg.topic.clone(),
            payload: self.msg.payload.clone(),
            created_ms: self.msg.created_ms,
        }
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Memory {
    /// In id order.
    pub staged: Vec<Staged>,
    /// Rows on disk to delete: id -> (class, bytes).
    pub delivered: HashMap<i64, (Class, u64)>,
    /// When the oldest entry of `delivered` was added.
    pub delivered_since: Option<Instant>,
}

impl Memory {
    /// Marks a stored row for deletion.
    pub fn deliver(&mut self, id: i64, class: Class, bytes: u64, now: Instant) {
        self.delivered.insert(id, (class, bytes));
        self.delivered_since.get_or_insert(now);
    }

    /// Removes a staged row; whether it was there.
    pub fn take_staged(&mut self, id: i64) -> bool {
        match self.staged.binary_search_by_key(&id, |s| s.id) {
            Ok(i) => {
                self.staged.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes the staged rows carrying `key`; how many.
    pub fn supersede_staged(&mut self, key: &str) -> u64 {
        let before = self.staged.len();
        self.staged
            .retain(|s| s.msg.supersede_key.as_deref() != Some(key));
        (before - self.staged.len()) as u64
    }

    /// Bytes per class of the rows waiting for deletion.
    pub fn delivered_bytes(&self) -> [u64; 3] {
        let mut out = [0u64; 3];
        for (class, bytes) in self.delivered.values() {
            out[class.index()] += bytes;
        }
        out
    }

    /// Whether the deletions should be written now, on their own.
    pub fn flush_due(&self, now: Instant) -> bool {
        self.delivered.len() >= MAX_DELIVERED
            || self
                .delivered_since
                .is_some_and(|t| now.saturating_duration_since(t) >= DELETE_DELAY)
    }

    /// How long until [`Memory::flush_due`] turns true by age; `None` when nothing waits.
    pub fn flush_in(&self, now: Instant) -> Option<Duration> {
        self.delivered_since
            .map(|t| DELETE_DELAY.saturating_sub(now.saturating_duration_since(t)))
    }

    /// The deletions were written.
    pub fn deleted(&mut self) {
        self.delivered.clear();
        self.delivered_since = None;
    }
}

/// Merges two lists already in (class, id) order, keeping the first `limit`.
pub(super) fn merge(a: Vec<Row>, b: Vec<Row>, limit: usize) -> Vec<Row> {
    let mut out = Vec::with_capacity((a.len() + b.len()).min(limit));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < limit {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if (x.class, x.id) <= (y.class, y.id) => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => None,
        };
        match next {
            Some(r) => out.push(r),
            None => break,
        }
    }
    out
}
