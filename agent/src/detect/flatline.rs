//! Flatline: a stuck sensor, one whose readings stay within `tolerance` of each
//! other for at least `min_duration_ms` of event time and `min_readings`
//! readings. A frozen register or a hung conversion repeats its last value bit
//! for bit, so the default tolerance is 0: real sensors always have some noise.
//! Judged on every reading; the episode clears at the first reading that
//! leaves the band (a working sensor moves at once).
//!
//! Invariants of [`FlatlineState`]:
//! - `run` is the unbroken run of readings (in arrival order) whose values
//!   all lie within `[lo, hi]`, with `hi - lo <= tolerance`, the run's first
//!   reading at `start_ts`; `count >= 1` while `run` is `Some`;
//! - `active` is `Some` exactly while an episode is raised, and then `run`
//!   is the run that raised it (or its continuation);
//! - `last_raised_ts` never decreases, so episode ids never repeat.
//!
//! O(1) per key: the run is summarised by four numbers, never stored.

use crate::reading::{Reading, TimestampMs};

use super::alert::{self, Alert, num};
use super::spec::{DetectorKind, DetectorSpec};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Run {
    start_ts: TimestampMs,
    count: u64,
    lo: f64,
    hi: f64,
}

/// Per (flatline detector, key) state.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct FlatlineState {
    run: Option<Run>,
    #[serde(with = "super::alert::boxed")]
    active: Option<Box<Alert>>,
    last_raised_ts: Option<TimestampMs>,
}

impl FlatlineState {
    /// The raised alert of the current episode, if any.
    pub(super) fn active(&self) -> Option<&Alert> {
        self.active.as_deref()
    }

    /// The same, to restore its static fields after a checkpoint.
    pub(super) fn active_mut(&mut self) -> Option<&mut Alert> {
        self.active.as_deref_mut()
    }

    /// Judges one reading.
    pub(super) fn observe(&mut self, spec: &DetectorSpec, r: &Reading, out: &mut Vec<Alert>) {
        let DetectorKind::Flatline {
            tolerance,
            min_duration_ms,
            min_readings,
        } = spec.kind
        else {
            return;
        };
        let x = r.value;
        let extended = self.run.and_then(|run| {
            let (lo, hi) = (run.lo.min(x), run.hi.max(x));
            (hi - lo <= tolerance).then_some(Run {
                count: run.count + 1,
                lo,
                hi,
                ..run
            })
        });
        let run = match extended {
            Some(run) => run,
            None => {
                // The value moved: a stuck episode is over.
                if let Some(raised) = self.active.take() {
                    let reason = format!(
                        "value {} moved out of [{}, {}]: the sensor is live again",
                        num(x),
                        num(raised.value - tolerance),
                        num(raised.value + tolerance)
                    );
                    out.push(alert::clear(*raised, x, None, reason, r.ts));
                }
                Run {
                    start_ts: r.ts,
                    count: 1,
                    lo: x,
                    hi: x,
                }
            }
        };
        self.run = Some(run);
        let stuck_for = r.ts.saturating_sub(run.start_ts);
        if self.active.is_some()
            || run.count < u64::from(min_readings)
            || stuck_for < min_duration_ms
        {
            return;
        }
        let raised = alert::raise(
            spec,
            &r.key,
            r.ts,
            &mut self.last_raised_ts,
            alert::Raise {
                value: x,
                baseline: None,
                threshold: tolerance,
                reason: format!(
                    "value stuck at {}: {} readings within {} of each other for {stuck_for} ms",
                    num(x),
                    run.count,
                    num(tolerance)
                ),
            },
        );
        out.push(raised.clone());
        self.active = Some(Box::new(raised));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::detect::test_support::reading;
    use crate::detect::{Alert, AlertState, DetectorKind, DetectorSpec, Detectors, Glob, Severity};

    fn stuck(tolerance: f64, min_duration_ms: i64, min_readings: u32) -> Detectors {
        Detectors::new(
            vec![DetectorSpec {
                name: "stuck".into(),
                sensor: Glob::new("*"),
                metric: Glob::new("*"),
                severity: Severity::Warning,
                kind: DetectorKind::Flatline {
                    tolerance,
                    min_duration_ms,
                    min_readings,
                },
            }],
            10,
        )
    }

    fn feed(d: &mut Detectors, vals: &[(f64, i64)]) -> Vec<Alert> {
        let mut out = Vec::new();
        for &(v, ts) in vals {
            d.on_reading(&reading("air", "temperature", v, ts), &mut out);
        }
        out
    }

    #[test]
    fn identical_readings_for_the_duration_raise_once_and_a_moving_value_clears() {
        let mut d = stuck(0.0, 3000, 3);
        let out = feed(
            &mut d,
            &[
                (20.1, 0),
                (21.0, 1000),
                (21.0, 2000),
                (21.0, 3000),
                (21.0, 4000),
                (21.0, 5000),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, AlertState::Raised);
        assert_eq!(out[0].kind, "flatline");
        assert_eq!((out[0].ts, out[0].value), (4000, 21.0));
        assert_eq!(out[0].id, "air/temperature/stuck/4000");
        let out = feed(&mut d, &[(21.2, 6000)]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].state, out[0].ts), (AlertState::Cleared, 6000));
        assert_eq!(d.active_alerts().count(), 0);
    }

    #[test]
    fn noise_within_the_tolerance_still_counts_as_stuck_and_beyond_it_does_not() {
        let mut d = stuck(0.05, 2000, 3);
        assert_eq!(
            feed(&mut d, &[(5.0, 0), (5.04, 1000), (5.01, 2000)]).len(),
            1
        );
        let mut d = stuck(0.05, 2000, 3);
        assert!(feed(&mut d, &[(5.0, 0), (5.06, 1000), (5.0, 2000), (5.06, 3000)]).is_empty());
    }

    #[test]
    fn too_few_readings_do_not_raise_even_over_a_long_time() {
        let mut d = stuck(0.0, 1000, 5);
        assert!(feed(&mut d, &[(1.0, 0), (1.0, 60_000), (1.0, 120_000)]).is_empty());
        assert_eq!(feed(&mut d, &[(1.0, 130_000), (1.0, 140_000)]).len(), 1);
    }
}
