//! Z-score of each on-time window's mean against an exponentially weighted
//! baseline of the previous windows.
//!
//! Invariants of [`ZScoreState`]:
//! - `windows` counts the windows absorbed into the baseline (saturating; it
//!   only matters up to `warmup`). While it is 0, `mean` and `var` mean nothing.
//! - `var >= 0` (the update below only adds non-negative terms for alpha in (0, 1]).
//! - `active` is `Some` exactly while an episode is raised; `normal_streak` is
//!   the number of consecutive normal windows since the last abnormal one of
//!   that episode, and is 0 while not raised.
//! - `last_raised_ts` never decreases, so episode ids never repeat.
//!
//! Semantics chosen:
//! - Only revision 0 counts. Late revisions re-describe a window that was
//!   already judged; feeding them in would count one window several times
//!   and could raise on data the consumer sees as a correction.
//! - The first window seeds the baseline; z is judged only once `max(warmup, 1)`
//!   windows have been absorbed. Warmup windows are absorbed whatever they hold.
//! - A window judged anomalous (|z| > threshold), and while raised any window
//!   not yet back below `threshold - hysteresis`, is NOT absorbed. Otherwise a
//!   long anomaly would drag the mean towards itself and inflate the variance
//!   until it looked normal: the alert would clear while the fault persists, and
//!   the inflated variance would hide the next one. The price: a genuine,
//!   permanent level shift stays raised until an operator notices, which is
//!   the safer failure.
//! - `clear_after` 0 behaves as 1: clearing needs at least one normal window.

use crate::engine::Pane;
use crate::reading::TimestampMs;

use super::alert::{self, Alert};
use super::spec::{DetectorKind, DetectorSpec};

/// Per (zscore detector, key) state: a few words, whatever the input.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct ZScoreState {
    mean: f64,
    var: f64,
    windows: u32,
    #[serde(with = "super::alert::boxed")]
    active: Option<Box<Alert>>,
    normal_streak: u32,
    last_raised_ts: Option<TimestampMs>,
}

impl ZScoreState {
    /// The raised alert of the current episode, if any.
    pub(super) fn active(&self) -> Option<&Alert> {
        self.active.as_deref()
    }

    /// The stored alert, for restoring its static `kind` after a checkpoint.
    pub(super) fn active_mut(&mut self) -> Option<&mut Alert> {
        self.active.as_deref_mut()
    }

    /// Anomaly score of a single value `x` against the current baseline, in
    /// [0, 1): `z^2 / (z^2 + threshold^2)`, 0.5 exactly at the alert threshold.
    /// 0 until the baseline has absorbed `warmup` windows.
    pub(super) fn score(&self, spec: &DetectorSpec, x: f64) -> f64 {
        let DetectorKind::ZScore {
            threshold,
            warmup,
            min_stddev,
            ..
        } = spec.kind
        else {
            return 0.0;
        };
        if self.windows == 0 || self.windows < warmup {
            return 0.0;
        }
        let z = (x - self.mean) / self.var.sqrt().max(min_stddev);
        let (z2, t2) = (z * z, threshold * threshold);
        if z2.is_finite() { z2 / (z2 + t2) } else { 1.0 }
    }

