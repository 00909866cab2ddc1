//! Synthetic cases that pin the `reference` detector: a fault after
//! commissioning stays alerted for as long as it lasts, normal operation
//! stays quiet, and a commissioning that itself contains a fault learns the
//! fault as normal.

#![allow(clippy::unwrap_used)]

use crate::detect::test_support::{Noise, reading};
use crate::detect::{Alert, AlertState, DetectorKind, DetectorSpec, Detectors, Glob, Severity};
use crate::reading::TimestampMs;

fn reference(commission: u32) -> DetectorSpec {
    DetectorSpec {
        name: "off-normal".into(),
        sensor: Glob::new("*"),
        metric: Glob::new("*"),
        severity: Severity::Warning,
        kind: DetectorKind::Reference {
            commission,
            threshold: 6.0,
            sustain: 3,
            clear_after: 10,
        },
    }
}

const T0: TimestampMs = 1_700_000_000_000;

/// Readings `start..start + n`, one second apart, valued `f(i, noise)`.
fn series(n: usize, start: usize, f: impl Fn(usize, f64) -> f64) -> Vec<(f64, TimestampMs)> {
    let mut noise = Noise(0x2545_F491_4F6C_DD1D ^ start as u64);
    (start..start + n)
        .map(|i| (f(i, noise.next()), T0 + 1000 * i as i64))
        .collect()
}

/// Feeds the readings; returns the alerts, the scores and, per reading,
/// whether an alert was open after it.
fn run(d: &mut Detectors, values: &[(f64, TimestampMs)]) -> (Vec<Alert>, Vec<f64>, Vec<bool>) {
    let (mut out, mut scores, mut open) = (Vec::new(), Vec::new(), Vec::new());
    for &(v, ts) in values {
        let r = reading("pump", "flow", v, ts);
        scores.push(d.on_reading_scored(&r, &mut out).unwrap().0);
        open.push(d.active_alerts().count() > 0);
    }
    (out, scores, open)
}

fn raised(out: &[Alert]) -> Vec<&Alert> {
    out.iter()
        .filter(|a| a.state == AlertState::Raised)
        .collect()
}

const NORMAL: fn(usize, f64) -> f64 = |_, e| 50.0 + e;

#[test]
fn a_sustained_offset_after_commissioning_stays_alerted_while_it_lasts() {
    let mut d = Detectors::new(vec![reference(300)], 10);
    let (out, _, _) = run(&mut d, &series(600, 0, NORMAL));
    assert!(out.is_empty(), "{out:?}");
    // A fault of 3 noise stddev for an hour: `auto` would accept it within
    // minutes; the reference keeps it raised to the end.
    let (out, scores, open) = run(&mut d, &series(3600, 600, |_, e| 53.0 + e));
    let r = raised(&out);
    assert_eq!(r.len(), 1, "{out:?}");
    assert!(r[0].ts <= T0 + 620 * 1000, "late: {}", r[0].ts);
    assert!(open[30..].iter().all(|&o| o), "cleared during the fault");
    assert!(scores[30..].iter().all(|&s| s > 0.5));
    assert!(
        r[0].reason.starts_with("away from commissioned normal:")
            && r[0].reason.contains(" above the 49.98 learnt"),
        "{}",
        r[0].reason
    );
    // Back to normal: cleared within a few dozen readings, then quiet.
    let (out, _, open) = run(&mut d, &series(600, 4200, NORMAL));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].state, AlertState::Cleared);
    assert!(out[0].ts <= T0 + 4260 * 1000, "cleared late: {}", out[0].ts);
    assert!(!open[60..].iter().any(|&o| o));
}

#[test]
fn steady_noise_after_commissioning_raises_nothing() {
    let mut d = Detectors::new(vec![reference(300)], 10);
    let (out, scores, _) = run(&mut d, &series(50_000, 0, NORMAL));
    assert!(out.is_empty(), "{out:?}");
    assert!(scores.iter().all(|s| (0.0..0.5).contains(s)));
}

