//! Online statistics the per-reading detectors share: each takes one value at
//! a time, keeps a fixed handful of numbers, never looks ahead and never
//! stores history.
//!
//! Invariants:
//! - Every variance and spread is `>= 0`; means stay finite for finite input
//!   (callers drop non-finite readings before they get here).
//! - A single reading's influence is bounded: it enters every baseline
//!   winsorised at `CLIP` standard deviations, so one absurd value moves the
//!   mean by at most `alpha * CLIP` standard deviations.
//! - The standard deviation is floored relative to the data's own scale (a
//!   fraction of its EW mean absolute level, half its long-run spread), never
//!   by an absolute number in the sensor's units.

use serde::{Deserialize, Serialize};

/// Winsorising bound, in standard deviations.
pub(super) const CLIP: f64 = 4.0;

/// Fraction of the EW mean absolute level below which no standard deviation
/// is taken: a flat 20.000 judges 20.001 as 0.05 stddev away.
const LEVEL_FLOOR: f64 = 1e-3;

/// Values a baseline absorbs plainly before it starts winsorising.
const YOUNG: u32 = 30;

/// Last-resort floor for a series that has been exactly 0 all along.
const TINY: f64 = 1e-12;

/// Exponentially weighted location and scale of a series. 40 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Baseline {
    /// Values absorbed (saturating).
    pub n: u32,
    /// EW mean.
    pub mean: f64,
    /// EW variance, with a memory four times the mean's.
    var: f64,
    /// EW mean of |x|: the data's own scale.
    level: f64,
    /// EW mean absolute deviation with a memory twenty times the mean's.
    spread: f64,
}

impl Baseline {
    /// The floored standard deviation (see the module docs).
    pub fn sd(&self) -> f64 {
        self.var
            .sqrt()
            .max(LEVEL_FLOOR * self.level)
            .max(0.5 * self.spread)
            .max(TINY)
    }

    /// Standardised distance of `x` from the mean (0 before the first value),
    /// then absorbs `x` with weight `alpha`: the first values are averaged
    /// plainly (weight 1/n, so a young baseline is not biased towards its
    /// seed); from `YOUNG` on, winsorised at `CLIP` standard deviations. One
    /// floored sd serves both.
    pub fn z_update(&mut self, x: f64, alpha: f64) -> f64 {
        if self.n == 0 {
            self.absorb(x, alpha, 0.0);
            return 0.0;
        }
        let sd = self.sd();
        let z = (x - self.mean) / sd;
        self.absorb(x, alpha, sd);
        z
    }

    /// The update with the floored sd of the state before it (unused while
    /// young).
    fn absorb(&mut self, x: f64, alpha: f64, sd: f64) {
        if self.n == 0 {
            *self = Self {
                n: 1,
                mean: x,
                var: 0.0,
                level: x.abs(),
                spread: 0.0,
            };
            return;
        }
        // Young baselines are not winsorised: a scale learnt from a handful of
        // readings (all zeros, say) would lock the mean in place.
        let clip = if self.n < YOUNG {
            f64::INFINITY
        } else {
            CLIP * sd
        };
        let diff = (x - self.mean).clamp(-clip, clip);
        let n = f64::from(self.n.saturating_add(1));
        let a = alpha.max(1.0 / n);
        let av = (alpha / 4.0).max(1.0 / n);
        let al = (alpha / 20.0).max(1.0 / n);
        self.mean += a * diff;
        self.var = (1.0 - av) * (self.var + av * diff * diff);
        self.level += a * ((self.mean).abs() - self.level);
        self.spread += al * (diff.abs() - self.spread);
        self.n = self.n.saturating_add(1);
    }

    /// The EW variance itself (not floored).
    pub fn var(&self) -> f64 {
        self.var
    }

    /// Moves the mean to `mean` at once (a level shift was confirmed),
    /// keeping the scale; the next readings are averaged plainly again (weight
    /// 1/n from 2), so the new level is learnt within a few readings.
    pub fn reseed(&mut self, mean: f64) {
        self.mean = mean;
        self.n = self.n.min(1);
    }
}

