//! `reference`: an opt-in detector for commissioned machines. Each key learns
//! its normal behaviour from its first `commission` readings, then freezes it
//! and judges every later reading by how far the key's recent level (an EW
//! mean over about the last 10 readings) has moved from that reference.
//!
//! Unlike `auto`, which accepts a level once it persists (a shift is alerted,
//! then absorbed), a reference never moves after commissioning: a valve left
//! half closed stays alerted for as long as it stays half closed. The price is
//! that the machine must be in its normal state while it is commissioned, and
//! that a legitimate change of operating point (a new set point, a season)
//! needs a new commissioning.
//!
//! Invariants of [`Reference`]:
//! - `n` counts readings seen (saturating); the reference is frozen exactly
//!   when `n >= commission`, and `scale > 0` from then on.
//! - Before it is frozen, `centre` is the plain mean of the readings seen and
//!   (`ref_mean`, `ref_m2`) Welford's running mean and sum of squares of the
//!   recent level over the readings after its warm-up; after, none of them
//!   changes again.
//! - `recent` is finite for finite input (callers drop non-finite readings).

use serde::{Deserialize, Serialize};

/// Weight of the newest reading in the recent level: a memory of about 10
/// readings, long enough to average out single-reading noise, short enough
/// to follow a fault within seconds at 1 Hz.
const RECENT_ALPHA: f64 = 0.1;
/// Readings before the recent level counts towards the reference's spread
/// (0.9^30 = 4%: the start value is forgotten).
pub(super) const RECENT_WARMUP: u32 = 30;
/// Smallest commissioning period: the warm-up plus as many readings again,
/// so the spread is learnt from at least 30 values.
pub(super) const MIN_COMMISSION: u32 = 2 * RECENT_WARMUP;
/// Fraction of the reference level below which no spread is taken (as in
/// `stats`): a perfectly flat 20.000 judges 20.02 as 1 spread away.
const LEVEL_FLOOR: f64 = 1e-3;
/// Last-resort floor for a key that read exactly 0 all through commissioning.
const TINY: f64 = 1e-12;

/// Commissioned reference and recent level of one key. 48 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Reference {
    /// Readings seen (saturating).
    n: u32,
    /// The `commission` setting this reference is learnt under: a restore
    /// under another one starts commissioning afresh (how a technician asks
    /// for a new commissioning).
    commission: u32,
    /// Recent level: EW mean of the readings, weight [`RECENT_ALPHA`].
    recent: f64,
    /// Mean of the commissioning readings: the reference level.
    centre: f64,
    /// Running mean of the recent level while commissioning (Welford).
    ref_mean: f64,
    /// Running sum of squared deviations of the recent level (Welford).
    ref_m2: f64,
    /// Frozen spread of the recent level during commissioning; 0 before.
    scale: f64,
}

/// What one reading looks like against the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ReferenceStep {
    /// Distance of the recent level from the reference level, in reference
    /// spreads (0 while commissioning).
    pub z: f64,
    /// The recent level.
    pub recent: f64,
    /// The reference level and spread (`None` while commissioning).
    pub reference: Option<(f64, f64)>,
}

impl Reference {
    /// A key not yet seen, to be commissioned over `commission` readings.
    pub fn new(commission: u32) -> Self {
        Self {
            commission,
            ..Self::default()
        }
    }

    /// Whether this state was learnt under the `commission` setting.
    pub fn learnt_under(&self, commission: u32) -> bool {
        self.commission == commission
    }

    /// Whether commissioning is over.
    pub fn frozen(&self) -> bool {
        self.scale > 0.0
    }

    /// Absorbs one reading into the recent level and, while commissioning,
    /// into the reference; returns how far the recent level now is from the
    /// frozen reference.
    pub fn step(&mut self, x: f64, commission: u32) -> ReferenceStep {
        self.n = self.n.saturating_add(1);
        let n = f64::from(self.n);
        // Plain average at first (weight 1/n), so the start value does not
        // bias the recent level.
        self.recent += RECENT_ALPHA.max(1.0 / n) * (x - self.recent);
        if !self.frozen() {
            self.centre += (x - self.centre) / n;
            if self.n > RECENT_WARMUP {
                let k = f64::from(self.n - RECENT_WARMUP);
                let d = self.recent - self.ref_mean;
                self.ref_mean += d / k;
                self.ref_m2 += d * (self.recent - self.ref_mean);
            }
            if self.n >= commission.max(MIN_COMMISSION) {
                let k = f64::from(self.n - RECENT_WARMUP);
                self.scale = (self.ref_m2 / k)
                    .sqrt()
                    .max(LEVEL_FLOOR * self.centre.abs())
                    .max(TINY);
            }
            return ReferenceStep {
                z: 0.0,
                recent: self.recent,
                reference: None,
            };
        }
        ReferenceStep {
            z: (self.recent - self.centre) / self.scale,
            recent: self.recent,
            reference: Some((self.centre, self.scale)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_freezes_after_the_commissioning_readings() {
        let mut r = Reference::default();
        for i in 0..99 {
            let st = r.step(10.0 + f64::from(i % 2), 100);
            assert_eq!(st.z, 0.0);
            assert!(st.reference.is_none());
        }
        r.step(10.0, 100);
        assert!(r.frozen());
        let (centre, scale) = r.step(10.5, 100).reference.unwrap();
        assert!((centre - 10.5).abs() < 0.01, "{centre}");
        assert!(scale > 0.0 && scale < 0.5, "{scale}");
        // Nothing after commissioning moves the reference.
        for _ in 0..1000 {
            r.step(50.0, 100);
        }
        assert_eq!(r.step(50.0, 100).reference, Some((centre, scale)));
    }

    #[test]
    fn a_flat_commissioning_gets_a_spread_relative_to_its_level() {
        let mut r = Reference::default();
        for _ in 0..100 {
            r.step(20.0, 60);
        }
        let st = r.step(20.0, 60);
        assert_eq!(st.reference, Some((20.0, 0.02)));
        assert_eq!(st.z, 0.0);
    }

    #[test]
    fn a_commissioning_shorter_than_the_minimum_is_lengthened() {
        let mut r = Reference::default();
        for _ in 0..MIN_COMMISSION - 1 {
            r.step(1.0, 5);
        }
        assert!(!r.frozen());
        r.step(1.0, 5);
        assert!(r.frozen());
    }
}

#[cfg(test)]
#[path = "reference_tests.rs"]
mod synthetic;
