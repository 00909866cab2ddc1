//! Session windows where firing and merging meet: a reading exactly one gap
//! after a session's last reading, with D = 0. Flink adds the reading before
//! its watermark moves, so the sessions touch and merge; the result must not
//! depend on the order the two readings arrive in.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::reading::TsSource;

const NOW: TimestampMs = 1_000_000_000;

fn session(gap_ms: i64, max_length_ms: i64, l: i64, scope: Scope) -> EngineConfig {
    EngineConfig {
        window: WindowSpec::Session {
            gap_ms,
            max_length_ms,
            offset_ms: 0,
        },
        scope,
        max_out_of_orderness_ms: 0,
        allowed_lateness_ms: l,
        max_future_skew_ms: 60_000,
        max_keys: 100,
        max_windows_per_key: 100,
        ..EngineConfig::default()
    }
}

fn push(e: &mut Engine, key: &str, ts: i64, value: f64, out: &mut Vec<Output>) {
    let r = Reading::new(Key::new(key, "m"), value, ts, TsSource::Event).unwrap();
    e.push(r, NOW, out);
}

/// `(key, start, end, count, sum, revision)` of every pane.
fn panes(out: &[Output]) -> Vec<(String, i64, i64, u64, f64, u32)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Pane(p) => Some((
                p.key.sensor.to_string(),
                p.start,
                p.end,
                p.agg.count,
                p.agg.sum,
                p.revision,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn readings_one_gap_apart_make_one_session_whatever_their_order() {
    for scope in [Scope::PerKey, Scope::Global] {
        for l in [0, 1000] {
            for order in [[0, 500], [500, 0]] {
                let mut e = Engine::new(session(500, 3_600_000, l, scope));
                let mut out = Vec::new();
                for ts in order {
                    push(&mut e, "a", ts, 1.0 + ts as f64, &mut out);
                }
                assert!(
                    panes(&out).is_empty(),
                    "{scope:?} L={l} {order:?}: nothing may fire before the watermark reaches 1000: {out:?}"
                );
                assert_eq!(e.open_windows(), 1, "{scope:?} L={l} {order:?}");
                // The watermark reaches the session's end: it fires, once, whole.
                push(&mut e, "a", 1000 + l + 500, 0.0, &mut out);
                assert_eq!(
                    panes(&out),
                    vec![("a".to_string(), 0, 1000, 2, 502.0, 0)],
                    "{scope:?} L={l} {order:?}"
                );
            }
        }
    }
}

#[test]
fn a_session_ending_at_a_readings_ts_is_extended_not_fired_early() {
    // gap 500: 0, 500, 1000, 1500 chain into one session [0, 2000).
    let mut e = Engine::new(session(500, 3_600_000, 1000, Scope::PerKey));
    let mut out = Vec::new();
    for ts in [0, 500, 1000, 1500] {
        push(&mut e, "a", ts, 1.0, &mut out);
    }
    assert!(out.is_empty(), "{out:?}");
    push(&mut e, "a", 2000, 1.0, &mut out);
    assert!(out.is_empty(), "2000 touches [0, 2000) as well: {out:?}");
    push(&mut e, "a", 4000, 1.0, &mut out);
    assert_eq!(panes(&out), vec![("a".to_string(), 0, 2500, 5, 5.0, 0)]);
}

#[test]
fn with_a_global_watermark_another_keys_reading_fires_the_session_it_reaches() {
    // Only key a's own reading can extend a's session: b's reading at 500
    // moves the global watermark to 500, which is a's session's end.
    let mut e = Engine::new(session(500, 3_600_000, 0, Scope::Global));
    let mut out = Vec::new();
    push(&mut e, "a", 0, 1.0, &mut out);
    push(&mut e, "b", 500, 2.0, &mut out);
    assert_eq!(panes(&out), vec![("a".to_string(), 0, 500, 1, 1.0, 0)]);
    out.clear();
    // With L = 0 a's session is gone; a's reading at 500 opens a new one.
    push(&mut e, "a", 500, 3.0, &mut out);
    assert!(out.is_empty(), "{out:?}");
    push(&mut e, "a", 2000, 0.0, &mut out);
    assert_eq!(
        panes(&out),
        // In order of (timer time, key).
        vec![
            ("a".to_string(), 500, 1000, 1, 3.0, 0),
            ("b".to_string(), 500, 1000, 1, 2.0, 0)
        ]
    );
}

#[test]
fn sessions_touching_across_a_max_length_boundary_stay_apart() {
    // max_length 1000: [500, 1000) is cut at 1000 and cannot merge with a
    // session of the next cell, so the reading at 1000 fires it.
    let mut e = Engine::new(session(500, 1000, 0, Scope::PerKey));
    let mut out = Vec::new();
    push(&mut e, "a", 500, 1.0, &mut out);
    push(&mut e, "a", 1000, 2.0, &mut out);
    assert_eq!(panes(&out), vec![("a".to_string(), 500, 1000, 1, 1.0, 0)]);
    assert_eq!(e.open_windows(), 1);
}
