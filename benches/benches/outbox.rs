//! Outbox throughput on a real SQLite file (WAL, synchronous=NORMAL) in a temporary directory:
//! insert with commit, ack (rows deleted per second) and pending(limit 64).
//!
//! The budget is large enough that no insert evicts: these figures are the steady-state cost
//! of the transaction, not of the eviction policy.
//!
//! `outbox_commit_panes` is the agent's own path: realistic JSON panes (about 480 bytes, each
//! with its supersede key, so every insert also looks up older revisions) committed through
//! the `OutboxHandle` (the dedicated outbox thread) in batches as the engine task hands them
//! over: one batch per engine turn, or per checkpoint.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;
use weir::outbox::{Class, NewMessage, Outbox, OutboxConfig, OutboxHandle};
use weir_benches::pane_message;

/// About 200 bytes per message: a 36-byte topic and a 164-byte payload, like a JSON pane.
fn message(i: i64) -> NewMessage {
    let class = Class::ALL[(i % 3) as usize];
    NewMessage {
        class,
        topic: format!("weir/pi-greenhouse/agg/bme280/t{:06}", i % 1_000_000),
        payload: vec![b'{'; 164],
        supersede_key: None,
        created_ms: 1_700_000_000_000 + i,
    }
}

fn open(dir: &TempDir) -> Outbox {
    Outbox::open(&OutboxConfig {
        path: dir.path().join("outbox.db"),
        max_bytes: 1 << 40,
    })
    .unwrap()
}

fn fill(outbox: &mut Outbox, next: &mut i64, rows: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(rows);
    let batch: Vec<NewMessage> = (0..rows as i64).map(|i| message(*next + i)).collect();
    *next += rows as i64;
    for chunk in batch.chunks(1000) {
        ids.extend(outbox.insert(chunk).unwrap().ids);
    }
    ids
}

fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox_insert");
    for batch in [1usize, 100] {
        let dir = TempDir::new().unwrap();
        let mut outbox = open(&dir);
        let mut next = 0i64;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("commit_batch", batch), &batch, |b, &n| {
            b.iter_batched(
                || {
                    let msgs: Vec<NewMessage> = (0..n as i64).map(|i| message(next + i)).collect();
                    next += n as i64;
                    msgs
                },
                |msgs| outbox.insert(&msgs).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn commit_panes(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox_commit_panes");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for batch in [1usize, 64, 512, 4096] {
        let dir = TempDir::new().unwrap();
        let (handle, _thread) = OutboxHandle::spawn(open(&dir));
        let mut next = 0u64;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("via_handle", batch), &batch, |b, &n| {
            b.iter_batched(
                || {
                    let msgs: Vec<NewMessage> = (next..next + n as u64).map(pane_message).collect();
                    next += n as u64;
                    msgs
                },
                |msgs| {
                    let batch = weir::outbox::Batch::new(msgs, None);
                    rt.block_on(handle.commit(batch)).map_err(|e| e.0).unwrap()
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox_ack");
    for batch in [1usize, 100] {
        let dir = TempDir::new().unwrap();
        let mut outbox = open(&dir);
        let mut next = 0i64;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("commit_batch", batch), &batch, |b, &n| {
            b.iter_custom(|iters| {
                // Rows to acknowledge are inserted outside the timed part.
                let ids = fill(&mut outbox, &mut next, iters as usize * n);
                let start = Instant::now();
                for chunk in ids.chunks(n) {
                    assert_eq!(outbox.ack(chunk).unwrap(), chunk.len());
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn pending(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox_pending");
    let dir = TempDir::new().unwrap();
    let mut outbox = open(&dir);
    let mut next = 0i64;
    let ids = fill(&mut outbox, &mut next, 10_000);
    group.throughput(Throughput::Elements(64));
    group.bench_function("limit_64_of_10000", |b| {
        let none = HashSet::new();
        b.iter(|| assert_eq!(outbox.pending(&none, 64).unwrap().len(), 64))
    });
    // The uplink's usual call: the first 64 alerts are in flight and must be skipped.
    let mut alerts: Vec<i64> = ids.iter().copied().filter(|id| (id - 1) % 3 == 0).collect();
    alerts.truncate(64);
    let in_flight: HashSet<i64> = alerts.into_iter().collect();
    group.bench_function("limit_64_of_10000_skipping_64_in_flight", |b| {
        b.iter(|| assert_eq!(outbox.pending(&in_flight, 64).unwrap().len(), 64))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = insert, commit_panes, ack, pending
}
criterion_main!(benches);
