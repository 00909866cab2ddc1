//! Bounded-memory quantile sketch behind `p50`, `p90` and `p99`.
//!
//! A relative-error log-bucket sketch (DDSketch, Masson et al., VLDB 2019) with
//! the uniform collapse of UDDSketch (Epicoco et al., 2020) to bound memory:
//! - A positive value `x` falls in bucket `j` when `x` is in `(g^(j-1), g^j]`;
//!   negative values use a mirrored set of buckets on `|x|`, and exact zeros a
//!   counter. Any value of bucket `j` is then within relative error
//!   `alpha = (g - 1) / (g + 1)` of the bucket's estimate `2 g^j / (g + 1)`.
//! - It starts with `g = g0 = (1 + 0.01) / (1 - 0.01)`: 1% relative error.
//! - At most [`MAX_BINS`] buckets exist. When one more is needed, every pair of
//!   neighbouring buckets merges (`g` becomes `g^2`, the level goes up by one)
//!   until the buckets fit. The error after `k` collapses is
//!   `alpha_k = (g0^(2^k) - 1) / (g0^(2^k) + 1)`: 1% while the window's non-zero
//!   values span a factor of at most `g0^64`, about 3.6 (level 0), then 2.0%
//!   up to a span of 13, 4.0% up to 170, 8.0% up to 29,000, 16% beyond.
//!
//! Error bound: the estimate of quantile `q` over `n` values is within relative
//! error `alpha_k` of the exact order statistic `x_(floor(q (n - 1)))` (0-based,
//! sorted), and is clamped to the window's exact min and max.
//!
//! Memory: at most [`MAX_BINS`] buckets of 8 bytes (512 bytes) on the heap plus
//! 56 bytes inline, whatever the number of values.
//!
//! Invariants: `pos` and `neg` are sorted by index, with distinct indices and
//! non-zero counts; `pos.len() + neg.len() <= MAX_BINS`; each index is the
//! level-`level` bucket of the values counted in it. The bucket contents depend
//! only on the multiset of values added (the level is the smallest one at which
//! all values' buckets fit), so adding in any order, or merging sketches, gives
//! the same sketch.

use serde::{Deserialize, Serialize};

/// Buckets kept at most, over both signs.
pub const MAX_BINS: usize = 64;

/// Relative accuracy before any collapse.
pub const ALPHA0: f64 = 0.01;

/// `ln(g0)`, `g0 = (1 + ALPHA0) / (1 - ALPHA0)`.
fn ln_gamma0() -> f64 {
    ((1.0 + ALPHA0) / (1.0 - ALPHA0)).ln()
}

/// A quantile sketch of one window's values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    level: u8,
    zeros: u32,
    pos: Vec<(i32, u32)>,
    neg: Vec<(i32, u32)>,
}

/// `ceil(i / 2^level)` for any sign of `i`.
fn coarsen(i: i32, level: u8) -> i32 {
    let m = 1i64 << level.min(40);
    -((-i64::from(i)).div_euclid(m)) as i32
}

impl Sketch {
    /// Counts one value. NaN is ignored (readings are finite by construction).
    pub fn add(&mut self, x: f64) {
        if x == 0.0 {
            self.zeros = self.zeros.saturating_add(1);
            return;
        }
        if x.is_nan() {
            return;
        }
        let i0 = (x.abs().ln() / ln_gamma0()).ceil();
        // Finite non-zero doubles give |i0| < 36,000; clamp for safety.
        let i0 = i0.clamp(-1e9, 1e9) as i32;
        let j = coarsen(i0, self.level);
        let bins = if x > 0.0 {
            &mut self.pos
        } else {
            &mut self.neg
        };
        match bins.binary_search_by_key(&j, |b| b.0) {
            Ok(k) => bins[k].1 = bins[k].1.saturating_add(1),
            Err(k) => {
                bins.insert(k, (j, 1));
                self.fit();
            }
        }
    }

    /// Adds every value counted in `other`.
    pub fn merge(&mut self, other: &Sketch) {
        let level = self.level.max(other.level);
        self.collapse_to(level);
        self.zeros = self.zeros.saturating_add(other.zeros);
        for (mine, theirs) in [(&mut self.pos, &other.pos), (&mut self.neg, &other.neg)] {
            for &(j, c) in theirs {
                let j = coarsen(j, level - other.level);
                match mine.binary_search_by_key(&j, |b| b.0) {
                    Ok(k) => mine[k].1 = mine[k].1.saturating_add(c),
                    Err(k) => mine.insert(k, (j, c)),
                }
            }
        }
        self.fit();
    }

    /// The current relative error bound.
    #[cfg(test)]
    pub fn alpha(&self) -> f64 {
        let g = (ln_gamma0() * f64::from(1u32 << self.level.min(31))).exp();
        (g - 1.0) / (g + 1.0)
    }

