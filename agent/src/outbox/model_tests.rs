//! The outbox on a real SQLite file, driven the way the uplink drives it, against a
//! model of plain queues.
//!
//! Operations, in random order: insert (classes, supersede keys, a budget small enough
//! that eviction is common), publish (pending rows not in flight are handed to the
//! uplink's real [`Inflight`] bookkeeping, which numbers them with packet ids as the
//! event loop would, possibly lagging), PUBACK of an in-flight packet id (the row it
//! carries is deleted), a stray or duplicate acknowledgement, reconnect (every
//! unacknowledged row is pending again), crash (the files exactly as a killed process
//! leaves them: copied while the connection is open, then opened elsewhere) and a clean
//! reopen. After every step the file's rows, order, bytes and stats equal the model's,
//! the in-flight set equals the model's, and the budget holds.
#![allow(clippy::unwrap_used)]

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tempfile::TempDir;

use super::*;
use crate::uplink::inflight::{Inflight, Tag};

const MAX_BYTES: u64 = 600;
/// Packet ids in use at most (the uplink's `max_inflight`); small, so ids are reused.
const MAX_INFLIGHT: usize = 4;

#[derive(Clone, Debug)]
struct ModelRow {
    id: i64,
    class: Class,
    topic: String,
    payload: Vec<u8>,
    key: Option<String>,
    created_ms: i64,
}

impl ModelRow {
    fn bytes(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }

    fn row(&self) -> Row {
        Row {
            id: self.id,
            class: self.class,
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            created_ms: self.created_ms,
        }
    }
}

/// The specification: one queue per class in insertion order (drain from the front of
/// the highest priority, evict from the front of the lowest), and the uplink's side as
/// a queue of rows handed to the client but not yet numbered, plus numbered ones.
#[derive(Default)]
struct Model {
    queues: [VecDeque<ModelRow>; 3],
    last_id: i64,
    /// Row ids published, not yet given a packet id by the event loop, in order.
    unwired: VecDeque<i64>,
    /// (packet id, row id) on the wire, not yet acknowledged.
    wired: Vec<(u16, i64)>,
    next_pkid: u16,
    /// Rows acknowledged whose deletion is not written yet: a crash brings them back.
    unflushed: Vec<ModelRow>,
}

impl Model {
    fn rows(&self) -> impl Iterator<Item = &ModelRow> {
        self.queues.iter().flatten()
    }

    fn total(&self) -> u64 {
        self.rows().map(ModelRow::bytes).sum()
    }

    fn remove(&mut self, pred: impl Fn(&ModelRow) -> bool) -> Vec<ModelRow> {
        let mut gone = Vec::new();
        for q in &mut self.queues {
            let (out, keep): (VecDeque<_>, VecDeque<_>) = q.drain(..).partition(|r| pred(r));
            *q = keep;
            gone.extend(out);
        }
        gone
    }

    fn insert(&mut self, msgs: &[NewMessage]) -> InsertReport {
        let mut report = InsertReport::default();
        let mut ids = Vec::new();
        for m in msgs {
            let ci = m.class.index();
            if m.bytes() > MAX_BYTES {
                report.evicted[ci] += 1;
                continue;
            }
            let same_key = |r: &ModelRow| m.supersede_key.is_some() && r.key == m.supersede_key;
            let older: u64 = self
                .rows()
                .filter(|r| same_key(r))
                .map(ModelRow::bytes)
                .sum();
            let need = (self.total() - older + m.bytes()).saturating_sub(MAX_BYTES);
            let evictable: u64 = self.queues[ci..]
                .iter()
                .flatten()
                .filter(|r| !same_key(r))
                .map(ModelRow::bytes)
                .sum();
            if need > evictable {
                report.evicted[ci] += 1;
                continue;
            }
            report.superseded += self.remove(same_key).len() as u64;
            let mut freed = 0;
            for class in (ci..3).rev() {
                while freed < need {
                    let Some(victim) = self.queues[class].pop_front() else {
                        break;
                    };
                    freed += victim.bytes();
                    report.evicted[class] += 1;
                }
            }
            self.last_id += 1;
            self.queues[ci].push_back(ModelRow {
                id: self.last_id,
                class: m.class,
                topic: m.topic.clone(),
                payload: m.payload.clone(),
                key: m.supersede_key.clone(),
                created_ms: m.created_ms,
            });
            ids.push(self.last_id);
        }
        ids.retain(|id| self.rows().any(|r| r.id == *id));
        report.ids = ids;
        report
    }

