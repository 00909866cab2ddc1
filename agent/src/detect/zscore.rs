//! Z-score of each on-time window's mean against an exponentially weighted
//! baseline of the previous windows.
//!
//! Invariants of [`ZScoreState`]:
//! - `windows` counts the windows absorbed into the baseline (saturating; it
//!   only matters up to `warmup`). While it is 0, `mean`, `var`, `level` and
//!   `spread` mean nothing.
//! - `var >= 0` and `spread >= 0` (the updates only add non-negative terms for
//!   alpha in (0, 1]).
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
//! - Every judged window is absorbed, but winsorised: a value more than
//!   `threshold` standard deviations away enters the baseline as if it were
//!   exactly `threshold` away. One spike therefore moves the mean by at most
//!   `alpha * threshold` standard deviations, so it cannot hide the next one;
//!   a level that persists pulls the mean a bounded step per window and widens
//!   the variance until it is the new normal, and the alert clears. (A baseline
//!   that never absorbs what it flagged locks up: after a level shift, a trend
//!   or a daily swing the alert would stay raised for good.)
//! - The variance remembers four times longer than the mean (`alpha / 4`), so
//!   a few calm windows do not make the next ordinary wiggle look huge.
//! - The standard deviation is floored relative to the data's own scale, never
//!   at an absolute number alone: the largest of `min_stddev`, 0.1% of the EW
//!   mean absolute level, and half a long-run spread (EW mean absolute
//!   deviation with `alpha / 20`). A flat stretch followed by a tiny change
//!   therefore gives a modest z, whatever the sensor's units.
//! - `clear_after` 0 behaves as 1: clearing needs at least one normal window.
//!
//! State: 64 bytes plus the open alert, whatever the input.

use crate::engine::Pane;
use crate::reading::TimestampMs;

use super::alert::{self, Alert, num, plural};
use super::spec::{DetectorKind, DetectorSpec};

/// Fraction of the EW mean absolute level below which the standard deviation
/// is never taken: a flat 20.000 degrees judges 20.001 as 0.05 stddev away.
const LEVEL_FLOOR: f64 = 1e-3;

