//! Readings per second through the event-time engine alone, for each window
//! kind, with 1, 1,000 and 100,000 keys. Timestamps advance so that windows
//! fire and close continuously, as in steady operation; every key has state
//! before measuring.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use weir::engine::{Engine, EngineConfig, Output, WindowSpec};
use weir::reading::{Key, Reading, TsSource};

const BATCH: u64 = 100_000;

/// The window kinds benchmarked, with the settings named in benches/README.md.
pub fn kinds() -> [(&'static str, WindowSpec); 3] {
    [
        (
            "tumbling",
            WindowSpec::Tumbling {
                size_ms: 10_000,
                offset_ms: 0,
            },
        ),
        (
            "hopping",
            WindowSpec::Hopping {
                size_ms: 10_000,
                slide_ms: 5_000,
                offset_ms: 0,
            },
        ),
        (
            "session",
            WindowSpec::Session {
                gap_ms: 5_000,
                max_length_ms: 60_000,
                offset_ms: 0,
            },
        ),
    ]
}

fn engine(window: WindowSpec, max_keys: usize) -> Engine {
    Engine::new(EngineConfig {
        window,
        max_out_of_orderness_ms: 1_000,
        allowed_lateness_ms: 5_000,
        max_future_skew_ms: i64::MAX / 4,
        max_keys,
        max_windows_per_key: 16,
        ..EngineConfig::default()
    })
}

/// `BATCH` readings round-robin over `keys`, each key 10 ms of event time
/// after its previous reading (so a session never pauses: it is cut at max_length).
fn run(keys: &[Key], e: &mut Engine, t: &mut i64, out: &mut Vec<Output>) -> usize {
    let mut emitted = 0;
    for i in 0..BATCH as usize {
        let k = i % keys.len();
        if k == 0 {
            *t += 10;
        }
        let r = Reading {
            key: keys[k].clone(),
            value: 20.0 + (i % 17) as f64 * 0.1,
            ts: *t,
            ts_source: TsSource::Event,
        };
        e.push(r, *t, out);
        emitted += out.len();
        out.clear();
    }
    emitted
}

fn bench(c: &mut Criterion) {
    for (name, window) in kinds() {
        let mut g = c.benchmark_group(format!("engine/{name}"));
        g.throughput(Throughput::Elements(BATCH));
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        for n in [1usize, 1_000, 100_000] {
            let keys: Vec<Key> = (0..n)
                .map(|i| Key::new(format!("sensor-{i:06}"), "temperature"))
                .collect();
            let mut e = engine(window.clone(), n);
            let mut t = 1_700_000_000_000i64;
            let mut out = Vec::new();
            run(&keys, &mut e, &mut t, &mut out);
            g.bench_with_input(BenchmarkId::new("keys", n), &n, |b, _| {
                b.iter(|| black_box(run(&keys, &mut e, &mut t, &mut out)));
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
