//! Readings per second through the engine and the detectors (threshold per
//! reading, z-score per pane), for 1 key and for 10,000 keys. Timestamps advance
//! so windows fire continuously, as in steady operation.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use weir::detect::{DetectorKind, DetectorSpec, Detectors, Glob, Severity};
use weir::engine::{Engine, EngineConfig, Output, WindowSpec};
use weir::reading::{Key, Reading, TsSource};

const BATCH: u64 = 100_000;

fn engine(max_keys: usize) -> Engine {
    Engine::new(EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms: 10_000,
            offset_ms: 0,
        },
        max_out_of_orderness_ms: 1_000,
        allowed_lateness_ms: 5_000,
        max_future_skew_ms: i64::MAX / 4,
        max_keys,
        max_windows_per_key: 16,
        ..EngineConfig::default()
    })
}

/// The default of `weir config example`: one `auto` detector on every key.
fn auto(max_keys: usize) -> Detectors {
    Detectors::new(
        vec![DetectorSpec {
            name: "unusual".into(),
            sensor: Glob::new("*"),
            metric: Glob::new("*"),
            severity: Severity::Warning,
            kind: DetectorKind::Auto {
                threshold: 0.5,
                sustain: 3,
                clear_after: 30,
            },
        }],
        max_keys,
    )
}

fn detectors(max_keys: usize) -> Detectors {
    let spec = |name: &str, kind| DetectorSpec {
        name: name.into(),
        sensor: Glob::new("*"),
        metric: Glob::new("*"),
        severity: Severity::Warning,
        kind,
    };
    Detectors::new(
        vec![
            spec(
                "hot",
                DetectorKind::Threshold {
                    high: Some(90.0),
                    low: None,
                    hysteresis: 1.0,
                    clear_after_ms: 1_000,
                },
            ),
            spec(
                "z",
                DetectorKind::ZScore {
                    alpha: 0.1,
                    threshold: 3.0,
                    hysteresis: 0.5,
                    warmup: 5,
                    clear_after: 2,
                    min_stddev: 1e-3,
                },
            ),
        ],
        max_keys,
    )
}

/// One batch: `BATCH` readings spread round-robin over `keys`, 10 ms of event
/// time apart per key, with an occasional out-of-range value.
fn run(keys: &[Key], engine: &mut Engine, det: &mut Detectors, t: &mut i64) -> usize {
    let mut out = Vec::new();
    let mut alerts = Vec::new();
    let mut emitted = 0;
    for i in 0..BATCH as usize {
        let key = &keys[i % keys.len()];
        if i % keys.len() == 0 {
            *t += 10;
        }
        let v = if i % 9973 == 0 {
            95.0
        } else {
            20.0 + (i % 17) as f64 * 0.1
        };
        let r = Reading {
            key: key.clone(),
            value: v,
            ts: *t,
            ts_source: TsSource::Event,
        };
        det.on_reading(&r, &mut alerts);
        engine.push(r, *t, &mut out);
        for o in out.drain(..) {
            if let Output::Pane(p) = o {
                det.on_pane(&p, &mut alerts);
                emitted += 1;
            }
        }
        emitted += alerts.len();
        alerts.clear();
    }
    emitted
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine+detectors");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(20);
    for n in [1usize, 10_000] {
        let keys: Vec<Key> = (0..n)
            .map(|i| Key::new(format!("s{i}"), "temperature"))
            .collect();
        for (name, make) in [
            ("keys", detectors as fn(usize) -> Detectors),
            ("auto/keys", auto),
        ] {
            let mut e = engine(n);
            let mut d = make(n);
            let mut t = 1_700_000_000_000i64;
            // Warm up: every key has state and a baseline, as in steady operation.
            run(&keys, &mut e, &mut d, &mut t);
            if name == "auto/keys" {
                eprintln!(
                    "auto: {} bytes of detector state per key ({n} keys)",
                    d.statistical_state_bytes() / n
                );
            }
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(run(&keys, &mut e, &mut d, &mut t)));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
