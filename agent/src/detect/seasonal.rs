//! Seasonal baseline: the expected value and spread per time-of-day slot
//! (optionally per day-of-week too), learned online.
//!
//! The day is cut into `slots_per_day` fixed slots of event time (UTC); with
//! `weekly`, each day of the week has its own. A *visit* is one stay of the
//! series in a slot (an hour today, the same hour tomorrow is the next visit).
//! While a visit lasts its readings are summarised (count, mean, variance);
//! when it ends, its mean is folded into the slot's EW mean and between-visit
//! variance (weight `max(1/visits, 0.25)`: about the last four days or weeks),
//! and its variance into the slot's within-visit variance.
//!
//! Judging: the running mean of the current visit against the slot's
//! expectation, `z = (visit mean - slot mean) / sqrt(between + within / n)`,
//! floored relative to the level. A broken day shows as a visit whose mean is
//! far from that slot's usual one, even if each value would be ordinary at
//! some other hour.
//!
//! Cold start: a slot judges nothing until it has `min_samples` completed
//! visits. Gaps: a slot not visited keeps its state as it was; a visit ends
//! when the slot changes or when more than one slot length passes between
//! readings (so a gap of exactly a day does not merge two days' visits).
//! Readings older than the current visit's start (out of order) are judged
//! against their own slot but not learned, so a replay cannot corrupt it.
//!
//! Invariants of [`Seasonal`]:
//! - `slots` is empty until the first reading, then holds exactly
//!   `slots_per_day * (7 if weekly else 1)` entries; it never grows.
//! - `visit.n == 0` exactly when no visit is open.
//!
//! State: 16 bytes per slot plus 72: 456 bytes for 24 daily slots, 2,760 for
//! 24 x 7, 5,448 for 48 x 7.

use serde::{Deserialize, Serialize};

use crate::reading::TimestampMs;

const DAY_MS: i64 = 86_400_000;

/// One slot's learned expectation. f32 halves the state; a slot mean needs
/// no more than 7 significant digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Slot {
    mean: f32,
    between: f32,
    within: f32,
    visits: u32,
}

/// The visit in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Visit {
    slot: u32,
    start: TimestampMs,
    last: TimestampMs,
    n: u32,
    mean: f64,
    m2: f64,
}

/// Per-key seasonal state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Seasonal {
    slots: Box<[Slot]>,
    visit: Visit,
    /// EW mean of visit means over all slots: the series' overall level.
    level: f64,
}

/// What the seasonal baseline says about one reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct SeasonalStep {
    /// Standardised distance of the visit's mean from the slot's; 0 while the
    /// slot is cold.
    pub z: f64,
    /// The slot's expected value (NaN while cold).
    pub expected: f64,
    /// Whether the slot has seen `min_samples` visits.
    pub warm: bool,
    /// How far this slot usually sits from the overall level (0 while cold):
    /// subtracting it removes the daily pattern.
    pub offset: f64,
}

impl Seasonal {
    /// Heap bytes held: the slots.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// The slot of `ts`, and how far into it `ts` is (ms). Divisions are the
    /// costly part of a reading here: the day of the week only when weekly.
    fn slot_of(ts: TimestampMs, slot_ms: i64, per_day: i64, weekly: bool) -> (u32, i64) {
        let ms = ts.rem_euclid(DAY_MS);
        let in_day = ms / slot_ms;
        let into = ms - in_day * slot_ms;
        let s = if weekly {
            // 1970-01-01 was a Thursday; day 0 of the week is Monday.
            let dow = (ts.div_euclid(DAY_MS) + 3).rem_euclid(7);
            dow * per_day + in_day
        } else {
            in_day
        };
        (u32::try_from(s).unwrap_or(0), into)
    }

