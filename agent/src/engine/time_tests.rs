//! Wall-clock behaviour (idle keys, held late panes, clock guards), the
//! global scope's worked example from `docs/time.md`, and the scenarios of the
//! issue: a device replaying an hour of buffered readings, and one whose clock
//! jumps a year ahead.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::reading::TsSource;

fn r(key: &str, ts: i64, value: f64) -> Reading {
    Reading::new(Key::new(key, "m"), value, ts, TsSource::Event).unwrap()
}

fn tumbling(size_ms: i64, d: i64, l: i64) -> EngineConfig {
    EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms,
            offset_ms: 0,
        },
        max_out_of_orderness_ms: d,
        allowed_lateness_ms: l,
        max_future_skew_ms: 60_000,
        idle_timeout_ms: None,
        max_keys: 100,
        max_windows_per_key: 100,
        ..EngineConfig::default()
    }
}

fn panes(out: &[Output]) -> Vec<&Pane> {
    out.iter()
        .filter_map(|o| match o {
            Output::Pane(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// `(key, start, revision, timing, count, sum)` of every pane, for compact asserts.
fn summary(out: &[Output]) -> Vec<(String, i64, u32, Timing, u64, f64)> {
    panes(out)
        .iter()
        .map(|p| {
            (
                p.key.sensor.to_string(),
                p.start,
                p.revision,
                p.timing,
                p.agg.count,
                p.agg.sum,
            )
        })
        .collect()
}

#[test]
fn a_silent_key_fires_its_open_window_by_the_wall_clock_and_is_reported_once() {
    let mut e = Engine::new(EngineConfig {
        idle_timeout_ms: Some(5_000),
        ..tumbling(60_000, 1_000, 0)
    });
    let mut out = Vec::new();
    e.push(r("a", 10_000, 2.0), 100_000, &mut out);
    e.push(r("a", 20_000, 3.0), 101_000, &mut out);
    e.tick(105_999, &mut out);
    assert!(out.is_empty(), "not yet: the last reading came at 101000");
    e.tick(106_000, &mut out);
    assert_eq!(
        summary(&out),
        vec![("a".into(), 0, 0, Timing::OnTime, 2, 5.0)]
    );
    match &out[1] {
        Output::Idle(i) => assert_eq!(
            (i.last_ts, i.last_arrival, i.deadline),
            (20_000, 101_000, 106_000)
        ),
        other => panic!("expected idle, got {other:?}"),
    }
    out.clear();
    e.tick(200_000, &mut out);
    assert!(out.is_empty(), "one report per silence");
    // The device is back: its late reading updates the fired window as revision 1
    // once the watermark passes the end, like any late reading.
    e.push(r("a", 30_000, 4.0), 201_000, &mut out);
    assert!(out.is_empty());
    e.push(r("a", 61_000, 1.0), 201_001, &mut out);
    assert_eq!(
        summary(&out),
        vec![("a".into(), 0, 1, Timing::Late, 3, 9.0)]
    );
}

#[test]
fn what_idleness_emits_does_not_depend_on_how_often_the_clock_ticks() {
    let cfg = EngineConfig {
        idle_timeout_ms: Some(3_000),
        late_fire_delay_ms: 700,
        ..tumbling(1_000, 200, 5_000)
    };
    let inputs: Vec<(Reading, i64)> = (0..200)
        .map(|i| {
            let key = ["a", "b", "c"][i % 3];
            // Bursts with long pauses; some readings late.
            let now = 10_000 + (i as i64 / 20) * 4_000 + (i as i64 % 20) * 50;
            let ts = now - 9_000 - if i % 7 == 0 { 1_500 } else { 0 };
            (r(key, ts, i as f64), now)
        })
        .collect();
    let run = |tick_every: Option<i64>| {
        let mut e = Engine::new(cfg.clone());
        let mut out = Vec::new();
        let mut clock = 0;
        for (reading, now) in &inputs {
            if let Some(step) = tick_every {
                while clock + step <= *now {
                    clock += step;
                    e.tick(clock, &mut out);
                }
            }
            e.tick(*now, &mut out);
            e.push(reading.clone(), *now, &mut out);
        }
        e.tick(i64::MAX / 2, &mut out);
        let mut sorted: Vec<String> = out.iter().map(|o| format!("{o:?}")).collect();
        sorted.sort();
        sorted
    };
    let only_at_inputs = run(None);
    assert!(only_at_inputs.iter().any(|o| o.starts_with("Idle")));
    assert_eq!(run(Some(1)), only_at_inputs);
    assert_eq!(run(Some(333)), only_at_inputs);
}

#[test]
fn a_burst_of_late_readings_gives_one_held_pane_with_the_full_result() {
    let mut e = Engine::new(EngineConfig {
        late_fire_delay_ms: 1_000,
        ..tumbling(1_000, 0, 10_000)
    });
    let mut out = Vec::new();
    e.push(r("a", 100, 1.0), 0, &mut out);
    e.push(r("a", 1_000, 0.0), 0, &mut out);
    assert_eq!(
        summary(&out),
        vec![("a".into(), 0, 0, Timing::OnTime, 1, 1.0)]
    );
    out.clear();
    for (i, now) in [10, 20, 500, 999].into_iter().enumerate() {
        e.tick(now, &mut out);
        e.push(r("a", 200 + i as i64, 1.0), now, &mut out);
    }
    assert!(out.is_empty(), "held until 1010");
    e.tick(1_010, &mut out);
    assert_eq!(
        summary(&out),
        vec![("a".into(), 0, 1, Timing::Late, 5, 5.0)]
    );
    assert!(!panes(&out)[0].is_final);
}

#[test]
fn a_held_late_pane_is_emitted_as_final_when_its_window_closes_first() {
    let mut e = Engine::new(EngineConfig {
        late_fire_delay_ms: 60_000,
        ..tumbling(1_000, 0, 2_000)
    });
    let mut out = Vec::new();
    e.push(r("a", 100, 1.0), 0, &mut out);
    e.push(r("a", 1_000, 0.0), 0, &mut out);
    e.push(r("a", 150, 2.0), 1, &mut out);
    out.clear();
    // The watermark passes end + L = 3000 long before the hold ends.
    e.push(r("a", 3_000, 0.0), 2, &mut out);
    let ps = panes(&out);
    let held = ps.iter().find(|p| p.start == 0).unwrap();
    assert_eq!((held.revision, held.agg.count), (1, 2));
    assert!(held.is_final, "the final result, said to be final");
    out.clear();
    e.tick(100_000, &mut out);
    assert!(panes(&out).iter().all(|p| p.start != 0), "emitted once");
}

#[test]
fn a_reading_older_than_max_backfill_is_rejected_and_creates_no_state() {
    let mut e = Engine::new(EngineConfig {
        max_backfill_ms: Some(86_400_000),
        ..tumbling(1_000, 0, 0)
    });
    let now = 1_700_000_000_000;
    let mut out = Vec::new();
    e.push(r("a", now - 86_400_001, 1.0), now, &mut out);
    assert!(matches!(
        out.as_slice(),
        [Output::Rejected {
            reason: RejectReason::TooOld,
            ..
        }]
    ));
    assert_eq!(e.key_count(), 0);
    out.clear();
    e.push(r("a", now - 86_400_000, 1.0), now, &mut out);
    assert!(out.is_empty(), "exactly at the limit is accepted");
}

/// The worked example of `docs/time.md`: global scope, 10 s tumbling windows,
/// D = 2 s, L = 5 s, two sensors. Flink gives the same firings.
#[test]
fn the_worked_example_of_the_global_scope_fires_as_flink_does() {
    let mut e = Engine::new(EngineConfig {
        scope: Scope::Global,
        ..tumbling(10_000, 2_000, 5_000)
    });
    let now = 100_000;
    let steps: Vec<(&str, i64, f64)> = vec![
        ("a", 1_000, 1.0),  // wm -1000
        ("b", 4_000, 10.0), // wm 2000
        ("a", 11_000, 2.0), // wm 9000: nothing fires yet
        ("b", 9_500, 20.0), // on time although below the watermark
        ("a", 12_000, 3.0), // wm 10000: [0,10) fires for a and b
        ("b", 8_000, 30.0), // late, within L: b's [0,10) revision 1
        ("a", 17_000, 4.0), // wm 15000 = end + L: [0,10) closes
        ("a", 9_999, 5.0),  // too late: late_by 0
        ("b", 3_000, 6.0),  // too late
    ];
    let mut outs = Vec::new();
    for (k, ts, v) in steps {
        let mut out = Vec::new();
        e.push(r(k, ts, v), now, &mut out);
        outs.push(out);
    }
    assert!(outs[..4].iter().all(|o| o.is_empty()));
    assert_eq!(
        summary(&outs[4]),
        vec![
            ("a".into(), 0, 0, Timing::OnTime, 1, 1.0),
            ("b".into(), 0, 0, Timing::OnTime, 2, 30.0),
        ]
    );
    assert_eq!(
        summary(&outs[5]),
        vec![("b".into(), 0, 1, Timing::Late, 3, 60.0)]
    );
    assert!(outs[6].is_empty(), "closing emits nothing new");
    for (i, late_by) in [(7, 0), (8, 0)] {
        match outs[i].as_slice() {
            [Output::Late(l)] => assert_eq!((l.watermark, l.late_by_ms), (15_000, late_by)),
            other => panic!("step {i}: expected late, got {other:?}"),
        }
    }
}

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// Device "replay" is offline for an hour while "live" keeps publishing; then
/// it replays its buffer. Returns every output of the replay phase.
fn offline_device_replays_an_hour(scope: Scope) -> (Engine, Vec<Output>) {
    let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN;
    let mut e = Engine::new(EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms: MIN,
            offset_ms: 0,
        },
        scope,
        max_out_of_orderness_ms: 5_000,
        allowed_lateness_ms: 30_000,
        max_future_skew_ms: 10_000,
        max_keys: 10,
        max_windows_per_key: 8,
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    // Both publish for ten minutes; then "replay" goes offline for an hour.
    for s in 0..600 {
        let now = t0 + s * 1000;
        e.push(r("live", now, 1.0), now, &mut out);
        e.push(r("replay", now, 1.0), now, &mut out);
    }
    for s in 600..4200 {
        let now = t0 + s * 1000;
        e.tick(now, &mut out);
        e.push(r("live", now, 1.0), now, &mut out);
    }
    // Back: the buffered hour arrives in a burst, interleaved with live readings.
    out.clear();
    let now = t0 + 4200 * 1000;
    for s in 600..4200 {
        e.push(r("replay", t0 + s * 1000, s as f64), now, &mut out);
        e.push(r("live", now + s, 1.0), now, &mut out);
    }
    (e, out)
}

#[test]
fn with_per_key_watermarks_every_replayed_reading_lands_in_its_true_window() {
    let (_, out) = offline_device_replays_an_hour(Scope::PerKey);
    let replay: Vec<&Pane> = panes(&out)
        .into_iter()
        .filter(|p| &*p.key.sensor == "replay")
        .collect();
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Late(_) | Output::Rejected { .. })),
        "nothing late or rejected"
    );
    let full: Vec<&&Pane> = replay.iter().filter(|p| p.agg.count == 60).collect();
    assert_eq!(
        full.len(),
        59,
        "every replayed minute but the last, still open"
    );
    for (i, p) in full.iter().enumerate() {
        assert_eq!(
            p.agg.first,
            (600 + i * 60) as f64,
            "minute {i} holds its own readings"
        );
        assert_eq!(p.timing, Timing::OnTime);
    }
}

#[test]
fn with_a_global_watermark_the_replayed_readings_are_late_and_counted() {
    let (_, out) = offline_device_replays_an_hour(Scope::Global);
    let late: Vec<&LateReading> = out
        .iter()
        .filter_map(|o| match o {
            Output::Late(l) => Some(l),
            _ => None,
        })
        .collect();
    // The global watermark is at the live device's time: the buffered hour is
    // older than any window still within its allowed lateness, but for its last
    // minute, whose window has not even fired.
    assert_eq!(late.len(), 3540);
    assert!(late.iter().all(|l| &*l.reading.key.sensor == "replay"));
    assert!(late[0].late_by_ms > 58 * MIN, "{}", late[0].late_by_ms);
    assert!(panes(&out).iter().all(|p| &*p.key.sensor == "live"));
}

#[test]
fn a_device_whose_clock_jumps_a_year_ahead_is_quarantined_and_makes_nothing_else_late() {
    for scope in [Scope::PerKey, Scope::Global] {
        let mut e = Engine::new(EngineConfig {
            scope,
            ..tumbling(MIN, 5_000, 0)
        });
        let t0 = 1_700_000_000_000;
        let mut out = Vec::new();
        for s in 0..120 {
            let now = t0 + s * 1000;
            e.push(r("good", now, 1.0), now, &mut out);
            if s == 60 {
                e.push(r("bad", now + 365 * 24 * HOUR, 1.0), now, &mut out);
            }
            e.push(r("other", now - 2_000, 1.0), now, &mut out);
        }
        let quarantined: Vec<&Output> = out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Rejected {
                        reason: RejectReason::FutureSkew,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(quarantined.len(), 1, "{scope:?}");
        assert!(
            !out.iter().any(|o| matches!(o, Output::Late(_))),
            "{scope:?}"
        );
        assert_eq!(
            e.watermark(&Key::new("bad", "m")),
            None,
            "{scope:?}: no state"
        );
        assert!(e.watermark(&Key::new("good", "m")).unwrap() < t0 + HOUR);
    }
}

#[test]
fn silence_counts_from_when_the_key_could_be_heard_not_across_downtime() {
    let mut e = Engine::new(EngineConfig {
        idle_timeout_ms: Some(5_000),
        ..tumbling(60_000, 1_000, 0)
    });
    let mut out = Vec::new();
    e.push(r("gone", 10_000, 1.0), 100_000, &mut out);
    e.push(r("local", 10_000, 1.0), 103_000, &mut out);
    e.push(r("remote", 10_000, 1.0), 103_000, &mut out);
    e.tick(105_000, &mut out);
    assert_eq!(out.len(), 2, "gone's window fires and it is idle: {out:?}");
    out.clear();
    // Weir was down from 103 s (the others' last arrival) to 500 s; it starts
    // again and can hear `local` at once, `remote` once its link is up at 502 s.
    e.hear_from(500_000, |_| true);
    e.hear_from(502_000, |k| &*k.sensor == "remote");
    e.tick(504_999, &mut out);
    assert!(out.is_empty(), "nothing silent yet: {out:?}");
    e.tick(505_000, &mut out);
    let idle: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Idle(i) => Some((i.key.sensor.to_string(), i.deadline)),
            _ => None,
        })
        .collect();
    assert_eq!(idle, [("local".to_string(), 505_000)]);
    out.clear();
    e.tick(507_000, &mut out);
    assert!(
        out.iter().any(
            |o| matches!(o, Output::Idle(i) if &*i.key.sensor == "remote" && i.deadline == 507_000)
        ),
        "{out:?}"
    );
    out.clear();
    e.hear_from(600_000, |_| true);
    e.tick(700_000, &mut out);
    assert!(
        out.is_empty(),
        "a key already idle is not reported again: {out:?}"
    );
}

#[test]
fn a_reading_beyond_the_largest_magnitude_is_refused_and_creates_no_state() {
    let mut e = Engine::new(tumbling(1_000, 0, 0));
    let now = 1_700_000_000_000;
    let mut out = Vec::new();
    for v in [1e308, -1.5e288] {
        e.push(r("a", now, v), now, &mut out);
        assert!(
            matches!(
                out.as_slice(),
                [Output::Rejected {
                    reason: RejectReason::OutOfRange,
                    ..
                }]
            ),
            "{v}: {out:?}"
        );
        out.clear();
    }
    assert_eq!(e.key_count(), 0);
    e.push(r("a", now, -MAX_ABS_VALUE), now, &mut out);
    assert!(out.is_empty(), "exactly at the bound is accepted");
}