/// Two-sided CUSUM of standardised residuals against a slow baseline
/// (Page 1954), with a fast mean to restart from. 88 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Cusum {
    /// The reference level and noise scale.
    pub base: Baseline,
    /// Recent level (EW, alpha 0.1): where a confirmed shift restarts from.
    fast: f64,
    /// Upward and downward sums.
    pub hi: f64,
    /// See `hi`.
    pub lo: f64,
    /// Readings since the larger sum was last 0: how gradually it built up.
    pub run: u32,
}

/// What one reading did to a [`Cusum`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct CusumStep {
    /// The larger sum after the reading (before any reset).
    pub s: f64,
    /// +1 if the upward sum is the larger, else -1.
    pub sign: f64,
    /// The readings it took to build up.
    pub run: u32,
    /// The level before the shift, and the level now.
    pub from: f64,
    /// See `from`.
    pub to: f64,
}

/// Clip of the CUSUM's residuals: one reading adds at most `CUSUM_CLIP - k`,
/// so a short burst of spikes is not a level shift.
const CUSUM_CLIP: f64 = 3.0;
/// Slow baseline memory for level shifts, per reading.
const CUSUM_ALPHA: f64 = 0.005;
/// Readings before the CUSUM judges anything.
pub(super) const CUSUM_WARMUP: u32 = 30;

impl Cusum {
    /// Adds one reading; `k` is the allowance (half the shift to detect, in
    /// standard deviations). Residuals are clipped at [`CLIP`] so one spike
    /// adds at most `CLIP - k`.
    pub fn step(&mut self, x: f64, k: f64) -> CusumStep {
        if self.base.n == 0 {
            self.fast = x;
        }
        let warm = self.base.n >= CUSUM_WARMUP;
        let from = self.base.mean;
        let z = self
            .base
            .z_update(x, CUSUM_ALPHA)
            .clamp(-CUSUM_CLIP, CUSUM_CLIP);
        self.fast += 0.1 * (x - self.fast);
        if warm {
            self.hi = (self.hi + z - k).max(0.0);
            self.lo = (self.lo - z - k).max(0.0);
            if self.hi.max(self.lo) > 0.0 {
                self.run = self.run.saturating_add(1);
            } else {
                self.run = 0;
            }
        }
        let (s, sign) = if self.hi >= self.lo {
            (self.hi, 1.0)
        } else {
            (self.lo, -1.0)
        };
        CusumStep {
            s,
            sign,
            run: self.run,
            from,
            to: self.fast,
        }
    }

    /// A shift was confirmed: restart the sums from the new level, which the
    /// baseline then relearns (the CUSUM judges again after its warm-up).
    pub fn reset(&mut self) {
        self.hi = 0.0;
        self.lo = 0.0;
        self.run = 0;
        self.base.reseed(self.fast);
    }
}

/// Short- against long-term variance of first differences (differences do
/// not see the level, so a shift or a drift is not mistaken for noise). 48 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Spread {
    prev: Option<f64>,
    /// EW mean of d^2, short memory.
    short: f64,
    /// EW mean of d^2, long memory, winsorised.
    long: f64,
    /// EW mean of d^4, long memory, winsorised: the kurtosis of the noise.
    long4: f64,
    /// EW mean |x|, for the floor.
    level: f64,
    /// Differences absorbed.
    pub n: u32,
}

/// Short memory of [`Spread`]: about 40 readings.
const SPREAD_SHORT: f64 = 0.05;
/// Long memory of [`Spread`]: about 1,000 readings.
const SPREAD_LONG: f64 = 0.001;
/// Differences before [`Spread`] judges.
pub(super) const SPREAD_WARMUP: u32 = 100;