/// Per (zscore detector, key) state: a few words, whatever the input.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct ZScoreState {
    mean: f64,
    var: f64,
    /// EW mean of |x|: the data's own scale.
    level: f64,
    /// EW mean absolute deviation with a long memory.
    spread: f64,
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

    /// The standard deviation z divides by: the baseline's, floored relative
    /// to the data's scale (see the module docs).
    fn stddev(&self, min_stddev: f64) -> f64 {
        self.var
            .sqrt()
            .max(min_stddev)
            .max(LEVEL_FLOOR * self.level)
            .max(0.5 * self.spread)
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
        let z = (x - self.mean) / self.stddev(min_stddev);
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
            self.level = x.abs();
            self.spread = 0.0;
            self.windows = 1;
            return;
        }
        let baseline = self.mean;
        let stddev = self.stddev(min_stddev);
        if self.windows < warmup {
            self.absorb(x, alpha, f64::INFINITY);
            return;
        }
        let z = (x - baseline) / stddev;
        self.absorb(x, alpha, threshold * stddev);

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
                            "window mean {} is {:.2} stddev {side} baseline {} \
                             (stddev {}, threshold {})",
                            num(x),
                            z.abs(),
                            num(baseline),
                            num(stddev),
                            num(threshold)
                        ),
                    },
                );
                out.push(raised.clone());
                self.active = Some(Box::new(raised));
                self.normal_streak = 0;
            }
            return;
        };

        if z.abs() >= threshold - hysteresis {
            self.normal_streak = 0;
            self.active = Some(raised);
            return;
        }
        self.normal_streak = self.normal_streak.saturating_add(1);
        if self.normal_streak < clear_after.max(1) {
            self.active = Some(raised);
            return;
        }
        let reason = format!(
            "window mean {} back within {:.2} stddev of baseline {} for {}",
            num(x),
            threshold - hysteresis,
            num(baseline),
            plural(u64::from(self.normal_streak), "window", "windows")
        );
        out.push(alert::clear(*raised, x, Some(baseline), reason, p.end));
        self.normal_streak = 0;
    }

    /// Exponentially weighted mean and variance (Finch, "Incremental
    /// calculation of weighted mean and variance", 2009), the variance with a
    /// four times longer memory, of `x` winsorised to `mean +- clip`. O(1).
    fn absorb(&mut self, x: f64, alpha: f64, clip: f64) {
        let diff = (x - self.mean).clamp(-clip, clip);
        // The first windows are averaged plainly (weight 1/n) rather than
        // exponentially, so a young baseline is not biased towards the seed.
        let n = f64::from(self.windows.saturating_add(1));
        let alpha = alpha.max(1.0 / n);
        let alpha_var = (alpha / 4.0).max(1.0 / n);
        self.mean += alpha * diff;
        self.var = (1.0 - alpha_var) * (self.var + alpha_var * diff * diff);
        self.level += alpha * (x.abs().min(self.level + clip) - self.level);
        self.spread += (alpha / 20.0).max(1.0 / n) * (diff.abs() - self.spread);
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
        // After one more calm window (the spike entered the baseline winsorised,
        // at 3 stddev) 11.1 sits at |z| ~ 2.5: below the threshold 3, not below
        // 3 - 1 = 2.
        assert!(feed_panes(&mut d, &[10.0, 11.1, 10.0], 12_000).is_empty());
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
    fn a_spike_moves_the_baseline_only_a_bounded_step() {
        let mut d = Detectors::new(vec![zscore_spec(5, 2)], 10);
        feed_panes(&mut d, &CALM, 1000);
        assert_eq!(feed_panes(&mut d, &[1e9], 11_000).len(), 1);
        let out = feed_panes(&mut d, &[10.0, 10.0], 12_000);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].state, AlertState::Cleared);
        let baseline = out[0].baseline.unwrap();
        assert!(
            (9.5..11.5).contains(&baseline),
            "a 1e9 spike dragged the baseline to {baseline}"
        );
        // The next, smaller spike is still seen.
        assert_eq!(feed_panes(&mut d, &[20.0], 14_000).len(), 1);
    }

    #[test]
    fn a_level_that_persists_becomes_the_baseline_and_the_alert_clears() {
        let mut d = Detectors::new(vec![zscore_spec(5, 2)], 10);
        feed_panes(&mut d, &CALM, 1000);
        let shifted: Vec<f64> = (0..200).map(|i| CALM[i % 10] + 20.0).collect();
        let out = feed_panes(&mut d, &shifted, 11_000);
        assert_eq!(out.len(), 2, "raised once, then accepted: {out:?}");
        assert_eq!(out[0].state, AlertState::Raised);
        assert_eq!(out[1].state, AlertState::Cleared);
        assert!(
            out[1].ts < 11_000 + 100 * 1000,
            "accepted within 100 windows, not at {}",
            out[1].ts
        );
        assert_eq!(d.active_alerts().count(), 0);
        let r = reading("greenhouse", "temperature", 30.0, 1);
        let (s, _) = d.score(&r).unwrap();
        assert!(s < 0.1, "30 is the normal now, score {s}");
    }

    #[test]
    fn a_slow_drift_is_followed_without_an_alert() {
        let mut d = Detectors::new(vec![zscore_spec(5, 2)], 10);
        let drift: Vec<f64> = (0..500).map(|i| CALM[i % 10] + 0.02 * i as f64).collect();
        let out = feed_panes(&mut d, &drift, 1000);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_flat_stretch_then_a_tiny_change_gives_a_small_z_at_any_scale() {
        let mut spec = zscore_spec(5, 2);
        if let crate::detect::DetectorKind::ZScore { min_stddev, .. } = &mut spec.kind {
            *min_stddev = 1e-3;
        }
        // Noise first, then a long flat stretch: the variance forgets, the
        // long-run spread does not.
        let mut d = Detectors::new(vec![spec.clone()], 10);
        feed_panes(&mut d, &CALM, 1000);
        assert!(feed_panes(&mut d, &[10.0; 100], 11_000).is_empty());
        assert!(
            feed_panes(&mut d, &[10.05], 111_000).is_empty(),
            "0.05 after a flat stretch of a noisy sensor is no anomaly"
        );
        // Flat from the start, on a large scale: the level floor.
        let mut d = Detectors::new(vec![spec], 10);
        assert!(feed_panes(&mut d, &[1e6; 50], 1000).is_empty());
        let r = reading("greenhouse", "temperature", 1e6 + 1.0, 1);
        let (s, _) = d.score(&r).unwrap();
        assert!(s < 0.01, "score {s}: z was huge");
        assert!(feed_panes(&mut d, &[1e6 + 1.0], 51_000).is_empty());
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
