//! The engine under Weir's clock (`crate::clock`): no clock guard while the
//! clock is not trusted, and timers that move with the timeline's correction.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::reading::TsSource;

fn r(key: &str, ts: i64) -> Reading {
    Reading::new(Key::new(key, "m"), 1.0, ts, TsSource::Event).unwrap()
}

fn cfg() -> EngineConfig {
    EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms: 60_000,
            offset_ms: 0,
        },
        max_out_of_orderness_ms: 0,
        allowed_lateness_ms: 0,
        max_future_skew_ms: 60_000,
        max_backfill_ms: Some(3_600_000),
        idle_timeout_ms: Some(5_000),
        max_keys: 100,
        max_windows_per_key: 100,
        ..EngineConfig::default()
    }
}

const REAL: i64 = 1_780_000_000_020;

#[test]
fn an_untrusted_clock_quarantines_nothing_and_a_trusted_one_does() {
    let mut e = Engine::new(cfg());
    let mut out = Vec::new();
    // Booted in 1970: a device with a good clock is years "ahead".
    e.set_clock_trusted(false);
    e.push(r("dev", REAL), 5_000, &mut out);
    // And a reading hours "behind" a clock set wrongly ahead is not too old.
    e.push(r("old", 1_000), REAL + 86_400_000, &mut out);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Rejected { .. })),
        "{out:?}"
    );
    assert_eq!(e.key_count(), 2);
    e.set_clock_trusted(true);
    e.push(r("dev", REAL + 1_000), 5_000, &mut out);
    assert!(matches!(
        out.last(),
        Some(Output::Rejected {
            reason: RejectReason::FutureSkew,
            ..
        })
    ));
}

#[test]
fn a_clock_correction_moves_idle_deadlines_and_held_panes_with_it() {
    let mut e = Engine::new(EngineConfig {
        allowed_lateness_ms: 600_000,
        late_fire_delay_ms: 2_000,
        ..cfg()
    });
    let mut out = Vec::new();
    // The timeline reads 1970 + 100 s (not trusted yet).
    e.set_clock_trusted(false);
    e.push(r("a", REAL), 100_000, &mut out);
    e.push(r("a", REAL + 60_000), 100_500, &mut out);
    // A late reading for the fired window: its pane is held until 102_600.
    e.push(r("a", REAL + 1), 100_600, &mut out);
    out.clear();
    // The timeline takes the synchronised time: + (REAL - 100 s).
    let jump = REAL - 100_000;
    e.shift_clock(jump);
    e.tick(100_601 + jump, &mut out);
    assert!(out.is_empty(), "nothing is due 1 ms later: {out:?}");
    e.tick(102_599 + jump, &mut out);
    assert!(out.is_empty(), "{out:?}");
    e.tick(102_600 + jump, &mut out);
    assert!(
        matches!(out.as_slice(), [Output::Pane(p)] if p.revision == 1),
        "{out:?}"
    );
    out.clear();
    // Idle 5 s after the last reading's arrival (100_600), on the new timeline.
    e.tick(105_599 + jump, &mut out);
    assert!(out.is_empty(), "{out:?}");
    e.tick(105_600 + jump, &mut out);
    match out.last() {
        Some(Output::Idle(i)) => assert_eq!(i.deadline, 105_600 + jump),
        other => panic!("expected idle, got {other:?}"),
    }
}

#[test]
fn a_restart_counts_silence_from_the_restart_whatever_the_old_clock_said() {
    let mut e = Engine::new(cfg());
    let mut out = Vec::new();
    e.push(r("a", REAL), REAL, &mut out);
    let state = e.snapshot();
    // Restarted on a clock that reads 1970 (no sync yet), or a day later.
    for start in [3_000, REAL + 86_400_000] {
        let mut e = Engine::restore(cfg(), state.clone());
        e.restart_clock(start);
        e.tick(start + 4_999, &mut out);
        assert!(out.is_empty(), "{start}: {out:?}");
        e.tick(start + 5_000, &mut out);
        assert!(
            matches!(out.last(), Some(Output::Idle(i)) if i.deadline == start + 5_000),
            "{start}: {out:?}"
        );
        out.clear();
    }
}