impl Spread {
    /// Adds a reading; returns short / long variance (1 = as noisy as usual).
    pub fn step(&mut self, x: f64) -> f64 {
        let Some(prev) = self.prev.replace(x) else {
            self.level = x.abs();
            return 1.0;
        };
        let d = x - prev;
        let d2 = d * d;
        self.level += 0.01 * (x.abs() - self.level);
        let floor = (1e-4 * self.level).powi(2).max(TINY);
        // Both memories see the difference winsorised at 25 times the usual
        // variance: a lone burst moves the ratio a bounded step, a sensor
        // that really got noisier moves it all the same.
        let bounded = if self.n == 0 {
            d2
        } else {
            d2.min(25.0 * self.long.max(floor))
        };
        let n = f64::from(self.n.saturating_add(1));
        self.short += SPREAD_SHORT.max(1.0 / n) * (bounded - self.short);
        let ratio = self.short / self.long.max(floor);
        let al = SPREAD_LONG.max(1.0 / n);
        self.long += al * (bounded - self.long);
        self.long4 += al * (bounded * bounded - self.long4);
        self.n = self.n.saturating_add(1);
        ratio
    }

    /// The long-run mean square of first differences (0 before two readings).
    pub fn long_d2(&self) -> f64 {
        self.long
    }

    /// Upper-tail z of a short/long variance ratio. An EW variance estimate
    /// of noise with kurtosis kappa has a relative standard deviation of
    /// `sqrt((kappa - 1) * a / (2 - a))`: 0.23 for normal noise, much more for
    /// bursty counts, whose quiet-then-busy stretches are then not "noise".
    pub fn ratio_z(&self, ratio: f64) -> f64 {
        let kappa = if self.long > 0.0 {
            (self.long4 / (self.long * self.long)).max(3.0)
        } else {
            3.0
        };
        let a = SPREAD_SHORT;
        let rel_sd = ((kappa - 1.0) * a / (2.0 - a)).sqrt();
        (ratio - 1.0) / rel_sd
    }
}

/// Two-sided tail probability of `z` under a Student t with 4 degrees of
/// freedom: heavier tails than a normal, as real sensor noise has, so a
/// 5-sigma reading is 1 in 130, not 1 in 1.7 million. Closed form for nu = 4.
pub(super) fn t4_two_sided(z: f64) -> f64 {
    let z = z.abs();
    if !z.is_finite() {
        return 0.0;
    }
    let u = z * z / 4.0;
    let r = z / (1.0 + u).sqrt();
    let cdf = 0.5 + 0.375 * r * (1.0 - u / (3.0 * (1.0 + u)));
    (2.0 * (1.0 - cdf)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_t4_tail_is_heavier_than_the_normal_and_monotonic() {
        assert!((t4_two_sided(0.0) - 1.0).abs() < 1e-12);
        // t(4): P(|T| > 2.776) = 0.05, P(|T| > 4.604) = 0.01.
        assert!((t4_two_sided(2.776) - 0.05).abs() < 1e-3);
        assert!((t4_two_sided(4.604) - 0.01).abs() < 1e-3);
        let mut last = 1.0;
        for i in 1..200 {
            let p = t4_two_sided(f64::from(i) * 0.1);
            assert!(p < last && p >= 0.0);
            last = p;
        }
    }

    #[test]
    fn a_baseline_is_moved_a_bounded_step_by_one_absurd_value() {
        let mut b = Baseline::default();
        for i in 0..200 {
            b.z_update(10.0 + if i % 2 == 0 { 0.5 } else { -0.5 }, 0.02);
        }
        let before = (b.mean, b.sd());
        b.z_update(1e12, 0.02);
        assert!((b.mean - before.0).abs() <= 0.02 * CLIP * before.1 + 1e-9);
    }

    #[test]
    fn the_spread_ratio_is_about_one_on_steady_noise_and_rises_when_it_quadruples() {
        let mut s = Spread::default();
        let mut r = 1.0;
        for i in 0..2000 {
            r = s.step(if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        assert!((0.5..2.0).contains(&r), "{r}");
        for i in 0..60 {
            r = s.step(if i % 2 == 0 { 4.0 } else { -4.0 });
        }
        assert!(r > 4.0, "{r}");
        assert!(s.ratio_z(r) > 5.0);
        assert!(s.ratio_z(1.0).abs() < 0.5);
    }
}
