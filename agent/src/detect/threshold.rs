//! Threshold with hysteresis, judged on every reading so an out-of-range value
//! alerts as soon as it is read.
//!
//! Invariants of [`ThresholdState`]:
//! - `active` is `Some` exactly while an episode is raised, and holds that
//!   episode's raised alert (boxed: most keys are normal, and an idle slot
//!   should cost a pointer, not a whole alert).
//! - `normal_since` is `Some` only while raised: the event time of the first
//!   reading of the current unbroken run of readings inside the clear band.
//! - `last_raised_ts` never decreases, so episode ids never repeat.
//!
//! Semantics chosen:
//! - Low and high are one episode: a value jumping from above high to below
//!   low stays raised (no second alert); the alert keeps the limit that raised
//!   it. A sensor swinging between extremes is one fault, not two.
//! - "Stayed inside for `clear_after_ms`" is judged in arrival order: the run
//!   starts at the first in-band reading and the episode clears on the first
//!   in-band reading whose ts is at least `clear_after_ms` past that start. An
//!   out-of-band reading (also one in the hysteresis margin) restarts the run.
//!   Clearing needs a reading: a sensor that goes silent stays raised (silence
//!   is the missing-data detector's business).

use crate::reading::{Reading, TimestampMs};

use super::alert::{self, Alert, num};
use super::spec::{DetectorKind, DetectorSpec};

/// Per (threshold detector, key) state: a few words, whatever the input.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct ThresholdState {
    #[serde(with = "super::alert::boxed")]
    active: Option<Box<Alert>>,
    normal_since: Option<TimestampMs>,
    last_raised_ts: Option<TimestampMs>,
}

impl ThresholdState {
    /// The raised alert of the current episode, if any.
    pub(super) fn active(&self) -> Option<&Alert> {
        self.active.as_deref()
    }

    /// The stored alert, for restoring its static `kind` after a checkpoint.
    pub(super) fn active_mut(&mut self) -> Option<&mut Alert> {
        self.active.as_deref_mut()
    }

    /// Anomaly score of value `x` in [0, 1]: 0 inside `[low, high]`; beyond a
    /// limit by `d`, `0.5 + 0.5 d / (d + s)`, so exactly 0.5 just past it and
    /// towards 1 far out. The scale `s` is the hysteresis, or 5% of the limit
    /// (at least 1e-9) when there is none.
    pub(super) fn score(spec: &DetectorSpec, x: f64) -> f64 {
        let DetectorKind::Threshold {
            high,
            low,
            hysteresis,
            ..
        } = spec.kind
        else {
            return 0.0;
        };
        let beyond = |d: f64, limit: f64| {
            let s = if hysteresis > 0.0 {
                hysteresis
            } else {
                (limit.abs() * 0.05).max(1e-9)
            };
            0.5 + 0.5 * d / (d + s)
        };
        match (high, low) {
            (Some(h), _) if x > h => beyond(x - h, h),
            (_, Some(l)) if x < l => beyond(l - x, l),
            _ => 0.0,
        }
    }

    /// Judges one reading. Allocates only when it pushes an alert.
    pub(super) fn observe(&mut self, spec: &DetectorSpec, r: &Reading, out: &mut Vec<Alert>) {
        let DetectorKind::Threshold {
            high,
            low,
            hysteresis,
            clear_after_ms,
        } = spec.kind
        else {
            return;
        };
        let x = r.value;

        if self.active.is_none() {
            let crossed = match (high, low) {
                (Some(h), _) if x > h => Some(("above high", h)),
                (_, Some(l)) if x < l => Some(("below low", l)),
                _ => None,
            };
            if let Some((side, limit)) = crossed {
                let raised = alert::raise(
                    spec,
                    &r.key,
                    r.ts,
                    &mut self.last_raised_ts,
                    alert::Raise {
                        value: x,
                        baseline: None,
                        threshold: limit,
                        reason: format!(
                            "value {} {side} {} (hysteresis {})",
                            num(x),
                            num(limit),
                            num(hysteresis)
                        ),
                    },
                );
                out.push(raised.clone());
                self.active = Some(Box::new(raised));
                self.normal_since = None;
            }
            return;
        }

        let below_high = match high {
            Some(h) => x <= h - hysteresis,
            None => true,
        };
        let above_low = match low {
            Some(l) => x >= l + hysteresis,
            None => true,
        };
        if !(below_high && above_low) {
            self.normal_since = None;
            return;
        }
        let since = *self.normal_since.get_or_insert(r.ts);
        let normal_for = r.ts.saturating_sub(since);
        if normal_for < clear_after_ms {
            return;
        }
        if let Some(raised) = self.active.take() {
            let reason = format!(
                "value {} back within {} for {normal_for} ms (clear after {clear_after_ms} ms)",
                num(x),
                band(high, low, hysteresis)
            );
            out.push(alert::clear(*raised, x, None, reason, r.ts));
        }
        self.normal_since = None;
    }
}

