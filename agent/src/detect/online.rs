//! Per-reading statistical detectors: level shift (CUSUM), rate of change,
//! spread (variance change), seasonal baseline, and `auto`, which combines
//! them into one calibrated score. Each judges every reading of its key, with
//! no look-ahead and a fixed state (sizes in `docs/detection.md`).
//!
//! Invariants of [`OnlineState`]:
//! - `core` matches the spec's kind (set at admission, never changed).
//! - `active` is `Some` exactly while an episode is raised; `streak` counts
//!   consecutive normal readings while raised and consecutive abnormal ones
//!   while not.
//! - `last_raised_ts` never decreases, so episode ids never repeat.
//! - `score` is the score the latest reading got, in [0, 1].
//!
//! Every baseline absorbs every reading, winsorised (see [`super::stats`]):
//! what an alert flagged cannot freeze the baseline, a persisting level
//! becomes the new normal and the alert clears.

use serde::{Deserialize, Serialize};

use crate::reading::{Reading, TimestampMs};

use super::alert::{self, Alert, num, plural};
use super::reference::{Reference, ReferenceStep};
use super::seasonal::Seasonal;
use super::spec::{DetectorKind, DetectorSpec};
use super::stats::{self, Baseline, Cusum, SPREAD_WARMUP, Spread, t4_two_sided};

/// Readings a per-reading baseline absorbs before it judges.
const WARMUP: u32 = 30;
/// Memory of the spike and rate baselines, per reading (about 50 readings).
const FAST_ALPHA: f64 = 0.02;

/// Rate of change per second against its usual distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Rate {
    prev: Option<(f64, TimestampMs)>,
    base: Baseline,
}

impl Rate {
    /// Milliseconds since the previous reading (0 for the first).
    fn last_step_ms(&self, ts: TimestampMs) -> f64 {
        self.prev.map_or(0.0, |(_, pts)| (ts - pts).max(0) as f64)
    }

    /// z of this reading's rate (0 while warming up or at a repeated timestamp),
    /// and the rate itself (units per second).
    fn step(&mut self, x: f64, ts: TimestampMs) -> (f64, f64) {
        let Some((px, pts)) = self.prev else {
            self.prev = Some((x, ts));
            return (0.0, 0.0);
        };
        if ts <= pts {
            // Repeated or out-of-order timestamp: no rate to speak of.
            return (0.0, 0.0);
        }
        self.prev = Some((x, ts));
        let rate = (x - px) / ((ts - pts) as f64 / 1000.0);
        let warm = self.base.n >= WARMUP;
        let z = self.base.z_update(rate, FAST_ALPHA);
        (if warm { z } else { 0.0 }, rate)
    }
}

/// The components of `auto`: about 800 bytes (see `docs/detection.md`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Auto {
    spike: Baseline,
    cusum: Cusum,
    rate: Rate,
    spread: Spread,
    seasonal: Seasonal,
    /// The behaviour that raised the open episode (for the cleared reason).
    behaviour: u8,
}

/// Slots per day of `auto`'s seasonal component, and visits before it judges.
const AUTO_SLOTS: u32 = 24;
const AUTO_SEASON_VISITS: u32 = 3;
/// While the daily slots are cold, a CUSUM run longer than this (event
/// time) is not called a shift: it may be the daily cycle (see `Auto::step`).
const COLD_SLOW_MS: f64 = 30.0 * 60_000.0;
/// CUSUM allowance and decision level inside `auto`.
const AUTO_K: f64 = 0.5;
const AUTO_H: f64 = 20.0;

/// Behaviours `auto` names, by component.
const BEHAVIOURS: [&str; 6] = [
    "spike",
    "level shift",
    "drift",
    "sudden change",
    "noise",
    "broken daily pattern",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Core {
    LevelShift(Cusum),
    Rate(Rate),
    Spread(Spread),
    Seasonal(Seasonal),
    Auto(Box<Auto>),
    Reference(Reference),
}

/// Per (per-reading detector, key) state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct OnlineState {
    core: Core,
    #[serde(with = "super::alert::boxed")]
    active: Option<Box<Alert>>,
    streak: u32,
    last_raised_ts: Option<TimestampMs>,
    score: f32,
}