    /// Estimate of quantile `q` in `[0, 1]`, clamped to `[min, max]`; `None`
    /// when empty.
    pub fn quantile(&self, q: f64, min: f64, max: f64) -> Option<f64> {
        let n: u64 = self.count();
        if n == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let ln_g = ln_gamma0() * f64::from(1u32 << self.level.min(31));
        let value = |j: i32| {
            // 2 g^j / (g + 1), in logs to stay finite for the largest buckets.
            let g = ln_g.exp();
            (f64::from(j) * ln_g).exp() * 2.0 / (g + 1.0)
        };
        let mut seen = 0u64;
        let mut found = None;
        for &(j, c) in self.neg.iter().rev() {
            seen += u64::from(c);
            if seen as f64 > rank {
                found = Some(-value(j));
                break;
            }
        }
        if found.is_none() {
            seen += u64::from(self.zeros);
            if seen as f64 > rank {
                found = Some(0.0);
            }
        }
        if found.is_none() {
            for &(j, c) in &self.pos {
                seen += u64::from(c);
                if seen as f64 > rank {
                    found = Some(value(j));
                    break;
                }
            }
        }
        // Rounding in `rank` can leave the last bucket unmatched: that is max.
        Some(found.unwrap_or(max).clamp(min, max))
    }

    fn count(&self) -> u64 {
        let bins = self.pos.iter().chain(&self.neg).map(|b| u64::from(b.1));
        u64::from(self.zeros) + bins.sum::<u64>()
    }

    fn fit(&mut self) {
        while self.pos.len() + self.neg.len() > MAX_BINS {
            self.collapse_to(self.level + 1);
        }
    }

    fn collapse_to(&mut self, level: u8) {
        if level <= self.level {
            return;
        }
        let by = level - self.level;
        for bins in [&mut self.pos, &mut self.neg] {
            let mut w = 0;
            for r in 0..bins.len() {
                let (j, c) = bins[r];
                let j = coarsen(j, by);
                // Coarsening keeps the order, so equal indices are neighbours.
                if w > 0 && bins[w - 1].0 == j {
                    bins[w - 1].1 = bins[w - 1].1.saturating_add(c);
                } else {
                    bins[w] = (j, c);
                    w += 1;
                }
            }
            bins.truncate(w);
        }
        self.level = level;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sketch(values: &[f64]) -> Sketch {
        let mut s = Sketch::default();
        for &v in values {
            s.add(v);
        }
        s
    }

    fn exact(values: &[f64], q: f64) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        v[(q * (v.len() - 1) as f64).floor() as usize]
    }

    fn minmax(values: &[f64]) -> (f64, f64) {
        let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }

    #[test]
    fn a_single_value_is_its_own_quantile_exactly() {
        let s = sketch(&[21.37]);
        for q in [0.5, 0.9, 0.99] {
            assert_eq!(s.quantile(q, 21.37, 21.37), Some(21.37));
        }
    }

    #[test]
    fn an_empty_sketch_has_no_quantile() {
        assert_eq!(Sketch::default().quantile(0.5, 0.0, 0.0), None);
    }

    #[test]
    fn the_median_of_one_to_a_hundred_is_within_the_error_bound() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = sketch(&values);
        let p50 = s.quantile(0.5, 1.0, 100.0).unwrap();
        assert!((p50 - 50.0).abs() <= s.alpha() * 50.0, "{p50}");
        assert!(
            s.alpha() > 0.015,
            "1..100 spans 100x: collapsed at least once"
        );
    }

    #[test]
    fn a_narrow_window_keeps_one_percent_accuracy() {
        let values: Vec<f64> = (0..1000).map(|i| 20.0 + f64::from(i % 50) * 0.02).collect();
        let s = sketch(&values);
        assert!((s.alpha() - 0.01).abs() < 1e-12);
    }

    #[test]
    fn memory_stays_bounded_for_values_spanning_every_magnitude() {
        let mut s = Sketch::default();
        for e in -300..300 {
            s.add(10f64.powi(e));
            s.add(-(10f64.powi(e)));
        }
        assert!(s.pos.len() + s.neg.len() <= MAX_BINS);
    }

    proptest! {
        #[test]
        fn quantiles_are_within_the_documented_relative_error(
            values in prop::collection::vec(prop_oneof![
                -1e6f64..1e6, 0.0f64..1.0, Just(0.0), 19.0f64..21.0], 1..300),
        ) {
            let s = sketch(&values);
            let (min, max) = minmax(&values);
            for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                let est = s.quantile(q, min, max).unwrap();
                let want = exact(&values, q);
                let tol = s.alpha() * want.abs() + 1e-12;
                prop_assert!((est - want).abs() <= tol, "q {} est {} want {} alpha {}", q, est, want, s.alpha());
            }
        }

        #[test]
        fn adding_in_any_order_or_merging_halves_gives_the_same_sketch(
            values in prop::collection::vec(-1e3f64..1e3, 1..200),
            split in 0usize..200,
        ) {
            let whole = sketch(&values);
            let mut rev = values.clone();
            rev.reverse();
            prop_assert_eq!(&sketch(&rev), &whole);
            let cut = split.min(values.len());
            let mut a = sketch(&values[..cut]);
            a.merge(&sketch(&values[cut..]));
            prop_assert_eq!(&a, &whole);
        }
    }
}
