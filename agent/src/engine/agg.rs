//! O(1) per-window accumulator behind [`Aggregates`].
//!
//! Invariants: `count >= 1` (an accumulator exists only once a value was added);
//! `min <= mean <= max` up to rounding; `m2 >= 0` up to rounding; `first_ts` is
//! the smallest and `last_ts` the largest timestamp added.

use serde::{Deserialize, Serialize};

use super::pane::Aggregates;
use super::sketch::Sketch;
use crate::reading::TimestampMs;

/// Running aggregates of one window; never stores the readings themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Acc {
    count: u64,
    // Neumaier-compensated sum: `sum + comp` is the sum to about one rounding,
    // so a window of values around 1e9 with small noise still sums right.
    sum: f64,
    comp: f64,
    // Welford: the running mean and the sum of squared deviations from it.
    // The naive sum-of-squares formula cancels catastrophically for values
    // with a large common offset (1e9 + noise); this does not.
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    first: f64,
    first_ts: TimestampMs,
    last: f64,
    last_ts: TimestampMs,
    // Boxed: 8 bytes per window when quantiles are off (the default).
    sketch: Option<Box<Sketch>>,
}

impl Acc {
    /// An accumulator holding one value; with `quantiles`, it also sketches
    /// the distribution for p50/p90/p99.
    pub(crate) fn new(value: f64, ts: TimestampMs, quantiles: bool) -> Self {
        let sketch = quantiles.then(|| {
            let mut s = Sketch::default();
            s.add(value);
            Box::new(s)
        });
        Self {
            count: 1,
            sum: value,
            comp: 0.0,
            mean: value,
            m2: 0.0,
            min: value,
            max: value,
            first: value,
            first_ts: ts,
            last: value,
            last_ts: ts,
            sketch,
        }
    }

