//! The counters' balance: every reading handed to the engine is counted exactly
//! once as windowed, late or rejected.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::*;
use crate::detect::Detectors;
use crate::engine::{EngineConfig, Scope, WindowSpec};
use crate::reading::{Key, TsSource};

fn processor(counters: Arc<Counters>) -> Processor {
    let engine = Engine::new(EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms: 10,
            offset_ms: 0,
        },
        scope: Scope::PerKey,
        max_out_of_orderness_ms: 3,
        allowed_lateness_ms: 8,
        max_future_skew_ms: 1_000,
        max_backfill_ms: None,
        idle_timeout_ms: None,
        late_fire_delay_ms: 0,
        quantiles: false,
        max_keys: 2,
        max_windows_per_key: 4,
    });
    let wire = Wire::with_boot_id("dev", "weir/dev", "boot");
    Processor::new(engine, Detectors::new(Vec::new(), 2), wire, counters)
}

fn reading(sensor: &str, ts: i64) -> Input {
    Input::Reading(Reading::new(Key::new(sensor, "t"), 1.0, ts, TsSource::Event).unwrap())
}

#[test]
fn readings_equal_windowed_plus_late_plus_rejected() {
    let c = Arc::new(Counters::default());
    let mut p = processor(c.clone());
    let mut msgs = Vec::new();
    // a: in order, then out of order within lateness, then far too late.
    for ts in [100, 105, 120, 112, 50, 121] {
        p.input(reading("a", ts), 200, &mut msgs);
    }
    // b fits under max_keys = 2; c and d do not; one reading from the future.
    for (s, ts) in [("b", 100), ("c", 100), ("d", 100), ("b", 5_000)] {
        p.input(reading(s, ts), 200, &mut msgs);
    }
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    assert_eq!(g(&c.readings), 10);
    assert_eq!(g(&c.late), 1, "ts 50 is past window end + lateness");
    assert_eq!(c.reason("rejected", "key_limit"), 2);
    assert_eq!(c.reason("rejected", "future_skew"), 1);
    assert_eq!(g(&c.windowed), 6);
}