    fn in_flight(&self) -> HashSet<i64> {
        self.unwired
            .iter()
            .copied()
            .chain(self.wired.iter().map(|w| w.1))
            .collect()
    }

    fn pending(&self, exclude: &HashSet<i64>, limit: usize) -> Vec<Row> {
        self.rows()
            .filter(|r| !exclude.contains(&r.id))
            .take(limit)
            .map(ModelRow::row)
            .collect()
    }

    fn ack(&mut self, ids: &[i64]) -> usize {
        let mut n = 0;
        for id in ids {
            let gone = self.remove(|r| r.id == *id);
            n += gone.len();
            self.unflushed.extend(gone);
        }
        n
    }

    /// A crash: acknowledged rows whose deletion was not written are pending again.
    fn crash(&mut self) {
        for r in self.unflushed.drain(..) {
            let q = &mut self.queues[r.class.index()];
            let at = q.iter().position(|o| o.id > r.id).unwrap_or(q.len());
            q.insert(at, r);
        }
    }

    fn stats(&self) -> [ClassStats; 3] {
        self.queues.clone().map(|q| ClassStats {
            rows: q.len() as u64,
            bytes: q.iter().map(ModelRow::bytes).sum(),
            oldest_created_ms: q.iter().map(|r| r.created_ms).min(),
        })
    }

    /// The event loop numbers the oldest un-numbered publish: the next packet id, in
    /// cyclic order, that is not in use (as rumqttc does).
    fn wire_one(&mut self) -> Option<(u16, i64)> {
        let row = self.unwired.pop_front()?;
        loop {
            self.next_pkid = self.next_pkid % MAX_INFLIGHT as u16 + 1;
            if !self.wired.iter().any(|w| w.0 == self.next_pkid) {
                break;
            }
        }
        self.wired.push((self.next_pkid, row));
        Some((self.next_pkid, row))
    }

    /// Forgets the connection: nothing is in flight, every row is pending again.
    fn disconnect(&mut self) {
        self.unwired.clear();
        self.wired.clear();
        self.next_pkid = 0;
    }