#[test]
fn correlated_noise_is_quiet_when_commissioning_sees_its_wander() {
    // AR(1) noise with lag-1 correlation 0.9 (memory ~10 s): the commissioning
    // minutes see how far its recent level wanders, so nothing is raised.
    let mut d = Detectors::new(vec![reference(300)], 10);
    let mut noise = Noise(17);
    let mut x = 0.0;
    let values: Vec<(f64, TimestampMs)> = (0..50_000)
        .map(|i| {
            x = 0.9 * x + noise.next();
            (50.0 + x, T0 + 1000 * i)
        })
        .collect();
    let (out, _, _) = run(&mut d, &values);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn nothing_is_judged_while_commissioning() {
    let mut d = Detectors::new(vec![reference(300)], 10);
    // Wild values during commissioning are learnt, not judged.
    let (out, scores, _) = run(
        &mut d,
        &series(300, 0, |i, e| if i % 50 == 0 { 500.0 } else { 50.0 + e }),
    );
    assert!(out.is_empty());
    assert!(scores.iter().all(|&s| s == 0.0));
}

#[test]
fn a_fault_during_commissioning_becomes_the_reference() {
    // Documented limitation: the machine was commissioned while faulty (3 noise
    // stddev high). The fault is learnt as normal and stays silent; the repair
    // is what gets alerted, and stays alerted until a new commissioning.
    let mut d = Detectors::new(vec![reference(300)], 10);
    let (out, _, _) = run(&mut d, &series(900, 0, |_, e| 53.0 + e));
    assert!(out.is_empty(), "{out:?}");
    let (out, _, open) = run(&mut d, &series(1800, 900, NORMAL));
    let r = raised(&out);
    assert_eq!(r.len(), 1, "{out:?}");
    assert!(
        r[0].reason.contains(" below the 52.98 learnt"),
        "{}",
        r[0].reason
    );
    assert!(open[30..].iter().all(|&o| o));
}

#[test]
fn the_score_is_the_same_in_any_unit() {
    let scores = |scale: f64| {
        let mut d = Detectors::new(vec![reference(300)], 10);
        let mut v = series(600, 0, NORMAL);
        v.extend(series(100, 600, |_, e| 51.5 + e));
        let (_, s, _) = run(
            &mut d,
            &v.iter().map(|&(x, t)| (x * scale, t)).collect::<Vec<_>>(),
        );
        s
    };
    let (volts, millivolts) = (scores(1.0), scores(1000.0));
    for (a, b) in volts.iter().zip(&millivolts) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    assert!(volts[650] > 0.5, "{}", volts[650]);
}

#[test]
fn a_spike_after_commissioning_is_not_a_departure() {
    // One absurd reading moves the recent level a tenth of the way: with a
    // moderate spike (10 noise stddev) nothing is sustained for 3 readings.
    let mut d = Detectors::new(vec![reference(300)], 10);
    run(&mut d, &series(600, 0, NORMAL));
    let (out, _, _) = run(
        &mut d,
        &series(100, 600, |i, e| if i == 620 { 60.0 } else { 50.0 + e }),
    );
    assert!(out.is_empty(), "{out:?}");
}

/// A snapshot of `d`, through the bytes a checkpoint stores, restored under
/// `spec`.
fn restart(d: &Detectors, spec: DetectorSpec) -> Detectors {
    let bytes = postcard::to_allocvec(&d.snapshot()).unwrap();
    Detectors::restore(vec![spec], 10, postcard::from_bytes(&bytes).unwrap())
}

#[test]
fn commissioning_survives_a_restart_and_a_new_commission_setting_starts_it_again() {
    let mut d = Detectors::new(vec![reference(300)], 10);
    run(&mut d, &series(600, 0, NORMAL));
    let (out, _, open) = run(&mut d, &series(100, 600, |_, e| 53.0 + e));
    assert_eq!(raised(&out).len(), 1, "{out:?}");
    assert!(open[99]);

    // Same setting: the reference is kept, the fault stays alerted.
    let mut same = restart(&d, reference(300));
    let (out, scores, open) = run(&mut same, &series(50, 700, |_, e| 53.0 + e));
    assert!(out.is_empty(), "{out:?}");
    assert!(open.iter().all(|&o| o) && scores.iter().all(|&s| s > 0.5));

    // Another setting: the key commissions again on what it reads now (the
    // new normal); the open alert clears instead of being lost.
    let mut anew = restart(&d, reference(301));
    let (out, scores, open) = run(&mut anew, &series(301, 700, |_, e| 53.0 + e));
    assert!(scores.iter().all(|&s| s == 0.0));
    assert!(!open[300]);
    assert!(
        out.iter().any(|a| a.state == AlertState::Cleared),
        "{out:?}"
    );
    let (out, _, _) = run(&mut anew, &series(600, 1001, |_, e| 53.0 + e));
    assert!(out.is_empty(), "{out:?}");
}