/// The clear band, for humans.
fn band(high: Option<f64>, low: Option<f64>, hysteresis: f64) -> String {
    match (low, high) {
        (Some(l), Some(h)) => format!("[{}, {}]", num(l + hysteresis), num(h - hysteresis)),
        (Some(l), None) => format!(">= {}", num(l + hysteresis)),
        (None, Some(h)) => format!("<= {}", num(h - hysteresis)),
        (None, None) => String::from("any value"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::detect::test_support::*;
    use crate::detect::{AlertState, Detectors, Key, Severity};

    #[test]
    fn a_reading_above_high_raises_one_alert_with_its_value_limit_and_reason() {
        let mut d = too_hot(0);
        let out = feed(&mut d, &[(20.0, 1000), (41.3, 2000)]);
        assert_eq!(out.len(), 1);
        let a = &out[0];
        assert_eq!(a.state, AlertState::Raised);
        assert_eq!(a.id, "greenhouse/temperature/too-hot/2000");
        assert_eq!(a.detector, "too-hot");
        assert_eq!(a.kind, "threshold");
        assert_eq!(a.key, Key::new("greenhouse", "temperature"));
        assert_eq!(a.severity, Severity::Warning);
        assert_eq!((a.value, a.threshold, a.baseline), (41.3, 35.0, None));
        assert_eq!(a.reason, "value 41.3 above high 35 (hysteresis 1)");
        assert_eq!((a.ts, a.raised_ts), (2000, 2000));
    }

    #[test]
    fn a_reading_exactly_at_high_does_not_raise() {
        let mut d = too_hot(0);
        assert!(feed(&mut d, &[(35.0, 1000)]).is_empty());
    }

    #[test]
    fn a_reading_above_high_while_raised_does_not_raise_again() {
        let mut d = too_hot(0);
        let out = feed(
            &mut d,
            &[(40.0, 1000), (41.0, 2000), (50.0, 3000), (36.0, 4000)],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(d.active_alerts().count(), 1);
    }

    #[test]
    fn a_value_just_under_high_stays_raised_inside_the_hysteresis_band() {
        let mut d = too_hot(0);
        let out = feed(&mut d, &[(40.0, 1000), (34.9, 2000), (34.01, 3000)]);
        assert_eq!(
            out.len(),
            1,
            "34.9 and 34.01 are under high but above high - hysteresis"
        );
        let out = feed(&mut d, &[(34.0, 4000)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, AlertState::Cleared);
        assert_eq!(out[0].ts, 4000);
    }

    #[test]
    fn clear_after_counts_event_time_and_a_reading_in_the_margin_restarts_it() {
        let mut d = too_hot(5000);
        assert_eq!(feed(&mut d, &[(40.0, 0)]).len(), 1);
        // Normal from 1000; 5999 is only 4999 ms later.
        assert!(feed(&mut d, &[(30.0, 1000), (30.0, 3000), (30.0, 5999)]).is_empty());
        // 34.5 is inside the hysteresis margin: the normal run starts over at 7000.
        assert!(feed(&mut d, &[(34.5, 6000), (30.0, 7000), (30.0, 11_999)]).is_empty());
        let out = feed(&mut d, &[(30.0, 12_000)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, AlertState::Cleared);
        assert_eq!((out[0].ts, out[0].value), (12_000, 30.0));
        assert!(out[0].reason.contains("for 5000 ms"), "{}", out[0].reason);
    }

    #[test]
    fn clear_after_zero_clears_at_the_first_normal_reading() {
        let mut d = too_hot(0);
        let out = feed(&mut d, &[(40.0, 1000), (20.0, 1001)]);
        assert_eq!(
            out.iter().map(|a| a.state).collect::<Vec<_>>(),
            [AlertState::Raised, AlertState::Cleared]
        );
        assert_eq!(d.active_alerts().count(), 0);
    }

    #[test]
    fn a_reading_below_low_raises_and_clears_only_above_low_plus_hysteresis() {
        let mut d = Detectors::new(
            vec![threshold_spec("too-cold", None, Some(5.0), 1.0, 0)],
            10,
        );
        let out = feed(&mut d, &[(4.0, 1000), (5.5, 2000)]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].threshold, out[0].reason.as_str()),
            (5.0, "value 4 below low 5 (hysteresis 1)")
        );
        let out = feed(&mut d, &[(6.0, 3000)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, AlertState::Cleared);
    }

    #[test]
    fn jumping_from_above_high_to_below_low_stays_one_episode() {
        let mut d = Detectors::new(
            vec![threshold_spec("range", Some(35.0), Some(5.0), 1.0, 0)],
            10,
        );
        let out = feed(&mut d, &[(40.0, 1000), (0.0, 2000), (45.0, 3000)]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].threshold, 35.0,
            "the alert keeps the limit that raised it"
        );
        let out = feed(&mut d, &[(20.0, 4000)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, AlertState::Cleared);
        assert_eq!(
            out[0].reason,
            "value 20 back within [6, 34] for 0 ms (clear after 0 ms)"
        );
    }

    #[test]
    fn the_raised_and_the_cleared_alert_of_one_episode_share_an_id() {
        let mut d = too_hot(0);
        let out = feed(&mut d, &[(40.0, 1000), (20.0, 2000)]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, out[1].id);
        assert_eq!(out[1].raised_ts, 1000);
        assert_eq!(out[1].detector, out[0].detector);
    }

    #[test]
    fn the_next_episode_gets_a_new_id() {
        let mut d = too_hot(0);
        let out = feed(&mut d, &[(40.0, 1000), (20.0, 2000), (40.0, 3000)]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].state, AlertState::Raised);
        assert_eq!(out[2].id, "greenhouse/temperature/too-hot/3000");
        assert_ne!(out[2].id, out[0].id);
    }

    #[test]
    fn episodes_raised_at_the_same_event_time_still_get_distinct_ids() {
        let mut d = too_hot(0);
        // Equal and out-of-order timestamps: ids must still never repeat.
        let out = feed(
            &mut d,
            &[
                (40.0, 1000),
                (20.0, 1000),
                (40.0, 1000),
                (20.0, 900),
                (40.0, 900),
            ],
        );
        let raised: Vec<_> = out
            .iter()
            .filter(|a| a.state == AlertState::Raised)
            .collect();
        assert_eq!(raised.len(), 3);
        assert_eq!(
            raised.iter().map(|a| a.raised_ts).collect::<Vec<_>>(),
            [1000, 1001, 1002]
        );
        assert_eq!(
            raised.iter().map(|a| a.ts).collect::<Vec<_>>(),
            [1000, 1000, 900],
            "ts stays true"
        );
    }

    #[test]
    fn the_threshold_score_is_zero_inside_half_at_the_limit_and_grows_beyond() {
        let spec = threshold_spec("t", Some(35.0), Some(5.0), 1.0, 0);
        let score = |x| super::ThresholdState::score(&spec, x);
        assert_eq!(score(20.0), 0.0);
        assert_eq!(score(35.0), 0.0);
        assert!((score(35.0 + 1e-9) - 0.5).abs() < 1e-6);
        assert!((score(36.0) - 0.75).abs() < 1e-12);
        assert!((score(4.0) - 0.75).abs() < 1e-12);
        assert!(score(1e9) < 1.0 && score(1e9) > 0.99);
    }

    #[test]
    fn threshold_detectors_ignore_panes() {
        let mut d = too_hot(0);
        let mut out = Vec::new();
        d.on_pane(&pane("greenhouse", "temperature", 99.0, 1000, 0), &mut out);
        assert!(out.is_empty());
        assert_eq!(d.key_count(), 0, "no zscore spec: panes take no key slot");
    }
}
