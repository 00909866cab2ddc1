//! The outbox against an in-memory model under random insert, ack, pending (with an in-flight
//! exclude set) and crash-and-reopen: after every step the file's pending order and contents,
//! byte total and per-class stats equal the model's.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use tempfile::TempDir;

use super::*;

const MAX_BYTES: u64 = 600;

#[derive(Clone, Debug)]
struct ModelRow {
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
}

/// The specification in its plainest form: a map from id to row, scanned in full each time.
#[derive(Default)]
struct Model {
    rows: BTreeMap<i64, ModelRow>,
    last_id: i64,
}

impl Model {
    fn total(&self) -> u64 {
        self.rows.values().map(ModelRow::bytes).sum()
    }

    fn insert(&mut self, msgs: &[NewMessage]) -> InsertReport {
        let mut report = InsertReport::default();
        let mut ids = Vec::new();
        for m in msgs {
            let row = ModelRow {
                class: m.class,
                topic: m.topic.clone(),
                payload: m.payload.clone(),
                key: m.supersede_key.clone(),
                created_ms: m.created_ms,
            };
            let ci = m.class.index();
            if row.bytes() > MAX_BYTES {
                report.evicted[ci] += 1;
                continue;
            }
            let older: Vec<i64> = self
                .rows
                .iter()
                .filter(|(_, r)| row.key.is_some() && r.key == row.key)
                .map(|(id, _)| *id)
                .collect();
            let older_bytes: u64 = older.iter().map(|id| self.rows[id].bytes()).sum();
            let need = (self.total() - older_bytes + row.bytes()).saturating_sub(MAX_BYTES);
            let evictable: u64 = self
                .rows
                .iter()
                .filter(|(id, r)| r.class >= m.class && !older.contains(id))
                .map(|(_, r)| r.bytes())
                .sum();
            if need > evictable {
                report.evicted[ci] += 1;
                continue;
            }
            for id in &older {
                self.rows.remove(id);
            }
            report.superseded += older.len() as u64;
            let mut freed = 0;
            while freed < need {
                // Lowest priority first, oldest first within it.
                let (&id, victim) = self
                    .rows
                    .iter()
                    .filter(|(_, r)| r.class >= m.class)
                    .max_by_key(|(id, r)| (r.class, -**id))
                    .unwrap();
                freed += victim.bytes();
                report.evicted[victim.class.index()] += 1;
                self.rows.remove(&id);
            }
            self.last_id += 1;
            self.rows.insert(self.last_id, row);
            ids.push(self.last_id);
        }
        ids.retain(|id| self.rows.contains_key(id));
        report.ids = ids;
        report
    }

    fn pending(&self, exclude: &HashSet<i64>, limit: usize) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .rows
            .iter()
            .filter(|(id, _)| !exclude.contains(id))
            .map(|(id, r)| Row {
                id: *id,
                class: r.class,
                topic: r.topic.clone(),
                payload: r.payload.clone(),
                created_ms: r.created_ms,
            })
            .collect();
        rows.sort_by_key(|r| (r.class, r.id));
        rows.truncate(limit);
        rows
    }

    fn ack(&mut self, ids: &[i64]) -> usize {
        ids.iter()
            .filter(|id| self.rows.remove(id).is_some())
            .count()
    }

    fn stats(&self) -> [ClassStats; 3] {
        let mut out: [ClassStats; 3] = Default::default();
        for r in self.rows.values() {
            let s = &mut out[r.class.index()];
            s.rows += 1;
            s.bytes += r.bytes();
            s.oldest_created_ms = Some(
                s.oldest_created_ms
                    .map_or(r.created_ms, |o| o.min(r.created_ms)),
            );
        }
        out
    }

    /// Picks ids from `selectors`: most hit live rows, some miss (never existed or gone).
    fn pick(&self, selectors: &[u16]) -> Vec<i64> {
        let live: Vec<i64> = self.rows.keys().copied().collect();
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
    Ack(Vec<u16>),
    Pending(Vec<u16>, usize),
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
        2 => prop::collection::vec(any::<u16>(), 0..4).prop_map(Op::Ack),
        2 => (prop::collection::vec(any::<u16>(), 0..4), 0usize..8)
            .prop_map(|(s, l)| Op::Pending(s, l)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_outbox_matches_the_model_under_insert_ack_pending_and_crash(
        ops in prop::collection::vec(op(), 1..40)
    ) {
        let dir = TempDir::new().unwrap();
        let cfg = OutboxConfig { path: dir.path().join("outbox.db"), max_bytes: MAX_BYTES };
        let mut outbox = Some(Outbox::open(&cfg).unwrap());
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Insert(msgs) => {
                    let got = outbox.as_mut().unwrap().insert(&msgs).unwrap();
                    prop_assert_eq!(got, model.insert(&msgs));
                }
                Op::Ack(selectors) => {
                    let ids = model.pick(&selectors);
                    let got = outbox.as_mut().unwrap().ack(&ids).unwrap();
                    prop_assert_eq!(got, model.ack(&ids));
                }
                Op::Pending(selectors, limit) => {
                    let exclude: HashSet<i64> = model.pick(&selectors).into_iter().collect();
                    let got = outbox.as_ref().unwrap().pending(&exclude, limit).unwrap();
                    prop_assert_eq!(got, model.pending(&exclude, limit));
                }
                Op::Reopen => {
                    // The "crash": no shutdown call, just drop and open the same file.
                    drop(outbox.take());
                    outbox = Some(Outbox::open(&cfg).unwrap());
                }
            }
            let ob = outbox.as_ref().unwrap();
            prop_assert_eq!(ob.pending(&HashSet::new(), usize::MAX).unwrap(),
                            model.pending(&HashSet::new(), usize::MAX));
            prop_assert_eq!(ob.total_bytes(), model.total());
            prop_assert!(ob.total_bytes() <= MAX_BYTES);
            prop_assert_eq!(ob.stats().unwrap(), model.stats());
        }
    }
}
