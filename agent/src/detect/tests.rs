//! Behaviour of [`Detectors`] across keys and detectors: glob matching, the key
//! bound, and the lifecycle property over random inputs.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::test_support::*;
use super::*;

// ---- keys, globs, bounds ----

#[test]
fn detectors_apply_only_to_keys_their_globs_match() {
    let mut spec = threshold_spec("hot-greenhouse", Some(35.0), None, 1.0, 0);
    spec.sensor = Glob::new("green*");
    spec.metric = Glob::new("temperature");
    let mut any = threshold_spec("anything", Some(35.0), None, 1.0, 0);
    any.sensor = Glob::new("*");
    any.metric = Glob::new("*");
    let mut d = Detectors::new(vec![spec, any], 10);
    let mut out = Vec::new();
    for (s, m) in [
        ("greenhouse", "temperature"),
        ("greenhouse", "temperature2"),
        ("kitchen", "temperature"),
    ] {
        d.on_reading(&reading(s, m, 40.0, 1000), &mut out);
    }
    let mut fired: Vec<_> = out
        .iter()
        .map(|a| format!("{}:{}", a.detector, a.key))
        .collect();
    fired.sort();
    assert_eq!(
        fired,
        [
            "anything:greenhouse/temperature",
            "anything:greenhouse/temperature2",
            "anything:kitchen/temperature",
            "hot-greenhouse:greenhouse/temperature",
        ]
    );
}

#[test]
fn keys_beyond_max_keys_get_no_state_and_are_counted() {
    let mut d = Detectors::new(vec![threshold_spec("too-hot", Some(35.0), None, 1.0, 0)], 2);
    let mut out = Vec::new();
    for s in ["a", "b", "c"] {
        d.on_reading(&reading(s, "t", 20.0, 1000), &mut out);
    }
    d.on_reading(&reading("c", "t", 40.0, 2000), &mut out);
    assert!(out.is_empty(), "the third key has no detector state");
    assert_eq!(d.key_count(), 2);
    assert_eq!(d.rejected_keys(), 2);
    d.on_reading(&reading("a", "t", 40.0, 2000), &mut out);
    assert_eq!(out.len(), 1, "admitted keys keep working");
    assert_eq!(d.key_count(), 2);
}

#[test]
fn active_alerts_lists_the_open_episodes_only() {
    let mut d = too_hot(0);
    let mut out = Vec::new();
    d.on_reading(&reading("a", "t", 40.0, 1000), &mut out);
    d.on_reading(&reading("b", "t", 40.0, 1000), &mut out);
    d.on_reading(&reading("b", "t", 20.0, 2000), &mut out);
    let active: Vec<_> = d.active_alerts().collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0], &out[0]);
}

// ---- lifecycle property ----

/// One input: which key, a value, a time step (may go backwards), and whether it
/// is a reading or a pane of some revision.
type Op = (usize, f64, i64, Option<u32>);

fn op() -> impl Strategy<Value = Op> {
    (
        0usize..3,
        prop_oneof![-20.0..60.0f64, 8.0..12.0f64],
        prop_oneof![Just(0i64), -500i64..3000],
        prop_oneof![3 => Just(None), 2 => Just(Some(0u32)), 1 => (1u32..3).prop_map(Some)],
    )
}

proptest! {
    #[test]
    fn alerts_alternate_raised_cleared_per_detector_and_key_with_matching_ids(
        ops in proptest::collection::vec(op(), 0..400),
        clear_after_ms in 0i64..4000,
        clear_after in 0u32..4,
    ) {
        let mut z = zscore_spec(3, clear_after);
        if let DetectorKind::ZScore { alpha, threshold, hysteresis, min_stddev, .. } = &mut z.kind {
            *alpha = 0.3;
            *threshold = 2.0;
            *hysteresis = 0.5;
            *min_stddev = 0.5;
        }
        let specs = vec![
            threshold_spec("range", Some(30.0), Some(10.0), 2.0, clear_after_ms),
            threshold_spec("hot", Some(40.0), None, 0.0, 0),
            z,
        ];
        let mut d = Detectors::new(specs, 2);
        let mut out = Vec::new();
        let mut ts = [0i64; 3];
        for (k, v, dt, kind) in ops {
            ts[k] += dt;
            let sensor = ["a", "b", "c"][k];
            match kind {
                None => d.on_reading(&reading(sensor, "m", v, ts[k]), &mut out),
                Some(rev) => d.on_pane(&pane(sensor, "m", v, ts[k], rev), &mut out),
            }
        }
        prop_assert!(d.key_count() <= 2);

        let mut open: HashMap<(String, Key), Alert> = HashMap::new();
        let mut ids = HashSet::new();
        for a in &out {
            let slot = (a.detector.clone(), a.key.clone());
            prop_assert_eq!(&a.id, &alert::alert_id(&a.key, &a.detector, a.raised_ts));
            match a.state {
                AlertState::Raised => {
                    prop_assert!(!open.contains_key(&slot), "raised twice: {:?}", a);
                    prop_assert!(ids.insert(a.id.clone()), "id reused: {}", a.id);
                    open.insert(slot, a.clone());
                }
                AlertState::Cleared => {
                    let raised = open.remove(&slot);
                    prop_assert!(raised.is_some(), "cleared without raise: {:?}", a);
                    prop_assert_eq!(&raised.unwrap().id, &a.id);
                }
            }
        }
        let mut active: Vec<_> = d.active_alerts().map(|a| a.id.clone()).collect();
        let mut expected: Vec<_> = open.values().map(|a| a.id.clone()).collect();
        active.sort();
        expected.sort();
        prop_assert_eq!(active, expected);
    }
}

