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