/// One reading's judgement, before the lifecycle acts on it.
struct Verdict {
    abnormal: bool,
    normal: bool,
    score: f64,
    baseline: Option<f64>,
}

impl OnlineState {
    /// A fresh state for `kind`, or `None` if it is not a per-reading kind.
    pub(super) fn new(kind: &DetectorKind) -> Option<Self> {
        let core = match kind {
            DetectorKind::LevelShift { .. } => Core::LevelShift(Cusum::default()),
            DetectorKind::Rate { .. } => Core::Rate(Rate::default()),
            DetectorKind::Spread { .. } => Core::Spread(Spread::default()),
            DetectorKind::Seasonal { .. } => Core::Seasonal(Seasonal::default()),
            DetectorKind::Auto { .. } => Core::Auto(Box::default()),
            DetectorKind::Reference { commission, .. } => {
                Core::Reference(Reference::new(*commission))
            }
            _ => return None,
        };
        Some(Self {
            core,
            active: None,
            streak: 0,
            last_raised_ts: None,
            score: 0.0,
        })
    }

    /// After a restore: a reference learnt under another `commission`
    /// setting than `kind`'s starts commissioning afresh (changing it is how a
    /// new commissioning is asked for). An alert it had open stays open and
    /// clears as usual, since nothing is judged while commissioning.
    pub(super) fn recommission_if_changed(&mut self, kind: &DetectorKind) {
        if let (Core::Reference(rf), DetectorKind::Reference { commission, .. }) =
            (&mut self.core, kind)
        {
            if !rf.learnt_under(*commission) {
                *rf = Reference::new(*commission);
            }
        }
    }

    /// Which statistic this state holds, distinct per kind (for restores).
    pub(super) fn code(&self) -> u8 {
        match self.core {
            Core::LevelShift(_) => 0,
            Core::Rate(_) => 1,
            Core::Spread(_) => 2,
            Core::Seasonal(_) => 3,
            Core::Auto(_) => 4,
            Core::Reference(_) => 5,
        }
    }