    /// Adds one value; `ts` decides first and last (ties: first keeps the
    /// earliest arrival, last takes the latest).
    pub(crate) fn add(&mut self, value: f64, ts: TimestampMs) {
        self.count = self.count.saturating_add(1);

        let t = self.sum + value;
        // Only compensate while finite: with an overflowed sum the correction
        // term would be inf - inf = NaN and poison an otherwise meaningful inf.
        if t.is_finite() {
            if self.sum.abs() >= value.abs() {
                self.comp += (self.sum - t) + value;
            } else {
                self.comp += (value - t) + self.sum;
            }
        }
        self.sum = t;

        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);

        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if ts < self.first_ts {
            self.first = value;
            self.first_ts = ts;
        }
        if ts >= self.last_ts {
            self.last = value;
            self.last_ts = ts;
        }
        if let Some(s) = &mut self.sketch {
            s.add(value);
        }
    }

    /// Folds in another window's accumulator (session windows merging). The
    /// two must hold disjoint timestamp ranges, so `first`/`last` ties cannot
    /// arise between them.
    pub(crate) fn merge(&mut self, other: &Acc) {
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        self.count = self.count.saturating_add(other.count);
        // Neumaier across the two partial sums, then both corrections.
        let t = self.sum + other.sum;
        if t.is_finite() {
            if self.sum.abs() >= other.sum.abs() {
                self.comp += (self.sum - t) + other.sum;
            } else {
                self.comp += (other.sum - t) + self.sum;
            }
            self.comp += other.comp;
        }
        self.sum = t;
        // Chan et al.'s pairwise update of Welford's state.
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.first_ts < self.first_ts {
            self.first = other.first;
            self.first_ts = other.first_ts;
        }
        if other.last_ts >= self.last_ts {
            self.last = other.last;
            self.last_ts = other.last_ts;
        }
        match (&mut self.sketch, &other.sketch) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.sketch = Some(b.clone()),
            _ => {}
        }
    }

    /// The aggregates so far.
    pub(crate) fn aggregates(&self) -> Aggregates {
        let sum = if self.sum.is_finite() {
            self.sum + self.comp
        } else {
            self.sum
        };
        // The compensated sum gives the mean to about one rounding; Welford's
        // running mean drifts by a rounding per value. It remains the fallback
        // when the sum overflowed but the values themselves did not.
        let mean = if sum.is_finite() {
            sum / self.count as f64
        } else {
            self.mean
        };
        Aggregates {
            count: self.count,
            sum,
            min: self.min,
            max: self.max,
            mean,
            // Rounding can leave m2 a hair below zero for constant input.
            stddev: (self.m2.max(0.0) / self.count as f64).sqrt(),
            first: self.first,
            last: self.last,
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
        }
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch
            .as_ref()
            .and_then(|s| s.quantile(q, self.min, self.max))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acc_of(values: &[(f64, i64)]) -> Acc {
        let mut acc = Acc::new(values[0].0, values[0].1, false);
        for &(v, ts) in &values[1..] {
            acc.add(v, ts);
        }
        acc
    }

    /// Two-pass reference: mean first, then squared deviations from it. The
    /// mean is taken around the first value, which is exact for values near a
    /// large common offset, so the reference is more accurate than what it checks.
    fn two_pass(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let x0 = values[0];
        let mean = x0 + values.iter().map(|v| v - x0).sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn one_value_has_zero_stddev_and_is_first_and_last() {
        let a = acc_of(&[(4.5, 10)]).aggregates();
        assert_eq!(
            a,
            Aggregates {
                count: 1,
                sum: 4.5,
                min: 4.5,
                max: 4.5,
                mean: 4.5,
                stddev: 0.0,
                first: 4.5,
                last: 4.5,
                p50: None,
                p90: None,
                p99: None,
            }
        );
    }

    #[test]
    fn small_integers_give_exact_aggregates() {
        let a = acc_of(&[
            (2.0, 3),
            (4.0, 1),
            (4.0, 2),
            (4.0, 4),
            (5.0, 5),
            (5.0, 6),
            (7.0, 7),
            (9.0, 8),
        ])
        .aggregates();
        assert_eq!(a.count, 8);
        assert_eq!(a.sum, 40.0);
        assert_eq!(a.mean, 5.0);
        assert_eq!(a.stddev, 2.0);
        assert_eq!((a.min, a.max), (2.0, 9.0));
        assert_eq!((a.first, a.last), (4.0, 9.0));
    }

    #[test]
    fn first_and_last_go_by_event_time_not_arrival() {
        let a = acc_of(&[(1.0, 50), (2.0, 10), (3.0, 90), (4.0, 30)]).aggregates();
        assert_eq!((a.first, a.last), (2.0, 3.0));
    }

    #[test]
    fn on_equal_timestamps_first_is_the_earliest_and_last_the_latest_arrival() {
        let a = acc_of(&[(1.0, 5), (2.0, 5), (3.0, 5)]).aggregates();
        assert_eq!((a.first, a.last), (1.0, 3.0));
    }

    #[test]
    fn a_constant_series_has_exactly_zero_stddev_not_nan() {
        let a = acc_of(&[(0.1, 0); 1000]).aggregates();
        assert!(a.stddev >= 0.0 && a.stddev < 1e-12, "{}", a.stddev);
    }

    #[test]
    fn welford_matches_two_pass_for_large_offsets_with_small_noise() {
        // 1e9 + noise of a few units: naive E[x^2] - E[x]^2 loses every digit here.
        let mut values = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((x >> 33) % 1000) as f64 / 100.0 - 5.0;
            values.push(1e9 + noise);
        }
        let pairs: Vec<(f64, i64)> = values.iter().map(|&v| (v, 0)).collect();
        let a = acc_of(&pairs).aggregates();
        let (mean, sd) = two_pass(&values);
        assert!(close(a.mean, mean, 1e-15), "{} vs {}", a.mean, mean);
        assert!(close(a.stddev, sd, 1e-6), "{} vs {}", a.stddev, sd);
        assert!(
            sd > 2.0 && sd < 3.5,
            "uniform(-5,5) has sd near 2.89, got {sd}"
        );
        // The naive formula, for contrast: it must be visibly wrong, or this
        // test would not show anything about stability.
        let n = values.len() as f64;
        let naive_var = values.iter().map(|v| v * v).sum::<f64>() / n - mean * mean;
        assert!(!close(naive_var.max(0.0).sqrt(), sd, 1e-2));
    }

    #[test]
    fn the_compensated_sum_keeps_small_values_next_to_a_large_one() {
        let mut values = vec![(1e16, 0)];
        values.extend(std::iter::repeat_n((1.0, 0), 1000));
        values.push((-1e16, 0));
        let a = acc_of(&values).aggregates();
        assert_eq!(a.sum, 1000.0);
    }

    #[test]
    fn an_overflowing_sum_is_infinite_not_nan() {
        let a = acc_of(&[(f64::MAX, 0), (f64::MAX, 1)]).aggregates();
        assert_eq!(a.sum, f64::INFINITY);
    }

    #[test]
    fn quantiles_appear_only_when_asked_for() {
        let mut with = Acc::new(1.0, 0, true);
        for i in 2..=100 {
            with.add(f64::from(i), i64::from(i));
        }
        let a = with.aggregates();
        let p50 = a.p50.unwrap();
        assert!((p50 - 50.0).abs() <= 0.05 * 50.0, "{p50}");
        assert!(a.p99.unwrap() <= 100.0);
        assert_eq!(acc_of(&[(1.0, 0), (2.0, 1)]).aggregates().p50, None);
    }

    proptest! {
        #[test]
        fn merging_two_accumulators_equals_adding_everything_to_one(
            left in prop::collection::vec((-1e3f64..1e3, 0i64..100), 1..50),
            right in prop::collection::vec((-1e3f64..1e3, 100i64..200), 1..50),
        ) {
            let mut all = Acc::new(left[0].0, left[0].1, true);
            for &(v, t) in left[1..].iter().chain(&right) {
                all.add(v, t);
            }
            let mut a = Acc::new(left[0].0, left[0].1, true);
            for &(v, t) in &left[1..] {
                a.add(v, t);
            }
            let mut b = Acc::new(right[0].0, right[0].1, true);
            for &(v, t) in &right[1..] {
                b.add(v, t);
            }
            a.merge(&b);
            let (x, y) = (a.aggregates(), all.aggregates());
            prop_assert_eq!((x.count, x.min, x.max, x.first, x.last), (y.count, y.min, y.max, y.first, y.last));
            prop_assert_eq!((x.p50, x.p90, x.p99), (y.p50, y.p90, y.p99));
            prop_assert!(close(x.sum, y.sum, 1e-12) && close(x.mean, y.mean, 1e-12));
            prop_assert!((x.stddev - y.stddev).abs() <= 1e-9 * y.stddev.max(1.0));
        }

        #[test]
        fn welford_agrees_with_two_pass_on_random_data(
            offset in -1e9f64..1e9,
            noise in prop::collection::vec(-100.0f64..100.0, 1..200),
        ) {
            let values: Vec<f64> = noise.iter().map(|n| offset + n).collect();
            let pairs: Vec<(f64, i64)> = values.iter().map(|&v| (v, 0)).collect();
            let a = acc_of(&pairs).aggregates();
            let (mean, sd) = two_pass(&values);
            prop_assert!(close(a.mean, mean, 1e-12), "mean {} vs {}", a.mean, mean);
            // Absolute bound relative to the data's magnitude: two-pass itself is
            // only accurate to about eps * |offset| per value.
            prop_assert!((a.stddev - sd).abs() <= 1e-6 * offset.abs().max(1.0), "sd {} vs {}", a.stddev, sd);
            let sum: f64 = values.iter().sum();
            prop_assert!(close(a.sum, sum, 1e-12));
            prop_assert_eq!(a.min, values.iter().cloned().fold(f64::INFINITY, f64::min));
            prop_assert_eq!(a.max, values.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        }
    }
}
