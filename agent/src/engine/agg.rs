//! O(1) per-window accumulator behind [`Aggregates`].
//!
//! Every finite input gives finite, correct aggregates, whatever the
//! magnitudes. The sum and the Welford state are kept scaled by powers of two
//! (exact, except where a scaled value falls below the normal range) whenever
//! plain arithmetic would overflow, as two readings of 1e308 or a reading of
//! 1e308 next to one of -1e308 would; and the Welford state is scaled up for
//! values so small (below about 1e-120) that their squared deviations would
//! underflow to zero. Mean and stddev are then always finite and right; only
//! the sum itself can lie beyond the largest double, and is then reported as
//! infinite (see [`Aggregates::sum`]).
//!
//! Invariants: `count >= 1` (an accumulator exists only once a value was added);
//! `min <= mean <= max`; `m2 >= 0` up to rounding; `first_ts` is the smallest
//! and `last_ts` the largest timestamp added; the true sum is
//! `(sum + comp) * 2^sum_exp`, and `sum_exp` only grows; the Welford state
//! describes the values scaled by `2^-var_exp`. Both exponents are 0 for
//! values of ordinary magnitude, so such windows compute (and checkpoint)
//! exactly as they did before scaling existed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::pane::Aggregates;
use super::sketch::Sketch;
use crate::reading::TimestampMs;

/// How far an exponent moves when a scaled value would overflow: once is
/// enough for the sum of up to 2^64 values of any magnitude.
const STEP: u16 = 64;

/// Running aggregates of one window; never stores the readings themselves.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Acc {
    count: u64,
    // Neumaier-compensated sum, scaled by 2^-sum_exp: `sum + comp` is the
    // scaled sum to about one rounding, so a window of values around 1e9 with
    // small noise still sums right.
    sum: f64,
    comp: f64,
    sum_exp: u16,
    // Welford over the values scaled by 2^-var_exp: the running mean and the
    // sum of squared deviations from it. The naive sum-of-squares formula
    // cancels catastrophically for values with a large common offset (1e9 +
    // noise); this does not.
    mean: f64,
    m2: f64,
    var_exp: i32,
    min: f64,
    max: f64,
    first: f64,
    first_ts: TimestampMs,
    last: f64,
    last_ts: TimestampMs,
    // Boxed: 8 bytes per window when quantiles are off (the default).
    sketch: Option<Box<Sketch>>,
}

/// `x * 2^e`, exact unless the result leaves the normal range.
fn scale(x: f64, e: i32) -> f64 {
    let mut x = x;
    let mut e = e;
    // One factor must itself be a normal double: at most 2^±1000 per step.
    while e != 0 {
        let step = e.clamp(-1000, 1000);
        x *= f64::from_bits(((step + 1023) as u64) << 52);
        e -= step;
    }
    x
}

/// Beyond any exponent a finite accumulator needs (values up to 2^1024, a
/// margin for the squares of 2^64 of them): a guard against looping forever.
const MAX_EXP: i32 = 4096;

/// The binary exponent of `m > 0`, subnormals included (2^-1074 gives -1074).
fn exponent(m: f64) -> i32 {
    let bits = m.abs().to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: the position of the highest set bit of the mantissa.
        let mantissa = bits & ((1 << 52) - 1);
        return 63 - mantissa.leading_zeros() as i32 - 1074;
    }
    biased - 1023
}

/// The Welford scale for values of magnitude up to `m`: none while their
/// squares (times any count) neither overflow nor underflow, else one that
/// brings `m` near 1.
fn scale_for(m: f64) -> i32 {
    if m == 0.0 {
        0
    } else {
        scale_for_exponent(exponent(m))
    }
}

/// [`scale_for`] a magnitude of `2^e`.
fn scale_for_exponent(e: i32) -> i32 {
    if (-400..=400).contains(&e) { 0 } else { e }
}