    /// The name of its detector kind, as [`super::DetectorKind::name`] gives it.
    pub(super) fn kind_name(&self) -> &'static str {
        match self.core {
            Core::LevelShift(_) => "level_shift",
            Core::Rate(_) => "rate",
            Core::Spread(_) => "spread",
            Core::Seasonal(_) => "seasonal",
            Core::Auto(_) => "auto",
            Core::Reference(_) => "reference",
        }
    }

    /// Bytes this state holds, inline and on the heap (an open alert apart).
    pub(super) fn bytes(&self) -> usize {
        let heap = match &self.core {
            Core::Seasonal(s) => s.heap_bytes(),
            Core::Auto(a) => std::mem::size_of::<Auto>() + a.seasonal.heap_bytes(),
            _ => 0,
        };
        std::mem::size_of::<Self>() + heap
    }

    /// The raised alert of the current episode, if any.
    pub(super) fn active(&self) -> Option<&Alert> {
        self.active.as_deref()
    }

    /// The same, to restore its static fields after a checkpoint.
    pub(super) fn active_mut(&mut self) -> Option<&mut Alert> {
        self.active.as_deref_mut()
    }

    /// The score the latest reading got, in [0, 1].
    pub(super) fn score(&self) -> f64 {
        f64::from(self.score)
    }

    /// Judges one reading: updates the statistics, then the episode.
    pub(super) fn observe(&mut self, spec: &DetectorSpec, r: &Reading, out: &mut Vec<Alert>) {
        let x = r.value;
        let (v, sustain, clear_after, threshold, why): (Verdict, u32, u32, f64, Why) =
            match (&mut self.core, &spec.kind) {
                (
                    Core::LevelShift(c),
                    &DetectorKind::LevelShift {
                        threshold,
                        drift,
                        clear_after,
                    },
                ) => {
                    let st = c.step(x, drift);
                    if st.s > threshold {
                        c.reset();
                    }
                    let v = Verdict {
                        abnormal: st.s > threshold,
                        normal: st.s < threshold / 2.0,
                        score: st.s / (st.s + threshold),
                        baseline: Some(st.from),
                    };
                    (v, 1, clear_after, threshold, Why::Shift(st))
                }
                (
                    Core::Rate(rt),
                    &DetectorKind::Rate {
                        threshold,
                        clear_after,
                    },
                ) => {
                    let (z, rate) = rt.step(x, r.ts);
                    let v = z_verdict(z, threshold, None);
                    (v, 1, clear_after, threshold, Why::Rate(z, rate))
                }
                (
                    Core::Spread(s),
                    &DetectorKind::Spread {
                        threshold,
                        clear_after,
                    },
                ) => {
                    let warm = s.n >= SPREAD_WARMUP;
                    let ratio = s.step(x);
                    let ratio = if warm { ratio } else { 1.0 };
                    let v = Verdict {
                        abnormal: ratio > threshold,
                        normal: ratio < threshold.sqrt().max(1.0),
                        score: ratio / (ratio + threshold),
                        baseline: None,
                    };
                    (v, 1, clear_after, threshold, Why::Spread(ratio))
                }
                (
                    Core::Seasonal(s),
                    &DetectorKind::Seasonal {
                        threshold,
                        slots_per_day,
                        weekly,
                        min_samples,
                        clear_after,
                    },
                ) => {
                    let st = s.step(x, r.ts, slots_per_day, weekly, min_samples);
                    let v = z_verdict(st.z, threshold, st.warm.then_some(st.expected));
                    (v, 1, clear_after, threshold, Why::Season(st.z, st.expected))
                }
                (
                    Core::Auto(a),
                    &DetectorKind::Auto {
                        threshold,
                        sustain,
                        clear_after,
                    },
                ) => {
                    let (score, behaviour) = a.step(x, r.ts);
                    let v = Verdict {
                        abnormal: score >= threshold,
                        normal: score < threshold / 2.0,
                        score,
                        baseline: Some(a.spike.mean),
                    };
                    if self.active.is_none() {
                        a.behaviour = behaviour;
                    }
                    let b = a.behaviour;
                    (v, sustain, clear_after, threshold, Why::Auto(score, b))
                }
                (
                    Core::Reference(rf),
                    &DetectorKind::Reference {
                        commission,
                        threshold,
                        sustain,
                        clear_after,
                    },
                ) => {
                    let st = rf.step(x, commission);
                    let v = z_verdict(st.z, threshold, st.reference.map(|(c, _)| c));
                    (v, sustain, clear_after, threshold, Why::Reference(st))
                }
                _ => return,
            };
        self.score = v.score.clamp(0.0, 1.0) as f32;
        self.lifecycle(spec, r, v, sustain, clear_after, threshold, why, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn lifecycle(
        &mut self,
        spec: &DetectorSpec,
        r: &Reading,
        v: Verdict,
        sustain: u32,
        clear_after: u32,
        threshold: f64,
        why: Why,
        out: &mut Vec<Alert>,
    ) {
        let Some(raised) = self.active.take() else {
            self.streak = if v.abnormal { self.streak + 1 } else { 0 };
            if self.streak >= sustain.max(1) {
                let raised = alert::raise(
                    spec,
                    &r.key,
                    r.ts,
                    &mut self.last_raised_ts,
                    alert::Raise {
                        value: r.value,
                        baseline: v.baseline,
                        threshold,
                        reason: why.raised(r.value),
                    },
                );
                out.push(raised.clone());
                self.active = Some(Box::new(raised));
                self.streak = 0;
            }
            return;
        };
        if !v.normal {
            self.streak = 0;
            self.active = Some(raised);
            return;
        }
        self.streak = self.streak.saturating_add(1);
        if self.streak < clear_after.max(1) {
            self.active = Some(raised);
            return;
        }
        let reason = format!(
            "{} over: readings normal again for {}",
            why.name(),
            plural(u64::from(self.streak), "reading", "readings")
        );
        out.push(alert::clear(*raised, r.value, v.baseline, reason, r.ts));
        self.streak = 0;
    }
}

fn z_verdict(z: f64, threshold: f64, baseline: Option<f64>) -> Verdict {
    let (z2, t2) = (z * z, threshold * threshold);
    Verdict {
        abnormal: z.abs() > threshold,
        normal: z.abs() < threshold / 2.0,
        score: if z2.is_finite() { z2 / (z2 + t2) } else { 1.0 },
        baseline,
    }
}

/// What a reason says, built only when an alert goes out.
enum Why {
    Shift(stats::CusumStep),
    Rate(f64, f64),
    Spread(f64),
    Season(f64, f64),
    Auto(f64, u8),
    Reference(ReferenceStep),
}

impl Why {
    fn name(&self) -> &'static str {
        match self {
            Self::Shift(st) if st.run > 60 => "drift",
            Self::Shift(_) => "level shift",
            Self::Rate(..) => "sudden change",
            Self::Spread(_) => "noise",
            Self::Season(..) => "broken daily pattern",
            Self::Reference(_) => "away from commissioned normal",
            Self::Auto(_, b) => BEHAVIOURS
                .get(usize::from(*b))
                .copied()
                .unwrap_or("anomaly"),
        }
    }

    fn raised(&self, x: f64) -> String {
        let name = self.name();
        match self {
            Self::Shift(st) => {
                let dir = if st.sign > 0.0 { "up" } else { "down" };
                format!(
                    "{name}: readings moved {dir} from about {} to about {} over {}",
                    num(st.from),
                    num(st.to),
                    plural(u64::from(st.run), "reading", "readings")
                )
            }
            Self::Rate(z, rate) => format!(
                "{name}: value {} changing at {}/s, {:.1} times the usual spread of its rate",
                num(x),
                num(*rate),
                z.abs()
            ),
            Self::Spread(ratio) => format!(
                "{name}: readings are {:.1} times as noisy as usual (variance ratio {ratio:.1})",
                ratio.sqrt()
            ),
            Self::Season(z, expected) => format!(
                "{name}: value {} where about {} is usual at this time of day ({:.1} stddev)",
                num(x),
                num(*expected),
                z.abs()
            ),
            Self::Auto(score, _) => format!("{name}: value {}, anomaly score {score:.2}", num(x)),
            Self::Reference(st) => {
                let (centre, scale) = st.reference.unwrap_or((st.recent, 0.0));
                let dir = if st.z > 0.0 { "above" } else { "below" };
                format!(
                    "{name}: the last ~10 readings average {}, {:.1} times their usual wander ({}) {dir} the {} learnt at commissioning",
                    num(st.recent),
                    st.z.abs(),
                    num(scale),
                    num(centre)
                )
            }
        }
    }
}