// ---- checkpoints ----

proptest! {
    #[test]
    fn detectors_restored_from_a_snapshot_mid_stream_say_what_uninterrupted_ones_say(
        inputs in prop::collection::vec((0u8..3, 0u8..3, -10.0f64..60.0), 0..120),
        cut in 0usize..120,
    ) {
        let specs = || vec![
            threshold_spec("hot", Some(35.0), Some(0.0), 2.0, 500),
            zscore_spec(3, 2),
            silence_spec("quiet"),
        ];
        let mut whole = Detectors::new(specs(), 2);
        let mut split = Detectors::new(specs(), 2);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, (kind, k, v)) in inputs.iter().enumerate() {
            if i == cut {
                let bytes = postcard::to_allocvec(&split.snapshot()).unwrap();
                let state: DetectorsState = postcard::from_bytes(&bytes).unwrap();
                split = Detectors::restore(specs(), 2, state);
            }
            let sensor = format!("s{k}");
            let ts = i as i64 * 100;
            match kind {
                0 => {
                    let r = reading(&sensor, "t", *v, ts);
                    prop_assert_eq!(whole.score(&r), split.score(&r));
                    whole.on_reading(&r, &mut a);
                    split.on_reading(&r, &mut b);
                }
                1 => {
                    let p = pane(&sensor, "t", *v, ts, 0);
                    whole.on_pane(&p, &mut a);
                    split.on_pane(&p, &mut b);
                }
                _ => {
                    let idle = crate::engine::Idle {
                        key: Key::new(sensor, "t"),
                        last_ts: ts - 50,
                        last_arrival: ts - 50,
                        deadline: ts,
                    };
                    whole.on_idle(&idle, &mut a);
                    split.on_idle(&idle, &mut b);
                }
            }
            prop_assert_eq!(&a, &b);
        }
        let mut x: Vec<Alert> = whole.active_alerts().cloned().collect();
        let mut y: Vec<Alert> = split.active_alerts().cloned().collect();
        x.sort_by(|p, q| p.id.cmp(&q.id));
        y.sort_by(|p, q| p.id.cmp(&q.id));
        prop_assert_eq!(x, y);
        prop_assert_eq!(whole.rejected_keys(), split.rejected_keys());
    }
}

#[test]
fn a_snapshot_of_changed_detectors_restores_keys_afresh() {
    let mut d = Detectors::new(vec![threshold_spec("hot", Some(35.0), None, 1.0, 0)], 10);
    let mut out = Vec::new();
    d.on_reading(&reading("g", "t", 40.0, 1), &mut out);
    assert_eq!(d.active_alerts().count(), 1);
    let restored = Detectors::restore(vec![silence_spec("quiet")], 10, d.snapshot());
    assert_eq!(restored.active_alerts().count(), 0, "the threshold is gone");
    assert_eq!(restored.key_count(), 1);
    let same = Detectors::restore(
        vec![threshold_spec("hot", Some(35.0), None, 1.0, 0)],
        10,
        d.snapshot(),
    );
    let a = same.active_alerts().next().unwrap();
    assert_eq!((a.kind, a.id.as_str()), ("threshold", "g/t/hot/1"));
}

#[test]
fn episodes_a_restore_drops_are_cleared_once() {
    let mut d = Detectors::new(vec![threshold_spec("hot", Some(35.0), None, 1.0, 0)], 10);
    let mut out = Vec::new();
    d.on_reading(&reading("g", "t", 40.0, 1_000), &mut out);
    d.on_reading(&reading("h", "t", 41.0, 2_000), &mut out);
    assert_eq!(d.active_alerts().count(), 2);

    // The detector changed: both episodes end, with their ids, kinds and event times kept sane.
    let mut changed = Detectors::restore(vec![silence_spec("quiet")], 10, d.snapshot());
    let mut ended = Vec::new();
    changed.end_orphaned(1_500, &mut ended);
    ended.sort_by(|a, b| a.id.cmp(&b.id));
    let got: Vec<_> = ended
        .iter()
        .map(|a| (a.id.as_str(), a.state, a.kind, a.detector.as_str(), a.ts))
        .collect();
    assert_eq!(
        got,
        [
            (
                "g/t/hot/1000",
                AlertState::Cleared,
                "threshold",
                "hot",
                1_500
            ),
            (
                "h/t/hot/2000",
                AlertState::Cleared,
                "threshold",
                "hot",
                2_000
            ),
        ]
    );
    assert!(
        ended[0].reason.contains("g/t changed"),
        "{}",
        ended[0].reason
    );
    ended.clear();
    changed.end_orphaned(9_000, &mut ended);
    assert!(ended.is_empty(), "once: {ended:?}");

    // Unchanged detectors: nothing ends, the episodes go on.
    let mut same = Detectors::restore(
        vec![threshold_spec("hot", Some(35.0), None, 1.0, 0)],
        10,
        d.snapshot(),
    );
    same.end_orphaned(9_000, &mut ended);
    assert!(ended.is_empty());
    assert_eq!(same.active_alerts().count(), 2);

    // A key over max_keys loses its state: its episode ends too.
    let mut fewer = Detectors::restore(
        vec![threshold_spec("hot", Some(35.0), None, 1.0, 0)],
        1,
        d.snapshot(),
    );
    fewer.end_orphaned(9_000, &mut ended);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].id, "h/t/hot/2000");
    assert_eq!(fewer.active_alerts().count(), 1);
}