    /// Judges one pane. Allocates only when it pushes an alert.
    pub(super) fn observe(&mut self, spec: &DetectorSpec, p: &Pane, out: &mut Vec<Alert>) {
        let DetectorKind::ZScore {
            alpha,
            threshold,
            hysteresis,
            warmup,
            clear_after,
            min_stddev,
        } = spec.kind
        else {
            return;
        };
        let x = p.agg.mean;
        // An empty window has no mean worth judging; a non-finite one would
        // poison the baseline for good.
        if p.revision != 0 || p.agg.count == 0 || !x.is_finite() {
            return;
        }
        if self.windows == 0 {
            self.mean = x;
            self.var = 0.0;
            self.windows = 1;
            return;
        }
        if self.windows < warmup {
            self.absorb(x, alpha);
            return;
        }

        let baseline = self.mean;
        let stddev = self.var.sqrt().max(min_stddev);
        let z = (x - baseline) / stddev;

        let Some(raised) = self.active.take() else {
            if z.abs() > threshold {
                let side = if z > 0.0 { "above" } else { "below" };
                let raised = alert::raise(
                    spec,
                    &p.key,
                    p.end,
                    &mut self.last_raised_ts,
                    alert::Raise {
                        value: x,
                        baseline: Some(baseline),
                        threshold,
                        reason: format!(
                            "window mean {x} is {:.2} stddev {side} baseline {baseline} \
                             (stddev {stddev}, threshold {threshold})",
                            z.abs()
                        ),
                    },
                );
                out.push(raised.clone());
                self.active = Some(Box::new(raised));
                self.normal_streak = 0;
            } else {
                self.absorb(x, alpha);
            }
            return;
        };

        if z.abs() >= threshold - hysteresis {
            self.normal_streak = 0;
            self.active = Some(raised);
            return;
        }
        self.absorb(x, alpha);
        self.normal_streak = self.normal_streak.saturating_add(1);
        if self.normal_streak < clear_after.max(1) {
            self.active = Some(raised);
            return;
        }
        let reason = format!(
            "window mean {x} back within {:.2} stddev of baseline {baseline} for {} windows",
            threshold - hysteresis,
            self.normal_streak
        );
        out.push(alert::clear(*raised, x, Some(baseline), reason, p.end));
        self.normal_streak = 0;
    }