/// Largest long-run variance factor `auto` applies (lag-1 correlation
/// 0.96): beyond it the level shift component is as good as silent anyway.
const AUTO_MAX_F: f64 = 50.0;

impl Auto {
    /// The long-run variance factor of the CUSUM's residuals, in [1,
    /// AUTO_MAX_F]; 1 until the noise component has its long memory.
    fn long_run_factor(&self) -> f64 {
        let d = self.spread.long_d2();
        if self.spread.n < SPREAD_WARMUP || d <= 0.0 {
            return 1.0;
        }
        (4.0 * self.cusum.base.var() / d - 1.0)
            .clamp(1.0, AUTO_MAX_F)
            .sqrt()
    }

    /// Scores one reading in [0, 1]: each component's statistic becomes a tail
    /// probability under its own null, the smallest (Bonferroni-corrected for
    /// five tests) is the reading's p, and the score is `-log10(p) / 8`,
    /// capped at 1 (0.5 is a 1-in-10,000 reading for this sensor, 1 is
    /// 1 in 10^8). Returns the score and the behaviour that gave it.
    fn step(&mut self, x: f64, ts: TimestampMs) -> (f64, u8) {
        // Broken daily pattern first: once the time-of-day slot is warm, the
        // other components see the reading with the usual daily swing taken
        // out, so a daily cycle is not mistaken for shifts and drifts.
        let season = self
            .seasonal
            .step(x, ts, AUTO_SLOTS, false, AUTO_SEASON_VISITS);
        let zs = if season.warm { season.z } else { 0.0 };
        let y = x - season.offset;
        // Spike: the reading against a fast baseline, heavy-tailed null.
        let warm = self.spike.n >= WARMUP;
        let z0 = self.spike.z_update(y, FAST_ALPHA);
        let z0 = if warm { z0 } else { 0.0 };
        // Level shift or drift: CUSUM tail, P(S > s) ~ exp(-2 k s) under the null.
        let st = self.cusum.step(y, AUTO_K);
        // While the time-of-day slot is cold, a change that built up over
        // more than COLD_SLOW_MS may be the daily cycle itself, which nothing
        // has yet seen twice: it is not called a shift until the pattern is
        // learnt (it is then judged against it). Abrupt shifts still are.
        let step_ms = self.rate.last_step_ms(ts);
        let slow = !season.warm && f64::from(st.run) * step_ms > COLD_SLOW_MS;
        // The tail exp(-2 k s) holds for independent residuals. A smooth
        // series (a temperature) has strongly correlated ones, whose sums
        // wander far more: its tail is exp(-2 k s / f), f the long-run
        // variance factor of the residuals, (1 + rho) / (1 - rho) for
        // lag-1 correlation rho, read off the variance of the values (V) and
        // of their first differences (D = 2 V (1 - rho)): f = 4 V / D - 1.
        let f = self.long_run_factor();
        let shift = (self.cusum.base.n > stats::CUSUM_WARMUP && !slow).then(|| {
            let i = if st.run > 60 { 2 } else { 1 };
            (i, (-2.0 * AUTO_K * st.s / f).exp())
        });
        // A slow change held back while cold is followed all the same (reset
        // at the plain decision level): no sum from before the daily pattern
        // was learnt carries over into judging against it.
        if st.s > AUTO_H * if slow { 1.0 } else { f } {
            // A confirmed shift: it is the new normal for the spike baseline too.
            self.cusum.reset();
            self.spike.reseed(self.cusum.base.mean);
        }
        let (zr, _) = self.rate.step(y, ts);
        let warm = self.spread.n >= SPREAD_WARMUP;
        let ratio = self.spread.step(y);
        let noise = if warm && ratio > 1.0 {
            t4_two_sided(self.spread.ratio_z(ratio)) / 2.0
        } else {
            1.0
        };
        // The smallest p, the first component on a tie. The t(4) tail falls
        // with |z|, so of spike, sudden change and daily pattern only the
        // largest |z| needs its tail computed.
        let mut tz = (0u8, 0.0f64);
        for (i, z) in [(0u8, z0), (3, zr), (5, zs)] {
            if z.abs() > tz.1 {
                tz = (i, z.abs());
            }
        }
        let mut best = (0u8, 1.0f64);
        let mut consider = |i: u8, p: f64| {
            if p < best.1 || (p == best.1 && i < best.0) {
                best = (i, p);
            }
        };
        if tz.1 > 0.0 {
            consider(tz.0, t4_two_sided(tz.1));
        }
        if let Some((i, p)) = shift {
            consider(i, p);
        }
        consider(4, noise);
        let (best, p) = best;
        let p = p * 5.0;
        if p >= 1.0 {
            return (0.0, best);
        }
        // A shift against a learnt daily pattern is the pattern breaking, not
        // the level moving, when the slot itself is clearly off (p < 0.05) or
        // the value is one the day usually passes through at another hour.
        let best = if (best == 1 || best == 2)
            && season.warm
            && (t4_two_sided(zs) < 0.05
                || self
                    .seasonal
                    .usual_range(AUTO_SEASON_VISITS)
                    .is_some_and(|(lo, hi)| (lo..=hi).contains(&x)))
        {
            5
        } else {
            best
        };
        ((-p.max(1e-300).log10() / 8.0).clamp(0.0, 1.0), best)
    }
}

#[cfg(test)]
#[path = "online_tests.rs"]
mod tests;
