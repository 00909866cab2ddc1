//! Bytes of memory per key: resident memory before and after 100,000 keys
//! take state, for each window kind, with and without quantiles. Prints a
//! table; run with `cargo bench -p weir-benches --bench memory`.

#![allow(missing_docs)]

use weir::engine::{Engine, EngineConfig, WindowSpec};
use weir::reading::{Key, Reading, TsSource};

const KEYS: usize = 100_000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // Each case runs in a fresh process: freed memory stays in the allocator
    // and would hide the next case's growth.
    let case: Option<usize> = std::env::var("WEIR_MEMORY_CASE")
        .ok()
        .and_then(|c| c.parse().ok());
    let Some(case) = case else {
        println!("| window | quantiles | bytes per key (RSS delta / {KEYS} keys) |");
        println!("|---|---|---|");
        for case in 0..6 {
            let exe = std::env::current_exe().unwrap_or_default();
            let out = std::process::Command::new(exe)
                .env("WEIR_MEMORY_CASE", case.to_string())
                .output();
            match out {
                Ok(o) => print!("{}", String::from_utf8_lossy(&o.stdout)),
                Err(e) => println!("case {case}: {e}"),
            }
        }
        return;
    };
    let kinds = [
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
    ];
    // Keys are built first so that only the engine's own memory is measured.
    let keys: Vec<Key> = (0..KEYS)
        .map(|i| Key::new(format!("sensor-{i:06}"), "temperature"))
        .collect();
    let cases = kinds
        .into_iter()
        .flat_map(|(name, w)| [(name, w.clone(), false), (name, w, true)]);
    if let Some((name, window, quantiles)) = cases.into_iter().nth(case) {
        {
            let before = rss_kib();
            let mut e = Engine::new(EngineConfig {
                window: window.clone(),
                max_out_of_orderness_ms: 1_000,
                allowed_lateness_ms: 5_000,
                max_future_skew_ms: i64::MAX / 4,
                max_keys: KEYS,
                quantiles,
                ..EngineConfig::default()
            });
            let mut out = Vec::new();
            // Ten readings per key over 10 s, with spread values: steady state,
            // windows open and (with quantiles) several sketch buckets used.
            for step in 0..10i64 {
                for (i, k) in keys.iter().enumerate() {
                    let ts = 1_700_000_000_000 + step * 1_000;
                    let v = 20.0 + ((i as i64 + step) % 10) as f64;
                    let r = Reading {
                        key: k.clone(),
                        value: v,
                        ts,
                        ts_source: TsSource::Event,
                    };
                    e.push(r, ts, &mut out);
                    out.clear();
                }
            }
            let after = rss_kib();
            let per_key = (after.saturating_sub(before)) as f64 * 1024.0 / KEYS as f64;
            println!("| {name} | {quantiles} | {per_key:.0} |");
            assert_eq!(e.key_count(), KEYS);
            drop(e);
        }
    }
}