/// Neumaier's step: `sum + x` and its rounding error.
fn two_sum(sum: f64, x: f64) -> (f64, f64) {
    let t = sum + x;
    let err = if sum.abs() >= x.abs() {
        (sum - t) + x
    } else {
        (x - t) + sum
    };
    (t, err)
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
            sum_exp: 0,
            mean: value,
            m2: 0.0,
            var_exp: 0,
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
        self.add_sum(value, 0.0, 0);

        let n = self.count as f64;
        if self.m2 == 0.0 {
            // Every value so far equals the mean, so any scale holds them
            // exactly: take one where this value's deviation squares safely.
            let m = scale(self.mean, self.var_exp).abs().max(value.abs());
            self.rescale_var(scale_for(m));
        }
        loop {
            let x = scale(value, -self.var_exp);
            let delta = x - self.mean;
            let mean = self.mean + delta / n;
            let m2 = self.m2 + delta * (x - mean);
            // The last test only guards against a non-finite input, which
            // readings never are: scaling cannot help it.
            if (m2.is_finite() && mean.is_finite()) || self.var_exp >= MAX_EXP {
                (self.mean, self.m2) = (mean, m2);
                break;
            }
            self.rescale_var(self.var_exp + i32::from(STEP));
        }

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

    /// Adds the scaled sum `(sum + comp) * 2^exp` to this one.
    fn add_sum(&mut self, sum: f64, comp: f64, exp: u16) {
        if exp > self.sum_exp {
            self.rescale_sum(exp);
        }
        loop {
            let shift = -i32::from(self.sum_exp - exp);
            let (x, c) = (scale(sum, shift), scale(comp, shift));
            let (t, err) = two_sum(self.sum, x);
            // The second test only guards against a non-finite input, which
            // readings never are: scaling cannot help it.
            if t.is_finite() || self.sum_exp == u16::MAX {
                self.sum = t;
                self.comp += err + c;
                return;
            }
            self.rescale_sum(self.sum_exp.saturating_add(STEP));
        }
    }

    fn rescale_sum(&mut self, exp: u16) {
        let d = -i32::from(exp - self.sum_exp);
        self.sum = scale(self.sum, d);
        self.comp = scale(self.comp, d);
        self.sum_exp = exp;
    }

    fn rescale_var(&mut self, exp: i32) {
        let d = self.var_exp - exp;
        self.mean = scale(self.mean, d);
        self.m2 = scale(self.m2, 2 * d);
        self.var_exp = exp;
    }

    /// The binary exponent of the largest of the Welford mean and stddev.
    fn var_magnitude(&self) -> Option<i32> {
        let sd = (self.m2.max(0.0) / self.count as f64).sqrt();
        let m = self.mean.abs().max(sd);
        (m > 0.0).then(|| exponent(m) + self.var_exp)
    }

    /// Folds in another window's accumulator (session windows merging). The
    /// two must hold disjoint timestamp ranges, so `first`/`last` ties cannot
    /// arise between them.
    pub(crate) fn merge(&mut self, other: &Acc) {
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        // Chan et al.'s pairwise update of Welford's state, at the scale of
        // the larger of the two: the smaller's contribution can only underflow
        // where it is negligible.
        let m = match (self.var_magnitude(), other.var_magnitude()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.count = self.count.saturating_add(other.count);
        self.add_sum(other.sum, other.comp, other.sum_exp);
        if let Some(m) = m {
            self.rescale_var(scale_for_exponent(m));
        }
        loop {
            let d = other.var_exp - self.var_exp;
            let (mean_b, m2_b) = (scale(other.mean, d), scale(other.m2, 2 * d));
            let delta = mean_b - self.mean;
            let mean = self.mean + delta * (nb / n);
            let m2 = self.m2 + m2_b + delta * delta * (na * nb / n);
            if (m2.is_finite() && mean.is_finite()) || self.var_exp >= MAX_EXP {
                (self.mean, self.m2) = (mean, m2);
                break;
            }
            self.rescale_var(self.var_exp + i32::from(STEP));
        }
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
        let n = self.count as f64;
        let scaled = self.sum + self.comp;
        let exp = i32::from(self.sum_exp);
        // Infinite only when the true sum lies beyond the largest double.
        let sum = scale(scaled, exp);
        // The compensated sum gives the mean to about one rounding; Welford's
        // running mean drifts by a rounding per value. The mean lies within
        // [min, max], where rounding alone could take it out.
        let mean = scale(scaled / n, exp).max(self.min).min(self.max);
        // Rounding can leave m2 a hair below zero for constant input. The
        // population stddev is at most half the range (Popoviciu), which also
        // caps rounding at the top of the double range.
        let sd = scale((self.m2.max(0.0) / n).sqrt(), self.var_exp);
        let half_range = if (self.max - self.min).is_finite() {
            (self.max - self.min) / 2.0
        } else {
            self.max / 2.0 - self.min / 2.0
        };
        Aggregates {
            count: self.count,
            sum,
            min: self.min,
            max: self.max,
            mean,
            stddev: sd.min(half_range),
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

// Checkpoint encoding. Checkpoint format 1 stored the fields of an unscaled
// accumulator and then `Option<Box<Sketch>>`, which postcard writes as a tag
// byte 0 (none) or 1 (some) and the sketch. The last field is now an enum
// whose variants 0 and 1 are encoded exactly so, and whose variant 2 adds the
// exponents: an accumulator that never scaled is written byte for byte as
// before, and every stored format-1 accumulator reads back unchanged.

#[derive(Serialize)]
struct AccOut<'a> {
    count: u64,
    sum: f64,
    comp: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    first: f64,
    first_ts: TimestampMs,
    last: f64,
    last_ts: TimestampMs,
    tail: TailOut<'a>,
}

#[derive(Serialize)]
enum TailOut<'a> {
    Plain,
    Sketch(&'a Sketch),
    Scaled {
        sum_exp: u16,
        var_exp: i32,
        sketch: Option<&'a Sketch>,
    },
}

#[derive(Deserialize)]
struct AccIn {
    count: u64,
    sum: f64,
    comp: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    first: f64,
    first_ts: TimestampMs,
    last: f64,
    last_ts: TimestampMs,
    tail: TailIn,
}

#[derive(Deserialize)]
enum TailIn {
    Plain,
    Sketch(Box<Sketch>),
    Scaled {
        sum_exp: u16,
        var_exp: i32,
        sketch: Option<Box<Sketch>>,
    },
}

impl Serialize for Acc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sketch = self.sketch.as_deref();
        let tail = match (self.sum_exp, self.var_exp, sketch) {
            (0, 0, None) => TailOut::Plain,
            (0, 0, Some(sk)) => TailOut::Sketch(sk),
            (sum_exp, var_exp, sketch) => TailOut::Scaled {
                sum_exp,
                var_exp,
                sketch,
            },
        };
        AccOut {
            count: self.count,
            sum: self.sum,
            comp: self.comp,
            mean: self.mean,
            m2: self.m2,
            min: self.min,
            max: self.max,
            first: self.first,
            first_ts: self.first_ts,
            last: self.last,
            last_ts: self.last_ts,
            tail,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Acc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let a = AccIn::deserialize(d)?;
        let (sum_exp, var_exp, sketch) = match a.tail {
            TailIn::Plain => (0, 0, None),
            TailIn::Sketch(sk) => (0, 0, Some(sk)),
            TailIn::Scaled {
                sum_exp,
                var_exp,
                sketch,
            } => (sum_exp, var_exp, sketch),
        };
        Ok(Acc {
            count: a.count,
            sum: a.sum,
            comp: a.comp,
            sum_exp,
            mean: a.mean,
            m2: a.m2,
            var_exp,
            min: a.min,
            max: a.max,
            first: a.first,
            first_ts: a.first_ts,
            last: a.last,
            last_ts: a.last_ts,
            sketch,
        })
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
    fn a_sum_beyond_the_largest_double_is_infinite_and_the_rest_stays_exact() {
        let a = acc_of(&[(1e308, 0), (1e308, 1)]).aggregates();
        assert_eq!(a.sum, f64::INFINITY);
        assert_eq!((a.mean, a.stddev, a.min, a.max), (1e308, 0.0, 1e308, 1e308));
        let a = acc_of(&[(-f64::MAX, 0), (-f64::MAX, 1), (-1.0, 2)]).aggregates();
        assert_eq!(a.sum, f64::NEG_INFINITY);
        assert!(close(a.mean, -f64::MAX / 1.5, 1e-15), "{}", a.mean);
    }

    #[test]
    fn opposite_extremes_have_a_zero_mean_and_a_finite_stddev() {
        let a = acc_of(&[(1e308, 0), (-1e308, 1)]).aggregates();
        assert_eq!((a.sum, a.mean, a.stddev), (0.0, 0.0, 1e308));
        let a = acc_of(&[(f64::MAX, 0), (-f64::MAX, 1)]).aggregates();
        assert_eq!((a.sum, a.mean, a.stddev), (0.0, 0.0, f64::MAX));
    }

    #[test]
    fn values_too_small_to_square_still_have_their_stddev() {
        let a = acc_of(&[(0.0, 0), (-2.3233704043980786e-271, 1)]).aggregates();
        assert_eq!(a.stddev, 2.3233704043980786e-271 / 2.0);
        let a = acc_of(&[(1e-300, 0), (3e-300, 1), (2e-300, 2)]).aggregates();
        let rel = |x: f64, want: f64| (x / want - 1.0).abs();
        assert!(
            rel(a.stddev, (2.0f64 / 3.0).sqrt() * 1e-300) < 1e-14,
            "{}",
            a.stddev
        );
        assert!(rel(a.mean, 2e-300) < 1e-15, "{}", a.mean);
    }

    #[test]
    fn a_sum_that_overflowed_on_the_way_comes_back_exactly() {
        let a = acc_of(&[(1e308, 0), (1e308, 1), (-1e308, 2), (4.0, 3)]).aggregates();
        assert_eq!(a.sum, 1e308 + 4.0);
        assert!(close(a.mean, 1e308 / 4.0, 1e-15), "{}", a.mean);
        assert!(a.stddev.is_finite() && a.stddev > 0.0);
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

    /// A finite double of any magnitude: huge, ordinary, tiny, zero, or any.
    fn any_magnitude() -> impl Strategy<Value = f64> {
        prop_oneof![
            3 => (-1.0f64..1.0).prop_map(|f| f * f64::MAX),
            1 => Just(f64::MAX),
            1 => Just(-f64::MAX),
            2 => -1e3f64..1e3,
            1 => (-1.0f64..1.0).prop_map(|f| f * 1e-300),
            1 => Just(0.0),
            2 => any::<f64>().prop_filter("finite", |x| x.is_finite()),
        ]
    }

    /// Checks `a` against a two-pass reference computed on the values scaled
    /// by 2^-k, with `2^k <= max |x| < 2^(k+1)`: nothing overflows there, and
    /// the comparisons are made there too, relative to the largest magnitude.
    fn check_against_reference(values: &[f64], a: &Aggregates) -> Result<(), TestCaseError> {
        let n = values.len() as f64;
        let m = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        prop_assert!(a.mean.is_finite() && a.stddev.is_finite(), "{a:?}");
        prop_assert_eq!(a.min, values.iter().cloned().fold(f64::INFINITY, f64::min));
        prop_assert_eq!(
            a.max,
            values.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        );
        if m == 0.0 {
            prop_assert_eq!((a.sum, a.mean, a.stddev), (0.0, 0.0, 0.0));
            return Ok(());
        }
        let k = exponent(m);
        let xs: Vec<f64> = values.iter().map(|v| scale(*v, -k)).collect();
        let sum_s: f64 = xs.iter().sum();
        let mean_s = sum_s / n;
        let sd_s = (xs.iter().map(|x| (x - mean_s).powi(2)).sum::<f64>() / n).sqrt();
        // |x_s| < 2: the reference's own rounding is about n^2 eps.
        // A result in the subnormal range is rounded to a multiple of 2^-1074.
        let tol = 1e-12 * n * n + scale(f64::from_bits(1), -k);
        prop_assert!(
            (scale(a.mean, -k) - mean_s).abs() <= tol,
            "mean {} vs {}",
            a.mean,
            scale(mean_s, k)
        );
        prop_assert!(
            (scale(a.stddev, -k) - sd_s).abs() <= 1e-6 + tol,
            "stddev {} vs {}",
            a.stddev,
            scale(sd_s, k)
        );
        prop_assert!(a.mean >= a.min && a.mean <= a.max && a.stddev >= 0.0);
        let limit = scale(f64::MAX, -k);
        if a.sum.is_finite() {
            prop_assert!(
                sum_s.abs() <= limit * (1.0 + 1e-12) + tol,
                "sum {} finite but {} x 2^{}",
                a.sum,
                sum_s,
                k
            );
            prop_assert!(
                (scale(a.sum, -k) - sum_s).abs() <= tol,
                "sum {} vs {} x 2^{}",
                a.sum,
                sum_s,
                k
            );
        } else {
            prop_assert!(
                sum_s.abs() >= limit * (1.0 - 1e-12) - tol,
                "sum {} but {} x 2^{}",
                a.sum,
                sum_s,
                k
            );
            prop_assert_eq!(a.sum.signum(), sum_s.signum());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn every_aggregate_is_finite_and_right_for_values_of_any_magnitude(
            values in prop::collection::vec(any_magnitude(), 1..100),
            quantiles in any::<bool>(),
        ) {
            let mut acc = Acc::new(values[0], 0, quantiles);
            for (i, v) in values[1..].iter().enumerate() {
                acc.add(*v, i as i64 + 1);
            }
            let a = acc.aggregates();
            check_against_reference(&values, &a)?;
            for q in [a.p50, a.p90, a.p99].into_iter().flatten() {
                prop_assert!(q.is_finite() && q >= a.min && q <= a.max, "{a:?}");
            }
        }

        #[test]
        fn merged_partial_aggregates_of_any_magnitude_stay_right(
            values in prop::collection::vec(any_magnitude(), 2..100),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
        ) {
            // Several partial accumulators over consecutive timestamps (as
            // sessions merging), folded left to right.
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(values.len() - 1) + 1).collect();
            at.push(0);
            at.push(values.len());
            at.sort_unstable();
            at.dedup();
            let mut parts = at.windows(2).map(|w| {
                let mut acc = Acc::new(values[w[0]], w[0] as i64, false);
                for (i, v) in values.iter().enumerate().take(w[1]).skip(w[0] + 1) {
                    acc.add(*v, i as i64);
                }
                acc
            });
            let mut merged = parts.next().unwrap();
            for p in parts {
                merged.merge(&p);
            }
            let a = merged.aggregates();
            check_against_reference(&values, &a)?;
            prop_assert_eq!((a.count, a.first, a.last), (values.len() as u64, values[0], values[values.len() - 1]));
        }

        #[test]
        fn a_scaled_accumulator_survives_a_checkpoint_and_goes_on_the_same(
            values in prop::collection::vec(any_magnitude(), 2..40),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = cut.index(values.len() - 1) + 1;
            let mut acc = Acc::new(values[0], 0, true);
            for (i, v) in values[1..cut].iter().enumerate() {
                acc.add(*v, i as i64 + 1);
            }
            let bytes = postcard::to_allocvec(&acc).unwrap();
            let mut back: Acc = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&back, &acc);
            for (i, v) in values[cut..].iter().enumerate() {
                acc.add(*v, (cut + i) as i64);
                back.add(*v, (cut + i) as i64);
            }
            prop_assert_eq!(back.aggregates(), acc.aggregates());
        }
    }

    /// The accumulator as checkpoint format 1 stored it.
    #[derive(Serialize)]
    struct Format1 {
        count: u64,
        sum: f64,
        comp: f64,
        mean: f64,
        m2: f64,
        min: f64,
        max: f64,
        first: f64,
        first_ts: TimestampMs,
        last: f64,
        last_ts: TimestampMs,
        sketch: Option<Box<Sketch>>,
    }

    #[test]
    fn an_accumulator_of_checkpoint_format_1_reads_back_and_unscaled_ones_write_the_same_bytes() {
        for quantiles in [false, true] {
            let acc = acc_of(&[(2.0, 3), (4.0, 1), (9.0, 8)]);
            let acc = if quantiles {
                let mut a = Acc::new(2.0, 3, true);
                a.add(4.0, 1);
                a.add(9.0, 8);
                a
            } else {
                acc
            };
            let old = Format1 {
                count: acc.count,
                sum: acc.sum,
                comp: acc.comp,
                mean: acc.mean,
                m2: acc.m2,
                min: acc.min,
                max: acc.max,
                first: acc.first,
                first_ts: acc.first_ts,
                last: acc.last,
                last_ts: acc.last_ts,
                sketch: acc.sketch.clone(),
            };
            let old_bytes = postcard::to_allocvec(&old).unwrap();
            assert_eq!(postcard::to_allocvec(&acc).unwrap(), old_bytes);
            let back: Acc = postcard::from_bytes(&old_bytes).unwrap();
            assert_eq!(back, acc);
        }
    }
}