    /// Exponentially weighted mean and variance (Finch, "Incremental
    /// calculation of weighted mean and variance", 2009): O(1), no history.
    fn absorb(&mut self, x: f64, alpha: f64) {
        let diff = x - self.mean;
        let incr = alpha * diff;
        self.mean += incr;
        self.var = (1.0 - alpha) * (self.var + diff * incr);
        self.windows = self.windows.saturating_add(1);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::detect::test_support::*;
    use crate::detect::{AlertState, Detectors};

    #[test]
    fn zscore_raises_nothing_during_warmup_whatever_the_windows_hold() {
        let mut d = Detectors::new(vec![zscore_spec(5, 2)], 10);
        assert!(feed_panes(&mut d, &[10.0, 500.0, -500.0, 1e6, 10.0], 1000).is_empty());
    }

    #[test]
    fn zscore_judges_the_window_right_after_warmup() {
        let mut d = Detectors::new(vec![zscore_spec(3, 2)], 10);
        let out = feed_panes(&mut d, &[10.0, 10.5, 9.5, 100.0], 1000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ts, 4000);
    }

    #[test]
    fn zscore_raises_on_a_spike_pane_and_clears_after_clear_after_normal_panes() {
        let mut d = Detectors::new(vec![zscore_spec(5, 3)], 10);
        assert!(feed_panes(&mut d, &CALM, 1000).is_empty());
        let out = feed_panes(&mut d, &[30.0], 11_000);
        assert_eq!(out.len(), 1);
        let raised = &out[0];
        assert_eq!(
            (raised.state, raised.kind, raised.ts),
            (AlertState::Raised, "zscore", 11_000)
        );
        assert_eq!((raised.value, raised.threshold), (30.0, 3.0));
        let baseline = raised.baseline.unwrap();
        assert!((9.5..10.5).contains(&baseline), "baseline {baseline}");
        assert!(
            raised.reason.contains("above baseline"),
            "{}",
            raised.reason
        );

        assert!(
            feed_panes(&mut d, &[10.0, 10.1], 12_000).is_empty(),
            "two normal windows are not three"
        );
        let out = feed_panes(&mut d, &[9.9], 14_000);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].state, out[0].ts), (AlertState::Cleared, 14_000));
        assert_eq!(out[0].id, raised.id);
    }

    #[test]
    fn a_window_inside_the_zscore_hysteresis_margin_restarts_the_clear_count() {
        let mut d = Detectors::new(vec![zscore_spec(5, 2)], 10);
        feed_panes(&mut d, &CALM, 1000);
        assert_eq!(feed_panes(&mut d, &[30.0], 11_000).len(), 1);
        // After one more calm window the baseline is about 9.99 with stddev about 0.21,
        // so 10.55 sits at |z| ~ 2.7: below the threshold 3, not below 3 - 1 = 2.
        assert!(feed_panes(&mut d, &[10.0, 10.55, 10.0], 12_000).is_empty());
        assert_eq!(feed_panes(&mut d, &[10.0], 15_000).len(), 1);
    }

    #[test]
    fn a_spike_below_the_baseline_raises_too() {
        let mut d = Detectors::new(vec![zscore_spec(5, 2)], 10);
        feed_panes(&mut d, &CALM, 1000);
        let out = feed_panes(&mut d, &[-5.0], 11_000);
        assert_eq!(out.len(), 1);
        assert!(
            out[0].reason.contains("below baseline"),
            "{}",
            out[0].reason
        );
    }

    #[test]
    fn a_long_anomaly_does_not_become_the_baseline() {
        let mut d = Detectors::new(vec![zscore_spec(5, 2)], 10);
        feed_panes(&mut d, &CALM, 1000);
        let out = feed_panes(&mut d, &[100.0; 200], 11_000);
        assert_eq!(
            out.len(),
            1,
            "raised once, never cleared by getting used to it"
        );
        assert_eq!(d.active_alerts().count(), 1);
        let out = feed_panes(&mut d, &[10.0, 10.0], 300_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, AlertState::Cleared);
        let baseline = out[0].baseline.unwrap();
        assert!(
            (9.5..10.5).contains(&baseline),
            "baseline drifted to {baseline}"
        );
    }

    #[test]
    fn a_flat_baseline_gives_a_finite_z_and_raises_on_a_real_change() {
        let mut d = Detectors::new(vec![zscore_spec(5, 2)], 10);
        assert!(
            feed_panes(&mut d, &[20.0; 10], 1000).is_empty(),
            "z is 0, not NaN"
        );
        // 20.5 is 5 floors (min_stddev 0.1) away.
        let out = feed_panes(&mut d, &[20.5], 11_000);
        assert_eq!(out.len(), 1);
        assert!(out[0].reason.contains("5.00 stddev"), "{}", out[0].reason);
        assert!(!out[0].reason.contains("NaN") && !out[0].reason.contains("inf"));
    }

    #[test]
    fn late_panes_neither_raise_nor_feed_the_baseline() {
        let mut d = Detectors::new(vec![zscore_spec(5, 2)], 10);
        feed_panes(&mut d, &CALM, 1000);
        let mut out = Vec::new();
        for rev in 1..50 {
            d.on_pane(
                &pane("greenhouse", "temperature", 100.0, 10_000, rev),
                &mut out,
            );
        }
        assert!(out.is_empty());
        let out = feed_panes(&mut d, &[100.0], 11_000);
        assert_eq!(
            out.len(),
            1,
            "100 is still a spike: late panes were not absorbed"
        );
        assert!((9.5..10.5).contains(&out[0].baseline.unwrap()));
    }

    #[test]
    fn the_zscore_score_is_half_at_the_threshold_and_zero_before_warmup() {
        let spec = zscore_spec(3, 2);
        let mut d = Detectors::new(vec![spec], 10);
        let r = |v| reading("greenhouse", "temperature", v, 1);
        assert_eq!(
            d.score(&r(50.0)),
            None,
            "unknown key: nothing to score against"
        );
        feed_panes(&mut d, &[10.0, 10.0], 1000);
        assert_eq!(
            d.score(&r(50.0)).map(|s| s.0),
            Some(0.0),
            "still warming up"
        );
        feed_panes(&mut d, &[10.0], 3000);
        // Flat baseline at 10, stddev floored at 0.1, threshold 3: 10.3 is z = 3.
        let (s, name) = d.score(&r(10.3)).unwrap();
        assert!((s - 0.5).abs() < 1e-9, "{s}");
        assert_eq!(name, "spike");
        assert_eq!(d.score(&r(10.0)).unwrap().0, 0.0);
    }

    #[test]
    fn zscore_detectors_ignore_readings() {
        let mut d = Detectors::new(vec![zscore_spec(0, 1)], 10);
        let out = feed(&mut d, &[(1e9, 1), (-1e9, 2), (1e9, 3)]);
        assert!(out.is_empty());
    }
}