    /// Picks ids from `selectors`: most hit live rows, some miss (never existed or gone).
    fn pick(&self, selectors: &[u16]) -> Vec<i64> {
        let live: Vec<i64> = self.rows().map(|r| r.id).collect();
        selectors
            .iter()
            .map(|&s| {
                let s = usize::from(s);
                match live.get(s % (live.len() + 2)) {
                    Some(id) => *id,
                    None => (s % 40) as i64 - 5,
                }
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(Vec<NewMessage>),
    /// Publish up to n pending rows (within the in-flight limit); the event loop then
    /// numbers all but `lag` of the un-numbered ones.
    Publish(usize, usize),
    /// PUBACK of the in-flight packet picked by the index.
    Puback(prop::sample::Index),
    /// A PUBACK for a packet id not in flight (stray, or a duplicate).
    StrayPuback(u16),
    /// An ack of arbitrary ids straight to the outbox (deleted or never existing ones).
    Ack(Vec<u16>),
    Pending(Vec<u16>, usize),
    Reconnect,
    Crash,
    Reopen,
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Alert),
        Just(Class::Aggregate),
        Just(Class::Diagnostic)
    ]
}

fn message() -> impl Strategy<Value = NewMessage> {
    (
        class(),
        0u8..6,
        prop::collection::vec(any::<u8>(), 0..250),
        prop::option::weighted(0.5, 0u8..4),
        -1000i64..1000,
    )
        .prop_map(|(class, t, payload, key, created_ms)| NewMessage {
            class,
            topic: format!("weir/d/{}/{t}", class.as_str()),
            payload,
            supersede_key: key.map(|k| format!("w{k}")),
            created_ms,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(message(), 0..5).prop_map(Op::Insert),
        3 => (1usize..4, 0usize..3).prop_map(|(n, lag)| Op::Publish(n, lag)),
        3 => any::<prop::sample::Index>().prop_map(Op::Puback),
        1 => any::<u16>().prop_map(Op::StrayPuback),
        1 => prop::collection::vec(any::<u16>(), 0..4).prop_map(Op::Ack),
        1 => (prop::collection::vec(any::<u16>(), 0..4), 0usize..8)
            .prop_map(|(s, l)| Op::Pending(s, l)),
        1 => Just(Op::Reconnect),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

/// What a killed process leaves on disk: the database and its WAL as they are now
/// (every committed transaction is in them; nothing is checkpointed or closed),
/// copied into a fresh directory. The shared-memory index is rebuilt at open.
fn crash_copy(from: &Path, dir: &Path, n: usize) -> PathBuf {
    let to = dir.join(format!("crash-{n}.db"));
    std::fs::copy(from, &to).unwrap();
    let wal = PathBuf::from(format!("{}-wal", from.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display())).unwrap();
    }
    to
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_outbox_and_inflight_bookkeeping_match_the_model_under_publish_ack_reconnect_and_crash(
        ops in prop::collection::vec(op(), 1..48)
    ) {
        let dir = TempDir::new().unwrap();
        let mut cfg = OutboxConfig { path: dir.path().join("outbox.db"), max_bytes: MAX_BYTES };
        let mut outbox = Some(Outbox::open(&cfg).unwrap());
        let mut inflight = Inflight::new();
        let mut model = Model::default();
        let mut crashes = 0;
        for op in ops {
            let ob = outbox.as_mut().unwrap();
            match op {
                Op::Insert(msgs) => {
                    let got = ob.insert(&msgs).unwrap();
                    prop_assert_eq!(got, model.insert(&msgs));
                    // The insert's transaction carried the waiting deletions.
                    if !msgs.is_empty() {
                        model.unflushed.clear();
                    }
                }
                Op::Publish(n, lag) => {
                    let room = MAX_INFLIGHT.saturating_sub(inflight.len());
                    let rows = ob.pending(inflight.rows(), n.min(room)).unwrap();
                    prop_assert_eq!(&rows, &model.pending(&model.in_flight(), n.min(room)));
                    for row in rows {
                        inflight.sent(Tag::Row(row.id));
                        model.unwired.push_back(row.id);
                    }
                    while model.unwired.len() > lag {
                        let (pkid, _) = model.wire_one().unwrap();
                        prop_assert_eq!(inflight.on_outgoing_publish(pkid), Ok(()));
                    }
                }
                Op::Puback(pick) => {
                    if !model.wired.is_empty() {
                        let (pkid, row) = model.wired.remove(pick.index(model.wired.len()));
                        prop_assert_eq!(inflight.on_puback(pkid), Some(row));
                        // The row may be gone already (superseded or evicted while in
                        // flight): then the ack deletes nothing.
                        prop_assert_eq!(ob.ack(&[row]).unwrap(), model.ack(&[row]));
                    }
                }
                Op::StrayPuback(pkid) => {
                    if !model.wired.iter().any(|w| w.0 == pkid) {
                        prop_assert_eq!(inflight.on_puback(pkid), None);
                    }
                }
                Op::Ack(selectors) => {
                    let ids = model.pick(&selectors);
                    prop_assert_eq!(ob.ack(&ids).unwrap(), model.ack(&ids));
                }
                Op::Pending(selectors, limit) => {
                    let exclude: HashSet<i64> = model.pick(&selectors).into_iter().collect();
                    prop_assert_eq!(ob.pending(&exclude, limit).unwrap(), model.pending(&exclude, limit));
                }
                Op::Reconnect => {
                    inflight.reset();
                    model.disconnect();
                    // Every unacknowledged row is pending again, first in line as before.
                    prop_assert_eq!(
                        ob.pending(inflight.rows(), usize::MAX).unwrap(),
                        model.pending(&HashSet::new(), usize::MAX)
                    );
                }
                Op::Crash => {
                    crashes += 1;
                    let copy = crash_copy(&cfg.path, dir.path(), crashes);
                    drop(outbox.take());
                    cfg.path = copy;
                    outbox = Some(Outbox::open(&cfg).unwrap());
                    inflight = Inflight::new();
                    model.disconnect();
                    model.crash();
                }
                Op::Reopen => {
                    // A clean close writes the waiting deletions.
                    model.unflushed.clear();
                    drop(outbox.take());
                    outbox = Some(Outbox::open(&cfg).unwrap());
                    inflight = Inflight::new();
                    model.disconnect();
                }
            }
            let ob = outbox.as_ref().unwrap();
            prop_assert_eq!(ob.pending(&HashSet::new(), usize::MAX).unwrap(),
                            model.pending(&HashSet::new(), usize::MAX));
            prop_assert_eq!(inflight.rows(), &model.in_flight());
            prop_assert_eq!(inflight.len(), model.unwired.len() + model.wired.len());
            prop_assert_eq!(ob.total_bytes(), model.total());
            prop_assert!(ob.total_bytes() <= MAX_BYTES);
            prop_assert_eq!(ob.stats().unwrap(), model.stats());
        }
    }
}
