//! Unit tests for the engine's rules, one behaviour each.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::reading::TsSource;

const NOW: TimestampMs = 1_000_000_000;

fn cfg(size_ms: i64, d: i64, l: i64) -> EngineConfig {
    EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms,
            offset_ms: 0,
        },
        max_out_of_orderness_ms: d,
        allowed_lateness_ms: l,
        max_future_skew_ms: 60_000,
        max_keys: 100,
        max_windows_per_key: 100,
        ..EngineConfig::default()
    }
}

fn r(key: &str, ts: i64, value: f64) -> Reading {
    Reading::new(Key::new(key, "m"), value, ts, TsSource::Event).unwrap()
}

/// Pushes and returns what this one reading produced.
fn push(e: &mut Engine, key: &str, ts: i64, value: f64) -> Vec<Output> {
    let mut out = Vec::new();
    e.push(r(key, ts, value), NOW, &mut out);
    out
}

fn panes(out: &[Output]) -> Vec<&Pane> {
    out.iter()
        .filter_map(|o| match o {
            Output::Pane(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn only_pane(out: &[Output]) -> &Pane {
    assert_eq!(out.len(), 1, "expected exactly one output, got {out:?}");
    match &out[0] {
        Output::Pane(p) => p,
        other => panic!("expected a pane, got {other:?}"),
    }
}

fn rejected(out: &[Output]) -> RejectReason {
    match out {
        [Output::Rejected { reason, .. }] => *reason,
        other => panic!("expected one rejection, got {other:?}"),
    }
}

#[test]
fn a_window_fires_on_time_when_the_watermark_reaches_its_end() {
    let mut e = Engine::new(cfg(1000, 100, 0));
    assert!(push(&mut e, "a", 10, 1.0).is_empty());
    assert!(push(&mut e, "a", 500, 3.0).is_empty());
    // wm = 1099 - 100 = 999 < 1000: not yet.
    assert!(push(&mut e, "a", 1099, 7.0).is_empty());
    // wm = 1100 - 100 = 1000 = end: fires, without the readings of the next window.
    let out = push(&mut e, "a", 1100, 9.0);
    let p = only_pane(&out);
    assert_eq!((p.start, p.end, p.revision), (0, 1000, 0));
    assert_eq!(p.timing, Timing::OnTime);
    assert_eq!(p.agg.count, 2);
    assert_eq!(p.agg.sum, 4.0);
    assert_eq!((p.agg.first, p.agg.last), (1.0, 3.0));
    assert_eq!(p.key, Key::new("a", "m"));
}

#[test]
fn an_out_of_order_reading_within_d_is_on_time_even_below_the_watermark() {
    let mut e = Engine::new(cfg(1000, 500, 0));
    push(&mut e, "a", 900, 1.0);
    push(&mut e, "a", 1400, 2.0);
    // wm = 900: ts 100 is below it, but [0, 1000) has not fired.
    assert!(push(&mut e, "a", 100, 5.0).is_empty());
    let out = push(&mut e, "a", 1500, 0.0);
    let p = only_pane(&out);
    assert_eq!(p.agg.count, 2);
    assert_eq!((p.agg.first, p.agg.last), (5.0, 1.0));
}

#[test]
fn a_reading_never_fires_its_own_window() {
    // The watermark is at most the reading's ts, and its window ends after it:
    // the reading at end - 1 with D = 0 leaves its window open.
    let mut e = Engine::new(cfg(1000, 0, 0));
    assert!(push(&mut e, "a", 999, 1.0).is_empty());
    assert_eq!(e.watermark(&Key::new("a", "m")), Some(999));
    let out = push(&mut e, "a", 1000, 2.0);
    assert_eq!(only_pane(&out).agg.count, 1);
}

#[test]
fn a_big_jump_fires_every_passed_window_in_order_of_end() {
    // D = 1000 keeps three windows open until one reading moves the watermark past them all.
    let mut e = Engine::new(cfg(100, 1000, 0));
    for ts in [450, 250, 390, 260] {
        assert!(push(&mut e, "a", ts, 1.0).is_empty());
    }
    assert_eq!(e.open_windows(), 3);
    let out = push(&mut e, "a", 2000, 1.0);
    let ends: Vec<i64> = panes(&out).iter().map(|p| p.end).collect();
    assert_eq!(ends, vec![300, 400, 500]);
    let counts: Vec<u64> = panes(&out).iter().map(|p| p.agg.count).collect();
    assert_eq!(counts, vec![2, 1, 1]);
    assert!(panes(&out).iter().all(|p| p.is_final));
    assert_eq!(e.open_windows(), 1);
}

#[test]
fn late_readings_within_lateness_emit_revisions_one_two_three() {
    let mut e = Engine::new(cfg(1000, 0, 5000));
    push(&mut e, "a", 100, 1.0);
    let on_time = push(&mut e, "a", 2000, 0.0);
    let p = only_pane(&on_time);
    assert_eq!(
        (p.revision, p.timing, p.is_final),
        (0, Timing::OnTime, false)
    );
    for (i, v) in [2.0, 3.0, 4.0].into_iter().enumerate() {
        let out = push(&mut e, "a", 200 + i as i64, v);
        let p = only_pane(&out);
        assert_eq!(p.revision, i as u32 + 1);
        assert_eq!(p.timing, Timing::Late);
        assert!(!p.is_final);
        // Accumulating: the full result, not a delta.
        assert_eq!(p.agg.count, i as u64 + 2);
        assert_eq!(p.agg.max, v);
        assert_eq!((p.start, p.end), (0, 1000));
    }
}

#[test]
fn a_reading_after_the_lateness_is_late_with_the_exact_margin() {
    let mut e = Engine::new(cfg(1000, 100, 500));
    push(&mut e, "a", 100, 1.0);
    // wm = 1700 - 100 = 1600 >= end + L = 1500: [0,1000) closed 100 ms ago.
    let out = push(&mut e, "a", 1700, 1.0);
    assert!(only_pane(&out).is_final);
    assert_eq!(e.open_windows(), 1);
    let out = push(&mut e, "a", 999, 42.0);
    match out.as_slice() {
        [Output::Late(l)] => {
            assert_eq!(l.watermark, 1600);
            assert_eq!(l.late_by_ms, 100);
            assert_eq!(l.reading, r("a", 999, 42.0));
        }
        other => panic!("expected a late reading, got {other:?}"),
    }
}

#[test]
fn a_reading_that_just_missed_the_lateness_is_late_by_zero() {
    let mut e = Engine::new(cfg(1000, 0, 500));
    push(&mut e, "a", 100, 1.0);
    push(&mut e, "a", 1500, 1.0);
    match push(&mut e, "a", 0, 1.0).as_slice() {
        [Output::Late(l)] => assert_eq!((l.watermark, l.late_by_ms), (1500, 0)),
        other => panic!("expected a late reading, got {other:?}"),
    }
    // One ms earlier in the watermark's life it would have been accepted.
    let mut e = Engine::new(cfg(1000, 0, 500));
    push(&mut e, "a", 100, 1.0);
    push(&mut e, "a", 1499, 1.0);
    assert_eq!(only_pane(&push(&mut e, "a", 0, 1.0)).revision, 1);
}

#[test]
fn with_zero_lateness_the_on_time_pane_is_final_and_the_window_is_gone() {
    let mut e = Engine::new(cfg(1000, 0, 0));
    push(&mut e, "a", 10, 1.0);
    let out = push(&mut e, "a", 1000, 1.0);
    assert!(only_pane(&out).is_final);
    assert_eq!(e.open_windows(), 1);
    assert!(matches!(
        push(&mut e, "a", 20, 1.0).as_slice(),
        [Output::Late(_)]
    ));
}

#[test]
fn a_late_reading_for_a_window_with_no_readings_fires_it_at_once() {
    let mut e = Engine::new(cfg(1000, 0, 5000));
    push(&mut e, "a", 2500, 1.0);
    // [0,1000) never existed; within lateness, so it opens and fires immediately.
    let out = push(&mut e, "a", 10, 7.0);
    let p = only_pane(&out);
    assert_eq!(
        (p.start, p.revision, p.timing, p.is_final),
        (0, 0, Timing::OnTime, false)
    );
    assert_eq!(p.agg.count, 1);
    assert_eq!(only_pane(&push(&mut e, "a", 11, 8.0)).revision, 1);
}

#[test]
fn one_keys_watermark_does_not_affect_another_key() {
    let mut e = Engine::new(cfg(1000, 0, 0));
    push(&mut e, "a", 100, 1.0);
    push(&mut e, "b", 100, 1.0);
    // a races ahead by an hour; b's window stays open and b's reading is on time.
    let out = push(&mut e, "a", 3_600_000, 1.0);
    assert_eq!(panes(&out).len(), 1);
    assert!(panes(&out).iter().all(|p| p.key == Key::new("a", "m")));
    assert!(push(&mut e, "b", 200, 2.0).is_empty());
    assert_eq!(e.watermark(&Key::new("b", "m")), Some(200));
    assert_eq!(e.watermark(&Key::new("a", "m")), Some(3_600_000));
    let p = only_pane(&push(&mut e, "b", 1000, 0.0)).clone();
    assert_eq!((p.key, p.agg.count), (Key::new("b", "m"), 2));
}

#[test]
fn an_hour_of_replayed_data_lands_in_its_true_windows_while_another_key_is_current() {
    let minute = 60_000;
    let start = 1_700_000_000_000 - 1_700_000_000_000 % minute;
    let now = start + 2 * 3_600_000;
    let mut e = Engine::new(EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms: minute,
            offset_ms: 0,
        },
        max_out_of_orderness_ms: 5_000,
        allowed_lateness_ms: 0,
        max_future_skew_ms: 10_000,
        max_keys: 10,
        max_windows_per_key: 4,
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    let mut live = Vec::new();
    // The live key is two hours on; the replayed key's buffer is an hour old.
    for s in 0..120 {
        e.push(r("live", now - 120_000 + s * 1000, 1.0), now, &mut live);
    }
    for s in 0..3600 {
        let ts = start + s * 1000;
        e.push(r("replay", ts, s as f64), now, &mut out);
        e.push(r("live", now + s, 1.0), now, &mut live);
    }
    assert!(
        out.iter().all(|o| matches!(o, Output::Pane(_))),
        "nothing late or rejected"
    );
    let ps = panes(&out);
    assert_eq!(ps.len(), 59, "every full minute but the last, still open");
    for (i, p) in ps.iter().enumerate() {
        assert_eq!(p.start, start + i as i64 * minute);
        assert_eq!(p.agg.count, 60);
        assert_eq!(p.agg.first, (i * 60) as f64);
        assert_eq!(p.agg.last, (i * 60 + 59) as f64);
        assert_eq!(p.timing, Timing::OnTime);
    }
}

#[test]
fn a_reading_from_the_future_is_quarantined_and_never_moves_the_watermark() {
    let mut e = Engine::new(cfg(1000, 0, 0));
    push(&mut e, "a", 100, 1.0);
    let k = Key::new("a", "m");
    let mut out = Vec::new();
    // Exactly at the limit is still accepted...
    e.push(r("a", NOW + 60_000, 1.0), NOW, &mut out);
    assert_eq!(panes(&out).len(), 1);
    assert_eq!(e.watermark(&k), Some(NOW + 60_000));
    // ...one ms beyond it is not, and changes nothing.
    out.clear();
    e.push(r("a", NOW + 60_001, 1.0), NOW, &mut out);
    assert_eq!(rejected(&out), RejectReason::FutureSkew);
    assert_eq!(e.watermark(&k), Some(NOW + 60_000));
    // A new key from the future creates no state either.
    out.clear();
    e.push(r("b", NOW + 999_999, 1.0), NOW, &mut out);
    assert_eq!(rejected(&out), RejectReason::FutureSkew);
    assert_eq!(e.watermark(&Key::new("b", "m")), None);
    assert_eq!(e.key_count(), 1);
}

#[test]
fn a_new_key_beyond_the_limit_is_rejected_and_creates_no_state() {
    let mut e = Engine::new(EngineConfig {
        max_keys: 2,
        ..cfg(1000, 0, 0)
    });
    push(&mut e, "a", 1, 1.0);
    push(&mut e, "b", 1, 1.0);
    assert_eq!(rejected(&push(&mut e, "c", 1, 1.0)), RejectReason::KeyLimit);
    assert_eq!(e.key_count(), 2);
    assert_eq!(e.watermark(&Key::new("c", "m")), None);
    // Known keys carry on.
    assert!(push(&mut e, "a", 2, 1.0).is_empty());
}

#[test]
fn a_new_window_beyond_the_limit_is_rejected_but_known_windows_still_accept() {
    let mut e = Engine::new(EngineConfig {
        max_windows_per_key: 2,
        ..cfg(1000, 10_000, 0)
    });
    push(&mut e, "a", 0, 1.0);
    push(&mut e, "a", 1000, 1.0);
    assert_eq!(e.open_windows(), 2);
    assert_eq!(
        rejected(&push(&mut e, "a", 2000, 1.0)),
        RejectReason::WindowLimit
    );
    assert_eq!(e.open_windows(), 2);
    assert!(push(&mut e, "a", 500, 1.0).is_empty());
    // Other keys have their own budget.
    assert!(push(&mut e, "b", 2000, 1.0).is_empty());
}

#[test]
fn a_reading_refused_by_the_window_limit_still_advances_the_watermark() {
    // D is large for the limit: without this the key would refuse every new
    // window forever, its watermark stuck behind its two open windows.
    let mut e = Engine::new(EngineConfig {
        max_windows_per_key: 2,
        ..cfg(1000, 5000, 0)
    });
    push(&mut e, "a", 0, 1.0);
    push(&mut e, "a", 1000, 2.0);
    for ts in [2000, 3000, 4000, 5000] {
        assert_eq!(
            rejected(&push(&mut e, "a", ts, 1.0)),
            RejectReason::WindowLimit
        );
    }
    assert_eq!(e.watermark(&Key::new("a", "m")), Some(0));
    // wm = 1000 closes [0,1000), which makes room for the reading's own window.
    let out = push(&mut e, "a", 6000, 3.0);
    assert_eq!(only_pane(&out).agg.sum, 1.0);
    assert_eq!(e.open_windows(), 2);
}

#[test]
fn negative_timestamps_window_and_fire_like_any_others() {
    let mut e = Engine::new(cfg(1000, 0, 0));
    push(&mut e, "a", -1500, 1.0);
    push(&mut e, "a", -1001, 2.0);
    let out = push(&mut e, "a", -1, 4.0);
    let p = only_pane(&out);
    assert_eq!(
        (p.start, p.end, p.agg.count, p.agg.sum),
        (-2000, -1000, 2, 3.0)
    );
    let p = only_pane(&push(&mut e, "a", 0, 0.0)).clone();
    assert_eq!((p.start, p.end, p.agg.sum), (-1000, 0, 4.0));
}

#[test]
fn an_offset_moves_window_boundaries() {
    let mut e = Engine::new(EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms: 1000,
            offset_ms: 300,
        },
        ..cfg(1000, 0, 0)
    });
    push(&mut e, "a", 299, 1.0);
    let p = only_pane(&push(&mut e, "a", 300, 2.0)).clone();
    assert_eq!((p.start, p.end, p.agg.sum), (-700, 300, 1.0));
    let p = only_pane(&push(&mut e, "a", 1300, 0.0)).clone();
    assert_eq!((p.start, p.end, p.agg.sum), (300, 1300, 2.0));
}

#[test]
fn an_invalid_config_is_clamped_instead_of_panicking() {
    let mut e = Engine::new(EngineConfig {
        window: WindowSpec::Tumbling {
            size_ms: 0,
            offset_ms: 0,
        },
        max_keys: 0,
        ..cfg(1000, 0, 0)
    });
    assert_eq!(e.config().validate(), Ok(()));
    push(&mut e, "a", 5, 1.0);
    assert_eq!(only_pane(&push(&mut e, "a", 6, 1.0)).end, 6);
    assert_eq!(e.key_count(), 1);
}

#[test]
fn watermarks_lists_every_key_once() {
    let mut e = Engine::new(cfg(1000, 10, 0));
    push(&mut e, "a", 100, 1.0);
    push(&mut e, "b", 300, 1.0);
    push(&mut e, "a", 50, 1.0);
    let mut wms: Vec<(String, i64)> = e.watermarks().map(|(k, w)| (k.to_string(), w)).collect();
    wms.sort();
    assert_eq!(wms, vec![("a/m".to_string(), 90), ("b/m".to_string(), 290)]);
}

#[test]
fn a_key_is_listed_dirty_once_until_taken_and_again_after_its_next_reading() {
    let mut e = Engine::new(cfg(1_000, 0, 0));
    push(&mut e, "a", 100, 1.0);
    push(&mut e, "a", 200, 2.0);
    push(&mut e, "b", 300, 3.0);
    let mut dirty = e.take_dirty();
    dirty.sort();
    assert_eq!(dirty, vec![Key::new("a", "m"), Key::new("b", "m")]);
    assert!(e.take_dirty().is_empty());
    push(&mut e, "b", 400, 4.0);
    assert_eq!(e.take_dirty(), vec![Key::new("b", "m")]);
}

#[test]
fn a_rejected_reading_leaves_no_key_dirty() {
    let mut c = cfg(1_000, 0, 0);
    c.max_keys = 1;
    let mut e = Engine::new(c);
    push(&mut e, "a", 100, 1.0);
    e.take_dirty();
    let out = push(&mut e, "b", 200, 2.0);
    assert!(matches!(
        out[..],
        [Output::Rejected {
            reason: RejectReason::KeyLimit,
            ..
        }]
    ));
    assert!(e.take_dirty().is_empty());
    assert_eq!(e.key_count(), 1);
}