    /// Judges and learns one reading.
    pub fn step(
        &mut self,
        x: f64,
        ts: TimestampMs,
        slots_per_day: u32,
        weekly: bool,
        min_samples: u32,
    ) -> SeasonalStep {
        let total = slots_per_day.max(1) as usize * if weekly { 7 } else { 1 };
        if self.slots.len() != total {
            self.slots = vec![Slot::default(); total].into_boxed_slice();
            self.visit = Visit::default();
        }
        let per_day = i64::from(slots_per_day.max(1));
        let slot_ms = DAY_MS / per_day;
        let (s, into) = Self::slot_of(ts, slot_ms, per_day, weekly);
        let v = &mut self.visit;
        let learn = v.n == 0 || ts >= v.start;
        if learn {
            let same_visit =
                v.n > 0 && v.slot == s && ts.saturating_sub(v.last) <= slot_ms && ts >= v.start;
            if !same_visit {
                self.close_visit();
                self.visit = Visit {
                    slot: s,
                    start: ts,
                    last: ts,
                    n: 0,
                    mean: 0.0,
                    m2: 0.0,
                };
            }
            let v = &mut self.visit;
            v.n += 1;
            v.last = v.last.max(ts);
            let d = x - v.mean;
            v.mean += d / f64::from(v.n);
            v.m2 += d * (x - v.mean);
        }
        let slot = self.slots[s as usize];
        if slot.visits < min_samples.max(1) {
            return SeasonalStep {
                z: 0.0,
                expected: f64::NAN,
                warm: false,
                offset: 0.0,
            };
        }
        let (xm, n) = if learn {
            (self.visit.mean, f64::from(self.visit.n))
        } else {
            (x, 1.0)
        };
        let mean = f64::from(slot.mean);
        let var = f64::from(slot.between) + f64::from(slot.within) / n;
        let sd = var.sqrt().max(1e-3 * mean.abs()).max(1e-12);
        // The expected value at this instant: the slot's mean at its centre,
        // interpolated towards the neighbouring slot's (if warm), so that a
        // smooth cycle is followed without a staircase.
        let per_day = slots_per_day.max(1);
        let frac = into as f64 / slot_ms as f64 - 0.5;
        let day_base = s - s % per_day;
        let neighbour = if frac >= 0.0 {
            day_base + (s % per_day + 1) % per_day
        } else {
            day_base + (s % per_day + per_day - 1) % per_day
        };
        let now = match self.slots.get(neighbour as usize) {
            Some(nb) if nb.visits >= min_samples.max(1) => {
                mean + frac.abs() * (f64::from(nb.mean) - mean)
            }
            _ => mean,
        };
        SeasonalStep {
            z: (xm - mean) / sd,
            expected: mean,
            warm: true,
            offset: now - self.level,
        }
    }

    /// The lowest and highest slot means among the slots with `min_samples`
    /// visits: the values the daily (weekly) pattern usually passes through.
    /// `None` while fewer than two slots are warm. Not on the hot path.
    pub fn usual_range(&self, min_samples: u32) -> Option<(f64, f64)> {
        let mut warm = self
            .slots
            .iter()
            .filter(|s| s.visits >= min_samples.max(1))
            .map(|s| f64::from(s.mean));
        let first = warm.next()?;
        let (lo, hi, n) = warm.fold((first, first, 1), |(lo, hi, n), m| {
            (lo.min(m), hi.max(m), n + 1)
        });
        (n >= 2).then_some((lo, hi))
    }

    /// Folds the finished visit into its slot.
    fn close_visit(&mut self) {
        let v = self.visit;
        if v.n == 0 {
            return;
        }
        // Averaged over about four cycles, so it does not follow the cycle.
        let a = 1.0 / (4.0 * self.slots.len() as f64);
        let Some(slot) = self.slots.get_mut(v.slot as usize) else {
            return;
        };
        self.level = if self.level == 0.0 {
            v.mean
        } else {
            self.level + a * (v.mean - self.level)
        };
        let within = if v.n > 1 {
            v.m2 / f64::from(v.n - 1)
        } else {
            f64::from(slot.within)
        };
        if slot.visits == 0 {
            *slot = Slot {
                mean: v.mean as f32,
                between: 0.0,
                within: within as f32,
                visits: 1,
            };
            return;
        }
        let a = (1.0 / f64::from(slot.visits + 1)).max(0.25);
        let mean = f64::from(slot.mean);
        let between = f64::from(slot.between);
        // Winsorised like every baseline: one broken day moves the slot a
        // bounded step, a pattern that persists becomes the new normal.
        let sd = (between + within).sqrt().max(1e-3 * mean.abs()).max(1e-12);
        let diff = (v.mean - mean).clamp(-4.0 * sd, 4.0 * sd);
        slot.mean = (mean + a * diff) as f32;
        slot.between = ((1.0 - a) * (between + a * diff * diff)) as f32;
        slot.within = (f64::from(slot.within) + a * (within - f64::from(slot.within))) as f32;
        slot.visits = slot.visits.saturating_add(1);
    }
}
